//! The `hunter` binary's library: the CLI, the run loop of each role, and the API.
//!
//! # Layout
//!
//! - [`cli`]: the command line (a contract: scripts and docs rely on it).
//! - [`roles`]: one file per long-running role, each reading top to bottom
//!   consume → decode → process → produce → acknowledge:
//!   [`roles::source`], [`roles::process`], [`roles::sink`], [`roles::api`].
//! - [`commands`]: the one-shot subcommands (`auth`, `migrate`, `simulate`, `doctor`).
//! - [`doctor`]: `hunter doctor`, the troubleshooting guide as checks with verdicts and fixes.
//! - [`processors`]: dedupe and enrichment, the processor role's logic.
//! - [`queries`]: the ClickHouse questions the API and `doctor` share.
//! - [`dlq`]: dead-letter re-drive (`hunter dlq list|replay`, `POST /api/v1/dlq/replay`).
//!
//! Delivery semantics (at-least-once end to end, idempotent effects):
//! - source: a tenant's cursor advances only after every record of the poll was acknowledged
//!   by the broker (acks=all, idempotent producer); a crash replays, never skips;
//! - processor: a referral's offset is stored only after its lead (or dead letter) was
//!   acknowledged; the same referral version always yields the same lead version (same
//!   `version`; a replay is recognised and produces nothing, and only the DNS-derived mail
//!   provider and score could differ if a replay did produce);
//! - sink: an offset is stored only after ClickHouse acknowledged the insert holding it;
//!   `leads` is a ReplacingMergeTree on `version`, so replays add no live rows.

pub mod backfill;
pub mod cli;
pub mod commands;
pub mod dlq;
// `hunter webhooks register|status|unregister` (docs/partner-center-webhooks.md).
pub mod doctor;
pub mod pc_webhooks;
pub mod processors;
pub mod queries;
pub mod replay;
pub mod roles;
