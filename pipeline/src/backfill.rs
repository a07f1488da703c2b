//! `hunter backfill [--tenant T] [--since DATE] [--no-wait]`: a full (or windowed) re-read of
//! Partner Center now, run by the source, followed to its end with a progress bar.
//!
//! How: the command puts a `backfill` command on `hunter.commands.v1` (its id is the run id);
//! the source runs it for each tenant addressed, one backfill at a time per tenant (a backfill
//! requested while one that covers it runs is recorded as `coalesced` into it, and this command
//! then follows that run), and writes the run's record to `hunter.sync-runs.v1` after every page
//! (status `running`, the counts so far) and when it ends. The command reads that topic from its
//! end offsets as they were *before* the command was sent, so it misses no record of its run,
//! without a consumer group.
//!
//! Output: a bar on a terminal (stderr); otherwise a progress line for the first progress record
//! and then at most every 2 s, for logs and CI. The summary goes to stdout. Exit status: 0 when
//! every tenant's run succeeded, non-zero when one failed (with its error) or expired.
//!
//! Limits: the estimate is the previous read of everything by the same source process (the
//! service gives no total, docs/partner-center-api.md); after a source restart the first
//! backfill has none and the bar counts without a length. Ctrl-C stops the waiting, not the
//! backfill.

use std::collections::BTreeMap;
use std::io::IsTerminal as _;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hunter_core::codec::Codec;
use hunter_core::config::Settings;
use hunter_core::records::{Command, RunStatus, SyncRun, Timestamp};
use rdkafka::Message as _;
use rdkafka::consumer::Consumer as _;
use rdkafka::producer::FutureRecord;
use rdkafka::util::Timeout;
use time::OffsetDateTime;

use crate::roles::Context;

/// Parses `--since`: an RFC 3339 time (`2026-01-31T08:00:00Z`) or a date (`2026-01-31`,
/// midnight UTC); not in the future.
pub fn parse_since(text: &str, now: OffsetDateTime) -> anyhow::Result<Timestamp> {
    let text = text.trim();
    let at = if let Ok(at) =
        OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
    {
        at
    } else if let Ok(date) = time::Date::parse(
        text,
        time::macros::format_description!("[year]-[month]-[day]"),
    ) {
        date.midnight().assume_utc()
    } else {
        anyhow::bail!(
            "--since {text:?} is not a date: give an RFC 3339 time (2026-01-31T08:00:00Z) or a \
             date (2026-01-31)"
        );
    };
    anyhow::ensure!(
        at <= now,
        "--since {text:?} is in the future: give a time in the past (a backfill reads referrals \
         updated since then)"
    );
    Ok(Timestamp::from_offset_date_time(at))
}

/// The tenants a backfill addresses: `--tenant` (which must be configured), else every one.
pub fn tenants(configured: &[String], tenant: Option<&str>) -> anyhow::Result<Vec<String>> {
    match tenant {
        None => Ok(configured.to_vec()),
        Some(name) if configured.iter().any(|c| c == name) => Ok(vec![name.to_owned()]),
        Some(name) => anyhow::bail!(
            "--tenant {name:?} is not a configured tenant; configured: {}",
            configured.join(", ")
        ),
    }
}

pub async fn run(
    settings: Settings,
    tenant: Option<&str>,
    since: Option<&str>,
    no_wait: bool,
) -> anyhow::Result<()> {
    let since = since
        .map(|text| parse_since(text, OffsetDateTime::now_utc()))
        .transpose()?;
    let configured: Vec<String> = settings
        .partner_center
        .tenants
        .iter()
        .map(|t| t.name.clone())
        .collect();
    let tenants = tenants(&configured, tenant)?;
    anyhow::ensure!(
        settings.partner_center.enabled,
        "the partner center source is disabled (HUNTER_PARTNER_CENTER_ENABLED=false): no source \
         would run the backfill; enable it for the source"
    );
    let context = Context::new(settings)?;
    let kafka = context.settings.kafka.clone();
    let runs_topic = context.topics.sync_runs.clone();
    let command = Command {
        command_id: uuid::Uuid::new_v4().to_string(),
        kind: Command::BACKFILL.to_owned(),
        tenant: tenant.map(str::to_owned),
        requested_at: Timestamp::now(),
        since,
        referral_id: None,
    };

    // Where the run's records will start: the end offsets now, before the command is sent.
    let (records, mut received) = tokio::sync::mpsc::channel::<Vec<u8>>(1024);
    let (ready, positioned) = tokio::sync::oneshot::channel();
    let reader = (!no_wait).then(|| {
        let topic = runs_topic.clone();
        std::thread::spawn(move || follow(&kafka, &topic, ready, records))
    });
    if reader.is_some() {
        positioned
            .await
            .context("the sync-runs reader stopped")?
            .context("cannot read the sync-runs topic (hunter migrate; the broker)")?;
    }

    let codec = Codec::<Command>::new(&context.topics.commands, context.registry.clone());
    let payload = codec.encode(&command).await?;
    let producer = hunter_core::kafka::producer(&context.settings.kafka, "hunter-backfill")?;
    producer
        .send(
            FutureRecord::to(&context.topics.commands)
                .key(&command.command_id)
                .payload(&payload),
            Timeout::After(Duration::from_secs(30)),
        )
        .await
        .map_err(|(error, _)| anyhow::anyhow!("the backfill command was not sent: {error}"))?;
    let window = since
        .map(|at| format!("referrals updated since {}", at.to_rfc3339()))
        .unwrap_or_else(|| "every referral".to_owned());
    eprintln!(
        "backfill {} requested for {} ({window})",
        command.command_id,
        tenants.join(", ")
    );
    if no_wait {
        println!("{}", command.command_id);
        return Ok(());
    }

    let runs = Codec::<SyncRun>::new(&runs_topic, context.registry.clone());
    let mut follow = Follow::new(&command.command_id, &tenants);
    let progress = Progress::new();
    let started = Instant::now();
    let mut hinted = false;
    while !follow.done() {
        let payload = match tokio::time::timeout(Duration::from_secs(60), received.recv()).await {
            Ok(Some(payload)) => payload,
            Ok(None) => anyhow::bail!("the sync-runs reader stopped; the backfill goes on"),
            Err(_) => {
                if !hinted && follow.runs.is_empty() {
                    hinted = true;
                    eprintln!(
                        "no run recorded yet after {} s: is the source running \
                         (`hunter run source`)? still waiting (Ctrl-C stops waiting, not the backfill)",
                        started.elapsed().as_secs()
                    );
                }
                continue;
            }
        };
        let Ok(run) = runs.decode(&payload).await else {
            continue; // not ours to judge: the sink dead-letters it
        };
        if follow.observe(run) {
            progress.show(&follow);
        }
    }
    progress.finish();
    let failed: Vec<&SyncRun> = follow
        .runs
        .values()
        .filter(|run| run.run_status() != Some(RunStatus::Succeeded))
        .collect();
    for run in follow.runs.values() {
        println!(
            "{}: backfill {} {}: {} pages, {} fetched, {} published, {} already published, {} dead-lettered{}",
            run.tenant,
            run.run_id,
            run.status,
            run.pages,
            run.fetched,
            run.published,
            run.skipped,
            run.dead_lettered,
            run.error_message
                .as_deref()
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        );
    }
    drop(reader);
    anyhow::ensure!(
        failed.is_empty(),
        "the backfill did not succeed for {}",
        failed
            .iter()
            .map(|run| run.tenant.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

/// Reads `topic` from its end offsets as they are now (signalled on `ready`) onwards, handing
/// each value to `records`; ends when the receiving side is gone. Blocking.
fn follow(
    settings: &hunter_core::config::KafkaSettings,
    topic: &str,
    ready: tokio::sync::oneshot::Sender<anyhow::Result<()>>,
    records: tokio::sync::mpsc::Sender<Vec<u8>>,
) {
    let timeout = Duration::from_secs(30);
    let positioned = (|| -> anyhow::Result<_> {
        let reader = hunter_core::kafka::reader(settings, "hunter-backfill")?;
        let metadata = reader.fetch_metadata(Some(topic), timeout)?;
        let found = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none())
            .with_context(|| format!("topic {topic} does not exist (hunter migrate)"))?;
        let mut assignment = rdkafka::TopicPartitionList::new();
        for partition in found.partitions() {
            let (_, high) = reader.fetch_watermarks(topic, partition.id(), timeout)?;
            assignment.add_partition_offset(
                topic,
                partition.id(),
                rdkafka::Offset::Offset(high),
            )?;
        }
        reader.assign(&assignment)?;
        Ok(reader)
    })();
    let reader = match positioned {
        Ok(reader) => {
            let _ = ready.send(Ok(()));
            reader
        }
        Err(error) => {
            let _ = ready.send(Err(error));
            return;
        }
    };
    loop {
        if records.is_closed() {
            break;
        }
        match reader.poll(Duration::from_millis(500)) {
            Some(Ok(message)) => {
                let payload = message.payload().unwrap_or_default().to_vec();
                if records.blocking_send(payload).is_err() {
                    break;
                }
            }
            Some(Err(error)) => tracing::debug!(%error, "sync-runs read"),
            None => {}
        }
    }
}

/// The runs a backfill command is served by, per tenant, as their records arrive.
#[derive(Debug)]
pub struct Follow {
    command_id: String,
    tenants: Vec<String>,
    /// Per tenant: the run serving the command (its own, or the one it was coalesced into).
    serving: BTreeMap<String, String>,
    /// Per tenant: the serving run's latest record.
    pub runs: BTreeMap<String, SyncRun>,
    /// Progress records seen.
    pub progress_records: u64,
}

impl Follow {
    pub fn new(command_id: &str, tenants: &[String]) -> Self {
        Follow {
            command_id: command_id.to_owned(),
            tenants: tenants.to_vec(),
            serving: tenants
                .iter()
                .map(|t| (t.clone(), command_id.to_owned()))
                .collect(),
            runs: BTreeMap::new(),
            progress_records: 0,
        }
    }

    /// Takes one sync-run record; true when it concerns the backfill.
    pub fn observe(&mut self, run: SyncRun) -> bool {
        let Some(serving) = self.serving.get(&run.tenant).cloned() else {
            return false;
        };
        if run.run_id == self.command_id && run.run_status() == Some(RunStatus::Coalesced) {
            if let Some(into) = &run.coalesced_into {
                eprintln!(
                    "{}: a backfill is already running ({into}): following it",
                    run.tenant
                );
                self.serving.insert(run.tenant.clone(), into.clone());
            }
            return true;
        }
        if run.run_id != serving {
            return false;
        }
        // Records of one run arrive in order (one key, one partition); a final one stays.
        if self.runs.get(&run.tenant).is_some_and(|last| {
            last.run_status() != Some(RunStatus::Running)
                && run.run_status() == Some(RunStatus::Running)
        }) {
            return false;
        }
        if run.run_status() == Some(RunStatus::Running) && run.updated_at.is_some() {
            self.progress_records += 1;
        }
        self.runs.insert(run.tenant.clone(), run);
        true
    }

    /// Every tenant's serving run has its final record.
    pub fn done(&self) -> bool {
        self.tenants.iter().all(|tenant| {
            self.runs
                .get(tenant)
                .is_some_and(|run| run.run_status() != Some(RunStatus::Running))
        })
    }

    /// Sums over the tenants: pages, fetched, published, the estimate (when every run has one)
    /// and the longest elapsed time.
    fn totals(&self) -> (i64, i64, i64, Option<i64>, Duration) {
        let mut totals = (0, 0, 0, Some(0), Duration::ZERO);
        for run in self.runs.values() {
            totals.0 += run.pages;
            totals.1 += run.fetched;
            totals.2 += run.published;
            totals.3 = totals.3.zip(run.estimate).map(|(a, b)| a + b);
            let until = run.finished_at.or(run.updated_at).unwrap_or(run.started_at);
            let elapsed = Duration::from_micros(
                u64::try_from(until.micros() - run.started_at.micros()).unwrap_or(0),
            );
            totals.4 = totals.4.max(elapsed);
        }
        if self.runs.len() < self.tenants.len() {
            totals.3 = None;
        }
        totals
    }
}

/// A bar on a terminal; lines otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    last_line: std::cell::Cell<Option<Instant>>,
}

impl Progress {
    fn new() -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::no_length();
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "backfill [{bar:40}] {pos}/{len} referrals ({percent}%, eta {eta}) {msg}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar
        });
        Progress {
            bar,
            last_line: std::cell::Cell::new(None),
        }
    }

    fn show(&self, follow: &Follow) {
        let (pages, fetched, published, estimate, elapsed) = follow.totals();
        let fetched_u = u64::try_from(fetched).unwrap_or(0);
        if let Some(bar) = &self.bar {
            let estimate = estimate
                .and_then(|e| u64::try_from(e).ok())
                .filter(|e| *e > 0);
            bar.set_length(estimate.unwrap_or(fetched_u).max(fetched_u));
            bar.set_position(fetched_u);
            bar.set_message(format!("{pages} pages, {published} published"));
            return;
        }
        let due = self
            .last_line
            .get()
            .is_none_or(|at| at.elapsed() >= Duration::from_secs(2));
        if due && fetched > 0 {
            self.last_line.set(Some(Instant::now()));
            let of = match estimate.filter(|e| *e > 0) {
                Some(e) => format!(
                    "{fetched}/~{e} referrals ({:.0}%)",
                    fetched as f64 * 100.0 / e as f64
                ),
                None => format!("{fetched} referrals"),
            };
            eprintln!(
                "backfill progress: {of}, {pages} pages, {published} published, {:.1} s",
                elapsed.as_secs_f64()
            );
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hunter_core::records::RunTrigger;

    fn now() -> OffsetDateTime {
        time::macros::datetime!(2026-02-01 00:00 UTC)
    }

    #[test]
    fn since_takes_rfc3339_or_a_date() {
        let at = parse_since("2026-01-31T08:00:00Z", now()).unwrap();
        assert_eq!(
            at.to_rfc3339(),
            Timestamp::parse("2026-01-31T08:00:00Z")
                .unwrap()
                .to_rfc3339()
        );
        let day = parse_since("2026-01-31", now()).unwrap();
        assert_eq!(day, Timestamp::parse("2026-01-31T00:00:00Z").unwrap());
        let offset = parse_since("2026-01-31T09:00:00+01:00", now()).unwrap();
        assert_eq!(offset, at);
    }

    #[test]
    fn a_bad_or_future_since_names_the_flag() {
        for bad in [
            "yesterday",
            "2026-13-01",
            "31/01/2026",
            "",
            "2026-01-31T08:00",
        ] {
            let error = parse_since(bad, now()).unwrap_err().to_string();
            assert!(error.starts_with("--since"), "{bad}: {error}");
        }
        let error = parse_since("2026-03-01", now()).unwrap_err().to_string();
        assert!(
            error.contains("--since") && error.contains("future"),
            "{error}"
        );
    }

    #[test]
    fn the_tenant_must_be_configured() {
        let configured = ["contoso".to_owned(), "fabrikam".to_owned()];
        assert_eq!(tenants(&configured, None).unwrap(), ["contoso", "fabrikam"]);
        assert_eq!(
            tenants(&configured, Some("fabrikam")).unwrap(),
            ["fabrikam"]
        );
        let error = tenants(&configured, Some("northwind"))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("--tenant") && error.contains("contoso, fabrikam"),
            "{error}"
        );
    }

    #[test]
    fn the_command_line_parses() {
        use clap::Parser as _;
        let cli = crate::cli::Cli::try_parse_from([
            "hunter",
            "backfill",
            "--tenant",
            "contoso",
            "--since",
            "2026-01-31",
            "--no-wait",
        ])
        .unwrap();
        let crate::cli::Command::Backfill(args) = cli.command else {
            panic!("not backfill: {:?}", cli.command);
        };
        assert_eq!(args.tenant.as_deref(), Some("contoso"));
        assert_eq!(args.since.as_deref(), Some("2026-01-31"));
        assert!(args.no_wait);
        let cli = crate::cli::Cli::try_parse_from(["hunter", "backfill"]).unwrap();
        let crate::cli::Command::Backfill(args) = cli.command else {
            panic!("not backfill");
        };
        assert!(args.tenant.is_none() && args.since.is_none() && !args.no_wait);
        assert!(crate::cli::Cli::try_parse_from(["hunter", "backfill", "--since"]).is_err());
    }

    fn record(id: &str, tenant: &str, status: RunStatus, fetched: i64) -> SyncRun {
        let mut run = SyncRun::started(id, tenant, RunTrigger::Backfill);
        run.fetched = fetched;
        if status == RunStatus::Running {
            run.updated_at = Some(Timestamp::now());
        } else {
            run.finish(status);
        }
        run
    }

    #[test]
    fn following_a_backfill_through_progress_and_a_coalesced_trigger() {
        let tenants = vec!["a".to_owned(), "b".to_owned()];
        let mut follow = Follow::new("cmd", &tenants);
        assert!(!follow.observe(record("other", "a", RunStatus::Running, 1)));
        assert!(follow.observe(record("cmd", "a", RunStatus::Running, 100)));
        // b was already backfilling: the command follows that run.
        let mut coalesced = record("cmd", "b", RunStatus::Coalesced, 0);
        coalesced.coalesced_into = Some("earlier".into());
        assert!(follow.observe(coalesced));
        assert!(follow.observe(record("earlier", "b", RunStatus::Running, 50)));
        assert_eq!(follow.progress_records, 2);
        assert!(!follow.done());
        assert!(follow.observe(record("cmd", "a", RunStatus::Succeeded, 200)));
        assert!(!follow.done(), "b still runs");
        assert!(follow.observe(record("earlier", "b", RunStatus::Failed, 60)));
        assert!(follow.done());
        assert_eq!(follow.totals().1, 260);
    }
}
