//! The gauge of incoming referrals about to expire: `hunter_api_referrals_expiring_soon`, the
//! number of leads with direction `Incoming`, status `New` and an `expires_at` from now to
//! [`EXPIRING_WITHIN`] ahead (docs/leads.md), as ClickHouse holds them.
//!
//! The API role computes it because it already reads ClickHouse (the other roles never do):
//! one `count()` under FINAL at start and then every [`REFRESH_EVERY`], so Prometheus sees
//! a value at most a minute old (and the alert `HunterReferralsExpiring` fires on it). With
//! several API replicas each exports the same number; the alert and the dashboard take `max`.
//!
//! Failure: a query that fails (ClickHouse down, a limit) is logged and the gauge keeps its
//! last value until the next refresh succeeds; the API itself is unaffected. Before the first
//! success the gauge is not exported at all, so "no data" never reads as "nothing expiring".

use std::time::Duration;

use hunter_clickhouse::reader::Reader;
use hunter_core::telemetry::names;
use time::OffsetDateTime;

/// How far ahead "expiring soon" looks.
pub(crate) const EXPIRING_WITHIN: Duration = Duration::from_secs(48 * 3600);
/// How often the gauge is recomputed.
pub(crate) const REFRESH_EVERY: Duration = Duration::from_secs(60);

/// The count's SQL; binds: now and now + [`EXPIRING_WITHIN`], in seconds.
pub(crate) const EXPIRING_SQL: &str = "SELECT count() FROM leads FINAL \
    WHERE direction = 'Incoming' AND status = 'New' AND expires_at IS NOT NULL \
    AND toInt64(toUInt32(expires_at)) >= ? AND toInt64(toUInt32(expires_at)) <= ?";

/// Incoming `New` referrals expiring within [`EXPIRING_WITHIN`] of `now`.
pub(crate) async fn expiring_soon(reader: &Reader, now: OffsetDateTime) -> Result<u64, String> {
    let from = now.unix_timestamp();
    let to = from + EXPIRING_WITHIN.as_secs() as i64;
    reader
        .client()
        .query(EXPIRING_SQL)
        .bind(from)
        .bind(to)
        .fetch_one::<u64>()
        .await
        .map_err(|error| error.to_string())
}

/// Refreshes the gauge for as long as the process runs (the task is detached: the API role
/// ends with the process).
pub(crate) fn spawn_gauge(reader: Reader) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(REFRESH_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            match expiring_soon(&reader, OffsetDateTime::now_utc()).await {
                Ok(count) => metrics::gauge!(names::API_REFERRALS_EXPIRING_SOON).set(count as f64),
                Err(error) => tracing::warn!(
                    %error,
                    "could not count the referrals expiring soon; the gauge keeps its last value"
                ),
            }
        }
    });
}
