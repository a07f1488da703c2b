//! The sync trigger and the sync status, read back from `sync_runs`.
//!
//! A trigger is a command on `hunter.commands.v1`; the source turns it into one run per tenant
//! whose `run_id` is the command id (the `task_id` returned here), records it as `coalesced`
//! into a run that was due anyway, or as `expired` when it reached the source later than one
//! sync interval after it was requested (the schedule has polled since; an old trigger is never
//! run). The sink writes runs to `sync_runs`, so a caller follows its task with
//! `GET /sync/runs/{task_id}` until the state is final.
//!
//! Limits: with `HUNTER_PARTNER_CENTER_ENABLED=false` the trigger is refused (409
//! `sync_disabled`) instead of queueing a command no source reads. While a trigger this process
//! queued has no run recorded yet (and is younger than the sync interval), further triggers join
//! it and get its task id (`joined: true`) instead of queueing another command: at most one
//! queued command per API process, however often callers press the button.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hunter_clickhouse::rows::SyncRunRow;
use hunter_core::records::{Command, RunStatus, RunTrigger, Timestamp};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::leads::rfc3339;
use super::{ApiError, ApiState};
use hunter_core::telemetry::names;

/// Task ids handed out by this process and when, newest last (bounded).
#[derive(Default)]
pub(crate) struct IssuedTasks(Mutex<VecDeque<(String, Instant)>>);

impl IssuedTasks {
    const CAPACITY: usize = 1000;

    fn remember(&self, task_id: &str) {
        let mut tasks = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if tasks.len() == Self::CAPACITY {
            tasks.pop_front();
        }
        tasks.push_back((task_id.to_owned(), Instant::now()));
    }

    /// When this process handed the task out, if it did.
    fn issued_at(&self, task_id: &str) -> Option<Instant> {
        let tasks = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        tasks
            .iter()
            .find(|(known, _)| known == task_id)
            .map(|(_, at)| *at)
    }

    #[cfg(test)]
    fn contains(&self, task_id: &str) -> bool {
        self.issued_at(task_id).is_some()
    }
}

/// The trigger this process queued last: further triggers join it while it waits.
pub(crate) struct PendingTrigger {
    task_id: String,
    issued_at: Instant,
}

/// The trigger's answer.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SyncAccepted {
    success: bool,
    /// Follow it with `GET /sync/runs/{task_id}`.
    task_id: String,
    /// True when a trigger was already queued and not yet picked up: this call joined it and
    /// got its task id instead of queueing another.
    #[serde(default)]
    joined: bool,
}

/// A queued trigger no run has been recorded for after this long will never run: the source
/// expires it (older than the interval when read) or is not running at all.
fn queued_gives_up_after(state: &ApiState) -> Duration {
    state.settings.sync.interval + state.settings.sync.poll_budget + Duration::from_secs(60)
}

/// Whether no run of `task_id` is recorded yet. When ClickHouse cannot say, the trigger counts
/// as still queued: joining it is the safe side (no flood while the store is down).
async fn still_queued(state: &ApiState, task_id: &str) -> bool {
    let recorded = state
        .clickhouse
        .client()
        .query("SELECT toUInt64(count()) FROM sync_runs WHERE run_id = ?")
        .bind(task_id)
        .fetch_one::<u64>()
        .await;
    match recorded {
        Ok(count) => count == 0,
        Err(error) => {
            tracing::warn!(%error, task_id, "cannot tell whether the queued sync trigger started; joining it");
            true
        }
    }
}

#[utoipa::path(
    post,
    path = "/partner-center/referrals/sync",
    responses(
        (status = 202, description = "The sync was queued, or joined the one already queued", body = SyncAccepted),
        (status = 401, description = "No or wrong bearer token", body = super::ErrorBody),
        (status = 403, description = "A read-only token", body = super::ErrorBody),
        (status = 409, description = "The Partner Center source is disabled (HUNTER_PARTNER_CENTER_ENABLED=false): code sync_disabled", body = super::ErrorBody),
        (status = 429, description = "Too many wrong tokens from this address (Retry-After)", body = super::ErrorBody),
        (status = 503, description = "The broker did not take the trigger", body = super::ErrorBody),
    ),
    security(("bearer" = [])),
    tag = "sync"
)]
pub(crate) async fn trigger(State(state): State<Arc<ApiState>>) -> Result<Response, ApiError> {
    if !state.settings.partner_center.enabled {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "sync_disabled",
            "the partner center source is disabled (HUNTER_PARTNER_CENTER_ENABLED=false), so no \
             sync can run; set HUNTER_PARTNER_CENTER_ENABLED=true for the source and the api",
        ));
    }
    // One trigger at a time: held while checking and queueing, so concurrent calls join.
    let mut pending = state.pending_trigger.lock().await;
    if let Some(queued) = pending.as_ref()
        && queued.issued_at.elapsed() < state.settings.sync.interval
        && still_queued(&state, &queued.task_id).await
    {
        metrics::counter!(names::API_SYNC_TRIGGERS_TOTAL).increment(1);
        tracing::info!(task_id = %queued.task_id, "sync requested; joined the queued trigger");
        return Ok((
            StatusCode::ACCEPTED,
            Json(SyncAccepted {
                success: true,
                task_id: queued.task_id.clone(),
                joined: true,
            }),
        )
            .into_response());
    }
    let command = Command {
        command_id: uuid::Uuid::new_v4().to_string(),
        kind: Command::SYNC_NOW.to_owned(),
        tenant: None,
        requested_at: Timestamp::now(),
        since: None,
        referral_id: None,
    };
    let unavailable = |error: String| {
        tracing::error!(%error, "sync trigger not delivered");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "broker_unavailable",
            "the sync trigger could not be queued; try again",
        )
    };
    state.send_command(&command).await.map_err(unavailable)?;
    state.issued_tasks.remember(&command.command_id);
    *pending = Some(PendingTrigger {
        task_id: command.command_id.clone(),
        issued_at: Instant::now(),
    });
    metrics::counter!(names::API_SYNC_TRIGGERS_TOTAL).increment(1);
    tracing::info!(task_id = %command.command_id, "sync requested");
    Ok((
        StatusCode::ACCEPTED,
        Json(SyncAccepted {
            success: true,
            task_id: command.command_id,
            joined: false,
        }),
    )
        .into_response())
}

/// One sync run of one tenant.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunView {
    run_id: String,
    tenant: String,
    /// schedule, startup, manual or sweep.
    trigger: String,
    /// running, succeeded, failed, coalesced (served by the run in coalesced_into) or expired
    /// (a trigger that reached the source later than one sync interval after it was requested:
    /// not run).
    status: String,
    started_at: String,
    finished_at: Option<String>,
    pages: u64,
    fetched: u64,
    published: u64,
    skipped: u64,
    dead_lettered: u64,
    error_class: Option<String>,
    error_message: Option<String>,
    /// For a coalesced trigger: the run that served it.
    coalesced_into: Option<String>,
    /// A backfill: referrals it expects to read in all (the previous read of everything), when
    /// known. While it runs, `fetched` of `estimate` is its progress.
    estimate: Option<u64>,
    /// A windowed backfill: the updatedDateTime it reads from.
    since: Option<String>,
    /// Seconds from its start to its latest record (its end, or its last progress record).
    elapsed_seconds: u64,
}

impl From<SyncRunRow> for RunView {
    fn from(row: SyncRunRow) -> Self {
        RunView {
            run_id: row.run_id,
            tenant: row.tenant,
            trigger: row.trigger,
            status: row.status,
            started_at: rfc3339(row.started_at),
            finished_at: row.finished_at.map(rfc3339),
            pages: row.pages,
            fetched: row.fetched,
            published: row.published,
            skipped: row.skipped,
            dead_lettered: row.dead_lettered,
            error_class: row.error_class,
            error_message: row.error_message,
            coalesced_into: row.coalesced_into,
            estimate: row.estimate,
            since: row.since.map(rfc3339),
            elapsed_seconds: (row.row_version / 1_000_000)
                .saturating_sub(u64::try_from(row.started_at.unix_timestamp()).unwrap_or(0)),
        }
    }
}

/// Sync state of one tenant.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TenantStatus {
    tenant: String,
    /// idle, running, failed or disabled.
    state: String,
    last_run: Option<RunView>,
    /// End of the last successful run.
    last_success_at: Option<String>,
    /// When the schedule polls next (estimate: last scheduled start + interval).
    next_run_at: Option<String>,
}

/// The sync status of the deployment.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SyncStatus {
    /// The Partner Center source's feature flag (HUNTER_PARTNER_CENTER_ENABLED).
    enabled: bool,
    /// Worst state over the tenants: disabled, failed, running or idle.
    state: String,
    interval_seconds: u64,
    tenants: Vec<TenantStatus>,
}

/// A run still "running" this long after its start was interrupted (its source stopped).
fn stale_after(state: &ApiState) -> Duration {
    state.settings.sync.poll_budget + Duration::from_secs(60)
}

fn tenant_state(run: Option<&SyncRunRow>, stale_after: Duration) -> &'static str {
    match run {
        None => "idle",
        Some(run) if run.run_status() == Some(RunStatus::Running) => {
            let age = OffsetDateTime::now_utc() - run.started_at;
            if age > stale_after {
                "failed"
            } else {
                "running"
            }
        }
        Some(run) if run.run_status() == Some(RunStatus::Failed) => "failed",
        Some(_) => "idle",
    }
}

#[utoipa::path(
    get,
    path = "/partner-center/sync/status",
    responses(
        (status = 200, description = "Sync state per tenant", body = SyncStatus),
        (status = 401, description = "No or wrong bearer token", body = super::ErrorBody),
        (status = 503, description = "ClickHouse is not answering", body = super::ErrorBody),
    ),
    security(("bearer" = [])),
    tag = "sync"
)]
pub(crate) async fn status(
    State(state): State<Arc<ApiState>>,
) -> Result<Json<SyncStatus>, ApiError> {
    let settings = &state.settings;
    let client = state.clickhouse.client();
    // The latest real run per tenant (coalesced triggers are served by another run).
    let latest = client
        .query(
            "SELECT ?fields FROM sync_runs FINAL WHERE status NOT IN (?, ?) \
             ORDER BY started_at DESC, row_version DESC LIMIT 1 BY tenant",
        )
        .bind(RunStatus::Coalesced.as_str())
        .bind(RunStatus::Expired.as_str())
        .fetch_all::<SyncRunRow>();
    let successes = crate::queries::last_successes(client);
    let scheduled = client
        .query(
            "SELECT tenant, toInt64(toUInt32(max(started_at))) FROM sync_runs FINAL \
             WHERE trigger IN (?, ?, ?) GROUP BY tenant",
        )
        .bind(RunTrigger::Schedule.as_str())
        .bind(RunTrigger::Startup.as_str())
        .bind(RunTrigger::Sweep.as_str())
        .fetch_all::<(String, i64)>();
    let (latest, successes, scheduled) =
        tokio::try_join!(latest, successes, scheduled).map_err(ApiError::clickhouse)?;
    let stale = stale_after(&state);
    let interval = settings.sync.interval;
    let at = |seconds: i64| {
        OffsetDateTime::from_unix_timestamp(seconds)
            .ok()
            .map(rfc3339)
    };
    let enabled = settings.partner_center.enabled;
    let tenants: Vec<TenantStatus> = settings
        .partner_center
        .tenants
        .iter()
        .map(|tenant| {
            let run = latest.iter().find(|run| run.tenant == tenant.name);
            let state = if enabled {
                tenant_state(run, stale)
            } else {
                "disabled"
            };
            TenantStatus {
                tenant: tenant.name.clone(),
                state: state.to_owned(),
                last_run: run.cloned().map(RunView::from),
                last_success_at: successes
                    .iter()
                    .find(|(name, _)| *name == tenant.name)
                    .and_then(|(_, seconds)| at(*seconds)),
                next_run_at: if enabled {
                    scheduled
                        .iter()
                        .find(|(name, _)| *name == tenant.name)
                        .and_then(|(_, seconds)| at(seconds + interval.as_secs() as i64))
                } else {
                    None
                },
            }
        })
        .collect();
    let overall = ["disabled", "failed", "running"]
        .into_iter()
        .find(|worst| {
            (!enabled && *worst == "disabled") || tenants.iter().any(|t| t.state == *worst)
        })
        .unwrap_or("idle");
    Ok(Json(SyncStatus {
        enabled,
        state: overall.to_owned(),
        interval_seconds: interval.as_secs(),
        tenants,
    }))
}

/// Query parameters of `GET /sync/runs`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RunsQuery {
    /// Newest runs first, 1-200 (default 20).
    limit: Option<String>,
    /// Only this tenant's runs.
    tenant: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunsPage {
    items: Vec<RunView>,
}

#[utoipa::path(
    get,
    path = "/sync/runs",
    params(RunsQuery),
    responses(
        (status = 200, description = "Recent sync runs, newest first", body = RunsPage),
        (status = 400, description = "A parameter is invalid", body = super::ErrorBody),
        (status = 401, description = "No or wrong bearer token", body = super::ErrorBody),
    ),
    security(("bearer" = [])),
    tag = "sync"
)]
pub(crate) async fn runs(
    State(state): State<Arc<ApiState>>,
    query: Result<Query<RunsQuery>, QueryRejection>,
) -> Result<Json<RunsPage>, ApiError> {
    let Query(query) = query?;
    let limit = super::page_limit(query.limit.as_deref(), 1..=200, 20)?;
    if let Some(tenant) = &query.tenant
        && !state
            .settings
            .partner_center
            .tenants
            .iter()
            .any(|known| known.name == *tenant)
    {
        return Err(ApiError::parameter(
            "tenant",
            format!("{tenant:?} is not a tenant of this deployment"),
        ));
    }
    let sql = format!(
        "SELECT ?fields FROM sync_runs FINAL{} ORDER BY started_at DESC, run_id LIMIT ?",
        if query.tenant.is_some() {
            " WHERE tenant = ?"
        } else {
            ""
        }
    );
    let mut select = state.clickhouse.client().query(&sql);
    if let Some(tenant) = &query.tenant {
        select = select.bind(tenant.as_str());
    }
    let rows = select
        .bind(limit)
        .fetch_all::<SyncRunRow>()
        .await
        .map_err(ApiError::clickhouse)?;
    Ok(Json(RunsPage {
        items: rows.into_iter().map(RunView::from).collect(),
    }))
}

/// A triggered task followed to completion.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskView {
    task_id: String,
    /// queued (accepted, no run recorded yet), running, succeeded, failed (any tenant's run
    /// failed) or expired (not run: it reached the source later than one sync interval after it
    /// was requested, or no source picked it up at all). A coalesced trigger takes the state of
    /// the runs that served it.
    state: String,
    /// Its runs, one per tenant; for a coalesced trigger, the runs that served it.
    runs: Vec<RunView>,
    /// For a coalesced trigger: its own records (status coalesced).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    coalesced: Vec<RunView>,
}

fn task_state(runs: &[SyncRunRow], stale_after: Duration) -> &'static str {
    if runs.is_empty() {
        return "queued";
    }
    let states: Vec<&str> = runs
        .iter()
        .map(|run| {
            if run.run_status() == Some(RunStatus::Expired) {
                RunStatus::Expired.as_str()
            } else {
                tenant_state(Some(run), stale_after)
            }
        })
        .collect();
    if states.contains(&"running") {
        "running"
    } else if states.contains(&"failed") {
        "failed"
    } else if states.contains(&"expired") {
        "expired"
    } else {
        "succeeded"
    }
}

#[utoipa::path(
    get,
    path = "/sync/runs/{task_id}",
    params(("task_id" = String, Path, description = "The task_id returned by the sync trigger, or any run id")),
    responses(
        (status = 200, description = "The task and its runs: each run's latest record, so a running backfill's progress (fetched of estimate, elapsed_seconds)", body = TaskView),
        (status = 400, description = "The id is invalid", body = super::ErrorBody),
        (status = 401, description = "No or wrong bearer token", body = super::ErrorBody),
        (status = 404, description = "No such task", body = super::ErrorBody),
    ),
    security(("bearer" = [])),
    tag = "sync"
)]
pub(crate) async fn run(
    State(state): State<Arc<ApiState>>,
    task_id: Result<Path<String>, PathRejection>,
) -> Result<Json<TaskView>, ApiError> {
    let task_id = super::path_id(task_id, "task_id", 100)?;
    let fetch = |ids: Vec<String>| {
        let placeholders = vec!["?"; ids.len()].join(", ");
        let sql = format!(
            "SELECT ?fields FROM sync_runs FINAL WHERE run_id IN ({placeholders}) ORDER BY tenant"
        );
        let mut select = state.clickhouse.client().query(&sql);
        for id in &ids {
            select = select.bind(id.as_str());
        }
        select.fetch_all::<SyncRunRow>()
    };
    let own = fetch(vec![task_id.clone()])
        .await
        .map_err(ApiError::clickhouse)?;
    let issued_at = state.issued_tasks.issued_at(&task_id);
    if own.is_empty() && issued_at.is_none() {
        return Err(ApiError::not_found("task"));
    }
    let (mut coalesced, mut runs): (Vec<SyncRunRow>, Vec<SyncRunRow>) = own
        .into_iter()
        .partition(|run| run.run_status() == Some(RunStatus::Coalesced));
    let serving: Vec<String> = coalesced
        .iter()
        .filter_map(|run| run.coalesced_into.clone())
        .filter(|id| *id != task_id)
        .collect();
    if !serving.is_empty() {
        runs.extend(fetch(serving).await.map_err(ApiError::clickhouse)?);
    }
    let stale = stale_after(&state);
    // Coalesced records whose serving run is not recorded yet still count as pending work.
    let state_name = if runs.is_empty() && !coalesced.is_empty() {
        "running"
    } else if runs.is_empty()
        && issued_at.is_some_and(|at| at.elapsed() > queued_gives_up_after(&state))
    {
        // Nothing picked it up in time (no source running?): it will never run.
        "expired"
    } else {
        task_state(&runs, stale)
    };
    coalesced.sort_by(|a, b| a.tenant.cmp(&b.tenant));
    Ok(Json(TaskView {
        task_id,
        state: state_name.to_owned(),
        runs: runs.into_iter().map(RunView::from).collect(),
        coalesced: coalesced.into_iter().map(RunView::from).collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(status: &str, started_secs_ago: i64) -> SyncRunRow {
        SyncRunRow {
            run_id: "r".into(),
            tenant: "t".into(),
            trigger: "manual".into(),
            status: status.into(),
            started_at: OffsetDateTime::now_utc() - time::Duration::seconds(started_secs_ago),
            finished_at: None,
            pages: 0,
            fetched: 0,
            published: 0,
            skipped: 0,
            dead_lettered: 0,
            error_class: None,
            error_message: None,
            coalesced_into: None,
            row_version: 0,
            estimate: None,
            since: None,
        }
    }

    #[test]
    fn states_from_runs() {
        let stale = Duration::from_secs(600);
        assert_eq!(tenant_state(None, stale), "idle");
        assert_eq!(tenant_state(Some(&run("running", 5)), stale), "running");
        assert_eq!(tenant_state(Some(&run("running", 3600)), stale), "failed");
        assert_eq!(tenant_state(Some(&run("failed", 5)), stale), "failed");
        assert_eq!(tenant_state(Some(&run("succeeded", 5)), stale), "idle");
        assert_eq!(task_state(&[], stale), "queued");
        assert_eq!(
            task_state(&[run("succeeded", 5), run("running", 1)], stale),
            "running"
        );
        assert_eq!(
            task_state(&[run("succeeded", 5), run("failed", 1)], stale),
            "failed"
        );
        assert_eq!(task_state(&[run("succeeded", 5)], stale), "succeeded");
        assert_eq!(task_state(&[run("expired", 5)], stale), "expired");
        assert_eq!(
            task_state(&[run("expired", 5), run("running", 1)], stale),
            "running"
        );
    }

    #[test]
    fn issued_tasks_are_bounded() {
        let tasks = IssuedTasks::default();
        for n in 0..(IssuedTasks::CAPACITY + 5) {
            tasks.remember(&n.to_string());
        }
        assert!(!tasks.contains("0"));
        assert!(tasks.contains(&(IssuedTasks::CAPACITY + 4).to_string()));
    }
}
