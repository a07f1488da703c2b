//! ClickHouse as a partner runs it: reachable only over HTTPS (a throwaway CA and server
//! certificate made with `openssl`), with Hunter's users defined by the very users.d file the
//! compose stack mounts (`deploy/clickhouse/users.d/hunter.xml`: a writer, the API's reader and
//! an analysts' user) on the stack's ClickHouse 18.16, which has no SQL `CREATE USER`.
//!
//! - the pipeline (simulator → source → processor → sink → API) over HTTPS, `hunter migrate` and
//!   the sink as the writer, the API as the reader with its per-query limits (read back from
//!   ClickHouse's own query log);
//! - the reader and the analysts' user cannot write (direct attempts are refused);
//! - a question over the reader's limits gets a clean JSON error, not a hang;
//! - an untrusted certificate, wrong passwords, a plain-HTTP URL and a writer without rights
//!   fail at once, naming the setting to fix; `hunter doctor` says the same with the fix;
//! - the settings and statements Hunter sends exist and parse on current ClickHouse (chdb).
//!
//! The broker is the shared tansu (plaintext): Kafka security is tested elsewhere.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use hunter_e2e::{
    ClickHouse, Deployment, SecureClickHouse, TlsFiles, free_port, generated_referrals, run_hunter,
};

/// Generous bound for a one-shot command: a hang detector, not a timing assertion.
const ONE_SHOT: Duration = Duration::from_secs(90);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn number(value: &serde_json::Value) -> u64 {
    value
        .as_u64()
        .or_else(|| value.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_runs_over_https_with_a_writer_and_a_read_only_api() -> anyhow::Result<()> {
    const REFERRALS: u64 = 20;
    let mut deployment = Deployment::new(&generated_referrals(REFERRALS as usize, 41)?)?;
    let database = deployment.env["HUNTER_CLICKHOUSE_DATABASE"].clone();
    let clickhouse = SecureClickHouse::start(&database).await?;
    clickhouse.configure(&mut deployment)?;
    deployment.start_simulator(&[]).await?;
    deployment.login_and_migrate()?;
    deployment.start_role("all").await?;

    // Simulator → source → processor → sink (writer, HTTPS) → API (reader, HTTPS).
    let page = deployment
        .wait_for_leads_in_api(REFERRALS, 5, Duration::from_secs(120))
        .await?;
    assert_eq!(page["items"].as_array().map(Vec::len), Some(5), "{page}");
    let id = page["items"][0]["lead_id"].as_str().unwrap().to_owned();
    let (status, detail) = deployment.get(&format!("/api/v1/leads/{id}")).await?;
    assert_eq!(status, 200, "{detail}");
    let (status, runs) = deployment.get("/api/v1/sync/runs").await?;
    assert_eq!(status, 200, "{runs}");

    // ClickHouse's own query log (before the test's own queries below): the API asked as
    // hunter_api, with its limits; only the writer inserted.
    let admin = clickhouse.admin()?;
    admin.execute("SYSTEM FLUSH LOGS").await?;
    let logged = admin
        .rows(
            "SELECT user, query, Settings.Names AS names, Settings.Values AS values \
             FROM system.query_log WHERE type = 2 AND query LIKE '%leads%'",
        )
        .await?;
    let by = |user: &str| -> Vec<&serde_json::Value> {
        logged.iter().filter(|row| row["user"] == user).collect()
    };
    let api_queries: Vec<_> = by("hunter_api")
        .into_iter()
        .filter(|row| {
            row["query"]
                .as_str()
                .unwrap_or_default()
                .contains("FROM leads")
        })
        .collect();
    assert!(!api_queries.is_empty(), "no API query logged: {logged:?}");
    let settings_of = |row: &serde_json::Value| -> HashMap<String, String> {
        let names = row["names"].as_array().unwrap();
        let values = row["values"].as_array().unwrap();
        names
            .iter()
            .zip(values)
            .map(|(n, v)| {
                (
                    n.as_str().unwrap().to_owned(),
                    v.as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    // The read model's feed (docs/api-read-model.md) reads with limits of its own: read-only,
    // ten minutes, no result-row cap; every query of it is marked.
    const FEED: &str = "/* hunter api read model */";
    let (feed, api_queries): (Vec<_>, Vec<_>) = api_queries
        .into_iter()
        .partition(|row| row["query"].as_str().unwrap_or_default().starts_with(FEED));
    assert!(!feed.is_empty(), "no read-model query logged: {logged:?}");
    assert!(
        !api_queries.is_empty(),
        "no request's query logged: {logged:?}"
    );
    for row in &feed {
        let settings = settings_of(row);
        let get = |name: &str| settings.get(name).map(String::as_str);
        assert_eq!(get("readonly"), Some("2"), "{row}");
        assert_eq!(get("max_execution_time"), Some("600"), "{row}");
        let query = row["query"].as_str().unwrap();
        assert!(
            query[FEED.len()..].trim_start().starts_with("SELECT"),
            "{row}"
        );
    }
    for row in &api_queries {
        let owned = settings_of(row);
        let settings: HashMap<&str, &str> = owned
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        assert_eq!(settings.get("readonly"), Some(&"2"), "{row}");
        assert_eq!(settings.get("max_execution_time"), Some(&"30"), "{row}");
        assert_eq!(settings.get("max_result_rows"), Some(&"100000"), "{row}");
        // (`result_overflow_mode=throw` is the default, which the log does not list.)
        assert_eq!(
            settings.get("max_rows_to_read"),
            Some(&"100000000"),
            "{row}"
        );
        assert!(
            row["query"]
                .as_str()
                .unwrap()
                .trim_start()
                .starts_with("SELECT"),
            "{row}"
        );
    }
    let inserts: Vec<_> = logged
        .iter()
        .filter(|row| {
            row["query"]
                .as_str()
                .unwrap_or_default()
                .starts_with("INSERT INTO leads")
        })
        .collect();
    assert!(!inserts.is_empty(), "no insert into leads logged");
    assert!(
        inserts.iter().all(|row| row["user"] == "hunter_writer"),
        "{inserts:?}"
    );
    assert!(
        by("default").is_empty(),
        "nothing of Hunter's ran as default: {:?}",
        by("default")
    );

    // The reader and the analysts' user read, and cannot write: direct attempts are refused.
    let reader = clickhouse.client_as("hunter_api")?;
    let analyst = clickhouse.client_as("analyst")?;
    for (user, client) in [("hunter_api", &reader), ("analyst", &analyst)] {
        let rows = client.rows("SELECT count() AS n FROM leads FINAL").await?;
        assert_eq!(number(&rows[0]["n"]), REFERRALS, "{user} reads");
        for statement in [
            format!("INSERT INTO {database}.leads (lead_id, version) VALUES ('forged', 1)"),
            format!("CREATE TABLE {database}.forged (x UInt8) ENGINE = Memory"),
            format!("DROP TABLE {database}.leads"),
            format!("ALTER TABLE {database}.leads DELETE WHERE 1"),
        ] {
            let refused = client.execute(&statement).await;
            let error = refused
                .err()
                .unwrap_or_else(|| panic!("{user} ran `{statement}`"))
                .to_string();
            assert!(
                error.contains("readonly") || error.contains("Code: 164"),
                "{user}: `{statement}`: {error}"
            );
        }
        let error = client
            .execute("CREATE DATABASE forged")
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("readonly"), "{user}: {error}");
        // Only Hunter's database: another one is refused even for reading.
        let elsewhere = ClickHouse::new(&clickhouse.server.url(), "default")
            .trusting(&clickhouse.tls.ca)?
            .as_user(
                user,
                if user == "analyst" {
                    &clickhouse.analyst_password
                } else {
                    &clickhouse.reader_password
                },
            )
            .rows("SELECT 1 AS one")
            .await;
        let error = elsewhere.unwrap_err().to_string();
        assert!(
            error.contains("Access denied to database default"),
            "{user}: {error}"
        );
    }
    let rows = deployment
        .clickhouse
        .rows("SELECT count() AS n FROM leads WHERE lead_id = 'forged'")
        .await?;
    assert_eq!(number(&rows[0]["n"]), 0);
    let rows = deployment
        .clickhouse
        .rows("SELECT count() AS n FROM leads FINAL")
        .await?;
    assert_eq!(number(&rows[0]["n"]), REFERRALS, "nothing was dropped");

    // A question over the reader's limits: a clean JSON error, and the API goes on. (Without
    // the read model, which answers from memory a question it holds: every question here asks
    // ClickHouse.)
    let port = free_port();
    deployment.env.insert(
        "HUNTER_CLICKHOUSE_READER_MAX_ROWS_TO_READ".into(),
        "5".into(),
    );
    deployment
        .env
        .insert("HUNTER_API_READ_MODEL".into(), "off".into());
    let bounded = deployment.start_role_on("api", port).await;
    for setting in [
        "HUNTER_CLICKHOUSE_READER_MAX_ROWS_TO_READ",
        "HUNTER_API_READ_MODEL",
    ] {
        deployment.env.remove(setting);
    }
    bounded?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    let response = http
        .get(format!("http://127.0.0.1:{port}/api/v1/leads"))
        .bearer_auth(&deployment.api_token)
        .send()
        .await?;
    assert_eq!(response.status(), 503);
    let body: serde_json::Value = response.json().await?;
    assert_eq!(body["error"]["code"], "query_limit_exceeded", "{body}");
    let healthy = http
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .await?;
    assert!(healthy.status().is_success());
    // The first API, with the default limits, still answers the same question.
    let (status, _) = deployment.get("/api/v1/leads").await?;
    assert_eq!(status, 200);

    // doctor: TLS trusted, each user has what its role needs and no more.
    let (_, output) = run_hunter(&["doctor"], &deployment.env, ONE_SHOT)?;
    let verdicts = hunter_e2e::doctor_verdicts(&output);
    for check in [
        "clickhouse tls",
        "clickhouse",
        "clickhouse migrations",
        "clickhouse writer",
        "clickhouse reader",
    ] {
        assert_eq!(
            verdicts.get(check).map(String::as_str),
            Some("ok"),
            "{check}:\n{output}"
        );
    }
    let logs = deployment.full_logs();
    for password in clickhouse.passwords() {
        assert!(!output.contains(password) && !logs.contains(password));
    }
    deployment.teardown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_certificates_wrong_passwords_and_missing_rights_fail_by_name()
-> anyhow::Result<()> {
    let mut deployment = Deployment::new(&generated_referrals(3, 42)?)?;
    let database = deployment.env["HUNTER_CLICKHOUSE_DATABASE"].clone();
    let clickhouse = SecureClickHouse::start(&database).await?;
    clickhouse.configure(&mut deployment)?;
    let env = deployment.env.clone();
    let with = |changes: &[(&str, Option<&str>)]| {
        let mut env = env.clone();
        for (name, value) in changes {
            match value {
                Some(value) => env.insert((*name).to_owned(), (*value).to_owned()),
                None => env.remove(*name),
            };
        }
        env
    };
    let fails = |args: &[&str], env: &HashMap<String, String>, names: &[&str]| {
        let (ok, output) = run_hunter(args, env, ONE_SHOT)?;
        assert!(!ok, "hunter {args:?} succeeded:\n{output}");
        for name in names {
            assert!(
                output.contains(name),
                "hunter {args:?} does not name {name}:\n{output}"
            );
        }
        for password in clickhouse.passwords() {
            assert!(!output.contains(password), "a password in:\n{output}");
        }
        anyhow::Ok(output)
    };

    // The system does not trust the throwaway CA: TLS fails, naming the CA setting.
    let untrusted = with(&[("HUNTER_CLICKHOUSE_CA_LOCATION", None)]);
    let output = fails(
        &["migrate"],
        &untrusted,
        &["HUNTER_CLICKHOUSE_CA_LOCATION", "certificate"],
    )?;
    assert!(output.contains("TLS"), "{output}");
    // Another CA (the wrong file) fails the same way.
    let other_dir = tempfile::tempdir()?;
    let other = TlsFiles::create(other_dir.path(), "other")?;
    let other_ca = other.ca.display().to_string();
    fails(
        &["migrate"],
        &with(&[("HUNTER_CLICKHOUSE_CA_LOCATION", Some(&other_ca))]),
        &["HUNTER_CLICKHOUSE_CA_LOCATION", "certificate"],
    )?;
    // A CA file that does not exist fails at start, before any connection.
    fails(
        &["migrate"],
        &with(&[("HUNTER_CLICKHOUSE_CA_LOCATION", Some("/nonexistent/ca.pem"))]),
        &["invalid HUNTER_CLICKHOUSE_CA_LOCATION"],
    )?;
    // doctor: the TLS check fails with the fix; the checks behind it are skipped.
    let (ok, output) = run_hunter(&["doctor"], &untrusted, ONE_SHOT)?;
    assert!(!ok, "{output}");
    let doctor = hunter_e2e::doctor_verdicts(&output);
    assert_eq!(
        doctor.get("clickhouse tls").map(String::as_str),
        Some("FAIL"),
        "{output}"
    );
    for skipped in [
        "clickhouse",
        "clickhouse migrations",
        "clickhouse writer",
        "clickhouse reader",
    ] {
        assert_eq!(
            doctor.get(skipped).map(String::as_str),
            Some("skip"),
            "{skipped}:\n{output}"
        );
    }
    assert!(
        output.contains("fix: set HUNTER_CLICKHOUSE_CA_LOCATION"),
        "{output}"
    );

    // Plain HTTP to the HTTPS-only server: no answer it understands, naming the URL setting.
    let http_url = clickhouse.server.url().replace("https://", "http://");
    fails(
        &["migrate"],
        &with(&[("HUNTER_CLICKHOUSE_URL", Some(&http_url))]),
        &["HUNTER_CLICKHOUSE_URL"],
    )?;

    // A wrong writer password: refused, naming the writer's settings.
    fails(
        &["migrate"],
        &with(&[("HUNTER_CLICKHOUSE_PASSWORD", Some("not-the-password"))]),
        &[
            "HUNTER_CLICKHOUSE_PASSWORD",
            "refused user \"hunter_writer\"",
        ],
    )?;

    // A writer without rights (the analysts' user): migrate refuses, printing the GRANTs.
    let output = fails(
        &["migrate"],
        &with(&[
            ("HUNTER_CLICKHOUSE_USER", Some("analyst")),
            (
                "HUNTER_CLICKHOUSE_PASSWORD",
                Some(&clickhouse.analyst_password),
            ),
        ]),
        &[
            "may not run `CREATE DATABASE IF NOT EXISTS",
            &format!("GRANT CREATE DATABASE ON {database}.* TO `analyst`;"),
            "--print-grants",
        ],
    )?;
    assert!(output.contains("readonly"), "{output}");
    let (ok, grants) = run_hunter(&["migrate", "--print-grants"], &env, ONE_SHOT)?;
    assert!(ok, "{grants}");
    assert!(
        grants.contains(&format!("GRANT SELECT ON {database}.* TO `hunter_api`;")),
        "{grants}"
    );

    // As the writer it works.
    let (ok, output) = run_hunter(&["migrate"], &env, ONE_SHOT)?;
    assert!(ok, "hunter migrate as the writer:\n{output}");

    // The API with a wrong reader password stops at start, naming the reader's settings.
    let wrong_reader = with(&[(
        "HUNTER_CLICKHOUSE_READER_PASSWORD",
        Some("not-the-password"),
    )]);
    fails(
        &["run", "api"],
        &wrong_reader,
        &[
            "HUNTER_CLICKHOUSE_READER_PASSWORD",
            "refused user \"hunter_api\"",
        ],
    )?;
    // The sink with a writer that may not insert stops at start too.
    fails(
        &["run", "sink"],
        &with(&[
            ("HUNTER_CLICKHOUSE_USER", Some("hunter_api")),
            (
                "HUNTER_CLICKHOUSE_PASSWORD",
                Some(&clickhouse.reader_password),
            ),
        ]),
        &["may not run `INSERT INTO", "the sink cannot write"],
    )?;
    // doctor names the reader's password as the fix.
    let (ok, output) = run_hunter(&["doctor"], &wrong_reader, ONE_SHOT)?;
    assert!(!ok, "{output}");
    let doctor = hunter_e2e::doctor_verdicts(&output);
    assert_eq!(
        doctor.get("clickhouse tls").map(String::as_str),
        Some("ok"),
        "{output}"
    );
    assert_eq!(
        doctor.get("clickhouse writer").map(String::as_str),
        Some("ok"),
        "{output}"
    );
    assert_eq!(
        doctor.get("clickhouse reader").map(String::as_str),
        Some("FAIL"),
        "{output}"
    );
    assert!(
        output.contains(
            "fix: check HUNTER_CLICKHOUSE_READER_USER and HUNTER_CLICKHOUSE_READER_PASSWORD"
        ),
        "{output}"
    );
    // A reader that can write (the writer as reader) is a warning, not a pass.
    let (_, output) = run_hunter(
        &["doctor"],
        &with(&[
            ("HUNTER_CLICKHOUSE_READER_USER", Some("hunter_writer")),
            (
                "HUNTER_CLICKHOUSE_READER_PASSWORD",
                Some(&clickhouse.writer_password),
            ),
        ]),
        ONE_SHOT,
    )?;
    assert_eq!(
        hunter_e2e::doctor_verdicts(&output)
            .get("clickhouse reader")
            .map(String::as_str),
        Some("warn"),
        "{output}"
    );
    assert!(output.contains("can write to"), "{output}");
    drop(clickhouse);
    Ok(())
}

/// What Hunter sends to ClickHouse exists on current ClickHouse too: the API's limit settings
/// (and a limit stops a query with a code the API recognises), the printed GRANTs parse, and the
/// writer's rights probes run on the migrated tables without writing anything.
/// Runs in chdb-core from `.local/chdb-venv` (tests/chdb/check.sh installs it; tests/run.sh
/// runs that first).
#[test]
fn the_limits_and_grants_work_on_current_clickhouse() -> anyhow::Result<()> {
    let python = repo().join(".local/chdb-venv/bin/python");
    assert!(
        python.exists(),
        "{} missing: run tests/chdb/check.sh (tests/run.sh does) to install chdb-core",
        python.display()
    );
    let limits = hunter_clickhouse::reader::QueryLimits {
        max_execution_time: Duration::from_secs(30),
        max_rows_to_read: 1_000,
        max_result_rows: hunter_clickhouse::reader::MAX_RESULT_ROWS,
    };
    let settings = limits.settings(true);
    let grants = hunter_clickhouse::grants::sql("hunter", "hunter_writer", "hunter_api");
    let statements: Vec<String> = grants
        .lines()
        .filter(|line| !line.starts_with("--"))
        .map(str::to_owned)
        .chain(
            // The commented CREATE USER lines a DBA adapts.
            grants
                .lines()
                .filter_map(|line| {
                    line.trim_start_matches("--")
                        .trim()
                        .strip_prefix("CREATE USER")
                })
                .map(|rest| {
                    format!("CREATE USER{rest}")
                        .replace("<writer password>", "x")
                        .replace("<reader password>", "x")
                        .replace("<password>", "x")
                }),
        )
        .collect();
    assert!(statements.len() >= 6, "{statements:?}");
    let script = r#"
import json, sys
import chdb
request = json.load(sys.stdin)
out = {}
names = ", ".join("'%s'" % name for name, _ in request["settings"])
known = chdb.query("SELECT name FROM system.settings WHERE name IN (%s)" % names, "CSV").data()
out["known"] = sorted(line.strip('"') for line in known.split())
applied = ", ".join("%s = %s" % (name, value if value.isdigit() else "'%s'" % value) for name, value in request["settings"])
out["applied"] = chdb.query("SELECT count() FROM numbers(10) SETTINGS " + applied, "CSV").data().strip()
def error(sql):
    try:
        chdb.query(sql, "CSV")
        return ""
    except Exception as e:
        return str(e)
out["rows_to_read"] = error("SELECT count() FROM numbers(100000) SETTINGS max_rows_to_read = 10, read_overflow_mode = 'throw'")
out["result_rows"] = error("SELECT number FROM numbers(1000) SETTINGS max_result_rows = 10, result_overflow_mode = 'throw', max_block_size = 100")
parsed = []
for statement in request["statements"]:
    statement = statement.rstrip(";")
    sql = "SELECT formatQuery('%s')" % statement.replace("\\", "\\\\").replace("'", "\\'")
    try:
        parsed.append(chdb.query(sql, "TSVRaw").data().strip())
    except Exception as e:
        parsed.append("ERROR " + str(e))
out["parsed"] = parsed
# The writer's rights probes on Hunter's tables: accepted, and they write nothing.
from chdb import session
db = session.Session()
db.query("CREATE DATABASE hunter")
db.query("USE hunter")
for statement in request["migrations"]:
    db.query(statement)
probes = []
for statement in request["probes"]:
    try:
        db.query(statement)
        probes.append("")
    except Exception as e:
        probes.append(str(e))
out["probes"] = probes
out["parts"] = db.query("SELECT count() FROM system.parts WHERE database = 'hunter' AND table != 'hunter_migrations'", "CSV").data().strip()
print(json.dumps(out))
"#;
    let migrations: Vec<String> = hunter_clickhouse::migrations::MIGRATIONS
        .iter()
        .flat_map(|m| hunter_clickhouse::migrations::statements(m.sql))
        .collect();
    let mut probes: Vec<String> = hunter_clickhouse::grants::sink_tables()
        .iter()
        .map(|table| hunter_clickhouse::writer::probe_insert(table))
        .collect();
    probes.push(hunter_clickhouse::migrations::MIGRATIONS_TABLE_DDL.to_owned());
    let request = serde_json::json!({
        "settings": settings,
        "statements": statements,
        "migrations": migrations,
        "probes": probes,
    });
    let mut child = Command::new(&python)
        .arg("-c")
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(request.to_string().as_bytes())?;
    let output = child.wait_with_output()?;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let mut sent: Vec<&str> = settings.iter().map(|(name, _)| *name).collect();
    sent.sort();
    assert_eq!(
        answer["known"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect::<Vec<_>>(),
        sent,
        "every setting the API sends is a setting of current ClickHouse"
    );
    assert_eq!(answer["applied"], "10", "{answer}");
    for limit in ["rows_to_read", "result_rows"] {
        let text = answer[limit].as_str().unwrap();
        assert!(
            hunter_clickhouse::reader::is_limit(text),
            "{limit}: the API would not recognise {text:?}"
        );
    }
    for (probe, error) in probes.iter().zip(answer["probes"].as_array().unwrap()) {
        assert_eq!(error, "", "`{probe}` on current ClickHouse");
    }
    assert_eq!(answer["parts"], "0", "the probes wrote nothing");
    for (statement, parsed) in statements.iter().zip(answer["parsed"].as_array().unwrap()) {
        let parsed = parsed.as_str().unwrap();
        assert!(
            !parsed.starts_with("ERROR"),
            "`{statement}` does not parse: {parsed}"
        );
    }
    Ok(())
}
