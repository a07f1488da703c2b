-- Every lead version ever produced, for status-transition analysis. Keyed by (lead_id, version),
-- so a replayed version collapses into one row (read with FINAL for exact counts).
CREATE TABLE IF NOT EXISTS lead_history
(
    lead_id         String,
    version         UInt64,
    tenant          String,
    status          Nullable(String),
    substatus       Nullable(String),
    previous_status Nullable(String),
    change_type     String,
    deal_value_usd  Nullable(Decimal(18, 2)),
    score           UInt8,
    updated_at      DateTime('UTC'),
    processed_at    DateTime('UTC'),
    inserted_at     DateTime('UTC') DEFAULT now()
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (lead_id, version);
