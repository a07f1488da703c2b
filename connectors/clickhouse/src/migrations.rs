//! Applies `schemas/clickhouse/*.sql` in file-name order, each once.
//!
//! Invariants: the database is created if missing; a migration is recorded in
//! `hunter_migrations` only after all its statements succeeded; every statement is itself
//! idempotent (`IF NOT EXISTS`), so a crash between the two steps is repaired by running
//! `hunter migrate` again. A migration whose text changed after it was applied is reported,
//! not re-run. A migration that needs a newer server says so in a line
//! `-- requires ClickHouse >= MAJOR.MINOR`; on an older server it is left pending (not run, not
//! recorded), so the first `hunter migrate` against a server that is new enough applies it.

use clickhouse::{Client, Row};
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::writer::ServerVersion;

/// One migration file, embedded at build time so the binary carries its schema.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub name: &'static str,
    pub sql: &'static str,
}

/// Every migration, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        name: "0001_leads.sql",
        sql: include_str!("../../../schemas/clickhouse/0001_leads.sql"),
    },
    Migration {
        name: "0002_lead_enrichment.sql",
        sql: include_str!("../../../schemas/clickhouse/0002_lead_enrichment.sql"),
    },
    Migration {
        name: "0003_lead_history.sql",
        sql: include_str!("../../../schemas/clickhouse/0003_lead_history.sql"),
    },
    Migration {
        name: "0004_sync_runs.sql",
        sql: include_str!("../../../schemas/clickhouse/0004_sync_runs.sql"),
    },
    Migration {
        name: "0005_dlq.sql",
        sql: include_str!("../../../schemas/clickhouse/0005_dlq.sql"),
    },
    Migration {
        name: "0006_views.sql",
        sql: include_str!("../../../schemas/clickhouse/0006_views.sql"),
    },
    Migration {
        name: "0007_referrals.sql",
        sql: include_str!("../../../schemas/clickhouse/0007_referrals.sql"),
    },
    Migration {
        name: "0008_insert_deduplication.sql",
        sql: include_str!("../../../schemas/clickhouse/0008_insert_deduplication.sql"),
    },
    // Dead-letter re-drive (`hunter dlq replay`): replay columns on `dlq`, table `dlq_replays`.
    Migration {
        name: "0009_dlq_replays.sql",
        sql: include_str!("../../../schemas/clickhouse/0009_dlq_replays.sql"),
    },
    // Write-back (docs/writeback.md): the `referral_actions` audit table.
    Migration {
        name: "0010_referral_actions.sql",
        sql: include_str!("../../../schemas/clickhouse/0010_referral_actions.sql"),
    },
    // Backfill progress (`hunter backfill`): `sync_runs.estimate` and `since`.
    Migration {
        name: "0011_sync_run_progress.sql",
        sql: include_str!("../../../schemas/clickhouse/0011_sync_run_progress.sql"),
    },
    // Expiry and the referral's dates on `leads` and `lead_history` (lead 0004, docs/leads.md).
    Migration {
        name: "0012_lead_expiry.sql",
        sql: include_str!("../../../schemas/clickhouse/0012_lead_expiry.sql"),
    },
];

impl Migration {
    /// The server version this migration needs, from its `-- requires ClickHouse >= X.Y` line.
    pub fn requires(&self) -> Option<ServerVersion> {
        required_version(self.sql)
    }
}

/// The version named by a `-- requires ClickHouse >= X.Y` comment line, if the text has one.
pub fn required_version(sql: &str) -> Option<ServerVersion> {
    sql.lines().find_map(|line| {
        let rest = line.trim().strip_prefix("--")?.trim();
        let rest = rest.strip_prefix("requires ClickHouse >=")?;
        ServerVersion::parse(rest)
    })
}

/// An `ADD COLUMN` that failed because the column is there already (a migration interrupted
/// after some of its statements): done, not an error. 18.16 has no `IF NOT EXISTS` for it.
fn already_added(statement: &str, error: &clickhouse::error::Error) -> bool {
    let text = error.to_string();
    statement.to_ascii_uppercase().contains("ADD COLUMN")
        && (text.contains("already exists")
            || text.contains("DUPLICATE_COLUMN")
            || text.contains("Code: 15"))
}

#[derive(Debug, Row, Serialize, Deserialize)]
struct AppliedRow {
    name: String,
    checksum: String,
}

/// What `apply` did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub applied: Vec<String>,
    pub already_applied: Vec<String>,
    /// Applied earlier with different text (the file was edited after release).
    pub changed: Vec<String>,
    /// Pending because they need a newer server than this one.
    pub waiting: Vec<String>,
}

/// Splits a file into statements: `;` at the end of a line ends one; `--` lines are comments.
pub fn statements(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in sql.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("--") || trimmed.is_empty() {
            continue;
        }
        current.push_str(line);
        current.push('\n');
        if trimmed.ends_with(';') {
            let statement = current.trim().trim_end_matches(';').trim().to_owned();
            if !statement.is_empty() {
                out.push(statement);
            }
            current.clear();
        }
    }
    if !current.trim().is_empty() {
        out.push(current.trim().to_owned());
    }
    out
}

fn checksum(sql: &str) -> String {
    format!("{:016x}", hunter_core::records::stable_hash(sql.as_bytes()))
}

/// The bookkeeping table, created before the first migration.
pub const MIGRATIONS_TABLE_DDL: &str = "CREATE TABLE IF NOT EXISTS hunter_migrations (name String, checksum String, \
     applied_at DateTime('UTC') DEFAULT now()) ENGINE = MergeTree ORDER BY name";

/// Creates `database` and applies every pending migration that `version` supports. `server` has
/// no database set. A statement that `user` may not run stops it with [`Error::Rights`] naming
/// the statement (what ran before stays: every statement is idempotent).
pub async fn apply(
    server: &Client,
    database: &str,
    version: ServerVersion,
    user: &str,
) -> Result<Report, Error> {
    let rights = |statement: &str| {
        let statement = statement.to_owned();
        move |error| crate::writer::rights_error(user, &statement, error)
    };
    let create_database = format!("CREATE DATABASE IF NOT EXISTS {database}");
    server
        .query(&create_database)
        .execute()
        .await
        .map_err(rights(&create_database))?;
    let client = server.clone().with_database(database);
    client
        .query(MIGRATIONS_TABLE_DDL)
        .execute()
        .await
        .map_err(rights(MIGRATIONS_TABLE_DDL))?;
    let applied: Vec<AppliedRow> = client
        .query("SELECT name, checksum FROM hunter_migrations ORDER BY name")
        .fetch_all()
        .await
        .map_err(rights("SELECT name, checksum FROM hunter_migrations"))?;
    let mut report = Report::default();
    for migration in MIGRATIONS {
        let sum = checksum(migration.sql);
        if let Some(row) = applied.iter().find(|row| row.name == migration.name) {
            if row.checksum == sum {
                report.already_applied.push(migration.name.to_owned());
            } else {
                tracing::warn!(
                    migration = migration.name,
                    "applied migration was edited afterwards; not re-running it"
                );
                report.changed.push(migration.name.to_owned());
            }
            continue;
        }
        if let Some(required) = migration.requires().filter(|required| version < *required) {
            tracing::info!(
                migration = migration.name,
                %required,
                server = %version,
                "migration needs a newer clickhouse; left pending"
            );
            report.waiting.push(migration.name.to_owned());
            continue;
        }
        for statement in statements(migration.sql) {
            match client.query(&statement).execute().await {
                Ok(()) => {}
                Err(error) if already_added(&statement, &error) => {
                    tracing::info!(migration = migration.name, %error, "column already present");
                }
                Err(error) => {
                    return Err(match crate::writer::rights_error(user, &statement, error) {
                        Error::ClickHouse(error) => Error::Migration {
                            name: migration.name.to_owned(),
                            message: error.to_string(),
                        },
                        rights => rights,
                    });
                }
            }
        }
        let record = "INSERT INTO hunter_migrations";
        let mut insert = client
            .insert::<AppliedRow>("hunter_migrations")
            .await
            .map_err(rights(record))?;
        insert
            .write(&AppliedRow {
                name: migration.name.to_owned(),
                checksum: sum,
            })
            .await
            .map_err(rights(record))?;
        insert.end().await.map_err(rights(record))?;
        tracing::info!(migration = migration.name, database, "migration applied");
        report.applied.push(migration.name.to_owned());
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_split_on_line_ending_semicolons() {
        let sql = "-- comment\nCREATE TABLE a (x String);\n\nALTER TABLE a ADD COLUMN y String DEFAULT ';';\n";
        assert_eq!(
            statements(sql),
            vec![
                "CREATE TABLE a (x String)",
                "ALTER TABLE a ADD COLUMN y String DEFAULT ';'"
            ]
        );
    }

    #[test]
    fn every_migration_is_listed_in_order() {
        let names: Vec<_> = MIGRATIONS.iter().map(|m| m.name).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas/clickhouse");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        files.sort();
        assert_eq!(files, names, "every .sql file is embedded in MIGRATIONS");
    }

    #[test]
    fn a_migration_names_the_server_it_needs() {
        let v = |major, minor| Some(ServerVersion { major, minor });
        assert_eq!(
            required_version("-- requires ClickHouse >= 22.2\nALTER TABLE x;"),
            v(22, 2)
        );
        assert_eq!(
            required_version("-- a comment\n  --   requires ClickHouse >= 23.10\nSELECT 1;"),
            v(23, 10)
        );
        assert_eq!(required_version("CREATE TABLE x (a String);"), None);
        assert_eq!(required_version("-- requires ClickHouse >= soon\n"), None);
        let dedup = MIGRATIONS
            .iter()
            .find(|m| m.name == "0008_insert_deduplication.sql")
            .unwrap();
        assert_eq!(
            dedup.requires(),
            Some(ServerVersion::INSERT_DEDUPLICATION_TOKEN)
        );
        // Everything else runs on 18.16.
        for migration in MIGRATIONS.iter().filter(|m| m.name != dedup.name) {
            assert_eq!(migration.requires(), None, "{}", migration.name);
        }
    }
}
