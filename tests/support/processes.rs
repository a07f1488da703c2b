//! Child processes: a `hunter` role or one-shot command with its output in a log file, servers the
//! tests started and stop with SIGTERM, `hunter simulate --generate`, and polling with a timeout.
//!
//! Every child is killed when its handle is dropped, so a failing test leaves nothing running.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::stack::{free_port, hunter_bin};

/// A running `hunter` process; killed when dropped. Its output goes to a log file.
pub struct Process {
    pub name: String,
    child: Child,
    pub log: PathBuf,
}

impl Process {
    pub fn spawn(
        name: &str,
        args: &[&str],
        env: &HashMap<String, String>,
        dir: &Path,
    ) -> anyhow::Result<Self> {
        let log = dir.join(format!("{name}.log"));
        let out = File::create(&log)?;
        // A deployment may name its own binary (a bench comparing a baseline build with this
        // one in the same run); the variable is harmless in the child's environment.
        let bin = env.get("HUNTER_BIN").map_or_else(hunter_bin, PathBuf::from);
        let child = Command::new(bin)
            .args(args)
            .env_clear()
            .envs(base_env())
            .envs(env)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("spawn hunter {args:?}"))?;
        Ok(Process {
            name: name.to_owned(),
            child,
            log,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no shutdown hooks run.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for a graceful exit.
    pub fn terminate(&mut self, timeout: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                self.kill9();
                bail!(
                    "{} did not stop within {timeout:?} after SIGTERM\n{}",
                    self.name,
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// How the process ended (`None` while it runs).
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The parts of the environment a child needs (PATH, HOME), nothing of the test runner's.
pub fn base_env() -> Vec<(String, String)> {
    ["PATH", "HOME", "RUST_BACKTRACE"]
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
        .chain([("RUST_LOG".to_string(), "info,hunter=debug".to_string())])
        .collect()
}

/// Runs `hunter args` to completion and returns (success, combined output).
pub fn run_hunter(
    args: &[&str],
    env: &HashMap<String, String>,
    timeout: Duration,
) -> anyhow::Result<(bool, String)> {
    let dir = tempfile::tempdir()?;
    let mut process = Process::spawn("oneshot", args, env, dir.path())?;
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = process.child.try_wait()? {
            return Ok((status.success(), process.output()));
        }
        if Instant::now() > deadline {
            let output = process.output();
            process.kill9();
            bail!("hunter {args:?} did not finish within {timeout:?}\n{output}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Polls `check` until it returns `Some`, or fails with the last observation after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last = match check().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => "not yet".to_owned(),
            Err(error) => format!("{error:#}"),
        };
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what} (last: {last})");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits until `url` answers 2xx.
pub async fn wait_healthy(what: &str, url: &str, timeout: Duration) -> anyhow::Result<()> {
    wait_for(what, timeout, || async move {
        Ok(reqwest::get(url)
            .await
            .ok()
            .filter(|r| r.status().is_success())
            .map(|_| ()))
    })
    .await
}

/// SIGTERM to a server the tests started, and waits until it has exited (SIGKILL after
/// `timeout`, which is then an error).
pub(crate) async fn terminate_server(
    mut server: Child,
    what: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()?;
    let deadline = Instant::now() + timeout;
    while server.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = server.kill();
            let _ = server.wait();
            bail!("{what} did not stop within {timeout:?} of SIGTERM; killed");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Generated referrals in the API's shape, from the real `hunter simulate --generate`.
pub fn generated_referrals(count: usize, seed: u64) -> anyhow::Result<Vec<serde_json::Value>> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("generated.json");
    generate_referrals_file(&file, count, seed)?;
    let referrals: Vec<serde_json::Value> = serde_json::from_slice(&std::fs::read(&file)?)?;
    anyhow::ensure!(
        referrals.len() == count,
        "generated {} referrals, wanted {count}",
        referrals.len()
    );
    Ok(referrals)
}

/// Writes `count` generated referrals to `file` with the real `hunter simulate --generate`,
/// without reading them back (a million are about 4 GB of JSON).
pub fn generate_referrals_file(file: &Path, count: usize, seed: u64) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let port = free_port().to_string();
    let listen = format!("127.0.0.1:{port}");
    let file_text = file.display().to_string();
    let count_text = count.to_string();
    let seed_text = seed.to_string();
    let mut process = Process::spawn(
        "generate",
        &[
            "simulate",
            "--referrals",
            &file_text,
            "--listen",
            &listen,
            "--generate",
            &count_text,
            "--seed",
            &seed_text,
        ],
        &HashMap::new(),
        dir.path(),
    )?;
    // About 65 s per million on 2 cores.
    let deadline = Instant::now() + Duration::from_secs(30 + count as u64 / 10_000);
    // Said once the file is in place (it is written to a temporary file and renamed).
    let written = format!("wrote {count} generated referrals");
    while !process.output().contains(&written) {
        if Instant::now() > deadline || !process.is_running() {
            bail!(
                "hunter simulate --generate did not write {}:\n{}",
                file.display(),
                process.output()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    process.kill9();
    Ok(())
}

/// A finished command's stdout and stderr as one text, for assertions and failure messages.
pub fn output_text(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `hunter doctor`'s output as check name → verdict (`ok`, `warn`, `FAIL`, `skip`): the verdict
/// in columns 0..4, the check's name in columns 6..30.
pub fn doctor_verdicts(output: &str) -> std::collections::BTreeMap<String, String> {
    output
        .lines()
        .filter_map(|line| {
            let verdict = line.get(..4)?;
            if !["ok  ", "warn", "FAIL", "skip"].contains(&verdict) {
                return None;
            }
            let name = line.get(6..30)?.trim().to_owned();
            Some((name, verdict.trim().to_owned()))
        })
        .collect()
}
