//! Connecting to ClickHouse: an HTTP(S) client, the user for each use, and failures that name
//! the setting to fix.
//!
//! # Users
//!
//! - The **writer** (`HUNTER_CLICKHOUSE_USER`, `HUNTER_CLICKHOUSE_PASSWORD`) runs `hunter migrate`
//!   and the sink: it creates the database and tables and inserts.
//! - The **reader** (`HUNTER_CLICKHOUSE_READER_USER`, `HUNTER_CLICKHOUSE_READER_PASSWORD`) runs
//!   the API's questions ([`crate::reader`]). Unset, the API reads as the writer (deployments
//!   from before the split keep working; the API warns at start).
//!
//! # TLS
//!
//! An `https://` URL is verified against the system's roots plus every certificate of the PEM
//! file `HUNTER_CLICKHOUSE_CA_LOCATION` (a private CA). Host names and IP addresses are checked
//! against the certificate; there is no switch to turn verification off.
//!
//! # Failure modes
//!
//! A connection that cannot work as configured is an [`Error::Connect`](crate::Error::Connect)
//! whose [`Failure`] says why and whose message names the setting to fix: an untrusted
//! certificate (`HUNTER_CLICKHOUSE_CA_LOCATION`), a refused login (the user and password settings
//! of that use), a missing right, or no answer within [`CONNECT_TIMEOUT`] (`HUNTER_CLICKHOUSE_URL`).
//! Only the last is worth retrying. Messages never carry a password (a password in the URL is
//! cut out of it).

use std::time::Duration;

use clickhouse::Client;
use hunter_core::config::{ClickHouseSettings, Secret};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::Error;

/// Longest a TCP connect may take: an address that drops packets fails within it, not never.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest the first answer of a new connection (its TLS handshake and `SELECT version()`) may
/// take: a server that accepts connections and never answers fails within it too.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// As the crate's default client: keepalive probes on idle sockets.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);
/// Below ClickHouse's `keep_alive_timeout` (3 s before 23.11, 10 s since), as the crate's
/// default client: a pooled connection is not reused just as the server closes it.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(2);

/// Who Hunter is on the server for one use, and the settings that say so.
#[derive(Clone)]
pub struct Login {
    pub user: Option<String>,
    pub password: Option<Secret>,
    /// The setting naming the user, for messages.
    pub user_setting: &'static str,
    /// The setting holding the password, for messages.
    pub password_setting: &'static str,
    /// This is the reader's use, but no reader is configured: the writer's login.
    pub fallback: bool,
}

impl Login {
    /// `hunter migrate` and the sink.
    pub fn writer(settings: &ClickHouseSettings) -> Self {
        Login {
            user: settings.user.clone(),
            password: settings.password.clone(),
            user_setting: "HUNTER_CLICKHOUSE_USER",
            password_setting: "HUNTER_CLICKHOUSE_PASSWORD",
            fallback: false,
        }
    }

    /// The API: the reader, or the writer when no reader is configured.
    pub fn reader(settings: &ClickHouseSettings) -> Self {
        match &settings.reader_user {
            Some(user) => Login {
                user: Some(user.clone()),
                password: settings.reader_password.clone(),
                user_setting: "HUNTER_CLICKHOUSE_READER_USER",
                password_setting: "HUNTER_CLICKHOUSE_READER_PASSWORD",
                fallback: false,
            },
            None => Login {
                fallback: true,
                ..Login::writer(settings)
            },
        }
    }

    /// The user's name as the server knows it (`default` when none is set).
    pub fn user_name(&self) -> &str {
        self.user.as_deref().unwrap_or("default")
    }
}

/// A client for `login` at the configured URL, without a database selected and without row
/// validation (the caller turns it on for servers that support it). Fails when the CA file
/// cannot be used.
pub fn client(settings: &ClickHouseSettings, login: &Login) -> Result<Client, Error> {
    let mut tls = native_tls::TlsConnector::builder();
    if let Some(path) = &settings.ca_location {
        let tls_error = |message: String| Error::Connect {
            failure: Failure::Tls,
            message: format!(
                "HUNTER_CLICKHOUSE_CA_LOCATION {}: {message}",
                path.display()
            ),
        };
        let pem = std::fs::read(path).map_err(|e| tls_error(format!("cannot read it: {e}")))?;
        let certificates = native_tls::Certificate::stack_from_pem(&pem)
            .map_err(|e| tls_error(format!("not PEM certificates: {e}")))?;
        if certificates.is_empty() {
            return Err(tls_error("holds no certificate".into()));
        }
        for certificate in certificates {
            tls.add_root_certificate(certificate);
        }
    }
    let tls = tls.build().map_err(|e| Error::Connect {
        failure: Failure::Tls,
        message: format!("cannot set up TLS for clickhouse: {e}"),
    })?;
    let mut http = HttpConnector::new();
    http.set_keepalive(Some(TCP_KEEPALIVE));
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    // The TLS layer takes https:// URLs; plain http:// passes through it.
    http.enforce_http(false);
    let https = hyper_tls::HttpsConnector::from((http, tokio_native_tls::TlsConnector::from(tls)));
    let hyper = HyperClient::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .build(https);
    let mut client = Client::with_http_client(hyper)
        .with_url(settings.url.as_str().trim_end_matches('/'))
        .with_validation(false);
    if let Some(user) = &login.user {
        client = client.with_user(user);
    }
    if let Some(password) = &login.password {
        client = client.with_password(password.expose());
    }
    Ok(client)
}

/// Why a connection or a statement failed, as far as the fix goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The TLS handshake failed: the certificate is not trusted (or not for this host).
    Tls,
    /// The server refused the user or password.
    Authentication,
    /// The user may not do this (readonly, no grant, a database it may not use).
    AccessDenied,
    /// No answer: nothing listens, the network drops packets, or the server went away.
    Unreachable,
    /// Anything else the server said.
    Server,
}

impl Failure {
    /// A bounded name for metrics and checks.
    pub fn class(self) -> &'static str {
        match self {
            Failure::Tls => "tls",
            Failure::Authentication => "authentication",
            Failure::AccessDenied => "access",
            Failure::Unreachable => "network",
            Failure::Server => "server",
        }
    }
}

/// The ClickHouse error code in a server's error text (`Code: 193, e.displayText() = …` on 18.16,
/// `Code: 516. DB::Exception: …` today).
pub fn server_code(text: &str) -> Option<u32> {
    let at = text.find("Code: ")? + "Code: ".len();
    let digits: String = text[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Codes for a refused login: UNKNOWN_USER, WRONG_PASSWORD, REQUIRED_PASSWORD,
/// IP_ADDRESS_NOT_ALLOWED (18.16) and AUTHENTICATION_FAILED (20.x and later).
const AUTHENTICATION_CODES: &[u32] = &[192, 193, 194, 195, 516];
/// Codes for a missing right: READONLY, DATABASE_ACCESS_DENIED (18.16), ACCESS_DENIED (RBAC).
const ACCESS_CODES: &[u32] = &[164, 291, 497];

/// Sorts a failure by what fixes it.
pub fn classify(error: &clickhouse::error::Error) -> Failure {
    use clickhouse::error::Error as E;
    match error {
        E::Network(_) | E::TimedOut => {
            if looks_like_tls(&chain(error)) {
                Failure::Tls
            } else {
                Failure::Unreachable
            }
        }
        E::BadResponse(text) => match server_code(text) {
            Some(code) if AUTHENTICATION_CODES.contains(&code) => Failure::Authentication,
            Some(code) if ACCESS_CODES.contains(&code) => Failure::AccessDenied,
            // A proxy or load balancer in front of ClickHouse answering for it.
            None if text.contains("401") || text.contains("Unauthorized") => {
                Failure::Authentication
            }
            _ => Failure::Server,
        },
        _ => Failure::Server,
    }
}

fn looks_like_tls(text: &str) -> bool {
    let text = text.to_ascii_lowercase();
    [
        "certificate",
        "ssl routines",
        "tls",
        "handshake",
        "self signed",
        "self-signed",
    ]
    .iter()
    .any(|marker| text.contains(marker))
}

/// An error and its sources in one line (hyper hides the TLS reason two levels down), cut to a
/// readable length.
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = vec![error.to_string()];
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !parts.iter().any(|part| part.contains(&text)) {
            parts.push(text);
        }
        source = cause.source();
    }
    let joined = parts.join(": ");
    let line = joined.lines().next().unwrap_or_default().trim();
    match line.char_indices().nth(400) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line.to_owned(),
    }
}

/// The URL without a password, for messages.
pub fn display_url(url: &url::Url) -> String {
    let mut shown = url.clone();
    if shown.password().is_some() {
        let _ = shown.set_password(Some("redacted"));
    }
    shown.to_string()
}

/// `query` (a connection's first question), failing as [`Failure::Unreachable`] naming the URL
/// setting when there is no answer within [`ANSWER_TIMEOUT`], and as [`explain`] says otherwise.
pub async fn first_answer<T>(
    query: impl std::future::Future<Output = clickhouse::error::Result<T>>,
    settings: &ClickHouseSettings,
    login: &Login,
) -> Result<T, Error> {
    match tokio::time::timeout(ANSWER_TIMEOUT, query).await {
        Ok(answer) => answer.map_err(|error| explain(error, settings, login)),
        Err(_) => Err(Error::Connect {
            failure: Failure::Unreachable,
            message: format!(
                "clickhouse at {} did not answer within {ANSWER_TIMEOUT:?}; check \
                 HUNTER_CLICKHOUSE_URL and that ClickHouse runs",
                display_url(&settings.url)
            ),
        }),
    }
}

/// The failure of a connection as configured, with the setting to fix named.
pub fn explain(
    error: clickhouse::error::Error,
    settings: &ClickHouseSettings,
    login: &Login,
) -> Error {
    let failure = classify(&error);
    let detail = chain(&error);
    let url = display_url(&settings.url);
    let user = login.user_name();
    let message = match failure {
        Failure::Tls => format!(
            "clickhouse at {url}: TLS failed, the server's certificate is not trusted ({detail}); \
             set HUNTER_CLICKHOUSE_CA_LOCATION to the PEM file of the CA that signed it{}",
            if settings.ca_location.is_some() {
                " (the file set now does not verify it, or the certificate does not name this host)"
            } else {
                ""
            }
        ),
        Failure::Authentication => format!(
            "clickhouse at {url} refused user {user:?} ({detail}); check {} and {}",
            login.user_setting, login.password_setting
        ),
        Failure::AccessDenied => format!(
            "clickhouse user {user:?} lacks a right ({detail}); a DBA grants it: \
             `hunter migrate --print-grants` prints the statements ({})",
            login.user_setting
        ),
        Failure::Unreachable => format!(
            "cannot reach clickhouse at {url} ({detail}); check HUNTER_CLICKHOUSE_URL and that \
             ClickHouse runs (an https port needs an https:// URL)"
        ),
        Failure::Server => format!("clickhouse at {url} as user {user:?}: {detail}"),
    };
    Error::Connect { failure, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_read_from_both_formats() {
        assert_eq!(
            server_code(
                "Code: 193, e.displayText() = DB::Exception: Wrong password for user writer"
            ),
            Some(193)
        );
        assert_eq!(
            server_code("bad response: Code: 516. DB::Exception: x: Authentication failed"),
            Some(516)
        );
        assert_eq!(server_code("no code here"), None);
        assert_eq!(server_code("Code: x"), None);
    }

    #[test]
    fn failures_are_sorted_by_their_fix() {
        use clickhouse::error::Error as E;
        let bad = |text: &str| E::BadResponse(text.to_owned());
        assert_eq!(
            classify(&bad(
                "Code: 193, e.displayText() = DB::Exception: Wrong password"
            )),
            Failure::Authentication
        );
        assert_eq!(
            classify(&bad(
                "Code: 516. DB::Exception: u: Authentication failed. (AUTHENTICATION_FAILED)"
            )),
            Failure::Authentication
        );
        assert_eq!(
            classify(&bad(
                "Code: 164, e.displayText() = DB::Exception: Cannot insert into table in readonly mode"
            )),
            Failure::AccessDenied
        );
        assert_eq!(
            classify(&bad(
                "Code: 497. DB::Exception: u: Not enough privileges. (ACCESS_DENIED)"
            )),
            Failure::AccessDenied
        );
        assert_eq!(
            classify(&bad("Code: 60. Table x doesn't exist")),
            Failure::Server
        );
        let io = std::io::Error::other("error:0A000086:SSL routines::certificate verify failed");
        assert_eq!(classify(&E::Network(Box::new(io))), Failure::Tls);
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(
            classify(&E::Network(Box::new(refused))),
            Failure::Unreachable
        );
    }

    #[test]
    fn urls_are_shown_without_their_password() {
        let url = url::Url::parse("https://writer:s3cret@ch.example:8443/").unwrap();
        let shown = display_url(&url);
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("writer:redacted@ch.example:8443"), "{shown}");
    }

    #[test]
    fn the_reader_falls_back_to_the_writer() {
        let mut settings = ClickHouseSettings {
            url: url::Url::parse("http://127.0.0.1:8123").unwrap(),
            database: "hunter".into(),
            user: Some("hunter_writer".into()),
            password: Some(Secret::new("w")),
            reader_user: None,
            reader_password: None,
            ca_location: None,
            reader_max_rows_to_read: 0,
        };
        let reader = Login::reader(&settings);
        assert!(reader.fallback);
        assert_eq!(reader.user_name(), "hunter_writer");
        assert_eq!(reader.password_setting, "HUNTER_CLICKHOUSE_PASSWORD");
        settings.reader_user = Some("hunter_api".into());
        let reader = Login::reader(&settings);
        assert!(!reader.fallback);
        assert_eq!(reader.user_name(), "hunter_api");
        assert_eq!(reader.password_setting, "HUNTER_CLICKHOUSE_READER_PASSWORD");
        assert!(reader.password.is_none());
    }
}
