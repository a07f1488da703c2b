//! Source throughput against the simulator, with its ceilings measured in the same run.
//!
//! `cargo bench -p hunter-e2e --bench source` with the local stack up and its settings in the
//! environment (`eval "$(deploy/local/stack.sh env)"`) and `HUNTER_BIN` naming a release build:
//! `cargo build --release -p hunter && HUNTER_BIN=target/release/hunter cargo bench -p hunter-e2e --bench source`;
//! `tests/bench.sh` runs it with the others. The broker is one of the bench's own
//! (`bench::broker`), not the stack's.
//!
//! For N referrals (default 20,000; `HUNTER_BENCH_REFERRALS`), three times each, median:
//! - api: reading every page from the simulator with a plain HTTP client (no parsing, no
//!   Kafka): the most the API side allows;
//! - broker: producing N pre-encoded referral records (acks=all, idempotent, waiting for each
//!   batch of 100 like the source with one page in flight waits for each page): the most the
//!   broker side allows that way; and the same with as many batches in flight as the source's
//!   read-ahead variant (the most the broker allows a pipelined source);
//! - source: `hunter run source`'s first poll (parse, encode, publish, acknowledge, cursor),
//!   with its default of four pages in flight (reading ahead) and, in the same round, one page
//!   at a time (`HUNTER_SYNC_PAGES_IN_FLIGHT=1`), the order alternating from round to round; with the
//!   source process's CPU per referral for both.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use hunter_core::codec::Codec;
use hunter_core::records::{Ingest, Referral, Timestamp};
use hunter_e2e::bench::{Report, RowKind, cpu_seconds};
use hunter_e2e::{Deployment, generated_referrals};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

async fn api_ceiling(deployment: &Deployment, count: usize) -> anyhow::Result<f64> {
    let cache: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&deployment.env["HUNTER_TOKEN_CACHE"])?)?;
    let token = cache["access_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let client = reqwest::Client::new();
    let started = Instant::now();
    let mut url = format!(
        "{}/v1.0/engagements/referrals?$orderby=updatedDateTime%20asc&$top=100",
        deployment.simulator
    );
    let mut read = 0usize;
    loop {
        let body: serde_json::Value = client
            .get(&url)
            .bearer_auth(&token)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        read += body["value"].as_array().map_or(0, Vec::len);
        match body["@odata.nextLink"].as_str() {
            Some(next) => url = next.to_owned(),
            None => break,
        }
    }
    anyhow::ensure!(read == count, "api ceiling read {read} of {count}");
    Ok(count as f64 / started.elapsed().as_secs_f64())
}

/// Produces the referrals pre-encoded, 100 per batch, with up to `in_flight` batches awaiting
/// their acknowledgements.
async fn broker_ceiling(
    deployment: &Deployment,
    referrals: &[serde_json::Value],
    in_flight: usize,
) -> anyhow::Result<f64> {
    let topic = deployment.topics.referrals.clone();
    let codec = Codec::<Referral>::new(&topic, None);
    let mut payloads = Vec::with_capacity(referrals.len());
    for raw in referrals {
        let ingest = Ingest {
            tenant: "bench".into(),
            fetched_at: Timestamp::now(),
            sync_run_id: "bench".into(),
        };
        let referral = Referral::from_api_json(&raw.to_string(), ingest)?;
        payloads.push((referral.id.clone(), codec.encode_single_object(&referral)?));
    }
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &deployment.stack.brokers)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()?;
    let started = Instant::now();
    let mut batches = VecDeque::new();
    for chunk in payloads.chunks(100) {
        if batches.len() >= in_flight {
            let oldest: tokio::task::JoinHandle<_> = batches.pop_front().expect("a batch");
            oldest.await??;
        }
        let sends: Vec<_> = chunk
            .iter()
            .map(|(key, payload)| {
                let (producer, topic) = (producer.clone(), topic.clone());
                let (key, payload) = (key.clone(), payload.clone());
                async move {
                    producer
                        .send(
                            FutureRecord::to(&topic).key(&key).payload(&payload),
                            Duration::from_secs(30),
                        )
                        .await
                }
            })
            .collect();
        batches.push_back(tokio::spawn(async move {
            for result in futures::future::join_all(sends).await {
                result.map_err(|(error, _)| error)?;
            }
            anyhow::Ok(())
        }));
    }
    for batch in batches {
        batch.await??;
    }
    Ok(payloads.len() as f64 / started.elapsed().as_secs_f64())
}

/// The first poll's rate (referrals/s) and the source process's CPU per referral (µs, user +
/// system from /proc once the poll succeeded: start-up included).
async fn source_rate(deployment: &mut Deployment, count: usize) -> anyhow::Result<(f64, f64)> {
    let source = deployment.start_role("source").await?;
    let run = deployment
        .wait_for_run("the first poll", Duration::from_secs(600), |r| {
            r.status == "succeeded"
        })
        .await?;
    anyhow::ensure!(
        run.published as usize == count,
        "published {} of {count}",
        run.published
    );
    let cpu = cpu_seconds(deployment.process(source).pid())?;
    let seconds = (run.finished_at.unwrap().micros() - run.started_at.micros()) as f64 / 1e6;
    Ok((count as f64 / seconds, cpu * 1e6 / count as f64))
}

/// Pages in flight of the read-ahead variant.
const READ_AHEAD: usize = 4;

/// One round's deployment: its own topics and database on the bench's broker, the simulator
/// serving pages of 100, signed in and migrated.
async fn deployment(
    referrals: &[serde_json::Value],
    brokers: &str,
    pages_in_flight: Option<usize>,
) -> anyhow::Result<Deployment> {
    let mut deployment = Deployment::new(referrals)?;
    deployment.use_broker(brokers);
    if let Some(pages) = pages_in_flight {
        deployment
            .env
            .insert("HUNTER_SYNC_PAGES_IN_FLIGHT".into(), pages.to_string());
    }
    deployment.start_simulator(&["--page-size", "100"]).await?;
    deployment.login_and_migrate()?;
    Ok(deployment)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let Some(count) = hunter_e2e::bench::start("source", "HUNTER_BENCH_REFERRALS", 20_000)? else {
        return Ok(()); // `cargo test --benches` only lists
    };
    let referrals = generated_referrals(count, 1)?;
    // The default (reading ahead) measured against one page at a time (BENCHMARKS.md).
    let in_flight = READ_AHEAD;
    // A broker of the bench's own, deleted afterwards (not the shared stack's).
    let broker = hunter_e2e::bench::broker().await?;
    let (mut api, mut broker_rates, mut broker_pipelined) = (Vec::new(), Vec::new(), Vec::new());
    let (mut source, mut read_ahead) = (Vec::new(), Vec::new());
    let (mut source_cpu, mut read_ahead_cpu) = (Vec::new(), Vec::new());
    for round in 1..=3 {
        // Default and one page at a time, each in a deployment of its own (a first poll each),
        // the order alternating.
        let mut order = [Some(1), Some(in_flight)];
        if round % 2 == 0 {
            order.reverse();
        }
        for pages in order {
            let mut deployment = deployment(&referrals, &broker.brokers(), pages).await?;
            let (rate, cpu) = source_rate(&mut deployment, count).await?;
            if pages != Some(1) {
                read_ahead.push(rate);
                read_ahead_cpu.push(cpu);
            } else {
                source_cpu.push(cpu);
                api.push(api_ceiling(&deployment, count).await?);
                source.push(rate);
                // The broker ceilings write to this round's referral topic after the source,
                // in alternating order too.
                if round % 2 == 1 {
                    broker_rates.push(broker_ceiling(&deployment, &referrals, 1).await?);
                    broker_pipelined
                        .push(broker_ceiling(&deployment, &referrals, in_flight).await?);
                } else {
                    broker_pipelined
                        .push(broker_ceiling(&deployment, &referrals, in_flight).await?);
                    broker_rates.push(broker_ceiling(&deployment, &referrals, 1).await?);
                }
            }
            deployment.teardown().await;
        }
        let last = |rates: &[f64]| rates[round - 1];
        eprintln!(
            "round {round}: api {:.0}/s, broker {:.0}/s ({in_flight} in flight {:.0}/s), \
             source {:.0}/s, source reading ahead {:.0}/s",
            last(&api),
            last(&broker_rates),
            last(&broker_pipelined),
            last(&source),
            last(&read_ahead)
        );
    }
    drop(broker);
    let mut report = Report::new("source", count, "referrals");
    let api = report.row(
        "api ceiling: the same pages read with a plain HTTP client (no parsing, no Kafka)",
        "referrals/s",
        RowKind::Ceiling,
        &api,
    );
    let broker = report.row(
        "broker ceiling: the same records produced pre-encoded, acks=all, idempotent, 100 per acknowledged batch",
        "referrals/s",
        RowKind::Ceiling,
        &broker_rates,
    );
    let pipelined = report.row(
        &format!(
            "broker, pipelined: the same, {in_flight} batches of 100 in flight (as the source reading ahead)"
        ),
        "referrals/s",
        RowKind::Info,
        &broker_pipelined,
    );
    let read_ahead = report.row(
        &format!(
            "hunter source (first poll, the default: `HUNTER_SYNC_PAGES_IN_FLIGHT={in_flight}`, reading ahead)"
        ),
        "referrals/s",
        RowKind::Hunter,
        &read_ahead,
    );
    let source = report.row(
        "source, one page in flight (`HUNTER_SYNC_PAGES_IN_FLIGHT=1`, the default before 2026-12-02)",
        "referrals/s",
        RowKind::Info,
        &source,
    );
    report.row(
        &format!(
            "source CPU per referral, the default ({in_flight} pages in flight; user + system, start-up included)"
        ),
        "µs",
        RowKind::Info,
        &read_ahead_cpu,
    );
    report.row(
        "source CPU per referral, one page in flight",
        "µs",
        RowKind::Info,
        &source_cpu,
    );
    let ceiling = api.min(broker);
    report.ratio(
        "source / min(ceilings)",
        read_ahead / ceiling,
        Some(">= 0.9"),
    );
    report.ratio(
        "source / pipelined broker (the broker with as many batches in flight)",
        read_ahead / api.min(pipelined),
        None,
    );
    report.ratio(
        "source, one page in flight / min(ceilings)",
        source / ceiling,
        None,
    );
    println!("source bench, {count} referrals, median of 3:");
    println!("  api ceiling (read pages only)      {api:>10.0} referrals/s");
    println!("  broker ceiling (produce, acks=all) {broker:>10.0} referrals/s");
    println!("  broker, {in_flight} batches in flight      {pipelined:>10.0} referrals/s");
    println!("  hunter source (first poll, default) {read_ahead:>9.0} referrals/s");
    println!("  source, one page in flight         {source:>10.0} referrals/s");
    println!(
        "  source / min(ceilings)             {:>10.2}",
        read_ahead / ceiling
    );
    report.print();
    Ok(())
}
