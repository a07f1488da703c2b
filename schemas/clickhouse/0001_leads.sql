-- Latest state per lead. ReplacingMergeTree keeps, per lead_id, the row with the highest
-- version (the referral's updatedDateTime in microseconds), so a replayed batch never adds a
-- second live row. Read with FINAL (or argMax by version) for exact answers.
CREATE TABLE IF NOT EXISTS leads
(
    lead_id        String,
    referral_id    String,
    engagement_id  Nullable(String),
    tenant         String,
    name           Nullable(String),
    status         Nullable(String),
    substatus      Nullable(String),
    direction      Nullable(String),
    qualification  Nullable(String),
    referral_type  Nullable(String),
    company_name   Nullable(String),
    company_domain Nullable(String),
    country        Nullable(String),
    deal_value     Nullable(Decimal(18, 2)),
    currency       Nullable(String),
    created_at     Nullable(DateTime('UTC')),
    updated_at     DateTime('UTC'),
    etag           Nullable(String),
    version        UInt64,
    processed_at   DateTime('UTC'),
    inserted_at    DateTime('UTC') DEFAULT now()
)
ENGINE = ReplacingMergeTree(version)
ORDER BY lead_id;
