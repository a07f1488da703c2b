//! The long-running roles and how `hunter run` wires them.
//!
//! Each role is a loop that ends when the shutdown broadcast fires, after finishing its
//! in-flight work and committing. `run all` runs every role in one process and one HTTP
//! listener; `run <role>` runs one, still serving `/healthz` and `/metrics`.

pub mod api;
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
    pub fn new(settings: Settings) -> Self {
        let registry = settings
            .kafka
            .schema_registry_url
            .as_ref()
            .map(|url| Arc::new(Registry::new(url.as_str())));
        Context {
            topics: settings.kafka.topics(),
            settings: Arc::new(settings),
            registry,
        }
    }

    /// A consumer group id, prefixed like the topics so isolated deployments never share a group.
    pub fn group_id(&self, role: &str) -> String {
        format!("{}hunter-{role}", self.settings.kafka.topic_prefix)
    }
}

/// Runs `role` until Ctrl-C or SIGTERM.
pub async fn run(settings: Settings, role: Role) -> anyhow::Result<()> {
    let context = Context::new(settings);
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
        let result = axum::serve(listener, router)
            .with_graceful_shutdown(async move { shutdown.wait().await })
            .await
            .context("http server");
        ("http", result)
    });
    Ok(())
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

/// Connects to ClickHouse, naming the setting to fix when it does not answer.
pub async fn connect_clickhouse(
    settings: &hunter_core::config::ClickHouseSettings,
) -> anyhow::Result<hunter_clickhouse::writer::Writer> {
    hunter_clickhouse::writer::Writer::connect(settings)
        .await
        .with_context(|| {
            format!(
                "cannot reach clickhouse at {} (HUNTER_CLICKHOUSE_URL)",
                settings.url
            )
        })
}

/// Drops a Kafka consumer off the async threads: librdkafka's close blocks while it leaves the
/// group and commits.
pub fn drop_consumer<C: Send + 'static>(consumer: C) {
    std::thread::spawn(move || drop(consumer));
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
