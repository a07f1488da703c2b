//! Support for the end-to-end tests: the real local stack (broker, ClickHouse) from
//! `deploy/local/stack.sh env`, the real `hunter` binary, and per-test isolation (a topic
//! prefix and a ClickHouse database of its own).
//!
//! One module per subject, re-exported here so tests name everything as `hunter_e2e::…`:
//! [`stack`] (addresses, ports, names), [`processes`] (`hunter` children, polling), [`broker`]
//! (an own tansu, reading topics), [`clickhouse`] (the shared server, an own one), [`deployment`]
//! (one isolated Hunter deployment), [`dns`] (MX answers, a silent server), [`proxy`] (a TCP proxy
//! that stops answering), [`metrics`] (the metric catalogue),
//! [`grafana`] (dashboards and datasources), [`tls`] (a test CA).

pub mod broker;
pub mod clickhouse;
pub mod deployment;
pub mod dns;
pub mod metrics;
pub mod processes;
pub mod proxy;
pub mod stack;

pub use broker::*;
pub use clickhouse::*;
pub use deployment::*;
pub use dns::*;
pub use metrics::*;
pub use processes::*;
pub use proxy::*;
pub use stack::*;

/// Contract tests: the registry stand-in, fixtures, the Python consumers.
pub mod contracts;

pub mod bench;
/// The page's browser checks run from the tests.
pub mod browser;
pub mod grafana;
pub mod report;
pub mod tls;
