//! Error classification: what went wrong between a client and the brokers, and which setting
//! names the fix.

use rdkafka::types::RDKafkaErrorCode;

use crate::config::{KafkaSasl, KafkaSettings, SaslMechanism};

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
pub(super) struct Hints {
    pub(super) brokers: String,
    protocol: &'static str,
    uses_tls: bool,
    mechanism: Option<SaslMechanism>,
    username: Option<String>,
    ca_location: Option<String>,
    client_certificate: bool,
}

impl Hints {
    pub(super) fn new(settings: &KafkaSettings) -> Self {
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
    pub(super) fn classify(&self, code: Option<RDKafkaErrorCode>, reason: &str) -> FailureKind {
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
    pub(super) fn classify_log(&self, line: &str) -> Option<FailureKind> {
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
    pub(super) fn explain(&self, kind: FailureKind) -> (&'static str, String, String) {
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
