//! The rights each of Hunter's ClickHouse users needs, as the statements a DBA runs when Hunter
//! does not own the server (`hunter migrate --print-grants`).
//!
//! Invariant: every statement the migrations run needs a privilege in [`WRITER_PRIVILEGES`]
//! (a unit test checks each one), so a new kind of migration statement cannot ship without its
//! grant. The reader needs `SELECT` and nothing else.
//!
//! The statements are for ClickHouse with SQL-driven access control (20.5 and later, ClickHouse
//! Cloud). Older servers (18.16) define users in `users.xml` only: the same rights are a profile
//! with `readonly` and `<allow_databases>` (docs/clickhouse.md, deploy/clickhouse/users.d/).

use crate::migrations::{MIGRATIONS, statements};

/// What the writer does on Hunter's database: `hunter migrate` (creates the database, tables
/// and views, adds columns, sets table settings, re-creates a view whose `SELECT *` must show
/// new columns, records migrations) and the sink (inserts).
pub const WRITER_PRIVILEGES: &[&str] = &[
    "CREATE TABLE",
    "CREATE VIEW",
    "DROP VIEW",
    "ALTER ADD COLUMN",
    "ALTER MODIFY SETTING",
    "INSERT",
    "SELECT",
];

/// The privilege a migration statement needs, `None` for one this module does not know.
pub fn privilege_for(statement: &str) -> Option<&'static str> {
    let upper = statement.trim().to_ascii_uppercase();
    let words: Vec<&str> = upper.split_whitespace().collect();
    match words.as_slice() {
        ["CREATE", "DATABASE", ..] => Some("CREATE DATABASE"),
        ["CREATE", "TABLE", ..] => Some("CREATE TABLE"),
        ["CREATE", "VIEW", ..] => Some("CREATE VIEW"),
        ["ALTER", "TABLE", _, "ADD", "COLUMN", ..] => Some("ALTER ADD COLUMN"),
        ["ALTER", "TABLE", _, "MODIFY", "SETTING", ..] => Some("ALTER MODIFY SETTING"),
        // 18.16 has no `DROP VIEW`: a view is dropped with `DROP TABLE`, which ClickHouse checks
        // as DROP VIEW. Only views the migrations create may be dropped; never a table.
        ["DROP", "TABLE", "IF", "EXISTS", name]
            if migration_views().iter().any(|view| view == name) =>
        {
            Some("DROP VIEW")
        }
        ["INSERT", ..] => Some("INSERT"),
        ["SELECT", ..] => Some("SELECT"),
        _ => None,
    }
}

/// The views the migrations create (upper-cased names, as [`privilege_for`] compares them).
fn migration_views() -> Vec<String> {
    MIGRATIONS
        .iter()
        .flat_map(|migration| statements(migration.sql))
        .filter_map(|statement| {
            let upper = statement.to_ascii_uppercase();
            let words: Vec<&str> = upper.split_whitespace().collect();
            match words.as_slice() {
                ["CREATE", "VIEW", "IF", "NOT", "EXISTS", name, ..] => Some((*name).to_owned()),
                _ => None,
            }
        })
        .collect()
}

/// A user name as an SQL identifier.
fn quoted(user: &str) -> String {
    format!("`{}`", user.replace('\\', "\\\\").replace('`', "\\`"))
}

/// The statements for `database`, the writer `writer` and the API's reader `reader` (the same
/// name when the deployment has one user: then only the writer's rights are printed, with a
/// note on splitting).
pub fn sql(database: &str, writer: &str, reader: &str) -> String {
    let w = quoted(writer);
    let r = quoted(reader);
    let mut out = String::new();
    out.push_str(&format!(
        "-- Hunter's ClickHouse users on database {database} (docs/clickhouse.md).\n\
         -- For ClickHouse 20.5 and later (SQL-driven access control, ClickHouse Cloud), run as an\n\
         -- administrator. ClickHouse 18.16 has no CREATE USER: define the users in users.xml\n\
         -- (deploy/clickhouse/users.d/hunter.xml shows how).\n\
         --\n\
         -- 1. The users, if they do not exist yet, with the passwords Hunter is given in\n\
         --    HUNTER_CLICKHOUSE_PASSWORD and HUNTER_CLICKHOUSE_READER_PASSWORD:\n\
         --    CREATE USER IF NOT EXISTS {w} IDENTIFIED WITH sha256_password BY '<writer password>';\n"
    ));
    if writer != reader {
        out.push_str(&format!(
            "--    CREATE USER IF NOT EXISTS {r} IDENTIFIED WITH sha256_password BY '<reader password>' SETTINGS readonly = 2;\n"
        ));
    }
    out.push_str(&format!(
        "--\n\
         -- 2. The writer (hunter migrate, the sink): creates the database, its tables and views,\n\
         --    adds columns, re-creates its views, inserts.\n\
         GRANT CREATE DATABASE ON {database}.* TO {w};\n\
         GRANT {} ON {database}.* TO {w};\n",
        WRITER_PRIVILEGES.join(", ")
    ));
    if writer == reader {
        out.push_str(
            "--\n\
             -- 3. The API reads as the writer (HUNTER_CLICKHOUSE_READER_USER is not set). Give it a\n\
             --    read-only user of its own: create it as above, then\n\
             --    GRANT SELECT ON <database>.* TO <reader>; and set HUNTER_CLICKHOUSE_READER_USER.\n",
        );
    } else {
        out.push_str(&format!(
            "--\n\
             -- 3. The API's reader: reads, never writes. readonly = 2 lets the API set its per-query\n\
             --    limits (max_execution_time, max_result_rows, max_rows_to_read); readonly = 1 would not.\n\
             GRANT SELECT ON {database}.* TO {r};\n"
        ));
    }
    out.push_str(&format!(
        "--\n\
         -- 4. Analysts and Grafana: a read-only user of their own, never Hunter's, e.g.\n\
         --    CREATE USER IF NOT EXISTS analyst IDENTIFIED WITH sha256_password BY '<password>' SETTINGS readonly = 2;\n\
         --    GRANT SELECT ON {database}.* TO analyst;\n"
    ));
    out
}

/// The tables the sink writes: every table the migrations create.
pub fn sink_tables() -> Vec<String> {
    let mut tables = Vec::new();
    for migration in MIGRATIONS {
        for statement in statements(migration.sql) {
            let words: Vec<&str> = statement.split_whitespace().collect();
            if let ["CREATE", "TABLE", "IF", "NOT", "EXISTS", name, ..] = words.as_slice() {
                let name = name.split('(').next().unwrap_or(name);
                tables.push(name.to_owned());
            }
        }
    }
    tables
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_migration_statement_is_granted_to_the_writer() {
        let mut seen = std::collections::BTreeSet::new();
        for migration in MIGRATIONS {
            for statement in statements(migration.sql) {
                let privilege = privilege_for(&statement).unwrap_or_else(|| {
                    panic!(
                        "{}: no known privilege for `{}`: add it to grants.rs",
                        migration.name,
                        statement.lines().next().unwrap_or_default()
                    )
                });
                assert!(
                    privilege == "CREATE DATABASE" || WRITER_PRIVILEGES.contains(&privilege),
                    "{}: {privilege} is not granted to the writer",
                    migration.name
                );
                seen.insert(privilege);
            }
        }
        // The bookkeeping `migrations::apply` does itself.
        for own in [
            "CREATE DATABASE IF NOT EXISTS hunter",
            "CREATE TABLE IF NOT EXISTS hunter_migrations (name String)",
            "INSERT INTO hunter_migrations FORMAT RowBinary",
            "SELECT name, checksum FROM hunter_migrations",
        ] {
            assert!(privilege_for(own).is_some(), "{own}");
        }
        // Dropping a table is never granted, only a view the migrations made.
        assert_eq!(privilege_for("DROP TABLE IF EXISTS leads"), None);
        assert_eq!(
            privilege_for("DROP TABLE IF EXISTS current_leads"),
            Some("DROP VIEW")
        );
        // Every privilege granted is used: nothing more than the migrations need.
        for privilege in WRITER_PRIVILEGES {
            assert!(
                seen.contains(privilege) || ["INSERT", "SELECT"].contains(privilege),
                "{privilege} is granted but no migration needs it"
            );
        }
    }

    #[test]
    fn the_statements_name_the_configured_users() {
        let text = sql("hunter", "hunter_writer", "hunter_api");
        assert!(text.contains("GRANT CREATE DATABASE ON hunter.* TO `hunter_writer`;"));
        assert!(text.contains(
            "GRANT CREATE TABLE, CREATE VIEW, DROP VIEW, ALTER ADD COLUMN, ALTER MODIFY SETTING, INSERT, SELECT ON hunter.* TO `hunter_writer`;"
        ));
        assert!(text.contains("GRANT SELECT ON hunter.* TO `hunter_api`;"));
        // Only GRANTs are statements; the rest is commentary a DBA adapts.
        for line in text.lines().filter(|l| !l.starts_with("--")) {
            assert!(line.starts_with("GRANT ") && line.ends_with(';'), "{line}");
        }
        let single = sql("leads_db", "default", "default");
        assert!(single.contains("HUNTER_CLICKHOUSE_READER_USER is not set"));
        assert!(!single.contains("GRANT SELECT ON leads_db.* TO `default`;"));
        assert_eq!(quoted("we`ird"), "`we\\`ird`");
    }

    #[test]
    fn the_sink_tables_are_the_created_tables() {
        assert_eq!(
            sink_tables(),
            [
                "leads",
                "lead_history",
                "sync_runs",
                "dlq",
                "referrals",
                "dlq_replays",
                "referral_actions"
            ]
        );
    }
}
