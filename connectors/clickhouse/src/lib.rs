//! ClickHouse connector: the analysts' tables, their migrations and the batched writer.
//!
//! # Layout
//!
//! - [`rows`]: one Rust row type per table, and the mapping from Hunter's records.
//! - [`migrations`]: applies `schemas/clickhouse/*.sql` in order, once each.
//! - [`writer`]: the writer's connection ([`writer::ReadWriter`]): connects (detecting what the
//!   server supports), migrates, inserts batches, and answers `hunter doctor`'s questions.
//! - [`connection`]: the HTTP(S) client, TLS trust, the user per use, and failures that name
//!   the setting to fix.
//! - [`reader`]: the API's connection, with limits on every question.
//! - [`grants`]: the rights each user needs, as the SQL a DBA runs.
//!
//! The connector never touches Kafka offsets: the sink's run loop stores an offset only after
//! [`writer::ReadWriter::insert`] returned `Ok`, which is ClickHouse's acknowledgement.

pub mod connection;
pub mod grants;
pub mod migrations;
pub mod reader;
pub mod rows;
pub mod writer;

/// The row traits, for code generic over the tables (`Row::COLUMN_NAMES` names a table's
/// inserted columns).
pub use clickhouse::{Row, RowOwned, RowWrite};

/// A failure of the connector. Whether to retry is the caller's call: the sink retries every
/// failed insert (it stalls its stream until the batch is in), `hunter migrate` and `doctor`
/// report and stop; [`Error::class`] and [`Error::failure`] say what went wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("clickhouse: {0}")]
    ClickHouse(#[from] clickhouse::error::Error),
    #[error("migration {name}: {message}")]
    Migration { name: String, message: String },
    /// The server cannot be used as configured; the message names the setting to fix.
    #[error("{message}")]
    Connect {
        failure: connection::Failure,
        message: String,
    },
    /// The user lacks a right for a statement (`hunter migrate --print-grants` says which).
    #[error("clickhouse user {user:?} may not run `{statement}` ({detail})")]
    Rights {
        user: String,
        statement: String,
        detail: String,
    },
}

impl Error {
    /// A bounded class for metrics.
    pub fn class(&self) -> &'static str {
        match self {
            Error::ClickHouse(clickhouse::error::Error::TimedOut) => "timeout",
            Error::ClickHouse(error @ clickhouse::error::Error::Network(_)) => {
                connection::classify(error).class()
            }
            Error::ClickHouse(error @ clickhouse::error::Error::BadResponse(_)) => {
                connection::classify(error).class()
            }
            Error::ClickHouse(_) => "other",
            Error::Migration { .. } => "migration",
            Error::Connect { failure, .. } => failure.class(),
            Error::Rights { .. } => "access",
        }
    }

    /// Why it failed, as far as the fix goes.
    pub fn failure(&self) -> connection::Failure {
        match self {
            Error::ClickHouse(error) => connection::classify(error),
            Error::Connect { failure, .. } => *failure,
            Error::Rights { .. } => connection::Failure::AccessDenied,
            Error::Migration { .. } => connection::Failure::Server,
        }
    }
}
