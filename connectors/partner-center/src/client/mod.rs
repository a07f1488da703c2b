//! The Partner Center Referrals API client: list pages, follow `@odata.nextLink`, get by id.
//!
//! Every public call retries inside itself:
//!
//! - retryable: 429, 500, 502, 503, 504, 408, timeouts, connection errors, a body that is not
//!   valid JSON (truncated), and a login authority that is unreachable;
//! - the delay is the server's `Retry-After` (seconds or HTTP date) when present, else
//!   exponential backoff with full jitter: uniform in `0..=min(cap, base * 2^(retry-1))`;
//! - a 401 refreshes the access token once and retries once (that retry does not use up an
//!   attempt); a second 401 fails;
//! - 400, 403 and other 4xx fail at once; 404 on [`PartnerCenterClient::get_referral`] is
//!   `Ok(None)`;
//! - after `max_attempts` attempts the last error is returned; if it carried a `Retry-After`,
//!   the next call (a new poll, a manual sync) waits out what is left of it before its first
//!   attempt, so a client that gave up never calls again sooner than the service asked.
//!
//! Each call sends a fresh `MS-CorrelationId` (shared by its retries so the service can tie them
//! together) and a fresh `client-request-id` per HTTP attempt. Logs carry the service's
//! `request-id`, the status and the attempt number, never the token.
//!
//! Page items are kept as the exact JSON text the service sent ([`RawValue`]): parsing into a
//! model is the caller's business, so unknown or drifting fields are never lost here.
//!
//! Bodies are read as they arrive and never beyond a cap: a reply body larger than
//! [`ClientSettings::max_body_bytes`] (by its `Content-Length`, or once the bytes read pass it)
//! is a `decode` error naming the cap, not retried; error bodies are read up to 64 KiB.

mod retry;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use reqwest::StatusCode;
use reqwest::header::{ACCEPT, HeaderMap, RETRY_AFTER};
use serde::Deserialize;
use serde_json::value::RawValue;
use time::OffsetDateTime;
use url::Url;
use uuid::Uuid;

pub use retry::{MAX_RETRY_AFTER, Sleep, TokioSleep, backoff_delay, parse_retry_after};

use hunter_core::records::Referral;
use hunter_core::records::referral::check_id;

use crate::auth::{AuthError, Secret, TokenProvider};
use crate::telemetry;

/// The most of an error reply's body that is read (only its start is reported).
const ERROR_BODY_MAX: usize = 64 * 1024;

/// The real service, up to `/v1.0/engagements`.
pub const DEFAULT_API_URL: &str = "https://api.partner.microsoft.com/v1.0/engagements";

/// How to reach the Referrals API and how hard to try.
#[derive(Clone, Debug)]
pub struct ClientSettings {
    /// Base up to `/v1.0/engagements`; `referrals` is appended.
    pub api_url: Url,
    /// `$top` of the first page (the service's documented maximum is 100).
    pub page_size: u32,
    /// Whole-request timeout (connect, headers and body).
    pub request_timeout: Duration,
    /// Attempts per call, the first included.
    pub max_attempts: u32,
    /// First backoff ceiling; doubles per retry.
    pub backoff_base: Duration,
    /// Largest backoff ceiling.
    pub backoff_cap: Duration,
    /// Bytes of a reply body read at most (see [`ClientSettings::body_cap`]); a larger body is
    /// a `decode` error.
    pub max_body_bytes: usize,
}

impl ClientSettings {
    /// The body cap for pages of `page_size` referrals: room for a page of that many referrals
    /// of the largest size Hunter accepts ([`Referral::MAX_JSON_BYTES`], 1 MiB), counting at
    /// least 100 of them (the service's documented `$top` maximum, so a service that sends
    /// full pages whatever was asked still fits), plus 1 MiB for the envelope: 101 MiB for
    /// every page size up to 100. A page over it means referrals far beyond that size; a
    /// smaller `HUNTER_PARTNER_CENTER_PAGE_SIZE` gives smaller pages.
    pub fn body_cap(page_size: u32) -> usize {
        let referrals = usize::try_from(page_size.max(100)).unwrap_or(usize::MAX);
        referrals
            .saturating_add(1)
            .saturating_mul(Referral::MAX_JSON_BYTES)
    }
}

impl Default for ClientSettings {
    fn default() -> Self {
        Self {
            api_url: Url::parse(DEFAULT_API_URL).expect("constant url"),
            page_size: 100,
            request_timeout: Duration::from_secs(60),
            max_attempts: 6,
            backoff_base: Duration::from_secs(2),
            backoff_cap: Duration::from_secs(300),
            max_body_bytes: Self::body_cap(100),
        }
    }
}

/// One page of referrals.
#[derive(Debug)]
pub struct Page {
    /// Each referral's exact JSON text, in the order the service sent them.
    pub items: Vec<Box<RawValue>>,
    /// `@odata.nextLink`: absent on the last page (a short page is not the end).
    pub next_link: Option<String>,
    /// The service's `request-id` header, for support cases.
    pub request_id: Option<String>,
}

/// Why a Referrals API call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No usable access token.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// HTTP 429.
    #[error("partner center throttled the request (http 429{})", fmt_retry_after(*retry_after))]
    RateLimited {
        /// The server's `Retry-After`, if it sent one.
        retry_after: Option<Duration>,
    },
    /// Connection refused or reset, DNS failure, body cut off mid-stream.
    #[error("network error calling partner center: {0}")]
    Network(String),
    /// No complete reply within the request timeout (or HTTP 408).
    #[error("partner center request timed out")]
    Timeout,
    /// HTTP 5xx.
    #[error("partner center server error: http {status}{}", fmt_retry_after(*retry_after))]
    Server {
        /// HTTP status.
        status: u16,
        /// The server's `Retry-After`, if it sent one (503 may).
        retry_after: Option<Duration>,
    },
    /// HTTP 4xx other than 408 and 429 (a second 401, 400 bad `$filter`, 403 missing role, ...).
    #[error("partner center rejected the request: http {status}: {body_snippet}")]
    Client {
        /// HTTP status.
        status: u16,
        /// Start of the error body (the service's error JSON).
        body_snippet: String,
    },
    /// The body is not the JSON expected.
    #[error("partner center reply could not be decoded: {message}")]
    Decode {
        /// Where and how decoding failed (never quotes the body).
        message: String,
        /// Not valid JSON at all (cut off): retried. Valid JSON of the wrong shape is not.
        truncated: bool,
    },
    /// An `@odata.nextLink` that must not be followed with our token.
    #[error("@odata.nextLink {reason}")]
    NextLink {
        /// What is wrong with it.
        reason: String,
    },
    /// A request this client will not send (bad settings, an empty or odd id).
    #[error("invalid request: {0}")]
    Invalid(String),
}

fn fmt_retry_after(retry_after: Option<Duration>) -> String {
    retry_after.map_or_else(String::new, |delay| {
        format!(", retry after {} s", delay.as_secs_f64())
    })
}

impl ClientError {
    /// Whether the same call may succeed later without anyone's help.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Auth(error) => error.is_retryable(),
            ClientError::RateLimited { .. } | ClientError::Network(_) | ClientError::Timeout => {
                true
            }
            ClientError::Server { status, .. } => matches!(status, 500 | 502 | 503 | 504),
            ClientError::Decode { truncated, .. } => *truncated,
            ClientError::Client { .. } | ClientError::NextLink { .. } | ClientError::Invalid(_) => {
                false
            }
        }
    }

    /// The server's `Retry-After`, which takes precedence over backoff.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ClientError::RateLimited { retry_after } | ClientError::Server { retry_after, .. } => {
                *retry_after
            }
            _ => None,
        }
    }

    /// HTTP status, when the service answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::RateLimited { .. } => Some(429),
            ClientError::Server { status, .. } | ClientError::Client { status, .. } => {
                Some(*status)
            }
            _ => None,
        }
    }

    /// A bounded label for metrics and logs.
    fn reason(&self) -> &'static str {
        match self {
            ClientError::Auth(_) => "auth",
            ClientError::RateLimited { .. } => "429",
            ClientError::Network(_) => "network",
            ClientError::Timeout => "timeout",
            ClientError::Server { .. } => "5xx",
            ClientError::Client { .. } => "4xx",
            ClientError::Decode { .. } => "decode",
            ClientError::NextLink { .. } | ClientError::Invalid(_) => "invalid",
        }
    }

    fn from_reqwest(error: reqwest::Error) -> Self {
        if error.is_timeout() {
            return ClientError::Timeout;
        }
        let mut text = error.to_string();
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        ClientError::Network(text)
    }
}

/// What one successful HTTP attempt returned.
struct Fetched {
    /// The whole body.
    body: Vec<u8>,
    /// The service's `request-id` header.
    request_id: Option<String>,
}

#[derive(Deserialize)]
struct PageWire {
    value: Vec<Box<RawValue>>,
    #[serde(rename = "@odata.nextLink", default)]
    next_link: Option<String>,
}

/// Talks to the Referrals API with tokens from a [`TokenProvider`].
pub struct PartnerCenterClient {
    settings: ClientSettings,
    /// `{api_url}/referrals`.
    collection_url: Url,
    http: reqwest::Client,
    tokens: Arc<TokenProvider>,
    sleep: Arc<dyn Sleep>,
    /// Until when the service asked us to wait, set by a call that gave up on a `Retry-After`
    /// (within a call, the retry loop waits it out itself).
    hold_off_until: std::sync::Mutex<Option<Instant>>,
}

impl std::fmt::Debug for PartnerCenterClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartnerCenterClient")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl PartnerCenterClient {
    /// A client for `settings.api_url`; does no I/O.
    pub fn new(settings: ClientSettings, tokens: Arc<TokenProvider>) -> Result<Self, ClientError> {
        if settings.max_attempts == 0 {
            return Err(ClientError::Invalid(
                "max_attempts must be at least 1".to_owned(),
            ));
        }
        if settings.page_size == 0 {
            return Err(ClientError::Invalid(
                "page_size must be at least 1".to_owned(),
            ));
        }
        let mut collection_url = settings.api_url.clone();
        collection_url.set_query(None);
        collection_url.set_fragment(None);
        collection_url
            .path_segments_mut()
            .map_err(|()| ClientError::Invalid("api_url cannot have a path".to_owned()))?
            .pop_if_empty()
            .push("referrals");
        let http = reqwest::Client::builder()
            .timeout(settings.request_timeout)
            .connect_timeout(settings.request_timeout.min(Duration::from_secs(10)))
            // A redirect could carry the bearer token elsewhere; the API has no reason to send one.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("hunter/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| {
                ClientError::Invalid(format!("cannot build an http client: {error}"))
            })?;
        Ok(Self {
            settings,
            collection_url,
            http,
            tokens,
            sleep: Arc::new(TokioSleep),
            hold_off_until: std::sync::Mutex::new(None),
        })
    }

    /// Replaces how the client waits between attempts (tests make it instant).
    pub fn with_sleep(mut self, sleep: Arc<dyn Sleep>) -> Self {
        self.sleep = sleep;
        self
    }

    /// The settings in use.
    pub fn settings(&self) -> &ClientSettings {
        &self.settings
    }

    /// `GET {api}/referrals?$filter=updatedDateTime ge <ts>&$orderby=updatedDateTime asc&$top=N`
    /// (no `$filter` when `updated_since` is `None`).
    pub async fn first_page(
        &self,
        updated_since: Option<OffsetDateTime>,
    ) -> Result<Page, ClientError> {
        let url = self.first_page_url(updated_since);
        self.get_with_retries("list", &url, decode_page).await
    }

    /// Follows an `@odata.nextLink` as an opaque URL. On the API's own host an `http` link is
    /// upgraded to `https` when the API base is `https`; a link to any other host is refused
    /// (it would receive the token). If the link answers 404, its `$skiptoken` is retried on
    /// the collection URL (the docs show links without `/engagements`).
    pub async fn next_page(&self, next_link: &str) -> Result<Page, ClientError> {
        let url = resolve_next_link(&self.settings.api_url, next_link)?;
        match self.get_with_retries("next", &url, decode_page).await {
            Err(ClientError::Client {
                status: 404,
                body_snippet,
            }) => match skiptoken_fallback(&self.collection_url, &url) {
                Some(fallback) if fallback != url => {
                    tracing::warn!(
                        "next link answered 404, retrying its $skiptoken on the collection url"
                    );
                    self.get_with_retries("next", &fallback, decode_page).await
                }
                _ => Err(ClientError::Client {
                    status: 404,
                    body_snippet,
                }),
            },
            other => other,
        }
    }

    /// `GET {api}/referrals/{id}`: the referral's exact JSON text, or `None` on 404 (gone, or
    /// not visible to the signed-in user).
    pub async fn get_referral(&self, id: &str) -> Result<Option<Box<RawValue>>, ClientError> {
        if id.trim().is_empty() {
            return Err(ClientError::Invalid("referral id is empty".to_owned()));
        }
        check_id(id).map_err(|what| ClientError::Invalid(format!("referral id {what}")))?;
        let mut url = self.collection_url.clone();
        url.path_segments_mut()
            .map_err(|()| ClientError::Invalid("api_url cannot have a path".to_owned()))?
            .push(id);
        match self.get_with_retries("get", &url, decode_entity).await {
            Ok(raw) => Ok(Some(raw)),
            Err(ClientError::Client { status: 404, .. }) => Ok(None),
            Err(error) => Err(error),
        }
    }

    fn first_page_url(&self, updated_since: Option<OffsetDateTime>) -> Url {
        let mut query = Vec::new();
        if let Some(since) = updated_since {
            query.push(format!(
                "$filter={}",
                encode_query_value(&format!("updatedDateTime ge {}", odata_timestamp(since)))
            ));
        }
        query.push(format!(
            "$orderby={}",
            encode_query_value("updatedDateTime asc")
        ));
        query.push(format!("$top={}", self.settings.page_size));
        let mut url = self.collection_url.clone();
        url.set_query(Some(&query.join("&")));
        url
    }

    async fn get_with_retries<T>(
        &self,
        endpoint: &'static str,
        url: &Url,
        decode: fn(Fetched) -> Result<T, ClientError>,
    ) -> Result<T, ClientError> {
        let correlation_id = Uuid::new_v4();
        if let Some(wait) = self.take_hold_off() {
            tracing::info!(
                endpoint,
                wait_ms = wait.as_millis() as u64,
                "waiting out the retry-after of the last call before calling partner center again"
            );
            self.sleep.sleep(wait).await;
        }
        let mut attempt = 0;
        let mut refreshed_after_401 = false;
        let mut fresh_token = None;
        loop {
            attempt += 1;
            let token = match fresh_token.take() {
                Some(token) => Ok(token),
                None => self.tokens.access_token().await.map_err(ClientError::Auth),
            };
            let outcome = match token {
                Ok(token) => self
                    .attempt(endpoint, url, &token, correlation_id, attempt)
                    .await
                    .and_then(decode),
                Err(error) => Err(error),
            };
            let error = match outcome {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            if error.status() == Some(401) && !refreshed_after_401 {
                refreshed_after_401 = true;
                tracing::info!(
                    endpoint,
                    attempt,
                    "partner center answered 401, refreshing token"
                );
                fresh_token = Some(self.tokens.refresh_now().await?);
                // The retry after a refresh does not use up an attempt.
                attempt -= 1;
                continue;
            }
            if !error.is_retryable() || attempt >= self.settings.max_attempts {
                if let Some(delay) = error.retry_after() {
                    self.hold_off(delay);
                }
                return Err(error);
            }
            let delay = error.retry_after().unwrap_or_else(|| {
                backoff_delay(
                    self.settings.backoff_base,
                    self.settings.backoff_cap,
                    attempt,
                )
            });
            telemetry::api_retry_scheduled(endpoint, error.reason(), attempt, delay, &error);
            self.sleep.sleep(delay).await;
        }
    }

    /// The next call waits until `delay` from now (or longer, if already asked to).
    fn hold_off(&self, delay: Duration) {
        let until = Instant::now() + delay;
        let mut hold_off = self
            .hold_off_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *hold_off = Some(hold_off.map_or(until, |current| current.max(until)));
    }

    /// What is left of the hold-off, if any; clears it.
    fn take_hold_off(&self) -> Option<Duration> {
        let until = self
            .hold_off_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()?;
        let left = until.saturating_duration_since(Instant::now());
        (!left.is_zero()).then_some(left)
    }

    async fn attempt(
        &self,
        endpoint: &'static str,
        url: &Url,
        token: &Secret,
        correlation_id: Uuid,
        attempt: u32,
    ) -> Result<Fetched, ClientError> {
        let started = Instant::now();
        let sent = self
            .http
            .get(url.clone())
            .bearer_auth(token.expose())
            .header(ACCEPT, "application/json")
            .header("MS-CorrelationId", correlation_id.to_string())
            .header("client-request-id", Uuid::new_v4().to_string())
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(error) => {
                let error = ClientError::from_reqwest(error);
                telemetry::api_request_finished(
                    endpoint,
                    error.reason(),
                    attempt,
                    None,
                    started.elapsed(),
                );
                return Err(error);
            }
        };
        let status = response.status();
        let request_id = request_id(response.headers());
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| parse_retry_after(value, SystemTime::now()));
        let cap = if status.is_success() {
            self.settings.max_body_bytes
        } else {
            ERROR_BODY_MAX
        };
        let body = read_capped(response, cap).await;
        telemetry::api_request_finished(
            endpoint,
            status.as_str(),
            attempt,
            request_id.as_deref(),
            started.elapsed(),
        );
        let (body, complete) = body.map_err(ClientError::from_reqwest)?;
        if status.is_success() {
            if !complete {
                return Err(ClientError::Decode {
                    message: format!(
                        "the reply body is larger than its cap of {cap} bytes (a full page of \
                         referrals of up to 1 MiB each); lower HUNTER_PARTNER_CENTER_PAGE_SIZE \
                         for smaller pages"
                    ),
                    truncated: false,
                });
            }
            return Ok(Fetched { body, request_id });
        }
        Err(match status {
            StatusCode::REQUEST_TIMEOUT => ClientError::Timeout,
            StatusCode::TOO_MANY_REQUESTS => ClientError::RateLimited { retry_after },
            status if status.is_server_error() => ClientError::Server {
                status: status.as_u16(),
                retry_after,
            },
            status => ClientError::Client {
                status: status.as_u16(),
                body_snippet: snippet(&body),
            },
        })
    }
}

/// Reads a reply body as it arrives, at most `cap` bytes: the bytes read and whether that is the
/// whole body. A `Content-Length` over the cap reads nothing; a body without one stops being
/// read once it passes the cap. Memory stays bounded by the cap either way.
async fn read_capped(
    mut response: reqwest::Response,
    cap: usize,
) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let announced = response.content_length();
    if announced.is_some_and(|length| length > cap as u64) {
        return Ok((Vec::new(), false));
    }
    let mut body = Vec::with_capacity(announced.map_or(16 * 1024, |length| length as usize));
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > cap {
            let room = cap - body.len();
            body.extend_from_slice(&chunk[..room]);
            return Ok((body, false));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, true))
}

fn request_id(headers: &HeaderMap) -> Option<String> {
    ["request-id", "x-ms-request-id"]
        .iter()
        .find_map(|name| headers.get(*name)?.to_str().ok())
        .map(str::to_owned)
}

fn decode_page(fetched: Fetched) -> Result<Page, ClientError> {
    let wire: PageWire = serde_json::from_slice(&fetched.body).map_err(decode_error)?;
    Ok(Page {
        items: wire.value,
        next_link: wire.next_link.filter(|link| !link.trim().is_empty()),
        request_id: fetched.request_id,
    })
}

fn decode_entity(fetched: Fetched) -> Result<Box<RawValue>, ClientError> {
    let raw: Box<RawValue> = serde_json::from_slice(&fetched.body).map_err(decode_error)?;
    if !raw.get().starts_with('{') {
        return Err(ClientError::Decode {
            message: "expected a json object".to_owned(),
            truncated: false,
        });
    }
    Ok(raw)
}

fn decode_error(error: serde_json::Error) -> ClientError {
    use serde_json::error::Category;
    let truncated = matches!(error.classify(), Category::Eof | Category::Syntax);
    let what = if truncated {
        "not valid json (cut off?)"
    } else {
        "unexpected json shape"
    };
    // Position only: the message could quote referral data (customer names, emails).
    ClientError::Decode {
        message: format!("{what} at line {} column {}", error.line(), error.column()),
        truncated,
    }
}

/// At most 512 characters of an error body, on one line.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut snippet: String = text.chars().take(512).collect();
    if text.chars().count() > 512 {
        snippet.push('…');
    }
    snippet.replace(['\r', '\n'], " ")
}

/// An OData `DateTimeOffset` literal as the service writes them: UTC, 7 fraction digits, `Z`.
pub fn odata_timestamp(at: OffsetDateTime) -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:7]Z"
    );
    at.to_offset(time::UtcOffset::UTC)
        .format(&format)
        .expect("every utc date formats")
}

/// Percent-encodes a query value with `%20` for spaces (OData examples use `%20`, not `+`).
fn encode_query_value(value: &str) -> String {
    // byte_serialize writes a space as `+` and a literal `+` as `%2B`, so this swap is exact.
    url::form_urlencoded::byte_serialize(value.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// Where to GET an `@odata.nextLink`, or why not to.
fn resolve_next_link(api: &Url, link: &str) -> Result<Url, ClientError> {
    let mut url = api
        .join(link.trim())
        .map_err(|error| ClientError::NextLink {
            reason: format!("is not a url: {error}"),
        })?;
    let api_host = api.host_str().unwrap_or_default();
    if !url
        .host_str()
        .is_some_and(|host| host.eq_ignore_ascii_case(api_host))
    {
        return Err(ClientError::NextLink {
            reason: format!(
                "points at host {} instead of {api_host}: not sending the token there",
                url.host_str().unwrap_or("(none)")
            ),
        });
    }
    if api.scheme() == "https" && url.scheme() == "http" {
        // The docs show http:// next links on the real host; never send the token in clear.
        url.set_scheme("https")
            .map_err(|()| ClientError::NextLink {
                reason: "cannot be upgraded to https".to_owned(),
            })?;
        url.set_port(api.port())
            .map_err(|()| ClientError::NextLink {
                reason: "cannot take the api port".to_owned(),
            })?;
    }
    if url.scheme() != api.scheme() || url.port_or_known_default() != api.port_or_known_default() {
        return Err(ClientError::NextLink {
            reason: format!(
                "uses {}://…:{} but the api is {}://…:{}",
                url.scheme(),
                url.port_or_known_default().unwrap_or(0),
                api.scheme(),
                api.port_or_known_default().unwrap_or(0)
            ),
        });
    }
    Ok(url)
}

/// `{collection}?$skiptoken=<the link's skiptoken>`, if the link has one.
fn skiptoken_fallback(collection: &Url, link: &Url) -> Option<Url> {
    let token = link
        .query_pairs()
        .find(|(key, _)| key.eq_ignore_ascii_case("$skiptoken"))?
        .1;
    let mut url = collection.clone();
    url.set_query(Some(&format!("$skiptoken={}", encode_query_value(&token))));
    Some(url)
}

#[cfg(test)]
mod tests;
