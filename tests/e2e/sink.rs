//! The sink against the real broker and ClickHouse: kill -9 mid-batch, then the exact set;
//! ClickHouse stopped for 30 s and started again, then the exact set from the same process.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hunter_core::records::{Ingest, Lead, Referral, Timestamp};
use hunter_e2e::{
    ClickHouse, Deployment, OwnClickHouse, generated_referrals, run_hunter, wait_for,
};

fn count(rows: &[serde_json::Value], field: &str) -> u64 {
    rows[0][field]
        .as_str()
        .map(|n| n.parse().unwrap())
        .or(rows[0][field].as_u64())
        .unwrap()
}

/// Leads built the way the processor builds them, from `count` generated referrals.
fn leads_from_generated(count: usize, seed: u64) -> anyhow::Result<Vec<Lead>> {
    let mut leads = Vec::with_capacity(count);
    for raw in generated_referrals(count, seed)? {
        let referral = Referral::from_api_json(&raw.to_string(), Ingest::default())?;
        leads.push(Lead::from_referral(&referral, Timestamp::now())?);
    }
    Ok(leads)
}

/// `lead_id -> version` of every live row (`leads FINAL`), failing on a lead that appears twice.
async fn live_versions(clickhouse: &ClickHouse) -> anyhow::Result<BTreeMap<String, i64>> {
    let mut live = BTreeMap::new();
    for row in clickhouse
        .rows("SELECT lead_id, version FROM leads FINAL")
        .await?
    {
        let id = row["lead_id"].as_str().unwrap_or_default().to_owned();
        let version = row["version"]
            .as_str()
            .map(|n| n.parse())
            .transpose()?
            .or(row["version"].as_i64())
            .unwrap_or_default();
        anyhow::ensure!(
            live.insert(id.clone(), version).is_none(),
            "lead {id} has two live rows"
        );
    }
    Ok(live)
}

/// Waits until the sink's `hunter_sink_consumption_paused{stream="leads"}` gauge says `paused`.
async fn lead_stream_paused(
    deployment: &Deployment,
    paused: bool,
    timeout: Duration,
) -> anyhow::Result<()> {
    deployment
        .wait_consumption_paused("leads", paused, timeout)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_stopped_for_30_s_then_started_again_loses_nothing() -> anyhow::Result<()> {
    let leads = leads_from_generated(3_000, 82)?;
    let (before, during) = leads.split_at(1_500);
    // Newer versions of every tenth early lead arrive during the outage: they must win.
    let newer: Vec<Lead> = before
        .iter()
        .step_by(10)
        .map(|lead| Lead {
            status: Some("Closed".into()),
            substatus: Some("Won".into()),
            version: lead.version + 1,
            ..lead.clone()
        })
        .collect();
    let mut expected: BTreeMap<String, i64> = leads
        .iter()
        .map(|lead| (lead.lead_id.clone(), lead.version))
        .collect();
    for lead in &newer {
        expected.insert(lead.lead_id.clone(), lead.version);
    }
    anyhow::ensure!(
        expected.len() == 3_000,
        "generated lead ids are not distinct"
    );

    // A server of this test's own: the shared one stays up for the other tests.
    let mut own = OwnClickHouse::start().await?;
    let mut deployment = Deployment::new(&[])?;
    deployment.use_clickhouse(&own.url());
    let (ok, output) = run_hunter(&["migrate"], &deployment.env, Duration::from_secs(60))?;
    assert!(ok, "{output}");
    deployment
        .env
        .insert("HUNTER_SINK_BATCH_ROWS".into(), "500".into());
    deployment.produce_leads(before).await?;
    let sink = deployment.start_role("sink").await?;
    let clickhouse = deployment.clickhouse.clone();
    let result = wait_for(
        "the first leads in clickhouse",
        Duration::from_secs(120),
        || async { Ok((live_versions(&clickhouse).await?.len() == before.len()).then_some(())) },
    )
    .await;
    if let Err(error) = result {
        anyhow::bail!("{error}\n{}", deployment.logs());
    }

    own.stop().await?;
    let stopped = Instant::now();
    deployment.produce_leads(during).await?;
    deployment.produce_leads(&newer).await?;
    // Down: the sink has paused its lead stream (it holds one batch, fetches nothing more)
    // and is still running.
    let paused = lead_stream_paused(&deployment, true, Duration::from_secs(25)).await;
    if let Err(error) = paused {
        anyhow::bail!("{error}\n{}", deployment.logs());
    }
    while stopped.elapsed() < Duration::from_secs(30) {
        anyhow::ensure!(
            deployment.process(sink).is_running(),
            "the sink exited while clickhouse was down\n{}",
            deployment.logs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    own.start_again().await?;

    // Up again: the same process writes everything, each lead once, the newest version live.
    let result = wait_for(
        "every lead in clickhouse",
        Duration::from_secs(120),
        || async { Ok((live_versions(&clickhouse).await? == expected).then_some(())) },
    )
    .await;
    if let Err(error) = result {
        anyhow::bail!("{error}\n{}", deployment.logs());
    }
    let history = clickhouse
        .rows(
            "SELECT count() AS n, uniqExact(lead_id, version) AS versions FROM lead_history FINAL",
        )
        .await?;
    let expected_history = (leads.len() + newer.len()) as u64;
    assert_eq!(count(&history, "n"), expected_history);
    assert_eq!(count(&history, "versions"), expected_history);
    let resumed = lead_stream_paused(&deployment, false, Duration::from_secs(30)).await;
    resumed?;
    let failures = deployment.sink_failures("leads").await?;
    assert!(
        failures >= 1.0,
        "the outage left no failed insert in the metrics"
    );
    assert!(
        deployment.process(sink).is_running(),
        "the sink exited\n{}",
        deployment.logs()
    );
    deployment.teardown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_batch_then_restart_gives_the_exact_leads() -> anyhow::Result<()> {
    let referrals = generated_referrals(4_000, 81)?;
    let mut leads: Vec<Lead> = Vec::new();
    for raw in &referrals {
        let referral = Referral::from_api_json(&raw.to_string(), Ingest::default())?;
        leads.push(Lead::from_referral(&referral, Timestamp::now())?);
    }
    // A second version of every tenth lead, later in the stream: the newest must win.
    let newer: Vec<Lead> = leads
        .iter()
        .step_by(10)
        .map(|lead| Lead {
            status: Some("Closed".into()),
            substatus: Some("Won".into()),
            version: lead.version + 1,
            ..lead.clone()
        })
        .collect();

    let mut deployment = Deployment::new(&[])?;
    let (ok, output) = run_hunter(&["migrate"], &deployment.env, Duration::from_secs(60))?;
    assert!(ok, "{output}");
    deployment
        .env
        .insert("HUNTER_SINK_BATCH_ROWS".into(), "600".into());
    deployment
        .env
        .insert("HUNTER_SINK_BATCH_MAX_WAIT_MS".into(), "5000".into());
    deployment.produce_leads(&leads).await?;
    deployment.produce_leads(&newer).await?;

    // Kill the sink once some batches are in and others are still being gathered.
    let sink = deployment.start_role("sink").await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let written = count(
            &deployment
                .clickhouse
                .rows("SELECT count() AS n FROM leads")
                .await?,
            "n",
        );
        if written >= 600 {
            anyhow::ensure!(written < 4_400, "the sink finished before the kill");
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "nothing written\n{}",
            deployment.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    deployment.process(sink).kill9();

    deployment.start_role("sink").await?;
    let clickhouse = deployment.clickhouse.clone();
    let result = wait_for(
        "every lead in clickhouse",
        Duration::from_secs(120),
        || async {
            let rows = clickhouse
                .rows("SELECT count() AS n, uniqExact(lead_id) AS ids FROM leads FINAL")
                .await?;
            // The history goes in after `leads` in the same flush: wait for it too.
            let history = clickhouse
                .rows("SELECT count() AS n FROM lead_history FINAL")
                .await?;
            Ok((count(&rows, "n") == 4_000
                && count(&rows, "ids") == 4_000
                && count(&history, "n") >= 4_400)
                .then_some(()))
        },
    )
    .await;
    if let Err(error) = result {
        anyhow::bail!("{error}\n{}", deployment.logs());
    }
    // Exactly the expected live rows: the newer version where there is one.
    let won = deployment
        .clickhouse
        .rows("SELECT count() AS n FROM leads FINAL WHERE status = 'Closed' AND substatus = 'Won'")
        .await?;
    let expected_won = leads
        .iter()
        .enumerate()
        .filter(|(i, lead)| {
            i % 10 == 0
                || (lead.status.as_deref() == Some("Closed")
                    && lead.substatus.as_deref() == Some("Won"))
        })
        .count() as u64;
    assert_eq!(count(&won, "n"), expected_won);
    let history = deployment
        .clickhouse
        .rows("SELECT count() AS n FROM lead_history FINAL")
        .await?;
    assert_eq!(
        count(&history, "n"),
        4_400,
        "every version once in the history"
    );
    deployment.teardown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lead_the_table_cannot_take_is_dead_lettered_and_the_rest_written() -> anyhow::Result<()>
{
    let mut leads = leads_from_generated(200, 83)?;
    // Decimal(18, 2) holds less than 1e16: this deal value does not fit the column.
    leads[17].deal_value = Some(1e17);
    let bad_id = leads[17].lead_id.clone();
    let mut deployment = Deployment::new(&[])?;
    let (ok, output) = run_hunter(&["migrate"], &deployment.env, Duration::from_secs(60))?;
    assert!(ok, "{output}");
    deployment.produce_leads(&leads).await?;
    deployment.start_role("sink").await?;
    let clickhouse = &deployment.clickhouse;
    let written = wait_for(
        "199 leads and one dead letter",
        Duration::from_secs(60),
        || async {
            let live = live_versions(clickhouse).await?;
            let dead = clickhouse
                .rows("SELECT toString(count()) AS n FROM dlq FINAL WHERE stage = 'sink'")
                .await?;
            Ok((live.len() == 199 && count(&dead, "n") == 1).then_some(live))
        },
    )
    .await;
    let live = match written {
        Ok(live) => live,
        Err(error) => anyhow::bail!("{error}\n{}", deployment.logs()),
    };
    assert!(!live.contains_key(&bad_id), "the bad lead is not in leads");
    let dlq = hunter_e2e::read_topic(&deployment.stack.brokers, &deployment.topics.dlq, 1)?;
    assert_eq!(dlq.len(), 1);
    let (_, headers) = &dlq[0];
    assert_eq!(
        headers.get("hunter.stage").map(String::as_str),
        Some("sink")
    );
    assert_eq!(
        headers.get("key").map(String::as_str),
        Some(bad_id.as_str())
    );
    assert!(
        headers
            .get("hunter.error")
            .is_some_and(|e| e.contains("deal_value") && e.contains("Decimal(18, 2)")),
        "{headers:?}"
    );
    assert_eq!(
        headers.get("hunter.original.topic"),
        Some(&deployment.topics.leads)
    );
    deployment.teardown().await;
    Ok(())
}
