//! The simulated Referrals API: the file store, OData query options, paging and faults.

use std::convert::Infallible;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use rand::Rng as _;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::login::AccessTokenState;
use super::{Simulator, json_response, lock};
use crate::faults::FaultKind;

/// One referral of the file: its sort keys and its exact JSON text.
#[derive(Clone)]
pub(super) struct StoredReferral {
    pub(super) id: String,
    pub(super) updated: Option<OffsetDateTime>,
    pub(super) raw: Arc<RawValue>,
    /// Index in the file's array, so that writing the file back keeps its order.
    pub(super) position: usize,
}

/// What identifies one version of the referrals file: modification time, length and inode
/// (an atomic write renames a new file in place, so the inode changes even when the
/// modification time, which has a coarse granularity, and the length do not).
pub(super) type FileStamp = (Option<SystemTime>, u64, u64);

pub(super) fn file_stamp(metadata: &std::fs::Metadata) -> FileStamp {
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(metadata);
    #[cfg(not(unix))]
    let inode = 0;
    (metadata.modified().ok(), metadata.len(), inode)
}

/// The referrals file as last read (or written by a mutation).
pub(super) struct Store {
    pub(super) stamp: Option<FileStamp>,
    /// Served referrals, sorted by (`updatedDateTime`, `id`).
    pub(super) referrals: Arc<Vec<StoredReferral>>,
    /// Items of the file that are not served (no string `id`), with their positions, so that
    /// writing the file back keeps them.
    pub(super) unserved: Arc<Vec<(usize, Arc<RawValue>)>>,
    /// The `updatedDateTime` of the last mutation burst; the next one is strictly later.
    pub(super) last_mutation: Option<OffsetDateTime>,
}

impl Store {
    pub(super) async fn load(path: &Path) -> io::Result<Self> {
        let metadata = tokio::fs::metadata(path).await.map_err(|error| {
            io::Error::new(
                error.kind(),
                format!("referrals file {}: {error}", path.display()),
            )
        })?;
        let parsed = read_referrals(path).await.map_err(|error| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("referrals file {}: {error}", path.display()),
            )
        })?;
        Ok(Self {
            stamp: Some(file_stamp(&metadata)),
            referrals: Arc::new(parsed.referrals),
            unserved: Arc::new(parsed.unserved),
            last_mutation: None,
        })
    }

    pub(super) fn len(&self) -> usize {
        self.referrals.len()
    }
}

/// Sorts by (`updatedDateTime` instant, `id`); no or an unparsable `updatedDateTime` first.
pub(super) fn sort_referrals(referrals: &mut [StoredReferral]) {
    referrals.sort_by(|a, b| (a.updated, &a.id).cmp(&(b.updated, &b.id)));
}

/// A parsed referrals file.
pub(super) struct Parsed {
    /// Sorted by (`updatedDateTime`, `id`).
    pub(super) referrals: Vec<StoredReferral>,
    pub(super) unserved: Vec<(usize, Arc<RawValue>)>,
}

/// Parses a timestamp with 0–7 (or more) fraction digits and any offset.
pub(super) fn parse_instant(text: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(text, &Rfc3339).ok()
}

/// Reads and parses the referrals file off the async threads, streaming: memory holds each
/// referral's text once (a million generated referrals are about 4 GB of JSON).
pub(super) async fn read_referrals(path: &Path) -> Result<Parsed, String> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let file = std::fs::File::open(&path).map_err(|error| error.to_string())?;
        parse_referrals(io::BufReader::with_capacity(1 << 20, file))
    })
    .await
    .map_err(|error| error.to_string())?
}

pub(super) fn parse_referrals(reader: impl io::Read) -> Result<Parsed, String> {
    #[derive(Deserialize)]
    struct Keys {
        id: Option<serde_json::Value>,
        #[serde(rename = "updatedDateTime")]
        updated: Option<serde_json::Value>,
    }
    let items: Vec<Box<RawValue>> = serde_json::from_reader(reader)
        .map_err(|error| format!("not a json array of referrals: {error}"))?;
    let mut referrals = Vec::with_capacity(items.len());
    let mut unserved = Vec::new();
    for (position, raw) in items.into_iter().enumerate() {
        let keys: Keys = serde_json::from_str(raw.get())
            .map_err(|error| format!("item {position} is not an object: {error}"))?;
        let Some(serde_json::Value::String(id)) = keys.id else {
            tracing::warn!(index = position, "referral without a string id skipped");
            unserved.push((position, Arc::from(raw)));
            continue;
        };
        let updated = keys
            .updated
            .as_ref()
            .and_then(serde_json::Value::as_str)
            .and_then(parse_instant);
        referrals.push(StoredReferral {
            id,
            updated,
            raw: Arc::from(raw),
            position,
        });
    }
    sort_referrals(&mut referrals);
    Ok(Parsed {
        referrals,
        unserved,
    })
}

/// Writes the store's referrals (and unserved items) back in the file's order, atomically.
pub(super) fn write_store(
    path: &Path,
    referrals: &[StoredReferral],
    unserved: &[(usize, Arc<RawValue>)],
) -> io::Result<()> {
    let mut items: Vec<(usize, &RawValue)> = referrals
        .iter()
        .map(|referral| (referral.position, &*referral.raw))
        .chain(unserved.iter().map(|(position, raw)| (*position, &**raw)))
        .collect();
    items.sort_by_key(|(position, _)| *position);
    let items: Vec<&RawValue> = items.into_iter().map(|(_, raw)| raw).collect();
    super::write_json(path, &items)
}

/// Writes `referrals` (with the store's unserved items) to the referrals file on a blocking
/// thread and records the new file's stamp, so the store does not re-read its own write. The
/// callers (mutations, PATCH, late referrals) replace `store.referrals` only when this succeeds:
/// memory and file must agree.
pub(super) async fn persist(
    path: &Path,
    store: &mut Store,
    referrals: &Arc<Vec<StoredReferral>>,
) -> io::Result<()> {
    let (path, unserved, to_write) = (path.to_owned(), store.unserved.clone(), referrals.clone());
    let metadata = tokio::task::spawn_blocking(move || {
        write_store(&path, &to_write, &unserved)?;
        std::fs::metadata(&path)
    })
    .await
    .unwrap_or_else(|error| Err(io::Error::other(error)))?;
    store.stamp = Some(file_stamp(&metadata));
    Ok(())
}

impl Simulator {
    /// The referrals, re-read first if the file changed.
    pub(super) async fn referrals(&self) -> Arc<Vec<StoredReferral>> {
        let mut store = self.store.lock().await;
        self.refresh_store(&mut store).await;
        store.referrals.clone()
    }

    /// Re-reads the file into `store` if it changed; keeps the last good copy if it became
    /// unreadable or invalid.
    pub(super) async fn refresh_store(&self, store: &mut Store) {
        let path = &self.opts.referrals_file;
        let stamp = match tokio::fs::metadata(path).await {
            Ok(metadata) => file_stamp(&metadata),
            Err(error) => {
                tracing::warn!(%error, "referrals file unreadable, serving the last good copy");
                return;
            }
        };
        if store.stamp == Some(stamp) {
            return;
        }
        match read_referrals(path).await {
            Ok(parsed) => {
                tracing::info!(count = parsed.referrals.len(), "referrals file re-read");
                store.stamp = Some(stamp);
                store.referrals = Arc::new(parsed.referrals);
                store.unserved = Arc::new(parsed.unserved);
            }
            Err(error) => {
                tracing::warn!(%error, "referrals file invalid, serving the last good copy");
            }
        }
    }

    /// The bearer token of the request and what the authority makes of it.
    fn bearer(&self, headers: &HeaderMap) -> Option<(String, AccessTokenState)> {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| {
                let (scheme, token) = value.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })?;
        let state = lock(&self.auth).access_token_state(token, Instant::now());
        Some((token.to_owned(), state))
    }

    /// The fault for this request, if any, with the `Retry-After` seconds in force. A `401` is
    /// not injected on a token's first use (a token just issued does not expire), so a client
    /// that refreshes once on a 401 always gets through; the request is then served without a
    /// fault.
    fn draw_fault(&self, first_use: bool) -> Option<(FaultKind, u64)> {
        let (fault, retry_after_secs) = {
            let faults = lock(&self.faults);
            if faults.spec.is_empty() {
                return None;
            }
            let draw: f64 = lock(&self.fault_rng).random();
            (faults.spec.pick(draw)?, faults.retry_after_secs)
        };
        if fault == FaultKind::Unauthorized && first_use {
            return None;
        }
        self.record_fault(fault);
        Some((fault, retry_after_secs))
    }
}

/// A reply before faults are applied to it.
pub(super) struct Reply {
    status: StatusCode,
    body: String,
}

impl Reply {
    pub(super) fn new(status: StatusCode, body: String) -> Self {
        Self { status, body }
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        json_response(self.status, self.body)
    }
}

/// The Partner API error body (research notes §5.2).
pub(super) fn error_reply(status: StatusCode, code: &str, message: &str) -> Reply {
    let body = serde_json::json!({
        "error": {
            "code": code,
            "message": message,
            "target": "referral",
            "innerError": { "code": code, "message": message },
        }
    });
    Reply {
        status,
        body: body.to_string(),
    }
}

/// The 401 for an access token that has expired (or that a `401` fault expired).
fn expired_token_reply() -> Response {
    let mut response = json_response(
        StatusCode::UNAUTHORIZED,
        r#"{"error":{"code":"unauthenticated","message":"access token expired"}}"#.to_owned(),
    );
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(
            r#"Bearer error="invalid_token", error_description="access token expired""#,
        ),
    );
    response
}

/// Authentication, faults, the reply, and bookkeeping shared by both referrals endpoints.
pub(super) async fn serve_api<F, Fut>(
    simulator: &Simulator,
    endpoint: &'static str,
    headers: &HeaderMap,
    reply: F,
) -> Response
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Reply>,
{
    let request_id = uuid::Uuid::new_v4().to_string();
    let bearer = simulator.bearer(headers);
    let mut response = match bearer {
        None | Some((_, AccessTokenState::Unknown)) => {
            let mut response = error_reply(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "the bearer token is missing, unknown or expired",
            )
            .into_response();
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            response
        }
        Some((_, AccessTokenState::Expired)) => expired_token_reply(),
        Some((token, AccessTokenState::Valid)) => {
            let first_use = lock(&simulator.auth).first_use(&token);
            serve_valid(simulator, &token, first_use, reply).await
        }
    };
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("request-id", value);
    }
    if let Some(value) = headers.get("client-request-id") {
        response
            .headers_mut()
            .insert("client-request-id", value.clone());
    }
    simulator.record(endpoint, response.status());
    tracing::debug!(endpoint, status = response.status().as_u16(), %request_id, "simulator request");
    response
}

/// The reply to a request whose token is valid: maybe a fault, else the real reply.
async fn serve_valid<F, Fut>(
    simulator: &Simulator,
    token: &str,
    first_use: bool,
    reply: F,
) -> Response
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Reply>,
{
    let (fault, retry_after_secs) = simulator.draw_fault(first_use).unzip();
    match fault {
        Some(FaultKind::Unauthorized) => {
            // As if the token expired just now: it stays expired.
            lock(&simulator.auth).expire_access_token(token, Instant::now());
            expired_token_reply()
        }
        Some(FaultKind::TooManyRequests) => {
            let secs = retry_after_secs.unwrap_or(super::DEFAULT_RETRY_AFTER_SECS);
            let mut response = json_response(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    r#"{{"statusCode":429,"message":"Rate limit is exceeded. Try again in {secs} seconds."}}"#
                ),
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            response
        }
        Some(FaultKind::InternalError) => error_reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "generalException",
            "simulated internal error",
        )
        .into_response(),
        Some(FaultKind::Unavailable) => error_reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "serviceNotAvailable",
            "simulated outage",
        )
        .into_response(),
        Some(FaultKind::Truncate) => {
            let mut reply = reply().await;
            if reply.status == StatusCode::OK {
                let mut cut = reply.body.len() / 2;
                while !reply.body.is_char_boundary(cut) {
                    cut -= 1;
                }
                reply.body.truncate(cut);
            }
            reply.into_response()
        }
        Some(FaultKind::Slow) => {
            let reply = reply().await;
            let body = Bytes::from(reply.body);
            let delayed = futures::stream::once(async move {
                tokio::time::sleep(Duration::from_secs(2)).await;
                Ok::<_, Infallible>(body)
            });
            let mut response = Response::new(Body::from_stream(delayed));
            *response.status_mut() = reply.status;
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json; charset=utf-8"),
            );
            response
        }
        None => reply().await.into_response(),
    }
}

pub(super) async fn list_referrals(
    State(simulator): State<Arc<Simulator>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let base = simulator.base_url(&headers);
    // Time passes between pages: referrals may move on before this page is computed.
    simulator.maybe_mutate().await;
    serve_api(&simulator, "referrals_list", &headers, || async {
        match ListQuery::from_query(query.as_deref().unwrap_or(""), simulator.opts.page_size) {
            Ok(list) => list.reply(&simulator.referrals().await, &base),
            Err(message) => error_reply(StatusCode::BAD_REQUEST, "invalidRequest", &message),
        }
    })
    .await
}

pub(super) async fn get_referral(
    State(simulator): State<Arc<Simulator>>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    let base = simulator.base_url(&headers);
    serve_api(&simulator, "referral_get", &headers, || async {
        let referrals = simulator.referrals().await;
        let Some(referral) = referrals.iter().find(|r| r.id.eq_ignore_ascii_case(&id)) else {
            return error_reply(
                StatusCode::NOT_FOUND,
                "itemNotFound",
                "the referral does not exist or is not visible to this user",
            );
        };
        Reply {
            status: StatusCode::OK,
            body: with_context(
                referral.raw.get(),
                &format!("{base}/v1.0/$metadata#Referrals/$entity"),
            ),
        }
    })
    .await
}

/// The object's text with `"@odata.context"` spliced in first, the rest untouched.
fn with_context(raw: &str, context: &str) -> String {
    let context = serde_json::to_string(context).unwrap_or_default();
    let Some(rest) = raw.trim_start().strip_prefix('{') else {
        return raw.to_owned();
    };
    if rest.trim_start().starts_with('}') {
        format!("{{\"@odata.context\":{context}}}")
    } else {
        format!("{{\"@odata.context\":{context},{rest}")
    }
}

/// An `updatedDateTime` comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Op {
    Ge,
    Gt,
    Le,
    Lt,
    Eq,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Filter {
    op: Op,
    #[serde(with = "time::serde::rfc3339")]
    at: OffsetDateTime,
}

impl Filter {
    fn parse(text: &str) -> Result<Self, String> {
        let parts: Vec<&str> = text.split_whitespace().collect();
        let [field, op, literal] = parts.as_slice() else {
            return Err(format!(
                "unsupported $filter `{text}`: the simulator understands `updatedDateTime ge <timestamp>`"
            ));
        };
        if !field.eq_ignore_ascii_case("updatedDateTime") {
            return Err(format!(
                "unsupported $filter field `{field}`: the simulator only filters on updatedDateTime"
            ));
        }
        let op = match op.to_ascii_lowercase().as_str() {
            "ge" => Op::Ge,
            "gt" => Op::Gt,
            "le" => Op::Le,
            "lt" => Op::Lt,
            "eq" => Op::Eq,
            _ => return Err(format!("unsupported $filter operator `{op}`")),
        };
        let literal = literal
            .strip_prefix('\'')
            .and_then(|rest| rest.strip_suffix('\''))
            .unwrap_or(literal);
        let at = OffsetDateTime::parse(literal, &Rfc3339)
            .map_err(|error| format!("invalid timestamp `{literal}` in $filter: {error}"))?;
        Ok(Self { op, at })
    }

    /// Whether one timestamp matches: the definition [`ListQuery::matching`] must agree with.
    #[cfg(test)]
    fn matches(&self, updated: Option<OffsetDateTime>) -> bool {
        let Some(updated) = updated else {
            return false;
        };
        match self.op {
            Op::Ge => updated >= self.at,
            Op::Gt => updated > self.at,
            Op::Le => updated <= self.at,
            Op::Lt => updated < self.at,
            Op::Eq => updated == self.at,
        }
    }
}

/// What a list request asks for; a `$skiptoken` is this, encoded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct ListQuery {
    #[serde(rename = "f")]
    filter: Option<Filter>,
    #[serde(rename = "d")]
    descending: bool,
    #[serde(rename = "k")]
    offset: usize,
    #[serde(rename = "t")]
    top: usize,
}

impl ListQuery {
    fn from_query(query: &str, page_size: usize) -> Result<Self, String> {
        let pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
            .map(|(key, value)| (key.into_owned(), value.into_owned()))
            .collect();
        let param = |name: &str| {
            pairs
                .iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(name))
                .map(|(_, value)| value.as_str())
        };
        if let Some(token) = param("$skiptoken") {
            return Self::decode_skiptoken(token);
        }
        let filter = param("$filter").map(Filter::parse).transpose()?;
        let descending = match param("$orderby").map(|v| v.split_whitespace().collect::<Vec<_>>()) {
            None => false,
            Some(parts) => match parts.as_slice() {
                [field] if field.eq_ignore_ascii_case("updatedDateTime") => false,
                [field, direction] if field.eq_ignore_ascii_case("updatedDateTime") => {
                    match direction.to_ascii_lowercase().as_str() {
                        "asc" => false,
                        "desc" => true,
                        _ => return Err(format!("invalid $orderby direction `{direction}`")),
                    }
                }
                _ => {
                    return Err(
                        "unsupported $orderby: the simulator orders by updatedDateTime".to_owned(),
                    );
                }
            },
        };
        let number = |name: &str| -> Result<Option<usize>, String> {
            param(name)
                .map(|value| {
                    value
                        .trim()
                        .parse::<usize>()
                        .map_err(|_| format!("invalid {name} `{value}`"))
                })
                .transpose()
        };
        let top = number("$top")?.unwrap_or(page_size).min(page_size);
        let offset = number("$skip")?.unwrap_or(0);
        Ok(Self {
            filter,
            descending,
            offset,
            top,
        })
    }

    fn encode_skiptoken(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
    }

    fn decode_skiptoken(token: &str) -> Result<Self, String> {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token.trim())
            .ok()
            .and_then(|json| serde_json::from_slice(&json).ok())
            .ok_or_else(|| "invalid $skiptoken".to_owned())
    }

    /// The referrals the filter matches: one contiguous run of the store, found by binary
    /// search, since the store is sorted by (`updatedDateTime`, `id`) with no timestamp first
    /// (a page of a million referrals costs a few lookups, not a pass over all of them).
    fn matching<'a>(&self, referrals: &'a [StoredReferral]) -> &'a [StoredReferral] {
        let Some(filter) = &self.filter else {
            return referrals;
        };
        let at = Some(filter.at);
        // `None` sorts before every instant, and never matches.
        let dated = referrals.partition_point(|referral| referral.updated.is_none());
        let before = referrals.partition_point(|referral| referral.updated < at);
        let up_to = referrals.partition_point(|referral| referral.updated <= at);
        let range = match filter.op {
            Op::Ge => before..referrals.len(),
            Op::Gt => up_to..referrals.len(),
            Op::Le => dated..up_to,
            Op::Lt => dated..before,
            Op::Eq => before..up_to,
        };
        &referrals[range]
    }

    fn reply(&self, referrals: &[StoredReferral], base: &str) -> Reply {
        let matching = self.matching(referrals);
        let start = self.offset.min(matching.len());
        let end = self.offset.saturating_add(self.top).min(matching.len());
        let page: Vec<&str> = if self.descending {
            matching[matching.len() - end..matching.len() - start]
                .iter()
                .rev()
                .map(|referral| referral.raw.get())
                .collect()
        } else {
            matching[start..end]
                .iter()
                .map(|referral| referral.raw.get())
                .collect()
        };
        let next_offset = self.offset.saturating_add(self.top);
        let next_link = (self.top > 0 && next_offset < matching.len()).then(|| {
            let next = ListQuery {
                offset: next_offset,
                ..self.clone()
            };
            format!(
                "{base}/v1.0/engagements/referrals?$skiptoken={}",
                next.encode_skiptoken()
            )
        });

        let mut body =
            String::with_capacity(page.iter().map(|item| item.len() + 1).sum::<usize>() + 256);
        body.push_str("{\"@odata.context\":");
        body.push_str(&json_string(&format!("{base}/v1.0/$metadata#Referrals")));
        body.push_str(",\"@odata.count\":");
        body.push_str(&page.len().to_string());
        body.push_str(",\"value\":[");
        body.push_str(&page.join(","));
        body.push(']');
        if let Some(link) = next_link {
            body.push_str(",\"@odata.nextLink\":");
            body.push_str(&json_string(&link));
        }
        body.push('}');
        Reply {
            status: StatusCode::OK,
            body,
        }
    }
}

fn json_string(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_literals_quoted_or_not() {
        let unquoted = Filter::parse("updatedDateTime ge 2024-05-01T00:00:00.0000000Z").unwrap();
        let quoted = Filter::parse("updatedDateTime ge '2024-05-01T00:00:00Z'").unwrap();
        assert_eq!(unquoted, quoted);
        assert_eq!(
            Filter::parse("UpdatedDateTime GT 2024-05-01T00:00:00Z")
                .unwrap()
                .op,
            Op::Gt
        );
        assert!(Filter::parse("status eq 'New'").is_err());
        assert!(Filter::parse("updatedDateTime ge yesterday").is_err());
        assert!(Filter::parse("updatedDateTime ge").is_err());
    }

    #[test]
    fn skiptoken_round_trips() {
        let query = ListQuery::from_query(
            "$filter=updatedDateTime%20gt%202024-05-01T00:00:00Z&$orderby=updatedDateTime+desc&$top=7",
            40,
        )
        .unwrap();
        assert!(query.descending);
        assert_eq!(query.top, 7);
        let token = query.encode_skiptoken();
        assert_eq!(ListQuery::decode_skiptoken(&token).unwrap(), query);
        assert!(ListQuery::decode_skiptoken("garbage!").is_err());
        // $top is capped at the page size.
        assert_eq!(ListQuery::from_query("$top=1000", 40).unwrap().top, 40);
        assert!(ListQuery::from_query("$top=-1", 40).is_err());
    }

    #[test]
    fn context_is_spliced_in_front() {
        assert_eq!(
            with_context(r#"{ "id" : "a",  "x":1.50}"#, "c"),
            r#"{"@odata.context":"c", "id" : "a",  "x":1.50}"#
        );
        assert_eq!(with_context("{ }", "c"), r#"{"@odata.context":"c"}"#);
    }

    /// The store's run found by binary search is exactly what filtering every referral finds,
    /// for every operator, at instants on, between and outside the stored ones (ties and
    /// referrals without a timestamp included), and pages cut from it in either order are the
    /// pages of the filtered list.
    #[test]
    fn binary_search_matches_a_full_filter() {
        let base = time::macros::datetime!(2024-03-01 00:00:00 UTC);
        let mut referrals: Vec<StoredReferral> = (0..200)
            .map(|index| StoredReferral {
                id: format!("id-{:03}", (index * 37) % 200),
                // Every 7th has no timestamp; the rest fall on 40 instants, so most tie.
                updated: (index % 7 != 0).then(|| base + time::Duration::seconds(index % 40)),
                raw: Arc::from(
                    RawValue::from_string(format!("{{\"n\":{index}}}")).expect("valid json"),
                ),
                position: index as usize,
            })
            .collect();
        sort_referrals(&mut referrals);
        let pivots = (-2..43).map(|second| base + time::Duration::milliseconds(second * 500));
        for at in pivots {
            for op in [Op::Ge, Op::Gt, Op::Le, Op::Lt, Op::Eq] {
                let filter = Filter { op, at };
                let expected: Vec<&str> = referrals
                    .iter()
                    .filter(|r| filter.matches(r.updated))
                    .map(|r| r.raw.get())
                    .collect();
                for descending in [false, true] {
                    let query = |offset, top| ListQuery {
                        filter: Some(filter.clone()),
                        descending,
                        offset,
                        top,
                    };
                    let found: Vec<&str> = query(0, 0)
                        .matching(&referrals)
                        .iter()
                        .map(|r| r.raw.get())
                        .collect();
                    assert_eq!(found, expected, "{op:?} {at}");
                    let mut ordered = expected.clone();
                    if descending {
                        ordered.reverse();
                    }
                    for (offset, top) in [(0, 7), (5, 7), (expected.len(), 3), (300, 3)] {
                        let body = query(offset, top).reply(&referrals, "http://x").body;
                        let page: serde_json::Value = serde_json::from_str(&body).unwrap();
                        let want: Vec<serde_json::Value> = ordered
                            .iter()
                            .skip(offset)
                            .take(top)
                            .map(|raw| serde_json::from_str(raw).unwrap())
                            .collect();
                        assert_eq!(page["value"], serde_json::Value::Array(want));
                        assert_eq!(
                            page.get("@odata.nextLink").is_some(),
                            offset + top < expected.len(),
                            "{op:?} {at} offset {offset}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn sorts_by_instant_then_id() {
        let file = br#"[
            {"id": "b", "updatedDateTime": "2024-01-01T00:00:00.5Z"},
            {"id": "a", "updatedDateTime": "2024-01-01T00:00:00.5000000Z"},
            {"id": "c", "updatedDateTime": "2024-01-01T00:00:00.49Z"},
            {"id": "d"}
        ]"#;
        let ids: Vec<_> = parse_referrals(&file[..])
            .unwrap()
            .referrals
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(ids, ["d", "c", "a", "b"]);
    }
}
