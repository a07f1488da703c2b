//! The ClickHouse questions that more than one part of Hunter asks, in one place: the API's
//! sync status and `hunter doctor` read the same facts the same way.
//!
//! Every answer is typed (RowBinary tuples, which ClickHouse 18.16 serves too), so a value the
//! server cannot give is an error, never a silent zero. The status strings are the
//! [`RunStatus`] contract values.

use clickhouse::Client;
use hunter_core::records::RunStatus;

/// Per tenant, when its last successful sync run finished (unix seconds); a tenant without a
/// successful run is not listed.
pub async fn last_successes(client: &Client) -> clickhouse::error::Result<Vec<(String, i64)>> {
    client
        .query(
            "SELECT tenant, toInt64(ifNull(toUInt32(max(finished_at)), 0)) FROM sync_runs FINAL \
             WHERE status = ? AND finished_at IS NOT NULL GROUP BY tenant",
        )
        .bind(RunStatus::Succeeded.as_str())
        .fetch_all::<(String, i64)>()
        .await
}

/// Per tenant, the status of its latest run (any run, coalesced and expired triggers too); a
/// tenant without a run is not listed.
pub async fn latest_statuses(client: &Client) -> clickhouse::error::Result<Vec<(String, String)>> {
    client
        .query("SELECT tenant, argMax(status, started_at) FROM sync_runs FINAL GROUP BY tenant")
        .fetch_all::<(String, String)>()
        .await
}
