//! `[partner_center]` and `[[partner_center.tenants]]`: the accounts to poll, their sign-in and
//! token caches, the API and authority URLs (with `allow_insecure_http`), the page size.

use super::*;

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

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FilePartnerCenter {
    pub(super) enabled: Option<bool>,
    pub(super) tenant_id: Option<String>,
    pub(super) client_id: Option<String>,
    pub(super) client_secret: Option<Secret>,
    pub(super) api_url: Option<String>,
    pub(super) authority_url: Option<String>,
    pub(super) scope: Option<String>,
    pub(super) token_cache: Option<PathBuf>,
    pub(super) page_size: Option<u32>,
    #[serde(default)]
    pub(super) tenants: Vec<FileTenant>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileTenant {
    pub(super) name: String,
    pub(super) tenant_id: String,
    pub(super) client_id: Option<String>,
    pub(super) client_secret: Option<Secret>,
    pub(super) token_cache: Option<PathBuf>,
}

/// What the partner center section yields: its settings, the top-level `allow_insecure_http`
/// (read here because it decides which of this section's URLs are allowed) and the flat client
/// secret (checked against placeholders once the other sections are read).
pub(super) struct PartnerCenterSection {
    pub(super) settings: PartnerCenterSettings,
    pub(super) allow_insecure_http: bool,
    pub(super) client_secret: Option<Secret>,
}

/// Reads `[partner_center]`, its tenants and their variables, naming the setting on failure.
pub(super) fn partner_center_settings(
    src: &Source<'_>,
    pc: FilePartnerCenter,
    allow_insecure_http: Option<bool>,
) -> Result<PartnerCenterSection, ConfigError> {
    let env = src.env;
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
    Ok(PartnerCenterSection {
        settings: partner_center,
        allow_insecure_http,
        client_secret,
    })
}
