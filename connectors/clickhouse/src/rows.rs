//! Row types: field names equal column names, and inserts name their columns.

use clickhouse::Row;
use hunter_core::records::{Lead, Timestamp};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// A row of `leads` (`schemas/clickhouse/0001_leads.sql`).
#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
pub struct LeadRow {
    pub lead_id: String,
    pub referral_id: String,
    pub engagement_id: Option<String>,
    pub tenant: String,
    pub name: Option<String>,
    pub status: Option<String>,
    pub substatus: Option<String>,
    pub direction: Option<String>,
    pub qualification: Option<String>,
    pub referral_type: Option<String>,
    pub company_name: Option<String>,
    pub company_domain: Option<String>,
    pub country: Option<String>,
    /// Decimal(18, 2) as hundredths.
    pub deal_value: Option<i64>,
    pub currency: Option<String>,
    #[serde(with = "clickhouse::serde::time::datetime::option")]
    pub created_at: Option<OffsetDateTime>,
    #[serde(with = "clickhouse::serde::time::datetime")]
    pub updated_at: OffsetDateTime,
    pub etag: Option<String>,
    pub version: u64,
    #[serde(with = "clickhouse::serde::time::datetime")]
    pub processed_at: OffsetDateTime,
}

/// DateTime holds whole seconds since 1970 up to 2106; values outside are clamped, not wrapped.
fn datetime(ts: Timestamp) -> OffsetDateTime {
    let seconds = ts
        .micros()
        .div_euclid(1_000_000)
        .clamp(0, i64::from(u32::MAX));
    OffsetDateTime::from_unix_timestamp(seconds).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// Why a lead does not fit the table.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RowError {
    #[error("deal_value {0} does not fit Decimal(18, 2)")]
    DealValueOutOfRange(f64),
    #[error("version {0} is negative")]
    NegativeVersion(i64),
}

impl LeadRow {
    pub fn from_lead(lead: &Lead) -> Result<Self, RowError> {
        let deal_value = match lead.deal_value {
            None => None,
            Some(value) => {
                let hundredths = (value * 100.0).round();
                // Decimal(18, 2) holds 18 digits in all.
                if !hundredths.is_finite() || hundredths.abs() >= 1e18 {
                    return Err(RowError::DealValueOutOfRange(value));
                }
                Some(hundredths as i64)
            }
        };
        let version =
            u64::try_from(lead.version).map_err(|_| RowError::NegativeVersion(lead.version))?;
        Ok(LeadRow {
            lead_id: lead.lead_id.clone(),
            referral_id: lead.referral_id.clone(),
            engagement_id: lead.engagement_id.clone(),
            tenant: lead.tenant.clone(),
            name: lead.name.clone(),
            status: lead.status.clone(),
            substatus: lead.substatus.clone(),
            direction: lead.direction.clone(),
            qualification: lead.qualification.clone(),
            referral_type: lead.referral_type.clone(),
            company_name: lead.company_name.clone(),
            company_domain: lead.company_domain.clone(),
            country: lead.country.clone(),
            deal_value,
            currency: lead.currency.clone(),
            created_at: lead.created_at.map(datetime),
            updated_at: datetime(lead.updated_at),
            etag: lead.etag.clone(),
            version,
            processed_at: datetime(lead.processed_at),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lead(value: Option<f64>) -> Lead {
        Lead {
            lead_id: "l".into(),
            referral_id: "l".into(),
            tenant: "t".into(),
            status: Some("New".into()),
            deal_value: value,
            updated_at: Timestamp(1_700_000_000_123_456),
            version: 1_700_000_000_123_456,
            processed_at: Timestamp(1_700_000_001_000_000),
            ..Lead::default()
        }
    }

    #[test]
    fn deal_values_are_hundredths_and_bounded() {
        assert_eq!(
            LeadRow::from_lead(&lead(Some(25000.5))).unwrap().deal_value,
            Some(2_500_050)
        );
        assert_eq!(LeadRow::from_lead(&lead(None)).unwrap().deal_value, None);
        assert_eq!(
            LeadRow::from_lead(&lead(Some(1e17))),
            Err(RowError::DealValueOutOfRange(1e17))
        );
    }

    #[test]
    fn timestamps_become_whole_seconds() {
        let row = LeadRow::from_lead(&lead(None)).unwrap();
        assert_eq!(row.updated_at.unix_timestamp(), 1_700_000_000);
        assert_eq!(row.version, 1_700_000_000_123_456);
    }
}
