//! The long-running roles and how `hunter run` wires them.
//!
//! Each role is a loop that ends when the shutdown broadcast fires, after finishing its
//! in-flight work and committing. `run all` runs every role in one process and one HTTP
//! listener; `run <role>` runs one, still serving `/healthz` and `/metrics`.

pub mod api;
// Outgoing webhooks (docs/notifications.md).
pub mod notify;
pub mod process;
// The processor writing `referrals` (HUNTER_SINK_REFERRALS_WRITER).
mod referrals_table;
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
/// commands, the processor, the sink's one group per topic). `sink_reads_referrals`: whether the
/// sink reads the referral topic ([`processor_writes_referrals`]); when it does not, its
/// referral group is not Hunter's (a broker that lists it still shows it, with its lag).
pub fn consumer_groups(settings: &Settings, sink_reads_referrals: bool) -> Vec<(String, String)> {
    let topics = settings.kafka.topics();
    let group = |role: &str| format!("{}hunter-{role}", settings.kafka.topic_prefix);
    let mut groups = vec![
        (group("source-commands"), topics.commands.clone()),
        (group("processor"), topics.referrals.clone()),
        (group("sink-leads"), topics.leads.clone()),
        (group(SINK_REFERRALS_GROUP), topics.referrals.clone()),
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
    ];
    if !sink_reads_referrals {
        groups.retain(|(id, _)| *id != group(SINK_REFERRALS_GROUP));
    }
    groups
}

/// The sink's group on the referral topic, when the sink writes `referrals`.
pub const SINK_REFERRALS_GROUP: &str = "sink-referrals";

/// Whether the processor writes the `referrals` table (`HUNTER_SINK_REFERRALS_WRITER`, see
/// docs/clickhouse.md): `auto` asks the broker whether the sink's referral group has committed
/// offsets (a deployment whose sink wrote the table keeps it that way: switching needs the
/// sink caught up first). Each role decides at its start; both decide alike, since only the
/// sink commits in that group, and only when it writes the table. When the broker cannot tell,
/// `in_doubt` is the answer: the processor then writes the rows and the sink reads the topic
/// as well, since rows written twice collapse (ReplacingMergeTree by id and version) and rows
/// written by neither would be missing.
pub async fn processor_writes_referrals(settings: &Settings, in_doubt: bool) -> bool {
    use hunter_core::config::ReferralsWriter;
    match settings.sink.referrals_writer {
        ReferralsWriter::Processor => true,
        ReferralsWriter::Sink => false,
        ReferralsWriter::Auto => {
            let group = format!(
                "{}hunter-{SINK_REFERRALS_GROUP}",
                settings.kafka.topic_prefix
            );
            let topic = settings.kafka.topics().referrals;
            match hunter_core::kafka::describe::has_committed(&settings.kafka, &group, &topic).await
            {
                Ok(committed) => {
                    tracing::info!(
                        writer = if committed { "sink" } else { "processor" },
                        group,
                        committed,
                        "HUNTER_SINK_REFERRALS_WRITER=auto: who writes the referrals table"
                    );
                    !committed
                }
                Err(error) => {
                    tracing::warn!(%error, group, in_doubt, "HUNTER_SINK_REFERRALS_WRITER=auto: the broker did not say whether the sink's referral group has committed offsets; writing the referrals table from this role too");
                    in_doubt
                }
            }
        }
    }
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

/// Connects as the writer and checks it may insert: a writer without the right would stall
/// every batch forever, so the role refuses to start, naming the user and the grant (`who`
/// says which role, `or_else` what else fixes it). Other probe failures (tables not migrated
/// yet) are the stall-and-retry path's to handle.
pub async fn clickhouse_inserter(
    settings: &hunter_core::config::ClickHouseSettings,
    who: &str,
    or_else: &str,
) -> anyhow::Result<hunter_clickhouse::writer::ReadWriter> {
    let writer = connect_clickhouse(settings).await?;
    match writer.probe_inserts().await {
        Ok(()) => {}
        Err(error @ hunter_clickhouse::Error::Rights { .. }) => {
            anyhow::bail!(
                "{error}: {who} cannot write; grant the writer its rights (`hunter migrate --print-grants`){or_else}"
            );
        }
        Err(error) => tracing::warn!(%error, "could not check the writer's rights; going on"),
    }
    Ok(writer)
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
