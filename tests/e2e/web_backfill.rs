//! The page's status indicator follows a running backfill (docs/backfill.md, "Where progress
//! shows"): the real `hunter` binary, broker, ClickHouse and simulator, and the page in headless
//! Chromium (`tests/browser/backfill.mjs`). The simulator pages slowly (small pages, every
//! reply's body 2 s late: its `slow` fault), so `hunter backfill` runs long enough for the
//! page's 10-second status refresh to show its progress line (`backfill: N/~E (P%) referrals
//! read, …`), and then the end of the run (`synced …`). Screenshots land in
//! `target/browser-artifacts/`.

use std::time::Duration;

use hunter_e2e::{Deployment, generated_referrals, run_hunter};
use serde_json::json;

const REFERRALS: usize = 200;
/// 200 referrals at 10 a page, each reply 2 s late: about 21 pages, 40 s of backfill.
const PAGE_SIZE: &str = "10";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_indicator_shows_a_running_backfill_and_its_end() -> anyhow::Result<()> {
    let browser_dir = hunter_e2e::browser::browser_dir()?;
    let referrals = generated_referrals(REFERRALS, 33)?;
    let mut deployment = Deployment::new(&referrals)?;
    deployment
        .start_simulator(&["--page-size", PAGE_SIZE])
        .await?;
    deployment.login_and_migrate()?;
    deployment.start_role("all").await?;
    // The first poll reads everything: its size is the backfill's estimate.
    let first = deployment
        .wait_for_run("the first poll", Duration::from_secs(180), |r| {
            r.status == "succeeded"
        })
        .await?;
    assert!(first.fetched >= REFERRALS as i64, "{first:?}");
    deployment
        .simulator_post("/_simulator/faults?spec=slow:1")
        .await?;

    // The page is open and signed in before the backfill starts; it signals on stdout.
    let expect = json!({ "estimate": first.fetched, "total": REFERRALS });
    let mut browser = tokio::process::Command::new("node")
        .arg("backfill.mjs")
        .current_dir(&browser_dir)
        .env("HUNTER_WEB_URL", &deployment.api)
        .env("HUNTER_WEB_TOKEN", &deployment.api_token)
        .env("HUNTER_WEB_EXPECT", expect.to_string())
        .env("HUNTER_WEB_ARTIFACTS", hunter_e2e::browser::artifacts_dir())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = browser.stdout.take().expect("piped");
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let mut seen = String::new();
    loop {
        let line = tokio::time::timeout(Duration::from_secs(120), lines.next_line()).await;
        match line {
            Ok(Ok(Some(line))) => {
                seen.push_str(&line);
                seen.push('\n');
                if line == "signed in" {
                    break;
                }
            }
            _ => anyhow::bail!("the page did not sign in:\n{seen}"),
        }
    }
    let env = deployment.env.clone();
    let backfill = tokio::task::spawn_blocking(move || {
        run_hunter(&["backfill"], &env, Duration::from_secs(600))
    });
    let (ok, output) = backfill.await??;
    assert!(
        ok,
        "hunter backfill failed:\n{output}\n{}",
        deployment.logs()
    );
    // The page goes on to see the end of the run.
    while let Ok(Some(line)) = lines.next_line().await {
        seen.push_str(&line);
        seen.push('\n');
    }
    let status = browser.wait().await?;
    let mut stderr = String::new();
    if let Some(mut err) = browser.stderr.take() {
        tokio::io::AsyncReadExt::read_to_string(&mut err, &mut stderr).await?;
    }
    if !status.success() {
        anyhow::bail!(
            "browser checks failed (screenshots in target/browser-artifacts):\n{seen}\n{stderr}\nbackfill:\n{output}\n{}",
            deployment.logs()
        );
    }
    assert!(seen.contains("backfill status checks passed"), "{seen}");
    // The line the page showed is the run's: the command saw the same run succeed.
    assert!(output.contains(" succeeded: "), "{output}");
    deployment.teardown().await;
    Ok(())
}
