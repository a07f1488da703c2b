//! `POST /api/v1/partner-center/webhooks`: Partner Center's `referral-created` and
//! `referral-updated` events turned into `fetch_referral` commands, so the source gets that
//! referral by id at once instead of at the next poll (docs/partner-center-webhooks.md).
//!
//! Partner Center does not send Hunter's bearer token, so this route sits outside the token
//! layer and authenticates by the shared secret of the registered callback URL (`?token=`,
//! `HUNTER_PARTNER_CENTER_WEBHOOK_SECRET`), compared in constant time. Without a secret the
//! route is off (404). In order, each step answering before the next runs:
//!
//! 1. no secret configured: 404; no `token`: 401; a wrong one: 401, and it costs the address
//!    like a wrong bearer token (`throttle.rs`: 429 past 10 a minute);
//! 2. a body that is not an event (not JSON, a field missing or odd, a `ResourceUri` that does
//!    not end in `/referrals/{id}`): 400 `invalid_event` naming the field; a `tenant` this
//!    deployment does not poll: 400 `invalid_parameter`;
//! 3. `test-created` (Partner Center's validation event): 200 `ignored`;
//! 4. the same referral and `ResourceChangeUtcDate` seen in the last [`DEDUPE_TTL`] (Partner
//!    Center retries a delivery it thinks failed): 200 `duplicate`, nothing queued;
//! 5. more than `HUNTER_PARTNER_CENTER_WEBHOOK_FETCHES_PER_MINUTE` fetches triggered by this
//!    address (the TCP peer; IPv6 by /64): 429 with `Retry-After`, nothing queued or
//!    remembered, so Partner Center's retry is taken later;
//! 6. the command is produced and acknowledged (else 503, and the event is forgotten so the
//!    retry goes through): 202 `queued` with its command id.
//!
//! Memory is bounded: [`DEDUPE_MAX`] events and [`MAX_SENDERS`] addresses. The dedupe is per
//! API process: behind several API replicas a repeated event can queue one fetch per replica,
//! which the source then skips as the same version (its `published` check). Losing an event
//! (any refusal, a full queue, a restart) loses freshness, never data: the poll reconciles.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hunter_core::records::{Command, Timestamp};
use hunter_core::telemetry::names;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{ApiError, ApiState, BODY_LIMIT_BYTES, constant_time_eq};

/// How long an event is remembered as seen.
pub const DEDUPE_TTL: Duration = Duration::from_secs(3600);
/// Events remembered at most; the oldest are forgotten first.
pub const DEDUPE_MAX: usize = 50_000;
/// Sender addresses whose fetch budget is tracked at most.
pub const MAX_SENDERS: usize = 10_000;

/// The events this receiver acts on, and the one it acknowledges without acting.
const REFERRAL_CREATED: &str = "referral-created";
const REFERRAL_UPDATED: &str = "referral-updated";
const TEST_CREATED: &str = "test-created";

/// A Partner Center webhook event, as Partner Center posts it.
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
pub struct PcWebhookEvent {
    /// `referral-created` or `referral-updated` (`test-created` is acknowledged and ignored).
    #[serde(rename = "EventName")]
    event_name: String,
    /// The referral's URI, ending in `/referrals/{id}`.
    #[serde(rename = "ResourceUri")]
    resource_uri: String,
    /// `referral`.
    #[serde(rename = "ResourceName", default)]
    resource_name: Option<String>,
    #[serde(rename = "AuditUri", default)]
    audit_uri: Option<String>,
    /// When the referral changed (RFC 3339, up to 7 fraction digits).
    #[serde(rename = "ResourceChangeUtcDate")]
    resource_change_utc_date: String,
}

/// An event that passed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
    Referral {
        referral_id: String,
        changed_at: OffsetDateTime,
    },
    /// `test-created`: acknowledged, nothing to fetch.
    Test,
}

/// Reads and checks one event body; `Err` says which field is wrong and why.
pub(crate) fn parse_event(body: &[u8]) -> Result<Event, (&'static str, String)> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|error| ("body", format!("not JSON: {error}")))?;
    if !value.is_object() {
        return Err(("body", "a webhook event is a JSON object".to_owned()));
    }
    let text = |name: &'static str| -> Result<Option<&str>, (&'static str, String)> {
        match value.get(name) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(text)) => Ok(Some(text.as_str())),
            Some(_) => Err((name, "must be a string".to_owned())),
        }
    };
    let required = |name: &'static str| -> Result<&str, (&'static str, String)> {
        text(name)?
            .filter(|t| !t.trim().is_empty())
            .ok_or((name, "is missing".to_owned()))
    };
    let event_name = required("EventName")?.trim().to_ascii_lowercase();
    if event_name == TEST_CREATED {
        return Ok(Event::Test);
    }
    if event_name != REFERRAL_CREATED && event_name != REFERRAL_UPDATED {
        return Err((
            "EventName",
            format!(
                "{event_name:?} is not an event this receiver takes ({REFERRAL_CREATED}, \
                 {REFERRAL_UPDATED}; register only those)"
            ),
        ));
    }
    if let Some(name) = text("ResourceName")?
        && !name.eq_ignore_ascii_case("referral")
    {
        return Err(("ResourceName", format!("{name:?} is not `referral`")));
    }
    let uri = required("ResourceUri")?;
    let referral_id = referral_id_of(uri).map_err(|message| ("ResourceUri", message))?;
    let date = required("ResourceChangeUtcDate")?;
    let changed_at = OffsetDateTime::parse(date.trim(), &Rfc3339).map_err(|error| {
        (
            "ResourceChangeUtcDate",
            format!("{date:?} is not an RFC 3339 time ({error})"),
        )
    })?;
    Ok(Event::Referral {
        referral_id,
        changed_at,
    })
}

/// The `{id}` of a URI ending in `/referrals/{id}` (a trailing slash, a query or a fragment
/// allowed), checked as referral ids are.
fn referral_id_of(uri: &str) -> Result<String, String> {
    let url =
        url::Url::parse(uri.trim()).map_err(|error| format!("{uri:?} is not a URI ({error})"))?;
    let mut segments: Vec<&str> = url
        .path_segments()
        .map(|s| s.filter(|s| !s.is_empty()).collect())
        .unwrap_or_default();
    let id = segments.pop();
    let collection = segments.pop();
    match (collection, id) {
        (Some(collection), Some(id)) if collection.eq_ignore_ascii_case("referrals") => {
            hunter_core::records::referral::check_id(id)
                .map_err(|what| format!("the referral id {what}"))?;
            Ok(id.to_owned())
        }
        _ => Err(format!("{uri:?} does not end in /referrals/{{id}}")),
    }
}

/// Events seen recently, by (referral id, change instant).
#[derive(Default)]
pub(crate) struct Seen {
    inner: Mutex<SeenInner>,
}

#[derive(Default)]
struct SeenInner {
    at: HashMap<(String, i128), Instant>,
    order: VecDeque<((String, i128), Instant)>,
}

impl Seen {
    /// Remembers the event; `false` when it was seen within [`DEDUPE_TTL`] (a duplicate).
    pub(crate) fn first_time(
        &self,
        referral_id: &str,
        changed_at: OffsetDateTime,
        now: Instant,
    ) -> bool {
        let key = (
            referral_id.to_ascii_lowercase(),
            changed_at.unix_timestamp_nanos(),
        );
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        // Forget what expired, and the oldest past the cap.
        while let Some((old, at)) = inner.order.front().cloned() {
            if now.saturating_duration_since(at) < DEDUPE_TTL && inner.order.len() < DEDUPE_MAX {
                break;
            }
            inner.order.pop_front();
            if inner.at.get(&old) == Some(&at) {
                inner.at.remove(&old);
            }
        }
        if inner
            .at
            .get(&key)
            .is_some_and(|at| now.saturating_duration_since(*at) < DEDUPE_TTL)
        {
            return false;
        }
        inner.at.insert(key.clone(), now);
        inner.order.push_back((key, now));
        true
    }

    /// Forgets an event whose fetch was not queued, so a retry of it goes through.
    pub(crate) fn forget(&self, referral_id: &str, changed_at: OffsetDateTime) {
        let key = (
            referral_id.to_ascii_lowercase(),
            changed_at.unix_timestamp_nanos(),
        );
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .at
            .remove(&key);
    }
}

/// Fetches per sender address: a token bucket of `per_minute` that refills at `per_minute`
/// a minute.
pub(crate) struct FetchBudget {
    per_minute: f64,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl FetchBudget {
    pub(crate) fn new(per_minute: u32) -> Self {
        FetchBudget {
            per_minute: f64::from(per_minute.max(1)),
            buckets: Mutex::default(),
        }
    }

    /// Takes one fetch from `sender`'s budget; `Err(retry_after)` when none is left.
    pub(crate) fn take(&self, sender: IpAddr, now: Instant) -> Result<(), Duration> {
        let key = super::throttle::key(sender);
        let rate = self.per_minute / 60.0;
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if !buckets.contains_key(&key) && buckets.len() >= MAX_SENDERS {
            let full = self.per_minute;
            buckets.retain(|_, (tokens, at)| {
                *tokens + now.saturating_duration_since(*at).as_secs_f64() * rate < full
            });
            if buckets.len() >= MAX_SENDERS
                && let Some(oldest) = buckets
                    .iter()
                    .min_by_key(|(_, (_, at))| *at)
                    .map(|(k, _)| *k)
            {
                buckets.remove(&oldest);
            }
        }
        let (tokens, at) = buckets.get(&key).copied().unwrap_or((self.per_minute, now));
        let tokens =
            (tokens + now.saturating_duration_since(at).as_secs_f64() * rate).min(self.per_minute);
        if tokens >= 1.0 {
            buckets.insert(key, (tokens - 1.0, now));
            return Ok(());
        }
        buckets.insert(key, (tokens, now));
        let seconds = ((1.0 - tokens) / rate).ceil().max(1.0);
        Err(Duration::from_secs(seconds as u64))
    }
}

/// The receiver's state in the API (`ApiState::pc_webhooks`).
pub(crate) struct Receiver {
    pub(crate) seen: Seen,
    pub(crate) budget: FetchBudget,
}

impl Receiver {
    pub(crate) fn new(settings: &hunter_core::config::PcWebhookSettings) -> Self {
        Receiver {
            seen: Seen::default(),
            budget: FetchBudget::new(settings.fetches_per_minute),
        }
    }
}

/// The receiver's answer.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WebhookAccepted {
    /// `queued` (a fetch of the referral was queued), `duplicate` (this event was queued
    /// already) or `ignored` (`test-created`).
    status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    referral_id: Option<String>,
    /// The `fetch_referral` command, for `queued`.
    #[serde(skip_serializing_if = "Option::is_none")]
    command_id: Option<String>,
}

fn count(outcome: &'static str) {
    metrics::counter!(names::API_PC_WEBHOOK_EVENTS_TOTAL, "outcome" => outcome).increment(1);
}

fn invalid_event(field: &str, message: String) -> ApiError {
    count("invalid");
    ApiError {
        status: StatusCode::BAD_REQUEST,
        code: "invalid_event",
        message: format!("{field}: {message}"),
        parameter: None,
        field: Some(field.to_owned()),
    }
}

fn too_many(code: &'static str, message: String, retry_after: Duration) -> Response {
    let mut response = ApiError::new(StatusCode::TOO_MANY_REQUESTS, code, message).into_response();
    response.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from(retry_after.as_secs()),
    );
    response
}

#[utoipa::path(
    post,
    path = "/partner-center/webhooks",
    request_body = PcWebhookEvent,
    params(
        ("token" = String, Query, description = "The shared secret of the registered callback URL (HUNTER_PARTNER_CENTER_WEBHOOK_SECRET)"),
        ("tenant" = Option<String>, Query, description = "The tenant the registration belongs to (added by `hunter webhooks register`); absent: every tenant fetches the referral"),
    ),
    responses(
        (status = 200, description = "A repeated event (`duplicate`) or Partner Center's `test-created` (`ignored`): nothing queued", body = WebhookAccepted),
        (status = 202, description = "A fetch of the referral was queued (`queued`)", body = WebhookAccepted),
        (status = 400, description = "Not a referral event (invalid_event, `field` names what), or an unknown tenant (invalid_parameter)", body = super::ErrorBody),
        (status = 401, description = "No or a wrong token in the URL", body = super::ErrorBody),
        (status = 404, description = "The receiver is off: HUNTER_PARTNER_CENTER_WEBHOOK_SECRET is not set", body = super::ErrorBody),
        (status = 409, description = "The Partner Center source is disabled (sync_disabled)", body = super::ErrorBody),
        (status = 429, description = "Too many fetches triggered by this address (too_many_fetches), or too many wrong tokens (too_many_failed_attempts); Retry-After says when", body = super::ErrorBody),
        (status = 503, description = "The broker did not take the command; Partner Center's retry will", body = super::ErrorBody),
    ),
    security(("webhook_secret" = [])),
    tag = "webhooks"
)]
pub(crate) async fn receive(State(state): State<Arc<ApiState>>, request: Request) -> Response {
    match handle(&state, request).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn handle(state: &ApiState, request: Request) -> Result<Response, ApiError> {
    let settings = &state.settings.pc_webhooks;
    let Some(secret) = settings.secret.as_ref() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "partner center webhooks are off: set HUNTER_PARTNER_CENTER_WEBHOOK_SECRET on the api \
             and register the callback with `hunter webhooks register`",
        ));
    };
    let sender = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(address)| address.ip());
    let mut token = None;
    let mut tenant = None;
    for (key, value) in url::form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes())
    {
        match &*key {
            "token" => token = Some(value.into_owned()),
            "tenant" => tenant = Some(value.into_owned()),
            _ => {}
        }
    }
    // 1. The secret of the callback URL.
    let Some(token) = token else {
        count("unauthenticated");
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "the callback URL carries no token: register it with `hunter webhooks register`",
        ));
    };
    if !constant_time_eq(token.as_bytes(), secret.expose().as_bytes()) {
        count("unauthenticated");
        if let Some(sender) = sender
            && let Err(retry_after) = state.auth_failures.failure(sender, Instant::now())
        {
            tracing::warn!(%sender, "wrong partner center webhook tokens throttled");
            return Ok(too_many(
                "too_many_failed_attempts",
                format!(
                    "too many wrong tokens from this address; try again in {} s",
                    retry_after.as_secs()
                ),
                retry_after,
            ));
        }
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "the callback URL's token is not valid",
        ));
    }
    // 2. The event.
    let body = axum::body::to_bytes(request.into_body(), BODY_LIMIT_BYTES)
        .await
        .map_err(|_| {
            invalid_event(
                "body",
                format!("unreadable or over {BODY_LIMIT_BYTES} bytes"),
            )
        })?;
    let event = parse_event(&body).map_err(|(field, message)| invalid_event(field, message))?;
    if let Some(name) = tenant.as_deref()
        && !state
            .settings
            .partner_center
            .tenants
            .iter()
            .any(|t| t.name == name)
    {
        count("invalid");
        return Err(ApiError::parameter(
            "tenant",
            "not a tenant this deployment polls (HUNTER_PARTNER_CENTER_TENANTS); register again with `hunter webhooks register`",
        ));
    }
    // 3. Partner Center's validation event.
    let (referral_id, changed_at) = match event {
        Event::Test => {
            count("ignored");
            return Ok(accepted(StatusCode::OK, "ignored", None, None));
        }
        Event::Referral {
            referral_id,
            changed_at,
        } => (referral_id, changed_at),
    };
    if !state.settings.partner_center.enabled {
        count("ignored");
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "sync_disabled",
            "the partner center source is disabled (HUNTER_PARTNER_CENTER_ENABLED=false): no \
             source would fetch the referral",
        ));
    }
    // 4. Seen already.
    let receiver = &state.pc_webhooks;
    if !receiver
        .seen
        .first_time(&referral_id, changed_at, Instant::now())
    {
        count("duplicate");
        tracing::info!(
            referral_id,
            "partner center webhook event repeated; nothing queued"
        );
        return Ok(accepted(
            StatusCode::OK,
            "duplicate",
            Some(referral_id),
            None,
        ));
    }
    // 5. The sender's budget.
    if let Some(sender) = sender
        && let Err(retry_after) = receiver.budget.take(sender, Instant::now())
    {
        receiver.seen.forget(&referral_id, changed_at);
        count("rate_limited");
        tracing::warn!(%sender, referral_id, "partner center webhook fetches throttled");
        return Ok(too_many(
            "too_many_fetches",
            format!(
                "this address triggered more than {} referral fetches a minute \
                 (HUNTER_PARTNER_CENTER_WEBHOOK_FETCHES_PER_MINUTE); try again in {} s",
                settings.fetches_per_minute,
                retry_after.as_secs()
            ),
            retry_after,
        ));
    }
    // 6. The command.
    let command = Command {
        command_id: uuid::Uuid::new_v4().to_string(),
        kind: Command::FETCH_REFERRAL.to_owned(),
        tenant,
        requested_at: Timestamp::now(),
        since: None,
        referral_id: Some(referral_id.clone()),
    };
    let unavailable = |error: String| {
        receiver.seen.forget(&referral_id, changed_at);
        count("unavailable");
        tracing::error!(%error, "partner center webhook fetch not queued");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "broker_unavailable",
            "the fetch could not be queued; try again",
        )
    };
    state.send_command(&command).await.map_err(unavailable)?;
    count("queued");
    tracing::info!(referral_id, command_id = %command.command_id, "partner center webhook: referral fetch queued");
    Ok(accepted(
        StatusCode::ACCEPTED,
        "queued",
        Some(referral_id),
        Some(command.command_id),
    ))
}

fn accepted(
    status: StatusCode,
    what: &str,
    referral_id: Option<String>,
    command_id: Option<String>,
) -> Response {
    (
        status,
        Json(WebhookAccepted {
            status: what.to_owned(),
            referral_id,
            command_id,
        }),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The project's own events, in the shape Partner Center documents.
    fn event(name: &str, uri: &str, date: &str) -> Vec<u8> {
        serde_json::json!({
            "EventName": name,
            "ResourceUri": uri,
            "ResourceName": "referral",
            "AuditUri": null,
            "ResourceChangeUtcDate": date,
        })
        .to_string()
        .into_bytes()
    }

    const URI: &str = "https://api.partnercenter.microsoft.com/engagements/v1/referrals/5e0c7a3b-1f2d-4e6a-9b8c-0d1e2f3a4b5c";

    #[test]
    fn referral_events_give_the_id_and_the_instant() {
        for name in ["referral-created", "referral-updated", "Referral-Updated"] {
            let parsed =
                parse_event(&event(name, URI, "2026-03-01T10:05:39.5485487+00:00")).unwrap();
            let Event::Referral {
                referral_id,
                changed_at,
            } = parsed
            else {
                panic!("{name}: not a referral event");
            };
            assert_eq!(referral_id, "5e0c7a3b-1f2d-4e6a-9b8c-0d1e2f3a4b5c");
            assert_eq!(changed_at.nanosecond(), 548_548_700);
        }
        // A trailing slash and a query are fine; the test event is acknowledged.
        let uri = format!("{URI}/?x=1");
        assert!(matches!(
            parse_event(&event("referral-updated", &uri, "2026-03-01T10:05:39Z")),
            Ok(Event::Referral { .. })
        ));
        assert_eq!(
            parse_event(&event(
                "test-created",
                "https://x/webhooks/v1/registration/test",
                "2026-03-01T10:05:39Z"
            )),
            Ok(Event::Test)
        );
    }

    #[test]
    fn bad_events_name_the_field() {
        let date = "2026-03-01T10:05:39Z";
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"not json".to_vec(), "body"),
            (b"[1,2]".to_vec(), "body"),
            (b"{}".to_vec(), "EventName"),
            (event("subscription-updated", URI, date), "EventName"),
            (event("referral-updated", "https://x/engagements/v1/referrals", date), "ResourceUri"),
            (event("referral-updated", "https://x/engagements/v1/customers/abc", date), "ResourceUri"),
            (event("referral-updated", "not a uri", date), "ResourceUri"),
            (event("referral-updated", "https://x/referrals/a%20b", date), "ResourceUri"),
            (event("referral-updated", URI, "yesterday"), "ResourceChangeUtcDate"),
            (
                serde_json::json!({"EventName": "referral-updated", "ResourceUri": URI})
                    .to_string()
                    .into_bytes(),
                "ResourceChangeUtcDate",
            ),
            (
                serde_json::json!({"EventName": 7, "ResourceUri": URI, "ResourceChangeUtcDate": date})
                    .to_string()
                    .into_bytes(),
                "EventName",
            ),
            (
                serde_json::json!({"EventName": "referral-updated", "ResourceName": "customer",
                    "ResourceUri": URI, "ResourceChangeUtcDate": date})
                .to_string()
                .into_bytes(),
                "ResourceName",
            ),
        ];
        for (body, field) in cases {
            let error = parse_event(&body).unwrap_err();
            assert_eq!(
                error.0,
                field,
                "{}: {}",
                String::from_utf8_lossy(&body),
                error.1
            );
        }
    }

    #[test]
    fn a_repeated_event_is_seen_once_until_it_expires_or_is_forgotten() {
        let seen = Seen::default();
        let at = OffsetDateTime::parse("2026-03-01T10:05:39.5485487+00:00", &Rfc3339).unwrap();
        // The same instant spelled in another offset is the same event.
        let same = OffsetDateTime::parse("2026-03-01T11:05:39.5485487+01:00", &Rfc3339).unwrap();
        let now = Instant::now();
        assert!(seen.first_time("R-1", at, now));
        assert!(
            !seen.first_time("r-1", same, now),
            "same referral, same change"
        );
        assert!(
            seen.first_time("r-1", at + time::Duration::SECOND, now),
            "a later change"
        );
        assert!(seen.first_time("r-2", at, now), "another referral");
        assert!(seen.first_time("r-1", at, now + DEDUPE_TTL), "expired");
        seen.forget("r-2", at);
        assert!(
            seen.first_time("r-2", at, now),
            "forgotten after a failed queue"
        );
    }

    #[test]
    fn the_memory_of_events_is_bounded() {
        let seen = Seen::default();
        let at = OffsetDateTime::UNIX_EPOCH;
        let now = Instant::now();
        for i in 0..DEDUPE_MAX + 10 {
            assert!(seen.first_time(&format!("r-{i}"), at, now));
        }
        let inner = seen.inner.lock().unwrap();
        assert!(inner.at.len() <= DEDUPE_MAX && inner.order.len() <= DEDUPE_MAX);
    }

    #[test]
    fn each_sender_has_its_own_budget_that_refills() {
        let budget = FetchBudget::new(3);
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let start = Instant::now();
        for _ in 0..3 {
            assert_eq!(budget.take(a, start), Ok(()));
        }
        let retry = budget.take(a, start).unwrap_err();
        assert_eq!(
            retry,
            Duration::from_secs(20),
            "one fetch every 20 s at 3 a minute"
        );
        assert_eq!(
            budget.take(b, start),
            Ok(()),
            "another sender is not affected"
        );
        assert_eq!(budget.take(a, start + Duration::from_secs(20)), Ok(()));
        assert!(budget.take(a, start + Duration::from_secs(21)).is_err());
    }
}
