//! Hunter's own control records: sync runs, source state and commands.

use serde::{Deserialize, Serialize};

use super::lenient::Timestamp;

/// One poll of one tenant (`schemas/sync_run.avsc`, topic `hunter.sync-runs.v1`, key = run id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncRun {
    pub run_id: String,
    pub tenant: String,
    /// `schedule`, `manual` or `startup`.
    pub trigger: String,
    /// `running`, `succeeded`, `failed`, `coalesced` (served by the run in `coalesced_into`) or
    /// `expired` (a manual trigger read more than one sync interval after it was requested: not
    /// run).
    pub status: String,
    pub started_at: Timestamp,
    pub finished_at: Option<Timestamp>,
    pub pages: i64,
    pub fetched: i64,
    pub published: i64,
    pub skipped: i64,
    pub dead_lettered: i64,
    pub error_class: Option<String>,
    pub error_message: Option<String>,
    /// For a coalesced trigger: the run that served it.
    #[serde(default)]
    pub coalesced_into: Option<String>,
}

/// The source's durable cursor per tenant (`schemas/source_state.avsc`, compacted topic
/// `hunter.source-state.v1`, key = tenant).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceState {
    pub tenant: String,
    pub cursor_updated_at: Option<Timestamp>,
    pub cursor_id: Option<String>,
    pub last_run_id: Option<String>,
    pub last_success_at: Option<Timestamp>,
    /// When the last full sweep succeeded.
    #[serde(default)]
    pub last_full_sweep_at: Option<Timestamp>,
    /// Versions published inside the overlap window, so a restart does not republish them.
    #[serde(default)]
    pub recent: Vec<RecentVersion>,
    pub updated_at: Timestamp,
}

/// One published version inside the overlap window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecentVersion {
    pub id: String,
    /// The version hash, stored as Avro `long`.
    pub version: i64,
    pub updated_at: Timestamp,
}

/// A control command (`schemas/command.avsc`, topic `hunter.commands.v1`, key = command id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Command {
    pub command_id: String,
    /// `sync_now`.
    pub kind: String,
    /// The tenant to act on; `None` means every tenant.
    pub tenant: Option<String>,
    pub requested_at: Timestamp,
}

impl Command {
    pub const SYNC_NOW: &'static str = "sync_now";
}
