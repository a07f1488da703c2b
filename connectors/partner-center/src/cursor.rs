//! The incremental cursor: which referrals a poll asks for, how it pages, and which versions
//! it has already published.
//!
//! # How a poll reads
//!
//! A poll asks for `updatedDateTime ge (cursor - overlap)` in ascending order. Rather than
//! trusting `@odata.nextLink` offsets (the service documents no snapshot isolation: a record
//! updated while a run is paging moves to the end of the order and shifts the offsets, which
//! can skip a record that was never touched), it pages by key: the next request is the same
//! filtered query starting at the newest `updatedDateTime` of the page just read. A record
//! updated mid-run gets a newer timestamp, so a later page of the same run reads it; a record
//! not touched keeps its place in the key order, so no page can step over it. Only when a whole
//! page shares one timestamp (more ties than `$top`) does the pager follow `nextLink` until the
//! timestamp moves on; there, an update of one of those tied records during that very run could
//! still shift an offset, which the periodic full sweep repairs.
//!
//! Ties at a page boundary are read twice; [`Published`] makes the second read a skip.
//!
//! # Invariants
//!
//! - the cursor only moves forward, and only to a record the poll read (`(updatedDateTime, id)`
//!   of the newest one);
//! - a version (the eTag, else the timestamp) recorded in [`Published`] is not published again;
//! - [`Published`] may forget versions older than `cursor - overlap` only from what it persists:
//!   no later incremental poll can read them again.

use std::collections::HashMap;
use std::time::Duration;

use hunter_core::records::{Timestamp, stable_hash};

/// A position in the `(updatedDateTime, id)` order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    pub updated_at: Timestamp,
    pub id: String,
}

/// Where the next poll starts reading: `cursor - overlap`, not before the epoch.
pub fn since(cursor: Option<&Position>, overlap: Duration) -> Option<Timestamp> {
    cursor.map(|position| {
        let overlap = i64::try_from(overlap.as_micros()).unwrap_or(i64::MAX);
        Timestamp(position.updated_at.micros().saturating_sub(overlap).max(0))
    })
}

/// The next request of a poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// The filtered query from this instant (`None`: everything).
    From(Option<Timestamp>),
    /// Follow this `@odata.nextLink`.
    Next(String),
}

/// Pages one poll by key (see the module doc). Feed it each page; it says what to ask next.
#[derive(Debug, Clone)]
pub struct Pager {
    /// The lower bound of the current keyset query.
    from: Option<Timestamp>,
    next: Option<Request>,
    /// Pages read; a safety valve against a server that never ends.
    pages: u64,
}

/// Pages one poll may read at most before the pager calls it a loop (a million referrals at
/// the smallest page size the API documents).
pub const MAX_PAGES: u64 = 100_000;

impl Pager {
    pub fn new(from: Option<Timestamp>) -> Self {
        Pager {
            from,
            next: Some(Request::From(from)),
            pages: 0,
        }
    }

    /// What to request next; `None` when the poll has read everything.
    pub fn next_request(&self) -> Option<&Request> {
        self.next.as_ref()
    }

    /// Records a page: the `updatedDateTime` of each item (in order) and its `nextLink`.
    /// Returns an error if the server keeps answering without progress.
    pub fn on_page(
        &mut self,
        updated: &[Option<Timestamp>],
        next_link: Option<String>,
    ) -> Result<(), String> {
        self.pages += 1;
        if self.pages > MAX_PAGES {
            return Err(format!(
                "more than {MAX_PAGES} pages in one poll: the server does not make progress"
            ));
        }
        let Some(link) = next_link else {
            // The query's whole result fitted: everything from `from` on has been read.
            self.next = None;
            return Ok(());
        };
        let newest = updated.iter().flatten().max().copied();
        match (newest, self.from) {
            // The page reached past the query's start: ask again from its newest instant.
            (Some(newest), Some(from)) if newest > from => {
                self.from = Some(newest);
                self.next = Some(Request::From(Some(newest)));
            }
            (Some(newest), None) => {
                self.from = Some(newest);
                self.next = Some(Request::From(Some(newest)));
            }
            // A whole page at the query's start instant (or without timestamps): only the
            // service's own paging can get past it.
            _ => self.next = Some(Request::Next(link)),
        }
        Ok(())
    }

    pub fn pages(&self) -> u64 {
        self.pages
    }
}

/// The version key of one referral version: its eTag, else its timestamp.
pub fn version_of(etag: Option<&str>, updated_at: Option<Timestamp>) -> u64 {
    // Persisted with the cursor: a hash that does not change between builds.
    match (etag, updated_at) {
        (Some(etag), _) => stable_hash(etag.as_bytes()),
        (None, Some(at)) => stable_hash(&at.micros().to_le_bytes()),
        (None, None) => 0,
    }
}

/// One remembered version, as persisted in the source state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remembered {
    pub id: String,
    pub version: u64,
    pub updated_at: Timestamp,
}

/// The versions this source published, per referral id: about 60 bytes per referral (id text,
/// version hash, timestamp, map overhead), so 100,000 referrals cost about 6 MB.
#[derive(Debug, Default, Clone)]
pub struct Published {
    versions: HashMap<String, (u64, Timestamp)>,
}

impl Published {
    pub fn is_published(&self, id: &str, version: u64) -> bool {
        self.versions.get(id).is_some_and(|(v, _)| *v == version)
    }

    /// Remember a version the broker acknowledged.
    pub fn remember(&mut self, id: String, version: u64, updated_at: Timestamp) {
        self.versions.insert(id, (version, updated_at));
    }

    /// The versions a later incremental poll can read again (`updated_at >= horizon`): what
    /// the source persists so that a restart does not republish its overlap window.
    pub fn recent(&self, horizon: Timestamp) -> Vec<Remembered> {
        let mut recent: Vec<Remembered> = self
            .versions
            .iter()
            .filter(|(_, (_, at))| *at >= horizon)
            .map(|(id, (version, at))| Remembered {
                id: id.clone(),
                version: *version,
                updated_at: *at,
            })
            .collect();
        recent.sort_by(|a, b| (a.updated_at, &a.id).cmp(&(b.updated_at, &b.id)));
        recent
    }

    pub fn len(&self) -> usize {
        self.versions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.versions.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_subtracts_the_overlap_and_stops_at_the_epoch() {
        let at = Position {
            updated_at: Timestamp(700_000_000),
            id: "a".into(),
        };
        assert_eq!(
            since(Some(&at), Duration::from_secs(600)),
            Some(Timestamp(100_000_000))
        );
        assert_eq!(
            since(Some(&at), Duration::from_secs(6000)),
            Some(Timestamp(0))
        );
        assert_eq!(since(None, Duration::from_secs(600)), None);
    }

    #[test]
    fn pager_steps_by_key_and_follows_links_through_ties() {
        let mut pager = Pager::new(None);
        assert_eq!(pager.next_request(), Some(&Request::From(None)));
        pager
            .on_page(&[Some(Timestamp(1)), Some(Timestamp(5))], Some("l1".into()))
            .unwrap();
        assert_eq!(
            pager.next_request(),
            Some(&Request::From(Some(Timestamp(5))))
        );
        pager
            .on_page(&[Some(Timestamp(5)), Some(Timestamp(5))], Some("l2".into()))
            .unwrap();
        assert_eq!(
            pager.next_request(),
            Some(&Request::Next("l2".into())),
            "a page of one tie follows the link"
        );
        pager
            .on_page(&[Some(Timestamp(5)), Some(Timestamp(9))], Some("l3".into()))
            .unwrap();
        assert_eq!(
            pager.next_request(),
            Some(&Request::From(Some(Timestamp(9))))
        );
        pager.on_page(&[Some(Timestamp(9))], None).unwrap();
        assert_eq!(pager.next_request(), None);
    }

    // That no referral is skipped across polls, sweeps, late referrals, tie runs and
    // restarts is a property of the whole poll loop: the source's tests drive the real one
    // (this pager, the client and the cursor state) against the simulator
    // (`pipeline/src/roles/source/tests.rs`).

    #[test]
    fn recent_keeps_only_what_a_later_poll_can_read() {
        let mut published = Published::default();
        published.remember("old".into(), 1, Timestamp(10));
        published.remember("new".into(), 2, Timestamp(100));
        let recent = published.recent(Timestamp(50));
        assert_eq!(
            recent,
            vec![Remembered {
                id: "new".into(),
                version: 2,
                updated_at: Timestamp(100)
            }]
        );
        assert!(published.is_published("old", 1));
        assert!(!published.is_published("old", 3));
    }
}
