//! The processor: referrals in, leads out.
//!
//! consume `partner-center.referrals.v1` → decode (either framing) → lead → produce
//! `hunter.leads.v1` (key = lead id) → store the referral's offset once the lead was
//! acknowledged.
//!
//! Invariants:
//! - at-least-once: offsets are stored in consumption order, each only after the broker
//!   acknowledged what that referral produced (a lead or a dead letter); a crash replays;
//! - replays are harmless: the same referral version yields the same lead version;
//! - a record that cannot be decoded or mapped goes to `hunter.dlq.v1` with its reason and
//!   origin in headers; it never stops the stream.
//!
//! Failure modes: a produce that fails after librdkafka's own retries (`message.timeout.ms`)
//! stops the role with an error and without storing the offset, so a restart replays it.

use std::pin::Pin;

use anyhow::Context as _;
use futures::stream::{FuturesOrdered, StreamExt};
use hunter_core::codec::Codec;
use hunter_core::kafka::{self, DeadLetter};
use hunter_core::records::{Lead, Referral, Timestamp};
use hunter_core::shutdown::Shutdown;
use hunter_core::telemetry::names;
use rdkafka::Message;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;

use super::Context;

/// Produces in flight at most; beyond it the loop waits for acknowledgements.
const MAX_IN_FLIGHT: usize = 5_000;

type Delivery = Pin<Box<dyn std::future::Future<Output = Acked> + Send>>;

/// The outcome of one consumed referral once its output was acknowledged.
struct Acked {
    partition: i32,
    offset: i64,
    outcome: &'static str,
    result: anyhow::Result<()>,
}

pub async fn run(context: Context, mut shutdown: Shutdown) -> anyhow::Result<()> {
    let settings = &context.settings.kafka;
    let topics = &context.topics;
    let consumer = kafka::consumer(settings, &context.group_id("processor"), "hunter-processor")
        .context("kafka consumer")?;
    consumer
        .subscribe(&[topics.referrals.as_str()])
        .context("subscribe to the referral topic")?;
    let producer = kafka::producer(settings, "hunter-processor").context("kafka producer")?;
    let referrals = Codec::<Referral>::new(&topics.referrals, context.registry.clone());
    let leads = Codec::<Lead>::new(&topics.leads, context.registry.clone());
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
            received = consumer.recv(), if in_flight.len() < MAX_IN_FLIGHT => {
                let message = received.context("kafka consume")?;
                let (partition, offset) = (message.partition(), message.offset());
                let payload = message.payload().unwrap_or_default().to_vec();
                drop(message);
                let delivery = match to_lead(&referrals, &leads, &payload).await {
                    Ok((lead_id, bytes)) => send(&producer, topics.leads.clone(), Some(lead_id), bytes, None, partition, offset, "lead"),
                    Err(reason) => {
                        tracing::warn!(partition, offset, error = %reason.message, "referral dead-lettered");
                        metrics::counter!(names::DLQ_RECORDS_TOTAL, "stage" => "processor", "class" => reason.class).increment(1);
                        let headers = DeadLetter {
                            stage: "processor",
                            error: &reason.message,
                            error_class: reason.class,
                            original_topic: &topics.referrals,
                            original_partition: Some(partition),
                            original_offset: Some(offset),
                        }
                        .headers();
                        send(&producer, topics.dlq.clone(), None, payload, Some(headers), partition, offset, "dead_letter")
                    }
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
        // Nothing stored yet is not a failure.
        tracing::debug!(%error, "final commit");
    }
    super::drop_consumer(consumer);
    match failure {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

struct Rejection {
    class: &'static str,
    message: String,
}

async fn to_lead(
    referrals: &Codec<Referral>,
    leads: &Codec<Lead>,
    payload: &[u8],
) -> Result<(String, Vec<u8>), Rejection> {
    let referral = referrals.decode(payload).await.map_err(|error| Rejection {
        class: "decode",
        message: error.to_string(),
    })?;
    let lead = Lead::from_referral(&referral, Timestamp::now()).map_err(|error| Rejection {
        class: "invalid",
        message: error.to_string(),
    })?;
    let bytes = leads.encode(&lead).await.map_err(|error| Rejection {
        class: "encode",
        message: error.to_string(),
    })?;
    Ok((lead.lead_id, bytes))
}

#[allow(clippy::too_many_arguments)]
fn send(
    producer: &FutureProducer,
    topic: String,
    key: Option<String>,
    payload: Vec<u8>,
    headers: Option<rdkafka::message::OwnedHeaders>,
    partition: i32,
    offset: i64,
    outcome: &'static str,
) -> Delivery {
    let producer = producer.clone();
    Box::pin(async move {
        let mut record = FutureRecord::<String, Vec<u8>>::to(&topic).payload(&payload);
        if let Some(key) = &key {
            record = record.key(key);
        }
        if let Some(headers) = headers {
            record = record.headers(headers);
        }
        let result = producer
            .send(record, Timeout::Never)
            .await
            .map(|_| ())
            .map_err(|(error, _)| anyhow::anyhow!("produce to {topic} failed: {error}"));
        Acked {
            partition,
            offset,
            outcome,
            result,
        }
    })
}

fn acknowledge(
    consumer: &rdkafka::consumer::StreamConsumer,
    topic: &str,
    acked: Acked,
) -> anyhow::Result<()> {
    acked.result?;
    metrics::counter!(names::PROCESSOR_RECORDS_TOTAL, "outcome" => acked.outcome).increment(1);
    if let Err(error) = consumer.store_offset(topic, acked.partition, acked.offset) {
        // The partition was revoked meanwhile: its new owner replays from the last commit,
        // which is at-least-once and harmless (same referral version, same lead version).
        tracing::warn!(partition = acked.partition, offset = acked.offset, %error, "offset not stored");
    }
    Ok(())
}
