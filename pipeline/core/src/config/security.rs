//! Checks across sections (docs/security.md): no shipped example secret ever works.

use super::*;

/// Not ours to rate for strength, but a shipped example value must never work.
pub(super) fn check_placeholders(
    clickhouse_password: &Option<Secret>,
    client_secret: &Option<Secret>,
) -> Result<(), ConfigError> {
    for (setting, value) in [
        ("HUNTER_CLICKHOUSE_PASSWORD", clickhouse_password),
        ("HUNTER_PARTNER_CENTER_CLIENT_SECRET", client_secret),
    ] {
        if let Some(reason) = value
            .as_ref()
            .and_then(|v| crate::security::placeholder_reason(v.expose()))
        {
            return Err(ConfigError::Invalid {
                setting: setting.to_owned(),
                message: reason,
            });
        }
    }
    Ok(())
}
