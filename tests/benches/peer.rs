//! Hunter's processor and sink against the Python peer a user would write instead, on the same
//! broker, the same records, in the same round.
//!
//! `cargo bench -p hunter-e2e --bench peer` with the local stack up, its settings in the
//! environment, `HUNTER_BIN` naming a release build and the peer's venv installed
//! (`tests/peer/install.sh`, which `tests/bench.sh` runs); `tests/bench.sh --only peer` does all
//! of that.
//!
//! Three rounds, median, each on a broker of its own (`bench::broker`): N distinct referrals
//! (default 100,000; `HUNTER_BENCH_REFERRALS`) and one redelivery of every 20th (the same record
//! again, a little later in the topic) are loaded into a fresh referral topic, then, in an order
//! that turns from round to round:
//! - hunter: `hunter run process` and `hunter run sink` (release, production defaults: the
//!   processor writes `referrals`; MX lookups to a closed local port), timed from their start to
//!   the moment `leads` holds N rows and `referrals` N distinct referrals;
//! - baseline, hunter as before 2026-12-02: the same with `HUNTER_SINK_REFERRALS_WRITER=sink`
//!   (the sink reads the referral topic a second time for `referrals`), on a copy of the topic;
//! - python: `tests/peer/peer.py` (confluent-kafka, fastavro, a dict for dedupe, JSONEachRow
//!   inserts over HTTP, one process), timed from its start to the moment its table holds N rows.
//!
//! CPU is user + system from /proc when the Nth row is there (processor + sink for Hunter, the
//! one process for the peer). Both are held to being right before their figures count: the peer's
//! table ends with exactly the N distinct referrals (once its group committed every record, the
//! redeliveries included), Hunter's `leads` (FINAL) too.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hunter_core::codec::Codec;
use hunter_core::records::{Ingest, Referral, Timestamp};
use hunter_e2e::bench::{Report, RowKind, cpu_seconds};
use hunter_e2e::{Deployment, free_port, generated_referrals, run_hunter};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

/// What one side measured in one round.
#[derive(Debug, Clone, Copy, Default)]
struct Side {
    seconds: f64,
    cpu: f64,
    /// The broker's CPU (user + system) over the side's run.
    broker_cpu: f64,
}

/// A record's key and payload.
type Keyed = (String, Vec<u8>);

/// The topic's records: N distinct referrals, pre-encoded, and every 20th sent once more ten
/// records later (a redelivery both sides must drop). Returns (records, mean bytes).
fn records(count: usize) -> anyhow::Result<(Vec<Keyed>, f64)> {
    let base = generated_referrals(2_000.min(count.max(1)), 1)?;
    let codec = Codec::<Referral>::new("bench", None);
    let mut distinct = Vec::with_capacity(count);
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
        distinct.push((id, codec.encode_single_object(&referral)?));
    }
    let bytes = distinct.iter().map(|(_, p)| p.len()).sum::<usize>() as f64 / count as f64;
    let mut out = Vec::with_capacity(count + count / 20);
    for (i, record) in distinct.iter().enumerate() {
        out.push(record.clone());
        if i >= 10 && i % 20 == 0 {
            out.push(distinct[i - 10].clone());
        }
    }
    Ok((out, bytes))
}

async fn load(brokers: &str, topic: &str, records: &[Keyed]) -> anyhow::Result<()> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
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

async fn count_rows(deployment: &Deployment, sql: &str) -> anyhow::Result<u64> {
    let rows = deployment.clickhouse.rows(sql).await?;
    Ok(rows[0]["n"].as_str().unwrap_or("0").parse()?)
}

/// Waits until `sql` counts at least `count`; returns when that was seen.
async fn wait_for_rows(
    deployment: &Deployment,
    sql: &str,
    count: u64,
    what: &str,
) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + Duration::from_secs(3_600);
    loop {
        // A table not there yet (the peer creates its own) counts as empty.
        if count_rows(deployment, sql).await.unwrap_or(0) >= count {
            return Ok(Instant::now());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{what} did not write {count} rows"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `writer`: who writes `referrals` (`HUNTER_SINK_REFERRALS_WRITER`).
async fn hunter(
    deployment: &mut Deployment,
    count: usize,
    writer: &str,
    broker_pid: u32,
) -> anyhow::Result<Side> {
    deployment
        .env
        .insert("HUNTER_SINK_REFERRALS_WRITER".into(), writer.into());
    let broker_before = cpu_seconds(broker_pid)?;
    let started = Instant::now();
    let process = deployment.start_role_on("process", free_port()).await?;
    let sink = deployment.start_role_on("sink", free_port()).await?;
    let sql = "SELECT toString(count()) AS n FROM leads";
    wait_for_rows(deployment, sql, count as u64, "hunter").await?;
    // And every referral in `referrals`, whoever writes it.
    let sql = "SELECT toString(uniqExact(referral_id)) AS n FROM referrals";
    let done = wait_for_rows(deployment, sql, count as u64, "hunter's referrals").await?;
    let cpu = cpu_seconds(deployment.process(process).pid())?
        + cpu_seconds(deployment.process(sink).pid())?;
    let broker_cpu = cpu_seconds(broker_pid)? - broker_before;
    let seconds = done.duration_since(started).as_secs_f64();
    let leads = count_rows(deployment, "SELECT toString(count()) AS n FROM leads FINAL").await?;
    anyhow::ensure!(
        leads == count as u64,
        "hunter's leads hold {leads} distinct leads, not {count}"
    );
    deployment.process(process).kill9();
    deployment.process(sink).kill9();
    Ok(Side {
        seconds,
        cpu,
        broker_cpu,
    })
}

/// The peer's process, killed when dropped (a failed round leaves nothing running).
struct Peer(Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

async fn python(
    deployment: &Deployment,
    count: usize,
    total: usize,
    broker_pid: u32,
) -> anyhow::Result<Side> {
    let broker_before = cpu_seconds(broker_pid)?;
    let root = repo();
    let python = root.join(".local/peer-venv/bin/python");
    anyhow::ensure!(
        python.exists(),
        "{} is missing: run tests/peer/install.sh (tests/bench.sh does)",
        python.display()
    );
    let table = "peer_referrals";
    let log = deployment.dir.path().join("peer.log");
    let started = Instant::now();
    let child = Command::new(&python)
        .arg(root.join("tests/peer/peer.py"))
        .args(["--brokers", &deployment.env["HUNTER_KAFKA_BROKERS"]])
        .args(["--topic", &deployment.topics.referrals])
        .args(["--group", &format!("{}python-peer", deployment.prefix)])
        .arg("--schema")
        .arg(root.join("schemas/referral.avsc"))
        .args(["--clickhouse", &deployment.stack.clickhouse_url])
        .args(["--database", &deployment.env["HUNTER_CLICKHOUSE_DATABASE"]])
        .args(["--table", table])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log)?)
        .stderr(std::fs::File::create(log.with_extension("err"))?)
        .spawn()?;
    let mut peer = Peer(child);
    let sql = format!("SELECT toString(count()) AS n FROM {table}");
    let done = wait_for_rows(deployment, &sql, count as u64, "the python peer").await?;
    let cpu = cpu_seconds(peer.0.id())?;
    let broker_cpu = cpu_seconds(broker_pid)? - broker_before;
    let seconds = done.duration_since(started).as_secs_f64();
    // Right only once every record, the redeliveries included, is behind it.
    let deadline = Instant::now() + Duration::from_secs(120);
    while deployment.committed_records("python-peer", &deployment.topics.referrals)? < total as i64
    {
        if let Some(status) = peer.0.try_wait()? {
            anyhow::bail!(
                "the python peer exited ({status}): {}",
                std::fs::read_to_string(log.with_extension("err")).unwrap_or_default()
            );
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the python peer did not commit all {total} records"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rows = count_rows(deployment, &sql).await?;
    let distinct = count_rows(
        deployment,
        &format!("SELECT toString(uniqExact(referral_id)) AS n FROM {table}"),
    )
    .await?;
    anyhow::ensure!(
        rows == count as u64 && distinct == count as u64,
        "the python peer's table holds {rows} rows of {distinct} referrals, not {count}"
    );
    Command::new("kill")
        .args(["-TERM", &peer.0.id().to_string()])
        .status()?;
    let _ = peer.0.wait();
    Ok(Side {
        seconds,
        cpu,
        broker_cpu,
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let Some(count) = hunter_e2e::bench::start("peer", "HUNTER_BENCH_REFERRALS", 100_000)? else {
        return Ok(()); // `cargo test --benches` only lists
    };
    let (records, bytes) = records(count)?;
    let total = records.len();
    let (mut hunters, mut seconds, mut peers) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=3 {
        let broker = hunter_e2e::bench::broker().await?;
        let mut deployment = Deployment::new(&[])?;
        deployment.use_broker(&broker.brokers());
        let (ok, output) = run_hunter(&["migrate"], &deployment.env, Duration::from_secs(60))?;
        anyhow::ensure!(ok, "{output}");
        load(&broker.brokers(), &deployment.topics.referrals, &records).await?;
        // Hunter as it ran before 2026-12-02 (the sink reads the referral topic again for
        // `referrals`): topics, groups and a database of its own on the same broker.
        let mut before = Deployment::new(&[])?;
        before.use_broker(&broker.brokers());
        let (ok, output) = run_hunter(&["migrate"], &before.env, Duration::from_secs(60))?;
        anyhow::ensure!(ok, "{output}");
        load(&broker.brokers(), &before.topics.referrals, &records).await?;
        // The order turns every round: each side is first once.
        let pid = broker.pid().unwrap_or(0);
        let (mut h, mut s, mut p) = (None, None, None);
        for side in 0..3 {
            match (side + round - 1) % 3 {
                0 => h = Some(hunter(&mut deployment, count, "processor", pid).await?),
                1 => s = Some(hunter(&mut before, count, "sink", pid).await?),
                _ => p = Some(python(&deployment, count, total, pid).await?),
            }
        }
        let (h, s, p) = (
            h.unwrap_or_default(),
            s.unwrap_or_default(),
            p.unwrap_or_default(),
        );
        eprintln!(
            "round {round}: hunter {:.1} s, {:.1} CPU s (broker {:.1}); hunter, sink reading referrals {:.1} s, {:.1} CPU s (broker {:.1}); python {:.1} s, {:.1} CPU s (broker {:.1})",
            h.seconds,
            h.cpu,
            h.broker_cpu,
            s.seconds,
            s.cpu,
            s.broker_cpu,
            p.seconds,
            p.cpu,
            p.broker_cpu
        );
        hunters.push(h);
        seconds.push(s);
        peers.push(p);
        before.teardown().await;
        deployment.teardown().await;
        drop(broker);
    }
    fn per(sides: &[Side], f: impl Fn(&Side) -> f64) -> Vec<f64> {
        sides.iter().map(f).collect()
    }
    let micros = |side: &Side| side.cpu * 1e6 / count as f64;
    let mut report = Report::new("peer", count, "referrals");
    let peer_s = report.row(
        "python peer: confluent-kafka + fastavro, dict dedupe, JSONEachRow over HTTP, one process: wall time to the Nth row",
        "s",
        RowKind::Info,
        &per(&peers, |s| s.seconds),
    );
    let peer_cpu = report.row(
        "python peer: CPU (user + system)",
        "CPU s",
        RowKind::Info,
        &per(&peers, |s| s.cpu),
    );
    let peer_us = report.row(
        "python peer: CPU per referral",
        "µs",
        RowKind::Info,
        &per(&peers, micros),
    );
    let before_s = report.row(
        "baseline: hunter with the sink reading the referral topic for `referrals` (HUNTER_SINK_REFERRALS_WRITER=sink, as before 2026-12-02): wall time",
        "s",
        RowKind::Info,
        &per(&seconds, |s| s.seconds),
    );
    let before_us = report.row(
        "baseline: hunter with the sink reading the referral topic: processor + sink CPU per referral",
        "µs",
        RowKind::Info,
        &per(&seconds, micros),
    );
    let hunter_s = report.row(
        "hunter `run process` + `run sink` (the processor writes `referrals`): wall time to the Nth row in both `leads` and `referrals`",
        "s",
        RowKind::Hunter,
        &per(&hunters, |s| s.seconds),
    );
    let hunter_cpu = report.row(
        "hunter processor + sink: CPU (user + system)",
        "CPU s",
        RowKind::Info,
        &per(&hunters, |s| s.cpu),
    );
    let hunter_us = report.row(
        "hunter processor + sink: CPU per referral",
        "µs",
        RowKind::Hunter,
        &per(&hunters, micros),
    );
    let broker_micros = |side: &Side| side.broker_cpu * 1e6 / count as f64;
    let peer_broker = report.row(
        "broker (tansu) CPU per referral while the python peer ran",
        "µs",
        RowKind::Info,
        &per(&peers, broker_micros),
    );
    let before_broker = report.row(
        "broker (tansu) CPU per referral while hunter ran with the sink reading referrals (baseline)",
        "µs",
        RowKind::Info,
        &per(&seconds, broker_micros),
    );
    let hunter_broker = report.row(
        "broker (tansu) CPU per referral while hunter ran (the processor writes `referrals`)",
        "µs",
        RowKind::Info,
        &per(&hunters, broker_micros),
    );
    report.ratio(
        "broker CPU, hunter / hunter with the sink reading referrals",
        hunter_broker / before_broker,
        None,
    );
    report.ratio(
        "broker CPU, hunter / python peer",
        hunter_broker / peer_broker,
        None,
    );
    report.ratio(
        "hunter / hunter with the sink reading referrals, CPU per referral",
        hunter_us / before_us,
        None,
    );
    report.ratio(
        "hunter / hunter with the sink reading referrals, wall time",
        hunter_s / before_s,
        None,
    );
    report.ratio(
        "hunter / python, wall time",
        hunter_s / peer_s,
        Some("<= 1.0"),
    );
    report.ratio(
        "hunter / python, CPU per referral",
        hunter_us / peer_us,
        Some("<= 0.34"),
    );
    report.note(&format!(
        "{count} distinct referrals of {bytes:.0} B of Avro on average, plus {} redeliveries (every 20th record again); both sides end with exactly the {count} distinct referrals in ClickHouse (checked every round); the three sides' order turns every round",
        total - count
    ));
    println!("peer bench, {count} referrals, median of 3:");
    println!("  python peer   {peer_s:>8.1} s  {peer_cpu:>8.1} CPU s  {peer_us:>8.0} µs/referral");
    println!(
        "  hunter        {hunter_s:>8.1} s  {hunter_cpu:>8.1} CPU s  {hunter_us:>8.0} µs/referral"
    );
    report.print();
    Ok(())
}
