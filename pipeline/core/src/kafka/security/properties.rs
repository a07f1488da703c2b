//! The settings as librdkafka properties: TLS and SASL for every client, `[kafka.properties]`,
//! and the properties Hunter owns.

use std::path::PathBuf;

use rdkafka::ClientConfig;

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
pub(in crate::kafka) fn apply(config: &mut ClientConfig, settings: &KafkaSettings) {
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
pub(in crate::kafka) fn apply_properties(config: &mut ClientConfig, settings: &KafkaSettings) {
    for (name, value) in settings.properties.iter() {
        config.set(name, value);
    }
}
