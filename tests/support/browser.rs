//! The page's browser checks (`tests/browser/*.mjs`, headless Chromium through playwright-core)
//! as the end-to-end tests run them.

use std::path::PathBuf;
use std::process::Command;

use crate::contracts::repo;

/// `tests/browser`, once its packages are installed (`tests/run.sh` runs `npm ci` there).
pub fn browser_dir() -> anyhow::Result<PathBuf> {
    let dir = repo().join("tests/browser");
    anyhow::ensure!(
        dir.join("node_modules/playwright-core").exists(),
        "playwright-core missing: run `npm ci --prefix tests/browser` (tests/run.sh does)"
    );
    Ok(dir)
}

/// Where the scripts save their screenshots (`HUNTER_WEB_ARTIFACTS`).
pub fn artifacts_dir() -> PathBuf {
    repo().join("target/browser-artifacts")
}

/// Runs `node <script>` in [`browser_dir`] with `env` and `HUNTER_WEB_ARTIFACTS`, and returns
/// its output. An error with that output and `logs()` (the deployment's logs, say) unless the
/// script exits 0 and printed `passed`.
pub async fn run_script(
    script: &str,
    env: &[(&str, String)],
    passed: &str,
    logs: impl FnOnce() -> String,
) -> anyhow::Result<String> {
    let mut command = Command::new("node");
    command
        .arg(script)
        .current_dir(browser_dir()?)
        .env("HUNTER_WEB_ARTIFACTS", artifacts_dir());
    for (name, value) in env {
        command.env(name, value);
    }
    let output = tokio::task::spawn_blocking(move || command.output()).await??;
    let text = crate::output_text(&output);
    if !output.status.success() || !text.contains(passed) {
        anyhow::bail!(
            "browser checks of {script} failed (screenshots in target/browser-artifacts):\n{text}\n{}",
            logs()
        );
    }
    Ok(text)
}
