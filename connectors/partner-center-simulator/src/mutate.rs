//! Referrals moving on while clients page (module docs of [`super`], "Mutations").
//!
//! A moved referral keeps its JSON text except for the members that change: key order, other
//! members' exact text (unknown fields, number spelling) and the file's item order are kept.

use std::fmt;
use std::sync::Arc;

use rand::Rng as _;
use rand::rngs::StdRng;
use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use time::{Duration, OffsetDateTime};

use super::api::{self, StoredReferral};
use super::generate::format_instant;
use super::{Simulator, lock};

/// Chance that a moved referral also takes a status step (when its status has one).
const STATUS_STEP_CHANCE: f64 = 0.5;
/// The resolution of the service's timestamps: 7 fraction digits.
const TICK: Duration = Duration::nanoseconds(100);

impl Simulator {
    /// With probability `mutate_rate`, moves `mutate_burst` random referrals on, in memory and
    /// in the file (in memory only with `mutations_in_memory`).
    pub(super) async fn maybe_mutate(&self) {
        let rate = f64::from_bits(self.mutate_rate.load(std::sync::atomic::Ordering::Relaxed));
        if rate <= 0.0 {
            return;
        }
        let draw: f64 = lock(&self.mutate_rng).random();
        if draw >= rate {
            return;
        }
        let mut store = self.store.lock().await;
        // Start from the file as it is now, so that an edit a test made is not overwritten.
        self.refresh_store(&mut store).await;
        if store.referrals.is_empty() {
            return;
        }
        let at = next_stamp(OffsetDateTime::now_utc(), store.last_mutation);
        let mut moves = Vec::new();
        let mut status_changes = 0u64;
        {
            let mut rng = lock(&self.mutate_rng);
            let current = &store.referrals;
            let count = self.opts.mutate_burst.min(current.len());
            let picks = rand::seq::index::sample(&mut *rng, current.len(), count);
            for index in picks.iter() {
                match move_on(&current[index], at, &mut rng, false) {
                    Ok((next, stepped)) => {
                        moves.push((index, next));
                        status_changes += u64::from(stepped);
                    }
                    Err(error) => {
                        tracing::warn!(id = %current[index].id, %error, "referral not moved on");
                    }
                }
            }
        }
        if moves.is_empty() {
            return;
        }
        let moved = moves.len() as u64;
        let ids: Vec<String> = moves.iter().map(|(_, r)| r.id.clone()).collect();
        if self.opts.mutations_in_memory {
            // In place: no copy of a big store (unless a reply is reading it right now).
            apply_moves(Arc::make_mut(&mut store.referrals), moves);
        } else {
            let mut referrals = store.referrals.as_ref().clone();
            apply_moves(&mut referrals, moves);
            let referrals = Arc::new(referrals);
            match api::persist(&self.opts.referrals_file, &mut store, &referrals).await {
                Ok(()) => store.referrals = referrals,
                Err(error) => {
                    // Memory and file must agree: without the write, the change is dropped.
                    tracing::warn!(%error, "referrals file not written, mutation dropped");
                    return;
                }
            }
        }
        store.last_mutation = Some(at);
        drop(store);
        {
            let mut stats = lock(&self.stats);
            stats.mutations.bursts += 1;
            stats.mutations.referrals += moved;
            stats.mutations.status_changes += status_changes;
        }
        tracing::debug!(moved, status_changes, "simulator moved referrals on");
        self.notify(super::webhooks::REFERRAL_UPDATED, &ids, at);
    }

    /// Moves referral `id` on now, with a status step when its status has one; the new
    /// referral's JSON, or `None` when there is no such referral.
    async fn move_now(&self, id: &str) -> Result<Option<String>, String> {
        let mut store = self.store.lock().await;
        self.refresh_store(&mut store).await;
        let Some(index) = store
            .referrals
            .iter()
            .position(|r| r.id.eq_ignore_ascii_case(id))
        else {
            return Ok(None);
        };
        let at = next_stamp(OffsetDateTime::now_utc(), store.last_mutation);
        let (next, stepped) = {
            let mut rng = lock(&self.mutate_rng);
            move_on(&store.referrals[index], at, &mut rng, true)?
        };
        let raw = next.raw.get().to_owned();
        let id = next.id.clone();
        let mut referrals = store.referrals.as_ref().clone();
        apply_moves(&mut referrals, vec![(index, next)]);
        let referrals = Arc::new(referrals);
        if !self.opts.mutations_in_memory {
            api::persist(&self.opts.referrals_file, &mut store, &referrals)
                .await
                .map_err(|error| format!("referrals file not written, nothing changed: {error}"))?;
        }
        store.referrals = referrals;
        store.last_mutation = Some(at);
        drop(store);
        {
            let mut stats = lock(&self.stats);
            stats.mutations.bursts += 1;
            stats.mutations.referrals += 1;
            stats.mutations.status_changes += u64::from(stepped);
        }
        tracing::info!(id, stepped, "simulator moved a referral on now");
        self.notify(super::webhooks::REFERRAL_UPDATED, &[id], at);
        Ok(Some(raw))
    }
}

#[derive(Deserialize)]
pub(super) struct MutateNowQuery {
    id: String,
}

/// `POST /_simulator/mutate-now?id=ID`: [`Simulator::move_now`].
pub(super) async fn mutate_now(
    axum::extract::State(simulator): axum::extract::State<Arc<Simulator>>,
    axum::extract::Query(query): axum::extract::Query<MutateNowQuery>,
) -> axum::response::Response {
    use axum::http::StatusCode;
    use axum::response::IntoResponse as _;
    simulator.record_admin("mutate_now");
    match simulator.move_now(&query.id).await {
        Ok(Some(raw)) => super::json_response(StatusCode::OK, raw),
        Ok(None) => api::error_reply(StatusCode::NOT_FOUND, "itemNotFound", "no such referral")
            .into_response(),
        Err(message) => api::error_reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "generalException",
            &message,
        )
        .into_response(),
    }
}

/// Replaces the referrals at the given indices with their moved-on versions and keeps the
/// store sorted by (`updatedDateTime`, `id`) without sorting all of it: the others keep their
/// order, and each moved one is inserted where it belongs (at the end, when it moved to now).
pub(super) fn apply_moves(
    referrals: &mut Vec<StoredReferral>,
    mut moves: Vec<(usize, StoredReferral)>,
) {
    moves.sort_by_key(|(index, _)| *index);
    let mut position = 0;
    let mut next_move = moves.iter().map(|(index, _)| *index).peekable();
    referrals.retain(|_| {
        let keep = next_move.peek() != Some(&position);
        if !keep {
            next_move.next();
        }
        position += 1;
        keep
    });
    let mut moved: Vec<StoredReferral> = moves.into_iter().map(|(_, referral)| referral).collect();
    api::sort_referrals(&mut moved);
    for referral in moved {
        let key = (referral.updated, referral.id.clone());
        let at = referrals.partition_point(|other| (other.updated, &other.id) <= (key.0, &key.1));
        referrals.insert(at, referral);
    }
}

/// `now` at 7-digit resolution, strictly after the previous burst's instant.
pub(super) fn next_stamp(now: OffsetDateTime, previous: Option<OffsetDateTime>) -> OffsetDateTime {
    let now = now.to_offset(time::UtcOffset::UTC);
    let now = now
        .replace_nanosecond(now.nanosecond() / 100 * 100)
        .unwrap_or(now);
    match previous {
        Some(previous) if now <= previous => previous + TICK,
        _ => now,
    }
}

/// The referral after one step: new `updatedDateTime` (`at`) and `eTag`, and maybe a status
/// step; returns whether the status changed.
fn move_on(
    referral: &StoredReferral,
    at: OffsetDateTime,
    rng: &mut StdRng,
    force_step: bool,
) -> Result<(StoredReferral, bool), String> {
    let mut fields: Fields =
        serde_json::from_str(referral.raw.get()).map_err(|error| error.to_string())?;
    let at_text = format_instant(at, 7);
    let etag = format!(
        "\"{:08x}-0000-0100-0000-{:012x}\"",
        rng.random::<u32>(),
        rng.random::<u64>() & 0xffff_ffff_ffff
    );
    fields.set_str("updatedDateTime", &at_text);
    fields.set_str("eTag", &etag);
    // Drawn whether forced or not, so a forced step does not change the draws that follow.
    let step = rng.random_bool(STATUS_STEP_CHANCE) || force_step;
    let won = rng.random_bool(0.5);
    let stepped = step
        && match fields.get_str("status").as_deref() {
            Some("New") => {
                fields.set_str("status", "Active");
                fields.set_str("substatus", "Accepted");
                if fields.get_str("acceptedDateTime").is_none() {
                    fields.set_str("acceptedDateTime", &at_text);
                }
                true
            }
            Some("Active") => {
                fields.set_str("status", "Closed");
                fields.set_str("substatus", if won { "Won" } else { "Lost" });
                fields.set_str("closedDateTime", &at_text);
                if !won {
                    fields.set_str("statusReason", "Lost to competitor");
                }
                true
            }
            _ => false,
        };
    Ok((
        StoredReferral {
            id: referral.id.clone(),
            updated: Some(at),
            raw: Arc::from(fields.into_raw()?),
            position: referral.position,
        },
        stepped,
    ))
}

/// A JSON object's members in order, each value's exact text kept.
pub(super) struct Fields(pub(super) Vec<(String, Box<RawValue>)>);

impl Fields {
    pub(super) fn get_str(&self, key: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(name, _)| name == key)
            .and_then(|(_, value)| serde_json::from_str::<Option<String>>(value.get()).ok())
            .flatten()
    }

    /// Replaces the member's value with the string `value` (the first of duplicates; the
    /// others are dropped), or appends the member.
    pub(super) fn set_str(&mut self, key: &str, value: &str) {
        let text = serde_json::to_string(value).unwrap_or_default();
        let Ok(raw) = RawValue::from_string(text) else {
            return;
        };
        match self.0.iter().position(|(name, _)| name == key) {
            Some(first) => {
                self.0[first].1 = raw;
                let mut index = 0;
                self.0.retain(|(name, _)| {
                    index += 1;
                    index - 1 == first || name != key
                });
            }
            None => self.0.push((key.to_owned(), raw)),
        }
    }

    pub(super) fn into_raw(self) -> Result<Box<RawValue>, String> {
        let mut text = String::from("{");
        for (index, (name, value)) in self.0.iter().enumerate() {
            if index > 0 {
                text.push(',');
            }
            text.push_str(&serde_json::to_string(name).map_err(|error| error.to_string())?);
            text.push(':');
            text.push_str(value.get());
        }
        text.push('}');
        RawValue::from_string(text).map_err(|error| error.to_string())
    }
}

impl<'de> Deserialize<'de> for Fields {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Members;
        impl<'de> Visitor<'de> for Members {
            type Value = Fields;

            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry::<String, Box<RawValue>>()? {
                    members.push(member);
                }
                Ok(Fields(members))
            }
        }
        deserializer.deserialize_map(Members)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng as _;

    /// Moving referrals in place gives the order a full sort gives, wherever the moved ones
    /// land (the end, the middle, ties, no timestamp).
    #[test]
    fn moves_in_place_keep_the_store_sorted() {
        let base = time::macros::datetime!(2024-01-01 00:00:00 UTC);
        let item = |index: usize, seconds: Option<i64>| StoredReferral {
            id: format!("id-{:03}", (index * 7919) % 1000),
            updated: seconds.map(|s| base + Duration::seconds(s)),
            raw: Arc::from(RawValue::from_string(format!("{{\"n\":{index}}}")).unwrap()),
            position: index,
        };
        let mut rng = StdRng::seed_from_u64(5);
        for _ in 0..50 {
            let mut referrals: Vec<StoredReferral> = (0..200)
                .map(|i| item(i, (i % 9 != 0).then(|| rng.random_range(0..50))))
                .collect();
            api::sort_referrals(&mut referrals);
            let picks = rand::seq::index::sample(&mut rng, referrals.len(), 12);
            let moves: Vec<(usize, StoredReferral)> = picks
                .iter()
                .map(|index| {
                    let to = [None, Some(-5), Some(25), Some(999)][rng.random_range(0..4)];
                    let mut moved = item(referrals[index].position, to);
                    moved.id = referrals[index].id.clone();
                    (index, moved)
                })
                .collect();
            let mut expected = referrals.clone();
            for (index, moved) in &moves {
                expected[*index] = moved.clone();
            }
            api::sort_referrals(&mut expected);
            apply_moves(&mut referrals, moves);
            let key = |r: &StoredReferral| (r.updated, r.id.clone(), r.raw.get().to_owned());
            assert_eq!(
                referrals.iter().map(key).collect::<Vec<_>>(),
                expected.iter().map(key).collect::<Vec<_>>()
            );
        }
    }

    fn stored(text: &str) -> StoredReferral {
        StoredReferral {
            id: "r1".to_owned(),
            updated: None,
            raw: Arc::from(RawValue::from_string(text.to_owned()).unwrap()),
            position: 3,
        }
    }

    #[test]
    fn only_the_changed_members_change() {
        let original = r#"{"zeta": 1.50, "id": "r1", "updatedDateTime": "2024-01-01T00:00:00Z",
            "eTag": "\"old\"", "status": "Closed", "substatus": "Won", "x": {"b": 1, "a": [1.0]}}"#;
        let at = time::macros::datetime!(2025-06-01 12:00:00.123_456_7 UTC);
        let mut rng = StdRng::seed_from_u64(1);
        let (moved, stepped) = move_on(&stored(original), at, &mut rng, false).unwrap();
        assert!(!stepped, "Closed stays");
        assert_eq!(moved.updated, Some(at));
        assert_eq!(moved.position, 3);
        let text = moved.raw.get();
        assert!(
            text.starts_with(r#"{"zeta":1.50,"id":"r1","updatedDateTime":"2025-06-01T12:00:00.1234567Z","eTag":"\""#),
            "{text}"
        );
        assert!(
            text.ends_with(r#""status":"Closed","substatus":"Won","x":{"b": 1, "a": [1.0]}}"#),
            "{text}"
        );
        let value: serde_json::Value = serde_json::from_str(text).unwrap();
        let etag = value["eTag"].as_str().unwrap();
        assert!(etag.starts_with('"') && etag.ends_with('"') && etag != "\"old\"");
    }

    #[test]
    fn status_steps_follow_the_transition_table() {
        let mut rng = StdRng::seed_from_u64(2);
        let at = time::macros::datetime!(2025-06-01 12:00:00 UTC);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..64 {
            for (status, substatus) in [
                ("New", "Pending"),
                ("New", "Received"),
                ("Active", "Accepted"),
            ] {
                let text = format!(
                    r#"{{"id":"r1","status":"{status}","substatus":"{substatus}","acceptedDateTime":null}}"#
                );
                let (moved, stepped) = move_on(&stored(&text), at, &mut rng, false).unwrap();
                let value: serde_json::Value = serde_json::from_str(moved.raw.get()).unwrap();
                let pair = (
                    value["status"].as_str().unwrap().to_owned(),
                    value["substatus"].as_str().unwrap().to_owned(),
                );
                if !stepped {
                    assert_eq!(pair, (status.to_owned(), substatus.to_owned()));
                    continue;
                }
                match status {
                    "New" => {
                        assert_eq!(pair, ("Active".to_owned(), "Accepted".to_owned()));
                        assert_eq!(value["acceptedDateTime"], "2025-06-01T12:00:00.0000000Z");
                    }
                    _ => {
                        assert_eq!(pair.0, "Closed");
                        assert!(pair.1 == "Won" || pair.1 == "Lost", "{pair:?}");
                        assert_eq!(value["closedDateTime"], "2025-06-01T12:00:00.0000000Z");
                    }
                }
                seen.insert(pair);
            }
        }
        assert_eq!(
            seen.len(),
            3,
            "Active/Accepted, Closed/Won and Closed/Lost all happen"
        );
    }

    #[test]
    fn stamps_are_truncated_and_strictly_increasing() {
        let now = time::macros::datetime!(2025-06-01 12:00:00.123_456_789 UTC);
        let first = next_stamp(now, None);
        assert_eq!(
            first,
            time::macros::datetime!(2025-06-01 12:00:00.123_456_7 UTC)
        );
        assert_eq!(next_stamp(now, Some(first)), first + TICK);
        let later = time::macros::datetime!(2025-06-01 12:00:01 UTC);
        assert_eq!(next_stamp(later, Some(first)), later);
    }
}
