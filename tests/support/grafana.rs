//! Grafana dashboards (`dashboards/*.json`) and provisioning (`deploy/grafana/provisioning`),
//! read the way Grafana reads them, and the ClickHouse plugin's macros expanded the way the
//! plugin expands them, so every panel's query can run against a real server. Also usable by
//! tests against other ClickHouse versions (see `dashboards/README.md`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde_json::Value;

/// One query of one panel.
#[derive(Debug, Clone)]
pub struct PanelQuery {
    /// The dashboard's file name (`leads.json`).
    pub dashboard: String,
    pub panel_id: i64,
    pub panel_title: String,
    /// The datasource uid of the query (its own, else the panel's).
    pub datasource_uid: String,
    /// `rawSql` (ClickHouse) or `expr` (Prometheus), as written in the dashboard.
    pub text: String,
}

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `dashboards/*.json`, by file name.
pub fn dashboards() -> anyhow::Result<BTreeMap<String, Value>> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(repo().join("dashboards"))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path)?;
            let json = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", path.display()))?;
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            out.insert(name, json);
        }
    }
    Ok(out)
}

/// Every panel of a dashboard, rows' nested panels included.
pub fn panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(panels: &'a Value, out: &mut Vec<&'a Value>) {
        for panel in panels.as_array().into_iter().flatten() {
            out.push(panel);
            walk(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// Every query of every panel of every dashboard.
pub fn queries() -> anyhow::Result<Vec<PanelQuery>> {
    let mut out = Vec::new();
    for (name, dashboard) in dashboards()? {
        for panel in panels(&dashboard) {
            for target in panel["targets"].as_array().into_iter().flatten() {
                let uid = target["datasource"]["uid"]
                    .as_str()
                    .or(panel["datasource"]["uid"].as_str())
                    .unwrap_or_default();
                let text = target["rawSql"]
                    .as_str()
                    .or(target["expr"].as_str())
                    .unwrap_or_default();
                out.push(PanelQuery {
                    dashboard: name.clone(),
                    panel_id: panel["id"].as_i64().unwrap_or(-1),
                    panel_title: panel["title"].as_str().unwrap_or_default().to_owned(),
                    datasource_uid: uid.to_owned(),
                    text: text.to_owned(),
                });
            }
        }
    }
    Ok(out)
}

/// The datasources provisioned in `deploy/grafana/provisioning/datasources/*.yml`: uid ->
/// type. (A line scan: these files are flat lists of `- name:` entries.)
pub fn provisioned_datasources() -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let dir = repo().join("deploy/grafana/provisioning/datasources");
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        if !path.extension().is_some_and(|e| e == "yml" || e == "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path)?;
        let mut uid = None;
        let mut kind = None;
        for line in text.lines().map(str::trim) {
            if line.starts_with("- ")
                && let (Some(uid), Some(kind)) = (uid.take(), kind.take())
            {
                out.insert(uid, kind);
            }
            let line = line.trim_start_matches("- ");
            if let Some(value) = line.strip_prefix("uid:") {
                uid = Some(value.trim().to_owned());
            } else if let Some(value) = line.strip_prefix("type:") {
                kind = Some(value.trim().to_owned());
            }
        }
        if let (Some(uid), Some(kind)) = (uid, kind) {
            out.insert(uid, kind);
        }
    }
    Ok(out)
}

/// The macros of `grafana-clickhouse-datasource` that the panels use, expanded as the plugin
/// does: `$__timeFilter(col)` to `col >= toDateTime(FROM) AND col <= toDateTime(TO)`,
/// `$__fromTime`/`$__toTime` to `toDateTime(..)`, `$__interval_s` to whole seconds. Any other
/// `$__` macro is an error: panels keep to these so they run on ClickHouse 18.16 and current
/// ClickHouse alike (`$__timeInterval` needs `toStartOfInterval`, which 18.16 lacks).
pub fn expand_clickhouse_macros(
    sql: &str,
    from_unix: i64,
    to_unix: i64,
    interval_s: u64,
) -> anyhow::Result<String> {
    let mut out = String::new();
    let mut rest = sql;
    while let Some(at) = rest.find("$__") {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        if let Some(after) = rest.strip_prefix("$__timeFilter(") {
            let close = after.find(')').context("$__timeFilter( without )")?;
            let column = after[..close].trim();
            anyhow::ensure!(
                !column.contains(','),
                "$__timeFilter takes one column: {column}"
            );
            out.push_str(&format!(
                "{column} >= toDateTime({from_unix}) AND {column} <= toDateTime({to_unix})"
            ));
            rest = &after[close + 1..];
        } else if let Some(after) = rest.strip_prefix("$__interval_s") {
            out.push_str(&interval_s.max(1).to_string());
            rest = after;
        } else if let Some(after) = rest.strip_prefix("$__fromTime") {
            out.push_str(&format!("toDateTime({from_unix})"));
            rest = after;
        } else if let Some(after) = rest.strip_prefix("$__toTime") {
            out.push_str(&format!("toDateTime({to_unix})"));
            rest = after;
        } else {
            anyhow::bail!(
                "unsupported macro in panel SQL: {}",
                &rest[..rest.len().min(30)]
            );
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Grafana's own variables in PromQL, as Grafana would fill them for a short range.
pub fn expand_prometheus_variables(expr: &str, rate_interval: &str) -> String {
    expr.replace("$__rate_interval", rate_interval)
        .replace("$__interval", rate_interval)
        .replace("$__range", rate_interval)
}
