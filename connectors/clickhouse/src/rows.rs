//! Row types: field names equal column names, and inserts name their columns.

use clickhouse::Row;
use hunter_core::records::{Lead, Referral, ReferralVersion, RunStatus, SyncRun, Timestamp};
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
    // Expiry and dates (`0012_lead_expiry.sql`).
    #[serde(with = "clickhouse::serde::time::datetime::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// 1 when `expires_at` is the createdDateTime + 14 days estimate.
    pub expires_at_estimated: u8,
    #[serde(with = "clickhouse::serde::time::datetime::option")]
    pub accepted_at: Option<OffsetDateTime>,
    #[serde(with = "clickhouse::serde::time::datetime::option")]
    pub closing_at: Option<OffsetDateTime>,
    #[serde(with = "clickhouse::serde::time::datetime::option")]
    pub closed_at: Option<OffsetDateTime>,
    pub owner_emails: Vec<String>,
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
            expires_at: lead.expires_at.map(datetime),
            expires_at_estimated: u8::from(lead.expires_at_estimated),
            accepted_at: lead.accepted_at.map(datetime),
            closing_at: lead.closing_at.map(datetime),
            closed_at: lead.closed_at.map(datetime),
            owner_emails: lead.owner_emails.clone(),
        })
    }
}

/// A row of `lead_history` (`0003_lead_history.sql`).
#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
pub struct LeadHistoryRow {
    pub lead_id: String,
    pub version: u64,
    pub tenant: String,
    pub status: Option<String>,
    pub substatus: Option<String>,
    pub previous_status: Option<String>,
    pub change_type: String,
    pub deal_value_usd: Option<i64>,
    pub score: u8,
    #[serde(with = "clickhouse::serde::time::datetime")]
    pub updated_at: OffsetDateTime,
    #[serde(with = "clickhouse::serde::time::datetime")]
    pub processed_at: OffsetDateTime,
    // Expiry and dates (`0012_lead_expiry.sql`): what this version said.
    #[serde(with = "clickhouse::serde::time::datetime::option")]
    pub expires_at: Option<OffsetDateTime>,
    pub expires_at_estimated: u8,
    #[serde(with = "clickhouse::serde::time::datetime::option")]
    pub accepted_at: Option<OffsetDateTime>,
    #[serde(with = "clickhouse::serde::time::datetime::option")]
    pub closing_at: Option<OffsetDateTime>,
    #[serde(with = "clickhouse::serde::time::datetime::option")]
    pub closed_at: Option<OffsetDateTime>,
    pub owner_emails: Vec<String>,
}

impl LeadHistoryRow {
    pub fn from_lead_row(row: &LeadRow) -> Self {
        LeadHistoryRow {
            lead_id: row.lead_id.clone(),
            version: row.version,
            tenant: row.tenant.clone(),
            status: row.status.clone(),
            substatus: row.substatus.clone(),
            previous_status: row.previous_status.clone(),
            change_type: row.change_type.clone(),
            deal_value_usd: row.deal_value_usd,
            score: row.score,
            updated_at: row.updated_at,
            processed_at: row.processed_at,
            expires_at: row.expires_at,
            expires_at_estimated: row.expires_at_estimated,
            accepted_at: row.accepted_at,
            closing_at: row.closing_at,
            closed_at: row.closed_at,
            owner_emails: row.owner_emails.clone(),
        }
    }
}

/// A row of `sync_runs` (`0004_sync_runs.sql`).
#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
pub struct SyncRunRow {
    pub run_id: String,
    pub tenant: String,
    pub trigger: String,
    pub status: String,
    #[serde(with = "clickhouse::serde::time::datetime")]
    pub started_at: OffsetDateTime,
    #[serde(with = "clickhouse::serde::time::datetime::option")]
    pub finished_at: Option<OffsetDateTime>,
    pub pages: u64,
    pub fetched: u64,
    pub published: u64,
    pub skipped: u64,
    pub dead_lettered: u64,
    pub error_class: Option<String>,
    pub error_message: Option<String>,
    pub coalesced_into: Option<String>,
    /// The run's latest record wins: its end, else when it was written (a backfill's progress
    /// records), else its start, in microseconds.
    pub row_version: u64,
    /// Referrals the run expects to read in all (`0011_sync_run_progress.sql`).
    pub estimate: Option<u64>,
    /// A windowed backfill's lower bound.
    #[serde(with = "clickhouse::serde::time::datetime::option")]
    pub since: Option<OffsetDateTime>,
}

impl SyncRunRow {
    pub fn from_run(run: &SyncRun) -> Self {
        let count = |n: i64| u64::try_from(n).unwrap_or(0);
        SyncRunRow {
            run_id: run.run_id.clone(),
            tenant: run.tenant.clone(),
            trigger: run.trigger.clone(),
            status: run.status.clone(),
            started_at: datetime(run.started_at),
            finished_at: run.finished_at.map(datetime),
            pages: count(run.pages),
            fetched: count(run.fetched),
            published: count(run.published),
            skipped: count(run.skipped),
            dead_lettered: count(run.dead_lettered),
            error_class: run.error_class.clone(),
            error_message: run.error_message.clone(),
            coalesced_into: run.coalesced_into.clone(),
            row_version: count(
                run.finished_at
                    .or(run.updated_at)
                    .unwrap_or(run.started_at)
                    .micros(),
            ),
            estimate: run.estimate.map(count),
            since: run.since.map(datetime),
        }
    }

    /// The typed status; `None` for one this build does not know (a newer source's).
    pub fn run_status(&self) -> Option<RunStatus> {
        RunStatus::parse(&self.status)
    }
}

/// A row of `referral_actions` (`0010_referral_actions.sql`): one step of a write-back action.
#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
pub struct ReferralActionRow {
    pub action_id: String,
    pub referral_id: String,
    pub tenant: String,
    pub action: String,
    pub state: String,
    pub message: Option<String>,
    pub request_id: Option<String>,
    pub from_status: Option<String>,
    pub to_status: Option<String>,
    pub current_etag: Option<String>,
    pub current_version: Option<String>,
    pub actor_name: String,
    pub actor_role: String,
    #[serde(with = "clickhouse::serde::time::datetime")]
    pub requested_at: OffsetDateTime,
    #[serde(with = "clickhouse::serde::time::datetime")]
    pub at: OffsetDateTime,
    /// `at` in microseconds: the newest step is the action's state.
    pub at_micros: u64,
}

impl ReferralActionRow {
    pub fn from_result(result: &hunter_core::records::ReferralActionResult) -> Self {
        Self {
            action_id: result.action_id.clone(),
            referral_id: result.referral_id.clone(),
            tenant: result.tenant.clone(),
            action: result.action.clone(),
            state: result.state.clone(),
            message: result.message.clone(),
            request_id: result.request_id.clone(),
            from_status: result.from_status.clone(),
            to_status: result.to_status.clone(),
            current_etag: result.current_etag.clone(),
            current_version: result.current_version.clone(),
            actor_name: result.actor_name.clone(),
            actor_role: result.actor_role.clone(),
            requested_at: datetime(result.requested_at),
            at: datetime(result.at),
            at_micros: u64::try_from(result.at.micros()).unwrap_or(0),
        }
    }
}

/// A row of `referrals` (`0007_referrals.sql`): the referral as received.
#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
pub struct ReferralRow {
    pub referral_id: String,
    pub tenant: String,
    #[serde(with = "clickhouse::serde::time::datetime")]
    pub updated_at: OffsetDateTime,
    /// `updatedDateTime` in microseconds: the newest version wins.
    pub version: u64,
    pub etag: Option<String>,
    pub raw_json: String,
    #[serde(with = "clickhouse::serde::time::datetime")]
    pub fetched_at: OffsetDateTime,
}

impl ReferralRow {
    pub fn from_referral(referral: &Referral) -> Self {
        let updated = referral.updated_date_time.unwrap_or_default();
        ReferralRow {
            referral_id: referral.id.clone(),
            tenant: referral.ingest.tenant.clone(),
            updated_at: datetime(updated),
            version: u64::try_from(updated.micros()).unwrap_or(0),
            etag: referral.e_tag.clone(),
            raw_json: referral.raw_json.clone(),
            fetched_at: datetime(referral.ingest.fetched_at),
        }
    }

    /// [`ReferralRow::from_referral`] taking the referral, so its raw JSON (kilobytes) and ids
    /// move into the row instead of being copied (the sink drops the referral right after).
    pub fn from_owned_referral(referral: Referral) -> Self {
        Self::from_version(ReferralVersion::from(referral))
    }

    /// The row of one referral version as the sink reads it (`Codec::decode_as`: only the
    /// fields the table keeps); its raw JSON and ids move into the row.
    pub fn from_version(referral: ReferralVersion) -> Self {
        let updated = referral.updated_date_time.unwrap_or_default();
        let fetched_at = datetime(referral.ingest.fetched_at);
        ReferralRow {
            referral_id: referral.id,
            tenant: referral.ingest.tenant,
            updated_at: datetime(updated),
            version: u64::try_from(updated.micros()).unwrap_or(0),
            etag: referral.e_tag,
            raw_json: referral.raw_json,
            fetched_at,
        }
    }
}

/// A row of `dlq` (`0005_dlq.sql`).
#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
pub struct DlqRow {
    pub dlq_partition: i32,
    pub dlq_offset: i64,
    pub stage: String,
    pub error_class: String,
    pub error: String,
    pub original_topic: String,
    pub original_partition: Option<i32>,
    pub original_offset: Option<i64>,
    /// The dead record as text when it is UTF-8, else as lowercase hex.
    pub payload: String,
    /// Times the record had been replayed when it failed (`0009_dlq_replays.sql`).
    pub replay_count: u32,
    /// The dead letter it was replayed from (`PARTITION:OFFSET`), empty for a first failure.
    pub replay_of: String,
}

impl DlqRow {
    /// From a dead letter's position, headers (`hunter.*`) and payload.
    pub fn new(
        partition: i32,
        offset: i64,
        header: impl Fn(&str) -> Option<String>,
        payload: &[u8],
    ) -> Self {
        DlqRow {
            dlq_partition: partition,
            dlq_offset: offset,
            stage: header("hunter.stage").unwrap_or_default(),
            error_class: header("hunter.error.class").unwrap_or_default(),
            error: header("hunter.error").unwrap_or_default(),
            original_topic: header("hunter.original.topic").unwrap_or_default(),
            original_partition: header("hunter.original.partition").and_then(|p| p.parse().ok()),
            original_offset: header("hunter.original.offset").and_then(|o| o.parse().ok()),
            payload: match std::str::from_utf8(payload) {
                Ok(text) => text.to_owned(),
                Err(_) => payload.iter().map(|b| format!("{b:02x}")).collect(),
            },
            replay_count: header(hunter_core::kafka::REPLAY_COUNT_HEADER)
                .and_then(|count| count.trim().parse().ok())
                .unwrap_or(0),
            replay_of: header(hunter_core::kafka::REPLAY_OF_HEADER).unwrap_or_default(),
        }
    }
}

/// A row of `dlq_replays` (`0009_dlq_replays.sql`): a dead letter re-published by `hunter dlq
/// replay`, as the sink read it back from the topic it went to.
#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
pub struct DlqReplayRow {
    pub dlq_partition: i32,
    pub dlq_offset: i64,
    pub replay_count: u32,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// When the record was re-published (the broker timestamp), unix seconds.
    pub replayed_at: u32,
}

impl DlqReplayRow {
    /// The replay a consumed record is, from its `hunter-replay-of` (`PARTITION:OFFSET`) and
    /// `hunter-replay-count` headers; `None` for a record that was not replayed (or whose
    /// header does not parse: it is an ordinary record then).
    pub fn from_headers(
        topic: &str,
        partition: i32,
        offset: i64,
        timestamp_millis: Option<i64>,
        header: impl Fn(&str) -> Option<String>,
    ) -> Option<Self> {
        let of = header(hunter_core::kafka::REPLAY_OF_HEADER)?;
        let (dlq_partition, dlq_offset) = of.trim().split_once(':')?;
        Some(DlqReplayRow {
            dlq_partition: dlq_partition.parse().ok()?,
            dlq_offset: dlq_offset.parse().ok()?,
            replay_count: header(hunter_core::kafka::REPLAY_COUNT_HEADER)
                .and_then(|count| count.trim().parse().ok())
                .unwrap_or(0),
            topic: topic.to_owned(),
            partition,
            offset,
            replayed_at: timestamp_millis
                .map_or(0, |millis| (millis / 1000).clamp(0, u32::MAX as i64) as u32),
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
    fn a_referral_row_is_the_same_whether_the_referral_is_borrowed_or_moved() {
        let full = include_str!("../../../pipeline/core/src/records/testdata/full_referral.json");
        let ingest = hunter_core::records::Ingest {
            tenant: "contoso".into(),
            fetched_at: Timestamp(1_700_000_002_000_000),
            sync_run_id: "run".into(),
        };
        let referral = Referral::from_api_json(full, ingest).unwrap();
        let borrowed = ReferralRow::from_referral(&referral);
        assert_eq!(ReferralRow::from_owned_referral(referral), borrowed);
        let bare = Referral::from_api_json(r#"{"id":"r-1"}"#, Default::default()).unwrap();
        assert_eq!(
            ReferralRow::from_owned_referral(bare.clone()),
            ReferralRow::from_referral(&bare)
        );
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
    fn expiry_and_dates_go_to_both_tables() {
        let mut expiring = lead(None);
        expiring.expires_at = Some(Timestamp(1_700_086_400_500_000));
        expiring.expires_at_estimated = true;
        expiring.accepted_at = Some(Timestamp(1_700_000_100_000_000));
        expiring.closed_at = Some(Timestamp(-5));
        expiring.owner_emails = vec!["sam@partner.example".into()];
        let row = LeadRow::from_lead(&expiring).unwrap();
        assert_eq!(
            row.expires_at.map(OffsetDateTime::unix_timestamp),
            Some(1_700_086_400)
        );
        assert_eq!(row.expires_at_estimated, 1);
        assert_eq!(
            row.accepted_at.map(OffsetDateTime::unix_timestamp),
            Some(1_700_000_100)
        );
        assert_eq!(row.closing_at, None);
        // Before 1970: clamped like every DateTime, never wrapped.
        assert_eq!(row.closed_at, Some(OffsetDateTime::UNIX_EPOCH));
        let history = LeadHistoryRow::from_lead_row(&row);
        assert_eq!(
            (
                history.expires_at,
                history.expires_at_estimated,
                history.owner_emails
            ),
            (row.expires_at, 1, row.owner_emails.clone())
        );
        assert_eq!(
            LeadRow::from_lead(&lead(None))
                .unwrap()
                .expires_at_estimated,
            0
        );
    }

    #[test]
    fn a_run_row_prefers_its_end_and_a_dead_letter_keeps_its_origin() {
        let run = SyncRun {
            run_id: "r".into(),
            tenant: "t".into(),
            trigger: "manual".into(),
            status: "succeeded".into(),
            started_at: Timestamp(1_000_000),
            finished_at: Some(Timestamp(5_000_000)),
            pages: 1,
            fetched: 2,
            published: 2,
            skipped: 0,
            dead_lettered: -1,
            error_class: None,
            error_message: None,
            coalesced_into: None,
            updated_at: Some(Timestamp(3_000_000)),
            estimate: None,
            since: None,
        };
        let row = SyncRunRow::from_run(&run);
        assert_eq!(
            row.row_version, 5_000_000,
            "the final record outranks the start record"
        );
        assert_eq!(row.dead_lettered, 0, "negative counts are not carried over");
        let headers = [
            ("hunter.stage", "processor"),
            ("hunter.original.offset", "42"),
        ];
        let header = |key: &str| {
            headers
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.to_string())
        };
        let dead = DlqRow::new(0, 7, header, &[0xff, 0x00]);
        assert_eq!(
            (
                dead.stage.as_str(),
                dead.original_offset,
                dead.payload.as_str()
            ),
            ("processor", Some(42), "ff00")
        );
    }

    #[test]
    fn timestamps_become_whole_seconds() {
        let row = LeadRow::from_lead(&lead(None)).unwrap();
        assert_eq!(row.updated_at.unix_timestamp(), 1_700_000_000);
        assert_eq!(row.version, 1_700_000_000_123_456);
    }
}
