//! Write-back routes (docs/writeback.md):
//!
//! - `POST /api/v1/referrals/{id}/actions` (`sales` or `admin` token): validates the action
//!   against the referral as ClickHouse holds it (status rules, direction, fields) with the
//!   shared [`plan`], so a 400 names the field before anything is queued; 404 for an unknown
//!   referral; then produces the action to `hunter.referral-actions.v1` (key = referral id) and
//!   a `queued` step to `hunter.referral-action-results.v1`, and answers 202 with the
//!   `action_id`. The caller's token name and role are recorded as the actor.
//! - `GET /api/v1/referrals/{id}/actions`, `GET /api/v1/actions/{action_id}`: each action's
//!   newest step from the `referral_actions` audit table; an action this process queued that
//!   the sink has not written yet is answered from memory as `queued`.
//!
//! Failure modes: the broker refusing the action is a 503 (nothing was queued: the caller may
//! try again); the `queued` step failing after the action was produced is logged only (the
//! source records the next step anyway).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use hunter_clickhouse::rows::{ReferralActionRow, ReferralRow};
use hunter_core::codec::Codec;
use hunter_core::records::action::{ActionState, FIELD_NAMES, ReferralView, plan};
use hunter_core::records::{ReferralAction, ReferralActionResult, Timestamp};
use rdkafka::producer::FutureRecord;
use rdkafka::util::Timeout;
use serde::{Deserialize, Serialize};

use super::leads::rfc3339;
use super::{ApiError, ApiState, Caller};
use crate::roles::Context;

/// Actions this process queued, remembered until the audit table has them (bounded).
const REMEMBERED: usize = 1000;

pub(crate) struct Actions {
    actions: Codec<ReferralAction>,
    actions_topic: String,
    results: Codec<ReferralActionResult>,
    results_topic: String,
    queued: Mutex<(HashMap<String, ReferralActionResult>, VecDeque<String>)>,
}

impl Actions {
    pub(crate) fn new(context: &Context) -> Self {
        Self {
            actions: Codec::new(&context.topics.referral_actions, context.registry.clone()),
            actions_topic: context.topics.referral_actions.clone(),
            results: Codec::new(
                &context.topics.referral_action_results,
                context.registry.clone(),
            ),
            results_topic: context.topics.referral_action_results.clone(),
            queued: Mutex::new((HashMap::new(), VecDeque::new())),
        }
    }

    fn remember(&self, result: &ReferralActionResult) {
        let mut queued = self
            .queued
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (map, order) = &mut *queued;
        map.insert(result.action_id.clone(), result.clone());
        order.push_back(result.action_id.clone());
        while order.len() > REMEMBERED {
            if let Some(old) = order.pop_front() {
                map.remove(&old);
            }
        }
    }

    fn remembered(&self, filter: impl Fn(&ReferralActionResult) -> bool) -> Vec<ActionView> {
        let queued = self
            .queued
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        queued
            .0
            .values()
            .filter(|result| filter(result))
            .map(ActionView::from_result)
            .collect()
    }
}

/// The answer to a queued action.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ActionAccepted {
    action_id: String,
    referral_id: String,
    /// `queued`.
    state: String,
    /// `Status/Substatus` the action moves the referral to (none for `update`).
    to_status: Option<String>,
}

/// An action and its newest step.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ActionView {
    action_id: String,
    referral_id: String,
    tenant: String,
    /// accept, decline, won, lost or update.
    action: String,
    /// queued, sent, applied, conflict, rejected or failed.
    state: String,
    /// Whether the state is final (applied, conflict, rejected, failed).
    #[serde(rename = "final")]
    is_final: bool,
    /// Partner Center's message, the conflict, or why it failed.
    message: Option<String>,
    /// Partner Center's request-id of the PATCH.
    request_id: Option<String>,
    from_status: Option<String>,
    to_status: Option<String>,
    /// On conflict: the eTag of the version now current at Partner Center.
    current_etag: Option<String>,
    /// On conflict: that version (the referral's JSON).
    #[schema(value_type = Option<Object>)]
    current_version: Option<serde_json::Value>,
    /// The token name that asked, and its role.
    actor_name: String,
    actor_role: String,
    requested_at: String,
    /// When the newest step happened.
    updated_at: String,
}

impl ActionView {
    fn from_result(result: &ReferralActionResult) -> Self {
        let at = |ts: Timestamp| ts.to_rfc3339();
        Self {
            action_id: result.action_id.clone(),
            referral_id: result.referral_id.clone(),
            tenant: result.tenant.clone(),
            action: result.action.clone(),
            is_final: ActionState::parse(&result.state).is_some_and(ActionState::is_final),
            state: result.state.clone(),
            message: result.message.clone(),
            request_id: result.request_id.clone(),
            from_status: result.from_status.clone(),
            to_status: result.to_status.clone(),
            current_etag: result.current_etag.clone(),
            current_version: result
                .current_version
                .as_deref()
                .and_then(|text| serde_json::from_str(text).ok()),
            actor_name: result.actor_name.clone(),
            actor_role: result.actor_role.clone(),
            requested_at: at(result.requested_at),
            updated_at: at(result.at),
        }
    }

    fn from_row(row: ReferralActionRow) -> Self {
        Self {
            is_final: ActionState::parse(&row.state).is_some_and(ActionState::is_final),
            current_version: row
                .current_version
                .as_deref()
                .and_then(|text| serde_json::from_str(text).ok()),
            action_id: row.action_id,
            referral_id: row.referral_id,
            tenant: row.tenant,
            action: row.action,
            state: row.state,
            message: row.message,
            request_id: row.request_id,
            from_status: row.from_status,
            to_status: row.to_status,
            current_etag: row.current_etag,
            actor_name: row.actor_name,
            actor_role: row.actor_role,
            requested_at: rfc3339(row.requested_at),
            updated_at: rfc3339(row.at),
        }
    }
}

/// The body's error, naming the field.
fn field_error(field: &str, message: impl Into<String>) -> ApiError {
    ApiError {
        status: StatusCode::BAD_REQUEST,
        code: "invalid_action",
        message: format!("{field}: {}", message.into()),
        parameter: None,
        field: Some(field.to_owned()),
    }
}

#[utoipa::path(
    post,
    path = "/referrals/{id}/actions",
    tag = "actions",
    params(("id" = String, Path, description = "Referral id")),
    request_body(
        content = Object,
        description = "`{\"action\": \"accept\"|\"decline\"|\"won\"|\"lost\"|\"update\", \"etag\"?: the referral's eTag as seen, \"reason\"?, \"deal_value\"?, \"currency\"? (ISO 4217), \"closing_date\"? (YYYY-MM-DD), \"notes\"?, \"team_member_email\"?, \"team_member_name\"?}`"
    ),
    responses(
        (status = 202, description = "Queued; follow it with GET /api/v1/actions/{action_id}", body = ActionAccepted),
        (status = 400, description = "Not allowed, naming the field and why (nothing queued)", body = super::ErrorBody),
        (status = 401, description = "Missing or wrong token", body = super::ErrorBody),
        (status = 403, description = "A read token: actions need a sales or admin token", body = super::ErrorBody),
        (status = 404, description = "No such referral", body = super::ErrorBody),
        (status = 503, description = "The lead store or the broker is not answering (nothing queued)", body = super::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn create(
    State(state): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    id: Result<Path<String>, PathRejection>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let id = super::path_id(id, "id", 200)?;
    let body: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|error| field_error("body", format!("not JSON: {error}")))?;
    let serde_json::Value::Object(body) = body else {
        return Err(field_error("body", "must be a JSON object"));
    };
    let mut action = None;
    let mut etag = None;
    let mut fields = BTreeMap::new();
    for (key, value) in body {
        let text = match value {
            serde_json::Value::String(text) => text,
            serde_json::Value::Number(number) => number.to_string(),
            serde_json::Value::Null => continue,
            _ => return Err(field_error(&key, "must be a string or a number")),
        };
        if text.len() > 4000 {
            return Err(field_error(&key, "is longer than 4000 characters"));
        }
        match key.as_str() {
            "action" => action = Some(text),
            "etag" => etag = Some(text),
            name if FIELD_NAMES.contains(&name) => {
                fields.insert(key, text);
            }
            _ => {
                return Err(field_error(
                    &key,
                    format!(
                        "unknown field (known: action, etag, {})",
                        FIELD_NAMES.join(", ")
                    ),
                ));
            }
        }
    }
    let action = action.ok_or_else(|| {
        field_error(
            "action",
            "is required: accept, decline, won, lost or update",
        )
    })?;
    let stored = state
        .clickhouse
        .client()
        .query("SELECT ?fields FROM referrals FINAL WHERE referral_id = ? LIMIT 1")
        .bind(id.as_str())
        .fetch_optional::<ReferralRow>()
        .await
        .map_err(ApiError::clickhouse)?
        .ok_or_else(|| ApiError::not_found("referral"))?;
    let raw: serde_json::Value =
        serde_json::from_str(&stored.raw_json).map_err(ApiError::clickhouse)?;
    let text = |pointer: &str| {
        raw.pointer(pointer)
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    let view = ReferralView {
        status: text("/status"),
        substatus: text("/substatus"),
        direction: text("/direction"),
        referral_type: text("/type"),
    };
    let today = time::OffsetDateTime::now_utc().date().to_string();
    let planned = plan(
        &action,
        &fields,
        &view,
        text("/details/notes").as_deref(),
        &today,
    )
    .map_err(|refusal| field_error(refusal.field, refusal.message))?;
    let record = ReferralAction {
        action_id: uuid::Uuid::new_v4().to_string(),
        referral_id: id.clone(),
        tenant: stored.tenant.clone(),
        action: planned.kind.as_str().to_owned(),
        fields,
        expected_etag: etag.or(stored.etag),
        expected_status: Some(format!(
            "{}/{}",
            view.status.as_deref().unwrap_or("None"),
            view.substatus.as_deref().unwrap_or("None")
        )),
        actor_name: caller.name.clone(),
        actor_role: caller.role.as_str().to_owned(),
        requested_at: Timestamp::now(),
    };
    let unavailable = |error: String| {
        tracing::error!(%error, "referral action not queued");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "broker_unavailable",
            "the action could not be queued; try again",
        )
    };
    let payload = state
        .actions
        .actions
        .encode(&record)
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    state
        .producer
        .send(
            FutureRecord::to(&state.actions.actions_topic)
                .key(&record.referral_id)
                .payload(&payload),
            Timeout::After(Duration::from_secs(10)),
        )
        .await
        .map_err(|(error, _)| unavailable(error.to_string()))?;
    let mut queued = ReferralActionResult::of(&record, ActionState::Queued);
    queued.to_status = planned.to_status.clone();
    state.actions.remember(&queued);
    match state.actions.results.encode(&queued).await {
        Ok(payload) => {
            if let Err((error, _)) = state
                .producer
                .send(
                    FutureRecord::to(&state.actions.results_topic)
                        .key(&record.referral_id)
                        .payload(&payload),
                    Timeout::After(Duration::from_secs(10)),
                )
                .await
            {
                tracing::warn!(%error, action_id = %record.action_id, "queued step not recorded");
            }
        }
        Err(error) => {
            tracing::warn!(%error, action_id = %record.action_id, "queued step not recorded")
        }
    }
    tracing::info!(
        action_id = %record.action_id,
        referral_id = %record.referral_id,
        action = %record.action,
        actor = %record.actor_name,
        "referral action queued"
    );
    Ok((
        StatusCode::ACCEPTED,
        Json(ActionAccepted {
            action_id: record.action_id,
            referral_id: record.referral_id,
            state: ActionState::Queued.as_str().to_owned(),
            to_status: planned.to_status,
        }),
    )
        .into_response())
}

/// The newest step of each action in `rows` (ordered by `at_micros`), with the remembered
/// ones the table does not have yet; newest request first.
fn newest(rows: Vec<ReferralActionRow>, remembered: Vec<ActionView>) -> Vec<ActionView> {
    let mut by_id: BTreeMap<String, ActionView> = BTreeMap::new();
    for row in rows {
        by_id.insert(row.action_id.clone(), ActionView::from_row(row));
    }
    for view in remembered {
        by_id.entry(view.action_id.clone()).or_insert(view);
    }
    let mut views: Vec<ActionView> = by_id.into_values().collect();
    views.sort_by(|a, b| b.requested_at.cmp(&a.requested_at));
    views
}

#[utoipa::path(
    get,
    path = "/referrals/{id}/actions",
    tag = "actions",
    params(("id" = String, Path, description = "Referral id")),
    responses(
        (status = 200, description = "The referral's actions, newest first, each with its newest step", body = [ActionView]),
        (status = 400, description = "Invalid id", body = super::ErrorBody),
        (status = 401, description = "Missing or wrong token", body = super::ErrorBody),
        (status = 503, description = "The lead store is not answering", body = super::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn list(
    State(state): State<Arc<ApiState>>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Vec<ActionView>>, ApiError> {
    let id = super::path_id(id, "id", 200)?;
    let rows = state
        .clickhouse
        .client()
        .query(
            "SELECT ?fields FROM referral_actions FINAL WHERE referral_id = ? \
             ORDER BY at_micros LIMIT 10000",
        )
        .bind(id.as_str())
        .fetch_all::<ReferralActionRow>()
        .await
        .map_err(ApiError::clickhouse)?;
    let remembered = state.actions.remembered(|r| r.referral_id == id);
    Ok(Json(newest(rows, remembered)))
}

#[utoipa::path(
    get,
    path = "/actions/{action_id}",
    tag = "actions",
    params(("action_id" = String, Path, description = "The action_id a POST answered")),
    responses(
        (status = 200, description = "The action and its newest step", body = ActionView),
        (status = 400, description = "Invalid id", body = super::ErrorBody),
        (status = 401, description = "Missing or wrong token", body = super::ErrorBody),
        (status = 404, description = "No such action", body = super::ErrorBody),
        (status = 503, description = "The lead store is not answering", body = super::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn one(
    State(state): State<Arc<ApiState>>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<ActionView>, ApiError> {
    let id = super::path_id(id, "action_id", 100)?;
    let rows = state
        .clickhouse
        .client()
        .query(
            "SELECT ?fields FROM referral_actions FINAL WHERE action_id = ? \
             ORDER BY at_micros LIMIT 100",
        )
        .bind(id.as_str())
        .fetch_all::<ReferralActionRow>()
        .await
        .map_err(ApiError::clickhouse)?;
    let remembered = state.actions.remembered(|r| r.action_id == id);
    newest(rows, remembered)
        .into_iter()
        .next()
        .map(Json)
        .ok_or_else(|| ApiError::not_found("action"))
}

/// The query of `GET /actions`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ActionsQuery {
    /// `true` (default): only actions whose newest step is not `applied` (waiting, or ended
    /// `conflict`, `rejected`, `failed`: what a row of the page shows); `false`: every action.
    open: Option<String>,
    /// Requested within this many days, 1-90 (default 30).
    days: Option<String>,
    /// At most this many, newest request first, 1-1000 (default 200).
    limit: Option<String>,
}

#[utoipa::path(
    get,
    path = "/actions",
    tag = "actions",
    params(ActionsQuery),
    responses(
        (status = 200, description = "Recent actions of every referral, newest request first, each with its newest step (the page shows the open ones on their rows)", body = [ActionView]),
        (status = 400, description = "A parameter is invalid", body = super::ErrorBody),
        (status = 401, description = "Missing or wrong token", body = super::ErrorBody),
        (status = 503, description = "The lead store is not answering", body = super::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn recent(
    State(state): State<Arc<ApiState>>,
    query: Result<Query<ActionsQuery>, QueryRejection>,
) -> Result<Json<Vec<ActionView>>, ApiError> {
    let Query(query) = query?;
    let open = match query.open.as_deref().map(str::trim) {
        None | Some("true") => true,
        Some("false") => false,
        Some(_) => return Err(ApiError::parameter("open", "true or false")),
    };
    let days = super::page_limit(query.days.as_deref(), 1..=90, 30)
        .map_err(|_| ApiError::parameter("days", "a whole number of days from 1 to 90"))?;
    let limit = super::page_limit(query.limit.as_deref(), 1..=1000, 200)?;
    // Every step of the actions asked for (each action has a handful), newest requests first.
    let rows = state
        .clickhouse
        .client()
        .query(&format!(
            "SELECT ?fields FROM referral_actions FINAL WHERE action_id IN ( \
               SELECT action_id FROM referral_actions \
               WHERE requested_at >= now() - INTERVAL {days} DAY \
               GROUP BY action_id {} \
               ORDER BY max(requested_at) DESC LIMIT {limit}) \
             ORDER BY at_micros LIMIT 100000",
            if open {
                "HAVING argMax(state, at_micros) != 'applied'"
            } else {
                ""
            }
        ))
        .fetch_all::<ReferralActionRow>()
        .await
        .map_err(ApiError::clickhouse)?;
    let mut rows = rows;
    // Actions this process queued recently: their newest steps in the table (when the sink has
    // written any) outrank the `queued` this process remembers, so one since applied is not
    // shown as waiting.
    let remembered = state.actions.remembered(|_| true);
    let ids: Vec<&str> = remembered
        .iter()
        .map(|view| view.action_id.as_str())
        .filter(|id| !rows.iter().any(|row| row.action_id == *id))
        .collect();
    if !ids.is_empty() {
        let written = state
            .clickhouse
            .client()
            .query(
                "SELECT ?fields FROM referral_actions FINAL WHERE has(?, action_id) \
                 ORDER BY at_micros LIMIT 100000",
            )
            .bind(ids)
            .fetch_all::<ReferralActionRow>()
            .await
            .map_err(ApiError::clickhouse)?;
        rows.extend(written);
    }
    let mut views = newest(rows, remembered);
    if open {
        views.retain(|view| view.state != "applied");
    }
    views.truncate(limit as usize);
    Ok(Json(views))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(action_id: &str, state: &str, at: i64) -> ReferralActionRow {
        let ts = time::OffsetDateTime::from_unix_timestamp(at).unwrap();
        ReferralActionRow {
            action_id: action_id.into(),
            referral_id: "r".into(),
            tenant: "t".into(),
            action: "accept".into(),
            state: state.into(),
            message: None,
            request_id: None,
            from_status: None,
            to_status: None,
            current_etag: None,
            current_version: Some(r#"{"status":"Closed"}"#.into()),
            actor_name: "alice".into(),
            actor_role: "sales".into(),
            requested_at: ts,
            at: ts,
            at_micros: at as u64 * 1_000_000,
        }
    }

    #[test]
    fn the_newest_step_wins_and_remembered_actions_fill_in() {
        let rows = vec![
            row("a", "queued", 1),
            row("a", "sent", 2),
            row("a", "applied", 3),
        ];
        let mut remembered = ActionView::from_row(row("b", "queued", 5));
        remembered.requested_at = "2030-01-01T00:00:00Z".into();
        let also_a = ActionView::from_row(row("a", "queued", 1));
        let views = newest(rows, vec![remembered, also_a]);
        assert_eq!(views.len(), 2);
        assert_eq!(views[0].action_id, "b", "newest request first");
        assert_eq!(views[1].state, "applied");
        assert!(views[1].is_final);
        assert_eq!(
            views[1].current_version.as_ref().unwrap()["status"],
            "Closed"
        );
    }
}
