//! `hunter doctor`: the troubleshooting guide as a command.
//!
//! Each check prints a verdict (`ok`, `warn`, `FAIL`, `skip`) and, when something is wrong,
//! the fix. Checks run in the order an operator would work through them; a check whose
//! prerequisite failed is skipped, not failed again. The command exits non-zero when any check
//! failed (warnings do not). It only reads, except the silent token refresh, which rotates the
//! cached tokens exactly as the source would on its next poll, and the ClickHouse rights
//! probes, which run statements that change nothing (an insert of zero rows, a
//! `CREATE TABLE IF NOT EXISTS` of a table that exists). A password in any URL it prints
//! (`https://user:pass@host`) is shown as `***`.

mod clickhouse;
mod kafka;
mod partner_center;
mod registry;
mod sync_runs;

use std::path::Path;
use std::time::Duration;

use hunter_core::config::Settings;

/// Longest any single network check may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Ok,
    Warn,
    Fail,
    Skip,
}

/// One check's outcome.
#[derive(Debug)]
struct Check {
    name: String,
    verdict: Verdict,
    detail: String,
    fix: Option<String>,
}

#[derive(Default)]
struct Report {
    checks: Vec<Check>,
}

impl Report {
    fn add(&mut self, name: impl Into<String>, verdict: Verdict, detail: impl Into<String>) {
        self.push(name, verdict, detail, None::<String>);
    }

    fn push(
        &mut self,
        name: impl Into<String>,
        verdict: Verdict,
        detail: impl Into<String>,
        fix: Option<impl Into<String>>,
    ) {
        // Every URL printed (settings, error texts naming them) with any password as `***`.
        let redact = hunter_core::security::redact_url_passwords;
        let check = Check {
            name: name.into(),
            verdict,
            detail: redact(&detail.into()),
            fix: fix.map(|fix| redact(&fix.into())),
        };
        let label = match check.verdict {
            Verdict::Ok => "ok  ",
            Verdict::Warn => "warn",
            Verdict::Fail => "FAIL",
            Verdict::Skip => "skip",
        };
        println!("{label}  {:<24} {}", check.name, check.detail);
        if let Some(fix) = &check.fix {
            println!("      {:<24} fix: {fix}", "");
        }
        self.checks.push(check);
    }

    fn fail(&mut self, name: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) {
        self.push(name, Verdict::Fail, detail, Some(fix));
    }

    fn failed(&self) -> Vec<&str> {
        self.checks
            .iter()
            .filter(|c| c.verdict == Verdict::Fail)
            .map(|c| c.name.as_str())
            .collect()
    }
}

/// Runs every check; `Err` names the failed ones.
pub async fn run(config: Option<&Path>) -> anyhow::Result<()> {
    let mut report = Report::default();
    let settings = match Settings::load(config) {
        Ok(settings) => settings,
        Err(error) => {
            report.fail(
                "config",
                error.to_string(),
                "set the named HUNTER_* variable or config file key (README: Configuration)",
            );
            anyhow::bail!("doctor: 1 check failed: config");
        }
    };
    report.add(
        "config",
        Verdict::Ok,
        format!(
            "settings valid ({}, sync every {} s, {} tenant(s))",
            match settings.environment {
                hunter_core::config::Environment::Production => "production",
                hunter_core::config::Environment::Development => "development",
            },
            settings.sync.interval.as_secs(),
            settings.partner_center.tenants.len()
        ),
    );

    // --- plain http allowed (docs/security.md) ---
    let insecure: Vec<String> = [
        &settings.partner_center.authority_url,
        &settings.partner_center.api_url,
    ]
    .into_iter()
    .filter(|url| url.scheme() == "http" && !hunter_core::security::is_loopback(url))
    .map(|url| url.to_string())
    .collect();
    if settings.allow_insecure_http && !insecure.is_empty() {
        report.push(
            "plain http",
            Verdict::Warn,
            format!(
                "tokens travel unencrypted to {} (HUNTER_ALLOW_INSECURE_HTTP=true)",
                insecure.join(", ")
            ),
            Some("use the https:// URLs and unset HUNTER_ALLOW_INSECURE_HTTP outside development"),
        );
    }
    // --- end plain http ---
    partner_center::partner_center(&settings, &mut report).await;
    kafka::kafka_checks(&settings, &mut report).await;
    registry::registry(&settings, &mut report).await;
    let writer = clickhouse::clickhouse(&settings, &mut report).await;
    clickhouse::clickhouse_users(&settings, writer.as_ref(), &mut report).await;
    sync_runs::last_run(&settings, writer.as_ref(), &mut report).await;

    let failed = report.failed();
    println!("\nfor each topic's offsets and every consumer group's lag: hunter topics describe");
    if failed.is_empty() {
        println!("all checks passed");
        Ok(())
    } else {
        anyhow::bail!(
            "doctor: {} check(s) failed: {}",
            failed.len(),
            failed.join(", ")
        )
    }
}
