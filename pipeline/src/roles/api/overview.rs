//! `GET /overview`: the figures above the page's table, each with the `GET /leads` filter that
//! lists the leads behind it (`filter`, a query string), so a click on a figure filters the
//! table to exactly the leads it counts.
//!
//! - Leads by referral status, with their USD value; incoming referrals waiting for an answer
//!   (direction `Incoming`, status `New`), and those of them expiring within 48 hours (the
//!   alert's window, `expiry.rs`; with how many on Hunter's estimated date); the pipeline (open leads: `New` and `Active`) in USD,
//!   with how many open leads have no USD value (no rate for their currency, or no value), so a
//!   partial sum says so; distinct companies (company domains, compared in lower case) by mail
//!   provider; the last sync run and the last successful one.
//! - Four ClickHouse questions, asked at once: leads by status (one scan of the status,
//!   direction and value columns under FINAL), leads by provider (one scan of the provider and
//!   domain columns), the latest run and the last successes from `sync_runs`.
//! - Cached like the lead pages (`cache.rs`, `HUNTER_API_CACHE_MS`): one computation per TTL
//!   however many pages are open, stale answers served while one refresh runs.
//! - Figures are exact for the moment they were read (FINAL: one live row per lead); a lead
//!   without a status is counted in `total` and under status `null`, which no filter selects.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse as _, Response};
use hunter_clickhouse::rows::SyncRunRow;
use hunter_core::records::RunStatus;
use serde::Serialize;
use time::OffsetDateTime;

use super::leads::rfc3339;
use super::sync::RunView;
use super::{ApiError, ApiState};

/// How far ahead "expiring soon" looks: the alert's 48 hours (`expiry.rs`).
const EXPIRING_WITHIN_HOURS: u32 = (super::expiry::EXPIRING_WITHIN.as_secs() / 3600) as u32;

/// The statuses the pipeline figure adds up: open referrals.
const OPEN_STATUSES: &[&str] = &["New", "Active"];

/// Leads of one referral status.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StatusFigure {
    /// None, New, Active, Closed; null for leads without a status.
    status: Option<String>,
    leads: u64,
    /// Sum of the leads' USD values.
    value_usd: f64,
    /// Leads of this status without a USD value (not in `value_usd`).
    leads_without_usd: u64,
    /// The `GET /leads` query string listing these leads (absent for a null status).
    filter: Option<String>,
}

/// The open pipeline: leads whose status is `New` or `Active`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PipelineFigure {
    statuses: Vec<String>,
    leads: u64,
    value_usd: f64,
    /// Open leads without a USD value (not in `value_usd`).
    leads_without_usd: u64,
    filter: String,
}

/// Incoming referrals nobody has answered yet (direction `Incoming`, status `New`): Partner
/// Center archives them as `Expired` when they stay unanswered.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WaitingFigure {
    leads: u64,
    filter: String,
}

/// Incoming referrals waiting for an answer whose `expires_at` is within the next
/// [`EXPIRING_WITHIN_HOURS`] (what the alert `HunterReferralsExpiring` watches).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ExpiringFigure {
    leads: u64,
    /// Of those, how many expire on Hunter's estimate (created + 14 days), not Partner
    /// Center's `expirationDateTime`.
    estimated: u64,
    within_hours: u32,
    filter: String,
}

/// Companies of one mail provider.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProviderFigure {
    /// microsoft365, google_workspace, other, unknown.
    provider: String,
    /// Distinct company domains (lower case) of this provider.
    companies: u64,
    /// Leads of this provider with a company domain (what `filter` lists).
    leads_with_domain: u64,
    /// Leads of this provider, with a domain or without.
    leads: u64,
    filter: String,
}

/// The last sync, over every tenant.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LastSync {
    /// The newest run (coalesced and expired triggers left out), whatever its outcome.
    last_run: Option<RunView>,
    /// When the newest successful run ended (RFC 3339).
    last_success_at: Option<String>,
}

/// The overview of the page.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Overview {
    /// When these figures were read (RFC 3339); at most `HUNTER_API_CACHE_MS` plus one query
    /// old.
    generated_at: String,
    /// Live leads.
    total: u64,
    /// New, Active, Closed, None, then any other status and null.
    by_status: Vec<StatusFigure>,
    incoming_waiting: WaitingFigure,
    expiring_soon: ExpiringFigure,
    pipeline: PipelineFigure,
    /// Every provider with at least one lead, most companies first.
    providers: Vec<ProviderFigure>,
    last_sync: LastSync,
}

fn usd(hundredths: i64) -> f64 {
    hundredths as f64 / 100.0
}

fn query_string(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// Per status: leads, incoming leads, USD value in hundredths, leads without a USD value,
/// incoming leads expiring soon, of those estimated.
type StatusRow = (Option<String>, u64, u64, i64, u64, u64, u64);
/// Per provider: leads, leads with a domain, distinct domains.
type ProviderRow = (String, u64, u64, u64);

/// The figures from ClickHouse; errors are ClickHouse's, in words.
async fn compute(state: &ApiState) -> Result<Overview, String> {
    let client = state.clickhouse.client();
    // The window of `expiring_within_hours` exactly as the list's filter computes it (from the
    // start of the minute), so the figure and the table it filters agree.
    let now = OffsetDateTime::now_utc().unix_timestamp().div_euclid(60) * 60;
    let until = now + i64::from(EXPIRING_WITHIN_HOURS) * 3600;
    let statuses = client
        .query(
            "SELECT status, toUInt64(count()), \
             toUInt64(countIf(ifNull(direction, '') = 'Incoming')), \
             toInt64(sum(ifNull(toInt64(deal_value_usd * 100), 0))), \
             toUInt64(countIf(isNull(deal_value_usd))), \
             toUInt64(countIf(ifNull(direction, '') = 'Incoming' AND expires_at IS NOT NULL \
                 AND toInt64(toUInt32(ifNull(expires_at, toDateTime(0)))) >= ? \
                 AND toInt64(toUInt32(ifNull(expires_at, toDateTime(0)))) <= ?)), \
             toUInt64(countIf(ifNull(direction, '') = 'Incoming' AND expires_at IS NOT NULL \
                 AND toInt64(toUInt32(ifNull(expires_at, toDateTime(0)))) >= ? \
                 AND toInt64(toUInt32(ifNull(expires_at, toDateTime(0)))) <= ? \
                 AND expires_at_estimated = 1)) \
             FROM leads FINAL GROUP BY status ORDER BY status",
        )
        .bind(now)
        .bind(until)
        .bind(now)
        .bind(until)
        .fetch_all::<StatusRow>();
    let providers = client
        .query(
            "SELECT email_provider, toUInt64(count()), \
             toUInt64(countIf(ifNull(company_domain, '') != '')), \
             toUInt64(uniqExactIf(lower(ifNull(company_domain, '')), ifNull(company_domain, '') != '')) \
             FROM leads FINAL GROUP BY email_provider",
        )
        .fetch_all::<ProviderRow>();
    let latest = client
        .query(
            "SELECT ?fields FROM sync_runs FINAL WHERE status NOT IN (?, ?) \
             ORDER BY started_at DESC, row_version DESC LIMIT 1",
        )
        .bind(RunStatus::Coalesced.as_str())
        .bind(RunStatus::Expired.as_str())
        .fetch_optional::<SyncRunRow>();
    let successes = crate::queries::last_successes(client);
    let (statuses, mut providers, latest, successes) =
        tokio::try_join!(statuses, providers, latest, successes).map_err(|e| e.to_string())?;

    let mut total = 0;
    let mut waiting = 0;
    let (mut expiring, mut expiring_estimated) = (0, 0);
    let (mut open_leads, mut open_value, mut open_without) = (0, 0, 0);
    let mut by_status = Vec::with_capacity(statuses.len());
    for (status, leads, incoming, value, without, soon, soon_estimated) in statuses {
        total += leads;
        let status_name = status.as_deref().unwrap_or_default();
        if status_name == "New" {
            waiting = incoming;
            expiring = soon;
            expiring_estimated = soon_estimated;
        }
        if OPEN_STATUSES.contains(&status_name) {
            open_leads += leads;
            open_value += value;
            open_without += without;
        }
        let filter = status
            .as_deref()
            .map(|name| query_string(&[("status", name)]));
        by_status.push(StatusFigure {
            status,
            leads,
            value_usd: usd(value),
            leads_without_usd: without,
            filter,
        });
    }
    // The referral's life in order: New, Active, Closed, then None and anything else.
    let rank = |figure: &StatusFigure| {
        ["New", "Active", "Closed", "None"]
            .iter()
            .position(|known| figure.status.as_deref() == Some(*known))
            .unwrap_or(4)
    };
    by_status.sort_by_key(|figure| rank(figure));
    providers.sort_by(|a, b| b.3.cmp(&a.3).then(b.1.cmp(&a.1)).then(a.0.cmp(&b.0)));
    let at = |seconds: i64| {
        OffsetDateTime::from_unix_timestamp(seconds)
            .ok()
            .map(rfc3339)
    };
    Ok(Overview {
        generated_at: rfc3339(OffsetDateTime::now_utc()),
        total,
        by_status,
        incoming_waiting: WaitingFigure {
            leads: waiting,
            filter: query_string(&[("status", "New"), ("direction", "Incoming")]),
        },
        expiring_soon: ExpiringFigure {
            leads: expiring,
            estimated: expiring_estimated,
            within_hours: EXPIRING_WITHIN_HOURS,
            filter: query_string(&[
                ("status", "New"),
                ("direction", "Incoming"),
                ("expiring_within_hours", &EXPIRING_WITHIN_HOURS.to_string()),
            ]),
        },
        pipeline: PipelineFigure {
            statuses: OPEN_STATUSES.iter().map(|s| (*s).to_owned()).collect(),
            leads: open_leads,
            value_usd: usd(open_value),
            leads_without_usd: open_without,
            filter: query_string(&[("status", &OPEN_STATUSES.join(","))]),
        },
        providers: providers
            .into_iter()
            .map(|(provider, leads, with_domain, companies)| ProviderFigure {
                filter: query_string(&[("provider", &provider), ("has_domain", "true")]),
                provider,
                companies,
                leads_with_domain: with_domain,
                leads,
            })
            .collect(),
        last_sync: LastSync {
            last_run: latest.map(RunView::from),
            last_success_at: successes
                .iter()
                .map(|(_, seconds)| *seconds)
                .max()
                .and_then(at),
        },
    })
}

#[utoipa::path(
    get,
    path = "/overview",
    responses(
        (status = 200, description = "The page's figures, each with the GET /leads filter listing its leads", body = Overview),
        (status = 401, description = "No or wrong bearer token", body = super::ErrorBody),
        (status = 503, description = "ClickHouse is not answering", body = super::ErrorBody),
    ),
    security(("bearer" = [])),
    tag = "leads"
)]
pub(crate) async fn overview(State(state): State<Arc<ApiState>>) -> Result<Response, ApiError> {
    let computing = state.clone();
    let answer = state
        .pages
        .get("overview".to_owned(), move || async move {
            let overview = compute(&computing).await.map_err(Arc::new)?;
            serde_json::to_vec(&overview)
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
