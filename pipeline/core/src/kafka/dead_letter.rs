//! Dead letters: where a record goes that Hunter cannot handle, and the one sender every role
//! uses ([`DeadLetter`]).
//!
//! Invariants:
//! - only a record's own fault is dead-lettered: a failure is first sorted by [`Fault`], and
//!   [`DeadLetter`] takes only a [`RecordError`], which a transient failure (the schema registry
//!   unreachable: `CodecError::is_retryable`) or a fatal one (credentials refused, a certificate
//!   not trusted: `CodecError::is_fatal`) never becomes. A transient failure is retried, a
//!   fatal one stops the role with the setting named;
//! - a dead letter carries the record as it came (same key and payload) and headers naming the
//!   stage, the error, its class and where the record came from ([`DeadLetterHeaders`]), so an
//!   operator can find and replay it;
//! - a dead letter Kafka refuses for what it is (too large for the dead-letter topic) is sent as
//!   a [`Reference`] to the original instead (`crate::size::send_dead_letter`): one record never
//!   stops the stream;
//! - every dead letter is counted in `hunter_dlq_records_total{stage, class}` and logged.
//!
//! Failure modes: a dead letter Kafka does not take for any other reason (the broker down after
//! librdkafka's retries) is returned as the error; the role stops without storing the record's
//! offset, so a restart handles the record again.

use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};

use super::Producer;
use crate::codec::CodecError;
use crate::size::{self, DeadLettered, Reference};
use crate::telemetry::names;

/// A record's own fault: what the dead letter says (class and reason).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordError {
    /// A bounded class for metrics and the `hunter.error.class` header (`decode`, `invalid`, ...).
    pub class: &'static str,
    /// What was wrong, in words.
    pub reason: String,
}

impl RecordError {
    pub fn new(class: &'static str, reason: impl Into<String>) -> Self {
        RecordError {
            class,
            reason: reason.into(),
        }
    }
}

/// Whose fault a failure to handle a record is, which decides what becomes of the record.
#[derive(Debug)]
pub enum Fault {
    /// Not the record's (the schema registry unreachable, and shutdown came while waiting for
    /// it): the record is handled again later, never dead-lettered.
    Transient(CodecError),
    /// Hunter cannot work as configured (credentials refused, a certificate not trusted): the
    /// role stops with this error, which names the setting.
    Fatal(CodecError),
    /// The record's own: dead-letter it.
    Record(RecordError),
}

impl From<CodecError> for Fault {
    /// A codec error that is neither retryable nor fatal is the record's (class `decode`).
    fn from(error: CodecError) -> Self {
        if error.is_retryable() {
            Fault::Transient(error)
        } else if error.is_fatal() {
            Fault::Fatal(error)
        } else {
            Fault::Record(RecordError::new("decode", error.to_string()))
        }
    }
}

/// Where a consumed record was.
#[derive(Debug, Clone, Copy)]
pub struct Position<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
}

/// Sends dead letters for one stage to the dead-letter topic.
#[derive(Clone)]
pub struct DeadLetter {
    producer: Producer,
    topic: String,
    stage: &'static str,
}

impl DeadLetter {
    /// Dead letters of `stage` (`source`, `processor` or `sink`) to `topic` through `producer`.
    pub fn new(producer: Producer, topic: &str, stage: &'static str) -> Self {
        DeadLetter {
            producer,
            topic: topic.to_owned(),
            stage,
        }
    }

    /// Dead-letters a consumed record as it came (`key`, `payload`); when Kafka refuses it, a
    /// reference to its position instead.
    pub async fn record(
        &self,
        error: &RecordError,
        at: Position<'_>,
        key: Option<&[u8]>,
        payload: &[u8],
    ) -> Result<DeadLettered, KafkaError> {
        let reference = Reference::of_record(at.topic, at.partition, at.offset, payload.len());
        self.send(error, Some(at), at.topic, key, payload, &reference)
            .await
    }

    /// Dead-letters a consumed record of `bytes` bytes by a reference to its position (it stays
    /// on its topic): for a record whose output Kafka refused for what it is.
    pub async fn reference_to(
        &self,
        error: &RecordError,
        at: Position<'_>,
        key: Option<&[u8]>,
        bytes: usize,
    ) -> Result<DeadLettered, KafkaError> {
        let reference = Reference::of_record(at.topic, at.partition, at.offset, bytes);
        let payload = reference.to_json();
        self.send(
            error,
            Some(at),
            at.topic,
            key,
            payload.as_bytes(),
            &reference,
        )
        .await
    }

    /// Dead-letters what came from outside Kafka (`origin`: the Partner Center API), with
    /// `reference` in its place when Kafka refuses `payload`.
    pub async fn external(
        &self,
        error: &RecordError,
        origin: &str,
        payload: &[u8],
        reference: &Reference,
    ) -> Result<DeadLettered, KafkaError> {
        self.send(error, None, origin, None, payload, reference)
            .await
    }

    async fn send(
        &self,
        error: &RecordError,
        at: Option<Position<'_>>,
        origin: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        reference: &Reference,
    ) -> Result<DeadLettered, KafkaError> {
        let (partition, offset) = (at.map(|at| at.partition), at.map(|at| at.offset));
        tracing::warn!(stage = self.stage, class = error.class, origin, partition, offset, error = %error.reason, "record dead-lettered");
        metrics::counter!(names::DLQ_RECORDS_TOTAL, "stage" => self.stage, "class" => error.class)
            .increment(1);
        let headers = DeadLetterHeaders {
            stage: self.stage,
            error: &error.reason,
            error_class: error.class,
            original_topic: origin,
            original_partition: partition,
            original_offset: offset,
        };
        size::send_dead_letter(
            &self.producer,
            &self.topic,
            &headers,
            key,
            payload,
            reference,
        )
        .await
    }
}

/// The context a dead letter carries in its headers, so an operator can find and replay it.
#[derive(Debug, Clone)]
pub struct DeadLetterHeaders<'a> {
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

impl DeadLetterHeaders<'_> {
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
    fn only_a_records_own_fault_is_dead_lettered() {
        let outage = CodecError::Registry {
            message: "connection refused".into(),
            retryable: true,
        };
        assert!(matches!(Fault::from(outage), Fault::Transient(_)));
        let refused = CodecError::RegistryAuth { status: 401 };
        assert!(matches!(Fault::from(refused), Fault::Fatal(_)));
        match Fault::from(CodecError::Empty) {
            Fault::Record(error) => {
                assert_eq!(error.class, "decode");
                assert_eq!(error.reason, "record is empty");
            }
            other => panic!("an empty record is its own fault, not {other:?}"),
        }
    }
}
