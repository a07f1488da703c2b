//! Hunter's pipeline core, shared by the roles and the connectors.
//!
//! # Layout
//!
//! - [`config`]: settings from a TOML file and `HUNTER_*` variables, checked at start.
//! - [`records`]: the Rust types of the Avro contracts in `schemas/`.
//! - [`codec`]: Avro single-object and Confluent framing; readers accept both, and every
//!   released contract version (schema resolution).
//! - [`contracts`]: the history of every `.avsc`, the specification's canonical form and
//!   fingerprints, the compatibility check.
//! - [`registry`]: the Schema Registry client (basic auth, custom CA, retryable errors).
//! - [`kafka`]: topic names, producer/consumer settings, topic creation, dead-letter headers.
//! - [`security`]: token strength, plain-HTTP URLs, the state directory, URL redaction.
//! - [`telemetry`]: logging, the metric catalogue, `/healthz` and `/metrics`.
//! - [`shutdown`]: the stop broadcast every loop observes.
//! - [`fs`]: files replaced whole (temp file, fsync, rename), mode 0600.
//! - [`size`]: the record-size policy (compression, limits, cutting oversize referrals).

pub mod codec;
pub mod config;
pub mod contracts;
pub mod fs;
pub mod kafka;
pub mod records;
pub mod registry;
pub mod security;
pub mod shutdown;
pub mod size;
pub mod telemetry;
