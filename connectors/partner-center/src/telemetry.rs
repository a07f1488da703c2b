//! Every metric this crate emits, defined once, and the events that write the log line and bump
//! the metric together so that logs and metrics never disagree.
//!
//! Labels are bounded: `endpoint` is one of `list`, `next`, `get`; `outcome` is an HTTP status
//! code or one of `timeout`, `network`, `auth`; `reason` is a retry reason from the same set. No
//! label ever carries an id, a URL or a token.

use std::time::Duration;

/// Referrals API requests, one per HTTP attempt. Labels: `endpoint`, `outcome`.
pub const API_REQUESTS_TOTAL: &str = "hunter_partner_center_api_requests_total";
/// Seconds from sending a Referrals API request to having its whole body. Label: `endpoint`.
pub const API_REQUEST_DURATION_SECONDS: &str = "hunter_partner_center_api_request_duration_seconds";
/// Retries of Referrals API requests after a retryable failure. Labels: `endpoint`, `reason`.
pub const API_RETRIES_TOTAL: &str = "hunter_partner_center_api_retries_total";
/// Refresh-token grants against the login authority. Label: `outcome` (`ok` or `error`).
pub const TOKEN_REFRESHES_TOTAL: &str = "hunter_partner_center_token_refreshes_total";

/// Registers help text for every metric above with the installed `metrics` recorder.
/// Call it once after installing the recorder (the binary does this at start-up).
pub fn describe_metrics() {
    metrics::describe_counter!(
        API_REQUESTS_TOTAL,
        "Partner Center Referrals API requests, one per HTTP attempt, by endpoint and outcome."
    );
    metrics::describe_histogram!(
        API_REQUEST_DURATION_SECONDS,
        metrics::Unit::Seconds,
        "Time from sending a Partner Center Referrals API request to having its whole body."
    );
    metrics::describe_counter!(
        API_RETRIES_TOTAL,
        "Retries of Partner Center Referrals API requests after a retryable failure."
    );
    metrics::describe_counter!(
        TOKEN_REFRESHES_TOTAL,
        "Refresh-token grants against the login authority, by outcome."
    );
}

/// One HTTP attempt against the Referrals API finished (with a status, or with an error kind).
pub(crate) fn api_request_finished(
    endpoint: &'static str,
    outcome: &str,
    attempt: u32,
    request_id: Option<&str>,
    elapsed: Duration,
) {
    tracing::debug!(
        endpoint,
        outcome,
        attempt,
        request_id = request_id.unwrap_or("-"),
        elapsed_ms = elapsed.as_millis() as u64,
        "partner center request finished"
    );
    metrics::counter!(API_REQUESTS_TOTAL, "endpoint" => endpoint, "outcome" => outcome.to_owned())
        .increment(1);
    metrics::histogram!(API_REQUEST_DURATION_SECONDS, "endpoint" => endpoint)
        .record(elapsed.as_secs_f64());
}

/// A retryable failure will be retried after `delay`.
pub(crate) fn api_retry_scheduled(
    endpoint: &'static str,
    reason: &'static str,
    attempt: u32,
    delay: Duration,
    error: &dyn std::fmt::Display,
) {
    tracing::warn!(
        endpoint,
        reason,
        attempt,
        delay_ms = delay.as_millis() as u64,
        error = %error,
        "partner center request failed, retrying"
    );
    metrics::counter!(API_RETRIES_TOTAL, "endpoint" => endpoint, "reason" => reason).increment(1);
}

/// A refresh-token grant finished.
pub(crate) fn token_refreshed(outcome: Result<(), &dyn std::fmt::Display>) {
    match outcome {
        Ok(()) => {
            tracing::info!("partner center access token refreshed");
            metrics::counter!(TOKEN_REFRESHES_TOTAL, "outcome" => "ok").increment(1);
        }
        Err(error) => {
            tracing::warn!(error = %error, "partner center token refresh failed");
            metrics::counter!(TOKEN_REFRESHES_TOTAL, "outcome" => "error").increment(1);
        }
    }
}
