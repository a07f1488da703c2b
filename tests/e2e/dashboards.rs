//! The Grafana dashboards: well-formed (unique panel ids, every datasource provisioned, only
//! catalogued metrics), and every panel's query run for real: the ClickHouse SQL against the
//! local ClickHouse holding what a running Hunter wrote, the PromQL against a real Prometheus
//! (Debian's `prometheus`, the one the local stack runs) scraping that Hunter. The same
//! Prometheus loads the alert rules, which must evaluate without errors.
//!
//! The test starts a Prometheus of its own (1 s scrapes, this checkout's rules) rather than
//! using the stack's shared one: the shared one scrapes fixed targets from the configuration of
//! whichever checkout started it, and a per-test server cannot see other tests' series.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hunter_e2e::grafana::{self, PanelQuery};
use hunter_e2e::{Deployment, free_port, generated_referrals, wait_for, wait_healthy};
use serde_json::{Value, json};

/// Panels that must show data once Hunter has synced: every one of their queries returns series.
const PROMETHEUS_PANELS_WITH_DATA: &[&str] = &[
    "Time since last successful sync",
    "Sync runs by outcome",
    "Access token expires in",
    "Refresh token age",
    "Sign-in required",
    "Consumer lag per stage",
    "Sink insert latency",
    "End-to-end latency",
    "Records through the pipeline",
    // The API role counts the expiring referrals at start: 0 here, but a series.
    "Referrals expiring within 48 h",
];

#[test]
fn dashboards_are_well_formed() -> anyhow::Result<()> {
    let dashboards = grafana::dashboards()?;
    let names: BTreeSet<&str> = dashboards.keys().map(String::as_str).collect();
    assert!(
        names.contains("sync-health.json") && names.contains("leads.json"),
        "{names:?}"
    );
    let provisioned = grafana::provisioned_datasources()?;
    assert_eq!(
        provisioned.get("hunter-prometheus").map(String::as_str),
        Some("prometheus"),
        "{provisioned:?}"
    );
    assert_eq!(
        provisioned.get("hunter-clickhouse").map(String::as_str),
        Some("grafana-clickhouse-datasource"),
        "{provisioned:?}"
    );

    let mut uids = BTreeSet::new();
    for (name, dashboard) in &dashboards {
        let uid = dashboard["uid"].as_str().unwrap_or_default();
        assert!(!uid.is_empty(), "{name}: no uid");
        assert!(uids.insert(uid.to_owned()), "{name}: uid {uid} used twice");
        assert!(
            dashboard["schemaVersion"].as_i64().unwrap_or(0) >= 36,
            "{name}: schemaVersion"
        );
        let mut ids = BTreeSet::new();
        let panels = grafana::panels(dashboard);
        assert!(!panels.is_empty(), "{name}: no panels");
        for panel in panels {
            let title = panel["title"].as_str().unwrap_or_default();
            let id = panel["id"]
                .as_i64()
                .unwrap_or_else(|| panic!("{name}: {title}: no id"));
            assert!(ids.insert(id), "{name}: panel id {id} used twice");
            if panel["type"] == "row" {
                continue;
            }
            assert!(!title.is_empty(), "{name}: panel {id} has no title");
            let datasource = &panel["datasource"];
            let uid = datasource["uid"].as_str().unwrap_or_default();
            assert_eq!(
                provisioned.get(uid),
                datasource["type"].as_str().map(str::to_owned).as_ref(),
                "{name}: {title}: datasource {datasource} is not provisioned with that type"
            );
            let targets = panel["targets"].as_array().cloned().unwrap_or_default();
            assert!(!targets.is_empty(), "{name}: {title}: no queries");
            for target in targets {
                let uid = target["datasource"]["uid"].as_str().unwrap_or(uid);
                assert!(
                    provisioned.contains_key(uid),
                    "{name}: {title}: query datasource {uid} is not provisioned"
                );
            }
        }
    }

    for query in grafana::queries()? {
        let what = format!("{}: {}", query.dashboard, query.panel_title);
        assert!(!query.text.trim().is_empty(), "{what}: empty query");
        match provisioned[&query.datasource_uid].as_str() {
            "prometheus" => {
                let names = hunter_e2e::metric_names_in(&query.text);
                assert!(!names.is_empty(), "{what}: no hunter metric");
                for metric in names {
                    assert!(
                        hunter_e2e::is_catalogued_series(&metric),
                        "{what}: {metric} is not a metric Hunter exports"
                    );
                }
            }
            _ => {
                grafana::expand_clickhouse_macros(&query.text, 0, 1, 60)?;
            }
        }
    }
    Ok(())
}

#[test]
fn clickhouse_macros_expand_like_the_plugin() -> anyhow::Result<()> {
    let sql = "SELECT toDateTime(intDiv(toUInt32(t), $__interval_s) * $__interval_s) AS time FROM x WHERE $__timeFilter(t) AND t < $__toTime";
    assert_eq!(
        grafana::expand_clickhouse_macros(sql, 100, 200, 60)?,
        "SELECT toDateTime(intDiv(toUInt32(t), 60) * 60) AS time FROM x WHERE t >= toDateTime(100) AND t <= toDateTime(200) AND t < toDateTime(200)"
    );
    assert!(grafana::expand_clickhouse_macros("$__timeInterval(t)", 0, 1, 1).is_err());
    Ok(())
}

/// Writes every ClickHouse panel query, macros expanded over the last 30 days, as JSON lines
/// (`dashboard`, `panel`, `sql`) to `$HUNTER_PANEL_SQL_OUT` (default
/// `target/panel-sql.jsonl`), for running them on other ClickHouse versions:
/// `cargo test -p hunter-e2e --test e2e -- --ignored write_panel_sql`.
#[test]
#[ignore = "writes a file for other test suites"]
fn write_panel_sql() -> anyhow::Result<()> {
    let out = std::env::var("HUNTER_PANEL_SQL_OUT").unwrap_or_else(|_| {
        grafana::repo()
            .join("target/panel-sql.jsonl")
            .display()
            .to_string()
    });
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let provisioned = grafana::provisioned_datasources()?;
    let mut lines = String::new();
    for query in grafana::queries()? {
        if provisioned[&query.datasource_uid] != "grafana-clickhouse-datasource" {
            continue;
        }
        let sql = grafana::expand_clickhouse_macros(&query.text, now - 30 * 86_400, now, 3_600)?;
        lines.push_str(
            &json!({"dashboard": query.dashboard, "panel": query.panel_title, "sql": sql})
                .to_string(),
        );
        lines.push('\n');
    }
    std::fs::write(&out, lines)?;
    eprintln!("wrote {out}");
    Ok(())
}

/// A Prometheus server of this test's own; stopped when dropped.
struct Prometheus {
    url: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Scrapes `target` (host:port) every second and evaluates this checkout's alert rules.
    async fn start(target: &str) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = free_port();
        let rules = grafana::repo().join("deploy/prometheus/rules/*.yml");
        let config = format!(
            "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\n\
             rule_files: [\"{}\"]\n\
             scrape_configs:\n  - job_name: hunter\n    static_configs:\n      - targets: [\"{target}\"]\n",
            rules.display()
        );
        std::fs::write(dir.path().join("prometheus.yml"), config)?;
        let log = std::fs::File::create(dir.path().join("prometheus.log"))?;
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start prometheus (apt-get install prometheus; deploy/local/stack.sh up installs it): {e}"))?;
        let prometheus = Prometheus {
            url: format!("http://127.0.0.1:{port}"),
            child,
            _dir: dir,
        };
        let ready = wait_healthy(
            "prometheus",
            &format!("{}/-/ready", prometheus.url),
            Duration::from_secs(30),
        )
        .await;
        if let Err(error) = ready {
            let log = std::fs::read_to_string(prometheus._dir.path().join("prometheus.log"))
                .unwrap_or_default();
            anyhow::bail!("{error}\n{log}");
        }
        Ok(prometheus)
    }

    /// An instant query: (status, result).
    async fn query(&self, expr: &str) -> anyhow::Result<(String, Vec<Value>)> {
        let body: Value = reqwest::Client::new()
            .post(format!("{}/api/v1/query", self.url))
            .form(&[("query", expr)])
            .send()
            .await?
            .json()
            .await?;
        let status = body["status"].as_str().unwrap_or_default().to_owned();
        anyhow::ensure!(status == "success", "{expr}: {body}");
        Ok((
            status,
            body["data"]["result"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
        ))
    }
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

fn number(row: &Value, column: &str) -> f64 {
    match &row[column] {
        Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
        Value::String(s) => s.parse().unwrap_or(f64::NAN),
        other => panic!("{column}: not a number: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_panel_query_runs_against_the_real_stack() -> anyhow::Result<()> {
    let mut referrals = generated_referrals(60, 11)?;
    let mut deployment = Deployment::new(&referrals)?;
    deployment.start_simulator(&[]).await?;
    deployment.login_and_migrate()?;
    deployment.start_role("all").await?;
    let result = wait_for(
        "every referral as a lead",
        Duration::from_secs(90),
        || async {
            let rows = deployment
                .clickhouse
                .rows("SELECT count() AS n FROM leads FINAL")
                .await?;
            Ok((number(&rows[0], "n") as usize == referrals.len()).then_some(()))
        },
    )
    .await;
    if let Err(error) = result {
        anyhow::bail!("{error}\n{}", deployment.logs());
    }

    // Two open referrals are won and two lost: status transitions for the leads dashboard.
    let mut moved = 0;
    for referral in referrals.iter_mut() {
        if moved == 4 || referral["status"] == "Closed" {
            continue;
        }
        referral["status"] = json!("Closed");
        referral["substatus"] = json!(if moved < 2 { "Won" } else { "Lost" });
        referral["updatedDateTime"] = json!(now_rfc3339());
        referral["eTag"] = json!(format!("\"{}\"", uuid::Uuid::new_v4()));
        moved += 1;
    }
    assert_eq!(moved, 4, "the generated referrals have four open ones");
    deployment.write_referrals(&referrals)?;
    deployment.request_sync(None).await?;
    let transitions =
        "SELECT count() AS n FROM lead_history FINAL WHERE change_type = 'status_changed'";
    let result = wait_for("the four transitions", Duration::from_secs(60), || async {
        let rows = deployment.clickhouse.rows(transitions).await?;
        Ok((number(&rows[0], "n") as usize == 4).then_some(()))
    })
    .await;
    if let Err(error) = result {
        anyhow::bail!("{error}\n{}", deployment.logs());
    }

    // --- ClickHouse: every panel's SQL, macros expanded, returns rows ------------------------
    let provisioned = grafana::provisioned_datasources()?;
    let queries = grafana::queries()?;
    let (clickhouse_queries, prometheus_queries): (Vec<PanelQuery>, Vec<PanelQuery>) = queries
        .into_iter()
        .partition(|q| provisioned[&q.datasource_uid] == "grafana-clickhouse-datasource");
    assert!(clickhouse_queries.len() >= 8, "{clickhouse_queries:?}");
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    // The generated referrals were created over the last few years: a range that holds them all.
    let (from, to) = (0, now + 86_400);
    let mut results = BTreeMap::new();
    for query in &clickhouse_queries {
        let sql = grafana::expand_clickhouse_macros(&query.text, from, to, 30 * 86_400)?;
        let rows = deployment.clickhouse.rows(&sql).await.map_err(|error| {
            anyhow::anyhow!("{}: {}: {error}\n{sql}", query.dashboard, query.panel_title)
        })?;
        assert!(
            !rows.is_empty(),
            "{}: {} returned no rows\n{sql}",
            query.dashboard,
            query.panel_title
        );
        results.insert(query.panel_title.clone(), rows);
    }
    // The panels count what Hunter wrote: every lead with a creation time, the four transitions.
    let created = referrals
        .iter()
        .filter(|r| r["createdDateTime"].is_string())
        .count() as f64;
    let new_leads: f64 = results["New leads"]
        .iter()
        .map(|r| number(r, "new_leads"))
        .sum();
    assert_eq!(new_leads, created, "New leads");
    let mut outcomes: HashMap<String, f64> = HashMap::new();
    for row in &results["Won and lost over time"] {
        *outcomes
            .entry(row["outcome"].as_str().unwrap_or_default().to_owned())
            .or_default() += number(row, "leads");
    }
    assert_eq!(
        outcomes,
        HashMap::from([("Won".to_owned(), 2.0), ("Lost".to_owned(), 2.0)])
    );
    let statuses: f64 = results["Leads by status"]
        .iter()
        .map(|r| number(r, "leads"))
        .sum();
    assert_eq!(statuses, referrals.len() as f64, "Leads by status");

    // --- Prometheus: every panel's PromQL is valid; the key panels show series ----------------
    let target = deployment.api.trim_start_matches("http://").to_owned();
    let prometheus = Prometheus::start(&target).await?;
    let result = wait_for(
        "the key panels to show series",
        Duration::from_secs(60),
        || async {
            let mut empty = Vec::new();
            for query in &prometheus_queries {
                let expr = grafana::expand_prometheus_variables(&query.text, "1m");
                let (_, series) = prometheus.query(&expr).await?;
                if series.is_empty()
                    && PROMETHEUS_PANELS_WITH_DATA.contains(&query.panel_title.as_str())
                {
                    empty.push(format!("{}: {expr}", query.panel_title));
                }
            }
            Ok(if empty.is_empty() {
                Some(())
            } else {
                anyhow::bail!("no series yet: {empty:#?}")
            })
        },
    )
    .await;
    if let Err(error) = result {
        anyhow::bail!("{error}\n{}", deployment.logs());
    }
    for title in PROMETHEUS_PANELS_WITH_DATA {
        assert!(
            prometheus_queries.iter().any(|q| q.panel_title == *title),
            "no panel titled {title}"
        );
    }

    // The alert rules load and evaluate against real series; none of them fires on a healthy
    // deployment.
    let result = wait_for(
        "the alert rules to evaluate",
        Duration::from_secs(30),
        || async {
            let body: Value = reqwest::get(format!("{}/api/v1/rules", prometheus.url))
                .await?
                .json()
                .await?;
            let rules: Vec<Value> = body["data"]["groups"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
                .collect();
            anyhow::ensure!(rules.len() >= 8, "rules loaded: {body}");
            let bad: Vec<&Value> = rules.iter().filter(|r| r["health"] != "ok").collect();
            Ok(bad.is_empty().then_some(rules))
        },
    )
    .await?;
    let firing: Vec<&Value> = result.iter().filter(|r| r["state"] == "firing").collect();
    assert!(
        firing.is_empty(),
        "alerts firing on a healthy deployment: {firing:#?}"
    );

    // What Hunter exports is in the catalogue, with only the catalogue's labels.
    let text = deployment.metrics().await?;
    let mut seen = BTreeSet::new();
    for line in text.lines().filter(|l| l.starts_with("hunter_")) {
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let series = &line[..name_end];
        assert!(
            hunter_e2e::is_catalogued_series(series),
            "exported but not catalogued: {line}"
        );
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                series
                    .strip_suffix(s)
                    .filter(|b| hunter_core::telemetry::metric(b).is_some())
            })
            .unwrap_or(series);
        let metric = hunter_core::telemetry::metric(base).unwrap();
        if let Some(labels) = line[name_end..].strip_prefix('{') {
            let labels = &labels[..labels.rfind('}').unwrap()];
            for pair in labels.split("\",") {
                let label = pair.split('=').next().unwrap().trim();
                assert!(
                    label == "le" || metric.labels.contains(&label),
                    "{base}: label {label} is not in the catalogue ({:?})",
                    metric.labels
                );
            }
        }
        seen.insert(base.to_owned());
    }
    assert!(
        seen.contains(hunter_core::telemetry::names::KAFKA_CONSUMER_LAG_RECORDS),
        "{seen:?}"
    );

    drop(prometheus);
    deployment.teardown().await;
    Ok(())
}
