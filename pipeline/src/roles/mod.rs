//! The long-running roles and how `hunter run` wires them.
//!
//! Each role is a loop that ends when the shutdown broadcast fires, after finishing its
//! in-flight work and committing. `run all` runs every role in one process and one HTTP
//! listener; `run <role>` runs one, still serving `/healthz` and `/metrics`.

pub mod api;
// Outgoing webhooks (docs/notifications.md).
pub mod notify;
pub mod process;
pub mod sink;
pub mod source;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use hunter_core::codec::Registry;
use hunter_core::config::Settings;
use hunter_core::kafka::Topics;
use hunter_core::shutdown::{self, Shutdown};
use hunter_core::telemetry;
use tokio::task::JoinSet;

use crate::cli::Role;

/// What every role gets.
#[derive(Clone)]
pub struct Context {
    pub settings: Arc<Settings>,
    pub topics: Topics,
    /// The Schema Registry when one is configured (Confluent framing), else single-object.
    pub registry: Option<Arc<Registry>>,
}

impl Context {
    pub fn new(settings: Settings) -> anyhow::Result<Self> {
        let registry = registry(&settings)?;
        Ok(Context {
            topics: settings.kafka.topics(),
            settings: Arc::new(settings),
            registry,
        })
    }

    /// A consumer group id, prefixed like the topics so isolated deployments never share a group.
    pub fn group_id(&self, role: &str) -> String {
        format!("{}hunter-{role}", self.settings.kafka.topic_prefix)
    }
}

/// Every consumer group Hunter's roles use, with the topic it reads: (group id, topic). What
/// `hunter topics describe` shows as Hunter's own; keep it in step with the roles (the source's
/// commands, the processor, the sink's one group per topic).
pub fn consumer_groups(settings: &Settings) -> Vec<(String, String)> {
    let topics = settings.kafka.topics();
    let group = |role: &str| format!("{}hunter-{role}", settings.kafka.topic_prefix);
    vec![
        (group("source-commands"), topics.commands.clone()),
        (group("processor"), topics.referrals.clone()),
        (group("sink-leads"), topics.leads.clone()),
        (group("sink-referrals"), topics.referrals.clone()),
        (group("sink-sync-runs"), topics.sync_runs.clone()),
        (group("sink-dlq"), topics.dlq.clone()),
        (
            group("source-referral-actions"),
            topics.referral_actions.clone(),
        ),
        (
            group("sink-referral-action-results"),
            topics.referral_action_results.clone(),
        ),
        // notify: outgoing webhooks (docs/notifications.md).
        (group(notify::LEADS_GROUP), topics.leads.clone()),
        (group(notify::SYNC_RUNS_GROUP), topics.sync_runs.clone()),
    ]
}

/// Runs `role` until Ctrl-C or SIGTERM.
pub async fn run(settings: Settings, role: Role) -> anyhow::Result<()> {
    let context = Context::new(settings)?;
    if let Some(registry) = &context.registry {
        check_registry(registry).await?;
    }
    let (trigger, shutdown) = shutdown::channel();
    trigger.clone().on_signals();
    let _ = telemetry::metrics_handle();

    let mut tasks: JoinSet<(&'static str, anyhow::Result<()>)> = JoinSet::new();
    let wants = |r: Role| role == Role::All || role == r;
    if wants(Role::Api) {
        let router = api::router(&context).await.context("api")?;
        spawn_http(&mut tasks, &context, router, shutdown.clone()).await?;
    } else {
        spawn_http(
            &mut tasks,
            &context,
            telemetry::health_and_metrics_router(),
            shutdown.clone(),
        )
        .await?;
    }
    // Refused credentials or an untrusted certificate end the process here, before any role.
    check_kafka(&context.settings.kafka).await?;
    if wants(Role::Source) {
        let (context, shutdown) = (context.clone(), shutdown.clone());
        tasks.spawn(async move { ("source", source::run(context, shutdown).await) });
    }
    if wants(Role::Process) {
        let (context, shutdown) = (context.clone(), shutdown.clone());
        tasks.spawn(async move { ("process", process::run(context, shutdown).await) });
    }
    if wants(Role::Sink) {
        let (context, shutdown) = (context.clone(), shutdown.clone());
        tasks.spawn(async move { ("sink", sink::run(context, shutdown).await) });
    }
    if wants(Role::Notify) {
        let (context, shutdown) = (context.clone(), shutdown.clone());
        tasks.spawn(async move { ("notify", notify::run(context, shutdown).await) });
    }

    // The first role to stop (by failure or shutdown) stops the others.
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        let (name, result) = joined.context("a role panicked")?;
        match result {
            Ok(()) => tracing::info!(role = name, "role stopped"),
            Err(error) => {
                tracing::error!(role = name, error = %format!("{error:#}"), "role failed; stopping the others");
                first_error.get_or_insert(error.context(format!("role {name}")));
            }
        }
        trigger.trigger();
    }
    match first_error {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

async fn spawn_http(
    tasks: &mut JoinSet<(&'static str, anyhow::Result<()>)>,
    context: &Context,
    router: axum::Router,
    mut shutdown: Shutdown,
) -> anyhow::Result<()> {
    let listen = context.settings.api.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} (HUNTER_API_LISTEN)"))?;
    tracing::info!(address = %listener.local_addr()?, "http listening");
    tasks.spawn(async move {
        // With the peer address: the API throttles wrong tokens per client (api/throttle.rs).
        let service = router.into_make_service_with_connect_info::<std::net::SocketAddr>();
        let result = axum::serve(listener, service)
            .with_graceful_shutdown(async move { shutdown.wait().await })
            .await
            .context("http server");
        ("http", result)
    });
    Ok(())
}

/// The Schema Registry client when `HUNTER_SCHEMA_REGISTRY_URL` is set.
pub fn registry(settings: &Settings) -> anyhow::Result<Option<Arc<Registry>>> {
    match &settings.kafka.schema_registry_url {
        None => Ok(None),
        Some(url) => Registry::new(url, &settings.schema_registry)
            .map(|registry| Some(Arc::new(registry)))
            .map_err(anyhow::Error::msg),
    }
}

/// At start: credentials the registry refuses or a certificate Hunter does not trust stop the
/// process with the setting named (every record would fail the same way). A registry that is
/// merely unreachable does not: the roles wait for it where they need it.
pub async fn check_registry(registry: &Registry) -> anyhow::Result<()> {
    match registry.check().await {
        Ok(()) => Ok(()),
        Err(error) if error.is_retryable() => {
            tracing::warn!(%error, "schema registry unreachable at start; records wait for it");
            Ok(())
        }
        Err(error) if error.is_fatal() => Err(anyhow::anyhow!("{error}")),
        Err(error) => Err(anyhow::anyhow!(
            "{error} (check HUNTER_SCHEMA_REGISTRY_URL: {} does not answer like a schema registry)",
            registry.url()
        )),
    }
}

/// Exponential backoff with full jitter: a random wait in `[0, min(cap, base * 2^attempt)]`.
pub fn backoff(attempt: u32, base: Duration, cap: Duration) -> Duration {
    let ceiling = base
        .saturating_mul(2u32.saturating_pow(attempt.min(20)))
        .min(cap);
    ceiling.mul_f64(rand::random::<f64>())
}

/// Connects to the brokers the way every Kafka client will, before anything depends on it.
/// librdkafka retries refused credentials, an untrusted certificate and a protocol the port does
/// not speak forever, so a role would hang silently: these end the command at once with the
/// setting to fix. A broker that does not answer within [`kafka::CHECK_WAIT`] may be starting;
/// that is left to the clients' own retries (with a warning).
pub async fn check_kafka(settings: &hunter_core::config::KafkaSettings) -> anyhow::Result<()> {
    use hunter_core::config::{KafkaSecurityProtocol, SaslMechanism};
    use hunter_core::kafka;
    let security = &settings.security;
    let mechanism = security.sasl.as_ref().map(|sasl| sasl.mechanism().as_str());
    if security.protocol == KafkaSecurityProtocol::SaslPlaintext
        && security.sasl.as_ref().map(|sasl| sasl.mechanism()) == Some(SaslMechanism::Plain)
    {
        tracing::warn!(
            "SASL PLAIN over sasl_plaintext sends the Kafka password unencrypted: use sasl_ssl"
        );
    }
    if !settings.properties.is_empty() {
        tracing::info!(properties = %settings.properties.describe(), "[kafka.properties] applied to every kafka client");
    }
    let kafka_settings = settings.clone();
    let checked = tokio::task::spawn_blocking(move || {
        kafka::check_connection(&kafka_settings, kafka::CHECK_WAIT)
    })
    .await
    .context("the kafka connection check panicked")?;
    match checked {
        Ok(contact) => {
            tracing::info!(
                brokers = %settings.brokers,
                protocol = security.protocol.as_str(),
                mechanism = mechanism.unwrap_or("none"),
                cluster_brokers = contact.brokers,
                "kafka connection checked"
            );
            Ok(())
        }
        Err(error) if error.kind.is_definitive() => Err(error.into()),
        Err(error) => {
            tracing::warn!(%error, "kafka did not answer yet; the clients keep retrying");
            Ok(())
        }
    }
}

/// Connects to ClickHouse as the writer; the error names the setting to fix (the URL, the CA,
/// the user or the password: see `hunter_clickhouse::connection`).
pub async fn connect_clickhouse(
    settings: &hunter_core::config::ClickHouseSettings,
) -> anyhow::Result<hunter_clickhouse::writer::ReadWriter> {
    Ok(hunter_clickhouse::writer::ReadWriter::connect(settings).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_stays_under_its_cap() {
        for attempt in 0..40 {
            let wait = backoff(attempt, Duration::from_millis(100), Duration::from_secs(5));
            assert!(wait <= Duration::from_secs(5));
            assert!(wait <= Duration::from_millis(100) * 2u32.saturating_pow(attempt.min(20)));
        }
    }
}
