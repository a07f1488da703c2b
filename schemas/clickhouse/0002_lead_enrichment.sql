-- The enriched fields of a lead (lead.avsc, enrichment_version 1). One column per statement:
-- ClickHouse 18.16 has no ADD COLUMN IF NOT EXISTS, so the runner treats "column already
-- exists" on an ADD COLUMN as done, which keeps this file idempotent.
ALTER TABLE leads ADD COLUMN enrichment_version UInt16 DEFAULT 0;
ALTER TABLE leads ADD COLUMN company_domain_source Nullable(String);
ALTER TABLE leads ADD COLUMN email_provider String DEFAULT 'unknown';
ALTER TABLE leads ADD COLUMN email_provider_source String DEFAULT 'no_domain';
ALTER TABLE leads ADD COLUMN company_name_normalized Nullable(String);
ALTER TABLE leads ADD COLUMN size_band Nullable(String);
ALTER TABLE leads ADD COLUMN products Array(String);
ALTER TABLE leads ADD COLUMN solutions Array(String);
ALTER TABLE leads ADD COLUMN industries Array(String);
ALTER TABLE leads ADD COLUMN deal_value_usd Nullable(Decimal(18, 2));
ALTER TABLE leads ADD COLUMN usd_rate Nullable(Float64);
ALTER TABLE leads ADD COLUMN score UInt8 DEFAULT 0;
ALTER TABLE leads ADD COLUMN priority String DEFAULT 'low';
ALTER TABLE leads ADD COLUMN change_type String DEFAULT 'created';
ALTER TABLE leads ADD COLUMN previous_status Nullable(String);
