-- Every referral as the API returned it (raw JSON, unknown fields included), latest version
-- per referral id: what `GET /api/v1/referrals/{id}` serves and what analysts can parse with
-- JSONExtract*. From partner-center.referrals.v1.
CREATE TABLE IF NOT EXISTS referrals
(
    referral_id String,
    tenant      String,
    updated_at  DateTime('UTC'),
    version     UInt64,
    etag        Nullable(String),
    raw_json    String,
    fetched_at  DateTime('UTC'),
    inserted_at DateTime('UTC') DEFAULT now()
)
ENGINE = ReplacingMergeTree(version)
ORDER BY referral_id;
