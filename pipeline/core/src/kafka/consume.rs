//! Consuming: the one group consumer every role uses ([`GroupConsumer`]), and reading a topic
//! from its start to its end outside any group ([`read_to_end`]).
//!
//! Invariants:
//! - offsets are never stored automatically: a role calls [`GroupConsumer::store_offset`] only
//!   once the effect of that message was acknowledged downstream, and librdkafka commits what was
//!   stored every second; [`GroupConsumer::close`] commits once more, synchronously;
//! - a consumption error librdkafka recovers from by itself (a broker down, a connection reset,
//!   a coordinator moving) is logged and consumption goes on; only a fatal error or any other
//!   kind reaches the role ([`received`]);
//! - a consumer is always dropped off the runtime's threads (librdkafka's close blocks while it
//!   leaves the group and commits), on [`GroupConsumer::close`] and on an early return alike;
//! - each group's lag is exported as `hunter_kafka_consumer_lag_records{stage, topic,
//!   partition}` ([`spawn_lag_monitor`]) by a client of its own that never joins the group.
//!
//! # Workarounds for the local broker (tansu 0.6.0)
//!
//! Everything Hunter does only because of tansu sits in this file and says so:
//! - the **orphan rejoin** ([`rejoin_if_orphaned`]): a group seen to settle with a new member
//!   owning nothing after a SIGKILL, and a survivor never given the partitions of a member that
//!   left gracefully; a consumer that does not own every partition whose records wait unconsumed
//!   leaves and joins again, and when that did not help, a role that can replaces its consumer by
//!   a new member ([`GroupConsumer::renew`]: the processor and the sink). On Apache Kafka it should never fire
//!   (`hunter_kafka_group_rejoins_total` shows it);
//! - the lag is read by a consumer of its own, never by the group's consumer (asking the group's
//!   own consumer for its committed offsets was seen to disturb the group: see
//!   `docs/stack-notes.md`);
//! - the sink uses one consumer (and group) per topic ([`GroupConsumer::subscribe`] takes one
//!   topic): one consumer subscribed to four topics did not get its partitions back after a
//!   SIGKILL.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaError;
use rdkafka::message::BorrowedMessage;
use rdkafka::{ClientContext, Message};

use super::{KafkaContext, Reader, base_config, create, reader};
use crate::config::KafkaSettings;
use crate::shutdown::Shutdown;

/// Broker fetch settings for a consumer that reads in bulk (the sink): ask for at least 256 KiB
/// per fetch and let the broker wait up to 100 ms to gather it. On tansu 0.6.0 this read a lead
/// topic about a third faster than librdkafka's defaults (1 byte, 500 ms; measured with
/// `cargo bench -p hunter-e2e --bench sink`), and costs at most 100 ms of latency when the topic
/// is quiet, well inside a sink batch's wait.
pub const BULK_FETCH: &[(&str, &str)] =
    &[("fetch.min.bytes", "262144"), ("fetch.wait.max.ms", "100")];

/// How a [`GroupConsumer`] fetches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetch {
    /// librdkafka's defaults: a message as soon as there is one.
    Prompt,
    /// [`BULK_FETCH`]: throughput over latency.
    Bulk,
}

/// Where a [`GroupConsumer`] reads and who it is.
#[derive(Debug, Clone)]
pub struct Subscription<'a> {
    /// `source`, `processor` or `sink`: the label of its metrics and logs.
    pub stage: &'static str,
    /// The consumer group (already prefixed).
    pub group_id: &'a str,
    /// The `client.id`.
    pub client_id: &'a str,
    /// The one topic it consumes.
    pub topic: &'a str,
    pub fetch: Fetch,
}

/// A consumer in a group, subscribed to one topic: every role consumes through this.
///
/// It stores offsets only when told to ([`Self::store_offset`]) and commits stored offsets every
/// second; it records the partitions revoked from it ([`Self::take_revoked`]), watches its
/// group's lag, rejoins when the group's records are orphaned (the tansu workaround, see the
/// module doc) and hides the consumption errors librdkafka recovers from.
pub struct GroupConsumer {
    /// `None` only while being dropped.
    consumer: Option<StreamConsumer<GroupContext>>,
    topic: String,
    stage: &'static str,
    /// What [`Self::renew`] creates the consumer again from.
    settings: KafkaSettings,
    group_id: String,
    client_id: String,
    fetch: Fetch,
    health: GroupHealth,
    /// A set: a role that never takes them (only the processor does) holds at most one entry
    /// per partition of its topic.
    revoked: Arc<Mutex<BTreeSet<i32>>>,
    /// When [`Self::recv`] next checks [`rejoin_if_orphaned`].
    next_rejoin_check: Mutex<tokio::time::Instant>,
}

/// The context of a group consumer: [`KafkaContext`]'s error reporting, plus the partitions
/// revoked by rebalances, so a role can drop their state before its next message.
struct GroupContext {
    inner: KafkaContext,
    stage: &'static str,
    revoked: Arc<Mutex<BTreeSet<i32>>>,
}

impl ClientContext for GroupContext {
    fn error(&self, error: KafkaError, reason: &str) {
        self.inner.error(error, reason);
    }

    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, line: &str) {
        self.inner.log(level, fac, line);
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(partitions) = rebalance {
            let partitions: Vec<i32> = partitions
                .elements()
                .iter()
                .map(|e| e.partition())
                .collect();
            tracing::info!(
                stage = self.stage,
                ?partitions,
                "partitions revoked by a rebalance"
            );
            let mut revoked = self.revoked.lock().unwrap_or_else(|e| e.into_inner());
            revoked.extend(partitions);
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(partitions) => {
                let partitions: Vec<i32> = partitions
                    .elements()
                    .iter()
                    .map(|e| e.partition())
                    .collect();
                tracing::info!(
                    stage = self.stage,
                    ?partitions,
                    "partitions assigned by a rebalance"
                );
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(error) => {
                tracing::warn!(stage = self.stage, %error, "rebalance failed");
            }
        }
    }
}

impl GroupConsumer {
    /// Creates the consumer, subscribes it to the topic and starts its group's lag monitor
    /// (which ends on `shutdown`).
    pub fn subscribe(
        settings: &KafkaSettings,
        subscription: Subscription<'_>,
        shutdown: Shutdown,
    ) -> Result<Self, KafkaError> {
        let Subscription {
            stage,
            group_id,
            client_id,
            topic,
            fetch,
        } = subscription.clone();
        let revoked = Arc::new(Mutex::new(BTreeSet::new()));
        let consumer = Self::create_subscribed(settings, &subscription, revoked.clone())?;
        let health = spawn_lag_monitor(settings, stage, group_id, topic, shutdown)?;
        Ok(GroupConsumer {
            consumer: Some(consumer),
            topic: topic.to_owned(),
            stage,
            settings: settings.clone(),
            group_id: group_id.to_owned(),
            client_id: client_id.to_owned(),
            fetch,
            health,
            revoked,
            next_rejoin_check: Mutex::new(tokio::time::Instant::now() + REJOIN_CHECK_INTERVAL),
        })
    }

    fn create_subscribed(
        settings: &KafkaSettings,
        subscription: &Subscription<'_>,
        revoked: Arc<Mutex<BTreeSet<i32>>>,
    ) -> Result<StreamConsumer<GroupContext>, KafkaError> {
        let mut config = base_config(settings);
        config
            .set("group.id", subscription.group_id)
            .set("client.id", subscription.client_id)
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "1000")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "1000")
            .set("partition.assignment.strategy", "cooperative-sticky");
        if subscription.fetch == Fetch::Bulk {
            for (key, value) in BULK_FETCH {
                config.set(*key, *value);
            }
        }
        let context = GroupContext {
            inner: KafkaContext::new(settings, subscription.client_id),
            stage: subscription.stage,
            revoked,
        };
        let consumer: StreamConsumer<GroupContext> = create(config, settings, context)?;
        consumer.subscribe(&[subscription.topic])?;
        Ok(consumer)
    }

    /// Whether a rejoin did not end the orphaning: the group's broker left this member waiting
    /// (see [`rejoin_if_orphaned`]), and only a new member helps. A role that can (nothing of
    /// this consumer in flight) then calls [`Self::renew`].
    pub fn wants_renewal(&self) -> bool {
        self.health.renewal_wanted.load(Ordering::Relaxed)
    }

    /// Replaces the consumer by a new member of the group (a new librdkafka client): commits
    /// what was stored, records every partition the old one held as revoked
    /// ([`Self::take_revoked`]), drops it (it leaves the group) and subscribes the new one. Call
    /// it only with nothing of this consumer in flight: an offset stored afterwards for a
    /// partition the new member does not own is not stored (its owner replays it).
    pub fn renew(&mut self) -> Result<(), KafkaError> {
        tracing::warn!(
            stage = self.stage,
            topic = %self.topic,
            "a rejoin did not end the orphaning: replacing this consumer by a new group member"
        );
        if let Some(old) = self.consumer.take() {
            if let Err(error) = old.commit_consumer_state(CommitMode::Sync) {
                tracing::debug!(stage = self.stage, %error, "commit before the renewal");
            }
            if let Ok(assignment) = old.assignment() {
                let mut revoked = self.revoked.lock().unwrap_or_else(|e| e.into_inner());
                revoked.extend(assignment.elements().iter().map(|e| e.partition()));
            }
            std::thread::spawn(move || drop(old));
        }
        let subscription = Subscription {
            stage: self.stage,
            group_id: &self.group_id,
            client_id: &self.client_id,
            topic: &self.topic,
            fetch: self.fetch,
        };
        let consumer =
            Self::create_subscribed(&self.settings, &subscription, self.revoked.clone())?;
        self.consumer = Some(consumer);
        self.health.renewal_wanted.store(false, Ordering::Relaxed);
        self.health.clear();
        Ok(())
    }

    fn consumer(&self) -> &StreamConsumer<GroupContext> {
        self.consumer
            .as_ref()
            .expect("a group consumer is only taken when dropped")
    }

    /// The next message. Consumption errors librdkafka recovers from are logged and skipped
    /// ([`received`]); every [`REJOIN_CHECK_INTERVAL`] spent waiting, it checks
    /// [`rejoin_if_orphaned`]. Cancel-safe: no message is lost when the future is dropped.
    pub async fn recv(&self) -> Result<BorrowedMessage<'_>, KafkaError> {
        loop {
            let check_at = *self
                .next_rejoin_check
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            tokio::select! {
                result = self.consumer().recv() => {
                    if let Some(message) = received(result, self.stage)? {
                        return Ok(message);
                    }
                }
                _ = tokio::time::sleep_until(check_at) => {
                    rejoin_if_orphaned(self.consumer(), &self.topic, &self.health, self.stage);
                    *self.next_rejoin_check.lock().unwrap_or_else(|e| e.into_inner()) =
                        tokio::time::Instant::now() + REJOIN_CHECK_INTERVAL;
                }
            }
        }
    }

    /// Stores `offset` of `partition` for the next commit: call it once the message's effect
    /// was acknowledged downstream, in consumption order. A partition revoked meanwhile cannot
    /// be stored for (logged): its new owner replays from the last commit.
    pub fn store_offset(&self, partition: i32, offset: i64) {
        if let Err(error) = self.consumer().store_offset(&self.topic, partition, offset) {
            tracing::warn!(
                stage = self.stage,
                topic = %self.topic,
                partition,
                offset,
                %error,
                "offset not stored (partition revoked); its new owner replays it"
            );
        }
    }

    /// The partitions assigned to it now (empty when the assignment cannot be read).
    pub fn assigned(&self) -> Vec<i32> {
        self.consumer()
            .assignment()
            .map(|list| list.elements().iter().map(|e| e.partition()).collect())
            .unwrap_or_default()
    }

    /// The partitions revoked since the last call.
    pub fn take_revoked(&self) -> Vec<i32> {
        let mut revoked = self.revoked.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut *revoked).into_iter().collect()
    }

    /// Pauses (or resumes) every partition it holds: a paused consumer drops what it had
    /// prefetched and fetches nothing more, but stays in its group. Failure only costs memory or
    /// time (logged).
    pub fn set_paused(&self, paused: bool) {
        let consumer = self.consumer();
        let result = consumer.assignment().and_then(|assignment| {
            if paused {
                consumer.pause(&assignment)
            } else {
                consumer.resume(&assignment)
            }
        });
        if let Err(error) = result {
            tracing::warn!(stage = self.stage, %error, paused, "pausing or resuming consumption failed");
        }
    }

    /// Commits what was stored, synchronously, then drops the consumer off the runtime's threads.
    pub fn close(self) {
        if let Err(error) = self.consumer().commit_consumer_state(CommitMode::Sync) {
            tracing::debug!(stage = self.stage, %error, "final commit");
        }
    }
}

impl Drop for GroupConsumer {
    fn drop(&mut self) {
        // librdkafka's close blocks while it leaves the group (and commits): not on the
        // runtime's threads.
        if let Some(consumer) = self.consumer.take() {
            std::thread::spawn(move || drop(consumer));
        }
    }
}

/// How often [`spawn_lag_monitor`] measures.
pub const LAG_INTERVAL: Duration = Duration::from_secs(10);

/// Exports a consumer group's lag on `topic` as `hunter_kafka_consumer_lag_records{stage, topic,
/// partition}` every [`LAG_INTERVAL`] until shutdown.
///
/// Lag is the partition's high watermark minus the group's committed offset (minus the low
/// watermark while the group has committed nothing), so it counts what a restart would replay
/// plus what was never read. It is read with a consumer of its own that never joins the group
/// (the group's own consumer must not be asked for its committed offsets: see stack-notes), so
/// every instance of a role reports the whole group: aggregate with `max by (stage, topic,
/// partition)`. A failed measurement is logged at debug and tried again next time.
///
/// It also watches for work nobody does: when a partition has uncommitted records and its
/// committed offset has not moved for [`ORPHANED_AFTER`], the returned [`GroupHealth`] names
/// it, and a consumer of the group that does not own it rejoins ([`rejoin_if_orphaned`]).
pub fn spawn_lag_monitor(
    settings: &KafkaSettings,
    stage: &'static str,
    group_id: &str,
    topic: &str,
    mut shutdown: Shutdown,
) -> Result<GroupHealth, KafkaError> {
    let client_id = format!("hunter-{stage}-lag");
    let mut config = base_config(settings);
    config
        .set("group.id", group_id)
        .set("client.id", &client_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false");
    let consumer: Reader = create(config, settings, KafkaContext::new(settings, &client_id))?;
    let consumer = Arc::new(consumer);
    let topic = topic.to_owned();
    let health = GroupHealth::default();
    let (orphaned, rejoined, pending) = (
        health.orphaned.clone(),
        health.rejoined.clone(),
        health.rejoin_pending.clone(),
    );
    let mut last_rejoin: Option<Instant> = None;
    let mut watch = OrphanWatch::default();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(LAG_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.wait() => break,
                _ = tick.tick() => {}
            }
            let (measuring, name) = (consumer.clone(), topic.clone());
            match tokio::task::spawn_blocking(move || consumer_lag(&measuring, &name)).await {
                Ok(Ok(lags)) => {
                    let now = Instant::now();
                    if rejoined.swap(false, Ordering::Relaxed) {
                        watch = OrphanWatch::default();
                        last_rejoin = Some(now);
                    }
                    let stuck = watch.observe(&lags, now);
                    // A rejoin helped when nothing is orphaned a full watch after it.
                    if stuck.is_empty()
                        && last_rejoin.is_some_and(|at| now.duration_since(at) > ORPHANED_AFTER)
                    {
                        pending.store(false, Ordering::Relaxed);
                        last_rejoin = None;
                    }
                    *orphaned.lock().unwrap_or_else(|e| e.into_inner()) = stuck;
                    for (partition, lag, _) in lags {
                        metrics::gauge!(
                            crate::telemetry::names::KAFKA_CONSUMER_LAG_RECORDS,
                            "stage" => stage,
                            "topic" => topic.clone(),
                            "partition" => partition.to_string()
                        )
                        .set(lag as f64);
                    }
                }
                Ok(Err(error)) => {
                    tracing::debug!(stage, topic, %error, "consumer lag not measured")
                }
                Err(error) => tracing::debug!(stage, topic, %error, "consumer lag task failed"),
            }
        }
        // librdkafka's close blocks: not on the runtime's threads.
        std::thread::spawn(move || drop(consumer));
    });
    Ok(health)
}

/// How long a partition's uncommitted records may go without its committed offset moving
/// before [`GroupHealth::orphaned`] says nobody is consuming them.
pub const ORPHANED_AFTER: Duration = Duration::from_secs(30);

/// What [`spawn_lag_monitor`] knows about its group, shared with the group's consumer.
#[derive(Clone, Debug, Default)]
pub struct GroupHealth {
    orphaned: Arc<Mutex<Vec<i32>>>,
    /// Set by a rejoin: the watch starts its clocks again, so the next rejoin (if the last one
    /// did not help) comes [`ORPHANED_AFTER`] later, not while the group is still rebalancing.
    rejoined: Arc<AtomicBool>,
    /// Set by a rejoin that follows a rejoin which did not help (see
    /// [`GroupConsumer::wants_renewal`]).
    renewal_wanted: Arc<AtomicBool>,
    /// Whether the last rejoin is not known to have helped yet.
    rejoin_pending: Arc<AtomicBool>,
}

impl GroupHealth {
    /// The partitions that have uncommitted records and whose committed offset did not move
    /// for [`ORPHANED_AFTER`] (empty when every partition is consumed or caught up).
    pub fn orphaned(&self) -> Vec<i32> {
        self.orphaned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn clear(&self) {
        self.orphaned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.rejoined.store(true, Ordering::Relaxed);
    }
}

/// Remembers, per partition, its committed offset and since when it stood still with lag.
#[derive(Debug, Default)]
struct OrphanWatch {
    partitions: HashMap<i32, (Option<i64>, Option<Instant>)>,
}

impl OrphanWatch {
    /// Takes one measurement (partition, lag, committed offset); returns the partitions that
    /// have lag and whose committed offset did not move for [`ORPHANED_AFTER`], in order.
    fn observe(&mut self, lags: &[(i32, i64, Option<i64>)], now: Instant) -> Vec<i32> {
        let mut stuck = Vec::new();
        for &(partition, lag, committed) in lags {
            let (last, still_since) = self
                .partitions
                .entry(partition)
                .or_insert((committed, None));
            if lag <= 0 || committed != *last {
                *still_since = (lag > 0).then_some(now);
            } else if still_since.is_none() {
                *still_since = Some(now);
            }
            *last = committed;
            if still_since.is_some_and(|since| now.duration_since(since) >= ORPHANED_AFTER) {
                stuck.push(partition);
            }
        }
        stuck.sort_unstable();
        stuck
    }
}

/// How often a [`GroupConsumer`] checks [`rejoin_if_orphaned`].
pub const REJOIN_CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// A workaround for tansu (see the module doc). When some of the group's partitions are
/// orphaned (see [`GroupHealth`]) and this consumer does not own all of them, leaves the group
/// and subscribes again, which makes the coordinator run a new rebalance that includes it. A
/// consumer that owns every orphaned partition does nothing: its own stalls (a paused sink)
/// are its own business. Returns whether it rejoined.
///
/// Why: on tansu 0.6.0, after a member was killed with SIGKILL and a new one joined in the
/// same session window, the group was seen to settle with the new member owning nothing and
/// no further rebalance (the crash suite, `tests/e2e/crash.rs`); and after a member left
/// gracefully, the survivor was seen to keep its own partitions and never be given the
/// leaver's (`tests/e2e/process.rs`, the rebalance test: about half the runs). Any join ends
/// either state. The price, on any broker: a member stalled for [`ORPHANED_AFTER`] on its own
/// partitions (a sink waiting on ClickHouse) makes the group's other members rejoin, a
/// rebalance that loses nothing (offsets only move after a durable write). On Apache Kafka it
/// should otherwise never fire, and `hunter_kafka_group_rejoins_total` shows it.
fn rejoin_if_orphaned<C: ConsumerContext>(
    consumer: &StreamConsumer<C>,
    topic: &str,
    health: &GroupHealth,
    stage: &'static str,
) -> bool {
    let orphaned = health.orphaned();
    if orphaned.is_empty() {
        return false;
    }
    let Ok(assignment) = consumer.assignment() else {
        return false;
    };
    let owned: BTreeSet<i32> = assignment
        .elements_for_topic(topic)
        .iter()
        .map(|element| element.partition())
        .collect();
    let not_owned: Vec<i32> = orphaned
        .into_iter()
        .filter(|partition| !owned.contains(partition))
        .collect();
    if not_owned.is_empty() {
        return false;
    }
    tracing::warn!(
        stage,
        topic,
        ?not_owned,
        owned = owned.len(),
        "partitions have records nobody consumed for {} s and this consumer does not own them: rejoining the group",
        ORPHANED_AFTER.as_secs()
    );
    consumer.unsubscribe();
    if let Err(error) = consumer.subscribe(&[topic]) {
        tracing::warn!(stage, topic, %error, "subscribing again failed");
        return false;
    }
    if health.rejoin_pending.swap(true, Ordering::Relaxed) {
        health.renewal_wanted.store(true, Ordering::Relaxed);
    }
    health.clear();
    metrics::counter!(
        crate::telemetry::names::KAFKA_GROUP_REJOINS_TOTAL,
        "stage" => stage,
        "topic" => topic.to_owned()
    )
    .increment(1);
    true
}

/// The message a consumer's `recv` gave, or `None` after logging an error the consumer recovers
/// from by itself. librdkafka reports broker outages (all brokers down, a connection refused
/// or reset, a coordinator moving) as consumption errors on the consumer's queue and goes on
/// reconnecting; only a fatal error (`MessageConsumptionFatal`) or any other kind ends the
/// caller's loop. Before this, a sink whose broker was stopped for a few seconds exited
/// ("AllBrokersDown"; found by `tests/e2e/crash.rs`).
fn received<M>(
    result: Result<M, KafkaError>,
    stage: &'static str,
) -> Result<Option<M>, KafkaError> {
    match result {
        Ok(message) => Ok(Some(message)),
        Err(KafkaError::MessageConsumption(code)) => {
            tracing::warn!(stage, error = %code, "kafka consumer error; librdkafka retries by itself");
            Ok(None)
        }
        Err(error) => Err(error),
    }
}

/// Per partition of `topic`: high watermark minus the committed offset of `consumer`'s group,
/// and the committed offset (`None` while the group has committed nothing there).
pub fn consumer_lag<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
) -> Result<Vec<(i32, i64, Option<i64>)>, KafkaError> {
    let timeout = Duration::from_secs(5);
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
    let mut partitions = rdkafka::TopicPartitionList::new();
    for found in metadata.topics().iter().filter(|t| t.name() == topic) {
        if let Some(error) = found.error() {
            return Err(KafkaError::MetadataFetch(error.into()));
        }
        for partition in found.partitions() {
            partitions.add_partition(topic, partition.id());
        }
    }
    let committed = consumer.committed_offsets(partitions, timeout)?;
    let mut lags = Vec::new();
    for element in committed.elements() {
        let (low, high) = consumer.fetch_watermarks(topic, element.partition(), timeout)?;
        let committed = match element.offset() {
            rdkafka::Offset::Offset(offset) => Some(offset),
            _ => None,
        };
        let from = committed.unwrap_or(low);
        lags.push((element.partition(), (high - from).max(0), committed));
    }
    Ok(lags)
}

/// Why [`read_to_end`] failed. Every cause is the broker's (unreachable, the topic missing, a
/// read that does not end): worth trying again later, never a record's fault.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{what}: {source}")]
    Kafka {
        what: String,
        #[source]
        source: KafkaError,
    },
    #[error("reading {topic} did not reach its end within {} s", within.as_secs())]
    Unfinished { topic: String, within: Duration },
    #[error("reading {topic} panicked: {message}")]
    Panicked { topic: String, message: String },
}

/// Reads `topic` (every partition, or only `partition`) from its start to its end as it was when
/// the read began, outside any consumer group, and returns the payloads in each partition's
/// order. A read that does not reach the end within `within` fails (a broker that answers
/// metadata but serves no records). librdkafka's polls block, so the read runs on a blocking
/// thread.
pub async fn read_to_end(
    settings: &KafkaSettings,
    client_id: &str,
    topic: &str,
    partition: Option<i32>,
    within: Duration,
) -> Result<Vec<Vec<u8>>, ReadError> {
    let partitions = partition.map(|partition| vec![partition]);
    let read = read_partitions_to_end(settings, client_id, topic, partitions, within).await?;
    Ok(read.into_iter().map(|(_, payload)| payload).collect())
}

/// [`read_to_end`] of several partitions at once (`None`: every partition), by one reader with
/// all of them assigned, so the broker serves them in the same fetches instead of one partition
/// after the other. Each payload comes with its partition, in each partition's order.
pub async fn read_partitions_to_end(
    settings: &KafkaSettings,
    client_id: &str,
    topic: &str,
    partitions: Option<Vec<i32>>,
    within: Duration,
) -> Result<Vec<(i32, Vec<u8>)>, ReadError> {
    let (settings, client_id, name) = (settings.clone(), client_id.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        read_to_end_blocking(&settings, &client_id, &name, partitions, within)
    })
    .await
    .map_err(|error| ReadError::Panicked {
        topic: topic.to_owned(),
        message: error.to_string(),
    })?
}

/// [`read_partitions_to_end`], tried again with backoff (1 s doubling to 15 s) while the broker
/// fails it,
/// for up to `patience`: what a role reading its state at start does, since a broker that is
/// down or restarting is a transient failure (a role started by its supervisor while the broker
/// itself is being restarted must wait for it, not exit). A panicked read, a shutdown, or
/// failures past `patience` end it with the last error.
pub async fn read_to_end_patiently(
    settings: &KafkaSettings,
    client_id: &str,
    topic: &str,
    partitions: Option<Vec<i32>>,
    within: Duration,
    patience: Duration,
    shutdown: &Shutdown,
) -> Result<Vec<(i32, Vec<u8>)>, ReadError> {
    let started = Instant::now();
    let mut backoff = Duration::from_secs(1);
    loop {
        match read_partitions_to_end(settings, client_id, topic, partitions.clone(), within).await {
            Ok(payloads) => return Ok(payloads),
            Err(error @ ReadError::Panicked { .. }) => return Err(error),
            Err(error) if started.elapsed() < patience && !shutdown.is_triggered() => {
                tracing::warn!(
                    %error,
                    topic,
                    retry_in_secs = backoff.as_secs(),
                    "reading the topic to its end failed (the broker is away?); trying again"
                );
                let mut waiting = shutdown.clone();
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = waiting.wait() => return Err(error),
                }
                backoff = (backoff * 2).min(Duration::from_secs(15));
            }
            Err(error) => return Err(error),
        }
    }
}

fn read_to_end_blocking(
    settings: &KafkaSettings,
    client_id: &str,
    topic: &str,
    partitions: Option<Vec<i32>>,
    within: Duration,
) -> Result<Vec<(i32, Vec<u8>)>, ReadError> {
    let kafka = |what: String| move |source| ReadError::Kafka { what, source };
    let reader = reader(settings, client_id).map_err(kafka("kafka reader".into()))?;
    let timeout = Duration::from_secs(30);
    let partitions: Vec<i32> = match partitions {
        Some(partitions) => partitions,
        None => reader
            .fetch_metadata(Some(topic), timeout)
            .map_err(kafka(format!("metadata for {topic}")))?
            .topics()
            .iter()
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect(),
    };
    let mut assignment = rdkafka::TopicPartitionList::new();
    let mut ends = HashMap::new();
    for partition in partitions {
        let (low, high) = reader
            .fetch_watermarks(topic, partition, timeout)
            .map_err(kafka(format!("watermarks of {topic}/{partition}")))?;
        if high > low {
            ends.insert(partition, high);
            assignment
                .add_partition_offset(topic, partition, rdkafka::Offset::Offset(low))
                .map_err(kafka(format!("assigning {topic}/{partition}")))?;
        }
    }
    let mut payloads = Vec::new();
    if !ends.is_empty() {
        reader
            .assign(&assignment)
            .map_err(kafka(format!("assigning {topic}")))?;
    }
    let deadline = Instant::now() + within;
    while !ends.is_empty() {
        if Instant::now() >= deadline {
            return Err(ReadError::Unfinished {
                topic: topic.to_owned(),
                within,
            });
        }
        let Some(message) = reader.poll(Duration::from_millis(500)) else {
            continue;
        };
        let message = message.map_err(kafka(format!("reading {topic}")))?;
        if let Some(payload) = message.payload() {
            payloads.push((message.partition(), payload.to_vec()));
        }
        if let Some(end) = ends.get(&message.partition())
            && message.offset() + 1 >= *end
        {
            ends.remove(&message.partition());
        }
    }
    std::thread::spawn(move || drop(reader));
    Ok(payloads)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_outages_are_not_the_end_of_a_consumer() {
        use rdkafka::types::RDKafkaErrorCode;
        let outage = KafkaError::MessageConsumption(RDKafkaErrorCode::AllBrokersDown);
        assert!(matches!(received::<()>(Err(outage), "sink"), Ok(None)));
        assert!(matches!(received(Ok(7), "sink"), Ok(Some(7))));
        let fatal = KafkaError::MessageConsumptionFatal(RDKafkaErrorCode::Fatal);
        assert!(received::<()>(Err(fatal), "sink").is_err());
    }

    #[test]
    fn lag_with_committed_offsets_standing_still_is_orphaned_after_30_s() {
        let start = Instant::now();
        let at = |secs| start + Duration::from_secs(secs);
        let none = Vec::<i32>::new();
        let mut watch = OrphanWatch::default();
        let stuck = [(0, 5, Some(10)), (1, 0, Some(7))];
        assert_eq!(watch.observe(&stuck, at(0)), none);
        assert_eq!(watch.observe(&stuck, at(20)), none);
        assert_eq!(watch.observe(&stuck, at(30)), [0]);
        assert_eq!(watch.observe(&stuck, at(40)), [0]);
        // An offset moves: someone consumes; the clock starts again.
        let moving = [(0, 4, Some(11)), (1, 0, Some(7))];
        assert_eq!(watch.observe(&moving, at(41)), none);
        assert_eq!(watch.observe(&moving, at(70)), none);
        assert_eq!(watch.observe(&moving, at(71)), [0]);
        // No lag: nothing to do, however still the offsets are.
        let idle = [(0, 0, Some(15)), (1, 0, Some(7))];
        assert_eq!(watch.observe(&idle, at(72)), none);
        assert_eq!(watch.observe(&idle, at(200)), none);
        // A group that never committed and has records waiting.
        let mut fresh = OrphanWatch::default();
        let never = [(0, 3, None)];
        assert_eq!(fresh.observe(&never, at(0)), none);
        assert_eq!(fresh.observe(&never, at(30)), [0]);
    }

    #[test]
    fn a_partition_left_behind_is_orphaned_while_the_others_move() {
        // A survivor consumes its own partitions (their offsets move) while the partitions of
        // a member that left are never given to anyone: those alone are orphaned.
        let start = Instant::now();
        let at = |secs| start + Duration::from_secs(secs);
        let mut watch = OrphanWatch::default();
        let mut own = 100;
        let mut orphaned = Vec::new();
        for second in (0..=40).step_by(10) {
            own += 50;
            let lags = [(0, 5, Some(own)), (1, 9, Some(20)), (2, 3, None)];
            orphaned = watch.observe(&lags, at(second));
        }
        assert_eq!(orphaned, [1, 2]);
    }
}
