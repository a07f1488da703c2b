//! The simulated login authority: Entra's v2 device code and refresh-token grants.
//!
//! Behaviour kept from Entra: the first poll of a device code answers `authorization_pending`
//! (AADSTS70016); every refresh returns a new refresh token and the old one stays valid; an
//! unknown or revoked refresh token is `invalid_grant` with AADSTS700082; errors are HTTP 400
//! with `error`, `error_description`, `error_codes`, `timestamp`, `trace_id`, `correlation_id`.
//!
//! Test controls (`/_simulator/...`): revoke every refresh token issued so far, expire every
//! access token issued so far. Tokens issued afterwards are not affected.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use rand::Rng as _;
use serde_json::json;

use super::{Simulator, json_response, lock};

const DEVICE_CODE_LIFETIME: Duration = Duration::from_secs(900);
const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
/// Who the simulator says signed in.
pub(crate) const DEMO_ACCOUNT: &str = "demo@simulator.local";

/// Everything the authority has issued.
#[derive(Default)]
pub(super) struct AuthBook {
    device_codes: HashMap<String, DeviceGrant>,
    /// Access token → expiry.
    access_tokens: HashMap<String, Instant>,
    /// Access tokens the API has accepted at least once.
    used_access_tokens: HashSet<String>,
    /// Refresh tokens issued and not revoked (rotation revokes none, like Entra).
    refresh_tokens: HashSet<String>,
}

/// What the API makes of a bearer token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum AccessTokenState {
    /// Issued here and not expired.
    Valid,
    /// Issued here, but past its lifetime or expired on purpose.
    Expired,
    /// Never issued here.
    Unknown,
}

struct DeviceGrant {
    expires_at: Instant,
    polls: u32,
}

impl AuthBook {
    pub(super) fn access_token_state(&self, token: &str, now: Instant) -> AccessTokenState {
        match self.access_tokens.get(token) {
            Some(expires_at) if *expires_at > now => AccessTokenState::Valid,
            Some(_) => AccessTokenState::Expired,
            None => AccessTokenState::Unknown,
        }
    }

    /// Notes that the API accepted `token`; returns whether this is its first use.
    pub(super) fn first_use(&mut self, token: &str) -> bool {
        self.used_access_tokens.insert(token.to_owned())
    }

    /// Expires one access token now (the `401` fault); returns whether it was known.
    pub(super) fn expire_access_token(&mut self, token: &str, now: Instant) -> bool {
        match self.access_tokens.get_mut(token) {
            Some(expires_at) => {
                *expires_at = (*expires_at).min(now);
                true
            }
            None => false,
        }
    }

    /// Expires every access token issued so far; returns how many were still valid.
    pub(super) fn expire_access_tokens(&mut self, now: Instant) -> usize {
        let mut expired = 0;
        for expires_at in self.access_tokens.values_mut() {
            if *expires_at > now {
                expired += 1;
                *expires_at = now;
            }
        }
        expired
    }

    /// Revokes every refresh token issued so far; returns how many there were.
    pub(super) fn revoke_refresh_tokens(&mut self) -> usize {
        let revoked = self.refresh_tokens.len();
        self.refresh_tokens.clear();
        revoked
    }
}

/// The `error` of a token endpoint reply, kept on the response for `/_simulator/stats`.
#[derive(Clone, Copy)]
struct TokenOutcome(&'static str);

fn random_token(prefix: &str, bytes: usize) -> String {
    let mut raw = vec![0u8; bytes];
    rand::rng().fill(raw.as_mut_slice());
    format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    )
}

fn user_code() -> String {
    const ALPHABET: &[u8] = b"BCDFGHJKLMNPQRSTVWXZ23456789";
    let mut rng = rand::rng();
    (0..9)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

fn form(body: &Bytes) -> HashMap<String, String> {
    url::form_urlencoded::parse(body)
        .map(|(key, value)| (key.into_owned(), value.into_owned()))
        .collect()
}

/// Entra's error reply.
fn entra_error(status: StatusCode, error: &'static str, code: u64, description: &str) -> Response {
    let trace_id = uuid::Uuid::new_v4();
    let correlation_id = uuid::Uuid::new_v4();
    let timestamp = time::OffsetDateTime::now_utc()
        .format(time::macros::format_description!(
            "[year]-[month]-[day] [hour]:[minute]:[second]Z"
        ))
        .unwrap_or_default();
    let body = json!({
        "error": error,
        "error_description": format!(
            "AADSTS{code}: {description} Trace ID: {trace_id} Correlation ID: {correlation_id} \
             Timestamp: {timestamp}"
        ),
        "error_codes": [code],
        "timestamp": timestamp,
        "trace_id": trace_id,
        "correlation_id": correlation_id,
        "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
    });
    let mut response = json_response(status, body.to_string());
    response.extensions_mut().insert(TokenOutcome(error));
    response
}

/// An unsigned JWT (`alg: none`) carrying the claims `hunter` reads.
fn id_token(issuer: &str, tenant: &str, client_id: &str) -> String {
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let header = json!({ "typ": "JWT", "alg": "none" });
    let claims = json!({
        "aud": client_id,
        "iss": issuer,
        "tid": tenant,
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
        "name": "Demo User",
        "preferred_username": DEMO_ACCOUNT,
        "oid": uuid::Uuid::new_v4(),
        "ver": "2.0",
    });
    format!(
        "{}.{}.",
        engine.encode(header.to_string()),
        engine.encode(claims.to_string())
    )
}

pub(super) async fn device_code(
    State(simulator): State<Arc<Simulator>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = form(&body);
    let response = if params.get("client_id").is_none_or(String::is_empty) {
        entra_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'client_id'.",
        )
    } else if params.get("scope").is_none_or(String::is_empty) {
        entra_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'scope'.",
        )
    } else {
        let device_code = random_token("simdc.", 32);
        let user_code = user_code();
        lock(&simulator.auth).device_codes.insert(
            device_code.clone(),
            DeviceGrant {
                expires_at: Instant::now() + DEVICE_CODE_LIFETIME,
                polls: 0,
            },
        );
        let verification_uri = format!("{}/devicelogin", simulator.base_url(&headers));
        tracing::info!(%tenant, %user_code, "simulator issued a device code");
        let body = json!({
            "device_code": device_code,
            "user_code": user_code,
            "verification_uri": verification_uri,
            "expires_in": DEVICE_CODE_LIFETIME.as_secs(),
            "interval": 1,
            "message": format!(
                "To sign in, use a web browser to open the page {verification_uri} and enter the \
                 code {user_code} to authenticate. (Simulator: nothing to do, the sign-in is \
                 approved on the second poll.)"
            ),
        });
        json_response(StatusCode::OK, body.to_string())
    };
    simulator.record("devicecode", response.status());
    response
}

pub(super) async fn token(
    State(simulator): State<Arc<Simulator>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = form(&body);
    let param = |name: &str| params.get(name).map(String::as_str).unwrap_or_default();
    let client_id = param("client_id");
    let grant = match param("grant_type") {
        DEVICE_CODE_GRANT | "device_code" => "device_code",
        "refresh_token" => "refresh_token",
        "" => "missing",
        _ => "unsupported",
    };
    let response = if client_id.is_empty() {
        entra_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'client_id'.",
        )
    } else {
        match param("grant_type") {
            DEVICE_CODE_GRANT | "device_code" => device_code_grant(
                &simulator,
                &headers,
                &tenant,
                client_id,
                param("device_code"),
            ),
            "refresh_token" => refresh_grant(
                &simulator,
                &headers,
                &tenant,
                client_id,
                param("refresh_token"),
                param("scope"),
            ),
            other => entra_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                70003,
                &format!("The app requested an unsupported grant type '{other}'."),
            ),
        }
    };
    simulator.record("token", response.status());
    let outcome = if response.status().is_success() {
        "ok"
    } else {
        response
            .extensions()
            .get::<TokenOutcome>()
            .map_or("error", |outcome| outcome.0)
    };
    simulator.record_token(grant, outcome);
    response
}

fn device_code_grant(
    simulator: &Simulator,
    headers: &HeaderMap,
    tenant: &str,
    client_id: &str,
    device_code: &str,
) -> Response {
    let now = Instant::now();
    let mut book = lock(&simulator.auth);
    let Some(grant) = book.device_codes.get_mut(device_code) else {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "bad_verification_code",
            70000,
            "The provided value for the input parameter 'device_code' is not valid.",
        );
    };
    if grant.expires_at <= now {
        book.device_codes.remove(device_code);
        return entra_error(
            StatusCode::BAD_REQUEST,
            "expired_token",
            70019,
            "Verification code expired.",
        );
    }
    grant.polls += 1;
    if grant.polls == 1 {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "authorization_pending",
            70016,
            "OAuth 2.0 device flow error. Authorization is pending. Continue polling.",
        );
    }
    book.device_codes.remove(device_code);
    let scope = "https://api.partner.microsoft.com/user_impersonation";
    issue_tokens(simulator, &mut book, headers, tenant, client_id, scope)
}

fn refresh_grant(
    simulator: &Simulator,
    headers: &HeaderMap,
    tenant: &str,
    client_id: &str,
    refresh_token: &str,
    scope: &str,
) -> Response {
    let mut book = lock(&simulator.auth);
    if !book.refresh_tokens.contains(refresh_token) {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            700082,
            "The refresh token has expired due to inactivity. The token was issued on \
             2023-01-01T00:00:00Z and was inactive for 90.00:00:00.",
        );
    }
    if scope.trim().is_empty() {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'scope'.",
        );
    }
    let scope = "https://api.partner.microsoft.com/user_impersonation";
    issue_tokens(simulator, &mut book, headers, tenant, client_id, scope)
}

fn issue_tokens(
    simulator: &Simulator,
    book: &mut AuthBook,
    headers: &HeaderMap,
    tenant: &str,
    client_id: &str,
    scope: &str,
) -> Response {
    let lifetime = simulator.opts.access_token_lifetime;
    let access_token = random_token("simat.", 32);
    let refresh_token = random_token("simrt.", 48);
    book.access_tokens
        .insert(access_token.clone(), Instant::now() + lifetime);
    book.refresh_tokens.insert(refresh_token.clone());
    let issuer = format!("{}/{tenant}/v2.0", simulator.base_url(headers));
    let body = json!({
        "token_type": "Bearer",
        "scope": scope,
        "expires_in": lifetime.as_secs(),
        "ext_expires_in": lifetime.as_secs(),
        "access_token": access_token,
        "refresh_token": refresh_token,
        "id_token": id_token(&issuer, tenant, client_id),
    });
    json_response(StatusCode::OK, body.to_string())
}

pub(super) async fn device_login_page(State(simulator): State<Arc<Simulator>>) -> Response {
    simulator.record("devicelogin", StatusCode::OK);
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        "<!doctype html><title>Partner Center simulator</title>\
         <p>This is the Partner Center simulator: there is nothing to enter here. \
         The device code sign-in is approved automatically on the second poll.</p>",
    )
        .into_response()
}
