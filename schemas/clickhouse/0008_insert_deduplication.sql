-- requires ClickHouse >= 22.2
-- Insert deduplication for the sink's tables: each table remembers the tokens of its last 1000
-- inserts and drops an insert whose token it has seen, so a retried batch whose first attempt
-- did reach the table is not written twice (the sink's token names the batch's topic,
-- partitions, offsets). ClickHouse 18.16 has neither the token nor this table setting:
-- `hunter migrate` leaves this migration pending there (not recorded, applied by the first
-- `hunter migrate` on a server that is new enough), and ReplacingMergeTree collapses replayed
-- rows instead.
ALTER TABLE leads MODIFY SETTING non_replicated_deduplication_window = 1000;
ALTER TABLE lead_history MODIFY SETTING non_replicated_deduplication_window = 1000;
ALTER TABLE referrals MODIFY SETTING non_replicated_deduplication_window = 1000;
ALTER TABLE sync_runs MODIFY SETTING non_replicated_deduplication_window = 1000;
ALTER TABLE dlq MODIFY SETTING non_replicated_deduplication_window = 1000;
