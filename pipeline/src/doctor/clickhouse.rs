//! ClickHouse checks: the connection and migrations, TLS trust, and each user's rights.

use hunter_core::config::Settings;

use super::{CHECK_TIMEOUT, Report, Verdict};

/// ClickHouse answers and every migration is applied. Returns the connection when both hold.
pub(super) async fn clickhouse(
    settings: &Settings,
    report: &mut Report,
) -> Option<hunter_clickhouse::writer::ReadWriter> {
    let ch = &settings.clickhouse;
    let shown = hunter_clickhouse::connection::display_url(&ch.url);
    let connected = tokio::time::timeout(
        CHECK_TIMEOUT,
        hunter_clickhouse::writer::ReadWriter::connect(ch),
    )
    .await;
    clickhouse_tls(settings, &connected, report);
    let writer = match connected {
        Ok(Ok(writer)) => writer,
        Ok(Err(error)) => {
            use hunter_clickhouse::connection::Failure;
            let fix = match error.failure() {
                // Reported by "clickhouse tls" above.
                Failure::Tls => {
                    report.add("clickhouse", Verdict::Skip, "the TLS handshake failed");
                    report.add(
                        "clickhouse migrations",
                        Verdict::Skip,
                        "ClickHouse did not answer",
                    );
                    return None;
                }
                Failure::Authentication => {
                    "check HUNTER_CLICKHOUSE_USER and HUNTER_CLICKHOUSE_PASSWORD (the writer's login)"
                }
                Failure::AccessDenied => {
                    "a DBA grants the writer its rights: `hunter migrate --print-grants` prints them"
                }
                Failure::Unreachable | Failure::Server => {
                    "check HUNTER_CLICKHOUSE_URL (the HTTP port, 8123 by default; an https_port such as 8443 needs https://) and that ClickHouse runs"
                }
            };
            report.fail("clickhouse", error.to_string(), fix);
            report.add(
                "clickhouse migrations",
                Verdict::Skip,
                "ClickHouse did not answer",
            );
            return None;
        }
        Err(_) => {
            report.fail(
                "clickhouse",
                format!("{shown} did not answer within {CHECK_TIMEOUT:?}"),
                "check HUNTER_CLICKHOUSE_URL and that ClickHouse runs",
            );
            report.add(
                "clickhouse migrations",
                Verdict::Skip,
                "ClickHouse did not answer",
            );
            return None;
        }
    };
    report.add(
        "clickhouse",
        Verdict::Ok,
        format!(
            "{shown} answered (ClickHouse {}, writer {:?})",
            writer.version(),
            writer.user()
        ),
    );
    let applied: Result<Vec<String>, _> = writer
        .client()
        .query("SELECT name FROM hunter_migrations")
        .fetch_all::<String>()
        .await;
    let applied = applied.unwrap_or_default();
    // A migration that needs a newer server than this one stays pending by design.
    let server = writer.version();
    let (waiting, missing): (
        Vec<&hunter_clickhouse::migrations::Migration>,
        Vec<&hunter_clickhouse::migrations::Migration>,
    ) = hunter_clickhouse::migrations::MIGRATIONS
        .iter()
        .filter(|m| !applied.iter().any(|a| a == m.name))
        .partition(|m| m.requires().is_some_and(|required| server < required));
    let missing: Vec<&str> = missing.iter().map(|m| m.name).collect();
    if missing.is_empty() {
        let waits = waiting
            .iter()
            .map(|m| {
                format!(
                    "; {} waits for ClickHouse {} (server {server})",
                    m.name,
                    m.requires().map(|r| r.to_string()).unwrap_or_default()
                )
            })
            .collect::<String>();
        report.add(
            "clickhouse migrations",
            Verdict::Ok,
            format!(
                "database {}: all {} applied{waits}",
                ch.database,
                hunter_clickhouse::migrations::MIGRATIONS.len() - waiting.len()
            ),
        );
    } else {
        report.fail(
            "clickhouse migrations",
            format!(
                "database {}: not applied: {}",
                ch.database,
                missing.join(", ")
            ),
            "run `hunter migrate`",
        );
        return None;
    }
    Some(writer)
}

// --- ClickHouse: TLS trust and each user's rights (docs/clickhouse.md) ---

/// The tables the API reads.
const API_TABLES: &[&str] = &["leads", "lead_history", "referrals", "sync_runs"];

/// "clickhouse tls": an https URL's certificate is trusted; an http URL to another machine is a
/// warning (the passwords travel in clear).
fn clickhouse_tls(
    settings: &Settings,
    connected: &Result<
        Result<hunter_clickhouse::writer::ReadWriter, hunter_clickhouse::Error>,
        tokio::time::error::Elapsed,
    >,
    report: &mut Report,
) {
    use hunter_clickhouse::connection::Failure;
    let ch = &settings.clickhouse;
    let host = ch.url.host_str().unwrap_or_default().to_owned();
    if ch.url.scheme() == "http" {
        let loopback = host == "localhost"
            || host
                .trim_matches(|c| c == '[' || c == ']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if loopback {
            report.add(
                "clickhouse tls",
                Verdict::Skip,
                "http:// URL to this machine (no TLS needed)",
            );
        } else {
            report.push(
                "clickhouse tls",
                Verdict::Warn,
                format!("http:// URL to {host}: passwords and leads travel in clear"),
                Some(
                    "serve ClickHouse's https_port and use an https:// HUNTER_CLICKHOUSE_URL (HUNTER_CLICKHOUSE_CA_LOCATION for a private CA)",
                ),
            );
        }
        return;
    }
    let trusted_by = match &ch.ca_location {
        Some(path) => format!("the system's roots and {}", path.display()),
        None => "the system's roots".to_owned(),
    };
    match connected {
        Ok(Ok(_)) => report.add(
            "clickhouse tls",
            Verdict::Ok,
            format!("{host}'s certificate is trusted ({trusted_by})"),
        ),
        Ok(Err(error)) if error.failure() == Failure::Tls => report.fail(
            "clickhouse tls",
            error.to_string(),
            format!(
                "set HUNTER_CLICKHOUSE_CA_LOCATION to the PEM file of the CA that signed ClickHouse's certificate (trusted now: {trusted_by}); the certificate must name {host}"
            ),
        ),
        _ => report.add(
            "clickhouse tls",
            Verdict::Skip,
            "ClickHouse did not answer",
        ),
    }
}

/// "clickhouse writer" and "clickhouse reader": each user may do what its role does, and the
/// API's may not write. Probes change nothing: an `INSERT … SELECT … WHERE 0` writes no row,
/// and the `CREATE TABLE IF NOT EXISTS` of the migrations table runs only on a migrated
/// database, where the table exists.
pub(super) async fn clickhouse_users(
    settings: &Settings,
    writer: Option<&hunter_clickhouse::writer::ReadWriter>,
    report: &mut Report,
) {
    let Some(writer) = writer else {
        for name in ["clickhouse writer", "clickhouse reader"] {
            report.add(
                name,
                Verdict::Skip,
                "ClickHouse is unreachable or not migrated",
            );
        }
        return;
    };
    let probes = async {
        writer.probe_create().await?;
        writer.probe_inserts().await
    };
    match tokio::time::timeout(CHECK_TIMEOUT, probes).await {
        Ok(Ok(())) => report.add(
            "clickhouse writer",
            Verdict::Ok,
            format!(
                "user {:?} may create tables in {} and insert into {}",
                writer.user(),
                settings.clickhouse.database,
                hunter_clickhouse::grants::sink_tables().join(", ")
            ),
        ),
        Ok(Err(error @ hunter_clickhouse::Error::Rights { .. })) => report.fail(
            "clickhouse writer",
            error.to_string(),
            "a DBA grants the writer its rights: `hunter migrate --print-grants` prints them (or set HUNTER_CLICKHOUSE_USER to a user that has them)",
        ),
        Ok(Err(error)) => report.fail(
            "clickhouse writer",
            error.to_string(),
            "run `hunter migrate`, then check ClickHouse's error log",
        ),
        Err(_) => report.fail(
            "clickhouse writer",
            format!("no answer within {CHECK_TIMEOUT:?}"),
            "check that ClickHouse is not overloaded",
        ),
    }
    match tokio::time::timeout(CHECK_TIMEOUT, clickhouse_reader(settings)).await {
        Ok((verdict, detail, fix)) => report.push("clickhouse reader", verdict, detail, fix),
        Err(_) => report.fail(
            "clickhouse reader",
            format!("no answer within {CHECK_TIMEOUT:?}"),
            "check that ClickHouse is not overloaded",
        ),
    }
}

/// The API's user: logs in, reads every table the API reads, cannot write, and takes the API's
/// per-query limits.
async fn clickhouse_reader(settings: &Settings) -> (Verdict, String, Option<String>) {
    use hunter_clickhouse::connection::{self, Failure, Login};
    use hunter_clickhouse::reader::{Limits, QueryLimits, Reader};
    let ch = &settings.clickhouse;
    let login = Login::reader(ch);
    let user = login.user_name().to_owned();
    let database = &ch.database;
    let mut warnings: Vec<(String, String)> = Vec::new();
    if login.fallback {
        warnings.push((
            format!("HUNTER_CLICKHOUSE_READER_USER is not set: the API reads as the writer {user:?}, which can write"),
            "create a read-only user for the API and set HUNTER_CLICKHOUSE_READER_USER and HUNTER_CLICKHOUSE_READER_PASSWORD (`hunter migrate --print-grants`)".to_owned(),
        ));
    } else {
        let client = match connection::client(ch, &login) {
            Ok(client) => client.with_database(database),
            Err(error) => {
                return (
                    Verdict::Fail,
                    error.to_string(),
                    Some("check HUNTER_CLICKHOUSE_CA_LOCATION".to_owned()),
                );
            }
        };
        if let Err(error) = client.query("SELECT version()").fetch_one::<String>().await {
            let error = connection::explain(error, ch, &login);
            let fix = match error.failure() {
                Failure::Authentication => "check HUNTER_CLICKHOUSE_READER_USER and HUNTER_CLICKHOUSE_READER_PASSWORD (the API's login)".to_owned(),
                Failure::AccessDenied => format!("a DBA runs: GRANT SELECT ON {database}.* TO `{user}` (or lists {database} in its <allow_databases>)"),
                _ => "check the reader's user on the server (docs/clickhouse.md)".to_owned(),
            };
            return (Verdict::Fail, error.to_string(), Some(fix));
        }
        for table in API_TABLES {
            let select = format!("SELECT count() FROM {table} WHERE 0");
            if let Err(error) = client.query(&select).fetch_one::<u64>().await {
                return (
                    Verdict::Fail,
                    format!(
                        "user {user:?} cannot read {database}.{table}: {}",
                        connection::chain(&error)
                    ),
                    Some(format!(
                        "a DBA runs: GRANT SELECT ON {database}.* TO `{user}` (or lists {database} in its <allow_databases>)"
                    )),
                );
            }
        }
        match client.query(&hunter_clickhouse::writer::probe_insert("leads")).execute().await {
            Ok(()) => warnings.push((
                format!("user {user:?} can write to {database}.leads (the API only reads)"),
                format!("make it read-only: readonly = 2 in its profile, or only GRANT SELECT ON {database}.* TO `{user}` (the API also sends readonly=2 with every query)"),
            )),
            Err(error) if connection::classify(&error) == Failure::AccessDenied => {}
            Err(error) => warnings.push((
                format!("could not tell whether user {user:?} can write: {}", connection::chain(&error)),
                "check ClickHouse's error log".to_owned(),
            )),
        }
    }
    // What the API itself does at start: its limits are taken.
    let limits = QueryLimits::new(ch, settings.api.request_timeout);
    let reader = match Reader::connect(ch, limits).await {
        Ok(reader) => reader,
        Err(error) => {
            return (
                Verdict::Fail,
                error.to_string(),
                Some("check the reader's user on the server (docs/clickhouse.md)".to_owned()),
            );
        }
    };
    if let Err(error) = reader
        .client()
        .query("SELECT count() FROM leads WHERE 0")
        .fetch_one::<u64>()
        .await
    {
        return (
            Verdict::Fail,
            format!("the API's per-query limits are refused for user {user:?}: {}", connection::chain(&error)),
            Some("let the reader change them: readonly = 2 (not 1) and no constraint below them in its profile (docs/clickhouse.md)".to_owned()),
        );
    }
    let limits = match reader.limits() {
        Limits::Sent(sent) => sent
            .iter()
            .filter(|(name, _)| name.starts_with("max_"))
            .map(|(name, value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join(", "),
        Limits::ProfileOnly => {
            warnings.push((
                format!("user {user:?} has readonly=1: the API cannot set its per-query limits"),
                "give the reader readonly = 2 in its profile (it still cannot write)".to_owned(),
            ));
            "its profile's only".to_owned()
        }
    };
    if warnings.is_empty() {
        (
            Verdict::Ok,
            format!("user {user:?} reads {database} and cannot write; API limits: {limits}"),
            None,
        )
    } else {
        let (details, fixes): (Vec<String>, Vec<String>) = warnings.into_iter().unzip();
        (Verdict::Warn, details.join("; "), Some(fixes.join("; ")))
    }
}
