//! Hunter's end-to-end tests against the real local stack (tansu, ClickHouse, Prometheus,
//! Chromium, the `hunter` binary), one module per subject. They are one test binary so rdkafka
//! and the rest are linked once; `tests/run.sh` runs the binary once per module
//! (`cargo test -p hunter-e2e --test e2e -- crash::`), so only the tests of one module run
//! beside each other, as when each file was a binary of its own.
//!
//! One module by hand: `cargo test -p hunter-e2e --test e2e -- --test-threads=4 sink::`
//! (a module whose name ends another's, such as `security::`, needs
//! `--skip kafka_security:: --skip clickhouse_security::`; run.sh adds those).

mod alerts;
mod api;
mod api_fuzz;
mod auth;
// hunter backfill: a re-read of Partner Center now, with progress.
mod backfill;
mod clickhouse_security;
mod contracts;
mod crash;
mod dashboards;
// The demo's setup (simulator DNS, example USD rates) and its page.
mod demo;
mod deployment;
// Dead-letter re-drive: hunter dlq list|replay, POST /api/v1/dlq/replay.
mod dlq;
// docs/README.md links every design note; the READMEs' relative links resolve.
mod docs;
mod doctor;
mod durability;
// Referral expiry: expires_at in ClickHouse, the API's filter and sort, the gauge.
mod expiry;
// The overview (GET /api/v1/overview) and the CSV export (GET /api/v1/leads.csv), with the page.
mod export;
mod kafka_security;
// Outgoing webhooks: the notify role (docs/notifications.md).
mod notify;
mod oversize;
mod pc_faults;
// Partner Center webhooks: hunter webhooks register, events to POST /api/v1/partner-center/webhooks.
mod pc_webhooks;
mod process;
// The API's read model against the ClickHouse path (docs/api-read-model.md).
mod readmodel;
mod replay;
// Who writes `referrals`: the processor (new deployments) or the sink (HUNTER_SINK_REFERRALS_WRITER).
mod referrals_writer;
mod secrets;
mod security;
mod sink;
mod skeleton;
mod source;
mod sweep;
mod topics;
mod web;
// The page's status indicator following a running backfill (issue 18).
mod web_backfill;
mod writeback;
