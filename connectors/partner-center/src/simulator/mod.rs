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
//! | `POST /{tenant}/oauth2/v2.0/devicecode` | a device code; the sign-in is approved on the second poll |
//! | `POST /{tenant}/oauth2/v2.0/token` | device code and refresh-token grants, rotating refresh tokens |
//! | `GET /devicelogin` | the page the prompt points at (nothing to do there) |
//! | `GET /_simulator/stats` | request counts by endpoint and status, and injected faults |
//!
//! The referrals endpoints need a bearer token this simulator issued and that has not expired
//! (else 401 `unauthenticated`), and get the faults of [`crate::faults`]. Each referral is
//! served as the file's JSON text verbatim (unknown fields, key order and number spelling
//! kept). The file is re-read when its size or modification time changes, so tests can move
//! referrals on; write it atomically ([`write_referrals`]) so that no half-written file is read.
//! A file that becomes unreadable or invalid is logged and the last good copy is served.

mod api;
mod generate;
mod login;

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

pub use generate::generate_referrals;

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
    /// Seed for fault draws, for reproducible runs; `None` seeds from the OS.
    pub fault_seed: Option<u64>,
}

impl SimulatorOptions {
    /// Options with the defaults: no faults, 100 per page, one-hour tokens.
    pub fn new(referrals_file: PathBuf, listen: SocketAddr) -> Self {
        Self {
            referrals_file,
            listen,
            faults: FaultSpec::default(),
            page_size: 100,
            access_token_lifetime: Duration::from_secs(3600),
            fault_seed: None,
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
    let store = api::Store::load(&opts.referrals_file).await?;
    let listener = tokio::net::TcpListener::bind(opts.listen).await?;
    let addr = listener.local_addr()?;
    let fault_rng = match opts.fault_seed {
        Some(seed) => StdRng::seed_from_u64(seed),
        None => StdRng::from_os_rng(),
    };
    tracing::info!(
        %addr,
        referrals = store.len(),
        file = %opts.referrals_file.display(),
        faults = %opts.faults,
        "partner center simulator listening"
    );
    let simulator = Arc::new(Simulator {
        opts,
        addr,
        store: Mutex::new(store),
        auth: Mutex::new(login::AuthBook::default()),
        fault_rng: Mutex::new(fault_rng),
        stats: Mutex::new(Stats::default()),
    });
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/_simulator/stats", get(stats))
        .route("/v1.0/engagements/referrals", get(api::list_referrals))
        .route("/v1.0/engagements/referrals/{id}", get(api::get_referral))
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
    let json = serde_json::to_vec_pretty(referrals).map_err(io::Error::other)?;
    crate::auth::write_atomically(path, &json)
}

/// Shared state of one running simulator.
struct Simulator {
    opts: SimulatorOptions,
    /// Bound address, for links when a request has no `Host` header.
    addr: SocketAddr,
    store: Mutex<api::Store>,
    auth: Mutex<login::AuthBook>,
    fault_rng: Mutex<StdRng>,
    stats: Mutex<Stats>,
}

#[derive(Default, serde::Serialize)]
struct Stats {
    /// endpoint → status → count.
    requests: BTreeMap<&'static str, BTreeMap<u16, u64>>,
    /// fault kind → count.
    faults: BTreeMap<&'static str, u64>,
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
    let body = serde_json::to_string(&*lock(&simulator.stats)).unwrap_or_default();
    json_response(StatusCode::OK, body)
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
