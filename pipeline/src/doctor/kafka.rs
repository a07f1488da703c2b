//! Kafka checks: TLS trust and authentication, the broker's answer, and every topic Hunter uses.

use std::collections::BTreeMap;

use hunter_core::config::Settings;
use hunter_core::kafka;

use super::{CHECK_TIMEOUT, Report, Verdict};

/// TLS trust and authentication (each with its own verdict and fix), the broker's answer, and
/// every topic Hunter uses.
pub(super) async fn kafka_checks(settings: &Settings, report: &mut Report) {
    use hunter_core::kafka::FailureKind;
    let security = &settings.kafka.security;
    let kafka_settings = settings.kafka.clone();
    let checked = tokio::task::spawn_blocking(move || {
        kafka::check_connection(&kafka_settings, CHECK_TIMEOUT)
    })
    .await;
    let checked = match checked {
        Ok(checked) => checked,
        Err(error) => {
            report.fail(
                "kafka broker",
                format!("connection check failed: {error}"),
                "run again",
            );
            report.add("kafka topics", Verdict::Skip, "the broker did not answer");
            return;
        }
    };
    let failure = checked.as_ref().err();
    let detail = |error: &kafka::ConnectError| format!("{}: {}", error.headline, error.reason);
    let protocol = security.protocol.as_str();
    match failure {
        Some(error) if error.kind.is_tls() => report.fail("kafka tls", detail(error), &error.fix),
        _ if !security.protocol.uses_tls() => report.add(
            "kafka tls",
            Verdict::Skip,
            format!("HUNTER_KAFKA_SECURITY_PROTOCOL={protocol} uses no TLS"),
        ),
        Some(_) => report.add(
            "kafka tls",
            Verdict::Skip,
            "no TLS connection was made (see kafka broker)",
        ),
        None => report.add(
            "kafka tls",
            Verdict::Ok,
            format!(
                "the broker's certificate is trusted ({})",
                match &security.tls.ca_location {
                    Some(ca) => format!("CA {}", ca.display()),
                    None => "system trust store".to_owned(),
                }
            ),
        ),
    }
    let authentication_failed = |kind: FailureKind| {
        matches!(
            kind,
            FailureKind::Authentication | FailureKind::Mechanism | FailureKind::OAuthToken
        )
    };
    match (&security.sasl, failure) {
        (_, Some(error)) if authentication_failed(error.kind) => {
            report.fail("kafka authentication", detail(error), &error.fix)
        }
        (None, _) => report.add(
            "kafka authentication",
            Verdict::Skip,
            format!("HUNTER_KAFKA_SECURITY_PROTOCOL={protocol} does not authenticate"),
        ),
        (Some(_), Some(_)) => report.add(
            "kafka authentication",
            Verdict::Skip,
            "the connection failed before authentication",
        ),
        (Some(sasl), None) => report.add(
            "kafka authentication",
            Verdict::Ok,
            match sasl {
                hunter_core::config::KafkaSasl::Password {
                    mechanism,
                    username,
                    ..
                } => format!("{} as user {username:?} accepted", mechanism.as_str()),
                hunter_core::config::KafkaSasl::OAuthBearer { client_id, .. } => {
                    format!("OAUTHBEARER token of client {client_id:?} accepted")
                }
            },
        ),
    }
    match failure {
        Some(error) if error.kind.is_tls() || authentication_failed(error.kind) => {
            report.add(
                "kafka broker",
                Verdict::Skip,
                "TLS or authentication failed (above)",
            );
            report.add("kafka topics", Verdict::Skip, "the broker did not answer");
            return;
        }
        Some(error) => {
            report.fail(
                "kafka broker",
                format!("{}: {}", settings.kafka.brokers, error.reason),
                &error.fix,
            );
            report.add("kafka topics", Verdict::Skip, "the broker did not answer");
            return;
        }
        None => {}
    }
    let kafka = settings.kafka.clone();
    let listed = tokio::task::spawn_blocking(move || {
        use rdkafka::consumer::Consumer;
        let consumer = kafka::reader(&kafka, "hunter-doctor")?;
        let metadata = consumer.fetch_metadata(None, CHECK_TIMEOUT)?;
        let topics: BTreeMap<String, usize> = metadata
            .topics()
            .iter()
            .filter(|t| t.error().is_none())
            .map(|t| (t.name().to_owned(), t.partitions().len()))
            .collect();
        std::thread::spawn(move || drop(consumer));
        Ok::<_, rdkafka::error::KafkaError>(topics)
    })
    .await;
    let topics = match listed {
        Ok(Ok(topics)) => topics,
        Ok(Err(error)) => {
            report.fail(
                "kafka broker",
                format!("{}: {error}", settings.kafka.brokers),
                "check HUNTER_KAFKA_BROKERS and that the broker runs and is reachable from here",
            );
            report.add("kafka topics", Verdict::Skip, "the broker did not answer");
            return;
        }
        Err(error) => {
            report.fail(
                "kafka broker",
                format!("metadata task failed: {error}"),
                "run again",
            );
            report.add("kafka topics", Verdict::Skip, "the broker did not answer");
            return;
        }
    };
    report.add(
        "kafka broker",
        Verdict::Ok,
        format!("{} answered", settings.kafka.brokers),
    );
    let wanted = settings.kafka.topics().specs();
    let missing: Vec<&str> = wanted
        .iter()
        .filter(|spec| !topics.contains_key(&spec.name))
        .map(|spec| spec.name.as_str())
        .collect();
    if missing.is_empty() {
        report.add(
            "kafka topics",
            Verdict::Ok,
            format!("all {} present", wanted.len()),
        );
    } else {
        report.fail(
            "kafka topics",
            format!("missing: {}", missing.join(", ")),
            "run `hunter migrate` (creates the topics; check HUNTER_KAFKA_TOPIC_PREFIX)",
        );
    }
}
