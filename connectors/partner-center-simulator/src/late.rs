//! Late referrals: `POST /_simulator/late?count=N&before_newest_secs=S` (or `&at=<RFC 3339>`)
//! adds `count` new referrals that become visible now but carry an `updatedDateTime` in the
//! past, all the same instant.
//!
//! The real service documents no snapshot isolation and no commit order: a referral can show
//! up in the list after referrals with a later `updatedDateTime` were already served (a late
//! commit, a replica catching up, a clock behind). An incremental poll reads
//! `updatedDateTime ge (cursor - overlap)`, so a referral that shows up older than that is
//! invisible to it; only the periodic full sweep (no filter) reads it. This route makes such a
//! referral on demand, and with `count` above the client's `$top` a run of ties longer than a
//! page, so tests can require that the sweep publishes them.
//!
//! - `before_newest_secs=S`: `updatedDateTime` is the newest one served minus `S` seconds (the
//!   source's cursor is the newest it read, so `S` above its overlap puts the referrals out of
//!   an incremental poll's reach);
//! - `at=T`: exactly that instant (7 fraction digits at most);
//! - exactly one of the two; `count` is 1 to [`MAX_LATE`] (default 1).
//!
//! Each referral is a generated one (`crate::generate`) with a fresh id, a fresh `eTag` and
//! `createdDateTime` = `updatedDateTime`. They are appended to the file (written atomically, as
//! mutations are; in memory only with `mutations_in_memory`), so the file,
//! `GET /_simulator/referrals` and the very next list request agree. The reply names the ids,
//! the eTags and the instant. A bad parameter gets a 400 naming it.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse as _, Response};
use rand::Rng as _;
use serde_json::value::RawValue;
use time::OffsetDateTime;

use super::api::{self, StoredReferral};
use super::generate::{format_instant, generate_referrals};
use super::{Simulator, json_response, lock};

/// Most referrals one call adds.
pub(super) const MAX_LATE: usize = 10_000;

/// What one call asked for.
#[derive(Debug, PartialEq)]
struct LateQuery {
    count: usize,
    when: When,
}

#[derive(Debug, PartialEq)]
enum When {
    At(OffsetDateTime),
    BeforeNewest(time::Duration),
}

/// Parses the query; the error names the bad parameter: (parameter, message).
fn parse_query(query: &str) -> Result<LateQuery, (String, String)> {
    let mut count = 1;
    let mut when = None;
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        let bad = |message: String| (key.to_string(), message);
        let parsed = match &*key {
            "count" => match value.trim().parse::<usize>() {
                Ok(n) if (1..=MAX_LATE).contains(&n) => {
                    count = n;
                    continue;
                }
                _ => {
                    return Err(bad(format!(
                        "count `{value}` is not a number in 1..={MAX_LATE}"
                    )));
                }
            },
            "at" => api::parse_instant(value.trim())
                .map(When::At)
                .ok_or_else(|| bad(format!("at `{value}` is not an RFC 3339 instant")))?,
            "before_newest_secs" => match value.trim().parse::<u32>() {
                Ok(secs) => When::BeforeNewest(time::Duration::seconds(i64::from(secs))),
                Err(_) => {
                    return Err(bad(format!(
                        "before_newest_secs `{value}` is not a whole number of seconds"
                    )));
                }
            },
            other => {
                return Err(bad(format!(
                    "unknown parameter `{other}` (known: count, at, before_newest_secs)"
                )));
            }
        };
        if when.replace(parsed).is_some() {
            return Err(bad("give one of at and before_newest_secs, once".into()));
        }
    }
    let when = when.ok_or_else(|| {
        (
            "at".to_owned(),
            "give at=<RFC 3339 instant> or before_newest_secs=<seconds>".to_owned(),
        )
    })?;
    Ok(LateQuery { count, when })
}

/// Truncates to the service's resolution (7 fraction digits).
fn to_ticks(at: OffsetDateTime) -> OffsetDateTime {
    let at = at.to_offset(time::UtcOffset::UTC);
    at.replace_nanosecond(at.nanosecond() / 100 * 100)
        .unwrap_or(at)
}

/// `count` generated referrals with fresh ids and eTags, all updated (and created) at `at`.
fn late_referrals(
    count: usize,
    at: OffsetDateTime,
    seed: u64,
    rng: &mut impl rand::Rng,
) -> Result<Vec<(String, String, Box<RawValue>)>, String> {
    let at_text = format_instant(at, 7);
    generate_referrals(count, seed)
        .into_iter()
        .map(|mut referral| {
            let id = uuid::Builder::from_random_bytes(rng.random())
                .into_uuid()
                .to_string();
            let etag = format!(
                "\"{:08x}-0000-0200-0000-{:012x}\"",
                rng.random::<u32>(),
                rng.random::<u64>() & 0xffff_ffff_ffff
            );
            referral["id"] = id.clone().into();
            referral["eTag"] = etag.clone().into();
            referral["updatedDateTime"] = at_text.clone().into();
            referral["createdDateTime"] = at_text.clone().into();
            let raw = serde_json::value::to_raw_value(&referral).map_err(|e| e.to_string())?;
            Ok((id, etag, raw))
        })
        .collect()
}

/// `POST /_simulator/late`: see the module docs.
pub(super) async fn add_late_referrals(
    State(simulator): State<Arc<Simulator>>,
    RawQuery(query): RawQuery,
) -> Response {
    simulator.record_admin("late");
    let query = match parse_query(&query.unwrap_or_default()) {
        Ok(query) => query,
        Err((item, message)) => {
            return json_response(
                StatusCode::BAD_REQUEST,
                serde_json::json!({
                    "error": { "code": "invalidRequest", "message": message, "item": item }
                })
                .to_string(),
            );
        }
    };
    let mut store = simulator.store.lock().await;
    // Start from the file as it is now, so that an edit a test made is not overwritten.
    simulator.refresh_store(&mut store).await;
    let at = match query.when {
        When::At(at) => to_ticks(at),
        When::BeforeNewest(before) => {
            let Some(newest) = store.referrals.iter().rev().find_map(|r| r.updated) else {
                return api::error_reply(
                    StatusCode::CONFLICT,
                    "invalidRequest",
                    "no referral has an updatedDateTime to count back from: use at=",
                )
                .into_response();
            };
            to_ticks(newest - before)
        }
    };
    let made = {
        let mut rng = lock(&simulator.mutate_rng);
        let seed = rng.random();
        late_referrals(query.count, at, seed, &mut *rng)
    };
    let made = match made {
        Ok(made) => made,
        Err(error) => {
            return api::error_reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "generalException",
                &error,
            )
            .into_response();
        }
    };
    let first_position = store
        .referrals
        .iter()
        .map(|r| r.position + 1)
        .chain(store.unserved.iter().map(|(p, _)| p + 1))
        .max()
        .unwrap_or(0);
    let mut referrals = store.referrals.as_ref().clone();
    let (mut ids, mut etags) = (Vec::new(), Vec::new());
    for (position, (id, etag, raw)) in (first_position..).zip(made) {
        let referral = StoredReferral {
            id: id.clone(),
            updated: Some(at),
            raw: Arc::from(raw),
            position,
        };
        let slot = referrals.partition_point(|other| (other.updated, &other.id) <= (Some(at), &id));
        referrals.insert(slot, referral);
        ids.push(id);
        etags.push(etag);
    }
    let referrals = Arc::new(referrals);
    if !simulator.opts.mutations_in_memory {
        match api::persist(&simulator.opts.referrals_file, &mut store, &referrals).await {
            Ok(()) => {}
            Err(error) => {
                // Memory and file must agree: without the write, nothing is added.
                return api::error_reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "generalException",
                    &format!("referrals file not written, nothing added: {error}"),
                )
                .into_response();
            }
        }
    }
    store.referrals = referrals;
    drop(store);
    simulator.notify(super::webhooks::REFERRAL_CREATED, &ids, at);
    let at_text = format_instant(at, 7);
    tracing::info!(count = ids.len(), updated = %at_text, "simulator added late referrals");
    json_response(
        StatusCode::OK,
        serde_json::json!({ "ids": ids, "eTags": etags, "updatedDateTime": at_text }).to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_needs_one_instant_and_names_a_bad_parameter() {
        assert_eq!(
            parse_query("count=12&before_newest_secs=3600"),
            Ok(LateQuery {
                count: 12,
                when: When::BeforeNewest(time::Duration::hours(1))
            })
        );
        assert_eq!(
            parse_query("at=2024-05-01T10:00:00.1234567Z").map(|q| q.count),
            Ok(1)
        );
        for (query, item) in [
            ("", "at"),
            ("count=0&at=2024-05-01T10:00:00Z", "count"),
            ("count=x&at=2024-05-01T10:00:00Z", "count"),
            ("at=yesterday", "at"),
            ("before_newest_secs=-5", "before_newest_secs"),
            (
                "at=2024-05-01T10:00:00Z&before_newest_secs=5",
                "before_newest_secs",
            ),
            ("when=now", "when"),
        ] {
            let (named, _) = parse_query(query).expect_err(query);
            assert_eq!(named, item, "{query}");
        }
    }

    #[test]
    fn late_referrals_share_one_instant_and_have_fresh_ids() {
        let at = to_ticks(time::macros::datetime!(2024-03-01 12:00:00.123456789 UTC));
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(7);
        let made = late_referrals(5, at, 3, &mut rng).unwrap();
        let ids: std::collections::HashSet<_> = made.iter().map(|(id, _, _)| id).collect();
        assert_eq!(ids.len(), 5);
        for (id, etag, raw) in &made {
            let value: serde_json::Value = serde_json::from_str(raw.get()).unwrap();
            assert_eq!(value["id"], id.as_str());
            assert_eq!(value["eTag"], etag.as_str());
            assert_eq!(value["updatedDateTime"], "2024-03-01T12:00:00.1234567Z");
            assert_eq!(value["createdDateTime"], "2024-03-01T12:00:00.1234567Z");
        }
    }
}
