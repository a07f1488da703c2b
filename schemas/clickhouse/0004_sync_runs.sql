-- One row per sync run from hunter.sync-runs.v1. A run is written when it starts and when it
-- ends; the row with the highest `row_version` (finished_at, else started_at) is the run's state.
-- A manual trigger of several tenants gives one run per tenant with the same run_id (the task id),
-- so a run is identified by (run_id, tenant).
CREATE TABLE IF NOT EXISTS sync_runs
(
    run_id         String,
    tenant         String,
    trigger        String,
    status         String,
    started_at     DateTime('UTC'),
    finished_at    Nullable(DateTime('UTC')),
    pages          UInt64,
    fetched        UInt64,
    published      UInt64,
    skipped        UInt64,
    dead_lettered  UInt64,
    error_class    Nullable(String),
    error_message  Nullable(String),
    coalesced_into Nullable(String),
    row_version    UInt64
)
ENGINE = ReplacingMergeTree(row_version)
ORDER BY (run_id, tenant);
