//! Dedupe: per referral id, the newest version seen, so that an exact repeat or an older
//! version produces no lead.
//!
//! One exception: a repeat of a version whose lead was made by older lead rules (its
//! `enrichment_version` is below the processor's) is a [`Verdict::Refresh`]: the lead is made
//! again by today's rules, with the change type and previous status it had, so that re-reading
//! Partner Center (`hunter backfill`) fills fields added since (docs/leads.md). The state then
//! remembers today's rules: a further repeat is a plain repeat.
//!
//! Versions are ordered by `(updatedDateTime, eTag)` (the eTag by its hash: a fixed, if
//! arbitrary, order for two versions with the same timestamp, so replays decide the same way).
//!
//! # Memory
//!
//! The state is kept per partition of the referral topic and keyed by a 64-bit hash of the
//! referral id (never the id text): 8 bytes of key + 24 bytes of [`Seen`] per slot, plus the
//! hash table's control byte and spare capacity. [`Versions::bytes_per_key`] reports the real
//! figure (about 37 bytes right after the table grows, 33 when full: within the 64 bytes per
//! key target). Two ids colliding on 64 bits would make the second look like a version of the
//! first; with a million referrals the chance is about 3 in 100 million.
//!
//! # Where the state comes from
//!
//! It is rebuilt, for exactly the partitions this processor is assigned, from the compacted
//! lead topic: the lead for referral `id` is keyed by `id` and produced with the same
//! partitioner into a topic with the same partition count, so lead partition `p` holds the
//! leads of referral partition `p`. A partition's state is dropped when it is revoked.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};

use hunter_core::records::{Lead, Timestamp, stable_hash};

/// What is remembered per referral: its newest version, that version's status, and what its
/// lead said about the version before (for a [`Verdict::Refresh`]). 24 bytes, as before the
/// last three fields: they fill what was padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    pub updated_at: i64,
    pub etag: u64,
    /// Index into the status table (`u16::MAX`: none).
    pub status: u16,
    /// The lead's `previous_status`, an index into the status table (`u16::MAX`: none).
    pub previous_status: u16,
    /// The lead was the referral's first (`change_type` created).
    pub first: bool,
    /// The lead rules (`enrichment_version`, saturated to 255) that made the lead.
    pub rules: u8,
}

/// What to do with a referral version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Never seen: a `created` lead.
    First,
    /// Newer than what was seen; carries the previous version's status.
    Newer { previous_status: Option<String> },
    /// The same version again: no lead.
    Repeat,
    /// The same version again, whose lead older rules made: the lead again, as it was first
    /// produced (`first`, `previous_status`) but by today's rules.
    Refresh {
        first: bool,
        previous_status: Option<String>,
    },
    /// Older than what was seen: no lead.
    Older,
}

/// The dedupe state of one processor.
#[derive(Debug, Default)]
pub struct Versions {
    /// The lead rules of this processor (`ENRICHMENT_VERSION`): a repeat of a lead made by older
    /// ones is refreshed. 0 (the default) never refreshes.
    rules: u8,
    partitions: HashMap<i32, HashMap<u64, Seen>>,
    /// Status texts, interned: there are a handful, and a `u16` per key is cheaper than text.
    statuses: Vec<String>,
    revoked: HashSet<i32>,
}

fn key_hash(id: &str) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    id.hash(&mut hasher);
    hasher.finish()
}

/// The hash that orders two versions with the same timestamp.
pub fn etag_hash(etag: Option<&str>) -> u64 {
    // Compared between processes (a replay after a restart): a hash stable across builds.
    stable_hash(etag.unwrap_or("").as_bytes())
}

fn rules_of(enrichment_version: i32) -> u8 {
    u8::try_from(enrichment_version.max(0)).unwrap_or(u8::MAX)
}

impl Versions {
    /// A state that refreshes leads made by rules older than `rules` (`ENRICHMENT_VERSION`).
    pub fn with_rules(rules: i32) -> Self {
        Versions {
            rules: rules_of(rules),
            ..Versions::default()
        }
    }

    pub fn is_loaded(&self, partition: i32) -> bool {
        self.partitions.contains_key(&partition)
    }

    /// Replaces a partition's state with the leads read back from the lead topic.
    pub fn load<'a>(&mut self, partition: i32, leads: impl IntoIterator<Item = &'a Lead>) {
        let mut state = HashMap::new();
        for lead in leads {
            let seen = Seen {
                updated_at: lead.updated_at.micros(),
                etag: etag_hash(lead.etag.as_deref()),
                status: self.intern(lead.status.as_deref()),
                previous_status: self.intern(lead.previous_status.as_deref()),
                first: lead.change_type == "created",
                rules: rules_of(lead.enrichment_version),
            };
            let slot = state.entry(key_hash(&lead.lead_id)).or_insert(seen);
            // Of two leads of one version the later record wins (`leads` is in topic order):
            // a refreshed lead supersedes the one older rules made, as compaction will.
            if (seen.updated_at, seen.etag) >= (slot.updated_at, slot.etag) {
                *slot = seen;
            }
        }
        self.partitions.insert(partition, state);
    }

    /// Decides about a version and, when it produces a lead, remembers it at once (so that a
    /// repeat right behind it, still in flight, is recognised too).
    pub fn observe(
        &mut self,
        partition: i32,
        id: &str,
        updated_at: Timestamp,
        etag: Option<&str>,
        status: Option<&str>,
    ) -> Verdict {
        let status = self.intern(status);
        let seen = Seen {
            updated_at: updated_at.micros(),
            etag: etag_hash(etag),
            status,
            previous_status: u16::MAX,
            first: true,
            rules: self.rules,
        };
        let state = self.partitions.entry(partition).or_default();
        match state.get(&key_hash(id)).copied() {
            None => {
                state.insert(key_hash(id), seen);
                Verdict::First
            }
            Some(previous) => {
                let (new, old) = (
                    (seen.updated_at, seen.etag),
                    (previous.updated_at, previous.etag),
                );
                if new == old && previous.rules < self.rules {
                    state.insert(
                        key_hash(id),
                        Seen {
                            rules: self.rules,
                            ..previous
                        },
                    );
                    Verdict::Refresh {
                        first: previous.first,
                        previous_status: self
                            .statuses
                            .get(usize::from(previous.previous_status))
                            .cloned(),
                    }
                } else if new == old {
                    Verdict::Repeat
                } else if new < old {
                    Verdict::Older
                } else {
                    state.insert(
                        key_hash(id),
                        Seen {
                            previous_status: previous.status,
                            first: false,
                            ..seen
                        },
                    );
                    Verdict::Newer {
                        previous_status: self.statuses.get(usize::from(previous.status)).cloned(),
                    }
                }
            }
        }
    }

    fn intern(&mut self, status: Option<&str>) -> u16 {
        let Some(status) = status else {
            return u16::MAX;
        };
        if let Some(index) = self.statuses.iter().position(|s| s == status) {
            return index as u16;
        }
        // A few statuses exist; a flood of new ones (bad data) stops being remembered.
        if self.statuses.len() >= usize::from(u16::MAX - 1) {
            return u16::MAX;
        }
        self.statuses.push(status.to_owned());
        (self.statuses.len() - 1) as u16
    }

    /// Keys held, over every partition.
    pub fn keys(&self) -> usize {
        self.partitions.values().map(HashMap::len).sum()
    }

    /// Memory of the tables per key: slots × (key + value + control byte) / keys.
    pub fn bytes_per_key(&self) -> f64 {
        let slot = std::mem::size_of::<(u64, Seen)>() + 1;
        let bytes: usize = self.partitions.values().map(|m| m.capacity() * slot).sum();
        match self.keys() {
            0 => 0.0,
            keys => bytes as f64 / keys as f64,
        }
    }

    /// Remembers partitions revoked by a rebalance, to drop on the next message.
    pub fn revoke(&mut self, partitions: impl IntoIterator<Item = i32>) {
        self.revoked.extend(partitions);
    }

    /// Drops the state of revoked partitions.
    pub fn apply_revocations(&mut self) {
        for partition in std::mem::take(&mut self.revoked) {
            self.partitions.remove(&partition);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn repeats_and_older_versions_produce_nothing() {
        let mut versions = Versions::default();
        let t = |micros| Timestamp(micros);
        assert_eq!(
            versions.observe(0, "a", t(10), Some("e1"), Some("New")),
            Verdict::First
        );
        assert_eq!(
            versions.observe(0, "a", t(10), Some("e1"), Some("New")),
            Verdict::Repeat
        );
        assert_eq!(
            versions.observe(0, "a", t(20), Some("e2"), Some("Active")),
            Verdict::Newer {
                previous_status: Some("New".into())
            }
        );
        assert_eq!(
            versions.observe(0, "a", t(10), Some("e1"), Some("New")),
            Verdict::Older
        );
        assert_eq!(
            versions.observe(0, "a", t(20), Some("e2"), Some("Active")),
            Verdict::Repeat
        );
        // Another partition is another state.
        assert_eq!(
            versions.observe(1, "a", t(10), Some("e1"), Some("New")),
            Verdict::First
        );
    }

    #[test]
    fn a_repeat_of_a_lead_made_by_older_rules_is_refreshed_once_as_it_was() {
        let lead =
            |id: &str, at: i64, status: &str, previous: Option<&str>, change: &str, rules| Lead {
                lead_id: id.into(),
                status: Some(status.into()),
                previous_status: previous.map(Into::into),
                change_type: change.into(),
                updated_at: Timestamp(at),
                etag: Some(format!("e{at}")),
                version: at,
                enrichment_version: rules,
                ..Lead::default()
            };
        let mut versions = Versions::with_rules(2);
        versions.load(
            0,
            [
                lead("moved", 20, "Active", Some("New"), "status_changed", 1),
                lead("created", 10, "New", None, "created", 0),
                lead("current", 10, "New", None, "created", 2),
            ]
            .iter(),
        );
        let t = Timestamp;
        assert_eq!(
            versions.observe(0, "moved", t(20), Some("e20"), Some("Active")),
            Verdict::Refresh {
                first: false,
                previous_status: Some("New".into())
            }
        );
        assert_eq!(
            versions.observe(0, "moved", t(20), Some("e20"), Some("Active")),
            Verdict::Repeat
        );
        assert_eq!(
            versions.observe(0, "created", t(10), Some("e10"), Some("New")),
            Verdict::Refresh {
                first: true,
                previous_status: None
            }
        );
        // Made by today's rules: a plain repeat; an older version stays older.
        assert_eq!(
            versions.observe(0, "current", t(10), Some("e10"), Some("New")),
            Verdict::Repeat
        );
        assert_eq!(
            versions.observe(0, "moved", t(5), Some("e5"), Some("New")),
            Verdict::Older
        );
        // A newer version after a refresh knows the refreshed status as the previous one.
        assert_eq!(
            versions.observe(0, "moved", t(30), Some("e30"), Some("Closed")),
            Verdict::Newer {
                previous_status: Some("Active".into())
            }
        );
        // Reloaded before compaction, the later (refreshed) record of a version wins.
        let mut reloaded = Versions::with_rules(2);
        reloaded.load(
            0,
            [
                lead("x", 10, "New", None, "created", 1),
                lead("x", 10, "New", None, "created", 2),
            ]
            .iter(),
        );
        assert_eq!(
            reloaded.observe(0, "x", t(10), Some("e10"), Some("New")),
            Verdict::Repeat
        );
        // Without rules (the default) nothing is ever refreshed.
        let mut plain = Versions::default();
        plain.load(0, [lead("old", 10, "New", None, "created", 0)].iter());
        assert_eq!(
            plain.observe(0, "old", t(10), Some("e10"), Some("New")),
            Verdict::Repeat
        );
        assert_eq!(std::mem::size_of::<Seen>(), 24);
    }

    proptest! {
        /// Whatever order versions arrive in (replays included), each version produces at most
        /// one lead, and the newest version always produced one.
        #[test]
        fn each_version_at_most_once_and_the_newest_always(
            arrivals in proptest::collection::vec((0u8..5, 0i64..6, 0u8..3), 1..200),
        ) {
            let mut versions = Versions::default();
            let mut produced = HashSet::new();
            let mut newest: HashMap<u8, (i64, u64)> = HashMap::new();
            for (id, at, etag) in &arrivals {
                let etag_text = format!("e{etag}");
                let verdict = versions.observe(0, &format!("r{id}"), Timestamp(*at), Some(&etag_text), None);
                let version = (*id, *at, *etag);
                if matches!(verdict, Verdict::First | Verdict::Newer { .. }) {
                    prop_assert!(produced.insert(version), "produced twice: {version:?}");
                }
                let key = (*at, etag_hash(Some(&etag_text)));
                let slot = newest.entry(*id).or_insert(key);
                if key > *slot { *slot = key; }
            }
            for (id, (at, etag)) in newest {
                let newest_produced = produced
                    .iter()
                    .any(|(i, a, e)| *i == id && *a == at && etag_hash(Some(&format!("e{e}"))) == etag);
                prop_assert!(newest_produced, "the newest version of r{} produced no lead", id);
            }
        }
    }

    #[test]
    fn memory_per_key_stays_under_64_bytes() {
        let mut versions = Versions::default();
        for i in 0..200_000 {
            versions.observe(
                i % 4,
                &format!("referral-{i:08}"),
                Timestamp(i64::from(i)),
                Some("e"),
                Some("New"),
            );
        }
        let per_key = versions.bytes_per_key();
        eprintln!(
            "dedupe state: {per_key:.1} bytes per key over {} keys",
            versions.keys()
        );
        assert!(per_key <= 64.0, "{per_key} bytes per key");
    }

    #[test]
    fn load_and_revoke() {
        let mut versions = Versions::default();
        let lead = |id: &str, at: i64, etag: &str| Lead {
            lead_id: id.into(),
            status: Some("Active".into()),
            updated_at: Timestamp(at),
            etag: Some(etag.into()),
            version: at,
            ..Lead::default()
        };
        let leads = [lead("a", 5, "x"), lead("a", 9, "y"), lead("b", 1, "z")];
        versions.load(2, leads.iter());
        assert!(versions.is_loaded(2));
        assert_eq!(
            versions.observe(2, "a", Timestamp(9), Some("y"), Some("Active")),
            Verdict::Repeat
        );
        assert_eq!(
            versions.observe(2, "a", Timestamp(5), Some("x"), Some("Active")),
            Verdict::Older
        );
        versions.revoke([2]);
        versions.apply_revocations();
        assert!(!versions.is_loaded(2));
    }
}
