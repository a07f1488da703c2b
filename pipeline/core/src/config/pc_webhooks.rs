//! `[pc_webhooks]`: Partner Center's push (`referral-created` / `referral-updated` events) into
//! `POST /api/v1/partner-center/webhooks` (docs/partner-center-webhooks.md).
//!
//! The receiver is off unless a secret is set: Partner Center calls it without Hunter's bearer
//! token, so the shared secret in the registered callback URL (`?token=…`) is what lets it in.
//! The secret travels in a URL, so it is limited to URL-safe characters (nothing to escape, no
//! way to spell it twice) and must pass the API token strength rule.

use super::*;

#[derive(Debug, Clone)]
pub struct PcWebhookSettings {
    /// The shared secret of the callback URL; `None`: the receiver answers 404 (off).
    pub secret: Option<Secret>,
    /// The public URL Partner Center calls (`https://hunter.example.com/api/v1/partner-center/
    /// webhooks`), without the secret; `hunter webhooks register` adds `token` (and `tenant`).
    pub callback_url: Option<Url>,
    /// Referral fetches one sender (client address) may trigger per minute; past it, 429.
    pub fetches_per_minute: u32,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FilePcWebhooks {
    pub(super) secret: Option<Secret>,
    pub(super) callback_url: Option<String>,
    pub(super) fetches_per_minute: Option<u32>,
}

/// The default of `HUNTER_PARTNER_CENTER_WEBHOOK_FETCHES_PER_MINUTE`: well above what one
/// partner's referral changes produce, well below what would make the source's get-by-id
/// calls crowd out its polls.
pub const DEFAULT_WEBHOOK_FETCHES_PER_MINUTE: u32 = 120;

/// Reads `[pc_webhooks]` and its variables.
pub(super) fn pc_webhook_settings(
    src: &Source<'_>,
    file: FilePcWebhooks,
) -> Result<PcWebhookSettings, ConfigError> {
    let secret = match src
        .env
        .get("HUNTER_PARTNER_CENTER_WEBHOOK_SECRET")
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
    {
        Some(value) => Some((value, "HUNTER_PARTNER_CENTER_WEBHOOK_SECRET")),
        None => file
            .secret
            .map(|s| s.expose().trim().to_owned())
            .filter(|v| !v.is_empty())
            .map(|v| (v, "pc_webhooks.secret")),
    };
    let secret = match secret {
        None => None,
        Some((value, setting)) => {
            check_webhook_secret(&value).map_err(|message| ConfigError::Invalid {
                setting: setting.to_owned(),
                message,
            })?;
            Some(Secret::new(value))
        }
    };
    let callback_url = match src.text(
        "HUNTER_PARTNER_CENTER_WEBHOOK_URL",
        file.callback_url,
        "pc_webhooks.callback_url",
    ) {
        None => None,
        Some((value, setting)) => {
            let url = parse_url(&setting, &value)?;
            if url.query_pairs().any(|(key, _)| key == "token") {
                return Err(ConfigError::Invalid {
                    setting,
                    message: "must not carry a token: give the URL without it, \
                              `hunter webhooks register` adds HUNTER_PARTNER_CENTER_WEBHOOK_SECRET"
                        .into(),
                });
            }
            Some(url)
        }
    };
    let fetches_per_minute = src
        .parse(
            "HUNTER_PARTNER_CENTER_WEBHOOK_FETCHES_PER_MINUTE",
            file.fetches_per_minute,
            "a whole number",
        )?
        .unwrap_or(DEFAULT_WEBHOOK_FETCHES_PER_MINUTE);
    if fetches_per_minute == 0 {
        return Err(ConfigError::Invalid {
            setting: "HUNTER_PARTNER_CENTER_WEBHOOK_FETCHES_PER_MINUTE".into(),
            message: "must be at least 1 (unset the secret to turn the receiver off)".into(),
        });
    }
    Ok(PcWebhookSettings {
        secret,
        callback_url,
        fetches_per_minute,
    })
}

/// The API token rule, and URL-safe characters only (RFC 3986 unreserved: `A-Z a-z 0-9 - . _ ~`).
fn check_webhook_secret(value: &str) -> Result<(), String> {
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~')))
    {
        let what = if bad.is_ascii_graphic() {
            format!("`{bad}`")
        } else {
            "a space, control or non-ASCII character".to_owned()
        };
        return Err(format!(
            "contains {what}; the secret goes in the callback URL, so it may hold only letters, \
             digits and - . _ ~ (make one with `openssl rand -hex 32`)"
        ));
    }
    crate::security::check_token(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(env: &[(&str, &str)]) -> Result<PcWebhookSettings, ConfigError> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        pc_webhook_settings(&Source { env: &env }, FilePcWebhooks::default())
    }

    #[test]
    fn off_without_a_secret_and_on_with_a_strong_one() {
        let off = settings(&[]).unwrap();
        assert!(off.secret.is_none());
        assert_eq!(off.fetches_per_minute, DEFAULT_WEBHOOK_FETCHES_PER_MINUTE);
        let on = settings(&[(
            "HUNTER_PARTNER_CENTER_WEBHOOK_SECRET",
            "3f9c2a7e41b05d86c1e7a9f0b2d4c6e8",
        )])
        .unwrap();
        assert_eq!(
            on.secret.unwrap().expose(),
            "3f9c2a7e41b05d86c1e7a9f0b2d4c6e8"
        );
    }

    #[test]
    fn a_bad_secret_names_the_setting_without_quoting_it() {
        for bad in [
            "short",
            "3f9c2a7e41b05d86c1e7a9f0b2d4c6e8&x=1",
            "changeme-changeme",
        ] {
            let error = settings(&[("HUNTER_PARTNER_CENTER_WEBHOOK_SECRET", bad)])
                .unwrap_err()
                .to_string();
            assert!(
                error.contains("HUNTER_PARTNER_CENTER_WEBHOOK_SECRET"),
                "{error}"
            );
            assert!(!error.contains(bad), "{error}");
        }
    }

    #[test]
    fn the_callback_url_must_not_carry_the_token_and_the_rate_is_positive() {
        let error = settings(&[(
            "HUNTER_PARTNER_CENTER_WEBHOOK_URL",
            "https://hunter.example.com/api/v1/partner-center/webhooks?token=x",
        )])
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("HUNTER_PARTNER_CENTER_WEBHOOK_URL"),
            "{error}"
        );
        let error = settings(&[("HUNTER_PARTNER_CENTER_WEBHOOK_FETCHES_PER_MINUTE", "0")])
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("HUNTER_PARTNER_CENTER_WEBHOOK_FETCHES_PER_MINUTE"),
            "{error}"
        );
        let error = settings(&[("HUNTER_PARTNER_CENTER_WEBHOOK_URL", "ftp://x")])
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("HUNTER_PARTNER_CENTER_WEBHOOK_URL"),
            "{error}"
        );
    }
}
