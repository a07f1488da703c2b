//! The sink: Hunter's topics into ClickHouse.
//!
//! consume `hunter.leads.v1`, `partner-center.referrals.v1`, `hunter.sync-runs.v1` and
//! `hunter.dlq.v1` → decode → rows → batch (by rows, bytes and time) → insert into `leads` and
//! `lead_history`, `referrals`, `sync_runs`, `dlq` → store the offsets of every message in the
//! batch once ClickHouse acknowledged every insert.
//!
//! Invariants:
//! - an offset is stored only after the inserts holding its rows returned `Ok`; a crash before
//!   that replays the batch, and every table is a ReplacingMergeTree keyed so that a replayed
//!   row collapses into the one already there (`leads` by lead id and version, `lead_history`
//!   by lead id and version, `referrals` by id and version, `sync_runs` by run id, `dlq` by the
//!   dead letter's position);
//! - while ClickHouse refuses a batch, the stream pauses its partitions (prefetched messages are
//!   dropped, nothing more is fetched: memory stays bounded by one batch), retries the batch with
//!   backoff, keeps polling so that it stays in its consumer group, and resumes once the batch is
//!   in; the process never exits for an outage;
//! - a record a table cannot take goes to the dead-letter topic (acknowledged before its offset
//!   is stored) and never blocks the partition.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hunter_clickhouse::rows::{DlqRow, LeadHistoryRow, LeadRow, ReferralRow, SyncRunRow};
use hunter_clickhouse::writer::Writer;
use hunter_core::codec::Codec;
use hunter_core::kafka::{self, DeadLetter};
use hunter_core::records::{Lead, Referral, SyncRun, Timestamp};
use hunter_core::shutdown::Shutdown;
use hunter_core::telemetry::names;
use rdkafka::Message;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Headers;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;

use super::Context;

/// Payload bytes per batch at most (besides the row limit from the settings).
const MAX_BATCH_BYTES: usize = 32 * 1024 * 1024;

/// One batch: the rows of each table and, per topic and partition, the highest offset it covers.
#[derive(Default)]
struct Batch {
    leads: Vec<LeadRow>,
    history: Vec<LeadHistoryRow>,
    referrals: Vec<ReferralRow>,
    /// When the source read each lead's referral version, for the end-to-end latency.
    fetched: Vec<Timestamp>,
    runs: Vec<SyncRunRow>,
    dead_letters: Vec<DlqRow>,
    offsets: BTreeMap<(String, i32), i64>,
    bytes: usize,
    started: Option<Instant>,
}

impl Batch {
    fn cover(&mut self, topic: &str, partition: i32, offset: i64, bytes: usize) {
        let highest = self
            .offsets
            .entry((topic.to_owned(), partition))
            .or_insert(offset);
        *highest = (*highest).max(offset);
        self.bytes += bytes;
        self.started.get_or_insert_with(Instant::now);
    }

    fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    fn rows(&self) -> usize {
        self.leads.len() + self.referrals.len() + self.runs.len() + self.dead_letters.len()
    }
}

/// What the sink reads.
struct Inputs {
    leads: Codec<Lead>,
    referrals: Codec<Referral>,
    referrals_topic: String,
    runs: Codec<SyncRun>,
    leads_topic: String,
    runs_topic: String,
    dlq_topic: String,
}

pub async fn run(context: Context, shutdown: Shutdown) -> anyhow::Result<()> {
    let settings = &context.settings;
    let topics = &context.topics;
    let writer = super::connect_clickhouse(&settings.clickhouse).await?;
    let producer = kafka::producer(&settings.kafka, "hunter-sink").context("kafka producer")?;
    let inputs = Inputs {
        leads: Codec::new(&topics.leads, context.registry.clone()),
        referrals: Codec::new(&topics.referrals, context.registry.clone()),
        referrals_topic: topics.referrals.clone(),
        runs: Codec::new(&topics.sync_runs, context.registry.clone()),
        leads_topic: topics.leads.clone(),
        runs_topic: topics.sync_runs.clone(),
        dlq_topic: topics.dlq.clone(),
    };
    // One consumer (and group) per topic: each stream batches and commits on its own, and a
    // restart after a crash resumes each at once. (One consumer subscribed to all four topics
    // did not get its partitions back after a kill -9 on tansu 0.6.0: measured, see the note.)
    let streams = [
        (topics.leads.as_str(), "sink-leads"),
        (topics.referrals.as_str(), "sink-referrals"),
        (topics.sync_runs.as_str(), "sink-sync-runs"),
        (topics.dlq.as_str(), "sink-dlq"),
    ];
    let loops = streams.map(|(topic, group)| {
        stream(
            &context,
            &writer,
            &producer,
            &inputs,
            topic,
            group,
            shutdown.clone(),
        )
    });
    futures::future::try_join_all(loops).await?;
    Ok(())
}

/// A batch ClickHouse refused: consumption is paused until it goes in.
struct Stall {
    /// Failed attempts so far, for the backoff.
    attempts: u32,
    /// When to try the batch again.
    retry_at: tokio::time::Instant,
}

/// One input topic's loop: consume → rows → batch → insert → store offsets.
///
/// While ClickHouse refuses a batch the stream is *stalled*: its partitions are paused (the
/// consumer drops what it had prefetched and fetches nothing more, so memory holds one batch),
/// the batch is retried with backoff, and the loop keeps polling the consumer so that it stays
/// in its group however long the outage lasts. Once the batch is in, its offsets are stored and
/// consumption resumes where it stopped.
async fn stream(
    context: &Context,
    writer: &Writer,
    producer: &FutureProducer,
    inputs: &Inputs,
    topic: &str,
    group: &str,
    mut shutdown: Shutdown,
) -> anyhow::Result<()> {
    let settings = &context.settings;
    let consumer = kafka::consumer(&settings.kafka, &context.group_id(group), "hunter-sink")
        .context("kafka consumer")?;
    consumer
        .subscribe(&[topic])
        .with_context(|| format!("subscribe to {topic}"))?;
    let max_rows = settings.sink.batch_rows;
    let max_wait = settings.sink.batch_max_wait;
    let label = group.trim_start_matches("sink-");
    metrics::gauge!(names::SINK_CONSUMPTION_PAUSED, "stream" => label.to_owned()).set(0.0);
    tracing::info!(topic, max_rows, ?max_wait, "sink consuming");

    let mut batch = Batch::default();
    let mut stall: Option<Stall> = None;
    let result: anyhow::Result<()> = async {
        loop {
            let deadline = match &stall {
                Some(stall) => Some(stall.retry_at),
                None => batch
                    .started
                    .map(|started| tokio::time::Instant::from_std(started + max_wait)),
            };
            tokio::select! {
                biased;
                _ = shutdown.wait() => break,
                _ = sleep_until(deadline), if deadline.is_some() => {
                    flush(writer, &consumer, &mut batch, &mut stall, label).await;
                }
                received = consumer.recv() => {
                    let message = received.context("kafka consume")?;
                    let topic = message.topic().to_owned();
                    let (partition, offset) = (message.partition(), message.offset());
                    let payload = message.payload().unwrap_or_default().to_vec();
                    let headers: Vec<(String, String)> = message
                        .headers()
                        .map(|all| {
                            all.iter()
                                .map(|h| (h.key.to_owned(), String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned()))
                                .collect()
                        })
                        .unwrap_or_default();
                    drop(message);
                    if let Err((class, reason)) = add(inputs, &mut batch, &topic, partition, offset, &headers, &payload).await {
                        dead_letter(producer, &inputs.dlq_topic, &topic, partition, offset, payload.clone(), class, &reason).await?;
                    }
                    batch.cover(&topic, partition, offset, payload.len());
                    if stall.is_some() {
                        // A partition assigned during the stall (a rebalance) is not paused yet.
                        pause(&consumer, true);
                    } else if batch.rows() >= max_rows || batch.bytes >= MAX_BATCH_BYTES {
                        flush(writer, &consumer, &mut batch, &mut stall, label).await;
                    }
                }
            }
        }
        // Shutdown: one last try to write what was consumed, so it need not be replayed.
        if !batch.is_empty() {
            flush(writer, &consumer, &mut batch, &mut stall, label).await;
            if stall.is_some() {
                anyhow::bail!("shutdown while clickhouse was refusing inserts: the batch will be replayed");
            }
        }
        Ok(())
    }
    .await;

    if let Err(error) = consumer.commit_consumer_state(CommitMode::Sync) {
        tracing::debug!(%error, "final commit");
    }
    super::drop_consumer(consumer);
    result
}

/// Pauses (or resumes) every partition the consumer holds; failure only costs memory or time.
fn pause(consumer: &StreamConsumer, paused: bool) {
    let result = consumer.assignment().and_then(|assignment| {
        if paused {
            consumer.pause(&assignment)
        } else {
            consumer.resume(&assignment)
        }
    });
    if let Err(error) = result {
        tracing::warn!(%error, paused, "pausing or resuming consumption failed");
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Turns one message into rows of the batch; an error names a class and the reason.
async fn add(
    inputs: &Inputs,
    batch: &mut Batch,
    topic: &str,
    partition: i32,
    offset: i64,
    headers: &[(String, String)],
    payload: &[u8],
) -> Result<(), (&'static str, String)> {
    if topic == inputs.leads_topic {
        let lead = inputs
            .leads
            .decode(payload)
            .await
            .map_err(|error| ("decode", error.to_string()))?;
        let row = LeadRow::from_lead(&lead).map_err(|error| ("schema", error.to_string()))?;
        batch.history.push(LeadHistoryRow::from_lead_row(&row));
        batch.leads.push(row);
        batch.fetched.extend(lead.fetched_at);
    } else if topic == inputs.referrals_topic {
        match inputs.referrals.decode(payload).await {
            Ok(referral) => batch.referrals.push(ReferralRow::from_referral(&referral)),
            // The processor dead-letters an unreadable referral; a second dead letter of the
            // same record from here would only be noise.
            Err(error) => {
                tracing::debug!(partition, offset, %error, "unreadable referral left to the processor's dead letter")
            }
        }
    } else if topic == inputs.runs_topic {
        let run = inputs
            .runs
            .decode(payload)
            .await
            .map_err(|error| ("decode", error.to_string()))?;
        batch.runs.push(SyncRunRow::from_run(&run));
    } else {
        let header = |key: &str| {
            headers
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
        };
        batch
            .dead_letters
            .push(DlqRow::new(partition, offset, header, payload));
    }
    Ok(())
}

/// Tries to insert the batch once. On success its offsets are stored, the batch is emptied and
/// a stall ends (consumption resumes). On failure the stream stalls: consumption pauses and the
/// same batch is tried again after a backoff (up to 10 s); nothing is stored, so a crash during
/// a stall replays the batch, which collapses into whatever part of it was written.
async fn flush(
    writer: &Writer,
    consumer: &StreamConsumer,
    batch: &mut Batch,
    stall: &mut Option<Stall>,
    label: &str,
) {
    if let Err((table, error)) = insert_all(writer, batch).await {
        metrics::counter!(names::SINK_FAILURES_TOTAL, "table" => table, "class" => error.class())
            .increment(1);
        let attempts = stall.as_ref().map_or(0, |stall| stall.attempts) + 1;
        if stall.is_none() {
            pause(consumer, true);
            metrics::gauge!(names::SINK_CONSUMPTION_PAUSED, "stream" => label.to_owned()).set(1.0);
        }
        let wait = super::backoff(
            attempts - 1,
            Duration::from_millis(200),
            Duration::from_secs(10),
        );
        tracing::warn!(table, rows = batch.rows(), attempts, error = %error, retry_in = ?wait, "clickhouse insert failed; consumption paused, retrying");
        *stall = Some(Stall {
            attempts,
            retry_at: tokio::time::Instant::now() + wait,
        });
        return;
    }
    if let Some(ended) = stall.take() {
        pause(consumer, false);
        metrics::gauge!(names::SINK_CONSUMPTION_PAUSED, "stream" => label.to_owned()).set(0.0);
        tracing::info!(
            attempts = ended.attempts,
            rows = batch.rows(),
            "clickhouse took the batch; consumption resumed"
        );
    }
    let now = Timestamp::now().micros();
    for fetched in &batch.fetched {
        let seconds = (now - fetched.micros()).max(0) as f64 / 1e6;
        metrics::histogram!(names::SINK_END_TO_END_LATENCY_SECONDS).record(seconds);
    }
    for ((topic, partition), offset) in &batch.offsets {
        if let Err(error) = consumer.store_offset(topic, *partition, *offset) {
            tracing::warn!(topic, partition, offset, %error, "offset not stored (partition revoked); it will be replayed");
        }
    }
    *batch = Batch::default();
}

async fn insert_all(
    writer: &Writer,
    batch: &Batch,
) -> Result<(), (&'static str, hunter_clickhouse::Error)> {
    timed(writer, "leads", &batch.leads).await?;
    timed(writer, "lead_history", &batch.history).await?;
    timed(writer, "referrals", &batch.referrals).await?;
    timed(writer, "sync_runs", &batch.runs).await?;
    timed(writer, "dlq", &batch.dead_letters).await?;
    Ok(())
}

async fn timed<T: hunter_clickhouse::RowOwned + hunter_clickhouse::RowWrite>(
    writer: &Writer,
    table: &'static str,
    rows: &[T],
) -> Result<(), (&'static str, hunter_clickhouse::Error)> {
    if rows.is_empty() {
        return Ok(());
    }
    let started = Instant::now();
    writer
        .insert(table, rows)
        .await
        .map_err(|error| (table, error))?;
    metrics::histogram!(names::SINK_INSERT_DURATION_SECONDS, "table" => table)
        .record(started.elapsed().as_secs_f64());
    metrics::counter!(names::SINK_BATCHES_TOTAL, "table" => table).increment(1);
    metrics::counter!(names::SINK_ROWS_WRITTEN_TOTAL, "table" => table)
        .increment(rows.len() as u64);
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn dead_letter(
    producer: &FutureProducer,
    dlq: &str,
    origin: &str,
    partition: i32,
    offset: i64,
    payload: Vec<u8>,
    class: &'static str,
    reason: &str,
) -> anyhow::Result<()> {
    tracing::warn!(topic = origin, partition, offset, error = %reason, "record dead-lettered by the sink");
    metrics::counter!(names::DLQ_RECORDS_TOTAL, "stage" => "sink", "class" => class).increment(1);
    let headers = DeadLetter {
        stage: "sink",
        error: reason,
        error_class: class,
        original_topic: origin,
        original_partition: Some(partition),
        original_offset: Some(offset),
    }
    .headers();
    producer
        .send(
            FutureRecord::<(), Vec<u8>>::to(dlq)
                .payload(&payload)
                .headers(headers),
            Timeout::Never,
        )
        .await
        .map_err(|(error, _)| anyhow::anyhow!("dead-letter produce failed: {error}"))?;
    Ok(())
}
