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

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hunter_core::config::{Settings, TenantSettings};
use hunter_core::kafka;
use hunter_partner_center::auth::{AuthError, TokenProvider, auth_status};
use hunter_partner_center::client::{ClientSettings, PartnerCenterClient};
use time::OffsetDateTime;

use crate::roles;

/// Longest any single network check may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(15);
/// A refresh token this old is a warning: Entra drops it at 90 days without use.
const REFRESH_TOKEN_WARN_DAYS: u64 = 80;

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
    partner_center(&settings, &mut report).await;
    kafka_checks(&settings, &mut report).await;
    registry(&settings, &mut report).await;
    let writer = clickhouse(&settings, &mut report).await;
    clickhouse_users(&settings, writer.as_ref(), &mut report).await;
    last_run(&settings, writer.as_ref(), &mut report).await;

    let failed = report.failed();
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

/// Feature flag, then per tenant: token cache, silent refresh, the Referrals API.
async fn partner_center(settings: &Settings, report: &mut Report) {
    let pc = &settings.partner_center;
    if !pc.enabled {
        report.fail(
            "feature flag",
            "the source is disabled: no polls are made",
            "set HUNTER_PARTNER_CENTER_ENABLED=true",
        );
        for name in ["token cache", "token refresh", "partner center api"] {
            report.add(name, Verdict::Skip, "the source is disabled");
        }
        return;
    }
    report.add(
        "feature flag",
        Verdict::Ok,
        "HUNTER_PARTNER_CENTER_ENABLED=true",
    );
    if pc.tenants.is_empty() {
        report.fail(
            "tenants",
            "no partner account is configured",
            "set HUNTER_PARTNER_CENTER_TENANT_ID and HUNTER_PARTNER_CENTER_CLIENT_ID",
        );
        return;
    }
    for tenant in &pc.tenants {
        tenant_checks(settings, tenant, report).await;
    }
}

async fn tenant_checks(settings: &Settings, tenant: &TenantSettings, report: &mut Report) {
    let pc = &settings.partner_center;
    let name = |check: &str| {
        if pc.tenants.len() == 1 {
            check.to_owned()
        } else {
            format!("{check} ({})", tenant.name)
        }
    };
    let login = format!("run `hunter auth login --tenant {}`", tenant.name);
    let auth = roles::source::auth_settings(pc, tenant);
    let path = &tenant.token_cache;

    // Present, readable, and private.
    let cache_ok = match std::fs::metadata(path) {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            report.fail(
                name("token cache"),
                format!("{} is missing", path.display()),
                login.clone(),
            );
            false
        }
        Err(error) => {
            report.fail(
                name("token cache"),
                format!("{}: {error}", path.display()),
                "check the path (HUNTER_TOKEN_CACHE) and that hunter's user may read it",
            );
            false
        }
        Ok(metadata) => match (std::fs::File::open(path), cache_mode(&metadata)) {
            (Err(error), _) => {
                report.fail(
                    name("token cache"),
                    format!("{} is not readable: {error}", path.display()),
                    "make hunter's user the owner of the file: chown it, then chmod 600",
                );
                false
            }
            (Ok(_), Some(mode)) if mode & 0o077 != 0 => {
                report.fail(
                    name("token cache"),
                    format!(
                        "{} has mode {mode:o}: others may read the refresh token",
                        path.display()
                    ),
                    format!("chmod 600 {}", path.display()),
                );
                false
            }
            (Ok(_), _) => match auth_status(&auth) {
                Ok(status) if status.needs_login => {
                    report.fail(name("token cache"), status.verdict, login.clone());
                    false
                }
                Ok(status) => {
                    let days = status.refresh_token_age.as_secs() / 86_400;
                    if days >= REFRESH_TOKEN_WARN_DAYS {
                        report.push(
                            name("token cache"),
                            Verdict::Warn,
                            format!("refresh token is {days} days old (Entra drops it at 90)"),
                            Some(login.clone()),
                        );
                    } else {
                        report.add(
                            name("token cache"),
                            Verdict::Ok,
                            format!(
                                "{} (mode 600, refresh token {days} days old)",
                                path.display()
                            ),
                        );
                    }
                    true
                }
                Err(error) => {
                    report.fail(name("token cache"), error.to_string(), login.clone());
                    false
                }
            },
        },
    };
    if !cache_ok {
        report.add(
            name("token refresh"),
            Verdict::Skip,
            "no usable token cache",
        );
        report.add(
            name("partner center api"),
            Verdict::Skip,
            "no usable token cache",
        );
        return;
    }

    let tokens = Arc::new(TokenProvider::new(auth));
    match tokio::time::timeout(CHECK_TIMEOUT, tokens.refresh_now()).await {
        Ok(Ok(_)) => report.add(
            name("token refresh"),
            Verdict::Ok,
            format!("silent refresh against {} succeeded", pc.authority_url),
        ),
        Ok(Err(error)) => {
            let fix = match &error {
                AuthError::SignInRequired { .. } | AuthError::CacheMissing { .. } => login.clone(),
                _ => format!(
                    "check that {} is reachable from here (HUNTER_PARTNER_CENTER_AUTHORITY_URL, proxy, firewall)",
                    pc.authority_url
                ),
            };
            report.fail(name("token refresh"), error.to_string(), fix);
            report.add(name("partner center api"), Verdict::Skip, "no access token");
            return;
        }
        Err(_) => {
            report.fail(
                name("token refresh"),
                format!(
                    "{} did not answer within {CHECK_TIMEOUT:?}",
                    pc.authority_url
                ),
                "check the network path to the login authority",
            );
            report.add(name("partner center api"), Verdict::Skip, "no access token");
            return;
        }
    }

    let client = PartnerCenterClient::new(
        ClientSettings {
            api_url: pc.api_url.clone(),
            page_size: 1,
            request_timeout: CHECK_TIMEOUT,
            max_attempts: 1,
            ..ClientSettings::default()
        },
        tokens,
    );
    let since = OffsetDateTime::now_utc() - time::Duration::minutes(1);
    let answer = match client {
        Ok(client) => client.first_page(Some(since)).await.map(|_| ()),
        Err(error) => Err(error),
    };
    match answer {
        Ok(()) => report.add(
            name("partner center api"),
            Verdict::Ok,
            format!("{}/referrals answered", pc.api_url),
        ),
        Err(error) => {
            let fix = match error.status() {
                Some(401 | 403) => format!(
                    "the signed-in account lacks Partner Center access (Referrals admin or user role); {login}"
                ),
                Some(429) => "the API is rate limiting: wait, and keep HUNTER_SYNC_INTERVAL_SECS at 600 or more".to_owned(),
                _ => format!(
                    "check HUNTER_PARTNER_CENTER_API_URL ({}) and the network path to it",
                    pc.api_url
                ),
            };
            report.fail(name("partner center api"), error.to_string(), fix);
        }
    }
}

#[cfg(unix)]
fn cache_mode(metadata: &std::fs::Metadata) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    Some(metadata.permissions().mode() & 0o777)
}

#[cfg(not(unix))]
fn cache_mode(_metadata: &std::fs::Metadata) -> Option<u32> {
    None
}

/// TLS trust and authentication (each with its own verdict and fix), the broker's answer, and
/// every topic Hunter uses.
async fn kafka_checks(settings: &Settings, report: &mut Report) {
    use hunter_core::kafka::FailureKind;
    let security = &settings.kafka.security;
    let kafka_settings = settings.kafka.clone();
    let checked = tokio::task::spawn_blocking(move || {
        kafka::check_connection(&kafka_settings, CHECK_TIMEOUT)
    })
    .await;
    let checked = match checked {
        Ok(checked) => checked,
        Err(error) => {
            report.fail(
                "kafka broker",
                format!("connection check failed: {error}"),
                "run again",
            );
            report.add("kafka topics", Verdict::Skip, "the broker did not answer");
            return;
        }
    };
    let failure = checked.as_ref().err();
    let detail = |error: &kafka::ConnectError| format!("{}: {}", error.headline, error.reason);
    let protocol = security.protocol.as_str();
    match failure {
        Some(error) if error.kind.is_tls() => report.fail("kafka tls", detail(error), &error.fix),
        _ if !security.protocol.uses_tls() => report.add(
            "kafka tls",
            Verdict::Skip,
            format!("HUNTER_KAFKA_SECURITY_PROTOCOL={protocol} uses no TLS"),
        ),
        Some(_) => report.add(
            "kafka tls",
            Verdict::Skip,
            "no TLS connection was made (see kafka broker)",
        ),
        None => report.add(
            "kafka tls",
            Verdict::Ok,
            format!(
                "the broker's certificate is trusted ({})",
                match &security.tls.ca_location {
                    Some(ca) => format!("CA {}", ca.display()),
                    None => "system trust store".to_owned(),
                }
            ),
        ),
    }
    let authentication_failed = |kind: FailureKind| {
        matches!(
            kind,
            FailureKind::Authentication | FailureKind::Mechanism | FailureKind::OAuthToken
        )
    };
    match (&security.sasl, failure) {
        (_, Some(error)) if authentication_failed(error.kind) => {
            report.fail("kafka authentication", detail(error), &error.fix)
        }
        (None, _) => report.add(
            "kafka authentication",
            Verdict::Skip,
            format!("HUNTER_KAFKA_SECURITY_PROTOCOL={protocol} does not authenticate"),
        ),
        (Some(_), Some(_)) => report.add(
            "kafka authentication",
            Verdict::Skip,
            "the connection failed before authentication",
        ),
        (Some(sasl), None) => report.add(
            "kafka authentication",
            Verdict::Ok,
            match sasl {
                hunter_core::config::KafkaSasl::Password {
                    mechanism,
                    username,
                    ..
                } => format!("{} as user {username:?} accepted", mechanism.as_str()),
                hunter_core::config::KafkaSasl::OAuthBearer { client_id, .. } => {
                    format!("OAUTHBEARER token of client {client_id:?} accepted")
                }
            },
        ),
    }
    match failure {
        Some(error) if error.kind.is_tls() || authentication_failed(error.kind) => {
            report.add(
                "kafka broker",
                Verdict::Skip,
                "TLS or authentication failed (above)",
            );
            report.add("kafka topics", Verdict::Skip, "the broker did not answer");
            return;
        }
        Some(error) => {
            report.fail(
                "kafka broker",
                format!("{}: {}", settings.kafka.brokers, error.reason),
                &error.fix,
            );
            report.add("kafka topics", Verdict::Skip, "the broker did not answer");
            return;
        }
        None => {}
    }
    let kafka = settings.kafka.clone();
    let listed = tokio::task::spawn_blocking(move || {
        use rdkafka::consumer::Consumer;
        let consumer = kafka::reader(&kafka, "hunter-doctor")?;
        let metadata = consumer.fetch_metadata(None, CHECK_TIMEOUT)?;
        let topics: BTreeMap<String, usize> = metadata
            .topics()
            .iter()
            .filter(|t| t.error().is_none())
            .map(|t| (t.name().to_owned(), t.partitions().len()))
            .collect();
        std::thread::spawn(move || drop(consumer));
        Ok::<_, rdkafka::error::KafkaError>(topics)
    })
    .await;
    let topics = match listed {
        Ok(Ok(topics)) => topics,
        Ok(Err(error)) => {
            report.fail(
                "kafka broker",
                format!("{}: {error}", settings.kafka.brokers),
                "check HUNTER_KAFKA_BROKERS and that the broker runs and is reachable from here",
            );
            report.add("kafka topics", Verdict::Skip, "the broker did not answer");
            return;
        }
        Err(error) => {
            report.fail(
                "kafka broker",
                format!("metadata task failed: {error}"),
                "run again",
            );
            report.add("kafka topics", Verdict::Skip, "the broker did not answer");
            return;
        }
    };
    report.add(
        "kafka broker",
        Verdict::Ok,
        format!("{} answered", settings.kafka.brokers),
    );
    let wanted = settings.kafka.topics().specs();
    let missing: Vec<&str> = wanted
        .iter()
        .filter(|spec| !topics.contains_key(&spec.name))
        .map(|spec| spec.name.as_str())
        .collect();
    if missing.is_empty() {
        report.add(
            "kafka topics",
            Verdict::Ok,
            format!("all {} present", wanted.len()),
        );
    } else {
        report.fail(
            "kafka topics",
            format!("missing: {}", missing.join(", ")),
            "run `hunter migrate` (creates the topics; check HUNTER_KAFKA_TOPIC_PREFIX)",
        );
    }
}

/// The Schema Registry answers `GET /subjects` with Hunter's credentials and trust, when one
/// is configured.
async fn registry(settings: &Settings, report: &mut Report) {
    let Some(url) = &settings.kafka.schema_registry_url else {
        report.add(
            "schema registry",
            Verdict::Skip,
            "none configured (records use Avro single-object encoding)",
        );
        return;
    };
    let registry = match hunter_core::codec::Registry::new(url, &settings.schema_registry) {
        Ok(registry) => registry,
        Err(error) => {
            report.fail(
                "schema registry",
                error,
                "point HUNTER_SCHEMA_REGISTRY_CA_LOCATION at a readable PEM file of CA certificates",
            );
            return;
        }
    };
    let result = tokio::time::timeout(CHECK_TIMEOUT, registry.check()).await;
    match result {
        Ok(Ok(())) => report.add(
            "schema registry",
            Verdict::Ok,
            format!(
                "{url} answered{}",
                if settings.schema_registry.username.is_some() {
                    " and took the credentials"
                } else {
                    ""
                }
            ),
        ),
        Ok(Err(error @ hunter_core::codec::CodecError::RegistryAuth { .. })) => report.fail(
            "schema registry",
            format!("{url}: {error}"),
            "set HUNTER_SCHEMA_REGISTRY_USERNAME and HUNTER_SCHEMA_REGISTRY_PASSWORD to an API key the registry accepts",
        ),
        Ok(Err(error @ hunter_core::codec::CodecError::RegistryTls { .. })) => report.fail(
            "schema registry",
            format!("{url}: {error}"),
            "set HUNTER_SCHEMA_REGISTRY_CA_LOCATION to the PEM file of the CA that signed the registry's certificate",
        ),
        Ok(Err(error)) => report.fail(
            "schema registry",
            format!("{url}: {error}"),
            "check HUNTER_SCHEMA_REGISTRY_URL and that the registry runs",
        ),
        Err(_) => report.fail(
            "schema registry",
            format!("{url}: no answer within {CHECK_TIMEOUT:?}"),
            "check HUNTER_SCHEMA_REGISTRY_URL and that the registry runs",
        ),
    }
}

/// ClickHouse answers and every migration is applied. Returns the connection when both hold.
async fn clickhouse(
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
async fn clickhouse_users(
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

/// The scheduler's last successful run per tenant (ClickHouse `sync_runs`), against the interval.
async fn last_run(
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
