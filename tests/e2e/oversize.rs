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
//!
//! On `main` before the policy, (1) fails: the 900 KB referral's record is 1.8 MB, librdkafka
//! refuses it (`MessageSizeTooLarge`), every poll fails as `kafka` and the third stops the
//! process; (2) fails: the processor stops on its refused dead letter.

use std::time::Duration;

use hunter_core::records::{Ingest, Referral, SourceState};
use hunter_core::size::{CUT_MARK, REFERRAL_RECORD_BUDGET};
use hunter_e2e::{Deployment, generated_referrals, read_topic, wait_for};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
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
    let topic = deployment.topic("partner-center.referrals.v1");
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
    let state_topic = deployment.topic("hunter.source-state.v1");
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
    let referrals = generated_referrals(6, 33)?;
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
    for base in ["partner-center.referrals.v1", "hunter.leads.v1"] {
        let topic = deployment.topic(base);
        producer
            .send(
                FutureRecord::to(&topic).key("garbage").payload(&garbage),
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
    for (stage, base) in [
        ("processor", "partner-center.referrals.v1"),
        ("sink", "hunter.leads.v1"),
    ] {
        let row = dlq
            .iter()
            .find(|row| row["stage"] == stage)
            .unwrap_or_else(|| panic!("no {stage} dead letter: {dlq:#?}"));
        assert_eq!(row["original_topic"], deployment.topic(base));
        assert!(
            row["error"]
                .as_str()
                .unwrap()
                .contains("so it carries a reference"),
            "{row:?}"
        );
        let reference: Value = serde_json::from_str(row["payload"].as_str().unwrap())?;
        assert_eq!(reference["reference"]["topic"], deployment.topic(base));
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
