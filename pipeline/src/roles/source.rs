//! The source: Partner Center referrals into Kafka.
//!
//! Per tenant: tick, "sync now" command or sweep due → poll the Referrals API from the
//! tenant's cursor (minus the overlap window), paging by key → publish each new referral
//! version (key = id) → once every record of the poll is acknowledged, store the cursor in
//! `hunter.source-state.v1` → record the run in `hunter.sync-runs.v1`.
//!
//! Invariants:
//! - the cursor advances only after every record of the poll was acknowledged (acks=all,
//!   idempotent producer); a crash or a failed poll replays the window, never skips it;
//! - paging is by key (see `hunter_partner_center::cursor`), so updates landing while a poll
//!   pages, and ties on `updatedDateTime`, lose nothing;
//! - a version already published (eTag, else updatedDateTime) is not published again; the
//!   versions inside the overlap window are stored with the cursor, so a restart does not
//!   republish them either;
//! - a referral that cannot be read (bad JSON, no or an odd id, over 1 MiB) goes to the
//!   dead-letter topic with its raw JSON (or a reference, when Kafka refuses the whole JSON)
//!   and the reason; the poll goes on;
//! - the record-size policy (`hunter_core::size`, docs/record-size.md): a referral whose record
//!   is over the budget is published with its long strings cut and marked, after a dead letter
//!   saying so (class `truncated`), or dead-lettered by reference when no cut fits
//!   (`oversize`); a record Kafka refuses for what it is (too large, invalid) is dead-lettered
//!   by reference (`refused`). None of these fails the poll, so none counts toward the
//!   "polls failed on Kafka, restart" rule;
//! - tenants are independent: each has its own task, sign-in, cursor and metrics label.
//!
//! Failure modes: an API or broker error, or a poll over its time budget, ends the poll as
//! `failed` with the error class and the cursor unchanged; the next tick tries again (not before
//! the end of a `Retry-After` the failed call was given: the client waits it out first). A sign-in
//! that needs a person (expired or revoked refresh token, consent missing, public client flows
//! off) suspends that tenant's polls, says what to run, and resumes by itself once
//! `hunter auth login` has written a new token cache. A trigger that arrives while a poll is
//! running is served by one follow-up poll (several are coalesced into it). A trigger read more
//! than one sync interval after it was requested is recorded as `expired` and not run: a
//! backlog of old commands (a source that was disabled or down) never turns into a burst of
//! polls, and the scheduled polls since have covered what it asked for.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use futures::future::join_all;
use hunter_core::codec::Codec;
use hunter_core::config::{PartnerCenterSettings, SyncSettings, TenantSettings};
use hunter_core::kafka::{
    self, DeadLetter, Fault, Fetch, GroupConsumer, RecordError, Subscription, Topics,
};
use hunter_core::records::{
    Command, Ingest, RecentVersion, Referral, RunErrorClass, RunStatus, RunTrigger, SourceState,
    SyncRun, Timestamp,
};
use hunter_core::shutdown::Shutdown;
use hunter_core::size::{self, Reference};
use hunter_core::telemetry::names;
use hunter_partner_center::auth::{AuthError, AuthSettings, TokenProvider, auth_status};
use hunter_partner_center::client::{ClientError, ClientSettings, PartnerCenterClient};
use hunter_partner_center::cursor::{self, Pager, Position, Published, Request};
use rdkafka::Message;
use rdkafka::producer::FutureRecord;
use rdkafka::util::Timeout;
use tokio::sync::mpsc;

use super::Context;

/// Where a dead letter from the API says it came from.
const API_ORIGIN: &str = "partner-center-api";
/// Versions persisted with the cursor at most (a Kafka record must stay well under 1 MB).
const MAX_RECENT: usize = 5_000;
/// Manual triggers queued per tenant at most; more are coalesced anyway.
const TRIGGER_QUEUE: usize = 256;

pub fn auth_settings(settings: &PartnerCenterSettings, tenant: &TenantSettings) -> AuthSettings {
    AuthSettings {
        authority_url: settings.authority_url.clone(),
        tenant_id: tenant.tenant_id.clone(),
        client_id: tenant.client_id.clone(),
        client_secret: tenant.client_secret.clone(),
        scope: settings.scope.clone(),
        token_cache: tenant.token_cache.clone(),
    }
}

/// Publishing: one producer and the codecs of every record the source writes.
struct Outputs {
    producer: kafka::Producer,
    dead_letter: DeadLetter,
    referrals: Codec<Referral>,
    states: Codec<SourceState>,
    runs: Codec<SyncRun>,
    topics: Topics,
}

/// A manual trigger: the command id becomes the run id.
struct Trigger {
    command_id: String,
}

pub async fn run(context: Context, mut shutdown: Shutdown) -> anyhow::Result<()> {
    let settings = context.settings.clone();
    let pc = &settings.partner_center;
    if !pc.enabled {
        tracing::info!(
            "partner center source disabled (HUNTER_PARTNER_CENTER_ENABLED=false): idle, no api calls"
        );
        shutdown.wait().await;
        return Ok(());
    }
    let topics = context.topics.clone();
    let producer = kafka::producer(&settings.kafka, "hunter-source").context("kafka producer")?;
    let outputs = Arc::new(Outputs {
        dead_letter: DeadLetter::new(producer.clone(), &topics.dlq, "source"),
        producer,
        referrals: Codec::new(&topics.referrals, context.registry.clone()),
        states: Codec::new(&topics.source_state, context.registry.clone()),
        runs: Codec::new(&topics.sync_runs, context.registry.clone()),
        topics: topics.clone(),
    });
    let mut states = load_states(&context, &outputs.states, &shutdown).await?;

    let mut tenants = tokio::task::JoinSet::new();
    let mut triggers: HashMap<String, mpsc::Sender<Trigger>> = HashMap::new();
    for tenant_settings in &pc.tenants {
        let tenant = Tenant::new(pc, tenant_settings, states.remove(&tenant_settings.name))?;
        let (sender, receiver) = mpsc::channel(TRIGGER_QUEUE);
        triggers.insert(tenant.name.clone(), sender);
        let (outputs, sync, shutdown) = (outputs.clone(), settings.sync.clone(), shutdown.clone());
        tenants.spawn(async move { tenant_loop(tenant, outputs, sync, receiver, shutdown).await });
    }

    // Commands fan out to the tenants' queues; a tenant's loop coalesces what piles up.
    let commands = GroupConsumer::subscribe(
        &settings.kafka,
        Subscription {
            stage: "source",
            group_id: &context.group_id("source-commands"),
            client_id: "hunter-source",
            topic: &topics.commands,
            fetch: Fetch::Prompt,
        },
        shutdown.clone(),
    )
    .context("kafka consumer")?;
    let command_codec = Codec::<Command>::new(&topics.commands, context.registry.clone());
    let result: anyhow::Result<()> = loop {
        tokio::select! {
            _ = shutdown.wait() => break Ok(()),
            Some(joined) = tenants.join_next() => {
                // A tenant loop only ends on shutdown; anything else is a bug worth a restart.
                break match joined {
                    Ok(Ok(())) => Err(anyhow::anyhow!("a tenant loop stopped unexpectedly")),
                    Ok(Err(error)) => Err(error),
                    Err(error) => Err(anyhow::anyhow!("a tenant loop panicked: {error}")),
                };
            }
            received = commands.recv() => {
                let message = received.context("kafka consume (commands)")?;
                let (partition, offset) = (message.partition(), message.offset());
                let payload = message.payload().unwrap_or_default().to_vec();
                drop(message);
                let mut waiting = shutdown.clone();
                match command_codec.decode_patiently(&payload, &mut waiting, "source").await {
                    Ok(command) if command.kind == Command::SYNC_NOW => {
                        let expired = trigger_expired(&command, settings.sync.interval);
                        for (name, queue) in &triggers {
                            if let Some(reason) = expired.as_deref()
                                && command.tenant.as_deref().is_none_or(|t| t == name)
                            {
                                tracing::warn!(tenant = %name, task_id = %command.command_id, "{reason}");
                                let mut run = SyncRun::started(&command.command_id, name, RunTrigger::Manual);
                                run.finish(RunStatus::Expired);
                                run.error_message = Some(reason.to_owned());
                                publish_run_logged(&outputs, &run).await;
                            } else if command.tenant.as_deref().is_none_or(|t| t == name) {
                                tracing::info!(tenant = %name, task_id = %command.command_id, "sync requested");
                                // A full queue means many triggers are pending: one more adds nothing.
                                let _ = queue.try_send(Trigger { command_id: command.command_id.clone() });
                            }
                        }
                    }
                    Ok(command) => tracing::debug!(kind = %command.kind, "command not for the source"),
                    Err(error) => match Fault::from(error) {
                        // Shutdown while the registry was away: the command is read again later.
                        Fault::Transient(_) => continue,
                        Fault::Fatal(error) => break Err(anyhow::anyhow!("{error}")),
                        // A command is not data: an unreadable one is skipped, not dead-lettered.
                        Fault::Record(error) => tracing::warn!(error = %error.reason, "unreadable command ignored"),
                    },
                }
                // Stored once handed to the tenants: a crash before the run loses the trigger,
                // not data (the next scheduled poll reads the same referrals).
                commands.store_offset(partition, offset);
            }
        }
    };
    drop(triggers);
    while tenants.join_next().await.is_some() {}
    commands.close();
    result
}

/// One partner account's polling state.
struct Tenant {
    name: String,
    client: PartnerCenterClient,
    auth: AuthSettings,
    state: Option<SourceState>,
    published: Published,
    /// Set while sign-in needs a person: the token cache as it was then, and why.
    signin_required: Option<(Option<SystemTime>, String)>,
}

impl Tenant {
    fn new(
        pc: &PartnerCenterSettings,
        settings: &TenantSettings,
        state: Option<SourceState>,
    ) -> anyhow::Result<Self> {
        let auth = auth_settings(pc, settings);
        let tokens = Arc::new(TokenProvider::new(auth.clone()));
        let client = PartnerCenterClient::new(
            ClientSettings {
                api_url: pc.api_url.clone(),
                page_size: pc.page_size,
                request_timeout: Duration::from_secs(60),
                max_attempts: 6,
                backoff_base: Duration::from_secs(2),
                backoff_cap: Duration::from_secs(300),
                max_body_bytes: ClientSettings::body_cap(pc.page_size),
            },
            tokens,
        )
        .with_context(|| format!("partner center client for tenant {}", settings.name))?;
        let mut published = Published::default();
        for recent in state.iter().flat_map(|s| &s.recent) {
            published.remember(recent.id.clone(), recent.version as u64, recent.updated_at);
        }
        match state.as_ref().and_then(|s| s.cursor_updated_at) {
            Some(at) => {
                tracing::info!(tenant = %settings.name, cursor = %at.to_rfc3339(), remembered = published.len(), "resuming from stored cursor")
            }
            None => {
                tracing::info!(tenant = %settings.name, "no stored cursor: the first poll reads everything")
            }
        }
        Ok(Tenant {
            name: settings.name.clone(),
            client,
            auth,
            state,
            published,
            signin_required: None,
        })
    }

    fn cursor(&self) -> Option<Position> {
        let state = self.state.as_ref()?;
        Some(Position {
            updated_at: state.cursor_updated_at?,
            id: state.cursor_id.clone().unwrap_or_default(),
        })
    }

    fn sweep_due(&self, interval: Option<Duration>) -> bool {
        let (Some(interval), Some(state)) = (interval, &self.state) else {
            return false;
        };
        let Some(last) = state.last_full_sweep_at.or(state.last_success_at) else {
            return true;
        };
        let elapsed = Timestamp::now().micros().saturating_sub(last.micros());
        elapsed >= i64::try_from(interval.as_micros()).unwrap_or(i64::MAX)
    }
}

fn cache_mtime(auth: &AuthSettings) -> Option<SystemTime> {
    std::fs::metadata(&auth.token_cache)
        .and_then(|m| m.modified())
        .ok()
}

async fn tenant_loop(
    mut tenant: Tenant,
    outputs: Arc<Outputs>,
    sync: SyncSettings,
    mut triggers: mpsc::Receiver<Trigger>,
    mut shutdown: Shutdown,
) -> anyhow::Result<()> {
    let mut ticks = tokio::time::interval(sync.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut first = true;
    // Alert rules compare the last success with this, whatever the deployment's interval.
    metrics::gauge!(names::SOURCE_SYNC_INTERVAL_SECONDS, "tenant" => tenant.name.clone())
        .set(sync.interval.as_secs_f64());
    report_auth(&tenant);
    let mut kafka_failures = 0;
    loop {
        let (mut trigger, run_id) = tokio::select! {
            biased;
            _ = shutdown.wait() => return Ok(()),
            _ = ticks.tick() => {
                let trigger = if std::mem::take(&mut first) { RunTrigger::Startup } else { RunTrigger::Schedule };
                (trigger, uuid::Uuid::new_v4().to_string())
            }
            received = triggers.recv() => match received {
                Some(trigger) => (RunTrigger::Manual, trigger.command_id),
                None => return Ok(()),
            },
        };
        // Whatever else is queued is served by this run.
        let mut coalesced = Vec::new();
        while let Ok(more) = triggers.try_recv() {
            coalesced.push(more.command_id);
        }
        if trigger == RunTrigger::Schedule && tenant.sweep_due(sync.full_sweep_interval) {
            trigger = RunTrigger::Sweep;
        }

        let outcome = if let Some((mtime, reason)) = tenant.signin_required.clone() {
            if cache_mtime(&tenant.auth) != mtime {
                tracing::info!(tenant = %tenant.name, "token cache changed: resuming polls");
                tenant.signin_required = None;
                metrics::gauge!(names::SOURCE_SIGNIN_REQUIRED, "tenant" => tenant.name.clone())
                    .set(0.0);
                None
            } else {
                Some(reason)
            }
        } else {
            None
        };
        match outcome {
            Some(reason) => {
                // Suspended: no API call, but the run is recorded so operators see why.
                tracing::warn!(tenant = %tenant.name, run_id, "{reason}");
                let mut run = SyncRun::started(&run_id, &tenant.name, trigger);
                run.finish_failed(RunErrorClass::SigninRequired, &reason);
                publish_run_logged(&outputs, &run).await;
            }
            None => {
                let poll = poll(&mut tenant, &outputs, &sync, trigger, &run_id);
                let failed = tokio::select! {
                    _ = shutdown.wait() => {
                        tracing::info!(tenant = %tenant.name, run_id, "poll interrupted by shutdown; the cursor was not moved");
                        return Ok(());
                    }
                    failed = poll => failed,
                };
                // A producer the broker keeps refusing does not heal by itself: seen on tansu
                // after a restart (it forgets the idempotent producer's id; every send then
                // fails with "Unknown broker error"). After a few polls in a row fail on Kafka,
                // or at once on a fatal producer error, the role stops with the reason, and its
                // supervisor starts it with fresh clients (the cursor was not moved: nothing
                // is lost).
                kafka_failures = if failed == Some(RunErrorClass::Kafka) {
                    kafka_failures + 1
                } else {
                    0
                };
                if let Some((code, reason)) =
                    rdkafka::producer::Producer::client(&outputs.producer).fatal_error()
                {
                    anyhow::bail!(
                        "the kafka producer failed fatally ({code:?}: {reason}); restart the source"
                    );
                }
                if kafka_failures >= KAFKA_FAILURES_BEFORE_RESTART {
                    anyhow::bail!(
                        "{kafka_failures} polls in a row failed publishing to kafka; \
                         stopping so that the source starts again with fresh kafka clients"
                    );
                }
            }
        }
        for command_id in coalesced {
            metrics::counter!(names::SOURCE_TRIGGERS_COALESCED_TOTAL, "tenant" => tenant.name.clone()).increment(1);
            let mut run = SyncRun::started(&command_id, &tenant.name, RunTrigger::Manual);
            run.finish(RunStatus::Coalesced);
            run.coalesced_into = Some(run_id.clone());
            publish_run_logged(&outputs, &run).await;
        }
        report_auth(&tenant);
    }
}

/// Token and cursor gauges for one tenant.
fn report_auth(tenant: &Tenant) {
    let label = [("tenant", tenant.name.clone())];
    if let Some(cursor) = tenant.cursor() {
        let age = (Timestamp::now().micros() - cursor.updated_at.micros()) as f64 / 1e6;
        metrics::gauge!(names::SOURCE_CURSOR_AGE_SECONDS, &label).set(age.max(0.0));
    }
    if let Ok(status) = auth_status(&tenant.auth) {
        metrics::gauge!(names::SOURCE_ACCESS_TOKEN_EXPIRY_TIMESTAMP_SECONDS, &label)
            .set(status.access_token_expires_at.unix_timestamp() as f64);
        metrics::gauge!(names::SOURCE_REFRESH_TOKEN_AGE_SECONDS, &label)
            .set(status.refresh_token_age.as_secs_f64());
    }
    metrics::gauge!(names::SOURCE_SIGNIN_REQUIRED, &label).set(
        if tenant.signin_required.is_some() {
            1.0
        } else {
            0.0
        },
    );
}

/// Reads the compacted state topic from the start to its end; the last record per tenant wins.
async fn load_states(
    context: &Context,
    codec: &Codec<SourceState>,
    shutdown: &Shutdown,
) -> anyhow::Result<HashMap<String, SourceState>> {
    let payloads = kafka::read_to_end(
        &context.settings.kafka,
        "hunter-source-state",
        &context.topics.source_state,
        None,
        Duration::from_secs(60),
    )
    .await
    .context("source state not read")?;
    let mut states = HashMap::new();
    let mut waiting = shutdown.clone();
    for payload in payloads {
        match codec
            .decode_patiently(&payload, &mut waiting, "source")
            .await
        {
            Ok(state) => {
                states.insert(state.tenant.clone(), state);
            }
            // A state skipped because the registry was away would restart the cursor.
            Err(error) if error.is_retryable() || error.is_fatal() => {
                anyhow::bail!("source state not loaded: {error}")
            }
            Err(error) => tracing::warn!(%error, "unreadable source state record skipped"),
        }
    }
    Ok(states)
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
    class: RunErrorClass,
    message: String,
    /// Sign-in needs a person: suspend the tenant.
    signin_required: bool,
}

impl PollError {
    fn new(class: RunErrorClass, message: impl Into<String>) -> Self {
        PollError {
            class,
            message: message.into(),
            signin_required: false,
        }
    }
}

impl From<ClientError> for PollError {
    fn from(error: ClientError) -> Self {
        let signin_required = matches!(
            &error,
            ClientError::Auth(AuthError::SignInRequired { .. } | AuthError::CacheMissing { .. })
        );
        let class = match &error {
            ClientError::Auth(_) if signin_required => RunErrorClass::SigninRequired,
            ClientError::Auth(_) => RunErrorClass::Auth,
            ClientError::RateLimited { .. } => RunErrorClass::RateLimited,
            ClientError::Network(_) => RunErrorClass::Network,
            ClientError::Timeout => RunErrorClass::Timeout,
            ClientError::Server { .. } => RunErrorClass::Server,
            ClientError::Client { .. } | ClientError::NextLink { .. } | ClientError::Invalid(_) => {
                RunErrorClass::Client
            }
            ClientError::Decode { .. } => RunErrorClass::Decode,
        };
        let message = if signin_required {
            format!(
                "sign-in required: {error}; run `hunter auth login` for this tenant (polls are suspended until then)"
            )
        } else {
            error.to_string()
        };
        PollError {
            class,
            message,
            signin_required,
        }
    }
}

/// Runs one poll and records it; returns the error class when it failed.
async fn poll(
    tenant: &mut Tenant,
    outputs: &Outputs,
    sync: &SyncSettings,
    trigger: RunTrigger,
    run_id: &str,
) -> Option<RunErrorClass> {
    let started = Instant::now();
    let mut run = SyncRun::started(run_id, &tenant.name, trigger);
    publish_run_logged(outputs, &run).await;
    let mut counts = Counts::default();
    let full = trigger == RunTrigger::Sweep;
    let outcome = match tokio::time::timeout(
        sync.poll_budget,
        poll_pages(tenant, outputs, sync.overlap, full, run_id, &mut counts),
    )
    .await
    {
        Ok(outcome) => outcome,
        Err(_) => Err(PollError::new(
            RunErrorClass::Timeout,
            format!(
                "the poll took longer than its budget of {:?} (HUNTER_SYNC_POLL_BUDGET_SECS)",
                sync.poll_budget
            ),
        )),
    };
    run.pages = counts.pages;
    run.fetched = counts.fetched;
    run.published = counts.published;
    run.skipped = counts.skipped;
    run.dead_lettered = counts.dead_lettered;
    let tenant_label = tenant.name.clone();
    let failed = outcome.as_ref().err().map(|error| error.class);
    match outcome {
        Ok(()) => {
            run.finish(RunStatus::Succeeded);
            metrics::counter!(names::SOURCE_POLLS_TOTAL, "tenant" => tenant_label.clone(), "outcome" => "succeeded").increment(1);
            metrics::gauge!(names::SOURCE_LAST_SUCCESS_TIMESTAMP_SECONDS, "tenant" => tenant_label.clone())
                .set(Timestamp::now().micros() as f64 / 1e6);
            tracing::info!(tenant = %tenant.name, run_id, %trigger, pages = counts.pages, fetched = counts.fetched,
                published = counts.published, skipped = counts.skipped, dead_lettered = counts.dead_lettered,
                elapsed = ?started.elapsed(), "poll succeeded");
        }
        Err(error) => {
            run.finish_failed(error.class, &error.message);
            metrics::counter!(names::SOURCE_POLLS_TOTAL, "tenant" => tenant_label.clone(), "outcome" => "failed").increment(1);
            metrics::counter!(names::SOURCE_ERRORS_TOTAL, "tenant" => tenant_label.clone(), "class" => error.class.as_str()).increment(1);
            tracing::error!(tenant = %tenant.name, run_id, %trigger, class = error.class.as_str(), error = %error.message, "poll failed; cursor unchanged");
            if error.signin_required {
                tenant.signin_required = Some((cache_mtime(&tenant.auth), error.message.clone()));
            }
        }
    }
    let labels = [("tenant", tenant_label)];
    metrics::counter!(names::SOURCE_PAGES_TOTAL, &labels).increment(counts.pages as u64);
    metrics::counter!(names::SOURCE_RECORDS_FETCHED_TOTAL, &labels)
        .increment(counts.fetched as u64);
    metrics::counter!(names::SOURCE_RECORDS_PUBLISHED_TOTAL, &labels)
        .increment(counts.published as u64);
    metrics::counter!(names::SOURCE_RECORDS_SKIPPED_TOTAL, &labels)
        .increment(counts.skipped as u64);
    metrics::histogram!(names::SOURCE_POLL_DURATION_SECONDS)
        .record(started.elapsed().as_secs_f64());
    publish_run_logged(outputs, &run).await;
    failed
}

/// Why a sync trigger is too old to run: read more than one sync `interval` after it was
/// requested (see the module docs); `None` when it may run.
fn trigger_expired(command: &Command, interval: Duration) -> Option<String> {
    let age_micros = Timestamp::now()
        .micros()
        .saturating_sub(command.requested_at.micros());
    let limit = i64::try_from(interval.as_micros()).unwrap_or(i64::MAX);
    (age_micros > limit).then(|| {
        format!(
            "sync trigger expired: requested {} s ago, longer than the sync interval of {} s \
             (HUNTER_SYNC_INTERVAL_SECS); not run, the scheduled polls cover it",
            age_micros / 1_000_000,
            interval.as_secs()
        )
    })
}

/// Polls in a row that failed on Kafka before the source gives up on its Kafka clients.
const KAFKA_FAILURES_BEFORE_RESTART: u32 = 3;

async fn poll_pages(
    tenant: &mut Tenant,
    outputs: &Outputs,
    overlap: Duration,
    full: bool,
    run_id: &str,
    counts: &mut Counts,
) -> Result<(), PollError> {
    let cursor = tenant.cursor();
    let from = if full {
        None
    } else {
        cursor::since(cursor.as_ref(), overlap)
    };
    let mut pager = Pager::new(from);
    let mut newest = cursor;
    while let Some(request) = pager.next_request().cloned() {
        let page = match request {
            Request::From(from) => {
                tenant
                    .client
                    .first_page(from.map(Timestamp::to_offset_date_time))
                    .await?
            }
            Request::Next(link) => tenant.client.next_page(&link).await?,
        };
        counts.pages += 1;
        let fetched_at = Timestamp::now();
        let mut stamps = Vec::with_capacity(page.items.len());
        let mut deliveries = Vec::with_capacity(page.items.len());
        let mut fresh = Vec::with_capacity(page.items.len());
        for (item, raw) in page.items.iter().enumerate() {
            counts.fetched += 1;
            let ingest = Ingest {
                tenant: tenant.name.clone(),
                fetched_at,
                sync_run_id: run_id.to_owned(),
            };
            let mut referral = match Referral::from_api_json(raw.get(), ingest) {
                Ok(referral) => referral,
                Err(error) => {
                    stamps.push(None);
                    counts.dead_lettered += 1;
                    let reference = Reference::of_referral_json(raw.get());
                    dead_letter(
                        outputs,
                        "invalid",
                        &error.to_string(),
                        raw.get(),
                        &reference,
                    )
                    .await?;
                    continue;
                }
            };
            stamps.push(referral.updated_date_time);
            let updated_at = referral.updated_date_time.unwrap_or_default();
            let position = Position {
                updated_at,
                id: referral.id.clone(),
            };
            if newest.as_ref().is_none_or(|n| position > *n) {
                newest = Some(position);
            }
            let version = cursor::version_of(referral.e_tag.as_deref(), referral.updated_date_time);
            if tenant.published.is_published(&referral.id, version) {
                counts.skipped += 1;
                continue;
            }
            let mut payload = outputs
                .referrals
                .encode(&referral)
                .await
                .map_err(|e| PollError::new(RunErrorClass::Encode, e.to_string()))?;
            if payload.len() > size::REFERRAL_RECORD_BUDGET {
                match fit(outputs, &referral, payload.len()).await? {
                    Some((cut, cut_payload)) => (referral, payload) = (cut, cut_payload),
                    None => {
                        // Nothing to publish; the dead letter is the referral's handling, so
                        // this version counts as done (no dead letter again on the next poll).
                        counts.dead_lettered += 1;
                        tenant.published.remember(referral.id, version, updated_at);
                        continue;
                    }
                }
            }
            let producer = outputs.producer.clone();
            let topic = outputs.topics.referrals.clone();
            let key = referral.id.clone();
            let bytes = payload.len();
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
            fresh.push((referral.id, version, updated_at, item, bytes));
        }
        // Every record of the page acknowledged before the next page: bounded memory, and a
        // failure stops the poll before the cursor could move. A record Kafka refuses for what
        // it is (too large, invalid) is dead-lettered by reference: its fault, not Kafka's.
        let mut failure = None;
        for (result, (id, version, updated_at, item, bytes)) in
            join_all(deliveries).await.into_iter().zip(fresh)
        {
            match result {
                Ok(()) => counts.published += 1,
                Err(error) if size::refused_record(&error).is_some() => {
                    let reason = format!(
                        "kafka refused the {bytes}-byte record of referral {id}: {error}; \
                         the whole referral stays in partner center"
                    );
                    let reference = Reference::of_referral_json(page.items[item].get());
                    dead_letter(
                        outputs,
                        "refused",
                        &reason,
                        &reference.to_json(),
                        &reference,
                    )
                    .await?;
                    counts.dead_lettered += 1;
                }
                Err(error) => {
                    failure.get_or_insert(error);
                    continue;
                }
            }
            // Acknowledged (or dead-lettered): done for good, whatever happens to the rest.
            tenant.published.remember(id, version, updated_at);
        }
        if let Some(error) = failure {
            return Err(PollError::new(
                RunErrorClass::Kafka,
                format!("publishing a referral failed: {error}"),
            ));
        }
        pager
            .on_page(&stamps, page.next_link)
            .map_err(|message| PollError::new(RunErrorClass::Server, message))?;
    }

    // Every record acknowledged: move the cursor, with the versions the next poll re-reads.
    let now = Timestamp::now();
    let cursor_at = newest.as_ref().map(|n| n.updated_at);
    let horizon = cursor::since(newest.as_ref(), overlap).unwrap_or_default();
    let mut recent = tenant.published.recent(horizon);
    if recent.len() > MAX_RECENT {
        recent.drain(..recent.len() - MAX_RECENT);
    }
    let previous = tenant.state.as_ref();
    let state = SourceState {
        tenant: tenant.name.clone(),
        cursor_updated_at: cursor_at,
        cursor_id: newest.map(|n| n.id),
        last_run_id: Some(run_id.to_owned()),
        last_success_at: Some(now),
        // A first poll (no cursor yet) reads everything, like a sweep.
        last_full_sweep_at: if full || previous.is_none() {
            Some(now)
        } else {
            previous.and_then(|p| p.last_full_sweep_at)
        },
        recent: recent
            .into_iter()
            .map(|r| RecentVersion {
                id: r.id,
                version: r.version as i64,
                updated_at: r.updated_at,
            })
            .collect(),
        updated_at: now,
    };
    let payload = outputs
        .states
        .encode(&state)
        .await
        .map_err(|e| PollError::new(RunErrorClass::Encode, e.to_string()))?;
    outputs
        .producer
        .send(
            FutureRecord::to(&outputs.topics.source_state)
                .key(&state.tenant)
                .payload(&payload),
            Timeout::Never,
        )
        .await
        .map_err(|(error, _)| {
            PollError::new(
                RunErrorClass::Kafka,
                format!("storing the cursor failed: {error}"),
            )
        })?;
    tenant.state = Some(state);
    Ok(())
}

/// A referral whose record is over [`size::REFERRAL_RECORD_BUDGET`] (`bytes`), cut to fit (see
/// [`Referral::cut_to_fit`]) with its encoded record, after a dead letter saying what was cut
/// (class `truncated`; the referral is still published). `None` when no cut fits: then the
/// referral is dead-lettered by reference (class `oversize`) and not published.
async fn fit(
    outputs: &Outputs,
    referral: &Referral,
    bytes: usize,
) -> Result<Option<(Referral, Vec<u8>)>, PollError> {
    let budget = size::REFERRAL_RECORD_BUDGET;
    let measure = |r: &Referral| {
        outputs
            .referrals
            .encode_single_object(r)
            .ok()
            .map(|b| b.len())
    };
    let mut reference = Reference::of_referral_json(&referral.raw_json);
    let Some(cut) = referral.cut_to_fit(budget, bytes, measure) else {
        let reason = format!(
            "referral {} makes a {bytes}-byte record, over the {budget}-byte budget, and cutting \
             its long strings does not bring it under: dead-lettered by reference, the whole \
             referral stays in partner center",
            referral.id
        );
        dead_letter(
            outputs,
            "oversize",
            &reason,
            &reference.to_json(),
            &reference,
        )
        .await?;
        return Ok(None);
    };
    let payload = outputs
        .referrals
        .encode(&cut)
        .await
        .map_err(|e| PollError::new(RunErrorClass::Encode, e.to_string()))?;
    let fields = cut
        .truncation
        .as_ref()
        .map(|t| (t.fields.clone(), t.kept_bytes))
        .unwrap_or_default();
    let reason = format!(
        "referral {} makes a {bytes}-byte record, over the {budget}-byte budget: published as a \
         {}-byte record with {} string(s) cut to {} bytes ({}); the whole referral stays in \
         partner center",
        referral.id,
        payload.len(),
        fields.0.len(),
        fields.1,
        size::list_fields(&fields.0, 10)
    );
    reference.truncated = fields.0;
    dead_letter(
        outputs,
        "truncated",
        &reason,
        &reference.to_json(),
        &reference,
    )
    .await?;
    Ok(Some((cut, payload)))
}

/// Dead-letters `payload` with its reason and class; a reference in its place when Kafka
/// refuses the payload itself (a referral's whole JSON can be larger than a record may be).
async fn dead_letter(
    outputs: &Outputs,
    class: &'static str,
    reason: &str,
    payload: &str,
    reference: &Reference,
) -> Result<(), PollError> {
    let error = RecordError::new(class, reason);
    outputs
        .dead_letter
        .external(&error, API_ORIGIN, payload.as_bytes(), reference)
        .await
        .map(|_| ())
        .map_err(|error| {
            PollError::new(
                RunErrorClass::Kafka,
                format!("dead-lettering a referral failed: {error}"),
            )
        })
}

async fn publish_run_logged(outputs: &Outputs, run: &SyncRun) {
    let result: anyhow::Result<()> = async {
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
    .await;
    if let Err(error) = result {
        tracing::warn!(run_id = %run.run_id, status = %run.status, %error, "sync run not recorded");
    }
}
