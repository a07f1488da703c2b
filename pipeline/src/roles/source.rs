//! The source: Partner Center referrals into Kafka.
//!
//! tick or "sync now" command → poll the Referrals API from the tenant's cursor (minus the
//! overlap window), page by page → publish each referral (key = id) → once every record of the
//! poll is acknowledged, store the new cursor in `hunter.source-state.v1` → record the run in
//! `hunter.sync-runs.v1` → store the command's offset.
//!
//! Invariants:
//! - the cursor advances only after every record of the poll was acknowledged (acks=all,
//!   idempotent producer); a crash replays the window, never skips it;
//! - the cursor is `(updatedDateTime, id)` of the newest record seen, and each poll asks again
//!   from `cursor - overlap`, so equal timestamps and late updates are read again, not lost;
//! - a version (eTag, else updatedDateTime) already published by this process is not published
//!   again; that memory only holds records inside the overlap window, so it stays bounded;
//! - a referral that cannot be read goes to the dead-letter topic with its raw JSON and the
//!   reason; the poll goes on.
//!
//! Failure modes: an API or broker error ends the poll as `failed` with the error class and
//! the cursor unchanged; the next tick tries again. Sign-in problems say what to run.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::future::join_all;
use hunter_core::codec::Codec;
use hunter_core::config::PartnerCenterSettings;
use hunter_core::kafka::{self, DeadLetter};
use hunter_core::records::{Command, Ingest, Referral, SourceState, SyncRun, Timestamp};
use hunter_core::shutdown::Shutdown;
use hunter_core::telemetry::names;
use hunter_partner_center::auth::{AuthSettings, TokenProvider};
use hunter_partner_center::client::{ClientError, ClientSettings, PartnerCenterClient};
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;

use super::Context;

/// Where a dead letter from the API says it came from.
const API_ORIGIN: &str = "partner-center-api";

/// A version of a referral this process already published.
struct Published {
    version: String,
    updated_at: Timestamp,
}

/// Everything one tenant's polls need.
struct Tenant {
    name: String,
    client: PartnerCenterClient,
    state: Option<SourceState>,
    published: HashMap<String, Published>,
}

/// Publishing: one producer and the codecs of every record the source writes.
struct Outputs {
    producer: FutureProducer,
    referrals: Codec<Referral>,
    states: Codec<SourceState>,
    runs: Codec<SyncRun>,
    topics: hunter_core::kafka::Topics,
}

pub fn auth_settings(settings: &PartnerCenterSettings) -> AuthSettings {
    AuthSettings {
        authority_url: settings.authority_url.clone(),
        tenant_id: settings.tenant_id.clone(),
        client_id: settings.client_id.clone(),
        client_secret: settings.client_secret.clone(),
        scope: settings.scope.clone(),
        token_cache: settings.token_cache.clone(),
    }
}

pub async fn run(context: Context, mut shutdown: Shutdown) -> anyhow::Result<()> {
    let settings = &context.settings;
    let pc = &settings.partner_center;
    if !pc.enabled {
        tracing::info!(
            "partner center source disabled (HUNTER_PARTNER_CENTER_ENABLED=false): idle, no api calls"
        );
        shutdown.wait().await;
        return Ok(());
    }
    let topics = context.topics.clone();
    let outputs = Outputs {
        producer: kafka::producer(&settings.kafka, "hunter-source").context("kafka producer")?,
        referrals: Codec::new(&topics.referrals, context.registry.clone()),
        states: Codec::new(&topics.source_state, context.registry.clone()),
        runs: Codec::new(&topics.sync_runs, context.registry.clone()),
        topics: topics.clone(),
    };
    let tokens = Arc::new(TokenProvider::new(auth_settings(pc)));
    let client = PartnerCenterClient::new(
        ClientSettings {
            api_url: pc.api_url.clone(),
            page_size: pc.page_size,
            request_timeout: Duration::from_secs(60),
            max_attempts: 6,
            backoff_base: Duration::from_secs(2),
            backoff_cap: Duration::from_secs(300),
        },
        tokens,
    )
    .context("partner center client")?;

    let states = load_states(&context, &outputs.states).await?;
    let mut tenant = Tenant {
        name: pc.tenant_id.clone(),
        client,
        state: states.get(&pc.tenant_id).cloned(),
        published: HashMap::new(),
    };
    match &tenant.state {
        Some(state) => {
            tracing::info!(tenant = %tenant.name, cursor = ?state.cursor_updated_at.map(Timestamp::to_rfc3339), "resuming from stored cursor")
        }
        None => {
            tracing::info!(tenant = %tenant.name, "no stored cursor: first poll reads everything")
        }
    }

    let commands = kafka::consumer(
        &settings.kafka,
        &context.group_id("source-commands"),
        "hunter-source",
    )
    .context("kafka consumer")?;
    commands
        .subscribe(&[topics.commands.as_str()])
        .context("subscribe to the command topic")?;
    let command_codec = Codec::<Command>::new(&topics.commands, context.registry.clone());

    let mut ticks = tokio::time::interval(settings.sync.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut first = true;
    loop {
        let (trigger, run_id, command_offset) = tokio::select! {
            biased;
            _ = shutdown.wait() => break,
            _ = ticks.tick() => {
                let trigger = if std::mem::take(&mut first) { "startup" } else { "schedule" };
                (trigger, uuid::Uuid::new_v4().to_string(), None)
            }
            received = commands.recv() => {
                let message = received.context("kafka consume (commands)")?;
                let position = (message.partition(), message.offset());
                let payload = message.payload().unwrap_or_default().to_vec();
                drop(message);
                match command_codec.decode(&payload).await {
                    Ok(command) if command.kind == Command::SYNC_NOW
                        && command.tenant.as_deref().is_none_or(|t| t == tenant.name) => {
                        tracing::info!(task_id = %command.command_id, "sync requested");
                        ("manual", command.command_id, Some(position))
                    }
                    Ok(command) => {
                        tracing::debug!(kind = %command.kind, "command not for this source");
                        let _ = commands.store_offset(&topics.commands, position.0, position.1);
                        continue;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "unreadable command ignored");
                        let _ = commands.store_offset(&topics.commands, position.0, position.1);
                        continue;
                    }
                }
            }
        };
        let settings = &context.settings.sync;
        tokio::select! {
            _ = shutdown.wait() => {
                tracing::info!(run_id, "poll interrupted by shutdown; the cursor was not moved");
                break;
            }
            () = poll(&mut tenant, &outputs, settings.overlap, trigger, &run_id) => {}
        }
        if let Some((partition, offset)) = command_offset {
            let _ = commands.store_offset(&topics.commands, partition, offset);
        }
    }
    if let Err(error) = commands.commit_consumer_state(CommitMode::Sync) {
        tracing::debug!(%error, "final commit");
    }
    super::drop_consumer(commands);
    Ok(())
}

/// Reads the compacted state topic from the start to its end; the last record per tenant wins.
async fn load_states(
    context: &Context,
    codec: &Codec<SourceState>,
) -> anyhow::Result<HashMap<String, SourceState>> {
    let topic = context.topics.source_state.clone();
    let settings = context.settings.kafka.clone();
    // BaseConsumer polls block: read on a blocking thread, decode after.
    let payloads = tokio::task::spawn_blocking(move || read_to_end(&settings, &topic))
        .await
        .context("state reader panicked")??;
    let mut states = HashMap::new();
    for payload in payloads {
        match codec.decode(&payload).await {
            Ok(state) => {
                states.insert(state.tenant.clone(), state);
            }
            Err(error) => tracing::warn!(%error, "unreadable source state record skipped"),
        }
    }
    Ok(states)
}

fn read_to_end(
    settings: &hunter_core::config::KafkaSettings,
    topic: &str,
) -> anyhow::Result<Vec<Vec<u8>>> {
    let reader: BaseConsumer =
        kafka::reader(settings, "hunter-source-state").context("kafka reader")?;
    let metadata = reader
        .fetch_metadata(Some(topic), Duration::from_secs(30))
        .with_context(|| format!("metadata for {topic}"))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut assignment = rdkafka::TopicPartitionList::new();
    let mut ends = HashMap::new();
    for partition in &partitions {
        let (low, high) = reader
            .fetch_watermarks(topic, *partition, Duration::from_secs(30))
            .with_context(|| format!("watermarks of {topic}/{partition}"))?;
        if high > low {
            ends.insert(*partition, high);
            assignment.add_partition_offset(topic, *partition, rdkafka::Offset::Offset(low))?;
        }
    }
    let mut payloads = Vec::new();
    if ends.is_empty() {
        return Ok(payloads);
    }
    reader.assign(&assignment)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ends.is_empty() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "reading {topic} did not reach its end within 60 s"
        );
        let Some(message) = reader.poll(Duration::from_millis(500)) else {
            continue;
        };
        let message = message.with_context(|| format!("reading {topic}"))?;
        if let Some(payload) = message.payload() {
            payloads.push(payload.to_vec());
        }
        if let Some(end) = ends.get(&message.partition())
            && message.offset() + 1 >= *end
        {
            ends.remove(&message.partition());
        }
    }
    Ok(payloads)
}

/// Counters of one poll.
#[derive(Default)]
struct Counts {
    pages: i64,
    fetched: i64,
    published: i64,
    skipped: i64,
    dead_lettered: i64,
}

/// Why a poll failed, as a bounded class and a message without secrets.
struct PollError {
    class: &'static str,
    message: String,
}

impl From<ClientError> for PollError {
    fn from(error: ClientError) -> Self {
        let class = match &error {
            ClientError::Auth(_) => "auth",
            ClientError::RateLimited { .. } => "rate_limited",
            ClientError::Network(_) => "network",
            ClientError::Timeout => "timeout",
            ClientError::Server { .. } => "server",
            ClientError::Client { .. } => "client",
            ClientError::Decode { .. } => "decode",
            ClientError::NextLink { .. } => "client",
            ClientError::Invalid(_) => "client",
        };
        PollError {
            class,
            message: error.to_string(),
        }
    }
}

async fn poll(
    tenant: &mut Tenant,
    outputs: &Outputs,
    overlap: Duration,
    trigger: &'static str,
    run_id: &str,
) {
    let started = Instant::now();
    let mut run = SyncRun {
        run_id: run_id.to_owned(),
        tenant: tenant.name.clone(),
        trigger: trigger.to_owned(),
        status: "running".into(),
        started_at: Timestamp::now(),
        finished_at: None,
        pages: 0,
        fetched: 0,
        published: 0,
        skipped: 0,
        dead_lettered: 0,
        error_class: None,
        error_message: None,
    };
    if let Err(error) = publish_run(outputs, &run).await {
        tracing::warn!(run_id, %error, "sync run start not recorded");
    }
    let mut counts = Counts::default();
    let outcome = poll_pages(tenant, outputs, overlap, run_id, &mut counts).await;
    run.pages = counts.pages;
    run.fetched = counts.fetched;
    run.published = counts.published;
    run.skipped = counts.skipped;
    run.dead_lettered = counts.dead_lettered;
    run.finished_at = Some(Timestamp::now());
    let labels = [("tenant", tenant.name.clone())];
    match outcome {
        Ok(()) => {
            run.status = "succeeded".into();
            metrics::counter!(names::SOURCE_POLLS_TOTAL, "tenant" => tenant.name.clone(), "outcome" => "succeeded").increment(1);
            metrics::gauge!(names::SOURCE_LAST_SUCCESS_TIMESTAMP_SECONDS, &labels)
                .set(Timestamp::now().micros() as f64 / 1e6);
            tracing::info!(tenant = %tenant.name, run_id, trigger, pages = counts.pages, fetched = counts.fetched,
                published = counts.published, skipped = counts.skipped, dead_lettered = counts.dead_lettered,
                elapsed = ?started.elapsed(), "poll succeeded");
        }
        Err(error) => {
            run.status = "failed".into();
            run.error_class = Some(error.class.to_owned());
            run.error_message = Some(error.message.clone());
            metrics::counter!(names::SOURCE_POLLS_TOTAL, "tenant" => tenant.name.clone(), "outcome" => "failed").increment(1);
            metrics::counter!(names::SOURCE_ERRORS_TOTAL, "tenant" => tenant.name.clone(), "class" => error.class).increment(1);
            tracing::error!(tenant = %tenant.name, run_id, trigger, class = error.class, error = %error.message, "poll failed; cursor unchanged");
        }
    }
    metrics::counter!(names::SOURCE_PAGES_TOTAL, &labels).increment(counts.pages as u64);
    metrics::counter!(names::SOURCE_RECORDS_FETCHED_TOTAL, &labels)
        .increment(counts.fetched as u64);
    metrics::counter!(names::SOURCE_RECORDS_PUBLISHED_TOTAL, &labels)
        .increment(counts.published as u64);
    metrics::counter!(names::SOURCE_RECORDS_SKIPPED_TOTAL, &labels)
        .increment(counts.skipped as u64);
    metrics::histogram!(names::SOURCE_POLL_DURATION_SECONDS)
        .record(started.elapsed().as_secs_f64());
    if let Err(error) = publish_run(outputs, &run).await {
        tracing::warn!(run_id, %error, "sync run end not recorded");
    }
}

async fn poll_pages(
    tenant: &mut Tenant,
    outputs: &Outputs,
    overlap: Duration,
    run_id: &str,
    counts: &mut Counts,
) -> Result<(), PollError> {
    let cursor = tenant
        .state
        .as_ref()
        .and_then(|s| s.cursor_updated_at.map(|at| (at, s.cursor_id.clone())));
    let since = cursor
        .as_ref()
        .map(|(at, _)| (at.to_offset_date_time() - overlap).max(time::OffsetDateTime::UNIX_EPOCH));
    let mut newest = cursor.clone();
    // Versions published in this poll, remembered once the broker acknowledged them.
    let mut fresh: Vec<(String, Published)> = Vec::new();
    let mut page = tenant.client.first_page(since).await?;
    loop {
        counts.pages += 1;
        let fetched_at = Timestamp::now();
        let mut deliveries = Vec::with_capacity(page.items.len());
        for raw in &page.items {
            counts.fetched += 1;
            let ingest = Ingest {
                tenant: tenant.name.clone(),
                fetched_at,
                sync_run_id: run_id.to_owned(),
            };
            let referral = match Referral::from_api_json(raw.get(), ingest) {
                Ok(referral) => referral,
                Err(error) => {
                    counts.dead_lettered += 1;
                    dead_letter(outputs, raw.get(), &error.to_string()).await?;
                    continue;
                }
            };
            let version = referral
                .e_tag
                .clone()
                .or_else(|| referral.updated_date_time.map(|t| t.micros().to_string()))
                .unwrap_or_default();
            if tenant
                .published
                .get(&referral.id)
                .is_some_and(|p| p.version == version)
            {
                counts.skipped += 1;
                continue;
            }
            let updated_at = referral.updated_date_time.unwrap_or(Timestamp(0));
            let candidate = (updated_at, Some(referral.id.clone()));
            if newest.as_ref().is_none_or(|n| candidate > *n) {
                newest = Some(candidate);
            }
            let payload = outputs
                .referrals
                .encode(&referral)
                .await
                .map_err(|e| PollError {
                    class: "encode",
                    message: e.to_string(),
                })?;
            let producer = outputs.producer.clone();
            let topic = outputs.topics.referrals.clone();
            let key = referral.id.clone();
            deliveries.push(async move {
                producer
                    .send(
                        FutureRecord::to(&topic).key(&key).payload(&payload),
                        Timeout::Never,
                    )
                    .await
                    .map(|_| ())
                    .map_err(|(error, _)| error)
            });
            fresh.push((
                referral.id,
                Published {
                    version,
                    updated_at,
                },
            ));
        }
        // Every record of the page acknowledged before the next page: bounded memory, and a
        // failure stops the poll before the cursor could move.
        for result in join_all(deliveries).await {
            result.map_err(|error| PollError {
                class: "kafka",
                message: format!("publishing a referral failed: {error}"),
            })?;
            counts.published += 1;
        }
        match page.next_link.take() {
            Some(link) => page = tenant.client.next_page(&link).await?,
            None => break,
        }
    }

    // Every record acknowledged: remember the versions, then move the cursor.
    tenant.published.extend(fresh);
    let state = SourceState {
        tenant: tenant.name.clone(),
        cursor_updated_at: newest.as_ref().map(|(at, _)| *at),
        cursor_id: newest.and_then(|(_, id)| id),
        last_run_id: Some(run_id.to_owned()),
        last_success_at: Some(Timestamp::now()),
        updated_at: Timestamp::now(),
    };
    let payload = outputs.states.encode(&state).await.map_err(|e| PollError {
        class: "encode",
        message: e.to_string(),
    })?;
    outputs
        .producer
        .send(
            FutureRecord::to(&outputs.topics.source_state)
                .key(&state.tenant)
                .payload(&payload),
            Timeout::Never,
        )
        .await
        .map_err(|(error, _)| PollError {
            class: "kafka",
            message: format!("storing the cursor failed: {error}"),
        })?;
    // Only versions inside the next poll's window can come back; forget the rest.
    if let Some(cursor) = state.cursor_updated_at {
        let horizon = Timestamp(cursor.micros() - overlap.as_micros() as i64);
        tenant.published.retain(|_, p| p.updated_at >= horizon);
    }
    tenant.state = Some(state);
    Ok(())
}

async fn dead_letter(outputs: &Outputs, raw: &str, reason: &str) -> Result<(), PollError> {
    tracing::warn!(error = %reason, "referral from the api dead-lettered");
    metrics::counter!(names::DLQ_RECORDS_TOTAL, "stage" => "source", "class" => "invalid")
        .increment(1);
    let headers = DeadLetter {
        stage: "source",
        error: reason,
        error_class: "invalid",
        original_topic: API_ORIGIN,
        original_partition: None,
        original_offset: None,
    }
    .headers();
    outputs
        .producer
        .send(
            FutureRecord::<(), str>::to(&outputs.topics.dlq)
                .payload(raw)
                .headers(headers),
            Timeout::Never,
        )
        .await
        .map(|_| ())
        .map_err(|(error, _)| PollError {
            class: "kafka",
            message: format!("dead-lettering a referral failed: {error}"),
        })
}

async fn publish_run(outputs: &Outputs, run: &SyncRun) -> anyhow::Result<()> {
    let payload = outputs.runs.encode(run).await?;
    outputs
        .producer
        .send(
            FutureRecord::to(&outputs.topics.sync_runs)
                .key(&run.run_id)
                .payload(&payload),
            Timeout::After(Duration::from_secs(30)),
        )
        .await
        .map_err(|(error, _)| anyhow::anyhow!("{error}"))?;
    Ok(())
}
