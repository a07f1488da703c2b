//! Kafka security: the settings as librdkafka properties, the properties Hunter owns, the client
//! context that surfaces authentication and TLS failures, and the start-up connection check.
//!
//! Invariants:
//! - Every Kafka client Hunter creates (producers, group consumers, readers, the admin client,
//!   the lag and metadata clients, the start-up check) gets the same TLS and SASL properties
//!   ([`apply`]) and the same `[kafka.properties]` ([`apply_properties`]), through
//!   `kafka.rs`'s builders, and the same [`KafkaContext`].
//! - `[kafka.properties]` never changes what Hunter owns ([`PROTECTED_PROPERTIES`]): the config
//!   refuses those at start, naming the property.
//! - No secret is logged or put in an error: librdkafka's failure reasons carry none, this module
//!   formats only user names, mechanisms, file paths and property names, and property values
//!   whose names look secret ([`is_secret_property`]) are shown as `[redacted]`.
//!
//! Failure modes: librdkafka never gives up on a broker that refuses the password or presents an
//! untrusted certificate; it reconnects with backoff and reports one error event per attempt,
//! while a metadata request or a produce just waits. So:
//! - at start, [`check_connection`] fetches metadata for a few seconds and turns the first such
//!   event into a [`ConnectError`] naming the setting to fix (`hunter run`, `migrate`, `doctor`);
//!   a broker that is merely unreachable is not definitive (it may be starting) and the caller
//!   decides;
//! - during a run, [`KafkaContext::error`] logs each one at `error` with the setting named and
//!   counts it in `hunter_kafka_client_errors_total{client, kind}` (alert on `kind` =
//!   `authentication`, `tls` or `security_protocol`): a rotated password or an expired certificate
//!   shows up at once instead of as a silent stall.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;

use crate::config::{KafkaSasl, KafkaSettings, SaslMechanism};

/// librdkafka properties Hunter sets itself, with what to do instead. `[kafka.properties]` may
/// not name them (the config refuses it at start): the security ones have settings of their
/// own, the others are what keeps delivery exactly-once-per-key and offsets honest.
pub const PROTECTED_PROPERTIES: &[(&str, &str)] = &[
    ("bootstrap.servers", "set HUNTER_KAFKA_BROKERS"),
    ("metadata.broker.list", "set HUNTER_KAFKA_BROKERS"),
    ("security.protocol", "set HUNTER_KAFKA_SECURITY_PROTOCOL"),
    ("sasl.mechanism", "set HUNTER_KAFKA_SASL_MECHANISM"),
    ("sasl.mechanisms", "set HUNTER_KAFKA_SASL_MECHANISM"),
    ("sasl.username", "set HUNTER_KAFKA_SASL_USERNAME"),
    ("sasl.password", "set HUNTER_KAFKA_SASL_PASSWORD"),
    (
        "sasl.oauthbearer.method",
        "Hunter uses oidc with HUNTER_KAFKA_SASL_MECHANISM=OAUTHBEARER",
    ),
    (
        "sasl.oauthbearer.client.id",
        "set HUNTER_KAFKA_SASL_OAUTHBEARER_CLIENT_ID",
    ),
    (
        "sasl.oauthbearer.client.secret",
        "set HUNTER_KAFKA_SASL_OAUTHBEARER_CLIENT_SECRET",
    ),
    (
        "sasl.oauthbearer.token.endpoint.url",
        "set HUNTER_KAFKA_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL",
    ),
    (
        "sasl.oauthbearer.scope",
        "set HUNTER_KAFKA_SASL_OAUTHBEARER_SCOPE",
    ),
    ("ssl.ca.location", "set HUNTER_KAFKA_SSL_CA_LOCATION"),
    (
        "ssl.certificate.location",
        "set HUNTER_KAFKA_SSL_CERTIFICATE_LOCATION",
    ),
    ("ssl.key.location", "set HUNTER_KAFKA_SSL_KEY_LOCATION"),
    ("ssl.key.password", "set HUNTER_KAFKA_SSL_KEY_PASSWORD"),
    (
        "enable.idempotence",
        "producers are always idempotent (no duplicate on a retry)",
    ),
    (
        "acks",
        "producers always wait for every in-sync replica (acks=all)",
    ),
    (
        "request.required.acks",
        "producers always wait for every in-sync replica (acks=all)",
    ),
    (
        "max.in.flight.requests.per.connection",
        "idempotence bounds it",
    ),
    ("max.in.flight", "idempotence bounds it"),
    (
        "enable.gapless.guarantee",
        "Hunter's producers handle delivery failures themselves",
    ),
    (
        "transactional.id",
        "Hunter does not use transactions (Event Hubs Standard has none)",
    ),
    (
        "partitioner",
        "keys must land where Java clients put them (murmur2_random)",
    ),
    (
        "enable.auto.commit",
        "consumers commit only offsets stored after the effect is acknowledged",
    ),
    (
        "enable.auto.offset.store",
        "an offset is stored only after its record's effect is acknowledged downstream",
    ),
    (
        "auto.offset.reset",
        "a new group reads from the earliest record",
    ),
    (
        "isolation.level",
        "consumers read committed records only (the default)",
    ),
    (
        "group.id",
        "groups are named by role and HUNTER_KAFKA_TOPIC_PREFIX",
    ),
    (
        "group.protocol",
        "rebalances use the classic protocol with cooperative-sticky assignment",
    ),
    (
        "partition.assignment.strategy",
        "rebalances are cooperative-sticky; the processor relies on it",
    ),
    (
        "enable.partition.eof",
        "Hunter's consumer loops do not expect end-of-partition events",
    ),
];

/// Whether a librdkafka property's value must never be shown: passwords, secrets, keys, tokens.
pub fn is_secret_property(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    [
        "password",
        "secret",
        "jaas",
        "sasl.oauthbearer.config",
        "key.pem",
        "ssl_key",
        "keystore",
        "token",
        "credential",
    ]
    .iter()
    .any(|part| name.contains(part))
}

/// TLS and SASL as librdkafka properties (every client).
pub(super) fn apply(config: &mut ClientConfig, settings: &KafkaSettings) {
    let security = &settings.security;
    config.set("security.protocol", security.protocol.as_str());
    match &security.sasl {
        None => {}
        Some(KafkaSasl::Password {
            mechanism,
            username,
            password,
        }) => {
            config
                .set("sasl.mechanism", mechanism.as_str())
                .set("sasl.username", username)
                .set("sasl.password", password.expose());
        }
        Some(KafkaSasl::OAuthBearer {
            client_id,
            client_secret,
            token_endpoint_url,
            scope,
        }) => {
            // librdkafka fetches and refreshes the token itself (client credentials grant).
            config
                .set("sasl.mechanism", SaslMechanism::OAuthBearer.as_str())
                .set("sasl.oauthbearer.method", "oidc")
                .set("sasl.oauthbearer.client.id", client_id)
                .set("sasl.oauthbearer.client.secret", client_secret.expose())
                .set(
                    "sasl.oauthbearer.token.endpoint.url",
                    token_endpoint_url.as_str(),
                );
            if let Some(scope) = scope {
                config.set("sasl.oauthbearer.scope", scope);
            }
        }
    }
    let tls = &security.tls;
    let path = |p: &PathBuf| p.display().to_string();
    if let Some(ca) = &tls.ca_location {
        config.set("ssl.ca.location", path(ca));
    }
    if let Some(certificate) = &tls.certificate_location {
        config.set("ssl.certificate.location", path(certificate));
    }
    if let Some(key) = &tls.key_location {
        config.set("ssl.key.location", path(key));
    }
    if let Some(password) = &tls.key_password {
        config.set("ssl.key.password", password.expose());
    }
}

/// `[kafka.properties]`, applied last: they may tune what a role set (timeouts, batching), never
/// what Hunter owns (the config refused those).
pub(super) fn apply_properties(config: &mut ClientConfig, settings: &KafkaSettings) {
    for (name, value) in settings.properties.iter() {
        config.set(name, value);
    }
}

/// What went wrong between a client and the brokers, as far as the fix is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The broker refused the SASL credentials.
    Authentication,
    /// The broker does not offer the configured SASL mechanism.
    Mechanism,
    /// No OAuth token could be fetched for OAUTHBEARER.
    OAuthToken,
    /// The broker's certificate is not signed by a CA Hunter trusts (or names another host).
    UntrustedCertificate,
    /// The broker refused Hunter's client certificate, or wanted one.
    ClientCertificate,
    /// Another TLS failure.
    Tls,
    /// The port does not speak the configured protocol (TLS to a plaintext listener or the reverse).
    SecurityProtocol,
    /// The client could not be created from the settings (a TLS file librdkafka cannot load).
    Configuration,
    /// No broker answered: down, starting, unreachable. Transient.
    Unreachable,
    /// Anything else librdkafka reports; it retries by itself.
    Other,
}

impl FailureKind {
    /// The `kind` label of `hunter_kafka_client_errors_total`.
    pub fn label(self) -> &'static str {
        match self {
            FailureKind::Authentication | FailureKind::Mechanism | FailureKind::OAuthToken => {
                "authentication"
            }
            FailureKind::UntrustedCertificate
            | FailureKind::ClientCertificate
            | FailureKind::Tls => "tls",
            FailureKind::SecurityProtocol => "security_protocol",
            FailureKind::Configuration => "configuration",
            FailureKind::Unreachable => "transport",
            FailureKind::Other => "other",
        }
    }

    /// A failure that no amount of waiting fixes: the settings (or the broker's) must change.
    pub fn is_definitive(self) -> bool {
        !matches!(self, FailureKind::Unreachable | FailureKind::Other)
    }

    /// Whether it concerns TLS (`hunter doctor`'s "kafka tls" check) rather than SASL.
    pub fn is_tls(self) -> bool {
        matches!(
            self,
            FailureKind::UntrustedCertificate
                | FailureKind::ClientCertificate
                | FailureKind::Tls
                | FailureKind::SecurityProtocol
        )
    }
}

/// What a client needs to know about the settings to name the one to fix.
#[derive(Debug, Clone)]
struct Hints {
    brokers: String,
    protocol: &'static str,
    uses_tls: bool,
    mechanism: Option<SaslMechanism>,
    username: Option<String>,
    ca_location: Option<String>,
    client_certificate: bool,
}

impl Hints {
    fn new(settings: &KafkaSettings) -> Self {
        let security = &settings.security;
        Hints {
            brokers: settings.brokers.clone(),
            protocol: security.protocol.as_str(),
            uses_tls: security.protocol.uses_tls(),
            mechanism: security.sasl.as_ref().map(KafkaSasl::mechanism),
            username: match &security.sasl {
                Some(KafkaSasl::Password { username, .. }) => Some(username.clone()),
                _ => None,
            },
            ca_location: security
                .tls
                .ca_location
                .as_ref()
                .map(|p| p.display().to_string()),
            client_certificate: security.tls.certificate_location.is_some(),
        }
    }

    /// What kind of failure librdkafka's error event describes.
    fn classify(&self, code: Option<RDKafkaErrorCode>, reason: &str) -> FailureKind {
        let text = reason.to_ascii_lowercase();
        let has = |part: &str| text.contains(part);
        if has("might be caused by incorrect security.protocol") {
            return FailureKind::SecurityProtocol;
        }
        if has("mechanism handshake failed") || has("unsupported sasl mechanism") {
            // A broker that refuses a mechanism while listing it as supported is refusing to
            // re-authenticate a live connection (KIP-368), not the settings: tansu 0.6.0 does
            // this every 60 s. librdkafka reconnects and authenticates afresh.
            let offered = text
                .split("broker's supported mechanisms: ")
                .nth(1)
                .map(|list| list.split(" (").next().unwrap_or(list));
            if let (Some(offered), Some(mechanism)) = (offered, self.mechanism)
                && offered
                    .split(',')
                    .any(|m| m.trim().eq_ignore_ascii_case(mechanism.as_str()))
            {
                return FailureKind::Other;
            }
            return FailureKind::Mechanism;
        }
        let ssl = code == Some(RDKafkaErrorCode::SSL) || has("ssl handshake failed");
        if ssl {
            if has("wrong version number")
                || has("packet length too long")
                || has("record layer failure")
                || has("http request")
            {
                return FailureKind::SecurityProtocol;
            }
            if has("certificate verify failed") || has("could not be verified") {
                return FailureKind::UntrustedCertificate;
            }
            if has("bad certificate")
                || has("certificate required")
                || has("unknown ca")
                || has("certificate unknown")
                || (has("certificate expired") && self.client_certificate)
            {
                return FailureKind::ClientCertificate;
            }
            return FailureKind::Tls;
        }
        let authentication = code == Some(RDKafkaErrorCode::Authentication)
            || code == Some(RDKafkaErrorCode::SaslAuthenticationFailed)
            || has("sasl authentication error")
            || has("sasl handshake failed");
        if authentication {
            if has("local: broker transport failure") {
                // The connection dropped during the exchange: an outage, not a refusal.
                return FailureKind::Unreachable;
            }
            if has("unsupported_sasl_mechanism")
                || (has("mechanism") && has("not supported"))
                || has("no worthy mechs")
            {
                return FailureKind::Mechanism;
            }
            if self.mechanism == Some(SaslMechanism::OAuthBearer)
                && (has("token") || has("oauthbearer") || has("oidc"))
            {
                return FailureKind::OAuthToken;
            }
            return FailureKind::Authentication;
        }
        if code == Some(RDKafkaErrorCode::UnsupportedSASLMechanism) {
            return FailureKind::Mechanism;
        }
        match code {
            Some(
                RDKafkaErrorCode::BrokerTransportFailure
                | RDKafkaErrorCode::AllBrokersDown
                | RDKafkaErrorCode::Resolve
                | RDKafkaErrorCode::MessageTimedOut
                | RDKafkaErrorCode::OperationTimedOut,
            ) => FailureKind::Unreachable,
            _ => FailureKind::Other,
        }
    }

    /// What kind of failure a librdkafka `FAIL` log line (a broker connection that failed)
    /// describes, for the start-up check. Some failures come only as these lines: a plaintext
    /// client whose connection a TLS listener resets while it asks for the API versions, a TLS
    /// client whose handshake a plaintext listener never answers.
    fn classify_log(&self, line: &str) -> Option<FailureKind> {
        let kind = self.classify(None, line);
        if kind.is_definitive() {
            return Some(kind);
        }
        let has = |part: &str| line.contains(part);
        let reset_while_asking_versions =
            has("state APIVERSION_QUERY") && (has("Disconnected") || has("connection reset"));
        let handshake_unanswered = has("state SSL_HANDSHAKE") && has("timed out");
        ((reset_while_asking_versions && !self.uses_tls) || (handshake_unanswered && self.uses_tls))
            .then_some(FailureKind::SecurityProtocol)
    }

    /// The setting to fix for a failure, a headline and the fix in words.
    fn explain(&self, kind: FailureKind) -> (&'static str, String, String) {
        let mechanism = self.mechanism.map(SaslMechanism::as_str).unwrap_or("SASL");
        let who = self
            .username
            .as_deref()
            .map(|user| format!(" as user {user:?}"))
            .unwrap_or_default();
        let trusted = match &self.ca_location {
            Some(ca) => format!("the CA in {ca}"),
            None => "the system trust store (HUNTER_KAFKA_SSL_CA_LOCATION is not set)".to_owned(),
        };
        match kind {
            FailureKind::Authentication => (
                "HUNTER_KAFKA_SASL_PASSWORD",
                format!("kafka authentication failed ({mechanism}{who})"),
                "check HUNTER_KAFKA_SASL_PASSWORD and HUNTER_KAFKA_SASL_USERNAME (and that the user exists for this mechanism on the broker)".to_owned(),
            ),
            FailureKind::Mechanism => (
                "HUNTER_KAFKA_SASL_MECHANISM",
                format!("the broker does not offer SASL {mechanism}"),
                "set HUNTER_KAFKA_SASL_MECHANISM to a mechanism the broker offers (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER)".to_owned(),
            ),
            FailureKind::OAuthToken => (
                "HUNTER_KAFKA_SASL_OAUTHBEARER_CLIENT_SECRET",
                "kafka OAUTHBEARER authentication failed".to_owned(),
                "check HUNTER_KAFKA_SASL_OAUTHBEARER_CLIENT_ID, HUNTER_KAFKA_SASL_OAUTHBEARER_CLIENT_SECRET, HUNTER_KAFKA_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL and HUNTER_KAFKA_SASL_OAUTHBEARER_SCOPE".to_owned(),
            ),
            FailureKind::UntrustedCertificate => (
                "HUNTER_KAFKA_SSL_CA_LOCATION",
                format!("the broker's TLS certificate is not trusted by {trusted}"),
                "set HUNTER_KAFKA_SSL_CA_LOCATION to the PEM file of the CA that signed the broker's certificate, and make sure the host in HUNTER_KAFKA_BROKERS is a name the certificate carries".to_owned(),
            ),
            FailureKind::ClientCertificate => (
                "HUNTER_KAFKA_SSL_CERTIFICATE_LOCATION",
                "the broker refused the client certificate".to_owned(),
                "set HUNTER_KAFKA_SSL_CERTIFICATE_LOCATION and HUNTER_KAFKA_SSL_KEY_LOCATION to a certificate the broker's CA signed".to_owned(),
            ),
            FailureKind::Tls => (
                "HUNTER_KAFKA_SSL_CA_LOCATION",
                "the TLS handshake with the broker failed".to_owned(),
                "check HUNTER_KAFKA_SSL_CA_LOCATION and that HUNTER_KAFKA_BROKERS names the broker's TLS listener".to_owned(),
            ),
            FailureKind::SecurityProtocol => (
                "HUNTER_KAFKA_SECURITY_PROTOCOL",
                if self.uses_tls {
                    format!("the broker port does not speak TLS (HUNTER_KAFKA_SECURITY_PROTOCOL={})", self.protocol)
                } else {
                    format!("the broker closed the connection: it may expect TLS (HUNTER_KAFKA_SECURITY_PROTOCOL={})", self.protocol)
                },
                "set HUNTER_KAFKA_SECURITY_PROTOCOL to what the listener in HUNTER_KAFKA_BROKERS expects (hosted services: sasl_ssl), or point HUNTER_KAFKA_BROKERS at the listener that speaks it".to_owned(),
            ),
            FailureKind::Configuration => (
                "HUNTER_KAFKA_SECURITY_PROTOCOL",
                "the Kafka client could not be created from the settings".to_owned(),
                "fix the setting librdkafka names above".to_owned(),
            ),
            FailureKind::Unreachable | FailureKind::Other => (
                "HUNTER_KAFKA_BROKERS",
                "no Kafka broker answered".to_owned(),
                format!("check HUNTER_KAFKA_BROKERS, that the broker runs and is reachable from here, and HUNTER_KAFKA_SECURITY_PROTOCOL ({})", self.protocol),
            ),
        }
    }
}

/// One error event librdkafka reported.
#[derive(Debug, Clone)]
struct Seen {
    kind: FailureKind,
    reason: String,
}

/// The context of every Kafka client Hunter creates: librdkafka's error events are logged with
/// the setting to fix and counted in `hunter_kafka_client_errors_total{client, kind}`; the
/// start-up check also keeps them ([`check_connection`]).
#[derive(Clone)]
pub struct KafkaContext {
    client: String,
    hints: Arc<Hints>,
    seen: Option<Arc<Mutex<Vec<Seen>>>>,
}

impl KafkaContext {
    /// The context of the client called `client` (its `client.id`).
    pub fn new(settings: &KafkaSettings, client: &str) -> Self {
        KafkaContext {
            client: client.to_owned(),
            hints: Arc::new(Hints::new(settings)),
            seen: None,
        }
    }

    fn recording(settings: &KafkaSettings, client: &str) -> Self {
        KafkaContext {
            seen: Some(Arc::default()),
            ..Self::new(settings, client)
        }
    }

    fn remember(&self, kind: FailureKind, reason: &str) {
        if let Some(seen) = &self.seen {
            seen.lock().unwrap_or_else(|e| e.into_inner()).push(Seen {
                kind,
                reason: reason.to_owned(),
            });
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen
            .as_ref()
            .map(|seen| seen.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .unwrap_or_default()
    }

    /// Logs and counts one error event of this client; returns its kind.
    fn report(&self, error: &KafkaError, reason: &str) -> FailureKind {
        let kind = self.hints.classify(error.rdkafka_error_code(), reason);
        metrics::counter!(
            crate::telemetry::names::KAFKA_CLIENT_ERRORS_TOTAL,
            "client" => self.client.clone(),
            "kind" => kind.label()
        )
        .increment(1);
        if kind.is_definitive() {
            let (setting, headline, fix) = self.hints.explain(kind);
            tracing::error!(
                client = %self.client,
                kind = kind.label(),
                setting,
                brokers = %self.hints.brokers,
                "{headline}: {reason}; {fix}"
            );
        } else {
            tracing::warn!(client = %self.client, %error, reason, "kafka client error; librdkafka retries by itself");
        }
        self.remember(kind, reason);
        kind
    }
}

impl ClientContext for KafkaContext {
    fn error(&self, error: KafkaError, reason: &str) {
        self.report(&error, reason);
    }

    /// librdkafka's own lines, as rust-rdkafka's default does (target `librdkafka`); the
    /// start-up check also reads its `FAIL` lines ([`Hints::classify_log`]).
    fn log(&self, level: RDKafkaLogLevel, fac: &str, line: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", "librdkafka: {fac} {line}")
            }
            RDKafkaLogLevel::Warning => {
                tracing::warn!(target: "librdkafka", "librdkafka: {fac} {line}")
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", "librdkafka: {fac} {line}")
            }
            RDKafkaLogLevel::Debug => {
                tracing::debug!(target: "librdkafka", "librdkafka: {fac} {line}")
            }
        }
        if self.seen.is_some()
            && fac == "FAIL"
            && let Some(kind) = self.hints.classify_log(line)
        {
            // "[thrd:sasl_ssl://host:port/bootstrap]: sasl_ssl://host:port/bootstrap: …"
            let reason = line
                .strip_prefix("[thrd:")
                .and_then(|rest| rest.split_once("]: "))
                .map_or(line, |(_, reason)| reason);
            self.remember(kind, reason);
        }
    }
}

impl ConsumerContext for KafkaContext {}

impl ProducerContext for KafkaContext {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &DeliveryResult<'_>, _: Self::DeliveryOpaque) {}
}

/// Why [`check_connection`] failed: the kind, the setting to fix, what happened and the fix.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{headline} at {brokers}: {reason}; {fix}")]
pub struct ConnectError {
    pub kind: FailureKind,
    /// The setting the operator most likely has to change.
    pub setting: &'static str,
    pub headline: String,
    pub brokers: String,
    /// librdkafka's words (they never include a secret).
    pub reason: String,
    pub fix: String,
}

impl ConnectError {
    fn new(hints: &Hints, kind: FailureKind, reason: String) -> Self {
        let (setting, headline, fix) = hints.explain(kind);
        ConnectError {
            kind,
            setting,
            headline,
            brokers: hints.brokers.clone(),
            reason,
            fix,
        }
    }
}

/// What the brokers said when the connection worked.
#[derive(Debug, Clone)]
pub struct Contact {
    /// Brokers in the cluster's metadata.
    pub brokers: usize,
    /// Topics the credentials may see.
    pub topics: usize,
}

/// How long the start-up check waits for a broker before it leaves the rest to librdkafka's
/// retries. Authentication and TLS failures come back in milliseconds.
pub const CHECK_WAIT: Duration = Duration::from_secs(10);

/// Connects the way every client does and asks for the cluster's metadata, for at most `wait`.
/// The first definitive failure (refused credentials, untrusted certificate, a protocol the port
/// does not speak) ends it at once with the setting to fix; a broker that does not answer at all
/// is [`FailureKind::Unreachable`] after `wait`. Blocks: call it from a blocking thread.
pub fn check_connection(settings: &KafkaSettings, wait: Duration) -> Result<Contact, ConnectError> {
    let hints = Hints::new(settings);
    let client = "hunter-connection-check";
    let mut config = super::base_config(settings);
    config.set("client.id", client);
    apply_properties(&mut config, settings);
    if settings.security.protocol.uses_tls() {
        // A listener that does not speak TLS never answers the handshake: librdkafka's 30 s
        // default would outlast the check.
        config.set("socket.connection.setup.timeout.ms", "3000");
    }
    let context = KafkaContext::recording(settings, client);
    let producer: BaseProducer<KafkaContext> = match config.create_with_context(context) {
        Ok(producer) => producer,
        Err(error) => {
            // E.g. "ssl.ca.location failed: …": librdkafka loads the TLS files here.
            let text = error.to_string();
            let kind = if text.contains("ssl") || text.contains("SSL") {
                FailureKind::Tls
            } else {
                FailureKind::Configuration
            };
            let mut failure = ConnectError::new(&hints, kind, text.clone());
            for (property, setting) in [
                ("ssl.ca.location", "HUNTER_KAFKA_SSL_CA_LOCATION"),
                (
                    "ssl.certificate.location",
                    "HUNTER_KAFKA_SSL_CERTIFICATE_LOCATION",
                ),
                ("ssl.key", "HUNTER_KAFKA_SSL_KEY_LOCATION"),
                ("oauthbearer", "HUNTER_KAFKA_SASL_MECHANISM"),
            ] {
                if text.contains(property) {
                    failure.setting = setting;
                    failure.fix = format!("check {setting} (librdkafka could not use {property})");
                    if property == "ssl.key" {
                        failure.fix =
                            "check HUNTER_KAFKA_SSL_KEY_LOCATION and HUNTER_KAFKA_SSL_KEY_PASSWORD"
                                .into();
                    }
                    break;
                }
            }
            return Err(failure);
        }
    };
    let deadline = Instant::now() + wait;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let answer = producer
            .client()
            .fetch_metadata(None, remaining.min(Duration::from_millis(500)));
        // Serve every event librdkafka queued meanwhile: errors and log lines reach the
        // context here (a zero timeout would serve only one).
        producer.poll(Duration::from_millis(100));
        let seen = producer.context().seen();
        let last_error = match answer {
            Ok(metadata) => {
                return Ok(Contact {
                    brokers: metadata.brokers().len(),
                    topics: metadata.topics().len(),
                });
            }
            Err(error) => error.to_string(),
        };
        // A protocol mismatch looks like a dropped or stalled connection: believe it when it
        // repeats, or when nothing else happened until the deadline (librdkafka may log the
        // repeat only with its next attempt, after a backoff).
        let over = Instant::now() >= deadline;
        let definitive = seen.iter().find(|s| {
            s.kind.is_definitive()
                && (s.kind != FailureKind::SecurityProtocol
                    || over
                    || seen.iter().filter(|t| t.kind == s.kind).count() > 1)
        });
        if let Some(seen) = definitive {
            return Err(ConnectError::new(&hints, seen.kind, seen.reason.clone()));
        }
        if over {
            let reason = seen
                .last()
                .map(|s| s.reason.clone())
                .unwrap_or_else(|| format!("no answer within {} s ({last_error})", wait.as_secs()));
            return Err(ConnectError::new(&hints, FailureKind::Unreachable, reason));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{KafkaSecurity, KafkaSecurityProtocol, KafkaTls, Secret};

    fn settings(security: KafkaSecurity) -> KafkaSettings {
        KafkaSettings {
            brokers: "broker.example:9093".into(),
            topic_prefix: String::new(),
            schema_registry_url: None,
            security,
            properties: Default::default(),
        }
    }

    fn scram() -> KafkaSettings {
        settings(KafkaSecurity {
            protocol: KafkaSecurityProtocol::SaslSsl,
            sasl: Some(KafkaSasl::Password {
                mechanism: SaslMechanism::ScramSha512,
                username: "hunter".into(),
                password: Secret::new("pw-SENTINEL"),
            }),
            tls: KafkaTls::default(),
        })
    }

    #[test]
    fn librdkafka_reasons_name_the_setting_to_fix() {
        let hints = Hints::new(&scram());
        let auth = hints.classify(
            Some(RDKafkaErrorCode::Authentication),
            "sasl_ssl://127.0.0.1:21005/bootstrap: SASL authentication error: SASL Authentication failed. (after 3ms in state AUTH_REQ)",
        );
        assert_eq!(auth, FailureKind::Authentication);
        assert_eq!(hints.explain(auth).0, "HUNTER_KAFKA_SASL_PASSWORD");
        let untrusted = hints.classify(
            Some(RDKafkaErrorCode::SSL),
            "ssl://127.0.0.1:21005/bootstrap: SSL handshake failed: error:0A000086:SSL routines::certificate verify failed: broker certificate could not be verified, verify that ssl.ca.location is correctly configured or root CA certificates are installed (install ca-certificates package) (after 4ms in state SSL_HANDSHAKE)",
        );
        assert_eq!(untrusted, FailureKind::UntrustedCertificate);
        assert_eq!(hints.explain(untrusted).0, "HUNTER_KAFKA_SSL_CA_LOCATION");
        assert!(hints.explain(untrusted).1.contains("system trust store"));
        let plaintext_port = hints.classify(
            Some(RDKafkaErrorCode::SSL),
            "SSL handshake failed: error:0A00010B:SSL routines::wrong version number",
        );
        assert_eq!(plaintext_port, FailureKind::SecurityProtocol);
        let tls_port = hints.classify(
            Some(RDKafkaErrorCode::BrokerTransportFailure),
            "127.0.0.1:9093/bootstrap: Disconnected while requesting ApiVersion: might be caused by incorrect security.protocol configuration (connecting to a SSL listener?) or broker version is < 0.10 (see api.version.request) (after 1ms in state APIVERSION_QUERY)",
        );
        assert_eq!(tls_port, FailureKind::SecurityProtocol);
        assert_eq!(hints.explain(tls_port).0, "HUNTER_KAFKA_SECURITY_PROTOCOL");
        let mechanism = hints.classify(
            Some(RDKafkaErrorCode::Authentication),
            "SASL handshake failed (start (-4)): SASL mechanism SCRAM-SHA-512 not supported by broker",
        );
        assert_eq!(mechanism, FailureKind::Mechanism);
        // tansu 0.6.0 offers no PLAIN: it drops the connection at the handshake.
        let no_plain = hints.classify(
            Some(RDKafkaErrorCode::Authentication),
            "sasl_ssl://127.0.0.1:23572/bootstrap: SASL PLAIN mechanism handshake failed: Local: Broker transport failure: broker's supported mechanisms: (n/a) (after 0ms in state DOWN)",
        );
        assert_eq!(no_plain, FailureKind::Mechanism);
        assert_eq!(hints.explain(no_plain).0, "HUNTER_KAFKA_SASL_MECHANISM");
        // tansu 0.6.0 refuses every re-authentication of a live connection (its session
        // lifetime is 60 s) while listing the mechanism: not the settings' fault.
        let reauthentication = hints.classify(
            Some(RDKafkaErrorCode::Authentication),
            "GroupCoordinator: 127.0.0.1:23572: SASL SCRAM-SHA-512 mechanism handshake failed: Broker: Unsupported SASL mechanism: broker's supported mechanisms: SCRAM-SHA-512 (after 1ms in state AUTH_HANDSHAKE)",
        );
        assert_eq!(reauthentication, FailureKind::Other);
        let dropped = hints.classify(
            Some(RDKafkaErrorCode::Authentication),
            "GroupCoordinator: SASL authentication error: SaslAuthenticateRequest failed: Local: Broker transport failure (after 0ms in state AUTH_REQ)",
        );
        assert_eq!(dropped, FailureKind::Unreachable);
        // Failures librdkafka reports only in its FAIL log lines.
        let unanswered = "sasl_ssl://127.0.0.1:23571/bootstrap: Connection setup timed out in state SSL_HANDSHAKE (after 3003ms in state SSL_HANDSHAKE)";
        assert_eq!(
            hints.classify_log(unanswered),
            Some(FailureKind::SecurityProtocol)
        );
        let reset = "127.0.0.1:23572/bootstrap: Disconnected: connection reset by peer (after 0ms in state APIVERSION_QUERY)";
        assert_eq!(hints.classify_log(reset), None, "a TLS client: not this");
        let plaintext = Hints::new(&settings(KafkaSecurity::default()));
        assert_eq!(
            plaintext.classify_log(reset),
            Some(FailureKind::SecurityProtocol)
        );
        assert_eq!(
            plaintext.classify_log("127.0.0.1:9092/bootstrap: Connect to ipv4#127.0.0.1:9092 failed: Connection refused (after 0ms in state CONNECT)"),
            None
        );
        let down = hints.classify(
            Some(RDKafkaErrorCode::AllBrokersDown),
            "1/1 brokers are down",
        );
        assert_eq!(down, FailureKind::Unreachable);
        assert!(!down.is_definitive());
        assert_eq!(down.label(), "transport");
    }

    #[test]
    fn the_security_settings_reach_librdkafka_and_no_error_shows_the_password() {
        let settings = scram();
        let mut config = ClientConfig::new();
        apply(&mut config, &settings);
        assert_eq!(config.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(config.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(config.get("sasl.username"), Some("hunter"));
        assert_eq!(config.get("sasl.password"), Some("pw-SENTINEL"));
        assert!(config.create_native_config().is_ok());
        let hints = Hints::new(&settings);
        for kind in [
            FailureKind::Authentication,
            FailureKind::UntrustedCertificate,
            FailureKind::SecurityProtocol,
            FailureKind::Unreachable,
        ] {
            let error = ConnectError::new(&hints, kind, "reason".into()).to_string();
            assert!(!error.contains("pw-SENTINEL"), "{error}");
            assert!(error.contains("broker.example:9093"), "{error}");
        }
    }

    #[test]
    fn secret_looking_properties_are_recognised() {
        for name in [
            "ssl.keystore.password",
            "sasl.oauthbearer.client.secret",
            "ssl.key.pem",
            "sasl.oauthbearer.config",
            "sasl.jaas.config",
        ] {
            assert!(is_secret_property(name), "{name}");
        }
        for name in [
            "linger.ms",
            "client.rack",
            "ssl.endpoint.identification.algorithm",
        ] {
            assert!(!is_secret_property(name), "{name}");
        }
        // Every protected property is one librdkafka knows (a typo would protect nothing).
        for (name, _) in PROTECTED_PROPERTIES {
            let mut config = ClientConfig::new();
            config.set(*name, "x");
            let unknown = matches!(
                config.create_native_config(),
                Err(KafkaError::ClientConfig(
                    rdkafka::types::RDKafkaConfRes::RD_KAFKA_CONF_UNKNOWN,
                    ..
                ))
            );
            assert!(!unknown, "{name} is not a librdkafka property");
        }
    }
}
