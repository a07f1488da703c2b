//! Logs and metrics. Every metric Hunter exports is named and described here, once;
//! names follow `hunter_<subsystem>_<name>_<unit>` and labels are bounded (tenant, stage,
//! outcome, error class; never ids).

use std::sync::OnceLock;

use axum::Router;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

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
    /// The configured time between scheduled polls, by tenant (alert rules scale with it).
    pub const SOURCE_SYNC_INTERVAL_SECONDS: &str = "hunter_source_sync_interval_seconds";
    /// 1 while a tenant waits for `hunter auth login` (its polls are suspended), else 0.
    pub const SOURCE_SIGNIN_REQUIRED: &str = "hunter_source_signin_required";
    /// Write-back steps recorded by the source, by state (docs/writeback.md).
    pub const SOURCE_REFERRAL_ACTIONS_TOTAL: &str = "hunter_source_referral_actions_total";
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
    /// Incoming New referrals whose expiry is within the next 48 hours (refreshed every minute).
    pub const API_REFERRALS_EXPIRING_SOON: &str = "hunter_api_referrals_expiring_soon";
    // --- Partner Center webhooks (docs/partner-center-webhooks.md) ---
    /// Partner Center webhook events received by the API, by outcome.
    pub const API_PC_WEBHOOK_EVENTS_TOTAL: &str = "hunter_api_partner_center_webhook_events_total";
    /// Referral fetches by id the source made for webhook events, by outcome.
    pub const SOURCE_WEBHOOK_FETCHES_TOTAL: &str = "hunter_source_webhook_fetches_total";
    // --- end Partner Center webhooks ---
    // --- the API's read model (docs/api-read-model.md) ---
    /// Leads in the API's read model.
    pub const API_READ_MODEL_LEADS: &str = "hunter_api_read_model_leads";
    /// Heap bytes of the API's read model.
    pub const API_READ_MODEL_BYTES: &str = "hunter_api_read_model_bytes";
    /// Seconds the last rebuild of the API's read model took.
    pub const API_READ_MODEL_REBUILD_SECONDS: &str = "hunter_api_read_model_rebuild_seconds";
    /// Seconds since the API's read model last caught up with ClickHouse.
    pub const API_READ_MODEL_AGE_SECONDS: &str = "hunter_api_read_model_age_seconds";
    /// Lead rows of `GET /leads` pages, by where they came from (row store, ClickHouse).
    pub const API_LEAD_ROWS_TOTAL: &str = "hunter_api_lead_rows_total";
    // --- end read model ---
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
    /// Waits before a retried Referrals API request (Retry-After or backoff), by endpoint and reason.
    pub const PARTNER_CENTER_API_RETRY_WAIT_SECONDS: &str =
        "hunter_partner_center_api_retry_wait_seconds";
    /// Records a consumer group has not committed yet, by stage, topic and partition.
    pub const KAFKA_CONSUMER_LAG_RECORDS: &str = "hunter_kafka_consumer_lag_records";
    /// Times a consumer that held no partition rejoined its group because the group's
    /// uncommitted records had no owner, by stage and topic.
    pub const KAFKA_GROUP_REJOINS_TOTAL: &str = "hunter_kafka_group_rejoins_total";
    /// Error events librdkafka reported, by client and kind (authentication, tls,
    /// security_protocol, configuration, transport, other).
    pub const KAFKA_CLIENT_ERRORS_TOTAL: &str = "hunter_kafka_client_errors_total";
    // --- notify: outgoing webhooks (docs/notifications.md) ---
    /// Deliveries that ended, by target, kind and outcome (`delivered`, `failed`).
    pub const NOTIFY_DELIVERIES_TOTAL: &str = "hunter_notify_deliveries_total";
    /// Delivery attempts that did not deliver, by target and class.
    pub const NOTIFY_ATTEMPT_FAILURES_TOTAL: &str = "hunter_notify_attempt_failures_total";
    /// Deliveries waiting (queued or between retries), by target.
    pub const NOTIFY_PENDING: &str = "hunter_notify_pending";
    /// Duration of one delivery request in seconds, by target.
    pub const NOTIFY_REQUEST_DURATION_SECONDS: &str = "hunter_notify_request_duration_seconds";
    /// Expiry checks the notify role ran, by kind and outcome (`done`, `failed`, `waiting`).
    pub const NOTIFY_EXPIRY_CHECKS_TOTAL: &str = "hunter_notify_expiry_checks_total";
}

/// How a metric aggregates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

impl MetricKind {
    /// The Prometheus type name (`# TYPE` line, `dashboards/README.md`).
    pub fn as_str(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
        }
    }
}

/// One exported metric: its name, type, the only labels it may carry, and its help text.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    pub name: &'static str,
    pub kind: MetricKind,
    /// Every label the metric carries; each has a bounded set of values (never ids).
    pub labels: &'static [&'static str],
    pub help: &'static str,
}

/// The metrics catalogue: every metric Hunter exports. `dashboards/README.md` lists the same
/// metrics (a test compares them), and the dashboards and alert rules use only these names.
pub const CATALOGUE: &[Metric] = {
    use MetricKind::{Counter, Gauge, Histogram};
    use names::*;
    const fn metric(
        name: &'static str,
        kind: MetricKind,
        labels: &'static [&'static str],
        help: &'static str,
    ) -> Metric {
        Metric {
            name,
            kind,
            labels,
            help,
        }
    }
    &[
        metric(
            SOURCE_POLLS_TOTAL,
            Counter,
            &["tenant", "outcome"],
            "Partner Center polls by tenant and outcome (succeeded, failed).",
        ),
        metric(
            SOURCE_ERRORS_TOTAL,
            Counter,
            &["tenant", "class"],
            "Failed polls by tenant and error class.",
        ),
        metric(
            SOURCE_PAGES_TOTAL,
            Counter,
            &["tenant"],
            "Partner Center API pages read, by tenant.",
        ),
        metric(
            SOURCE_RECORDS_FETCHED_TOTAL,
            Counter,
            &["tenant"],
            "Referrals read from the API, by tenant.",
        ),
        metric(
            SOURCE_RECORDS_PUBLISHED_TOTAL,
            Counter,
            &["tenant"],
            "Referrals published to Kafka, by tenant.",
        ),
        metric(
            SOURCE_RECORDS_SKIPPED_TOTAL,
            Counter,
            &["tenant"],
            "Referrals skipped because that version was already published, by tenant.",
        ),
        metric(
            SOURCE_LAST_SUCCESS_TIMESTAMP_SECONDS,
            Gauge,
            &["tenant"],
            "Unix time of the last successful poll, by tenant.",
        ),
        metric(
            SOURCE_SYNC_INTERVAL_SECONDS,
            Gauge,
            &["tenant"],
            "The configured time between scheduled polls in seconds, by tenant.",
        ),
        metric(
            SOURCE_POLL_DURATION_SECONDS,
            Histogram,
            &[],
            "Duration of a whole poll in seconds.",
        ),
        metric(
            SOURCE_REFERRAL_ACTIONS_TOTAL,
            Counter,
            &["state"],
            "Write-back steps the source recorded: sent, applied, conflict, rejected, failed.",
        ),
        metric(
            SOURCE_SIGNIN_REQUIRED,
            Gauge,
            &["tenant"],
            "1 while the tenant waits for `hunter auth login` (polls suspended), else 0.",
        ),
        metric(
            SOURCE_CURSOR_AGE_SECONDS,
            Gauge,
            &["tenant"],
            "Seconds between now and the tenant's cursor (updatedDateTime of the newest record read).",
        ),
        metric(
            SOURCE_ACCESS_TOKEN_EXPIRY_TIMESTAMP_SECONDS,
            Gauge,
            &["tenant"],
            "Unix time at which the tenant's cached access token expires.",
        ),
        metric(
            SOURCE_REFRESH_TOKEN_AGE_SECONDS,
            Gauge,
            &["tenant"],
            "Age of the tenant's refresh token in seconds (Entra drops it after 90 idle days).",
        ),
        metric(
            SOURCE_TRIGGERS_COALESCED_TOTAL,
            Counter,
            &["tenant"],
            "Manual triggers served by a run that was already due.",
        ),
        metric(
            PROCESSOR_RECORDS_TOTAL,
            Counter,
            &["outcome"],
            "Referrals consumed by the processor, by outcome (lead, duplicate, stale, dead_letter).",
        ),
        metric(
            PROCESSOR_DEDUPE_KEYS,
            Gauge,
            &[],
            "Referral ids held in the processor's dedupe state.",
        ),
        metric(
            SINK_ROWS_WRITTEN_TOTAL,
            Counter,
            &["table"],
            "Rows acknowledged by ClickHouse, by table.",
        ),
        metric(
            SINK_BATCHES_TOTAL,
            Counter,
            &["table"],
            "Inserts acknowledged by ClickHouse, by table.",
        ),
        metric(
            SINK_INSERT_DURATION_SECONDS,
            Histogram,
            &["table"],
            "ClickHouse insert latency in seconds, by table.",
        ),
        metric(
            SINK_END_TO_END_LATENCY_SECONDS,
            Histogram,
            &[],
            "Seconds from the source reading a referral version to its lead row acknowledged by ClickHouse.",
        ),
        metric(
            SINK_FAILURES_TOTAL,
            Counter,
            &["table", "class"],
            "Failed ClickHouse inserts by table and class.",
        ),
        metric(
            SINK_CONSUMPTION_PAUSED,
            Gauge,
            &["stream"],
            "1 while a sink stream has paused consumption because ClickHouse refuses its batch, by stream.",
        ),
        metric(
            DLQ_RECORDS_TOTAL,
            Counter,
            &["stage", "class"],
            "Records sent to the dead-letter topic, by stage and class.",
        ),
        metric(
            API_REQUESTS_TOTAL,
            Counter,
            &["route", "status"],
            "API requests by route and status class.",
        ),
        metric(
            API_REQUEST_DURATION_SECONDS,
            Histogram,
            &["route"],
            "API request duration in seconds, by route template.",
        ),
        metric(
            API_SYNC_TRIGGERS_TOTAL,
            Counter,
            &[],
            "Manual sync triggers accepted.",
        ),
        // --- Partner Center webhooks ---
        metric(
            API_PC_WEBHOOK_EVENTS_TOTAL,
            Counter,
            &["outcome"],
            "Partner Center webhook events received: queued, duplicate, ignored, unauthenticated, invalid, rate_limited, unavailable.",
        ),
        metric(
            SOURCE_WEBHOOK_FETCHES_TOTAL,
            Counter,
            &["tenant", "outcome"],
            "Referrals fetched by id for webhook events: published, unchanged, not_found, failed, left_to_poll, expired.",
        ),
        metric(
            API_REFERRALS_EXPIRING_SOON,
            Gauge,
            &[],
            "Incoming referrals with status New whose expiry (expirationDateTime, else created + 14 days) is within the next 48 hours, from ClickHouse, refreshed every minute by the API role.",
        ),
        // --- the API's read model (docs/api-read-model.md) ---
        metric(
            API_READ_MODEL_LEADS,
            Gauge,
            &[],
            "Leads in the API's read model.",
        ),
        metric(
            API_READ_MODEL_BYTES,
            Gauge,
            &[],
            "Heap bytes of the API's read model.",
        ),
        metric(
            API_READ_MODEL_REBUILD_SECONDS,
            Gauge,
            &[],
            "Seconds the last rebuild of the API's read model took.",
        ),
        metric(
            API_READ_MODEL_AGE_SECONDS,
            Gauge,
            &[],
            "Seconds since the API's read model last caught up with ClickHouse.",
        ),
        metric(
            API_LEAD_ROWS_TOTAL,
            Counter,
            &["from"],
            "Lead rows of GET /leads pages by where they came from: store (the read model's row store) or clickhouse.",
        ),
        // --- end read model ---
        metric(
            PARTNER_CENTER_API_REQUESTS_TOTAL,
            Counter,
            &["endpoint", "outcome"],
            "Partner Center Referrals API requests, one per HTTP attempt, by endpoint and outcome.",
        ),
        metric(
            PARTNER_CENTER_API_REQUEST_DURATION_SECONDS,
            Histogram,
            &["endpoint"],
            "Partner Center Referrals API request latency to the whole body, in seconds, by endpoint.",
        ),
        metric(
            PARTNER_CENTER_API_RETRIES_TOTAL,
            Counter,
            &["endpoint", "reason"],
            "Retries of Partner Center Referrals API requests, by endpoint and reason.",
        ),
        metric(
            PARTNER_CENTER_API_RETRY_WAIT_SECONDS,
            Histogram,
            &["endpoint", "reason"],
            "Seconds waited before a retried Referrals API request (Retry-After or backoff).",
        ),
        metric(
            PARTNER_CENTER_TOKEN_REFRESHES_TOTAL,
            Counter,
            &["outcome"],
            "Refresh-token grants against the login authority, by outcome.",
        ),
        metric(
            KAFKA_CONSUMER_LAG_RECORDS,
            Gauge,
            &["stage", "topic", "partition"],
            "Records a consumer group has not committed yet (high watermark minus committed offset), by stage, topic and partition.",
        ),
        metric(
            KAFKA_GROUP_REJOINS_TOTAL,
            Counter,
            &["stage", "topic"],
            "Rejoins of a consumer group by a consumer that held no partition while the group's uncommitted records went unconsumed, by stage and topic.",
        ),
        metric(
            KAFKA_CLIENT_ERRORS_TOTAL,
            Counter,
            &["client", "kind"],
            "Error events librdkafka reported, by client and kind: authentication and tls name a setting to fix (the log says which); transport is a broker outage librdkafka retries.",
        ),
        metric(
            NOTIFY_DELIVERIES_TOTAL,
            Counter,
            &["target", "kind", "outcome"],
            "Webhook deliveries that ended, by target, kind and outcome (delivered, failed).",
        ),
        metric(
            NOTIFY_ATTEMPT_FAILURES_TOTAL,
            Counter,
            &["target", "class"],
            "Webhook delivery attempts that did not deliver, by target and class (network, timeout, status, answer).",
        ),
        metric(
            NOTIFY_PENDING,
            Gauge,
            &["target"],
            "Webhook deliveries waiting (queued or between retries), by target.",
        ),
        metric(
            NOTIFY_REQUEST_DURATION_SECONDS,
            Histogram,
            &["target"],
            "Duration of one webhook delivery request in seconds, by target.",
        ),
        metric(
            NOTIFY_EXPIRY_CHECKS_TOTAL,
            Counter,
            &["kind", "outcome"],
            "Expiry checks the notify role ran against ClickHouse, by kind (expiring_soon, expiring_within_hour) and outcome (done, failed, waiting for the expires_at column).",
        ),
    ]
};

/// The catalogue entry for `name`.
pub fn metric(name: &str) -> Option<&'static Metric> {
    CATALOGUE.iter().find(|metric| metric.name == name)
}

fn describe_all() {
    for metric in CATALOGUE {
        let help = metric.help;
        match metric.kind {
            MetricKind::Counter => metrics::describe_counter!(metric.name, help),
            MetricKind::Gauge => metrics::describe_gauge!(metric.name, help),
            MetricKind::Histogram => metrics::describe_histogram!(metric.name, help),
        }
    }
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

/// Buckets of the end-to-end latency: fine around its 5 s objective, and up to an hour, so a
/// backlog (a bulk load, catching up after an outage) is measured rather than all `+Inf`.
pub const END_TO_END_BUCKETS: &[f64] = &[
    0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.5, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0,
    600.0, 1800.0, 3600.0,
];

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
                .set_buckets_for_metric(
                    Matcher::Full(names::SINK_END_TO_END_LATENCY_SECONDS.to_owned()),
                    END_TO_END_BUCKETS,
                )
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};

    use super::*;

    /// A lead minutes behind (a backlog) lands in a bucket of its own, not in `+Inf`.
    #[test]
    fn end_to_end_latency_has_buckets_up_to_an_hour() {
        let handle = metrics_handle();
        metrics::histogram!(names::SINK_END_TO_END_LATENCY_SECONDS).record(90.0);
        let text = handle.render();
        let bucket = |le: &str| {
            text.lines()
                .find(|line| {
                    line.starts_with(&format!(
                        "{}_bucket{{le=\"{le}\"}}",
                        names::SINK_END_TO_END_LATENCY_SECONDS
                    ))
                })
                .and_then(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        };
        assert_eq!(bucket("60"), Some(0), "{text}");
        assert_eq!(bucket("120"), Some(1), "{text}");
        assert_eq!(bucket("3600"), Some(1), "{text}");
    }

    fn workspace() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
    }

    /// `dashboards/README.md`'s table: name -> (type, labels).
    fn readme_catalogue() -> BTreeMap<String, (String, Vec<String>)> {
        let text = std::fs::read_to_string(workspace().join("dashboards/README.md"))
            .expect("dashboards/README.md is readable");
        let mut rows = BTreeMap::new();
        for line in text.lines().filter(|l| l.starts_with("| `hunter_")) {
            let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
            assert!(cells.len() >= 4, "catalogue row needs 4 cells: {line}");
            let name = cells[0].trim_matches('`').to_owned();
            let labels = cells[2]
                .split(',')
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect();
            assert!(!cells[3].is_empty(), "{name}: meaning is empty");
            let previous = rows.insert(name.clone(), (cells[1].to_owned(), labels));
            assert!(previous.is_none(), "{name} is listed twice");
        }
        rows
    }

    #[test]
    fn readme_lists_the_catalogue() {
        let readme = readme_catalogue();
        for metric in CATALOGUE {
            let (kind, labels) = readme.get(metric.name).unwrap_or_else(|| {
                panic!(
                    "{} is exported but not listed in dashboards/README.md",
                    metric.name
                )
            });
            assert_eq!(kind, metric.kind.as_str(), "{}: type", metric.name);
            assert_eq!(labels, metric.labels, "{}: labels", metric.name);
        }
        for name in readme.keys() {
            assert!(
                metric(name).is_some(),
                "dashboards/README.md lists {name}, which telemetry::CATALOGUE does not have"
            );
        }
    }

    #[test]
    fn every_name_is_in_the_catalogue_once_and_well_formed() {
        // The `names` module's string constants, read from this file.
        let source = include_str!("telemetry.rs");
        let module = &source[source.find("pub mod names").unwrap()..];
        let module = &module[..module.find("\n}\n").unwrap()];
        let declared: Vec<&str> = module
            .split('"')
            .skip(1)
            .step_by(2)
            .filter(|s| s.starts_with("hunter_"))
            .collect();
        assert_eq!(declared.len(), CATALOGUE.len(), "names vs CATALOGUE");
        for name in declared {
            let metric = metric(name).unwrap_or_else(|| panic!("{name} is not in CATALOGUE"));
            assert_eq!(CATALOGUE.iter().filter(|m| m.name == name).count(), 1);
            match metric.kind {
                MetricKind::Counter => assert!(name.ends_with("_total"), "{name}"),
                _ => assert!(!name.ends_with("_total"), "{name}"),
            }
            for label in metric.labels {
                assert!(
                    !label.ends_with("id"),
                    "{name}: label {label} looks like an id"
                );
            }
        }
    }

    /// Metrics are emitted only through `names` constants: a string literal as a metric macro's
    /// name would bypass the catalogue.
    #[test]
    fn no_metric_is_named_outside_the_catalogue() {
        fn visit(dir: &Path, offenders: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).unwrap().flatten() {
                let path = entry.path();
                let name = entry.file_name().to_string_lossy().into_owned();
                if path.is_dir() {
                    if name != "target" && !name.starts_with('.') {
                        visit(&path, offenders);
                    }
                } else if name.ends_with(".rs") {
                    let text = std::fs::read_to_string(&path).unwrap();
                    for kind in ["counter!(", "gauge!(", "histogram!("] {
                        for (at, _) in text.match_indices(kind) {
                            let rest = text[at + kind.len()..].trim_start();
                            let mut chars = rest.chars();
                            if chars.next() == Some('"')
                                && chars.next().is_some_and(|c| c.is_ascii_alphabetic())
                            {
                                offenders.push(format!(
                                    "{}: {kind}{}",
                                    path.display(),
                                    &rest[..rest.len().min(40)]
                                ));
                            }
                        }
                    }
                }
            }
        }
        let mut offenders = Vec::new();
        for dir in ["pipeline", "connectors"] {
            visit(&workspace().join(dir), &mut offenders);
        }
        assert!(
            offenders.is_empty(),
            "metrics named by literal: {offenders:#?}"
        );
    }
}
