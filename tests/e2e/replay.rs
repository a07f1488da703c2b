//! `hunter replay clickhouse` on the real broker and ClickHouse: a rebuild into a fresh database
//! while the pipeline keeps writing, and one into the live database under the running sink; at
//! rest, the fresh database holds exactly the rows of the live `leads FINAL`, `lead_history` and
//! `referrals FINAL` (every column but `inserted_at`).

use std::time::Duration;

use hunter_e2e::{
    ClickHouse, Deployment, described_topic, free_port, generated_referrals, group_view,
    run_hunter, wait_for,
};
use serde_json::Value;

/// Drops the replay's database at the end, also when the test fails.
struct DropDatabase(ClickHouse, String);

impl Drop for DropDatabase {
    fn drop(&mut self) {
        if std::env::var("HUNTER_TEST_KEEP").is_ok_and(|v| v == "1") {
            return;
        }
        let (clickhouse, name) = (self.0.clone(), self.1.clone());
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(clickhouse.execute(&format!("DROP DATABASE IF EXISTS {name}")))
        })
        .join();
    }
}

/// Every row of `table` in `database` (FINAL where the table collapses versions), every column
/// but `inserted_at` (the time of the insert), in key order.
async fn table_rows(
    clickhouse: &ClickHouse,
    database: &str,
    table: &str,
) -> anyhow::Result<Vec<Value>> {
    let columns: Vec<String> = clickhouse
        .rows(&format!(
            "SELECT name FROM system.columns WHERE database = '{database}' AND table = '{table}' \
             AND name != 'inserted_at'"
        ))
        .await?
        .into_iter()
        .filter_map(|row| row["name"].as_str().map(str::to_owned))
        .collect();
    anyhow::ensure!(!columns.is_empty(), "{database}.{table} has no columns");
    let (from, order) = match table {
        "leads" => (format!("{database}.leads FINAL"), "lead_id"),
        "lead_history" => (format!("{database}.lead_history FINAL"), "lead_id, version"),
        _ => (format!("{database}.referrals FINAL"), "referral_id"),
    };
    clickhouse
        .rows(&format!(
            "SELECT {} FROM {from} ORDER BY {order}",
            columns.join(", ")
        ))
        .await
}

fn replay(deployment: &Deployment, extra: &[&str]) -> anyhow::Result<String> {
    let mut args = vec!["replay", "clickhouse"];
    args.extend_from_slice(extra);
    let (ok, output) = run_hunter(&args, &deployment.env, Duration::from_secs(180))?;
    anyhow::ensure!(ok, "hunter {args:?} failed:\n{output}");
    anyhow::ensure!(
        output.contains("replay done:"),
        "no summary from hunter {args:?}:\n{output}"
    );
    Ok(output)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_rebuilds_exactly_the_live_tables_also_while_the_sink_writes() -> anyhow::Result<()>
{
    let referrals = generated_referrals(120, 21)?;
    let mut deployment = Deployment::new(&referrals)?;
    // Referrals keep moving on (new versions, status steps) at every poll, polled every second:
    // the sink keeps writing while the replays run.
    deployment
        .start_simulator(&["--mutate", "1.0", "--mutate-burst", "4", "--seed", "21"])
        .await?;
    deployment.login_and_migrate()?;
    deployment
        .env
        .insert("HUNTER_SYNC_INTERVAL_SECS".into(), "1".into());
    let source = deployment.start_role("source").await?;
    // Each role in a process of its own, each with its own health and metrics port.
    deployment.start_role_on("process", free_port()).await?;
    deployment.start_role_on("sink", free_port()).await?;
    let live = deployment.env["HUNTER_CLICKHOUSE_DATABASE"].clone();
    wait_for(
        "every referral as a lead",
        Duration::from_secs(90),
        || async {
            let rows = deployment
                .clickhouse
                .rows("SELECT count() AS n, max(version) AS v FROM leads FINAL")
                .await?;
            let n = rows[0]["n"].as_str().and_then(|n| n.parse::<u64>().ok());
            Ok((n == Some(120)).then_some(()))
        },
    )
    .await
    .map_err(|error| anyhow::anyhow!("{error}\n{}", deployment.logs()))?;

    // While the pipeline writes: a rebuild into a fresh database, and one into the live
    // database itself, under the running sink.
    let fresh = format!("{live}_replay");
    let _drop = DropDatabase(deployment.clickhouse.clone(), fresh.clone());
    let first = replay(&deployment, &["--into", &fresh])?;
    replay(&deployment, &[])?;
    let history_during = table_rows(&deployment.clickhouse, &fresh, "lead_history").await?;

    // Rest: the source stops; the processor and the sink finish what is on the topics.
    deployment.process(source).kill9();
    let prefix = deployment.prefix.clone();
    wait_for(
        "the processor and the sink to catch up",
        Duration::from_secs(90),
        || async {
            let description = deployment.describe_topics()?;
            let referrals = described_topic(&description, &deployment.topics.referrals)?;
            let leads = described_topic(&description, &deployment.topics.leads)?;
            // The processor writes `referrals` here (a new deployment): its offsets move only
            // once ClickHouse has the rows, so its lag covers that table too.
            let (_, processor_lag, _) =
                group_view(referrals, &format!("{prefix}hunter-processor"))?;
            let (_, lead_lag, _) = group_view(leads, &format!("{prefix}hunter-sink-leads"))?;
            Ok((processor_lag == 0 && lead_lag == 0).then_some(()))
        },
    )
    .await
    .map_err(|error| anyhow::anyhow!("{error}\n{}", deployment.logs()))?;

    // What the first replay wrote while the pipeline ran is exactly what the sink wrote.
    let live_history = table_rows(&deployment.clickhouse, &live, "lead_history").await?;
    let missing: Vec<&Value> = history_during
        .iter()
        .filter(|row| !live_history.contains(row))
        .take(3)
        .collect();
    assert!(
        missing.is_empty(),
        "rows the replay wrote that the sink did not: {missing:?}"
    );
    assert!(
        live_history.len() > 120,
        "the referrals should have moved on during the test: {} versions",
        live_history.len()
    );

    // At rest, a replay catches up and the rebuild equals the live tables, column by column.
    let last = replay(&deployment, &["--into", &fresh])?;
    for table in ["leads", "lead_history", "referrals"] {
        let rebuilt = table_rows(&deployment.clickhouse, &fresh, table).await?;
        let original = table_rows(&deployment.clickhouse, &live, table).await?;
        assert_eq!(
            rebuilt.len(),
            original.len(),
            "{table}: {} rows rebuilt, {} live\nfirst replay:\n{first}\nlast replay:\n{last}",
            rebuilt.len(),
            original.len()
        );
        if let Some((a, b)) = rebuilt.iter().zip(&original).find(|(a, b)| a != b) {
            panic!("{table} differs:\nrebuilt {a}\nlive    {b}");
        }
    }
    // The summary's check names each table and its keys.
    assert!(
        last.contains(&format!("{fresh}.leads: ")) && last.contains(": ok"),
        "{last}"
    );
    deployment.teardown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_refuses_a_bad_database_name_and_rebuilds_one_table() -> anyhow::Result<()> {
    let referrals = generated_referrals(30, 22)?;
    let mut deployment = Deployment::new(&referrals)?;
    deployment.start_simulator(&[]).await?;
    deployment.login_and_migrate()?;
    deployment.start_role("all").await?;
    deployment
        .wait_for_leads_in_api(30, 1, Duration::from_secs(90))
        .await?;

    let (ok, output) = run_hunter(
        &["replay", "clickhouse", "--into", "x; DROP TABLE leads"],
        &deployment.env,
        Duration::from_secs(60),
    )?;
    assert!(!ok && output.contains("invalid --into"), "{output}");

    // Only `referrals`: the fresh database gets that table filled and `leads` left empty.
    let fresh = format!("{}_one", deployment.env["HUNTER_CLICKHOUSE_DATABASE"]);
    let _drop = DropDatabase(deployment.clickhouse.clone(), fresh.clone());
    let output = replay(&deployment, &["--table", "referrals", "--into", &fresh])?;
    assert!(
        output.contains(&format!("{fresh}.referrals 30 referrals")),
        "{output}"
    );
    let counts = deployment
        .clickhouse
        .rows(&format!(
            "SELECT (SELECT count() FROM {fresh}.referrals FINAL) AS referrals, \
             (SELECT count() FROM {fresh}.leads) AS leads"
        ))
        .await?;
    assert_eq!(counts[0]["referrals"], "30", "{counts:?}");
    assert_eq!(counts[0]["leads"], "0", "{counts:?}");
    deployment.teardown().await;
    Ok(())
}
