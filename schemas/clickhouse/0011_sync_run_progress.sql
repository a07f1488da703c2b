-- Backfill progress (sync_run contract 0003): a running backfill writes its record after every
-- page; `row_version` is then the record's updated_at, so the newest progress record, and in
-- the end the final one (finished_at is later than any progress), is the run's row.
-- `estimate`: referrals the run expects to read in all (NULL when unknown, and in older rows);
-- `since`: a windowed backfill's lower bound.
ALTER TABLE sync_runs ADD COLUMN estimate Nullable(UInt64);
ALTER TABLE sync_runs ADD COLUMN since Nullable(DateTime('UTC'));
