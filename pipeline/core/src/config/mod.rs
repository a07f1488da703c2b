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

mod clickhouse;
mod kafka;
mod registry;
mod vars;

pub use self::clickhouse::*;
pub use self::kafka::*;
pub use self::registry::*;
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
    pub const DNS_TIMEOUT_MS: u64 = 500;
    pub const MX_CACHE_SECS: u64 = 3_600;
    pub const PAGE_SIZE: u32 = 100;
    pub const SINK_BATCH_ROWS: usize = 10_000;
    pub const SINK_BATCH_MILLIS: u64 = 1_000;
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
}

#[derive(Debug, Clone)]
pub struct EnrichSettings {
    /// DNS server for MX lookups; `None` uses the system's resolver configuration.
    pub dns_server: Option<SocketAddr>,
    /// Per-lookup timeout: past it the provider is `unknown` and the stream goes on.
    pub dns_timeout: Duration,
    /// How long an MX answer is cached per domain.
    pub mx_cache_ttl: Duration,
    /// Currency code to USD per unit; a currency without a rate gets no USD value.
    pub usd_rates: std::collections::BTreeMap<String, f64>,
}

impl Default for EnrichSettings {
    /// What an empty configuration gives: the system resolver, [`Defaults::DNS_TIMEOUT_MS`] per
    /// lookup, MX answers kept [`Defaults::MX_CACHE_SECS`], no exchange rates (USD is always 1).
    fn default() -> Self {
        Self {
            dns_server: None,
            dns_timeout: Duration::from_millis(Defaults::DNS_TIMEOUT_MS),
            mx_cache_ttl: Duration::from_secs(Defaults::MX_CACHE_SECS),
            usd_rates: std::collections::BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    Production,
    Development,
}

#[derive(Debug, Clone)]
pub struct PartnerCenterSettings {
    /// Feature flag: when false the source idles and says so, making no API calls.
    pub enabled: bool,
    /// The partner accounts to poll, each with its own sign-in, cursor and metrics label.
    pub tenants: Vec<TenantSettings>,
    /// Base of the Referrals API, up to `/v1.0/engagements`.
    pub api_url: Url,
    /// Login authority without the tenant.
    pub authority_url: Url,
    /// OAuth scope requested at sign-in and refresh.
    pub scope: String,
    /// `$top` per page.
    pub page_size: u32,
}

/// One partner account (tenant).
#[derive(Debug, Clone, PartialEq)]
pub struct TenantSettings {
    /// Hunter's name for the account: the metrics label, the state key, the `--tenant` value.
    pub name: String,
    /// The Entra tenant (GUID or verified domain).
    pub tenant_id: String,
    /// The app registration's client id (public client unless a secret is set).
    pub client_id: String,
    /// Only for confidential app registrations.
    pub client_secret: Option<Secret>,
    /// Where this account's token cache lives (mode 0600).
    pub token_cache: PathBuf,
}

impl PartnerCenterSettings {
    /// The tenant called `name`, or the only one when `name` is `None`.
    pub fn tenant(&self, name: Option<&str>) -> Result<&TenantSettings, ConfigError> {
        match name {
            Some(name) => {
                self.tenants
                    .iter()
                    .find(|t| t.name == name)
                    .ok_or_else(|| ConfigError::Invalid {
                        setting: "--tenant".into(),
                        message: format!(
                            "no tenant named {name:?}; configured: {}",
                            self.tenants
                                .iter()
                                .map(|t| t.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    })
            }
            None => match self.tenants.as_slice() {
                [only] => Ok(only),
                [] => Err(ConfigError::Missing {
                    setting: "HUNTER_PARTNER_CENTER_TENANT_ID".into(),
                    message: "no partner account is configured".into(),
                }),
                _ => Err(ConfigError::Missing {
                    setting: "--tenant".into(),
                    message: format!(
                        "several tenants are configured ({}): name one",
                        self.tenants
                            .iter()
                            .map(|t| t.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                }),
            },
        }
    }
}

#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// Where every role serves `/healthz` and `/metrics` (and the API, for `api`/`all`).
    pub listen: SocketAddr,
    /// Admin bearer token: every `/api/v1` route, including the sync trigger.
    pub token: Option<Secret>,
    /// Optional read-only bearer token: every `GET` route of `/api/v1`, not the sync trigger.
    pub read_token: Option<Secret>,
    /// Origins allowed to call the API from a browser (CORS); empty: no CORS headers at all.
    pub cors_origins: Vec<String>,
    /// Longest an API request may take before it is answered 503.
    pub request_timeout: Duration,
    /// How long a lead page may be served from the API's cache (zero: no cache).
    pub cache_ttl: Duration,
}

#[derive(Debug, Clone)]
pub struct SyncSettings {
    /// Time between scheduled polls.
    pub interval: Duration,
    /// How far behind the cursor each poll starts again, for late commits and clock skew.
    pub overlap: Duration,
    /// Longest one poll may take; past it the poll fails as `timeout` and the cursor stays.
    pub poll_budget: Duration,
    /// Time between full sweeps (polls without the updatedDateTime filter); `None`: never.
    pub full_sweep_interval: Option<Duration>,
}

#[derive(Debug, Clone)]
pub struct SinkSettings {
    /// Rows per ClickHouse insert at most.
    pub batch_rows: usize,
    /// Longest a row waits for its batch.
    pub batch_max_wait: Duration,
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
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEnrich {
    dns_server: Option<String>,
    dns_timeout_ms: Option<u64>,
    mx_cache_secs: Option<u64>,
    #[serde(default)]
    usd_rates: std::collections::BTreeMap<String, f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilePartnerCenter {
    enabled: Option<bool>,
    tenant_id: Option<String>,
    client_id: Option<String>,
    client_secret: Option<Secret>,
    api_url: Option<String>,
    authority_url: Option<String>,
    scope: Option<String>,
    token_cache: Option<PathBuf>,
    page_size: Option<u32>,
    #[serde(default)]
    tenants: Vec<FileTenant>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTenant {
    name: String,
    tenant_id: String,
    client_id: Option<String>,
    client_secret: Option<Secret>,
    token_cache: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileKafka {
    brokers: Option<String>,
    topic_prefix: Option<String>,
    schema_registry_url: Option<String>,
    // Kafka security (see `KafkaSecurity`).
    security_protocol: Option<String>,
    sasl_mechanism: Option<String>,
    sasl_username: Option<String>,
    sasl_password: Option<Secret>,
    sasl_oauthbearer_client_id: Option<String>,
    sasl_oauthbearer_client_secret: Option<Secret>,
    sasl_oauthbearer_token_endpoint_url: Option<String>,
    sasl_oauthbearer_scope: Option<String>,
    ssl_ca_location: Option<String>,
    ssl_certificate_location: Option<String>,
    ssl_key_location: Option<String>,
    ssl_key_password: Option<Secret>,
    #[serde(default)]
    properties: std::collections::BTreeMap<String, toml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileClickHouse {
    url: Option<String>,
    database: Option<String>,
    user: Option<String>,
    password: Option<Secret>,
    reader_user: Option<String>,
    reader_password: Option<Secret>,
    ca_location: Option<PathBuf>,
    reader_max_rows_to_read: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileApi {
    listen: Option<String>,
    token: Option<Secret>,
    read_token: Option<Secret>,
    cors_origins: Option<Vec<String>>,
    request_timeout_secs: Option<u64>,
    cache_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSync {
    interval_secs: Option<u64>,
    overlap_secs: Option<u64>,
    poll_budget_secs: Option<u64>,
    full_sweep_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSink {
    batch_rows: Option<usize>,
    batch_max_wait_ms: Option<u64>,
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

        let enabled = match src.text(
            "HUNTER_PARTNER_CENTER_ENABLED",
            pc.enabled.map(|b| b.to_string()),
            "partner_center.enabled",
        ) {
            None => true,
            Some((value, setting)) => parse_bool(&setting, &value)?,
        };
        let api_url = match src.text(
            "HUNTER_PARTNER_CENTER_API_URL",
            pc.api_url,
            "partner_center.api_url",
        ) {
            None => Url::parse(Defaults::API_URL).expect("default is a URL"),
            Some((value, setting)) => parse_url(&setting, &value)?,
        };
        let authority_url = match src.text(
            "HUNTER_PARTNER_CENTER_AUTHORITY_URL",
            pc.authority_url,
            "partner_center.authority_url",
        ) {
            None => Url::parse(Defaults::AUTHORITY_URL).expect("default is a URL"),
            Some((value, setting)) => parse_url(&setting, &value)?,
        };
        // --- plain http for sign-in (docs/security.md) ---
        // The authority receives the refresh token, the API every access token: plain http is
        // allowed only to this machine, or with the explicit development switch.
        let allow_insecure_http = match src.text(
            "HUNTER_ALLOW_INSECURE_HTTP",
            allow_insecure_http.map(|b| b.to_string()),
            "allow_insecure_http",
        ) {
            None => false,
            Some((value, setting)) => parse_bool(&setting, &value)?,
        };
        for (env_name, file_name, url) in [
            (
                "HUNTER_PARTNER_CENTER_API_URL",
                "partner_center.api_url",
                &api_url,
            ),
            (
                "HUNTER_PARTNER_CENTER_AUTHORITY_URL",
                "partner_center.authority_url",
                &authority_url,
            ),
        ] {
            crate::security::check_secure_url(url, allow_insecure_http).map_err(|message| {
                ConfigError::Invalid {
                    setting: if env.get(env_name).is_some_and(|v| !v.is_empty()) {
                        env_name.to_owned()
                    } else {
                        file_name.to_owned()
                    },
                    message,
                }
            })?;
        }
        // --- end plain http ---
        let tenant_id = src
            .text(
                "HUNTER_PARTNER_CENTER_TENANT_ID",
                pc.tenant_id,
                "partner_center.tenant_id",
            )
            .map(|(v, _)| v.trim().to_owned());
        let client_id = src
            .text(
                "HUNTER_PARTNER_CENTER_CLIENT_ID",
                pc.client_id,
                "partner_center.client_id",
            )
            .map(|(v, _)| v.trim().to_owned());
        let client_secret = match env
            .get("HUNTER_PARTNER_CENTER_CLIENT_SECRET")
            .filter(|v| !v.is_empty())
        {
            Some(value) => Some(Secret::new(value.clone())),
            None => pc.client_secret,
        };
        let page_size = src
            .parse(
                "HUNTER_PARTNER_CENTER_PAGE_SIZE",
                pc.page_size,
                "a whole number",
            )?
            .unwrap_or(Defaults::PAGE_SIZE);
        if !(1..=1000).contains(&page_size) {
            return Err(ConfigError::Invalid {
                setting: "HUNTER_PARTNER_CENTER_PAGE_SIZE".into(),
                message: format!("{page_size} is outside 1..=1000"),
            });
        }
        // --- token cache location (docs/security.md) ---
        let configured_cache = src
            .text(
                "HUNTER_TOKEN_CACHE",
                pc.token_cache.map(|p| p.display().to_string()),
                "partner_center.token_cache",
            )
            .map(|(v, _)| PathBuf::from(v.trim()));
        let state_dir = crate::security::state_dir(env);
        // Without HUNTER_TOKEN_CACHE: `token-cache{suffix}.json` in the per-user state directory,
        // unless only the old default (`hunter-token-cache{suffix}.json` in the working
        // directory) exists: an existing deployment keeps its sign-in and is told how to move.
        let default_cache = |suffix: &str| -> Result<PathBuf, ConfigError> {
            let stem = Defaults::LEGACY_TOKEN_CACHE.trim_end_matches(".json");
            let legacy = PathBuf::from(format!("{stem}{suffix}.json"));
            let Some(dir) = &state_dir else {
                if legacy.is_file() {
                    tracing::warn!(path = %legacy.display(), "using the token cache in the working directory (the old default); set HUNTER_TOKEN_CACHE to its path to keep it there");
                    return Ok(legacy);
                }
                return Err(ConfigError::Missing {
                    setting: "HUNTER_TOKEN_CACHE".into(),
                    message: "neither HOME nor XDG_STATE_HOME is set, so there is no per-user state directory for the token cache; set HUNTER_TOKEN_CACHE to a file path".into(),
                });
            };
            let stem = Defaults::TOKEN_CACHE_FILE.trim_end_matches(".json");
            let path = dir.join(format!("{stem}{suffix}.json"));
            if !path.exists() && legacy.is_file() {
                tracing::warn!(
                    path = %legacy.display(),
                    new_default = %path.display(),
                    "using the token cache in the working directory (the old default): move it to the new default (mkdir -m 700 -p {dir}; mv {legacy} {path}) or set HUNTER_TOKEN_CACHE to keep it where it is",
                    dir = dir.display(),
                    legacy = legacy.display(),
                    path = path.display(),
                );
                return Ok(legacy);
            }
            Ok(path)
        };
        // --- end token cache location ---
        let mut tenants = Vec::new();
        // The tenant of the flat settings (the environment's one tenant).
        if let Some(tenant_id) = tenant_id.filter(|t| !t.is_empty()) {
            let Some(client_id) = client_id.clone().filter(|c| !c.is_empty()) else {
                return Err(ConfigError::Missing {
                    setting: "HUNTER_PARTNER_CENTER_CLIENT_ID".into(),
                    message: "the app registration's client id is required with HUNTER_PARTNER_CENTER_TENANT_ID".into(),
                });
            };
            tenants.push(TenantSettings {
                name: tenant_id.clone(),
                tenant_id,
                client_id,
                client_secret: client_secret.clone(),
                token_cache: match &configured_cache {
                    Some(path) => path.clone(),
                    None => default_cache("")?,
                },
            });
        }
        // Further accounts from the file's [[partner_center.tenants]].
        for (index, tenant) in pc.tenants.into_iter().enumerate() {
            let setting = |field: &str| format!("partner_center.tenants[{index}].{field}");
            let name = tenant.name.trim().to_owned();
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            {
                return Err(ConfigError::Invalid {
                    setting: setting("name"),
                    message: format!("{name:?} must be letters, digits, '.', '_' or '-'"),
                });
            }
            if tenants.iter().any(|t: &TenantSettings| t.name == name) {
                return Err(ConfigError::Invalid {
                    setting: setting("name"),
                    message: format!("{name:?} is configured twice"),
                });
            }
            let Some(client_id) = tenant
                .client_id
                .or_else(|| client_id.clone())
                .filter(|c| !c.is_empty())
            else {
                return Err(ConfigError::Missing {
                    setting: setting("client_id"),
                    message: "no client id for this tenant and no partner_center.client_id".into(),
                });
            };
            let token_cache = match (tenant.token_cache, &configured_cache) {
                (Some(path), _) => path,
                (None, Some(configured)) => {
                    let stem = configured
                        .file_stem()
                        .and_then(|s| s.to_str())
                        .unwrap_or("token-cache");
                    configured.with_file_name(format!("{stem}-{name}.json"))
                }
                (None, None) => default_cache(&format!("-{name}"))?,
            };
            tenants.push(TenantSettings {
                name,
                tenant_id: tenant.tenant_id,
                client_id,
                client_secret: tenant.client_secret.or_else(|| client_secret.clone()),
                token_cache,
            });
        }
        if enabled && tenants.is_empty() {
            return Err(ConfigError::Missing {
                setting: "HUNTER_PARTNER_CENTER_TENANT_ID".into(),
                message: "the partner's Entra tenant (GUID or domain) is required while HUNTER_PARTNER_CENTER_ENABLED is true".into(),
            });
        }
        let partner_center = PartnerCenterSettings {
            enabled,
            tenants,
            api_url,
            authority_url,
            scope: src
                .text(
                    "HUNTER_PARTNER_CENTER_SCOPE",
                    pc.scope,
                    "partner_center.scope",
                )
                .map(|(v, _)| v)
                .unwrap_or_else(|| Defaults::SCOPE.to_owned()),
            page_size,
        };

        let (kafka_security, kafka_properties) = kafka_security(&src, &kafka)?;
        let brokers = src
            .text("HUNTER_KAFKA_BROKERS", kafka.brokers, "kafka.brokers")
            .map(|(v, s)| (v.trim().to_owned(), s));
        let brokers = match brokers {
            None => Defaults::KAFKA_BROKERS.to_owned(),
            Some((value, setting)) => {
                if value.is_empty() || value.split(',').any(|b| !b.trim().contains(':')) {
                    return Err(ConfigError::Invalid {
                        setting,
                        message: format!("{value:?} is not a host:port list"),
                    });
                }
                value
            }
        };
        let topic_prefix = src
            .text(
                "HUNTER_KAFKA_TOPIC_PREFIX",
                kafka.topic_prefix,
                "kafka.topic_prefix",
            )
            .map(|(v, _)| v)
            .unwrap_or_default();
        if let Some(bad) = topic_prefix
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(ConfigError::Invalid {
                setting: "HUNTER_KAFKA_TOPIC_PREFIX".into(),
                message: format!(
                    "{bad:?} is not allowed in a topic name (letters, digits, '.', '_', '-')"
                ),
            });
        }
        let schema_registry_url = match src.text(
            "HUNTER_SCHEMA_REGISTRY_URL",
            kafka.schema_registry_url,
            "kafka.schema_registry_url",
        ) {
            None => None,
            Some((value, setting)) => Some(parse_url(&setting, &value)?),
        };
        let schema_registry =
            schema_registry_settings(&src, schema_registry, schema_registry_url.as_ref())?;

        let clickhouse_url =
            match src.text("HUNTER_CLICKHOUSE_URL", clickhouse.url, "clickhouse.url") {
                None => Url::parse(Defaults::CLICKHOUSE_URL).expect("default is a URL"),
                Some((value, setting)) => parse_url(&setting, &value)?,
            };
        let database = src
            .text(
                "HUNTER_CLICKHOUSE_DATABASE",
                clickhouse.database,
                "clickhouse.database",
            )
            .map(|(v, s)| (v.trim().to_owned(), s))
            .unwrap_or_else(|| (Defaults::CLICKHOUSE_DATABASE.to_owned(), String::new()));
        if database.0.is_empty()
            || !database
                .0
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
            || database.0.starts_with(|c: char| c.is_ascii_digit())
        {
            return Err(ConfigError::Invalid {
                setting: if database.1.is_empty() {
                    "HUNTER_CLICKHOUSE_DATABASE".into()
                } else {
                    database.1
                },
                message: format!(
                    "{:?} is not a plain identifier (letters, digits, '_')",
                    database.0
                ),
            });
        }
        let clickhouse_extras = ClickHouseExtras {
            reader_user: clickhouse.reader_user,
            reader_password: clickhouse.reader_password,
            ca_location: clickhouse.ca_location,
            reader_max_rows_to_read: clickhouse.reader_max_rows_to_read,
        };
        let clickhouse = ClickHouseSettings {
            url: clickhouse_url,
            database: database.0,
            user: src
                .text("HUNTER_CLICKHOUSE_USER", clickhouse.user, "clickhouse.user")
                .map(|(v, _)| v),
            password: match env
                .get("HUNTER_CLICKHOUSE_PASSWORD")
                .filter(|v| !v.is_empty())
            {
                Some(value) => Some(Secret::new(value.clone())),
                None => clickhouse.password,
            },
            reader_user: None,
            reader_password: None,
            ca_location: None,
            reader_max_rows_to_read: Defaults::CLICKHOUSE_READER_MAX_ROWS_TO_READ,
        };
        let clickhouse = clickhouse_users_and_tls(&src, clickhouse, clickhouse_extras)?;

        // --- placeholder secrets (docs/security.md) ---
        // Not ours to rate for strength, but a shipped example value must never work.
        for (setting, value) in [
            ("HUNTER_CLICKHOUSE_PASSWORD", &clickhouse.password),
            ("HUNTER_PARTNER_CENTER_CLIENT_SECRET", &client_secret),
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
        // --- end placeholder secrets ---

        let listen = match src.text("HUNTER_API_LISTEN", api.listen, "api.listen") {
            None => Defaults::API_LISTEN.parse().expect("default is an address"),
            Some((value, setting)) => {
                value
                    .trim()
                    .parse::<SocketAddr>()
                    .map_err(|_| ConfigError::Invalid {
                        setting,
                        message: format!("{value:?} is not an address like 127.0.0.1:8080"),
                    })?
            }
        };
        // --- API tokens (docs/security.md: the token rule) ---
        // Trimmed as the presented token is, so a stray newline from a file cannot lock anyone
        // out; an empty value means none. Then the strength rule of `security::check_token`.
        let trimmed = |value: &str| Some(value.trim().to_owned()).filter(|v| !v.is_empty());
        let token = env
            .get("HUNTER_API_TOKEN")
            .and_then(|v| trimmed(v))
            .map(|v| (v, "HUNTER_API_TOKEN"))
            .or_else(|| {
                api.token
                    .and_then(|s| trimmed(s.expose()))
                    .map(|v| (v, "api.token"))
            });
        let read_token = env
            .get("HUNTER_API_READ_TOKEN")
            .and_then(|v| trimmed(v))
            .map(|v| (v, "HUNTER_API_READ_TOKEN"))
            .or_else(|| {
                api.read_token
                    .and_then(|s| trimmed(s.expose()))
                    .map(|v| (v, "api.read_token"))
            });
        for (value, setting) in token.iter().chain(read_token.iter()) {
            crate::security::check_token(value).map_err(|message| ConfigError::Invalid {
                setting: (*setting).to_owned(),
                message,
            })?;
        }
        let token = token.map(|(value, _)| Secret::new(value));
        let read_token = read_token.map(|(value, _)| Secret::new(value));
        // --- end API tokens ---
        if let (Some(admin), Some(read)) = (&token, &read_token)
            && admin.expose() == read.expose()
        {
            return Err(ConfigError::Invalid {
                setting: "HUNTER_API_READ_TOKEN".into(),
                message: "must differ from HUNTER_API_TOKEN (the admin token)".into(),
            });
        }
        let cors_origins = match src.text(
            "HUNTER_API_CORS_ORIGINS",
            api.cors_origins.map(|list| list.join(",")),
            "api.cors_origins",
        ) {
            None => Vec::new(),
            Some((value, setting)) => {
                let mut origins = Vec::new();
                for origin in value.split(',').map(str::trim).filter(|o| !o.is_empty()) {
                    let parsed = Url::parse(origin).ok().filter(|url| {
                        matches!(url.scheme(), "http" | "https")
                            && url.path() == "/"
                            && !origin.ends_with('/')
                    });
                    if parsed.is_none() {
                        return Err(ConfigError::Invalid {
                            setting,
                            message: format!(
                                "{origin:?} is not an origin like https://crm.example.com"
                            ),
                        });
                    }
                    origins.push(origin.to_owned());
                }
                origins
            }
        };
        let request_timeout_secs = src
            .parse(
                "HUNTER_API_REQUEST_TIMEOUT_SECS",
                api.request_timeout_secs,
                "a whole number of seconds",
            )?
            .unwrap_or(Defaults::API_REQUEST_TIMEOUT_SECS);
        let cache_ms = src
            .parse(
                "HUNTER_API_CACHE_MS",
                api.cache_ms,
                "a whole number of milliseconds",
            )?
            .unwrap_or(Defaults::API_CACHE_MS);
        if cache_ms > 60_000 {
            return Err(ConfigError::Invalid {
                setting: "HUNTER_API_CACHE_MS".into(),
                message: format!("{cache_ms} is over 60000 ms; lead pages would be too old"),
            });
        }
        if !(1..=300).contains(&request_timeout_secs) {
            return Err(ConfigError::Invalid {
                setting: "HUNTER_API_REQUEST_TIMEOUT_SECS".into(),
                message: format!("{request_timeout_secs} is not from 1 to 300 seconds"),
            });
        }

        let default_interval = match environment {
            Environment::Production => Defaults::SYNC_INTERVAL_PRODUCTION_SECS,
            Environment::Development => Defaults::SYNC_INTERVAL_DEVELOPMENT_SECS,
        };
        let interval_secs = src
            .parse(
                "HUNTER_SYNC_INTERVAL_SECS",
                sync.interval_secs,
                "a whole number of seconds",
            )?
            .unwrap_or(default_interval);
        if interval_secs == 0 {
            return Err(ConfigError::Invalid {
                setting: "HUNTER_SYNC_INTERVAL_SECS".into(),
                message: "must be at least 1 second".into(),
            });
        }
        let overlap_secs = src
            .parse(
                "HUNTER_SYNC_OVERLAP_SECS",
                sync.overlap_secs,
                "a whole number of seconds",
            )?
            .unwrap_or(Defaults::OVERLAP_SECS);
        let poll_budget_secs = src
            .parse(
                "HUNTER_SYNC_POLL_BUDGET_SECS",
                sync.poll_budget_secs,
                "a whole number of seconds",
            )?
            .unwrap_or(Defaults::POLL_BUDGET_SECS);
        if poll_budget_secs == 0 {
            return Err(ConfigError::Invalid {
                setting: "HUNTER_SYNC_POLL_BUDGET_SECS".into(),
                message: "must be at least 1 second".into(),
            });
        }
        let full_sweep_secs = src
            .parse(
                "HUNTER_SYNC_FULL_SWEEP_SECS",
                sync.full_sweep_secs,
                "a whole number of seconds (0 turns sweeps off)",
            )?
            .unwrap_or(Defaults::FULL_SWEEP_SECS);

        let batch_rows = src
            .parse("HUNTER_SINK_BATCH_ROWS", sink.batch_rows, "a whole number")?
            .unwrap_or(Defaults::SINK_BATCH_ROWS);
        if batch_rows == 0 {
            return Err(ConfigError::Invalid {
                setting: "HUNTER_SINK_BATCH_ROWS".into(),
                message: "must be at least 1".into(),
            });
        }
        let batch_max_wait_ms = src
            .parse(
                "HUNTER_SINK_BATCH_MAX_WAIT_MS",
                sink.batch_max_wait_ms,
                "a whole number of milliseconds",
            )?
            .unwrap_or(Defaults::SINK_BATCH_MILLIS);

        let dns_server =
            match src.text(
                "HUNTER_ENRICH_DNS_SERVER",
                enrich.dns_server,
                "enrich.dns_server",
            ) {
                None => None,
                Some((value, setting)) => Some(value.trim().parse::<SocketAddr>().map_err(
                    |_| ConfigError::Invalid {
                        setting,
                        message: format!("{value:?} is not an address like 127.0.0.1:53"),
                    },
                )?),
            };
        let dns_timeout_ms = src
            .parse(
                "HUNTER_ENRICH_DNS_TIMEOUT_MS",
                enrich.dns_timeout_ms,
                "a whole number of milliseconds",
            )?
            .unwrap_or(Defaults::DNS_TIMEOUT_MS);
        let mx_cache_secs = src
            .parse(
                "HUNTER_ENRICH_MX_CACHE_SECS",
                enrich.mx_cache_secs,
                "a whole number of seconds",
            )?
            .unwrap_or(Defaults::MX_CACHE_SECS);
        let mut usd_rates = std::collections::BTreeMap::new();
        for (code, rate) in enrich.usd_rates {
            usd_rates.insert(code.trim().to_ascii_uppercase(), rate);
        }
        if let Some(text) = env.get("HUNTER_ENRICH_USD_RATES").filter(|v| !v.is_empty()) {
            for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
                let parsed = item.split_once('=').and_then(|(code, rate)| {
                    Some((
                        code.trim().to_ascii_uppercase(),
                        rate.trim().parse::<f64>().ok()?,
                    ))
                });
                match parsed {
                    Some((code, rate)) => {
                        usd_rates.insert(code, rate);
                    }
                    None => {
                        return Err(ConfigError::Invalid {
                            setting: "HUNTER_ENRICH_USD_RATES".into(),
                            message: format!("{item:?} is not CODE=RATE (e.g. EUR=1.08)"),
                        });
                    }
                }
            }
        }
        if let Some((code, rate)) = usd_rates.iter().find(|(code, rate)| {
            code.len() != 3
                || !code.chars().all(|c| c.is_ascii_uppercase())
                || !rate.is_finite()
                || **rate <= 0.0
        }) {
            return Err(ConfigError::Invalid {
                setting: "enrich.usd_rates / HUNTER_ENRICH_USD_RATES".into(),
                message: format!("{code}={rate}: codes are 3 letters, rates positive numbers"),
            });
        }

        Ok(Settings {
            environment,
            allow_insecure_http,
            partner_center,
            kafka: KafkaSettings {
                brokers,
                topic_prefix,
                schema_registry_url,
                security: kafka_security,
                properties: kafka_properties,
            },
            schema_registry,
            clickhouse,
            api: ApiSettings {
                listen,
                token,
                read_token,
                cors_origins,
                request_timeout: Duration::from_secs(request_timeout_secs),
                cache_ttl: Duration::from_millis(cache_ms),
            },
            sync: SyncSettings {
                interval: Duration::from_secs(interval_secs),
                overlap: Duration::from_secs(overlap_secs),
                poll_budget: Duration::from_secs(poll_budget_secs),
                full_sweep_interval: (full_sweep_secs > 0)
                    .then(|| Duration::from_secs(full_sweep_secs)),
            },
            sink: SinkSettings {
                batch_rows,
                batch_max_wait: Duration::from_millis(batch_max_wait_ms.max(1)),
            },
            enrich: EnrichSettings {
                dns_server,
                dns_timeout: Duration::from_millis(dns_timeout_ms.max(1)),
                mx_cache_ttl: Duration::from_secs(mx_cache_secs),
                usd_rates,
            },
        })
    }
}

#[cfg(test)]
mod tests;
