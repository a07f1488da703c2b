//! Dead-letter re-drive end to end (real broker, ClickHouse, registry stand-in, the `hunter`
//! binary): `hunter dlq list|replay` and `POST /api/v1/dlq/replay`.
//!
//! The fixable poison record is a realistic one: a referral in Confluent framing (an upstream
//! producer writing through a Schema Registry) reaching a processor that has no registry
//! configured, so it is dead-lettered ("no schema registry is configured"). The operator fixes
//! the configuration (HUNTER_SCHEMA_REGISTRY_URL), restarts, and replays: it becomes a lead.
//! The still-poison record is bytes in no framing at all: replayed once, it comes back once with
//! `replay_count` 1, and the next replay refuses it, so it never loops.
//!
//! The page's dead-letter view in headless Chromium (`tests/browser/dlq.mjs`): the read token
//! sees a dead letter and is refused its replay; the admin token replays it.

use std::time::Duration;

use hunter_core::codec::Codec;
use hunter_core::records::{Ingest, Referral, Timestamp};
use hunter_e2e::contracts::{OwnRegistry, produce_raw};
use hunter_e2e::{Deployment, free_port, run_hunter, wait_for};
use serde_json::{Value, json};

const FIXED: &str = "dlq-fixed-0001";
const POISON: &str = "dlq-poison-0001";

async fn rows(deployment: &Deployment, sql: &str) -> anyhow::Result<Vec<Value>> {
    deployment.clickhouse.rows(sql).await
}

/// The `dlq` rows (FINAL), oldest first: id, key fields as strings.
async fn dead_letters(deployment: &Deployment) -> anyhow::Result<Vec<Value>> {
    rows(
        deployment,
        "SELECT concat(toString(dlq_partition), ':', toString(dlq_offset)) AS id, stage, \
         error_class, error, toString(replay_count) AS replay_count, replay_of, \
         toString(original_offset) AS original_offset, payload \
         FROM dlq FINAL ORDER BY dlq_partition, dlq_offset",
    )
    .await
}

async fn wait_for_dead_letters(deployment: &Deployment, n: usize) -> anyhow::Result<Vec<Value>> {
    let found = wait_for(
        &format!("{n} dead letters in clickhouse"),
        Duration::from_secs(90),
        || async {
            let rows = dead_letters(deployment).await?;
            Ok((rows.len() >= n).then_some(rows))
        },
    )
    .await;
    match found {
        Ok(rows) => Ok(rows),
        Err(error) => anyhow::bail!("{error}\n{}", deployment.logs()),
    }
}

fn hunter(deployment: &Deployment, args: &[&str]) -> anyhow::Result<String> {
    let (ok, output) = run_hunter(args, &deployment.env, Duration::from_secs(120))?;
    anyhow::ensure!(ok, "hunter {args:?} failed:\n{output}");
    Ok(output)
}

/// Lines of `hunter dlq replay` that start with a dead letter id (the outcomes).
fn outcome_line<'a>(output: &'a str, id: &str) -> &'a str {
    output
        .lines()
        .find(|line| line.starts_with(&format!("{id} ")))
        .unwrap_or_else(|| panic!("no outcome for {id} in:\n{output}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fixed_poison_record_becomes_a_lead_and_a_still_poison_one_comes_back_once()
-> anyhow::Result<()> {
    let registry = OwnRegistry::start(None).await?;
    let mut deployment = Deployment::new(&[])?;
    hunter(&deployment, &["migrate"])?;

    // The upstream producer's records: one in Confluent framing (schema id in the registry the
    // processor does not know of yet), one in no framing at all.
    let upstream = Some(std::sync::Arc::new(
        hunter_core::codec::Registry::new(
            &url::Url::parse(&registry.url())?,
            &hunter_core::config::SchemaRegistrySettings::default(),
        )
        .map_err(anyhow::Error::msg)?,
    ));
    let raw = json!({
        "id": FIXED,
        "name": "Contoso replay",
        "status": "New",
        "createdDateTime": "2026-01-10T09:00:00Z",
        "updatedDateTime": "2026-01-10T09:00:00Z",
        "eTag": "e-1",
        "customerProfile": { "name": "Contoso", "address": { "country": "US" } },
    });
    let ingest = Ingest {
        tenant: "test-tenant".into(),
        fetched_at: Timestamp::now(),
        sync_run_id: "dlq-test".into(),
    };
    let referral = Referral::from_api_json(&raw.to_string(), ingest)?;
    let framed = Codec::<Referral>::new(&deployment.topics.referrals, upstream)
        .encode(&referral)
        .await?;
    assert_eq!(framed[0], 0, "confluent framing");
    let poison = b"\x07this is not avro in any framing".to_vec();
    produce_raw(
        &deployment.stack.brokers,
        &deployment.topics.referrals,
        &[
            (FIXED.to_owned(), framed),
            (POISON.to_owned(), poison.clone()),
        ],
    )
    .await?;

    // Without a registry both are dead letters.
    deployment.start_role("api").await?;
    let process = deployment.start_role_on("process", free_port()).await?;
    let sink = deployment.start_role_on("sink", free_port()).await?;
    let first = wait_for_dead_letters(&deployment, 2).await?;
    assert_eq!(first.len(), 2, "{first:?}");
    let by_error = |needle: &str| {
        first
            .iter()
            .find(|row| row["error"].as_str().unwrap_or_default().contains(needle))
            .cloned()
            .unwrap_or_else(|| panic!("no dead letter saying {needle:?}: {first:?}"))
    };
    let fixable = by_error("no schema registry is configured");
    let still_poison = by_error("unknown framing");
    for row in [&fixable, &still_poison] {
        assert_eq!(row["stage"], "processor");
        assert_eq!(row["replay_count"], "0", "a first failure: {row}");
    }
    let (fixable_id, poison_id) = (
        fixable["id"].as_str().unwrap().to_owned(),
        still_poison["id"].as_str().unwrap().to_owned(),
    );
    assert_eq!(deployment.topic_count(&deployment.topics.leads)?, 0);

    // `list` shows both as pending; bad flags are refused naming the flag.
    let listed = hunter(
        &deployment,
        &["dlq", "list", "--stage", "processor", "--since", "1h"],
    )?;
    for id in [&fixable_id, &poison_id] {
        assert!(outcome_line(&listed, id).contains("pending"), "{listed}");
    }
    let (ok, output) = run_hunter(
        &["dlq", "list", "--since", "yesterday"],
        &deployment.env,
        Duration::from_secs(60),
    )?;
    assert!(!ok && output.contains("invalid --since"), "{output}");
    let (ok, output) = run_hunter(
        &["dlq", "replay", "--id", "zero"],
        &deployment.env,
        Duration::from_secs(60),
    )?;
    assert!(!ok && output.contains("--id"), "{output}");

    // The operator fixes the cause: the processor (and the sink, which reads what the
    // processor now writes in Confluent framing) get the registry.
    deployment
        .process(process)
        .terminate(Duration::from_secs(30))?;
    deployment
        .process(sink)
        .terminate(Duration::from_secs(30))?;
    deployment
        .env
        .insert("HUNTER_SCHEMA_REGISTRY_URL".into(), registry.url());
    deployment.start_role_on("process", free_port()).await?;
    deployment.start_role_on("sink", free_port()).await?;

    // A dry run from the API: both would be replayed, nothing is sent.
    let referrals_before = deployment.topic_count(&deployment.topics.referrals)?;
    let client = reqwest::Client::new();
    let replay_url = format!("{}/api/v1/dlq/replay", deployment.api);
    let dry: Value = client
        .post(&replay_url)
        .bearer_auth(&deployment.api_token)
        .json(&json!({ "stage": "processor", "dry_run": true }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    assert_eq!(dry["dry_run"], true, "{dry}");
    assert_eq!(dry["replayed"], 2, "{dry}");
    assert!(
        dry["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|item| item["outcome"] == "would replay" && item["offset"].is_null()),
        "{dry}"
    );
    assert_eq!(
        deployment.topic_count(&deployment.topics.referrals)?,
        referrals_before,
        "a dry run sends nothing"
    );
    let bad = client
        .post(&replay_url)
        .bearer_auth(&deployment.api_token)
        .json(&json!({ "since": "soon" }))
        .send()
        .await?;
    assert_eq!(bad.status(), 400);
    let bad: Value = bad.json().await?;
    assert_eq!(bad["error"]["parameter"], "since", "{bad}");

    // The replay: the fixed record becomes a lead, the poison one comes back once, count 1.
    let output = hunter(&deployment, &["dlq", "replay", "--stage", "processor"])?;
    for id in [&fixable_id, &poison_id] {
        let line = outcome_line(&output, id);
        assert!(
            line.contains(" replayed to ") && line.contains("(replay count 1)"),
            "{output}"
        );
    }
    let leads = wait_for(
        "the replayed referral's lead",
        Duration::from_secs(90),
        || async {
            let rows = rows(&deployment, "SELECT lead_id FROM leads FINAL").await?;
            Ok((!rows.is_empty()).then_some(rows))
        },
    )
    .await;
    let leads = match leads {
        Ok(leads) => leads,
        Err(error) => anyhow::bail!("{error}\n{}", deployment.logs()),
    };
    assert_eq!(leads, [json!({ "lead_id": FIXED })]);
    let all = wait_for_dead_letters(&deployment, 3).await?;
    assert_eq!(all.len(), 3, "only the poison record came back: {all:?}");
    let again = all
        .iter()
        .find(|row| row["replay_of"] == poison_id.as_str())
        .unwrap_or_else(|| panic!("the poison record's second dead letter: {all:?}"))
        .clone();
    assert_eq!(again["replay_count"], "1", "{again}");
    assert_eq!(again["stage"], "processor");
    assert_eq!(again["payload"], still_poison["payload"], "the same bytes");
    let again_id = again["id"].as_str().unwrap().to_owned();

    // Both replays are recorded (the sink read them back from the referral topic).
    let recorded = wait_for("two replays recorded", Duration::from_secs(60), || async {
        let rows = rows(
            &deployment,
            "SELECT concat(toString(dlq_partition), ':', toString(dlq_offset)) AS id, \
             toString(replay_count) AS replay_count FROM dlq_replays FINAL ORDER BY id",
        )
        .await?;
        Ok((rows.len() >= 2).then_some(rows))
    })
    .await?;
    let mut expected = vec![
        json!({ "id": fixable_id, "replay_count": "1" }),
        json!({ "id": poison_id, "replay_count": "1" }),
    ];
    expected.sort_by_key(|row| row["id"].as_str().unwrap().to_owned());
    assert_eq!(recorded, expected);

    // No loop: the next replay sends nothing, and says why for each.
    let referrals_before = deployment.topic_count(&deployment.topics.referrals)?;
    let output = hunter(&deployment, &["dlq", "replay"])?;
    assert!(
        outcome_line(&output, &again_id).contains("replayed 1 time(s) already"),
        "{output}"
    );
    for id in [&fixable_id, &poison_id] {
        assert!(
            outcome_line(&output, id).contains("replayed before"),
            "{output}"
        );
    }
    assert!(output.contains("0 replayed"), "{output}");
    assert_eq!(
        deployment.topic_count(&deployment.topics.referrals)?,
        referrals_before,
        "nothing re-published"
    );

    // The processor has moved past everything: a new good referral becomes a lead, and the
    // dead-letter topic still holds three records.
    let marker = Referral::from_api_json(
        &json!({ "id": "dlq-marker-0001", "status": "New", "updatedDateTime": "2026-01-11T09:00:00Z", "eTag": "m-1" })
            .to_string(),
        Ingest::default(),
    )?;
    let bytes = Codec::<Referral>::new(&deployment.topics.referrals, None)
        .encode(&marker)
        .await?;
    produce_raw(
        &deployment.stack.brokers,
        &deployment.topics.referrals,
        &[("dlq-marker-0001".to_owned(), bytes)],
    )
    .await?;
    wait_for("the marker's lead", Duration::from_secs(90), || async {
        let n = rows(&deployment, "SELECT lead_id FROM leads FINAL")
            .await?
            .len();
        Ok((n == 2).then_some(()))
    })
    .await?;
    assert_eq!(deployment.topic_count(&deployment.topics.dlq)?, 3);

    // `list` shows what became of each; the API says the same.
    let listed = hunter(&deployment, &["dlq", "list"])?;
    assert!(
        outcome_line(&listed, &fixable_id).contains("replayed"),
        "{listed}"
    );
    assert!(
        outcome_line(&listed, &poison_id).contains(&format!("failed again as {again_id}")),
        "{listed}"
    );
    let (status, _, body) = deployment
        .call(
            reqwest::Method::GET,
            "/api/v1/dlq",
            Some(&deployment.api_token),
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    let items = body["items"].as_array().unwrap();
    let item = |id: &str| items.iter().find(|i| i["id"] == id).unwrap().clone();
    assert_eq!(item(&fixable_id)["outcome"], "replayed");
    assert_eq!(item(&poison_id)["outcome"], "failed again");
    assert_eq!(item(&again_id)["replay_count"], 1);
    assert_eq!(item(&again_id)["replay_of"], poison_id.as_str());
    deployment.teardown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pages_dead_letter_view_replays_with_the_admin_token_only() -> anyhow::Result<()> {
    hunter_e2e::browser::browser_dir()?;
    let mut deployment = Deployment::new(&[])?;
    let read_token = format!("read-{}", uuid::Uuid::new_v4().simple());
    deployment
        .env
        .insert("HUNTER_API_READ_TOKEN".into(), read_token.clone());
    hunter(&deployment, &["migrate"])?;
    produce_raw(
        &deployment.stack.brokers,
        &deployment.topics.referrals,
        &[(POISON.to_owned(), b"\x07not avro".to_vec())],
    )
    .await?;
    deployment.start_role("api").await?;
    deployment.start_role_on("process", free_port()).await?;
    deployment.start_role_on("sink", free_port()).await?;
    let first = wait_for_dead_letters(&deployment, 1).await?;
    let id = first[0]["id"].as_str().unwrap().to_owned();

    hunter_e2e::browser::run_script(
        "dlq.mjs",
        &[
            ("HUNTER_WEB_URL", deployment.api.clone()),
            ("HUNTER_WEB_TOKEN", deployment.api_token.clone()),
            ("HUNTER_WEB_READ_TOKEN", read_token),
            ("HUNTER_WEB_DLQ_ID", id.clone()),
        ],
        "dead-letter view checks passed",
        || deployment.logs(),
    )
    .await?;
    // The one replay the page made came back once (the record is still poison), with count 1.
    let all = wait_for_dead_letters(&deployment, 2).await?;
    assert_eq!(all.len(), 2, "{all:?}");
    assert_eq!(all[1]["replay_of"], id.as_str(), "{all:?}");
    assert_eq!(all[1]["replay_count"], "1", "{all:?}");
    deployment.teardown().await;
    Ok(())
}
