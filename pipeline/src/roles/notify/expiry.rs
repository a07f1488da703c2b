//! The expiry checks: incoming `New` referrals that Partner Center archives as `Expired` if
//! nobody answers. Read from ClickHouse `leads FINAL` (`expires_at`, lead contract 0004, and
//! `expires_at_estimated`).
//!
//! - daily at `HUNTER_NOTIFY_DAILY_AT` (UTC): those expiring within 48 hours (`expiring_soon`);
//! - every `HUNTER_NOTIFY_EXPIRY_CHECK_SECS`: those expiring within the hour
//!   (`expiring_within_hour`).
//!
//! Each is deduplicated by (lead, kind, expiry time) — not the lead version, so a referral
//! edited while it waits is not announced again, while a moved expiry is — and a restart or a
//! second check the same day sends nothing twice. Each check counts in
//! `hunter_notify_expiry_checks_total{kind,outcome}`. Until the `leads` table has `expires_at`
//! (a deployment not migrated yet) the checks wait, saying so once; a failed query is tried
//! again at the next check.

use hunter_clickhouse::writer::ReadWriter;
use hunter_core::config::NotifySettings;
use hunter_core::shutdown::Shutdown;
use hunter_core::telemetry::names;
use time::OffsetDateTime;

use super::Dispatcher;
use super::event::{self, Kind, LeadSummary};

#[derive(Debug, clickhouse::Row, serde::Deserialize)]
struct ExpiringRow {
    lead_id: String,
    tenant: String,
    version: u64,
    name: Option<String>,
    company_name: Option<String>,
    company_domain: Option<String>,
    status: Option<String>,
    direction: Option<String>,
    deal_value: Option<f64>,
    currency: Option<String>,
    expires: u64,
    estimated: u8,
}

/// Whether the daily check is due at `now`, given the date it last ran.
pub(super) fn daily_due(
    now: OffsetDateTime,
    daily_at_minutes: u32,
    last: Option<time::Date>,
) -> bool {
    let minutes = u32::from(now.hour()) * 60 + u32::from(now.minute());
    minutes >= daily_at_minutes && last != Some(now.date())
}

/// The query for leads expiring within `within` (seconds from now).
pub(super) fn query(within_secs: u64, has_estimated: bool) -> String {
    let estimated = if has_estimated {
        "toUInt8(ifNull(expires_at_estimated, 0))"
    } else {
        "toUInt8(0)"
    };
    format!(
        "SELECT lead_id, tenant, version, name, company_name, company_domain, status, direction, \
         toFloat64OrNull(toString(deal_value)) AS deal_value, currency, \
         toUInt64(toUnixTimestamp(assumeNotNull(expires_at))) AS expires, {estimated} AS estimated \
         FROM leads FINAL \
         WHERE lower(ifNull(direction, '')) = 'incoming' AND status = 'New' AND expires_at IS NOT NULL \
         AND expires_at > now() AND expires_at <= now() + {within_secs} \
         ORDER BY expires_at LIMIT 10000"
    )
}

#[derive(Debug, clickhouse::Row, serde::Deserialize)]
struct ColumnRow {
    name: String,
}

/// The expiry columns `leads` has: (`expires_at`, `expires_at_estimated`).
async fn columns(writer: &ReadWriter) -> Result<(bool, bool), hunter_clickhouse::Error> {
    let rows: Vec<ColumnRow> = writer
        .client()
        .query(
            "SELECT name FROM system.columns WHERE database = currentDatabase() AND table = 'leads' \
             AND name IN ('expires_at', 'expires_at_estimated')",
        )
        .fetch_all()
        .await?;
    let has = |column: &str| rows.iter().any(|row| row.name == column);
    Ok((has("expires_at"), has("expires_at_estimated")))
}

/// Counts one check by its outcome (`done`, `failed`, `waiting`).
fn counted(kind: Kind, outcome: &'static str) {
    metrics::counter!(names::NOTIFY_EXPIRY_CHECKS_TOTAL, "kind" => kind.as_str(), "outcome" => outcome)
        .increment(1);
}

async fn check(
    writer: &ReadWriter,
    settings: &NotifySettings,
    dispatcher: &Dispatcher,
    kind: Kind,
    within_secs: u64,
    shutdown: &mut Shutdown,
    waiting_said: &mut bool,
) -> Result<(), ()> {
    let (has_expires, has_estimated) = match columns(writer).await {
        Ok(columns) => columns,
        Err(error) => {
            tracing::warn!(%error, kind = kind.as_str(), "expiry check failed; trying again at the next one");
            counted(kind, "failed");
            return Ok(());
        }
    };
    if !has_expires {
        counted(kind, "waiting");
        if !std::mem::replace(waiting_said, true) {
            tracing::info!(
                "leads has no expires_at column yet (run `hunter migrate`): expiry notifications wait for it"
            );
        }
        return Ok(());
    }
    let rows: Vec<ExpiringRow> = match writer
        .client()
        .query(&query(within_secs, has_estimated))
        .fetch_all()
        .await
    {
        Ok(rows) => rows,
        Err(error) => {
            tracing::warn!(%error, kind = kind.as_str(), "expiry check failed; trying again at the next one");
            counted(kind, "failed");
            return Ok(());
        }
    };
    let now = event::rfc3339(hunter_core::records::Timestamp::now());
    let events = rows
        .into_iter()
        .map(|row| {
            let expires_at =
                OffsetDateTime::from_unix_timestamp(i64::try_from(row.expires).unwrap_or(0))
                    .ok()
                    .and_then(|t| {
                        t.format(&time::format_description::well_known::Rfc3339)
                            .ok()
                    });
            let lead = LeadSummary {
                lead_id: row.lead_id,
                version: i64::try_from(row.version).unwrap_or(i64::MAX),
                name: row.name,
                company_name: row.company_name,
                company_domain: row.company_domain,
                status: row.status,
                direction: row.direction,
                deal_value: row.deal_value,
                currency: row.currency,
                expires_at,
                expires_at_estimated: Some(row.estimated != 0),
                ..LeadSummary::default()
            };
            event::lead_event(
                kind,
                &row.tenant,
                lead,
                now.clone(),
                settings.page_url.as_ref(),
            )
        })
        .collect();
    dispatcher.dispatch(events, shutdown).await?;
    counted(kind, "done");
    Ok(())
}

/// Runs both checks until shutdown.
pub(super) async fn checks(
    settings: &NotifySettings,
    dispatcher: &Dispatcher,
    writer: &ReadWriter,
    mut shutdown: Shutdown,
) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(settings.expiry_check_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_daily: Option<time::Date> = None;
    let mut waiting_said = false;
    loop {
        tokio::select! {
            _ = shutdown.wait() => return Ok(()),
            _ = tick.tick() => {}
        }
        let now = OffsetDateTime::now_utc();
        if daily_due(now, settings.daily_at_minutes, last_daily) {
            if check(
                writer,
                settings,
                dispatcher,
                Kind::ExpiringSoon,
                48 * 3600,
                &mut shutdown,
                &mut waiting_said,
            )
            .await
            .is_err()
            {
                return Ok(());
            }
            last_daily = Some(now.date());
        }
        if check(
            writer,
            settings,
            dispatcher,
            Kind::ExpiringWithinHour,
            3600,
            &mut shutdown,
            &mut waiting_said,
        )
        .await
        .is_err()
        {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn the_daily_check_runs_once_a_day_after_its_time() {
        let at = 8 * 60;
        let morning = datetime!(2026-12-01 07:59 UTC);
        let after = datetime!(2026-12-01 08:00 UTC);
        assert!(!daily_due(morning, at, None));
        assert!(
            daily_due(after, at, None),
            "a start after the time runs it (dedupe makes that harmless)"
        );
        assert!(!daily_due(after, at, Some(after.date())), "once a day");
        let next = datetime!(2026-12-02 09:30 UTC);
        assert!(daily_due(next, at, Some(after.date())));
    }

    #[test]
    fn the_query_reads_incoming_new_referrals_in_the_window() {
        let sql = query(3600, false);
        assert!(sql.contains("FROM leads FINAL"));
        assert!(sql.contains("status = 'New'"));
        assert!(sql.contains("expires_at <= now() + 3600"));
        assert!(sql.contains("toUInt8(0) AS estimated"));
        assert!(query(172_800, true).contains("expires_at_estimated"));
    }
}
