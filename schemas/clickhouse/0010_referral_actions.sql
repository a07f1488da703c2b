-- The audit trail of write-back (docs/writeback.md), from hunter.referral-action-results.v1: one
-- row per step of an action (queued, sent, then one of applied, conflict, rejected, failed):
-- who asked, when, the status before and after, the result and Partner Center's request id.
-- A replayed record is the same (referral_id, action_id, state) and collapses; an action's
-- state is the row with the highest at_micros (argMax(state, at_micros) by action_id).
CREATE TABLE IF NOT EXISTS referral_actions
(
    action_id       String,
    referral_id     String,
    tenant          String,
    action          String,
    state           String,
    message         Nullable(String),
    request_id      Nullable(String),
    from_status     Nullable(String),
    to_status       Nullable(String),
    current_etag    Nullable(String),
    current_version Nullable(String),
    actor_name      String,
    actor_role      String,
    requested_at    DateTime('UTC'),
    at              DateTime('UTC'),
    at_micros       UInt64
)
ENGINE = ReplacingMergeTree(at_micros)
ORDER BY (referral_id, action_id, state);
