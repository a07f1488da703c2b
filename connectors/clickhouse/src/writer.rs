//! Connecting to ClickHouse and writing batches.

use clickhouse::Client;
use hunter_core::config::ClickHouseSettings;

use crate::Error;
use crate::rows::LeadRow;

/// A client for Hunter's database, set up for the server it talks to.
#[derive(Clone)]
pub struct Writer {
    client: Client,
    /// The server without a database selected (for `CREATE DATABASE`).
    server: Client,
}

impl Writer {
    /// Connects and asks the server its version: row-type validation needs
    /// `RowBinaryWithNamesAndTypes`, which ClickHouse 18.16 lacks, so it is on only for servers
    /// that have it (22.x and later).
    pub async fn connect(settings: &ClickHouseSettings) -> Result<Self, Error> {
        let mut server = Client::default()
            .with_url(settings.url.as_str().trim_end_matches('/'))
            .with_validation(false);
        if let Some(user) = &settings.user {
            server = server.with_user(user);
        }
        if let Some(password) = &settings.password {
            server = server.with_password(password.expose());
        }
        let version: String = server.query("SELECT version()").fetch_one().await?;
        let major: u32 = version
            .split('.')
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or(0);
        let server = server.with_validation(major >= 22);
        tracing::debug!(%version, validation = major >= 22, "connected to clickhouse");
        Ok(Writer {
            client: server.clone().with_database(&settings.database),
            server,
        })
    }

    /// The client with Hunter's database selected, for queries.
    pub fn client(&self) -> &Client {
        &self.client
    }

    pub async fn migrate(&self, database: &str) -> Result<crate::migrations::Report, Error> {
        crate::migrations::apply(&self.server, database).await
    }

    /// Inserts one batch in one INSERT; `Ok` means ClickHouse acknowledged every row.
    pub async fn insert_leads(&self, rows: &[LeadRow]) -> Result<(), Error> {
        self.insert("leads", rows).await
    }

    /// Inserts `rows` into `table` in one INSERT naming the row type's columns; `Ok` means
    /// ClickHouse acknowledged every row.
    pub async fn insert<T: clickhouse::RowOwned + clickhouse::RowWrite>(
        &self,
        table: &str,
        rows: &[T],
    ) -> Result<(), Error> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut insert = self.client.insert::<T>(table).await?;
        for row in rows {
            insert.write(row).await?;
        }
        insert.end().await?;
        Ok(())
    }
}
