//! One poll of one tenant: page the Referrals API from the cursor (minus the overlap), publish
//! each new version, dead-letter what cannot be read or does not fit, and once every record is
//! acknowledged store the next state (see [`super::state`]); the run is recorded either way.
//!
//! # Reading ahead
//!
//! A poll keeps up to `HUNTER_SYNC_PAGES_IN_FLIGHT` pages (default 4: see
//! docs/partner-center-api.md for why) published and not yet acknowledged: it reads and sends
//! the next page while the broker acknowledges the earlier ones (the pager needs a page's
//! timestamps to ask for the next, never its acknowledgements). Pages are settled
//! in the order they were read. Invariants:
//! - the cursor is stored only after every page of the poll is settled, every record
//!   acknowledged or dead-lettered: it never passes an unacknowledged record;
//! - a failed send (or page request) fails the poll: no page is read after it, the pages already
//!   sent are settled (what the broker acknowledged is remembered as published, so the next
//!   poll does not send it again) and the cursor stays where it was;
//! - a version sent and not yet settled is a skip when a later page reads it again (a tie at a
//!   page boundary), as one already acknowledged is; when the referral moved on while the poll
//!   paged, the version read last (the newer) is the one remembered, whatever order the
//!   acknowledgements came back in;
//! - memory is bounded by the pages in flight (their records and raw JSON).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use futures::future::join_all;
use hunter_core::config::SyncSettings;
use hunter_core::kafka::RecordError;
use hunter_core::records::{
    Ingest, Referral, RunErrorClass, RunStatus, RunTrigger, SyncRun, Timestamp,
};
use hunter_core::size::{self, Reference};
use hunter_core::telemetry::names;
use hunter_partner_center::auth::AuthError;
use hunter_partner_center::client::ClientError;
use hunter_partner_center::cursor::{self, Pager, Position, Request};
use rdkafka::producer::FutureRecord;
use rdkafka::util::Timeout;
use serde_json::value::RawValue;

use super::state::{self, PollEnd, Read, next_source_state};
use super::{Outputs, Tenant, cache_mtime, publish_run_logged};
use hunter_core::records::SourceState;
use rdkafka::error::KafkaError;
use std::future::Future;

/// Where a dead letter from the API says it came from.
const API_ORIGIN: &str = "partner-center-api";

/// Where one poll's records go: Kafka ([`Outputs`]) in production, memory in the tests that
/// drive the real poll loop. Every method resolves once the record is acknowledged.
pub(super) trait Publish: Sync {
    /// The referral's record as the referral topic stores it.
    fn encode_referral(
        &self,
        referral: &Referral,
    ) -> impl Future<Output = Result<Vec<u8>, PollError>> + Send;
    /// The size of the referral's record, for cutting an oversize one to fit.
    fn measure_referral(&self, referral: &Referral) -> Option<usize>;
    /// Sends one referral record keyed by its id; a page's sends run concurrently.
    fn send_referral(
        &self,
        key: String,
        payload: Vec<u8>,
    ) -> impl Future<Output = Result<(), KafkaError>> + Send + 'static;
    /// Dead-letters `payload` with its reason and class.
    fn dead_letter(
        &self,
        class: &'static str,
        reason: &str,
        payload: &str,
        reference: &Reference,
    ) -> impl Future<Output = Result<(), PollError>> + Send;
    /// Stores the tenant's next state (cursor and versions to remember).
    fn store_state(
        &self,
        state: &SourceState,
    ) -> impl Future<Output = Result<(), PollError>> + Send;
    /// Records a backfill's progress (its run, status `running`, the counts so far). Best
    /// effort: a progress record that is not written loses nothing but a step of the bar.
    fn progress(&self, run: &SyncRun) -> impl Future<Output = ()> + Send {
        let _ = run;
        async {}
    }
}

impl Publish for Outputs {
    async fn encode_referral(&self, referral: &Referral) -> Result<Vec<u8>, PollError> {
        self.referrals
            .encode(referral)
            .await
            .map_err(|e| PollError::new(RunErrorClass::Encode, e.to_string()))
    }

    fn measure_referral(&self, referral: &Referral) -> Option<usize> {
        self.referrals
            .encode_single_object(referral)
            .ok()
            .map(|b| b.len())
    }

    fn send_referral(
        &self,
        key: String,
        payload: Vec<u8>,
    ) -> impl Future<Output = Result<(), KafkaError>> + Send + 'static {
        let producer = self.producer.clone();
        let topic = self.topics.referrals.clone();
        async move {
            producer
                .send(
                    FutureRecord::to(&topic).key(&key).payload(&payload),
                    Timeout::Never,
                )
                .await
                .map(|_| ())
                .map_err(|(error, _)| error)
        }
    }

    /// A reference in the payload's place when Kafka refuses the payload itself (a referral's
    /// whole JSON can be larger than a record may be).
    async fn dead_letter(
        &self,
        class: &'static str,
        reason: &str,
        payload: &str,
        reference: &Reference,
    ) -> Result<(), PollError> {
        let error = RecordError::new(class, reason);
        self.dead_letter
            .external(&error, API_ORIGIN, payload.as_bytes(), reference)
            .await
            .map(|_| ())
            .map_err(|error| {
                PollError::new(
                    RunErrorClass::Kafka,
                    format!("dead-lettering a referral failed: {error}"),
                )
            })
    }

    async fn store_state(&self, state: &SourceState) -> Result<(), PollError> {
        state::store_state(self, state).await
    }

    async fn progress(&self, run: &SyncRun) {
        publish_run_logged(self, run).await;
    }
}

/// Counters of one poll.
#[derive(Default, Clone, Copy)]
pub(super) struct Counts {
    pages: i64,
    fetched: i64,
    published: i64,
    skipped: i64,
    dead_lettered: i64,
}

impl Counts {
    /// The counts of the pages settled so far: `self` less what the pages still in flight
    /// counted when they were read (a progress record never counts a page before its
    /// acknowledgements, so its pages, fetched and published describe the same pages).
    fn settled(&self, in_flight: &VecDeque<InFlight>) -> Counts {
        let mut settled = *self;
        for page in in_flight {
            settled.pages -= page.read.pages;
            settled.fetched -= page.read.fetched;
            settled.skipped -= page.read.skipped;
            settled.dead_lettered -= page.read.dead_lettered;
        }
        settled
    }

    /// What was counted between `before` and `self` (one page's reading).
    fn since(&self, before: &Counts) -> Counts {
        Counts {
            pages: self.pages - before.pages,
            fetched: self.fetched - before.fetched,
            published: self.published - before.published,
            skipped: self.skipped - before.skipped,
            dead_lettered: self.dead_lettered - before.dead_lettered,
        }
    }

    fn copy_to(&self, run: &mut SyncRun) {
        run.pages = self.pages;
        run.fetched = self.fetched;
        run.published = self.published;
        run.skipped = self.skipped;
        run.dead_lettered = self.dead_lettered;
    }
}

/// Why a poll failed, as a bounded class and a message without secrets.
#[derive(Debug)]
pub(super) struct PollError {
    class: RunErrorClass,
    message: String,
    /// Sign-in needs a person: suspend the tenant.
    signin_required: bool,
}

impl PollError {
    pub(super) fn new(class: RunErrorClass, message: impl Into<String>) -> Self {
        PollError {
            class,
            message: message.into(),
            signin_required: false,
        }
    }

    /// What went wrong, without secrets.
    pub(super) fn message(&self) -> &str {
        &self.message
    }
}

impl From<ClientError> for PollError {
    fn from(error: ClientError) -> Self {
        let signin_required = matches!(
            &error,
            ClientError::Auth(AuthError::SignInRequired { .. } | AuthError::CacheMissing { .. })
        );
        let class = match &error {
            ClientError::Auth(_) if signin_required => RunErrorClass::SigninRequired,
            ClientError::Auth(_) => RunErrorClass::Auth,
            ClientError::RateLimited { .. } => RunErrorClass::RateLimited,
            ClientError::Network(_) => RunErrorClass::Network,
            ClientError::Timeout => RunErrorClass::Timeout,
            ClientError::Server { .. } => RunErrorClass::Server,
            ClientError::Client { .. } | ClientError::NextLink { .. } | ClientError::Invalid(_) => {
                RunErrorClass::Client
            }
            ClientError::Decode { .. } => RunErrorClass::Decode,
        };
        let message = if signin_required {
            format!(
                "sign-in required: {error}; run `hunter auth login` for this tenant (polls are suspended until then)"
            )
        } else {
            error.to_string()
        };
        PollError {
            class,
            message,
            signin_required,
        }
    }
}

/// Runs one poll and records it; returns the error class when it failed. A backfill
/// (`trigger` backfill) reads everything, or from `since`, and records its progress after
/// every page.
pub(super) async fn poll(
    tenant: &mut Tenant,
    outputs: &Outputs,
    sync: &SyncSettings,
    trigger: RunTrigger,
    run_id: &str,
    since: Option<Timestamp>,
) -> Option<RunErrorClass> {
    let started = Instant::now();
    let mut run = SyncRun::started(run_id, &tenant.name, trigger);
    let backfill = trigger == RunTrigger::Backfill;
    let full = trigger == RunTrigger::Sweep || (backfill && since.is_none());
    let since = if backfill { since } else { None };
    // A read of everything is about as long as the last one (the service gives no total:
    // `@odata.count` is the page's length, docs/partner-center-api.md).
    let reads_everything = full || (since.is_none() && tenant.cursor().is_none());
    if backfill {
        run.since = since;
        run.estimate = if reads_everything {
            tenant.last_full_read
        } else {
            None
        };
    }
    publish_run_logged(outputs, &run).await;
    let mut counts = Counts::default();
    let mut progress = backfill.then(|| run.clone());
    let outcome = match tokio::time::timeout(
        sync.poll_budget,
        poll_pages(
            tenant,
            outputs,
            sync.overlap,
            Window { full, since },
            sync.pages_in_flight,
            run_id,
            &mut counts,
            progress.as_mut(),
        ),
    )
    .await
    {
        Ok(outcome) => outcome,
        Err(_) => Err(PollError::new(
            RunErrorClass::Timeout,
            format!(
                "the poll took longer than its budget of {:?} (HUNTER_SYNC_POLL_BUDGET_SECS)",
                sync.poll_budget
            ),
        )),
    };
    counts.copy_to(&mut run);
    let tenant_label = tenant.name.clone();
    let failed = outcome.as_ref().err().map(|error| error.class);
    match outcome {
        Ok(()) => {
            if reads_everything {
                tenant.last_full_read = Some(counts.fetched);
            }
            run.finish(RunStatus::Succeeded);
            metrics::counter!(names::SOURCE_POLLS_TOTAL, "tenant" => tenant_label.clone(), "outcome" => "succeeded").increment(1);
            metrics::gauge!(names::SOURCE_LAST_SUCCESS_TIMESTAMP_SECONDS, "tenant" => tenant_label.clone())
                .set(Timestamp::now().micros() as f64 / 1e6);
            tracing::info!(tenant = %tenant.name, run_id, %trigger, pages = counts.pages, fetched = counts.fetched,
                published = counts.published, skipped = counts.skipped, dead_lettered = counts.dead_lettered,
                elapsed = ?started.elapsed(), "poll succeeded");
        }
        Err(error) => {
            run.finish_failed(error.class, &error.message);
            metrics::counter!(names::SOURCE_POLLS_TOTAL, "tenant" => tenant_label.clone(), "outcome" => "failed").increment(1);
            metrics::counter!(names::SOURCE_ERRORS_TOTAL, "tenant" => tenant_label.clone(), "class" => error.class.as_str()).increment(1);
            tracing::error!(tenant = %tenant.name, run_id, %trigger, class = error.class.as_str(), error = %error.message, "poll failed; cursor unchanged");
            if error.signin_required {
                tenant.signin_required = Some((cache_mtime(&tenant.auth), error.message.clone()));
            }
        }
    }
    let labels = [("tenant", tenant_label)];
    metrics::counter!(names::SOURCE_PAGES_TOTAL, &labels).increment(counts.pages as u64);
    metrics::counter!(names::SOURCE_RECORDS_FETCHED_TOTAL, &labels)
        .increment(counts.fetched as u64);
    metrics::counter!(names::SOURCE_RECORDS_PUBLISHED_TOTAL, &labels)
        .increment(counts.published as u64);
    metrics::counter!(names::SOURCE_RECORDS_SKIPPED_TOTAL, &labels)
        .increment(counts.skipped as u64);
    metrics::histogram!(names::SOURCE_POLL_DURATION_SECONDS)
        .record(started.elapsed().as_secs_f64());
    publish_run_logged(outputs, &run).await;
    failed
}

/// What one poll reads.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Window {
    /// Everything, from no filter (a sweep, a full backfill); stored as a full sweep.
    pub(super) full: bool,
    /// From this `updatedDateTime` (a windowed backfill); `None`: from the cursor.
    pub(super) since: Option<Timestamp>,
}

/// Pages and publishes one poll, with up to `pages_in_flight` pages awaiting their
/// acknowledgements, then stores the next state (see [`next_source_state`]). With `progress`
/// (a backfill's run record), its counts so far are recorded after every page settled.
#[allow(clippy::too_many_arguments)]
pub(super) async fn poll_pages(
    tenant: &mut Tenant,
    outputs: &impl Publish,
    overlap: Duration,
    window: Window,
    pages_in_flight: usize,
    run_id: &str,
    counts: &mut Counts,
    progress: Option<&mut SyncRun>,
) -> Result<(), PollError> {
    let full = window.full;
    let outcome = read_pages(
        tenant,
        outputs,
        overlap,
        window,
        pages_in_flight,
        run_id,
        counts,
        progress,
    )
    .await;
    let end = match &outcome {
        Ok(read) => PollEnd::Acknowledged { read, full, run_id },
        Err(_) => PollEnd::Failed,
    };
    let next = next_source_state(
        &tenant.name,
        tenant.state.as_ref(),
        &tenant.published,
        end,
        overlap,
        Timestamp::now(),
    );
    // A failed poll stores nothing: its state is the one already stored.
    outcome?;
    // Every record acknowledged: move the cursor, with the versions the next poll re-reads.
    if let Some(state) = next {
        outputs.store_state(&state).await?;
        tenant.state = Some(state);
    }
    Ok(())
}

/// Pages the poll and publishes what is new, with up to `pages_in_flight` pages published and
/// not yet acknowledged (read ahead; see the module doc). Returns what the poll read, once every
/// record of every page is acknowledged (or dead-lettered).
#[allow(clippy::too_many_arguments)]
async fn read_pages(
    tenant: &mut Tenant,
    outputs: &impl Publish,
    overlap: Duration,
    window: Window,
    pages_in_flight: usize,
    run_id: &str,
    counts: &mut Counts,
    mut progress: Option<&mut SyncRun>,
) -> Result<Read, PollError> {
    let cursor = tenant.cursor();
    let from = if window.full {
        None
    } else if let Some(since) = window.since {
        Some(since)
    } else {
        cursor::since(cursor.as_ref(), overlap)
    };
    let mut pager = Pager::new(from);
    let mut read = Read::from_cursor(cursor);
    let mut in_flight: VecDeque<InFlight> = VecDeque::new();
    // The version of each referral sent and not yet settled: a tie at a page boundary is read
    // again by the next page before the first read is acknowledged, and must be a skip there
    // too (what `Published` does once it is settled).
    let mut sending: HashMap<String, u64> = HashMap::new();
    let mut failure: Option<PollError> = None;
    loop {
        let more = failure.is_none() && pager.next_request().is_some();
        if in_flight.len() >= pages_in_flight.max(1) || (!more && !in_flight.is_empty()) {
            // Settle the oldest page. After a failure the pages already sent are still settled
            // (what the broker acknowledged is remembered, so the next poll does not publish it
            // again), but no page is read any more.
            let page = in_flight.pop_front().expect("a page in flight");
            let settled = settle(tenant, outputs, &mut sending, page, counts).await;
            if let Err(error) = settled {
                failure.get_or_insert(error);
                continue;
            }
            if failure.is_none()
                && let Some(run) = progress.as_deref_mut()
            {
                counts.settled(&in_flight).copy_to(run);
                run.updated_at = Some(Timestamp::now());
                outputs.progress(run).await;
            }
            continue;
        }
        if let Some(error) = failure {
            return Err(error);
        }
        let Some(request) = pager.next_request().cloned() else {
            return Ok(read);
        };
        let sent = send_page(
            tenant,
            outputs,
            &mut pager,
            request,
            &mut sending,
            &mut read,
            run_id,
            counts,
        )
        .await;
        match sent {
            Ok(page) => in_flight.push_back(page),
            Err(error) => failure = Some(error),
        }
    }
}

/// One referral sent in a page, settled when the page's acknowledgements are in.
struct Sent {
    id: String,
    version: u64,
    updated_at: Timestamp,
    /// Its index in the page, for a dead letter by reference.
    item: usize,
    bytes: usize,
}

/// A page read and sent whose acknowledgements are awaited, in the order of `sent`.
struct InFlight {
    acks: tokio::task::JoinHandle<Vec<Result<(), KafkaError>>>,
    sent: Vec<Sent>,
    items: Vec<Box<RawValue>>,
    /// What reading this page counted (the page, its referrals, skips and dead letters).
    read: Counts,
}

/// Reads the pager's next page, moves the pager on (which needs the page's timestamps only, not
/// its acknowledgements), and sends what is new; the acknowledgements are awaited by a task of
/// their own (the sends start at once, whatever the poll awaits next).
#[allow(clippy::too_many_arguments)]
async fn send_page(
    tenant: &mut Tenant,
    outputs: &impl Publish,
    pager: &mut Pager,
    request: Request,
    sending: &mut HashMap<String, u64>,
    read: &mut Read,
    run_id: &str,
    counts: &mut Counts,
) -> Result<InFlight, PollError> {
    let page = match request {
        Request::From(from) => {
            tenant
                .client
                .first_page(from.map(Timestamp::to_offset_date_time))
                .await?
        }
        Request::Next(link) => tenant.client.next_page(&link).await?,
    };
    let before = *counts;
    counts.pages += 1;
    let fetched_at = Timestamp::now();
    let mut stamps = Vec::with_capacity(page.items.len());
    let mut deliveries = Vec::with_capacity(page.items.len());
    let mut sent = Vec::with_capacity(page.items.len());
    for (item, raw) in page.items.iter().enumerate() {
        counts.fetched += 1;
        let ingest = Ingest {
            tenant: tenant.name.clone(),
            fetched_at,
            sync_run_id: run_id.to_owned(),
        };
        let mut referral = match Referral::from_api_json(raw.get(), ingest) {
            Ok(referral) => referral,
            Err(error) => {
                stamps.push(None);
                counts.dead_lettered += 1;
                let reference = Reference::of_referral_json(raw.get());
                outputs
                    .dead_letter("invalid", &error.to_string(), raw.get(), &reference)
                    .await?;
                continue;
            }
        };
        stamps.push(referral.updated_date_time);
        let updated_at = referral.updated_date_time.unwrap_or_default();
        let position = Position {
            updated_at,
            id: referral.id.clone(),
        };
        read.saw(position);
        let version = cursor::version_of(referral.e_tag.as_deref(), referral.updated_date_time);
        if tenant.published.is_published(&referral.id, version)
            || sending.get(&referral.id) == Some(&version)
        {
            counts.skipped += 1;
            continue;
        }
        let mut payload = outputs.encode_referral(&referral).await?;
        if payload.len() > size::REFERRAL_RECORD_BUDGET {
            match fit(outputs, &referral, payload.len()).await? {
                Some((cut, cut_payload)) => (referral, payload) = (cut, cut_payload),
                None => {
                    // Nothing to publish; the dead letter is the referral's handling, so
                    // this version counts as done (no dead letter again on the next poll),
                    // and an older version still in flight must not be remembered over it.
                    counts.dead_lettered += 1;
                    sending.remove(&referral.id);
                    tenant.published.remember(referral.id, version, updated_at);
                    continue;
                }
            }
        }
        let bytes = payload.len();
        deliveries.push(outputs.send_referral(referral.id.clone(), payload));
        sending.insert(referral.id.clone(), version);
        sent.push(Sent {
            id: referral.id,
            version,
            updated_at,
            item,
            bytes,
        });
    }
    pager
        .on_page(&stamps, page.next_link)
        .map_err(|message| PollError::new(RunErrorClass::Server, message))?;
    Ok(InFlight {
        acks: tokio::spawn(join_all(deliveries)),
        sent,
        items: page.items,
        read: counts.since(&before),
    })
}

/// Awaits a page's acknowledgements and remembers each version acknowledged (or dead-lettered
/// because Kafka refused the record for what it is: its fault, not Kafka's). The first failed
/// send fails the poll, after the rest of the page is settled.
async fn settle(
    tenant: &mut Tenant,
    outputs: &impl Publish,
    sending: &mut HashMap<String, u64>,
    page: InFlight,
    counts: &mut Counts,
) -> Result<(), PollError> {
    let results = page.acks.await.map_err(|error| {
        PollError::new(
            RunErrorClass::Kafka,
            format!("waiting for the broker's acknowledgements failed: {error}"),
        )
    })?;
    let mut failure = None;
    for (result, sent) in results.into_iter().zip(page.sent) {
        let Sent {
            id,
            version,
            updated_at,
            item,
            bytes,
        } = sent;
        match result {
            Ok(()) => counts.published += 1,
            Err(error) if size::refused_record(&error).is_some() => {
                let reason = format!(
                    "kafka refused the {bytes}-byte record of referral {id}: {error}; \
                     the whole referral stays in partner center"
                );
                let reference = Reference::of_referral_json(page.items[item].get());
                outputs
                    .dead_letter("refused", &reason, &reference.to_json(), &reference)
                    .await?;
                counts.dead_lettered += 1;
            }
            Err(error) => {
                failure.get_or_insert(error);
                // Not done: forgotten as sent, so a later page of this poll (there is none
                // after a failure) or the next poll sends it again.
                if sending.get(&id) == Some(&version) {
                    sending.remove(&id);
                }
                continue;
            }
        }
        // Acknowledged (or dead-lettered): done for good, whatever happens to the rest. A
        // version read later in this poll (the referral moved on while the poll paged) is
        // newer: when one was sent or handled since, it is the one to remember.
        if sending.get(&id) == Some(&version) {
            sending.remove(&id);
            tenant.published.remember(id, version, updated_at);
        }
    }
    match failure {
        Some(error) => Err(PollError::new(
            RunErrorClass::Kafka,
            format!("publishing a referral failed: {error}"),
        )),
        None => Ok(()),
    }
}

/// A referral whose record is over [`size::REFERRAL_RECORD_BUDGET`] (`bytes`), cut to fit (see
/// [`Referral::cut_to_fit`]) with its encoded record, after a dead letter saying what was cut
/// (class `truncated`; the referral is still published). `None` when no cut fits: then the
/// referral is dead-lettered by reference (class `oversize`) and not published.
async fn fit(
    outputs: &impl Publish,
    referral: &Referral,
    bytes: usize,
) -> Result<Option<(Referral, Vec<u8>)>, PollError> {
    let budget = size::REFERRAL_RECORD_BUDGET;
    let measure = |r: &Referral| outputs.measure_referral(r);
    let mut reference = Reference::of_referral_json(&referral.raw_json);
    let Some(cut) = referral.cut_to_fit(budget, bytes, measure) else {
        let reason = format!(
            "referral {} makes a {bytes}-byte record, over the {budget}-byte budget, and cutting \
             its long strings does not bring it under: dead-lettered by reference, the whole \
             referral stays in partner center",
            referral.id
        );
        outputs
            .dead_letter("oversize", &reason, &reference.to_json(), &reference)
            .await?;
        return Ok(None);
    };
    let payload = outputs.encode_referral(&cut).await?;
    let fields = cut
        .truncation
        .as_ref()
        .map(|t| (t.fields.clone(), t.kept_bytes))
        .unwrap_or_default();
    let reason = format!(
        "referral {} makes a {bytes}-byte record, over the {budget}-byte budget: published as a \
         {}-byte record with {} string(s) cut to {} bytes ({}); the whole referral stays in \
         partner center",
        referral.id,
        payload.len(),
        fields.0.len(),
        fields.1,
        size::list_fields(&fields.0, 10)
    );
    reference.truncated = fields.0;
    outputs
        .dead_letter("truncated", &reason, &reference.to_json(), &reference)
        .await?;
    Ok(Some((cut, payload)))
}
