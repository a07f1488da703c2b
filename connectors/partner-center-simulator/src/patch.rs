//! `PATCH /v1.0/engagements/referrals/{id}`: the write path of the simulated Referrals API.
//!
//! What it does, in order (each step answers before the next one runs):
//!
//! 1. authentication and the injected faults of [`crate::faults`], as for every referrals
//!    endpoint (a 429/5xx fault answers before anything changes; `truncate` and `slow` apply the
//!    change and then spoil the reply, as a connection dropped after the write would);
//! 2. 404 `itemNotFound` for an unknown referral;
//! 3. 403 `forbidden` while `POST /_simulator/write-access?allowed=false` is in force: the
//!    signed-in user is a *Referrals User* without write rights;
//! 4. 400 `invalidRequest` for a body that is not a JSON Patch array of `replace`/`add`
//!    operations on `/`-paths (`remove`, `move`, `copy`, `test` are refused, as the service
//!    documents only the first two);
//! 5. 412 `preconditionFailed` when `If-Match` is present and is not the current `eTag`; the
//!    body is the current referral (what the caller needs to show the conflict);
//! 6. 400 `invalidStatusTransition` (Partner Center-shaped error body) for a status change the
//!    rules refuse: `New` → `Active`/`Accepted` or `Closed`/`Declined`; `Active` →
//!    `Closed`/`Won` or `Closed`/`Lost`; `Closed` is terminal (no change at all); `Declined`
//!    and `Lost` need a `statusReason`;
//! 7. the change is applied: new `updatedDateTime` (strictly later than any earlier change) and
//!    `eTag`, `acceptedDateTime`/`closedDateTime` on the transitions, written to the file
//!    atomically like a mutation; `Prefer: return=representation` answers 200 with the referral
//!    and an `ETag` header, otherwise 204.
//!
//! Every answer is counted in `/_simulator/stats` under `requests.referral_patch.<status>`, so a
//! test can tell how many PATCHes were applied (the 200s and 204s).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use rand::Rng as _;
use serde_json::Value;
use serde_json::value::RawValue;
use time::OffsetDateTime;

use super::api::{self, Reply, StoredReferral, error_reply, serve_api};
use super::generate::format_instant;
use super::mutate::{Fields, apply_moves, next_stamp};
use super::{Simulator, json_response};

/// Whether the signed-in user may write (the simulator's stand-in for the Partner Center role).
#[derive(Debug)]
pub(super) struct WriteAccess(AtomicBool);

impl Default for WriteAccess {
    fn default() -> Self {
        Self(AtomicBool::new(true))
    }
}

/// One JSON Patch operation as sent.
#[derive(Debug, serde::Deserialize)]
struct Operation {
    op: String,
    path: String,
    #[serde(default)]
    value: Option<Value>,
}

/// A refusal: status, Partner Center error code, message.
type Refusal = (StatusCode, &'static str, String);

/// The status rules of the service, on (status, substatus) before and after.
pub(crate) fn check_transition(
    before: (Option<&str>, Option<&str>),
    after: (Option<&str>, Option<&str>),
    status_reason: Option<&str>,
) -> Result<(), String> {
    if before == after {
        return Ok(());
    }
    let allowed = matches!(
        (before.0, after),
        (Some("New"), (Some("Active"), Some("Accepted")))
            | (Some("New"), (Some("Closed"), Some("Declined")))
            | (Some("Active"), (Some("Closed"), Some("Won" | "Lost")))
    );
    if !allowed {
        return Err(format!(
            "the status cannot change from {}/{} to {}/{}",
            before.0.unwrap_or("None"),
            before.1.unwrap_or("None"),
            after.0.unwrap_or("None"),
            after.1.unwrap_or("None"),
        ));
    }
    if matches!(after.1, Some("Declined" | "Lost"))
        && status_reason.is_none_or(|reason| reason.trim().is_empty())
    {
        return Err(format!(
            "statusReason is required to close a referral as {}",
            after.1.unwrap_or_default()
        ));
    }
    Ok(())
}

/// Applies the operations to the referral's JSON text; the members the patch does not touch
/// keep their exact text.
fn apply_operations(raw: &str, operations: &[Operation]) -> Result<Fields, String> {
    let mut fields: Fields = serde_json::from_str(raw).map_err(|error| error.to_string())?;
    for (index, operation) in operations.iter().enumerate() {
        if operation.op != "replace" && operation.op != "add" {
            return Err(format!(
                "operation {index}: `{}` is not supported (only replace and add)",
                operation.op
            ));
        }
        let Some(value) = &operation.value else {
            return Err(format!("operation {index}: value is missing"));
        };
        let Some(path) = operation.path.strip_prefix('/') else {
            return Err(format!(
                "operation {index}: path `{}` must start with /",
                operation.path
            ));
        };
        let segments: Vec<String> = path
            .split('/')
            .map(|segment| segment.replace("~1", "/").replace("~0", "~"))
            .collect();
        let (first, rest) = segments.split_first().expect("split yields one item");
        if first.is_empty() {
            return Err(format!("operation {index}: empty path"));
        }
        if rest.is_empty() {
            if operation.op == "replace" && fields.get_raw(first).is_none() {
                return Err(format!(
                    "operation {index}: replace of missing member /{first}"
                ));
            }
            fields.set_value(first, value)?;
            continue;
        }
        let mut member: Value = match fields.get_raw(first) {
            Some(text) => serde_json::from_str(text).map_err(|error| error.to_string())?,
            None if operation.op == "add" => Value::Object(serde_json::Map::new()),
            None => {
                return Err(format!(
                    "operation {index}: replace of missing member /{first}"
                ));
            }
        };
        set_at(&mut member, rest, value.clone(), operation.op == "add")
            .map_err(|error| format!("operation {index} ({}): {error}", operation.path))?;
        fields.set_value(first, &member)?;
    }
    Ok(fields)
}

/// Sets `value` at `path` inside `target` (RFC 6902 `add`/`replace`, `-` appends to an array).
fn set_at(target: &mut Value, path: &[String], value: Value, add: bool) -> Result<(), String> {
    let (last, parents) = path.split_last().expect("non-empty path");
    let mut node = target;
    for segment in parents {
        node = match node {
            Value::Object(map) => map
                .get_mut(segment)
                .ok_or_else(|| format!("no member `{segment}`"))?,
            Value::Array(items) => segment
                .parse::<usize>()
                .ok()
                .and_then(|index| items.get_mut(index))
                .ok_or_else(|| format!("no item `{segment}`"))?,
            _ => return Err(format!("`{segment}` is not inside an object or array")),
        };
    }
    match node {
        Value::Object(map) => {
            if !add && !map.contains_key(last) {
                return Err(format!("replace of missing member `{last}`"));
            }
            map.insert(last.clone(), value);
        }
        Value::Array(items) if add && last == "-" => items.push(value),
        Value::Array(items) => {
            let index = last
                .parse::<usize>()
                .map_err(|_| format!("`{last}` is not an array index"))?;
            if add && index <= items.len() {
                items.insert(index, value);
            } else if !add && index < items.len() {
                items[index] = value;
            } else {
                return Err(format!("index {index} is out of range"));
            }
        }
        Value::Null if add => {
            let mut map = serde_json::Map::new();
            map.insert(last.clone(), value);
            *node = Value::Object(map);
        }
        _ => return Err(format!("cannot set `{last}` on a scalar")),
    }
    Ok(())
}

fn status_pair(fields: &Fields) -> (Option<String>, Option<String>) {
    (fields.get_str("status"), fields.get_str("substatus"))
}

/// The patched referral, or why not.
fn patch_one(
    current: &StoredReferral,
    operations: &[Operation],
    if_match: Option<&str>,
    at: OffsetDateTime,
    etag: String,
) -> Result<StoredReferral, Refusal> {
    let before: Fields = serde_json::from_str(current.raw.get()).map_err(|error| {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "generalException",
            error.to_string(),
        )
    })?;
    if let Some(expected) = if_match {
        let current_etag = before.get_str("eTag").unwrap_or_default();
        if expected.trim() != "*" && expected.trim() != current_etag {
            return Err((
                StatusCode::PRECONDITION_FAILED,
                "preconditionFailed",
                current.raw.get().to_owned(),
            ));
        }
    }
    let (status, substatus) = status_pair(&before);
    if status.as_deref() == Some("Closed") {
        return Err((
            StatusCode::BAD_REQUEST,
            "invalidStatusTransition",
            format!(
                "the referral is Closed/{} and cannot be changed",
                substatus.as_deref().unwrap_or("None")
            ),
        ));
    }
    let mut after = apply_operations(current.raw.get(), operations)
        .map_err(|message| (StatusCode::BAD_REQUEST, "invalidRequest", message))?;
    let (new_status, new_substatus) = status_pair(&after);
    check_transition(
        (status.as_deref(), substatus.as_deref()),
        (new_status.as_deref(), new_substatus.as_deref()),
        after.get_str("statusReason").as_deref(),
    )
    .map_err(|message| (StatusCode::BAD_REQUEST, "invalidStatusTransition", message))?;
    let at_text = format_instant(at, 7);
    if (status.as_deref(), new_status.as_deref()) == (Some("New"), Some("Active")) {
        after.set_str("acceptedDateTime", &at_text);
    }
    if new_status.as_deref() == Some("Closed") && status.as_deref() != Some("Closed") {
        after.set_str("closedDateTime", &at_text);
    }
    after.set_str("updatedDateTime", &at_text);
    after.set_str("eTag", &etag);
    let raw = after
        .into_raw()
        .map_err(|error| (StatusCode::INTERNAL_SERVER_ERROR, "generalException", error))?;
    Ok(StoredReferral {
        id: current.id.clone(),
        updated: Some(at),
        raw: Arc::from(raw),
        position: current.position,
    })
}

impl Simulator {
    /// Runs steps 2–7 of the module docs under the store's lock, so that a PATCH, a mutation
    /// and a reload never interleave.
    async fn patch(
        &self,
        id: &str,
        body: &[u8],
        if_match: Option<&str>,
        representation: bool,
    ) -> Reply {
        let mut store = self.store.lock().await;
        self.refresh_store(&mut store).await;
        let Some(index) = store
            .referrals
            .iter()
            .position(|r| r.id.eq_ignore_ascii_case(id))
        else {
            return error_reply(
                StatusCode::NOT_FOUND,
                "itemNotFound",
                "the referral does not exist or is not visible to this user",
            );
        };
        if !self.write_access.0.load(Ordering::Relaxed) {
            return error_reply(
                StatusCode::FORBIDDEN,
                "forbidden",
                "the signed-in user cannot update referrals: the Referrals Admin role (or \
                 Referrals User with write access) is required",
            );
        }
        let operations: Vec<Operation> = match serde_json::from_slice(body) {
            Ok(operations) => operations,
            Err(error) => {
                return error_reply(
                    StatusCode::BAD_REQUEST,
                    "invalidRequest",
                    &format!("the body is not a JSON Patch array: {error}"),
                );
            }
        };
        let at = next_stamp(OffsetDateTime::now_utc(), store.last_mutation);
        let etag = {
            let mut rng = super::lock(&self.mutate_rng);
            format!(
                "\"{:08x}-0000-0200-0000-{:012x}\"",
                rng.random::<u32>(),
                rng.random::<u64>() & 0xffff_ffff_ffff
            )
        };
        let patched = match patch_one(&store.referrals[index], &operations, if_match, at, etag) {
            Ok(patched) => patched,
            Err((StatusCode::PRECONDITION_FAILED, _, current)) => {
                return Reply::new(StatusCode::PRECONDITION_FAILED, current);
            }
            Err((status, code, message)) => return error_reply(status, code, &message),
        };
        let mut referrals = store.referrals.as_ref().clone();
        apply_moves(&mut referrals, vec![(index, patched.clone())]);
        let referrals = Arc::new(referrals);
        if !self.opts.mutations_in_memory {
            match api::persist(&self.opts.referrals_file, &mut store, &referrals).await {
                Ok(()) => {}
                Err(error) => {
                    tracing::warn!(%error, "referrals file not written, patch refused");
                    return error_reply(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "generalException",
                        "the referral could not be stored",
                    );
                }
            }
        }
        store.referrals = referrals;
        store.last_mutation = Some(at);
        drop(store);
        tracing::info!(id, "simulator patched a referral");
        self.notify(
            super::webhooks::REFERRAL_UPDATED,
            std::slice::from_ref(&patched.id),
            at,
        );
        if representation {
            Reply::new(StatusCode::OK, patched.raw.get().to_owned())
        } else {
            Reply::new(StatusCode::NO_CONTENT, String::new())
        }
    }
}

pub(super) async fn patch_referral(
    State(simulator): State<Arc<Simulator>>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let if_match = headers
        .get(header::IF_MATCH)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let representation = headers
        .get_all("prefer")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|item| item.trim().eq_ignore_ascii_case("return=representation"));
    let mut response = serve_api(&simulator, "referral_patch", &headers, || async {
        simulator
            .patch(&id, &body, if_match.as_deref(), representation)
            .await
    })
    .await;
    // The new (or, on 412, the current) eTag, as the service sends it.
    if matches!(
        response.status(),
        StatusCode::OK | StatusCode::PRECONDITION_FAILED
    ) {
        let current = simulator
            .referrals()
            .await
            .iter()
            .find(|r| r.id.eq_ignore_ascii_case(&id))
            .and_then(|r| {
                serde_json::from_str::<Value>(r.raw.get())
                    .ok()
                    .and_then(|value| value["eTag"].as_str().map(str::to_owned))
            });
        if let Some(value) = current.and_then(|etag| etag.parse().ok()) {
            response.headers_mut().insert(header::ETAG, value);
        }
    }
    response
}

#[derive(serde::Deserialize)]
pub(super) struct WriteAccessQuery {
    allowed: bool,
}

/// `POST /_simulator/write-access?allowed=false`: PATCH answers 403 from now on, as for a
/// Referrals User without write rights; `allowed=true` gives them back.
pub(super) async fn set_write_access(
    State(simulator): State<Arc<Simulator>>,
    Query(query): Query<WriteAccessQuery>,
) -> Response {
    simulator.record_admin("write_access");
    simulator
        .write_access
        .0
        .store(query.allowed, Ordering::Relaxed);
    json_response(
        StatusCode::OK,
        serde_json::json!({ "writeAccess": query.allowed }).to_string(),
    )
}

impl Fields {
    /// The member's exact text.
    pub(super) fn get_raw(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value.get())
    }

    /// Replaces (or appends) the member with any JSON value.
    fn set_value(&mut self, key: &str, value: &Value) -> Result<(), String> {
        let raw = RawValue::from_string(value.to_string()).map_err(|error| error.to_string())?;
        match self.0.iter_mut().find(|(name, _)| name == key) {
            Some(member) => member.1 = raw,
            None => self.0.push((key.to_owned(), raw)),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(text: &str) -> StoredReferral {
        StoredReferral {
            id: "r1".to_owned(),
            updated: None,
            raw: Arc::from(RawValue::from_string(text.to_owned()).unwrap()),
            position: 0,
        }
    }

    fn ops(json: &str) -> Vec<Operation> {
        serde_json::from_str(json).unwrap()
    }

    const NEW: &str = r#"{"id":"r1","status":"New","substatus":"Received","eTag":"\"e1\"","x":1.50,"details":{"dealValue":"10","notes":"a"},"team":[]}"#;

    fn at() -> OffsetDateTime {
        time::macros::datetime!(2030-01-01 00:00:00 UTC)
    }

    #[test]
    fn accept_sets_status_dates_and_a_new_etag_and_keeps_the_rest() {
        let patched = patch_one(
            &stored(NEW),
            &ops(r#"[{"op":"replace","path":"/status","value":"Active"},
                    {"op":"replace","path":"/substatus","value":"Accepted"},
                    {"op":"replace","path":"/details/dealValue","value":"12.5"},
                    {"op":"add","path":"/team/-","value":{"email":"a@b.c"}}]"#),
            Some("\"e1\""),
            at(),
            "\"e2\"".to_owned(),
        )
        .unwrap();
        let text = patched.raw.get();
        assert!(text.contains(r#""x":1.50"#), "{text}");
        let value: Value = serde_json::from_str(text).unwrap();
        assert_eq!(value["status"], "Active");
        assert_eq!(value["substatus"], "Accepted");
        assert_eq!(value["eTag"], "\"e2\"");
        assert_eq!(value["details"]["dealValue"], "12.5");
        assert_eq!(value["details"]["notes"], "a");
        assert_eq!(value["team"][0]["email"], "a@b.c");
        assert_eq!(value["acceptedDateTime"], "2030-01-01T00:00:00.0000000Z");
        assert_eq!(value["updatedDateTime"], "2030-01-01T00:00:00.0000000Z");
        assert_eq!(patched.updated, Some(at()));
    }

    #[test]
    fn refusals() {
        let refuse = |body: &str, if_match: Option<&str>, referral: &str| match patch_one(
            &stored(referral),
            &ops(body),
            if_match,
            at(),
            "\"e2\"".into(),
        ) {
            Ok(_) => panic!("accepted: {body}"),
            Err(refusal) => refusal,
        };
        let (status, code, _) = refuse(r#"[{"op":"remove","path":"/status"}]"#, None, NEW);
        assert_eq!((status, code), (StatusCode::BAD_REQUEST, "invalidRequest"));
        let (status, _, body) = refuse(
            r#"[{"op":"replace","path":"/status","value":"Active"}]"#,
            Some("\"old\""),
            NEW,
        );
        assert_eq!(status, StatusCode::PRECONDITION_FAILED);
        assert_eq!(body, NEW, "412 carries the current referral");
        // New cannot be won; Declined needs a reason; Closed is terminal.
        let (status, code, message) = refuse(
            r#"[{"op":"replace","path":"/status","value":"Closed"},{"op":"replace","path":"/substatus","value":"Won"}]"#,
            None,
            NEW,
        );
        assert_eq!(
            (status, code),
            (StatusCode::BAD_REQUEST, "invalidStatusTransition")
        );
        assert!(message.contains("New/Received to Closed/Won"), "{message}");
        let (_, _, message) = refuse(
            r#"[{"op":"replace","path":"/status","value":"Closed"},{"op":"replace","path":"/substatus","value":"Declined"}]"#,
            None,
            NEW,
        );
        assert!(message.contains("statusReason"), "{message}");
        let closed = r#"{"id":"r1","status":"Closed","substatus":"Won","eTag":"\"e1\""}"#;
        let (_, code, _) = refuse(
            r#"[{"op":"replace","path":"/details","value":{}}]"#,
            None,
            closed,
        );
        assert_eq!(code, "invalidStatusTransition");
        // Decline with a reason is fine.
        patch_one(
            &stored(NEW),
            &ops(
                r#"[{"op":"replace","path":"/status","value":"Closed"},{"op":"replace","path":"/substatus","value":"Declined"},{"op":"add","path":"/statusReason","value":"not our area"}]"#,
            ),
            None,
            at(),
            "\"e2\"".into(),
        )
        .unwrap();
    }
}
