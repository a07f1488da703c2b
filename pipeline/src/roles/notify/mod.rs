//! The `notify` role: outgoing webhooks (docs/notifications.md).
//!
//! consume `hunter.leads.v1` (group `hunter-notify-leads`) → a new incoming referral, a status
//! change; consume `hunter.sync-runs.v1` (group `hunter-notify-sync-runs`) → sign-in required,
//! once per episode; ask ClickHouse `leads FINAL` daily and every few minutes → expiring soon,
//! expiring within the hour. Each event goes to every target of `HUNTER_NOTIFY_TARGETS`.
//!
//! Invariants:
//! - deduplicated by (target, kind, lead or tenant, version; the expiry time for the expiry
//!   kinds): an id already in `notifications`
//!   (read at start, then kept in memory) is never queued again, so replays, restarts and
//!   repeated checks send nothing twice unless a crash fell between a delivery and its record
//!   (at least once);
//! - a record's offset is stored only once its deliveries' `queued` rows are in ClickHouse;
//!   delivery itself happens after, in each target's worker (`deliver`), so no target, however
//!   dead or slow, holds the lead stream: only ClickHouse refusing rows does (the stream then
//!   waits and retries, like the sink);
//! - a lead record that cannot be decoded is skipped here (the sink dead-letters it); a
//!   registry outage is waited out; a registry that refuses Hunter stops the role;
//! - a change older than `HUNTER_NOTIFY_MAX_AGE_SECS` (Partner Center's time) is not news and
//!   is not notified: a new deployment does not announce every old referral.

pub mod deliver;
pub mod event;
pub mod store;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use hunter_clickhouse::writer::ReadWriter;
use hunter_core::codec::Codec;
use hunter_core::config::{NotifySettings, NotifyTarget};
use hunter_core::kafka::{Fetch, GroupConsumer, Subscription};
use hunter_core::records::{Lead, RunErrorClass, RunStatus, SyncRun, Timestamp};
use hunter_core::shutdown::Shutdown;
use rdkafka::Message;
use tokio::sync::mpsc;

use self::deliver::Job;
use self::event::Event;
use self::store::{Outcome, Step};
use super::Context;

/// The consumer groups of this role (without the prefix), with what they read.
pub const LEADS_GROUP: &str = "notify-leads";
pub const SYNC_RUNS_GROUP: &str = "notify-sync-runs";

/// Queues events for every target, once each.
struct Dispatcher {
    writer: ReadWriter,
    targets: Vec<NotifyTarget>,
    workers: HashMap<String, mpsc::UnboundedSender<Job>>,
    /// Every delivery queued in the dedupe window.
    ids: Mutex<HashSet<String>>,
}

impl Dispatcher {
    /// Records a `queued` row per new (event, target) and hands the jobs to the workers.
    /// `Err` only when shutdown came while ClickHouse refused the rows (nothing handed over).
    async fn dispatch(&self, events: Vec<Event>, shutdown: &mut Shutdown) -> Result<(), ()> {
        let mut steps = Vec::new();
        {
            let ids = self.ids.lock().unwrap_or_else(|e| e.into_inner());
            for event in &events {
                for target in &self.targets {
                    let id = event.notification_id(&target.name);
                    if ids.contains(&id) || steps.iter().any(|s: &Step| s.notification_id == id) {
                        continue;
                    }
                    steps.push(Step {
                        notification_id: id,
                        target: target.name.clone(),
                        format: target.format,
                        event: event.clone(),
                        attempt: 0,
                        outcome: Outcome::Queued,
                        http_status: None,
                        error: None,
                        duration_ms: 0,
                    });
                }
            }
        }
        if steps.is_empty() {
            return Ok(());
        }
        let rows: Vec<_> = steps.iter().map(Step::row).collect();
        store::insert_patiently(&self.writer, &rows, shutdown).await?;
        let mut ids = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        for step in steps {
            tracing::info!(target = %step.target, kind = step.event.kind.as_str(), subject = step.event.subject(), "notification queued");
            ids.insert(step.notification_id.clone());
            if let Some(worker) = self.workers.get(&step.target) {
                let _ = worker.send(Job {
                    notification_id: step.notification_id,
                    event: step.event,
                    attempts: 0,
                });
            }
        }
        Ok(())
    }
}

pub async fn run(context: Context, mut shutdown: Shutdown) -> anyhow::Result<()> {
    let settings = context.settings.notify.clone();
    if settings.targets.is_empty() {
        tracing::info!("no HUNTER_NOTIFY_TARGETS: the notify role sends nothing");
        shutdown.wait().await;
        return Ok(());
    }
    let writer = super::connect_clickhouse(&context.settings.clickhouse).await?;
    // The dedupe window: what the age filter could still let through, plus the expiry checks'
    // 48 hours.
    let window = settings.max_age + Duration::from_secs(3 * 86_400);
    let known = loop {
        match store::load(&writer, window).await {
            Ok(known) => break known,
            Err(error)
                if error.to_string().contains("doesn't exist")
                    || error.to_string().contains("UNKNOWN_TABLE") =>
            {
                anyhow::bail!("{error}: the notifications table is missing; run `hunter migrate`");
            }
            Err(error) => {
                tracing::warn!(%error, "cannot read the notifications table yet; retrying");
                tokio::select! {
                    _ = shutdown.wait() => return Ok(()),
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                }
            }
        }
    };
    tracing::info!(
        targets = settings.targets.len(),
        known = known.ids.len(),
        pending = known.pending.values().map(Vec::len).sum::<usize>(),
        "notify starting"
    );

    let client = reqwest::Client::builder()
        // A webhook that redirects is a misconfiguration (and its credential must not follow
        // a redirect elsewhere): recorded as failed, naming the setting.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .context("http client for notifications")?;
    let (recorder, recorder_task) = store::spawn_recorder(writer.clone(), shutdown.clone());
    let mut workers = HashMap::new();
    let mut worker_tasks = Vec::new();
    for target in &settings.targets {
        let (sender, receiver) = mpsc::unbounded_channel();
        workers.insert(target.name.clone(), sender);
        worker_tasks.push(tokio::spawn(deliver::worker(
            target.clone(),
            settings.clone(),
            client.clone(),
            recorder.clone(),
            receiver,
            shutdown.clone(),
        )));
    }
    let store::Known {
        ids,
        pending,
        signin_episodes,
    } = known;
    for (target, jobs) in pending {
        match workers.get(&target) {
            Some(worker) => {
                for job in jobs {
                    let _ = worker.send(job);
                }
            }
            None => tracing::warn!(
                target,
                deliveries = jobs.len(),
                "pending notifications of a target no longer in HUNTER_NOTIFY_TARGETS are dropped"
            ),
        }
    }
    let dispatcher = Arc::new(Dispatcher {
        writer: writer.clone(),
        targets: settings.targets.clone(),
        workers,
        ids: Mutex::new(ids),
    });

    let result = tokio::try_join!(
        leads(&context, &settings, &dispatcher, shutdown.clone()),
        sync_runs(
            &context,
            &settings,
            &dispatcher,
            &writer,
            signin_episodes,
            shutdown.clone()
        ),
        expiry::checks(&settings, &dispatcher, &writer, shutdown.clone()),
    );
    drop(dispatcher);
    for task in worker_tasks {
        let _ = task.await;
    }
    drop(recorder);
    let _ = recorder_task.await;
    result.map(|_| ())
}

/// Whether an event that happened at `at_micros` is still news.
fn is_recent(at_micros: i64, max_age: Duration) -> bool {
    let age = Timestamp::now().micros().saturating_sub(at_micros);
    age <= i64::try_from(max_age.as_micros()).unwrap_or(i64::MAX)
}

/// The lead stream: new incoming referrals and status changes.
async fn leads(
    context: &Context,
    settings: &NotifySettings,
    dispatcher: &Dispatcher,
    mut shutdown: Shutdown,
) -> anyhow::Result<()> {
    let mut stream =
        Stream::<Lead>::subscribe(context, LEADS_GROUP, &context.topics.leads, &shutdown)?;
    let result: anyhow::Result<()> = async {
        while let Some((partition, offset, lead)) = stream.next(&mut shutdown, "lead").await? {
            if let Some(lead) = lead {
                let events: Vec<Event> = event::events_of_lead(&lead, settings.page_url.as_ref())
                    .into_iter()
                    .filter(|(_, at)| is_recent(*at, settings.max_age))
                    .map(|(event, _)| event)
                    .collect();
                if dispatcher.dispatch(events, &mut shutdown).await.is_err() {
                    break;
                }
            }
            stream.consumer.store_offset(partition, offset);
        }
        Ok(())
    }
    .await;
    stream.consumer.close();
    result
}

/// One of notify's topic readers: its own consumer group from the topic's start, the codec,
/// and the consumer's renewal between two records.
struct Stream<T: hunter_core::records::Record> {
    consumer: GroupConsumer,
    codec: Codec<T>,
    renewal: tokio::time::Interval,
}

impl<T: hunter_core::records::Record> Stream<T> {
    fn subscribe(
        context: &Context,
        group: &str,
        topic: &str,
        shutdown: &Shutdown,
    ) -> anyhow::Result<Self> {
        let consumer = GroupConsumer::subscribe(
            &context.settings.kafka,
            Subscription {
                stage: "notify",
                group_id: &context.group_id(group),
                client_id: "hunter-notify",
                topic,
                fetch: Fetch::Prompt,
            },
            shutdown.clone(),
        )
        .with_context(|| format!("kafka consumer of {topic}"))?;
        Ok(Stream {
            consumer,
            codec: Codec::new(topic, context.registry.clone()),
            renewal: tokio::time::interval(Duration::from_secs(1)),
        })
    }

    /// The next record with its position: `None` as the value when it cannot be read (skipped:
    /// the sink dead-letters it; its offset is to be stored all the same). `Ok(None)` to stop:
    /// shutdown, or a registry outage that outlasted the wait (nothing stored, so a restart
    /// reads the record again). A fatal codec error is an error.
    async fn next(
        &mut self,
        shutdown: &mut Shutdown,
        what: &str,
    ) -> anyhow::Result<Option<(i32, i64, Option<T>)>> {
        let (partition, offset, payload) = loop {
            tokio::select! {
                biased;
                _ = shutdown.wait() => return Ok(None),
                _ = self.renewal.tick() => {
                    // Nothing of this consumer is in flight between two records.
                    if self.consumer.wants_renewal() {
                        self.consumer.renew().context("kafka consumer renewal")?;
                    }
                }
                received = self.consumer.recv() => {
                    let message = received.context("kafka consume")?;
                    break (message.partition(), message.offset(), message.payload().unwrap_or_default().to_vec());
                }
            }
        };
        let mut waiting = shutdown.clone();
        match self
            .codec
            .decode_patiently(&payload, &mut waiting, "notify")
            .await
        {
            Ok(value) => Ok(Some((partition, offset, Some(value)))),
            Err(error) if error.is_fatal() => anyhow::bail!("{error}"),
            Err(error) if error.is_retryable() => Ok(None),
            Err(error) => {
                tracing::warn!(partition, offset, %error, "unreadable {what} skipped (the sink dead-letters it)");
                Ok(Some((partition, offset, None)))
            }
        }
    }
}

/// A tenant's sign-in state as the sync runs tell it.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Episode {
    /// The version (first failed run's start) of the newest episode notified.
    notified: Option<i64>,
    /// Whether a successful run came after it.
    ended: bool,
}

impl Episode {
    /// Takes one run; returns whether it starts a new episode to notify.
    fn observe(&mut self, run: &SyncRun, max_age: Duration) -> bool {
        let started = run.started_at.micros();
        if self.notified.is_some_and(|notified| started <= notified) {
            return false; // replayed, or older than the episode notified
        }
        match run.run_status() {
            Some(RunStatus::Succeeded) => {
                self.ended = true;
                false
            }
            Some(RunStatus::Failed)
                if run.error_class.as_deref() == Some(RunErrorClass::SigninRequired.as_str()) =>
            {
                let in_episode = self.notified.is_some() && !self.ended;
                // An old failure (a group read from the start) is not news and starts nothing:
                // the first recent one does.
                if in_episode || !is_recent(started, max_age) {
                    return false;
                }
                self.notified = Some(started);
                self.ended = false;
                true
            }
            _ => false,
        }
    }
}

/// The sync-run stream: sign-in required, once per episode (an episode ends with a
/// successful run).
async fn sync_runs(
    context: &Context,
    settings: &NotifySettings,
    dispatcher: &Dispatcher,
    writer: &ReadWriter,
    notified: HashMap<String, i64>,
    mut shutdown: Shutdown,
) -> anyhow::Result<()> {
    // Whether each notified episode ended: a successful run started after it (the sink's
    // table; if it cannot say, the episode counts as ended, so a restart may notify an
    // ongoing episode again rather than miss a new one).
    let mut episodes: HashMap<String, Episode> = HashMap::new();
    let succeeded = succeeded_runs(writer).await;
    for (tenant, version) in notified {
        let ended = succeeded
            .as_ref()
            .is_none_or(|runs| runs.get(&tenant).is_some_and(|last| *last > version));
        episodes.insert(
            tenant,
            Episode {
                notified: Some(version),
                ended,
            },
        );
    }
    let mut stream = Stream::<SyncRun>::subscribe(
        context,
        SYNC_RUNS_GROUP,
        &context.topics.sync_runs,
        &shutdown,
    )?;
    let result: anyhow::Result<()> = async {
        while let Some((partition, offset, run)) = stream.next(&mut shutdown, "sync run").await? {
            if let Some(run) = run {
                let episode = episodes.entry(run.tenant.clone()).or_default();
                let before = *episode;
                if episode.observe(&run, settings.max_age) {
                    let event = event::signin_event(&run);
                    if dispatcher
                        .dispatch(vec![event], &mut shutdown)
                        .await
                        .is_err()
                    {
                        *episode = before;
                        break;
                    }
                }
            }
            stream.consumer.store_offset(partition, offset);
        }
        Ok(())
    }
    .await;
    stream.consumer.close();
    result
}

#[derive(Debug, clickhouse::Row, serde::Deserialize)]
struct SucceededRow {
    tenant: String,
    started: u64,
}

/// The start of each tenant's newest successful run (microseconds), from `sync_runs`.
async fn succeeded_runs(writer: &ReadWriter) -> Option<HashMap<String, i64>> {
    let sql = "SELECT tenant, toUInt64(max(started_at)) * 1000000 AS started FROM sync_runs FINAL \
               WHERE status = 'succeeded' GROUP BY tenant";
    match writer.client().query(sql).fetch_all::<SucceededRow>().await {
        Ok(rows) => Some(
            rows.into_iter()
                .map(|row| (row.tenant, i64::try_from(row.started).unwrap_or(i64::MAX)))
                .collect(),
        ),
        Err(error) => {
            tracing::warn!(%error, "cannot read sync_runs: a sign-in episode notified before the restart counts as ended");
            None
        }
    }
}

mod expiry;

#[cfg(test)]
mod tests {
    use super::*;
    use hunter_core::records::RunTrigger;

    fn run(status: RunStatus, class: Option<RunErrorClass>, started: i64) -> SyncRun {
        let mut run = SyncRun::started("r", "contoso", RunTrigger::Schedule);
        run.started_at = Timestamp(started);
        match class {
            Some(class) => run.finish_failed(class, "x"),
            None => run.finish(status),
        }
        run
    }

    #[test]
    fn sign_in_is_notified_once_per_episode() {
        let now = Timestamp::now().micros();
        let day = Duration::from_secs(86_400);
        let signin = |t| run(RunStatus::Failed, Some(RunErrorClass::SigninRequired), t);
        let ok = |t| run(RunStatus::Succeeded, None, t);
        let mut episode = Episode::default();
        assert!(
            episode.observe(&signin(now - 3_000), day),
            "first failure: notified"
        );
        assert!(!episode.observe(&signin(now - 2_000), day), "same episode");
        assert!(!episode.observe(
            &run(RunStatus::Failed, Some(RunErrorClass::Network), now - 1_900),
            day
        ));
        assert!(!episode.observe(&signin(now - 3_000), day), "a replay");
        assert!(!episode.observe(&ok(now - 1_000), day));
        assert!(
            episode.observe(&signin(now - 500), day),
            "a new episode after a success"
        );
        // A replayed success older than the episode does not end it.
        assert!(!episode.observe(&ok(now - 1_000), day));
        assert!(!episode.observe(&signin(now - 400), day));
    }

    #[test]
    fn an_old_sign_in_failure_starts_no_episode() {
        let now = Timestamp::now().micros();
        let day = Duration::from_secs(86_400);
        let two_days = 2 * 86_400 * 1_000_000;
        let mut episode = Episode::default();
        let old = run(
            RunStatus::Failed,
            Some(RunErrorClass::SigninRequired),
            now - two_days,
        );
        assert!(!episode.observe(&old, day));
        let recent = run(
            RunStatus::Failed,
            Some(RunErrorClass::SigninRequired),
            now - 1_000,
        );
        assert!(
            episode.observe(&recent, day),
            "the first recent failure is news"
        );
    }

    #[test]
    fn recent_is_by_the_configured_age() {
        let now = Timestamp::now().micros();
        assert!(is_recent(now - 1_000_000, Duration::from_secs(60)));
        assert!(!is_recent(now - 120_000_000, Duration::from_secs(60)));
    }
}
