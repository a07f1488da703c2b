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

mod check;
mod context;
mod failure;
mod properties;

pub use check::{CHECK_WAIT, ConnectError, Contact, check_connection};
pub use context::KafkaContext;
pub use failure::FailureKind;
pub use properties::{PROTECTED_PROPERTIES, is_secret_property};
pub(super) use properties::{apply, apply_properties};

#[cfg(test)]
mod tests {
    use rdkafka::ClientConfig;
    use rdkafka::error::KafkaError;
    use rdkafka::types::RDKafkaErrorCode;

    use super::failure::Hints;
    use super::*;
    use crate::config::{KafkaSasl, KafkaSettings, SaslMechanism};
    use crate::config::{KafkaSecurity, KafkaSecurityProtocol, KafkaTls, Secret};

    fn settings(security: KafkaSecurity) -> KafkaSettings {
        KafkaSettings {
            brokers: "broker.example:9093".into(),
            topic_prefix: String::new(),
            schema_registry_url: None,
            security,
            properties: Default::default(),
            compression: Default::default(),
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
