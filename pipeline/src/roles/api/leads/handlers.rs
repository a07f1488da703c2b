//! The handlers of `GET /leads`, `GET /leads/{id}` and `GET /referrals/{id}`, the views they
//! answer with, and the ClickHouse reads behind them.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse as _, Response};
use hunter_clickhouse::rows::{LeadHistoryRow, LeadRow, ReferralRow};
use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::query::*;
use crate::roles::api::{ApiError, ApiState};
use hunter_core::telemetry::names;

/// A lead as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LeadView {
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
    company_domain_source: Option<String>,
    country: Option<String>,
    /// In `currency`.
    deal_value: Option<f64>,
    currency: Option<String>,
    /// RFC 3339.
    created_at: Option<String>,
    /// RFC 3339.
    updated_at: String,
    etag: Option<String>,
    version: u64,
    enrichment_version: u16,
    email_provider: String,
    email_provider_source: String,
    company_name_normalized: Option<String>,
    size_band: Option<String>,
    products: Vec<String>,
    solutions: Vec<String>,
    industries: Vec<String>,
    deal_value_usd: Option<f64>,
    usd_rate: Option<f64>,
    score: u8,
    priority: String,
    change_type: String,
    previous_status: Option<String>,
    /// RFC 3339: when Partner Center archives the referral as Expired if nobody answers
    /// (docs/leads.md).
    expires_at: Option<String>,
    /// `expires_at` is Hunter's estimate (created + 14 days), not Partner Center's date.
    expires_at_estimated: bool,
    /// RFC 3339.
    accepted_at: Option<String>,
    /// RFC 3339: the expected close (`details.closingDateTime`).
    closing_at: Option<String>,
    /// RFC 3339.
    closed_at: Option<String>,
    /// The partner's own team on the referral.
    owner_emails: Vec<String>,
}

pub(crate) fn rfc3339(instant: OffsetDateTime) -> String {
    instant.format(&Rfc3339).unwrap_or_default()
}

pub(super) fn money(hundredths: Option<i64>) -> Option<f64> {
    hundredths.map(|value| value as f64 / 100.0)
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
            company_domain_source: row.company_domain_source,
            country: row.country,
            deal_value: money(row.deal_value),
            currency: row.currency,
            created_at: row.created_at.map(rfc3339),
            updated_at: rfc3339(row.updated_at),
            etag: row.etag,
            version: row.version,
            enrichment_version: row.enrichment_version,
            email_provider: row.email_provider,
            email_provider_source: row.email_provider_source,
            company_name_normalized: row.company_name_normalized,
            size_band: row.size_band,
            products: row.products,
            solutions: row.solutions,
            industries: row.industries,
            deal_value_usd: money(row.deal_value_usd),
            usd_rate: row.usd_rate,
            score: row.score,
            priority: row.priority,
            change_type: row.change_type,
            previous_status: row.previous_status,
            expires_at: row.expires_at.map(rfc3339),
            expires_at_estimated: row.expires_at_estimated != 0,
            accepted_at: row.accepted_at.map(rfc3339),
            closing_at: row.closing_at.map(rfc3339),
            closed_at: row.closed_at.map(rfc3339),
            owner_emails: row.owner_emails,
        }
    }
}

/// One page of leads.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LeadsPage {
    /// Each a [`LeadView`]: from the read model's row store, or serialized from ClickHouse's row.
    #[schema(value_type = Vec<LeadView>)]
    items: Vec<Box<serde_json::value::RawValue>>,
    /// Leads matching the filters, over all pages.
    total: u64,
    limit: u32,
    /// The sort applied, e.g. `-updated_at`.
    sort: String,
    /// Pass as `cursor` for the next page; absent on the last page.
    next_cursor: Option<String>,
}

#[utoipa::path(
    get,
    path = "/leads",
    params(LeadsQuery),
    responses(
        (status = 200, description = "A page of leads", body = LeadsPage),
        (status = 400, description = "A parameter is invalid", body = crate::roles::api::ErrorBody),
        (status = 401, description = "No or wrong bearer token", body = crate::roles::api::ErrorBody),
        (status = 503, description = "ClickHouse is not answering", body = crate::roles::api::ErrorBody),
    ),
    security(("bearer" = [])),
    tag = "leads"
)]
pub(crate) async fn list(
    State(state): State<Arc<ApiState>>,
    query: Result<Query<LeadsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query?;
    let request = LeadsRequest::parse(&query)?;
    // The read model answers when it is built, fresh, and knows every filter; its pages are
    // cached per model generation, so a cached page is never older than the model.
    let generation = match (&state.read_model, request.model_filters()) {
        (Some(live), Some(_)) => live.generation_if_fresh(),
        _ => None,
    };
    let key = match generation {
        Some(generation) => format!("model {generation}|{}", request.cache_key()),
        None => request.cache_key(),
    };
    let computing = state.clone();
    let answer = state
        .pages
        .get(key, move || async move {
            let page = page(&computing, request, generation.is_some())
                .await
                .map_err(Arc::new)?;
            serde_json::to_vec(&page)
                .map(Arc::new)
                .map_err(|error| Arc::new(error.to_string()))
        })
        .await;
    match answer {
        Ok(body) => Ok((
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            body.as_ref().clone(),
        )
            .into_response()),
        Err(error) => Err(ApiError::clickhouse(error)),
    }
}

/// The ids, versions and sort keys of the page (`limit + 1` at most) and the total: from the
/// read model when `use_model` and it can answer, else from ClickHouse under FINAL.
pub(crate) async fn page_keys(
    state: &ApiState,
    request: &LeadsRequest,
    use_model: bool,
) -> Result<(Vec<(String, u64, String)>, u64), String> {
    if let (true, Some(live), Some(filters)) =
        (use_model, &state.read_model, request.model_filters())
    {
        // Milliseconds of CPU at a million leads: on a blocking thread, so that the runtime's
        // workers stay free for I/O, the read model's own polls among it (a poll delayed past
        // a second makes the model stale, and every question would go to ClickHouse).
        let (live, filters, sort, cursor, limit) = (
            live.clone(),
            filters.to_vec(),
            request.sort(),
            request.cursor().cloned(),
            request.limit() as usize,
        );
        // At most one answer a core at once (`LiveModel::answering`).
        let permit = live
            .answering
            .acquire()
            .await
            .map_err(|error| error.to_string())?;
        let answering = live.clone();
        let answer = tokio::task::spawn_blocking(move || {
            answering.answer(&filters, sort, cursor.as_ref(), limit)
        })
        .await
        .map_err(|error| error.to_string())?;
        drop(permit);
        if let Some(page) = answer {
            return Ok((page.keys, page.total));
        }
    }
    let client = state.clickhouse.client();
    let (page_sql, page_binds) = request.page_sql();
    let (count_sql, count_binds) = request.count_sql();
    let page = bind_all(client.query(&page_sql), &page_binds).fetch_all::<(String, u64, String)>();
    let count = bind_all(client.query(&count_sql), &count_binds).fetch_one::<u64>();
    tokio::try_join!(page, count).map_err(|e| e.to_string())
}

/// One page: its ids and sort keys (and the total) from the read model or ClickHouse, then the
/// page's rows: from the read model's row store where it holds their exact version and is
/// fresh, the rest from ClickHouse. Errors are ClickHouse's, in words.
pub(super) async fn page(
    state: &ApiState,
    request: LeadsRequest,
    use_model: bool,
) -> Result<LeadsPage, String> {
    let (mut keys, total) = page_keys(state, &request, use_model).await?;
    let more = keys.len() > request.limit() as usize;
    keys.truncate(request.limit() as usize);
    let next_cursor = match keys.last() {
        Some((id, _, key)) if more => Some(request.next_cursor(id, key)?),
        _ => None,
    };
    let items = page_rows(state, &keys).await?;
    Ok(LeadsPage {
        items,
        total,
        limit: request.limit(),
        sort: request.sort_name(),
        next_cursor,
    })
}

/// The rows of `keys` as JSON, in order: those the row store holds (docs/api-read-model.md),
/// the others read from ClickHouse by [`fetch_by_ids`]. A row ClickHouse no longer has (the
/// lead was replaced between the two reads) is left out, as before.
async fn page_rows(
    state: &ApiState,
    keys: &[(String, u64, String)],
) -> Result<Vec<Box<serde_json::value::RawValue>>, String> {
    let mut held = match &state.read_model {
        Some(live) => live.rows(keys.iter().map(|(id, version, _)| (id.as_str(), *version))),
        None => vec![None; keys.len()],
    };
    let missing: Vec<(String, u64, String)> = keys
        .iter()
        .zip(&held)
        .filter(|(_, row)| row.is_none())
        .map(|(key, _)| key.clone())
        .collect();
    let from_store = (keys.len() - missing.len()) as u64;
    if from_store > 0 {
        metrics::counter!(names::API_LEAD_ROWS_TOTAL, "from" => "store").increment(from_store);
    }
    if !missing.is_empty() {
        metrics::counter!(names::API_LEAD_ROWS_TOTAL, "from" => "clickhouse")
            .increment(missing.len() as u64);
        let mut fetched: std::collections::HashMap<String, LeadView> =
            fetch_by_ids(state, &missing)
                .await?
                .into_iter()
                .map(|view| (view.lead_id.clone(), view))
                .collect();
        for ((id, _, _), row) in keys.iter().zip(held.iter_mut()) {
            if row.is_none()
                && let Some(view) = fetched.remove(id)
            {
                *row = Some(serde_json::value::to_raw_value(&view).map_err(|e| e.to_string())?);
            }
        }
    }
    Ok(held.into_iter().flatten().collect())
}

/// The page's whole rows in the page's order, by (lead id, version): the exact rows the page
/// query chose, found through the primary key without FINAL (a replayed row may be there twice;
/// the newest insert is taken, as FINAL would: a lead made again by newer lead rules has the
/// version of the row it replaces, docs/leads.md).
pub(super) async fn fetch_by_ids(
    state: &ApiState,
    keys: &[(String, u64, String)],
) -> Result<Vec<LeadView>, String> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let placeholders = vec!["?"; keys.len()].join(", ");
    let versions = vec!["(?, ?)"; keys.len()].join(", ");
    let sql = format!(
        "SELECT ?fields FROM leads WHERE lead_id IN ({placeholders}) AND (lead_id, version) IN ({versions}) ORDER BY inserted_at DESC"
    );
    let mut select = state.clickhouse.client().query(&sql);
    for (id, _, _) in keys {
        select = select.bind(id.as_str());
    }
    for (id, version, _) in keys {
        select = select.bind(id.as_str()).bind(*version);
    }
    let rows = select
        .fetch_all::<LeadRow>()
        .await
        .map_err(|e| e.to_string())?;
    let mut by_id: std::collections::HashMap<String, LeadRow> =
        std::collections::HashMap::with_capacity(rows.len());
    for row in rows {
        by_id.entry(row.lead_id.clone()).or_insert(row);
    }
    Ok(keys
        .iter()
        .filter_map(|(id, _, _)| by_id.remove(id))
        .map(LeadView::from)
        .collect())
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HistoryView {
    version: u64,
    status: Option<String>,
    substatus: Option<String>,
    previous_status: Option<String>,
    change_type: String,
    deal_value_usd: Option<f64>,
    score: u8,
    updated_at: String,
    processed_at: String,
    /// RFC 3339: the expiry this version carried.
    expires_at: Option<String>,
}

/// A lead with every version seen, oldest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LeadDetail {
    lead: LeadView,
    history: Vec<HistoryView>,
}

#[utoipa::path(
    get,
    path = "/leads/{id}",
    params(("id" = String, Path, description = "Lead id (= referral id)")),
    responses(
        (status = 200, description = "The lead and its history", body = LeadDetail),
        (status = 400, description = "The id is invalid", body = crate::roles::api::ErrorBody),
        (status = 401, description = "No or wrong bearer token", body = crate::roles::api::ErrorBody),
        (status = 404, description = "No such lead", body = crate::roles::api::ErrorBody),
    ),
    security(("bearer" = [])),
    tag = "leads"
)]
pub(crate) async fn detail(
    State(state): State<Arc<ApiState>>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<LeadDetail>, ApiError> {
    let id = crate::roles::api::path_id(id, "id", 200)?;
    let client = state.clickhouse.client();
    let lead = client
        .query("SELECT ?fields FROM leads FINAL WHERE lead_id = ? LIMIT 1")
        .bind(id.as_str())
        .fetch_optional::<LeadRow>();
    let history = client
        .query("SELECT ?fields FROM lead_history FINAL WHERE lead_id = ? ORDER BY version")
        .bind(id.as_str())
        .fetch_all::<LeadHistoryRow>();
    let (lead, history) = tokio::try_join!(lead, history).map_err(ApiError::clickhouse)?;
    let lead = lead.ok_or_else(|| ApiError::not_found("lead"))?;
    Ok(Json(LeadDetail {
        lead: lead.into(),
        history: history
            .into_iter()
            .map(|row| HistoryView {
                version: row.version,
                status: row.status,
                substatus: row.substatus,
                previous_status: row.previous_status,
                change_type: row.change_type,
                deal_value_usd: money(row.deal_value_usd),
                score: row.score,
                updated_at: rfc3339(row.updated_at),
                processed_at: rfc3339(row.processed_at),
                expires_at: row.expires_at.map(rfc3339),
            })
            .collect(),
    }))
}

/// A referral's latest version as Partner Center returned it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReferralView {
    referral_id: String,
    tenant: String,
    updated_at: String,
    etag: Option<String>,
    /// When the source read this version.
    fetched_at: String,
    /// The referral JSON exactly as received, unknown fields included.
    #[schema(value_type = Object)]
    referral: Box<serde_json::value::RawValue>,
}

#[utoipa::path(
    get,
    path = "/referrals/{id}",
    params(("id" = String, Path, description = "Referral id")),
    responses(
        (status = 200, description = "The referral as received", body = ReferralView),
        (status = 400, description = "The id is invalid", body = crate::roles::api::ErrorBody),
        (status = 401, description = "No or wrong bearer token", body = crate::roles::api::ErrorBody),
        (status = 404, description = "No such referral", body = crate::roles::api::ErrorBody),
    ),
    security(("bearer" = [])),
    tag = "referrals"
)]
pub(crate) async fn referral(
    State(state): State<Arc<ApiState>>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<ReferralView>, ApiError> {
    let id = crate::roles::api::path_id(id, "id", 200)?;
    let stored = state
        .clickhouse
        .client()
        .query("SELECT ?fields FROM referrals FINAL WHERE referral_id = ? LIMIT 1")
        .bind(id.as_str())
        .fetch_optional::<ReferralRow>()
        .await
        .map_err(ApiError::clickhouse)?
        .ok_or_else(|| ApiError::not_found("referral"))?;
    let referral =
        serde_json::value::RawValue::from_string(stored.raw_json).map_err(ApiError::clickhouse)?;
    Ok(Json(ReferralView {
        referral_id: id,
        tenant: stored.tenant,
        updated_at: rfc3339(stored.updated_at),
        etag: stored.etag,
        fetched_at: rfc3339(stored.fetched_at),
        referral,
    }))
}
