//! The lead: `schemas/lead.avsc`, topic `hunter.leads.v1` (compacted), key = lead id.

use serde::{Deserialize, Serialize};

use super::lenient::Timestamp;
use super::referral::Referral;
use super::states::{ChangeType, EmailProvider, EmailProviderSource, Priority};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lead {
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
    pub deal_value: Option<f64>,
    pub currency: Option<String>,
    pub created_at: Option<Timestamp>,
    pub updated_at: Timestamp,
    pub etag: Option<String>,
    /// The referral's `updatedDateTime` in microseconds: higher wins in ClickHouse.
    pub version: i64,
    pub processed_at: Timestamp,
    // Enrichment (`enrichment_version` 0 means none was applied).
    #[serde(default)]
    pub enrichment_version: i32,
    #[serde(default)]
    pub company_domain_source: Option<String>,
    #[serde(default = "unknown")]
    pub email_provider: String,
    #[serde(default = "no_domain")]
    pub email_provider_source: String,
    #[serde(default)]
    pub company_name_normalized: Option<String>,
    #[serde(default)]
    pub size_band: Option<String>,
    #[serde(default)]
    pub products: Vec<String>,
    #[serde(default)]
    pub solutions: Vec<String>,
    #[serde(default)]
    pub industries: Vec<String>,
    #[serde(default)]
    pub deal_value_usd: Option<f64>,
    #[serde(default)]
    pub usd_rate: Option<f64>,
    #[serde(default)]
    pub score: i32,
    #[serde(default = "low")]
    pub priority: String,
    #[serde(default = "created")]
    pub change_type: String,
    #[serde(default)]
    pub previous_status: Option<String>,
    /// When the source read this referral version from the API.
    #[serde(default)]
    pub fetched_at: Option<Timestamp>,
}

impl Default for Lead {
    /// An empty lead with the contract's defaults (for tests and tools; the processor builds
    /// leads with [`Lead::from_referral`]).
    fn default() -> Self {
        Lead {
            lead_id: String::new(),
            referral_id: String::new(),
            engagement_id: None,
            tenant: String::new(),
            name: None,
            status: None,
            substatus: None,
            direction: None,
            qualification: None,
            referral_type: None,
            company_name: None,
            company_domain: None,
            country: None,
            deal_value: None,
            currency: None,
            created_at: None,
            updated_at: Timestamp(0),
            etag: None,
            version: 0,
            processed_at: Timestamp(0),
            enrichment_version: 0,
            company_domain_source: None,
            email_provider: unknown(),
            email_provider_source: no_domain(),
            company_name_normalized: None,
            size_band: None,
            products: Vec::new(),
            solutions: Vec::new(),
            industries: Vec::new(),
            deal_value_usd: None,
            usd_rate: None,
            score: 0,
            priority: low(),
            change_type: created(),
            previous_status: None,
            fetched_at: None,
        }
    }
}

fn unknown() -> String {
    EmailProvider::Unknown.as_str().into()
}
fn no_domain() -> String {
    EmailProviderSource::NoDomain.as_str().into()
}
fn low() -> String {
    Priority::Low.as_str().into()
}
fn created() -> String {
    ChangeType::Created.as_str().into()
}

/// Why a referral cannot become a lead.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum LeadError {
    #[error("referral {0} has no updatedDateTime, so its version is unknown")]
    MissingUpdatedDateTime(String),
}

impl Lead {
    /// The lead for one referral version. Pure: the same referral version always gives the
    /// same lead (apart from `processed_at`), which is what makes replays harmless.
    pub fn from_referral(referral: &Referral, processed_at: Timestamp) -> Result<Self, LeadError> {
        let updated_at = referral
            .updated_date_time
            .ok_or_else(|| LeadError::MissingUpdatedDateTime(referral.id.clone()))?;
        let customer = referral.customer_profile.as_ref();
        let details = referral.details.as_ref();
        Ok(Lead {
            lead_id: referral.id.clone(),
            referral_id: referral.id.clone(),
            engagement_id: referral.engagement_id.clone(),
            tenant: referral.ingest.tenant.clone(),
            name: referral.name.clone(),
            status: referral.status.clone(),
            substatus: referral.substatus.clone(),
            direction: referral.direction.clone(),
            qualification: referral.qualification.clone(),
            referral_type: referral.referral_type.clone(),
            company_name: customer.and_then(|c| c.name.clone()),
            company_domain: None,
            country: customer
                .and_then(|c| c.address.as_ref())
                .and_then(|a| a.country.as_deref())
                .map(|country| country.trim().to_ascii_uppercase())
                .filter(|country| !country.is_empty()),
            deal_value: details.and_then(|d| d.deal_value),
            currency: details
                .and_then(|d| d.currency.as_deref())
                .map(|currency| currency.trim().to_ascii_uppercase()),
            created_at: referral.created_date_time,
            updated_at,
            etag: referral.e_tag.clone(),
            version: updated_at.micros(),
            processed_at,
            fetched_at: (referral.ingest.fetched_at.micros() > 0)
                .then_some(referral.ingest.fetched_at),
            // Not enriched yet: the processor fills these in.
            ..Lead::default()
        })
    }
}
