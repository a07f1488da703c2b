-- Outgoing webhooks (docs/notifications.md): one row per step of a delivery, written by the
-- `notify` role. A delivery is one notification (kind, subject, version) to one target: first
-- `queued` (with the event, before the lead's offset is committed), then one row per attempt
-- (`retrying` with the error, and finally `delivered` or `failed`). `notification_id` is a
-- stable hash of (target, kind, lead or tenant, version): the key that deduplicates across
-- restarts. A replayed row is the same (notification_id, attempt, outcome) and collapses; a
-- delivery's state is argMax(outcome, at_micros) by notification_id.
CREATE TABLE IF NOT EXISTS notifications
(
    notification_id String,
    target          String,
    format          String,
    kind            String,
    lead_id         String,
    tenant          String,
    version         UInt64,
    attempt         UInt32,
    outcome         String,
    http_status     Nullable(UInt16),
    error           Nullable(String),
    duration_ms     UInt32,
    event           String,
    event_at        DateTime('UTC'),
    at              DateTime('UTC'),
    at_micros       UInt64
)
ENGINE = ReplacingMergeTree(at_micros)
ORDER BY (notification_id, attempt, outcome);
