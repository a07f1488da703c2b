//! The sink: leads into ClickHouse.
//!
//! consume `hunter.leads.v1` → decode → row → batch (by rows and time) → insert → store the
//! offsets of every message in the batch once ClickHouse acknowledged the insert.
//!
//! Invariants:
//! - an offset is stored only after the insert holding its row returned `Ok`; a crash before
//!   that replays the batch, and `leads` (ReplacingMergeTree on `version`) keeps one live row;
//! - while ClickHouse is unreachable the batch is retried with backoff and nothing new is
//!   consumed, so memory stays bounded by one batch;
//! - a lead the table cannot take goes to the dead-letter topic (acknowledged before its
//!   offset is stored) and never blocks the partition.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hunter_clickhouse::rows::LeadRow;
use hunter_clickhouse::writer::Writer;
use hunter_core::codec::Codec;
use hunter_core::kafka::{self, DeadLetter};
use hunter_core::records::Lead;
use hunter_core::shutdown::Shutdown;
use hunter_core::telemetry::names;
use rdkafka::Message;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;

use super::Context;

const TABLE: &str = "leads";

/// One batch: its rows and, per partition, the highest offset it covers.
#[derive(Default)]
struct Batch {
    rows: Vec<LeadRow>,
    offsets: BTreeMap<i32, i64>,
    started: Option<Instant>,
}

impl Batch {
    fn cover(&mut self, partition: i32, offset: i64) {
        let highest = self.offsets.entry(partition).or_insert(offset);
        *highest = (*highest).max(offset);
        self.started.get_or_insert_with(Instant::now);
    }

    fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }
}

pub async fn run(context: Context, mut shutdown: Shutdown) -> anyhow::Result<()> {
    let settings = &context.settings;
    let topics = &context.topics;
    let writer = super::connect_clickhouse(&settings.clickhouse).await?;
    let consumer = kafka::consumer(&settings.kafka, &context.group_id("sink"), "hunter-sink")
        .context("kafka consumer")?;
    consumer
        .subscribe(&[topics.leads.as_str()])
        .context("subscribe to the lead topic")?;
    let producer = kafka::producer(&settings.kafka, "hunter-sink").context("kafka producer")?;
    let leads = Codec::<Lead>::new(&topics.leads, context.registry.clone());
    let max_rows = settings.sink.batch_rows;
    let max_wait = settings.sink.batch_max_wait;
    tracing::info!(topic = %topics.leads, table = TABLE, max_rows, ?max_wait, "sink consuming");

    let mut batch = Batch::default();
    let result: anyhow::Result<()> = async {
        loop {
            let deadline = batch
                .started
                .map(|started| tokio::time::Instant::from_std(started + max_wait));
            tokio::select! {
                biased;
                _ = shutdown.wait() => break,
                _ = sleep_until(deadline), if deadline.is_some() => {
                    flush(&writer, &consumer, &topics.leads, &mut batch, &mut shutdown).await?;
                }
                received = consumer.recv() => {
                    let message = received.context("kafka consume")?;
                    let (partition, offset) = (message.partition(), message.offset());
                    let payload = message.payload().unwrap_or_default().to_vec();
                    drop(message);
                    match to_row(&leads, &payload).await {
                        Ok(row) => batch.rows.push(row),
                        Err((class, reason)) => {
                            dead_letter(&producer, &topics.dlq, &topics.leads, partition, offset, payload, class, &reason).await?;
                        }
                    }
                    batch.cover(partition, offset);
                    if batch.rows.len() >= max_rows {
                        flush(&writer, &consumer, &topics.leads, &mut batch, &mut shutdown).await?;
                    }
                }
            }
        }
        // Shutdown: write what was consumed so it need not be replayed.
        if !batch.is_empty() {
            flush(&writer, &consumer, &topics.leads, &mut batch, &mut shutdown).await?;
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

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

async fn to_row(leads: &Codec<Lead>, payload: &[u8]) -> Result<LeadRow, (&'static str, String)> {
    let lead = leads
        .decode(payload)
        .await
        .map_err(|error| ("decode", error.to_string()))?;
    LeadRow::from_lead(&lead).map_err(|error| ("schema", error.to_string()))
}

/// Inserts the batch, retrying with backoff until ClickHouse acknowledges it, then stores its
/// offsets. On shutdown during retries it gives up without storing: the batch is replayed later.
async fn flush(
    writer: &Writer,
    consumer: &StreamConsumer,
    topic: &str,
    batch: &mut Batch,
    shutdown: &mut Shutdown,
) -> anyhow::Result<()> {
    let mut attempt = 0u32;
    loop {
        let started = Instant::now();
        match writer.insert_leads(&batch.rows).await {
            Ok(()) => {
                let elapsed = started.elapsed().as_secs_f64();
                metrics::histogram!(names::SINK_INSERT_DURATION_SECONDS, "table" => TABLE)
                    .record(elapsed);
                metrics::counter!(names::SINK_BATCHES_TOTAL, "table" => TABLE).increment(1);
                metrics::counter!(names::SINK_ROWS_WRITTEN_TOTAL, "table" => TABLE)
                    .increment(batch.rows.len() as u64);
                tracing::debug!(rows = batch.rows.len(), elapsed, "batch inserted");
                break;
            }
            Err(error) => {
                metrics::counter!(names::SINK_FAILURES_TOTAL, "table" => TABLE, "class" => error.class()).increment(1);
                let wait =
                    super::backoff(attempt, Duration::from_millis(200), Duration::from_secs(10));
                tracing::warn!(rows = batch.rows.len(), attempt, error = %error, retry_in = ?wait, "clickhouse insert failed; retrying");
                attempt += 1;
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.wait() => anyhow::bail!("shutdown while clickhouse was failing: the batch will be replayed"),
                }
            }
        }
    }
    for (partition, offset) in &batch.offsets {
        if let Err(error) = consumer.store_offset(topic, *partition, *offset) {
            tracing::warn!(partition, offset, %error, "offset not stored (partition revoked); it will be replayed");
        }
    }
    *batch = Batch::default();
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
    tracing::warn!(partition, offset, error = %reason, "lead dead-lettered");
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
