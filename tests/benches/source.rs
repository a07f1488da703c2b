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
//!   batch of 100 like the source waits for each page): the most the broker side allows;
//! - source: `hunter run source`'s first poll (parse, encode, publish, acknowledge, cursor).

use std::time::{Duration, Instant};

use hunter_core::codec::Codec;
use hunter_core::records::{Ingest, Referral, Timestamp};
use hunter_e2e::bench::{Report, RowKind};
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

async fn broker_ceiling(
    deployment: &Deployment,
    referrals: &[serde_json::Value],
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
    for chunk in payloads.chunks(100) {
        let sends = chunk.iter().map(|(key, payload)| {
            producer.send(
                FutureRecord::to(&topic).key(key).payload(payload),
                Duration::from_secs(30),
            )
        });
        for result in futures::future::join_all(sends).await {
            result.map_err(|(error, _)| error)?;
        }
    }
    Ok(payloads.len() as f64 / started.elapsed().as_secs_f64())
}

async fn source_rate(deployment: &mut Deployment, count: usize) -> anyhow::Result<f64> {
    deployment.start_role("source").await?;
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
    let seconds = (run.finished_at.unwrap().micros() - run.started_at.micros()) as f64 / 1e6;
    Ok(count as f64 / seconds)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let Some(count) = hunter_e2e::bench::start("source", "HUNTER_BENCH_REFERRALS", 20_000)? else {
        return Ok(()); // `cargo test --benches` only lists
    };
    let referrals = generated_referrals(count, 1)?;
    // A broker of the bench's own, deleted afterwards (not the shared stack's).
    let broker = hunter_e2e::bench::broker().await?;
    let (mut api, mut broker_rates, mut source) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=3 {
        let mut deployment = Deployment::new(&referrals)?;
        deployment.use_broker(&broker.brokers());
        deployment.start_simulator(&["--page-size", "100"]).await?;
        deployment.login_and_migrate()?;
        api.push(api_ceiling(&deployment, count).await?);
        source.push(source_rate(&mut deployment, count).await?);
        // The broker ceiling writes to this round's referral topic after the source is done.
        broker_rates.push(broker_ceiling(&deployment, &referrals).await?);
        eprintln!(
            "round {round}: api {:.0}/s, broker {:.0}/s, source {:.0}/s",
            api[round - 1],
            broker_rates[round - 1],
            source[round - 1]
        );
        deployment.teardown().await;
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
    let source = report.row(
        "hunter source (first poll)",
        "referrals/s",
        RowKind::Hunter,
        &source,
    );
    report.ratio("source / min(ceilings)", source / api.min(broker), None);
    println!("source bench, {count} referrals, median of 3:");
    println!("  api ceiling (read pages only)     {api:>10.0} referrals/s");
    println!("  broker ceiling (produce, acks=all) {broker:>9.0} referrals/s");
    println!("  hunter source (first poll)        {source:>10.0} referrals/s");
    println!(
        "  source / min(ceilings)            {:>10.2}",
        source / api.min(broker)
    );
    report.print();
    Ok(())
}
