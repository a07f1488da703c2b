//! Schema Registry check.

use hunter_core::config::Settings;

use super::{CHECK_TIMEOUT, Report, Verdict};

/// The Schema Registry answers `GET /subjects` with Hunter's credentials and trust, when one
/// is configured.
pub(super) async fn registry(settings: &Settings, report: &mut Report) {
    let Some(url) = &settings.kafka.schema_registry_url else {
        report.add(
            "schema registry",
            Verdict::Skip,
            "none configured (records use Avro single-object encoding)",
        );
        return;
    };
    let registry = match hunter_core::codec::Registry::new(url, &settings.schema_registry) {
        Ok(registry) => registry,
        Err(error) => {
            report.fail(
                "schema registry",
                error,
                "point HUNTER_SCHEMA_REGISTRY_CA_LOCATION at a readable PEM file of CA certificates",
            );
            return;
        }
    };
    let result = tokio::time::timeout(CHECK_TIMEOUT, registry.check()).await;
    match result {
        Ok(Ok(())) => report.add(
            "schema registry",
            Verdict::Ok,
            format!(
                "{url} answered{}",
                if settings.schema_registry.username.is_some() {
                    " and took the credentials"
                } else {
                    ""
                }
            ),
        ),
        Ok(Err(error @ hunter_core::codec::CodecError::RegistryAuth { .. })) => report.fail(
            "schema registry",
            format!("{url}: {error}"),
            "set HUNTER_SCHEMA_REGISTRY_USERNAME and HUNTER_SCHEMA_REGISTRY_PASSWORD to an API key the registry accepts",
        ),
        Ok(Err(error @ hunter_core::codec::CodecError::RegistryTls { .. })) => report.fail(
            "schema registry",
            format!("{url}: {error}"),
            "set HUNTER_SCHEMA_REGISTRY_CA_LOCATION to the PEM file of the CA that signed the registry's certificate",
        ),
        Ok(Err(error)) => report.fail(
            "schema registry",
            format!("{url}: {error}"),
            "check HUNTER_SCHEMA_REGISTRY_URL and that the registry runs",
        ),
        Err(_) => report.fail(
            "schema registry",
            format!("{url}: no answer within {CHECK_TIMEOUT:?}"),
            "check HUNTER_SCHEMA_REGISTRY_URL and that the registry runs",
        ),
    }
}
