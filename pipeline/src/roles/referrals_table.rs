//! The `referrals` table written by the processor (`HUNTER_SINK_REFERRALS_WRITER`, see
//! docs/clickhouse.md "Who writes `referrals`"): the processor and the sink chained for that
//! table, so the 5 kB referral topic is read once, not twice.
//!
//! The processor hands over each referral once what it produced is acknowledged (a lead, a
//! dead letter, or nothing for a repeat), in consumption order, with the row of the referral
//! version when the record could be decoded (what the sink's second read made of it) and, for
//! a record `hunter dlq replay` re-published, its `dlq_replays` row. Rows
//! are batched like the sink's (rows, bytes, time); one batch is inserted at a time while the
//! next one fills, and a batch's offsets are stored only once ClickHouse took it. So a
//! referral's offset moves only after the broker has its lead and ClickHouse its row; a crash
//! in between replays it, and the replay collapses (dedupe on the lead topic, the insert
//! deduplication token and ReplacingMergeTree on the table).
//!
//! While ClickHouse refuses a batch, the processor pauses its partitions as the sink does
//! (nothing more is consumed, so nothing more reaches the lead topic either: memory stays
//! bounded by the referrals in flight and one batch), retries the batch with backoff, and
//! keeps polling so that it stays in its group. The paused gauge and the failure counters are
//! the sink's (stream `referrals`, table `referrals`), so dashboards and alerts read the same.

use std::time::{Duration, Instant};

use hunter_clickhouse::writer::ReadWriter;
use hunter_core::kafka::GroupConsumer;
use hunter_core::telemetry::names;
use tokio::task::JoinHandle;

use super::process::Written;
use super::sink::{self, Batch, MAX_BATCH_BYTES};

/// The stream label of the paused gauge: the sink's, for the same table.
const STREAM: &str = "referrals";

pub(super) type Inserted = (Batch, Result<(), (&'static str, hunter_clickhouse::Error)>);

/// A batch ClickHouse refused, waiting to be tried again.
struct Refused {
    batch: Batch,
    attempts: u32,
    retry_at: tokio::time::Instant,
}

pub(super) struct ReferralsTable {
    writer: ReadWriter,
    topic: String,
    max_rows: usize,
    max_wait: Duration,
    insert_timeout: Duration,
    /// Rows of acknowledged referrals and the offsets they cover, not sent yet.
    filling: Batch,
    /// The batch being inserted: one at a time, so offsets are stored in order.
    inserting: Option<JoinHandle<Inserted>>,
    refused: Option<Refused>,
    /// A cleared batch, reused for the next one (their vectors keep their room).
    spare: Option<Batch>,
}

impl ReferralsTable {
    pub(super) fn new(
        writer: ReadWriter,
        topic: &str,
        settings: &hunter_core::config::SinkSettings,
    ) -> Self {
        metrics::gauge!(names::SINK_CONSUMPTION_PAUSED, "stream" => STREAM).set(0.0);
        ReferralsTable {
            writer,
            topic: topic.to_owned(),
            max_rows: settings.batch_rows,
            max_wait: settings.batch_max_wait,
            insert_timeout: settings.insert_timeout,
            filling: Batch::default(),
            inserting: None,
            refused: None,
            spare: None,
        }
    }

    /// One acknowledged referral: its row (none when it could not be decoded), the replay it
    /// is (if one) and its offset.
    pub(super) fn add(&mut self, partition: i32, offset: i64, written: Written) {
        let Written {
            timestamp,
            bytes,
            row,
            replay,
        } = written;
        self.filling.referrals.extend(row);
        self.filling.replays.extend(replay);
        self.filling
            .cover(&self.topic, partition, offset, timestamp, bytes);
    }

    /// Whether the loop may consume more: not while a full batch waits behind the one being
    /// inserted (a refused batch pauses the partitions instead, and the loop goes on polling).
    pub(super) fn accepting(&self) -> bool {
        self.refused.is_some() || self.inserting.is_none() || !self.full()
    }

    /// Nothing batched, being inserted or refused: every stored offset is final.
    pub(super) fn is_idle(&self) -> bool {
        self.filling.is_empty() && self.inserting.is_none() && self.refused.is_none()
    }

    pub(super) fn is_stalled(&self) -> bool {
        self.refused.is_some()
    }

    fn full(&self) -> bool {
        self.filling.rows() >= self.max_rows || self.filling.bytes >= MAX_BATCH_BYTES
    }

    /// When [`ReferralsTable::step`] has something to do without an insert ending: the
    /// refused batch's retry, or the filling batch's time limit.
    pub(super) fn deadline(&self) -> Option<tokio::time::Instant> {
        if self.inserting.is_some() {
            return None;
        }
        match &self.refused {
            Some(refused) => Some(refused.retry_at),
            None => self
                .filling
                .started
                .map(|started| tokio::time::Instant::from_std(started + self.max_wait)),
        }
    }

    /// Starts an insert when one is due and none runs: the refused batch once its wait is
    /// over, else the filling batch once it is full or has waited its time.
    pub(super) fn step(&mut self) {
        self.step_with(false);
    }

    /// [`ReferralsTable::step`]; `now` sends the filling batch whatever its size and age.
    fn step_with(&mut self, now_anyway: bool) {
        if self.inserting.is_some() {
            return;
        }
        let now = tokio::time::Instant::now();
        if let Some(refused) = &self.refused {
            if refused.retry_at <= now
                && let Some(refused) = self.refused.as_mut()
            {
                let batch = std::mem::take(&mut refused.batch);
                self.start(batch);
            }
            return;
        }
        let waited = self
            .filling
            .started
            .is_some_and(|started| started.elapsed() >= self.max_wait);
        if !self.filling.is_empty() && (now_anyway || self.full() || waited) {
            let next = self.spare.take().unwrap_or_default();
            let batch = std::mem::replace(&mut self.filling, next);
            self.start(batch);
        }
    }

    fn start(&mut self, batch: Batch) {
        let (writer, timeout) = (self.writer.clone(), self.insert_timeout);
        self.inserting = Some(tokio::spawn(async move {
            let result = sink::insert_all(&writer, timeout, &batch).await;
            (batch, result)
        }));
    }

    /// The running insert's end (pending forever when none runs).
    pub(super) async fn inserted(&mut self) -> Inserted {
        match self.inserting.as_mut() {
            Some(handle) => {
                let joined = handle.await;
                self.inserting = None;
                joined.unwrap_or_else(|error| {
                    // The insert task panicked: its batch is gone, so the offsets it covered
                    // are never stored and a restart replays them.
                    panic!("the referrals insert panicked: {error}")
                })
            }
            None => std::future::pending().await,
        }
    }

    /// What the loop does with an insert's end: stores the batch's offsets once ClickHouse
    /// took it, or pauses consumption and schedules the batch's retry.
    pub(super) fn settle(&mut self, consumer: &GroupConsumer, inserted: Inserted) {
        let (mut batch, result) = inserted;
        match result {
            Ok(()) => {
                if let Some(ended) = self.refused.take() {
                    consumer.set_paused(false);
                    metrics::gauge!(names::SINK_CONSUMPTION_PAUSED, "stream" => STREAM).set(0.0);
                    tracing::info!(
                        attempts = ended.attempts,
                        rows = batch.rows(),
                        "clickhouse took the referrals batch; consumption resumed"
                    );
                }
                for ((_, partition), span) in &batch.offsets {
                    consumer.store_offset(*partition, span.last);
                }
                batch.clear();
                self.spare = Some(batch);
            }
            Err((table, error)) => {
                metrics::counter!(names::SINK_FAILURES_TOTAL, "table" => table, "class" => error.class())
                    .increment(1);
                let attempts = self.refused.as_ref().map_or(0, |r| r.attempts) + 1;
                if self.refused.is_none() {
                    consumer.set_paused(true);
                    metrics::gauge!(names::SINK_CONSUMPTION_PAUSED, "stream" => STREAM).set(1.0);
                }
                let wait = super::backoff(
                    attempts - 1,
                    Duration::from_millis(200),
                    Duration::from_secs(10),
                );
                tracing::warn!(table, rows = batch.rows(), attempts, error = %error, retry_in = ?wait, "clickhouse insert of referrals failed; consumption paused, retrying");
                self.refused = Some(Refused {
                    batch,
                    attempts,
                    retry_at: tokio::time::Instant::now() + wait,
                });
            }
        }
    }

    /// At shutdown, with nothing in flight any more: the running insert, then one more try of
    /// what is refused or batched, so it need not be replayed. An error means offsets were
    /// left unstored (they are read again after the restart).
    pub(super) async fn finish(&mut self, consumer: &GroupConsumer) -> anyhow::Result<()> {
        let started = Instant::now();
        if self.inserting.is_some() {
            let inserted = self.inserted().await;
            self.settle(consumer, inserted);
        }
        if let Some(refused) = self.refused.as_mut() {
            refused.retry_at = tokio::time::Instant::now();
        }
        self.step();
        if self.inserting.is_some() {
            let inserted = self.inserted().await;
            self.settle(consumer, inserted);
        }
        if !self.is_stalled() && !self.filling.is_empty() {
            self.step_with(true);
            let inserted = self.inserted().await;
            self.settle(consumer, inserted);
        }
        anyhow::ensure!(
            !self.is_stalled(),
            "shutdown while clickhouse was refusing the referrals rows: their referrals will be read again"
        );
        tracing::debug!(elapsed = ?started.elapsed(), "referrals rows written at shutdown");
        Ok(())
    }
}
