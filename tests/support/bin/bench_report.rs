//! `bench-report --out BENCHMARKS.md RESULTS...`: rewrites the generated sections of
//! BENCHMARKS.md (the machine, and the tables of each bench with a `RESULT` line in the
//! given files) and leaves the prose alone. `tests/bench.sh` runs it after the benches.

use hunter_e2e::report::{Machine, render, results};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut out = None;
    let mut inputs = Vec::new();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--out" => out = args.next(),
            _ => inputs.push(arg),
        }
    }
    let Some(out) = out else {
        anyhow::bail!("usage: bench-report --out BENCHMARKS.md RESULTS...");
    };
    let mut found = Vec::new();
    for input in &inputs {
        found.extend(results(&std::fs::read_to_string(input)?)?);
    }
    anyhow::ensure!(!found.is_empty(), "no RESULT line in {inputs:?}");
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
