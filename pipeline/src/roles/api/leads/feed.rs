//! Keeps the read model ([`super::model`]) current from ClickHouse `leads`
//! (docs/api-read-model.md).
//!
//! - At start, a rebuild: the server's `now()` is read, then every lead under `FINAL`. Until it
//!   completes, `GET /leads` is answered by ClickHouse.
//! - Then every [`POLL_EVERY`], the rows inserted since the previous poll's server `now()` minus
//!   [`OVERLAP`] (`inserted_at` is the server's time at insert, in whole seconds; a row becomes
//!   visible a moment after it was stamped). The window overlaps the previous one, so rows with
//!   equal stamps or committed late are read again: the model keeps the newest version per lead,
//!   so reading a row twice changes nothing.
//! - The model answers only while fresh: its last successful poll began less than
//!   [`FRESH_FOR`] ago. So a lead visible in ClickHouse before that poll began is in every answer
//!   the model gives; when polls fail or lag, questions go to ClickHouse until one succeeds.
//! - A failed rebuild or poll is logged and retried (1 s, then up to 10 s apart); it never stops
//!   the API.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use clickhouse::Client;
use hunter_core::telemetry::names;

use super::model::{ModelPage, ModelRow, ReadModel};
use super::query::{Cursor, Filter, Sort};

/// Time between polls.
pub(crate) const POLL_EVERY: Duration = Duration::from_millis(250);
/// How far before the previous poll's server time the next poll starts reading: covers a
/// stamp's whole second and an insert that is stamped before it becomes visible.
pub(crate) const OVERLAP: u32 = 5;
/// The model answers while its last successful poll began less than this ago.
pub(crate) const FRESH_FOR: Duration = Duration::from_millis(1000);

/// The read model as the handlers see it.
pub(crate) struct LiveModel {
    /// `None` until the first rebuild completes.
    model: RwLock<Option<ReadModel>>,
    born: Instant,
    /// Milliseconds after `born` when the last successful poll (or rebuild) began, plus one
    /// (0: never).
    fresh_from: AtomicU64,
    /// Bumped whenever the model changes: cached pages of an older generation are not reused.
    generation: AtomicU64,
}

impl LiveModel {
    pub(crate) fn new() -> Self {
        LiveModel {
            model: RwLock::new(None),
            born: Instant::now(),
            fresh_from: AtomicU64::new(0),
            generation: AtomicU64::new(0),
        }
    }

    fn age(&self) -> Option<Duration> {
        let began = self.fresh_from.load(Ordering::Acquire);
        (began > 0).then(|| {
            self.born
                .elapsed()
                .saturating_sub(Duration::from_millis(began - 1))
        })
    }

    /// The model's generation when it may answer (built and fresh), else `None`.
    pub(crate) fn generation_if_fresh(&self) -> Option<u64> {
        self.age()
            .filter(|age| *age < FRESH_FOR)
            .map(|_| self.generation.load(Ordering::Acquire))
    }

    /// The model's answer, or `None` when it has none (not built, or a question it cannot
    /// answer exactly).
    pub(super) fn answer(
        &self,
        filters: &[Filter],
        sort: Sort,
        cursor: Option<&Cursor>,
        limit: usize,
    ) -> Option<ModelPage> {
        let model = self.model.read().unwrap_or_else(|e| e.into_inner());
        model.as_ref()?.answer(filters, sort, cursor, limit)
    }

    fn mark_fresh(&self, began: Instant) {
        let millis = began.saturating_duration_since(self.born).as_millis() as u64 + 1;
        self.fresh_from.store(millis, Ordering::Release);
    }
}

/// The server's clock, in the unit of `inserted_at`.
async fn server_now(client: &Client) -> clickhouse::error::Result<u32> {
    client
        .query("SELECT toUInt32(now())")
        .fetch_one::<u32>()
        .await
}

/// Every current lead, read under FINAL; the server time taken before the read.
async fn rebuild(client: &Client) -> clickhouse::error::Result<(ReadModel, u32)> {
    let now = server_now(client).await?;
    let mut model = ReadModel::new();
    let sql = format!("SELECT {} FROM leads FINAL", ModelRow::select_list());
    let mut cursor = client.query(&sql).fetch::<ModelRow>()?;
    while let Some(row) = cursor.next().await? {
        model.upsert(&row);
    }
    Ok((model, now))
}

/// The rows inserted at or after `since` (server seconds), oldest insert first; the server
/// time taken before the read.
async fn poll(client: &Client, since: u32) -> clickhouse::error::Result<(Vec<ModelRow>, u32)> {
    let now = server_now(client).await?;
    let sql = format!(
        "SELECT {} FROM leads WHERE inserted_at >= toDateTime(?) ORDER BY inserted_at",
        ModelRow::select_list()
    );
    let rows = client
        .query(&sql)
        .bind(since)
        .fetch_all::<ModelRow>()
        .await?;
    Ok((rows, now))
}

fn publish(live: &LiveModel) {
    let model = live.model.read().unwrap_or_else(|e| e.into_inner());
    if let Some(model) = model.as_ref() {
        metrics::gauge!(names::API_READ_MODEL_LEADS).set(model.len() as f64);
        metrics::gauge!(names::API_READ_MODEL_BYTES).set(model.bytes() as f64);
    }
}

/// Rebuilds the model, then keeps it current until the process ends (see the module notes).
pub(crate) async fn run(live: Arc<LiveModel>, client: Client) {
    let mut wait = Duration::from_secs(1);
    let mut since = loop {
        let began = Instant::now();
        match rebuild(&client).await {
            Ok((model, now)) => {
                let seconds = began.elapsed().as_secs_f64();
                let (leads, bytes) = (model.len(), model.bytes());
                *live.model.write().unwrap_or_else(|e| e.into_inner()) = Some(model);
                live.generation.fetch_add(1, Ordering::AcqRel);
                live.mark_fresh(began);
                metrics::gauge!(names::API_READ_MODEL_REBUILD_SECONDS).set(seconds);
                tracing::info!(
                    leads,
                    bytes,
                    bytes_per_lead = bytes.checked_div(leads).unwrap_or(0),
                    seconds,
                    "api read model rebuilt from clickhouse; GET /leads answers from it"
                );
                publish(&live);
                break now.saturating_sub(OVERLAP);
            }
            Err(error) => {
                tracing::warn!(%error, retry_in_secs = wait.as_secs(), "api read model rebuild failed; GET /leads asks clickhouse meanwhile");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(10));
            }
        }
    };
    let mut failing = false;
    let mut published = Instant::now();
    loop {
        let began = Instant::now();
        match poll(&client, since).await {
            Ok((rows, now)) => {
                if !rows.is_empty() {
                    let mut model = live.model.write().unwrap_or_else(|e| e.into_inner());
                    if let Some(model) = model.as_mut() {
                        let mut changed = false;
                        for row in &rows {
                            changed |= model.upsert(row);
                        }
                        if changed {
                            live.generation.fetch_add(1, Ordering::AcqRel);
                        }
                    }
                }
                live.mark_fresh(began);
                since = now.saturating_sub(OVERLAP);
                if failing {
                    tracing::info!("api read model caught up with clickhouse again");
                    failing = false;
                }
            }
            Err(error) => {
                if !failing {
                    tracing::warn!(%error, "api read model poll failed; GET /leads asks clickhouse until a poll succeeds");
                }
                failing = true;
            }
        }
        if published.elapsed() >= Duration::from_secs(5) {
            publish(&live);
            published = Instant::now();
        }
        if let Some(age) = live.age() {
            metrics::gauge!(names::API_READ_MODEL_AGE_SECONDS).set(age.as_secs_f64());
        }
        let pause = if failing {
            Duration::from_secs(1)
        } else {
            POLL_EVERY.saturating_sub(began.elapsed())
        };
        tokio::time::sleep(pause).await;
    }
}
