//! Settings: one TOML file plus `HUNTER_*` environment overrides, checked once at start.
//!
//! Precedence: environment over file over defaults. Every bad value fails at start with the
//! setting named the way the user wrote it (`HUNTER_SYNC_INTERVAL_SECS` or
//! `sync.interval_secs`), and no secret is ever part of an error or of `Debug` output.
//! Defaults live in [`Defaults`], nowhere else.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use url::Url;

mod api;
mod clickhouse;
mod enrich;
mod kafka;
// Outgoing webhooks (docs/notifications.md).
mod notify;
mod partner_center;
// Partner Center webhooks into the API (docs/partner-center-webhooks.md).
mod pc_webhooks;
mod registry;
mod security;
mod sink;
mod sync;
mod vars;

pub use self::api::*;
pub use self::clickhouse::*;
pub use self::enrich::*;
pub use self::kafka::*;
pub use self::notify::*;
pub use self::partner_center::*;
pub use self::pc_webhooks::*;
pub use self::registry::*;
use self::security::*;
pub use self::sink::*;
pub use self::sync::*;
pub use self::vars::*;

/// A secret (client secret, token, refresh token, password). `Debug` and `Display` print
/// `[redacted]`; only [`Secret::expose`] gives the value, for the wire or the token cache.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("invalid {setting}: {message}")]
    Invalid { setting: String, message: String },
    #[error("missing {setting}: {message}")]
    Missing { setting: String, message: String },
}

/// The defaults, in one place.
pub struct Defaults;

impl Defaults {
    pub const API_URL: &'static str = "https://api.partner.microsoft.com/v1.0/engagements";
    pub const AUTHORITY_URL: &'static str = "https://login.microsoftonline.com";
    pub const SCOPE: &'static str = "https://api.partner.microsoft.com/.default offline_access";
    /// The token cache's file name in the per-user state directory
    /// ([`crate::security::state_dir`]) when `HUNTER_TOKEN_CACHE` is not set.
    pub const TOKEN_CACHE_FILE: &'static str = "token-cache.json";
    /// The default before the state directory: a file in the working directory, still used
    /// (with a warning) when it exists and the new default does not.
    pub const LEGACY_TOKEN_CACHE: &'static str = "hunter-token-cache.json";
    pub const KAFKA_BROKERS: &'static str = "127.0.0.1:19092";
    pub const CLICKHOUSE_URL: &'static str = "http://127.0.0.1:18123";
    pub const CLICKHOUSE_DATABASE: &'static str = "hunter";
    /// Far above what the API's questions read on a large deployment (a lead count reads every
    /// version of every lead: ~3 million rows at a million leads), far below a runaway scan.
    pub const CLICKHOUSE_READER_MAX_ROWS_TO_READ: u64 = 100_000_000;
    pub const API_LISTEN: &'static str = "127.0.0.1:8080";
    pub const API_REQUEST_TIMEOUT_SECS: u64 = 30;
    pub const API_CACHE_MS: u64 = 1000;
    pub const SYNC_INTERVAL_PRODUCTION_SECS: u64 = 600;
    pub const SYNC_INTERVAL_DEVELOPMENT_SECS: u64 = 30;
    pub const OVERLAP_SECS: u64 = 600;
    pub const POLL_BUDGET_SECS: u64 = 1_800;
    pub const FULL_SWEEP_SECS: u64 = 86_400;
    /// Pages a poll keeps awaiting the broker's acknowledgements (`HUNTER_SYNC_PAGES_IN_FLIGHT`):
    /// 4. On tansu that publishes 1.7 times as fast as one page at a time, for less CPU per
    /// referral (BENCHMARKS.md, "Source"). It was 1 until librdkafka's busy-poll was patched
    /// (vendor/rdkafka-sys/HUNTER-PATCH.md): reading ahead then cost four times the CPU.
    pub const PAGES_IN_FLIGHT: usize = 4;
    /// At most this many: 32 pages of 1000 referrals of ~6 kB is ~200 MB in flight.
    pub const MAX_PAGES_IN_FLIGHT: usize = 32;
    pub const DNS_TIMEOUT_MS: u64 = 500;
    pub const MX_CACHE_SECS: u64 = 3_600;
    pub const PAGE_SIZE: u32 = 100;
    pub const SINK_BATCH_ROWS: usize = 10_000;
    pub const SINK_BATCH_MILLIS: u64 = 1_000;
    pub const SINK_INSERT_TIMEOUT_MS: u64 = 60_000;
    // --- notify (docs/notifications.md) ---
    pub const NOTIFY_MAX_AGE_SECS: u64 = 86_400;
    pub const NOTIFY_TIMEOUT_MS: u64 = 10_000;
    pub const NOTIFY_MAX_ATTEMPTS: u32 = 8;
    pub const NOTIFY_RETRY_BASE_MS: u64 = 1_000;
    pub const NOTIFY_RETRY_CAP_MS: u64 = 300_000;
    pub const NOTIFY_RATE_PER_MINUTE: u32 = 30;
    pub const NOTIFY_DAILY_AT: &'static str = "08:00";
    pub const NOTIFY_EXPIRY_CHECK_SECS: u64 = 300;
}

/// Everything Hunter needs, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `production` or `development`: only changes defaults (the sync interval).
    pub environment: Environment,
    /// `HUNTER_ALLOW_INSECURE_HTTP`: plain `http://` Partner Center URLs to other machines are
    /// accepted (a development setup such as the compose demo); off, they fail at start.
    pub allow_insecure_http: bool,
    pub partner_center: PartnerCenterSettings,
    pub kafka: KafkaSettings,
    /// The Schema Registry's credentials and trust (its URL is `kafka.schema_registry_url`).
    pub schema_registry: SchemaRegistrySettings,
    pub clickhouse: ClickHouseSettings,
    pub api: ApiSettings,
    pub sync: SyncSettings,
    pub sink: SinkSettings,
    pub enrich: EnrichSettings,
    /// Outgoing webhooks (the `notify` role).
    pub notify: NotifySettings,
    /// Partner Center webhooks into the API (`[pc_webhooks]`).
    pub pc_webhooks: PcWebhookSettings,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    Production,
    Development,
}

/// The file's shape: every field optional, unknown keys refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    environment: Option<String>,
    allow_insecure_http: Option<bool>,
    #[serde(default)]
    partner_center: FilePartnerCenter,
    #[serde(default)]
    kafka: FileKafka,
    #[serde(default)]
    schema_registry: FileSchemaRegistry,
    #[serde(default)]
    clickhouse: FileClickHouse,
    #[serde(default)]
    api: FileApi,
    #[serde(default)]
    sync: FileSync,
    #[serde(default)]
    sink: FileSink,
    #[serde(default)]
    enrich: FileEnrich,
    #[serde(default)]
    notify: FileNotify,
    #[serde(default)]
    pc_webhooks: FilePcWebhooks,
}

/// One value with the name it was given by, for error messages.
struct Source<'a> {
    env: &'a HashMap<String, String>,
}

impl Source<'_> {
    /// The environment variable if set (and not empty), else the file's value.
    fn text(
        &self,
        env_name: &str,
        file_value: Option<String>,
        file_name: &str,
    ) -> Option<(String, String)> {
        match self.env.get(env_name).filter(|v| !v.is_empty()) {
            Some(value) => Some((value.clone(), env_name.to_owned())),
            None => file_value.map(|v| (v, file_name.to_owned())),
        }
    }

    /// The environment variable parsed if set, else the file's (already typed) value.
    fn parse<T: std::str::FromStr>(
        &self,
        env_name: &str,
        file_value: Option<T>,
        what: &str,
    ) -> Result<Option<T>, ConfigError> {
        match self.env.get(env_name).filter(|v| !v.is_empty()) {
            Some(value) => value
                .trim()
                .parse::<T>()
                .map(Some)
                .map_err(|_| ConfigError::Invalid {
                    setting: env_name.to_owned(),
                    message: format!("{value:?} is not {what}"),
                }),
            None => Ok(file_value),
        }
    }
}

fn parse_bool(setting: &str, value: &str) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(ConfigError::Invalid {
            setting: setting.to_owned(),
            message: format!("{value:?} is not true or false"),
        }),
    }
}

fn parse_url(setting: &str, value: &str) -> Result<Url, ConfigError> {
    // A URL may carry a password (`https://user:pass@host`): never quote it.
    let shown = crate::security::redact_url_passwords(value);
    let url = Url::parse(value.trim()).map_err(|e| ConfigError::Invalid {
        setting: setting.to_owned(),
        message: format!("{shown:?} is not a URL ({e})"),
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ConfigError::Invalid {
            setting: setting.to_owned(),
            message: format!("{shown:?} must be an http or https URL"),
        });
    }
    Ok(url)
}

impl Settings {
    /// Reads the file (when given) and the process environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        // HOME and XDG_STATE_HOME locate the default token cache (`security::state_dir`).
        let env: HashMap<String, String> = std::env::vars()
            .filter(|(k, _)| k.starts_with("HUNTER_") || k == "HOME" || k == "XDG_STATE_HOME")
            .collect();
        Self::from_sources(file, &env)
    }

    /// Reads the file (when given) and the given environment; the testable core of `load`.
    pub fn from_sources(
        file: Option<&Path>,
        env: &HashMap<String, String>,
    ) -> Result<Self, ConfigError> {
        let file_config = match file {
            None => FileConfig::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
                    path: path.to_owned(),
                    message: e.to_string(),
                })?;
                toml::from_str(&text).map_err(|e| ConfigError::File {
                    path: path.to_owned(),
                    message: e.to_string(),
                })?
            }
        };
        let src = Source { env };
        let FileConfig {
            enrich,
            environment,
            allow_insecure_http,
            partner_center: pc,
            kafka,
            schema_registry,
            clickhouse,
            api,
            sync,
            sink,
            notify,
            pc_webhooks,
        } = file_config;

        let environment = match src.text("HUNTER_ENVIRONMENT", environment, "environment") {
            None => Environment::Production,
            Some((value, setting)) => match value.trim().to_ascii_lowercase().as_str() {
                "production" | "prod" => Environment::Production,
                "development" | "dev" => Environment::Development,
                _ => {
                    return Err(ConfigError::Invalid {
                        setting,
                        message: format!("{value:?} is not production or development"),
                    });
                }
            },
        };

        let PartnerCenterSection {
            settings: partner_center,
            allow_insecure_http,
            client_secret,
        } = partner_center_settings(&src, pc, allow_insecure_http)?;
        let kafka = kafka_settings(&src, kafka)?;
        let schema_registry =
            schema_registry_settings(&src, schema_registry, kafka.schema_registry_url.as_ref())?;
        let clickhouse = clickhouse_settings(&src, clickhouse)?;
        check_placeholders(&clickhouse.password, &client_secret)?;
        let api = api_settings(&src, api)?;
        let sync = sync_settings(&src, sync, environment)?;
        let sink = sink_settings(&src, sink)?;
        let enrich = enrich_settings(&src, enrich)?;
        let notify = notify_settings(&src, notify)?;
        let pc_webhooks = pc_webhook_settings(&src, pc_webhooks)?;

        Ok(Settings {
            environment,
            allow_insecure_http,
            partner_center,
            kafka,
            schema_registry,
            clickhouse,
            api,
            sync,
            sink,
            enrich,
            notify,
            pc_webhooks,
        })
    }
}

#[cfg(test)]
mod tests;
