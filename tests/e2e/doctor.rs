//! `hunter doctor` against the local stack: a healthy deployment passes every check; broken
//! ones fail exactly the checks that name what is broken, with a fix, and exit non-zero.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use hunter_e2e::{Deployment, free_port, generated_referrals, run_hunter, wait_for};

fn failed(verdicts: &BTreeMap<String, String>) -> BTreeSet<&str> {
    verdicts
        .iter()
        .filter(|(_, v)| *v == "FAIL")
        .map(|(k, _)| k.as_str())
        .collect()
}

fn doctor(deployment: &Deployment) -> anyhow::Result<(bool, String, BTreeMap<String, String>)> {
    let (ok, output) = run_hunter(&["doctor"], &deployment.env, Duration::from_secs(120))?;
    let verdicts = hunter_e2e::doctor_verdicts(&output);
    Ok((ok, output, verdicts))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_deployment_passes_every_check() -> anyhow::Result<()> {
    let referrals = generated_referrals(10, 3)?;
    let mut deployment = Deployment::new(&referrals)?;
    deployment.start_simulator(&[]).await?;
    deployment.login_and_migrate()?;
    deployment.start_role("all").await?;
    let result = wait_for(
        "a succeeded run in clickhouse",
        Duration::from_secs(60),
        || async {
            let rows = deployment
                .clickhouse
                .rows("SELECT count() AS n FROM sync_runs FINAL WHERE status = 'succeeded'")
                .await?;
            Ok((rows[0]["n"] != "0" && rows[0]["n"] != 0).then_some(()))
        },
    )
    .await;
    if let Err(error) = result {
        anyhow::bail!("{error}\n{}", deployment.logs());
    }

    let (ok, output, verdicts) = doctor(&deployment)?;
    assert!(ok, "doctor failed on a healthy deployment:\n{output}");
    for check in [
        "config",
        "feature flag",
        "token cache",
        "token refresh",
        "partner center api",
        "kafka broker",
        "kafka topics",
        "clickhouse",
        "clickhouse migrations",
        "last sync run",
    ] {
        assert_eq!(
            verdicts.get(check).map(String::as_str),
            Some("ok"),
            "{check}:\n{output}"
        );
    }
    assert_eq!(
        verdicts.get("schema registry").map(String::as_str),
        Some("skip"),
        "{output}"
    );
    assert!(output.contains("all checks passed"), "{output}");
    deployment.teardown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_sign_in_no_topics_and_a_wrong_clickhouse_port_fail_by_name() -> anyhow::Result<()> {
    let mut deployment = Deployment::new(&generated_referrals(3, 5)?)?;
    deployment.start_simulator(&[]).await?;
    // Neither `hunter auth login` nor `hunter migrate`; ClickHouse on a port nothing listens on.
    deployment.env.insert(
        "HUNTER_CLICKHOUSE_URL".into(),
        format!("http://127.0.0.1:{}", free_port()),
    );
    let (ok, output, verdicts) = doctor(&deployment)?;
    assert!(!ok, "doctor passed a broken deployment:\n{output}");
    assert_eq!(
        failed(&verdicts),
        BTreeSet::from(["token cache", "kafka topics", "clickhouse"]),
        "{output}"
    );
    for (check, verdict) in [
        ("config", "ok"),
        ("kafka broker", "ok"),
        ("token refresh", "skip"),
        ("partner center api", "skip"),
        ("clickhouse migrations", "skip"),
        ("last sync run", "skip"),
    ] {
        assert_eq!(
            verdicts.get(check).map(String::as_str),
            Some(verdict),
            "{check}:\n{output}"
        );
    }
    assert!(
        output.contains("fix: run `hunter auth login --tenant"),
        "{output}"
    );
    assert!(output.contains("fix: run `hunter migrate`"), "{output}");
    assert!(output.contains("HUNTER_CLICKHOUSE_URL"), "{output}");
    assert!(
        output.contains("3 check(s) failed: token cache, kafka topics, clickhouse"),
        "{output}"
    );
    deployment.teardown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_readable_token_cache_an_unreachable_registry_and_no_runs_fail_by_name()
-> anyhow::Result<()> {
    let mut deployment = Deployment::new(&generated_referrals(3, 6)?)?;
    deployment.start_simulator(&[]).await?;
    deployment.login_and_migrate()?;
    let cache = deployment.dir.path().join("token-cache.json");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o644))?;
    }
    deployment.env.insert(
        "HUNTER_SCHEMA_REGISTRY_URL".into(),
        format!("http://127.0.0.1:{}", free_port()),
    );
    let (ok, output, verdicts) = doctor(&deployment)?;
    assert!(!ok, "doctor passed a broken deployment:\n{output}");
    assert_eq!(
        failed(&verdicts),
        BTreeSet::from(["token cache", "schema registry", "last sync run"]),
        "{output}"
    );
    assert!(output.contains("mode 644"), "{output}");
    assert!(
        output.contains(&format!("fix: chmod 600 {}", cache.display())),
        "{output}"
    );
    for check in ["kafka topics", "clickhouse", "clickhouse migrations"] {
        assert_eq!(
            verdicts.get(check).map(String::as_str),
            Some("ok"),
            "{check}:\n{output}"
        );
    }

    // Private again, and the source switched off: only the feature flag fails.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o600))?;
    }
    deployment.env.remove("HUNTER_SCHEMA_REGISTRY_URL");
    deployment
        .env
        .insert("HUNTER_PARTNER_CENTER_ENABLED".into(), "false".into());
    let (ok, output, verdicts) = doctor(&deployment)?;
    assert!(!ok, "{output}");
    assert_eq!(
        failed(&verdicts),
        BTreeSet::from(["feature flag"]),
        "{output}"
    );
    assert!(
        output.contains("fix: set HUNTER_PARTNER_CENTER_ENABLED=true"),
        "{output}"
    );
    deployment.teardown().await;
    Ok(())
}
