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
pub struct KafkaSettings {
    /// Bootstrap servers, `host:port[,host:port]`.
    pub brokers: String,
    /// Prepended to every topic name (tests use it to isolate runs).
    pub topic_prefix: String,
    /// Confluent-compatible registry; `None` means single-object encoding.
    pub schema_registry_url: Option<Url>,
    /// TLS and SASL for every Kafka client (`HUNTER_KAFKA_SECURITY_PROTOCOL` and friends).
    pub security: KafkaSecurity,
    /// Further librdkafka properties from `[kafka.properties]`, checked at start.
    pub properties: KafkaProperties,
}

// --- Schema Registry credentials and TLS ------------------------------------------------------

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
struct FileSchemaRegistry {
    username: Option<String>,
    password: Option<Secret>,
    ca_location: Option<PathBuf>,
}

/// Reads `[schema_registry]` and its variables; a half-set credential pair, credentials
/// without a registry URL or a CA file that cannot be read fail here, naming the setting.
fn schema_registry_settings(
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

// --- end of the Schema Registry block ----------------------------------------------------------

#[derive(Debug, Clone)]
pub struct ClickHouseSettings {
    /// The HTTP interface (`http://` or `https://`).
    pub url: Url,
    /// Created by `hunter migrate`.
    pub database: String,
    /// The writer (`hunter migrate`, the sink): `HUNTER_CLICKHOUSE_USER`; `None` is ClickHouse's
    /// `default` user.
    pub user: Option<String>,
    /// The writer's password (`HUNTER_CLICKHOUSE_PASSWORD`).
    pub password: Option<Secret>,
    // --- ClickHouse users and TLS (docs/clickhouse.md) ---
    /// The API's read-only user (`HUNTER_CLICKHOUSE_READER_USER`); `None`: the API reads as the
    /// writer, with a warning at start (deployments from before the split keep working).
    pub reader_user: Option<String>,
    /// The reader's password (`HUNTER_CLICKHOUSE_READER_PASSWORD`).
    pub reader_password: Option<Secret>,
    /// A PEM file of CA certificates trusted for an `https://` URL besides the system's
    /// (`HUNTER_CLICKHOUSE_CA_LOCATION`), for a server whose certificate a private CA signed.
    pub ca_location: Option<PathBuf>,
    /// `max_rows_to_read` of every API query (`HUNTER_CLICKHOUSE_READER_MAX_ROWS_TO_READ`);
    /// 0 leaves the reader's profile value.
    pub reader_max_rows_to_read: u64,
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

impl KafkaSettings {
    /// The topic names with the configured prefix.
    pub fn topics(&self) -> crate::kafka::Topics {
        crate::kafka::Topics::with_prefix(&self.topic_prefix)
    }
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

/// The ClickHouse settings of the file that `clickhouse_users_and_tls` reads.
struct ClickHouseExtras {
    reader_user: Option<String>,
    reader_password: Option<Secret>,
    ca_location: Option<PathBuf>,
    reader_max_rows_to_read: Option<u64>,
}

/// The API's reader, the CA file and the reader's limits (docs/clickhouse.md). A reader password
/// without a reader user is refused (it would silently be the writer's); the CA file must hold
/// at least one PEM certificate, checked here so a typo fails at start with the setting named.
fn clickhouse_users_and_tls(
    src: &Source<'_>,
    mut clickhouse: ClickHouseSettings,
    file: ClickHouseExtras,
) -> Result<ClickHouseSettings, ConfigError> {
    clickhouse.reader_user = src
        .text(
            "HUNTER_CLICKHOUSE_READER_USER",
            file.reader_user,
            "clickhouse.reader_user",
        )
        .map(|(value, _)| value.trim().to_owned())
        .filter(|value| !value.is_empty());
    clickhouse.reader_password = match src
        .env
        .get("HUNTER_CLICKHOUSE_READER_PASSWORD")
        .filter(|v| !v.is_empty())
    {
        Some(value) => Some(Secret::new(value.clone())),
        None => file.reader_password,
    };
    if clickhouse.reader_password.is_some() && clickhouse.reader_user.is_none() {
        return Err(ConfigError::Missing {
            setting: "HUNTER_CLICKHOUSE_READER_USER".into(),
            message: "the reader's password (HUNTER_CLICKHOUSE_READER_PASSWORD) is set, \
                      not the user it belongs to"
                .into(),
        });
    }
    if let Some((value, setting)) = src.text(
        "HUNTER_CLICKHOUSE_CA_LOCATION",
        file.ca_location.map(|p| p.display().to_string()),
        "clickhouse.ca_location",
    ) {
        let path = PathBuf::from(value.trim());
        let text = std::fs::read(&path).map_err(|error| ConfigError::Invalid {
            setting: setting.clone(),
            message: format!("cannot read {}: {error}", path.display()),
        })?;
        if !String::from_utf8_lossy(&text).contains("-----BEGIN CERTIFICATE-----") {
            return Err(ConfigError::Invalid {
                setting,
                message: format!(
                    "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                    path.display()
                ),
            });
        }
        clickhouse.ca_location = Some(path);
    }
    clickhouse.reader_max_rows_to_read = src
        .parse(
            "HUNTER_CLICKHOUSE_READER_MAX_ROWS_TO_READ",
            file.reader_max_rows_to_read,
            "a whole number of rows (0: the reader's profile decides)",
        )?
        .unwrap_or(Defaults::CLICKHOUSE_READER_MAX_ROWS_TO_READ);
    Ok(clickhouse)
}

// ---- Kafka security: TLS, SASL and further librdkafka properties ----------------------------

/// `security.protocol`: how every Kafka client reaches the brokers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KafkaSecurityProtocol {
    /// No TLS, no authentication (the local stack).
    #[default]
    Plaintext,
    /// TLS, no SASL (optionally a client certificate).
    Ssl,
    /// SASL without TLS: the credentials cross the network unencrypted with PLAIN.
    SaslPlaintext,
    /// SASL over TLS: what hosted Kafka services require.
    SaslSsl,
}

impl KafkaSecurityProtocol {
    /// librdkafka's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            KafkaSecurityProtocol::Plaintext => "plaintext",
            KafkaSecurityProtocol::Ssl => "ssl",
            KafkaSecurityProtocol::SaslPlaintext => "sasl_plaintext",
            KafkaSecurityProtocol::SaslSsl => "sasl_ssl",
        }
    }
    pub fn uses_tls(self) -> bool {
        matches!(
            self,
            KafkaSecurityProtocol::Ssl | KafkaSecurityProtocol::SaslSsl
        )
    }
    pub fn uses_sasl(self) -> bool {
        matches!(
            self,
            KafkaSecurityProtocol::SaslPlaintext | KafkaSecurityProtocol::SaslSsl
        )
    }
}

/// `sasl.mechanism`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    /// User name and password as they are (Azure Event Hubs: `$ConnectionString`).
    Plain,
    ScramSha256,
    /// Amazon MSK's SCRAM.
    ScramSha512,
    /// OAuth 2 client credentials, fetched and refreshed by librdkafka (`method=oidc`).
    OAuthBearer,
}

impl SaslMechanism {
    /// librdkafka's (and Kafka's) name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
            SaslMechanism::OAuthBearer => "OAUTHBEARER",
        }
    }
}

/// The credentials SASL presents.
#[derive(Debug, Clone)]
pub enum KafkaSasl {
    /// PLAIN or SCRAM: `HUNTER_KAFKA_SASL_USERNAME` and `HUNTER_KAFKA_SASL_PASSWORD`.
    Password {
        mechanism: SaslMechanism,
        username: String,
        password: Secret,
    },
    /// OAUTHBEARER with librdkafka's OIDC client-credentials flow.
    OAuthBearer {
        client_id: String,
        client_secret: Secret,
        token_endpoint_url: Url,
        /// Space-separated scopes; `None` asks for the token endpoint's default.
        scope: Option<String>,
    },
}

impl KafkaSasl {
    pub fn mechanism(&self) -> SaslMechanism {
        match self {
            KafkaSasl::Password { mechanism, .. } => *mechanism,
            KafkaSasl::OAuthBearer { .. } => SaslMechanism::OAuthBearer,
        }
    }
}

/// TLS files; all optional (the system trust store verifies the broker without a CA file).
#[derive(Debug, Clone, Default)]
pub struct KafkaTls {
    /// PEM file (or directory) of the CA(s) that sign the brokers' certificates.
    pub ca_location: Option<PathBuf>,
    /// Client certificate (PEM) for brokers that authenticate clients by certificate.
    pub certificate_location: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    pub key_location: Option<PathBuf>,
    /// Passphrase of an encrypted private key.
    pub key_password: Option<Secret>,
}

/// How every Kafka client (producers, consumers, admin, lag and metadata readers) connects.
/// Validated as a whole at start: a setting that the protocol would ignore is an error, not a
/// surprise.
#[derive(Debug, Clone, Default)]
pub struct KafkaSecurity {
    pub protocol: KafkaSecurityProtocol,
    /// `Some` exactly when the protocol uses SASL.
    pub sasl: Option<KafkaSasl>,
    /// Empty unless the protocol uses TLS.
    pub tls: KafkaTls,
}

/// Further librdkafka properties from the file's `[kafka.properties]` (the escape hatch Kafka
/// Connect users expect), already checked: librdkafka knows each one, and none overrides a
/// setting Hunter owns ([`crate::kafka::PROTECTED_PROPERTIES`]). Values are kept as secrets:
/// `Debug` and [`KafkaProperties::describe`] show only those whose name says nothing secret.
#[derive(Clone, Default)]
pub struct KafkaProperties(Vec<(String, Secret)>);

impl KafkaProperties {
    /// Name and value of each property, for the client configuration.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0
            .iter()
            .map(|(name, value)| (name.as_str(), value.expose()))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `name=value, …` for the start-up log, secret values as `[redacted]`.
    pub fn describe(&self) -> String {
        self.0
            .iter()
            .map(|(name, value)| {
                if crate::kafka::is_secret_property(name) {
                    format!("{name}=[redacted]")
                } else {
                    format!("{name}={}", value.expose())
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl fmt::Debug for KafkaProperties {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KafkaProperties({})", self.describe())
    }
}

/// A secret setting: the environment variable if set (and not empty), else the file's value.
fn secret_setting(
    env: &HashMap<String, String>,
    env_name: &str,
    file_value: Option<Secret>,
) -> Option<Secret> {
    env.get(env_name)
        .filter(|v| !v.is_empty())
        .map(|v| Secret::new(v.clone()))
        .or(file_value)
        .filter(|s| !s.expose().is_empty())
}

/// A TLS file setting: the file (or, for the CA, a directory or librdkafka's `probe`) must exist
/// and hold what its name says, so a typo fails here rather than as a handshake error later.
fn tls_file(
    src: &Source<'_>,
    env_name: &str,
    file_value: Option<String>,
    file_name: &str,
    expect: &str,
) -> Result<Option<(PathBuf, String)>, ConfigError> {
    let Some((value, setting)) = src
        .text(env_name, file_value, file_name)
        .map(|(v, s)| (v.trim().to_owned(), s))
        .filter(|(v, _)| !v.is_empty())
    else {
        return Ok(None);
    };
    if env_name == "HUNTER_KAFKA_SSL_CA_LOCATION" && value == "probe" {
        return Ok(Some((PathBuf::from(value), setting)));
    }
    let path = PathBuf::from(&value);
    let metadata = std::fs::metadata(&path).map_err(|e| ConfigError::Invalid {
        setting: setting.clone(),
        message: format!("{value}: {e}"),
    })?;
    if metadata.is_dir() {
        if env_name == "HUNTER_KAFKA_SSL_CA_LOCATION" {
            return Ok(Some((path, setting)));
        }
        return Err(ConfigError::Invalid {
            setting,
            message: format!("{value} is a directory, not a PEM file"),
        });
    }
    let text = std::fs::read(&path).map_err(|e| ConfigError::Invalid {
        setting: setting.clone(),
        message: format!("{value} is not readable: {e}"),
    })?;
    if !String::from_utf8_lossy(&text).contains(expect) {
        return Err(ConfigError::Invalid {
            setting,
            message: format!("{value} holds no PEM \"{expect}\" block"),
        });
    }
    Ok(Some((path, setting)))
}

/// `HUNTER_KAFKA_SECURITY_PROTOCOL` and the settings that go with it, and `[kafka.properties]`.
fn kafka_security(
    src: &Source<'_>,
    file: &FileKafka,
) -> Result<(KafkaSecurity, KafkaProperties), ConfigError> {
    let env = src.env;
    let protocol = match src.text(
        "HUNTER_KAFKA_SECURITY_PROTOCOL",
        file.security_protocol.clone(),
        "kafka.security_protocol",
    ) {
        None => KafkaSecurityProtocol::Plaintext,
        Some((value, setting)) => {
            match value.trim().to_ascii_lowercase().replace('-', "_").as_str() {
                "plaintext" => KafkaSecurityProtocol::Plaintext,
                "ssl" => KafkaSecurityProtocol::Ssl,
                "sasl_plaintext" => KafkaSecurityProtocol::SaslPlaintext,
                "sasl_ssl" => KafkaSecurityProtocol::SaslSsl,
                _ => {
                    return Err(ConfigError::Invalid {
                        setting,
                        message: format!(
                            "{value:?} is not plaintext, ssl, sasl_plaintext or sasl_ssl"
                        ),
                    });
                }
            }
        }
    };
    let mechanism = match src.text(
        "HUNTER_KAFKA_SASL_MECHANISM",
        file.sasl_mechanism.clone(),
        "kafka.sasl_mechanism",
    ) {
        None => None,
        Some((value, setting)) => {
            let mechanism = match value.trim().to_ascii_uppercase().replace('_', "-").as_str() {
                "PLAIN" => SaslMechanism::Plain,
                "SCRAM-SHA-256" => SaslMechanism::ScramSha256,
                "SCRAM-SHA-512" => SaslMechanism::ScramSha512,
                "OAUTHBEARER" => SaslMechanism::OAuthBearer,
                _ => {
                    return Err(ConfigError::Invalid {
                        setting,
                        message: format!(
                            "{value:?} is not PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER"
                        ),
                    });
                }
            };
            Some((mechanism, setting))
        }
    };
    let text = |env_name: &str, value: &Option<String>, file_name: &str| {
        src.text(env_name, value.clone(), file_name)
            .map(|(v, s)| (v.trim().to_owned(), s))
            .filter(|(v, _)| !v.is_empty())
    };
    let username = text(
        "HUNTER_KAFKA_SASL_USERNAME",
        &file.sasl_username,
        "kafka.sasl_username",
    );
    let password = secret_setting(
        env,
        "HUNTER_KAFKA_SASL_PASSWORD",
        file.sasl_password.clone(),
    );
    let client_id = text(
        "HUNTER_KAFKA_SASL_OAUTHBEARER_CLIENT_ID",
        &file.sasl_oauthbearer_client_id,
        "kafka.sasl_oauthbearer_client_id",
    );
    let client_secret = secret_setting(
        env,
        "HUNTER_KAFKA_SASL_OAUTHBEARER_CLIENT_SECRET",
        file.sasl_oauthbearer_client_secret.clone(),
    );
    let token_endpoint_url = text(
        "HUNTER_KAFKA_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL",
        &file.sasl_oauthbearer_token_endpoint_url,
        "kafka.sasl_oauthbearer_token_endpoint_url",
    );
    let scope = text(
        "HUNTER_KAFKA_SASL_OAUTHBEARER_SCOPE",
        &file.sasl_oauthbearer_scope,
        "kafka.sasl_oauthbearer_scope",
    );

    // Settings the chosen protocol or mechanism would silently ignore are mistakes.
    let given = |present: bool, name: &str| present.then(|| name.to_owned());
    let password_settings = [
        given(username.is_some(), "HUNTER_KAFKA_SASL_USERNAME"),
        given(password.is_some(), "HUNTER_KAFKA_SASL_PASSWORD"),
    ];
    let oauth_settings = [
        given(
            client_id.is_some(),
            "HUNTER_KAFKA_SASL_OAUTHBEARER_CLIENT_ID",
        ),
        given(
            client_secret.is_some(),
            "HUNTER_KAFKA_SASL_OAUTHBEARER_CLIENT_SECRET",
        ),
        given(
            token_endpoint_url.is_some(),
            "HUNTER_KAFKA_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL",
        ),
        given(scope.is_some(), "HUNTER_KAFKA_SASL_OAUTHBEARER_SCOPE"),
    ];
    let sasl = if !protocol.uses_sasl() {
        let stray = mechanism
            .as_ref()
            .map(|(_, setting)| setting.clone())
            .into_iter()
            .chain(password_settings.iter().flatten().cloned())
            .chain(oauth_settings.iter().flatten().cloned())
            .next();
        if let Some(setting) = stray {
            return Err(ConfigError::Invalid {
                setting,
                message: format!(
                    "is set but HUNTER_KAFKA_SECURITY_PROTOCOL is {}, which does not authenticate: use sasl_ssl (or sasl_plaintext)",
                    protocol.as_str()
                ),
            });
        }
        None
    } else {
        let Some((mechanism, _)) = mechanism else {
            return Err(ConfigError::Missing {
                setting: "HUNTER_KAFKA_SASL_MECHANISM".into(),
                message: format!(
                    "security protocol {} authenticates with SASL: set PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER",
                    protocol.as_str()
                ),
            });
        };
        if mechanism == SaslMechanism::OAuthBearer {
            if let Some(setting) = password_settings.iter().flatten().next() {
                return Err(ConfigError::Invalid {
                    setting: setting.clone(),
                    message: "is not used with OAUTHBEARER (the OAuth client id and secret are)"
                        .into(),
                });
            }
            let missing = |name: &str, what: &str| ConfigError::Missing {
                setting: name.into(),
                message: format!("OAUTHBEARER needs {what}"),
            };
            let (client_id, _) = client_id.ok_or_else(|| {
                missing(
                    "HUNTER_KAFKA_SASL_OAUTHBEARER_CLIENT_ID",
                    "the OAuth client id",
                )
            })?;
            let client_secret = client_secret.ok_or_else(|| {
                missing(
                    "HUNTER_KAFKA_SASL_OAUTHBEARER_CLIENT_SECRET",
                    "the OAuth client secret",
                )
            })?;
            let (url, setting) = token_endpoint_url.ok_or_else(|| {
                missing(
                    "HUNTER_KAFKA_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL",
                    "the token endpoint URL (e.g. https://login.microsoftonline.com/TENANT/oauth2/v2.0/token)",
                )
            })?;
            Some(KafkaSasl::OAuthBearer {
                client_id,
                client_secret,
                token_endpoint_url: parse_url(&setting, &url)?,
                scope: scope.map(|(scope, _)| scope),
            })
        } else {
            if let Some(setting) = oauth_settings.iter().flatten().next() {
                return Err(ConfigError::Invalid {
                    setting: setting.clone(),
                    message: format!("is only used with OAUTHBEARER, not {}", mechanism.as_str()),
                });
            }
            let (username, _) = username.ok_or_else(|| ConfigError::Missing {
                setting: "HUNTER_KAFKA_SASL_USERNAME".into(),
                message: format!("SASL {} needs a user name", mechanism.as_str()),
            })?;
            let password = password.ok_or_else(|| ConfigError::Missing {
                setting: "HUNTER_KAFKA_SASL_PASSWORD".into(),
                message: format!("SASL {} needs a password", mechanism.as_str()),
            })?;
            Some(KafkaSasl::Password {
                mechanism,
                username,
                password,
            })
        }
    };

    let ca = tls_file(
        src,
        "HUNTER_KAFKA_SSL_CA_LOCATION",
        file.ssl_ca_location.clone(),
        "kafka.ssl_ca_location",
        "-----BEGIN CERTIFICATE-----",
    )?;
    let certificate = tls_file(
        src,
        "HUNTER_KAFKA_SSL_CERTIFICATE_LOCATION",
        file.ssl_certificate_location.clone(),
        "kafka.ssl_certificate_location",
        "-----BEGIN CERTIFICATE-----",
    )?;
    let key = tls_file(
        src,
        "HUNTER_KAFKA_SSL_KEY_LOCATION",
        file.ssl_key_location.clone(),
        "kafka.ssl_key_location",
        "PRIVATE KEY-----",
    )?;
    let key_password = secret_setting(
        env,
        "HUNTER_KAFKA_SSL_KEY_PASSWORD",
        file.ssl_key_password.clone(),
    );
    let tls_settings = [
        ca.as_ref().map(|(_, s)| s.clone()),
        certificate.as_ref().map(|(_, s)| s.clone()),
        key.as_ref().map(|(_, s)| s.clone()),
        given(key_password.is_some(), "HUNTER_KAFKA_SSL_KEY_PASSWORD"),
    ];
    if !protocol.uses_tls()
        && let Some(setting) = tls_settings.iter().flatten().next()
    {
        return Err(ConfigError::Invalid {
            setting: setting.clone(),
            message: format!(
                "is set but HUNTER_KAFKA_SECURITY_PROTOCOL is {}, which does not use TLS: use ssl or sasl_ssl",
                protocol.as_str()
            ),
        });
    }
    match (&certificate, &key) {
        (Some(_), None) => {
            return Err(ConfigError::Missing {
                setting: "HUNTER_KAFKA_SSL_KEY_LOCATION".into(),
                message: "a client certificate needs its private key".into(),
            });
        }
        (None, Some(_)) => {
            return Err(ConfigError::Missing {
                setting: "HUNTER_KAFKA_SSL_CERTIFICATE_LOCATION".into(),
                message: "a private key needs its client certificate".into(),
            });
        }
        _ => {}
    }
    if key_password.is_some() && key.is_none() {
        return Err(ConfigError::Invalid {
            setting: "HUNTER_KAFKA_SSL_KEY_PASSWORD".into(),
            message: "is set without HUNTER_KAFKA_SSL_KEY_LOCATION".into(),
        });
    }
    let security = KafkaSecurity {
        protocol,
        sasl,
        tls: KafkaTls {
            ca_location: ca.map(|(path, _)| path),
            certificate_location: certificate.map(|(path, _)| path),
            key_location: key.map(|(path, _)| path),
            key_password,
        },
    };
    Ok((security, kafka_properties(&file.properties)?))
}

/// `[kafka.properties]`: any librdkafka property but the ones Hunter owns, each checked by
/// librdkafka itself. An error names the property and never shows its value (it may be secret).
fn kafka_properties(
    file: &std::collections::BTreeMap<String, toml::Value>,
) -> Result<KafkaProperties, ConfigError> {
    let mut properties = Vec::new();
    for (name, value) in file {
        let name = name.trim();
        let setting = format!("kafka.properties.{name:?}");
        let value = match value {
            toml::Value::String(text) => text.clone(),
            toml::Value::Integer(number) => number.to_string(),
            toml::Value::Float(number) => number.to_string(),
            toml::Value::Boolean(flag) => flag.to_string(),
            _ => {
                return Err(ConfigError::Invalid {
                    setting,
                    message: "must be a string, a number or true/false".into(),
                });
            }
        };
        if let Some((_, instead)) = crate::kafka::PROTECTED_PROPERTIES
            .iter()
            .find(|(protected, _)| protected.eq_ignore_ascii_case(name))
        {
            return Err(ConfigError::Invalid {
                setting,
                message: format!(
                    "Hunter sets this property itself and it cannot be overridden here: {instead}"
                ),
            });
        }
        let mut probe = rdkafka::ClientConfig::new();
        probe.set(name, &value);
        if let Err(error) = probe.create_native_config() {
            let reason = match error {
                rdkafka::error::KafkaError::ClientConfig(_, description, _, _) => description,
                _ => "librdkafka refused it".to_owned(),
            };
            return Err(ConfigError::Invalid {
                setting,
                message: format!("librdkafka refused it: {reason}"),
            });
        }
        properties.push((name.to_owned(), Secret::new(value)));
    }
    Ok(KafkaProperties(properties))
}

/// Every environment variable Hunter reads: the settings above, `HUNTER_CONFIG` (the config
/// file, `cli.rs`) and `HUNTER_LOG_FORMAT` (`telemetry.rs`). Deployment files (docker-compose,
/// Kubernetes, `.env.example`) are checked against this list.
pub const ENV_VARS: &[&str] = &[
    "HUNTER_ALLOW_INSECURE_HTTP",
    "HUNTER_API_CACHE_MS",
    "HUNTER_API_CORS_ORIGINS",
    "HUNTER_API_LISTEN",
    "HUNTER_API_READ_TOKEN",
    "HUNTER_API_REQUEST_TIMEOUT_SECS",
    "HUNTER_API_TOKEN",
    "HUNTER_CLICKHOUSE_CA_LOCATION",
    "HUNTER_CLICKHOUSE_DATABASE",
    "HUNTER_CLICKHOUSE_PASSWORD",
    "HUNTER_CLICKHOUSE_READER_MAX_ROWS_TO_READ",
    "HUNTER_CLICKHOUSE_READER_PASSWORD",
    "HUNTER_CLICKHOUSE_READER_USER",
    "HUNTER_CLICKHOUSE_URL",
    "HUNTER_CLICKHOUSE_USER",
    "HUNTER_CONFIG",
    "HUNTER_ENRICH_DNS_SERVER",
    "HUNTER_ENRICH_DNS_TIMEOUT_MS",
    "HUNTER_ENRICH_MX_CACHE_SECS",
    "HUNTER_ENRICH_USD_RATES",
    "HUNTER_ENVIRONMENT",
    "HUNTER_KAFKA_BROKERS",
    "HUNTER_KAFKA_SASL_MECHANISM",
    "HUNTER_KAFKA_SASL_OAUTHBEARER_CLIENT_ID",
    "HUNTER_KAFKA_SASL_OAUTHBEARER_CLIENT_SECRET",
    "HUNTER_KAFKA_SASL_OAUTHBEARER_SCOPE",
    "HUNTER_KAFKA_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL",
    "HUNTER_KAFKA_SASL_PASSWORD",
    "HUNTER_KAFKA_SASL_USERNAME",
    "HUNTER_KAFKA_SECURITY_PROTOCOL",
    "HUNTER_KAFKA_SSL_CA_LOCATION",
    "HUNTER_KAFKA_SSL_CERTIFICATE_LOCATION",
    "HUNTER_KAFKA_SSL_KEY_LOCATION",
    "HUNTER_KAFKA_SSL_KEY_PASSWORD",
    "HUNTER_KAFKA_TOPIC_PREFIX",
    "HUNTER_LOG_FORMAT",
    "HUNTER_PARTNER_CENTER_API_URL",
    "HUNTER_PARTNER_CENTER_AUTHORITY_URL",
    "HUNTER_PARTNER_CENTER_CLIENT_ID",
    "HUNTER_PARTNER_CENTER_CLIENT_SECRET",
    "HUNTER_PARTNER_CENTER_ENABLED",
    "HUNTER_PARTNER_CENTER_PAGE_SIZE",
    "HUNTER_PARTNER_CENTER_SCOPE",
    "HUNTER_PARTNER_CENTER_TENANT_ID",
    "HUNTER_SCHEMA_REGISTRY_CA_LOCATION",
    "HUNTER_SCHEMA_REGISTRY_PASSWORD",
    "HUNTER_SCHEMA_REGISTRY_URL",
    "HUNTER_SCHEMA_REGISTRY_USERNAME",
    "HUNTER_SINK_BATCH_MAX_WAIT_MS",
    "HUNTER_SINK_BATCH_ROWS",
    "HUNTER_SYNC_FULL_SWEEP_SECS",
    "HUNTER_SYNC_INTERVAL_SECS",
    "HUNTER_SYNC_OVERLAP_SECS",
    "HUNTER_SYNC_POLL_BUDGET_SECS",
    "HUNTER_TOKEN_CACHE",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn base() -> Vec<(&'static str, &'static str)> {
        vec![
            ("HUNTER_PARTNER_CENTER_TENANT_ID", "contoso.onmicrosoft.com"),
            ("HUNTER_PARTNER_CENTER_CLIENT_ID", "client-1"),
            ("HOME", "/home/op"),
        ]
    }

    fn error_for(extra: &[(&str, &str)]) -> String {
        let mut pairs = base();
        pairs.extend_from_slice(extra);
        Settings::from_sources(None, &env(&pairs))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn defaults_apply() {
        let settings = Settings::from_sources(None, &env(&base())).unwrap();
        assert_eq!(settings.sync.interval, Duration::from_secs(600));
        assert_eq!(
            settings.sync.full_sweep_interval,
            Some(Duration::from_secs(86_400))
        );
        let tenant = settings.partner_center.tenant(None).unwrap();
        assert_eq!(tenant.name, "contoso.onmicrosoft.com");
        assert_eq!(
            tenant.token_cache,
            PathBuf::from("/home/op/.local/state/hunter/token-cache.json")
        );
        assert_eq!(settings.partner_center.api_url.as_str(), Defaults::API_URL);
        assert!(settings.partner_center.enabled);
        assert_eq!(settings.clickhouse.database, "hunter");
        let mut dev = base();
        dev.push(("HUNTER_ENVIRONMENT", "development"));
        assert_eq!(
            Settings::from_sources(None, &env(&dev))
                .unwrap()
                .sync
                .interval,
            Duration::from_secs(30)
        );
    }

    #[test]
    fn enrich_defaults_are_one_set() {
        // `EnrichSettings::default` (the enricher's, for tools and tests) is what an empty
        // configuration gives, so the two cannot drift apart again.
        let loaded = Settings::from_sources(None, &env(&base())).unwrap().enrich;
        let default = EnrichSettings::default();
        assert_eq!(loaded.dns_server, default.dns_server);
        assert_eq!(loaded.dns_timeout, default.dns_timeout);
        assert_eq!(loaded.mx_cache_ttl, default.mx_cache_ttl);
        assert_eq!(loaded.usd_rates, default.usd_rates);
        assert_eq!(default.dns_timeout, Duration::from_millis(500));
        assert_eq!(default.mx_cache_ttl, Duration::from_secs(3_600));
    }

    #[test]
    fn bad_values_name_the_setting() {
        assert!(
            error_for(&[("HUNTER_SYNC_INTERVAL_SECS", "soon")])
                .contains("HUNTER_SYNC_INTERVAL_SECS")
        );
        assert!(
            error_for(&[("HUNTER_PARTNER_CENTER_ENABLED", "maybe")])
                .contains("HUNTER_PARTNER_CENTER_ENABLED")
        );
        assert!(
            error_for(&[("HUNTER_PARTNER_CENTER_API_URL", "not a url")])
                .contains("HUNTER_PARTNER_CENTER_API_URL")
        );
        assert!(error_for(&[("HUNTER_API_LISTEN", "localhost")]).contains("HUNTER_API_LISTEN"));
        assert!(error_for(&[("HUNTER_KAFKA_BROKERS", "nohost")]).contains("HUNTER_KAFKA_BROKERS"));
        assert!(
            error_for(&[("HUNTER_KAFKA_TOPIC_PREFIX", "a b")])
                .contains("HUNTER_KAFKA_TOPIC_PREFIX")
        );
        assert!(
            error_for(&[("HUNTER_CLICKHOUSE_DATABASE", "x;drop")])
                .contains("HUNTER_CLICKHOUSE_DATABASE")
        );
        assert!(
            error_for(&[("HUNTER_ENRICH_USD_RATES", "EUR:1.1")])
                .contains("HUNTER_ENRICH_USD_RATES")
        );
        assert!(
            error_for(&[("HUNTER_ENRICH_DNS_SERVER", "dns")]).contains("HUNTER_ENRICH_DNS_SERVER")
        );
        let missing =
            Settings::from_sources(None, &env(&[("HUNTER_PARTNER_CENTER_CLIENT_ID", "c")]))
                .unwrap_err();
        assert!(
            missing
                .to_string()
                .contains("HUNTER_PARTNER_CENTER_TENANT_ID"),
            "{missing}"
        );
    }

    #[test]
    fn several_tenants_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hunter.toml");
        std::fs::write(
            &path,
            "[partner_center]\nclient_id = \"shared-client\"\n\n[[partner_center.tenants]]\nname = \"contoso\"\ntenant_id = \"contoso.example\"\n\n[[partner_center.tenants]]\nname = \"fabrikam\"\ntenant_id = \"fabrikam.example\"\nclient_id = \"own-client\"\ntoken_cache = \"/tmp/fabrikam.json\"\n",
        )
        .unwrap();
        let settings = Settings::from_sources(
            Some(&path),
            &env(&[("HUNTER_TOKEN_CACHE", "/var/lib/hunter/cache.json")]),
        )
        .unwrap();
        let pc = &settings.partner_center;
        assert_eq!(pc.tenants.len(), 2);
        let contoso = pc.tenant(Some("contoso")).unwrap();
        assert_eq!(contoso.client_id, "shared-client");
        assert_eq!(
            contoso.token_cache,
            PathBuf::from("/var/lib/hunter/cache-contoso.json")
        );
        assert_eq!(pc.tenant(Some("fabrikam")).unwrap().client_id, "own-client");
        assert!(
            pc.tenant(None)
                .unwrap_err()
                .to_string()
                .contains("several tenants")
        );
        assert!(
            pc.tenant(Some("nope"))
                .unwrap_err()
                .to_string()
                .contains("contoso, fabrikam")
        );

        std::fs::write(
            &path,
            "[[partner_center.tenants]]\nname = \"a b\"\ntenant_id = \"t\"\nclient_id = \"c\"\n",
        )
        .unwrap();
        let error = Settings::from_sources(Some(&path), &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(error.contains("partner_center.tenants[0].name"), "{error}");
    }

    #[test]
    fn a_disabled_source_needs_no_credentials() {
        let settings =
            Settings::from_sources(None, &env(&[("HUNTER_PARTNER_CENTER_ENABLED", "false")]))
                .unwrap();
        assert!(!settings.partner_center.enabled);
    }

    #[test]
    fn file_values_and_env_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hunter.toml");
        std::fs::write(
            &path,
            "[partner_center]\ntenant_id = \"t\"\nclient_id = \"c\"\nclient_secret = \"s3cr3t-value\"\n[sync]\ninterval_secs = 45\n",
        )
        .unwrap();
        let settings = Settings::from_sources(Some(&path), &env(&[("HOME", "/h")])).unwrap();
        assert_eq!(settings.sync.interval, Duration::from_secs(45));
        let overridden = Settings::from_sources(
            Some(&path),
            &env(&[("HUNTER_SYNC_INTERVAL_SECS", "7"), ("HOME", "/h")]),
        )
        .unwrap();
        assert_eq!(overridden.sync.interval, Duration::from_secs(7));
        assert!(
            !format!("{settings:?}").contains("s3cr3t-value"),
            "secrets never reach Debug output"
        );

        std::fs::write(&path, "[sync]\nintervall_secs = 45\n").unwrap();
        let error = Settings::from_sources(Some(&path), &env(&base()))
            .unwrap_err()
            .to_string();
        assert!(error.contains("intervall_secs"), "{error}");
    }

    // ---- Kafka security ----------------------------------------------------------------------

    #[test]
    fn kafka_security_combinations_fail_at_start_naming_the_setting() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(
            &ca,
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let not_pem = dir.path().join("ca.txt");
        std::fs::write(&not_pem, "hello").unwrap();
        let ca = ca.display().to_string();
        let not_pem = not_pem.display().to_string();
        let missing_file = dir.path().join("nope.pem").display().to_string();
        let sasl_ssl = ("HUNTER_KAFKA_SECURITY_PROTOCOL", "sasl_ssl");
        let scram = ("HUNTER_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512");
        let user = ("HUNTER_KAFKA_SASL_USERNAME", "hunter");
        let password = ("HUNTER_KAFKA_SASL_PASSWORD", "pw-SENTINEL-123");
        let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
            (
                vec![("HUNTER_KAFKA_SECURITY_PROTOCOL", "tls")],
                "HUNTER_KAFKA_SECURITY_PROTOCOL",
            ),
            (vec![sasl_ssl], "HUNTER_KAFKA_SASL_MECHANISM"),
            (
                vec![sasl_ssl, ("HUNTER_KAFKA_SASL_MECHANISM", "GSSAPI")],
                "HUNTER_KAFKA_SASL_MECHANISM",
            ),
            (vec![sasl_ssl, scram], "HUNTER_KAFKA_SASL_USERNAME"),
            (vec![sasl_ssl, scram, user], "HUNTER_KAFKA_SASL_PASSWORD"),
            // Settings the protocol would ignore.
            (vec![scram, user, password], "HUNTER_KAFKA_SASL_MECHANISM"),
            (vec![password], "HUNTER_KAFKA_SASL_PASSWORD"),
            (
                vec![("HUNTER_KAFKA_SSL_CA_LOCATION", ca.as_str())],
                "HUNTER_KAFKA_SSL_CA_LOCATION",
            ),
            (
                vec![
                    ("HUNTER_KAFKA_SECURITY_PROTOCOL", "sasl_plaintext"),
                    scram,
                    user,
                    password,
                    ("HUNTER_KAFKA_SSL_CA_LOCATION", ca.as_str()),
                ],
                "HUNTER_KAFKA_SSL_CA_LOCATION",
            ),
            // TLS files that are not there or not what they should be.
            (
                vec![
                    sasl_ssl,
                    scram,
                    user,
                    password,
                    ("HUNTER_KAFKA_SSL_CA_LOCATION", missing_file.as_str()),
                ],
                "HUNTER_KAFKA_SSL_CA_LOCATION",
            ),
            (
                vec![
                    ("HUNTER_KAFKA_SECURITY_PROTOCOL", "ssl"),
                    ("HUNTER_KAFKA_SSL_CA_LOCATION", not_pem.as_str()),
                ],
                "HUNTER_KAFKA_SSL_CA_LOCATION",
            ),
            (
                vec![
                    ("HUNTER_KAFKA_SECURITY_PROTOCOL", "ssl"),
                    ("HUNTER_KAFKA_SSL_CERTIFICATE_LOCATION", ca.as_str()),
                ],
                "HUNTER_KAFKA_SSL_KEY_LOCATION",
            ),
            (
                vec![
                    ("HUNTER_KAFKA_SECURITY_PROTOCOL", "ssl"),
                    ("HUNTER_KAFKA_SSL_KEY_PASSWORD", "k"),
                ],
                "HUNTER_KAFKA_SSL_KEY_PASSWORD",
            ),
            // OAUTHBEARER takes the OAuth client, not a password.
            (
                vec![sasl_ssl, ("HUNTER_KAFKA_SASL_MECHANISM", "OAUTHBEARER")],
                "HUNTER_KAFKA_SASL_OAUTHBEARER_CLIENT_ID",
            ),
            (
                vec![
                    sasl_ssl,
                    ("HUNTER_KAFKA_SASL_MECHANISM", "OAUTHBEARER"),
                    ("HUNTER_KAFKA_SASL_OAUTHBEARER_CLIENT_ID", "app"),
                    ("HUNTER_KAFKA_SASL_OAUTHBEARER_CLIENT_SECRET", "s"),
                ],
                "HUNTER_KAFKA_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL",
            ),
            (
                vec![
                    sasl_ssl,
                    ("HUNTER_KAFKA_SASL_MECHANISM", "OAUTHBEARER"),
                    user,
                ],
                "HUNTER_KAFKA_SASL_USERNAME",
            ),
            (
                vec![
                    sasl_ssl,
                    scram,
                    user,
                    password,
                    ("HUNTER_KAFKA_SASL_OAUTHBEARER_SCOPE", "x"),
                ],
                "HUNTER_KAFKA_SASL_OAUTHBEARER_SCOPE",
            ),
        ];
        for (pairs, setting) in cases {
            let error = error_for(&pairs);
            assert!(error.contains(setting), "{pairs:?}: {error}");
            assert!(!error.contains("pw-SENTINEL"), "{error}");
        }

        // A whole SASL_SSL configuration, and an OAUTHBEARER one.
        let mut pairs = base();
        pairs.extend_from_slice(&[
            sasl_ssl,
            ("HUNTER_KAFKA_SASL_MECHANISM", "scram-sha-512"),
            user,
            password,
            ("HUNTER_KAFKA_SSL_CA_LOCATION", ca.as_str()),
        ]);
        let settings = Settings::from_sources(None, &env(&pairs)).unwrap();
        let security = &settings.kafka.security;
        assert_eq!(security.protocol, KafkaSecurityProtocol::SaslSsl);
        assert!(matches!(
            &security.sasl,
            Some(KafkaSasl::Password { mechanism: SaslMechanism::ScramSha512, username, password })
                if username == "hunter" && password.expose() == "pw-SENTINEL-123"
        ));
        assert_eq!(security.tls.ca_location.as_deref(), Some(Path::new(&ca)));
        assert!(!format!("{settings:?}").contains("pw-SENTINEL"));
        let mut pairs = base();
        pairs.extend_from_slice(&[
            sasl_ssl,
            ("HUNTER_KAFKA_SASL_MECHANISM", "OAUTHBEARER"),
            ("HUNTER_KAFKA_SASL_OAUTHBEARER_CLIENT_ID", "app"),
            (
                "HUNTER_KAFKA_SASL_OAUTHBEARER_CLIENT_SECRET",
                "oauth-SENTINEL",
            ),
            (
                "HUNTER_KAFKA_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL",
                "https://login.microsoftonline.com/t/oauth2/v2.0/token",
            ),
            (
                "HUNTER_KAFKA_SASL_OAUTHBEARER_SCOPE",
                "https://ns.servicebus.windows.net/.default",
            ),
        ]);
        let settings = Settings::from_sources(None, &env(&pairs)).unwrap();
        assert_eq!(
            settings
                .kafka
                .security
                .sasl
                .as_ref()
                .map(KafkaSasl::mechanism),
            Some(SaslMechanism::OAuthBearer)
        );
        assert!(!format!("{settings:?}").contains("oauth-SENTINEL"));
        // Plaintext stays the default.
        let plain = Settings::from_sources(None, &env(&base())).unwrap();
        assert_eq!(
            plain.kafka.security.protocol,
            KafkaSecurityProtocol::Plaintext
        );
        assert!(plain.kafka.security.sasl.is_none());
    }

    #[test]
    fn kafka_properties_tune_but_never_override_what_hunter_owns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hunter.toml");
        let load = |text: &str| {
            std::fs::write(&path, text).unwrap();
            Settings::from_sources(Some(&path), &env(&base()))
        };
        let settings = load(
            "[kafka]\nsecurity_protocol = \"sasl_ssl\"\nsasl_mechanism = \"PLAIN\"\nsasl_username = \"$ConnectionString\"\nsasl_password = \"Endpoint=sb://x/;SharedAccessKey=file-SENTINEL\"\n\n[kafka.properties]\n\"linger.ms\" = 20\n\"ssl.endpoint.identification.algorithm\" = \"https\"\n\"socket.keepalive.enable\" = true\n\"ssl.keystore.password\" = \"ks-SENTINEL\"\n",
        )
        .unwrap();
        let properties: Vec<(&str, &str)> = settings.kafka.properties.iter().collect();
        assert!(properties.contains(&("linger.ms", "20")), "{properties:?}");
        assert!(properties.contains(&("socket.keepalive.enable", "true")));
        let described = settings.kafka.properties.describe();
        assert!(described.contains("linger.ms=20"), "{described}");
        assert!(
            described.contains("ssl.keystore.password=[redacted]"),
            "{described}"
        );
        let debug = format!("{settings:?}");
        assert!(!debug.contains("SENTINEL"), "{debug}");
        assert!(matches!(
            &settings.kafka.security.sasl,
            Some(KafkaSasl::Password { mechanism: SaslMechanism::Plain, username, .. }) if username == "$ConnectionString"
        ));

        for (property, words) in [
            ("acks", "cannot be overridden"),
            ("enable.idempotence", "idempotent"),
            ("enable.auto.offset.store", "cannot be overridden"),
            ("isolation.level", "cannot be overridden"),
            ("sasl.password", "HUNTER_KAFKA_SASL_PASSWORD"),
            ("Security.Protocol", "HUNTER_KAFKA_SECURITY_PROTOCOL"),
        ] {
            let error = load(&format!(
                "[kafka.properties]\n\"{property}\" = \"value-SENTINEL\"\n"
            ))
            .unwrap_err()
            .to_string();
            assert!(
                error.contains(&format!("kafka.properties.\"{property}\""))
                    && error.contains(words),
                "{error}"
            );
            assert!(!error.contains("value-SENTINEL"), "{error}");
        }
        let unknown = load("[kafka.properties]\n\"lingr.ms\" = \"secret-SENTINEL\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            unknown.contains("kafka.properties.\"lingr.ms\""),
            "{unknown}"
        );
        assert!(!unknown.contains("secret-SENTINEL"), "{unknown}");
        let invalid = load("[kafka.properties]\n\"linger.ms\" = \"soon-SENTINEL\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            invalid.contains("kafka.properties.\"linger.ms\""),
            "{invalid}"
        );
        assert!(!invalid.contains("soon-SENTINEL"), "{invalid}");
        let table = load("[kafka.properties.\"linger.ms\"]\nx = 1\n")
            .unwrap_err()
            .to_string();
        assert!(table.contains("kafka.properties.\"linger.ms\""), "{table}");
    }

    #[test]
    fn env_vars_lists_every_variable_read() {
        let source = include_str!("config.rs");
        let code = &source[..source.find("pub const ENV_VARS").unwrap()];
        let read: std::collections::BTreeSet<&str> = code
            .split('"')
            .skip(1)
            .step_by(2)
            .filter(|s| s.starts_with("HUNTER_") && s.len() > "HUNTER_".len())
            .collect();
        for name in &read {
            assert!(
                ENV_VARS.contains(name),
                "{name} is read but not in ENV_VARS"
            );
        }
        for name in ENV_VARS {
            assert!(
                read.contains(name) || ["HUNTER_CONFIG", "HUNTER_LOG_FORMAT"].contains(name),
                "{name} is in ENV_VARS but config.rs does not read it"
            );
        }
        assert!(include_str!("telemetry.rs").contains("\"HUNTER_LOG_FORMAT\""));
        assert!(include_str!("../../src/cli.rs").contains("env = \"HUNTER_CONFIG\""));
    }
    // --- ClickHouse users and TLS ---

    #[test]
    fn clickhouse_reader_and_ca() {
        let settings = Settings::from_sources(None, &env(&base())).unwrap();
        assert_eq!(settings.clickhouse.reader_user, None);
        assert_eq!(settings.clickhouse.ca_location, None);
        assert_eq!(
            settings.clickhouse.reader_max_rows_to_read,
            Defaults::CLICKHOUSE_READER_MAX_ROWS_TO_READ
        );

        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(
            &ca,
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let mut pairs = base();
        let ca_text = ca.display().to_string();
        pairs.extend_from_slice(&[
            ("HUNTER_CLICKHOUSE_READER_USER", "hunter_api"),
            ("HUNTER_CLICKHOUSE_READER_PASSWORD", "reader-pass-phrase"),
            ("HUNTER_CLICKHOUSE_CA_LOCATION", ca_text.as_str()),
            ("HUNTER_CLICKHOUSE_READER_MAX_ROWS_TO_READ", "0"),
        ]);
        let settings = Settings::from_sources(None, &env(&pairs)).unwrap();
        let ch = &settings.clickhouse;
        assert_eq!(ch.reader_user.as_deref(), Some("hunter_api"));
        assert_eq!(
            ch.reader_password.as_ref().map(Secret::expose),
            Some("reader-pass-phrase")
        );
        assert_eq!(ch.ca_location.as_deref(), Some(ca.as_path()));
        assert_eq!(ch.reader_max_rows_to_read, 0);
        assert!(!format!("{settings:?}").contains("reader-pass-phrase"));

        let error = error_for(&[("HUNTER_CLICKHOUSE_READER_PASSWORD", "x")]);
        assert!(error.contains("HUNTER_CLICKHOUSE_READER_USER"), "{error}");
        let error = error_for(&[("HUNTER_CLICKHOUSE_CA_LOCATION", "/nonexistent/ca.pem")]);
        assert!(error.contains("HUNTER_CLICKHOUSE_CA_LOCATION"), "{error}");
        let not_pem = dir.path().join("key.txt");
        std::fs::write(&not_pem, "hello").unwrap();
        let error = error_for(&[(
            "HUNTER_CLICKHOUSE_CA_LOCATION",
            not_pem.display().to_string().as_str(),
        )]);
        assert!(
            error.contains("HUNTER_CLICKHOUSE_CA_LOCATION") && error.contains("no PEM"),
            "{error}"
        );
        let error = error_for(&[("HUNTER_CLICKHOUSE_READER_MAX_ROWS_TO_READ", "many")]);
        assert!(
            error.contains("HUNTER_CLICKHOUSE_READER_MAX_ROWS_TO_READ"),
            "{error}"
        );

        std::fs::write(
            dir.path().join("hunter.toml"),
            format!(
                "[clickhouse]\nreader_user = \"api\"\nreader_password = \"pw-from-file\"\nca_location = \"{ca_text}\"\nreader_max_rows_to_read = 5\n"
            ),
        )
        .unwrap();
        let settings =
            Settings::from_sources(Some(&dir.path().join("hunter.toml")), &env(&base())).unwrap();
        assert_eq!(settings.clickhouse.reader_user.as_deref(), Some("api"));
        assert_eq!(settings.clickhouse.reader_max_rows_to_read, 5);
        assert_eq!(
            settings.clickhouse.ca_location.as_deref(),
            Some(ca.as_path())
        );
    }

    // --- security settings (docs/security.md) ---

    #[test]
    fn api_tokens_are_trimmed_and_must_be_strong() {
        let good = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
        let mut pairs = base();
        let padded = format!("  {good}\n");
        pairs.push(("HUNTER_API_TOKEN", &padded));
        let settings = Settings::from_sources(None, &env(&pairs)).unwrap();
        assert_eq!(settings.api.token.unwrap().expose(), good);
        for (setting, placeholder) in [
            ("HUNTER_API_TOKEN", "change-me-to-a-long-random-token"),
            ("HUNTER_API_TOKEN", "replace-with-a-long-random-token"),
            (
                "HUNTER_API_READ_TOKEN",
                "replace-with-another-long-random-token",
            ),
            (
                "HUNTER_API_TOKEN",
                "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            ),
            ("HUNTER_API_READ_TOKEN", "0123456789abcdef"),
        ] {
            let error = error_for(&[(setting, placeholder)]);
            assert!(error.contains(setting), "{error}");
            assert!(error.contains("openssl rand -hex 32"), "{error}");
            assert!(!error.contains(placeholder), "{error}");
        }
        // From the file too, named by its key, and trimmed.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hunter.toml");
        std::fs::write(
            &path,
            "[api]\ntoken = \"changeme-changeme-changeme-123456\"\n",
        )
        .unwrap();
        let error = Settings::from_sources(Some(&path), &env(&base()))
            .unwrap_err()
            .to_string();
        assert!(error.contains("api.token"), "{error}");
        std::fs::write(&path, format!("[api]\nread_token = \" {good} \"\n")).unwrap();
        let settings = Settings::from_sources(Some(&path), &env(&base())).unwrap();
        assert_eq!(settings.api.read_token.unwrap().expose(), good);
        // Placeholder passwords and client secrets are refused too.
        let error = error_for(&[("HUNTER_CLICKHOUSE_PASSWORD", "replace-me")]);
        assert!(error.contains("HUNTER_CLICKHOUSE_PASSWORD"), "{error}");
        let error = error_for(&[("HUNTER_PARTNER_CENTER_CLIENT_SECRET", "changeme")]);
        assert!(
            error.contains("HUNTER_PARTNER_CENTER_CLIENT_SECRET"),
            "{error}"
        );
    }

    #[test]
    fn plain_http_sign_in_needs_loopback_or_the_switch() {
        for setting in [
            "HUNTER_PARTNER_CENTER_AUTHORITY_URL",
            "HUNTER_PARTNER_CENTER_API_URL",
        ] {
            let error = error_for(&[(setting, "http://login.example.com")]);
            assert!(error.contains(setting), "{error}");
            assert!(error.contains("HUNTER_ALLOW_INSECURE_HTTP"), "{error}");
            let mut pairs = base();
            pairs.push((setting, "http://simulator:18080"));
            pairs.push(("HUNTER_ALLOW_INSECURE_HTTP", "true"));
            assert!(Settings::from_sources(None, &env(&pairs)).is_ok());
            let mut pairs = base();
            pairs.push((setting, "http://127.0.0.1:18080"));
            assert!(Settings::from_sources(None, &env(&pairs)).is_ok());
        }
        let error = error_for(&[(
            "HUNTER_PARTNER_CENTER_AUTHORITY_URL",
            "http://user:hunter2pw@login.example.com",
        )]);
        assert!(!error.contains("hunter2pw"), "{error}");
        assert!(
            error_for(&[("HUNTER_ALLOW_INSECURE_HTTP", "perhaps")])
                .contains("HUNTER_ALLOW_INSECURE_HTTP")
        );
    }

    #[test]
    fn the_token_cache_defaults_to_the_state_directory() {
        let mut pairs = base();
        pairs.push(("XDG_STATE_HOME", "/state"));
        let settings = Settings::from_sources(None, &env(&pairs)).unwrap();
        assert_eq!(
            settings.partner_center.tenants[0].token_cache,
            PathBuf::from("/state/hunter/token-cache.json")
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hunter.toml");
        std::fs::write(
            &path,
            "[[partner_center.tenants]]\nname = \"fabrikam\"\ntenant_id = \"f\"\nclient_id = \"c\"\n",
        )
        .unwrap();
        let settings = Settings::from_sources(Some(&path), &env(&[("HOME", "/home/op")])).unwrap();
        assert_eq!(
            settings.partner_center.tenants[0].token_cache,
            PathBuf::from("/home/op/.local/state/hunter/token-cache-fabrikam.json")
        );
        let error = Settings::from_sources(
            None,
            &env(&[
                ("HUNTER_PARTNER_CENTER_TENANT_ID", "t"),
                ("HUNTER_PARTNER_CENTER_CLIENT_ID", "c"),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("HUNTER_TOKEN_CACHE"), "{error}");
    }

    // --- Schema Registry settings ---------------------------------------------------------------

    #[test]
    fn schema_registry_credentials_and_ca_are_checked_at_start() {
        let url = (
            "HUNTER_SCHEMA_REGISTRY_URL",
            "https://registry.example:8081",
        );
        let error = error_for(&[url, ("HUNTER_SCHEMA_REGISTRY_USERNAME", "key")]);
        assert!(error.contains("HUNTER_SCHEMA_REGISTRY_PASSWORD"), "{error}");
        let error = error_for(&[url, ("HUNTER_SCHEMA_REGISTRY_PASSWORD", "p4ss-w0rd")]);
        assert!(error.contains("HUNTER_SCHEMA_REGISTRY_USERNAME"), "{error}");
        assert!(!error.contains("p4ss-w0rd"), "{error}");
        let error = error_for(&[
            ("HUNTER_SCHEMA_REGISTRY_USERNAME", "key"),
            ("HUNTER_SCHEMA_REGISTRY_PASSWORD", "p4ss-w0rd"),
        ]);
        assert!(error.contains("HUNTER_SCHEMA_REGISTRY_URL"), "{error}");
        let error = error_for(&[
            url,
            ("HUNTER_SCHEMA_REGISTRY_CA_LOCATION", "/nonexistent/ca.pem"),
        ]);
        assert!(
            error.contains("HUNTER_SCHEMA_REGISTRY_CA_LOCATION"),
            "{error}"
        );
        let dir = tempfile::tempdir().unwrap();
        let not_pem = dir.path().join("ca.pem");
        std::fs::write(&not_pem, "not a certificate").unwrap();
        let error = error_for(&[
            url,
            (
                "HUNTER_SCHEMA_REGISTRY_CA_LOCATION",
                not_pem.to_str().unwrap(),
            ),
        ]);
        assert!(error.contains("holds no PEM certificate"), "{error}");

        let mut pairs = base();
        pairs.extend([
            url,
            ("HUNTER_SCHEMA_REGISTRY_USERNAME", "key"),
            ("HUNTER_SCHEMA_REGISTRY_PASSWORD", "p4ss-w0rd"),
        ]);
        let settings = Settings::from_sources(None, &env(&pairs)).unwrap();
        assert_eq!(settings.schema_registry.username.as_deref(), Some("key"));
        assert_eq!(
            settings
                .schema_registry
                .password
                .as_ref()
                .map(Secret::expose),
            Some("p4ss-w0rd")
        );
        assert!(!format!("{settings:?}").contains("p4ss-w0rd"));
        // The file's [schema_registry] section, the environment winning.
        let file = dir.path().join("hunter.toml");
        std::fs::write(
            &file,
            "[kafka]\nschema_registry_url = \"https://r.example\"\n[schema_registry]\nusername = \"file-key\"\npassword = \"file-secret\"\n",
        )
        .unwrap();
        let settings = Settings::from_sources(Some(&file), &env(&base())).unwrap();
        assert_eq!(
            settings.schema_registry.username.as_deref(),
            Some("file-key")
        );
        let settings = Settings::from_sources(Some(&file), &env(&pairs)).unwrap();
        assert_eq!(settings.schema_registry.username.as_deref(), Some("key"));
    }
}
