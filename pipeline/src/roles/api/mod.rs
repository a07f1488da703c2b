//! The HTTP API: leads and referrals from ClickHouse, the "sync now" trigger and the sync
//! status, health, metrics, the OpenAPI document and the web page.
//!
//! Access: every `/api/v1` route requires `Authorization: Bearer <token>` (the scheme in any
//! case, RFC 6750), compared in constant time. `HUNTER_API_TOKEN` is the admin token (every
//! route); the optional `HUNTER_API_READ_TOKEN` may call the `GET` routes only (403 on the sync
//! trigger). Wrong tokens are throttled per client address (`throttle.rs`: 429 with
//! `Retry-After` past 10 a minute). `/readyz` names a failing component with a short class,
//! never the error text (which can hold users and hosts). Every response carries
//! `X-Content-Type-Options: nosniff`, `Referrer-Policy: no-referrer` and a Content-Security-
//! Policy without `unsafe-inline` (the page's script and style are files of their own). Errors are
//! JSON `{"error": {"code", "message"}}` (plus `"parameter"` when one query parameter is at
//! fault). CORS is closed unless `HUNTER_API_CORS_ORIGINS` lists origins; request bodies are
//! limited to [`BODY_LIMIT_BYTES`] and requests to `HUNTER_API_REQUEST_TIMEOUT_SECS`.
//!
//! Queries bind their parameters through the `clickhouse` crate (`?` placeholders, escaped
//! client-side), never by pasting request text into SQL.

mod actions;
mod cache;
// Dead-letter re-drive: `GET /dlq`, `POST /dlq/replay` (crate::dlq).
mod dlq;
// The gauge of incoming New referrals expiring within 48 h (docs/leads.md).
mod expiry;
mod leads;
mod openapi;
// The page's figures: GET /overview.
mod overview;
mod sync;
mod throttle;
// Partner Center webhooks: `POST /partner-center/webhooks`, authenticated by the callback URL's
// secret instead of a bearer token (docs/partner-center-webhooks.md).
mod webhooks;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hunter_clickhouse::reader::{QueryLimits, Reader};
use hunter_core::codec::Codec;
use hunter_core::kafka;
use hunter_core::records::Command;
use hunter_core::telemetry::{self, names};
use serde::Serialize;

use super::Context;

/// The web page, compiled into the binary: it asks for the token once (kept in the browser
/// session) and calls the same API. Its script and style are files of their own, so the
/// Content-Security-Policy needs no `unsafe-inline`.
const INDEX_HTML: &str = include_str!("../web/index.html");
const APP_JS: &str = include_str!("../web/app.js");
const APP_CSS: &str = include_str!("../web/app.css");

/// The page's policy: its own script, style and API only; no frames, no plugins, no inline code.
const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; \
    frame-ancestors 'none'";
/// Every other response (JSON, metrics, scripts) renders nothing and may be framed by no one.
const DEFAULT_CSP: &str = "default-src 'none'; frame-ancestors 'none'";

/// Largest request body accepted (the API takes no large bodies).
pub const BODY_LIMIT_BYTES: usize = 64 * 1024;

pub(crate) struct ApiState {
    /// Every accepted token with its name and role (`HUNTER_API_TOKENS`, and the single
    /// `HUNTER_API_TOKEN` / `HUNTER_API_READ_TOKEN` as `admin` / `read`).
    tokens: Vec<hunter_core::config::NamedToken>,
    /// Write-back (`actions.rs`, docs/writeback.md).
    actions: actions::Actions,
    /// The reader, with limits on every query (`hunter_clickhouse::reader`).
    clickhouse: Reader,
    producer: kafka::Producer,
    commands: Codec<Command>,
    commands_topic: String,
    /// The tenants and schedule this deployment polls, for the sync status.
    settings: Arc<hunter_core::config::Settings>,
    /// Task ids this process handed out recently, so a caller polling a task that the source
    /// has not picked up yet hears "queued" rather than 404.
    issued_tasks: sync::IssuedTasks,
    /// Lead pages served again for `HUNTER_API_CACHE_MS` (see `cache.rs`).
    pages: Arc<cache::PageCache>,
    /// The queued manual trigger that further triggers join (see `sync.rs`).
    pending_trigger: tokio::sync::Mutex<Option<sync::PendingTrigger>>,
    /// Wrong tokens per client address (see `throttle.rs`).
    auth_failures: throttle::AuthThrottle,
    /// Partner Center webhooks: events seen and fetches per sender (`webhooks.rs`).
    pc_webhooks: webhooks::Receiver,
    /// The read model of the current leads (`HUNTER_API_READ_MODEL`, docs/api-read-model.md);
    /// `None` when off.
    read_model: Option<Arc<leads::feed::LiveModel>>,
}

/// What the presented token may do: its role.
type Access = hunter_core::config::TokenRole;

/// Who called: the token's name and role, put in the request's extensions by the token check.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub(crate) name: String,
    pub(crate) role: Access,
}

/// Builds the router; fails at start when the API cannot work (no token, no ClickHouse).
pub async fn router(context: &Context) -> anyhow::Result<Router> {
    let settings = &context.settings;
    if settings.api.named_tokens.is_empty() {
        anyhow::bail!(
            "missing HUNTER_API_TOKEN (or HUNTER_API_TOKENS): the API refuses to run without a bearer token"
        );
    }
    let clickhouse = Reader::connect(
        &settings.clickhouse,
        QueryLimits::new(&settings.clickhouse, settings.api.request_timeout),
    )
    .await?;
    let producer = kafka::producer(&settings.kafka, "hunter-api").context("kafka producer")?;
    // --- the read model (docs/api-read-model.md) ---
    let read_model = settings.api.read_model.then(|| {
        let live = Arc::new(leads::feed::LiveModel::new(settings.api.read_model_rows));
        // Its reads are larger and longer than a request's: no result-row cap, ten minutes.
        let client = match clickhouse.limits() {
            hunter_clickhouse::reader::Limits::Sent(_) => clickhouse
                .client()
                .clone()
                .with_setting("max_result_rows", "0")
                .with_setting("max_execution_time", "600"),
            hunter_clickhouse::reader::Limits::ProfileOnly => clickhouse.client().clone(),
        };
        tokio::spawn(leads::feed::run(live.clone(), client));
        live
    });
    // --- end read model ---
    let state = Arc::new(ApiState {
        read_model,
        tokens: settings.api.named_tokens.clone(),
        actions: actions::Actions::new(context),
        clickhouse,
        producer,
        commands: Codec::new(&context.topics.commands, context.registry.clone()),
        commands_topic: context.topics.commands.clone(),
        settings: context.settings.clone(),
        issued_tasks: sync::IssuedTasks::default(),
        pages: Arc::new(cache::PageCache::new(settings.api.cache_ttl)),
        pending_trigger: tokio::sync::Mutex::new(None),
        auth_failures: throttle::AuthThrottle::default(),
        pc_webhooks: webhooks::Receiver::new(&settings.pc_webhooks),
    });
    expiry::spawn_gauge(state.clickhouse.clone());
    let timeout = settings.api.request_timeout;
    let mut api = Router::new()
        .route("/leads", get(leads::list))
        .route("/leads/{id}", get(leads::detail))
        // The overview and the CSV export (docs/overview-and-export.md).
        .route("/overview", get(overview::overview))
        .route("/leads.csv", get(leads::export))
        .route("/referrals/{id}", get(leads::referral))
        .route(
            "/referrals/{id}/actions",
            post(actions::create).get(actions::list),
        )
        .route("/actions", get(actions::recent))
        .route("/actions/{action_id}", get(actions::one))
        .route("/partner-center/referrals/sync", post(sync::trigger))
        .route("/partner-center/sync/status", get(sync::status))
        .route("/sync/runs", get(sync::runs))
        .route("/sync/runs/{task_id}", get(sync::run))
        // Dead-letter re-drive (the replay is a write: admin token).
        .route("/dlq", get(dlq::list))
        .route("/dlq/replay", post(dlq::replay))
        .route("/openapi.json", get(openapi::document))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token))
        // Partner Center calls without a bearer token: its own secret, checked in the handler.
        .route("/partner-center/webhooks", post(webhooks::receive))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        // A body without a declared length is cut at the limit while it is read.
        .layer(tower_http::limit::RequestBodyLimitLayer::new(
            BODY_LIMIT_BYTES,
        ))
        .layer(middleware::from_fn(move |request, next| {
            limit_and_time(timeout, request, next)
        }));
    if !settings.api.cors_origins.is_empty() {
        api = api.layer(cors(&settings.api.cors_origins)?);
    }
    let readiness = state.clone();
    Ok(telemetry::health_and_metrics_router()
        .route("/", get(|| async { Html(INDEX_HTML) }))
        .route(
            "/app.js",
            get(|| async { static_file("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/app.css",
            get(|| async { static_file("text/css; charset=utf-8", APP_CSS) }),
        )
        .route("/readyz", get(move || readyz(readiness.clone())))
        .nest("/api/v1", api.with_state(state))
        .layer(middleware::from_fn(security_headers)))
}

/// A file of the web page, revalidated on every load so a new binary's page is never mixed
/// with an old script.
fn static_file(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// The headers every response carries (see the module docs).
async fn security_headers(request: Request, next: Next) -> Response {
    let page = request.uri().path() == "/";
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(if page { PAGE_CSP } else { DEFAULT_CSP }),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// CORS for the configured origins only: `GET`/`POST` with the `Authorization` header.
fn cors(origins: &[String]) -> anyhow::Result<tower_http::cors::CorsLayer> {
    let origins = origins
        .iter()
        .map(|origin| HeaderValue::from_str(origin))
        .collect::<Result<Vec<_>, _>>()
        .context("HUNTER_API_CORS_ORIGINS")?;
    Ok(tower_http::cors::CorsLayer::new()
        .allow_origin(origins)
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .max_age(Duration::from_secs(600)))
}

/// A JSON error body.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    parameter: Option<&'static str>,
    /// The body field at fault (write-back actions).
    field: Option<String>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            parameter: None,
            field: None,
        }
    }

    /// 400 naming the query parameter at fault.
    fn parameter(parameter: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_parameter",
            message: format!("{parameter}: {}", message.into()),
            parameter: Some(parameter),
            field: None,
        }
    }

    fn not_found(what: &str) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no such {what}"),
        )
    }

    /// The lead store failed: logged with its cause, answered 503 without it. A question that
    /// met the reader's limits (rows read, result rows, time: `hunter_clickhouse::reader`) was
    /// stopped by the server; it gets its own code, since asking again will not help.
    fn clickhouse(error: impl std::fmt::Display) -> Self {
        let text = error.to_string();
        if hunter_clickhouse::reader::is_limit(&text) {
            tracing::warn!(error = %text, "clickhouse stopped an api question at its limits");
            return ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "query_limit_exceeded",
                "the question needs more of the lead store than the API may ask (rows read, rows \
                 returned or time); narrow the filters",
            );
        }
        tracing::error!(error = %text, "clickhouse query failed");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "clickhouse_unavailable",
            "the lead store is not answering; try again",
        )
    }
}

impl From<axum::extract::rejection::QueryRejection> for ApiError {
    /// serde names the offending parameter ("unknown field `x`", "invalid type ... `limit`").
    fn from(rejection: axum::extract::rejection::QueryRejection) -> Self {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
            rejection.body_text(),
        )
    }
}

impl From<axum::extract::rejection::PathRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::PathRejection) -> Self {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
            rejection.body_text(),
        )
    }
}

/// An id from the path: 1 to `max` printable characters (ids are GUIDs in practice).
fn path_id(
    id: Result<axum::extract::Path<String>, axum::extract::rejection::PathRejection>,
    parameter: &'static str,
    max: usize,
) -> Result<String, ApiError> {
    let axum::extract::Path(id) = id?;
    if id.is_empty() || id.len() > max || id.chars().any(char::is_control) {
        return Err(ApiError::parameter(
            parameter,
            format!("must be 1 to {max} printable characters"),
        ));
    }
    Ok(id)
}

/// A page size from the query: a whole number in `range`, `default` when absent.
fn page_limit(
    text: Option<&str>,
    range: std::ops::RangeInclusive<u32>,
    default: u32,
) -> Result<u32, ApiError> {
    let Some(text) = text else {
        return Ok(default);
    };
    text.trim()
        .parse::<u32>()
        .ok()
        .filter(|limit| range.contains(limit))
        .ok_or_else(|| {
            ApiError::parameter(
                "limit",
                format!(
                    "{text:?} is not a whole number from {} to {}",
                    range.start(),
                    range.end()
                ),
            )
        })
}

/// The error body, as documented in the OpenAPI document.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code: `invalid_parameter`, `unauthenticated`, `forbidden`,
    /// `not_found`, `payload_too_large`, `timeout`, `clickhouse_unavailable`,
    /// `query_limit_exceeded` (503: ClickHouse stopped the question at the API's limits),
    /// `broker_unavailable`, `sync_disabled` (409: HUNTER_PARTNER_CENTER_ENABLED is false),
    /// `too_many_failed_attempts` (429 with Retry-After: too many wrong tokens from this address),
    /// `replay_failed` (503: a dead-letter replay could not finish),
    /// `invalid_action` (400: a referral action that is not allowed, `field` names what).
    code: String,
    message: String,
    /// The query parameter at fault, for `invalid_parameter`.
    #[serde(skip_serializing_if = "Option::is_none")]
    parameter: Option<String>,
    /// The body field at fault, for `invalid_action` (write-back).
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<String>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
                parameter: self.parameter.map(str::to_owned),
                field: self.field,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// Equal length and equal bytes, looking at every byte whatever the first difference.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl ApiState {
    /// Encodes `command` and publishes it to the command topic (keyed by its id), waiting up to
    /// 10 s for the broker; the error is the encoder's or the broker's, for the caller's 503.
    async fn send_command(&self, command: &Command) -> Result<(), String> {
        let payload = self
            .commands
            .encode(command)
            .await
            .map_err(|e| e.to_string())?;
        self.producer
            .send(
                rdkafka::producer::FutureRecord::to(&self.commands_topic)
                    .key(&command.command_id)
                    .payload(&payload),
                rdkafka::util::Timeout::After(Duration::from_secs(10)),
            )
            .await
            .map(drop)
            .map_err(|(error, _)| error.to_string())
    }

    /// Every token is compared whatever the earlier results, so timing tells nothing.
    fn access(&self, presented: &str) -> Option<Caller> {
        let mut found = None;
        for token in &self.tokens {
            if constant_time_eq(presented.as_bytes(), token.token.expose().as_bytes()) {
                found = Some(Caller {
                    name: token.name.clone(),
                    role: token.role,
                });
            }
        }
        found
    }
}

/// The token of an `Authorization: Bearer <token>` value; the scheme is case-insensitive
/// (RFC 6750 section 2.1, RFC 9110 section 11.1).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|token| !token.is_empty())
}

async fn require_token(
    State(state): State<Arc<ApiState>>,
    request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(bearer_token);
    let Some(presented) = presented else {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "send Authorization: Bearer <token>",
        )
        .into_response();
    };
    match state.access(presented) {
        None => {
            // Only wrong tokens cost (see throttle.rs); without the peer address (a router
            // served without connect info, as in unit tests) nothing is throttled.
            let client = request
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(address)| address.ip());
            let throttled = client.and_then(|client| {
                state
                    .auth_failures
                    .failure(client, Instant::now())
                    .err()
                    .map(|retry_after| (client, retry_after))
            });
            match throttled {
                Some((client, retry_after)) => {
                    tracing::warn!(%client, retry_after_secs = retry_after.as_secs(), "wrong api tokens throttled");
                    let mut response = ApiError::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        "too_many_failed_attempts",
                        format!(
                            "too many wrong tokens from this address; try again in {} s",
                            retry_after.as_secs()
                        ),
                    )
                    .into_response();
                    response.headers_mut().insert(
                        header::RETRY_AFTER,
                        HeaderValue::from(retry_after.as_secs()),
                    );
                    response
                }
                None => ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthenticated",
                    "the bearer token is not valid",
                )
                .into_response(),
            }
        }
        Some(caller) => {
            let writes = !matches!(*request.method(), Method::GET | Method::HEAD);
            // Referral actions need `sales` or `admin`; every other write `admin`.
            let action = request.uri().path().ends_with("/actions");
            let needed = match (writes, action) {
                (false, _) => Access::Read,
                (true, true) => Access::Sales,
                (true, false) => Access::Admin,
            };
            if caller.role < needed {
                let message = if caller.role == Access::Read {
                    format!(
                        "this token may only read; this call needs a {} token",
                        if action { "sales or admin" } else { "admin" }
                    )
                } else {
                    "this call needs an admin token (HUNTER_API_TOKEN, or a HUNTER_API_TOKENS entry with role admin)".to_owned()
                };
                return ApiError::new(StatusCode::FORBIDDEN, "forbidden", message).into_response();
            }
            let mut request = request;
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
    }
}

/// Refuses bodies over [`BODY_LIMIT_BYTES`] (413), answers 503 past the request timeout, and
/// counts and times every response by route template and status class (bounded labels).
async fn limit_and_time(timeout: Duration, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|path| path.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    let response = if declared.is_some_and(|length| length > BODY_LIMIT_BYTES as u64) {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request bodies are limited to {BODY_LIMIT_BYTES} bytes"),
        )
        .into_response()
    } else {
        match tokio::time::timeout(timeout, next.run(request)).await {
            Ok(response) => response,
            Err(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "timeout",
                format!("the request took longer than {} s", timeout.as_secs()),
            )
            .into_response(),
        }
    };
    let class = match response.status().as_u16() {
        200..=299 => "2xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "other",
    };
    metrics::counter!(names::API_REQUESTS_TOTAL, "route" => route.clone(), "status" => class)
        .increment(1);
    metrics::histogram!(names::API_REQUEST_DURATION_SECONDS, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

/// `/readyz`: 200 when the broker and ClickHouse answer, else 503 naming what does not with a
/// short class (`timeout`, `unreachable`, `auth_failed`, `error`). The error itself can name
/// users, hosts and paths: it goes to the log, never to this unauthenticated answer.
async fn readyz(state: Arc<ApiState>) -> Response {
    let clickhouse = async {
        match tokio::time::timeout(
            Duration::from_secs(3),
            state
                .clickhouse
                .client()
                .query("SELECT 1")
                .fetch_one::<u8>(),
        )
        .await
        {
            Err(_) => Err(("timeout", "no answer within 3 s".to_owned())),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err((clickhouse_class(&error), error.to_string())),
        }
    };
    let producer = state.producer.clone();
    let broker = async move {
        tokio::task::spawn_blocking(move || {
            use rdkafka::producer::Producer as _;
            producer
                .client()
                .fetch_metadata(None, Duration::from_secs(3))
                .map(|_| ())
                .map_err(|error| (kafka_class(&error), error.to_string()))
        })
        .await
        .unwrap_or_else(|error| Err(("error", error.to_string())))
    };
    let (clickhouse, broker) = tokio::join!(clickhouse, broker);
    let verdict = |component: &str, result: &Result<(), (&'static str, String)>| match result {
        Ok(()) => "ok",
        Err((class, detail)) => {
            tracing::warn!(component, class, error = %hunter_core::security::redact_url_passwords(detail), "readiness check failed");
            class
        }
    };
    let ready = clickhouse.is_ok() && broker.is_ok();
    let body = serde_json::json!({
        "ready": ready,
        "checks": {
            "clickhouse": verdict("clickhouse", &clickhouse),
            "broker": verdict("broker", &broker),
        },
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// A short, stable class of a ClickHouse error for `/readyz`.
fn clickhouse_class(error: &clickhouse::error::Error) -> &'static str {
    use clickhouse::error::Error;
    match error {
        Error::Network(_) => "unreachable",
        Error::TimedOut => "timeout",
        // Code 516 AUTHENTICATION_FAILED, 192 UNKNOWN_USER, 497 ACCESS_DENIED.
        Error::BadResponse(text)
            if [
                "Code: 516",
                "Code: 192",
                "Code: 497",
                "AUTHENTICATION_FAILED",
            ]
            .iter()
            .any(|marker| text.contains(marker)) =>
        {
            "auth_failed"
        }
        _ => "error",
    }
}

/// A short, stable class of a Kafka metadata error for `/readyz`.
fn kafka_class(error: &rdkafka::error::KafkaError) -> &'static str {
    use rdkafka::types::RDKafkaErrorCode as Code;
    match error.rdkafka_error_code() {
        Some(Code::OperationTimedOut | Code::RequestTimedOut | Code::MessageTimedOut) => "timeout",
        Some(Code::Authentication | Code::SaslAuthenticationFailed) => "auth_failed",
        Some(
            Code::BrokerTransportFailure
            | Code::AllBrokersDown
            | Code::Resolve
            | Code::NetworkException
            | Code::BrokerNotAvailable
            | Code::SSL,
        ) => "unreachable",
        _ => "error",
    }
}

#[cfg(test)]
mod tests {
    use super::{bearer_token, constant_time_eq};

    #[test]
    fn the_bearer_scheme_in_any_case() {
        for value in ["Bearer abc", "bearer abc", "BEARER abc", "  BeArEr   abc  "] {
            assert_eq!(bearer_token(value), Some("abc"), "{value}");
        }
        for value in ["Basic abc", "Bearer", "Bearer ", "Bearerabc", "abc"] {
            assert_eq!(bearer_token(value), None, "{value}");
        }
    }

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"abcdefgh", b"abcdefgh"));
        assert!(!constant_time_eq(b"abcdefgh", b"abcdefgx"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
