//! The sink against the real broker and ClickHouse: kill -9 mid-batch, then the exact set.

use std::time::{Duration, Instant};

use hunter_core::records::{Ingest, Lead, Referral, Timestamp};
use hunter_e2e::{Deployment, generated_referrals, run_hunter, wait_for};

fn count(rows: &[serde_json::Value], field: &str) -> u64 {
    rows[0][field]
        .as_str()
        .map(|n| n.parse().unwrap())
        .or(rows[0][field].as_u64())
        .unwrap()
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
            Ok((count(&rows, "n") == 4_000 && count(&rows, "ids") == 4_000).then_some(()))
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
