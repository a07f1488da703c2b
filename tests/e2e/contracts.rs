//! Hunter's Avro contracts against the real broker, a real registry process and a downstream
//! consumer no one here wrote (Python: confluent-kafka and fastavro from PyPI,
//! `tests/avro/install.sh`):
//!
//! - fastavro computes the same Parsing Canonical Forms and fingerprints as Hunter;
//! - an upgrade: records written by the contracts on main before spec fingerprints (the
//!   committed fixtures of every released version) are read by this build: no dead letter, and
//!   the processor's dedupe state is rebuilt from the old leads;
//! - the Python consumer reads the referral and lead topics with the specification's
//!   single-object decoding, and through the registry's Confluent framing;
//! - the registry stopped mid-stream: nothing is dead-lettered, everything arrives once it is
//!   back; wrong credentials, an untrusted certificate and an incompatible contract fail
//!   clearly, naming the setting.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use hunter_core::codec::Codec;
use hunter_core::contracts;
use hunter_core::records::{Ingest, Lead, Record, Referral, Timestamp};
use hunter_e2e::contracts::{
    OwnRegistry, create_topic, expect_all, fixture_records, produce_raw, repo, run_python,
};
use hunter_e2e::{Deployment, generated_referrals, read_topic, run_hunter, wait_for};
use serde_json::Value;

#[test]
fn fastavro_agrees_with_hunters_canonical_forms_and_the_committed_fingerprints() {
    let committed = repo().join("schemas/history/fingerprints.tsv");
    let (ok, stdout, stderr) = run_python(
        "fingerprints.py",
        &["--check", committed.to_str().unwrap()],
        &[],
    )
    .unwrap();
    assert!(
        ok,
        "fastavro disagrees with fingerprints.tsv:\n{stdout}\n{stderr}"
    );
    let mut compared = 0;
    for line in stdout.lines() {
        let columns: Vec<&str> = line.splitn(4, '\t').collect();
        let [contract, version, fingerprint, form] = columns[..] else {
            panic!("unexpected line {line:?}");
        };
        let ours = contracts::history(contract)
            .iter()
            .find(|v| v.file == version)
            .unwrap_or_else(|| panic!("{contract} {version} is not in CONTRACTS"));
        assert_eq!(
            ours.canonical, form,
            "{contract} {version}: canonical forms differ"
        );
        assert_eq!(
            contracts::canonical::hex(&ours.fingerprint),
            fingerprint,
            "{contract} {version}"
        );
        compared += 1;
    }
    let versions: usize = contracts::CONTRACTS.iter().map(|c| c.versions.len()).sum();
    assert_eq!(compared, versions, "fastavro saw every released version");
    // The value issue 12 names for the referral contract as released.
    assert!(
        stdout.contains("referral\t0001\td431a4e88e409385\t"),
        "{stdout}"
    );
}

/// A referral from the API, as the source would publish it.
fn referral(raw: &Value) -> Referral {
    let ingest = Ingest {
        tenant: "test-tenant".into(),
        fetched_at: Timestamp::now(),
        sync_run_id: "contracts".into(),
    };
    Referral::from_api_json(&raw.to_string(), ingest).unwrap()
}

/// The fixture's JSON (`schemas/fixtures/<contract>/<version>.json`).
fn fixture_json(contract: &str, version: &str) -> Vec<Value> {
    let path = repo().join(format!("schemas/fixtures/{contract}/{version}.json"));
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn metric(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// This build's lead rules (`ENRICHMENT_VERSION` in `pipeline/src/processors/enrich`).
const ENRICHMENT_RULES: i32 = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_written_by_mains_contracts_are_read_by_this_build() -> anyhow::Result<()> {
    let mut deployment = Deployment::new(&[])?;
    let (ok, output) = run_hunter(&["migrate"], &deployment.env, Duration::from_secs(60))?;
    assert!(ok, "{output}");

    // The lead topic as main left it: leads of every released lead version (three referral
    // versions, each written by versions 0001, 0002 and 0003), with main's fingerprints.
    let leads_topic = deployment.topics.leads.clone();
    let mut old_leads = Vec::new();
    for version in ["0001", "0002", "0003"] {
        let json = fixture_json("lead", version);
        for (record, value) in fixture_records("lead", version)?.into_iter().zip(&json) {
            old_leads.push((value["lead_id"].as_str().unwrap().to_owned(), record));
        }
    }
    produce_raw(&deployment.stack.brokers, &leads_topic, &old_leads).await?;
    // Main's sync runs (both versions) for the sink.
    let runs_topic = deployment.topics.sync_runs.clone();
    for version in ["0001", "0002"] {
        let json = fixture_json("sync_run", version);
        let records: Vec<(String, Vec<u8>)> = fixture_records("sync_run", version)?
            .into_iter()
            .zip(&json)
            .map(|(r, v)| (v["run_id"].as_str().unwrap().to_owned(), r))
            .collect();
        produce_raw(&deployment.stack.brokers, &runs_topic, &records).await?;
    }
    // The referrals those leads came from, replayed as main wrote them: repeats.
    let referrals_topic = deployment.topics.referrals.clone();
    let fixture_referrals = fixture_json("referral", "0001");
    let old_referrals: Vec<(String, Vec<u8>)> = fixture_records("referral", "0001")?
        .into_iter()
        .zip(&fixture_referrals)
        .map(|(r, v)| (v["id"].as_str().unwrap().to_owned(), r))
        .collect();
    produce_raw(&deployment.stack.brokers, &referrals_topic, &old_referrals).await?;
    // And a newer version of the first one, written by this build: its status moved on.
    let mut newer: Value = serde_json::from_str(fixture_referrals[0]["rawJson"].as_str().unwrap())?;
    newer["updatedDateTime"] = "2024-04-01T00:00:00Z".into();
    newer["status"] = "Closed".into();
    newer["substatus"] = "Won".into();
    let newer = referral(&newer);
    let codec = Codec::<Referral>::new(&referrals_topic, None);
    produce_raw(
        &deployment.stack.brokers,
        &referrals_topic,
        &[(newer.id.clone(), codec.encode_single_object(&newer)?)],
    )
    .await?;

    deployment.start_role("process").await?;
    let metrics_of = deployment.api.clone();
    let waited = wait_for(
        "the processor to take all 4 referrals",
        Duration::from_secs(90),
        || {
            let url = format!("{metrics_of}/metrics");
            async move {
                let text = reqwest::get(url).await?.text().await?;
                let total = metric(&text, "hunter_processor_records_total", "outcome=");
                Ok((total >= 4.0).then_some(text))
            }
        },
    )
    .await;
    let text = match waited {
        Ok(text) => text,
        Err(error) => anyhow::bail!("{error}\n{}", deployment.logs()),
    };
    let logs = deployment.full_logs();
    // Main's referrals are repeats of main's leads, which older lead rules made
    // (`enrichment_version` below this build's): each is made again once, as it was (the
    // dedupe state was rebuilt from them), with the fields added since (docs/leads.md).
    assert_eq!(
        metric(
            &text,
            "hunter_processor_records_total",
            "outcome=\"duplicate\""
        ),
        0.0,
        "{logs}"
    );
    assert_eq!(
        metric(&text, "hunter_processor_records_total", "outcome=\"lead\""),
        4.0,
        "three refreshed, one new\n{logs}"
    );
    assert_eq!(
        metric(&text, "hunter_dlq_records_total", "stage="),
        0.0,
        "{logs}"
    );
    assert!(!logs.contains("unreadable lead skipped"), "{logs}");
    assert_eq!(deployment.topic_count(&deployment.topics.dlq)?, 0);

    // The new lead knows the old lead's status: the state came from main's leads.
    let leads = deployment.leads().await?;
    assert_eq!(
        leads.len(),
        old_leads.len() + 4,
        "every old lead read, three made again, one new"
    );
    // A refreshed lead keeps what main's lead said about its version and gains the new fields.
    for old in fixture_json("lead", "0003") {
        let id = old["lead_id"].as_str().unwrap();
        let refreshed = leads
            .iter()
            .filter(|lead| lead.lead_id == id && lead.version == old["version"].as_i64().unwrap())
            .find(|lead| lead.enrichment_version == ENRICHMENT_RULES)
            .unwrap_or_else(|| panic!("{id}: no refreshed lead"));
        // The change type is derived again from the kept previous status (the fixtures mark
        // a New → New lead `status_changed`, which the rules never did): first stays first.
        assert_eq!(
            refreshed.change_type == "created",
            old["change_type"] == "created",
            "{id}"
        );
        assert_eq!(
            refreshed.previous_status.as_deref(),
            old["previous_status"].as_str(),
            "{id}"
        );
        let raw: Value = serde_json::from_str(
            fixture_referrals.iter().find(|r| r["id"] == id).unwrap()["rawJson"]
                .as_str()
                .unwrap(),
        )?;
        assert_eq!(
            refreshed.expires_at.is_some(),
            raw["expirationDateTime"].is_string(),
            "{id}"
        );
    }
    // The lead topic has 4 partitions, so the order of `leads` says nothing: the new lead is the
    // newest version of the updated referral's lead.
    let new_lead = leads
        .iter()
        .filter(|lead| lead.lead_id == newer.id)
        .max_by_key(|lead| lead.updated_at)
        .unwrap();
    assert_eq!(new_lead.previous_status.as_deref(), Some("Active"));
    assert_eq!(new_lead.change_type, "status_changed");
    // This build writes spec fingerprints; the old records keep theirs and stay readable.
    let raw = read_topic(&deployment.stack.brokers, &leads_topic, old_leads.len() + 1)?;
    let lead_fingerprints: std::collections::BTreeSet<String> = raw
        .iter()
        .map(|(payload, _)| contracts::canonical::hex(&payload[2..10]))
        .collect();
    let lead_history = contracts::history("lead");
    // Main wrote the versions released before spec fingerprints (those with a legacy one).
    let mut expected: std::collections::BTreeSet<String> = lead_history
        .iter()
        .filter_map(|v| v.legacy_fingerprint.as_ref())
        .map(|legacy| contracts::canonical::hex(legacy))
        .collect();
    expected.insert(contracts::canonical::hex(
        &lead_history.last().unwrap().fingerprint,
    ));
    assert_eq!(lead_fingerprints, expected);

    // The sink takes main's leads and sync runs of every version, and the new lead.
    deployment
        .start_role_on("sink", hunter_e2e::free_port())
        .await?;
    let clickhouse = deployment.clickhouse.clone();
    let counted = wait_for(
        "main's records in ClickHouse",
        Duration::from_secs(90),
        || {
            let clickhouse = clickhouse.clone();
            async move {
                let rows = clickhouse
                    .rows(
                        "SELECT (SELECT toString(count()) FROM leads FINAL) AS leads, \
                     (SELECT toString(count()) FROM lead_history) AS history, \
                     (SELECT toString(count()) FROM sync_runs FINAL) AS runs, \
                     (SELECT toString(count()) FROM dlq) AS dlq",
                    )
                    .await?;
                let row = &rows[0];
                let n = |k: &str| row[k].as_str().unwrap_or("0").parse::<u64>().unwrap_or(0);
                Ok((n("leads") == 3 && n("runs") == 2 && n("history") >= 4).then(|| n("dlq")))
            }
        },
    )
    .await;
    match counted {
        Ok(dlq) => assert_eq!(dlq, 0),
        Err(error) => anyhow::bail!("{error}\n{}", deployment.logs()),
    }
    assert_eq!(deployment.topic_count(&deployment.topics.dlq)?, 0);
    let status: Vec<Value> = deployment
        .clickhouse
        .rows(&format!(
            "SELECT status FROM leads FINAL WHERE lead_id = '{}'",
            newer.id
        ))
        .await?;
    assert_eq!(status[0]["status"], "Closed");
    // Main's lead rows were written with the expiry columns' defaults (NULL); the refreshed
    // lead has the same version and is the row FINAL keeps (the newest insert), with its expiry.
    let rows = wait_for(
        "the refreshed lead of fixture-referral-2 in ClickHouse",
        Duration::from_secs(60),
        || async {
            let rows = deployment
                .clickhouse
                .rows(
                    "SELECT toString(expires_at) AS final, expires_at_estimated AS estimated \
                     FROM leads FINAL WHERE lead_id = 'fixture-referral-2'",
                )
                .await?;
            let row = rows.into_iter().next().unwrap_or_default();
            Ok(row["final"].is_string().then_some(row))
        },
    )
    .await?;
    assert_eq!(rows["final"], "2024-03-20 00:00:00", "{rows}");
    assert_eq!(rows["estimated"], 0, "{rows}");
    deployment.teardown().await;
    Ok(())
}

/// Every record of `topic` as Hunter reads it, as JSON in Avro field names.
async fn hunter_reads<T: Record + serde::Serialize>(
    brokers: &str,
    topic: &str,
    count: usize,
    codec: &Codec<T>,
) -> anyhow::Result<Vec<Value>> {
    let mut out = Vec::new();
    for (payload, _) in read_topic(brokers, topic, count)? {
        out.push(serde_json::to_value(codec.decode(&payload).await?)?);
    }
    Ok(out)
}

/// Runs the Python consumer; returns its records (it fails on any rejected record).
fn python_reads(
    brokers: &str,
    topic: &str,
    contract: &str,
    count: usize,
    extra: &[&str],
    env: &[(&str, &str)],
) -> anyhow::Result<Vec<Value>> {
    let schema = repo().join(format!("schemas/{contract}.avsc"));
    let count = count.to_string();
    let mut args = vec![
        "--brokers",
        brokers,
        "--topic",
        topic,
        "--schema",
        schema.to_str().unwrap(),
        "--count",
        &count,
    ];
    args.extend_from_slice(extra);
    let (ok, stdout, stderr) = run_python("consume.py", &args, env)?;
    anyhow::ensure!(
        ok,
        "the python consumer failed on {topic}:\n{stdout}\n{stderr}"
    );
    let result: Value = serde_json::from_str(&stdout)?;
    Ok(result["records"].as_array().cloned().unwrap_or_default())
}

/// The same records, whatever order they were read in.
fn by_key(records: Vec<Value>, key: &str) -> BTreeMap<String, Value> {
    records
        .into_iter()
        .map(|r| (r[key].as_str().unwrap().to_owned(), r))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_consumer_reads_both_topics_with_single_object_decoding() -> anyhow::Result<()> {
    let raw = generated_referrals(12, 1207)?;
    let mut deployment = Deployment::new(&[])?;
    let (ok, output) = run_hunter(&["migrate"], &deployment.env, Duration::from_secs(60))?;
    assert!(ok, "{output}");
    deployment.produce_referrals(&raw).await?;
    deployment.start_role("process").await?;
    let waited = wait_for("12 leads", Duration::from_secs(90), || async {
        Ok((deployment.topic_count(&deployment.topics.leads)? >= 12).then_some(()))
    })
    .await;
    if let Err(error) = waited {
        anyhow::bail!("{error}\n{}", deployment.logs());
    }
    let brokers = deployment.stack.brokers.clone();
    let referrals_topic = deployment.topics.referrals.clone();
    let leads_topic = deployment.topics.leads.clone();
    let single = ["--mode", "single-object"];

    let theirs = python_reads(&brokers, &referrals_topic, "referral", 12, &single, &[])?;
    let ours = hunter_reads(
        &brokers,
        &referrals_topic,
        12,
        &Codec::<Referral>::new("r", None),
    )
    .await?;
    assert_eq!(
        by_key(theirs, "id"),
        by_key(ours, "id"),
        "fastavro and Hunter read the same referrals"
    );

    let theirs = python_reads(&brokers, &leads_topic, "lead", 12, &single, &[])?;
    let ours = hunter_reads(&brokers, &leads_topic, 12, &Codec::<Lead>::new("l", None)).await?;
    assert_eq!(
        by_key(theirs, "lead_id"),
        by_key(ours, "lead_id"),
        "fastavro and Hunter read the same leads"
    );

    // What main wrote is what issue 12 found: a spec reader refuses the legacy fingerprint.
    // (Hunter reads both; downstream readers add the legacy one to their schema store, see
    // docs/contracts.md.)
    let legacy_topic = deployment.topic("legacy.referrals");
    let legacy = fixture_records("referral", "0001")?;
    create_topic(&brokers, &legacy_topic).await?;
    produce_raw(
        &brokers,
        &legacy_topic,
        &[("legacy".into(), legacy[0].clone())],
    )
    .await?;
    // The schema that record was written with (version 0001), so the only difference is the
    // fingerprint's computation.
    let schema = repo().join("schemas/history/referral/0001.avsc");
    let (ok, stdout, _) = run_python(
        "consume.py",
        &[
            "--brokers",
            &brokers,
            "--topic",
            &legacy_topic,
            "--schema",
            schema.to_str().unwrap(),
            "--count",
            "1",
            "--mode",
            "single-object",
        ],
        &[],
    )?;
    assert!(!ok, "{stdout}");
    expect_all(
        &stdout,
        &["fingerprint 5a23b9548247cdaf is not d431a4e88e409385"],
    )?;
    deployment.teardown().await;
    Ok(())
}

async fn wait_for_leads(deployment: &Deployment, n: i64) -> anyhow::Result<()> {
    wait_for(&format!("{n} leads"), Duration::from_secs(90), || async {
        Ok((deployment.topic_count(&deployment.topics.leads)? >= n).then_some(()))
    })
    .await
}

fn with_registry(deployment: &mut Deployment, url: &str, user: Option<(&str, &str)>) {
    deployment
        .env
        .insert("HUNTER_SCHEMA_REGISTRY_URL".into(), url.to_owned());
    if let Some((user, password)) = user {
        deployment
            .env
            .insert("HUNTER_SCHEMA_REGISTRY_USERNAME".into(), user.to_owned());
        deployment.env.insert(
            "HUNTER_SCHEMA_REGISTRY_PASSWORD".into(),
            password.to_owned(),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_outage_mid_stream_loses_nothing_and_python_reads_through_the_registry()
-> anyhow::Result<()> {
    let (user, password) = ("hunter-test", uuid::Uuid::new_v4().simple().to_string());
    let mut registry = OwnRegistry::start(Some((user, &password))).await?;
    let mut deployment = Deployment::new(&[])?;
    with_registry(&mut deployment, &registry.url(), Some((user, &password)));
    let (ok, output) = run_hunter(&["migrate"], &deployment.env, Duration::from_secs(60))?;
    assert!(ok, "{output}\n{}", registry.log());
    assert!(!output.contains(&password), "no secret in the output");
    let referrals_topic = deployment.topics.referrals.clone();
    let leads_topic = deployment.topics.leads.clone();
    for topic in [&referrals_topic, &leads_topic] {
        let config: Value = registry
            .client_request(reqwest::Method::GET, &format!("/config/{topic}-value"))
            .send()
            .await?
            .json()
            .await?;
        assert_eq!(config["compatibilityLevel"], "FULL_TRANSITIVE", "{topic}");
    }

    // Referrals in Confluent framing, as a source with the registry writes them.
    let hunter_registry = Some(std::sync::Arc::new(
        hunter_core::codec::Registry::new(
            &url::Url::parse(&registry.url())?,
            &hunter_core::config::SchemaRegistrySettings {
                username: Some(user.into()),
                password: Some(hunter_core::config::Secret::new(password.clone())),
                ca_location: None,
            },
        )
        .map_err(anyhow::Error::msg)?,
    ));
    let codec = Codec::<Referral>::new(&referrals_topic, hunter_registry);
    let raw = generated_referrals(20, 1208)?;
    let mut framed = Vec::new();
    for raw in &raw {
        let referral = referral(raw);
        let bytes = codec.encode(&referral).await?;
        assert_eq!(bytes[0], 0, "confluent framing");
        framed.push((referral.id.clone(), bytes));
    }
    produce_raw(&deployment.stack.brokers, &referrals_topic, &framed[..10]).await?;
    let process = deployment.start_role("process").await?;
    deployment
        .start_role_on("sink", hunter_e2e::free_port())
        .await?;
    if let Err(error) = wait_for_leads(&deployment, 10).await {
        anyhow::bail!("{error}\n{}", deployment.logs());
    }

    // The registry goes away; the processor restarts meanwhile (nothing cached) and more
    // referrals arrive (the test's writer still knows its schema id).
    registry.stop();
    deployment.process(process).kill9();
    produce_raw(&deployment.stack.brokers, &referrals_topic, &framed[10..]).await?;
    let restarted = deployment.start_role("process").await?;
    let waiting = wait_for(
        "the processor to wait for the registry",
        Duration::from_secs(60),
        || {
            let log = deployment.logs();
            async move { Ok(log.contains("schema registry unavailable").then_some(())) }
        },
    )
    .await;
    if let Err(error) = waiting {
        anyhow::bail!("{error}\n{}", deployment.logs());
    }
    assert!(
        deployment.process(restarted).is_running(),
        "{}",
        deployment.logs()
    );
    assert_eq!(
        deployment.topic_count(&deployment.topics.leads)?,
        10,
        "nothing passes without the registry"
    );
    assert_eq!(
        deployment.topic_count(&deployment.topics.dlq)?,
        0,
        "nothing is dead-lettered"
    );

    registry.start_again().await?;
    if let Err(error) = wait_for_leads(&deployment, 20).await {
        anyhow::bail!("{error}\n{}", deployment.logs());
    }
    assert_eq!(
        deployment.topic_count(&deployment.topics.dlq)?,
        0,
        "{}",
        deployment.logs()
    );
    let clickhouse = deployment.clickhouse.clone();
    let in_clickhouse = wait_for("20 leads in ClickHouse", Duration::from_secs(90), || {
        let clickhouse = clickhouse.clone();
        async move {
            let rows = clickhouse
                .rows("SELECT toString(count()) AS n FROM leads FINAL")
                .await?;
            Ok((rows[0]["n"] == "20").then_some(()))
        }
    })
    .await;
    if let Err(error) = in_clickhouse {
        anyhow::bail!("{error}\n{}", deployment.logs());
    }

    // A downstream consumer through the registry: confluent-kafka's AvroDeserializer.
    let brokers = deployment.stack.brokers.clone();
    let url = registry.url();
    let through = ["--mode", "registry", "--registry", &url, "--user", user];
    // The consumer reads the password from its environment, never from its command line.
    let secret = [("REGISTRY_PASSWORD", password.as_str())];
    let reader_registry = Some(std::sync::Arc::new(
        hunter_core::codec::Registry::new(
            &url::Url::parse(&url)?,
            &hunter_core::config::SchemaRegistrySettings {
                username: Some(user.into()),
                password: Some(hunter_core::config::Secret::new(password.clone())),
                ca_location: None,
            },
        )
        .map_err(anyhow::Error::msg)?,
    ));
    let theirs = python_reads(
        &brokers,
        &referrals_topic,
        "referral",
        20,
        &through,
        &secret,
    )?;
    let ours = hunter_reads(
        &brokers,
        &referrals_topic,
        20,
        &Codec::<Referral>::new(&referrals_topic, reader_registry.clone()),
    )
    .await?;
    assert_eq!(by_key(theirs, "id"), by_key(ours, "id"));
    let theirs = python_reads(&brokers, &leads_topic, "lead", 20, &through, &secret)?;
    let ours = hunter_reads(
        &brokers,
        &leads_topic,
        20,
        &Codec::<Lead>::new(&leads_topic, reader_registry),
    )
    .await?;
    assert_eq!(by_key(theirs, "lead_id"), by_key(ours, "lead_id"));
    deployment.teardown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_registry_credentials_fail_fast_naming_the_setting() -> anyhow::Result<()> {
    let password = uuid::Uuid::new_v4().simple().to_string();
    let registry = OwnRegistry::start(Some(("hunter-test", &password))).await?;
    let mut deployment = Deployment::new(&[])?;
    let wrong = format!("{password}-wrong");
    with_registry(
        &mut deployment,
        &registry.url(),
        Some(("hunter-test", &wrong)),
    );
    let (ok, output) = run_hunter(&["migrate"], &deployment.env, Duration::from_secs(60))?;
    assert!(!ok, "{output}");
    expect_all(&output, &["HUNTER_SCHEMA_REGISTRY_PASSWORD", "401"])?;
    assert!(
        !output.contains(&wrong) && !output.contains(&password),
        "{output}"
    );

    let (ok, output) = run_hunter(
        &["run", "process"],
        &deployment.env,
        Duration::from_secs(60),
    )?;
    assert!(!ok, "{output}");
    expect_all(
        &output,
        &[
            "HUNTER_SCHEMA_REGISTRY_USERNAME",
            "HUNTER_SCHEMA_REGISTRY_PASSWORD",
        ],
    )?;
    assert!(!output.contains(&wrong), "{output}");

    let (ok, output) = run_hunter(&["doctor"], &deployment.env, Duration::from_secs(90))?;
    assert!(!ok, "{output}");
    let line = output
        .lines()
        .find(|l| l.contains("schema registry"))
        .unwrap_or_default()
        .to_owned();
    assert!(
        line.contains("FAIL") || output.contains("HUNTER_SCHEMA_REGISTRY_PASSWORD"),
        "{output}"
    );
    assert!(!output.contains(&wrong), "{output}");

    // No credentials at all against a registry that wants them: the same clear failure.
    deployment.env.remove("HUNTER_SCHEMA_REGISTRY_USERNAME");
    deployment.env.remove("HUNTER_SCHEMA_REGISTRY_PASSWORD");
    let (ok, output) = run_hunter(&["migrate"], &deployment.env, Duration::from_secs(60))?;
    assert!(!ok, "{output}");
    expect_all(&output, &["HUNTER_SCHEMA_REGISTRY_PASSWORD"])?;
    deployment.teardown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_fails_clearly_when_the_registry_refuses_a_contract_as_incompatible()
-> anyhow::Result<()> {
    let registry = OwnRegistry::start(None).await?;
    let mut deployment = Deployment::new(&[])?;
    with_registry(&mut deployment, &registry.url(), None);
    // Someone registered another shape under the referral subject, FULL_TRANSITIVE.
    let subject = format!("{}-value", deployment.topics.referrals);
    let other = r#"{"type":"record","name":"Referral","namespace":"hunter.partnercenter.v1","fields":[{"name":"legacyId","type":"long"}]}"#;
    let answer = registry
        .client_request(reqwest::Method::PUT, &format!("/config/{subject}"))
        .json(&serde_json::json!({"compatibility": "FULL_TRANSITIVE"}))
        .send()
        .await?;
    assert!(answer.status().is_success());
    let answer = registry
        .client_request(
            reqwest::Method::POST,
            &format!("/subjects/{subject}/versions"),
        )
        .json(&serde_json::json!({"schema": other}))
        .send()
        .await?;
    assert!(answer.status().is_success());

    let (ok, output) = run_hunter(&["migrate"], &deployment.env, Duration::from_secs(60))?;
    assert!(!ok, "{output}");
    expect_all(
        &output,
        &[&subject, "schemas/referral.avsc", "incompatible", "409"],
    )?;
    deployment.teardown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_behind_tls_needs_its_ca_and_says_so() -> anyhow::Result<()> {
    let mut registry = OwnRegistry::start(None).await?;
    let (https, ca) = registry.serve_tls().await?;
    let mut deployment = Deployment::new(&[])?;
    with_registry(&mut deployment, &https, None);
    let (ok, output) = run_hunter(&["migrate"], &deployment.env, Duration::from_secs(60))?;
    assert!(!ok, "an untrusted certificate must fail: {output}");
    expect_all(
        &output,
        &["HUNTER_SCHEMA_REGISTRY_CA_LOCATION", "not trusted"],
    )?;

    deployment.env.insert(
        "HUNTER_SCHEMA_REGISTRY_CA_LOCATION".into(),
        ca.display().to_string(),
    );
    let (ok, output) = run_hunter(&["migrate"], &deployment.env, Duration::from_secs(60))?;
    assert!(ok, "{output}");
    assert!(output.contains("FULL_TRANSITIVE"), "{output}");
    let mut counts = HashMap::new();
    for line in output
        .lines()
        .filter(|l| l.contains("schema registry subject"))
    {
        *counts.entry("subjects").or_insert(0) += 1;
        assert!(line.contains(&deployment.prefix), "{line}");
    }
    // Every topic's contract: five, and the two of write-back (docs/writeback.md).
    assert_eq!(counts.get("subjects"), Some(&7), "{output}");
    deployment.teardown().await;
    Ok(())
}
