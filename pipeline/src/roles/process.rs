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
//!   assigned partitions before their first referral is processed, so a replayed version is
//!   recognised as a repeat and produces no second lead;
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
//!   referrals at once (lookups overlap), while offsets still move in order.
//!
//! Failure modes: a produce that fails after librdkafka's own retries (for any reason but the
//! record itself) stops the role without storing the offset, so a restart replays it. The lead topic must have as many partitions as
//! the referral topic (checked at start), or the state of a partition could not be found.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::stream::{FuturesOrdered, StreamExt};
use hunter_core::codec::Codec;
use hunter_core::config::KafkaSettings;
use hunter_core::kafka::{self, DeadLetter};
use hunter_core::records::{Lead, Referral, Timestamp};
use hunter_core::shutdown::Shutdown;
use hunter_core::size::{self, Reference};
use hunter_core::telemetry::names;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::producer::FutureRecord;
use rdkafka::util::Timeout;
use rdkafka::{ClientContext, Message};

use super::Context;
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
}

/// Sees rebalances: revoked partitions' dedupe state is dropped before the next message.
struct RebalanceWatch {
    revoked: Arc<Mutex<Vec<i32>>>,
    /// For naming the setting to fix when librdkafka reports an authentication or TLS failure.
    kafka: hunter_core::config::KafkaSettings,
}

impl ClientContext for RebalanceWatch {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        kafka::report_client_error(&self.kafka, "hunter-processor", &error, reason);
    }
}

impl ConsumerContext for RebalanceWatch {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(partitions) = rebalance {
            let mut revoked = self.revoked.lock().unwrap_or_else(|e| e.into_inner());
            revoked.extend(partitions.elements().iter().map(|e| e.partition()));
        }
    }
}

/// What the loop shares with the deliveries it spawns.
struct Shared {
    producer: kafka::Producer,
    leads: Codec<Lead>,
    enricher: Enricher,
    leads_topic: String,
    dlq_topic: String,
}

pub async fn run(context: Context, mut shutdown: Shutdown) -> anyhow::Result<()> {
    let settings = &context.settings;
    let topics = &context.topics;
    check_partitions(&settings.kafka, &topics.referrals, &topics.leads).await?;
    let revoked = Arc::new(Mutex::new(Vec::new()));
    let consumer: StreamConsumer<RebalanceWatch> = kafka::consumer_with_context(
        &settings.kafka,
        &context.group_id("processor"),
        "hunter-processor",
        RebalanceWatch {
            revoked: revoked.clone(),
            kafka: settings.kafka.clone(),
        },
    )
    .context("kafka consumer")?;
    consumer
        .subscribe(&[topics.referrals.as_str()])
        .context("subscribe to the referral topic")?;
    let health = kafka::spawn_lag_monitor(
        &settings.kafka,
        "processor",
        &context.group_id("processor"),
        &topics.referrals,
        shutdown.clone(),
    )
    .context("kafka lag monitor")?;
    let mut rejoin_check = tokio::time::interval(kafka::REJOIN_CHECK_INTERVAL);
    let referrals = Codec::<Referral>::new(&topics.referrals, context.registry.clone());
    let shared = Arc::new(Shared {
        producer: kafka::producer(&settings.kafka, "hunter-processor").context("kafka producer")?,
        leads: Codec::new(&topics.leads, context.registry.clone()),
        enricher: Enricher::new(settings.enrich.clone()),
        leads_topic: topics.leads.clone(),
        dlq_topic: topics.dlq.clone(),
    });
    let mut versions = Versions::default();
    tracing::info!(topic = %topics.referrals, "processor consuming");

    let mut in_flight: FuturesOrdered<Delivery> = FuturesOrdered::new();
    let mut failure = None;
    loop {
        tokio::select! {
            biased;
            _ = shutdown.wait() => break,
            Some(acked) = in_flight.next() => {
                if let Err(error) = acknowledge(&consumer, &topics.referrals, acked) {
                    failure = Some(error);
                    break;
                }
            }
            _ = rejoin_check.tick() => {
                kafka::rejoin_if_orphaned(&consumer, &topics.referrals, &health, "processor");
            }
            received = consumer.recv(), if in_flight.len() < MAX_IN_FLIGHT => {
                let Some(message) = kafka::received(received, "processor").context("kafka consume")? else {
                    continue;
                };
                let (partition, offset) = (message.partition(), message.offset());
                let payload = message.payload().unwrap_or_default().to_vec();
                let key = message.key().map(<[u8]>::to_vec);
                drop(message);
                let gone: Vec<i32> = std::mem::take(&mut *revoked.lock().unwrap_or_else(|e| e.into_inner()));
                if !gone.is_empty() {
                    versions.revoke(gone);
                    versions.apply_revocations();
                }
                if !versions.is_loaded(partition) {
                    rebuild(&context, &shared.leads, &mut versions, partition, &shutdown).await?;
                }
                let Some(delivery) = decide(&shared, &referrals, &mut versions, &topics.referrals, partition, offset, key, payload, &shutdown).await else {
                    // Shutdown while the registry was away: the record stays unprocessed and
                    // its offset unstored, so it is read again after the restart.
                    break;
                };
                in_flight.push_back(delivery);
            }
        }
    }

    // Finish what is in flight, then commit what was stored.
    while let Some(acked) = in_flight.next().await {
        if let Err(error) = acknowledge(&consumer, &topics.referrals, acked) {
            failure.get_or_insert(error);
            break;
        }
    }
    if let Err(error) = consumer.commit_consumer_state(CommitMode::Sync) {
        tracing::debug!(%error, "final commit");
    }
    super::drop_consumer(consumer);
    match failure {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

/// Decodes and dedupes one referral; returns the future of what it produces, or `None` when
/// shutdown came while the registry was unreachable (nothing was produced for the record).
#[allow(clippy::too_many_arguments)]
async fn decide(
    shared: &Arc<Shared>,
    referrals: &Codec<Referral>,
    versions: &mut Versions,
    origin: &str,
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
    shutdown: &Shutdown,
) -> Option<Delivery> {
    let mut waiting = shutdown.clone();
    let referral = match referrals
        .decode_patiently(&payload, &mut waiting, "processor")
        .await
    {
        Ok(referral) => referral,
        Err(error) if error.is_retryable() => return None,
        Err(error) if error.is_fatal() => {
            return Some(failed(partition, offset, anyhow::anyhow!("{error}")));
        }
        Err(error) => {
            return Some(dead_letter(
                shared,
                origin,
                partition,
                offset,
                key,
                payload,
                "decode",
                error.to_string(),
            ));
        }
    };
    let mut lead = match Lead::from_referral(&referral, Timestamp::now()) {
        Ok(lead) => lead,
        Err(error) => {
            return Some(dead_letter(
                shared,
                origin,
                partition,
                offset,
                key,
                payload,
                "invalid",
                error.to_string(),
            ));
        }
    };
    let verdict = versions.observe(
        partition,
        &referral.id,
        lead.updated_at,
        referral.e_tag.as_deref(),
        referral.status.as_deref(),
    );
    let (first, previous_status) = match verdict {
        Verdict::Repeat => return Some(ready(partition, offset, "duplicate")),
        Verdict::Older => return Some(ready(partition, offset, "stale")),
        Verdict::First => (true, None),
        Verdict::Newer { previous_status } => (false, previous_status),
    };
    metrics::gauge!(names::PROCESSOR_DEDUPE_KEYS).set(versions.keys() as f64);
    let shared = shared.clone();
    let (origin, referral_bytes) = (origin.to_owned(), payload.len());
    let mut waiting = shutdown.clone();
    Some(Box::pin(async move {
        // Enrichment runs here, inside the delivery, so DNS lookups of many referrals overlap.
        shared
            .enricher
            .enrich(&mut lead, &referral, previous_status.as_deref(), first)
            .await;
        let mut outcome = "lead";
        // A registry outage waits here (the offset is not stored until the lead is out).
        let result = match shared
            .leads
            .encode_patiently(&lead, &mut waiting, "processor")
            .await
        {
            Ok(bytes) => match shared
                .producer
                .send(
                    FutureRecord::to(&shared.leads_topic)
                        .key(&lead.lead_id)
                        .payload(&bytes),
                    Timeout::Never,
                )
                .await
            {
                Ok(_) => Ok(()),
                // Kafka refuses this lead for what it is (too large, invalid): a fault of the
                // record, not of Kafka. The referral that made it is dead-lettered by reference
                // (it stays on its topic) and the stream moves on.
                Err((error, _)) if size::refused_record(&error).is_some() => {
                    outcome = "dead_letter";
                    let reason = format!(
                        "kafka refused the {}-byte lead made from this referral: {error}",
                        bytes.len()
                    );
                    tracing::warn!(partition, offset, error = %reason, "referral dead-lettered");
                    metrics::counter!(names::DLQ_RECORDS_TOTAL, "stage" => "processor", "class" => "refused")
                        .increment(1);
                    let reference =
                        Reference::of_record(&origin, partition, offset, referral_bytes);
                    send_dead_letter(
                        &shared,
                        &origin,
                        partition,
                        offset,
                        key.as_deref(),
                        reference.to_json().as_bytes(),
                        &reference,
                        "refused",
                        &reason,
                    )
                    .await
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
        }
    }))
}

/// A delivery that stops the processor (its offset is never stored).
fn failed(partition: i32, offset: i64, error: anyhow::Error) -> Delivery {
    Box::pin(std::future::ready(Acked {
        partition,
        offset,
        outcome: "failed",
        result: Err(error),
    }))
}

fn ready(partition: i32, offset: i64, outcome: &'static str) -> Delivery {
    Box::pin(std::future::ready(Acked {
        partition,
        offset,
        outcome,
        result: Ok(()),
    }))
}

/// The record goes to the dead-letter topic as it came (same key and payload), with headers
/// naming the stage, the error and where it came from.
#[allow(clippy::too_many_arguments)]
fn dead_letter(
    shared: &Arc<Shared>,
    origin: &str,
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
    class: &'static str,
    reason: String,
) -> Delivery {
    tracing::warn!(partition, offset, error = %reason, "referral dead-lettered");
    metrics::counter!(names::DLQ_RECORDS_TOTAL, "stage" => "processor", "class" => class)
        .increment(1);
    let shared = shared.clone();
    let origin = origin.to_owned();
    Box::pin(async move {
        let reference = Reference::of_record(&origin, partition, offset, payload.len());
        let result = send_dead_letter(
            &shared,
            &origin,
            partition,
            offset,
            key.as_deref(),
            &payload,
            &reference,
            class,
            &reason,
        )
        .await;
        Acked {
            partition,
            offset,
            outcome: "dead_letter",
            result,
        }
    })
}

/// Produces a dead letter with headers naming the stage, the error and where the record came
/// from; a reference in its place when Kafka refuses the record itself (too large for the
/// dead-letter topic).
#[allow(clippy::too_many_arguments)]
async fn send_dead_letter(
    shared: &Shared,
    origin: &str,
    partition: i32,
    offset: i64,
    key: Option<&[u8]>,
    payload: &[u8],
    reference: &Reference,
    class: &'static str,
    reason: &str,
) -> anyhow::Result<()> {
    let letter = DeadLetter {
        stage: "processor",
        error: reason,
        error_class: class,
        original_topic: origin,
        original_partition: Some(partition),
        original_offset: Some(offset),
    };
    size::send_dead_letter(
        &shared.producer,
        &shared.dlq_topic,
        &letter,
        key,
        payload,
        reference,
    )
    .await
    .map(|_| ())
    .map_err(|error| anyhow::anyhow!("dead-letter produce failed: {error}"))
}

fn acknowledge<C: ConsumerContext>(
    consumer: &StreamConsumer<C>,
    topic: &str,
    acked: Acked,
) -> anyhow::Result<()> {
    acked.result?;
    metrics::counter!(names::PROCESSOR_RECORDS_TOTAL, "outcome" => acked.outcome).increment(1);
    if let Err(error) = consumer.store_offset(topic, acked.partition, acked.offset) {
        // The partition was revoked meanwhile: its new owner replays from the last commit and
        // its rebuilt state recognises what this processor already produced.
        tracing::warn!(partition = acked.partition, offset = acked.offset, %error, "offset not stored");
    }
    Ok(())
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

/// Reads lead partition `partition` from its start to its current end into the dedupe state.
async fn rebuild(
    context: &Context,
    codec: &Codec<Lead>,
    versions: &mut Versions,
    partition: i32,
    shutdown: &Shutdown,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let settings = context.settings.kafka.clone();
    let topic = context.topics.leads.clone();
    let payloads =
        tokio::task::spawn_blocking(move || read_partition(&settings, &topic, partition))
            .await
            .context("state rebuild panicked")??;
    let mut leads = Vec::with_capacity(payloads.len());
    let mut unreadable = 0usize;
    let mut waiting = shutdown.clone();
    for payload in &payloads {
        match codec
            .decode_patiently(payload, &mut waiting, "processor")
            .await
        {
            Ok(lead) => leads.push(lead),
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
    versions.load(partition, leads.iter());
    tracing::info!(partition, leads = leads.len(), unreadable, elapsed = ?started.elapsed(), "dedupe state rebuilt from the lead topic");
    Ok(())
}

fn read_partition(
    settings: &KafkaSettings,
    topic: &str,
    partition: i32,
) -> anyhow::Result<Vec<Vec<u8>>> {
    let reader: kafka::Reader = kafka::reader(settings, "hunter-processor-state")?;
    let (low, high) = reader
        .fetch_watermarks(topic, partition, Duration::from_secs(30))
        .with_context(|| format!("watermarks of {topic}/{partition}"))?;
    let mut payloads = Vec::with_capacity((high - low).max(0) as usize);
    if high > low {
        let mut assignment = rdkafka::TopicPartitionList::new();
        assignment.add_partition_offset(topic, partition, rdkafka::Offset::Offset(low))?;
        reader.assign(&assignment)?;
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            anyhow::ensure!(
                Instant::now() < deadline,
                "reading {topic}/{partition} did not reach its end"
            );
            let Some(message) = reader.poll(Duration::from_millis(500)) else {
                continue;
            };
            let message = message.with_context(|| format!("reading {topic}/{partition}"))?;
            if let Some(payload) = message.payload() {
                payloads.push(payload.to_vec());
            }
            if message.offset() + 1 >= high {
                break;
            }
        }
    }
    std::thread::spawn(move || drop(reader));
    Ok(payloads)
}
