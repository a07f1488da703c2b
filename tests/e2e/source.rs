//! The Partner Center source against the real broker and the simulator: faults, ties and
//! data moving while a poll pages, kill -9 mid-poll, sign-in expiry and recovery, tenants.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use hunter_e2e::{Deployment, generated_referrals, read_topic_with, run_hunter, stat_count};

fn duplicates(versions: &[(String, String)]) -> Vec<&(String, String)> {
    let mut seen = HashSet::new();
    versions.iter().filter(|v| !seen.insert(*v)).collect()
}

fn missing<'a>(
    truth: &'a [(String, String)],
    published: &[(String, String)],
) -> Vec<&'a (String, String)> {
    let published: HashSet<_> = published.iter().collect();
    truth.iter().filter(|v| !published.contains(v)).collect()
}

/// Every published version, (id, eTag), with the id of the sync run (poll) that published it.
async fn published_with_runs(
    deployment: &Deployment,
) -> anyhow::Result<Vec<((String, String), String)>> {
    let topic = deployment.topics.referrals.clone();
    let codec = hunter_core::codec::Codec::<hunter_core::records::Referral>::new(&topic, None);
    let mut versions = Vec::new();
    for (payload, _) in read_topic_with(deployment.stack.client_config(), &topic, 0)? {
        let referral = codec.decode(&payload).await?;
        versions.push((
            (referral.id, referral.e_tag.unwrap_or_default()),
            referral.ingest.sync_run_id,
        ));
    }
    Ok(versions)
}

/// The versions published more than once other than exactly once by one of the `killed` polls
/// and once by another (a restart's re-read), with the runs that published them.
fn repeats_not_of(
    published: &[((String, String), String)],
    killed: &HashSet<String>,
) -> Vec<((String, String), Vec<String>)> {
    let mut runs: HashMap<&(String, String), Vec<String>> = HashMap::new();
    for (version, run) in published {
        runs.entry(version).or_default().push(run.clone());
    }
    let mut bad: Vec<_> = runs
        .into_iter()
        .filter(|(_, runs)| {
            let by_killed = runs.iter().filter(|r| killed.contains(*r)).count();
            runs.len() > 1 && !(runs.len() == 2 && by_killed == 1)
        })
        .map(|(version, runs)| (version.clone(), runs))
        .collect();
    bad.sort();
    bad
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_ties_and_moving_data_publish_every_version_exactly_once() -> anyhow::Result<()> {
    let referrals = generated_referrals(5000, 3)?;
    let mut deployment = Deployment::new(&referrals)?;
    deployment
        .start_simulator(&[
            "--faults",
            "429:0.15,500:0.05,truncate:0.03",
            "--mutate",
            "0.5",
            "--mutate-burst",
            "3",
            "--seed",
            "5",
        ])
        .await?;
    deployment.login_and_migrate()?;
    deployment
        .env
        .insert("HUNTER_SYNC_INTERVAL_SECS".into(), "2".into());
    deployment.start_role("source").await?;

    // Several polls (three complete ones, counted) while referrals keep moving on (in bursts
    // sharing one timestamp) between and during their pages.
    hunter_e2e::wait_for("three complete polls", Duration::from_secs(240), || async {
        let runs = deployment.sync_runs().await?;
        let succeeded: HashSet<_> = runs
            .iter()
            .filter(|run| run.status == "succeeded")
            .map(|run| run.run_id.as_str())
            .collect();
        Ok((succeeded.len() >= 3).then_some(()))
    })
    .await?;

    // Then the data stops moving and one more poll must catch up with all of it.
    deployment
        .simulator_post("/_simulator/mutate?rate=0")
        .await?;
    let task = deployment.request_sync(None).await?;
    let run = deployment
        .wait_for_run("the catch-up poll", Duration::from_secs(180), |run| {
            run.run_id == task
        })
        .await?;
    let serving = run.coalesced_into.clone().unwrap_or(run.run_id.clone());
    let run = deployment
        .wait_for_run(
            "the run serving the trigger",
            Duration::from_secs(180),
            |r| r.run_id == serving,
        )
        .await?;
    assert_eq!(run.status, "succeeded", "{run:?}");

    let stats = deployment.simulator_get("/_simulator/stats").await?;
    let mutated = stats["mutations"]["referrals"].as_u64().unwrap_or(0);
    assert!(mutated > 0, "the simulator moved nothing on: {stats}");
    let faults = &stats["faults"];
    assert!(
        stat_count(faults, &[]) > 0,
        "no faults were injected: {stats}"
    );

    let truth = deployment.simulator_truth().await?;
    assert_eq!(truth.len(), 5000);
    let published = deployment.published_versions().await?;
    let lost = missing(&truth, &published);
    assert!(
        lost.is_empty(),
        "{} current versions never published, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    let doubled = duplicates(&published);
    assert!(
        doubled.is_empty(),
        "{} versions published twice, e.g. {:?}",
        doubled.len(),
        &doubled[..doubled.len().min(5)]
    );
    eprintln!(
        "published {} versions of 5000 referrals ({mutated} moves, faults {faults})",
        published.len()
    );
    deployment.teardown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_poll_then_restart_loses_nothing_and_resumes_from_the_cursor()
-> anyhow::Result<()> {
    let referrals = generated_referrals(1500, 11)?;
    let mut deployment = Deployment::new(&referrals)?;
    // Throttling makes the first poll take long enough to be killed in the middle.
    deployment
        .start_simulator(&["--page-size", "25", "--faults", "429:0.25"])
        .await?;
    deployment.login_and_migrate()?;
    let source = deployment.start_role("source").await?;

    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let published = deployment.published_versions().await?.len();
        if published >= 200 {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "nothing published in time\n{}",
            deployment.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    deployment.process(source).kill9();
    // The killed poll: the run id its records carry (only it has run so far).
    let killed_polls: HashSet<String> = published_with_runs(&deployment)
        .await?
        .into_iter()
        .map(|(_, run)| run)
        .collect();
    let before = deployment.published_versions().await?.len();
    let runs = deployment.sync_runs().await?;
    assert!(
        runs.iter().all(|r| r.status != "succeeded"),
        "the poll finished before the kill: {runs:?}"
    );
    assert!(before < 1500, "the poll finished before the kill");

    // Restart: the cursor was never stored, so everything is read again; nothing is lost.
    deployment.start_role("source").await?;
    let run = deployment
        .wait_for_run(
            "the poll after the restart",
            Duration::from_secs(180),
            |r| r.status == "succeeded",
        )
        .await?;
    let truth = deployment.simulator_truth().await?;
    let published = deployment.published_versions().await?;
    assert!(
        missing(&truth, &published).is_empty(),
        "lost versions after kill -9"
    );
    // At-least-once: a version may appear twice only when the killed poll published it and
    // the restart's poll published it again; any other repeat is a defect.
    let repeats = repeats_not_of(&published_with_runs(&deployment).await?, &killed_polls);
    assert!(
        repeats.is_empty(),
        "{} versions repeated other than once by the killed poll {killed_polls:?} and once \
         after the restart, e.g. (version, publishing runs) {:?}",
        repeats.len(),
        &repeats[..repeats.len().min(5)]
    );
    assert_eq!(run.trigger, "startup");

    // A second kill -9 after the cursor was stored: the restart's poll re-reads the overlap
    // window and publishes none of it again (the window's versions are stored with the cursor).
    let last = deployment.processes_len() - 1;
    deployment.process(last).kill9();
    let count = published.len();
    deployment.start_role("source").await?;
    let after = deployment
        .wait_for_run(
            "the poll after the second restart",
            Duration::from_secs(60),
            |r| r.status == "succeeded" && r.run_id != run.run_id,
        )
        .await?;
    assert_eq!(after.published, 0, "{after:?}");
    assert!(
        after.skipped >= 1,
        "the overlap window was re-read: {after:?}"
    );
    assert_eq!(deployment.published_versions().await?.len(), count);
    deployment.teardown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_sign_in_suspends_the_tenant_until_a_new_login() -> anyhow::Result<()> {
    let referrals = generated_referrals(60, 21)?;
    let mut deployment = Deployment::new(&referrals)?;
    // Access tokens shorter than the refresh margin: every call refreshes silently.
    deployment
        .start_simulator(&["--access-token-lifetime", "1"])
        .await?;
    deployment.login_and_migrate()?;
    let cache_path = std::path::PathBuf::from(&deployment.env["HUNTER_TOKEN_CACHE"]);
    let first_cache: serde_json::Value = serde_json::from_slice(&std::fs::read(&cache_path)?)?;
    deployment
        .env
        .insert("HUNTER_SYNC_INTERVAL_SECS".into(), "1".into());
    deployment.start_role("source").await?;
    deployment
        .wait_for_run("a first poll", Duration::from_secs(60), |r| {
            r.status == "succeeded"
        })
        .await?;

    // Silent refresh rotated the refresh token in the cache, which stays private.
    let cache: serde_json::Value = serde_json::from_slice(&std::fs::read(&cache_path)?)?;
    assert_ne!(
        cache["refresh_token"], first_cache["refresh_token"],
        "refresh token rotated"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&cache_path)?.permissions().mode() & 0o777,
        0o600
    );
    let stats = deployment.simulator_get("/_simulator/stats").await?;
    assert!(
        stat_count(&stats["tokens"]["refresh_token"], &["ok"]) >= 1,
        "{stats}"
    );

    // The refresh token is revoked (as after 90 idle days) and the access token expires.
    let failed = deployment.revoke_sign_in().await?;
    let message = failed.error_message.clone().unwrap_or_default();
    assert!(message.contains("hunter auth login"), "{message}");
    assert!(
        message.contains("AADSTS700082") || message.contains("invalid_grant"),
        "{message}"
    );
    assert!(
        !message.contains(cache["refresh_token"].as_str().unwrap()),
        "no secret in the run record"
    );
    let metrics = deployment.metrics().await?;
    assert!(
        metrics.contains("hunter_source_signin_required{tenant=\"test-tenant\"} 1"),
        "{metrics}"
    );

    // Suspended: ticks go on (and say why) but make no calls to the API or the authority.
    let calls = |stats: &serde_json::Value| {
        stats["requests"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter(|(k, _)| k.as_str() != "healthz")
                    .map(|(_, v)| stat_count(v, &[]))
                    .sum::<u64>()
            })
            .unwrap_or(0)
    };
    let suspended_runs = async || -> anyhow::Result<usize> {
        Ok(deployment
            .sync_runs()
            .await?
            .into_iter()
            .filter(|r| r.error_class.as_deref() == Some("signin_required"))
            .count())
    };
    let before = calls(&deployment.simulator_get("/_simulator/stats").await?);
    // Two more suspended ticks are recorded (a count, not a sleep): each would have called.
    let suspended_then = suspended_runs().await?;
    hunter_e2e::wait_for(
        "two more suspended ticks recorded",
        Duration::from_secs(60),
        || async { Ok((suspended_runs().await? >= suspended_then + 2).then_some(())) },
    )
    .await?;
    let after = calls(&deployment.simulator_get("/_simulator/stats").await?);
    assert_eq!(before, after, "a suspended tenant called the simulator");

    // A new sign-in: the source notices the new cache and resumes by itself.
    let (ok, output) = run_hunter(&["auth", "login"], &deployment.env, Duration::from_secs(60))?;
    assert!(ok, "{output}");
    let resumed_after = hunter_core::records::Timestamp::now();
    deployment
        .wait_for_run("a poll after the new login", Duration::from_secs(60), |r| {
            r.status == "succeeded" && r.started_at > resumed_after
        })
        .await?;
    let metrics = deployment.metrics().await?;
    assert!(
        metrics.contains("hunter_source_signin_required{tenant=\"test-tenant\"} 0"),
        "{metrics}"
    );

    // No token, old or new, ever reached a log line of the source, the simulator or the CLI.
    let latest: serde_json::Value = serde_json::from_slice(&std::fs::read(&cache_path)?)?;
    let logs = deployment.full_logs();
    assert!(logs.contains("poll succeeded"), "the logs were read");
    for cache in [&first_cache, &cache, &latest] {
        for field in ["access_token", "refresh_token"] {
            let secret = cache[field].as_str().unwrap();
            assert!(!logs.contains(secret), "a {field} appears in the logs");
        }
    }
    deployment.teardown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_fail_independently_and_a_disabled_source_makes_no_calls() -> anyhow::Result<()> {
    let referrals = generated_referrals(40, 31)?;
    let mut deployment = Deployment::new(&referrals)?;
    deployment.start_simulator(&[]).await?;
    deployment.login_and_migrate()?;

    // A second tenant that never signed in, next to the one that did.
    let config = deployment.dir.path().join("hunter.toml");
    let missing_cache = deployment.dir.path().join("never-signed-in.json");
    std::fs::write(
        &config,
        format!(
            "[[partner_center.tenants]]\nname = \"fabrikam\"\ntenant_id = \"fabrikam.example\"\nclient_id = \"c2\"\ntoken_cache = \"{}\"\n",
            missing_cache.display()
        ),
    )?;
    deployment
        .env
        .insert("HUNTER_CONFIG".into(), config.display().to_string());
    deployment
        .env
        .insert("HUNTER_SYNC_INTERVAL_SECS".into(), "1".into());
    deployment
        .env
        .insert("HUNTER_SYNC_FULL_SWEEP_SECS".into(), "3".into());
    deployment.start_role("source").await?;
    let ok = deployment
        .wait_for_run(
            "the signed-in tenant's poll",
            Duration::from_secs(60),
            |r| r.tenant == "test-tenant" && r.status == "succeeded",
        )
        .await?;
    assert_eq!(ok.published, 40);
    let failed = deployment
        .wait_for_run("the other tenant's report", Duration::from_secs(60), |r| {
            r.tenant == "fabrikam"
        })
        .await?;
    assert_eq!(
        failed.error_class.as_deref(),
        Some("signin_required"),
        "{failed:?}"
    );
    assert!(
        failed
            .error_message
            .unwrap_or_default()
            .contains("hunter auth login")
    );
    // The healthy tenant keeps polling while the other one waits.
    deployment
        .wait_for_run(
            "a later poll of the healthy tenant",
            Duration::from_secs(30),
            |r| r.tenant == "test-tenant" && r.status == "succeeded" && r.run_id != ok.run_id,
        )
        .await?;
    // The periodic full sweep reads everything again (no updatedDateTime filter) and, nothing
    // having changed, publishes nothing.
    let sweep = deployment
        .wait_for_run("a full sweep", Duration::from_secs(30), |r| {
            r.tenant == "test-tenant" && r.trigger == "sweep"
        })
        .await?;
    assert_eq!(sweep.status, "succeeded", "{sweep:?}");
    assert!(sweep.fetched >= 40 && sweep.published == 0, "{sweep:?}");

    // `hunter auth status` tells which tenant needs a sign-in, and fails while one does.
    let (ok, output) = run_hunter(
        &["auth", "status"],
        &deployment.env,
        Duration::from_secs(30),
    )?;
    assert!(
        !ok,
        "auth status passed with a tenant not signed in: {output}"
    );
    assert!(
        output.contains("fabrikam") && output.contains("hunter auth login"),
        "{output}"
    );
    let (ok, output) = run_hunter(
        &["auth", "status", "--tenant", "test-tenant"],
        &deployment.env,
        Duration::from_secs(30),
    )?;
    assert!(ok, "{output}");
    assert!(
        output.contains("demo@simulator.local"),
        "the account is shown: {output}"
    );
    let cache = std::fs::read_to_string(&deployment.env["HUNTER_TOKEN_CACHE"])?;
    let cache: serde_json::Value = serde_json::from_str(&cache)?;
    assert!(
        !output.contains(cache["access_token"].as_str().unwrap()),
        "no token in the status"
    );

    let last = deployment.processes_len() - 1;
    deployment.process(last).kill9();

    // Disabled: the source idles, says so, and calls nothing.
    let before = deployment.simulator_get("/_simulator/stats").await?;
    deployment
        .env
        .insert("HUNTER_PARTNER_CENTER_ENABLED".into(), "false".into());
    let index = deployment.start_role("source").await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = deployment.simulator_get("/_simulator/stats").await?;
    assert_eq!(
        before["requests"]["list"], after["requests"]["list"],
        "a disabled source listed referrals"
    );
    assert_eq!(
        before["tokens"], after["tokens"],
        "a disabled source asked for tokens"
    );
    assert!(deployment.process(index).output().contains("disabled"));
    deployment.teardown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn triggers_during_a_poll_coalesce_into_one_follow_up_poll() -> anyhow::Result<()> {
    let referrals = generated_referrals(400, 41)?;
    let mut deployment = Deployment::new(&referrals)?;
    // Throttled small pages: the startup poll takes a few seconds.
    deployment
        .start_simulator(&["--page-size", "20", "--faults", "429:0.3", "--seed", "9"])
        .await?;
    deployment.login_and_migrate()?;
    deployment.start_role("source").await?;
    // Wait until the startup poll is under way, then ask three times.
    hunter_e2e::wait_for(
        "the startup poll to start",
        Duration::from_secs(30),
        || async {
            Ok(deployment
                .sync_runs()
                .await?
                .iter()
                .any(|r| r.trigger == "startup")
                .then_some(()))
        },
    )
    .await?;
    let mut tasks = Vec::new();
    for _ in 0..3 {
        tasks.push(deployment.request_sync(None).await?);
    }
    let startup = deployment
        .wait_for_run("the startup poll", Duration::from_secs(120), |r| {
            r.trigger == "startup"
        })
        .await?;
    assert_eq!(startup.status, "succeeded", "{startup:?}");
    // Every trigger is served: by a manual run of its own, or coalesced into a run that was
    // due anyway; triggers that piled up during a poll cost one follow-up poll, not one each.
    let mut coalesced = 0;
    for task in &tasks {
        let run = deployment
            .wait_for_run("a trigger's run", Duration::from_secs(120), |r| {
                r.run_id == *task
            })
            .await?;
        let serving = match run.status.as_str() {
            "coalesced" => {
                coalesced += 1;
                run.coalesced_into
                    .clone()
                    .expect("a coalesced run names the run that served it")
            }
            _ => run.run_id.clone(),
        };
        let served = deployment
            .wait_for_run("the serving run", Duration::from_secs(120), |r| {
                r.run_id == serving
            })
            .await?;
        assert_eq!(
            (served.status.as_str(), served.trigger.as_str()),
            ("succeeded", "manual"),
            "{served:?}"
        );
    }
    assert!(
        coalesced >= 1,
        "three triggers during a poll were not coalesced"
    );
    let polls = deployment
        .sync_runs()
        .await?
        .into_iter()
        .filter(|r| r.status == "succeeded")
        .count();
    assert!(
        polls <= 3,
        "{polls} polls for the startup and three triggers"
    );
    deployment.teardown().await;
    Ok(())
}
