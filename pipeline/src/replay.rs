//! `hunter replay clickhouse`: rebuilds ClickHouse tables from the topics (after a lost volume,
//! to fill a new database, or to fill a column added later), with progress and a final count
//! check against the topic.
//!
//! How, and why it is safe while the sink runs:
//! - Each topic is read from its start offset to its end offset *as they were when the replay
//!   began* (a snapshot; records that arrive later are the sink's), by a reader outside any
//!   consumer group that assigns itself every partition. No group means no rebalance with the
//!   sink's groups, nothing committed, and no tansu group quirks; an interrupted replay is simply
//!   run again (it is idempotent).
//! - Rows are made by the sink's own conversions (`LeadRow::from_lead`, `LeadHistoryRow`,
//!   `ReferralRow::from_referral`) and written by the sink's writer, in batches of
//!   `HUNTER_SINK_BATCH_ROWS`, each with a deduplication token of its own
//!   (`hunter-replay-v1|topic|partition:first-last@timestamp`): a retried batch is not written
//!   twice where the server honours tokens, and every table is a ReplacingMergeTree keyed like
//!   the records (`leads` by lead id with the version, `lead_history` by lead id and version,
//!   `referrals` by id with the version), so rows the sink also writes collapse with them.
//! - ClickHouse refusing a batch, or not answering within `HUNTER_SINK_INSERT_TIMEOUT_MS`, is
//!   retried with backoff (0.2 s doubling to 10 s) until it goes in; a writer without rights
//!   stops the replay, naming the user.
//! - A record that cannot be decoded is counted and skipped: the pipeline dead-lettered it when
//!   it first met it (`hunter dlq list`).
//! - The check at the end: every key the topic holds must be in the table (`leads FINAL` has a
//!   row per lead id, `lead_history` one per lead id and version, `referrals FINAL` one per
//!   referral id). Into a fresh database the counts are equal; into a database the sink keeps
//!   writing they may be larger (newer records), never smaller.

use std::collections::{BTreeMap, HashSet};
use std::io::IsTerminal as _;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hunter_clickhouse::rows::{LeadHistoryRow, LeadRow, ReferralRow};
use hunter_clickhouse::writer::ReadWriter;
use hunter_core::codec::Codec;
use hunter_core::config::Settings;
use hunter_core::records::{Lead, Referral};
use rdkafka::Message as _;
use rdkafka::consumer::Consumer as _;

use crate::roles::Context;

/// A table `hunter replay clickhouse` can rebuild.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Table {
    /// `leads` (the current version of each lead), from the lead topic.
    Leads,
    /// `lead_history` (every version of each lead), from the lead topic.
    #[value(name = "lead_history")]
    LeadHistory,
    /// `referrals` (each referral as the API returned it), from the referral topic.
    Referrals,
}

impl Table {
    fn name(self) -> &'static str {
        match self {
            Table::Leads => "leads",
            Table::LeadHistory => "lead_history",
            Table::Referrals => "referrals",
        }
    }
}

/// One message as the reader hands it over.
struct Read {
    partition: i32,
    offset: i64,
    timestamp: Option<i64>,
    payload: Vec<u8>,
}

/// What one topic's replay did.
#[derive(Debug, Default)]
struct Outcome {
    records: u64,
    undecodable: u64,
    rows: BTreeMap<&'static str, u64>,
    /// Distinct keys per table: what the table must hold at least.
    keys: BTreeMap<&'static str, u64>,
}

/// `hunter replay clickhouse [--table T]... [--into DATABASE]`.
pub async fn clickhouse(
    settings: Settings,
    tables: &[Table],
    into: Option<&str>,
) -> anyhow::Result<()> {
    let mut tables: Vec<Table> = if tables.is_empty() {
        vec![Table::Leads, Table::LeadHistory, Table::Referrals]
    } else {
        tables.to_vec()
    };
    tables.sort();
    tables.dedup();
    let database = match into {
        Some(name) => {
            check_database_name(name)?;
            name.to_owned()
        }
        None => settings.clickhouse.database.clone(),
    };
    let mut clickhouse = settings.clickhouse.clone();
    clickhouse.database = database.clone();
    let writer = ReadWriter::connect(&clickhouse)
        .await
        .context("cannot connect to ClickHouse (HUNTER_CLICKHOUSE_URL, HUNTER_CLICKHOUSE_USER)")?;
    let report = writer
        .migrate(&database)
        .await
        .with_context(|| format!("cannot set up the tables in database {database}"))?;
    eprintln!(
        "replay into ClickHouse database {database}: {} migrations applied, {} already there",
        report.applied.len(),
        report.already_applied.len()
    );

    let context = Context::new(settings)?;
    let topics = context.topics.clone();
    let batch_rows = context.settings.sink.batch_rows;
    let mut failures = Vec::new();
    let lead_tables: Vec<Table> = tables
        .iter()
        .copied()
        .filter(|t| matches!(t, Table::Leads | Table::LeadHistory))
        .collect();
    let mut outcomes = Vec::new();
    if !lead_tables.is_empty() {
        let codec = Codec::<Lead>::new(&topics.leads, context.registry.clone());
        let outcome = replay_topic(&context, &topics.leads, batch_rows, &writer, |payload| {
            let codec = &codec;
            let lead_tables = &lead_tables;
            async move {
                let lead = codec.decode(&payload).await?;
                let row =
                    LeadRow::from_lead(&lead).map_err(|error| Unusable::Skip(error.to_string()))?;
                let mut rows = Rows::default();
                let key = (row.lead_id.clone(), row.version);
                if lead_tables.contains(&Table::LeadHistory) {
                    rows.history.push(LeadHistoryRow::from_lead_row(&row));
                }
                if lead_tables.contains(&Table::Leads) {
                    rows.leads.push(row);
                }
                Ok((rows, key))
            }
        })
        .await?;
        outcomes.push((topics.leads.clone(), lead_tables.clone(), outcome));
    }
    if tables.contains(&Table::Referrals) {
        let codec = Codec::<Referral>::new(&topics.referrals, context.registry.clone());
        let outcome = replay_topic(
            &context,
            &topics.referrals,
            batch_rows,
            &writer,
            |payload| {
                let codec = &codec;
                async move {
                    let referral = codec.decode(&payload).await?;
                    let row = ReferralRow::from_referral(&referral);
                    let key = (referral.id.clone(), row.version);
                    Ok((
                        Rows {
                            referrals: vec![row],
                            ..Rows::default()
                        },
                        key,
                    ))
                }
            },
        )
        .await?;
        outcomes.push((topics.referrals.clone(), vec![Table::Referrals], outcome));
    }

    for (topic, tables, outcome) in &outcomes {
        eprintln!(
            "{topic}: {} records read, {} undecodable (dead-lettered by the pipeline when it first read them: hunter dlq list)",
            outcome.records, outcome.undecodable
        );
        for table in tables {
            let name = table.name();
            let expected = outcome.keys.get(name).copied().unwrap_or(0);
            let held = count(&writer, *table).await?;
            let written = outcome.rows.get(name).copied().unwrap_or(0);
            let verdict = if held >= expected {
                "ok"
            } else {
                "MISSING ROWS"
            };
            eprintln!(
                "  {database}.{name}: {written} rows written; the topic holds {expected} {}, the table {held}: {verdict}",
                key_words(*table)
            );
            if held < expected {
                failures.push(format!(
                    "{database}.{name} holds {held} {} where the topic holds {expected}",
                    key_words(*table)
                ));
            }
        }
    }
    anyhow::ensure!(
        failures.is_empty(),
        "replay check failed: {}",
        failures.join("; ")
    );
    println!("replay done: {}", summary(&database, &outcomes));
    Ok(())
}

fn summary(database: &str, outcomes: &[(String, Vec<Table>, Outcome)]) -> String {
    outcomes
        .iter()
        .flat_map(|(_, tables, outcome)| {
            tables.iter().map(move |table| {
                format!(
                    "{database}.{} {} {}",
                    table.name(),
                    outcome.keys.get(table.name()).copied().unwrap_or(0),
                    key_words(*table)
                )
            })
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn key_words(table: Table) -> &'static str {
    match table {
        Table::Leads => "leads",
        Table::LeadHistory => "lead versions",
        Table::Referrals => "referrals",
    }
}

/// Why a record made no rows.
enum Unusable {
    /// The record's fault (undecodable, or no row can hold it): skipped and counted.
    Skip(String),
    /// Not the record's fault (the schema registry unreachable or refusing Hunter): the replay
    /// stops; run it again once the cause is fixed.
    Stop(anyhow::Error),
}

impl From<hunter_core::codec::CodecError> for Unusable {
    fn from(error: hunter_core::codec::CodecError) -> Self {
        if error.is_retryable() || error.is_fatal() {
            Unusable::Stop(anyhow::anyhow!(
                "{error}: the schema registry must answer for the replay; run it again once it does"
            ))
        } else {
            Unusable::Skip(error.to_string())
        }
    }
}

/// Rows of one batch.
#[derive(Default)]
struct Rows {
    leads: Vec<LeadRow>,
    history: Vec<LeadHistoryRow>,
    referrals: Vec<ReferralRow>,
}

impl Rows {
    fn len(&self) -> usize {
        self.leads.len() + self.history.len() + self.referrals.len()
    }

    fn append(&mut self, other: Rows) {
        self.leads.extend(other.leads);
        self.history.extend(other.history);
        self.referrals.extend(other.referrals);
    }
}

/// Reads `topic` (its snapshot) and writes the rows `convert` makes, batch by batch.
async fn replay_topic<F, Fut>(
    context: &Context,
    topic: &str,
    batch_rows: usize,
    writer: &ReadWriter,
    convert: F,
) -> anyhow::Result<Outcome>
where
    F: Fn(Vec<u8>) -> Fut,
    Fut: std::future::Future<Output = Result<(Rows, (String, u64)), Unusable>>,
{
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<Read>(batch_rows.max(1) * 2);
    let (settings, name) = (context.settings.kafka.clone(), topic.to_owned());
    let (total_sender, total) = tokio::sync::oneshot::channel();
    let reading = tokio::task::spawn_blocking(move || read(&settings, &name, total_sender, sender));
    let total = total.await.unwrap_or(0);
    let progress = Progress::new(topic, total);

    let timeout = context.settings.sink.insert_timeout;
    let mut outcome = Outcome::default();
    let mut ids_seen = HashSet::new();
    let mut versions_seen = HashSet::new();
    let mut rows = Rows::default();
    let mut spans: BTreeMap<i32, (i64, i64, Option<i64>)> = BTreeMap::new();
    while let Some(read) = receiver.recv().await {
        outcome.records += 1;
        progress.advance(outcome.records);
        let span =
            spans
                .entry(read.partition)
                .or_insert((read.offset, read.offset, read.timestamp));
        span.1 = read.offset;
        match convert(read.payload).await {
            Ok((made, (id, version))) => {
                ids_seen.insert(id.clone());
                versions_seen.insert((id, version));
                rows.append(made);
            }
            Err(Unusable::Stop(error)) => return Err(error),
            Err(Unusable::Skip(error)) => {
                outcome.undecodable += 1;
                tracing::debug!(topic, partition = read.partition, offset = read.offset, %error, "record skipped: cannot be decoded");
            }
        }
        if rows.len() >= batch_rows {
            write(writer, timeout, topic, &spans, &rows, &mut outcome).await?;
            rows = Rows::default();
            spans.clear();
        }
    }
    if !spans.is_empty() {
        write(writer, timeout, topic, &spans, &rows, &mut outcome).await?;
    }
    reading
        .await
        .context("the topic reader panicked")?
        .with_context(|| format!("reading {topic}"))?;
    progress.finish(outcome.records);
    for name in ["leads", "referrals"] {
        outcome.keys.insert(name, ids_seen.len() as u64);
    }
    outcome
        .keys
        .insert("lead_history", versions_seen.len() as u64);
    Ok(outcome)
}

/// Inserts one batch, retrying until ClickHouse takes it (a rights error stops the replay).
async fn write(
    writer: &ReadWriter,
    timeout: Duration,
    topic: &str,
    spans: &BTreeMap<i32, (i64, i64, Option<i64>)>,
    rows: &Rows,
    outcome: &mut Outcome,
) -> anyhow::Result<()> {
    let mut token = format!("hunter-replay-v1|{topic}");
    for (partition, (first, last, timestamp)) in spans {
        token.push_str(&format!(
            "|{partition}:{first}-{last}@{}",
            timestamp.unwrap_or(-1)
        ));
    }
    let mut attempt = 0u32;
    loop {
        // An insert without an answer (a hung server) counts as refused, as in the sink
        // (HUNTER_SINK_INSERT_TIMEOUT_MS).
        let result = tokio::time::timeout(timeout, async {
            writer.insert("leads", &rows.leads, Some(&token)).await?;
            writer
                .insert("lead_history", &rows.history, Some(&token))
                .await?;
            writer
                .insert("referrals", &rows.referrals, Some(&token))
                .await
        })
        .await;
        let error = match result {
            Ok(Ok(())) => break,
            Ok(Err(error @ hunter_clickhouse::Error::Rights { .. })) => {
                anyhow::bail!(
                    "{error}: grant the writer its rights (`hunter migrate --print-grants`)"
                )
            }
            Ok(Err(error)) => error.to_string(),
            Err(_) => format!("no answer within {} ms", timeout.as_millis()),
        };
        let wait =
            crate::roles::backoff(attempt, Duration::from_millis(200), Duration::from_secs(10));
        tracing::warn!(%error, attempt = attempt + 1, retry_in = ?wait, "clickhouse refused a replay batch; retrying");
        tokio::time::sleep(wait).await;
        attempt += 1;
    }
    *outcome.rows.entry("leads").or_default() += rows.leads.len() as u64;
    *outcome.rows.entry("lead_history").or_default() += rows.history.len() as u64;
    *outcome.rows.entry("referrals").or_default() += rows.referrals.len() as u64;
    Ok(())
}

/// The rows a table holds, counted the way its keys are (see the module doc).
async fn count(writer: &ReadWriter, table: Table) -> anyhow::Result<u64> {
    let sql = match table {
        Table::Leads => "SELECT count() FROM leads FINAL",
        Table::LeadHistory => "SELECT uniqExact(lead_id, version) FROM lead_history",
        Table::Referrals => "SELECT count() FROM referrals FINAL",
    };
    writer
        .client()
        .query(sql)
        .fetch_one::<u64>()
        .await
        .with_context(|| format!("cannot count the rows of {}", table.name()))
}

/// Reads every partition of `topic` from its start offset to its end offset as they were when
/// the read began; sends the total first. Blocking (librdkafka polls block).
fn read(
    settings: &hunter_core::config::KafkaSettings,
    topic: &str,
    total: tokio::sync::oneshot::Sender<u64>,
    sender: tokio::sync::mpsc::Sender<Read>,
) -> anyhow::Result<()> {
    let timeout = Duration::from_secs(30);
    let reader = hunter_core::kafka::reader(settings, "hunter-replay")?;
    let metadata = reader.fetch_metadata(Some(topic), timeout)?;
    let found = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .with_context(|| format!("topic {topic} does not exist on the broker (hunter migrate)"))?;
    let mut assignment = rdkafka::TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    let mut records = 0u64;
    for partition in found.partitions() {
        let (low, high) = reader.fetch_watermarks(topic, partition.id(), timeout)?;
        if high > low {
            ends.insert(partition.id(), high);
            records += (high - low) as u64;
            assignment.add_partition_offset(topic, partition.id(), rdkafka::Offset::Offset(low))?;
        }
    }
    let _ = total.send(records);
    if ends.is_empty() {
        return Ok(());
    }
    reader.assign(&assignment)?;
    let mut last_progress = Instant::now();
    while !ends.is_empty() {
        let Some(message) = reader.poll(Duration::from_millis(500)) else {
            anyhow::ensure!(
                last_progress.elapsed() < Duration::from_secs(120),
                "{topic}: no record for 120 s before the end offsets were reached"
            );
            continue;
        };
        let message = message?;
        last_progress = Instant::now();
        let (partition, offset) = (message.partition(), message.offset());
        let Some(end) = ends.get(&partition).copied() else {
            continue;
        };
        if offset >= end {
            ends.remove(&partition);
            continue;
        }
        let read = Read {
            partition,
            offset,
            timestamp: message.timestamp().to_millis(),
            payload: message.payload().unwrap_or_default().to_vec(),
        };
        if sender.blocking_send(read).is_err() {
            return Ok(()); // the writing side stopped (its error is the one reported)
        }
        if offset + 1 >= end {
            ends.remove(&partition);
        }
    }
    std::thread::spawn(move || drop(reader));
    Ok(())
}

/// A progress bar on a terminal; a line every 5 s otherwise (logs, CI).
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    topic: String,
    total: u64,
    last_line: std::sync::Mutex<Instant>,
}

impl Progress {
    fn new(topic: &str, total: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(total);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{msg} [{bar:40}] {pos}/{len} records ({percent}%, {per_sec}, eta {eta})",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.set_message(topic.to_owned());
            bar
        });
        eprintln!("{topic}: replaying {total} records");
        Progress {
            bar,
            topic: topic.to_owned(),
            total,
            last_line: std::sync::Mutex::new(Instant::now()),
        }
    }

    fn advance(&self, done: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(done);
            return;
        }
        if let Ok(mut last) = self.last_line.lock()
            && last.elapsed() >= Duration::from_secs(5)
        {
            *last = Instant::now();
            eprintln!(
                "{}: {done}/{} records ({:.0}%)",
                self.topic,
                self.total,
                done as f64 * 100.0 / self.total.max(1) as f64
            );
        }
    }

    fn finish(&self, done: u64) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
        eprintln!("{}: {done}/{} records replayed", self.topic, self.total);
    }
}

/// The rule `HUNTER_CLICKHOUSE_DATABASE` follows, for `--into`.
fn check_database_name(name: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.starts_with(|c: char| c.is_ascii_digit()),
        "invalid --into {name:?}: a database name is letters, digits and underscores, not starting with a digit"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn into_takes_only_plain_database_names() {
        assert!(check_database_name("hunter_rebuild_2").is_ok());
        for bad in ["", "1st", "a-b", "x; DROP TABLE leads", "db.table", "a b"] {
            let error = check_database_name(bad).unwrap_err().to_string();
            assert!(error.contains("invalid --into"), "{bad}: {error}");
        }
    }
}
