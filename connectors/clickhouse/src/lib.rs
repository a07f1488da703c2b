//! ClickHouse connector: the analysts' tables, their migrations and the batched writer.
//!
//! # Layout
//!
//! - [`rows`]: one Rust row type per table, and the mapping from Hunter's records.
//! - [`migrations`]: applies `schemas/clickhouse/*.sql` in order, once each.
//! - [`writer`]: connects (detecting what the server supports) and inserts batches.
//!
//! The connector never touches Kafka offsets: the sink's run loop stores an offset only after
//! [`writer::Writer::insert_leads`] returned `Ok`, which is ClickHouse's acknowledgement.

pub mod migrations;
pub mod rows;
pub mod writer;

/// The row traits, for code generic over the tables (`Row::COLUMN_NAMES` names a table's
/// inserted columns).
pub use clickhouse::{Row, RowOwned, RowWrite};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("clickhouse: {0}")]
    ClickHouse(#[from] clickhouse::error::Error),
    #[error("migration {name}: {message}")]
    Migration { name: String, message: String },
}

impl Error {
    /// Network trouble and server overload are worth retrying; a bad statement is not.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::ClickHouse(error) => {
                matches!(
                    error,
                    clickhouse::error::Error::Network(_) | clickhouse::error::Error::TimedOut
                ) || error.to_string().contains("TOO_MANY")
            }
            Error::Migration { .. } => false,
        }
    }

    /// A bounded class for metrics.
    pub fn class(&self) -> &'static str {
        match self {
            Error::ClickHouse(clickhouse::error::Error::Network(_)) => "network",
            Error::ClickHouse(clickhouse::error::Error::TimedOut) => "timeout",
            Error::ClickHouse(clickhouse::error::Error::BadResponse(_)) => "server",
            Error::ClickHouse(_) => "other",
            Error::Migration { .. } => "migration",
        }
    }
}
