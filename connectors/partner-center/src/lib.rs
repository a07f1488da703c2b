//! Partner Center Referrals connector: sign-in, API client and the incremental poll's cursor.
//!
//! # Layout
//!
//! - [`auth`]: device code sign-in against Microsoft Entra ID, the token cache file (atomic,
//!   mode 0600) and silent refresh with refresh-token rotation.
//! - [`client`]: the Referrals API client: first page / next page / get by id, retries with
//!   full-jitter backoff and `Retry-After`, typed errors that know whether they are retryable.
//! - [`cursor`]: which referrals a poll asks for (keyset paging from `cursor - overlap`) and
//!   which versions were already published.
//! - [`telemetry`]: every metric this crate emits, with its help text, and the events that log
//!   and count together.
//!
//! The local Partner Center for demos and tests (`hunter simulate`) is its own crate,
//! `hunter-partner-center-simulator`; this crate's tests use it as a dev-dependency.
//!
//! # Secrets
//!
//! Access tokens, refresh tokens, id tokens and the client secret only ever live in
//! [`auth::Secret`], whose `Debug` and `Display` print `[redacted]`. No error message, log line or
//! metric label is built from a token endpoint's success body.

pub mod auth;
pub mod client;
pub mod cursor;
pub mod telemetry;

// The test harness is shared with the simulator crate, which names this crate by its package name.
#[cfg(test)]
extern crate self as hunter_partner_center;
#[cfg(test)]
#[path = "../../partner-center-simulator/src/test_support.rs"]
mod test_support;
