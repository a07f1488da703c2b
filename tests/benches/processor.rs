//! Processor throughput against a pass-through relay on the same data and broker.
//!
//! `cargo bench -p hunter-e2e --bench processor` with the local stack up, its settings in the
//! environment and `HUNTER_BIN` naming a release build (see BENCHMARKS.md); `tests/bench.sh`
//! runs it with the others.
//!
//! Three rounds, median, each on a broker of its own (`bench::broker`, deleted after the round):
//! N referrals (default 200,000; `HUNTER_BENCH_REFERRALS`) are loaded into a fresh referral
//! topic (4 partitions), then:
//! - relay: an rdkafka consumer → producer pass-through (no decode, no logic; offsets stored
//!   after each acknowledgement, like the processor), into a topic of its own;
//! - processor: `hunter run process` (decode, dedupe, enrich without DNS, encode, produce,
//!   acknowledge) until the lead topic holds N leads.

use std::time::{Duration, Instant};

use hunter_core::codec::Codec;
use hunter_core::records::{Ingest, Referral, Timestamp};
use hunter_e2e::bench::{Report, RowKind, relay};
use hunter_e2e::{Deployment, generated_referrals, run_hunter};
use rdkafka::ClientConfig;
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

async fn processor(deployment: &mut Deployment, count: usize) -> anyhow::Result<f64> {
    deployment.start_role("process").await?;
    let mut first: Option<(Instant, i64)> = None;
    let deadline = Instant::now() + Duration::from_secs(3_600);
    loop {
        let produced = deployment.topic_count(&deployment.topics.leads)?;
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
    let (mut loads, mut relays, mut processors) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=3 {
        // A broker of its own per round: about 4 kB per referral stay on its disk three times
        // over (input, relay copy, leads), deleted with it.
        let broker = hunter_e2e::bench::broker().await?;
        let mut deployment = Deployment::new(&[])?;
        deployment.use_broker(&broker.brokers());
        let (ok, output) = run_hunter(&["migrate"], &deployment.env, Duration::from_secs(60))?;
        anyhow::ensure!(ok, "{output}");
        let input = deployment.topics.referrals.clone();
        let loading = Instant::now();
        load(&broker.brokers(), &input, &records).await?;
        loads.push(count as f64 / loading.elapsed().as_secs_f64());
        let relay = relay(
            &broker.brokers(),
            &input,
            &deployment.topic("relay"),
            4,
            count,
        )
        .await?;
        relays.push(count as f64 / relay.as_secs_f64());
        processors.push(processor(&mut deployment, count).await?);
        eprintln!(
            "round {round}: load {:.0}/s, relay {:.0}/s, processor {:.0}/s, broker storage {} MB",
            loads[round - 1],
            relays[round - 1],
            processors[round - 1],
            broker.disk_bytes() / 1_000_000
        );
        deployment.teardown().await;
    }
    let mut report = Report::new("processor", count, "referrals");
    let relay = report.row(
        "relay: rdkafka consumer → producer, acks=all, no decode (ceiling)",
        "records/s",
        RowKind::Ceiling,
        &relays,
    );
    let processor = report.row(
        "hunter processor",
        "records/s",
        RowKind::Hunter,
        &processors,
    );
    report.row(
        "loading the input topic (rdkafka producer)",
        "records/s",
        RowKind::Info,
        &loads,
    );
    report.ratio("processor / relay", processor / relay, Some(">= 0.70"));
    println!("processor bench, {count} referrals, median of 3:");
    println!("  relay (consume + produce, no decode)  {relay:>8.0} records/s");
    println!("  hunter processor                      {processor:>8.0} records/s");
    println!(
        "  processor / relay                     {:>8.2}",
        processor / relay
    );
    report.print();
    Ok(())
}
