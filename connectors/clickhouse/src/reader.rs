//! The API's connection to ClickHouse: the reader's login, and limits on every question so that
//! a heavy or hostile one stops on the server when the API gives up on it.
//!
//! Every query carries (as HTTP settings, which ClickHouse 18.16 and current releases both take):
//!
//! - `readonly=2`: the query cannot write, whatever the user may do (the writer, when no reader
//!   is configured); 2 rather than 1 because 1 also forbids the settings below.
//! - `max_execution_time` = the API's request timeout, with `timeout_overflow_mode=throw`: the
//!   server stops the query when the API answers 503 for it.
//! - `max_result_rows` = [`MAX_RESULT_ROWS`] with `result_overflow_mode=throw`: far above the
//!   API's largest answer (a page is at most 501 rows), so only a runaway query meets it.
//! - `max_rows_to_read` = `HUNTER_CLICKHOUSE_READER_MAX_ROWS_TO_READ` (when not 0) with
//!   `read_overflow_mode=throw`.
//! - `cancel_http_readonly_queries_on_client_close=1` where the server knows it (19.x and
//!   later; 18.16 refuses unknown settings, so it is asked first): a query whose caller hung up
//!   is cancelled at once.
//!
//! A reader whose profile has `readonly=1` may not change any setting: then nothing is sent,
//! the profile's own limits are all there is, and the API warns at start (fix: `readonly=2`).
//! A question that meets a limit fails with one of [`LIMIT_CODES`]; the API answers it with a
//! clean JSON error rather than a hang.

use std::time::Duration;

use clickhouse::Client;
use hunter_core::config::ClickHouseSettings;

use crate::Error;
use crate::connection::{self, Login};
use crate::writer::ServerVersion;

/// `max_result_rows` of every API query.
pub const MAX_RESULT_ROWS: u64 = 100_000;

/// Server error codes of a query stopped by a limit: TOO_MANY_ROWS, TIMEOUT_EXCEEDED, TOO_SLOW,
/// MEMORY_LIMIT_EXCEEDED, TOO_MANY_BYTES, TOO_MANY_ROWS_OR_BYTES.
pub const LIMIT_CODES: &[u32] = &[158, 159, 160, 241, 307, 396];

/// Whether a query's error text says a limit stopped it.
pub fn is_limit(text: &str) -> bool {
    connection::server_code(text).is_some_and(|code| LIMIT_CODES.contains(&code))
}

/// What the API's queries are bounded by.
#[derive(Debug, Clone, Copy)]
pub struct QueryLimits {
    /// The API's request timeout: the server stops at the same time the API gives up.
    pub max_execution_time: Duration,
    /// 0: the reader's profile decides.
    pub max_rows_to_read: u64,
    pub max_result_rows: u64,
}

impl QueryLimits {
    /// The limits for `request_timeout` and the settings' rows-to-read bound.
    pub fn new(settings: &ClickHouseSettings, request_timeout: Duration) -> Self {
        QueryLimits {
            max_execution_time: request_timeout,
            max_rows_to_read: settings.reader_max_rows_to_read,
            max_result_rows: MAX_RESULT_ROWS,
        }
    }

    /// The settings sent with every query; `cancel` when the server knows
    /// `cancel_http_readonly_queries_on_client_close`.
    pub fn settings(&self, cancel: bool) -> Vec<(&'static str, String)> {
        let seconds = self.max_execution_time.as_secs_f64().ceil().max(1.0) as u64;
        let mut out = vec![
            ("readonly", "2".to_owned()),
            ("max_execution_time", seconds.to_string()),
            ("timeout_overflow_mode", "throw".to_owned()),
            ("max_result_rows", self.max_result_rows.to_string()),
            ("result_overflow_mode", "throw".to_owned()),
        ];
        if self.max_rows_to_read > 0 {
            out.push(("max_rows_to_read", self.max_rows_to_read.to_string()));
            out.push(("read_overflow_mode", "throw".to_owned()));
        }
        if cancel {
            out.push((
                "cancel_http_readonly_queries_on_client_close",
                "1".to_owned(),
            ));
        }
        out
    }
}

/// How the limits reach the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Limits {
    /// Sent with every query.
    Sent(Vec<(&'static str, String)>),
    /// The reader's profile has `readonly=1`: it may change no setting, so its profile's limits
    /// are the only ones.
    ProfileOnly,
}

/// The API's client: the reader, Hunter's database, the limits.
#[derive(Clone)]
pub struct Reader {
    client: Client,
    version: ServerVersion,
    user: String,
    fallback: bool,
    limits: Limits,
}

impl Reader {
    /// Connects as the reader (the writer when none is configured, with a warning), learns the
    /// server's version and the user's `readonly`, and sets the limits up accordingly.
    pub async fn connect(
        settings: &ClickHouseSettings,
        limits: QueryLimits,
    ) -> Result<Self, Error> {
        let login = Login::reader(settings);
        if login.fallback {
            tracing::warn!(
                user = login.user_name(),
                "HUNTER_CLICKHOUSE_READER_USER is not set: the API reads ClickHouse as the writer; \
                 give it a read-only user of its own (docs/clickhouse.md)"
            );
        }
        let base = connection::client(settings, &login)?;
        let explain = |error| connection::explain(error, settings, &login);
        let text: String =
            connection::first_answer(base.query("SELECT version()").fetch_one(), settings, &login)
                .await?;
        let version = ServerVersion::parse(&text).unwrap_or(ServerVersion { major: 0, minor: 0 });
        let known: Vec<(String, String)> = base
            .query(
                "SELECT name, value FROM system.settings \
                 WHERE name IN ('readonly', 'cancel_http_readonly_queries_on_client_close')",
            )
            .fetch_all()
            .await
            .map_err(explain)?;
        let readonly = known
            .iter()
            .find(|(name, _)| name == "readonly")
            .map(|(_, value)| value.as_str());
        let cancel = known
            .iter()
            .any(|(name, _)| name == "cancel_http_readonly_queries_on_client_close");
        let mut client = base
            .with_validation(version >= ServerVersion::ROW_VALIDATION)
            .with_database(&settings.database);
        let limits = if readonly == Some("1") {
            tracing::warn!(
                user = login.user_name(),
                "the API's clickhouse user has readonly=1, which forbids the API's per-query limits \
                 (max_execution_time, max_result_rows, max_rows_to_read); only its profile's limits \
                 apply: give it readonly=2 (docs/clickhouse.md)"
            );
            Limits::ProfileOnly
        } else {
            let sent = limits.settings(cancel);
            for (name, value) in &sent {
                client = client.with_setting(*name, value.as_str());
            }
            Limits::Sent(sent)
        };
        tracing::info!(
            version = %text,
            user = login.user_name(),
            limits = ?limits,
            "api connected to clickhouse"
        );
        Ok(Reader {
            client,
            version,
            user: login.user_name().to_owned(),
            fallback: login.fallback,
            limits,
        })
    }

    /// The client with Hunter's database and the limits, for the API's queries.
    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn version(&self) -> ServerVersion {
        self.version
    }

    /// The user the API reads as.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// Whether that is the writer, for want of a reader.
    pub fn is_fallback(&self) -> bool {
        self.fallback
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_become_settings() {
        let limits = QueryLimits {
            max_execution_time: Duration::from_millis(29_500),
            max_rows_to_read: 0,
            max_result_rows: MAX_RESULT_ROWS,
        };
        let settings = limits.settings(false);
        let get = |s: &[(&str, String)], name: &str| {
            s.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone())
        };
        assert_eq!(get(&settings, "readonly").as_deref(), Some("2"));
        assert_eq!(get(&settings, "max_execution_time").as_deref(), Some("30"));
        assert_eq!(get(&settings, "max_result_rows").as_deref(), Some("100000"));
        assert_eq!(
            get(&settings, "result_overflow_mode").as_deref(),
            Some("throw")
        );
        assert_eq!(get(&settings, "max_rows_to_read"), None);
        assert_eq!(
            get(&settings, "cancel_http_readonly_queries_on_client_close"),
            None
        );
        let settings = QueryLimits {
            max_rows_to_read: 1_000,
            ..limits
        }
        .settings(true);
        assert_eq!(get(&settings, "max_rows_to_read").as_deref(), Some("1000"));
        assert_eq!(
            get(&settings, "read_overflow_mode").as_deref(),
            Some("throw")
        );
        assert_eq!(
            get(&settings, "cancel_http_readonly_queries_on_client_close").as_deref(),
            Some("1")
        );
    }

    #[test]
    fn limit_errors_are_recognised() {
        assert!(is_limit(
            "Code: 158, e.displayText() = DB::Exception: Limit for rows to read exceeded"
        ));
        assert!(is_limit(
            "Code: 396. DB::Exception: Limit for result exceeded. (TOO_MANY_ROWS_OR_BYTES)"
        ));
        assert!(is_limit(
            "Code: 159. DB::Exception: Timeout exceeded: elapsed 30.1 seconds. (TIMEOUT_EXCEEDED)"
        ));
        assert!(!is_limit("Code: 60. DB::Exception: Table doesn't exist"));
        assert!(!is_limit("network error: connection refused"));
    }
}
