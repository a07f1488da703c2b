-- Expiry and the referral's dates (lead contract 0004, docs/leads.md). One column per
-- statement (18.16 has no ADD COLUMN IF NOT EXISTS; the runner treats "already exists" as
-- done). Existing rows read the defaults: no expiry, not estimated, no dates, no owners, until
-- a newer lead version of the referral arrives or `hunter backfill` re-reads them all.
ALTER TABLE leads ADD COLUMN expires_at Nullable(DateTime('UTC'));
ALTER TABLE leads ADD COLUMN expires_at_estimated UInt8 DEFAULT 0;
ALTER TABLE leads ADD COLUMN accepted_at Nullable(DateTime('UTC'));
ALTER TABLE leads ADD COLUMN closing_at Nullable(DateTime('UTC'));
ALTER TABLE leads ADD COLUMN closed_at Nullable(DateTime('UTC'));
ALTER TABLE leads ADD COLUMN owner_emails Array(String);
ALTER TABLE lead_history ADD COLUMN expires_at Nullable(DateTime('UTC'));
ALTER TABLE lead_history ADD COLUMN expires_at_estimated UInt8 DEFAULT 0;
ALTER TABLE lead_history ADD COLUMN accepted_at Nullable(DateTime('UTC'));
ALTER TABLE lead_history ADD COLUMN closing_at Nullable(DateTime('UTC'));
ALTER TABLE lead_history ADD COLUMN closed_at Nullable(DateTime('UTC'));
ALTER TABLE lead_history ADD COLUMN owner_emails Array(String);
-- `current_leads` is `SELECT * FROM leads FINAL`, whose columns ClickHouse fixes when the view
-- is created: created again so that it shows the new columns (idempotent; analysts' queries
-- see it missing only for the moment between the two statements).
DROP TABLE IF EXISTS current_leads;
CREATE VIEW IF NOT EXISTS current_leads AS
SELECT * FROM leads FINAL;
