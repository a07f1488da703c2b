//! The record-size policy: how large a Kafka record Hunter writes may be, and what becomes of a
//! referral or a dead letter that would be larger (`docs/record-size.md` has the figures).
//!
//! Invariants:
//! - every producer lets librdkafka send records up to [`PRODUCER_MESSAGE_MAX_BYTES`], compressed
//!   or not (`HUNTER_KAFKA_COMPRESSION`); topics Hunter creates accept batches up to
//!   [`TOPIC_MAX_MESSAGE_BYTES`], so whatever librdkafka sends, a topic made by `hunter migrate`
//!   takes;
//! - a referral record is at most [`REFERRAL_RECORD_BUDGET`] bytes before compression, well under
//!   every broker's default limit (about 1 MB on Apache Kafka, Event Hubs, MSK, Redpanda). A
//!   referral whose record would be larger is published with its long strings cut and marked
//!   ([`cut_long_strings`], the record's `truncation` field), and a dead letter says so; if
//!   cutting strings cannot bring it under the budget it is dead-lettered by [`Reference`]
//!   instead of in full;
//! - a record that librdkafka or the broker refuses for what it is ([`refused_record`]: too
//!   large, invalid) is a fault of that record, not of Kafka: it is dead-lettered (by reference
//!   when the record itself cannot travel) and the stream moves on. Only other errors count as
//!   Kafka failing.
//!
//! Failure modes: a broker configured with a limit below a record Hunter sends refuses it; that
//! record is dead-lettered by reference and an operator sees it in `hunter.dlq.v1` (class
//! `refused`). A reference that is itself refused is a real Kafka problem and fails as one.

use rdkafka::error::KafkaError;
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::FutureRecord;

use crate::kafka::Producer;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::Timeout;
use serde::Serialize;

use crate::kafka::DeadLetterHeaders;

/// The codec the figures of docs/record-size.md are measured with, and the one to choose
/// (`HUNTER_KAFKA_COMPRESSION=lz4`) on a broker that keeps batches compressed: librdkafka has it
/// built in (zstd is not compiled into Hunter's librdkafka), it costs little CPU and every Kafka
/// client reads it. Hunter's producers use `HUNTER_KAFKA_COMPRESSION` (`none` by default, see
/// `config::KafkaCompression`); the limits here hold either way.
pub const COMPRESSION: &str = "lz4";

/// `message.max.bytes` of every producer: the largest record (value, key and headers) librdkafka
/// accepts from Hunter, checked before compression. librdkafka's default is 1,000,000.
pub const PRODUCER_MESSAGE_MAX_BYTES: usize = 1024 * 1024;

/// `max.message.bytes` of the topics `hunter migrate` creates: the largest (compressed) batch the
/// broker accepts. Twice [`PRODUCER_MESSAGE_MAX_BYTES`], so that a batch holding the largest
/// record librdkafka lets through, incompressible and with its batch overhead, still fits.
pub const TOPIC_MAX_MESSAGE_BYTES: usize = 2 * PRODUCER_MESSAGE_MAX_BYTES;

/// The largest referral record (encoded Avro, before compression) the source publishes. A
/// referral's text travels twice (typed fields and `rawJson`), so a referral of up to about
/// 250 KB of JSON always fits; a larger one is cut (see the module doc).
pub const REFERRAL_RECORD_BUDGET: usize = 512 * 1024;

/// What a cut string keeps at most, tried in turn until the record fits the budget: the first
/// step only touches strings over 64 KiB (notes pasted whole), later steps cut deeper.
pub const CUT_STEPS: [usize; 5] = [64 * 1024, 16 * 1024, 4 * 1024, 1024, 256];

/// The words a cut string ends with (after what it kept), so that a reader sees it was cut.
pub const CUT_MARK: &str = "truncated by Hunter";

/// A referral id, eTag or other reference text is cut to this many characters.
const REFERENCE_TEXT_MAX: usize = 256;

/// Whether librdkafka or the broker refused this record for what it is (its size or its
/// content), so that sending it again can never succeed: the record is dead-lettered instead.
/// Every other error (brokers down, timeouts, a fenced producer) is Kafka failing.
pub fn refused_record(error: &KafkaError) -> Option<RDKafkaErrorCode> {
    let code = match error {
        KafkaError::MessageProduction(code) => *code,
        _ => return None,
    };
    matches!(
        code,
        RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::InvalidMessageSize
            | RDKafkaErrorCode::MessageBatchTooLarge
            | RDKafkaErrorCode::InvalidRecord
            | RDKafkaErrorCode::InvalidMessage
            | RDKafkaErrorCode::InvalidTimestamp
            | RDKafkaErrorCode::PolicyViolation
    )
    .then_some(code)
}

/// A JSON text with its long strings cut.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    /// The text with every string value longer than `keep` bytes (as JSON text) cut to at most
    /// `keep` bytes and ended with ` [... truncated by Hunter: K of N bytes kept]`; everything
    /// else (keys, numbers, spacing, key order) byte for byte as it was.
    pub json: String,
    /// JSON Pointers (RFC 6901) of the values cut, in document order.
    pub fields: Vec<String>,
}

/// Cuts every string value of `raw` (valid JSON) longer than `keep` bytes of JSON text. A cut
/// never splits a character or an escape sequence (nor a surrogate pair), so the result is
/// valid JSON whenever `raw` is. Object keys are never cut.
pub fn cut_long_strings(raw: &str, keep: usize) -> Cut {
    enum Frame {
        Object { key: String, want_key: bool },
        Array { index: usize },
    }
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len().min(1 << 20));
    let mut fields = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut copied = 0;
    let mut at = 0;
    while at < bytes.len() {
        match bytes[at] {
            b'"' => {
                let end = string_end(bytes, at);
                let literal = &raw[at + 1..end.min(raw.len()).max(at + 1)];
                let is_key = matches!(stack.last(), Some(Frame::Object { want_key: true, .. }));
                if is_key {
                    if let Some(Frame::Object { key, .. }) = stack.last_mut() {
                        *key = serde_json::from_str::<String>(&raw[at..(end + 1).min(raw.len())])
                            .unwrap_or_else(|_| literal.to_owned());
                    }
                } else if literal.len() > keep {
                    let kept = cut_point(literal.as_bytes(), keep);
                    out.push_str(&raw[copied..at + 1]);
                    out.push_str(&literal[..kept]);
                    out.push_str(&format!(
                        " [... {CUT_MARK}: {kept} of {} bytes kept]",
                        literal.len()
                    ));
                    copied = end;
                    let mut pointer = String::new();
                    for frame in &stack {
                        pointer.push('/');
                        match frame {
                            Frame::Object { key, .. } => {
                                pointer.push_str(&key.replace('~', "~0").replace('/', "~1"))
                            }
                            Frame::Array { index } => pointer.push_str(&index.to_string()),
                        }
                    }
                    fields.push(pointer);
                }
                at = end + 1;
                continue;
            }
            b'{' => stack.push(Frame::Object {
                key: String::new(),
                want_key: true,
            }),
            b'[' => stack.push(Frame::Array { index: 0 }),
            b'}' | b']' => {
                stack.pop();
            }
            b':' => {
                if let Some(Frame::Object { want_key, .. }) = stack.last_mut() {
                    *want_key = false;
                }
            }
            b',' => match stack.last_mut() {
                Some(Frame::Object { want_key, .. }) => *want_key = true,
                Some(Frame::Array { index }) => *index += 1,
                None => {}
            },
            _ => {}
        }
        at += 1;
    }
    out.push_str(&raw[copied.min(raw.len())..]);
    Cut { json: out, fields }
}

/// The index of the quote closing the string literal that opens at `start` (or the end of the
/// text if it never closes).
fn string_end(bytes: &[u8], start: usize) -> usize {
    let mut at = start + 1;
    while at < bytes.len() {
        match bytes[at] {
            b'\\' => at += 2,
            b'"' => return at,
            _ => at += 1,
        }
    }
    bytes.len()
}

/// The longest prefix of the escaped string text `literal`, at most `keep` bytes, that ends
/// between two characters: not inside a UTF-8 sequence, an escape, or a `\uD8xx\uDCxx` pair.
fn cut_point(literal: &[u8], keep: usize) -> usize {
    let mut at = 0;
    while at < literal.len() {
        let unit = match literal[at] {
            b'\\' if literal.get(at + 1) == Some(&b'u') => {
                let high = std::str::from_utf8(literal.get(at + 2..at + 6).unwrap_or_default())
                    .ok()
                    .and_then(|hex| u16::from_str_radix(hex, 16).ok());
                let pair = high.is_some_and(|h| (0xD800..0xDC00).contains(&h))
                    && literal.get(at + 6) == Some(&b'\\')
                    && literal.get(at + 7) == Some(&b'u');
                if pair { 12 } else { 6 }
            }
            b'\\' => 2,
            byte if byte < 0x80 => 1,
            byte if byte >= 0xF0 => 4,
            byte if byte >= 0xE0 => 3,
            _ => 2,
        };
        if at + unit > keep {
            break;
        }
        at += unit;
    }
    at.min(literal.len())
}

/// What a dead letter carries instead of a record that cannot (or need not) travel in full:
/// enough to find the original (in Partner Center by id, or on its topic by position) and its
/// size. Serialized as `{"reference": {...}}`; absent parts are left out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Reference {
    /// The referral id (cut to 256 characters).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub e_tag: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_date_time: Option<String>,
    /// Where the record is, when it is on a topic.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<i64>,
    /// Bytes of what is not carried (the record, or the referral's JSON).
    pub bytes: usize,
    /// JSON Pointers of the strings that were cut, when the referral was published cut.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub truncated: Vec<String>,
}

impl Reference {
    /// A reference to a referral as the API returned it: its id, eTag and updatedDateTime when
    /// `raw` is a JSON object that has them as strings (read leniently, never failing), and
    /// its size.
    pub fn of_referral_json(raw: &str) -> Self {
        #[derive(serde::Deserialize, Default)]
        #[serde(default)]
        struct Probe {
            id: Option<serde_json::Value>,
            #[serde(rename = "eTag")]
            e_tag: Option<serde_json::Value>,
            #[serde(rename = "updatedDateTime")]
            updated_date_time: Option<serde_json::Value>,
        }
        let probe: Probe = serde_json::from_str(raw).unwrap_or_default();
        let text = |value: Option<serde_json::Value>| match value {
            Some(serde_json::Value::String(text)) => Some(short(&text)),
            _ => None,
        };
        Reference {
            id: text(probe.id),
            e_tag: text(probe.e_tag),
            updated_date_time: text(probe.updated_date_time),
            bytes: raw.len(),
            ..Reference::default()
        }
    }

    /// A reference to a record on a topic.
    pub fn of_record(topic: &str, partition: i32, offset: i64, bytes: usize) -> Self {
        Reference {
            topic: Some(topic.to_owned()),
            partition: Some(partition),
            offset: Some(offset),
            bytes,
            ..Reference::default()
        }
    }

    /// `{"reference": {...}}`.
    pub fn to_json(&self) -> String {
        serde_json::json!({ "reference": self }).to_string()
    }
}

/// Produces a dead letter: `payload` (and `key`) with `letter`'s headers. When Kafka refuses it
/// for what it is (a record too large for the dead-letter topic), produces `reference` in its
/// place, with the refusal added to the reason; the original stays where `reference` says.
/// Returns what was sent (`payload` or the reference) or the error of the last attempt.
pub async fn send_dead_letter(
    producer: &Producer,
    topic: &str,
    letter: &DeadLetterHeaders<'_>,
    key: Option<&[u8]>,
    payload: &[u8],
    reference: &Reference,
) -> Result<DeadLettered, KafkaError> {
    async fn send(
        producer: &Producer,
        topic: &str,
        key: Option<&[u8]>,
        headers: OwnedHeaders,
        payload: &[u8],
    ) -> Result<(), KafkaError> {
        let mut record = FutureRecord::<[u8], [u8]>::to(topic)
            .payload(payload)
            .headers(headers);
        if let Some(key) = key {
            record = record.key(key);
        }
        producer
            .send(record, Timeout::Never)
            .await
            .map(|_| ())
            .map_err(|(error, _)| error)
    }
    match send(producer, topic, key, letter.headers(), payload).await {
        Ok(()) => Ok(DeadLettered::Whole),
        Err(error) if refused_record(&error).is_some() => {
            let reason = format!(
                "{}; kafka refused the {}-byte dead letter ({error}), so it carries a reference",
                letter.error,
                payload.len()
            );
            let letter = DeadLetterHeaders {
                error: &reason,
                ..letter.clone()
            };
            let reference = reference.to_json();
            send(producer, topic, key, letter.headers(), reference.as_bytes())
                .await
                .map(|()| DeadLettered::Reference)
        }
        Err(error) => Err(error),
    }
}

/// What [`send_dead_letter`] sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadLettered {
    /// The record itself.
    Whole,
    /// A [`Reference`] in its place.
    Reference,
}

/// At most [`REFERENCE_TEXT_MAX`] characters of `text`.
fn short(text: &str) -> String {
    text.chars().take(REFERENCE_TEXT_MAX).collect()
}

/// The first `max` JSON Pointers of `fields`, and how many more there are, for messages.
pub fn list_fields(fields: &[String], max: usize) -> String {
    let mut listed = fields
        .iter()
        .take(max)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if fields.len() > max {
        listed.push_str(&format!(" and {} more", fields.len() - max));
    }
    listed
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn short_strings_and_everything_but_long_strings_stay_byte_for_byte() {
        let raw = "{\"id\" : \"r-1\",\n  \"n\": 1.50, \"a\": [true, null, \"xy\"], \"o\": {}}";
        let cut = cut_long_strings(raw, 10);
        assert_eq!(cut.json, raw);
        assert!(cut.fields.is_empty());
    }

    #[test]
    fn long_strings_are_cut_marked_and_named_by_pointer() {
        let long = "x".repeat(100);
        let raw = json!({
            "id": "r-1",
            "notes": long,
            "details": {"notes": long, "a/b~c": long},
            "team": [{"email": "short"}, {"email": long}],
            long.clone(): "short",
        })
        .to_string();
        let cut = cut_long_strings(&raw, 10);
        let value: Value = serde_json::from_str(&cut.json).expect("still valid json");
        assert_eq!(
            value["details"]["notes"],
            json!("xxxxxxxxxx [... truncated by Hunter: 10 of 100 bytes kept]")
        );
        assert_eq!(value["team"][0]["email"], json!("short"));
        assert!(
            value["team"][1]["email"]
                .as_str()
                .unwrap()
                .contains(CUT_MARK)
        );
        assert_eq!(value[&long], json!("short"));
        let mut fields = cut.fields.clone();
        fields.sort();
        assert_eq!(
            fields,
            [
                "/details/a~1b~0c",
                "/details/notes",
                "/notes",
                "/team/1/email"
            ]
        );
    }

    #[test]
    fn a_cut_never_splits_a_character_an_escape_or_a_surrogate_pair() {
        // Each text is longer than every keep below; every cut must still parse.
        let texts = [
            "é".repeat(50),
            "😀".repeat(50),
            "a\\\"b\\n".repeat(20),
            "\\u00e9\\ud83d\\ude00z".repeat(20),
            "\\\\".repeat(50),
        ];
        for text in texts {
            let raw = format!("{{\"s\": \"{text}\"}}");
            let original: Value = serde_json::from_str(&raw).unwrap();
            for keep in 0..40 {
                let cut = cut_long_strings(&raw, keep);
                let value: Value = serde_json::from_str(&cut.json)
                    .unwrap_or_else(|e| panic!("keep {keep} of {text}: {e}\n{}", cut.json));
                let kept = value["s"].as_str().unwrap();
                let prefix = kept.split(" [... ").next().unwrap();
                assert!(
                    original["s"].as_str().unwrap().starts_with(prefix),
                    "keep {keep}: {prefix:?} is not a prefix"
                );
            }
        }
    }

    #[test]
    fn references_carry_the_ids_and_never_the_body() {
        let raw = json!({"id": "r-1", "eTag": "\"7\"", "updatedDateTime": "2025-01-01T00:00:00Z",
            "notes": "x".repeat(10_000)})
        .to_string();
        let reference = Reference::of_referral_json(&raw);
        assert_eq!(reference.id.as_deref(), Some("r-1"));
        assert_eq!(reference.bytes, raw.len());
        let json = reference.to_json();
        assert!(json.len() < 200, "{json}");
        assert_eq!(
            serde_json::from_str::<Value>(&json).unwrap()["reference"]["eTag"],
            json!("\"7\"")
        );
        // Not JSON, or a huge id: still a small reference.
        assert_eq!(Reference::of_referral_json("{not json").id, None);
        let huge = json!({"id": "i".repeat(100_000)}).to_string();
        assert!(Reference::of_referral_json(&huge).to_json().len() < 400);
        let record: Value =
            serde_json::from_str(&Reference::of_record("t", 2, 40, 5_000_000).to_json()).unwrap();
        assert_eq!(
            record,
            json!({"reference": {"topic": "t", "partition": 2, "offset": 40, "bytes": 5_000_000}})
        );
    }

    #[test]
    fn only_refusals_of_the_record_itself_are_refused_records() {
        for code in [
            RDKafkaErrorCode::MessageSizeTooLarge,
            RDKafkaErrorCode::InvalidRecord,
            RDKafkaErrorCode::MessageBatchTooLarge,
        ] {
            assert_eq!(
                refused_record(&KafkaError::MessageProduction(code)),
                Some(code)
            );
        }
        for code in [
            RDKafkaErrorCode::AllBrokersDown,
            RDKafkaErrorCode::MessageTimedOut,
            RDKafkaErrorCode::UnknownProducerId,
        ] {
            assert_eq!(refused_record(&KafkaError::MessageProduction(code)), None);
        }
        assert_eq!(
            refused_record(&KafkaError::Flush(RDKafkaErrorCode::MessageSizeTooLarge)),
            None
        );
    }

    #[test]
    fn fields_are_listed_up_to_a_limit() {
        let fields: Vec<String> = (0..5).map(|i| format!("/f{i}")).collect();
        assert_eq!(list_fields(&fields, 2), "/f0, /f1 and 3 more");
        assert_eq!(list_fields(&fields[..1], 2), "/f0");
    }
}
