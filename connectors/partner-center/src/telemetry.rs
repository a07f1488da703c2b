//! Every metric this crate emits, defined once, and the events that write the log line and bump
//! the metric together so that logs and metrics never disagree.
//!
//! Labels are bounded: `endpoint` is one of `list`, `next`, `get`; `outcome` is an HTTP status
//! code or one of `timeout`, `network`, `auth`; `reason` is a retry reason from the same set. No
//! label ever carries an id, a URL or a token.

use std::time::Duration;

// The names live with every other metric name, in `hunter_core::telemetry::names`.
pub use hunter_core::telemetry::names::{
    PARTNER_CENTER_API_REQUEST_DURATION_SECONDS as API_REQUEST_DURATION_SECONDS,
    PARTNER_CENTER_API_REQUESTS_TOTAL as API_REQUESTS_TOTAL,
    PARTNER_CENTER_API_RETRIES_TOTAL as API_RETRIES_TOTAL,
    PARTNER_CENTER_API_RETRY_WAIT_SECONDS as API_RETRY_WAIT_SECONDS,
    PARTNER_CENTER_TOKEN_REFRESHES_TOTAL as TOKEN_REFRESHES_TOTAL,
};

/// One HTTP attempt against the Referrals API finished (with a status, or with an error kind).
pub(crate) fn api_request_finished(
    endpoint: &'static str,
    outcome: &str,
    attempt: u32,
    request_id: Option<&str>,
    elapsed: Duration,
) {
    let request_id = request_id.unwrap_or("-");
    let elapsed_ms = elapsed.as_millis() as u64;
    if outcome.starts_with('2') {
        tracing::debug!(
            endpoint,
            outcome,
            attempt,
            request_id,
            elapsed_ms,
            "partner center request finished"
        );
    } else {
        // The request id is what Microsoft support asks for.
        tracing::info!(
            endpoint,
            outcome,
            attempt,
            request_id,
            elapsed_ms,
            "partner center request failed"
        );
    }
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
    metrics::histogram!(API_RETRY_WAIT_SECONDS, "endpoint" => endpoint, "reason" => reason)
        .record(delay.as_secs_f64());
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
