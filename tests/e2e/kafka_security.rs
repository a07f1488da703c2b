//! Hunter on a secured broker, the way Confluent Cloud, Azure Event Hubs, Amazon MSK and
//! Redpanda Cloud are reached: SASL over TLS. The broker is a tansu 0.6.0 of the test's own with
//! `--authentication` (SCRAM users in its storage) behind stunnel's TLS, with a certificate from
//! a CA the test makes ([`OwnBroker::start_secured`]).
//!
//! - The whole pipeline (simulator → source → processor → sink → ClickHouse → API) runs over
//!   SASL_SSL with SCRAM-SHA-512; `hunter migrate` (the admin client) with SCRAM-SHA-256.
//! - A wrong password, an unknown user, a mechanism the broker does not offer (PLAIN: tansu
//!   0.6.0 has none), an untrusted certificate (another CA, or none: the system trust store)
//!   and a plaintext client on the TLS port each end `hunter run all` and
//!   `hunter migrate` with an error naming the setting to fix, where librdkafka alone would
//!   retry forever; `hunter doctor` reports each under its check with the fix.
//! - No password appears in a log, `/metrics` or the doctor's output.
//! - Everything a partner secures at once: the pipeline over SASL_SSL, with a ClickHouse reachable
//!   only over HTTPS (the compose stack's users: the writer for `migrate` and the sink, the
//!   read-only reader for the API) and the schema registry stand-in behind TLS with basic auth
//!   (records in Confluent framing); no dead letter, no secret in any output.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use hunter_e2e::contracts::OwnRegistry;
use hunter_e2e::tls::TestCa;
use hunter_e2e::{Deployment, OwnBroker, SecureClickHouse, generated_referrals, run_hunter};

const USER: &str = "hunter";
const PASSWORD: &str = "scram-SENTINEL-5f0c2a9d1b";
const WRONG: &str = "wrong-SENTINEL-0d9e8c7b6a";

/// The verdict `hunter doctor` printed for `check` (`ok`, `warn`, `FAIL`, `skip`) and the fix
/// line under it, if any.
fn doctor_verdict<'a>(output: &'a str, check: &str) -> Option<(&'a str, &'a str)> {
    let lines: Vec<&str> = output.lines().collect();
    let at = lines.iter().position(|line| {
        line.len() > 6
            && line.get(6..).is_some_and(|rest| {
                rest.strip_prefix(check)
                    .is_some_and(|after| after.starts_with(' '))
            })
    })?;
    let fix = lines
        .get(at + 1)
        .filter(|line| line.trim_start().starts_with("fix:"))
        .copied()
        .unwrap_or("");
    Some((lines[at][..4].trim(), fix))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_pipeline_runs_over_sasl_ssl() -> anyhow::Result<()> {
    let broker = OwnBroker::start_secured(&[(USER, PASSWORD)]).await?;
    let referrals = generated_referrals(25, 12)?;
    let mut deployment = Deployment::new(&referrals)?;
    deployment.use_secured_broker(&broker, "SCRAM-SHA-512", USER, PASSWORD);
    deployment.run_all_until_leads(25).await?;

    // The API serves what came through the secured broker.
    let (status, page) = deployment.get("/api/v1/leads?limit=100").await?;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["total"], 25, "{page}");
    assert_eq!(page["items"].as_array().map(Vec::len), Some(25), "{page}");
    // The records are in that broker's topics (read by the test over SASL_SSL too).
    let published = deployment.published_versions().await?;
    let ids: std::collections::BTreeSet<&str> =
        published.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids.len(), 25, "{published:?}");
    assert!(deployment.leads().await?.len() >= 25);
    let logs = deployment.full_logs();
    assert!(
        logs.contains("kafka connection checked")
            && logs.contains("sasl_ssl")
            && logs.contains("SCRAM-SHA-512"),
        "{}",
        deployment.logs()
    );

    // The doctor sees trust and authentication pass.
    let (_, doctor) = run_hunter(&["doctor"], &deployment.env, Duration::from_secs(120))?;
    for check in [
        "kafka tls",
        "kafka authentication",
        "kafka broker",
        "kafka topics",
    ] {
        assert_eq!(
            doctor_verdict(&doctor, check).map(|(verdict, _)| verdict),
            Some("ok"),
            "{check}:\n{doctor}"
        );
    }

    // The password is nowhere to be read.
    let metrics = deployment.metrics().await?;
    assert!(metrics.contains("hunter_api_requests_total"));
    for (place, text) in [
        ("the logs", &deployment.full_logs()),
        ("/metrics", &metrics),
        ("hunter doctor", &doctor),
    ] {
        assert!(
            !text.contains(PASSWORD),
            "the SASL password appears in {place}"
        );
    }
    deployment.teardown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_and_untrusted_certificates_fail_fast_naming_the_setting()
-> anyhow::Result<()> {
    let broker = OwnBroker::start_secured(&[(USER, PASSWORD)]).await?;
    let mut deployment = Deployment::new(&generated_referrals(3, 4)?)?;
    deployment.use_secured_broker(&broker, "SCRAM-SHA-256", USER, PASSWORD);
    deployment.start_simulator(&[]).await?;
    // Sign-in, ClickHouse migrations, and the topics created by the admin client over SASL_SSL.
    deployment.login_and_migrate()?;
    let good = deployment.env.clone();
    let with = |changes: &[(&str, Option<&str>)]| {
        let mut env: HashMap<String, String> = good.clone();
        for (name, value) in changes {
            match value {
                Some(value) => env.insert(name.to_string(), value.to_string()),
                None => env.remove(*name),
            };
        }
        env
    };

    let other_ca = TestCa::new(deployment.dir.path(), "other-ca")?;
    let other_ca = other_ca.certificate.display().to_string();
    let cases: [(&str, HashMap<String, String>, &str, &str); 6] = [
        (
            "a wrong password",
            with(&[("HUNTER_KAFKA_SASL_PASSWORD", Some(WRONG))]),
            "HUNTER_KAFKA_SASL_PASSWORD",
            "kafka authentication",
        ),
        (
            "an unknown user",
            with(&[("HUNTER_KAFKA_SASL_USERNAME", Some("nobody"))]),
            "HUNTER_KAFKA_SASL_PASSWORD",
            "kafka authentication",
        ),
        (
            // tansu 0.6.0 offers SCRAM only (its rsasl is built without PLAIN).
            "a mechanism the broker does not offer (PLAIN)",
            with(&[("HUNTER_KAFKA_SASL_MECHANISM", Some("PLAIN"))]),
            "HUNTER_KAFKA_SASL_MECHANISM",
            "kafka authentication",
        ),
        (
            "a certificate from another CA",
            with(&[("HUNTER_KAFKA_SSL_CA_LOCATION", Some(&other_ca))]),
            "HUNTER_KAFKA_SSL_CA_LOCATION",
            "kafka tls",
        ),
        (
            "no CA setting (the system trust store)",
            with(&[("HUNTER_KAFKA_SSL_CA_LOCATION", None)]),
            "HUNTER_KAFKA_SSL_CA_LOCATION",
            "kafka tls",
        ),
        (
            "a plaintext client on the TLS port",
            with(&[
                ("HUNTER_KAFKA_SECURITY_PROTOCOL", Some("plaintext")),
                ("HUNTER_KAFKA_SASL_MECHANISM", None),
                ("HUNTER_KAFKA_SASL_USERNAME", None),
                ("HUNTER_KAFKA_SASL_PASSWORD", None),
                ("HUNTER_KAFKA_SSL_CA_LOCATION", None),
            ]),
            "HUNTER_KAFKA_SECURITY_PROTOCOL",
            "kafka tls",
        ),
    ];
    for (what, env, setting, check) in &cases {
        for args in [&["run", "all"][..], &["migrate"][..]] {
            let started = Instant::now();
            // Without the start-up check librdkafka retries forever and this times out.
            let (ok, output) = run_hunter(args, env, Duration::from_secs(90))?;
            let took = started.elapsed();
            assert!(!ok, "hunter {args:?} with {what} succeeded:\n{output}");
            let error = output
                .lines()
                .rev()
                .find(|line| line.starts_with("error:"))
                .unwrap_or_default();
            assert!(
                error.contains(setting),
                "hunter {args:?} with {what}: the error does not name {setting}:\n{output}"
            );
            for secret in [PASSWORD, WRONG] {
                assert!(
                    !output.contains(secret),
                    "a password in the output:\n{output}"
                );
            }
            println!("{what}: hunter {args:?} exited after {took:?}: {error}");
        }
        let (ok, doctor) = run_hunter(&["doctor"], env, Duration::from_secs(120))?;
        assert!(!ok, "doctor passed with {what}:\n{doctor}");
        let (verdict, fix) =
            doctor_verdict(&doctor, check).unwrap_or_else(|| panic!("no {check} check:\n{doctor}"));
        assert_eq!(verdict, "FAIL", "{what}: {check}:\n{doctor}");
        assert!(
            fix.contains(setting),
            "{what}: the fix does not name {setting}:\n{doctor}"
        );
        assert_eq!(
            doctor_verdict(&doctor, "kafka topics").map(|(verdict, _)| verdict),
            Some("skip"),
            "{doctor}"
        );
        for secret in [PASSWORD, WRONG] {
            assert!(
                !doctor.contains(secret),
                "a password in the doctor's output:\n{doctor}"
            );
        }
    }
    deployment.teardown().await;
    Ok(())
}

/// A new random secret (a different one per run, so a leak cannot hide behind a constant).
fn secret() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn count(value: &serde_json::Value) -> u64 {
    value
        .as_u64()
        .or_else(|| value.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or_default()
}

/// Issue 12's whole deployment at once: Kafka over SASL_SSL (SCRAM-SHA-512 behind stunnel), a
/// ClickHouse that serves HTTPS only with the compose stack's writer and reader users
/// (`deploy/clickhouse/users.d/hunter.xml`), and the registry stand-in behind TLS with basic
/// auth. Every server is the test's own and is stopped by its `Drop` when the test fails
/// (declared before the deployment, so its processes go first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_pipeline_runs_with_kafka_clickhouse_and_the_registry_all_secured()
-> anyhow::Result<()> {
    const REFERRALS: u64 = 20;
    let kafka_password = secret();
    let broker = OwnBroker::start_secured(&[(USER, &kafka_password)]).await?;

    let mut deployment = Deployment::new(&generated_referrals(REFERRALS as usize, 1212)?)?;
    let database = deployment.env["HUNTER_CLICKHOUSE_DATABASE"].clone();

    // ClickHouse over HTTPS only, with Hunter's users; every query of theirs is logged.
    let clickhouse = SecureClickHouse::start(&database).await?;
    let (writer_password, reader_password, analyst_password) = (
        clickhouse.writer_password.clone(),
        clickhouse.reader_password.clone(),
        clickhouse.analyst_password.clone(),
    );

    // The registry stand-in: basic auth, reached only through TLS.
    let (registry_user, registry_password) = ("hunter-registry", secret());
    let mut registry = OwnRegistry::start(Some((registry_user, &registry_password))).await?;
    let (registry_url, registry_ca) = registry.serve_tls().await?;

    deployment.use_secured_broker(&broker, "SCRAM-SHA-512", USER, &kafka_password);
    for (name, value) in [
        ("HUNTER_SCHEMA_REGISTRY_URL", registry_url.clone()),
        ("HUNTER_SCHEMA_REGISTRY_USERNAME", registry_user.into()),
        ("HUNTER_SCHEMA_REGISTRY_PASSWORD", registry_password.clone()),
        (
            "HUNTER_SCHEMA_REGISTRY_CA_LOCATION",
            registry_ca.display().to_string(),
        ),
    ] {
        deployment.env.insert(name.into(), value);
    }
    // The writer for migrate and the sink, the reader for the API, the CA trusted; the test
    // reads ClickHouse as the writer, over HTTPS.
    clickhouse.configure(&mut deployment)?;
    let api_token = deployment.api_token.clone();
    let secrets = [
        ("the Kafka password", kafka_password.as_str()),
        ("the ClickHouse writer's password", &writer_password),
        ("the ClickHouse reader's password", &reader_password),
        ("the ClickHouse analysts' password", &analyst_password),
        ("the registry password", &registry_password),
        ("the API token", &api_token),
    ];

    // Simulator → source → processor → sink (writer) → API (reader), one `hunter run all`.
    deployment.start_simulator(&[]).await?;
    let mut one_shots = String::new();
    for args in [&["auth", "login"][..], &["migrate"][..]] {
        let (ok, output) = run_hunter(args, &deployment.env, Duration::from_secs(90))?;
        assert!(ok, "hunter {args:?}:\n{output}\n{}", registry.log());
        one_shots.push_str(&output);
    }
    // migrate registered the contracts (topic-named subjects) with the registry, over TLS.
    assert!(one_shots.contains("FULL_TRANSITIVE"), "{one_shots}");
    deployment.start_role("all").await?;
    let page = deployment
        .wait_for_leads_in_api(REFERRALS, 100, Duration::from_secs(150))
        .await?;
    assert_eq!(
        page["items"].as_array().map(Vec::len),
        Some(REFERRALS as usize),
        "{page}"
    );
    let rows = deployment
        .clickhouse
        .rows("SELECT toString(count()) AS n FROM leads FINAL")
        .await?;
    assert_eq!(count(&rows[0]["n"]), REFERRALS, "leads in ClickHouse");

    // Nothing was dead-lettered.
    assert_eq!(
        deployment.topic_count(&deployment.topics.dlq)?,
        0,
        "{}",
        deployment.logs()
    );
    // The records in the secured broker are in Confluent framing with the registry's ids, and
    // read back through the registry (over TLS, with basic auth).
    let reader_registry = Some(std::sync::Arc::new(
        hunter_core::codec::Registry::new(
            &url::Url::parse(&registry_url)?,
            &hunter_core::config::SchemaRegistrySettings {
                username: Some(registry_user.into()),
                password: Some(hunter_core::config::Secret::new(registry_password.clone())),
                ca_location: Some(registry_ca.clone()),
            },
        )
        .map_err(anyhow::Error::msg)?,
    ));
    let leads_topic = deployment.topics.leads.clone();
    let codec = hunter_core::codec::Codec::<hunter_core::records::Lead>::new(
        &leads_topic,
        reader_registry.clone(),
    );
    let records = hunter_e2e::read_topic_with(deployment.stack.client_config(), &leads_topic, 1)?;
    let mut lead_ids = std::collections::BTreeSet::new();
    for (payload, _) in &records {
        assert_eq!(
            payload.first(),
            Some(&0),
            "Confluent framing on {leads_topic}"
        );
        lead_ids.insert(codec.decode(payload).await?.lead_id);
    }
    assert_eq!(lead_ids.len() as u64, REFERRALS, "{lead_ids:?}");
    let referrals_topic = deployment.topics.referrals.clone();
    let codec = hunter_core::codec::Codec::<hunter_core::records::Referral>::new(
        &referrals_topic,
        reader_registry,
    );
    let records =
        hunter_e2e::read_topic_with(deployment.stack.client_config(), &referrals_topic, 1)?;
    let mut referral_ids = std::collections::BTreeSet::new();
    for (payload, _) in &records {
        assert_eq!(
            payload.first(),
            Some(&0),
            "Confluent framing on {referrals_topic}"
        );
        referral_ids.insert(codec.decode(payload).await?.id);
    }
    assert_eq!(referral_ids.len() as u64, REFERRALS, "{referral_ids:?}");

    // ClickHouse's own query log: the API read as hunter_api (readonly), only hunter_writer
    // inserted, nothing of Hunter's ran as `default`.
    let admin = clickhouse.admin()?;
    admin.execute("SYSTEM FLUSH LOGS").await?;
    let logged = admin
        .rows(
            "SELECT user, query, Settings.Names AS names, Settings.Values AS values \
             FROM system.query_log WHERE type = 2 AND query LIKE '%leads%'",
        )
        .await?;
    let query = |row: &serde_json::Value| row["query"].as_str().unwrap_or_default().to_owned();
    let api_queries: Vec<_> = logged
        .iter()
        .filter(|row| row["user"] == "hunter_api" && query(row).contains("FROM leads"))
        .collect();
    assert!(!api_queries.is_empty(), "no API query logged: {logged:?}");
    for row in &api_queries {
        // The read model's feed marks its queries (docs/clickhouse.md); they are SELECTs too.
        let text = query(row);
        let text = text
            .strip_prefix("/* hunter api read model */")
            .unwrap_or(&text);
        assert!(text.trim_start().starts_with("SELECT"), "{row}");
        let names = row["names"].as_array().cloned().unwrap_or_default();
        let values = row["values"].as_array().cloned().unwrap_or_default();
        let readonly = names
            .iter()
            .zip(&values)
            .find(|(name, _)| *name == "readonly")
            .map(|(_, value)| value.clone());
        assert_eq!(readonly, Some(serde_json::json!("2")), "{row}");
    }
    let inserts: Vec<_> = logged
        .iter()
        .filter(|row| query(row).starts_with("INSERT INTO leads"))
        .collect();
    assert!(
        !inserts.is_empty(),
        "no insert into leads logged: {logged:?}"
    );
    assert!(
        inserts.iter().all(|row| row["user"] == "hunter_writer"),
        "{inserts:?}"
    );
    assert!(
        logged.iter().all(|row| row["user"] != "default"),
        "something of Hunter's ran as default: {logged:?}"
    );

    // The doctor sees every secured service pass.
    let (_, doctor) = run_hunter(&["doctor"], &deployment.env, Duration::from_secs(120))?;
    let verdicts = hunter_e2e::doctor_verdicts(&doctor);
    for check in [
        "kafka tls",
        "kafka authentication",
        "kafka broker",
        "kafka topics",
        "schema registry",
        "clickhouse tls",
        "clickhouse",
        "clickhouse migrations",
        "clickhouse writer",
        "clickhouse reader",
    ] {
        assert_eq!(
            verdicts.get(check).map(String::as_str),
            Some("ok"),
            "{check}:\n{doctor}"
        );
    }
    let logs = deployment.full_logs();
    assert!(
        logs.contains("kafka connection checked")
            && logs.contains("sasl_ssl")
            && logs.contains("SCRAM-SHA-512"),
        "{}",
        deployment.logs()
    );

    // No secret anywhere Hunter writes.
    let metrics = deployment.metrics().await?;
    assert!(metrics.contains("hunter_api_requests_total"), "{metrics}");
    for (place, text) in [
        ("a process log", &logs),
        ("/metrics", &metrics),
        ("auth login's or migrate's output", &one_shots),
        ("hunter doctor", &doctor),
    ] {
        for (what, secret) in secrets {
            assert!(!text.contains(secret), "{what} appears in {place}");
        }
    }
    deployment.teardown().await;
    drop(registry);
    drop(clickhouse);
    drop(broker);
    Ok(())
}
