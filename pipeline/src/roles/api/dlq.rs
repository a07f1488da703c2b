//! Dead letters over HTTP: `GET /dlq` lists them (read token), `POST /dlq/replay` replays them
//! (admin token: it writes to Hunter's topics). The same rules as `hunter dlq` (`crate::dlq`):
//! bytes from the dead-letter topic, a replay count on every re-published record, a record that
//! failed again after a replay refused unless `max_replays` is raised.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::{ApiError, ApiState};
use crate::dlq::{self, DeadLetterId, Filter, ReplayRequest};

/// Query parameters of `GET /dlq`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DlqQuery {
    /// Only dead letters of this stage: `source`, `processor` or `sink`.
    stage: Option<String>,
    /// Received since: an RFC 3339 time or a duration back from now (`90s`, `30m`, `24h`, `7d`).
    since: Option<String>,
    /// At most this many, oldest first, 1-1000 (default 100).
    limit: Option<String>,
}

/// One dead letter and what became of it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeadLetterView {
    /// `PARTITION:OFFSET` on the dead-letter topic.
    id: String,
    /// When the sink indexed it (RFC 3339).
    received_at: String,
    stage: String,
    error_class: String,
    error: String,
    original_topic: String,
    original_partition: Option<i32>,
    original_offset: Option<i64>,
    /// Times the record had been replayed when it failed.
    replay_count: u32,
    /// The dead letter it was replayed from, when it failed again after a replay.
    replay_of: Option<String>,
    /// Times it was replayed (as recorded by the sink).
    replays: u64,
    /// `pending`, `replayed` or `failed again`.
    outcome: String,
    /// The dead letters its replays became.
    failed_again_as: Vec<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeadLetters {
    items: Vec<DeadLetterView>,
}

fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

fn since(text: Option<&str>, parameter: &'static str) -> Result<Option<i64>, ApiError> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    text.map(|text| dlq::parse_since(text, now))
        .transpose()
        .map_err(|error| ApiError::parameter(parameter, error))
}

fn stage(text: Option<&str>) -> Result<Option<String>, ApiError> {
    match text {
        None => Ok(None),
        Some(stage) => Filter::check_stage(stage)
            .map(|()| Some(stage.to_owned()))
            .map_err(|error| ApiError::parameter("stage", error)),
    }
}

#[utoipa::path(
    get,
    path = "/dlq",
    params(DlqQuery),
    responses(
        (status = 200, description = "Dead letters, oldest first, with what became of each", body = DeadLetters),
        (status = 400, description = "A parameter is invalid", body = super::ErrorBody),
        (status = 401, description = "No or wrong bearer token", body = super::ErrorBody),
        (status = 503, description = "ClickHouse is not answering", body = super::ErrorBody),
    ),
    security(("bearer" = [])),
    tag = "dlq"
)]
pub(crate) async fn list(
    State(state): State<Arc<ApiState>>,
    query: Result<Query<DlqQuery>, QueryRejection>,
) -> Result<Json<DeadLetters>, ApiError> {
    let Query(query) = query?;
    let filter = Filter {
        stage: stage(query.stage.as_deref())?,
        since: since(query.since.as_deref(), "since")?,
        ids: Vec::new(),
        limit: super::page_limit(query.limit.as_deref(), 1..=1000, 100)?,
    };
    let listed = dlq::list(state.clickhouse.client(), &filter)
        .await
        .map_err(ApiError::clickhouse)?;
    Ok(Json(DeadLetters {
        items: listed
            .into_iter()
            .map(|letter| DeadLetterView {
                id: letter.id.to_string(),
                received_at: rfc3339(letter.received_at),
                outcome: letter.outcome().to_owned(),
                stage: letter.stage,
                error_class: letter.error_class,
                error: letter.error,
                original_topic: letter.original_topic,
                original_partition: letter.original_partition,
                original_offset: letter.original_offset,
                replay_count: letter.replay_count,
                replay_of: letter.replay_of.map(|id| id.to_string()),
                replays: letter.replays,
                failed_again_as: letter
                    .failed_again_as
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
            })
            .collect(),
    }))
}

/// The body of `POST /dlq/replay`: which dead letters (every condition given must hold) and how.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayBody {
    /// Only these (`PARTITION:OFFSET`, as listed); read from the topic even if not indexed yet.
    #[serde(default)]
    ids: Vec<String>,
    /// Only dead letters of this stage.
    stage: Option<String>,
    /// Received since (RFC 3339, or `24h` and the like).
    since: Option<String>,
    /// At most this many, oldest first, 1-1000 (default 100).
    limit: Option<u32>,
    /// Say what would be replayed, send nothing.
    #[serde(default)]
    dry_run: bool,
    /// Replays a record may have had before it is refused (default 1).
    max_replays: Option<u32>,
    /// Replay dead letters that were replayed before, once more.
    #[serde(default)]
    again: bool,
}

/// What became of one dead letter.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReplayOutcome {
    id: String,
    /// `replayed`, `would replay` (dry run), `skipped` or `missing`.
    outcome: String,
    topic: Option<String>,
    partition: Option<i32>,
    /// Where the re-published record landed.
    offset: Option<i64>,
    /// The replay count the re-published record carries.
    replay_count: Option<u32>,
    /// Why it was not replayed.
    reason: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReplayResult {
    dry_run: bool,
    replayed: usize,
    skipped: usize,
    missing: usize,
    items: Vec<ReplayOutcome>,
}

#[utoipa::path(
    post,
    path = "/dlq/replay",
    request_body(content = ReplayBody, description = "Which dead letters to replay; `{}` replays every one not replayed before (up to the limit)"),
    responses(
        (status = 200, description = "What became of each dead letter selected", body = ReplayResult),
        (status = 400, description = "The body is invalid", body = super::ErrorBody),
        (status = 401, description = "No or wrong bearer token", body = super::ErrorBody),
        (status = 403, description = "A read-only token", body = super::ErrorBody),
        (status = 503, description = "ClickHouse or the broker is not answering", body = super::ErrorBody),
    ),
    security(("bearer" = [])),
    tag = "dlq"
)]
pub(crate) async fn replay(
    State(state): State<Arc<ApiState>>,
    body: Result<Json<ReplayBody>, JsonRejection>,
) -> Result<Json<ReplayResult>, ApiError> {
    let Json(body) = body.map_err(|rejection| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
            format!("body: {}", rejection.body_text()),
        )
    })?;
    let ids = body
        .ids
        .iter()
        .map(|id| id.parse::<DeadLetterId>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| ApiError::parameter("ids", error))?;
    let limit = body.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::parameter("limit", "must be from 1 to 1000"));
    }
    let request = ReplayRequest {
        filter: Filter {
            stage: stage(body.stage.as_deref())?,
            since: since(body.since.as_deref(), "since")?,
            ids,
            limit,
        },
        max_replays: body.max_replays.unwrap_or(dlq::DEFAULT_MAX_REPLAYS),
        again: body.again,
        dry_run: body.dry_run,
    };
    let topics = state.settings.kafka.topics();
    let outcomes = dlq::replay(
        &state.settings.kafka,
        &topics.dlq,
        &state.producer,
        state.clickhouse.client(),
        &request,
    )
    .await
    .map_err(|error| {
        tracing::error!(error = format!("{error:#}"), "dead-letter replay failed");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "replay_failed",
            "the replay did not finish (clickhouse or the broker is not answering); see the api's log, `hunter dlq list` shows what was replayed",
        )
    })?;
    let count = |what: &str| outcomes.iter().filter(|o| o.outcome == what).count();
    Ok(Json(ReplayResult {
        dry_run: body.dry_run,
        replayed: count("replayed") + count("would replay"),
        skipped: count("skipped"),
        missing: count("missing"),
        items: outcomes
            .into_iter()
            .map(|outcome| ReplayOutcome {
                id: outcome.id.to_string(),
                outcome: outcome.outcome.to_owned(),
                topic: outcome.topic,
                partition: outcome.partition,
                offset: outcome.offset,
                replay_count: outcome.replay_count,
                reason: outcome.reason,
            })
            .collect(),
    }))
}
