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
//! - With the row store on (`HUNTER_API_READ_MODEL_ROWS`), the rebuild also reads every lead's
//!   whole row ([`super::rows`]), and each poll the whole rows of the leads whose (version,
//!   `processed_at`) the store does not hold yet, so pages are answered without ClickHouse and
//!   the poll's overlapping window is not read again in full.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use clickhouse::Client;
use hunter_core::telemetry::names;

use hunter_clickhouse::rows::LeadRow;
use serde_json::value::RawValue;

use super::model::{ModelPage, ModelRow, ReadModel};
use super::query::{Cursor, Filter, Sort};
use super::rows::RowStore;

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
    /// The whole rows (`HUNTER_API_READ_MODEL_ROWS`); `None` when off or not built yet.
    rows: RwLock<Option<RowStore>>,
    /// Whether the row store is on.
    with_rows: bool,
    born: Instant,
    /// Milliseconds after `born` when the last successful poll (or rebuild) began, plus one
    /// (0: never).
    fresh_from: AtomicU64,
    /// Bumped whenever the model changes: cached pages of an older generation are not reused.
    generation: AtomicU64,
    /// Whether a rebuild of the model's sort orders runs.
    ordering: AtomicBool,
    /// One permit per core for the model's answers: more at once only share the same cores
    /// and starve the model's polls and ClickHouse (a poll late by a second makes the model
    /// stale, and its questions then go to ClickHouse).
    pub(super) answering: tokio::sync::Semaphore,
}

impl LiveModel {
    /// `with_rows`: keep the whole rows too (`HUNTER_API_READ_MODEL_ROWS`).
    pub(crate) fn new(with_rows: bool) -> Self {
        LiveModel {
            model: RwLock::new(None),
            rows: RwLock::new(None),
            with_rows,
            born: Instant::now(),
            fresh_from: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            ordering: AtomicBool::new(false),
            answering: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, usize::from),
            ),
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

    /// The rows held for exactly these (lead id, version) keys, in order (`None`: not held,
    /// read it from ClickHouse); all `None` unless the model is fresh.
    pub(super) fn rows<'k>(
        &self,
        keys: impl Iterator<Item = (&'k str, u64)>,
    ) -> Vec<Option<Box<RawValue>>> {
        let store = self.rows.read().unwrap_or_else(|e| e.into_inner());
        let fresh = self.generation_if_fresh().is_some();
        keys.map(|(id, version)| {
            store
                .as_ref()
                .filter(|_| fresh)
                .and_then(|store| store.get(id, version))
                .map(ToOwned::to_owned)
        })
        .collect()
    }

    fn mark_fresh(&self, began: Instant) {
        let millis = began.saturating_duration_since(self.born).as_millis() as u64 + 1;
        self.fresh_from.store(millis, Ordering::Release);
    }
}

/// Opens every query of the feed, so ClickHouse's query log tells them from the requests' (they
/// run with the feed's own limits: no result-row cap, ten minutes).
pub(crate) const QUERY_MARK: &str = "/* hunter api read model */ ";

/// The server's clock, in the unit of `inserted_at`.
async fn server_now(client: &Client) -> clickhouse::error::Result<u32> {
    client
        .query("SELECT toUInt32(now())")
        .fetch_one::<u32>()
        .await
}

/// Every current lead, read under FINAL (and its whole row, `with_rows`); the server time taken
/// before the reads.
async fn rebuild(
    client: &Client,
    with_rows: bool,
) -> clickhouse::error::Result<(ReadModel, Option<RowStore>, u32)> {
    let now = server_now(client).await?;
    let mut model = ReadModel::new();
    let sql = format!(
        "{QUERY_MARK}SELECT {} FROM leads FINAL",
        ModelRow::select_list()
    );
    let mut cursor = client.query(&sql).fetch::<ModelRow>()?;
    while let Some(row) = cursor.next().await? {
        model.upsert(&row);
    }
    // The sort orders, before the model answers (a second or so at a million leads).
    let model = tokio::task::spawn_blocking(move || {
        let mut model = model;
        let orders = model.order_snapshot().build();
        model.install_orders(orders);
        model
    })
    .await
    .expect("building the read model's orders panicked");
    let mut store = None;
    if with_rows {
        let mut rows = RowStore::new();
        let mut cursor = client
            .query(&format!("{QUERY_MARK}SELECT ?fields FROM leads FINAL"))
            .fetch::<LeadRow>()?;
        while let Some(row) = cursor.next().await? {
            rows.upsert(row);
        }
        store = Some(rows);
    }
    Ok((model, store, now))
}

/// The rows inserted at or after `since` (server seconds), oldest insert first; the server
/// time taken before the read.
async fn poll(client: &Client, since: u32) -> clickhouse::error::Result<(Vec<ModelRow>, u32)> {
    let now = server_now(client).await?;
    let sql = format!(
        "{QUERY_MARK}SELECT {} FROM leads WHERE inserted_at >= toDateTime(?) ORDER BY inserted_at",
        ModelRow::select_list()
    );
    let rows = client
        .query(&sql)
        .bind(since)
        .fetch_all::<ModelRow>()
        .await?;
    Ok((rows, now))
}

/// Ids per query of [`whole_rows`].
const IDS_PER_QUERY: usize = 500;

/// The whole rows of `ids` inserted at or after `since`, oldest insert first: what the row store
/// lacks of a poll's rows. Only the rows that changed are read, not every row of the poll's
/// overlapping window again.
async fn whole_rows(
    client: &Client,
    since: u32,
    ids: &[String],
) -> clickhouse::error::Result<Vec<LeadRow>> {
    let mut rows = Vec::new();
    for chunk in ids.chunks(IDS_PER_QUERY) {
        let sql = format!(
            "{QUERY_MARK}SELECT ?fields FROM leads WHERE inserted_at >= toDateTime(?) AND lead_id IN ({}) ORDER BY inserted_at",
            vec!["?"; chunk.len()].join(", ")
        );
        let mut query = client.query(&sql).bind(since);
        for id in chunk {
            query = query.bind(id.as_str());
        }
        rows.extend(query.fetch_all::<LeadRow>().await?);
    }
    Ok(rows)
}

fn publish(live: &LiveModel) {
    let model = live.model.read().unwrap_or_else(|e| e.into_inner());
    let rows = live.rows.read().unwrap_or_else(|e| e.into_inner());
    if let Some(model) = model.as_ref() {
        let row_bytes = rows.as_ref().map_or(0, RowStore::bytes);
        metrics::gauge!(names::API_READ_MODEL_LEADS).set(model.len() as f64);
        metrics::gauge!(names::API_READ_MODEL_BYTES).set((model.bytes() + row_bytes) as f64);
    }
}

/// Starts rebuilding the model's sort orders off its lock when enough leads changed since the
/// last ones (`ReadModel::wants_orders`) and no rebuild runs: the polls go on meanwhile, and
/// the changes after the snapshot stay answered from the model's change log.
fn rebuild_orders_if_due(live: &Arc<LiveModel>) {
    let snapshot = {
        let model = live.model.read().unwrap_or_else(|e| e.into_inner());
        match model.as_ref() {
            Some(model) if model.wants_orders() => {
                if live.ordering.swap(true, Ordering::AcqRel) {
                    return;
                }
                model.order_snapshot()
            }
            _ => return,
        }
    };
    let live = Arc::clone(live);
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let orders = snapshot.build();
        if let Some(model) = live
            .model
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            model.install_orders(orders);
        }
        live.ordering.store(false, Ordering::Release);
        tracing::debug!(
            seconds = started.elapsed().as_secs_f64(),
            "api read model orders rebuilt"
        );
    });
}

/// Rebuilds the model, then keeps it current until the process ends (see the module notes).
pub(crate) async fn run(live: Arc<LiveModel>, client: Client) {
    let mut wait = Duration::from_secs(1);
    let mut since = loop {
        let began = Instant::now();
        match rebuild(&client, live.with_rows).await {
            Ok((model, store, now)) => {
                let seconds = began.elapsed().as_secs_f64();
                let (leads, bytes) = (model.len(), model.bytes());
                let (rows, row_bytes) = store
                    .as_ref()
                    .map_or((0, 0), |store| (store.len(), store.bytes()));
                *live.rows.write().unwrap_or_else(|e| e.into_inner()) = store;
                *live.model.write().unwrap_or_else(|e| e.into_inner()) = Some(model);
                live.generation.fetch_add(1, Ordering::AcqRel);
                live.mark_fresh(began);
                metrics::gauge!(names::API_READ_MODEL_REBUILD_SECONDS).set(seconds);
                tracing::info!(
                    leads,
                    bytes,
                    bytes_per_lead = bytes.checked_div(leads).unwrap_or(0),
                    rows,
                    row_bytes_per_lead = row_bytes.checked_div(rows).unwrap_or(0),
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
        let polled = match poll(&client, since).await {
            Ok((rows, now)) => {
                // The whole rows the store lacks (a new version, or the same version made
                // again), read before the model takes the poll: a page the model chooses after
                // this finds its rows, or reads the few it does not from ClickHouse.
                let wanted: Vec<String> = {
                    let store = live.rows.read().unwrap_or_else(|e| e.into_inner());
                    match store.as_ref() {
                        Some(store) => rows
                            .iter()
                            .filter(|row| store.wants(&row.lead_id, row.version, row.m_processed))
                            .map(|row| row.lead_id.clone())
                            .collect::<std::collections::BTreeSet<_>>()
                            .into_iter()
                            .collect(),
                        None => Vec::new(),
                    }
                };
                match whole_rows(&client, since, &wanted).await {
                    Ok(whole) => Ok((rows, whole, now)),
                    Err(error) => Err(error),
                }
            }
            Err(error) => Err(error),
        };
        match polled {
            Ok((rows, whole, now)) => {
                let mut changed = false;
                if !whole.is_empty() {
                    let mut store = live.rows.write().unwrap_or_else(|e| e.into_inner());
                    if let Some(store) = store.as_mut() {
                        for row in whole {
                            changed |= store.upsert(row);
                        }
                    }
                }
                if !rows.is_empty() {
                    let mut model = live.model.write().unwrap_or_else(|e| e.into_inner());
                    if let Some(model) = model.as_mut() {
                        for row in &rows {
                            changed |= model.upsert(row);
                        }
                    }
                }
                if changed {
                    // Cached pages of the older generation are not served again.
                    live.generation.fetch_add(1, Ordering::AcqRel);
                }
                rebuild_orders_if_due(&live);
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
