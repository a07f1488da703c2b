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
    // Enrichment (`0002_lead_enrichment.sql`).
    pub enrichment_version: u16,
    pub company_domain_source: Option<String>,
    pub email_provider: String,
    pub email_provider_source: String,
    pub company_name_normalized: Option<String>,
    pub size_band: Option<String>,
    pub products: Vec<String>,
    pub solutions: Vec<String>,
    pub industries: Vec<String>,
    /// Decimal(18, 2) as hundredths.
    pub deal_value_usd: Option<i64>,
    pub usd_rate: Option<f64>,
    pub score: u8,
    pub priority: String,
    pub change_type: String,
    pub previous_status: Option<String>,
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
    #[error("deal_value_usd {0} does not fit Decimal(18, 2)")]
    UsdValueOutOfRange(f64),
    #[error("score {0} is outside 0..=100")]
    ScoreOutOfRange(i32),
}

/// Hundredths for Decimal(18, 2), which holds 18 digits in all.
fn hundredths(value: f64) -> Option<i64> {
    let scaled = (value * 100.0).round();
    (scaled.is_finite() && scaled.abs() < 1e18).then_some(scaled as i64)
}

impl LeadRow {
    pub fn from_lead(lead: &Lead) -> Result<Self, RowError> {
        let deal_value = match lead.deal_value {
            None => None,
            Some(value) => Some(hundredths(value).ok_or(RowError::DealValueOutOfRange(value))?),
        };
        let deal_value_usd = match lead.deal_value_usd {
            None => None,
            Some(value) => Some(hundredths(value).ok_or(RowError::UsdValueOutOfRange(value))?),
        };
        let score = u8::try_from(lead.score)
            .ok()
            .filter(|s| *s <= 100)
            .ok_or(RowError::ScoreOutOfRange(lead.score))?;
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
            enrichment_version: u16::try_from(lead.enrichment_version.max(0)).unwrap_or(u16::MAX),
            company_domain_source: lead.company_domain_source.clone(),
            email_provider: lead.email_provider.clone(),
            email_provider_source: lead.email_provider_source.clone(),
            company_name_normalized: lead.company_name_normalized.clone(),
            size_band: lead.size_band.clone(),
            products: lead.products.clone(),
            solutions: lead.solutions.clone(),
            industries: lead.industries.clone(),
            deal_value_usd,
            usd_rate: lead.usd_rate,
            score,
            priority: lead.priority.clone(),
            change_type: lead.change_type.clone(),
            previous_status: lead.previous_status.clone(),
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
    fn enriched_values_are_checked() {
        let mut bad = lead(None);
        bad.score = 101;
        assert_eq!(
            LeadRow::from_lead(&bad),
            Err(RowError::ScoreOutOfRange(101))
        );
        let mut usd = lead(Some(10.0));
        usd.deal_value_usd = Some(12.345);
        assert_eq!(LeadRow::from_lead(&usd).unwrap().deal_value_usd, Some(1235));
    }

    #[test]
    fn timestamps_become_whole_seconds() {
        let row = LeadRow::from_lead(&lead(None)).unwrap();
        assert_eq!(row.updated_at.unix_timestamp(), 1_700_000_000);
        assert_eq!(row.version, 1_700_000_000_123_456);
    }
}
