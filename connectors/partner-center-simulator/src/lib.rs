//! A local Partner Center: the Referrals API and an Entra-like login authority, for demos and
//! for tests that must talk HTTP to something real (`hunter simulate`).
//!
//! Routes:
//!
//! | route | what |
//! |---|---|
//! | `GET /healthz` | `ok` |
//! | `GET /v1.0/engagements/referrals` | the file's referrals, sorted by (`updatedDateTime`, `id`); `$filter=updatedDateTime ge\|gt <ts>`, `$orderby=updatedDateTime asc\|desc`, `$top`, `$skip`, paging by `@odata.nextLink` with an opaque `$skiptoken` (filter + order + offset) |
//! | `GET /v1.0/engagements/referrals/{id}` | one referral with `@odata.context`, or 404 |
//! | `PATCH /v1.0/engagements/referrals/{id}` | JSON Patch (`replace`/`add`), `If-Match` (412), the status rules, `Prefer: return=representation` (module `patch`) |
//! | `POST /_simulator/write-access?allowed=B` | `false`: PATCH answers 403 (a Referrals User without write rights) |
//! | `POST /{tenant}/oauth2/v2.0/devicecode` | a device code; the sign-in is approved on the second poll |
//! | `POST /{tenant}/oauth2/v2.0/token` | device code and refresh-token grants, rotating refresh tokens |
//! | `GET /devicelogin` | the page the prompt points at (nothing to do there) |
//! | `GET /_simulator/stats` | request counts by endpoint and status, injected faults, token grants by type and outcome, mutations, admin calls |
//! | `GET /_simulator/referrals` | the current referrals (JSON array, by (`updatedDateTime`, `id`)): the truth to compare with |
//! | `POST /_simulator/revoke-refresh-tokens` | every refresh token issued so far answers `invalid_grant` (AADSTS700082) |
//! | `POST /_simulator/expire-access-tokens` | every access token issued so far answers 401 from now on |
//! | `POST /_simulator/mutate?rate=R` | changes the mutation rate from now on (`0` stops the data moving) |
//! | `POST /_simulator/faults?spec=S&retry_after=N` | replaces the fault spec from now on (same syntax as `--faults`; empty or no `spec` = no faults) and the `Retry-After` seconds of 429 replies (default 1); 400 naming the bad item otherwise |
//! | `GET\|POST\|PUT\|DELETE /v1.0/engagements/webhooks/registration` | Partner Center's webhook registration; the registered URL then gets `referral-updated` / `referral-created` events when referrals change (module `webhooks`) |
//! | `POST /_simulator/mutate-now?id=ID` | moves that referral on now (new `updatedDateTime` and eTag) with a status step when it has one (New → Active/Accepted → Closed/Won\|Lost), as a mutation does; answers the new referral |
//! | `POST /_simulator/late?count=N&before_newest_secs=S` (or `&at=T`) | adds `N` new referrals, visible from now on, all with one `updatedDateTime` in the past: `S` seconds before the newest served (or `T`); a late commit an incremental poll cannot see, and with `N` above `$top` a run of ties longer than a page (the `late` module docs) |
//!
//! The `/_simulator/` routes need no token. The referrals endpoints need a bearer token this
//! simulator issued and that has not expired (else 401 `unauthenticated`), and get the faults
//! of [`crate::faults`]. Each referral is served as the file's JSON text verbatim (unknown
//! fields, key order and number spelling kept). The file is re-read when its size,
//! modification time or inode changes, so tests can move referrals on; write it atomically
//! ([`write_referrals`]) so that no half-written file is read. A file that becomes unreadable
//! or invalid is logged and the last good copy is served.
//!
//! # Mutations
//!
//! With [`SimulatorOptions::mutate_rate`] above zero, each list request (first page or
//! `nextLink` page) first draws whether time passed: if so, `mutate_burst` random referrals
//! move on together, before the page is computed. Each gets the same new `updatedDateTime`
//! (now, 7 fraction digits, strictly later than the previous burst), a new quoted `eTag`, and
//! half the time a status step (New/Pending|Received → Active/Accepted, Active/Accepted →
//! Closed/Won|Lost; Closed stays). The change is made in memory and the whole file is written
//! back atomically (file order, other items' text untouched), so the file,
//! `GET /_simulator/referrals` and the very next request agree; with
//! [`SimulatorOptions::mutations_in_memory`] the file is left alone (big files). A moved record goes to the end
//! of the (`updatedDateTime`, `id`) order, so offset paging in flight skips one record, as
//! the real service may. Draws come from an rng seeded from `fault_seed`.
//!
//! # Layout
//!
//! This crate is test and demo tooling, kept apart from the production connector
//! (`hunter-partner-center`: sign-in, client, cursor) so that the connector needs no HTTP server.
//! It does not depend on the connector; the connector's tests use it (a dev-dependency), and its
//! own tests sign in with the connector's real client (a dev-dependency the other way).
//!
//! - [`faults`]: the `--faults` spec (`429:0.1,truncate:0.02`) the simulator injects.
//! - `api`, `login`, `mutate`, `generate`: the Referrals API, the login authority, the moving
//!   data and the generated referrals file.
//! - `late`: referrals that show up late, older than a poll's overlap window.
//! - [`dns`]: an authoritative DNS server (UDP, MX only) for the generated customers'
//!   `<company>.example` domains, with a seeded mix of mail providers (`--dns-listen`).

mod api;
pub mod dns;
pub mod faults;
mod generate;
mod late;
mod login;
mod mutate;
mod patch;
mod webhooks;

// The harness shared with the connector's tests names both crates by their package names.
#[cfg(test)]
extern crate self as hunter_partner_center_simulator;
#[cfg(test)]
mod test_support;

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rand::SeedableRng as _;
use rand::rngs::StdRng;

pub use generate::{customer_domain, generate_referrals, write_generated_referrals};

use crate::faults::{FaultKind, FaultSpec};

/// How to run the simulator.
#[derive(Clone, Debug)]
pub struct SimulatorOptions {
    /// JSON array of Referral resources exactly as the API returns them.
    pub referrals_file: PathBuf,
    /// Address to listen on (`127.0.0.1:0` picks a free port).
    pub listen: SocketAddr,
    /// Faults injected into the referrals endpoints.
    pub faults: FaultSpec,
    /// Default and maximum `$top`.
    pub page_size: usize,
    /// `expires_in` of issued access tokens; after it the API answers 401.
    pub access_token_lifetime: Duration,
    /// Seed for fault and mutation draws, for reproducible runs; `None` seeds from the OS.
    pub fault_seed: Option<u64>,
    /// Probability, per list request, that referrals move on first (`0..=1`; 0 = never).
    pub mutate_rate: f64,
    /// How many referrals move on together, with the same `updatedDateTime`.
    pub mutate_burst: usize,
    /// Moved referrals stay in memory and the file is not rewritten: for files too big to
    /// rewrite on every burst (a million referrals are about 4 GB). `GET /_simulator/referrals`
    /// is the truth then; a change of the file by someone else still replaces everything.
    pub mutations_in_memory: bool,
}

impl SimulatorOptions {
    /// Options with the defaults: no faults, 100 per page, one-hour tokens, no mutations
    /// (`mutate_rate` 0, `mutate_burst` 1, written back to the file).
    pub fn new(referrals_file: PathBuf, listen: SocketAddr) -> Self {
        Self {
            referrals_file,
            listen,
            faults: FaultSpec::default(),
            page_size: 100,
            access_token_lifetime: Duration::from_secs(3600),
            fault_seed: None,
            mutate_rate: 0.0,
            mutate_burst: 1,
            mutations_in_memory: false,
        }
    }
}

/// Binds the listener and loads the referrals file; returns the bound address and the server
/// future, which serves until it is dropped.
pub async fn bind(
    opts: SimulatorOptions,
) -> io::Result<(SocketAddr, impl Future<Output = io::Result<()>> + Send)> {
    if opts.page_size == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "page size must be at least 1",
        ));
    }
    if !(0.0..=1.0).contains(&opts.mutate_rate) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("mutate rate {} is outside 0..=1", opts.mutate_rate),
        ));
    }
    if opts.mutate_rate > 0.0 && opts.mutate_burst == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "mutate burst must be at least 1",
        ));
    }
    let store = api::Store::load(&opts.referrals_file).await?;
    let listener = tokio::net::TcpListener::bind(opts.listen).await?;
    let addr = listener.local_addr()?;
    let (fault_rng, mutate_rng) = match opts.fault_seed {
        // Separate streams, so that turning mutations on does not change the faults drawn.
        Some(seed) => (
            StdRng::seed_from_u64(seed),
            StdRng::seed_from_u64(seed ^ MUTATE_SEED_SALT),
        ),
        None => (StdRng::from_os_rng(), StdRng::from_os_rng()),
    };
    tracing::info!(
        %addr,
        referrals = store.len(),
        file = %opts.referrals_file.display(),
        faults = %opts.faults,
        mutate_rate = opts.mutate_rate,
        mutate_burst = opts.mutate_burst,
        "partner center simulator listening"
    );
    let opts_rate_bits = opts.mutate_rate.to_bits();
    let faults = Mutex::new(Faults {
        spec: opts.faults.clone(),
        retry_after_secs: DEFAULT_RETRY_AFTER_SECS,
    });
    let simulator = Arc::new(Simulator {
        faults,
        opts,
        addr,
        store: tokio::sync::Mutex::new(store),
        auth: Mutex::new(login::AuthBook::default()),
        fault_rng: Mutex::new(fault_rng),
        mutate_rng: Mutex::new(mutate_rng),
        mutate_rate: std::sync::atomic::AtomicU64::new(opts_rate_bits),
        stats: Mutex::new(Stats::default()),
        write_access: patch::WriteAccess::default(),
        webhooks: webhooks::Webhooks::default(),
    });
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/_simulator/stats", get(stats))
        .route("/_simulator/referrals", get(current_referrals))
        .route("/_simulator/mutate", post(set_mutate_rate))
        .route("/_simulator/faults", post(set_faults))
        .route("/_simulator/late", post(late::add_late_referrals))
        .route(
            "/_simulator/revoke-refresh-tokens",
            post(revoke_refresh_tokens),
        )
        .route(
            "/_simulator/expire-access-tokens",
            post(expire_access_tokens),
        )
        .route("/v1.0/engagements/referrals", get(api::list_referrals))
        .route(
            "/v1.0/engagements/referrals/{id}",
            get(api::get_referral).patch(patch::patch_referral),
        )
        .route("/_simulator/write-access", post(patch::set_write_access))
        .route(
            "/v1.0/engagements/webhooks/registration",
            get(webhooks::registration)
                .post(webhooks::registration)
                .put(webhooks::registration)
                .delete(webhooks::registration),
        )
        .route("/_simulator/mutate-now", post(mutate::mutate_now))
        .route("/{tenant}/oauth2/v2.0/devicecode", post(login::device_code))
        .route("/{tenant}/oauth2/v2.0/token", post(login::token))
        .route("/devicelogin", get(login::device_login_page))
        .fallback(not_found)
        .with_state(simulator);
    Ok((addr, async move { axum::serve(listener, app).await }))
}

/// Writes a referrals file atomically (temp file and rename), so a running simulator never
/// reads half of it.
pub fn write_referrals(path: &Path, referrals: &[serde_json::Value]) -> io::Result<()> {
    write_json(path, referrals)
}

/// Pretty JSON, written atomically; shared by [`write_referrals`] and mutations (which write
/// each item's raw text back unchanged).
fn write_json<T: serde::Serialize + ?Sized>(path: &Path, value: &T) -> io::Result<()> {
    write_pretty_json(path, |serializer| value.serialize(serializer))
}

/// Pretty JSON streamed to a file (never whole in memory), written atomically.
fn write_pretty_json(
    path: &Path,
    serialize: impl FnOnce(
        &mut serde_json::Serializer<
            &mut io::BufWriter<&mut std::fs::File>,
            serde_json::ser::PrettyFormatter<'static>,
        >,
    ) -> Result<(), serde_json::Error>,
) -> io::Result<()> {
    hunter_core::fs::write_atomically_with(path, |file| {
        let mut writer = io::BufWriter::with_capacity(1 << 20, file);
        serialize(&mut serde_json::Serializer::pretty(&mut writer)).map_err(io::Error::other)?;
        io::Write::flush(&mut writer)
    })
}

/// Mixed into `fault_seed` for the mutation rng ("mutate" in ASCII).
const MUTATE_SEED_SALT: u64 = 0x6d75_7461_7465;

/// `Retry-After` of 429 replies unless `POST /_simulator/faults` says otherwise.
const DEFAULT_RETRY_AFTER_SECS: u64 = 1;
/// The largest `retry_after` the control route accepts (a client caps it at an hour too).
const MAX_RETRY_AFTER_SECS: u64 = 3600;

/// The faults in force: `opts.faults` at start, replaced by `POST /_simulator/faults`.
struct Faults {
    spec: FaultSpec,
    /// Seconds in the `Retry-After` header (and the body) of 429 replies.
    retry_after_secs: u64,
}

/// Shared state of one running simulator.
struct Simulator {
    /// As started; `faults` and `mutate_rate` hold the values tests may change.
    opts: SimulatorOptions,
    faults: Mutex<Faults>,
    /// Bound address, for links when a request has no `Host` header.
    addr: SocketAddr,
    /// Async: a reload or a mutation (read, change, write back) holds it throughout, so they
    /// never interleave.
    store: tokio::sync::Mutex<api::Store>,
    auth: Mutex<login::AuthBook>,
    fault_rng: Mutex<StdRng>,
    mutate_rng: Mutex<StdRng>,
    /// The current mutation rate (f64 bits): starts at `opts.mutate_rate`, tests may change it.
    mutate_rate: std::sync::atomic::AtomicU64,
    stats: Mutex<Stats>,
    /// Whether PATCH may write (`POST /_simulator/write-access`; module `patch`).
    write_access: patch::WriteAccess,
    /// The webhook registration and its deliveries (module `webhooks`).
    webhooks: webhooks::Webhooks,
}

#[derive(Default, serde::Serialize)]
struct Stats {
    /// endpoint → status → count.
    requests: BTreeMap<&'static str, BTreeMap<u16, u64>>,
    /// fault kind → count.
    faults: BTreeMap<&'static str, u64>,
    /// Token endpoint: grant type (`device_code`, `refresh_token`, `missing`, `unsupported`)
    /// → outcome (`ok` or the `error` code, e.g. `authorization_pending`, `invalid_grant`) →
    /// count.
    tokens: BTreeMap<&'static str, BTreeMap<&'static str, u64>>,
    /// Mutation bursts applied, referrals moved on, and status steps among them.
    mutations: MutationStats,
    /// `/_simulator/` control calls by name.
    admin: BTreeMap<&'static str, u64>,
}

#[derive(Default, serde::Serialize)]
struct MutationStats {
    bursts: u64,
    referrals: u64,
    status_changes: u64,
}

impl Simulator {
    fn record(&self, endpoint: &'static str, status: StatusCode) {
        let mut stats = lock(&self.stats);
        *stats
            .requests
            .entry(endpoint)
            .or_default()
            .entry(status.as_u16())
            .or_default() += 1;
    }

    fn record_fault(&self, kind: FaultKind) {
        *lock(&self.stats).faults.entry(kind.as_str()).or_default() += 1;
    }

    fn record_token(&self, grant: &'static str, outcome: &'static str) {
        *lock(&self.stats)
            .tokens
            .entry(grant)
            .or_default()
            .entry(outcome)
            .or_default() += 1;
    }

    fn record_admin(&self, name: &'static str) {
        *lock(&self.stats).admin.entry(name).or_default() += 1;
    }

    /// `http://<host>` as the client addressed us, for links and the verification URI.
    fn base_url(&self, headers: &HeaderMap) -> String {
        let host = headers
            .get(header::HOST)
            .and_then(|value| value.to_str().ok())
            .filter(|host| !host.is_empty() && !host.contains(['/', ' ', '@']))
            .map_or_else(|| self.addr.to_string(), str::to_owned);
        format!("http://{host}")
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn json_response(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        body,
    )
        .into_response()
}

async fn healthz(State(simulator): State<Arc<Simulator>>) -> Response {
    simulator.record("healthz", StatusCode::OK);
    (StatusCode::OK, "ok").into_response()
}

async fn stats(State(simulator): State<Arc<Simulator>>) -> Response {
    let mut body = serde_json::to_value(&*lock(&simulator.stats)).unwrap_or_default();
    body["webhooks"] =
        serde_json::to_value(lock(&simulator.webhooks.stats).clone()).unwrap_or_default();
    let body = body.to_string();
    json_response(StatusCode::OK, body)
}

async fn current_referrals(State(simulator): State<Arc<Simulator>>) -> Response {
    simulator.record_admin("referrals");
    let referrals = simulator.referrals().await;
    let mut body = String::with_capacity(
        referrals
            .iter()
            .map(|r| r.raw.get().len() + 1)
            .sum::<usize>()
            + 2,
    );
    body.push('[');
    for (index, referral) in referrals.iter().enumerate() {
        if index > 0 {
            body.push(',');
        }
        body.push_str(referral.raw.get());
    }
    body.push(']');
    json_response(StatusCode::OK, body)
}

#[derive(serde::Deserialize)]
struct MutateQuery {
    rate: f64,
}

/// `POST /_simulator/mutate?rate=R`: changes the mutation rate from now on (0 stops it).
async fn set_mutate_rate(
    State(simulator): State<Arc<Simulator>>,
    axum::extract::Query(query): axum::extract::Query<MutateQuery>,
) -> Response {
    simulator.record_admin("mutate");
    if !(0.0..=1.0).contains(&query.rate) || (query.rate > 0.0 && simulator.opts.mutate_burst == 0)
    {
        return api::error_reply(
            StatusCode::BAD_REQUEST,
            "invalidRequest",
            "rate must be within 0..=1",
        )
        .into_response();
    }
    simulator
        .mutate_rate
        .store(query.rate.to_bits(), std::sync::atomic::Ordering::Relaxed);
    tracing::info!(rate = query.rate, "simulator mutation rate changed");
    json_response(
        StatusCode::OK,
        serde_json::json!({ "mutateRate": query.rate }).to_string(),
    )
}

/// `POST /_simulator/faults?spec=S&retry_after=N`: replaces the faults from now on.
async fn set_faults(
    State(simulator): State<Arc<Simulator>>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Response {
    simulator.record_admin("faults");
    let bad_request = |item: &str, message: String| {
        json_response(
            StatusCode::BAD_REQUEST,
            serde_json::json!({
                "error": { "code": "invalidRequest", "message": message, "item": item }
            })
            .to_string(),
        )
    };
    let mut spec = FaultSpec::default();
    let mut retry_after_secs = DEFAULT_RETRY_AFTER_SECS;
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match &*key {
            "spec" => match value.parse::<FaultSpec>() {
                Ok(parsed) => spec = parsed,
                Err(error) => return bad_request(&error.item, error.to_string()),
            },
            "retry_after" => match value.trim().parse::<u64>() {
                Ok(secs) if secs <= MAX_RETRY_AFTER_SECS => retry_after_secs = secs,
                _ => {
                    return bad_request(
                        &value,
                        format!(
                            "invalid retry_after `{value}`: whole seconds, 0..={MAX_RETRY_AFTER_SECS}"
                        ),
                    );
                }
            },
            other => {
                return bad_request(
                    other,
                    format!("unknown parameter `{other}` (known: spec, retry_after)"),
                );
            }
        }
    }
    tracing::info!(faults = %spec, retry_after_secs, "simulator faults changed");
    let body = serde_json::json!({ "faults": spec.to_string(), "retryAfter": retry_after_secs });
    *lock(&simulator.faults) = Faults {
        spec,
        retry_after_secs,
    };
    json_response(StatusCode::OK, body.to_string())
}

async fn revoke_refresh_tokens(State(simulator): State<Arc<Simulator>>) -> Response {
    simulator.record_admin("revoke_refresh_tokens");
    let revoked = lock(&simulator.auth).revoke_refresh_tokens();
    tracing::info!(revoked, "simulator revoked every refresh token");
    json_response(
        StatusCode::OK,
        serde_json::json!({ "revokedRefreshTokens": revoked }).to_string(),
    )
}

async fn expire_access_tokens(State(simulator): State<Arc<Simulator>>) -> Response {
    simulator.record_admin("expire_access_tokens");
    let expired = lock(&simulator.auth).expire_access_tokens(std::time::Instant::now());
    tracing::info!(expired, "simulator expired every access token");
    json_response(
        StatusCode::OK,
        serde_json::json!({ "expiredAccessTokens": expired }).to_string(),
    )
}

async fn not_found(State(simulator): State<Arc<Simulator>>) -> Response {
    simulator.record("unknown", StatusCode::NOT_FOUND);
    api::error_reply(
        StatusCode::NOT_FOUND,
        "itemNotFound",
        "no such resource in the simulator",
    )
    .into_response()
}

#[cfg(test)]
mod tests;
