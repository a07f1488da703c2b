-- Views for analysts (documented in README.md).
CREATE VIEW IF NOT EXISTS current_leads AS
SELECT * FROM leads FINAL;

CREATE VIEW IF NOT EXISTS companies_by_domain AS
SELECT
    company_domain,
    count() AS leads,
    sum(deal_value_usd) AS pipeline_usd,
    argMax(status, updated_at) AS latest_status,
    max(updated_at) AS last_updated_at
FROM leads FINAL
WHERE company_domain IS NOT NULL
GROUP BY company_domain;

CREATE VIEW IF NOT EXISTS status_transitions AS
SELECT
    lead_id,
    tenant,
    previous_status,
    status,
    updated_at AS changed_at
FROM lead_history FINAL
WHERE change_type = 'status_changed';
