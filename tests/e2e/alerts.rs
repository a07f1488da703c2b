//! The Prometheus configuration and alert rules, checked by the real `promtool` (Debian's
//! `prometheus` package, installed by `deploy/local/stack.sh`): syntax, the rules' unit tests
//! (`deploy/prometheus/tests/*.yml`: each alert fires in one case and stays quiet in another),
//! and that the rules use only metrics Hunter exports.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn yml_files(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join(dir))
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .yml files in {dir}");
    files
}

/// Runs promtool and fails with its output unless it succeeds.
fn promtool(args: &[&str], files: &[PathBuf]) {
    let output = Command::new("promtool")
        .args(args)
        .args(files)
        .current_dir(repo())
        .output()
        .expect("promtool runs (apt-get install prometheus; deploy/local/stack.sh up installs it)");
    assert!(
        output.status.success(),
        "promtool {args:?} {files:?} failed:\n{}",
        hunter_e2e::output_text(&output)
    );
}

#[test]
fn alert_rules_pass_promtool_check() {
    promtool(&["check", "rules"], &yml_files("deploy/prometheus/rules"));
}

#[test]
fn alert_rules_pass_their_unit_tests() {
    promtool(&["test", "rules"], &yml_files("deploy/prometheus/tests"));
}

#[test]
fn prometheus_configs_pass_promtool_check() {
    let dir = repo().join("deploy/prometheus");
    promtool(
        &["check", "config"],
        &[
            dir.join("prometheus.yml"),
            dir.join("prometheus.compose.yml"),
        ],
    );
}

/// Every `hunter_*` metric the rules name is in the catalogue (histograms with their
/// `_bucket`, `_sum`, `_count` series), so a renamed metric cannot silence an alert.
#[test]
fn alert_rules_use_only_catalogued_metrics() {
    let mut checked = 0;
    for file in yml_files("deploy/prometheus/rules") {
        let text = std::fs::read_to_string(&file).unwrap();
        for name in hunter_e2e::metric_names_in(&text) {
            assert!(
                hunter_e2e::is_catalogued_series(&name),
                "{}: {name} is not a metric Hunter exports (dashboards/README.md)",
                file.display()
            );
            checked += 1;
        }
    }
    assert!(checked >= 10, "found only {checked} metric references");
}
