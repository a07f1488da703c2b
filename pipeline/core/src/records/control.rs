//! Hunter's own control records: sync runs, source state and commands.

use serde::{Deserialize, Serialize};

use super::lenient::Timestamp;
use super::states::{RunErrorClass, RunStatus, RunTrigger};

/// One poll of one tenant (`schemas/sync_run.avsc`, topic `hunter.sync-runs.v1`, key = run id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncRun {
    pub run_id: String,
    pub tenant: String,
    /// A [`RunTrigger`]: `schedule`, `startup`, `manual` or `sweep`.
    pub trigger: String,
    /// A [`RunStatus`]: `running`, `succeeded`, `failed`, `coalesced` (a manual trigger served
    /// by the run in `coalesced_into`) or `expired` (a manual trigger read more than one sync
    /// interval after it was requested: not run).
    pub status: String,
    pub started_at: Timestamp,
    pub finished_at: Option<Timestamp>,
    pub pages: i64,
    pub fetched: i64,
    pub published: i64,
    pub skipped: i64,
    pub dead_lettered: i64,
    /// For a failed run: a [`RunErrorClass`] (`signin_required`, `auth`, `rate_limited`,
    /// `network`, `timeout`, `server`, `client`, `decode`, `encode` or `kafka`).
    pub error_class: Option<String>,
    pub error_message: Option<String>,
    /// For a coalesced trigger: the run that served it.
    #[serde(default)]
    pub coalesced_into: Option<String>,
    /// When this record was written: progress records of a backfill carry the counts so far
    /// (contract 0003; `None` in older records).
    #[serde(default)]
    pub updated_at: Option<Timestamp>,
    /// Referrals the run expects to read in all, when something gives an estimate (0003).
    #[serde(default)]
    pub estimate: Option<i64>,
    /// A windowed backfill's lower bound on `updatedDateTime` (0003).
    #[serde(default)]
    pub since: Option<Timestamp>,
}

impl SyncRun {
    /// A run of `tenant` that starts now (status `running`, nothing counted yet).
    pub fn started(run_id: &str, tenant: &str, trigger: RunTrigger) -> Self {
        SyncRun {
            run_id: run_id.to_owned(),
            tenant: tenant.to_owned(),
            trigger: trigger.as_str().to_owned(),
            status: RunStatus::Running.as_str().to_owned(),
            started_at: Timestamp::now(),
            finished_at: None,
            pages: 0,
            fetched: 0,
            published: 0,
            skipped: 0,
            dead_lettered: 0,
            error_class: None,
            error_message: None,
            coalesced_into: None,
            updated_at: None,
            estimate: None,
            since: None,
        }
    }

    /// Ends the run now with `status`.
    pub fn finish(&mut self, status: RunStatus) {
        self.status = status.as_str().to_owned();
        self.finished_at = Some(Timestamp::now());
    }

    /// Ends the run now as `failed`, with why.
    pub fn finish_failed(&mut self, class: RunErrorClass, message: &str) {
        self.finish(RunStatus::Failed);
        self.error_class = Some(class.as_str().to_owned());
        self.error_message = Some(message.to_owned());
    }

    /// The typed status; `None` for a status this build does not know (a newer writer's).
    pub fn run_status(&self) -> Option<RunStatus> {
        RunStatus::parse(&self.status)
    }
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
    /// `sync_now`, `backfill` or `fetch_referral`; a kind this build does not know is
    /// ignored by the source (a newer writer's).
    pub kind: String,
    /// The tenant to act on; `None` means every tenant.
    pub tenant: Option<String>,
    pub requested_at: Timestamp,
    /// `backfill`: read referrals updated since then; `None` reads everything (contract 0002).
    #[serde(default)]
    pub since: Option<Timestamp>,
    /// `fetch_referral`: the referral to get by id (contract 0003; `None` in older records).
    #[serde(default)]
    pub referral_id: Option<String>,
}

impl Command {
    pub const SYNC_NOW: &'static str = "sync_now";
    /// `hunter backfill`: a full (or, with `since`, windowed) re-read of Partner Center now.
    pub const BACKFILL: &'static str = "backfill";
    /// A Partner Center webhook said `referral_id` changed: get it by id now and publish it
    /// when it is a version not yet published (docs/partner-center-webhooks.md).
    pub const FETCH_REFERRAL: &'static str = "fetch_referral";
}
