//! BENCHMARKS.md from the benches' `RESULT` lines (see [`crate::bench::Report`]).
//!
//! BENCHMARKS.md is its own template: the prose stays as written, and each generated part sits
//! between markers, `<!-- bench:NAME -->` and `<!-- /bench:NAME -->`, replaced as a whole:
//! `machine` (where and when the run was), and one per bench (its tables). A bench without a
//! result in this run keeps its last tables, which name the date and commit they are from.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::Command;

use anyhow::{Context, bail};
use serde_json::Value;

/// Where and when a run happened.
#[derive(Debug, Clone, Default)]
pub struct Machine {
    pub date: String,
    pub commit: String,
    pub cpu: String,
    pub cores: String,
    pub memory: String,
    pub os: String,
    pub kernel: String,
    pub tansu: String,
    pub clickhouse: String,
}

impl Machine {
    /// Reads this machine: `lscpu`, /proc/meminfo, /etc/os-release, `uname -r`, `tansu
    /// --version`, ClickHouse's `version()`, `git` in `repo`.
    pub async fn collect(repo: &std::path::Path, clickhouse_url: &str) -> Self {
        let run = |program: &str, args: &[&str]| {
            Command::new(program)
                .args(args)
                .current_dir(repo)
                .output()
                .ok()
                .filter(|output| output.status.success())
                .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        };
        let lscpu = run("lscpu", &[]).unwrap_or_default();
        let field = |name: &str| {
            lscpu
                .lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
                .map(|value| value.trim().to_owned())
        };
        let memory = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|text| {
                let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
                let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
                Some(format!("{:.1} GiB", kib / 1024.0 / 1024.0))
            })
            .unwrap_or_else(|| "unknown".into());
        let os = std::fs::read_to_string("/etc/os-release")
            .ok()
            .and_then(|text| {
                let line = text.lines().find(|l| l.starts_with("PRETTY_NAME="))?;
                Some(line["PRETTY_NAME=".len()..].trim_matches('"').to_owned())
            })
            .unwrap_or_else(|| "unknown".into());
        let commit = match run("git", &["rev-parse", "--short=10", "HEAD"]) {
            Some(commit) => {
                let dirty = run("git", &["status", "--porcelain", "--untracked-files=no"])
                    .is_some_and(|status| !status.is_empty());
                if dirty {
                    format!("{commit} (with uncommitted changes)")
                } else {
                    commit
                }
            }
            None => "unknown".into(),
        };
        let clickhouse = async {
            reqwest::Client::new()
                .post(clickhouse_url)
                .body("SELECT version()")
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()
        }
        .await
        .map_or_else(|| "unknown".into(), |v| v.trim().to_owned());
        let date = time::OffsetDateTime::now_utc();
        Machine {
            date: format!(
                "{:04}-{:02}-{:02} {:02}:{:02} UTC",
                date.year(),
                u8::from(date.month()),
                date.day(),
                date.hour(),
                date.minute()
            ),
            commit,
            cpu: field("Model name").unwrap_or_else(|| "unknown".into()),
            cores: field("CPU(s)").unwrap_or_else(|| "unknown".into()),
            memory,
            os,
            kernel: run("uname", &["-r"]).unwrap_or_else(|| "unknown".into()),
            tansu: crate::OwnBroker::version(),
            clickhouse,
        }
    }

    /// The day, for table captions.
    fn day(&self) -> &str {
        self.date.split(' ').next().unwrap_or(&self.date)
    }
}

/// The `RESULT {json}` lines of a bench's output.
pub fn results(text: &str) -> anyhow::Result<Vec<Value>> {
    text.lines()
        .filter_map(|line| line.strip_prefix("RESULT "))
        .map(|json| serde_json::from_str(json).context("unreadable RESULT line"))
        .collect()
}

/// A figure as the tables show it: thousands separated, decimals only where they matter.
pub fn figure(value: f64) -> String {
    if !value.is_finite() {
        return "–".into();
    }
    let decimals = match value.abs() {
        v if v >= 100.0 => 0,
        v if v >= 10.0 => 1,
        _ => 2,
    };
    let text = format!("{value:.decimals$}");
    let (whole, fraction) = text.split_once('.').unwrap_or((&text, ""));
    let (sign, digits) = whole
        .strip_prefix('-')
        .map_or(("", whole), |digits| ("-", digits));
    let mut grouped = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    if fraction.is_empty() {
        format!("{sign}{grouped}")
    } else {
        format!("{sign}{grouped}.{fraction}")
    }
}

/// The machine section.
pub fn machine_section(machine: &Machine) -> String {
    format!(
        "| | |\n|---|---|\n\
         | date | {} |\n\
         | commit | `{}` |\n\
         | CPU | {} |\n\
         | cores | {} |\n\
         | memory | {} |\n\
         | OS, kernel | {}, {} |\n\
         | broker | {} (sqlite storage, a broker of its own per bench) |\n\
         | ClickHouse | {} (the local stack's) |\n",
        machine.date,
        machine.commit,
        machine.cpu,
        machine.cores,
        machine.memory,
        machine.os,
        machine.kernel,
        machine.tansu,
        machine.clickhouse,
    )
}

/// One bench's tables from its result.
pub fn bench_section(result: &Value, machine: &Machine) -> String {
    let mut out = String::new();
    let size = result["size"].as_f64().unwrap_or(0.0);
    // The rounds each row has (3 for the timed benches; the server-fault run is one run).
    let rounds = result["rows"][0]["rounds"].as_array().map_or(0, Vec::len);
    let rounds = match rounds {
        1 => "one run".to_owned(),
        n => format!("median of {n} rounds"),
    };
    let _ = writeln!(
        out,
        "Measured {} on commit `{}` ({} cores, see [the machine](#machine)): {} {}, {rounds}.\n",
        machine.day(),
        machine.commit,
        machine.cores,
        figure(size),
        result["size_unit"].as_str().unwrap_or_default()
    );
    out.push_str("| | median | unit | rounds |\n|---|---:|---|---|\n");
    for row in result["rows"].as_array().into_iter().flatten() {
        let label = row["label"].as_str().unwrap_or_default();
        let unit = row["unit"].as_str().unwrap_or_default();
        // Counts (a unit of "times", "panics", or none) read as whole numbers.
        let count = matches!(unit, "" | "times" | "panics");
        let show = |v: &Value| {
            let v = v.as_f64().unwrap_or(f64::NAN);
            if count && v.fract() == 0.0 {
                format!("{v:.0}")
            } else {
                figure(v)
            }
        };
        let median = show(&row["median"]);
        let rounds = row["rounds"]
            .as_array()
            .into_iter()
            .flatten()
            .map(show)
            .collect::<Vec<_>>()
            .join(" / ");
        let (label, median) = if row["kind"] == "hunter" {
            (format!("**{label}**"), format!("**{median}**"))
        } else if row["kind"] == "ceiling" {
            (format!("{label} *(ceiling)*"), median)
        } else {
            (label.to_owned(), median)
        };
        let _ = writeln!(out, "| {label} | {median} | {unit} | {rounds} |");
    }
    let ratios: Vec<&Value> = result["ratios"].as_array().into_iter().flatten().collect();
    if !ratios.is_empty() {
        out.push_str("\n| comparison | value | target | |\n|---|---:|---|---|\n");
        for ratio in ratios {
            let target = ratio["target"].as_str().unwrap_or_default();
            let verdict = match ratio["met"].as_bool() {
                Some(true) => "met",
                Some(false) => "**not met**",
                None => "",
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {verdict} |",
                ratio["label"].as_str().unwrap_or_default(),
                figure(ratio["value"].as_f64().unwrap_or(f64::NAN)),
                target.replace(">=", "≥").replace("<=", "≤"),
            );
        }
    }
    let notes: Vec<&str> = result["notes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if !notes.is_empty() {
        out.push('\n');
        for note in notes {
            let _ = writeln!(out, "- {note}");
        }
    }
    out
}

/// `document` with the section between `<!-- bench:NAME -->` and `<!-- /bench:NAME -->`
/// replaced by `body`; an error if the markers are missing.
pub fn replace_section(document: &str, name: &str, body: &str) -> anyhow::Result<String> {
    let open = format!("<!-- bench:{name} -->");
    let close = format!("<!-- /bench:{name} -->");
    let Some(start) = document.find(&open) else {
        bail!("BENCHMARKS.md has no {open} marker");
    };
    let Some(end) = document[start..].find(&close).map(|at| start + at) else {
        bail!("BENCHMARKS.md has {open} without {close}");
    };
    Ok(format!(
        "{}{open}\n{}{}",
        &document[..start],
        body.trim_end_matches('\n').to_owned() + "\n",
        &document[end..]
    ))
}

/// BENCHMARKS.md with the machine section and each bench with a result replaced.
pub fn render(document: &str, results: &[Value], machine: &Machine) -> anyhow::Result<String> {
    let mut by_bench = BTreeMap::new();
    for result in results {
        let name = result["bench"]
            .as_str()
            .context("a RESULT without a bench name")?;
        by_bench.insert(name.to_owned(), result);
    }
    let mut document = replace_section(document, "machine", &machine_section(machine))?;
    for (name, result) in by_bench {
        document = replace_section(&document, &name, &bench_section(result, machine))?;
    }
    Ok(document)
}

/// Whether a `RESULT` is whole: a bench name, a size, at least one row, every row with a
/// label, a unit, a known kind and finite rounds and median, every ratio finite. What a smoke
/// run (`tests/bench.sh --smoke`) checks of each bench, besides that it renders.
pub fn check(result: &Value) -> anyhow::Result<()> {
    let bench = result["bench"]
        .as_str()
        .context("a RESULT without a bench name")?;
    let context = |what: &str| format!("bench {bench}: {what}");
    anyhow::ensure!(
        result["size"].as_u64().is_some_and(|size| size > 0),
        context("no size")
    );
    anyhow::ensure!(result["size_unit"].is_string(), context("no size unit"));
    let rows = result["rows"]
        .as_array()
        .with_context(|| context("no rows"))?;
    anyhow::ensure!(!rows.is_empty(), context("no rows"));
    for row in rows {
        let label = row["label"]
            .as_str()
            .with_context(|| context("a row without a label"))?;
        let row_context = |what: &str| format!("bench {bench}, row {label:?}: {what}");
        anyhow::ensure!(row["unit"].is_string(), row_context("no unit"));
        anyhow::ensure!(
            matches!(row["kind"].as_str(), Some("hunter" | "ceiling" | "info")),
            row_context("an unknown kind")
        );
        anyhow::ensure!(
            row["median"].as_f64().is_some_and(f64::is_finite),
            row_context("no finite median")
        );
        let rounds = row["rounds"]
            .as_array()
            .with_context(|| row_context("no rounds"))?;
        anyhow::ensure!(
            !rounds.is_empty()
                && rounds
                    .iter()
                    .all(|r| r.as_f64().is_some_and(f64::is_finite)),
            row_context("rounds missing or not finite")
        );
    }
    for ratio in result["ratios"]
        .as_array()
        .with_context(|| context("no ratios list"))?
    {
        anyhow::ensure!(
            ratio["value"].as_f64().is_some_and(f64::is_finite),
            context(&format!("ratio {} is not finite", ratio["label"]))
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_whole_result_passes_the_check_and_a_broken_one_names_what_is_missing() {
        let whole: Value = serde_json::from_str(
            r#"{"bench":"sink","size":10,"size_unit":"leads","ratios":[{"label":"r","value":0.5}],
                "rows":[{"label":"insert","unit":"leads/s","kind":"hunter","median":2.0,"rounds":[1.0,2.0,3.0]}]}"#,
        )
        .unwrap();
        check(&whole).unwrap();
        let mut no_rows = whole.clone();
        no_rows["rows"] = serde_json::json!([]);
        assert!(check(&no_rows).unwrap_err().to_string().contains("no rows"));
        let mut bad_kind = whole.clone();
        bad_kind["rows"][0]["kind"] = "fast".into();
        assert!(
            check(&bad_kind)
                .unwrap_err()
                .to_string()
                .contains("unknown kind")
        );
        let mut no_median = whole.clone();
        no_median["rows"][0]["median"] = Value::Null;
        assert!(
            check(&no_median)
                .unwrap_err()
                .to_string()
                .contains("median")
        );
        let mut no_ratio = whole;
        no_ratio["ratios"][0]["value"] = Value::Null;
        assert!(check(&no_ratio).unwrap_err().to_string().contains("ratio"));
    }

    #[test]
    fn figures_read_like_the_tables_do() {
        assert_eq!(figure(261_729.4), "261,729");
        assert_eq!(figure(1_000.0), "1,000");
        assert_eq!(figure(999.6), "1,000");
        assert_eq!(figure(27.94), "27.9");
        assert_eq!(figure(0.714), "0.71");
        assert_eq!(figure(-1234.0), "-1,234");
        assert_eq!(figure(f64::NAN), "–");
    }

    #[test]
    fn sections_are_replaced_between_their_markers_only() {
        let machine = Machine {
            date: "2026-11-28 12:00 UTC".into(),
            commit: "abc".into(),
            cores: "2".into(),
            ..Machine::default()
        };
        let document = "# Benchmarks\n\n<!-- bench:machine -->\nold\n<!-- /bench:machine -->\n\nprose\n\n<!-- bench:sink -->\nold table\n<!-- /bench:sink -->\n\nmore prose\n\n<!-- bench:api -->\nkept\n<!-- /bench:api -->\n";
        let result: Value = serde_json::from_str(
            r#"{"bench":"sink","size":1000000,"size_unit":"leads","rows":[
                {"label":"ceiling","unit":"leads/s","kind":"ceiling","median":261729.0,"rounds":[261729.0,270174.0,256521.0]},
                {"label":"hunter sink","unit":"leads/s","kind":"hunter","median":27901.0,"rounds":[27901.0,27577.0,28244.0]}],
              "ratios":[{"label":"sink / ceiling","value":0.106,"target":">= 0.50","met":false}],
              "notes":["a note"]}"#,
        )
        .unwrap();
        let rendered = render(document, &[result], &machine).unwrap();
        assert!(rendered.contains("prose\n\n<!-- bench:sink -->\nMeasured 2026-11-28"));
        assert!(
            rendered
                .contains("| **hunter sink** | **27,901** | leads/s | 27,901 / 27,577 / 28,244 |")
        );
        assert!(rendered.contains("| ceiling *(ceiling)* | 261,729 |"));
        assert!(rendered.contains("| sink / ceiling | 0.11 | ≥ 0.50 | **not met** |"));
        assert!(rendered.contains("- a note\n<!-- /bench:sink -->\n\nmore prose"));
        assert!(rendered.contains("<!-- bench:api -->\nkept\n<!-- /bench:api -->"));
        assert!(!rendered.contains("old"));
        assert!(render("no markers", &[], &machine).is_err());
    }

    #[test]
    fn result_lines_are_picked_out_of_bench_output() {
        let text = "round 1: ...\nRESULT {\"bench\":\"x\"}\nsummary\n";
        let found = results(text).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0]["bench"], "x");
        assert!(results("RESULT {not json").is_err());
    }
}
