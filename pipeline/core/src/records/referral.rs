//! The Partner Center Referral resource: `schemas/referral.avsc`, topic
//! `partner-center.referrals.v1`, key = referral id.
//!
//! One set of types reads the API's JSON (leniently, see [`super::lenient`]) and reads and
//! writes the Avro record. Field names keep the API's camelCase wire keys. Every field but `id`
//! is optional because the live API leaves any of them out; fields the schema does not know
//! travel in `rawJson`, the referral exactly as received.
//!
//! Input bounds: a referral's JSON is at most [`Referral::MAX_JSON_BYTES`] and nests at most
//! [`Referral::MAX_JSON_DEPTH`] levels; its id passes [`check_id`]. A referral whose record would
//! exceed the record budget is cut with [`Referral::cut_to_fit`] (see `crate::size`).

use serde::{Deserialize, Serialize};

use crate::size::{CUT_STEPS, cut_long_strings};

use super::lenient::{
    RawJson, Timestamp, customer_ids, list, opt_bool, opt_f64, opt_raw_json, opt_string,
    opt_timestamp,
};

/// Why a referral from the API cannot be published as a record.
#[derive(Debug, thiserror::Error)]
pub enum ReferralParseError {
    #[error("referral is not valid json for the referral model: {0}")]
    Json(#[from] serde_json::Error),
    #[error("referral has no id")]
    MissingId,
    #[error(
        "referral id {0}: an id is 1 to {max} ASCII letters, digits, '-', '_' or '.' with at least one letter or digit",
        max = MAX_ID_CHARS
    )]
    BadId(String),
    #[error("referral is {0} bytes of JSON; more than {max} is refused", max = Referral::MAX_JSON_BYTES)]
    TooLarge(usize),
    #[error("referral JSON nests deeper than {max} levels", max = Referral::MAX_JSON_DEPTH)]
    TooDeep,
}

/// The longest referral id accepted, in characters. Partner Center ids are GUIDs (36).
pub const MAX_ID_CHARS: usize = 128;

/// Checks a referral id: 1 to [`MAX_ID_CHARS`] ASCII letters, digits, `-`, `_` or `.`, at least
/// one of them a letter or digit (so never `.` or `..`). GUIDs, and the ids of every Microsoft
/// API Hunter reads, pass; the id keys Kafka records, ClickHouse rows and API paths, so anything
/// else (spaces, control characters, slashes, kilobytes of text) is refused. The error says
/// what is wrong without quoting the id (it may be huge or unprintable).
pub fn check_id(id: &str) -> Result<(), String> {
    let chars = id.chars().count();
    if chars > MAX_ID_CHARS {
        return Err(format!("is {chars} characters long"));
    }
    if let Some((at, bad)) = id
        .chars()
        .enumerate()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "has {bad:?} (U+{:04X}) at character {}",
            u32::from(bad),
            at + 1
        ));
    }
    if !id.chars().any(|c| c.is_ascii_alphanumeric()) {
        return Err("has no letter or digit".to_owned());
    }
    Ok(())
}

/// Whether `raw` nests arrays and objects deeper than `max` (strings and escapes skipped).
fn nests_deeper_than(raw: &str, max: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for byte in raw.bytes() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Referral {
    pub id: String,
    #[serde(deserialize_with = "opt_string")]
    pub engagement_id: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub name: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub organization_id: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub organization_name: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub external_reference_id: Option<String>,
    #[serde(deserialize_with = "opt_timestamp")]
    pub created_date_time: Option<Timestamp>,
    #[serde(deserialize_with = "opt_timestamp")]
    pub updated_date_time: Option<Timestamp>,
    #[serde(deserialize_with = "opt_timestamp")]
    pub expiration_date_time: Option<Timestamp>,
    #[serde(deserialize_with = "opt_timestamp")]
    pub accepted_date_time: Option<Timestamp>,
    #[serde(deserialize_with = "opt_timestamp")]
    pub closed_date_time: Option<Timestamp>,
    #[serde(deserialize_with = "opt_string")]
    pub status: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub substatus: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub status_reason: Option<String>,
    #[serde(rename = "type", deserialize_with = "opt_string")]
    pub referral_type: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub qualification: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub direction: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub referral_source: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub call_to_action: Option<String>,
    pub customer_profile: Option<CustomerProfile>,
    pub consent: Option<Consent>,
    pub details: Option<ReferralDetails>,
    #[serde(deserialize_with = "list")]
    pub team: Vec<Member>,
    pub invite_context: Option<InviteContext>,
    #[serde(deserialize_with = "list")]
    pub target: Vec<Target>,
    #[serde(deserialize_with = "opt_string")]
    pub e_tag: Option<String>,
    pub links: Option<Links>,
    #[serde(deserialize_with = "opt_string")]
    pub sales_stage: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub campaign_id: Option<String>,
    #[serde(deserialize_with = "opt_bool")]
    pub favorite: Option<bool>,
    #[serde(deserialize_with = "opt_string")]
    pub mpn_id: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub quality: Option<String>,
    #[serde(deserialize_with = "opt_bool")]
    pub is_spam: Option<bool>,
    #[serde(deserialize_with = "opt_string")]
    pub deal_sensitivity: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub referral_program: Option<String>,
    #[serde(deserialize_with = "list")]
    pub tags: Vec<RawJson>,
    #[serde(deserialize_with = "opt_string")]
    pub created_via: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub last_modified_via: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub last_run_id: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub registration_status: Option<String>,
    #[serde(deserialize_with = "list")]
    pub registrations: Vec<Registration>,
    pub tracking_info: Option<TrackingInfo>,
    /// The referral exactly as the API returned it (with the strings `truncation` names cut,
    /// when it is set).
    pub raw_json: String,
    /// How Hunter received it; not part of the API resource.
    pub ingest: Ingest,
    /// Set when the referral was over the record budget and published with long strings cut;
    /// `None` (the default, and on every record written before it existed) when whole.
    pub truncation: Option<Truncation>,
}

/// The part of a [`Referral`] that names one version of it and carries it whole: what the
/// `referrals` table keeps. Read with `Codec::<Referral>::decode_as`, it skips every typed field
/// (a referral's Avro is mostly its raw JSON and dozens of typed strings), so a stage that
/// stores versions does not build the whole record.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ReferralVersion {
    pub id: String,
    #[serde(deserialize_with = "opt_timestamp")]
    pub updated_date_time: Option<Timestamp>,
    #[serde(deserialize_with = "opt_string")]
    pub e_tag: Option<String>,
    pub raw_json: String,
    pub ingest: Ingest,
}

impl From<Referral> for ReferralVersion {
    fn from(referral: Referral) -> Self {
        ReferralVersion {
            id: referral.id,
            updated_date_time: referral.updated_date_time,
            e_tag: referral.e_tag,
            raw_json: referral.raw_json,
            ingest: referral.ingest,
        }
    }
}

/// How a referral over the record budget was cut (`truncation` in `schemas/referral.avsc`).
/// The cut strings end with ` [... truncated by Hunter: K of N bytes kept]` in `rawJson` and in
/// the typed fields alike; the whole referral stays in Partner Center.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Truncation {
    /// Bytes of the referral's JSON as the API returned it.
    pub original_json_bytes: i64,
    /// Bytes of the record the whole referral made (over the budget).
    pub original_record_bytes: i64,
    /// What each cut string kept at most, in bytes of JSON text.
    pub kept_bytes: i64,
    /// JSON Pointers (RFC 6901) into the original JSON of the strings that were cut.
    pub fields: Vec<String>,
}

impl Referral {
    /// A real referral is a few kB; its raw JSON travels in every record.
    pub const MAX_JSON_BYTES: usize = 1024 * 1024;
    /// A real referral nests 4-5 levels.
    pub const MAX_JSON_DEPTH: usize = 32;

    /// Reads one referral as the API returned it and stamps where it came from.
    ///
    /// Lenient about shapes; strict only about the id, without which nothing downstream can
    /// key the record.
    pub fn from_api_json(raw: &str, ingest: Ingest) -> Result<Self, ReferralParseError> {
        if raw.len() > Self::MAX_JSON_BYTES {
            return Err(ReferralParseError::TooLarge(raw.len()));
        }
        // serde_json skips unknown fields without a depth limit, and the raw JSON travels on.
        if nests_deeper_than(raw, Self::MAX_JSON_DEPTH) {
            return Err(ReferralParseError::TooDeep);
        }
        let mut referral: Referral = serde_json::from_str(raw)?;
        if referral.id.trim().is_empty() {
            return Err(ReferralParseError::MissingId);
        }
        check_id(&referral.id).map_err(ReferralParseError::BadId)?;
        referral.raw_json = raw.to_owned();
        referral.ingest = ingest;
        referral.truncation = None;
        Ok(referral)
    }

    /// This referral cut to fit `budget` bytes as `size` measures its record (`None` from
    /// `size`: not encodable): the string values of its JSON longer than a step of
    /// [`CUT_STEPS`] are cut and marked, shallow steps first, and the typed fields are read
    /// again from the cut JSON, so both say the same; `truncation` records the cut.
    /// `original_record_bytes` is the size of the whole referral's record, for the record.
    ///
    /// `None` when even the deepest step does not fit (a referral of many small values, which
    /// is dead-lettered by reference instead).
    pub fn cut_to_fit(
        &self,
        budget: usize,
        original_record_bytes: usize,
        size: impl Fn(&Referral) -> Option<usize>,
    ) -> Option<Referral> {
        for keep in CUT_STEPS {
            let cut = cut_long_strings(&self.raw_json, keep);
            if cut.fields.is_empty() {
                continue;
            }
            let mut referral = Referral::from_api_json(&cut.json, self.ingest.clone()).ok()?;
            referral.truncation = Some(Truncation {
                original_json_bytes: i64::try_from(self.raw_json.len()).unwrap_or(i64::MAX),
                original_record_bytes: i64::try_from(original_record_bytes).unwrap_or(i64::MAX),
                kept_bytes: i64::try_from(keep).unwrap_or(i64::MAX),
                fields: cut.fields,
            });
            if size(&referral).is_some_and(|bytes| bytes <= budget) {
                return Some(referral);
            }
        }
        None
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Ingest {
    /// Hunter's name for the partner account this referral was read from.
    pub tenant: String,
    /// When the source read it from the API.
    pub fetched_at: Timestamp,
    /// The sync run that published it.
    pub sync_run_id: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct CustomerProfile {
    #[serde(deserialize_with = "opt_string")]
    pub name: Option<String>,
    pub address: Option<Address>,
    #[serde(deserialize_with = "opt_string")]
    pub size: Option<String>,
    #[serde(deserialize_with = "list")]
    pub team: Vec<Member>,
    #[serde(deserialize_with = "customer_ids")]
    pub ids: Vec<CustomerProfileId>,
    #[serde(deserialize_with = "opt_bool")]
    pub is_matching_complete: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Address {
    #[serde(deserialize_with = "opt_string")]
    pub address_line1: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub address_line2: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub city: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub state: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub postal_code: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub country: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub region: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Member {
    #[serde(deserialize_with = "opt_string")]
    pub first_name: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub last_name: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub email: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub phone_number: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub title: Option<String>,
    pub contact_preference: Option<ContactPreference>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ContactPreference {
    #[serde(deserialize_with = "opt_string")]
    pub locale: Option<String>,
    #[serde(deserialize_with = "opt_bool")]
    pub disable_notifications: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct CustomerProfileId {
    #[serde(deserialize_with = "opt_string")]
    pub profile_type: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Consent {
    #[serde(deserialize_with = "opt_bool")]
    pub consent_to_contact: Option<bool>,
    /// The doubled "To" is the real wire key.
    #[serde(deserialize_with = "opt_bool")]
    pub consent_to_to_share_info_with_others: Option<bool>,
    #[serde(deserialize_with = "opt_bool")]
    pub consent_to_share_referral_with_microsoft_sellers: Option<bool>,
    #[serde(deserialize_with = "opt_bool")]
    pub consent_to_microsoft_to_contact_specific_partners: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ReferralDetails {
    #[serde(deserialize_with = "opt_string")]
    pub notes: Option<String>,
    #[serde(deserialize_with = "opt_f64")]
    pub deal_value: Option<f64>,
    #[serde(deserialize_with = "opt_string")]
    pub currency: Option<String>,
    #[serde(deserialize_with = "opt_timestamp")]
    pub closing_date_time: Option<Timestamp>,
    #[serde(deserialize_with = "opt_bool")]
    pub customer_requested_contact: Option<bool>,
    #[serde(deserialize_with = "opt_string")]
    pub customer_action: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub incentive_level: Option<String>,
    pub requirements: Option<Requirements>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Requirements {
    #[serde(deserialize_with = "list")]
    pub industries: Vec<Tag>,
    #[serde(deserialize_with = "list")]
    pub products: Vec<Tag>,
    #[serde(deserialize_with = "list")]
    pub services: Vec<Tag>,
    #[serde(deserialize_with = "list")]
    pub solutions: Vec<SolutionTag>,
    /// `offers` from the API (shape undocumented), one JSON text per element.
    #[serde(rename = "offersJson", alias = "offers", deserialize_with = "list")]
    pub offers_json: Vec<RawJson>,
    /// `salesPlays` from the API (shape undocumented), one JSON text per element.
    #[serde(
        rename = "salesPlaysJson",
        alias = "salesPlays",
        deserialize_with = "list"
    )]
    pub sales_plays_json: Vec<RawJson>,
    /// `additionalRequirements` from the API as JSON text.
    #[serde(
        rename = "additionalRequirementsJson",
        alias = "additionalRequirements",
        deserialize_with = "opt_raw_json"
    )]
    pub additional_requirements_json: Option<RawJson>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Tag {
    #[serde(deserialize_with = "opt_string")]
    pub id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct SolutionTag {
    #[serde(deserialize_with = "opt_string")]
    pub id: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub name: Option<String>,
    #[serde(rename = "type", deserialize_with = "opt_string")]
    pub solution_tag_type: Option<String>,
    #[serde(deserialize_with = "opt_f64")]
    pub price: Option<f64>,
    #[serde(deserialize_with = "opt_f64")]
    pub quantity: Option<f64>,
    #[serde(deserialize_with = "opt_string")]
    pub currency: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub publisher_name: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub solution_type: Option<String>,
    #[serde(deserialize_with = "opt_timestamp")]
    pub closing_date_time: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct InviteContext {
    #[serde(deserialize_with = "opt_string")]
    pub notes: Option<String>,
    pub invited_by: Option<Organization>,
    #[serde(deserialize_with = "opt_string")]
    pub assistance_request_code: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub invited_mpn_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Organization {
    #[serde(deserialize_with = "opt_string")]
    pub organization_id: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub organization_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Target {
    #[serde(rename = "type", deserialize_with = "opt_string")]
    pub target_type: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Links {
    pub related_referrals: Option<Link>,
    #[serde(rename = "self")]
    pub self_link: Option<Link>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Link {
    #[serde(deserialize_with = "opt_string")]
    pub uri: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub method: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Registration {
    #[serde(deserialize_with = "opt_string")]
    pub id: Option<String>,
    #[serde(deserialize_with = "opt_timestamp")]
    pub registration_date_time: Option<Timestamp>,
    #[serde(deserialize_with = "opt_string")]
    pub status: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub status_reason: Option<String>,
    pub contract: Option<Contract>,
    #[serde(
        rename = "solutionDetailsJson",
        alias = "solutionDetails",
        deserialize_with = "list"
    )]
    pub solution_details_json: Vec<RawJson>,
    pub status_history: Option<RegistrationStatusHistory>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Contract {
    #[serde(deserialize_with = "opt_f64")]
    pub value: Option<f64>,
    #[serde(deserialize_with = "opt_string")]
    pub currency: Option<String>,
    #[serde(deserialize_with = "opt_timestamp")]
    pub start_date_time: Option<Timestamp>,
    #[serde(deserialize_with = "opt_timestamp")]
    pub end_date_time: Option<Timestamp>,
    #[serde(deserialize_with = "opt_timestamp")]
    pub sign_date_time: Option<Timestamp>,
    #[serde(deserialize_with = "opt_string")]
    pub term: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct RegistrationStatusHistory {
    #[serde(deserialize_with = "opt_timestamp")]
    pub review_pending_date_time: Option<Timestamp>,
    #[serde(deserialize_with = "opt_timestamp")]
    pub action_required_date_time: Option<Timestamp>,
    #[serde(deserialize_with = "opt_timestamp")]
    pub passed_date_time: Option<Timestamp>,
    #[serde(deserialize_with = "opt_timestamp")]
    pub failed_date_time: Option<Timestamp>,
    #[serde(deserialize_with = "opt_timestamp")]
    pub approved_date_time: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct TrackingInfo {
    #[serde(rename = "microsoftMsxId", deserialize_with = "opt_string")]
    pub microsoft_msx_id: Option<String>,
    #[serde(
        rename = "microsoftUSFedOpportunityId",
        deserialize_with = "opt_string"
    )]
    pub microsoft_us_fed_opportunity_id: Option<String>,
    #[serde(rename = "microsoftUSFedLeadId", deserialize_with = "opt_string")]
    pub microsoft_us_fed_lead_id: Option<String>,
    #[serde(rename = "migratedPSCDealId", deserialize_with = "opt_string")]
    pub migrated_psc_deal_id: Option<String>,
    #[serde(rename = "migratedPSCPartnerDealId", deserialize_with = "opt_string")]
    pub migrated_psc_partner_deal_id: Option<String>,
}
