//! The processor: referrals in, deduplicated and enriched leads out.
//!
//! consume `partner-center.referrals.v1` → decode (either framing) → dedupe (newest version
//! per referral id) → enrich → produce `hunter.leads.v1` (key = lead id) → store the
//! referral's offset once what it produced was acknowledged.
//!
//! Invariants:
//! - at-least-once: offsets are stored in consumption order, each only after the broker
//!   acknowledged what that referral produced (a lead, a dead letter, or nothing for a
//!   repeat); a crash replays from the last commit;
//! - replays are harmless: the dedupe state is rebuilt from the compacted lead topic for the
//!   assigned partitions before their first referral is processed (every assigned partition
//!   without state in one read, when the first of them delivers a referral), so a replayed
//!   version is recognised as a repeat and produces no second lead; except a repeat whose lead
//!   older lead rules made (`enrichment_version` below `ENRICHMENT_VERSION`), which is made
//!   again, once, by today's rules (how a re-read fills fields added since: `processors::dedupe`);
//! - a record that cannot be decoded or mapped goes to `hunter.dlq.v1` with its reason and
//!   origin in headers; it never stops the stream. A lead Kafka refuses for what it is (too
//!   large, invalid) dead-letters its referral by reference (class `refused`), and a dead
//!   letter Kafka refuses carries a reference to the original instead of its bytes
//!   (`hunter_core::size`): neither stops the role;
//! - a transient failure is not the record's: while the schema registry is unreachable the
//!   stream pauses on the record (decoding, encoding its lead, or rebuilding state) and retries
//!   it, never dead-letters it; a registry that refuses the credentials or whose certificate is
//!   not trusted stops the role with the setting named (`CodecError::is_fatal`);
//! - enrichment never blocks the stream for longer than its DNS timeout, and runs for many
//!   referrals at once (lookups overlap), while offsets still move in order and each lead's
//!   versions reach the lead topic in the order they were consumed (`SendOrder`: a version is
//!   sent only after the delivery of the one before it has ended), so the last record per key
//!   is the newest version.
//!
//! Failure modes: a produce that fails after librdkafka's own retries (for any reason but the
//! record itself) stops the role without storing the offset, so a restart replays it. The lead topic must have as many partitions as
//! the referral topic (checked at start), or the state of a partition could not be found.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::stream::{FuturesOrdered, StreamExt};
use hunter_clickhouse::rows::{DlqReplayRow, ReferralRow};
use hunter_core::codec::Codec;
use hunter_core::config::KafkaSettings;
use hunter_core::kafka::{
    self, DeadLetter, Fault, Fetch, GroupConsumer, Position, RecordError, Subscription,
};
use hunter_core::records::{Lead, Referral, Timestamp};
use hunter_core::shutdown::Shutdown;
use hunter_core::size;
use hunter_core::telemetry::names;
use rdkafka::Message;
use rdkafka::consumer::Consumer;
use rdkafka::producer::FutureRecord;
use rdkafka::util::Timeout;

use super::Context;
use super::referrals_table::{Inserted, ReferralsTable};
use crate::processors::dedupe::{Verdict, Versions};
use crate::processors::enrich::Enricher;

/// Referrals in flight at most; beyond it the loop waits for acknowledgements.
const MAX_IN_FLIGHT: usize = 5_000;

type Delivery = Pin<Box<dyn std::future::Future<Output = Acked> + Send>>;

/// The outcome of one consumed referral once its output was acknowledged.
struct Acked {
    partition: i32,
    offset: i64,
    outcome: &'static str,
    result: anyhow::Result<()>,
    /// For the `referrals` table when the processor writes it: the record's broker timestamp
    /// and size (its batch's deduplication token and byte limit) and the row of the referral
    /// version (none when it could not be decoded, as with the sink's own read).
    written: Written,
}

/// What of a consumed referral the `referrals` table gets ([`ReferralsTable`]).
#[derive(Default)]
pub(super) struct Written {
    pub(super) timestamp: Option<i64>,
    pub(super) bytes: usize,
    pub(super) row: Option<ReferralRow>,
    /// The record is one `hunter dlq replay` re-published: recorded in `dlq_replays` whatever
    /// becomes of it, as the sink records the replays it reads.
    pub(super) replay: Option<DlqReplayRow>,
}

/// What the loop shares with the deliveries it spawns.
struct Shared {
    producer: kafka::Producer,
    dead_letter: DeadLetter,
    leads: Codec<Lead>,
    enricher: Enricher,
    leads_topic: String,
    /// Whether this processor writes the `referrals` table (then deliveries carry the rows).
    writes_referrals: bool,
}

pub async fn run(context: Context, mut shutdown: Shutdown) -> anyhow::Result<()> {
    let settings = &context.settings;
    let topics = &context.topics;
    check_partitions(&settings.kafka, &topics.referrals, &topics.leads).await?;
    let mut consumer = GroupConsumer::subscribe(
        &settings.kafka,
        Subscription {
            stage: "processor",
            group_id: &context.group_id("processor"),
            client_id: "hunter-processor",
            topic: &topics.referrals,
            fetch: Fetch::Prompt,
        },
        shutdown.clone(),
    )
    .context("kafka consumer")?;
    let referrals = Codec::<Referral>::new(&topics.referrals, context.registry.clone());
    // The `referrals` table, when this processor writes it (in doubt it does: rows written
    // twice collapse, rows nobody writes would be missing).
    let mut table = if super::processor_writes_referrals(settings, true).await {
        let writer = super::clickhouse_inserter(
            &settings.clickhouse,
            "the processor writes the referrals table (HUNTER_SINK_REFERRALS_WRITER) and",
            ", fix HUNTER_CLICKHOUSE_USER, or set HUNTER_SINK_REFERRALS_WRITER=sink",
        )
        .await
        .context("the processor writes the referrals table (HUNTER_SINK_REFERRALS_WRITER; `auto` on a deployment whose sink never wrote it) and needs the ClickHouse writer: give it HUNTER_CLICKHOUSE_URL, _USER and _PASSWORD, or set HUNTER_SINK_REFERRALS_WRITER=sink")?;
        tracing::info!("the processor writes the referrals table");
        Some(ReferralsTable::new(
            writer,
            &topics.referrals,
            &settings.sink,
        ))
    } else {
        None
    };
    let producer =
        kafka::producer(&settings.kafka, "hunter-processor").context("kafka producer")?;
    let shared = Arc::new(Shared {
        dead_letter: DeadLetter::new(producer.clone(), &topics.dlq, "processor"),
        producer,
        leads: Codec::new(&topics.leads, context.registry.clone()),
        enricher: Enricher::new(settings.enrich.clone()),
        leads_topic: topics.leads.clone(),
        writes_referrals: table.is_some(),
    });
    let mut versions = Versions::with_rules(crate::processors::enrich::ENRICHMENT_VERSION);
    tracing::info!(topic = %topics.referrals, "processor consuming");

    let mut in_flight: FuturesOrdered<Delivery> = FuturesOrdered::new();
    let mut order = SendOrder::default();
    let mut failure = None;
    let mut renewal_tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        let deadline = table.as_ref().and_then(ReferralsTable::deadline);
        let accepting = table.as_ref().is_none_or(ReferralsTable::accepting);
        let idle = table.as_ref().is_none_or(ReferralsTable::is_idle);
        tokio::select! {
            biased;
            _ = shutdown.wait() => break,
            Some(acked) = in_flight.next() => {
                if let Err(error) = acknowledge(&consumer, table.as_mut(), acked) {
                    failure = Some(error);
                    break;
                }
            }
            inserted = inserted(&mut table) => {
                if let Some(table) = table.as_mut() {
                    table.settle(&consumer, inserted);
                    table.step();
                }
            }
            _ = super::sink::sleep_until(deadline), if deadline.is_some() => {
                if let Some(table) = table.as_mut() {
                    table.step();
                }
            }
            // The tansu workaround (`hunter_core::kafka::consume`): a new group member, once
            // nothing is in flight or waits for ClickHouse; the old one's partitions count as
            // revoked. Checked every second (a select's conditions are only read when it
            // starts waiting).
            _ = renewal_tick.tick(), if in_flight.is_empty() && idle => {
                if consumer.wants_renewal() {
                    consumer.renew().context("kafka consumer renewal")?;
                }
            }
            received = consumer.recv(), if in_flight.len() < MAX_IN_FLIGHT && accepting => {
                let message = received.context("kafka consume")?;
                let (partition, offset) = (message.partition(), message.offset());
                let timestamp = message.timestamp().to_millis();
                let payload = message.payload().unwrap_or_default().to_vec();
                let key = message.key().map(<[u8]>::to_vec);
                let headers = kafka::record_headers(&message);
                drop(message);
                let gone = consumer.take_revoked();
                if !gone.is_empty() {
                    versions.revoke(gone);
                    versions.apply_revocations();
                }
                if !versions.is_loaded(partition) {
                    // Every assigned partition without state at once (one read of the lead
                    // topic for all of them), not one partition after the other as each
                    // partition's first referral comes in.
                    let mut partitions: Vec<i32> = consumer
                        .assigned()
                        .into_iter()
                        .filter(|p| !versions.is_loaded(*p))
                        .collect();
                    if !partitions.contains(&partition) {
                        partitions.push(partition);
                    }
                    rebuild(&context, &shared.leads, &mut versions, partitions, &shutdown).await?;
                }
                if table.as_ref().is_some_and(ReferralsTable::is_stalled) {
                    // A partition assigned during the stall (a rebalance) is not paused yet.
                    consumer.set_paused(true);
                }
                let consumed = Consumed { partition, offset, timestamp, key, headers, payload };
                let Some(delivery) = decide(&shared, &referrals, &mut versions, &mut order, &topics.referrals, consumed, &shutdown).await else {
                    // Shutdown while the registry was away: the record stays unprocessed and
                    // its offset unstored, so it is read again after the restart.
                    break;
                };
                in_flight.push_back(delivery);
            }
        }
    }

    // Finish what is in flight and write its rows, then commit what was stored.
    while let Some(acked) = in_flight.next().await {
        if let Err(error) = acknowledge(&consumer, table.as_mut(), acked) {
            failure.get_or_insert(error);
            break;
        }
    }
    if let Some(table) = table.as_mut()
        && failure.is_none()
        && let Err(error) = table.finish(&consumer).await
    {
        failure = Some(error);
    }
    consumer.close();
    match failure {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

/// One consumed referral message, as the loop hands it on.
struct Consumed {
    partition: i32,
    offset: i64,
    /// The broker timestamp (milliseconds), for the `referrals` batch's deduplication token.
    timestamp: Option<i64>,
    key: Option<Vec<u8>>,
    /// The record's own headers, carried into its dead letter (a replay's count among them).
    headers: kafka::RecordHeaders,
    payload: Vec<u8>,
}

/// Decodes and dedupes one referral; returns the future of what it produces, or `None` when
/// shutdown came while the registry was unreachable (nothing was produced for the record).
async fn decide(
    shared: &Arc<Shared>,
    referrals: &Codec<Referral>,
    versions: &mut Versions,
    order: &mut SendOrder,
    origin: &str,
    consumed: Consumed,
    shutdown: &Shutdown,
) -> Option<Delivery> {
    let (partition, offset) = (consumed.partition, consumed.offset);
    let payload = &consumed.payload;
    let mut written = Written {
        timestamp: consumed.timestamp,
        bytes: payload.len(),
        row: None,
        replay: None,
    };
    if shared.writes_referrals {
        written.replay =
            DlqReplayRow::from_headers(origin, partition, offset, consumed.timestamp, |key| {
                consumed
                    .headers
                    .iter()
                    .rev()
                    .find(|(k, _)| k == key)
                    .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            });
    }
    let mut waiting = shutdown.clone();
    let referral = match referrals
        .decode_patiently(payload, &mut waiting, "processor")
        .await
    {
        Ok(referral) => referral,
        Err(error) => {
            return match Fault::from(error) {
                Fault::Transient(_) => None,
                Fault::Fatal(error) => Some(failed(partition, offset, anyhow::anyhow!("{error}"))),
                Fault::Record(error) => Some(dead_letter(shared, origin, consumed, error, written)),
            };
        }
    };
    let (mut lead, first, previous_status) =
        match produces(&referral, versions, partition, Timestamp::now()) {
            // The referral version goes into `referrals` whatever becomes of its lead (the
            // sink's own read of the topic wrote every version it could decode).
            Produces::DeadLetter(error) => {
                written.row = row_of(shared, referral);
                return Some(dead_letter(shared, origin, consumed, error, written));
            }
            Produces::Nothing(outcome) => {
                written.row = row_of(shared, referral);
                return Some(ready(partition, offset, outcome, written));
            }
            Produces::Lead {
                lead,
                first,
                previous_status,
            } => (lead, first, previous_status),
        };
    metrics::gauge!(names::PROCESSOR_DEDUPE_KEYS).set(versions.keys() as f64);
    let shared = shared.clone();
    let (origin, referral_bytes) = (origin.to_owned(), payload.len());
    let Consumed { key, headers, .. } = consumed;
    let mut waiting = shutdown.clone();
    let (previous, done) = order.after(&lead.lead_id);
    // Everything enrichment reads of the referral, now: the referral (its raw JSON is
    // kilobytes) is dropped here, so the deliveries in flight hold leads, not referrals.
    let prepared = shared
        .enricher
        .prepare(&mut lead, &referral, previous_status.as_deref(), first);
    // Its raw JSON moves into the row when the processor writes `referrals`.
    written.row = row_of(&shared, referral);
    Some(Box::pin(async move {
        // Dropped when this delivery ends: the next version of this lead may send then.
        let _done = done;
        // The MX lookup runs here, inside the delivery, so lookups of many referrals overlap.
        shared.enricher.finish(&mut lead, prepared).await;
        let mut outcome = "lead";
        // A registry outage waits here (the offset is not stored until the lead is out).
        let result = match shared
            .leads
            .encode_patiently(&lead, &mut waiting, "processor")
            .await
        {
            Ok(bytes) => match async {
                // Versions of one lead reach the topic in the order they were consumed
                // ([`SendOrder`]): wait for the delivery of the version before this one.
                if let Some(previous) = previous {
                    let _ = previous.await;
                }
                shared
                    .producer
                    .send(
                        FutureRecord::to(&shared.leads_topic)
                            .key(&lead.lead_id)
                            .payload(&bytes),
                        Timeout::Never,
                    )
                    .await
            }
            .await
            {
                Ok(_) => Ok(()),
                // Kafka refuses this lead for what it is (too large, invalid): a fault of the
                // record, not of Kafka. The referral that made it is dead-lettered by reference
                // (it stays on its topic) and the stream moves on.
                Err((error, _)) if size::refused_record(&error).is_some() => {
                    outcome = "dead_letter";
                    let error = RecordError::new(
                        "refused",
                        format!(
                            "kafka refused the {}-byte lead made from this referral: {error}",
                            bytes.len()
                        ),
                    );
                    let at = Position {
                        topic: &origin,
                        partition,
                        offset,
                    };
                    shared
                        .dead_letter
                        .reference_to(&error, at, key.as_deref(), &headers, referral_bytes)
                        .await
                        .map(|_| ())
                        .map_err(|error| anyhow::anyhow!("dead-letter produce failed: {error}"))
                }
                Err((error, _)) => Err(anyhow::anyhow!(
                    "produce to {} failed: {error}",
                    shared.leads_topic
                )),
            },
            Err(error) if error.is_retryable() || error.is_fatal() => {
                Err(anyhow::anyhow!("lead not written: {error}"))
            }
            Err(error) => Err(anyhow::anyhow!("lead does not fit its schema: {error}")),
        };
        Acked {
            partition,
            offset,
            outcome,
            result,
            written,
        }
    }))
}

/// The `referrals` row of a decoded referral, when this processor writes the table; else the
/// referral is just dropped.
fn row_of(shared: &Shared, referral: Referral) -> Option<ReferralRow> {
    shared
        .writes_referrals
        .then(|| ReferralRow::from_owned_referral(referral))
}

/// Keeps each lead's versions on the lead topic in the order their referrals were consumed.
/// Deliveries run at once (enrichment's DNS lookups overlap), so without it a version whose
/// lookup was slower would be sent after a newer version of the same lead that was consumed
/// after it, and a reader taking the last record per key would keep the older one. A delivery
/// sends only once the delivery before it for the same lead id has ended.
#[derive(Default)]
struct SendOrder {
    /// Per lead id, the signal of its latest delivery (closed when that delivery ends).
    last: std::collections::HashMap<String, tokio::sync::oneshot::Receiver<()>>,
}

impl SendOrder {
    /// The signal to wait for before sending a version of `lead_id` (none when no delivery of
    /// it is running), and this delivery's own, to drop when it ends.
    fn after(
        &mut self,
        lead_id: &str,
    ) -> (
        Option<tokio::sync::oneshot::Receiver<()>>,
        tokio::sync::oneshot::Sender<()>,
    ) {
        if self.last.len() > 2 * MAX_IN_FLIGHT {
            // Forget the leads whose latest delivery has ended.
            self.last.retain(|_, signal| {
                matches!(
                    signal.try_recv(),
                    Err(tokio::sync::oneshot::error::TryRecvError::Empty)
                )
            });
        }
        let (done, signal) = tokio::sync::oneshot::channel();
        (self.last.insert(lead_id.to_owned(), signal), done)
    }
}

/// What one decoded referral produces, before enrichment.
// Short-lived (returned and matched at once): boxing the lead would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Produces {
    /// It cannot be mapped to a lead: dead-lettered with the reason (class `invalid`).
    DeadLetter(RecordError),
    /// A version already produced (`duplicate`) or older than one produced (`stale`): no lead,
    /// the offset moves on.
    Nothing(&'static str),
    /// A lead to enrich and produce: `first` for a referral never seen (a `created` lead),
    /// else the status of the version it supersedes.
    Lead {
        lead: Lead,
        first: bool,
        previous_status: Option<String>,
    },
}

/// Maps `referral` to its lead and asks the dedupe state whether to produce it (the state
/// remembers the version only when it is the first or newer; a referral that cannot be mapped
/// leaves it untouched).
fn produces(
    referral: &Referral,
    versions: &mut Versions,
    partition: i32,
    now: Timestamp,
) -> Produces {
    let lead = match Lead::from_referral(referral, now) {
        Ok(lead) => lead,
        Err(error) => return Produces::DeadLetter(RecordError::new("invalid", error.to_string())),
    };
    let verdict = versions.observe(
        partition,
        &referral.id,
        lead.updated_at,
        referral.e_tag.as_deref(),
        referral.status.as_deref(),
    );
    match verdict {
        Verdict::Repeat => Produces::Nothing("duplicate"),
        // Made by older lead rules: produced again (a re-read fills fields added since).
        Verdict::Refresh {
            first,
            previous_status,
        } => Produces::Lead {
            lead,
            first,
            previous_status,
        },
        Verdict::Older => Produces::Nothing("stale"),
        Verdict::First => Produces::Lead {
            lead,
            first: true,
            previous_status: None,
        },
        Verdict::Newer { previous_status } => Produces::Lead {
            lead,
            first: false,
            previous_status,
        },
    }
}

/// A delivery that stops the processor (its offset is never stored).
fn failed(partition: i32, offset: i64, error: anyhow::Error) -> Delivery {
    Box::pin(std::future::ready(Acked {
        partition,
        offset,
        outcome: "failed",
        result: Err(error),
        written: Written::default(),
    }))
}

fn ready(partition: i32, offset: i64, outcome: &'static str, written: Written) -> Delivery {
    Box::pin(std::future::ready(Acked {
        partition,
        offset,
        outcome,
        result: Ok(()),
        written,
    }))
}

/// The record goes to the dead-letter topic as it came (same key and payload), with headers
/// naming the stage, the error and where it came from.
fn dead_letter(
    shared: &Arc<Shared>,
    origin: &str,
    consumed: Consumed,
    error: RecordError,
    written: Written,
) -> Delivery {
    let shared = shared.clone();
    let origin = origin.to_owned();
    let Consumed {
        partition,
        offset,
        key,
        headers,
        payload,
        ..
    } = consumed;
    Box::pin(async move {
        let at = Position {
            topic: &origin,
            partition,
            offset,
        };
        let result = shared
            .dead_letter
            .record(&error, at, key.as_deref(), &headers, &payload)
            .await
            .map(|_| ())
            .map_err(|error| anyhow::anyhow!("dead-letter produce failed: {error}"));
        Acked {
            partition,
            offset,
            outcome: "dead_letter",
            result,
            written,
        }
    })
}

fn acknowledge(
    consumer: &GroupConsumer,
    table: Option<&mut ReferralsTable>,
    acked: Acked,
) -> anyhow::Result<()> {
    acked.result?;
    metrics::counter!(names::PROCESSOR_RECORDS_TOTAL, "outcome" => acked.outcome).increment(1);
    // A partition revoked meanwhile is not stored for: its new owner replays from the last
    // commit and its rebuilt state recognises what this processor already produced.
    match table {
        // The offset is stored once ClickHouse has the batch holding the referral's row.
        Some(table) => {
            table.add(acked.partition, acked.offset, acked.written);
            table.step();
        }
        None => consumer.store_offset(acked.partition, acked.offset),
    }
    Ok(())
}

/// The end of the `referrals` insert running (pending forever when none runs or the
/// processor does not write the table).
async fn inserted(table: &mut Option<ReferralsTable>) -> Inserted {
    match table {
        Some(table) => table.inserted().await,
        None => std::future::pending().await,
    }
}

/// The lead topic must mirror the referral topic's partitions (see the module doc).
async fn check_partitions(
    settings: &KafkaSettings,
    referrals: &str,
    leads: &str,
) -> anyhow::Result<()> {
    let settings = settings.clone();
    let (referrals, leads) = (referrals.to_owned(), leads.to_owned());
    tokio::task::spawn_blocking(move || {
        let reader: kafka::Reader = kafka::reader(&settings, "hunter-processor-check")?;
        let count = |topic: &str| -> anyhow::Result<usize> {
            let metadata = reader.fetch_metadata(Some(topic), Duration::from_secs(30))?;
            let partitions = metadata.topics().first().map_or(0, |t| t.partitions().len());
            anyhow::ensure!(partitions > 0, "topic {topic} is missing: run `hunter migrate`");
            Ok(partitions)
        };
        let (r, l) = (count(&referrals)?, count(&leads)?);
        std::thread::spawn(move || drop(reader));
        anyhow::ensure!(
            r == l,
            "{leads} has {l} partitions but {referrals} has {r}: the processor finds a referral's dedupe state in the lead partition of the same number, so they must match"
        );
        Ok(())
    })
    .await
    .context("partition check panicked")?
}

/// Reads lead partitions `partitions` from their start to their current end into the dedupe
/// state, all of them in one read (one reader with every partition assigned).
async fn rebuild(
    context: &Context,
    codec: &Codec<Lead>,
    versions: &mut Versions,
    mut partitions: Vec<i32>,
    shutdown: &Shutdown,
) -> anyhow::Result<()> {
    let started = Instant::now();
    partitions.sort_unstable();
    // A broker away at start (restarting under its supervisor) is waited for, not a reason to
    // exit (kafka::read_to_end_patiently).
    let payloads = kafka::read_to_end_patiently(
        &context.settings.kafka,
        "hunter-processor-state",
        &context.topics.leads,
        Some(partitions.clone()),
        Duration::from_secs(300),
        Duration::from_secs(300),
        shutdown,
    )
    .await
    .context("dedupe state not read")?;
    let read = started.elapsed();
    let mut leads: std::collections::HashMap<i32, Vec<Lead>> =
        partitions.iter().map(|p| (*p, Vec::new())).collect();
    let mut unreadable = 0usize;
    let mut waiting = shutdown.clone();
    for (partition, payload) in &payloads {
        match codec
            .decode_patiently(payload, &mut waiting, "processor")
            .await
        {
            Ok(lead) => leads.entry(*partition).or_default().push(lead),
            // Skipping a lead because the registry was away would forget a version seen.
            Err(error) if error.is_retryable() || error.is_fatal() => {
                anyhow::bail!("dedupe state of partition {partition} not rebuilt: {error}")
            }
            Err(error) => {
                unreadable += 1;
                tracing::warn!(partition, %error, "unreadable lead skipped in the dedupe state rebuild");
            }
        }
    }
    for (partition, leads) in &leads {
        versions.load(*partition, leads.iter());
    }
    tracing::info!(
        ?partitions,
        leads = payloads.len(),
        unreadable,
        read = ?read,
        elapsed = ?started.elapsed(),
        "dedupe state rebuilt from the lead topic"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use hunter_core::records::Ingest;
    use serde_json::json;

    use super::*;

    fn version(id: &str, updated: &str, etag: Option<&str>, status: &str) -> Referral {
        let mut value = json!({ "id": id, "updatedDateTime": updated, "status": status });
        if let Some(etag) = etag {
            value["eTag"] = json!(etag);
        }
        Referral::from_api_json(&value.to_string(), Ingest::default()).unwrap()
    }

    fn outcome(produced: &Produces) -> String {
        match produced {
            Produces::DeadLetter(error) => format!("dead_letter:{}", error.class),
            Produces::Nothing(outcome) => (*outcome).to_owned(),
            Produces::Lead {
                first,
                previous_status,
                ..
            } => format!("lead first={first} previous={previous_status:?}"),
        }
    }

    #[tokio::test]
    async fn a_leads_next_version_waits_for_the_delivery_before_it() {
        let mut order = SendOrder::default();
        let (none, first) = order.after("lead-1");
        assert!(none.is_none(), "nothing to wait for");
        let (other, _other_done) = order.after("lead-2");
        assert!(other.is_none(), "another lead does not wait");
        let (previous, _second) = order.after("lead-1");
        let mut previous = previous.expect("the first delivery is running");
        assert!(matches!(
            previous.try_recv(),
            Err(tokio::sync::oneshot::error::TryRecvError::Empty)
        ));
        drop(first); // the first delivery ends
        assert!(previous.await.is_err(), "signalled by the drop");
    }

    #[test]
    fn a_first_version_produces_a_created_lead_for_its_referral() {
        let mut versions = Versions::default();
        let referral = version("r-1", "2026-01-01T10:00:00Z", Some("e1"), "New");
        let produced = produces(&referral, &mut versions, 0, Timestamp(7));
        let Produces::Lead {
            lead,
            first,
            previous_status,
        } = produced
        else {
            panic!("expected a lead, got {}", outcome(&produced));
        };
        assert!(first);
        assert_eq!(previous_status, None);
        assert_eq!(lead.lead_id, "r-1");
        assert_eq!(lead.referral_id, "r-1");
        assert_eq!(lead.updated_at, referral.updated_date_time.unwrap());
        assert_eq!(versions.keys(), 1);
    }

    #[test]
    fn a_replayed_version_produces_nothing() {
        let mut versions = Versions::default();
        let referral = version("r-1", "2026-01-01T10:00:00Z", Some("e1"), "New");
        produces(&referral, &mut versions, 0, Timestamp(1));
        let again = produces(&referral, &mut versions, 0, Timestamp(2));
        assert_eq!(outcome(&again), "duplicate");
    }

    #[test]
    fn a_newer_version_carries_the_status_it_supersedes_and_an_older_one_is_stale() {
        let mut versions = Versions::default();
        let v1 = version("r-1", "2026-01-01T10:00:00Z", Some("e1"), "New");
        let v2 = version("r-1", "2026-01-01T11:00:00Z", Some("e2"), "Active");
        assert_eq!(
            outcome(&produces(&v1, &mut versions, 0, Timestamp(1))),
            "lead first=true previous=None"
        );
        assert_eq!(
            outcome(&produces(&v2, &mut versions, 0, Timestamp(2))),
            r#"lead first=false previous=Some("New")"#
        );
        // The first version read again after the second (a replay out of order): no lead.
        assert_eq!(
            outcome(&produces(&v1, &mut versions, 0, Timestamp(3))),
            "stale"
        );
        // The second again: a repeat.
        assert_eq!(
            outcome(&produces(&v2, &mut versions, 0, Timestamp(4))),
            "duplicate"
        );
    }

    #[test]
    fn partitions_keep_their_own_dedupe_state() {
        let mut versions = Versions::default();
        let referral = version("r-1", "2026-01-01T10:00:00Z", None, "New");
        produces(&referral, &mut versions, 0, Timestamp(1));
        assert_eq!(
            outcome(&produces(&referral, &mut versions, 1, Timestamp(2))),
            "lead first=true previous=None"
        );
    }

    #[test]
    fn a_referral_without_updated_date_time_is_dead_lettered_and_not_remembered() {
        let mut versions = Versions::default();
        let referral =
            Referral::from_api_json(&json!({ "id": "r-9" }).to_string(), Ingest::default())
                .unwrap();
        let produced = produces(&referral, &mut versions, 0, Timestamp(1));
        let Produces::DeadLetter(error) = &produced else {
            panic!("expected a dead letter, got {}", outcome(&produced));
        };
        assert_eq!(error.class, "invalid");
        assert!(error.reason.contains("r-9"), "{}", error.reason);
        assert!(error.reason.contains("updatedDateTime"), "{}", error.reason);
        assert_eq!(versions.keys(), 0, "nothing remembered for a dead letter");
    }
}
