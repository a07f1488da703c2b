//! The sink: Hunter's topics into ClickHouse.
//!
//! consume `hunter.leads.v1`, `partner-center.referrals.v1` (unless the processor writes
//! `referrals`: `HUNTER_SINK_REFERRALS_WRITER`, docs/clickhouse.md), `hunter.sync-runs.v1`,
//! `hunter.dlq.v1` and `hunter.referral-action-results.v1` → decode → rows → batch (by rows,
//! bytes and time) → insert into `leads` and `lead_history`, `referrals`, `sync_runs`, `dlq`,
//! `referral_actions` → store the offsets of every message in the
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
//!   in; the process never exits for an outage. An insert that gets no answer within
//!   `HUNTER_SINK_INSERT_TIMEOUT_MS` is such a refusal (class `timeout`): a hung or partitioned
//!   server stalls the stream like a stopped one instead of holding one insert forever;
//! - where the server supports it (ClickHouse 22.2 and later, tables set up by migration 0008),
//!   every insert carries a deduplication token made of the batch's topic, partitions and offset
//!   spans, so a retried batch whose first attempt did reach a table is not written to it twice;
//!   on older servers ReplacingMergeTree collapses such rows;
//! - a record a table cannot take goes to the dead-letter topic (acknowledged before its offset
//!   is stored) and never blocks the partition; one too large for the dead-letter topic is
//!   dead-lettered by reference (`hunter_core::size`);
//! - a record that cannot be decoded *yet* (the schema registry is unreachable) is not the
//!   record's fault: the stream waits on it and retries, and dead-letters nothing; a registry
//!   that refuses the credentials or the certificate stops the sink with the setting named.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hunter_clickhouse::rows::{
    DlqReplayRow, DlqRow, LeadHistoryRow, LeadRow, ReferralActionRow, ReferralRow, SyncRunRow,
};
use hunter_clickhouse::writer::ReadWriter;
use hunter_core::codec::{Codec, CodecError};
use hunter_core::kafka::{
    self, DeadLetter, Fault, Fetch, GroupConsumer, Position, RecordError, Subscription,
};
use hunter_core::records::{
    Lead, Referral, ReferralActionResult, ReferralVersion, SyncRun, Timestamp,
};
use hunter_core::shutdown::Shutdown;
use hunter_core::telemetry::names;
use rdkafka::Message;

use super::Context;

/// Payload bytes per batch at most (besides the row limit from the settings).
pub(super) const MAX_BATCH_BYTES: usize = 32 * 1024 * 1024;

/// Where a batch's messages came from in one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Span {
    /// The lowest and highest offset consumed (a partition is consumed in order, so the batch
    /// holds every message of the partition between them).
    first: i64,
    pub(super) last: i64,
    /// The broker timestamp of the message at `first` (milliseconds), so that a topic deleted
    /// and created again under the same name, whose offsets start over, gives other tokens.
    first_timestamp: Option<i64>,
}

/// One batch: the rows of each table and, per topic and partition, the offsets it covers.
#[derive(Default)]
pub(super) struct Batch {
    leads: Vec<LeadRow>,
    history: Vec<LeadHistoryRow>,
    pub(super) referrals: Vec<ReferralRow>,
    /// When the source read each lead's referral version, for the end-to-end latency.
    fetched: Vec<Timestamp>,
    runs: Vec<SyncRunRow>,
    dead_letters: Vec<DlqRow>,
    /// Records `hunter dlq replay` re-published, read back from their topic.
    pub(super) replays: Vec<DlqReplayRow>,
    /// Write-back steps (docs/writeback.md).
    actions: Vec<ReferralActionRow>,
    pub(super) offsets: BTreeMap<(String, i32), Span>,
    pub(super) bytes: usize,
    pub(super) started: Option<Instant>,
}

impl Batch {
    pub(super) fn cover(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        timestamp: Option<i64>,
        bytes: usize,
    ) {
        let span = self
            .offsets
            .entry((topic.to_owned(), partition))
            .or_insert(Span {
                first: offset,
                last: offset,
                first_timestamp: timestamp,
            });
        if offset < span.first {
            span.first = offset;
            span.first_timestamp = timestamp;
        }
        span.last = span.last.max(offset);
        self.bytes += bytes;
        self.started.get_or_insert_with(Instant::now);
    }

    /// The batch's insert deduplication token: its topic, partitions and offset spans, which
    /// determine its messages and so its rows (`t|p:first-last@timestamp,...`, sorted). A retry
    /// of the same batch carries the same token; any other batch carries another.
    fn deduplication_token(&self) -> String {
        let mut token = String::from("hunter-sink-v1");
        let mut topic_before: Option<&str> = None;
        for ((topic, partition), span) in &self.offsets {
            if topic_before != Some(topic.as_str()) {
                token.push('|');
                token.push_str(topic);
                topic_before = Some(topic);
            }
            token.push_str(&format!(
                "|{partition}:{}-{}@{}",
                span.first,
                span.last,
                span.first_timestamp.unwrap_or(-1)
            ));
        }
        token
    }

    pub(super) fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// Empties the batch but keeps its vectors' room: a stream's batches are alike, so the
    /// next one does not grow its vectors of wide rows again.
    pub(super) fn clear(&mut self) {
        self.leads.clear();
        self.history.clear();
        self.referrals.clear();
        self.fetched.clear();
        self.runs.clear();
        self.dead_letters.clear();
        self.replays.clear();
        self.actions.clear();
        self.offsets.clear();
        self.bytes = 0;
        self.started = None;
    }

    pub(super) fn rows(&self) -> usize {
        self.leads.len()
            + self.referrals.len()
            + self.runs.len()
            + self.dead_letters.len()
            + self.replays.len()
            + self.actions.len()
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
    action_results: Codec<ReferralActionResult>,
    action_results_topic: String,
}

pub async fn run(context: Context, shutdown: Shutdown) -> anyhow::Result<()> {
    let settings = &context.settings;
    let topics = &context.topics;
    let writer = super::clickhouse_inserter(
        &settings.clickhouse,
        "the sink",
        " or fix HUNTER_CLICKHOUSE_USER",
    )
    .await?;
    let producer = kafka::producer(&settings.kafka, "hunter-sink").context("kafka producer")?;
    let dead_letter = DeadLetter::new(producer, &topics.dlq, "sink");
    let inputs = Inputs {
        leads: Codec::new(&topics.leads, context.registry.clone()),
        referrals: Codec::new(&topics.referrals, context.registry.clone()),
        referrals_topic: topics.referrals.clone(),
        runs: Codec::new(&topics.sync_runs, context.registry.clone()),
        leads_topic: topics.leads.clone(),
        runs_topic: topics.sync_runs.clone(),
        dlq_topic: topics.dlq.clone(),
        action_results: Codec::new(&topics.referral_action_results, context.registry.clone()),
        action_results_topic: topics.referral_action_results.clone(),
    };
    // One consumer (and group) per topic: each stream batches and commits on its own, and a
    // restart after a crash resumes each at once (and see `hunter_core::kafka::consume` for
    // what one consumer of all four topics did on tansu).
    // The referral topic only when the sink writes `referrals` (HUNTER_SINK_REFERRALS_WRITER;
    // in doubt it does: rows written twice collapse).
    let processor_writes_referrals = super::processor_writes_referrals(settings, false).await;
    let streams = [
        (topics.leads.as_str(), "sink-leads"),
        (topics.referrals.as_str(), super::SINK_REFERRALS_GROUP),
        (topics.sync_runs.as_str(), "sink-sync-runs"),
        (topics.dlq.as_str(), "sink-dlq"),
        (
            topics.referral_action_results.as_str(),
            "sink-referral-action-results",
        ),
    ];
    let loops = streams
        .into_iter()
        .filter(|(_, group)| !(processor_writes_referrals && *group == super::SINK_REFERRALS_GROUP))
        .map(|(topic, group)| {
            stream(
                &context,
                &writer,
                &dead_letter,
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
    writer: &ReadWriter,
    dead_letter: &DeadLetter,
    inputs: &Inputs,
    topic: &str,
    group: &str,
    mut shutdown: Shutdown,
) -> anyhow::Result<()> {
    let settings = &context.settings;
    let mut consumer = GroupConsumer::subscribe(
        &settings.kafka,
        Subscription {
            stage: "sink",
            group_id: &context.group_id(group),
            client_id: "hunter-sink",
            topic,
            fetch: Fetch::Bulk,
        },
        shutdown.clone(),
    )
    .with_context(|| format!("kafka consumer of {topic}"))?;
    let max_rows = settings.sink.batch_rows;
    let max_wait = settings.sink.batch_max_wait;
    let insert_timeout = settings.sink.insert_timeout;
    let label = group.trim_start_matches("sink-");
    metrics::gauge!(names::SINK_CONSUMPTION_PAUSED, "stream" => label.to_owned()).set(0.0);
    tracing::info!(topic, max_rows, ?max_wait, "sink consuming");

    let mut batch = Batch::default();
    let mut stall: Option<Stall> = None;
    let mut renewal_tick = tokio::time::interval(Duration::from_secs(1));
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
                // The tansu workaround (`hunter_core::kafka::consume`): when a rejoin did not
                // end the orphaning, a new group member, once nothing is batched (no offset of
                // this consumer waits to be stored). Seen in the kill test: a restarted sink
                // left owning nothing while its group's records waited.
                _ = renewal_tick.tick(), if batch.is_empty() && stall.is_none() => {
                    if consumer.wants_renewal() {
                        consumer.renew().context("kafka consumer renewal")?;
                    }
                }
                _ = sleep_until(deadline), if deadline.is_some() => {
                    flush(writer, insert_timeout, &consumer, &mut batch, &mut stall, label).await;
                }
                received = consumer.recv() => {
                    let message = received.context("kafka consume")?;
                    let topic = message.topic().to_owned();
                    let (partition, offset) = (message.partition(), message.offset());
                    let timestamp = message.timestamp().to_millis();
                    let payload = message.payload().unwrap_or_default().to_vec();
                    let key = message.key().map(<[u8]>::to_vec);
                    let headers = kafka::record_headers(&message);
                    drop(message);
                    match add(inputs, &mut batch, &topic, partition, offset, timestamp, &headers, &payload, &shutdown).await {
                        Ok(()) => {}
                        Err(Unadded::DeadLetter(error)) => {
                            let at = Position { topic: &topic, partition, offset };
                            dead_letter
                                .record(&error, at, key.as_deref(), &headers, &payload)
                                .await
                                .map_err(|error| anyhow::anyhow!("dead-letter produce failed: {error}"))?;
                        }
                        // Shutdown while the registry was away: this message is not in the
                        // batch and its offset is not stored; it is read again after a restart.
                        Err(Unadded::Stopped) => break,
                        Err(Unadded::Fatal(error)) => return Err(error),
                    }
                    batch.cover(&topic, partition, offset, timestamp, payload.len());
                    if stall.is_some() {
                        // A partition assigned during the stall (a rebalance) is not paused yet.
                        consumer.set_paused(true);
                    } else if batch.rows() >= max_rows || batch.bytes >= MAX_BATCH_BYTES {
                        flush(writer, insert_timeout, &consumer, &mut batch, &mut stall, label).await;
                    }
                }
            }
        }
        // Shutdown: one last try to write what was consumed, so it need not be replayed.
        if !batch.is_empty() {
            flush(writer, insert_timeout, &consumer, &mut batch, &mut stall, label).await;
            if stall.is_some() {
                anyhow::bail!("shutdown while clickhouse was refusing inserts: the batch will be replayed");
            }
        }
        Ok(())
    }
    .await;

    consumer.close();
    result
}

pub(super) async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Why a message added no rows.
enum Unadded {
    /// The record's fault: dead-letter it.
    DeadLetter(RecordError),
    /// Shutdown came while waiting for the schema registry.
    Stopped,
    /// The registry refuses Hunter (credentials, certificate): stop the sink.
    Fatal(anyhow::Error),
}

impl From<CodecError> for Unadded {
    fn from(error: CodecError) -> Self {
        match Fault::from(error) {
            Fault::Transient(_) => Unadded::Stopped,
            Fault::Fatal(error) => Unadded::Fatal(anyhow::anyhow!("{error}")),
            Fault::Record(error) => Unadded::DeadLetter(error),
        }
    }
}

/// Turns one message into rows of the batch; waits out a registry outage.
#[allow(clippy::too_many_arguments)]
async fn add(
    inputs: &Inputs,
    batch: &mut Batch,
    topic: &str,
    partition: i32,
    offset: i64,
    timestamp: Option<i64>,
    headers: &[(String, Vec<u8>)],
    payload: &[u8],
    shutdown: &Shutdown,
) -> Result<(), Unadded> {
    let mut waiting = shutdown.clone();
    let header = |key: &str| {
        headers
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    };
    // A record `hunter dlq replay` re-published: the replay is recorded in the batch that
    // covers the record's offset, whatever becomes of the record (rows, or a dead letter again).
    if topic != inputs.dlq_topic
        && let Some(replay) =
            DlqReplayRow::from_headers(topic, partition, offset, timestamp, header)
    {
        batch.replays.push(replay);
    }
    if topic == inputs.leads_topic {
        let lead = inputs
            .leads
            .decode_patiently(payload, &mut waiting, "sink")
            .await?;
        let row = LeadRow::from_lead(&lead)
            .map_err(|error| Unadded::DeadLetter(RecordError::new("schema", error.to_string())))?;
        batch.history.push(LeadHistoryRow::from_lead_row(&row));
        batch.leads.push(row);
        batch.fetched.extend(lead.fetched_at);
    } else if topic == inputs.referrals_topic {
        // Only the fields the table keeps: the typed fields are skipped, not built.
        match inputs
            .referrals
            .decode_as_patiently::<ReferralVersion>(payload, &mut waiting, "sink")
            .await
        {
            Ok(referral) => batch.referrals.push(ReferralRow::from_version(referral)),
            Err(error) if error.is_retryable() || error.is_fatal() => return Err(error.into()),
            // The processor dead-letters an unreadable referral; a second dead letter of the
            // same record from here would only be noise.
            Err(error) => {
                tracing::debug!(partition, offset, %error, "unreadable referral left to the processor's dead letter")
            }
        }
    } else if topic == inputs.runs_topic {
        let run = inputs
            .runs
            .decode_patiently(payload, &mut waiting, "sink")
            .await?;
        batch.runs.push(SyncRunRow::from_run(&run));
    } else if topic == inputs.action_results_topic {
        let result = inputs
            .action_results
            .decode_patiently(payload, &mut waiting, "sink")
            .await?;
        batch.actions.push(ReferralActionRow::from_result(&result));
    } else {
        batch
            .dead_letters
            .push(DlqRow::new(partition, offset, header, payload));
        return Ok(());
    }
    Ok(())
}

/// Tries to insert the batch once. On success its offsets are stored, the batch is emptied and
/// a stall ends (consumption resumes). On failure the stream stalls: consumption pauses and the
/// same batch is tried again after a backoff (up to 10 s); nothing is stored, so a crash during
/// a stall replays the batch, which collapses into whatever part of it was written.
async fn flush(
    writer: &ReadWriter,
    insert_timeout: Duration,
    consumer: &GroupConsumer,
    batch: &mut Batch,
    stall: &mut Option<Stall>,
    label: &str,
) {
    if let Err((table, error)) = insert_all(writer, insert_timeout, batch).await {
        metrics::counter!(names::SINK_FAILURES_TOTAL, "table" => table, "class" => error.class())
            .increment(1);
        let attempts = stall.as_ref().map_or(0, |stall| stall.attempts) + 1;
        if stall.is_none() {
            consumer.set_paused(true);
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
        consumer.set_paused(false);
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
    // One topic per consumer: the batch's offsets are all of its topic.
    for ((_, partition), span) in &batch.offsets {
        consumer.store_offset(*partition, span.last);
    }
    batch.clear();
}

pub(super) async fn insert_all(
    writer: &ReadWriter,
    insert_timeout: Duration,
    batch: &Batch,
) -> Result<(), (&'static str, hunter_clickhouse::Error)> {
    // One token for every table: each table keeps its own log of the tokens it has seen.
    let token = batch.deduplication_token();
    let t = insert_timeout;
    timed(writer, t, "leads", &batch.leads, &token).await?;
    timed(writer, t, "lead_history", &batch.history, &token).await?;
    timed(writer, t, "referrals", &batch.referrals, &token).await?;
    timed(writer, t, "sync_runs", &batch.runs, &token).await?;
    timed(writer, t, "dlq", &batch.dead_letters, &token).await?;
    timed(writer, t, "dlq_replays", &batch.replays, &token).await?;
    timed(writer, t, "referral_actions", &batch.actions, &token).await?;
    Ok(())
}

async fn timed<T: hunter_clickhouse::RowOwned + hunter_clickhouse::RowWrite>(
    writer: &ReadWriter,
    insert_timeout: Duration,
    table: &'static str,
    rows: &[T],
    deduplication_token: &str,
) -> Result<(), (&'static str, hunter_clickhouse::Error)> {
    if rows.is_empty() {
        return Ok(());
    }
    let started = Instant::now();
    // Bounded: a server that takes the request and never answers would otherwise hold the
    // stream here forever, neither stalled (no retry, no paused metric) nor polling its
    // consumer. Dropping the insert aborts its request; if the server did take it, the retry's
    // deduplication token (or ReplacingMergeTree) keeps the rows single.
    match tokio::time::timeout(
        insert_timeout,
        writer.insert(table, rows, Some(deduplication_token)),
    )
    .await
    {
        Ok(result) => result.map_err(|error| (table, error))?,
        Err(_) => {
            return Err((
                table,
                hunter_clickhouse::Error::ClickHouse(clickhouse::error::Error::TimedOut),
            ));
        }
    }
    metrics::histogram!(names::SINK_INSERT_DURATION_SECONDS, "table" => table)
        .record(started.elapsed().as_secs_f64());
    metrics::counter!(names::SINK_BATCHES_TOTAL, "table" => table).increment(1);
    metrics::counter!(names::SINK_ROWS_WRITTEN_TOTAL, "table" => table)
        .increment(rows.len() as u64);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(messages: &[(&str, i32, i64, Option<i64>)]) -> Batch {
        let mut batch = Batch::default();
        for (topic, partition, offset, timestamp) in messages {
            batch.cover(topic, *partition, *offset, *timestamp, 10);
        }
        batch
    }

    #[test]
    fn the_token_names_topic_partitions_and_offset_spans() {
        let token = batch(&[
            ("t.leads", 2, 40, Some(1_000)),
            ("t.leads", 0, 7, Some(900)),
            ("t.leads", 2, 41, Some(1_001)),
            ("t.leads", 0, 9, Some(950)),
        ])
        .deduplication_token();
        assert_eq!(token, "hunter-sink-v1|t.leads|0:7-9@900|2:40-41@1000");
    }

    #[test]
    fn the_same_messages_in_another_order_give_the_same_token() {
        let one = batch(&[
            ("t", 0, 5, Some(1)),
            ("t", 1, 3, Some(2)),
            ("t", 0, 6, Some(3)),
        ]);
        let other = batch(&[
            ("t", 1, 3, Some(2)),
            ("t", 0, 5, Some(1)),
            ("t", 0, 6, Some(3)),
        ]);
        assert_eq!(one.deduplication_token(), other.deduplication_token());
    }

    #[test]
    fn other_messages_give_another_token() {
        let base = batch(&[("t", 0, 5, Some(1)), ("t", 0, 6, Some(2))]).deduplication_token();
        let others = [
            batch(&[("t", 0, 5, Some(1)), ("t", 0, 7, Some(2))]), // one more message
            batch(&[("t", 0, 6, Some(2))]),                       // one less
            batch(&[("t", 1, 5, Some(1)), ("t", 1, 6, Some(2))]), // another partition
            batch(&[("u", 0, 5, Some(1)), ("u", 0, 6, Some(2))]), // another topic
            batch(&[("t", 0, 5, Some(7)), ("t", 0, 6, Some(8))]), // the topic made anew
            batch(&[("t", 0, 5, None), ("t", 0, 6, None)]),       // no timestamps
        ];
        for other in others {
            assert_ne!(other.deduplication_token(), base);
        }
    }

    #[test]
    fn topics_do_not_run_into_each_other() {
        // "t" partition 10 and "t|1" partition 0 must not read alike.
        let a = batch(&[("t", 10, 1, Some(1))]).deduplication_token();
        let b = batch(&[("t|1", 0, 1, Some(1))]).deduplication_token();
        assert_ne!(a, b);
    }
}
