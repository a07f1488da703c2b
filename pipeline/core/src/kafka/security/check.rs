//! The start-up connection check.

use std::time::{Duration, Instant};

use rdkafka::producer::{BaseProducer, Producer};

use crate::config::KafkaSettings;

use super::context::KafkaContext;
use super::failure::{FailureKind, Hints};
use super::properties::apply_properties;

/// Why [`check_connection`] failed: the kind, the setting to fix, what happened and the fix.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{headline} at {brokers}: {reason}; {fix}")]
pub struct ConnectError {
    pub kind: FailureKind,
    /// The setting the operator most likely has to change.
    pub setting: &'static str,
    pub headline: String,
    pub brokers: String,
    /// librdkafka's words (they never include a secret).
    pub reason: String,
    pub fix: String,
}

impl ConnectError {
    pub(super) fn new(hints: &Hints, kind: FailureKind, reason: String) -> Self {
        let (setting, headline, fix) = hints.explain(kind);
        ConnectError {
            kind,
            setting,
            headline,
            brokers: hints.brokers.clone(),
            reason,
            fix,
        }
    }
}

/// What the brokers said when the connection worked.
#[derive(Debug, Clone)]
pub struct Contact {
    /// Brokers in the cluster's metadata.
    pub brokers: usize,
    /// Topics the credentials may see.
    pub topics: usize,
}

/// How long the start-up check waits for a broker before it leaves the rest to librdkafka's
/// retries. Authentication and TLS failures come back in milliseconds.
pub const CHECK_WAIT: Duration = Duration::from_secs(10);

/// Connects the way every client does and asks for the cluster's metadata, for at most `wait`.
/// The first definitive failure (refused credentials, untrusted certificate, a protocol the port
/// does not speak) ends it at once with the setting to fix; a broker that does not answer at all
/// is [`FailureKind::Unreachable`] after `wait`. Blocks: call it from a blocking thread.
pub fn check_connection(settings: &KafkaSettings, wait: Duration) -> Result<Contact, ConnectError> {
    let hints = Hints::new(settings);
    let client = "hunter-connection-check";
    let mut config = crate::kafka::base_config(settings);
    config.set("client.id", client);
    apply_properties(&mut config, settings);
    if settings.security.protocol.uses_tls() {
        // A listener that does not speak TLS never answers the handshake: librdkafka's 30 s
        // default would outlast the check.
        config.set("socket.connection.setup.timeout.ms", "3000");
    }
    let context = KafkaContext::recording(settings, client);
    let producer: BaseProducer<KafkaContext> = match config.create_with_context(context) {
        Ok(producer) => producer,
        Err(error) => {
            // E.g. "ssl.ca.location failed: …": librdkafka loads the TLS files here.
            let text = error.to_string();
            let kind = if text.contains("ssl") || text.contains("SSL") {
                FailureKind::Tls
            } else {
                FailureKind::Configuration
            };
            let mut failure = ConnectError::new(&hints, kind, text.clone());
            for (property, setting) in [
                ("ssl.ca.location", "HUNTER_KAFKA_SSL_CA_LOCATION"),
                (
                    "ssl.certificate.location",
                    "HUNTER_KAFKA_SSL_CERTIFICATE_LOCATION",
                ),
                ("ssl.key", "HUNTER_KAFKA_SSL_KEY_LOCATION"),
                ("oauthbearer", "HUNTER_KAFKA_SASL_MECHANISM"),
            ] {
                if text.contains(property) {
                    failure.setting = setting;
                    failure.fix = format!("check {setting} (librdkafka could not use {property})");
                    if property == "ssl.key" {
                        failure.fix =
                            "check HUNTER_KAFKA_SSL_KEY_LOCATION and HUNTER_KAFKA_SSL_KEY_PASSWORD"
                                .into();
                    }
                    break;
                }
            }
            return Err(failure);
        }
    };
    let deadline = Instant::now() + wait;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let answer = producer
            .client()
            .fetch_metadata(None, remaining.min(Duration::from_millis(500)));
        // Serve every event librdkafka queued meanwhile: errors and log lines reach the
        // context here (a zero timeout would serve only one).
        producer.poll(Duration::from_millis(100));
        let seen = producer.context().seen();
        let last_error = match answer {
            Ok(metadata) => {
                return Ok(Contact {
                    brokers: metadata.brokers().len(),
                    topics: metadata.topics().len(),
                });
            }
            Err(error) => error.to_string(),
        };
        // A protocol mismatch looks like a dropped or stalled connection: believe it when it
        // repeats, or when nothing else happened until the deadline (librdkafka may log the
        // repeat only with its next attempt, after a backoff).
        let over = Instant::now() >= deadline;
        let definitive = seen.iter().find(|s| {
            s.kind.is_definitive()
                && (s.kind != FailureKind::SecurityProtocol
                    || over
                    || seen.iter().filter(|t| t.kind == s.kind).count() > 1)
        });
        if let Some(seen) = definitive {
            return Err(ConnectError::new(&hints, seen.kind, seen.reason.clone()));
        }
        if over {
            let reason = seen
                .last()
                .map(|s| s.reason.clone())
                .unwrap_or_else(|| format!("no answer within {} s ({last_error})", wait.as_secs()));
            return Err(ConnectError::new(&hints, FailureKind::Unreachable, reason));
        }
    }
}
