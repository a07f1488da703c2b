//! `hunter backfill` against the real broker, ClickHouse, the `hunter` binary and the simulator:
//! 5,000 referrals, of which the source published 2,000 before the other 3,000 appeared; a
//! backfill reads all 5,000 now (the schedule's next poll is an hour away), writes a progress
//! record after every page, the command shows progress lines (no terminal here) and ends when
//! the run does, and every current version is then on the referral topic exactly once.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use hunter_e2e::{Deployment, generated_referrals, run_hunter, wait_for};

const TOTAL: usize = 5_000;
const FIRST: usize = 2_000;
/// The simulator's page (its `$top` cap). Keyset paging reads each page boundary again, so a
/// read of everything fetches a little more than there is (5,051 for 5,000).
const PAGE_SIZE: usize = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_of_5000_referrals_shows_progress_and_publishes_every_current_version_once()
-> anyhow::Result<()> {
    let all = generated_referrals(TOTAL, 18)?;
    let mut deployment = Deployment::new(&all[..FIRST])?;
    deployment.start_simulator(&[]).await?;
    deployment.login_and_migrate()?;
    deployment.start_role("all").await?;
    let first = deployment
        .wait_for_run("the first poll", Duration::from_secs(180), |r| {
            r.status == "succeeded"
        })
        .await?;
    assert_eq!(first.published, FIRST as i64, "{first:?}");

    // 3,000 more show up; the next scheduled poll is an hour away.
    deployment.write_referrals(&all)?;
    wait_for(
        "the simulator serving 5,000 referrals",
        Duration::from_secs(60),
        || async { Ok((deployment.simulator_truth().await?.len() == TOTAL).then_some(())) },
    )
    .await?;

    // Invalid flags fail naming the flag, before anything is sent.
    for (args, flag) in [
        (vec!["backfill", "--tenant", "no-such-tenant"], "--tenant"),
        (vec!["backfill", "--since", "last tuesday"], "--since"),
    ] {
        let (ok, output) = run_hunter(&args, &deployment.env, Duration::from_secs(60))?;
        assert!(!ok && output.contains(flag), "{args:?}:\n{output}");
    }

    let (ok, output) = run_hunter(&["backfill"], &deployment.env, Duration::from_secs(600))?;
    assert!(
        ok,
        "hunter backfill failed:\n{output}\n{}",
        deployment.logs()
    );
    let run_id = output
        .lines()
        .find_map(|line| line.strip_prefix("backfill ")?.split_whitespace().next())
        .filter(|id| id.len() == 36)
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no run id printed:\n{output}"));
    // Every current version published, each once.
    let published = deployment.published_versions().await?;
    let mut counts: HashMap<&(String, String), usize> = HashMap::new();
    for version in &published {
        *counts.entry(version).or_default() += 1;
    }
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(
        twice.is_empty(),
        "{} versions published more than once, e.g. {twice:?}",
        counts.values().filter(|n| **n > 1).count()
    );
    let truth: HashSet<(String, String)> =
        deployment.simulator_truth().await?.into_iter().collect();
    let on_topic: HashSet<(String, String)> = published.into_iter().collect();
    let missing: Vec<_> = truth.difference(&on_topic).take(5).collect();
    assert!(
        missing.is_empty(),
        "{} current versions not published, e.g. {missing:?}",
        truth.difference(&on_topic).count()
    );
    assert_eq!(on_topic.len(), TOTAL);

    let progress_lines = output
        .lines()
        .filter(|line| line.starts_with("backfill progress: "))
        .count();
    assert!(progress_lines >= 1, "no progress line:\n{output}");
    assert!(
        output.contains(" succeeded: ")
            && output.contains(&format!(" fetched, {} published, ", TOTAL - FIRST)),
        "{output}"
    );

    // The run's records: a start, one progress record per page with growing counts and the
    // estimate (the first poll's size), and the final one.
    let records: Vec<_> = deployment
        .sync_runs()
        .await?
        .into_iter()
        .filter(|r| r.run_id == run_id)
        .collect();
    let progress: Vec<_> = records
        .iter()
        .filter(|r| r.status == "running" && r.updated_at.is_some())
        .collect();
    let last = records.last().expect("records");
    assert_eq!(
        (last.status.as_str(), last.published),
        ("succeeded", (TOTAL - FIRST) as i64),
        "{last:?}"
    );
    assert!(last.pages as usize >= TOTAL / PAGE_SIZE, "{last:?}");
    assert!(last.fetched as usize >= TOTAL, "{last:?}");
    assert_eq!(last.skipped, last.fetched - last.published, "{last:?}");
    assert_eq!(
        progress.len() as i64,
        last.pages,
        "one per page: {records:#?}"
    );
    for (page, record) in progress.iter().enumerate() {
        assert_eq!(record.trigger, "backfill");
        assert_eq!(record.pages, page as i64 + 1, "{record:?}");
        assert_eq!(
            record.estimate,
            Some(first.fetched),
            "the first poll's size: {record:?}"
        );
    }
    let fetched: Vec<i64> = progress.iter().map(|r| r.fetched).collect();
    assert!(fetched.windows(2).all(|w| w[0] < w[1]), "{fetched:?}");

    // The API shows the run's final record (the sink keeps it, not a progress one).
    let path = format!("/api/v1/sync/runs/{run_id}");
    let task = wait_for(
        "the backfill in the API",
        Duration::from_secs(60),
        || async {
            let (status, body) = deployment.get(&path).await?;
            Ok((status == 200 && body["state"] == "succeeded").then_some(body))
        },
    )
    .await?;
    let run = &task["runs"][0];
    assert_eq!(run["trigger"], "backfill", "{task}");
    assert_eq!(run["fetched"], last.fetched, "{task}");
    assert_eq!(run["published"], (TOTAL - FIRST) as u64, "{task}");
    assert_eq!(run["estimate"], first.fetched, "{task}");
    let (status, _) = deployment
        .get("/api/v1/sync/runs/00000000-0000-0000-0000-000000000000")
        .await?;
    assert_eq!(status, 404);

    // One backfill at a time: one requested while another runs is served by it. The running one
    // is slowed by the simulator (every reply 2 s late) while the second is requested, so it
    // is surely still running when the source reads the second command.
    let (ok, output) = run_hunter(
        &["backfill", "--no-wait"],
        &deployment.env,
        Duration::from_secs(60),
    )?;
    assert!(ok, "{output}");
    let running = output
        .lines()
        .rev()
        .find(|line| line.len() == 36)
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("--no-wait prints the run id:\n{output}"));
    wait_for(
        "the first progress record",
        Duration::from_secs(120),
        || async {
            Ok(deployment
                .sync_runs()
                .await?
                .iter()
                .any(|r| r.run_id == running && r.updated_at.is_some())
                .then_some(()))
        },
    )
    .await?;
    deployment
        .simulator_post("/_simulator/faults?spec=slow:1")
        .await?;
    let env = deployment.env.clone();
    let second = tokio::task::spawn_blocking(move || {
        run_hunter(&["backfill"], &env, Duration::from_secs(600))
    });
    let coalesced = wait_for(
        "the second backfill coalesced into the running one",
        Duration::from_secs(120),
        || async {
            Ok(deployment.sync_runs().await?.into_iter().find(|r| {
                r.status == "coalesced" && r.coalesced_into.as_deref() == Some(running.as_str())
            }))
        },
    )
    .await?;
    assert_ne!(coalesced.run_id, running);
    // While it runs, the API (and so the page's status indicator, which reads the status)
    // shows its progress: the latest progress record, not the start record.
    let path = format!("/api/v1/sync/runs/{running}");
    let task = wait_for(
        "the running backfill's progress in the API",
        Duration::from_secs(60),
        || async {
            let (status, body) = deployment.get(&path).await?;
            Ok((status == 200
                && body["state"] == "running"
                && body["runs"][0]["fetched"].as_u64().is_some_and(|n| n > 0))
            .then_some(body))
        },
    )
    .await?;
    let run = &task["runs"][0];
    assert_eq!(run["status"], "running", "{task}");
    assert!(run["pages"].as_u64().is_some_and(|n| n > 0), "{task}");
    assert_eq!(
        run["estimate"], last.fetched,
        "the previous full read's size: {task}"
    );
    let (_, status) = deployment.get("/api/v1/partner-center/sync/status").await?;
    let tenant = &status["tenants"][0]["last_run"];
    assert_eq!(
        (&tenant["run_id"], &tenant["trigger"], &tenant["status"]),
        (
            &serde_json::json!(running),
            &serde_json::json!("backfill"),
            &serde_json::json!("running")
        ),
        "{status}"
    );
    deployment
        .simulator_post("/_simulator/faults?spec=")
        .await?;
    let (ok, output) = second.await??;
    assert!(ok, "{output}");
    assert!(
        output.contains(&format!(
            "a backfill is already running ({running}): following it"
        )) && output.contains(&format!("backfill {running} succeeded")),
        "the second command follows the running backfill:\n{output}"
    );
    let backfills = deployment
        .sync_runs()
        .await?
        .into_iter()
        .filter(|r| r.trigger == "backfill" && r.status == "running" && r.updated_at.is_none())
        .count();
    assert_eq!(backfills, 2, "two backfills ran, not three");

    deployment.teardown().await;
    Ok(())
}
