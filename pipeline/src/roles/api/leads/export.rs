//! `GET /leads.csv`: every lead matching the filters of `GET /leads` as a CSV download.
//!
//! - The filters and the sort are parsed by [`LeadsRequest::parse`], the list's own parser, so
//!   a filter added to the list applies here too; `limit` and `cursor` are refused (400): the
//!   export has every matching row.
//! - Streamed: the leads are read in chunks of [`CHUNK_ROWS`] with the list's keyset query (ids
//!   and sort keys under FINAL, then the rows by id) and each chunk is written out before the
//!   next is read, so memory holds one chunk whatever the number of leads, and every query stays
//!   within the reader's limits (`hunter_clickhouse::reader`: rows returned, time).
//! - The first chunk is read before the answer starts, so a filter ClickHouse cannot answer
//!   gets the usual JSON error (503). A later chunk that fails ends the transfer without its
//!   last chunk (the client sees a truncated download, never a short file that looks whole),
//!   and is logged.
//! - Like the list's pages, the chunks are not one snapshot: a lead that changes while the
//!   export runs may be in it with either version, or (when its sort key moves to the part
//!   already written) missing; it is never in it twice with the default `-updated_at` sort.
//! - Cells go through [`super::csv`] (RFC 4180 quoting, formula injection neutralised, a
//!   UTF-8 byte order mark first). One column per field of the list's lead view, in
//!   [`COLUMNS`]; arrays are joined with `; `.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse as _, Response};
use serde_json::Value;

use super::csv;
use super::handlers::{LeadView, fetch_by_ids};
use super::query::{LeadsQuery, LeadsRequest, bind_all};
use crate::roles::api::{ApiError, ApiState};

/// Leads per chunk: the by-id lookup binds two values per lead, and 500 keeps its SQL text far
/// below ClickHouse's `max_query_size` (256 KiB), as for the list's largest page.
pub(crate) const CHUNK_ROWS: u32 = 500;

/// The CSV columns, in order: every field of the lead view (a unit test keeps them equal).
pub(crate) const COLUMNS: &[&str] = &[
    "lead_id",
    "referral_id",
    "engagement_id",
    "tenant",
    "name",
    "status",
    "substatus",
    "direction",
    "qualification",
    "referral_type",
    "company_name",
    "company_name_normalized",
    "company_domain",
    "company_domain_source",
    "email_provider",
    "email_provider_source",
    "country",
    "size_band",
    "deal_value",
    "currency",
    "deal_value_usd",
    "usd_rate",
    "score",
    "priority",
    "products",
    "solutions",
    "industries",
    "created_at",
    "updated_at",
    "change_type",
    "previous_status",
    "expires_at",
    "expires_at_estimated",
    "accepted_at",
    "closing_at",
    "closed_at",
    "owner_emails",
    "version",
    "enrichment_version",
    "etag",
];

/// A lead's cells in [`COLUMNS`] order, through its JSON form (so the CSV says what the list
/// says): null is empty, arrays are joined with `; `.
fn cells(lead: &LeadView) -> Vec<String> {
    let value = serde_json::to_value(lead).unwrap_or(Value::Null);
    COLUMNS
        .iter()
        .map(|column| match &value[*column] {
            Value::Null => String::new(),
            Value::String(text) => text.clone(),
            Value::Array(items) => items
                .iter()
                .map(|item| match item {
                    Value::String(text) => text.clone(),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join("; "),
            other => other.to_string(),
        })
        .collect()
}

/// One chunk: its leads as CSV records, and the request for the next chunk (None after the
/// last).
async fn chunk(
    state: &ApiState,
    request: &LeadsRequest,
) -> Result<(String, Option<LeadsRequest>), String> {
    let (sql, binds) = request.page_sql();
    let mut keys = bind_all(state.clickhouse.client().query(&sql), &binds)
        .fetch_all::<(String, u64, String)>()
        .await
        .map_err(|e| e.to_string())?;
    let more = keys.len() > request.limit() as usize;
    keys.truncate(request.limit() as usize);
    let next = match keys.last() {
        Some((id, _, key)) if more => Some(request.after(id, key)?),
        _ => None,
    };
    let leads = fetch_by_ids(state, &keys).await?;
    let mut text = String::with_capacity(leads.len() * 400);
    for lead in &leads {
        text.push_str(&csv::record(&cells(lead)));
    }
    Ok((text, next))
}

#[utoipa::path(
    get,
    path = "/leads.csv",
    params(LeadsQuery),
    responses(
        (status = 200, description = "Every lead matching the filters (those of GET /leads; `limit` and `cursor` are refused), as CSV: UTF-8 with a byte order mark, RFC 4180 quoting, CRLF, a header row, a cell starting with = + - @ tab or CR prefixed with ' (formula injection). Streamed; a download that fails midway is cut short, never ended cleanly.", content_type = "text/csv", body = String),
        (status = 400, description = "A parameter is invalid", body = crate::roles::api::ErrorBody),
        (status = 401, description = "No or wrong bearer token", body = crate::roles::api::ErrorBody),
        (status = 503, description = "ClickHouse is not answering", body = crate::roles::api::ErrorBody),
    ),
    security(("bearer" = [])),
    tag = "leads"
)]
pub(crate) async fn export(
    State(state): State<Arc<ApiState>>,
    query: Result<Query<LeadsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query?;
    for (parameter, given) in [("limit", &query.limit), ("cursor", &query.cursor)] {
        if given.is_some() {
            return Err(ApiError::parameter(
                parameter,
                "the export has every matching lead; leave limit and cursor out",
            ));
        }
    }
    let request = LeadsRequest::parse(&query)?.chunks_of(CHUNK_ROWS);
    let (first, next) = chunk(&state, &request)
        .await
        .map_err(ApiError::clickhouse)?;
    let head = format!("{}{}{first}", csv::BOM, csv::record(COLUMNS));
    // Pulled: the next chunk is read when hyper asks for more body (back-pressure from the
    // client); a client that hangs up drops the stream and nothing more is read.
    let rest = futures::stream::unfold(next, move |next| {
        let state = state.clone();
        async move {
            let request = next?;
            match chunk(&state, &request).await {
                Ok((text, after)) => Some((Ok(Bytes::from(text)), after)),
                Err(error) => {
                    tracing::error!(%error, "lead export failed midway; the download is cut short");
                    Some((
                        Err(std::io::Error::other("the lead store stopped answering")),
                        None,
                    ))
                }
            }
        }
    });
    let body = futures::StreamExt::chain(
        futures::stream::once(async move { Ok::<_, std::io::Error>(Bytes::from(head)) }),
        rest,
    );
    let filename = format!(
        "hunter-leads-{}.csv",
        time::OffsetDateTime::now_utc()
            .format(time::macros::format_description!(
                "[year][month][day]T[hour][minute][second]Z"
            ))
            .unwrap_or_default()
    );
    Ok((
        [
            (
                header::CONTENT_TYPE,
                "text/csv; charset=utf-8; header=present".to_owned(),
            ),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_columns_are_every_field_of_the_lead_view() {
        use utoipa::PartialSchema as _;
        let schema = serde_json::to_value(LeadView::schema()).unwrap();
        let mut fields: Vec<&str> = schema["properties"]
            .as_object()
            .expect("the lead view's schema has properties")
            .keys()
            .map(String::as_str)
            .collect();
        let mut columns = COLUMNS.to_vec();
        fields.sort_unstable();
        columns.sort_unstable();
        assert_eq!(
            columns, fields,
            "a field added to the lead view needs its CSV column in COLUMNS"
        );
    }
}
