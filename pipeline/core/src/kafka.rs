//! Kafka wiring shared by every role: topic names, client settings, topic creation, dead letters.
//!
//! Delivery settings are fixed here so no role can weaken them: producers use acks=all with
//! idempotence; consumers never auto-store offsets (a role stores an offset only after the
//! effect of that message is acknowledged downstream) and commit what was stored.
//!
//! Every client is built here from [`base_config`] (brokers, TLS and SASL) and created by
//! [`create`] (`[kafka.properties]` last, and the [`KafkaContext`] that surfaces authentication
//! and TLS failures): see [`security`] for the settings, the properties Hunter owns and the
//! start-up connection check.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::config::FromClientConfigAndContext;
use rdkafka::consumer::StreamConsumer;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureProducer;
use rdkafka::types::RDKafkaErrorCode;

use crate::config::KafkaSettings;

pub mod security;
pub use security::{
    CHECK_WAIT, ConnectError, Contact, FailureKind, KafkaContext, PROTECTED_PROPERTIES,
    check_connection, is_secret_property, report_client_error,
};

/// A producer as [`producer`] makes it.
pub type Producer = FutureProducer<KafkaContext>;
/// A group consumer as [`consumer`] and [`bulk_consumer`] make it.
pub type Consumer = StreamConsumer<KafkaContext>;
/// A consumer outside any group as [`reader`] makes it.
pub type Reader = rdkafka::consumer::BaseConsumer<KafkaContext>;

/// Hunter's topics, prefix applied. The unprefixed names are public contracts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    /// Avro referrals, key = referral id (public contract).
    pub referrals: String,
    /// Compacted source cursor per tenant.
    pub source_state: String,
    /// Sync run records, key = run id.
    pub sync_runs: String,
    /// Control commands ("sync now").
    pub commands: String,
    /// Compacted Avro leads, key = lead id (public contract).
    pub leads: String,
    /// Dead letters with error context headers.
    pub dlq: String,
}

/// A topic to create: name, partitions, compacted or not.
#[derive(Debug, Clone)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    pub compacted: bool,
}

impl Topics {
    pub fn with_prefix(prefix: &str) -> Self {
        let name = |base: &str| format!("{prefix}{base}");
        Topics {
            referrals: name("partner-center.referrals.v1"),
            source_state: name("hunter.source-state.v1"),
            sync_runs: name("hunter.sync-runs.v1"),
            commands: name("hunter.commands.v1"),
            leads: name("hunter.leads.v1"),
            dlq: name("hunter.dlq.v1"),
        }
    }

    /// What `hunter migrate` and the local stack create.
    pub fn specs(&self) -> Vec<TopicSpec> {
        let spec = |name: &String, partitions, compacted| TopicSpec {
            name: name.clone(),
            partitions,
            compacted,
        };
        vec![
            spec(&self.referrals, 4, false),
            spec(&self.source_state, 1, true),
            spec(&self.sync_runs, 1, false),
            spec(&self.commands, 1, false),
            spec(&self.leads, 4, true),
            spec(&self.dlq, 1, false),
        ]
    }
}

fn base_config(settings: &KafkaSettings) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &settings.brokers)
        .set("socket.keepalive.enable", "true")
        .set("log_level", "4");
    security::apply(&mut config, settings);
    config
}

/// Creates a client from a role's configuration: `[kafka.properties]` go on last (they may tune
/// what the role set, never what Hunter owns: the config refused those), with Hunter's context.
fn create<T: FromClientConfigAndContext<KafkaContext>>(
    mut config: ClientConfig,
    settings: &KafkaSettings,
    client_id: &str,
) -> Result<T, KafkaError> {
    security::apply_properties(&mut config, settings);
    config.create_with_context(KafkaContext::new(settings, client_id))
}

/// An idempotent, acks=all producer.
pub fn producer(settings: &KafkaSettings, client_id: &str) -> Result<Producer, KafkaError> {
    let mut config = base_config(settings);
    config
        .set("client.id", client_id)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        // Java's partitioner: the same key lands in the same partition whoever produces it
        // (a Java producer, or Hunter into the referral and the lead topic alike).
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "120000")
        // The record-size policy (crate::size, docs/record-size.md): compressed batches, and
        // records up to a fixed limit that the topics `hunter migrate` creates accept. Both may
        // be overridden in [kafka.properties] (Event Hubs takes gzip only).
        .set("compression.type", crate::size::COMPRESSION)
        .set(
            "message.max.bytes",
            crate::size::PRODUCER_MESSAGE_MAX_BYTES.to_string(),
        );
    create(config, settings, client_id)
}

/// A group consumer that stores offsets only when told to and commits stored offsets every
/// second; roles call `store_offset` after the downstream acknowledgement and commit
/// synchronously on shutdown.
pub fn consumer(
    settings: &KafkaSettings,
    group_id: &str,
    client_id: &str,
) -> Result<Consumer, KafkaError> {
    create(
        group_config(settings, group_id, client_id),
        settings,
        client_id,
    )
}

/// Broker fetch settings for a consumer that reads in bulk (the sink): ask for at least 256 KiB
/// per fetch and let the broker wait up to 100 ms to gather it. On tansu 0.6.0 this read a lead
/// topic about a third faster than librdkafka's defaults (1 byte, 500 ms; measured with
/// `cargo bench -p hunter-e2e --bench sink`), and costs at most 100 ms of latency when the topic
/// is quiet, well inside a sink batch's wait.
pub const BULK_FETCH: &[(&str, &str)] =
    &[("fetch.min.bytes", "262144"), ("fetch.wait.max.ms", "100")];

/// [`consumer`] tuned for throughput with [`BULK_FETCH`].
pub fn bulk_consumer(
    settings: &KafkaSettings,
    group_id: &str,
    client_id: &str,
) -> Result<Consumer, KafkaError> {
    let mut config = group_config(settings, group_id, client_id);
    for (key, value) in BULK_FETCH {
        config.set(*key, *value);
    }
    create(config, settings, client_id)
}

/// [`consumer`] with a context of the caller's (to see rebalances). Its `ClientContext::error`
/// should call [`report_client_error`], as [`KafkaContext`] does.
pub fn consumer_with_context<C: rdkafka::consumer::ConsumerContext + 'static>(
    settings: &KafkaSettings,
    group_id: &str,
    client_id: &str,
    context: C,
) -> Result<StreamConsumer<C>, KafkaError> {
    let mut config = group_config(settings, group_id, client_id);
    security::apply_properties(&mut config, settings);
    config.create_with_context(context)
}

fn group_config(settings: &KafkaSettings, group_id: &str, client_id: &str) -> ClientConfig {
    let mut config = base_config(settings);
    config
        .set("group.id", group_id)
        .set("client.id", client_id)
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000")
        .set("partition.assignment.strategy", "cooperative-sticky");
    config
}

/// A consumer outside any group, for reading a topic from the start (state rebuilds).
pub fn reader(settings: &KafkaSettings, client_id: &str) -> Result<Reader, KafkaError> {
    let mut config = base_config(settings);
    config
        .set("group.id", format!("{client_id}-reader"))
        .set("client.id", client_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest");
    create(config, settings, client_id)
}

/// Creates the missing topics; existing ones are left alone. Compaction is requested through
/// `cleanup.policy`, and every topic gets `max.message.bytes` from the record-size policy
/// ([`crate::size::TOPIC_MAX_MESSAGE_BYTES`]); a broker that refuses these configs gets the
/// topic without them (and a warning).
pub async fn ensure_topics(
    settings: &KafkaSettings,
    specs: &[TopicSpec],
) -> Result<(), KafkaError> {
    let mut config = base_config(settings);
    config.set("client.id", "hunter-admin");
    let admin: AdminClient<KafkaContext> = create(config, settings, "hunter-admin")?;
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let max_message_bytes = crate::size::TOPIC_MAX_MESSAGE_BYTES.to_string();
    for spec in specs {
        // What to ask for, then what to fall back to when the broker refuses a config: first
        // without max.message.bytes, then without compaction too.
        let size = ("max.message.bytes", max_message_bytes.as_str());
        let compact = ("cleanup.policy", "compact");
        let attempts = if spec.compacted {
            vec![vec![size, compact], vec![compact], vec![]]
        } else {
            vec![vec![size], vec![]]
        };
        let mut result = Vec::new();
        for (index, configs) in attempts.iter().enumerate() {
            let mut topic = NewTopic::new(&spec.name, spec.partitions, TopicReplication::Fixed(1));
            for (key, value) in configs {
                topic = topic.set(key, value);
            }
            result = admin.create_topics([&topic], &options).await?;
            match result.first() {
                Some(Err((_, code)))
                    if !matches!(code, RDKafkaErrorCode::TopicAlreadyExists)
                        && index + 1 < attempts.len() =>
                {
                    let next: Vec<&str> = attempts[index + 1].iter().map(|(k, _)| *k).collect();
                    tracing::warn!(topic = %spec.name, error = %code, "broker refused the topic with {configs:?}; trying with only {next:?}");
                }
                _ => break,
            }
        }
        match result.first() {
            Some(Ok(_)) => {
                tracing::info!(topic = %spec.name, partitions = spec.partitions, "topic created")
            }
            Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) => {}
            Some(Err((_, code))) => return Err(KafkaError::AdminOp(*code)),
            None => {}
        }
    }
    Ok(())
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
/// It also watches for work nobody does: when the group has uncommitted records and its
/// committed offsets have not moved for [`ORPHANED_AFTER`], the returned [`GroupHealth`] says
/// so, and a consumer of the group that holds no partition rejoins ([`rejoin_if_orphaned`]).
pub fn spawn_lag_monitor(
    settings: &KafkaSettings,
    stage: &'static str,
    group_id: &str,
    topic: &str,
    mut shutdown: crate::shutdown::Shutdown,
) -> Result<GroupHealth, KafkaError> {
    let client_id = format!("hunter-{stage}-lag");
    let mut config = base_config(settings);
    config
        .set("group.id", group_id)
        .set("client.id", &client_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false");
    let consumer: Reader = create(config, settings, &client_id)?;
    let consumer = std::sync::Arc::new(consumer);
    let topic = topic.to_owned();
    let health = GroupHealth::default();
    let orphaned = health.orphaned.clone();
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
                    let now = std::time::Instant::now();
                    orphaned.store(
                        watch.observe(&lags, now),
                        std::sync::atomic::Ordering::Relaxed,
                    );
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

/// How long a group's uncommitted records may go without any committed offset moving before
/// [`GroupHealth::orphaned`] says nobody is consuming them.
pub const ORPHANED_AFTER: Duration = Duration::from_secs(30);

/// What [`spawn_lag_monitor`] knows about its group, shared with the group's consumer.
#[derive(Clone, Debug, Default)]
pub struct GroupHealth {
    orphaned: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl GroupHealth {
    /// The group has uncommitted records and none of its committed offsets moved for
    /// [`ORPHANED_AFTER`].
    pub fn orphaned(&self) -> bool {
        self.orphaned.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn clear(&self) {
        self.orphaned
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Remembers since when a group's committed offsets stood still while it had lag.
#[derive(Debug, Default)]
struct OrphanWatch {
    committed: Vec<(i32, Option<i64>)>,
    still_since: Option<std::time::Instant>,
}

impl OrphanWatch {
    /// Takes one measurement (partition, lag, committed offset); true when the group has lag
    /// and nothing it committed moved for [`ORPHANED_AFTER`].
    fn observe(&mut self, lags: &[(i32, i64, Option<i64>)], now: std::time::Instant) -> bool {
        let committed: Vec<(i32, Option<i64>)> = lags.iter().map(|(p, _, c)| (*p, *c)).collect();
        let lagging = lags.iter().any(|(_, lag, _)| *lag > 0);
        if !lagging || committed != self.committed {
            self.still_since = lagging.then_some(now);
        } else if self.still_since.is_none() {
            self.still_since = Some(now);
        }
        self.committed = committed;
        self.still_since
            .is_some_and(|since| now.duration_since(since) >= ORPHANED_AFTER)
    }
}

/// When the group's records are orphaned (see [`GroupHealth`]) and this consumer holds no
/// partition, leaves the group and subscribes again, which makes the coordinator run a new
/// rebalance that includes it. A consumer that holds partitions does nothing: its own stalls
/// (a paused sink) are its own business. Returns whether it rejoined.
///
/// Why: on tansu 0.6.0, after a member was killed with SIGKILL and a new one joined in the
/// same session window, the group was seen to settle with the new member owning nothing and
/// no further rebalance (the crash suite, `tests/e2e/crash.rs`); any join ends that state.
/// On Apache Kafka this should never fire, and `hunter_kafka_group_rejoins_total` shows it.
pub fn rejoin_if_orphaned<C: rdkafka::consumer::ConsumerContext>(
    consumer: &rdkafka::consumer::StreamConsumer<C>,
    topic: &str,
    health: &GroupHealth,
    stage: &'static str,
) -> bool {
    use rdkafka::consumer::Consumer;
    if !health.orphaned() {
        return false;
    }
    let owns_nothing = consumer
        .assignment()
        .map(|assignment| assignment.count() == 0)
        .unwrap_or(false);
    if !owns_nothing {
        return false;
    }
    tracing::warn!(
        stage,
        topic,
        "the group has records nobody consumed for {} s and this consumer owns no partition: rejoining the group",
        ORPHANED_AFTER.as_secs()
    );
    consumer.unsubscribe();
    if let Err(error) = consumer.subscribe(&[topic]) {
        tracing::warn!(stage, topic, %error, "subscribing again failed");
        return false;
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
pub fn received<M>(
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

/// How often a consumer loop checks [`rejoin_if_orphaned`].
pub const REJOIN_CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// Per partition of `topic`: high watermark minus the committed offset of `consumer`'s group,
/// and the committed offset (`None` while the group has committed nothing there).
pub fn consumer_lag<C: rdkafka::consumer::ConsumerContext>(
    consumer: &rdkafka::consumer::BaseConsumer<C>,
    topic: &str,
) -> Result<Vec<(i32, i64, Option<i64>)>, KafkaError> {
    use rdkafka::consumer::Consumer;
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

/// The context a dead letter carries in its headers, so an operator can find and replay it.
#[derive(Debug, Clone)]
pub struct DeadLetter<'a> {
    /// `source`, `processor` or `sink`.
    pub stage: &'a str,
    /// What was wrong, in words.
    pub error: &'a str,
    /// A bounded class for metrics (`decode`, `invalid`, ...).
    pub error_class: &'a str,
    /// Where the bad input came from (topic, or the API for the source).
    pub original_topic: &'a str,
    pub original_partition: Option<i32>,
    pub original_offset: Option<i64>,
}

impl DeadLetter<'_> {
    pub fn headers(&self) -> OwnedHeaders {
        let partition = self.original_partition.map(|p| p.to_string());
        let offset = self.original_offset.map(|o| o.to_string());
        let mut headers = OwnedHeaders::new()
            .insert(Header {
                key: "hunter.stage",
                value: Some(self.stage),
            })
            .insert(Header {
                key: "hunter.error",
                value: Some(self.error),
            })
            .insert(Header {
                key: "hunter.error.class",
                value: Some(self.error_class),
            })
            .insert(Header {
                key: "hunter.original.topic",
                value: Some(self.original_topic),
            });
        if let Some(partition) = &partition {
            headers = headers.insert(Header {
                key: "hunter.original.partition",
                value: Some(partition),
            });
        }
        if let Some(offset) = &offset {
            headers = headers.insert(Header {
                key: "hunter.original.offset",
                value: Some(offset),
            });
        }
        headers
    }
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
        let start = std::time::Instant::now();
        let at = |secs| start + Duration::from_secs(secs);
        let mut watch = OrphanWatch::default();
        let stuck = [(0, 5, Some(10)), (1, 0, Some(7))];
        assert!(!watch.observe(&stuck, at(0)));
        assert!(!watch.observe(&stuck, at(20)));
        assert!(watch.observe(&stuck, at(30)));
        assert!(watch.observe(&stuck, at(40)));
        // An offset moves: someone consumes; the clock starts again.
        let moving = [(0, 4, Some(11)), (1, 0, Some(7))];
        assert!(!watch.observe(&moving, at(41)));
        assert!(!watch.observe(&moving, at(70)));
        assert!(watch.observe(&moving, at(71)));
        // No lag: nothing to do, however still the offsets are.
        let idle = [(0, 0, Some(15)), (1, 0, Some(7))];
        assert!(!watch.observe(&idle, at(72)));
        assert!(!watch.observe(&idle, at(200)));
        // A group that never committed and has records waiting.
        let mut fresh = OrphanWatch::default();
        let never = [(0, 3, None)];
        assert!(!fresh.observe(&never, at(0)));
        assert!(fresh.observe(&never, at(30)));
    }

    #[test]
    fn prefix_applies_to_every_topic() {
        let topics = Topics::with_prefix("t1.");
        assert_eq!(topics.referrals, "t1.partner-center.referrals.v1");
        assert!(topics.specs().iter().all(|s| s.name.starts_with("t1.")));
        assert_eq!(Topics::with_prefix("").leads, "hunter.leads.v1");
    }
}
