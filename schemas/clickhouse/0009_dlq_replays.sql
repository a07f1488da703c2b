-- Dead-letter re-drive (`hunter dlq replay`, docs/operations.md). Compatible: columns with
-- defaults and a new table; dead letters written before read as never replayed.
--
-- dlq.replay_count: how many times the dead record had been replayed when it failed (its
-- `hunter-replay-count` header; 0 for a first failure). dlq.replay_of: the dead letter it was
-- replayed from (`PARTITION:OFFSET` on the dead-letter topic, its `hunter-replay-of` header).
ALTER TABLE dlq ADD COLUMN replay_count UInt32 DEFAULT 0;
ALTER TABLE dlq ADD COLUMN replay_of String DEFAULT '';
-- One row per replay: the sink writes it when it reads a re-published record (a record with a
-- `hunter-replay-of` header) on a topic it consumes. Keyed by the dead letter and the position
-- the record was re-published at, so a re-read collapses.
CREATE TABLE IF NOT EXISTS dlq_replays
(
    dlq_partition Int32,
    dlq_offset    Int64,
    replay_count  UInt32,
    topic         String,
    partition     Int32,
    offset        Int64,
    replayed_at   DateTime('UTC'),
    received_at   DateTime('UTC') DEFAULT now()
)
ENGINE = ReplacingMergeTree
ORDER BY (dlq_partition, dlq_offset, topic, partition, offset);
