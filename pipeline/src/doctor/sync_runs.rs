//! The scheduler's last successful run per tenant, read from ClickHouse `sync_runs`.

use std::collections::BTreeMap;

use hunter_core::config::Settings;
use time::OffsetDateTime;

use super::{Report, Verdict};

/// The scheduler's last successful run per tenant (ClickHouse `sync_runs`), against the interval.
pub(super) async fn last_run(
    settings: &Settings,
    writer: Option<&hunter_clickhouse::writer::ReadWriter>,
    report: &mut Report,
) {
    if !settings.partner_center.enabled {
        report.add("last sync run", Verdict::Skip, "the source is disabled");
        return;
    }
    let Some(writer) = writer else {
        report.add(
            "last sync run",
            Verdict::Skip,
            "ClickHouse is unreachable or not migrated",
        );
        return;
    };
    let client = writer.client();
    let answers = tokio::try_join!(
        crate::queries::last_successes(client),
        crate::queries::latest_statuses(client),
    );
    let (successes, statuses) = match answers {
        Ok(answers) => answers,
        Err(error) => {
            report.fail(
                "last sync run",
                format!("cannot read sync_runs: {error}"),
                "run `hunter migrate`, then check that the sink runs",
            );
            return;
        }
    };
    // Per tenant: its last success (unix seconds, 0 for none) and the status of its latest run.
    let mut last: BTreeMap<String, (i64, String)> = BTreeMap::new();
    for (tenant, status) in statuses {
        let success = successes
            .iter()
            .find(|(name, _)| *name == tenant)
            .map_or(0, |(_, seconds)| *seconds);
        last.insert(tenant, (success, status));
    }
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let interval = settings.sync.interval.as_secs() as i64;
    for tenant in &settings.partner_center.tenants {
        let check = if settings.partner_center.tenants.len() == 1 {
            "last sync run".to_owned()
        } else {
            format!("last sync run ({})", tenant.name)
        };
        match last.get(&tenant.name) {
            None => report.fail(
                check,
                format!("no sync run of tenant {} recorded", tenant.name),
                "start the source and the sink (`hunter run source`, `hunter run sink`) and check their logs",
            ),
            Some((success, status)) if *success == 0 => report.fail(
                check,
                format!("no successful run yet; the latest is {status}"),
                "read the source's `poll failed` log lines; the checks above name the usual causes",
            ),
            Some((success, status)) => {
                let age = now - success;
                if age > 2 * interval {
                    report.fail(
                        check,
                        format!(
                            "last success {age} s ago, more than two intervals ({interval} s); the latest run is {status}"
                        ),
                        "check that the source runs (`/healthz`), then its `poll failed` log lines",
                    );
                } else {
                    report.add(
                        check,
                        Verdict::Ok,
                        format!("last success {age} s ago (interval {interval} s)"),
                    );
                }
            }
        }
    }
}
