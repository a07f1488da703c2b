//! What the bench binaries (`tests/benches/*.rs`, harness = false) share: the preamble, medians,
//! the machine-readable summary line `tests/bench.sh` collects, the pass-through relay (the
//! broker's ceiling for a stage that consumes and produces), and quantiles of a Prometheus
//! histogram scraped from a role.

use std::time::{Duration, Instant};

use futures::stream::{FuturesOrdered, StreamExt};
use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};

/// The median of a run's rounds.
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Whether this is a smoke run (`HUNTER_BENCH_SMOKE=1`, from `tests/bench.sh --smoke`, which
/// `./tests/run.sh` runs): a tiny size on a debug build, to prove the bench still runs and its
/// `RESULT` line still parses. Its figures mean nothing; the line says `"smoke": true` and
/// `bench-report` refuses to write such results into BENCHMARKS.md.
pub fn smoke() -> bool {
    std::env::var("HUNTER_BENCH_SMOKE").is_ok_and(|v| v == "1")
}

/// `None` when cargo only lists benches (`--list`, from `cargo test --benches`); otherwise
/// the size from `size_var` (or `default`), after checking `HUNTER_BIN` is a release build
/// (any build in a [`smoke`] run).
pub fn start(bench: &str, size_var: &str, default: usize) -> anyhow::Result<Option<usize>> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(None);
    }
    anyhow::ensure!(
        smoke() || std::env::var("HUNTER_BIN").is_ok_and(|bin| bin.contains("release")),
        "run it on a release build: cargo build --release -p hunter && \
         HUNTER_BIN=target/release/hunter cargo bench -p hunter-e2e --bench {bench}"
    );
    Ok(Some(size(size_var, default)))
}

/// Where benches keep their brokers' storage and data: `$HUNTER_BENCH_DIR`, else
/// `<repo>/.local/bench`.
pub fn dir() -> std::path::PathBuf {
    std::env::var("HUNTER_BENCH_DIR").map_or_else(
        |_| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.local/bench"),
        std::path::PathBuf::from,
    )
}

/// A broker of the bench's own, its storage under [`dir`].
pub async fn broker() -> anyhow::Result<crate::OwnBroker> {
    crate::OwnBroker::start_in(&dir()).await
}

/// A second `hunter` binary to measure beside `HUNTER_BIN` in the same run
/// (`HUNTER_BENCH_BASELINE_BIN`, e.g. a release build of `main` copied aside): the processor and
/// sink benches then run both, alternating which goes first, so a change is held against its
/// baseline on the same broker, data and machine load.
pub fn baseline_bin() -> Option<String> {
    std::env::var("HUNTER_BENCH_BASELINE_BIN")
        .ok()
        .filter(|bin| !bin.is_empty())
}

/// Microseconds of CPU per record from CPU seconds and a record count.
pub fn micros_per_record(cpu_seconds: f64, records: usize) -> f64 {
    cpu_seconds * 1e6 / records.max(1) as f64
}

/// A whole number from the environment, or `default`.
pub fn size(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A bench's results as one line, `RESULT {json}`, on stdout: what `tests/bench.sh` turns into
/// the tables of BENCHMARKS.md. Rows are measures (each with its rounds and their median),
/// ratios compare a measure with its ceiling, notes say what the figures need said with them.
#[derive(Debug)]
pub struct Report {
    bench: String,
    size: usize,
    size_unit: String,
    rows: Vec<Value>,
    ratios: Vec<Value>,
    notes: Vec<String>,
}

impl Report {
    pub fn new(bench: &str, size: usize, size_unit: &str) -> Self {
        Report {
            bench: bench.to_owned(),
            size,
            size_unit: size_unit.to_owned(),
            rows: Vec::new(),
            ratios: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// A measure: its label (what was measured), unit, and every round; returns the median.
    /// `ceiling` marks a ceiling (what the stage is compared with), `hunter` a Hunter stage.
    pub fn row(&mut self, label: &str, unit: &str, kind: RowKind, rounds: &[f64]) -> f64 {
        let median = median(rounds.to_vec());
        self.rows.push(json!({
            "label": label,
            "unit": unit,
            "kind": kind.as_str(),
            "median": median,
            "rounds": rounds,
        }));
        median
    }

    /// A ratio of medians, with the target it is held against (`">= 0.70"`, `"<= 1.5"`), if any.
    pub fn ratio(&mut self, label: &str, value: f64, target: Option<&str>) {
        let met = target.map(|target| meets(value, target));
        self.ratios.push(json!({
            "label": label,
            "value": value,
            "target": target,
            "met": met,
        }));
    }

    pub fn note(&mut self, text: &str) {
        self.notes.push(text.to_owned());
    }

    /// Prints the `RESULT` line (and nothing else).
    pub fn print(&self) {
        let line = json!({
            "bench": self.bench,
            "size": self.size,
            "size_unit": self.size_unit,
            "rows": self.rows,
            "ratios": self.ratios,
            "notes": self.notes,
            "smoke": smoke(),
        });
        println!("RESULT {line}");
    }
}

/// What a row of a [`Report`] is.
#[derive(Debug, Clone, Copy)]
pub enum RowKind {
    /// Hunter's own stage (bold in the tables).
    Hunter,
    /// What the stage is compared with.
    Ceiling,
    /// Anything else worth a figure (load rate, CPU, latency).
    Info,
}

impl RowKind {
    fn as_str(self) -> &'static str {
        match self {
            RowKind::Hunter => "hunter",
            RowKind::Ceiling => "ceiling",
            RowKind::Info => "info",
        }
    }
}

/// Whether `value` meets a target written as `">= 0.70"` or `"<= 1.5"`.
pub fn meets(value: f64, target: &str) -> bool {
    let target = target.trim();
    let parse = |rest: &str| rest.trim().parse::<f64>().unwrap_or(f64::NAN);
    if let Some(rest) = target.strip_prefix(">=") {
        value >= parse(rest)
    } else if let Some(rest) = target.strip_prefix("<=") {
        value <= parse(rest)
    } else {
        false
    }
}

/// A pass-through relay: an rdkafka consumer reading `from` in a new group, producing each
/// record's key and value unchanged to `to` (created with `partitions`), acks=all and
/// idempotent, storing each consumed offset after the produced record was acknowledged (what a
/// Hunter stage that consumes and produces does, minus decoding and logic). Returns the time
/// from the first record read to the `count`th acknowledged.
pub async fn relay(
    brokers: &str,
    from: &str,
    to: &str,
    partitions: i32,
    count: usize,
) -> anyhow::Result<Duration> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    admin
        .create_topics(
            [&NewTopic::new(to, partitions, TopicReplication::Fixed(1))],
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
    // Dropping a consumer blocks for a while with tansu: not on the runtime's threads.
    std::thread::spawn(move || drop(consumer));
    Ok(elapsed)
}

/// CPU seconds (user + system) a process has used so far, from /proc.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start at field 3.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    let output = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()?;
    let per_second: f64 = String::from_utf8_lossy(&output.stdout).trim().parse()?;
    Ok(ticks / per_second)
}

/// A Prometheus histogram as scraped: cumulative counts by upper bound (`+Inf` last).
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    /// (upper bound, cumulative count), ascending; the last bound is `f64::INFINITY`.
    pub buckets: Vec<(f64, f64)>,
    pub sum: f64,
    pub count: f64,
}

/// A quantile read from a histogram: the estimate (linear within its bucket, as PromQL's
/// `histogram_quantile` does) and the bucket's bounds, which are all the histogram knows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quantile {
    pub estimate: f64,
    pub low: f64,
    /// `f64::INFINITY` when the quantile lies beyond the last finite bucket.
    pub high: f64,
}

impl Histogram {
    /// The unlabelled histogram `name` in Prometheus text, if present.
    pub fn parse(text: &str, name: &str) -> Option<Histogram> {
        let bucket_prefix = format!("{name}_bucket{{le=\"");
        let mut buckets = Vec::new();
        let (mut sum, mut count) = (None, None);
        for line in text.lines() {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            if let Some(le) = series.strip_prefix(&bucket_prefix) {
                let le = le.trim_end_matches("\"}");
                let bound = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                buckets.push((bound, value));
            } else if series == format!("{name}_sum") {
                sum = Some(value);
            } else if series == format!("{name}_count") {
                count = Some(value);
            }
        }
        if buckets.is_empty() {
            return None;
        }
        buckets.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
        if buckets.last().map(|b| b.0) != Some(f64::INFINITY) {
            let total = count.unwrap_or(buckets.last().unwrap().1);
            buckets.push((f64::INFINITY, total));
        }
        let count = count.unwrap_or(buckets.last().unwrap().1);
        Some(Histogram {
            buckets,
            sum: sum.unwrap_or(0.0),
            count,
        })
    }

    /// What was observed between `earlier` (a scrape of the same histogram) and this one.
    pub fn since(&self, earlier: &Histogram) -> Histogram {
        let before = |bound: f64| {
            earlier
                .buckets
                .iter()
                .find(|(b, _)| *b == bound)
                .map_or(0.0, |(_, n)| *n)
        };
        Histogram {
            buckets: self
                .buckets
                .iter()
                .map(|(bound, n)| (*bound, n - before(*bound)))
                .collect(),
            sum: self.sum - earlier.sum,
            count: self.count - earlier.count,
        }
    }

    /// The `q` quantile (0..=1); `None` when nothing was observed.
    pub fn quantile(&self, q: f64) -> Option<Quantile> {
        let total = self.buckets.last()?.1;
        if total <= 0.0 {
            return None;
        }
        let rank = q * total;
        let mut low = 0.0;
        let mut below = 0.0;
        for (bound, cumulative) in &self.buckets {
            if *cumulative >= rank && *cumulative > below {
                if bound.is_infinite() {
                    return Some(Quantile {
                        estimate: low,
                        low,
                        high: f64::INFINITY,
                    });
                }
                let estimate = low + (bound - low) * (rank - below) / (cumulative - below);
                return Some(Quantile {
                    estimate,
                    low,
                    high: *bound,
                });
            }
            low = *bound;
            below = *cumulative;
        }
        None
    }

    /// The mean of what was observed.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0.0).then(|| self.sum / self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# TYPE x_seconds histogram
x_seconds_bucket{le=\"1\"} 10
x_seconds_bucket{le=\"5\"} 90
x_seconds_bucket{le=\"10\"} 99
x_seconds_bucket{le=\"+Inf\"} 100
x_seconds_sum 321.5
x_seconds_count 100
y_seconds_bucket{le=\"1\"} 3
";

    #[test]
    fn reads_a_histogram_and_its_quantiles_as_promql_does() {
        let histogram = Histogram::parse(TEXT, "x_seconds").unwrap();
        assert_eq!(histogram.count, 100.0);
        assert_eq!(histogram.buckets.len(), 4);
        // p50: rank 50, in (1, 5] holding 80 of them from 10: 1 + 4 * 40/80.
        let p50 = histogram.quantile(0.5).unwrap();
        assert_eq!((p50.estimate, p50.low, p50.high), (3.0, 1.0, 5.0));
        // p99: rank 99, the last of (5, 10].
        assert_eq!(histogram.quantile(0.99).unwrap().estimate, 10.0);
        // p999: beyond the last finite bucket: only "above 10" is known.
        let p999 = histogram.quantile(0.999).unwrap();
        assert_eq!((p999.estimate, p999.high), (10.0, f64::INFINITY));
        assert!(Histogram::parse(TEXT, "z_seconds").is_none());
    }

    #[test]
    fn the_difference_of_two_scrapes_is_what_happened_between_them() {
        let before = Histogram::parse(TEXT, "x_seconds").unwrap();
        let after = Histogram::parse(
            &TEXT
                .replace("le=\"1\"} 10", "le=\"1\"} 60")
                .replace("le=\"5\"} 90", "le=\"5\"} 140")
                .replace("le=\"10\"} 99", "le=\"10\"} 149")
                .replace("le=\"+Inf\"} 100", "le=\"+Inf\"} 150")
                .replace("x_seconds_count 100", "x_seconds_count 150")
                .replace("x_seconds_sum 321.5", "x_seconds_sum 346.5"),
            "x_seconds",
        )
        .unwrap();
        let between = after.since(&before);
        assert_eq!(between.count, 50.0);
        assert_eq!(between.mean(), Some(0.5));
        // All 50 new observations were at most 1 s.
        let p99 = between.quantile(0.99).unwrap();
        assert_eq!((p99.low, p99.high), (0.0, 1.0));
        assert!(between.since(&between).quantile(0.5).is_none());
    }

    #[test]
    fn targets_are_read_both_ways() {
        assert!(meets(0.71, ">= 0.70"));
        assert!(!meets(0.69, ">= 0.70"));
        assert!(meets(1.5, "<= 1.5"));
        assert!(!meets(1.51, "<=1.5"));
        assert!(!meets(1.0, "about 1"));
    }
}
