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
//!
//! Here: the run loop and each tenant's loop. `poll.rs` pages and publishes one poll,
//! `state.rs` says what the cursor and stored versions become after it (pure, tested) and loads
//! and stores them, `commands.rs` turns "sync now" commands into triggers, `fetch.rs` gets a
//! referral by id for a Partner Center webhook event (`fetch_referral` commands) between polls.

mod commands;
// Partner Center webhook events: referrals fetched by id (docs/partner-center-webhooks.md).
mod fetch;
mod poll;
mod state;
#[cfg(test)]
mod tests;
mod writeback;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use hunter_core::codec::Codec;
use hunter_core::config::{PartnerCenterSettings, SyncSettings, TenantSettings};
use hunter_core::kafka::{self, DeadLetter, Topics};
use hunter_core::records::{Referral, RunErrorClass, RunTrigger, SourceState, SyncRun, Timestamp};
use hunter_core::shutdown::Shutdown;
use hunter_core::telemetry::names;
use hunter_partner_center::auth::{AuthSettings, TokenProvider, auth_status};
use hunter_partner_center::client::{ClientSettings, PartnerCenterClient};
use hunter_partner_center::cursor::{Position, Published};
use rdkafka::producer::FutureRecord;
use rdkafka::util::Timeout;
use tokio::sync::mpsc;

use self::commands::{Commands, Trigger};
use super::Context;

/// Manual triggers queued per tenant at most; more are coalesced anyway.
const TRIGGER_QUEUE: usize = 256;
/// Polls in a row that failed on Kafka before the source gives up on its Kafka clients.
const KAFKA_FAILURES_BEFORE_RESTART: u32 = 3;

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
    /// Write-back steps (`writeback.rs`).
    action_results: Codec<hunter_core::records::ReferralActionResult>,
    topics: Topics,
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
        action_results: Codec::new(&topics.referral_action_results, context.registry.clone()),
        topics: topics.clone(),
    });
    let mut states = state::load_states(&context, &outputs.states, &shutdown).await?;

    let mut tenants = tokio::task::JoinSet::new();
    let mut queues = commands::TenantQueues::default();
    let running = commands::Running::default();
    let mut action_queues: HashMap<String, mpsc::Sender<writeback::Job>> = HashMap::new();
    for tenant_settings in &pc.tenants {
        let tenant = Tenant::new(pc, tenant_settings, states.remove(&tenant_settings.name))?;
        let (sender, receiver) = mpsc::channel(TRIGGER_QUEUE);
        queues.triggers.insert(tenant.name.clone(), sender);
        let (action_sender, actions) = mpsc::channel(writeback::QUEUE);
        action_queues.insert(tenant.name.clone(), action_sender);
        let (fetch_sender, fetches) = mpsc::channel(fetch::QUEUE);
        queues.fetches.insert(tenant.name.clone(), fetch_sender);
        let (outputs, sync, shutdown) = (outputs.clone(), settings.sync.clone(), shutdown.clone());
        let running = running.clone();
        let receivers = Queues {
            triggers: receiver,
            actions,
            fetches,
        };
        tenants.spawn(async move {
            tenant_loop(tenant, outputs, sync, receivers, running, shutdown).await
        });
    }
    // Write-back: actions go to their tenant's loop, one at a time (`writeback.rs`).
    tenants.spawn(writeback::consume(
        context.clone(),
        outputs.clone(),
        action_queues,
        shutdown.clone(),
    ));

    // Commands fan out to the tenants' queues; a tenant's loop coalesces what piles up.
    let commands = Commands::subscribe(&context, &shutdown)?;
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
            received = commands.consumer().recv() => {
                let message = received.context("kafka consume (commands)")?;
                let handled = commands
                    .handle(message, &queues, &running, &outputs, settings.sync.interval, &shutdown)
                    .await;
                if let Err(error) = handled {
                    break Err(error);
                }
            }
        }
    };
    drop(queues);
    if result.is_err() {
        // The role stops for a restart (a tenant loop gave up on Kafka, say): the write-back
        // consumer and the other tenants would otherwise wait for a shutdown that never comes,
        // and the process would hang instead of exiting for its supervisor. Aborting is safe:
        // a poll moves its cursor, and an action its offset, only after Kafka acknowledged.
        tenants.abort_all();
    }
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
    /// Referrals the last read of everything fetched: a backfill's estimate.
    last_full_read: Option<i64>,
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
        Ok(Tenant::with_client(&settings.name, client, auth, state))
    }

    /// A tenant around its `client`, resuming from its stored `state` (cursor and the
    /// versions a later poll reads again).
    fn with_client(
        name: &str,
        client: PartnerCenterClient,
        auth: AuthSettings,
        state: Option<SourceState>,
    ) -> Self {
        let mut published = Published::default();
        for recent in state.iter().flat_map(|s| &s.recent) {
            published.remember(recent.id.clone(), recent.version as u64, recent.updated_at);
        }
        match state.as_ref().and_then(|s| s.cursor_updated_at) {
            Some(at) => {
                tracing::info!(tenant = %name, cursor = %at.to_rfc3339(), remembered = published.len(), "resuming from stored cursor")
            }
            None => {
                tracing::info!(tenant = %name, "no stored cursor: the first poll reads everything")
            }
        }
        Tenant {
            name: name.to_owned(),
            client,
            auth,
            state,
            published,
            signin_required: None,
            last_full_read: None,
        }
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

/// What a tenant's loop serves besides its schedule.
struct Queues {
    triggers: mpsc::Receiver<Trigger>,
    actions: mpsc::Receiver<writeback::Job>,
    /// Referrals to get by id for webhook events (`fetch.rs`).
    fetches: mpsc::Receiver<fetch::Fetch>,
}

async fn tenant_loop(
    mut tenant: Tenant,
    outputs: Arc<Outputs>,
    sync: SyncSettings,
    queues: Queues,
    running: commands::Running,
    mut shutdown: Shutdown,
) -> anyhow::Result<()> {
    let Queues {
        mut triggers,
        mut actions,
        mut fetches,
    } = queues;
    let mut ticks = tokio::time::interval(sync.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut first = true;
    // Alert rules compare the last success with this, whatever the deployment's interval.
    metrics::gauge!(names::SOURCE_SYNC_INTERVAL_SECONDS, "tenant" => tenant.name.clone())
        .set(sync.interval.as_secs_f64());
    report_auth(&tenant);
    let mut kafka_failures = 0;
    loop {
        let (mut trigger, picked) = tokio::select! {
            biased;
            _ = shutdown.wait() => return Ok(()),
            _ = ticks.tick() => {
                let trigger = if std::mem::take(&mut first) { RunTrigger::Startup } else { RunTrigger::Schedule };
                (trigger, None)
            }
            received = triggers.recv() => match received {
                Some(trigger) => (RunTrigger::Manual, Some(trigger)),
                None => return Ok(()),
            },
            Some(job) = actions.recv() => {
                // Between polls, never during one: one request at a time per tenant.
                if tenant.signin_required.is_none() {
                    writeback::handle(&mut tenant, &outputs, job).await;
                } else {
                    writeback::handle_signin_required(&tenant, &outputs, job).await;
                }
                continue;
            }
            Some(fetch) = fetches.recv() => {
                // Between polls too; while sign-in needs a person the poll catches up later.
                if tenant.signin_required.is_none() {
                    fetch::handle(&mut tenant, outputs.as_ref(), fetch).await;
                }
                continue;
            }
        };
        // Whatever else is queued is served by this run; a backfill among it makes the run one.
        let tick_id = if picked.is_none() {
            uuid::Uuid::new_v4().to_string()
        } else {
            String::new()
        };
        let (run_id, backfill, coalesced) =
            commands::plan(picked, tick_id, commands::drain(&mut triggers));
        if backfill.is_some() {
            trigger = RunTrigger::Backfill;
        } else if trigger == RunTrigger::Schedule && tenant.sweep_due(sync.full_sweep_interval) {
            trigger = RunTrigger::Sweep;
        }
        let since = backfill.flatten();

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
                if backfill.is_some() {
                    running
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .insert(tenant.name.clone(), (run_id.clone(), since));
                }
                let poll = poll::poll(&mut tenant, &outputs, &sync, trigger, &run_id, since);
                let failed = tokio::select! {
                    _ = shutdown.wait() => {
                        tracing::info!(tenant = %tenant.name, run_id, "poll interrupted by shutdown; the cursor was not moved");
                        return Ok(());
                    }
                    failed = poll => failed,
                };
                running
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .remove(&tenant.name);
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
        commands::publish_coalesced(&outputs, &tenant.name, coalesced, &run_id).await;
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
