//! Sink throughput against `clickhouse-client` inserting the same rows, in the same run.
//!
//! `cargo bench -p hunter-e2e --bench sink` with the local stack up, its settings in the
//! environment and `HUNTER_BIN` naming a release build (see BENCHMARKS.md); `tests/bench.sh`
//! runs it with the others. The broker is one of the bench's own (`bench::broker`).
//!
//! N leads (default 1,000,000; `HUNTER_BENCH_LEADS`) are loaded once into a fresh lead topic
//! (4 partitions, Avro as the processor writes them). Then, three times, median:
//! - broker: a plain rdkafka consumer reading the topic from the start in a new group (no
//!   decode, no insert): the most the broker gives any consumer;
//! - sink: `hunter run sink` into a fresh database until `leads` and `lead_history` hold N rows
//!   each (decode, rows, batches, two inserts per batch, offsets stored after each);
//! - ceiling: the very rows the sink wrote, dumped with `clickhouse-client … FORMAT RowBinary`,
//!   inserted into a fresh database by `clickhouse-client --query "INSERT INTO … FORMAT
//!   RowBinary" < file`, `leads` then `lead_history` (the sink's order): the most ClickHouse
//!   takes these rows over its native protocol.
//!
//! Every figure is leads per second (a lead is one row in each of the two tables). The sink's
//! CPU time (user + system, from /proc) gives its leads per CPU second too: what it could do
//! if the broker were not the limit.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hunter_clickhouse::Row;
use hunter_clickhouse::rows::{LeadHistoryRow, LeadRow};
use hunter_core::codec::Codec;
use hunter_core::records::{Ingest, Lead, Referral, Timestamp};
use hunter_e2e::bench::{Report, RowKind, cpu_seconds, micros_per_record};
use hunter_e2e::{ClickHouse, Deployment, generated_referrals, run_hunter, unique};
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};

/// The native port of the local stack's ClickHouse (deploy/local/stack.sh).
const NATIVE_PORT: &str = "19000";

/// Produces `count` distinct leads, built from a small generated set the way the processor
/// builds them, encoded and sent 2,000 at a time.
async fn load(brokers: &str, topic: &str, count: usize) -> anyhow::Result<()> {
    let base = generated_referrals(2_000, 3)?;
    let codec = Codec::<Lead>::new(topic, None);
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "20")
        .create()?;
    let mut sent = 0;
    while sent < count {
        let mut chunk = Vec::with_capacity(2_000);
        for i in sent..(sent + 2_000).min(count) {
            let mut raw = base[i % base.len()].clone();
            let id = format!("{:08x}-0000-4000-8000-{i:012}", i);
            raw["id"] = serde_json::json!(id);
            let ingest = Ingest {
                tenant: "bench".into(),
                fetched_at: Timestamp::now(),
                sync_run_id: "bench".into(),
            };
            let referral = Referral::from_api_json(&raw.to_string(), ingest)?;
            let lead = Lead::from_referral(&referral, Timestamp::now())?;
            chunk.push((lead.lead_id.clone(), codec.encode_single_object(&lead)?));
        }
        let sends = chunk.iter().map(|(key, payload)| {
            producer.send(
                FutureRecord::to(topic).key(key).payload(payload),
                Duration::from_secs(60),
            )
        });
        for result in futures::future::join_all(sends).await {
            result.map_err(|(error, _)| error)?;
        }
        sent += chunk.len();
    }
    Ok(())
}

/// Reads `count` messages of `topic` in a new group; leads per second from the first message.
async fn broker_ceiling(brokers: &str, topic: &str, count: usize) -> anyhow::Result<f64> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("bench-read"))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest");
    // The sink's fetch settings: the most the broker gives a consumer like the sink.
    for (key, value) in hunter_core::kafka::BULK_FETCH {
        config.set(*key, *value);
    }
    let consumer: StreamConsumer = config.create()?;
    consumer.subscribe(&[topic])?;
    let mut started = None;
    let mut bytes = 0usize;
    for _ in 0..count {
        let message = consumer.recv().await?;
        started.get_or_insert_with(Instant::now);
        bytes += rdkafka::Message::payload(&message).map_or(0, <[u8]>::len);
    }
    let elapsed = started.map(|s| s.elapsed()).unwrap_or_default();
    std::thread::spawn(move || drop(consumer));
    eprintln!("  broker: {count} messages, {} MB", bytes / 1_000_000);
    Ok(count as f64 / elapsed.as_secs_f64())
}

/// `leads` and `lead_history` row counts.
async fn counts(clickhouse: &ClickHouse) -> anyhow::Result<(u64, u64)> {
    let rows = clickhouse
        .rows("SELECT (SELECT count() FROM leads) AS leads, (SELECT count() FROM lead_history) AS history")
        .await?;
    let number = |field: &str| {
        rows[0][field]
            .as_str()
            .and_then(|n| n.parse().ok())
            .or(rows[0][field].as_u64())
            .unwrap_or(0)
    };
    Ok((number("leads"), number("history")))
}

/// Runs the sink until both tables hold `count` rows; leads per second from the first row,
/// the CPU seconds the sink process used and the broker's CPU seconds over the same time.
async fn sink(
    deployment: &mut Deployment,
    broker_pid: u32,
    count: usize,
) -> anyhow::Result<(f64, f64, f64)> {
    let broker_before = cpu_seconds(broker_pid)?;
    let index = deployment.start_role("sink").await?;
    let mut first: Option<(Instant, u64)> = None;
    let mut progress = (Instant::now(), 0);
    let rate = loop {
        let (leads, history) = counts(&deployment.clickhouse).await?;
        if leads > 0 && first.is_none() {
            first = Some((Instant::now(), leads));
        }
        if leads as usize >= count && history as usize >= count {
            let (at, base) = first.unwrap();
            break (leads - base) as f64 / at.elapsed().as_secs_f64();
        }
        if leads + history > progress.1 {
            progress = (Instant::now(), leads + history);
        }
        anyhow::ensure!(
            progress.0.elapsed() < Duration::from_secs(120),
            "the sink wrote nothing for 2 minutes ({leads} leads, {history} history rows)\n{}",
            deployment.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let cpu = cpu_seconds(deployment.process(index).pid())?;
    let broker_cpu = cpu_seconds(broker_pid)? - broker_before;
    deployment
        .process(index)
        .terminate(Duration::from_secs(30))?;
    Ok((rate, cpu, broker_cpu))
}

fn client(query: &str) -> Command {
    let mut command = Command::new("clickhouse-client");
    command.args([
        "--host",
        "127.0.0.1",
        "--port",
        NATIVE_PORT,
        "--query",
        query,
    ]);
    command
}

/// Dumps `table`'s `columns` of `from` to a RowBinary file, then times inserting it into `to`.
fn client_insert(
    from: &str,
    to: &str,
    table: &str,
    columns: &[&str],
    dir: &std::path::Path,
) -> anyhow::Result<Duration> {
    let columns = columns.join(", ");
    let file = dir.join(format!("{table}.rowbinary"));
    let status = client(&format!(
        "SELECT {columns} FROM {from}.{table} FORMAT RowBinary"
    ))
    .stdout(std::fs::File::create(&file)?)
    .status()?;
    anyhow::ensure!(status.success(), "clickhouse-client dump of {table} failed");
    let started = Instant::now();
    let status = client(&format!(
        "INSERT INTO {to}.{table} ({columns}) FORMAT RowBinary"
    ))
    .stdin(std::fs::File::open(&file)?)
    .stdout(Stdio::null())
    .status()?;
    let elapsed = started.elapsed();
    anyhow::ensure!(
        status.success(),
        "clickhouse-client insert into {table} failed"
    );
    eprintln!(
        "  ceiling: {table} {} MB of RowBinary in {elapsed:.2?}",
        std::fs::metadata(&file)?.len() / 1_000_000
    );
    std::fs::remove_file(&file)?;
    Ok(elapsed)
}

/// Points the deployment at a new database and migrates it.
fn fresh_database(deployment: &mut Deployment) -> anyhow::Result<String> {
    let database = unique("hunter_bench");
    deployment
        .env
        .insert("HUNTER_CLICKHOUSE_DATABASE".into(), database.clone());
    deployment.clickhouse = ClickHouse::new(&deployment.stack.clickhouse_url, &database);
    let (ok, output) = run_hunter(&["migrate"], &deployment.env, Duration::from_secs(60))?;
    anyhow::ensure!(ok, "{output}");
    Ok(database)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let Some(count) = hunter_e2e::bench::start("sink", "HUNTER_BENCH_LEADS", 1_000_000)? else {
        return Ok(()); // `cargo test --benches` only lists
    };

    // A broker of the bench's own, deleted afterwards (not the shared stack's).
    let broker = hunter_e2e::bench::broker().await?;
    let mut deployment = Deployment::new(&[])?;
    deployment.use_broker(&broker.brokers());
    if let Ok(rows) = std::env::var("HUNTER_SINK_BATCH_ROWS") {
        // A batch size to try (the default is the sink's own).
        deployment.env.insert("HUNTER_SINK_BATCH_ROWS".into(), rows);
    }
    // Creates the deployment's topics (hunter migrate does) and a first database.
    let mut databases = vec![fresh_database(&mut deployment)?];
    let topic = deployment.topics.leads.clone();
    let loading = Instant::now();
    load(&deployment.stack.brokers, &topic, count).await?;
    let load_rate = count as f64 / loading.elapsed().as_secs_f64();
    eprintln!(
        "loaded {count} leads in {:.1?} ({load_rate:.0}/s)",
        loading.elapsed()
    );
    let dir = tempfile::tempdir()?;
    let (mut brokers, mut sinks, mut ceilings) = (Vec::new(), Vec::new(), Vec::new());
    let mut sink_capacities = Vec::new();
    let (mut sink_micros, mut broker_micros) = (Vec::new(), Vec::new());
    let baseline = hunter_e2e::bench::baseline_bin();
    let (mut baseline_rates, mut baseline_micros) = (Vec::new(), Vec::new());
    let broker_pid = broker.pid().context("the bench's broker is not running")?;
    for round in 1..=3 {
        // With a baseline build: its sink reads the same topic into a database of its own,
        // before this build's in odd rounds and after it in even ones.
        let baseline_sink = async |deployment: &mut Deployment,
                                   databases: &mut Vec<String>,
                                   rates: &mut Vec<f64>,
                                   micros: &mut Vec<f64>|
               -> anyhow::Result<()> {
            let Some(bin) = &baseline else {
                return Ok(());
            };
            reset_group(deployment, &topic)?;
            databases.push(fresh_database(deployment)?);
            deployment.env.insert("HUNTER_BIN".into(), bin.clone());
            let result = sink(deployment, broker_pid, count).await;
            deployment.env.remove("HUNTER_BIN");
            let (rate, cpu, _) = result?;
            eprintln!(
                "  baseline build: sink {rate:.0}/s, {:.1} µs CPU per lead",
                micros_per_record(cpu, count)
            );
            rates.push(rate);
            micros.push(micros_per_record(cpu, count));
            Ok(())
        };
        if round % 2 == 1 {
            baseline_sink(
                &mut deployment,
                &mut databases,
                &mut baseline_rates,
                &mut baseline_micros,
            )
            .await?;
        }
        brokers.push(broker_ceiling(&deployment.stack.brokers, &topic, count).await?);

        // The sink's group starts from the beginning in each round: a fresh prefix for groups
        // only would need a setting, so the committed offsets of the last round are reset.
        if round > 1 || baseline.is_some() {
            reset_group(&deployment, &topic)?;
        }
        let sink_database = if round == 1 && baseline.is_none() {
            databases[0].clone()
        } else {
            let database = fresh_database(&mut deployment)?;
            databases.push(database.clone());
            database
        };
        let (rate, cpu, broker_cpu) = sink(&mut deployment, broker_pid, count).await?;
        sinks.push(rate);
        sink_capacities.push(count as f64 / cpu);
        sink_micros.push(micros_per_record(cpu, count));
        broker_micros.push(micros_per_record(broker_cpu, count));

        let ceiling_database = fresh_database(&mut deployment)?;
        databases.push(ceiling_database.clone());
        let elapsed = client_insert(
            &sink_database,
            &ceiling_database,
            "leads",
            LeadRow::COLUMN_NAMES,
            dir.path(),
        )? + client_insert(
            &sink_database,
            &ceiling_database,
            "lead_history",
            LeadHistoryRow::COLUMN_NAMES,
            dir.path(),
        )?;
        let (leads, history) = counts(&deployment.clickhouse).await?;
        anyhow::ensure!(
            leads as usize == count && history as usize == count,
            "the ceiling wrote {leads} leads and {history} history rows, wanted {count}"
        );
        ceilings.push(count as f64 / elapsed.as_secs_f64());
        eprintln!(
            "round {round}: broker {:.0}/s, sink {:.0}/s ({:.1} µs CPU per lead, broker {:.1}), clickhouse-client {:.0}/s",
            brokers[round - 1],
            sinks[round - 1],
            sink_micros[round - 1],
            broker_micros[round - 1],
            ceilings[round - 1]
        );
        if round % 2 == 0 {
            baseline_sink(
                &mut deployment,
                &mut databases,
                &mut baseline_rates,
                &mut baseline_micros,
            )
            .await?;
        }
    }
    for database in &databases {
        ClickHouse::new(&deployment.stack.clickhouse_url, database)
            .drop_database()
            .await;
    }
    deployment.teardown().await;
    drop(broker);

    let mut report = Report::new("sink", count, "leads");
    let broker = report.row(
        "broker read: rdkafka consumer, the sink's fetch settings, no decode, no insert",
        "leads/s",
        RowKind::Ceiling,
        &brokers,
    );
    let ceiling = report.row(
        "ClickHouse ceiling: `clickhouse-client` RowBinary inserts of the same rows",
        "leads/s",
        RowKind::Ceiling,
        &ceilings,
    );
    let sink = report.row("hunter sink", "leads/s", RowKind::Hunter, &sinks);
    let capacity = report.row(
        "sink leads per CPU second of the sink process (user + system)",
        "leads/CPU s",
        RowKind::Info,
        &sink_capacities,
    );
    let micros = report.row(
        "hunter sink: CPU per lead (user + system of the process, start to the Nth row)",
        "µs CPU/record",
        RowKind::Hunter,
        &sink_micros,
    );
    report.row(
        "broker (tansu) CPU per lead while the sink ran",
        "µs CPU/record",
        RowKind::Info,
        &broker_micros,
    );
    let mut baseline_cpu = None;
    if !baseline_rates.is_empty() {
        report.row(
            "baseline build, same run: sink",
            "leads/s",
            RowKind::Info,
            &baseline_rates,
        );
        baseline_cpu = Some(report.row(
            "baseline build, same run: sink CPU per lead",
            "µs CPU/record",
            RowKind::Info,
            &baseline_micros,
        ));
    }
    report.row(
        "loading the lead topic",
        "leads/s",
        RowKind::Info,
        &[load_rate],
    );
    report.ratio("sink / ClickHouse ceiling", sink / ceiling, Some(">= 0.50"));
    report.ratio("sink / broker read", sink / broker, None);
    report.ratio("sink µs CPU per lead", micros, Some("<= 10"));
    if let Some(base) = baseline_cpu {
        report.ratio("sink CPU per lead / baseline build's", micros / base, None);
        report.note(&format!(
            "baseline build: `{}`, run in the same rounds on the same topic (order alternating)",
            baseline.as_deref().unwrap_or_default()
        ));
    }
    println!("sink bench, {count} leads, median of 3:");
    println!("  broker read (no decode, no insert)     {broker:>9.0} leads/s");
    println!("  clickhouse-client RowBinary (ceiling)  {ceiling:>9.0} leads/s");
    println!("  hunter sink                            {sink:>9.0} leads/s");
    println!("  hunter sink per CPU second             {capacity:>9.0} leads");
    println!(
        "  sink / clickhouse-client               {:>9.2}",
        sink / ceiling
    );
    println!(
        "  sink / broker read                     {:>9.2}",
        sink / broker
    );
    report.print();
    Ok(())
}

/// Commits the low watermark of every partition for the sink's lead group, so the next sink
/// reads the topic from the start. The group has no member then (the last sink stopped).
fn reset_group(deployment: &Deployment, topic: &str) -> anyhow::Result<()> {
    use rdkafka::consumer::BaseConsumer;
    use rdkafka::{Offset, TopicPartitionList};
    let group = format!("{}hunter-sink-leads", deployment.prefix);
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &deployment.stack.brokers)
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut offsets = TopicPartitionList::new();
    for partition in metadata.topics()[0].partitions() {
        let (low, _) = consumer.fetch_watermarks(topic, partition.id(), Duration::from_secs(10))?;
        offsets.add_partition_offset(topic, partition.id(), Offset::Offset(low))?;
    }
    consumer.commit(&offsets, rdkafka::consumer::CommitMode::Sync)?;
    std::thread::spawn(move || drop(consumer));
    Ok(())
}
