//! The `notifications` table (`0013_notifications.sql`): what was queued, every attempt's
//! outcome, and what a restart resumes.
//!
//! Invariants:
//! - a delivery's `queued` row (with its event) is in ClickHouse before the offset of the
//!   record that raised it is stored: a crash after that point loses nothing, since the next
//!   start reads the pending deliveries back ([`load`]) and sends them;
//! - attempt rows go through the [`Recorder`]: batched, retried with backoff while ClickHouse
//!   refuses them, never blocking a target's worker; an attempt row lost in a crash only means
//!   the delivery is sent again (at least once);
//! - a row written twice is the same (notification_id, attempt, outcome) and collapses.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use hunter_clickhouse::writer::ReadWriter;
use hunter_core::config::NotifyFormat;
use hunter_core::shutdown::Shutdown;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::sync::mpsc;

use super::deliver::Job;
use super::event::Event;

/// A delivery's step (the `outcome` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Queued,
    Retrying,
    Delivered,
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Queued => "queued",
            Outcome::Retrying => "retrying",
            Outcome::Delivered => "delivered",
            Outcome::Failed => "failed",
        }
    }
}

/// A row of `notifications`.
#[derive(Debug, Clone, PartialEq, clickhouse::Row, Serialize, Deserialize)]
pub struct NotificationRow {
    pub notification_id: String,
    pub target: String,
    pub format: String,
    pub kind: String,
    pub lead_id: String,
    pub tenant: String,
    pub version: u64,
    pub attempt: u32,
    pub outcome: String,
    pub http_status: Option<u16>,
    pub error: Option<String>,
    pub duration_ms: u32,
    pub event: String,
    #[serde(with = "clickhouse::serde::time::datetime")]
    pub event_at: OffsetDateTime,
    #[serde(with = "clickhouse::serde::time::datetime")]
    pub at: OffsetDateTime,
    pub at_micros: u64,
}

/// One step to record.
#[derive(Debug, Clone)]
pub struct Step {
    pub notification_id: String,
    pub target: String,
    pub format: NotifyFormat,
    pub event: Event,
    pub attempt: u32,
    pub outcome: Outcome,
    pub http_status: Option<u16>,
    pub error: Option<String>,
    pub duration_ms: u32,
}

impl Step {
    pub fn row(&self) -> NotificationRow {
        let now = OffsetDateTime::now_utc();
        let event_at = time::OffsetDateTime::parse(
            &self.event.at,
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap_or(now);
        NotificationRow {
            notification_id: self.notification_id.clone(),
            target: self.target.clone(),
            format: self.format.as_str().to_owned(),
            kind: self.event.kind.as_str().to_owned(),
            lead_id: self
                .event
                .lead
                .as_ref()
                .map(|lead| lead.lead_id.clone())
                .unwrap_or_default(),
            tenant: self.event.tenant.clone(),
            version: u64::try_from(self.event.version).unwrap_or(0),
            attempt: self.attempt,
            outcome: self.outcome.as_str().to_owned(),
            http_status: self.http_status,
            error: self.error.clone(),
            duration_ms: self.duration_ms,
            // The event only in the queued row: what a restart needs to send it again.
            event: if self.outcome == Outcome::Queued {
                serde_json::to_string(&self.event).unwrap_or_default()
            } else {
                String::new()
            },
            event_at: event_at.max(OffsetDateTime::UNIX_EPOCH),
            at: now,
            at_micros: u64::try_from(now.unix_timestamp_nanos() / 1000).unwrap_or(0),
        }
    }
}

/// Hands attempt rows to the recording task.
#[derive(Clone)]
pub struct Recorder {
    sender: mpsc::UnboundedSender<NotificationRow>,
}

impl Recorder {
    pub fn record(&self, step: Step) {
        // The task ends only at shutdown; a row sent after is re-sent by the next start.
        let _ = self.sender.send(step.row());
    }
}

/// Inserts rows until they are in, with backoff; `Err` only at shutdown.
pub async fn insert_patiently(
    writer: &ReadWriter,
    rows: &[NotificationRow],
    shutdown: &mut Shutdown,
) -> Result<(), ()> {
    let mut attempt = 0;
    loop {
        let result = tokio::time::timeout(
            Duration::from_secs(30),
            writer.insert("notifications", rows, None),
        )
        .await;
        let error = match result {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(error)) => error.to_string(),
            Err(_) => "timed out after 30 s".to_owned(),
        };
        let wait =
            super::super::backoff(attempt, Duration::from_millis(200), Duration::from_secs(10));
        attempt += 1;
        tracing::warn!(rows = rows.len(), attempt, %error, retry_in = ?wait, "recording notifications in clickhouse failed; retrying (run `hunter migrate` if the table is missing)");
        tokio::select! {
            _ = shutdown.wait() => return Err(()),
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Starts the recording task: rows batched for up to 200 ms, inserted with retries.
pub fn spawn_recorder(
    writer: ReadWriter,
    mut shutdown: Shutdown,
) -> (Recorder, tokio::task::JoinHandle<()>) {
    let (sender, mut receiver) = mpsc::unbounded_channel::<NotificationRow>();
    let task = tokio::spawn(async move {
        let mut batch = Vec::new();
        loop {
            tokio::select! {
                _ = shutdown.wait() => break,
                received = receiver.recv() => match received {
                    Some(row) => batch.push(row),
                    None => break,
                },
            }
            // Gather what comes within 200 ms into one insert.
            let deadline = tokio::time::Instant::now() + Duration::from_millis(200);
            while let Ok(Some(row)) = tokio::time::timeout_at(deadline, receiver.recv()).await {
                batch.push(row);
            }
            if insert_patiently(&writer, &batch, &mut shutdown)
                .await
                .is_err()
            {
                break;
            }
            batch.clear();
        }
        // Shutdown: one last try for what is left, so fewer deliveries are sent again.
        while let Ok(row) = receiver.try_recv() {
            batch.push(row);
        }
        if !batch.is_empty() {
            let _ = tokio::time::timeout(
                Duration::from_secs(5),
                writer.insert("notifications", &batch, None),
            )
            .await;
        }
    });
    (Recorder { sender }, task)
}

/// What the table says at start.
#[derive(Debug, Default)]
pub struct Known {
    /// Every delivery recorded in the dedupe window: never queued again.
    pub ids: HashSet<String>,
    /// Deliveries neither delivered nor failed yet, by target name.
    pub pending: HashMap<String, Vec<Job>>,
    /// The newest sign-in episode notified, by tenant (its version, microseconds).
    pub signin_episodes: HashMap<String, i64>,
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct StateRow {
    notification_id: String,
    target: String,
    kind: String,
    tenant: String,
    version: u64,
    last_outcome: String,
    attempts: u32,
    queued_event: String,
}

/// Reads the deliveries of the last `window` (the dedupe window: an event older than the age
/// filter is never notified again anyway).
pub async fn load(
    writer: &ReadWriter,
    window: Duration,
) -> Result<Known, hunter_clickhouse::Error> {
    let sql = format!(
        "SELECT notification_id, any(target) AS target, any(kind) AS kind, any(tenant) AS tenant, \
         any(version) AS version, argMax(outcome, at_micros) AS last_outcome, \
         max(attempt) AS attempts, \
         if(last_outcome IN ('queued', 'retrying'), anyIf(event, outcome = 'queued'), '') AS queued_event \
         FROM notifications WHERE at >= now() - {} GROUP BY notification_id",
        window.as_secs()
    );
    let rows: Vec<StateRow> = writer.client().query(&sql).fetch_all().await?;
    let mut known = Known::default();
    for row in rows {
        if row.kind == super::event::Kind::SigninRequired.as_str() {
            let version = i64::try_from(row.version).unwrap_or(0);
            let newest = known
                .signin_episodes
                .entry(row.tenant.clone())
                .or_insert(version);
            *newest = (*newest).max(version);
        }
        if matches!(row.last_outcome.as_str(), "queued" | "retrying") {
            match serde_json::from_str::<Event>(&row.queued_event) {
                Ok(event) => known
                    .pending
                    .entry(row.target.clone())
                    .or_default()
                    .push(Job {
                        notification_id: row.notification_id.clone(),
                        event,
                        attempts: row.attempts,
                    }),
                Err(error) => tracing::warn!(
                    notification = %row.notification_id,
                    %error,
                    "a pending notification's event does not read back; not sent again"
                ),
            }
        }
        known.ids.insert(row.notification_id);
    }
    Ok(known)
}
