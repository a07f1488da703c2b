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

use std::collections::HashMap;
use std::time::{Duration, Instant};

use hunter_e2e::tls::TestCa;
use hunter_e2e::{Deployment, OwnBroker, generated_referrals, run_hunter};

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
