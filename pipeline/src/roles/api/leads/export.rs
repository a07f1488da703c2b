//! `GET /leads.csv`: every lead matching the filters of `GET /leads` as a CSV download.
//!
//! - The filters and the sort are parsed by [`LeadsRequest::parse`], the list's own parser, so
//!   a filter added to the list applies here too; `limit` and `cursor` are refused (400): the
//!   export has every matching row.
//! - Streamed: one query (`leads FINAL`, the filters, the list's order) whose rows are read from
//!   ClickHouse's answer as the client takes the body, [`CHUNK_ROWS`] at a time: memory holds
//!   one chunk whatever the number of leads, and the answer is one consistent read (each lead
//!   once, as it was when the query ran). A first version walked the list's keyset pages
//!   instead: every chunk re-read the filter columns under FINAL, about 330 leads a second on
//!   1M leads, against the whole export in one pass now (docs/overview-and-export.md).
//! - Limits: the reader's limits (`hunter_clickhouse::reader`) apply, except two the export
//!   must exceed by nature: `max_result_rows` (100,000 for every other question) is lifted and
//!   `max_execution_time` is [`EXPORT_MAX_SECONDS`] rather than the request timeout.
//!   `max_rows_to_read`, when configured, still bounds it.
//! - The first chunk is read before the answer starts, so a filter ClickHouse cannot answer
//!   gets the usual JSON error (503). A later failure (a limit, the server gone) ends the
//!   transfer without its last chunk (the client sees a truncated download, never a short file
//!   that looks whole), and is logged.
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

use clickhouse::query::RowCursor;
use hunter_clickhouse::reader::Limits;
use hunter_clickhouse::rows::LeadRow;

use super::csv;
use super::handlers::LeadView;
use super::query::{LeadsQuery, LeadsRequest, bind_all};
use crate::roles::api::{ApiError, ApiState};

/// Leads per chunk of the body (about 200 KB of CSV).
pub(crate) const CHUNK_ROWS: u32 = 500;

/// The export query's `max_execution_time`: the time ClickHouse gives one export, reading and
/// sending (a client that reads slowly uses it up too).
pub(crate) const EXPORT_MAX_SECONDS: u64 = 600;

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

/// The export's query: the list's filters and sort, every row, streamed from ClickHouse.
/// When the reader's limits are sent with every query, two are widened for it (see the module
/// notes); with a `readonly=1` profile nothing may be sent and the profile's limits rule.
fn rows(state: &ApiState, request: &LeadsRequest) -> Result<RowCursor<LeadRow>, String> {
    let (sql, binds) = request.export_sql();
    let mut query = bind_all(state.clickhouse.client().query(&sql), &binds);
    if matches!(state.clickhouse.limits(), Limits::Sent(_)) {
        query = query
            .with_setting("max_result_rows", "0")
            .with_setting("max_execution_time", EXPORT_MAX_SECONDS.to_string());
    }
    query.fetch::<LeadRow>().map_err(|e| e.to_string())
}

/// The next records from the cursor: up to [`CHUNK_ROWS`] leads as CSV, `None` after the last.
async fn chunk(cursor: &mut RowCursor<LeadRow>) -> Result<Option<String>, String> {
    let mut text = String::new();
    for _ in 0..CHUNK_ROWS {
        match cursor.next().await.map_err(|e| e.to_string())? {
            Some(row) => text.push_str(&csv::record(&cells(&LeadView::from(row)))),
            None if text.is_empty() => return Ok(None),
            None => break,
        }
    }
    Ok(Some(text))
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
    let request = LeadsRequest::parse(&query)?;
    let mut cursor = rows(&state, &request).map_err(ApiError::clickhouse)?;
    let first = chunk(&mut cursor)
        .await
        .map_err(ApiError::clickhouse)?
        .unwrap_or_default();
    let head = format!("{}{}{first}", csv::BOM, csv::record(COLUMNS));
    // Pulled: the next rows are read when hyper asks for more body (back-pressure from the
    // client); a client that hangs up drops the stream and the cursor, which ends the query.
    let rest = futures::stream::unfold(Some(cursor), |cursor| async move {
        let mut cursor = cursor?;
        match chunk(&mut cursor).await {
            Ok(Some(text)) => Some((Ok(Bytes::from(text)), Some(cursor))),
            Ok(None) => None,
            Err(error) => {
                tracing::error!(%error, "lead export failed midway; the download is cut short");
                Some((
                    Err(std::io::Error::other("the lead store stopped answering")),
                    None,
                ))
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
