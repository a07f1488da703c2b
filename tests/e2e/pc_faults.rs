//! Partner Center faults end to end: the source, the processor and the sink as separate
//! `hunter run <role>` processes on the real stack, against the simulator, with referrals moving
//! on all the time and a scripted fault schedule changed at run time (`POST /_simulator/faults`):
//!
//! 1. a 429 storm with `Retry-After: 2`: the source waits as told (no more calls than one per
//!    Retry-After) and, once its attempts are used up, records a `rate_limited` run;
//! 2. a 5xx burst (500 and 503): retried with backoff;
//! 3. truncated and slow bodies: truncated ones are retried, slow ones waited for;
//! 4. every access token expired: refreshed silently, no sign-in;
//! 5. every refresh token revoked: a `signin_required` run saying what to run, the gauge, no
//!    calls while suspended; `hunter auth login` resumes it.
//!
//! Then the faults and the data stop and one more sync runs. Every injected fault must be
//! accounted for (a retry, or a failed run of the right class), and the result must be exact:
//! ClickHouse holds each current referral once with its latest version (0 lost, 0 wrong), and
//! no referral version was published twice (0 doubled).
//!
//! `HUNTER_PC_FAULTS_REFERRALS` sets the data size (default 3000).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hunter_core::records::{SyncRun, Timestamp};
use hunter_e2e::{Deployment, free_port, generated_referrals, run_hunter, stat_count, wait_for};
use serde_json::Value;

const TENANT: &str = "test-tenant";
/// Every error class the schedule may cause; anything else is a wrong report.
const EXPECTED_CLASSES: [&str; 4] = ["rate_limited", "server", "decode", "signin_required"];

/// Sum of the samples of `name` whose labels include every pair of `labels`.
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, series_labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if series_name != name {
                return None;
            }
            let present: Vec<&str> = series_labels.split(',').collect();
            labels
                .iter()
                .all(|(k, v)| present.contains(&format!("{k}=\"{v}\"").as_str()))
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

fn list_count(stats: &Value, statuses: &[&str]) -> u64 {
    stat_count(&stats["requests"]["referrals_list"], statuses)
}

fn fault_count(stats: &Value, kind: &str) -> u64 {
    stats["faults"][kind].as_u64().unwrap_or(0)
}

/// Requests of every kind the simulator answered (API and login authority), health checks
/// excluded: what a suspended source must not make.
fn calls(stats: &Value) -> u64 {
    stats["requests"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(endpoint, _)| endpoint.as_str() != "healthz")
                .map(|(_, statuses)| stat_count(statuses, &[]))
                .sum()
        })
        .unwrap_or(0)
}

/// The final record of every run (a run is published when it starts and when it ends).
async fn finished_runs(deployment: &Deployment) -> anyhow::Result<Vec<SyncRun>> {
    let mut runs: BTreeMap<String, SyncRun> = BTreeMap::new();
    for run in deployment.sync_runs().await? {
        if run.status != "running" {
            runs.insert(run.run_id.clone(), run);
        }
    }
    Ok(runs.into_values().collect())
}

fn failed_with(runs: &[SyncRun], class: &str) -> usize {
    runs.iter()
        .filter(|r| r.status == "failed" && r.error_class.as_deref() == Some(class))
        .count()
}

struct Source {
    metrics_url: String,
}

impl Source {
    async fn metrics(&self) -> anyhow::Result<String> {
        Ok(reqwest::get(&self.metrics_url).await?.text().await?)
    }
}

async fn set_faults(deployment: &Deployment, spec: &str, retry_after: u64) -> anyhow::Result<()> {
    deployment
        .simulator_post(&format!(
            "/_simulator/faults?spec={spec}&retry_after={retry_after}"
        ))
        .await
}

async fn stats(deployment: &Deployment) -> anyhow::Result<Value> {
    deployment.simulator_get("/_simulator/stats").await
}

/// Waits for a successful poll that started after `after`.
async fn wait_for_recovery(
    deployment: &Deployment,
    what: &str,
    after: Timestamp,
) -> anyhow::Result<SyncRun> {
    deployment
        .wait_for_run(what, Duration::from_secs(120), |r| {
            r.status == "succeeded" && r.started_at > after
        })
        .await
}

/// Keeps `spec` on until the simulator has injected at least `min` of each kind (and for at
/// least `at_least`), then turns the faults off; returns when they went off.
async fn fault_phase(
    deployment: &Deployment,
    spec: &str,
    min: &[(&str, u64)],
    at_least: Duration,
) -> anyhow::Result<Timestamp> {
    let before = stats(deployment).await?;
    let started = Instant::now();
    set_faults(deployment, spec, 1).await?;
    let injected = wait_for(
        &format!("faults {spec} to be injected"),
        Duration::from_secs(90),
        || async {
            let now = stats(deployment).await?;
            let enough = min
                .iter()
                .all(|(kind, n)| fault_count(&now, kind) >= fault_count(&before, kind) + n);
            Ok((enough && started.elapsed() >= at_least).then_some(()))
        },
    )
    .await;
    set_faults(deployment, "", 1).await?;
    let off = Timestamp::now();
    injected.map_err(|error| anyhow::anyhow!("{error}\n{}", deployment.logs()))?;
    Ok(off)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_lose_nothing_double_nothing_and_are_reported_by_class() -> anyhow::Result<()> {
    let size: usize = std::env::var("HUNTER_PC_FAULTS_REFERRALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let test_started = Instant::now();
    let referrals = generated_referrals(size, 81)?;
    let mut deployment = Deployment::new(&referrals)?;
    // The data keeps moving on (bursts of three sharing a timestamp, some with a status step)
    // while the source polls, faulted or not.
    deployment
        .start_simulator(&["--mutate", "0.3", "--mutate-burst", "3", "--seed", "13"])
        .await?;
    deployment.login_and_migrate()?;
    deployment
        .env
        .insert("HUNTER_SYNC_INTERVAL_SECS".into(), "1".into());
    deployment.start_role_on("sink", free_port()).await?;
    deployment.start_role_on("process", free_port()).await?;
    let source_port = free_port();
    deployment.start_role_on("source", source_port).await?;
    let source = Source {
        metrics_url: format!("http://127.0.0.1:{source_port}/metrics"),
    };
    deployment
        .wait_for_run("a first complete poll", Duration::from_secs(120), |r| {
            r.status == "succeeded"
        })
        .await?;
    eprintln!("first poll done after {:?}", test_started.elapsed());

    // 1. A 429 storm with Retry-After: 2, until a poll gives up (6 attempts, 5 waits of 2 s).
    let storm_on = stats(&deployment).await?;
    let storm_started = Instant::now();
    let storm_start_ts = Timestamp::now();
    set_faults(&deployment, "429:1", 2).await?;
    let throttled = deployment
        .wait_for_run(
            "a poll failed by the 429 storm",
            Duration::from_secs(60),
            |r| r.error_class.as_deref() == Some("rate_limited"),
        )
        .await?;
    let storm_off = stats(&deployment).await?;
    let storm = storm_started.elapsed();
    set_faults(&deployment, "", 1).await?;
    let storm_end_ts = Timestamp::now();
    let throttled_calls = list_count(&storm_off, &["429"]) - list_count(&storm_on, &["429"]);
    // A client that waits as told makes at most one call per Retry-After, however its polls
    // and retries line up (a quarter second of slack for the simulator's own time between
    // receiving a request and counting it).
    let allowed = ((storm.as_secs_f64() + 0.25) / 2.0).floor() as u64 + 1;
    assert!(
        (6..=allowed).contains(&throttled_calls),
        "{throttled_calls} calls during a {storm:?} storm of 429s with Retry-After: 2 (at most {allowed})"
    );
    assert!(
        throttled.finished_at.is_some_and(|at| at > storm_start_ts),
        "{throttled:?}"
    );
    assert!(
        throttled
            .error_message
            .as_deref()
            .is_some_and(|m| m.contains("429") && m.contains("retry after 2 s")),
        "{throttled:?}"
    );
    wait_for_recovery(&deployment, "a poll after the storm", storm_end_ts).await?;
    eprintln!(
        "429 storm: {throttled_calls} calls in {storm:?}; recovered after {:?}",
        test_started.elapsed()
    );

    // 2. A 5xx burst, until both kinds were served.
    let burst_off = fault_phase(
        &deployment,
        "500:0.5,503:0.5",
        &[("500", 1), ("503", 1)],
        Duration::from_secs(3),
    )
    .await?;
    wait_for_recovery(&deployment, "a poll after the 5xx burst", burst_off).await?;
    eprintln!("5xx burst recovered after {:?}", test_started.elapsed());

    // 3. Truncated and slow bodies.
    let bodies_off = fault_phase(
        &deployment,
        "truncate:0.25,slow:0.25",
        &[("truncate", 2), ("slow", 2)],
        Duration::from_secs(3),
    )
    .await?;
    wait_for_recovery(&deployment, "a poll after the bad bodies", bodies_off).await?;
    eprintln!("bad bodies recovered after {:?}", test_started.elapsed());

    // 4. Every access token expires: one silent refresh, no sign-in needed.
    let before = stats(&deployment).await?;
    deployment
        .simulator_post("/_simulator/expire-access-tokens")
        .await?;
    // Taken once the simulator has answered: a poll that started before could still have made
    // its calls with the old token.
    let expired_at = Timestamp::now();
    wait_for_recovery(&deployment, "a poll after the tokens expired", expired_at).await?;
    let after = stats(&deployment).await?;
    assert_eq!(
        stat_count(&after["tokens"]["refresh_token"], &["ok"]),
        stat_count(&before["tokens"]["refresh_token"], &["ok"]) + 1,
        "one refresh for the expired access token: {after}"
    );
    assert!(
        list_count(&after, &["401"]) > list_count(&before, &["401"]),
        "{after}"
    );
    assert_eq!(
        failed_with(&finished_runs(&deployment).await?, "signin_required"),
        0,
        "an expired access token needs no sign-in"
    );

    // 5. Every refresh token revoked (and the access token gone): the tenant is suspended.
    let signin = deployment.revoke_sign_in().await?;
    let message = signin.error_message.clone().unwrap_or_default();
    assert!(
        message.contains("hunter auth login") && message.contains("AADSTS700082"),
        "{message}"
    );
    let gauge = format!("hunter_source_signin_required{{tenant=\"{TENANT}\"}}");
    assert_eq!(
        metric(
            &source.metrics().await?,
            "hunter_source_signin_required",
            &[("tenant", TENANT)]
        ),
        1.0,
        "{gauge}"
    );
    let frozen = calls(&stats(&deployment).await?);
    let suspended_since = Timestamp::now();
    // Two suspended ticks recorded since (a count, not a sleep): each would have called.
    hunter_e2e::wait_for(
        "two suspended ticks recorded",
        Duration::from_secs(60),
        || async {
            let ticks = finished_runs(&deployment)
                .await?
                .iter()
                .filter(|r| {
                    r.error_class.as_deref() == Some("signin_required")
                        && r.started_at > suspended_since
                })
                .count();
            Ok((ticks >= 2).then_some(()))
        },
    )
    .await?;
    assert_eq!(
        calls(&stats(&deployment).await?),
        frozen,
        "a suspended tenant called the simulator"
    );
    let (ok, output) = run_hunter(&["auth", "login"], &deployment.env, Duration::from_secs(60))?;
    assert!(ok, "{output}");
    let login_at = Timestamp::now();
    wait_for_recovery(&deployment, "a poll after the new sign-in", login_at).await?;
    assert_eq!(
        metric(
            &source.metrics().await?,
            "hunter_source_signin_required",
            &[("tenant", TENANT)]
        ),
        0.0,
        "{gauge}"
    );
    eprintln!("sign-in recovered after {:?}", test_started.elapsed());

    // The data stops moving; one more sync reads the last of it.
    deployment
        .simulator_post("/_simulator/mutate?rate=0")
        .await?;
    let task = deployment.request_sync(None).await?;
    let run = deployment
        .wait_for_run("the final sync", Duration::from_secs(120), |r| {
            r.run_id == task
        })
        .await?;
    let serving = run.coalesced_into.clone().unwrap_or(run.run_id.clone());
    let run = deployment
        .wait_for_run("the run serving it", Duration::from_secs(120), |r| {
            r.run_id == serving
        })
        .await?;
    assert_eq!(run.status, "succeeded", "{run:?}");

    // 0 lost, 0 wrong: ClickHouse holds exactly the simulator's current referrals, each once,
    // at its latest version.
    let truth = deployment.simulator_get("/_simulator/referrals").await?;
    let truth = truth.as_array().context("referrals array")?;
    assert_eq!(truth.len(), size);
    let mut want: BTreeMap<String, (String, String, String)> = BTreeMap::new();
    for referral in truth {
        let updated = referral["updatedDateTime"].as_str().unwrap_or_default();
        let version = Timestamp::parse(updated)
            .map_err(|e| anyhow::anyhow!("{updated}: {e}"))?
            .micros();
        want.insert(
            referral["id"].as_str().unwrap_or_default().to_owned(),
            (
                referral["status"].as_str().unwrap_or_default().to_owned(),
                referral["eTag"].as_str().unwrap_or_default().to_owned(),
                version.to_string(),
            ),
        );
    }
    let clickhouse = &deployment.clickhouse;
    let live = |rows: Vec<Value>| -> BTreeMap<String, (String, String, String)> {
        rows.into_iter()
            .map(|row| {
                let text = |k: &str| row[k].as_str().unwrap_or_default().to_owned();
                (
                    text("lead_id"),
                    (text("status"), text("etag"), text("version")),
                )
            })
            .collect()
    };
    let query = "SELECT lead_id, ifNull(status, '') AS status, ifNull(etag, '') AS etag, \
                 toString(version) AS version FROM leads FINAL";
    let matched = wait_for(
        "ClickHouse to hold every current referral",
        Duration::from_secs(90),
        || async { Ok((live(clickhouse.rows(query).await?) == want).then_some(())) },
    )
    .await;
    if matched.is_err() {
        let got = live(clickhouse.rows(query).await?);
        let lost: Vec<_> = want.keys().filter(|id| !got.contains_key(*id)).collect();
        let wrong: Vec<_> = want
            .iter()
            .filter(|(id, v)| got.get(*id).is_some_and(|g| g != *v))
            .map(|(id, v)| (id, v, &got[id]))
            .collect();
        let extra: Vec<_> = got.keys().filter(|id| !want.contains_key(*id)).collect();
        panic!(
            "{} lost (e.g. {:?}), {} wrong (id, want, got: {:?}), {} extra\n{}",
            lost.len(),
            &lost[..lost.len().min(5)],
            wrong.len(),
            &wrong[..wrong.len().min(5)],
            extra.len(),
            deployment.logs()
        );
    }
    let counts = clickhouse
        .rows("SELECT toString(count()) AS n, toString(uniqExact(lead_id)) AS ids FROM leads FINAL")
        .await?;
    assert_eq!(
        (counts[0]["n"].as_str(), counts[0]["ids"].as_str()),
        (
            Some(size.to_string().as_str()),
            Some(size.to_string().as_str())
        ),
        "one live row per lead"
    );

    // 0 doubled: no referral version was published twice; every current one was published.
    let published = deployment.published_versions().await?;
    let mut seen = HashSet::new();
    let doubled: Vec<_> = published.iter().filter(|v| !seen.insert(*v)).collect();
    assert!(
        doubled.is_empty(),
        "{} versions published twice, e.g. {:?}",
        doubled.len(),
        &doubled[..doubled.len().min(5)]
    );
    let lost: Vec<_> = want
        .iter()
        .map(|(id, (_, etag, _))| (id.clone(), etag.clone()))
        .filter(|version| !seen.contains(version))
        .collect();
    assert!(
        lost.is_empty(),
        "{} current versions never published, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );

    // The right errors, reported: every injected fault is a retry or a failed run of its
    // class; failed runs carry no other class; the source's metrics agree with the simulator.
    let stats = stats(&deployment).await?;
    let metrics = source.metrics().await?;
    let runs = finished_runs(&deployment).await?;
    let classes: HashSet<&str> = runs
        .iter()
        .filter(|r| r.status == "failed")
        .filter_map(|r| r.error_class.as_deref())
        .collect();
    assert!(
        classes.iter().all(|c| EXPECTED_CLASSES.contains(c)),
        "unexpected error classes: {classes:?}"
    );
    let requests = |outcome: &str| {
        metric(
            &metrics,
            "hunter_partner_center_api_requests_total",
            &[("outcome", outcome)],
        ) as u64
    };
    let retries = |reason: &str| {
        metric(
            &metrics,
            "hunter_partner_center_api_retries_total",
            &[("reason", reason)],
        ) as u64
    };
    let errors = |class: &str| {
        metric(
            &metrics,
            "hunter_source_errors_total",
            &[("tenant", TENANT), ("class", class)],
        ) as u64
    };
    for status in ["429", "500", "503"] {
        assert!(fault_count(&stats, status) > 0, "no {status} injected");
        assert_eq!(
            requests(status),
            fault_count(&stats, status),
            "http {status} seen by the source vs served: {stats}"
        );
    }
    assert_eq!(
        requests("401"),
        list_count(&stats, &["401"]),
        "401s seen vs served"
    );
    for (reason, class, injected) in [
        ("429", "rate_limited", fault_count(&stats, "429")),
        (
            "5xx",
            "server",
            fault_count(&stats, "500") + fault_count(&stats, "503"),
        ),
        ("decode", "decode", fault_count(&stats, "truncate")),
    ] {
        let failed = failed_with(&runs, class) as u64;
        assert_eq!(
            retries(reason) + failed,
            injected,
            "{reason}: {} retries + {failed} failed `{class}` runs vs {injected} injected",
            retries(reason)
        );
        assert_eq!(
            errors(class),
            failed,
            "hunter_source_errors_total{{class={class}}}"
        );
    }
    assert!(failed_with(&runs, "rate_limited") >= 1);
    // The poll that met the revoked token is an error; the suspended ticks after it are not
    // polls, but each is recorded as a run saying why.
    assert_eq!(errors("signin_required"), 1);
    assert!(failed_with(&runs, "signin_required") >= 3);
    // Every 429 wait was the server's Retry-After (2 s), not backoff.
    let waits = metric(
        &metrics,
        "hunter_partner_center_api_retry_wait_seconds_count",
        &[("reason", "429")],
    );
    let waited = metric(
        &metrics,
        "hunter_partner_center_api_retry_wait_seconds_sum",
        &[("reason", "429")],
    );
    assert!(
        waits >= 5.0 && (waited - 2.0 * waits).abs() < 1e-6,
        "{waits} 429 waits took {waited} s"
    );
    // Token refreshes: as many as the authority granted and refused.
    let refreshes = |outcome| {
        metric(
            &metrics,
            "hunter_partner_center_token_refreshes_total",
            &[("outcome", outcome)],
        ) as u64
    };
    assert_eq!(
        refreshes("ok"),
        stat_count(&stats["tokens"]["refresh_token"], &["ok"]),
        "{stats}"
    );
    assert!(refreshes("error") >= 1);
    assert_eq!(
        refreshes("error"),
        stat_count(&stats["tokens"]["refresh_token"], &["invalid_grant"]),
        "{stats}"
    );
    // Slow bodies were waited for (over 2 s each), not cut off.
    let slow_requests = metric(
        &metrics,
        "hunter_partner_center_api_request_duration_seconds_count",
        &[],
    ) - metric(
        &metrics,
        "hunter_partner_center_api_request_duration_seconds_bucket",
        &[("le", "1")],
    );
    assert!(
        slow_requests >= fault_count(&stats, "slow") as f64,
        "{slow_requests} requests over 1 s, {} slow bodies",
        fault_count(&stats, "slow")
    );

    // What operators query: the sync_runs table in ClickHouse shows the same failed classes.
    let table = wait_for(
        "the failed runs in ClickHouse",
        Duration::from_secs(60),
        || async {
            let rows = clickhouse
                .rows(
                    "SELECT ifNull(error_class, '') AS class, toString(count()) AS n \
                     FROM sync_runs FINAL WHERE status = 'failed' GROUP BY class",
                )
                .await?;
            let table: HashMap<String, usize> = rows
                .iter()
                .map(|r| {
                    (
                        r["class"].as_str().unwrap_or_default().to_owned(),
                        r["n"].as_str().and_then(|n| n.parse().ok()).unwrap_or(0),
                    )
                })
                .collect();
            let want: HashMap<String, usize> = classes
                .iter()
                .map(|c| ((*c).to_owned(), failed_with(&runs, c)))
                .collect();
            Ok((table == want).then_some(table))
        },
    )
    .await?;
    eprintln!(
        "{size} referrals, {} moves, {} versions published; faults {}; failed runs {table:?}; {:?} in all",
        stats["mutations"]["referrals"],
        published.len(),
        stats["faults"],
        test_started.elapsed()
    );
    deployment.teardown().await;
    Ok(())
}
