//! `[api]`: the listener of every role, the bearer tokens, CORS, the request time limit and
//! the lead page cache.

use super::*;

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

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileApi {
    pub(super) listen: Option<String>,
    pub(super) token: Option<Secret>,
    pub(super) read_token: Option<Secret>,
    pub(super) cors_origins: Option<Vec<String>>,
    pub(super) request_timeout_secs: Option<u64>,
    pub(super) cache_ms: Option<u64>,
}

/// Reads `[api]` and its variables; the tokens must pass `security::check_token`.
pub(super) fn api_settings(src: &Source<'_>, api: FileApi) -> Result<ApiSettings, ConfigError> {
    let env = src.env;
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
    Ok(ApiSettings {
        listen,
        token,
        read_token,
        cors_origins,
        request_timeout: Duration::from_secs(request_timeout_secs),
        cache_ttl: Duration::from_millis(cache_ms),
    })
}
