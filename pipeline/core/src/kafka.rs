//! Kafka wiring shared by every role: topic names, client settings, topic creation, dead letters.
//!
//! Delivery settings are fixed here so no role can weaken them: producers use acks=all with
//! idempotence; consumers never auto-store offsets (a role stores an offset only after the
//! effect of that message is acknowledged downstream) and commit what was stored.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::StreamConsumer;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureProducer;
use rdkafka::types::RDKafkaErrorCode;

use crate::config::KafkaSettings;

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
    config
}

/// An idempotent, acks=all producer.
pub fn producer(settings: &KafkaSettings, client_id: &str) -> Result<FutureProducer, KafkaError> {
    base_config(settings)
        .set("client.id", client_id)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        // Java's partitioner: the same key lands in the same partition whoever produces it
        // (a Java producer, or Hunter into the referral and the lead topic alike).
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "120000")
        .create()
}

/// A group consumer that stores offsets only when told to and commits stored offsets every
/// second; roles call `store_offset` after the downstream acknowledgement and commit
/// synchronously on shutdown.
pub fn consumer(
    settings: &KafkaSettings,
    group_id: &str,
    client_id: &str,
) -> Result<StreamConsumer, KafkaError> {
    group_config(settings, group_id, client_id).create()
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
) -> Result<StreamConsumer, KafkaError> {
    let mut config = group_config(settings, group_id, client_id);
    for (key, value) in BULK_FETCH {
        config.set(*key, *value);
    }
    config.create()
}

/// [`consumer`] with a context of the caller's (to see rebalances).
pub fn consumer_with_context<C: rdkafka::consumer::ConsumerContext + 'static>(
    settings: &KafkaSettings,
    group_id: &str,
    client_id: &str,
    context: C,
) -> Result<StreamConsumer<C>, KafkaError> {
    group_config(settings, group_id, client_id).create_with_context(context)
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
pub fn reader(
    settings: &KafkaSettings,
    client_id: &str,
) -> Result<rdkafka::consumer::BaseConsumer, KafkaError> {
    base_config(settings)
        .set("group.id", format!("{client_id}-reader"))
        .set("client.id", client_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .create()
}

/// Creates the missing topics; existing ones are left alone. Compaction is requested through
/// `cleanup.policy`; a broker that refuses the config gets the topic without it (and a warning).
pub async fn ensure_topics(
    settings: &KafkaSettings,
    specs: &[TopicSpec],
) -> Result<(), KafkaError> {
    let admin: AdminClient<DefaultClientContext> = base_config(settings).create()?;
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for spec in specs {
        let mut topic = NewTopic::new(&spec.name, spec.partitions, TopicReplication::Fixed(1));
        if spec.compacted {
            topic = topic.set("cleanup.policy", "compact");
        }
        let mut result = admin.create_topics([&topic], &options).await?;
        if spec.compacted
            && let Some(Err((_, code))) = result.first()
            && !matches!(code, RDKafkaErrorCode::TopicAlreadyExists)
        {
            tracing::warn!(topic = %spec.name, error = %code, "broker refused a compacted topic; creating it without cleanup.policy");
            let plain = NewTopic::new(&spec.name, spec.partitions, TopicReplication::Fixed(1));
            result = admin.create_topics([&plain], &options).await?;
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
pub fn spawn_lag_monitor(
    settings: &KafkaSettings,
    stage: &'static str,
    group_id: &str,
    topic: &str,
    mut shutdown: crate::shutdown::Shutdown,
) -> Result<tokio::task::JoinHandle<()>, KafkaError> {
    let consumer: rdkafka::consumer::BaseConsumer = base_config(settings)
        .set("group.id", group_id)
        .set("client.id", format!("hunter-{stage}-lag"))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .create()?;
    let consumer = std::sync::Arc::new(consumer);
    let topic = topic.to_owned();
    Ok(tokio::spawn(async move {
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
                    for (partition, lag) in lags {
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
    }))
}

/// Per partition of `topic`: high watermark minus the committed offset of `consumer`'s group.
pub fn consumer_lag(
    consumer: &rdkafka::consumer::BaseConsumer,
    topic: &str,
) -> Result<Vec<(i32, i64)>, KafkaError> {
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
        let from = match element.offset() {
            rdkafka::Offset::Offset(offset) => offset,
            _ => low,
        };
        lags.push((element.partition(), (high - from).max(0)));
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
    fn prefix_applies_to_every_topic() {
        let topics = Topics::with_prefix("t1.");
        assert_eq!(topics.referrals, "t1.partner-center.referrals.v1");
        assert!(topics.specs().iter().all(|s| s.name.starts_with("t1.")));
        assert_eq!(Topics::with_prefix("").leads, "hunter.leads.v1");
    }
}
