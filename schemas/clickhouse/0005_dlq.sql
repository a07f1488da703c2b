-- Dead letters from hunter.dlq.v1: what failed, where, and the record itself (as text when it
-- is UTF-8, else hex). Keyed by the dead letter's own position, so replays collapse.
CREATE TABLE IF NOT EXISTS dlq
(
    dlq_partition      Int32,
    dlq_offset         Int64,
    stage              String,
    error_class        String,
    error              String,
    original_topic     String,
    original_partition Nullable(Int32),
    original_offset    Nullable(Int64),
    payload            String,
    received_at        DateTime('UTC') DEFAULT now()
)
ENGINE = ReplacingMergeTree
ORDER BY (dlq_partition, dlq_offset);
