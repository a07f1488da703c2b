//! Processor throughput against a pass-through relay on the same data and broker.
//!
//! `cargo bench -p hunter-e2e --bench processor` with the local stack up, its settings in the
//! environment and `HUNTER_BIN` naming a release build (see BENCHMARKS.md).
//!
//! N referrals (default 200,000; `HUNTER_BENCH_REFERRALS`) are loaded into a fresh referral
//! topic (4 partitions), then, three times, median:
//! - relay: an rdkafka consumer → producer pass-through (no decode, no logic; offsets stored
//!   after each acknowledgement, like the processor), into a topic of its own;
//! - processor: `hunter run process` (decode, dedupe, enrich without DNS, encode, produce,
//!   acknowledge) until the lead topic holds N leads.

use std::time::{Duration, Instant};

use futures::stream::{FuturesOrdered, StreamExt};
use hunter_core::codec::Codec;
use hunter_core::records::{Ingest, Referral, Timestamp};
use hunter_e2e::bench::median;
use hunter_e2e::{Deployment, generated_referrals, run_hunter};
use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};

/// N distinct referral records, pre-encoded, built from a small generated set.
fn records(count: usize) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let base = generated_referrals(2_000, 1)?;
    let codec = Codec::<Referral>::new("bench", None);
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let mut raw = base[i % base.len()].clone();
        let id = format!("{:08x}-0000-4000-8000-{i:012}", i);
        raw["id"] = serde_json::json!(id);
        let ingest = Ingest {
            tenant: "bench".into(),
            fetched_at: Timestamp::now(),
            sync_run_id: "bench".into(),
        };
        let referral = Referral::from_api_json(&raw.to_string(), ingest)?;
        out.push((id, codec.encode_single_object(&referral)?));
    }
    Ok(out)
}

async fn load(brokers: &str, topic: &str, records: &[(String, Vec<u8>)]) -> anyhow::Result<()> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "20")
        .create()?;
    for chunk in records.chunks(2_000) {
        let sends = chunk.iter().map(|(key, payload)| {
            producer.send(
                FutureRecord::to(topic).key(key).payload(payload),
                Duration::from_secs(60),
            )
        });
        for result in futures::future::join_all(sends).await {
            result.map_err(|(error, _)| error)?;
        }
    }
    Ok(())
}

async fn relay(brokers: &str, from: &str, to: &str, count: usize) -> anyhow::Result<f64> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    admin
        .create_topics(
            [&NewTopic::new(to, 4, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await?;
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("{to}-relay"))
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .create()?;
    consumer.subscribe(&[from])?;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("partitioner", "murmur2_random")
        .create()?;
    let mut in_flight = FuturesOrdered::new();
    let mut done = 0usize;
    let mut started = None;
    while done < count {
        tokio::select! {
            Some((partition, offset, result)) = in_flight.next() => {
                let result: Result<_, (rdkafka::error::KafkaError, _)> = result;
                result.map_err(|(error, _)| error)?;
                consumer.store_offset(from, partition, offset)?;
                done += 1;
            }
            message = consumer.recv(), if in_flight.len() < 5_000 => {
                let message = message?;
                started.get_or_insert_with(Instant::now);
                let (partition, offset) = (message.partition(), message.offset());
                let key = message.key().unwrap_or_default().to_vec();
                let payload = message.payload().unwrap_or_default().to_vec();
                let producer = producer.clone();
                let to = to.to_owned();
                in_flight.push_back(async move {
                    let result = producer.send(FutureRecord::to(&to).key(&key).payload(&payload), Duration::from_secs(60)).await;
                    (partition, offset, result)
                });
            }
        }
    }
    let elapsed = started.map(|s| s.elapsed()).unwrap_or_default();
    std::thread::spawn(move || drop(consumer));
    Ok(count as f64 / elapsed.as_secs_f64())
}

async fn processor(deployment: &mut Deployment, count: usize) -> anyhow::Result<f64> {
    deployment.start_role("process").await?;
    let mut first: Option<(Instant, i64)> = None;
    let deadline = Instant::now() + Duration::from_secs(3_600);
    loop {
        let produced = deployment.topic_count("hunter.leads.v1")?;
        if produced > 0 && first.is_none() {
            first = Some((Instant::now(), produced));
        }
        if produced as usize >= count {
            let (at, base) = first.unwrap();
            return Ok((produced - base) as f64 / at.elapsed().as_secs_f64());
        }
        anyhow::ensure!(Instant::now() < deadline, "the processor did not finish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let Some(count) = hunter_e2e::bench::start("processor", "HUNTER_BENCH_REFERRALS", 200_000)?
    else {
        return Ok(()); // `cargo test --benches` only lists
    };
    let records = records(count)?;
    let (mut relays, mut processors) = (Vec::new(), Vec::new());
    for round in 1..=3 {
        let mut deployment = Deployment::new(&[])?;
        let (ok, output) = run_hunter(&["migrate"], &deployment.env, Duration::from_secs(60))?;
        anyhow::ensure!(ok, "{output}");
        let input = deployment.topic("partner-center.referrals.v1");
        let loading = Instant::now();
        load(&deployment.stack.brokers, &input, &records).await?;
        let load_rate = count as f64 / loading.elapsed().as_secs_f64();
        relays.push(
            relay(
                &deployment.stack.brokers,
                &input,
                &deployment.topic("relay"),
                count,
            )
            .await?,
        );
        processors.push(processor(&mut deployment, count).await?);
        eprintln!(
            "round {round}: load {load_rate:.0}/s, relay {:.0}/s, processor {:.0}/s",
            relays[round - 1],
            processors[round - 1]
        );
        deployment.teardown().await;
    }
    let (relay, processor) = (median(relays), median(processors));
    println!("processor bench, {count} referrals, median of 3:");
    println!("  relay (consume + produce, no decode)  {relay:>8.0} records/s");
    println!("  hunter processor                      {processor:>8.0} records/s");
    println!(
        "  processor / relay                     {:>8.2}",
        processor / relay
    );
    Ok(())
}
