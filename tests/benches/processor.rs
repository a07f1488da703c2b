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
//!   acknowledge; `HUNTER_SINK_REFERRALS_WRITER=sink`, so without the `referrals` table) until
//!   the lead topic holds N leads; its CPU (user + system from /proc) per referral, and the
//!   broker's over the same time.
//!
//! With `HUNTER_BENCH_BASELINE_BIN` (another release build, e.g. `main`'s), each round also runs
//! that build's processor on the same records in topics of its own, order alternating.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use hunter_core::codec::Codec;
use hunter_core::records::{Ingest, Referral, Timestamp};
use hunter_e2e::bench::{Report, RowKind, cpu_seconds, micros_per_record, relay};
use hunter_e2e::{Deployment, OwnBroker, generated_referrals, run_hunter};
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

/// One processor run: its rate (from its first lead to its Nth), its CPU seconds (user +
/// system, start to the Nth lead, dedupe rebuild included) and the broker's CPU seconds over the
/// same time. The processor is stopped afterwards, so it takes no CPU from what runs next.
struct Run {
    rate: f64,
    cpu: f64,
    broker_cpu: f64,
}

async fn processor(
    deployment: &mut Deployment,
    broker: &OwnBroker,
    count: usize,
) -> anyhow::Result<Run> {
    let broker_pid = broker.pid().context("the bench's broker is not running")?;
    let broker_before = cpu_seconds(broker_pid)?;
    let index = deployment.start_role("process").await?;
    let mut first: Option<(Instant, i64)> = None;
    let deadline = Instant::now() + Duration::from_secs(3_600);
    loop {
        let produced = deployment.topic_count(&deployment.topics.leads)?;
        if produced > 0 && first.is_none() {
            first = Some((Instant::now(), produced));
        }
        if produced as usize >= count {
            let (at, base) = first.unwrap();
            let rate = (produced - base) as f64 / at.elapsed().as_secs_f64();
            let cpu = cpu_seconds(deployment.process(index).pid())?;
            let broker_cpu = cpu_seconds(broker_pid)? - broker_before;
            deployment
                .process(index)
                .terminate(Duration::from_secs(30))?;
            return Ok(Run {
                rate,
                cpu,
                broker_cpu,
            });
        }
        anyhow::ensure!(Instant::now() < deadline, "the processor did not finish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A deployment on `broker` with its topics created and `records` loaded into its referral
/// topic; `bin` names the `hunter` it runs (`None`: `HUNTER_BIN`). Returns the load rate too.
async fn prepared(
    broker: &OwnBroker,
    bin: Option<&str>,
    records: &[(String, Vec<u8>)],
) -> anyhow::Result<(Deployment, f64)> {
    let mut deployment = Deployment::new(&[])?;
    deployment.use_broker(&broker.brokers());
    if let Some(bin) = bin {
        deployment.env.insert("HUNTER_BIN".into(), bin.to_owned());
    }
    // The processor's own work, as before 2026-12-02: without the `referrals` table, which the
    // processor writes in a new deployment (the peer and end-to-end benches measure that).
    deployment
        .env
        .insert("HUNTER_SINK_REFERRALS_WRITER".into(), "sink".into());
    let (ok, output) = run_hunter(&["migrate"], &deployment.env, Duration::from_secs(60))?;
    anyhow::ensure!(ok, "{output}");
    let loading = Instant::now();
    load(&broker.brokers(), &deployment.topics.referrals, records).await?;
    let rate = records.len() as f64 / loading.elapsed().as_secs_f64();
    Ok((deployment, rate))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let Some(count) = hunter_e2e::bench::start("processor", "HUNTER_BENCH_REFERRALS", 200_000)?
    else {
        return Ok(()); // `cargo test --benches` only lists
    };
    let baseline = hunter_e2e::bench::baseline_bin();
    let records = records(count)?;
    let (mut loads, mut relays, mut relay_micros) = (Vec::new(), Vec::new(), Vec::new());
    let (mut runs, mut baseline_runs) = (Vec::new(), Vec::new());
    for round in 1..=3 {
        // A broker of its own per round: about 4 kB per referral stay on its disk three times
        // over (input, relay copy, leads), deleted with it.
        let broker = hunter_e2e::bench::broker().await?;
        let (mut deployment, load_rate) = prepared(&broker, None, &records).await?;
        loads.push(load_rate);
        // The relay runs in this process, which does nothing else meanwhile: its CPU over the
        // relay is what a bare rdkafka consume → produce of these records costs here.
        let cpu_before = cpu_seconds(std::process::id())?;
        let relay = relay(
            &broker.brokers(),
            &deployment.topics.referrals,
            &deployment.topic("relay"),
            4,
            count,
        )
        .await?;
        relays.push(count as f64 / relay.as_secs_f64());
        relay_micros.push(micros_per_record(
            cpu_seconds(std::process::id())? - cpu_before,
            count,
        ));
        // With a baseline build: the same records in topics of its own on the same broker, and
        // the two processors one after the other, the baseline first in odd rounds.
        let mut other = match &baseline {
            Some(bin) => Some(prepared(&broker, Some(bin), &records).await?.0),
            None => None,
        };
        if let Some(other) = other.as_mut().filter(|_| round % 2 == 1) {
            baseline_runs.push(processor(other, &broker, count).await?);
        }
        runs.push(processor(&mut deployment, &broker, count).await?);
        if let Some(other) = other.as_mut().filter(|_| round % 2 == 0) {
            baseline_runs.push(processor(other, &broker, count).await?);
        }
        let run = &runs[round - 1];
        eprintln!(
            "round {round}: load {:.0}/s, relay {:.0}/s ({:.1} µs CPU per record), processor {:.0}/s, {:.1} µs CPU per referral (broker {:.1}), broker storage {} MB",
            loads[round - 1],
            relays[round - 1],
            relay_micros[round - 1],
            run.rate,
            micros_per_record(run.cpu, count),
            micros_per_record(run.broker_cpu, count),
            broker.disk_bytes() / 1_000_000
        );
        if let Some(base) = baseline_runs.last() {
            eprintln!(
                "  baseline build: processor {:.0}/s, {:.1} µs CPU per referral (broker {:.1})",
                base.rate,
                micros_per_record(base.cpu, count),
                micros_per_record(base.broker_cpu, count),
            );
        }
        if let Some(other) = other {
            other.teardown().await;
        }
        deployment.teardown().await;
    }
    let mut report = Report::new("processor", count, "referrals");
    let relay = report.row(
        "relay: rdkafka consumer → producer, acks=all, no decode (ceiling)",
        "records/s",
        RowKind::Ceiling,
        &relays,
    );
    let rates: Vec<f64> = runs.iter().map(|run| run.rate).collect();
    let processor = report.row("hunter processor", "records/s", RowKind::Hunter, &rates);
    let micros: Vec<f64> = runs
        .iter()
        .map(|run| micros_per_record(run.cpu, count))
        .collect();
    let cpu = report.row(
        "hunter processor: CPU per referral (user + system of the process, start to the Nth lead)",
        "µs CPU/record",
        RowKind::Hunter,
        &micros,
    );
    let relay_cpu = report.row(
        "relay CPU per record (the bench process while it relays: rdkafka consume → produce, no decode)",
        "µs CPU/record",
        RowKind::Info,
        &relay_micros,
    );
    let broker_micros: Vec<f64> = runs
        .iter()
        .map(|run| micros_per_record(run.broker_cpu, count))
        .collect();
    report.row(
        "broker (tansu) CPU per referral while the processor ran",
        "µs CPU/record",
        RowKind::Info,
        &broker_micros,
    );
    let mut baseline_cpu = None;
    if !baseline_runs.is_empty() {
        let rates: Vec<f64> = baseline_runs.iter().map(|run| run.rate).collect();
        report.row(
            "baseline build, same run: processor",
            "records/s",
            RowKind::Info,
            &rates,
        );
        let micros: Vec<f64> = baseline_runs
            .iter()
            .map(|run| micros_per_record(run.cpu, count))
            .collect();
        baseline_cpu = Some(report.row(
            "baseline build, same run: processor CPU per referral",
            "µs CPU/record",
            RowKind::Info,
            &micros,
        ));
        let broker_micros: Vec<f64> = baseline_runs
            .iter()
            .map(|run| micros_per_record(run.broker_cpu, count))
            .collect();
        report.row(
            "baseline build, same run: broker (tansu) CPU per referral",
            "µs CPU/record",
            RowKind::Info,
            &broker_micros,
        );
    }
    report.row(
        "loading the input topic (rdkafka producer)",
        "records/s",
        RowKind::Info,
        &loads,
    );
    report.ratio("processor / relay", processor / relay, Some(">= 0.70"));
    report.ratio("processor µs CPU per referral", cpu, Some("<= 40"));
    report.ratio(
        "processor µs CPU per referral beyond the relay's per record",
        cpu - relay_cpu,
        None,
    );
    if let Some(base) = baseline_cpu {
        report.ratio(
            "processor CPU per referral / baseline build's",
            cpu / base,
            None,
        );
        report.note(&format!(
            "baseline build: `{}`, run in the same rounds on the same broker (order alternating)",
            baseline.as_deref().unwrap_or_default()
        ));
    }
    println!("processor bench, {count} referrals, median of 3:");
    println!("  relay (consume + produce, no decode)  {relay:>8.0} records/s");
    println!("  hunter processor                      {processor:>8.0} records/s");
    println!("  hunter processor CPU per referral     {cpu:>8.1} µs");
    println!(
        "  processor / relay                     {:>8.2}",
        processor / relay
    );
    report.print();
    Ok(())
}
