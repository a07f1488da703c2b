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

mod error;
mod paging;
mod request;
mod retry;
// `{api}/webhooks/registration`: Partner Center webhooks (docs/partner-center-webhooks.md).
mod webhooks;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::value::RawValue;
use time::OffsetDateTime;
use url::Url;

pub use retry::{MAX_RETRY_AFTER, Sleep, TokioSleep, backoff_delay, parse_retry_after};

use hunter_core::records::Referral;
use hunter_core::records::referral::check_id;

use crate::auth::TokenProvider;

pub use error::ClientError;
pub use paging::odata_timestamp;
use paging::{decode_page, encode_query_value, resolve_next_link, skiptoken_fallback};
use request::{Outgoing, decode_entity, decode_patched};
pub use webhooks::{REFERRAL_EVENTS, WebhookRegistration, redact_token};

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

/// What a PATCH returned.
#[derive(Debug)]
pub struct Patched {
    /// The referral after the change (200), or `None` when the service answered 204.
    pub referral: Option<Box<RawValue>>,
    /// The service's `request-id` header.
    pub request_id: Option<String>,
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

    /// `PATCH {api}/referrals/{id}` with a JSON Patch document, `If-Match: <etag>` (when given)
    /// and `Prefer: return=representation`. Retries like every call (429, 5xx, timeouts, a
    /// cut-off reply): a repeat of a PATCH that was applied but whose reply was lost answers
    /// 412, because the eTag moved on, so the caller must read a 412 as "maybe mine" and compare
    /// the current referral with what it asked for. 4xx are `ClientError::Client` with the
    /// body's start.
    pub async fn patch_referral(
        &self,
        id: &str,
        operations: &serde_json::Value,
        if_match: Option<&str>,
    ) -> Result<Patched, ClientError> {
        check_id(id).map_err(|what| ClientError::Invalid(format!("referral id {what}")))?;
        let mut url = self.collection_url.clone();
        url.path_segments_mut()
            .map_err(|()| ClientError::Invalid("api_url cannot have a path".to_owned()))?
            .push(id);
        let body = serde_json::to_vec(operations)
            .map_err(|error| ClientError::Invalid(format!("json patch: {error}")))?;
        self.send_with_retries(
            "patch",
            &url,
            Outgoing::Patch {
                body: &body,
                if_match,
            },
            decode_patched,
        )
        .await
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
}

#[cfg(test)]
mod tests;
