//! End to end: referrals from the simulator to lead rows in ClickHouse, against the same
//! broker carrying the same records through two pass-through relays.
//!
//! `cargo bench -p hunter-e2e --bench end_to_end` with the local stack up (ClickHouse), its
//! settings in the environment and `HUNTER_BIN` naming a release build; `tests/bench.sh` runs
//! it with the others.
//!
//! N referrals (default 1,000,000; `HUNTER_BENCH_REFERRALS`) are generated once by
//! `hunter simulate --generate` into a file under `$HUNTER_BENCH_DIR` (default
//! `.local/bench`). Then three rounds, median, each on a tansu broker of its own
//! (`bench::broker`: about 12.6 kB per referral land on its disk, deleted after the round) and a
//! fresh ClickHouse database:
//! - end to end: the simulator serves the file; `hunter run sink` and `hunter run process`
//!   start (and are given a few seconds to join their groups), then `hunter run source`, whose
//!   first poll reads every referral. Timed from the start of that poll (its sync run record)
//!   to the moment `leads` holds N rows and `referrals` N distinct referrals (whoever writes
//!   it: `HUNTER_BENCH_REFERRALS_WRITER=sink` has the sink read the referral topic for it, as
//!   before 2026-12-02). Three separate release processes, production defaults
//!   (sink batches of 10,000 rows or 1 s) except: MX lookups go to a closed local port (every
//!   provider `unknown`, no network), polls every second with a 5 s overlap (for the steady
//!   phase below).
//! - baseline: on the same broker right after, the referral topic the source wrote (N records)
//!   relayed by a pass-through relay ([`relay`]: rdkafka consumer → producer, acks=all,
//!   idempotent, no decode), then the lead topic (N records) by a second one. Baseline time =
//!   the two relay times added: what the broker needs to carry the same records through two
//!   consume-and-produce hops. (The pipeline asks a little more of the broker: the sink also
//!   reads the lead topic; before 2026-12-02 it read the referral topic too, for `referrals`.)
//! - latency: the sink's `hunter_sink_end_to_end_latency_seconds` (from the page fetch that
//!   read a referral version to its lead row acknowledged by ClickHouse), scraped after the
//!   bulk load (a lead waits behind whatever backlog the load builds up between the stages),
//!   and its growth over a steady phase
//!   after it: the simulator moves `HUNTER_BENCH_STEADY_BURST` referrals on (default 10) before
//!   each list request, i.e. once a poll, for `HUNTER_BENCH_STEADY_SECS` (default 60), and the
//!   pipeline drains. Quantiles as PromQL's `histogram_quantile` computes them, with the bucket
//!   each lies in.

use std::time::{Duration, Instant};

use hunter_core::records::Timestamp;
use hunter_core::telemetry::names;
use hunter_e2e::bench::{Histogram, Quantile, Report, RowKind, cpu_seconds, relay, size};
use hunter_e2e::report::figure;
use hunter_e2e::{Deployment, free_port, generate_referrals_file};

/// What one round measured.
#[derive(Debug, Default)]
struct Round {
    end_to_end_s: f64,
    source_poll_s: f64,
    leads_topic_s: f64,
    relay_referrals_s: f64,
    relay_leads_s: f64,
    bulk: Option<Histogram>,
    steady: Option<Histogram>,
    steady_leads_per_s: f64,
    cpu: Vec<(&'static str, f64)>,
    broker_mb: f64,
    wall_s: f64,
}

/// Count of rows in `leads` (no FINAL: the bulk load has no second version of any lead).
async fn lead_rows(deployment: &Deployment) -> anyhow::Result<u64> {
    let rows = deployment
        .clickhouse
        .rows("SELECT toString(count()) AS n FROM leads")
        .await?;
    Ok(rows[0]["n"].as_str().unwrap_or("0").parse()?)
}

/// Distinct referral ids in `referrals`.
async fn referral_ids(deployment: &Deployment) -> anyhow::Result<u64> {
    let rows = deployment
        .clickhouse
        .rows("SELECT toString(uniqExact(referral_id)) AS n FROM referrals")
        .await?;
    Ok(rows[0]["n"].as_str().unwrap_or("0").parse()?)
}

async fn scrape(port: u16) -> anyhow::Result<Histogram> {
    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await?
        .text()
        .await?;
    Histogram::parse(&text, names::SINK_END_TO_END_LATENCY_SECONDS).ok_or_else(|| {
        anyhow::anyhow!(
            "the sink exports no {}",
            names::SINK_END_TO_END_LATENCY_SECONDS
        )
    })
}

async fn round(
    number: usize,
    referrals_file: &std::path::Path,
    count: usize,
    steady: Duration,
    burst: usize,
) -> anyhow::Result<Round> {
    let started = Instant::now();
    let broker = hunter_e2e::bench::broker().await?;
    let mut deployment = Deployment::new(&[])?;
    deployment.use_broker(&broker.brokers());
    deployment.referrals_file = referrals_file.to_path_buf();
    for (key, value) in [
        ("HUNTER_SYNC_INTERVAL_SECS", "1"),
        ("HUNTER_SYNC_OVERLAP_SECS", "5"),
        ("HUNTER_SYNC_POLL_BUDGET_SECS", "14400"),
    ] {
        deployment.env.insert(key.into(), value.into());
    }
    // The sink's own batch wait (1 s), not the tests' shorter one.
    deployment.env.remove("HUNTER_SINK_BATCH_MAX_WAIT_MS");
    // Who writes `referrals` (default: the roles decide, i.e. the processor on a new
    // deployment); `HUNTER_BENCH_REFERRALS_WRITER=sink` measures the sink's second read.
    if let Ok(writer) = std::env::var("HUNTER_BENCH_REFERRALS_WRITER") {
        deployment
            .env
            .insert("HUNTER_SINK_REFERRALS_WRITER".into(), writer);
    }
    let burst = burst.to_string();
    deployment
        .start_simulator(&["--mutate-in-memory", "--mutate-burst", &burst])
        .await?;
    deployment.login_and_migrate()?;
    let sink_port = free_port();
    let sink = deployment.start_role_on("sink", sink_port).await?;
    let process = deployment.start_role_on("process", free_port()).await?;
    // Consumer groups on tansu settle in about 3 s.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let source = deployment.start_role_on("source", free_port()).await?;

    let mut leads_topic_at = None;
    let deadline = Instant::now() + Duration::from_secs(7_200);
    // ClickHouse is asked every 0.1 s; the broker, the bottleneck here, only every second.
    let mut checks = 0u64;
    let finished_at = loop {
        if lead_rows(&deployment).await? as usize >= count {
            break Timestamp::now();
        }
        checks += 1;
        if leads_topic_at.is_none()
            && checks.is_multiple_of(10)
            && deployment.topic_count(&deployment.topics.leads)? as usize >= count
        {
            leads_topic_at = Some(Timestamp::now());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "not every lead in ClickHouse after 2 hours\n{}",
            deployment.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let leads_at = finished_at;
    // And every referral in `referrals`, whoever writes it.
    let finished_at = loop {
        if referral_ids(&deployment).await? as usize >= count {
            break Timestamp::now();
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "not every referral in clickhouse after 2 hours\n{}",
            deployment.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let cpu = vec![
        ("source", cpu_seconds(deployment.process(source).pid())?),
        ("processor", cpu_seconds(deployment.process(process).pid())?),
        ("sink", cpu_seconds(deployment.process(sink).pid())?),
        ("simulator", cpu_seconds(deployment.process(0).pid())?),
        ("tansu", cpu_seconds(broker.pid().unwrap_or(0))?),
    ];
    let first_poll = deployment
        .wait_for_run("the first poll", Duration::from_secs(60), |run| {
            run.status == "succeeded"
        })
        .await?;
    anyhow::ensure!(
        first_poll.published as usize == count,
        "the first poll published {} of {count}",
        first_poll.published
    );
    let poll_started = first_poll.started_at.micros();
    let seconds_since_poll = |at: Timestamp| (at.micros() - poll_started) as f64 / 1e6;
    let bulk = scrape(sink_port).await?;
    // Hunter's part of the round, printed before the baseline relays (at 1,000,000 referrals
    // they take another quarter of an hour): a run stopped here still has its figures.
    eprintln!(
        "round {number}: hunter end to end {:.1} s ({:.0} referrals/s; source poll done at \
         {:.1} s, every lead at {:.1} s, every referral at {:.1} s); CPU s: {}; the baseline \
         relays follow",
        seconds_since_poll(finished_at),
        count as f64 / seconds_since_poll(finished_at),
        (first_poll.finished_at.map_or(0, Timestamp::micros) - poll_started) as f64 / 1e6,
        seconds_since_poll(leads_at),
        seconds_since_poll(finished_at),
        cpu.iter()
            .map(|(role, seconds)| format!("{role} {seconds:.1}"))
            .collect::<Vec<_>>()
            .join(", "),
    );

    // The baseline: the same records through two relays on this broker.
    let referrals_topic = deployment.topics.referrals.clone();
    let leads_topic = deployment.topics.leads.clone();
    let referral_records = deployment.topic_count(&deployment.topics.referrals)? as usize;
    let lead_records = deployment.topic_count(&deployment.topics.leads)? as usize;
    anyhow::ensure!(
        referral_records == count && lead_records == count,
        "{referral_records} referral and {lead_records} lead records, wanted {count} each"
    );
    let relay_referrals = relay(
        &broker.brokers(),
        &referrals_topic,
        &deployment.topic("relay.referrals"),
        4,
        count,
    )
    .await?;
    let relay_leads = relay(
        &broker.brokers(),
        &leads_topic,
        &deployment.topic("relay.leads"),
        4,
        count,
    )
    .await?;

    // The steady phase: referrals move on once a poll, then the pipeline drains.
    deployment
        .simulator_post("/_simulator/mutate?rate=1")
        .await?;
    tokio::time::sleep(steady).await;
    deployment
        .simulator_post("/_simulator/mutate?rate=0")
        .await?;
    let drain_deadline = Instant::now() + Duration::from_secs(600);
    let mut last = None;
    let after = loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let histogram = scrape(sink_port).await?;
        let now = (
            deployment.topic_count(&deployment.topics.referrals)?,
            deployment.topic_count(&deployment.topics.leads)?,
            histogram.count as i64,
        );
        if last == Some(now) && now.1 == now.2 {
            break histogram;
        }
        anyhow::ensure!(
            Instant::now() < drain_deadline,
            "the steady phase did not drain in 10 minutes (referral, lead records, \
             latencies recorded: {now:?})\n{}",
            deployment.logs()
        );
        last = Some(now);
    };
    let steady_histogram = after.since(&bulk);
    let moved = deployment.simulator_get("/_simulator/stats").await?["mutations"]["referrals"]
        .as_u64()
        .unwrap_or(0);
    eprintln!(
        "  steady phase: {moved} referrals moved on, {} leads written",
        steady_histogram.count
    );

    let measured = Round {
        end_to_end_s: seconds_since_poll(finished_at),
        source_poll_s: (first_poll.finished_at.map_or(0, Timestamp::micros) - poll_started) as f64
            / 1e6,
        // Not seen full before the last row was in ClickHouse: full by then at the latest.
        leads_topic_s: seconds_since_poll(leads_topic_at.unwrap_or(finished_at)),
        relay_referrals_s: relay_referrals.as_secs_f64(),
        relay_leads_s: relay_leads.as_secs_f64(),
        bulk: Some(bulk),
        steady_leads_per_s: steady_histogram.count / steady.as_secs_f64(),
        steady: Some(steady_histogram),
        cpu,
        broker_mb: broker.disk_bytes() as f64 / 1e6,
        wall_s: 0.0,
    };
    deployment.teardown().await;
    drop(broker);
    let wall_s = started.elapsed().as_secs_f64();
    eprintln!(
        "round {number}: end to end {:.1} s ({:.0} referrals/s; source poll done at {:.1} s, \
         leads topic full at {:.1} s), relays {:.1} s + {:.1} s, ratio {:.2}, broker storage \
         {:.0} MB, round took {wall_s:.0} s",
        measured.end_to_end_s,
        count as f64 / measured.end_to_end_s,
        measured.source_poll_s,
        measured.leads_topic_s,
        measured.relay_referrals_s,
        measured.relay_leads_s,
        measured.end_to_end_s / (measured.relay_referrals_s + measured.relay_leads_s),
        measured.broker_mb,
    );
    Ok(Round { wall_s, ..measured })
}

/// "2.41 s (in the (2, 3] s bucket)" or "above 3600 s (beyond the last bucket)".
fn describe(quantile: Option<Quantile>) -> String {
    match quantile {
        None => "nothing observed".to_owned(),
        Some(q) if q.high.is_infinite() => {
            format!("above {} s (beyond the last bucket)", q.low)
        }
        Some(q) => format!(
            "{:.2} s (in the ({}, {}] s bucket)",
            q.estimate, q.low, q.high
        ),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let Some(count) = hunter_e2e::bench::start("end_to_end", "HUNTER_BENCH_REFERRALS", 1_000_000)?
    else {
        return Ok(()); // `cargo test --benches` only lists
    };
    let steady = Duration::from_secs(size("HUNTER_BENCH_STEADY_SECS", 60) as u64);
    let burst = size("HUNTER_BENCH_STEADY_BURST", 10);

    let base = hunter_e2e::bench::dir();
    std::fs::create_dir_all(&base)?;
    let data = tempfile::Builder::new()
        .prefix("end-to-end-")
        .tempdir_in(&base)?;
    let file = data.path().join("referrals.json");
    let generating = Instant::now();
    generate_referrals_file(&file, count, 1)?;
    let generated_s = generating.elapsed().as_secs_f64();
    eprintln!(
        "generated {count} referrals in {generated_s:.1} s ({} MB of JSON)",
        std::fs::metadata(&file)?.len() / 1_000_000
    );

    let mut rounds = Vec::new();
    for number in 1..=3 {
        rounds.push(round(number, &file, count, steady, burst).await?);
    }
    drop(data);

    let mut report = Report::new("end_to_end", count, "referrals");
    let all = |f: &dyn Fn(&Round) -> f64| rounds.iter().map(f).collect::<Vec<f64>>();
    let quantile = |histogram: &Option<Histogram>, q: f64| {
        histogram
            .as_ref()
            .and_then(|h| h.quantile(q))
            .map_or(f64::NAN, |q| q.estimate)
    };
    let baseline = report.row(
        "baseline: two pass-through relays on the same broker, referrals then leads (the two times added)",
        "s",
        RowKind::Ceiling,
        &all(&|r| r.relay_referrals_s + r.relay_leads_s),
    );
    report.row(
        "relay of the N referral records",
        "s",
        RowKind::Info,
        &all(&|r| r.relay_referrals_s),
    );
    report.row(
        "relay of the N lead records",
        "s",
        RowKind::Info,
        &all(&|r| r.relay_leads_s),
    );
    let end_to_end = report.row(
        "hunter end to end: start of the first poll to the Nth row in `leads`",
        "s",
        RowKind::Hunter,
        &all(&|r| r.end_to_end_s),
    );
    report.row(
        "end-to-end rate",
        "referrals/s",
        RowKind::Info,
        &all(&|r| count as f64 / r.end_to_end_s),
    );
    report.row(
        "the source's first poll done (published and acknowledged)",
        "s after the poll started",
        RowKind::Info,
        &all(&|r| r.source_poll_s),
    );
    report.row(
        "the lead topic holds N leads (checked every second)",
        "s after the poll started",
        RowKind::Info,
        &all(&|r| r.leads_topic_s),
    );
    let bulk_p50 = report.row(
        "latency p50, bulk load",
        "s",
        RowKind::Info,
        &all(&|r| quantile(&r.bulk, 0.5)),
    );
    let bulk_p99 = report.row(
        "latency p99, bulk load",
        "s",
        RowKind::Info,
        &all(&|r| quantile(&r.bulk, 0.99)),
    );
    let steady_p50 = report.row(
        "latency p50, steady phase",
        "s",
        RowKind::Hunter,
        &all(&|r| quantile(&r.steady, 0.5)),
    );
    let steady_p99 = report.row(
        "latency p99, steady phase",
        "s",
        RowKind::Hunter,
        &all(&|r| quantile(&r.steady, 0.99)),
    );
    report.row(
        "leads written in the steady phase",
        "leads/s",
        RowKind::Info,
        &all(&|r| r.steady_leads_per_s),
    );
    for (index, (name, _)) in rounds[0].cpu.iter().enumerate() {
        report.row(
            &format!("CPU of {name} until the Nth row (user + system)"),
            "CPU s",
            RowKind::Info,
            &all(&|r| r.cpu[index].1),
        );
    }
    report.row(
        "broker storage after the round",
        "MB",
        RowKind::Info,
        &all(&|r| r.broker_mb),
    );
    report.row(
        "one round, wall clock",
        "s",
        RowKind::Info,
        &all(&|r| r.wall_s),
    );
    report.row(
        "generating the referrals file (once)",
        "s",
        RowKind::Info,
        &[generated_s],
    );
    report.ratio(
        "end to end / baseline (time)",
        end_to_end / baseline,
        Some("<= 1.5"),
    );
    report.ratio(
        "p99 latency, poll to ClickHouse row, steady phase (s)",
        steady_p99,
        Some("<= 5"),
    );
    report.ratio(
        &format!(
            "p99 latency, poll to ClickHouse row, bulk load of {} (s)",
            figure(count as f64)
        ),
        bulk_p99,
        Some("<= 5"),
    );
    // Which bucket each median round's quantile lies in: what the histogram can resolve.
    let median_round = |value: f64, histogram: fn(&Round) -> &Option<Histogram>, q: f64| {
        rounds
            .iter()
            .find(|r| quantile(histogram(r), q) == value)
            .and_then(|r| histogram(r).as_ref()?.quantile(q))
    };
    report.note(&format!(
        "steady phase: about {burst} referrals moved on per poll (one poll a second) for {} s; \
         p50 {}, p99 {}",
        steady.as_secs(),
        describe(median_round(steady_p50, |r| &r.steady, 0.5)),
        describe(median_round(steady_p99, |r| &r.steady, 0.99)),
    ));
    report.note(&format!(
        "bulk load: p50 {}, p99 {}",
        describe(median_round(bulk_p50, |r| &r.bulk, 0.5)),
        describe(median_round(bulk_p99, |r| &r.bulk, 0.99)),
    ));
    println!("end-to-end bench, {count} referrals, median of 3:");
    println!("  baseline (two relays)        {baseline:>9.1} s");
    println!("  hunter end to end            {end_to_end:>9.1} s");
    println!(
        "  end to end / baseline        {:>9.2}",
        end_to_end / baseline
    );
    println!("  p50 / p99 bulk               {bulk_p50:>9.2} / {bulk_p99:.2} s");
    println!("  p50 / p99 steady             {steady_p50:>9.2} / {steady_p99:.2} s");
    report.print();
    Ok(())
}
