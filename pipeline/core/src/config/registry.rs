//! `[schema_registry]`: the registry's credentials and trust (its URL is `kafka.schema_registry_url`).

use super::*;

/// How Hunter authenticates to the Schema Registry and which CAs it trusts for its HTTPS.
/// Used only when `HUNTER_SCHEMA_REGISTRY_URL` is set.
#[derive(Debug, Clone, Default)]
pub struct SchemaRegistrySettings {
    /// Basic auth user (`HUNTER_SCHEMA_REGISTRY_USERNAME`; Confluent Cloud: the API key).
    pub username: Option<String>,
    /// Basic auth password (`HUNTER_SCHEMA_REGISTRY_PASSWORD`; Confluent Cloud: the API secret).
    pub password: Option<Secret>,
    /// A PEM file of CA certificates trusted for the registry's HTTPS besides the system's
    /// (`HUNTER_SCHEMA_REGISTRY_CA_LOCATION`).
    pub ca_location: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileSchemaRegistry {
    pub(super) username: Option<String>,
    pub(super) password: Option<Secret>,
    pub(super) ca_location: Option<PathBuf>,
}

/// Reads `[schema_registry]` and its variables; a half-set credential pair, credentials
/// without a registry URL or a CA file that cannot be read fail here, naming the setting.
pub(super) fn schema_registry_settings(
    src: &Source<'_>,
    file: FileSchemaRegistry,
    registry_url: Option<&Url>,
) -> Result<SchemaRegistrySettings, ConfigError> {
    let username = src
        .text(
            "HUNTER_SCHEMA_REGISTRY_USERNAME",
            file.username,
            "schema_registry.username",
        )
        .map(|(v, _)| v.trim().to_owned())
        .filter(|v| !v.is_empty());
    let password = match src
        .env
        .get("HUNTER_SCHEMA_REGISTRY_PASSWORD")
        .filter(|v| !v.is_empty())
    {
        Some(value) => Some(Secret::new(value.clone())),
        None => file.password.filter(|p| !p.expose().is_empty()),
    };
    let ca_location = match src
        .env
        .get("HUNTER_SCHEMA_REGISTRY_CA_LOCATION")
        .filter(|v| !v.is_empty())
    {
        Some(value) => Some((
            PathBuf::from(value.trim()),
            "HUNTER_SCHEMA_REGISTRY_CA_LOCATION",
        )),
        None => file.ca_location.map(|p| (p, "schema_registry.ca_location")),
    };
    match (&username, &password) {
        (Some(_), None) => {
            return Err(ConfigError::Missing {
                setting: "HUNTER_SCHEMA_REGISTRY_PASSWORD".into(),
                message: "the username is set; basic auth needs both".into(),
            });
        }
        (None, Some(_)) => {
            return Err(ConfigError::Missing {
                setting: "HUNTER_SCHEMA_REGISTRY_USERNAME".into(),
                message: "the password is set; basic auth needs both".into(),
            });
        }
        _ => {}
    }
    if registry_url.is_none() && (username.is_some() || ca_location.is_some()) {
        return Err(ConfigError::Missing {
            setting: "HUNTER_SCHEMA_REGISTRY_URL".into(),
            message: "schema registry credentials or a CA are set but no registry URL".into(),
        });
    }
    if let Some((path, setting)) = &ca_location {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Invalid {
            setting: (*setting).to_owned(),
            message: format!("cannot read {}: {e}", path.display()),
        })?;
        if !text.contains("-----BEGIN CERTIFICATE-----") {
            return Err(ConfigError::Invalid {
                setting: (*setting).to_owned(),
                message: format!("{} holds no PEM certificate", path.display()),
            });
        }
    }
    Ok(SchemaRegistrySettings {
        username,
        password,
        ca_location: ca_location.map(|(p, _)| p),
    })
}
