//! Who writes the `referrals` table (`HUNTER_SINK_REFERRALS_WRITER`, docs/clickhouse.md): the
//! processor, from the referrals it reads anyway, in a new deployment; the sink, from a second
//! read of the referral topic, where its referral group has committed offsets (a deployment
//! from before). Real broker and ClickHouse, separate `hunter run` processes.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use hunter_e2e::{
    ClickHouse, Deployment, OwnClickHouse, described_topic, free_port, generated_referrals,
    run_hunter, wait_for,
};

const SINK_GROUP: &str = "hunter-sink-referrals";
const PROCESSOR_GROUP: &str = "hunter-processor";

async fn number(clickhouse: &ClickHouse, sql: &str) -> anyhow::Result<u64> {
    let rows = clickhouse.rows(sql).await?;
    Ok(rows
        .first()
        .and_then(|row| row["n"].as_str().and_then(|n| n.parse().ok()))
        .unwrap_or(0))
}

/// Distinct referral versions in `referrals` (the table's key).
async fn referral_versions(clickhouse: &ClickHouse) -> anyhow::Result<u64> {
    number(
        clickhouse,
        "SELECT toString(uniqExact(referral_id, version)) AS n FROM referrals",
    )
    .await
}

/// A log line without its terminal colours.
fn plain(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // An escape sequence runs to its final letter (`\x1b[2m`).
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn ids(referrals: &[serde_json::Value]) -> BTreeSet<String> {
    referrals
        .iter()
        .map(|r| r["id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// The processor's `hunter_sink_consumption_paused{stream="referrals"}` gauge says `paused`.
async fn referrals_paused(
    deployment: &Deployment,
    paused: bool,
    timeout: Duration,
) -> anyhow::Result<()> {
    deployment
        .wait_consumption_paused("referrals", paused, timeout)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_deployment_has_the_processor_write_referrals_through_a_clickhouse_outage()
-> anyhow::Result<()> {
    let referrals = generated_referrals(1_500, 91)?;
    let (before, during) = referrals.split_at(600);
    // A repeat of every tenth early referral: its version is already in the table.
    let repeats: Vec<_> = before.iter().step_by(10).cloned().collect();
    let expected = referrals.len() as u64;
    anyhow::ensure!(ids(&referrals).len() == referrals.len(), "ids not distinct");

    // A server of this test's own: the shared one stays up for the other tests.
    let mut own = OwnClickHouse::start().await?;
    let mut deployment = Deployment::new(&[])?;
    deployment.use_clickhouse(&own.url());
    let (ok, output) = run_hunter(&["migrate"], &deployment.env, Duration::from_secs(60))?;
    assert!(ok, "{output}");
    deployment
        .env
        .insert("HUNTER_SINK_BATCH_ROWS".into(), "200".into());
    deployment.produce_referrals(before).await?;
    // The processor on the deployment's API port (its metrics), the sink on another.
    let processor = deployment.start_role("process").await?;
    let sink = deployment.start_role_on("sink", free_port()).await?;
    let clickhouse = deployment.clickhouse.clone();
    let topic = deployment.topics.referrals.clone();
    let first = wait_for(
        "the first referrals in clickhouse and their offsets committed",
        Duration::from_secs(120),
        || async {
            let rows = referral_versions(&clickhouse).await?;
            let committed = deployment.committed_records(PROCESSOR_GROUP, &topic)?;
            Ok((rows == before.len() as u64 && committed == before.len() as i64).then_some(()))
        },
    )
    .await;
    if let Err(error) = first {
        anyhow::bail!("{error}\n{}", deployment.logs());
    }
    let logs = deployment.full_logs();
    assert!(
        logs.contains("the processor writes the referrals table"),
        "the processor did not take the table on\n{}",
        deployment.logs()
    );

    // ClickHouse away: the processor pauses (its offsets stay where ClickHouse stopped taking
    // rows, the lead topic stops growing) and does not exit.
    own.stop().await?;
    let stopped = Instant::now();
    deployment.produce_referrals(during).await?;
    deployment.produce_referrals(&repeats).await?;
    let paused = referrals_paused(&deployment, true, Duration::from_secs(25)).await;
    if let Err(error) = paused {
        anyhow::bail!("{error}\n{}", deployment.logs());
    }
    let committed_paused = deployment.committed_records(PROCESSOR_GROUP, &topic)?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let leads_paused = deployment.topic_count(&deployment.topics.leads)?;
    while stopped.elapsed() < Duration::from_secs(20) {
        anyhow::ensure!(
            deployment.process(processor).is_running(),
            "the processor exited while clickhouse was down\n{}",
            deployment.logs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let committed_later = deployment.committed_records(PROCESSOR_GROUP, &topic)?;
    let leads_later = deployment.topic_count(&deployment.topics.leads)?;
    assert_eq!(
        committed_later, committed_paused,
        "offsets moved while clickhouse had none of their rows"
    );
    assert_eq!(
        leads_later, leads_paused,
        "leads kept coming while the processor was paused"
    );
    own.start_again().await?;

    // Up again: every version in the table, every offset committed, nothing read by the sink.
    let total = (referrals.len() + repeats.len()) as i64;
    let all = wait_for(
        "every referral version in clickhouse and every offset committed",
        Duration::from_secs(120),
        || async {
            let rows = referral_versions(&clickhouse).await?;
            let committed = deployment.committed_records(PROCESSOR_GROUP, &topic)?;
            Ok((rows == expected && committed == total).then_some(()))
        },
    )
    .await;
    if let Err(error) = all {
        anyhow::bail!("{error}\n{}", deployment.logs());
    }
    let in_table = clickhouse
        .rows("SELECT referral_id FROM referrals FINAL ORDER BY referral_id")
        .await?
        .iter()
        .map(|row| row["referral_id"].as_str().unwrap_or_default().to_owned())
        .collect::<BTreeSet<_>>();
    assert_eq!(in_table, ids(&referrals));
    referrals_paused(&deployment, false, Duration::from_secs(30)).await?;
    let failures = deployment.sink_failures("referrals").await?;
    assert!(failures >= 1.0, "the outage left no failed insert");
    assert_eq!(
        deployment.committed_records(SINK_GROUP, &topic)?,
        0,
        "the sink read the referral topic although the processor writes the table"
    );
    // `hunter topics describe` does not show a group nobody runs.
    let description = deployment.describe_topics()?;
    let groups = described_topic(&description, &topic)?["groups"].to_string();
    assert!(
        groups.contains(&format!("{}{PROCESSOR_GROUP}", deployment.prefix))
            && !groups.contains(SINK_GROUP),
        "{groups}"
    );
    assert!(
        deployment.process(sink).is_running(),
        "{}",
        deployment.logs()
    );
    deployment.teardown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn where_the_sink_wrote_referrals_before_auto_keeps_it_so() -> anyhow::Result<()> {
    let referrals = generated_referrals(300, 92)?;
    let (old, new) = referrals.split_at(120);
    let mut deployment = Deployment::new(&[])?;
    let (ok, output) = run_hunter(&["migrate"], &deployment.env, Duration::from_secs(60))?;
    assert!(ok, "{output}");
    let clickhouse = deployment.clickhouse.clone();
    let topic = deployment.topics.referrals.clone();

    // The deployment as it ran before: the sink writing `referrals` (named, as a release
    // before 2026-12-02 did without the setting).
    deployment.produce_referrals(old).await?;
    deployment
        .env
        .insert("HUNTER_SINK_REFERRALS_WRITER".into(), "sink".into());
    let sink = deployment.start_role("sink").await?;
    let done = wait_for(
        "the sink's referrals in clickhouse and committed",
        Duration::from_secs(90),
        || async {
            let rows = referral_versions(&clickhouse).await?;
            let committed = deployment.committed_records(SINK_GROUP, &topic)?;
            Ok((rows == old.len() as u64 && committed == old.len() as i64).then_some(()))
        },
    )
    .await;
    if let Err(error) = done {
        anyhow::bail!("{error}\n{}", deployment.logs());
    }
    deployment
        .process(sink)
        .terminate(Duration::from_secs(30))?;

    // Upgraded, the setting left at its default: both roles find the sink's committed offsets
    // and keep the sink writing; nothing is missing and the processor writes no row.
    deployment.env.remove("HUNTER_SINK_REFERRALS_WRITER");
    deployment.start_role("process").await?;
    deployment.start_role_on("sink", free_port()).await?;
    deployment.produce_referrals(new).await?;
    let done = wait_for(
        "every referral in clickhouse through the sink's group, every lead out",
        Duration::from_secs(120),
        || async {
            let rows = referral_versions(&clickhouse).await?;
            let committed = deployment.committed_records(SINK_GROUP, &topic)?;
            let processed = deployment.committed_records(PROCESSOR_GROUP, &topic)?;
            let expected = referrals.len() as i64;
            Ok(
                (rows == expected as u64 && committed == expected && processed == expected)
                    .then_some(()),
            )
        },
    )
    .await;
    if let Err(error) = done {
        anyhow::bail!("{error}\n{}", deployment.logs());
    }
    let logs = deployment.full_logs();
    assert!(
        !logs.contains("the processor writes the referrals table"),
        "the processor took the table over from a sink that wrote it\n{}",
        deployment.logs()
    );
    let said: Vec<String> = logs
        .lines()
        .map(plain)
        .filter(|line| line.contains("who writes the referrals table"))
        .collect();
    assert!(
        said.len() >= 2
            && said.iter().all(
                |line| line.contains("writer=\"sink\"") || line.contains("\"writer\":\"sink\"")
            ),
        "the roles did not both say the sink keeps the table: {said:?}\n{}",
        deployment.logs()
    );
    deployment.teardown().await;
    Ok(())
}
