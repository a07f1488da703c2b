//! The HTTP API: leads from ClickHouse, the "sync now" trigger, health and metrics.
//!
//! Every `/api/v1` route requires `Authorization: Bearer <HUNTER_API_TOKEN>` (compared in
//! constant time); errors are JSON `{"error": {"code", "message"}}`. Queries bind their
//! parameters client-side through the `clickhouse` crate, never by string concatenation.

use std::sync::Arc;

use anyhow::Context as _;
use axum::extract::{Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hunter_clickhouse::rows::LeadRow;
use hunter_clickhouse::writer::Writer;
use hunter_core::codec::Codec;
use hunter_core::config::Secret;
use hunter_core::kafka;
use hunter_core::records::{Command, Timestamp};
use hunter_core::telemetry::{self, names};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use serde::{Deserialize, Serialize};

use super::Context;

/// The web page, compiled into the binary: it asks for the token once (kept in the browser
/// session) and calls the same API.
const INDEX_HTML: &str = include_str!("web/index.html");

struct ApiState {
    token: Secret,
    clickhouse: Writer,
    producer: FutureProducer,
    commands: Codec<Command>,
    commands_topic: String,
}

/// Builds the router; fails at start when the API cannot work (no token, no ClickHouse).
pub async fn router(context: &Context) -> anyhow::Result<Router> {
    let settings = &context.settings;
    let token = settings
        .api
        .token
        .clone()
        .context("missing HUNTER_API_TOKEN: the API refuses to run without a bearer token")?;
    let clickhouse = super::connect_clickhouse(&settings.clickhouse).await?;
    let producer = kafka::producer(&settings.kafka, "hunter-api").context("kafka producer")?;
    let state = Arc::new(ApiState {
        token,
        clickhouse,
        producer,
        commands: Codec::new(&context.topics.commands, context.registry.clone()),
        commands_topic: context.topics.commands.clone(),
    });
    let api = Router::new()
        .route("/leads", get(list_leads))
        .route("/partner-center/referrals/sync", post(trigger_sync))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token))
        .layer(middleware::from_fn(count_requests))
        .with_state(state);
    Ok(telemetry::health_and_metrics_router()
        .route("/", get(|| async { Html(INDEX_HTML) }))
        .nest("/api/v1", api))
}

/// A JSON error body.
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": { "code": self.code, "message": self.message } });
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
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

async fn require_token(
    State(state): State<Arc<ApiState>>,
    request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim);
    match presented {
        Some(token) if constant_time_eq(token.as_bytes(), state.token.expose().as_bytes()) => {
            next.run(request).await
        }
        Some(_) => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "the bearer token is not valid",
        )
        .into_response(),
        None => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "send Authorization: Bearer <HUNTER_API_TOKEN>",
        )
        .into_response(),
    }
}

/// Counts every API response by route template and status class (bounded labels).
async fn count_requests(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|path| path.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let response = next.run(request).await;
    let class = match response.status().as_u16() {
        200..=299 => "2xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "other",
    };
    metrics::counter!(names::API_REQUESTS_TOTAL, "route" => route, "status" => class).increment(1);
    response
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LeadsQuery {
    limit: Option<String>,
    status: Option<String>,
}

/// A lead as the API shows it.
#[derive(Debug, Serialize)]
struct LeadView {
    lead_id: String,
    referral_id: String,
    engagement_id: Option<String>,
    tenant: String,
    name: Option<String>,
    status: Option<String>,
    substatus: Option<String>,
    direction: Option<String>,
    qualification: Option<String>,
    referral_type: Option<String>,
    company_name: Option<String>,
    company_domain: Option<String>,
    country: Option<String>,
    deal_value: Option<f64>,
    currency: Option<String>,
    created_at: Option<String>,
    updated_at: String,
    etag: Option<String>,
    version: u64,
    enrichment_version: u16,
    email_provider: String,
    company_name_normalized: Option<String>,
    size_band: Option<String>,
    products: Vec<String>,
    solutions: Vec<String>,
    deal_value_usd: Option<f64>,
    score: u8,
    priority: String,
    change_type: String,
    previous_status: Option<String>,
}

fn rfc3339(instant: time::OffsetDateTime) -> String {
    instant
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

impl From<LeadRow> for LeadView {
    fn from(row: LeadRow) -> Self {
        LeadView {
            lead_id: row.lead_id,
            referral_id: row.referral_id,
            engagement_id: row.engagement_id,
            tenant: row.tenant,
            name: row.name,
            status: row.status,
            substatus: row.substatus,
            direction: row.direction,
            qualification: row.qualification,
            referral_type: row.referral_type,
            company_name: row.company_name,
            company_domain: row.company_domain,
            country: row.country,
            deal_value: row.deal_value.map(|hundredths| hundredths as f64 / 100.0),
            currency: row.currency,
            created_at: row.created_at.map(rfc3339),
            updated_at: rfc3339(row.updated_at),
            etag: row.etag,
            version: row.version,
            enrichment_version: row.enrichment_version,
            email_provider: row.email_provider,
            company_name_normalized: row.company_name_normalized,
            size_band: row.size_band,
            products: row.products,
            solutions: row.solutions,
            deal_value_usd: row
                .deal_value_usd
                .map(|hundredths| hundredths as f64 / 100.0),
            score: row.score,
            priority: row.priority,
            change_type: row.change_type,
            previous_status: row.previous_status,
        }
    }
}

async fn list_leads(
    State(state): State<Arc<ApiState>>,
    query: Result<Query<LeadsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(query) = query.map_err(|rejection| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
            rejection.body_text(),
        )
    })?;
    let limit = match query.limit.as_deref() {
        None => 100,
        Some(text) => match text.parse::<u32>() {
            Ok(limit) if (1..=1000).contains(&limit) => limit,
            _ => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_parameter",
                    format!("limit: {text:?} is not a whole number from 1 to 1000"),
                ));
            }
        },
    };
    let mut sql = String::from("SELECT ?fields FROM leads FINAL");
    if query.status.is_some() {
        sql.push_str(" WHERE status = ?");
    }
    sql.push_str(" ORDER BY updated_at DESC, lead_id LIMIT ?");
    let mut select = state.clickhouse.client().query(&sql);
    if let Some(status) = &query.status {
        select = select.bind(status.as_str());
    }
    let rows: Vec<LeadRow> = select.bind(limit).fetch_all().await.map_err(|error| {
        tracing::error!(%error, "leads query failed");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "clickhouse_unavailable",
            "the lead store is not answering; try again",
        )
    })?;
    metrics::counter!(names::API_REQUESTS_TOTAL, "route" => "leads", "status" => "2xx")
        .increment(1);
    let items: Vec<LeadView> = rows.into_iter().map(LeadView::from).collect();
    Ok(Json(
        serde_json::json!({ "count": items.len(), "items": items }),
    ))
}

async fn trigger_sync(State(state): State<Arc<ApiState>>) -> Result<Response, ApiError> {
    let command = Command {
        command_id: uuid::Uuid::new_v4().to_string(),
        kind: Command::SYNC_NOW.to_owned(),
        tenant: None,
        requested_at: Timestamp::now(),
    };
    let unavailable = |error: String| {
        tracing::error!(%error, "sync trigger not delivered");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "broker_unavailable",
            "the sync trigger could not be queued; try again",
        )
    };
    let payload = state
        .commands
        .encode(&command)
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    state
        .producer
        .send(
            FutureRecord::to(&state.commands_topic)
                .key(&command.command_id)
                .payload(&payload),
            Timeout::After(std::time::Duration::from_secs(10)),
        )
        .await
        .map_err(|(error, _)| unavailable(error.to_string()))?;
    metrics::counter!(names::API_SYNC_TRIGGERS_TOTAL).increment(1);
    tracing::info!(task_id = %command.command_id, "sync requested");
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "success": true, "task_id": command.command_id })),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"abcdefgh", b"abcdefgh"));
        assert!(!constant_time_eq(b"abcdefgh", b"abcdefgx"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
