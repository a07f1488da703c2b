//! Dead-letter re-drive: `hunter dlq list`, `hunter dlq replay` and `POST /api/v1/dlq/replay`
//! (docs/operations.md).
//!
//! A dead letter (`hunter.dlq.v1`) holds the record as it came (key, payload, its own headers)
//! and, in `hunter.*` headers, the stage, the error and where the record came from
//! (`hunter_core::kafka::dead_letter`). Replaying one re-publishes the record to that topic and
//! partition, with its key and headers plus [`REPLAY_COUNT_HEADER`] (times replayed) and
//! [`REPLAY_OF_HEADER`] (the dead letter's `PARTITION:OFFSET`).
//!
//! Invariants:
//! - the dead-letter topic is authoritative: the bytes replayed are read from it, never from
//!   ClickHouse; the `dlq` table is the index that `list` and the filters (`--stage`, `--since`)
//!   search, and `dlq_replays` (written by the sink when it reads a re-published record) says
//!   what was replayed already;
//! - nothing loops: a record that fails again goes back to the dead-letter topic carrying its
//!   count, and [`decide`] refuses a dead letter whose count reached the limit (1 by default),
//!   and one that was replayed before (unless asked `again`), so every replay is an operator's
//!   decision and each dead letter is re-published at most once per decision;
//! - `dry_run` reads and decides exactly as a replay does, and sends nothing;
//! - a dead letter that cannot be replayed gets a reason, never an error that stops the others:
//!   one from the Partner Center API (no topic: the next sync reads it again), one that holds a
//!   reference to a record too large for the dead-letter topic, one no longer on the topic.
//!
//! Failure modes: ClickHouse or the broker unreachable is an error of the whole command (nothing
//! was sent when ClickHouse fails; when the broker fails mid-way, the outcomes so far are lost
//! to the caller but each sent record is recorded by the sink, so `list` shows it).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context as _;
use clickhouse::{Client, Row};
use hunter_core::config::KafkaSettings;
use hunter_core::kafka::{
    self, DEAD_LETTER_HEADER_PREFIX, REPLAY_COUNT_HEADER, REPLAY_OF_HEADER, RecordHeaders,
};
use rdkafka::Message;
use rdkafka::consumer::Consumer;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use rdkafka::util::Timeout;
use serde::{Deserialize, Serialize};

/// Replays a dead letter may have had before it is refused, unless raised (`--max-replays`).
pub const DEFAULT_MAX_REPLAYS: u32 = 1;

/// Dead letters listed or replayed at most per call, unless raised (`--limit`).
pub const DEFAULT_LIMIT: u32 = 1_000;

/// A dead letter's position on the dead-letter topic, written `PARTITION:OFFSET`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DeadLetterId {
    pub partition: i32,
    pub offset: i64,
}

impl fmt::Display for DeadLetterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.partition, self.offset)
    }
}

impl FromStr for DeadLetterId {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!(
                "{text:?} is not a dead letter id: PARTITION:OFFSET on the dead-letter topic, as `hunter dlq list` prints it (e.g. 0:42)"
            )
        };
        let (partition, offset) = text.trim().split_once(':').ok_or_else(bad)?;
        let partition: i32 = partition.parse().map_err(|_| bad())?;
        let offset: i64 = offset.parse().map_err(|_| bad())?;
        if partition < 0 || offset < 0 {
            return Err(bad());
        }
        Ok(DeadLetterId { partition, offset })
    }
}

impl DeadLetterId {
    /// For clap's `value_parser`.
    pub fn from_str_arg(text: &str) -> Result<Self, String> {
        text.parse()
    }
}

impl TryFrom<String> for DeadLetterId {
    type Error = String;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<DeadLetterId> for String {
    fn from(id: DeadLetterId) -> Self {
        id.to_string()
    }
}

/// `--since`: an RFC 3339 time (`2026-01-31T08:00:00Z`) or a duration back from `now` (`90s`,
/// `30m`, `24h`, `7d`); returns unix seconds.
pub fn parse_since(text: &str, now_unix: i64) -> Result<i64, String> {
    let text = text.trim();
    if let Ok(time) =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
    {
        return Ok(time.unix_timestamp());
    }
    let unit = text.chars().last().unwrap_or(' ');
    let seconds = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3_600,
        'd' => 86_400,
        _ => 0,
    };
    let amount = text[..text.len() - unit.len_utf8().min(text.len())]
        .parse::<u32>()
        .ok()
        .filter(|_| seconds > 0);
    match amount {
        Some(amount) => Ok(now_unix - i64::from(amount) * seconds),
        None => Err(format!(
            "{text:?} is neither an RFC 3339 time (2026-01-31T08:00:00Z) nor a duration back from now (90s, 30m, 24h, 7d)"
        )),
    }
}

/// Which dead letters: every condition given must hold.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Filter {
    /// The stage that dead-lettered them (`source`, `processor`, `sink`).
    pub stage: Option<String>,
    /// Received by the sink at or after this time (unix seconds).
    pub since: Option<i64>,
    /// Only these (empty: any).
    pub ids: Vec<DeadLetterId>,
    /// At most this many (oldest first).
    pub limit: u32,
}

impl Filter {
    /// Checks a stage name (the API's and the CLI's parameter).
    pub fn check_stage(stage: &str) -> Result<(), String> {
        match stage {
            "source" | "processor" | "sink" => Ok(()),
            other => Err(format!(
                "{other:?} is not a stage: source, processor or sink"
            )),
        }
    }
}

/// One dead letter as the index knows it, with what became of it.
#[derive(Debug, Clone, Serialize)]
pub struct Listed {
    pub id: DeadLetterId,
    /// When the sink wrote it to ClickHouse (unix seconds).
    pub received_at: i64,
    pub stage: String,
    pub error_class: String,
    pub error: String,
    pub original_topic: String,
    pub original_partition: Option<i32>,
    pub original_offset: Option<i64>,
    /// Times the record had been replayed when it failed.
    pub replay_count: u32,
    /// The dead letter it was replayed from, when it is a replay that failed again.
    pub replay_of: Option<DeadLetterId>,
    /// Times this dead letter was re-published, and the last time.
    pub replays: u64,
    pub last_replayed_at: Option<i64>,
    /// The dead letters its replays became (the record failed again).
    pub failed_again_as: Vec<DeadLetterId>,
}

impl Listed {
    /// `pending` (never replayed), `replayed` (re-published, not back), `failed again`.
    pub fn outcome(&self) -> &'static str {
        if !self.failed_again_as.is_empty() {
            "failed again"
        } else if self.replays > 0 {
            "replayed"
        } else {
            "pending"
        }
    }
}

#[derive(Debug, Row, Deserialize)]
struct IndexRow {
    dlq_partition: i32,
    dlq_offset: i64,
    received_unix: i64,
    stage: String,
    error_class: String,
    error: String,
    original_topic: String,
    original_partition: Option<i32>,
    original_offset: Option<i64>,
    replay_count: u32,
    replay_of: String,
}

/// `(p1, o1), (p2, o2)` of numbers only: safe to put in SQL as it is.
fn id_tuples(ids: impl IntoIterator<Item = DeadLetterId>) -> String {
    ids.into_iter()
        .map(|id| format!("({}, {})", id.partition, id.offset))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The dead letters the index has that match `filter`, oldest first, with their replays.
pub async fn list(client: &Client, filter: &Filter) -> clickhouse::error::Result<Vec<Listed>> {
    let mut sql = String::from(
        "SELECT dlq_partition, dlq_offset, toInt64(toUInt32(received_at)) AS received_unix, stage, \
         error_class, error, original_topic, original_partition, original_offset, replay_count, \
         replay_of FROM dlq FINAL WHERE (stage = ? OR ? = '')",
    );
    if filter.since.is_some() {
        sql.push_str(" AND received_at >= toDateTime(?)");
    }
    if !filter.ids.is_empty() {
        sql.push_str(&format!(
            " AND (dlq_partition, dlq_offset) IN ({})",
            id_tuples(filter.ids.iter().copied())
        ));
    }
    sql.push_str(" ORDER BY received_at, dlq_partition, dlq_offset LIMIT ?");
    let stage = filter.stage.clone().unwrap_or_default();
    let mut query = client.query(&sql).bind(&stage).bind(&stage);
    if let Some(since) = filter.since {
        query = query.bind(since);
    }
    let rows: Vec<IndexRow> = query.bind(filter.limit.max(1)).fetch_all().await?;
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<DeadLetterId> = rows
        .iter()
        .map(|row| DeadLetterId {
            partition: row.dlq_partition,
            offset: row.dlq_offset,
        })
        .collect();
    let replays: Vec<(i32, i64, u64, i64)> = client
        .query(&format!(
            "SELECT dlq_partition, dlq_offset, count(), toInt64(toUInt32(max(replayed_at))) \
             FROM dlq_replays FINAL WHERE (dlq_partition, dlq_offset) IN ({}) \
             GROUP BY dlq_partition, dlq_offset",
            id_tuples(ids.iter().copied())
        ))
        .fetch_all()
        .await?;
    let replays: BTreeMap<DeadLetterId, (u64, i64)> = replays
        .into_iter()
        .map(|(partition, offset, count, last)| (DeadLetterId { partition, offset }, (count, last)))
        .collect();
    let names: Vec<String> = ids.iter().map(ToString::to_string).collect();
    let again: Vec<(String, i32, i64)> = client
        .query("SELECT replay_of, dlq_partition, dlq_offset FROM dlq FINAL WHERE has(?, replay_of)")
        .bind(names)
        .fetch_all()
        .await?;
    let mut failed_again: BTreeMap<String, Vec<DeadLetterId>> = BTreeMap::new();
    for (of, partition, offset) in again {
        failed_again
            .entry(of)
            .or_default()
            .push(DeadLetterId { partition, offset });
    }
    Ok(rows
        .into_iter()
        .map(|row| {
            let id = DeadLetterId {
                partition: row.dlq_partition,
                offset: row.dlq_offset,
            };
            let (replays, last) = replays
                .get(&id)
                .map_or((0, None), |(count, last)| (*count, Some(*last)));
            Listed {
                id,
                received_at: row.received_unix,
                stage: row.stage,
                error_class: row.error_class,
                error: row.error,
                original_topic: row.original_topic,
                original_partition: row.original_partition,
                original_offset: row.original_offset,
                replay_count: row.replay_count,
                replay_of: row.replay_of.parse().ok(),
                replays,
                last_replayed_at: last,
                failed_again_as: failed_again.remove(&id.to_string()).unwrap_or_default(),
            }
        })
        .collect())
}

/// A dead letter as the dead-letter topic holds it.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub id: DeadLetterId,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    /// Every header: the dead letter's own (`hunter.*`) and the record's.
    pub headers: RecordHeaders,
}

impl Fetched {
    fn header(&self, key: &str) -> Option<String> {
        self.headers
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }
}

/// What [`decide`] makes of one dead letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Re-publish `key`, `payload` and `headers` to `topic`, `partition`.
    Replay {
        topic: String,
        partition: i32,
        headers: RecordHeaders,
        count: u32,
    },
    /// Not replayed, and why (and what to do instead).
    Skip(String),
}

/// The replay rule: whether and how to re-publish one dead letter, given how many replays it
/// may have had (`max_replays`) and whether it was replayed before (`replayed_before`, with
/// `again` to replay it anyway).
pub fn decide(letter: &Fetched, max_replays: u32, replayed_before: bool, again: bool) -> Decision {
    let (Some(topic), Some(partition)) = (
        letter.header("hunter.original.topic"),
        letter
            .header("hunter.original.partition")
            .and_then(|p| p.parse::<i32>().ok()),
    ) else {
        return Decision::Skip(
            "it came from the Partner Center API, not from a topic: the next sync (or `sync now`) reads the referral again once it is fixed there".into(),
        );
    };
    let is_reference = serde_json::from_slice::<serde_json::Value>(&letter.payload)
        .ok()
        .is_some_and(|value| value.get("reference").is_some());
    if is_reference {
        let offset = letter
            .header("hunter.original.offset")
            .unwrap_or_else(|| "?".into());
        return Decision::Skip(format!(
            "it holds a reference, not the record (the record was too large to dead-letter, or what it made was): the record is at {topic} partition {partition} offset {offset}"
        ));
    }
    let count = kafka::replay_count(&letter.headers);
    if count >= max_replays {
        return Decision::Skip(format!(
            "it was replayed {count} time(s) already and failed again; not replayed, so it cannot loop (after fixing the cause, --max-replays {} replays it)",
            count + 1
        ));
    }
    if replayed_before && !again {
        return Decision::Skip(
            "it was replayed before (see `hunter dlq list`); --again replays it once more".into(),
        );
    }
    let mut headers: RecordHeaders = letter
        .headers
        .iter()
        .filter(|(key, _)| {
            !key.starts_with(DEAD_LETTER_HEADER_PREFIX)
                && key != REPLAY_COUNT_HEADER
                && key != REPLAY_OF_HEADER
        })
        .cloned()
        .collect();
    let count = count + 1;
    headers.push((REPLAY_COUNT_HEADER.into(), count.to_string().into_bytes()));
    headers.push((REPLAY_OF_HEADER.into(), letter.id.to_string().into_bytes()));
    Decision::Replay {
        topic,
        partition,
        headers,
        count,
    }
}

/// What became of one dead letter.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub id: DeadLetterId,
    /// `replayed`, `would replay` (dry run), `skipped` or `missing`.
    pub outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition: Option<i32>,
    /// Where the re-published record landed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<i64>,
    /// The replay count the re-published record carries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replay_count: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What to replay and how.
#[derive(Debug, Clone)]
pub struct ReplayRequest {
    pub filter: Filter,
    pub max_replays: u32,
    pub again: bool,
    pub dry_run: bool,
}

/// Replays the dead letters `request` selects: ids given are read from the topic whether or not
/// the index has them yet; otherwise the index selects them.
pub async fn replay(
    kafka_settings: &KafkaSettings,
    dlq_topic: &str,
    producer: &kafka::Producer,
    client: &Client,
    request: &ReplayRequest,
) -> anyhow::Result<Vec<Outcome>> {
    let indexed = list(client, &request.filter)
        .await
        .context("reading the dlq table in clickhouse")?;
    let replayed_before: BTreeSet<DeadLetterId> = indexed
        .iter()
        .filter(|listed| listed.replays > 0 || !listed.failed_again_as.is_empty())
        .map(|listed| listed.id)
        .collect();
    let wanted: BTreeSet<DeadLetterId> = if request.filter.ids.is_empty() {
        indexed.iter().map(|listed| listed.id).collect()
    } else {
        request.filter.ids.iter().copied().collect()
    };
    let fetched = fetch(kafka_settings, dlq_topic, &wanted).await?;
    let mut outcomes = Vec::new();
    for id in &wanted {
        let Some(letter) = fetched.get(id) else {
            outcomes.push(Outcome {
                id: *id,
                outcome: "missing",
                topic: None,
                partition: None,
                offset: None,
                replay_count: None,
                reason: Some(format!(
                    "not on {dlq_topic} (never there, or removed by retention)"
                )),
            });
            continue;
        };
        let outcome = match decide(
            letter,
            request.max_replays,
            replayed_before.contains(id),
            request.again,
        ) {
            Decision::Skip(reason) => Outcome {
                id: *id,
                outcome: "skipped",
                topic: None,
                partition: None,
                offset: None,
                replay_count: None,
                reason: Some(reason),
            },
            Decision::Replay {
                topic,
                partition,
                headers,
                count,
            } => {
                let offset = if request.dry_run {
                    None
                } else {
                    Some(send(producer, &topic, partition, letter, &headers).await?)
                };
                tracing::info!(id = %id, topic, partition, offset, count, dry_run = request.dry_run, "dead letter replayed");
                Outcome {
                    id: *id,
                    outcome: if request.dry_run {
                        "would replay"
                    } else {
                        "replayed"
                    },
                    topic: Some(topic),
                    partition: Some(partition),
                    offset,
                    replay_count: Some(count),
                    reason: None,
                }
            }
        };
        outcomes.push(outcome);
    }
    Ok(outcomes)
}

async fn send(
    producer: &kafka::Producer,
    topic: &str,
    partition: i32,
    letter: &Fetched,
    headers: &RecordHeaders,
) -> anyhow::Result<i64> {
    let mut owned = OwnedHeaders::new_with_capacity(headers.len());
    for (key, value) in headers {
        owned = owned.insert(Header {
            key,
            value: Some(value),
        });
    }
    let mut record = FutureRecord::<[u8], [u8]>::to(topic)
        .partition(partition)
        .payload(&letter.payload)
        .headers(owned);
    if let Some(key) = &letter.key {
        record = record.key(key);
    }
    let delivery = producer
        .send(record, Timeout::After(Duration::from_secs(60)))
        .await
        .map_err(|(error, _)| {
            anyhow::anyhow!(
                "replaying dead letter {} to {topic} partition {partition} failed: {error}",
                letter.id
            )
        })?;
    Ok(delivery.offset)
}

/// Reads the dead letters `wanted` from the dead-letter topic (the authoritative copy), outside
/// any consumer group; a position no longer there is absent from the answer.
pub async fn fetch(
    settings: &KafkaSettings,
    topic: &str,
    wanted: &BTreeSet<DeadLetterId>,
) -> anyhow::Result<BTreeMap<DeadLetterId, Fetched>> {
    if wanted.is_empty() {
        return Ok(BTreeMap::new());
    }
    let (settings, topic, wanted) = (settings.clone(), topic.to_owned(), wanted.clone());
    tokio::task::spawn_blocking(move || fetch_blocking(&settings, &topic, &wanted))
        .await
        .context("reading the dead-letter topic panicked")?
}

fn fetch_blocking(
    settings: &KafkaSettings,
    topic: &str,
    wanted: &BTreeSet<DeadLetterId>,
) -> anyhow::Result<BTreeMap<DeadLetterId, Fetched>> {
    let timeout = Duration::from_secs(30);
    let reader = kafka::reader(settings, "hunter-dlq-replay").context("kafka reader")?;
    // Per partition: from the first wanted offset to the last wanted one (or the end).
    let mut spans: BTreeMap<i32, (i64, i64)> = BTreeMap::new();
    for id in wanted {
        let span = spans.entry(id.partition).or_insert((id.offset, id.offset));
        span.0 = span.0.min(id.offset);
        span.1 = span.1.max(id.offset);
    }
    let mut assignment = rdkafka::TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for (partition, (first, last)) in &spans {
        let Ok((low, high)) = reader.fetch_watermarks(topic, *partition, timeout) else {
            continue; // no such partition: every id of it is missing
        };
        let start = (*first).max(low);
        let end = (*last + 1).min(high);
        if start < end {
            assignment.add_partition_offset(topic, *partition, rdkafka::Offset::Offset(start))?;
            ends.insert(*partition, end);
        }
    }
    let mut found = BTreeMap::new();
    if !ends.is_empty() {
        reader.assign(&assignment)?;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !ends.is_empty() {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "reading {topic} did not reach the dead letters asked for within 120 s: is the broker serving it?"
        );
        let Some(message) = reader.poll(Duration::from_millis(500)) else {
            continue;
        };
        let message = message.with_context(|| format!("reading {topic}"))?;
        let id = DeadLetterId {
            partition: message.partition(),
            offset: message.offset(),
        };
        if wanted.contains(&id) {
            found.insert(
                id,
                Fetched {
                    id,
                    key: message.key().map(<[u8]>::to_vec),
                    payload: message.payload().unwrap_or_default().to_vec(),
                    headers: kafka::record_headers(&message),
                },
            );
        }
        if ends
            .get(&id.partition)
            .is_some_and(|end| id.offset + 1 >= *end)
        {
            ends.remove(&id.partition);
        }
    }
    // Dropping a consumer blocks for a while (see hunter_core::kafka::consume): not here.
    std::thread::spawn(move || drop(reader));
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(headers: &[(&str, &str)], payload: &[u8]) -> Fetched {
        Fetched {
            id: DeadLetterId {
                partition: 1,
                offset: 7,
            },
            key: Some(b"r-1".to_vec()),
            payload: payload.to_vec(),
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
                .collect(),
        }
    }

    const FROM_TOPIC: &[(&str, &str)] = &[
        ("hunter.stage", "processor"),
        ("hunter.error", "bad"),
        ("hunter.error.class", "decode"),
        ("hunter.original.topic", "partner-center.referrals.v1"),
        ("hunter.original.partition", "2"),
        ("hunter.original.offset", "40"),
        ("traceparent", "00-abc"),
    ];

    fn header<'a>(headers: &'a RecordHeaders, key: &str) -> Vec<&'a str> {
        headers
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| std::str::from_utf8(v).unwrap())
            .collect()
    }

    #[test]
    fn a_first_failure_is_replayed_to_its_topic_and_partition_with_count_one() {
        let Decision::Replay {
            topic,
            partition,
            headers,
            count,
        } = decide(&letter(FROM_TOPIC, b"\x00bad"), 1, false, false)
        else {
            panic!("a dead letter never replayed is replayed");
        };
        assert_eq!(
            (topic.as_str(), partition, count),
            ("partner-center.referrals.v1", 2, 1)
        );
        assert_eq!(header(&headers, REPLAY_COUNT_HEADER), ["1"]);
        assert_eq!(header(&headers, REPLAY_OF_HEADER), ["1:7"]);
        assert_eq!(
            header(&headers, "traceparent"),
            ["00-abc"],
            "the record's own headers"
        );
        assert!(
            headers.iter().all(|(k, _)| !k.starts_with("hunter.")),
            "the dead letter's headers stay behind: {headers:?}"
        );
    }

    #[test]
    fn a_record_that_failed_again_after_a_replay_is_not_replayed_by_default() {
        let mut failed_again = FROM_TOPIC.to_vec();
        failed_again.push((REPLAY_COUNT_HEADER, "1"));
        failed_again.push((REPLAY_OF_HEADER, "0:3"));
        let letter = letter(&failed_again, b"\x00bad");
        match decide(&letter, DEFAULT_MAX_REPLAYS, false, false) {
            Decision::Skip(reason) => assert!(reason.contains("replayed 1 time"), "{reason}"),
            other => panic!("a second failure must stop, not {other:?}"),
        }
        // `again` does not lift the count limit: only a raised limit does.
        assert!(matches!(decide(&letter, 1, false, true), Decision::Skip(_)));
        let Decision::Replay { headers, count, .. } = decide(&letter, 2, false, false) else {
            panic!("--max-replays 2 replays it once more");
        };
        assert_eq!(count, 2);
        assert_eq!(
            header(&headers, REPLAY_COUNT_HEADER),
            ["2"],
            "one count header"
        );
        assert_eq!(
            header(&headers, REPLAY_OF_HEADER),
            ["1:7"],
            "names the newest letter"
        );
    }

    #[test]
    fn a_dead_letter_replayed_before_needs_again() {
        let letter = letter(FROM_TOPIC, b"x");
        assert!(matches!(decide(&letter, 1, true, false), Decision::Skip(_)));
        assert!(matches!(
            decide(&letter, 1, true, true),
            Decision::Replay { .. }
        ));
    }

    #[test]
    fn what_has_no_topic_or_no_record_is_skipped_with_a_reason() {
        let api = letter(
            &[
                ("hunter.stage", "source"),
                ("hunter.original.topic", "partner-center-api"),
            ],
            b"{}",
        );
        match decide(&api, 1, false, false) {
            Decision::Skip(reason) => assert!(reason.contains("Partner Center API"), "{reason}"),
            other => panic!("{other:?}"),
        }
        let reference = letter(FROM_TOPIC, br#"{"reference":{"topic":"t","offset":40}}"#);
        match decide(&reference, 1, false, false) {
            Decision::Skip(reason) => assert!(reason.contains("offset 40"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn ids_are_partition_colon_offset() {
        assert_eq!(
            "0:42".parse::<DeadLetterId>(),
            Ok(DeadLetterId {
                partition: 0,
                offset: 42
            })
        );
        assert_eq!(" 3:7 ".parse::<DeadLetterId>().unwrap().to_string(), "3:7");
        for bad in ["", "42", "a:1", "1:b", "-1:2", "1:-2", "1:2:3"] {
            let error = bad.parse::<DeadLetterId>().unwrap_err();
            assert!(error.contains("PARTITION:OFFSET"), "{bad}: {error}");
        }
    }

    #[test]
    fn since_is_a_time_or_a_duration_back_from_now() {
        let now = 1_800_000_000;
        assert_eq!(parse_since("2026-01-31T08:00:00Z", now), Ok(1_769_846_400));
        assert_eq!(
            parse_since("2026-01-31T09:00:00+01:00", now),
            Ok(1_769_846_400)
        );
        assert_eq!(parse_since("90s", now), Ok(now - 90));
        assert_eq!(parse_since("30m", now), Ok(now - 1_800));
        assert_eq!(parse_since("24h", now), Ok(now - 86_400));
        assert_eq!(parse_since("7d", now), Ok(now - 7 * 86_400));
        for bad in [
            "",
            "h",
            "24",
            "24x",
            "-1h",
            "yesterday",
            "2026-01-31",
            "1.5h",
            "é",
        ] {
            let error = parse_since(bad, now).unwrap_err();
            assert!(error.contains("RFC 3339"), "{bad}: {error}");
        }
    }

    #[test]
    fn the_command_line_parses_ids_flags_and_refuses_bad_values_by_name() {
        use clap::Parser as _;

        use crate::cli::{Cli, Command, DlqCommand};
        let cli = Cli::try_parse_from([
            "hunter",
            "dlq",
            "replay",
            "--id",
            "0:1,2:3",
            "--id",
            "4:5",
            "--dry-run",
            "--stage",
            "processor",
            "--since",
            "24h",
        ])
        .unwrap();
        let Command::Dlq {
            command: DlqCommand::Replay(args),
        } = cli.command
        else {
            panic!("dlq replay");
        };
        let ids: Vec<String> = args.ids.iter().map(ToString::to_string).collect();
        assert_eq!(ids, ["0:1", "2:3", "4:5"]);
        assert!(args.dry_run && !args.again);
        assert_eq!(args.max_replays, DEFAULT_MAX_REPLAYS);
        let filter = crate::commands::dlq_filter(&args.select, &args.ids, 1_000_000).unwrap();
        assert_eq!(filter.since, Some(1_000_000 - 86_400));
        assert_eq!(filter.stage.as_deref(), Some("processor"));

        let error = Cli::try_parse_from(["hunter", "dlq", "replay", "--id", "zero"]).unwrap_err();
        assert!(error.to_string().contains("--id"), "{error}");
        let error =
            Cli::try_parse_from(["hunter", "dlq", "list", "--stage", "process"]).unwrap_err();
        assert!(error.to_string().contains("--stage"), "{error}");
        let Command::Dlq {
            command: DlqCommand::List(select),
        } = Cli::try_parse_from(["hunter", "dlq", "list", "--since", "soon"])
            .unwrap()
            .command
        else {
            panic!("dlq list");
        };
        let error = crate::commands::dlq_filter(&select, &[], 0).unwrap_err();
        assert!(error.to_string().starts_with("invalid --since:"), "{error}");
    }

    #[test]
    fn stages_are_checked() {
        for stage in ["source", "processor", "sink"] {
            assert!(Filter::check_stage(stage).is_ok());
        }
        assert!(Filter::check_stage("process").is_err());
    }
}
