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
//!
//! Consuming goes through one type, [`GroupConsumer`] ([`consume`]: offsets, the lag monitor,
//! transient errors, the final commit and the workarounds for the local broker), and dead
//! letters through one sender, [`DeadLetter`] ([`dead_letter`]: only a record's own fault).

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::config::FromClientConfigAndContext;
use rdkafka::error::KafkaError;
use rdkafka::producer::FutureProducer;
use rdkafka::types::RDKafkaErrorCode;

use crate::config::KafkaSettings;

pub mod consume;
pub mod dead_letter;
pub mod describe;
pub use consume::{
    BULK_FETCH, Fetch, GroupConsumer, GroupHealth, ReadError, Subscription, read_partitions_to_end,
    read_to_end, read_to_end_patiently,
};
pub use dead_letter::{
    DEAD_LETTER_HEADER_PREFIX, DeadLetter, DeadLetterHeaders, Fault, Position, REPLAY_COUNT_HEADER,
    REPLAY_OF_HEADER, RecordError, RecordHeaders, record_headers, replay_count,
};

pub mod security;
pub use security::{
    CHECK_WAIT, ConnectError, Contact, FailureKind, KafkaContext, PROTECTED_PROPERTIES,
    check_connection, is_secret_property,
};

/// A producer as [`producer`] makes it.
pub type Producer = FutureProducer<KafkaContext>;
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
    /// Write-back: actions users asked for, key = referral id (docs/writeback.md).
    pub referral_actions: String,
    /// Write-back: each action's steps (queued, sent, final state), key = referral id.
    pub referral_action_results: String,
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
            referral_actions: name("hunter.referral-actions.v1"),
            referral_action_results: name("hunter.referral-action-results.v1"),
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
            // Write-back (docs/writeback.md): few records, ordered per referral.
            spec(&self.referral_actions, 1, false),
            spec(&self.referral_action_results, 1, false),
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
/// what the role set, never what Hunter owns: the config refused those), with `context`
/// ([`KafkaContext`], or one that reports errors through it).
fn create<C: rdkafka::ClientContext, T: FromClientConfigAndContext<C>>(
    mut config: ClientConfig,
    settings: &KafkaSettings,
    context: C,
) -> Result<T, KafkaError> {
    security::apply_properties(&mut config, settings);
    config.create_with_context(context)
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
        // HUNTER_KAFKA_COMPRESSION (none by default: see `KafkaCompression` for why), and the
        // record-size policy (crate::size, docs/record-size.md): records up to a fixed limit
        // that the topics `hunter migrate` creates accept, compressed or not. Both may be
        // overridden in [kafka.properties].
        .set("compression.type", settings.compression.as_str())
        .set(
            "message.max.bytes",
            crate::size::PRODUCER_MESSAGE_MAX_BYTES.to_string(),
        );
    create(config, settings, KafkaContext::new(settings, client_id))
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
    create(config, settings, KafkaContext::new(settings, client_id))
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
    let admin: AdminClient<KafkaContext> = create(
        config,
        settings,
        KafkaContext::new(settings, "hunter-admin"),
    )?;
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
