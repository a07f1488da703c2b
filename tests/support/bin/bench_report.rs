//! `bench-report --out BENCHMARKS.md RESULTS...`: rewrites the generated sections of
//! BENCHMARKS.md (the machine, and the tables of each bench with a `RESULT` line in the
//! given files) and leaves the prose alone. `tests/bench.sh` runs it after the benches.
//!
//! `bench-report --check BENCHMARKS.md RESULTS...`: what `tests/bench.sh --smoke` runs: checks
//! every `RESULT` line is whole and renders into the document's tables, and writes nothing.
//! Smoke results (`"smoke": true`, figures of a tiny debug run) are refused by `--out`.

use hunter_e2e::report::{Machine, check, render, results};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut out = None;
    let mut check_only = None;
    let mut inputs = Vec::new();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--out" => out = args.next(),
            "--check" => check_only = args.next(),
            _ => inputs.push(arg),
        }
    }
    let mut found = Vec::new();
    for input in &inputs {
        found.extend(results(&std::fs::read_to_string(input)?)?);
    }
    anyhow::ensure!(!found.is_empty(), "no RESULT line in {inputs:?}");
    for result in &found {
        check(result)?;
    }
    if let Some(document) = check_only {
        let text = std::fs::read_to_string(&document)?;
        render(&text, &found, &Machine::default())?;
        let benches: Vec<&str> = found.iter().filter_map(|r| r["bench"].as_str()).collect();
        eprintln!(
            "{} RESULT lines whole and rendering into {document}: {}",
            found.len(),
            benches.join(", ")
        );
        return Ok(());
    }
    let Some(out) = out else {
        anyhow::bail!(
            "usage: bench-report --out BENCHMARKS.md RESULTS... | --check BENCHMARKS.md RESULTS..."
        );
    };
    let smoke: Vec<&str> = found
        .iter()
        .filter(|r| r["smoke"].as_bool() == Some(true))
        .filter_map(|r| r["bench"].as_str())
        .collect();
    anyhow::ensure!(
        smoke.is_empty(),
        "smoke results (a tiny debug run) never go into {out}: {}",
        smoke.join(", ")
    );
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let clickhouse =
        std::env::var("HUNTER_CLICKHOUSE_URL").unwrap_or_else(|_| "http://127.0.0.1:18123".into());
    let machine = Machine::collect(&repo, &clickhouse).await;
    let document = std::fs::read_to_string(&out)?;
    std::fs::write(&out, render(&document, &found, &machine)?)?;
    let benches: Vec<&str> = found.iter().filter_map(|r| r["bench"].as_str()).collect();
    eprintln!("{out}: the machine and {} rewritten", benches.join(", "));
    Ok(())
}
