//! No secret leaves Hunter: a full sync with known secret values (client secret, admin and read
//! API tokens, and the access and refresh tokens the sign-in obtained), logging at `debug`,
//! then every place a secret could leak is searched: every process's log, `/metrics`, API error
//! bodies, `hunter auth status`, `hunter doctor`, a config error, the sync-run records in the
//! topic and in ClickHouse. The token cache is private (0600).

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use hunter_e2e::{Deployment, generated_referrals, read_topic, run_hunter, wait_for};
use reqwest::{Method, StatusCode};
use serde_json::json;

fn assert_no_secret(place: &str, text: &str, secrets: &[(&str, String)]) {
    for (name, secret) in secrets {
        assert!(
            !text.contains(secret.as_str()),
            "the {name} appears in {place}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_sync_with_known_secrets_shows_them_nowhere() -> anyhow::Result<()> {
    let referrals = generated_referrals(40, 9)?;
    let mut deployment = Deployment::new(&referrals)?;
    let client_secret = "client-secret-SENTINEL-7d1c0a9e".to_owned();
    let read_token = "read-token-SENTINEL-51b2e8f3c4".to_owned();
    deployment.env.insert(
        "HUNTER_PARTNER_CENTER_CLIENT_SECRET".into(),
        client_secret.clone(),
    );
    deployment
        .env
        .insert("HUNTER_API_READ_TOKEN".into(), read_token.clone());
    deployment.env.insert("RUST_LOG".into(), "debug".into());
    deployment.run_all_until_leads(40).await?;

    // A manual sync through the API, followed to its end.
    let admin = deployment.api_token.clone();
    let (status, _, accepted) = deployment
        .call(
            Method::POST,
            "/api/v1/partner-center/referrals/sync",
            Some(&admin),
        )
        .await?;
    assert_eq!(status, StatusCode::ACCEPTED);
    let task_id = accepted["task_id"].as_str().unwrap().to_owned();
    wait_for("the manual sync", Duration::from_secs(60), || async {
        let (_, task) = deployment
            .get(&format!("/api/v1/sync/runs/{task_id}"))
            .await?;
        Ok((task["state"] == json!("succeeded")).then_some(()))
    })
    .await?;

    // The tokens the sign-in obtained, from the cache, which only its owner may read.
    let cache_path = deployment.env["HUNTER_TOKEN_CACHE"].clone();
    let mode = std::fs::metadata(&cache_path)?.permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "token cache mode {mode:o}");
    let cache: serde_json::Value = serde_json::from_slice(&std::fs::read(&cache_path)?)?;
    let access_token = cache["access_token"].as_str().unwrap().to_owned();
    let refresh_token = cache["refresh_token"].as_str().unwrap().to_owned();
    assert!(
        access_token.len() >= 16 && refresh_token.len() >= 16,
        "{cache}"
    );
    let secrets = [
        ("client secret", client_secret.clone()),
        ("admin API token", admin.clone()),
        ("read API token", read_token.clone()),
        ("access token", access_token),
        ("refresh token", refresh_token),
    ];

    // Places an operator or a caller sees.
    let metrics = deployment.metrics().await?;
    assert!(metrics.contains("hunter_api_requests_total"));
    assert_no_secret("/metrics", &metrics, &secrets);
    for token in [None, Some("wrong-token-wrong-token")] {
        let (status, _, body) = deployment.call(Method::GET, "/api/v1/leads", token).await?;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_no_secret("a 401 body", &body.to_string(), &secrets);
    }
    let (status, _, body) = deployment
        .call(
            Method::POST,
            "/api/v1/partner-center/referrals/sync",
            Some(&read_token),
        )
        .await?;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_no_secret("a 403 body", &body.to_string(), &secrets);
    let (_, status_output) = run_hunter(
        &["auth", "status"],
        &deployment.env,
        Duration::from_secs(30),
    )?;
    assert!(status_output.contains("test-tenant"), "{status_output}");
    assert_no_secret("hunter auth status", &status_output, &secrets);
    let (_, doctor_output) = run_hunter(&["doctor"], &deployment.env, Duration::from_secs(60))?;
    assert_no_secret("hunter doctor", &doctor_output, &secrets);
    let mut broken = deployment.env.clone();
    broken.insert("HUNTER_SYNC_INTERVAL_SECS".into(), "soon".into());
    let (ok, config_error) = run_hunter(&["run", "all"], &broken, Duration::from_secs(30))?;
    assert!(
        !ok && config_error.contains("HUNTER_SYNC_INTERVAL_SECS"),
        "{config_error}"
    );
    assert_no_secret("a config error", &config_error, &secrets);

    // Records: the sync runs in the topic and in ClickHouse, and the dead letters.
    for topic in [&deployment.topics.sync_runs, &deployment.topics.dlq] {
        let records = read_topic(&deployment.stack.brokers, topic, 0)?;
        for (payload, headers) in &records {
            assert_no_secret(topic, &String::from_utf8_lossy(payload), &secrets);
            assert_no_secret(topic, &format!("{headers:?}"), &secrets);
        }
    }
    let runs = deployment
        .clickhouse
        .rows("SELECT * FROM sync_runs FINAL")
        .await?;
    assert!(runs.len() >= 2, "startup and manual runs: {runs:?}");
    assert_no_secret("sync_runs", &format!("{runs:?}"), &secrets);

    // Every log line of every process, at debug level, last (the checks above logged too).
    let logs = deployment.full_logs();
    assert!(logs.contains("DEBUG"), "debug logging was on");
    assert_no_secret("the logs", &logs, &secrets);
    deployment.teardown().await;
    Ok(())
}
