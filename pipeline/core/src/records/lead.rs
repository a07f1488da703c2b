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
    // Expiry and dates (lead 0004, [`Lead::from_referral`] derives them, docs/leads.md).
    /// When Partner Center archives the referral as `Expired` if nobody answers.
    #[serde(default)]
    pub expires_at: Option<Timestamp>,
    /// `expires_at` is `createdDateTime` + [`ESTIMATED_EXPIRY_DAYS`], not the referral's own.
    #[serde(default)]
    pub expires_at_estimated: bool,
    #[serde(default)]
    pub accepted_at: Option<Timestamp>,
    /// Expected close (`details.closingDateTime`).
    #[serde(default)]
    pub closing_at: Option<Timestamp>,
    #[serde(default)]
    pub closed_at: Option<Timestamp>,
    /// The partner's own team on the referral (top-level `team`): emails.
    #[serde(default)]
    pub owner_emails: Vec<String>,
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
            expires_at: None,
            expires_at_estimated: false,
            accepted_at: None,
            closing_at: None,
            closed_at: None,
            owner_emails: Vec::new(),
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

/// Days Partner Center gives an incoming referral before it archives an unanswered one as
/// `Expired`, for referrals that do not carry their own `expirationDateTime`.
pub const ESTIMATED_EXPIRY_DAYS: i64 = 14;

/// Where a lead's `expires_at` comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// The referral's `expirationDateTime`.
    Given(Timestamp),
    /// `createdDateTime` + [`ESTIMATED_EXPIRY_DAYS`]: an incoming `New` referral without one.
    Estimated(Timestamp),
}

/// The referral's expiry: its `expirationDateTime` whatever its status (Partner Center's own
/// word); else, for an incoming referral with status `New` (compared case-insensitively, as
/// only such a referral waits for an answer), `createdDateTime` + 14 days; else none (no
/// created date, an outgoing or an answered referral). Pure: same referral, same answer.
pub fn expiry(referral: &Referral) -> Option<Expiry> {
    if let Some(given) = referral.expiration_date_time {
        return Some(Expiry::Given(given));
    }
    let is = |value: &Option<String>, expected: &str| {
        value
            .as_deref()
            .is_some_and(|value| value.trim().eq_ignore_ascii_case(expected))
    };
    if !(is(&referral.direction, "Incoming") && is(&referral.status, "New")) {
        return None;
    }
    let created = referral.created_date_time?;
    let days = ESTIMATED_EXPIRY_DAYS * 86_400 * 1_000_000;
    Some(Expiry::Estimated(Timestamp(
        created.micros().saturating_add(days),
    )))
}

/// The emails of the referral's top-level `team` (the partner's own people on it): trimmed,
/// lower-cased, blank and repeated ones dropped, in the API's order.
pub fn owner_emails(referral: &Referral) -> Vec<String> {
    let mut emails: Vec<String> = Vec::new();
    for email in referral
        .team
        .iter()
        .filter_map(|member| member.email.as_deref())
    {
        let email = email.trim().to_lowercase();
        if !email.is_empty() && !emails.contains(&email) {
            emails.push(email);
        }
    }
    emails
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
        let (expires_at, expires_at_estimated) = match expiry(referral) {
            Some(Expiry::Given(at)) => (Some(at), false),
            Some(Expiry::Estimated(at)) => (Some(at), true),
            None => (None, false),
        };
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
            expires_at,
            expires_at_estimated,
            accepted_at: referral.accepted_date_time,
            closing_at: details.and_then(|d| d.closing_date_time),
            closed_at: referral.closed_date_time,
            owner_emails: owner_emails(referral),
            // Not enriched yet: the processor fills these in.
            ..Lead::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::records::Ingest;

    const DAY: i64 = 86_400 * 1_000_000;

    fn referral(value: serde_json::Value) -> Referral {
        let mut value = value;
        value["id"] = "r-1".into();
        value["updatedDateTime"] = "2024-03-10T00:00:00Z".into();
        Referral::from_api_json(&value.to_string(), Ingest::default()).unwrap()
    }

    fn lead(value: serde_json::Value) -> Lead {
        Lead::from_referral(&referral(value), Timestamp(1)).unwrap()
    }

    fn at(text: &str) -> Timestamp {
        let parsed =
            time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                .unwrap();
        Timestamp((parsed.unix_timestamp_nanos() / 1000) as i64)
    }

    #[test]
    fn a_given_expiration_date_is_the_expiry_whatever_the_status() {
        for (direction, status) in [
            ("Incoming", "New"),
            ("Incoming", "Active"),
            ("Outgoing", "New"),
        ] {
            let lead = lead(json!({
                "direction": direction, "status": status,
                "createdDateTime": "2024-03-01T00:00:00Z",
                "expirationDateTime": "2024-03-05T12:00:00Z",
            }));
            assert_eq!(
                lead.expires_at,
                Some(at("2024-03-05T12:00:00Z")),
                "{direction} {status}"
            );
            assert!(!lead.expires_at_estimated);
        }
    }

    #[test]
    fn an_incoming_new_referral_without_one_expires_14_days_after_it_was_created() {
        let created = "2024-03-01T09:30:00.5Z";
        for (direction, status) in [("Incoming", "New"), ("incoming", " new ")] {
            let lead = lead(json!({
                "direction": direction, "status": status, "createdDateTime": created,
                "expirationDateTime": null,
            }));
            assert_eq!(
                lead.expires_at,
                Some(Timestamp(at(created).micros() + 14 * DAY))
            );
            assert!(lead.expires_at_estimated, "{direction} {status}");
        }
        assert_eq!(lead(json!({"direction": "Incoming", "status": "New", "createdDateTime": "2024-03-01T00:00:00Z"})).expires_at, Some(at("2024-03-15T00:00:00Z")));
    }

    #[test]
    fn other_referrals_without_an_expiration_date_have_no_expiry() {
        let cases = [
            json!({"direction": "Incoming", "status": "Active", "createdDateTime": "2024-03-01T00:00:00Z"}),
            json!({"direction": "Incoming", "status": "Closed", "createdDateTime": "2024-03-01T00:00:00Z"}),
            json!({"direction": "Outgoing", "status": "New", "createdDateTime": "2024-03-01T00:00:00Z"}),
            json!({"status": "New", "createdDateTime": "2024-03-01T00:00:00Z"}),
            json!({"direction": "Incoming", "createdDateTime": "2024-03-01T00:00:00Z"}),
            // An incoming New referral without a created date: nothing to estimate from.
            json!({"direction": "Incoming", "status": "New"}),
        ];
        for case in cases {
            let lead = lead(case.clone());
            assert_eq!(lead.expires_at, None, "{case}");
            assert!(!lead.expires_at_estimated, "{case}");
        }
    }

    #[test]
    fn dates_and_owners_come_from_the_referral() {
        let lead = lead(json!({
            "direction": "Incoming", "status": "Closed",
            "acceptedDateTime": "2024-03-02T10:00:00Z",
            "closedDateTime": "2024-03-09T10:00:00Z",
            "details": {"closingDateTime": "2024-06-30T23:00:00Z"},
            "team": [
                {"email": " Sam@Partner.Example "}, {"email": "sam@partner.example"},
                {"email": ""}, {"firstName": "no email"}, {"email": "kim@partner.example"},
            ],
            "customerProfile": {"team": [{"email": "buyer@customer.example"}]},
        }));
        assert_eq!(lead.accepted_at, Some(at("2024-03-02T10:00:00Z")));
        assert_eq!(lead.closed_at, Some(at("2024-03-09T10:00:00Z")));
        assert_eq!(lead.closing_at, Some(at("2024-06-30T23:00:00Z")));
        assert_eq!(
            lead.owner_emails,
            ["sam@partner.example", "kim@partner.example"]
        );
        assert_eq!(lead.expires_at, None);

        let bare = self::lead(json!({}));
        assert_eq!(
            (
                bare.accepted_at,
                bare.closed_at,
                bare.closing_at,
                bare.owner_emails.len()
            ),
            (None, None, None, 0)
        );
    }
}
