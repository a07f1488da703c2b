//! Sign-in to Microsoft Entra ID for the Partner Center Referrals API (App+User tokens).
//!
//! One interactive device code sign-in (`hunter auth login`, MFA included) writes the token cache;
//! every later run reads it and refreshes silently with the refresh-token grant.
//!
//! Invariants:
//! - Entra rotates refresh tokens: the new one is written to the cache (atomically, mode 0600)
//!   *before* the access token that came with it is handed out, so a crash can never leave the
//!   cache holding only a refresh token older than the one last used.
//! - One refresh at a time per [`TokenProvider`] (a tokio mutex held across the grant).
//! - Errors branch on the token endpoint's `error` and `error_codes`, never on description text.
//! - No token, refresh token or client secret ever reaches a log line, `Debug` output or an
//!   error message: they only live in [`Secret`].
//!
//! Failure modes: a refresh token idle for 90 days (AADSTS700082), missing admin consent
//! (AADSTS65001), public client flows disabled (AADSTS7000218), a declined or expired device code
//! all end in [`AuthError::SignInRequired`] with a hint; an unreachable or failing authority is a
//! retryable [`AuthError::Network`].

mod cache;
mod entra;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use oauth2::{
    AuthType, ClientId, ClientSecret, DeviceAuthorizationResponse, DeviceAuthorizationUrl,
    RefreshToken, Scope, TokenResponse, TokenUrl,
};
use time::OffsetDateTime;
use url::Url;

pub use cache::TokenCacheFile;
use entra::{AuthorityHttp, EntraClient, EntraDeviceFields, EntraTokenResponse};

use crate::telemetry;

/// The scope that works for the Referrals API on Entra's v2 endpoints.
pub const DEFAULT_SCOPE: &str = "https://api.partner.microsoft.com/.default offline_access";
/// Entra's public cloud login authority (no tenant).
pub const DEFAULT_AUTHORITY: &str = "https://login.microsoftonline.com";
/// Refresh an access token this long before it expires.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);
/// Entra expires a refresh token after this long without use.
pub const REFRESH_TOKEN_IDLE_LIMIT: Duration = Duration::from_secs(90 * 24 * 3600);

/// A token, refresh token or client secret: one type for every secret in Hunter.
pub use hunter_core::config::Secret;

/// Where and as whom to sign in.
#[derive(Clone, Debug)]
pub struct AuthSettings {
    /// Login authority without tenant, e.g. `https://login.microsoftonline.com` (or the
    /// simulator's address).
    pub authority_url: Url,
    /// Partner tenant: GUID or verified domain (`organizations` also works for work accounts).
    pub tenant_id: String,
    /// App registration's application (client) id.
    pub client_id: String,
    /// Only for confidential (web) registrations; public clients must not send one.
    pub client_secret: Option<Secret>,
    /// Space-separated scopes for token requests; must include `offline_access` to get a
    /// refresh token.
    pub scope: String,
    /// Token cache file (JSON, mode 0600).
    pub token_cache: PathBuf,
}

impl AuthSettings {
    /// Settings for Entra's public cloud with the default scope and a public client.
    pub fn new(
        tenant_id: impl Into<String>,
        client_id: impl Into<String>,
        token_cache: PathBuf,
    ) -> Self {
        Self {
            authority_url: Url::parse(DEFAULT_AUTHORITY).expect("constant url"),
            tenant_id: tenant_id.into(),
            client_id: client_id.into(),
            client_secret: None,
            scope: DEFAULT_SCOPE.to_owned(),
            token_cache,
        }
    }

    fn endpoint(&self, leaf: &str) -> Result<Url, AuthError> {
        let mut url = self.authority_url.clone();
        url.set_query(None);
        url.set_fragment(None);
        url.path_segments_mut()
            .map_err(|()| AuthError::Protocol("the authority url cannot have a path".to_owned()))?
            .pop_if_empty()
            .extend([self.tenant_id.as_str(), "oauth2", "v2.0", leaf]);
        Ok(url)
    }

    fn client(&self) -> Result<EntraClient, AuthError> {
        let client: EntraClient = oauth2::Client::new(ClientId::new(self.client_id.clone()))
            // Entra documents the secret as a form field; the client id always goes in the body.
            .set_auth_type(AuthType::RequestBody)
            .set_token_uri(TokenUrl::from_url(self.endpoint("token")?))
            .set_device_authorization_url(DeviceAuthorizationUrl::from_url(
                self.endpoint("devicecode")?,
            ));
        Ok(match &self.client_secret {
            Some(secret) => client.set_client_secret(ClientSecret::new(secret.expose().to_owned())),
            None => client,
        })
    }

    fn scopes(&self) -> Vec<Scope> {
        self.scope
            .split_whitespace()
            .map(|s| Scope::new(s.to_owned()))
            .collect()
    }
}

/// What the operator must do to finish a device code sign-in.
#[derive(Clone, Debug)]
pub struct DevicePrompt {
    /// Page to open in any browser (`https://microsoft.com/devicelogin`).
    pub verification_uri: String,
    /// Code to type on that page.
    pub user_code: String,
    /// Entra's ready-made instruction text (or one built from the two above).
    pub message: String,
    /// How long the code stays valid.
    pub expires_in: Duration,
}

/// Why a sign-in or refresh failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No token cache yet.
    #[error("token cache missing at {}: run `hunter auth login`", path.display())]
    CacheMissing {
        /// Where the cache was expected.
        path: PathBuf,
    },
    /// The authority refused; only a new interactive sign-in (or an admin) can fix it.
    #[error("sign-in required ({code}): {hint}")]
    SignInRequired {
        /// `AADSTS<n>` when Entra sent `error_codes`, else the OAuth `error` (`invalid_grant`).
        code: String,
        /// What to do next.
        hint: String,
    },
    /// The authority could not be reached, timed out or answered 5xx/429: retry later.
    #[error("{0}")]
    Network(String),
    /// The token cache could not be read or written.
    #[error("token cache {}: {error}", path.display())]
    Cache {
        /// The cache file.
        path: PathBuf,
        /// What went wrong (never quotes the file's contents).
        error: io::Error,
    },
    /// The authority answered something this client does not understand.
    #[error("login protocol error: {0}")]
    Protocol(String),
}

impl AuthError {
    /// Whether trying the same thing again later may succeed without anyone's help.
    pub fn is_retryable(&self) -> bool {
        matches!(self, AuthError::Network(_))
    }
}

/// Runs the device code flow and writes the token cache.
///
/// POSTs `{authority}/{tenant}/oauth2/v2.0/devicecode` (the configured scope plus `openid
/// profile`, for the account name), shows `prompt` once, then polls
/// `{authority}/{tenant}/oauth2/v2.0/token` every `interval` seconds (plus 5 s per `slow_down`),
/// until the user signs in, declines, or the code expires.
pub async fn login_with_device_code(
    settings: &AuthSettings,
    mut prompt: impl FnMut(&DevicePrompt),
) -> Result<TokenCacheFile, AuthError> {
    let http = AuthorityHttp::new()?;
    let client = settings.client()?;
    let mut scopes = settings.scopes();
    for extra in ["openid", "profile"] {
        if !scopes.iter().any(|scope| scope.as_str() == extra) {
            scopes.push(Scope::new(extra.to_owned()));
        }
    }
    let details: DeviceAuthorizationResponse<EntraDeviceFields> = client
        .exchange_device_code()
        .add_scopes(scopes)
        .request_async(&http)
        .await
        .map_err(|error| entra::classify(error, http.take_failure()))?;

    let verification_uri = details.verification_uri().to_string();
    let user_code = details.user_code().secret().clone();
    let message = details.extra_fields().message.clone().unwrap_or_else(|| {
        format!("To sign in, open {verification_uri} in a browser and enter the code {user_code}.")
    });
    prompt(&DevicePrompt {
        verification_uri,
        user_code,
        message,
        expires_in: details.expires_in(),
    });
    tracing::info!(
        tenant = %settings.tenant_id,
        expires_in_s = details.expires_in().as_secs(),
        interval_s = details.interval().as_secs(),
        "waiting for the device code sign-in"
    );

    let token = client
        .exchange_device_access_token(&details)
        .request_async(&http, tokio::time::sleep, None)
        .await
        .map_err(|error| entra::classify(error, http.take_failure()))?;

    let now = OffsetDateTime::now_utc();
    let refresh_token = token.refresh_token().ok_or_else(|| {
        AuthError::Protocol(
            "the sign-in reply has no refresh token: add offline_access to the scope".to_owned(),
        )
    })?;
    let cache = TokenCacheFile {
        tenant: settings.tenant_id.clone(),
        client_id: settings.client_id.clone(),
        scope: settings.scope.clone(),
        access_token: Secret::new(token.access_token().secret().clone()),
        access_token_expires_at: now + access_token_lifetime(&token),
        refresh_token: Secret::new(refresh_token.secret().clone()),
        refresh_token_obtained_at: now,
        account: account_of(&token),
    };
    save(&cache, &settings.token_cache).await?;
    tracing::info!(
        tenant = %cache.tenant,
        account = cache.account.as_deref().unwrap_or("-"),
        path = %settings.token_cache.display(),
        "signed in, token cache written"
    );
    Ok(cache)
}

fn access_token_lifetime(token: &EntraTokenResponse) -> Duration {
    // Entra always sends expires_in on v2; an hour is its documented default otherwise. A wrong
    // guess costs one 401 and a refresh.
    token.expires_in().unwrap_or(Duration::from_secs(3600))
}

fn account_of(token: &EntraTokenResponse) -> Option<String> {
    token
        .extra_fields()
        .id_token
        .as_ref()
        .and_then(|id_token| account_from_id_token(id_token.expose()))
}

/// `preferred_username` (or `upn`) of a JWT's payload, read without verifying the signature:
/// it is only shown to operators, never trusted for access decisions.
pub(crate) fn account_from_id_token(jwt: &str) -> Option<String> {
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    ["preferred_username", "upn", "unique_name", "email"]
        .iter()
        .find_map(|claim| claims.get(claim)?.as_str())
        .map(str::to_owned)
}

async fn save(cache: &TokenCacheFile, path: &Path) -> Result<(), AuthError> {
    let cache = cache.clone();
    let path_owned = path.to_path_buf();
    tokio::task::spawn_blocking(move || cache.save(&path_owned))
        .await
        .map_err(|error| AuthError::Cache {
            path: path.to_path_buf(),
            error: io::Error::other(format!("writer task failed: {error}")),
        })?
}

/// Size and modification time of the cache file, to notice another process rewriting it
/// (`hunter auth login` while the source runs).
type FileStamp = (Option<SystemTime>, u64);

struct ProviderState {
    /// The cache as last read or written by us.
    cache: Option<TokenCacheFile>,
    /// Stamp of the file when `cache` was read or written.
    stamp: Option<FileStamp>,
    /// Created on first refresh, so that `TokenProvider::new` cannot fail.
    http: Option<AuthorityHttp>,
}

/// Hands out access tokens from the cache, refreshing them silently.
pub struct TokenProvider {
    settings: AuthSettings,
    /// Held across a refresh: one refresh at a time, and readers wait for its result.
    state: tokio::sync::Mutex<ProviderState>,
}

impl fmt::Debug for TokenProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenProvider")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl TokenProvider {
    /// A provider reading and refreshing `settings.token_cache`. Does no I/O.
    pub fn new(settings: AuthSettings) -> Self {
        Self {
            settings,
            state: tokio::sync::Mutex::new(ProviderState {
                cache: None,
                stamp: None,
                http: None,
            }),
        }
    }

    /// The settings this provider signs in with.
    pub fn settings(&self) -> &AuthSettings {
        &self.settings
    }

    /// A valid access token: the cached one, or a refreshed one when it expires within
    /// [`REFRESH_MARGIN`].
    pub async fn access_token(&self) -> Result<Secret, AuthError> {
        let mut state = self.state.lock().await;
        let cache = self.current(&mut state).await?;
        let remaining = cache.access_token_expires_at - OffsetDateTime::now_utc();
        if remaining > REFRESH_MARGIN {
            return Ok(cache.access_token);
        }
        tracing::debug!(
            remaining_s = remaining.whole_seconds(),
            "access token expires soon, refreshing"
        );
        self.refresh_locked(&mut state, cache).await
    }

    /// Refreshes now, whatever the cached expiry says (the API answered 401).
    pub async fn refresh_now(&self) -> Result<Secret, AuthError> {
        let mut state = self.state.lock().await;
        let cache = self.current(&mut state).await?;
        self.refresh_locked(&mut state, cache).await
    }

    /// The cache, re-read when the file changed since we last read or wrote it.
    async fn current(&self, state: &mut ProviderState) -> Result<TokenCacheFile, AuthError> {
        let path = &self.settings.token_cache;
        let stamp = match tokio::fs::metadata(path).await {
            Ok(metadata) => (metadata.modified().ok(), metadata.len()),
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                return Err(AuthError::CacheMissing { path: path.clone() });
            }
            Err(error) => {
                return Err(AuthError::Cache {
                    path: path.clone(),
                    error,
                });
            }
        };
        if let (Some(cache), Some(known)) = (&state.cache, state.stamp)
            && known == stamp
        {
            return Ok(cache.clone());
        }
        let path_owned = path.clone();
        let loaded = tokio::task::spawn_blocking(move || TokenCacheFile::load(&path_owned))
            .await
            .map_err(|error| AuthError::Cache {
                path: path.clone(),
                error: io::Error::other(format!("reader task failed: {error}")),
            })??
            .ok_or_else(|| AuthError::CacheMissing { path: path.clone() })?;
        if loaded.tenant != self.settings.tenant_id || loaded.client_id != self.settings.client_id {
            return Err(AuthError::SignInRequired {
                code: "cache_mismatch".to_owned(),
                hint: format!(
                    "the token cache belongs to tenant {} and client {}, not the configured ones: \
                     run `hunter auth login`",
                    loaded.tenant, loaded.client_id
                ),
            });
        }
        state.cache = Some(loaded.clone());
        state.stamp = Some(stamp);
        Ok(loaded)
    }

    async fn refresh_locked(
        &self,
        state: &mut ProviderState,
        cache: TokenCacheFile,
    ) -> Result<Secret, AuthError> {
        if state.http.is_none() {
            state.http = Some(AuthorityHttp::new()?);
        }
        let http = state.http.as_ref().expect("just set");
        let client = self.settings.client()?;
        let refresh_token = RefreshToken::new(cache.refresh_token.expose().to_owned());
        let token = match client
            .exchange_refresh_token(&refresh_token)
            .add_scopes(self.settings.scopes())
            .request_async(http)
            .await
        {
            Ok(token) => token,
            Err(error) => {
                let error = entra::classify(error, http.take_failure());
                telemetry::token_refreshed(Err(&error));
                return Err(error);
            }
        };

        let now = OffsetDateTime::now_utc();
        let mut next = cache;
        next.access_token = Secret::new(token.access_token().secret().clone());
        next.access_token_expires_at = now + access_token_lifetime(&token);
        if let Some(rotated) = token.refresh_token() {
            next.refresh_token = Secret::new(rotated.secret().clone());
            next.refresh_token_obtained_at = now;
        }
        if let Some(account) = account_of(&token) {
            next.account = Some(account);
        }
        // The rotated refresh token must be durable before its access token is used.
        if let Err(error) = save(&next, &self.settings.token_cache).await {
            telemetry::token_refreshed(Err(&error));
            return Err(error);
        }
        let stamp = tokio::fs::metadata(&self.settings.token_cache)
            .await
            .ok()
            .map(|metadata| (metadata.modified().ok(), metadata.len()));
        state.stamp = stamp;
        state.cache = Some(next.clone());
        telemetry::token_refreshed(Ok(()));
        Ok(next.access_token)
    }
}

/// What `hunter auth status` shows.
#[derive(Clone, Debug)]
pub struct AuthStatus {
    /// Signed-in user, if the id token named one.
    pub account: Option<String>,
    /// Tenant of the cached tokens.
    pub tenant: String,
    /// When the cached access token expires (it is refreshed on next use if so).
    pub access_token_expires_at: OffsetDateTime,
    /// Time since the refresh token was issued (Entra's limit is 90 days without use).
    pub refresh_token_age: Duration,
    /// Whether only a new `hunter auth login` can fix things.
    pub needs_login: bool,
    /// One line for humans: `ok: ...`, `warning: ...` or `sign-in required: ...`.
    pub verdict: String,
}

/// Reads the token cache and judges it, without contacting the authority.
pub fn auth_status(settings: &AuthSettings) -> Result<AuthStatus, AuthError> {
    let cache =
        TokenCacheFile::load(&settings.token_cache)?.ok_or_else(|| AuthError::CacheMissing {
            path: settings.token_cache.clone(),
        })?;
    Ok(AuthStatus::judge(
        settings,
        &cache,
        OffsetDateTime::now_utc(),
    ))
}

impl AuthStatus {
    fn judge(settings: &AuthSettings, cache: &TokenCacheFile, now: OffsetDateTime) -> Self {
        let age = now - cache.refresh_token_obtained_at;
        let refresh_token_age = Duration::try_from(age).unwrap_or(Duration::ZERO);
        let idle_days = refresh_token_age.as_secs() / 86_400;
        let limit_days = REFRESH_TOKEN_IDLE_LIMIT.as_secs() / 86_400;
        let access_left = cache.access_token_expires_at - now;
        let (needs_login, verdict) = if cache.tenant != settings.tenant_id
            || cache.client_id != settings.client_id
        {
            (
                true,
                format!(
                    "sign-in required: the cache is for tenant {} and client {}, not the \
                     configured ones: run `hunter auth login`",
                    cache.tenant, cache.client_id
                ),
            )
        } else if refresh_token_age >= REFRESH_TOKEN_IDLE_LIMIT {
            (
                true,
                format!(
                    "sign-in required: the refresh token is {idle_days} days old and Entra \
                     expires it after {limit_days} days without use: run `hunter auth login`"
                ),
            )
        } else if refresh_token_age >= REFRESH_TOKEN_IDLE_LIMIT - Duration::from_secs(10 * 86_400) {
            (
                false,
                format!(
                    "warning: the refresh token is {idle_days} days old and expires after \
                     {limit_days} days without use: let a sync run or run `hunter auth login`"
                ),
            )
        } else if access_left.is_negative() {
            (
                false,
                "ok: the access token has expired and will be refreshed on next use".to_owned(),
            )
        } else {
            (
                false,
                format!(
                    "ok: access token valid for {} more minutes, refresh token {idle_days} days old",
                    access_left.whole_minutes()
                ),
            )
        };
        AuthStatus {
            account: cache.account.clone(),
            tenant: cache.tenant.clone(),
            access_token_expires_at: cache.access_token_expires_at,
            refresh_token_age,
            needs_login,
            verdict,
        }
    }
}

#[cfg(test)]
mod tests;
