//! Partner Center Referrals connector: sign-in, API client and a local simulator.
//!
//! # Layout
//!
//! - [`auth`]: device code sign-in against Microsoft Entra ID, the token cache file (atomic,
//!   mode 0600) and silent refresh with refresh-token rotation.
//! - [`client`]: the Referrals API client: first page / next page / get by id, retries with
//!   full-jitter backoff and `Retry-After`, typed errors that know whether they are retryable.
//! - [`simulator`]: a local Partner Center (Referrals API and login authority) serving a JSON
//!   file, for demos and for tests that must not use an in-process fake.
//! - [`cursor`]: which referrals a poll asks for (keyset paging from `cursor - overlap`) and
//!   which versions were already published.
//! - [`faults`]: the `--faults` spec (`429:0.1,truncate:0.02`) the simulator injects.
//! - [`telemetry`]: every metric this crate emits, with its help text, and the events that log
//!   and count together.
//!
//! # Secrets
//!
//! Access tokens, refresh tokens, id tokens and the client secret only ever live in
//! [`auth::Secret`], whose `Debug` and `Display` print `[redacted]`. No error message, log line or
//! metric label is built from a token endpoint's success body.

pub mod auth;
pub mod client;
pub mod cursor;
pub mod faults;
pub mod simulator;
pub mod telemetry;

#[cfg(test)]
mod test_support;
