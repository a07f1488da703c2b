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
    /// Named tokens with a role each (`HUNTER_API_TOKENS`), plus `token` as `admin` and
    /// `read_token` as `read` when those are set: every token the API accepts.
    pub named_tokens: Vec<NamedToken>,
    /// Whether `GET /leads` is answered from the API's in-memory read model of the current
    /// leads (`HUNTER_API_READ_MODEL`, docs/api-read-model.md); off: every question asks
    /// ClickHouse.
    pub read_model: bool,
    /// Whether the read model also holds each current lead's row as `GET /leads` answers it,
    /// so pages are answered without ClickHouse (`HUNTER_API_READ_MODEL_ROWS`); only with
    /// `read_model`.
    pub read_model_rows: bool,
}

/// What an API token may do (`HUNTER_API_TOKENS`, docs/writeback.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TokenRole {
    /// The `GET` routes.
    Read,
    /// `read`, and referral actions (accept, decline, won, lost, update).
    Sales,
    /// Everything, the sync trigger included.
    Admin,
}

impl TokenRole {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenRole::Read => "read",
            TokenRole::Sales => "sales",
            TokenRole::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "read" => Some(TokenRole::Read),
            "sales" => Some(TokenRole::Sales),
            "admin" => Some(TokenRole::Admin),
            _ => None,
        }
    }
}

/// One API token with the name actions record as their actor.
#[derive(Debug, Clone)]
pub struct NamedToken {
    pub name: String,
    pub token: Secret,
    pub role: TokenRole,
}

/// Parses `name=token:role,name=token:role` (the setting's value never appears in an error).
/// Names are letters, digits, `.`, `_`, `-` (up to 64); each token passes the token rule; names
/// and tokens are unique.
pub fn parse_named_tokens(value: &str, setting: &str) -> Result<Vec<NamedToken>, ConfigError> {
    let invalid = |message: String| ConfigError::Invalid {
        setting: setting.to_owned(),
        message,
    };
    let mut tokens: Vec<NamedToken> = Vec::new();
    for (index, entry) in value
        .split([',', '\n'])
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .enumerate()
    {
        let entry_number = index + 1;
        let Some((name, rest)) = entry.split_once('=') else {
            return Err(invalid(format!(
                "entry {entry_number} is not name=token:role (role: read, sales or admin)"
            )));
        };
        let name = name.trim();
        if name.is_empty()
            || name.len() > 64
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return Err(invalid(format!(
                "entry {entry_number}: the name must be 1 to 64 letters, digits, `.`, `_` or `-`"
            )));
        }
        let Some((token, role)) = rest.rsplit_once(':') else {
            return Err(invalid(format!(
                "entry `{name}` has no role: write {name}=<token>:read, :sales or :admin"
            )));
        };
        let role = TokenRole::parse(role.trim()).ok_or_else(|| {
            invalid(format!(
                "entry `{name}`: the role must be read, sales or admin"
            ))
        })?;
        let token = token.trim();
        crate::security::check_token(token)
            .map_err(|message| invalid(format!("token of `{name}`: {message}")))?;
        if tokens.iter().any(|other| other.name == name) {
            return Err(invalid(format!("the name `{name}` appears twice")));
        }
        if let Some(other) = tokens.iter().find(|other| other.token.expose() == token) {
            return Err(invalid(format!(
                "`{name}` and `{}` have the same token; every name needs its own",
                other.name
            )));
        }
        tokens.push(NamedToken {
            name: name.to_owned(),
            token: Secret::new(token),
            role,
        });
    }
    Ok(tokens)
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
    /// `name=token:role,...`, as `HUNTER_API_TOKENS`.
    pub(super) tokens: Option<Secret>,
    /// `HUNTER_API_READ_MODEL` (docs/api-read-model.md).
    pub(super) read_model: Option<bool>,
    /// `HUNTER_API_READ_MODEL_ROWS` (docs/api-read-model.md).
    pub(super) read_model_rows: Option<bool>,
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
    // --- named API tokens (docs/writeback.md) ---
    let mut named_tokens = match env
        .get("HUNTER_API_TOKENS")
        .map(|v| (v.to_owned(), "HUNTER_API_TOKENS"))
        .or_else(|| api.tokens.map(|s| (s.expose().to_owned(), "api.tokens")))
    {
        Some((value, setting)) => parse_named_tokens(&value, setting)?,
        None => Vec::new(),
    };
    // The single tokens of earlier versions keep working, as `admin` and `read`.
    for (secret, name, role, setting) in [
        (&token, "admin", TokenRole::Admin, "HUNTER_API_TOKEN"),
        (
            &read_token,
            "read",
            TokenRole::Read,
            "HUNTER_API_READ_TOKEN",
        ),
    ] {
        let Some(secret) = secret else { continue };
        if let Some(other) = named_tokens
            .iter()
            .find(|other| other.token.expose() == secret.expose())
        {
            if other.role != role {
                return Err(ConfigError::Invalid {
                    setting: "HUNTER_API_TOKENS".into(),
                    message: format!(
                        "`{}` has the token of {setting} with another role; give it its own token",
                        other.name
                    ),
                });
            }
            continue;
        }
        let name = if named_tokens.iter().any(|other| other.name == name) {
            setting.to_ascii_lowercase()
        } else {
            name.to_owned()
        };
        named_tokens.push(NamedToken {
            name,
            token: secret.clone(),
            role,
        });
    }
    // --- end named API tokens ---
    // --- the read model of the current leads (docs/api-read-model.md) ---
    let read_model = match src.text(
        "HUNTER_API_READ_MODEL",
        api.read_model.map(|on| on.to_string()),
        "api.read_model",
    ) {
        None => true,
        Some((value, setting)) => super::parse_bool(&setting, &value)?,
    };
    let read_model_rows = match src.text(
        "HUNTER_API_READ_MODEL_ROWS",
        api.read_model_rows.map(|on| on.to_string()),
        "api.read_model_rows",
    ) {
        None => true,
        Some((value, setting)) => super::parse_bool(&setting, &value)?,
    };
    // --- end read model ---
    Ok(ApiSettings {
        read_model,
        read_model_rows,
        named_tokens,
        listen,
        token,
        read_token,
        cors_origins,
        request_timeout: Duration::from_secs(request_timeout_secs),
        cache_ttl: Duration::from_millis(cache_ms),
    })
}
