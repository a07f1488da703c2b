//! The source's durable state per tenant: what it becomes after a poll ([`next_source_state`],
//! pure), and loading and storing it on the compacted `hunter.source-state.v1`.
//!
//! Invariants (the tests below check them):
//! - the cursor only moves forward, and only to a `(updatedDateTime, id)` position the poll
//!   read ([`Read`]); ties on `updatedDateTime` order by id, whatever the page boundaries;
//! - a failed poll leaves the state as it was: the next poll replays the window;
//! - the stored versions are those at or after `cursor - overlap` (the ones a later incremental
//!   poll reads again), at most [`MAX_RECENT`] of them, the newest kept;
//! - a full sweep, or a first poll (no state yet), records when it ran.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context as _;
use hunter_core::codec::Codec;
use hunter_core::kafka;
use hunter_core::records::{RecentVersion, RunErrorClass, SourceState, Timestamp};
use hunter_core::shutdown::Shutdown;
use hunter_partner_center::cursor::{self, Position, Published};
use rdkafka::producer::FutureRecord;
use rdkafka::util::Timeout;

use super::Outputs;
use super::poll::PollError;
use crate::roles::Context;

/// Versions persisted with the cursor at most (a Kafka record must stay well under 1 MB).
const MAX_RECENT: usize = 5_000;

/// The newest position one poll read, starting at the cursor it started from.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Read {
    newest: Option<Position>,
}

impl Read {
    pub(super) fn from_cursor(cursor: Option<Position>) -> Self {
        Read { newest: cursor }
    }

    /// A record the poll read (published, skipped as already published, or dead-lettered
    /// after it was parsed): the cursor may move up to it, never back.
    pub(super) fn saw(&mut self, position: Position) {
        if self.newest.as_ref().is_none_or(|n| position > *n) {
            self.newest = Some(position);
        }
    }
}

/// How a poll ended.
pub(super) enum PollEnd<'a> {
    /// Some page or record failed: nothing moves.
    Failed,
    /// Every record read was acknowledged (or dead-lettered).
    Acknowledged {
        read: &'a Read,
        full: bool,
        run_id: &'a str,
    },
}

/// The state after a poll, from the state before it (`None`: never polled), the versions
/// acknowledged so far and how the poll ended; `None` when there is still no state.
pub(super) fn next_source_state(
    tenant: &str,
    previous: Option<&SourceState>,
    published: &Published,
    end: PollEnd<'_>,
    overlap: Duration,
    now: Timestamp,
) -> Option<SourceState> {
    let PollEnd::Acknowledged { read, full, run_id } = end else {
        return previous.cloned();
    };
    let newest = read.newest.clone();
    let horizon = cursor::since(newest.as_ref(), overlap).unwrap_or_default();
    let mut recent = published.recent(horizon);
    if recent.len() > MAX_RECENT {
        recent.drain(..recent.len() - MAX_RECENT);
    }
    Some(SourceState {
        tenant: tenant.to_owned(),
        cursor_updated_at: newest.as_ref().map(|n| n.updated_at),
        cursor_id: newest.map(|n| n.id),
        last_run_id: Some(run_id.to_owned()),
        last_success_at: Some(now),
        // A first poll (no cursor yet) reads everything, like a sweep.
        last_full_sweep_at: if full || previous.is_none() {
            Some(now)
        } else {
            previous.and_then(|p| p.last_full_sweep_at)
        },
        recent: recent
            .into_iter()
            .map(|r| RecentVersion {
                id: r.id,
                version: r.version as i64,
                updated_at: r.updated_at,
            })
            .collect(),
        updated_at: now,
    })
}

/// Stores `state` (key = tenant), acknowledged by the broker before it returns.
pub(super) async fn store_state(outputs: &Outputs, state: &SourceState) -> Result<(), PollError> {
    let payload = outputs
        .states
        .encode(state)
        .await
        .map_err(|e| PollError::new(RunErrorClass::Encode, e.to_string()))?;
    outputs
        .producer
        .send(
            FutureRecord::to(&outputs.topics.source_state)
                .key(&state.tenant)
                .payload(&payload),
            Timeout::Never,
        )
        .await
        .map_err(|(error, _)| {
            PollError::new(
                RunErrorClass::Kafka,
                format!("storing the cursor failed: {error}"),
            )
        })?;
    Ok(())
}

/// How long the source keeps retrying the read of its state at start before it gives up (and
/// its supervisor starts it again).
const STATE_READ_PATIENCE: Duration = Duration::from_secs(300);

/// Reads the compacted state topic from the start to its end; the last record per tenant wins.
///
/// A broker that fails the read (down, restarting, not serving the topic yet) is a transient
/// failure: the read is tried again with backoff for [`STATE_READ_PATIENCE`]
/// ([`kafka::read_to_end_patiently`]). The 100,000-
/// referral server-fault run found a source started by its supervisor while a wedged broker was
/// being restarted by its liveness probe: it exited on the first failed metadata request
/// instead of waiting for the broker (BENCHMARKS.md, server faults).
pub(super) async fn load_states(
    context: &Context,
    codec: &Codec<SourceState>,
    shutdown: &Shutdown,
) -> anyhow::Result<HashMap<String, SourceState>> {
    let payloads = kafka::read_to_end_patiently(
        &context.settings.kafka,
        "hunter-source-state",
        &context.topics.source_state,
        None,
        Duration::from_secs(60),
        STATE_READ_PATIENCE,
        shutdown,
    )
    .await
    .context("source state not read")?
    .into_iter()
    .map(|(_, payload)| payload);
    let mut states = HashMap::new();
    let mut waiting = shutdown.clone();
    for payload in payloads {
        match codec
            .decode_patiently(&payload, &mut waiting, "source")
            .await
        {
            Ok(state) => {
                states.insert(state.tenant.clone(), state);
            }
            // A state skipped because the registry was away would restart the cursor.
            Err(error) if error.is_retryable() || error.is_fatal() => {
                anyhow::bail!("source state not loaded: {error}")
            }
            Err(error) => tracing::warn!(%error, "unreadable source state record skipped"),
        }
    }
    Ok(states)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OVERLAP: Duration = Duration::from_secs(600);

    fn at(seconds: i64) -> Timestamp {
        Timestamp(seconds * 1_000_000)
    }

    fn position(seconds: i64, id: &str) -> Position {
        Position {
            updated_at: at(seconds),
            id: id.to_owned(),
        }
    }

    fn cursor_of(state: &SourceState) -> Option<Position> {
        Some(Position {
            updated_at: state.cursor_updated_at?,
            id: state.cursor_id.clone()?,
        })
    }

    fn acknowledged<'a>(read: &'a Read, full: bool) -> PollEnd<'a> {
        PollEnd::Acknowledged {
            read,
            full,
            run_id: "run-2",
        }
    }

    /// The state a successful first poll left, with its cursor at `cursor`.
    fn stored(cursor: Position, published: &Published) -> SourceState {
        let read = Read::from_cursor(Some(cursor));
        next_source_state(
            "t",
            None,
            published,
            acknowledged(&read, false),
            OVERLAP,
            at(1),
        )
        .expect("a successful poll makes a state")
    }

    #[test]
    fn the_cursor_only_moves_forward_and_only_to_a_record_read() {
        let published = Published::default();
        let previous = stored(position(10_000, "m"), &published);

        // Only older records read (the overlap window): the cursor stays.
        let mut read = Read::from_cursor(cursor_of(&previous));
        read.saw(position(9_500, "z"));
        read.saw(position(10_000, "a"));
        let next = next_source_state(
            "t",
            Some(&previous),
            &published,
            acknowledged(&read, false),
            OVERLAP,
            at(2),
        )
        .unwrap();
        assert_eq!(cursor_of(&next), Some(position(10_000, "m")));

        // Newer records: the cursor is the newest of them, exactly, in whatever order read.
        let mut read = Read::from_cursor(cursor_of(&next));
        for seen in [
            position(12_000, "b"),
            position(11_000, "z"),
            position(9_000, "q"),
        ] {
            read.saw(seen);
        }
        let later = next_source_state(
            "t",
            Some(&next),
            &published,
            acknowledged(&read, false),
            OVERLAP,
            at(3),
        )
        .unwrap();
        assert_eq!(cursor_of(&later), Some(position(12_000, "b")));
        assert_eq!(later.last_run_id.as_deref(), Some("run-2"));
        assert_eq!(later.last_success_at, Some(at(3)));
    }

    #[test]
    fn a_first_poll_that_read_nothing_has_no_cursor() {
        let read = Read::from_cursor(None);
        let state = next_source_state(
            "t",
            None,
            &Published::default(),
            acknowledged(&read, false),
            OVERLAP,
            at(5),
        )
        .unwrap();
        assert_eq!(cursor_of(&state), None);
        assert_eq!(state.cursor_updated_at, None);
        assert_eq!(state.last_success_at, Some(at(5)));
    }

    #[test]
    fn ties_at_a_page_boundary_order_by_id() {
        // Page 1 ends and page 2 begins on the same updatedDateTime.
        let pages = [
            vec![position(100, "a"), position(200, "c")],
            vec![position(200, "d"), position(200, "b")],
        ];
        let mut read = Read::from_cursor(None);
        for page in &pages {
            for seen in page {
                read.saw(seen.clone());
            }
        }
        let mut reversed = Read::from_cursor(None);
        for seen in pages.iter().flatten().rev() {
            reversed.saw(seen.clone());
        }
        assert_eq!(read, reversed, "the page order does not matter");
        let state = next_source_state(
            "t",
            None,
            &Published::default(),
            acknowledged(&read, false),
            OVERLAP,
            at(300),
        )
        .unwrap();
        assert_eq!(cursor_of(&state), Some(position(200, "d")));
    }

    #[test]
    fn a_failed_poll_leaves_the_state_unchanged() {
        let mut published = Published::default();
        published.remember("x".into(), 1, at(10_000));
        let previous = stored(position(10_000, "x"), &published);

        // The poll read newer records and some were acknowledged, then it failed.
        let mut read = Read::from_cursor(cursor_of(&previous));
        read.saw(position(20_000, "y"));
        published.remember("y".into(), 7, at(20_000));
        let next = next_source_state(
            "t",
            Some(&previous),
            &published,
            PollEnd::Failed,
            OVERLAP,
            at(30_000),
        );
        assert_eq!(next.as_ref(), Some(&previous));

        // A first poll that fails leaves no state at all: the next one reads everything.
        let none = next_source_state("t", None, &published, PollEnd::Failed, OVERLAP, at(1));
        assert_eq!(none, None);
    }

    #[test]
    fn published_versions_are_forgotten_only_before_cursor_minus_overlap() {
        let cursor = 100_000;
        let horizon = cursor - OVERLAP.as_secs() as i64;
        let mut published = Published::default();
        published.remember("old".into(), 1, at(0));
        published.remember("just-before".into(), 2, at(horizon - 1));
        published.remember("at-horizon".into(), 3, at(horizon));
        published.remember("inside".into(), 4, at(cursor - 1));
        published.remember("cursor".into(), 5, at(cursor));
        let state = stored(position(cursor, "cursor"), &published);
        let kept: Vec<(&str, i64, Timestamp)> = state
            .recent
            .iter()
            .map(|r| (r.id.as_str(), r.version, r.updated_at))
            .collect();
        assert_eq!(
            kept,
            [
                ("at-horizon", 3, at(horizon)),
                ("inside", 4, at(cursor - 1)),
                ("cursor", 5, at(cursor)),
            ]
        );
    }

    #[test]
    fn at_most_max_recent_versions_are_stored_the_newest_kept() {
        let cursor = 1_000_000;
        let mut published = Published::default();
        let extra = 3;
        for n in 0..(MAX_RECENT + extra) as i64 {
            published.remember(format!("r{n}"), n as u64, at(cursor - 500 + n / 100));
        }
        let state = stored(position(cursor, "r0"), &published);
        assert_eq!(state.recent.len(), MAX_RECENT);
        let oldest_kept = state.recent.first().unwrap();
        let newest_kept = state.recent.last().unwrap();
        let all = published.recent(at(0));
        assert_eq!(oldest_kept.id, all[extra].id);
        assert_eq!(newest_kept.id, all.last().unwrap().id);
    }

    #[test]
    fn a_full_sweep_records_when_it_ran_and_an_incremental_poll_keeps_it() {
        let published = Published::default();
        // A first poll reads everything: it counts as a sweep.
        let first = stored(position(10, "a"), &published);
        assert_eq!(first.last_full_sweep_at, Some(at(1)));

        let read = Read::from_cursor(cursor_of(&first));
        let incremental = next_source_state(
            "t",
            Some(&first),
            &published,
            acknowledged(&read, false),
            OVERLAP,
            at(50),
        )
        .unwrap();
        assert_eq!(incremental.last_full_sweep_at, Some(at(1)));
        assert_eq!(incremental.last_success_at, Some(at(50)));

        let mut read = Read::from_cursor(cursor_of(&incremental));
        read.saw(position(60, "b"));
        let sweep = next_source_state(
            "t",
            Some(&incremental),
            &published,
            acknowledged(&read, true),
            OVERLAP,
            at(90),
        )
        .unwrap();
        assert_eq!(sweep.last_full_sweep_at, Some(at(90)));
        assert_eq!(sweep.updated_at, at(90));
        assert_eq!(cursor_of(&sweep), Some(position(60, "b")));
    }
}
