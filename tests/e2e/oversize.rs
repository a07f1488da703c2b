//! The record-size policy end to end (`docs/record-size.md`): one large referral, or one odd
//! record, never stops Hunter.
//!
//! 1. The simulator serves a 900 KB referral (its notes), a referral over 1 MiB and referrals
//!    with odd ids among normal ones, to `hunter run all` on the real broker and ClickHouse:
//!    every normal referral arrives; the 900 KB one arrives cut and marked (ClickHouse, the API)
//!    with a dead letter saying what was cut; the others are dead letters with their reasons
//!    (the one over 1 MiB by reference, since Kafka refuses its whole JSON); the poll succeeds,
//!    the cursor moves, the next poll succeeds too and the process never stops.
//! 2. Records Kafka refuses for their size inside the processor and the sink (an undecodable
//!    1.5 MB referral and lead, which their dead letters cannot carry): dead-lettered by
//!    reference, and the stream goes on.
//! 3. The limits agree on the real broker: `hunter migrate` sets the topics'
//!    `max.message.bytes`, Hunter's producer sends the largest record it allows and refuses a
//!    larger one as a refusal of that record; and the 900 KB referral's record sizes, whole and
//!    cut, before and after lz4 (printed as `MEASURED`, quoted in `docs/record-size.md`).
//!
//! On `main` before the policy, (1) fails: the 900 KB referral's record is 1.8 MB, librdkafka
//! refuses it (`MessageSizeTooLarge`), every poll fails as `kafka` and the third stops the
//! process; (2) fails: the processor stops on its refused dead letter.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use hunter_core::codec::Codec;
use hunter_core::config::Settings;
use hunter_core::kafka;
use hunter_core::records::{Ingest, Referral, SourceState};
use hunter_core::size::{
    COMPRESSION, CUT_MARK, PRODUCER_MESSAGE_MAX_BYTES, REFERRAL_RECORD_BUDGET,
    TOPIC_MAX_MESSAGE_BYTES, refused_record,
};
use hunter_e2e::{Deployment, generated_referrals, read_topic, run_hunter, wait_for};
use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientConfig, ClientContext};
use serde_json::{Value, json};

const BIG_ID: &str = "00000000-0000-4000-8000-000000000b16";
const HUGE_ID: &str = "00000000-0000-4000-8000-0000000001ee";

/// Text of about `bytes` bytes that reads like notes (compresses like text does).
fn notes(bytes: usize, seed: usize) -> String {
    const WORDS: [&str; 12] = [
        "customer",
        "migration",
        "workload",
        "licensing",
        "azure",
        "timeline",
        "budget",
        "security",
        "review",
        "contact",
        "renewal",
        "pilot",
    ];
    let mut text = String::with_capacity(bytes + 16);
    let mut state = seed as u64 | 1;
    while text.len() < bytes {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        text.push_str(WORDS[(state % WORDS.len() as u64) as usize]);
        text.push_str(if state.is_multiple_of(9) { ". " } else { " " });
    }
    text.truncate(bytes);
    text
}

fn count(rows: &[Value]) -> u64 {
    rows[0]["n"].as_str().unwrap_or("0").parse().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_900_kb_referral_and_odd_ids_never_stop_the_source_nor_lose_the_others()
-> anyhow::Result<()> {
    let normal = generated_referrals(40, 31)?;
    let mut referrals = normal.clone();
    // 900 KB of notes: a 1.8 MB record whole (the text travels typed and in rawJson).
    let mut big = normal[7].clone();
    big["id"] = json!(BIG_ID);
    big["eTag"] = json!("\"big-1\"");
    big["details"]["notes"] = json!(notes(900_000, 1));
    referrals.push(big);
    // Over the 1 MiB a referral may be: dead-lettered, by reference (its JSON cannot travel).
    let mut huge = normal[8].clone();
    huge["id"] = json!(HUGE_ID);
    huge["details"]["notes"] = json!(notes(1_200_000, 2));
    referrals.push(huge);
    // Odd ids: dead letters with their reasons, the poll goes on.
    for (index, id) in ["odd id <img src=x>", &"x".repeat(300), "../../etc"]
        .iter()
        .enumerate()
    {
        let mut odd = normal[10 + index].clone();
        odd["id"] = json!(id);
        referrals.push(odd);
    }
    let mut deployment = Deployment::new(&referrals)?;
    deployment.start_simulator(&[]).await?;
    deployment.login_and_migrate()?;
    let all = deployment.start_role("all").await?;

    let first = deployment
        .wait_for_run("the first poll", Duration::from_secs(120), |run| {
            run.trigger == "startup"
        })
        .await?;
    assert_eq!(
        first.status,
        "succeeded",
        "{first:?}\n{}",
        deployment.logs()
    );
    assert_eq!(first.fetched, 45, "{first:?}");
    assert_eq!(first.published, 41, "{first:?}");
    assert_eq!(first.dead_lettered, 4, "{first:?}");

    // Every normal referral and the big one arrive in ClickHouse, as referrals and as leads.
    let clickhouse = deployment.clickhouse.clone();
    let arrived = wait_for(
        "41 referrals and 41 leads in clickhouse",
        Duration::from_secs(120),
        || async {
            let referrals = count(
                &clickhouse
                    .rows("SELECT toString(count()) AS n FROM referrals FINAL")
                    .await?,
            );
            let leads = count(
                &clickhouse
                    .rows("SELECT toString(count()) AS n FROM leads FINAL")
                    .await?,
            );
            Ok((referrals == 41 && leads == 41).then_some(()))
        },
    )
    .await;
    if let Err(error) = arrived {
        anyhow::bail!("{error}\n{}", deployment.logs());
    }
    let ids: Vec<String> = clickhouse
        .rows("SELECT referral_id FROM referrals FINAL ORDER BY referral_id")
        .await?
        .iter()
        .map(|row| row["referral_id"].as_str().unwrap_or_default().to_owned())
        .collect();
    let mut expected: Vec<String> = normal
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .chain([BIG_ID.to_owned()])
        .collect();
    expected.sort();
    assert_eq!(ids, expected);

    // The big one: cut to the budget and marked, in ClickHouse and through the API.
    let rows = clickhouse
        .rows(&format!(
            "SELECT toString(length(raw_json)) AS n, raw_json FROM referrals FINAL WHERE referral_id = '{BIG_ID}'"
        ))
        .await?;
    let stored_bytes = count(&rows) as usize;
    assert!(stored_bytes < REFERRAL_RECORD_BUDGET, "{stored_bytes}");
    let stored: Value = serde_json::from_str(rows[0]["raw_json"].as_str().unwrap())?;
    let stored_notes = stored["details"]["notes"].as_str().unwrap();
    assert!(
        stored_notes.contains(&format!("{CUT_MARK}: 65536 of 900000 bytes kept")),
        "{}",
        &stored_notes[stored_notes.len().saturating_sub(200)..]
    );
    let (status, body) = deployment
        .get(&format!("/api/v1/referrals/{BIG_ID}"))
        .await?;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["referral"]["details"]["notes"]
            .as_str()
            .unwrap_or_default()
            .contains(CUT_MARK),
        "the api serves the cut referral"
    );
    let (status, lead) = deployment.get(&format!("/api/v1/leads/{BIG_ID}")).await?;
    assert_eq!(status, 200, "the big referral is a lead: {lead}");

    // Its record in the referral topic says what was cut.
    let topic = deployment.topics.referrals.clone();
    let codec = hunter_core::codec::Codec::<Referral>::new(&topic, None);
    let mut truncation = None;
    for (payload, _) in read_topic(&deployment.stack.brokers, &topic, 41)? {
        assert!(
            payload.len() <= REFERRAL_RECORD_BUDGET,
            "{} bytes",
            payload.len()
        );
        let referral = codec.decode(&payload).await?;
        if referral.id == BIG_ID {
            truncation = referral.truncation;
        } else {
            assert_eq!(referral.truncation, None, "{} was cut", referral.id);
        }
    }
    let truncation = truncation.expect("the big referral is marked");
    assert_eq!(truncation.fields, ["/details/notes"]);
    assert!(
        truncation.original_record_bytes > 1_800_000,
        "{truncation:?}"
    );

    // The dead letters, each with its reason.
    let dlq =
        wait_for(
            "5 dead letters in clickhouse",
            Duration::from_secs(60),
            || async {
                let rows = clickhouse
            .rows("SELECT stage, error_class, error, payload FROM dlq FINAL ORDER BY dlq_offset")
            .await?;
                Ok((rows.len() >= 5).then_some(rows))
            },
        )
        .await?;
    let find = |class: &str, needle: &str| {
        dlq.iter()
            .find(|row| {
                row["stage"] == "source"
                    && row["error_class"] == class
                    && row["error"].as_str().unwrap_or_default().contains(needle)
            })
            .unwrap_or_else(|| panic!("no {class} dead letter saying {needle:?}: {dlq:#?}"))
    };
    let cut = find("truncated", BIG_ID);
    let error = cut["error"].as_str().unwrap();
    assert!(
        error.contains("/details/notes") && error.contains("budget"),
        "{error}"
    );
    let reference: Value = serde_json::from_str(cut["payload"].as_str().unwrap())?;
    assert_eq!(reference["reference"]["id"], BIG_ID);
    assert_eq!(
        reference["reference"]["truncated"],
        json!(["/details/notes"])
    );

    let huge = find("invalid", "more than 1048576 is refused");
    assert!(
        huge["error"]
            .as_str()
            .unwrap()
            .contains("so it carries a reference"),
        "{huge:?}"
    );
    let reference: Value = serde_json::from_str(huge["payload"].as_str().unwrap())?;
    assert_eq!(reference["reference"]["id"], HUGE_ID);
    assert!(reference["reference"]["bytes"].as_u64().unwrap() > 1_200_000);

    let odd = find("invalid", "' ' (U+0020) at character 4");
    assert!(
        odd["payload"]
            .as_str()
            .unwrap()
            .contains("odd id <img src=x>")
    );
    find("invalid", "is 300 characters long");
    find("invalid", "'/' (U+002F) at character 3");

    // The cursor moved past all of it.
    let newest = referrals
        .iter()
        .filter_map(|raw| Referral::from_api_json(&raw.to_string(), Ingest::default()).ok())
        .filter_map(|referral| referral.updated_date_time)
        .max()
        .unwrap();
    let state_topic = deployment.topics.source_state.clone();
    let state_codec = hunter_core::codec::Codec::<SourceState>::new(&state_topic, None);
    let records = read_topic(&deployment.stack.brokers, &state_topic, 1)?;
    let state = state_codec.decode(&records.last().unwrap().0).await?;
    assert_eq!(state.cursor_updated_at, Some(newest), "{state:?}");

    // The next poll succeeds too and publishes nothing again (the cut version is done).
    let task = deployment.request_sync(None).await?;
    let second = deployment
        .wait_for_run("the second poll", Duration::from_secs(120), |run| {
            run.run_id == task
        })
        .await?;
    assert_eq!(second.status, "succeeded", "{second:?}");
    assert_eq!(second.published, 0, "{second:?}");
    assert!(
        second.fetched < first.fetched,
        "the poll started from the cursor: {second:?}"
    );

    // And the process never stopped.
    let process = deployment.process(all);
    assert!(
        process.is_running(),
        "hunter run all stopped:\n{}",
        process.output()
    );
    let output = process.output();
    assert!(!output.contains("polls in a row failed"), "{output}");
    deployment.teardown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_kafka_refuses_in_the_processor_and_the_sink_are_dead_lettered_by_reference()
-> anyhow::Result<()> {
    let mut referrals = generated_referrals(6, 33)?;
    // The sixth arrives later, as the newest: after the cursor of the first poll.
    let now =
        time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339)?;
    referrals[5]["updatedDateTime"] = json!(now);
    let mut deployment = Deployment::new(&referrals[..5])?;
    deployment.run_all_until_leads(5).await?;
    let all = deployment.processes_len() - 1;

    // 1.5 MB that no codec reads, on the referral and the lead topic: the processor and the
    // sink dead-letter them, and Kafka refuses dead letters that large.
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &deployment.stack.brokers)
        .set("message.max.bytes", "10000000")
        .set("compression.type", "lz4")
        .create()?;
    let garbage = vec![0x42u8; 1_500_000];
    for topic in [&deployment.topics.referrals, &deployment.topics.leads] {
        producer
            .send(
                FutureRecord::to(topic).key("garbage").payload(&garbage),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(error, _)| anyhow::anyhow!("producing to {topic}: {error}"))?;
    }

    let clickhouse = deployment.clickhouse.clone();
    let dlq = wait_for(
        "2 dead letters by reference",
        Duration::from_secs(120),
        || async {
            let rows = clickhouse
                .rows("SELECT stage, error_class, error, original_topic, payload FROM dlq FINAL")
                .await?;
            Ok((rows.len() >= 2).then_some(rows))
        },
    )
    .await;
    let dlq = match dlq {
        Ok(rows) => rows,
        Err(error) => anyhow::bail!("{error}\n{}", deployment.logs()),
    };
    for (stage, topic) in [
        ("processor", &deployment.topics.referrals),
        ("sink", &deployment.topics.leads),
    ] {
        let row = dlq
            .iter()
            .find(|row| row["stage"] == stage)
            .unwrap_or_else(|| panic!("no {stage} dead letter: {dlq:#?}"));
        assert_eq!(row["original_topic"], topic.as_str());
        assert!(
            row["error"]
                .as_str()
                .unwrap()
                .contains("so it carries a reference"),
            "{row:?}"
        );
        let reference: Value = serde_json::from_str(row["payload"].as_str().unwrap())?;
        assert_eq!(reference["reference"]["topic"], topic.as_str());
        assert_eq!(reference["reference"]["bytes"], 1_500_000);
    }

    // The stream goes on: a new referral becomes a lead.
    deployment.write_referrals(&referrals)?;
    deployment.request_sync(None).await?;
    let arrived = wait_for("the sixth lead", Duration::from_secs(120), || async {
        let rows = clickhouse
            .rows("SELECT toString(count()) AS n FROM leads FINAL")
            .await?;
        Ok((count(&rows) == 6).then_some(()))
    })
    .await;
    if let Err(error) = arrived {
        anyhow::bail!("{error}\n{}", deployment.logs());
    }
    let process = deployment.process(all);
    assert!(
        process.is_running(),
        "hunter run all stopped:\n{}",
        process.output()
    );
    deployment.teardown().await;
    Ok(())
}

/// librdkafka statistics of a producer, for the bytes it sent: the latest snapshot and how
/// many snapshots arrived.
#[derive(Clone, Default)]
struct Stats(Arc<Mutex<(Option<Statistics>, u64)>>);

impl ClientContext for Stats {
    fn stats(&self, statistics: Statistics) {
        let mut stats = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *stats = (Some(statistics), stats.1 + 1);
    }
}

impl Stats {
    fn sent(&self) -> u64 {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .as_ref()
            .map_or(0, |s| s.brokers.values().map(|b| b.txbytes).sum())
    }

    fn snapshots(&self) -> u64 {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).1
    }

    /// Waits for two more snapshots: the second was taken wholly after this call, so it counts
    /// all traffic that happened before it.
    async fn settle(&self) -> anyhow::Result<()> {
        let now = self.snapshots();
        hunter_e2e::wait_for(
            "two more librdkafka statistics snapshots",
            Duration::from_secs(30),
            || async { Ok((self.snapshots() >= now + 2).then_some(())) },
        )
        .await
    }
}

/// Bytes on the wire to send `payload` once with Hunter's compression (lz4), by librdkafka's
/// statistics: the record's batch and its produce request.
async fn sent_compressed(brokers: &str, topic: &str, payload: &[u8]) -> anyhow::Result<u64> {
    let stats = Stats::default();
    let producer: FutureProducer<Stats> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("compression.type", COMPRESSION)
        .set("message.max.bytes", "10000000")
        .set("statistics.interval.ms", "100")
        .create_with_context(stats.clone())?;
    producer
        .client()
        .fetch_metadata(Some(topic), Duration::from_secs(10))?;
    // Statistics before and after, each from a snapshot taken after the traffic it counts.
    stats.settle().await?;
    let before = stats.sent();
    producer
        .send(
            FutureRecord::to(topic).key("k").payload(payload),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(error, _)| error)?;
    stats.settle().await?;
    Ok(stats.sent() - before)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_sets_the_topic_limit_and_producers_refuse_only_what_is_over_their_own()
-> anyhow::Result<()> {
    let deployment = Deployment::new(&[])?;
    let (ok, output) = run_hunter(&["migrate"], &deployment.env, Duration::from_secs(60))?;
    anyhow::ensure!(ok, "hunter migrate failed:\n{output}");

    // Every topic `hunter migrate` creates takes batches up to the policy's limit.
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &deployment.stack.brokers)
        .create()?;
    let settings = Settings::from_sources(None, &deployment.env)?;
    for spec in settings.kafka.topics().specs() {
        let described = admin
            .describe_configs(
                [&ResourceSpecifier::Topic(&spec.name)],
                &AdminOptions::new(),
            )
            .await?;
        let resource = described
            .into_iter()
            .next()
            .context("one resource")?
            .map_err(|code| anyhow::anyhow!("describe {}: {code}", spec.name))?;
        let limit = resource
            .entries
            .iter()
            .find(|entry| entry.name == "max.message.bytes")
            .and_then(|entry| entry.value.clone());
        assert_eq!(
            limit,
            Some(TOPIC_MAX_MESSAGE_BYTES.to_string()),
            "{}",
            spec.name
        );
    }

    // Hunter's producer sends what its limit allows, even incompressible, and refuses what is
    // over it at once, as a refusal of the record (dead-lettered, never "kafka is failing").
    let producer = kafka::producer(&settings.kafka, "hunter-oversize-test")?;
    let topic = deployment.topics.dlq.clone();
    let mut noise = vec![0u8; PRODUCER_MESSAGE_MAX_BYTES + 1];
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    for byte in &mut noise {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        *byte = state as u8;
    }
    let fits = &noise[..PRODUCER_MESSAGE_MAX_BYTES - 1024];
    producer
        .send(
            FutureRecord::to(&topic).key("fits").payload(fits),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(error, _)| anyhow::anyhow!("the largest record was refused: {error}"))?;
    let refused = producer
        .send(
            FutureRecord::to(&topic).key("over").payload(&noise),
            Duration::from_secs(30),
        )
        .await
        .map(|_| ())
        .map_err(|(error, _)| error);
    let error = refused.expect_err("a record over message.max.bytes was sent");
    assert_eq!(
        refused_record(&error),
        Some(rdkafka::types::RDKafkaErrorCode::MessageSizeTooLarge),
        "{error}"
    );
    let read = read_topic(&deployment.stack.brokers, &topic, 1)?;
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].0, fits, "the record read back is the one sent");

    // The 900 KB referral: its record whole and cut, before and after compression.
    let referrals = generated_referrals(10, 31)?;
    let mut big = referrals[7].clone();
    big["details"]["notes"] = json!(notes(900_000, 1));
    let raw = big.to_string();
    let whole = Referral::from_api_json(&raw, Ingest::default())?;
    let codec = Codec::<Referral>::new(&topic, None);
    let whole_record = codec.encode_single_object(&whole)?;
    let measure = |r: &Referral| codec.encode_single_object(r).ok().map(|b| b.len());
    let cut = whole
        .cut_to_fit(REFERRAL_RECORD_BUDGET, whole_record.len(), measure)
        .context("the 900 KB referral cuts to fit")?;
    let cut_record = codec.encode_single_object(&cut)?;
    let whole_sent = sent_compressed(&deployment.stack.brokers, &topic, &whole_record).await?;
    let cut_sent = sent_compressed(&deployment.stack.brokers, &topic, &cut_record).await?;
    eprintln!(
        "MEASURED 900 KB referral: {} bytes of JSON; record whole {} bytes ({whole_sent} sent with \
         {COMPRESSION}), cut {} bytes ({cut_sent} sent with {COMPRESSION})",
        raw.len(),
        whole_record.len(),
        cut_record.len()
    );
    assert!(whole_record.len() > PRODUCER_MESSAGE_MAX_BYTES);
    assert!(cut_record.len() <= REFERRAL_RECORD_BUDGET);
    // Text compresses: lz4 sends notes in well under half their size.
    assert!(whole_sent * 2 < whole_record.len() as u64, "{whole_sent}");
    assert!(cut_sent * 2 < cut_record.len() as u64, "{cut_sent}");
    deployment.teardown().await;
    Ok(())
}
