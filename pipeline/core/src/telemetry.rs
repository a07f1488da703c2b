//! Logs and metrics. Every metric Hunter exports is named and described here, once;
//! names follow `hunter_<subsystem>_<name>_<unit>` and labels are bounded (tenant, stage,
//! outcome, error class; never ids).

use std::sync::OnceLock;

use axum::Router;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Metric names.
pub mod names {
    /// Polls by tenant and outcome (`succeeded`, `failed`, `skipped`).
    pub const SOURCE_POLLS_TOTAL: &str = "hunter_source_polls_total";
    /// API pages read by tenant.
    pub const SOURCE_PAGES_TOTAL: &str = "hunter_source_pages_total";
    /// Referrals read from the API by tenant.
    pub const SOURCE_RECORDS_FETCHED_TOTAL: &str = "hunter_source_records_fetched_total";
    /// Referrals published by tenant.
    pub const SOURCE_RECORDS_PUBLISHED_TOTAL: &str = "hunter_source_records_published_total";
    /// Referrals not published again because that version was already published.
    pub const SOURCE_RECORDS_SKIPPED_TOTAL: &str = "hunter_source_records_skipped_total";
    /// Poll errors by tenant and class.
    pub const SOURCE_ERRORS_TOTAL: &str = "hunter_source_errors_total";
    /// Unix time of the last successful poll, by tenant.
    pub const SOURCE_LAST_SUCCESS_TIMESTAMP_SECONDS: &str =
        "hunter_source_last_success_timestamp_seconds";
    /// 1 while a tenant waits for `hunter auth login` (its polls are suspended), else 0.
    pub const SOURCE_SIGNIN_REQUIRED: &str = "hunter_source_signin_required";
    /// Seconds between now and the tenant's cursor (`updatedDateTime` of the newest record read).
    pub const SOURCE_CURSOR_AGE_SECONDS: &str = "hunter_source_cursor_age_seconds";
    /// Unix time at which the tenant's cached access token expires.
    pub const SOURCE_ACCESS_TOKEN_EXPIRY_TIMESTAMP_SECONDS: &str =
        "hunter_source_access_token_expiry_timestamp_seconds";
    /// Age of the tenant's refresh token (Entra drops it after 90 idle days).
    pub const SOURCE_REFRESH_TOKEN_AGE_SECONDS: &str = "hunter_source_refresh_token_age_seconds";
    /// Manual triggers served by a run that was already due (coalesced).
    pub const SOURCE_TRIGGERS_COALESCED_TOTAL: &str = "hunter_source_triggers_coalesced_total";
    /// Duration of whole polls.
    pub const SOURCE_POLL_DURATION_SECONDS: &str = "hunter_source_poll_duration_seconds";
    /// Referrals consumed by the processor, by outcome (`lead`, `dead_letter`).
    pub const PROCESSOR_RECORDS_TOTAL: &str = "hunter_processor_records_total";
    /// Referral ids held in the processor's dedupe state.
    pub const PROCESSOR_DEDUPE_KEYS: &str = "hunter_processor_dedupe_keys";
    /// Rows written to ClickHouse by table.
    pub const SINK_ROWS_WRITTEN_TOTAL: &str = "hunter_sink_rows_written_total";
    /// Inserts acknowledged by ClickHouse by table.
    pub const SINK_BATCHES_TOTAL: &str = "hunter_sink_batches_total";
    /// Insert latency by table.
    pub const SINK_INSERT_DURATION_SECONDS: &str = "hunter_sink_insert_duration_seconds";
    /// Seconds from the source reading a referral version to its lead row being acknowledged
    /// by ClickHouse.
    pub const SINK_END_TO_END_LATENCY_SECONDS: &str = "hunter_sink_end_to_end_latency_seconds";
    /// Failed inserts by table and class.
    pub const SINK_FAILURES_TOTAL: &str = "hunter_sink_failures_total";
    /// 1 while a sink stream has stopped consuming because ClickHouse refuses its batch.
    pub const SINK_CONSUMPTION_PAUSED: &str = "hunter_sink_consumption_paused";
    /// Records sent to the dead-letter topic, by stage and class.
    pub const DLQ_RECORDS_TOTAL: &str = "hunter_dlq_records_total";
    /// API requests by route and status class.
    pub const API_REQUESTS_TOTAL: &str = "hunter_api_requests_total";
    /// API request duration in seconds, by route template.
    pub const API_REQUEST_DURATION_SECONDS: &str = "hunter_api_request_duration_seconds";
    /// Manual sync triggers accepted.
    pub const API_SYNC_TRIGGERS_TOTAL: &str = "hunter_api_sync_triggers_total";
    /// Referrals API requests, one per HTTP attempt, by endpoint (list, next, get) and outcome.
    pub const PARTNER_CENTER_API_REQUESTS_TOTAL: &str = "hunter_partner_center_api_requests_total";
    /// Referrals API request latency to the whole body, by endpoint.
    pub const PARTNER_CENTER_API_REQUEST_DURATION_SECONDS: &str =
        "hunter_partner_center_api_request_duration_seconds";
    /// Retries of Referrals API requests, by endpoint and reason.
    pub const PARTNER_CENTER_API_RETRIES_TOTAL: &str = "hunter_partner_center_api_retries_total";
    /// Refresh-token grants against the login authority, by outcome (ok, error).
    pub const PARTNER_CENTER_TOKEN_REFRESHES_TOTAL: &str =
        "hunter_partner_center_token_refreshes_total";
}

fn describe_all() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    use names::*;
    describe_counter!(
        SOURCE_POLLS_TOTAL,
        "Partner Center polls by tenant and outcome."
    );
    describe_counter!(
        SOURCE_PAGES_TOTAL,
        "Partner Center API pages read, by tenant."
    );
    describe_counter!(
        SOURCE_RECORDS_FETCHED_TOTAL,
        "Referrals read from the API, by tenant."
    );
    describe_counter!(
        SOURCE_RECORDS_PUBLISHED_TOTAL,
        "Referrals published to Kafka, by tenant."
    );
    describe_counter!(
        SOURCE_RECORDS_SKIPPED_TOTAL,
        "Referrals skipped because that version was already published, by tenant."
    );
    describe_counter!(
        SOURCE_ERRORS_TOTAL,
        "Poll errors by tenant and error class."
    );
    describe_gauge!(
        SOURCE_LAST_SUCCESS_TIMESTAMP_SECONDS,
        "Unix time of the last successful poll, by tenant."
    );
    describe_histogram!(
        SOURCE_POLL_DURATION_SECONDS,
        "Duration of a whole poll in seconds."
    );
    describe_counter!(
        PROCESSOR_RECORDS_TOTAL,
        "Referrals consumed by the processor, by outcome (lead, duplicate, stale, dead_letter)."
    );
    describe_counter!(
        SINK_ROWS_WRITTEN_TOTAL,
        "Rows acknowledged by ClickHouse, by table."
    );
    describe_counter!(
        SINK_BATCHES_TOTAL,
        "Inserts acknowledged by ClickHouse, by table."
    );
    describe_histogram!(
        SINK_INSERT_DURATION_SECONDS,
        "ClickHouse insert latency in seconds, by table."
    );
    describe_counter!(
        SINK_FAILURES_TOTAL,
        "Failed ClickHouse inserts by table and class."
    );
    describe_gauge!(
        SINK_CONSUMPTION_PAUSED,
        "1 while a sink stream has paused consumption because ClickHouse refuses its batch, by stream."
    );
    describe_counter!(
        DLQ_RECORDS_TOTAL,
        "Records sent to the dead-letter topic, by stage and class."
    );
    describe_counter!(
        API_REQUESTS_TOTAL,
        "API requests by route and status class."
    );
    describe_counter!(API_SYNC_TRIGGERS_TOTAL, "Manual sync triggers accepted.");
    describe_histogram!(
        API_REQUEST_DURATION_SECONDS,
        "API request duration in seconds, by route template."
    );
    describe_counter!(
        PARTNER_CENTER_API_REQUESTS_TOTAL,
        "Partner Center Referrals API requests, one per HTTP attempt, by endpoint and outcome."
    );
    describe_histogram!(
        PARTNER_CENTER_API_REQUEST_DURATION_SECONDS,
        "Partner Center Referrals API request latency to the whole body, in seconds, by endpoint."
    );
    describe_counter!(
        PARTNER_CENTER_API_RETRIES_TOTAL,
        "Retries of Partner Center Referrals API requests, by endpoint and reason."
    );
    describe_counter!(
        PARTNER_CENTER_TOKEN_REFRESHES_TOTAL,
        "Refresh-token grants against the login authority, by outcome."
    );
}

/// Starts structured logging (`RUST_LOG` filters; `HUNTER_LOG_FORMAT=json` for JSON lines).
pub fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,rdkafka=warn"));
    let json = std::env::var("HUNTER_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Installs the Prometheus recorder once per process and returns its handle.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets(&[
                    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                    60.0,
                ])
                .expect("static buckets are valid")
                .install_recorder()
                .expect("no other metrics recorder is installed");
            describe_all();
            handle
        })
        .clone()
}

/// `/healthz` (the process is up) and `/metrics` (Prometheus text), served by every role.
pub fn health_and_metrics_router() -> Router {
    let handle = metrics_handle();
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/metrics",
            get(move || {
                let handle = handle.clone();
                async move {
                    handle.run_upkeep();
                    (
                        [(CONTENT_TYPE, "text/plain; version=0.0.4")],
                        handle.render(),
                    )
                        .into_response()
                }
            }),
        )
}
