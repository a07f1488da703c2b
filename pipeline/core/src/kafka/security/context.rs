//! The client context of every Kafka client: error events logged with the setting to fix and
//! counted.

use std::sync::{Arc, Mutex};

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::KafkaError;
use rdkafka::producer::{DeliveryResult, ProducerContext};

use crate::config::KafkaSettings;

use super::failure::{FailureKind, Hints};

/// One error event librdkafka reported.
#[derive(Debug, Clone)]
pub(super) struct Seen {
    pub(super) kind: FailureKind,
    pub(super) reason: String,
}

/// The context of every Kafka client Hunter creates: librdkafka's error events are logged with
/// the setting to fix and counted in `hunter_kafka_client_errors_total{client, kind}`; the
/// start-up check also keeps them ([`check_connection`](super::check_connection)).
#[derive(Clone)]
pub struct KafkaContext {
    client: String,
    hints: Arc<Hints>,
    seen: Option<Arc<Mutex<Vec<Seen>>>>,
}

impl KafkaContext {
    /// The context of the client called `client` (its `client.id`).
    pub fn new(settings: &KafkaSettings, client: &str) -> Self {
        KafkaContext {
            client: client.to_owned(),
            hints: Arc::new(Hints::new(settings)),
            seen: None,
        }
    }

    pub(super) fn recording(settings: &KafkaSettings, client: &str) -> Self {
        KafkaContext {
            seen: Some(Arc::default()),
            ..Self::new(settings, client)
        }
    }

    fn remember(&self, kind: FailureKind, reason: &str) {
        if let Some(seen) = &self.seen {
            seen.lock().unwrap_or_else(|e| e.into_inner()).push(Seen {
                kind,
                reason: reason.to_owned(),
            });
        }
    }

    pub(super) fn seen(&self) -> Vec<Seen> {
        self.seen
            .as_ref()
            .map(|seen| seen.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .unwrap_or_default()
    }

    /// Logs and counts one error event of this client; returns its kind.
    fn report(&self, error: &KafkaError, reason: &str) -> FailureKind {
        let kind = self.hints.classify(error.rdkafka_error_code(), reason);
        metrics::counter!(
            crate::telemetry::names::KAFKA_CLIENT_ERRORS_TOTAL,
            "client" => self.client.clone(),
            "kind" => kind.label()
        )
        .increment(1);
        if kind.is_definitive() {
            let (setting, headline, fix) = self.hints.explain(kind);
            tracing::error!(
                client = %self.client,
                kind = kind.label(),
                setting,
                brokers = %self.hints.brokers,
                "{headline}: {reason}; {fix}"
            );
        } else {
            tracing::warn!(client = %self.client, %error, reason, "kafka client error; librdkafka retries by itself");
        }
        self.remember(kind, reason);
        kind
    }
}

impl ClientContext for KafkaContext {
    fn error(&self, error: KafkaError, reason: &str) {
        self.report(&error, reason);
    }

    /// librdkafka's own lines, as rust-rdkafka's default does (target `librdkafka`); the
    /// start-up check also reads its `FAIL` lines ([`Hints::classify_log`]).
    fn log(&self, level: RDKafkaLogLevel, fac: &str, line: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", "librdkafka: {fac} {line}")
            }
            RDKafkaLogLevel::Warning => {
                tracing::warn!(target: "librdkafka", "librdkafka: {fac} {line}")
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", "librdkafka: {fac} {line}")
            }
            RDKafkaLogLevel::Debug => {
                tracing::debug!(target: "librdkafka", "librdkafka: {fac} {line}")
            }
        }
        if self.seen.is_some()
            && fac == "FAIL"
            && let Some(kind) = self.hints.classify_log(line)
        {
            // "[thrd:sasl_ssl://host:port/bootstrap]: sasl_ssl://host:port/bootstrap: …"
            let reason = line
                .strip_prefix("[thrd:")
                .and_then(|rest| rest.split_once("]: "))
                .map_or(line, |(_, reason)| reason);
            self.remember(kind, reason);
        }
    }
}

impl ConsumerContext for KafkaContext {}

impl ProducerContext for KafkaContext {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &DeliveryResult<'_>, _: Self::DeliveryOpaque) {}
}
