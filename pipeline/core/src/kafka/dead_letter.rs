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
//! - every dead letter is counted in `hunter_dlq_records_total{stage, class}` and logged;
//! - a dead letter also carries the consumed record's own headers (every header not starting
//!   with `hunter.`, which are the dead letter's), among them [`REPLAY_COUNT_HEADER`] of a
//!   record `hunter dlq replay` re-published: a record that fails again goes back to the
//!   dead-letter topic with its count, and replay refuses a dead letter whose count reached the
//!   limit, so a poison record never loops (`docs/operations.md`).
//!
//! Failure modes: a dead letter Kafka does not take for any other reason (the broker down after
//! librdkafka's retries) is returned as the error; the role stops without storing the record's
//! offset, so a restart handles the record again.

use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, OwnedHeaders};

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

/// The header `hunter dlq replay` puts on a record it re-publishes: how many times the record
/// was replayed (`1` for the first replay). Carried into the dead letter when the record fails
/// again, so the next replay knows (a decimal number, like every Hunter header).
pub const REPLAY_COUNT_HEADER: &str = "hunter-replay-count";
/// The header naming the dead letter a re-published record came from (`PARTITION:OFFSET` on the
/// dead-letter topic), so the sink records the replay and a second dead letter names its first.
pub const REPLAY_OF_HEADER: &str = "hunter-replay-of";
/// The prefix of the headers a dead letter sets itself; a consumed record's headers with it are
/// not carried into its dead letter (they would be a dead letter's own, stale).
pub const DEAD_LETTER_HEADER_PREFIX: &str = "hunter.";

/// A consumed record's own headers, in order (key, value; a null value as empty).
pub type RecordHeaders = Vec<(String, Vec<u8>)>;

/// The headers of a consumed message, to carry into its dead letter.
pub fn record_headers(message: &impl rdkafka::Message) -> RecordHeaders {
    message
        .headers()
        .map(|headers| {
            headers
                .iter()
                .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
                .collect()
        })
        .unwrap_or_default()
}

/// The replay count a record's headers carry: 0 when it was never replayed (no header), and 0
/// too for a value that is not a number (a header someone else wrote is no reason to refuse).
pub fn replay_count(headers: &[(String, Vec<u8>)]) -> u32 {
    headers
        .iter()
        .rev()
        .find(|(key, _)| key == REPLAY_COUNT_HEADER)
        .and_then(|(_, value)| std::str::from_utf8(value).ok()?.trim().parse().ok())
        .unwrap_or(0)
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

    /// Dead-letters a consumed record as it came (`key`, `payload`, its own `headers`); when
    /// Kafka refuses it, a reference to its position instead.
    pub async fn record(
        &self,
        error: &RecordError,
        at: Position<'_>,
        key: Option<&[u8]>,
        headers: &[(String, Vec<u8>)],
        payload: &[u8],
    ) -> Result<DeadLettered, KafkaError> {
        let reference = Reference::of_record(at.topic, at.partition, at.offset, payload.len());
        self.send(error, Some(at), at.topic, key, headers, payload, &reference)
            .await
    }

    /// Dead-letters a consumed record of `bytes` bytes by a reference to its position (it stays
    /// on its topic): for a record whose output Kafka refused for what it is.
    pub async fn reference_to(
        &self,
        error: &RecordError,
        at: Position<'_>,
        key: Option<&[u8]>,
        headers: &[(String, Vec<u8>)],
        bytes: usize,
    ) -> Result<DeadLettered, KafkaError> {
        let reference = Reference::of_record(at.topic, at.partition, at.offset, bytes);
        let payload = reference.to_json();
        self.send(
            error,
            Some(at),
            at.topic,
            key,
            headers,
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
        self.send(error, None, origin, None, &[], payload, reference)
            .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn send(
        &self,
        error: &RecordError,
        at: Option<Position<'_>>,
        origin: &str,
        key: Option<&[u8]>,
        carried: &[(String, Vec<u8>)],
        payload: &[u8],
        reference: &Reference,
    ) -> Result<DeadLettered, KafkaError> {
        let (partition, offset) = (at.map(|at| at.partition), at.map(|at| at.offset));
        let replays = replay_count(carried);
        tracing::warn!(stage = self.stage, class = error.class, origin, partition, offset, replays, error = %error.reason, "record dead-lettered");
        metrics::counter!(names::DLQ_RECORDS_TOTAL, "stage" => self.stage, "class" => error.class)
            .increment(1);
        let headers = DeadLetterHeaders {
            stage: self.stage,
            error: &error.reason,
            error_class: error.class,
            original_topic: origin,
            original_partition: partition,
            original_offset: offset,
            carried,
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
    /// The consumed record's own headers, carried after the dead letter's (those starting with
    /// [`DEAD_LETTER_HEADER_PREFIX`] are left out).
    pub carried: &'a [(String, Vec<u8>)],
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
        for (key, value) in self.carried {
            if !key.starts_with(DEAD_LETTER_HEADER_PREFIX) {
                headers = headers.insert(Header {
                    key,
                    value: Some(value),
                });
            }
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

    fn header(key: &str, value: &str) -> (String, Vec<u8>) {
        (key.to_owned(), value.as_bytes().to_vec())
    }

    #[test]
    fn the_replay_count_is_read_from_the_records_headers() {
        assert_eq!(replay_count(&[]), 0);
        assert_eq!(replay_count(&[header("other", "5")]), 0);
        assert_eq!(replay_count(&[header(REPLAY_COUNT_HEADER, "1")]), 1);
        assert_eq!(replay_count(&[header(REPLAY_COUNT_HEADER, " 3 ")]), 3);
        // The last one wins (a header appended by a later hop).
        let both = [
            header(REPLAY_COUNT_HEADER, "1"),
            header(REPLAY_COUNT_HEADER, "2"),
        ];
        assert_eq!(replay_count(&both), 2);
        assert_eq!(replay_count(&[header(REPLAY_COUNT_HEADER, "many")]), 0);
    }

    #[test]
    fn a_dead_letter_carries_the_records_headers_but_not_stale_dead_letter_ones() {
        let carried = [
            header(REPLAY_COUNT_HEADER, "1"),
            header(REPLAY_OF_HEADER, "0:7"),
            header("traceparent", "00-abc"),
            header("hunter.stage", "sink"),
        ];
        let letter = DeadLetterHeaders {
            stage: "processor",
            error: "bad",
            error_class: "decode",
            original_topic: "t",
            original_partition: Some(0),
            original_offset: Some(9),
            carried: &carried,
        };
        let headers = letter.headers();
        let all: Vec<(String, String)> = headers
            .iter()
            .map(|h| {
                (
                    h.key.to_owned(),
                    String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                )
            })
            .collect();
        let stages: Vec<_> = all.iter().filter(|(k, _)| k == "hunter.stage").collect();
        assert_eq!(
            stages,
            [&("hunter.stage".to_owned(), "processor".to_owned())]
        );
        for (key, value) in [
            (REPLAY_COUNT_HEADER, "1"),
            (REPLAY_OF_HEADER, "0:7"),
            ("traceparent", "00-abc"),
        ] {
            assert!(
                all.contains(&(key.to_owned(), value.to_owned())),
                "{key} carried: {all:?}"
            );
        }
    }
}
