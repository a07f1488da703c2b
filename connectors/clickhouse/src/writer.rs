//! Connecting to ClickHouse and writing batches.

use clickhouse::Client;
use hunter_core::config::ClickHouseSettings;

use crate::Error;
use crate::connection::{self, Login};

/// A server's `major.minor` version, for what it supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServerVersion {
    pub major: u32,
    pub minor: u32,
}

impl ServerVersion {
    /// `insert_deduplication_token` (and with it deduplication of non-replicated MergeTree
    /// tables by a caller's token) arrived in ClickHouse 22.2.
    pub const INSERT_DEDUPLICATION_TOKEN: ServerVersion = ServerVersion {
        major: 22,
        minor: 2,
    };
    /// Row-type validation needs `RowBinaryWithNamesAndTypes`, which ClickHouse 18.16 lacks.
    pub const ROW_VALIDATION: ServerVersion = ServerVersion {
        major: 22,
        minor: 0,
    };

    /// Parses `SELECT version()` (`18.16.1`, `26.9.2.1`) or `22.2`; `None` for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.trim().split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        Some(ServerVersion { major, minor })
    }
}

impl std::fmt::Display for ServerVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// The writer's connection to Hunter's database (it logs in as `HUNTER_CLICKHOUSE_USER`), set
/// up for the server it talks to. It both writes (migrations, the sink's inserts, the rights
/// probes) and reads (`hunter doctor`'s questions, through [`ReadWriter::client`]); the API
/// reads through [`crate::reader::Reader`] instead, with limits and no right to write.
#[derive(Clone)]
pub struct ReadWriter {
    client: Client,
    /// The server without a database selected (for `CREATE DATABASE`).
    server: Client,
    /// What the server is, for migrations that need a newer one.
    version: ServerVersion,
    /// Who it logs in as, for messages.
    user: String,
}

/// An insert into `table` that writes nothing: it still needs the right to insert (18.16 checks
/// `readonly` and the database, RBAC the INSERT grant), so it tells whether a user has it.
pub fn probe_insert(table: &str) -> String {
    format!("INSERT INTO {table} SELECT * FROM {table} WHERE 0")
}

/// A refusal for lack of a right as [`Error::Rights`], anything else as it is.
pub fn rights_error(user: &str, statement: &str, error: clickhouse::error::Error) -> Error {
    if connection::classify(&error) == connection::Failure::AccessDenied {
        Error::Rights {
            user: user.to_owned(),
            statement: statement
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned(),
            detail: connection::chain(&error),
        }
    } else {
        Error::ClickHouse(error)
    }
}

impl ReadWriter {
    /// Connects and asks the server its version: row-type validation needs
    /// `RowBinaryWithNamesAndTypes`, which ClickHouse 18.16 lacks, so it is on only for servers
    /// that have it (22.x and later); insert deduplication tokens are sent only to servers that
    /// know the setting (22.2 and later).
    ///
    /// It logs in as the writer (`HUNTER_CLICKHOUSE_USER`); a failure names the setting to fix
    /// (see [`crate::connection`]).
    pub async fn connect(settings: &ClickHouseSettings) -> Result<Self, Error> {
        let login = Login::writer(settings);
        let server = connection::client(settings, &login)?;
        let text: String = connection::first_answer(
            server.query("SELECT version()").fetch_one(),
            settings,
            &login,
        )
        .await?;
        // An unreadable version is taken as the oldest: nothing optional is used.
        let version = ServerVersion::parse(&text).unwrap_or(ServerVersion { major: 0, minor: 0 });
        let validation = version >= ServerVersion::ROW_VALIDATION;
        let server = server.with_validation(validation);
        tracing::debug!(
            version = %text,
            validation,
            deduplication_tokens = version >= ServerVersion::INSERT_DEDUPLICATION_TOKEN,
            "connected to clickhouse"
        );
        Ok(ReadWriter {
            client: server.clone().with_database(&settings.database),
            server,
            version,
            user: login.user_name().to_owned(),
        })
    }

    /// The user this writer logs in as.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// Whether this user may insert into every table the sink writes, by an
    /// `INSERT … SELECT … WHERE 0` each (no row, no part: nothing changes). The first refusal is
    /// returned as [`Error::Rights`]; other failures (a table not migrated yet) as they are.
    pub async fn probe_inserts(&self) -> Result<(), Error> {
        let statements = crate::grants::sink_tables()
            .iter()
            .map(|table| probe_insert(table))
            .collect();
        self.probe(statements).await
    }

    /// Whether this user may create tables in Hunter's database, by the `CREATE TABLE IF NOT
    /// EXISTS` of the migrations table: nothing changes when it exists, so call this only on a
    /// migrated database.
    pub async fn probe_create(&self) -> Result<(), Error> {
        self.probe(vec![crate::migrations::MIGRATIONS_TABLE_DDL.to_owned()])
            .await
    }

    async fn probe(&self, statements: Vec<String>) -> Result<(), Error> {
        for statement in statements {
            self.client
                .query(&statement)
                .execute()
                .await
                .map_err(|error| rights_error(&self.user, &statement, error))?;
        }
        Ok(())
    }

    /// The server's version.
    pub fn version(&self) -> ServerVersion {
        self.version
    }

    /// Whether inserts carry their deduplication token (see [`ReadWriter::insert`]).
    pub fn sends_deduplication_tokens(&self) -> bool {
        self.version >= ServerVersion::INSERT_DEDUPLICATION_TOKEN
    }

    /// The client with Hunter's database selected, for queries.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Applies the pending migrations; a statement this user may not run is [`Error::Rights`].
    pub async fn migrate(&self, database: &str) -> Result<crate::migrations::Report, Error> {
        crate::migrations::apply(&self.server, database, self.version, &self.user).await
    }

    /// Inserts `rows` into `table` in one INSERT naming the row type's columns; `Ok` means
    /// ClickHouse acknowledged every row.
    ///
    /// `deduplication_token` names the data (the same token must always mean the same rows).
    /// On ClickHouse 22.2 and later it goes along as `insert_deduplication_token`, and a table
    /// with `non_replicated_deduplication_window` (migration 0008) drops an insert whose token
    /// it saw among its last inserts: a retried batch whose first attempt did reach the table is
    /// not written twice. Older servers do not know the setting; there the table's
    /// ReplacingMergeTree collapses the replayed rows instead.
    pub async fn insert<T: clickhouse::RowOwned + clickhouse::RowWrite>(
        &self,
        table: &str,
        rows: &[T],
        deduplication_token: Option<&str>,
    ) -> Result<(), Error> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut insert = self.client.insert::<T>(table).await?;
        if let Some(token) = deduplication_token.filter(|_| self.sends_deduplication_tokens()) {
            insert = insert.with_setting("insert_deduplication_token", token);
        }
        for row in rows {
            insert.write(row).await?;
        }
        insert.end().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_versions_parse_and_order() {
        let v = |text| ServerVersion::parse(text).unwrap();
        assert_eq!(
            v("18.16.1"),
            ServerVersion {
                major: 18,
                minor: 16
            }
        );
        assert_eq!(
            v("26.9.2.1"),
            ServerVersion {
                major: 26,
                minor: 9
            }
        );
        assert_eq!(v("22.2"), ServerVersion::INSERT_DEDUPLICATION_TOKEN);
        assert!(v("18.16.1") < ServerVersion::INSERT_DEDUPLICATION_TOKEN);
        assert!(v("22.1.3.7") < ServerVersion::INSERT_DEDUPLICATION_TOKEN);
        assert!(v("22.2.1.1") >= ServerVersion::INSERT_DEDUPLICATION_TOKEN);
        assert!(v("22.10.1") >= ServerVersion::INSERT_DEDUPLICATION_TOKEN);
        assert!(v("22.1.3.7") >= ServerVersion::ROW_VALIDATION);
        assert!(v("21.12.1") < ServerVersion::ROW_VALIDATION);
        assert_eq!(ServerVersion::parse("unknown"), None);
        assert_eq!(ServerVersion::parse("23"), None);
        assert_eq!(ServerVersion::parse(""), None);
    }
}
