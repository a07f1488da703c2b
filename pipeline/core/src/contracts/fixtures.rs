//! Fixture records of every released contract version: `schemas/fixtures/<contract>/<NNNN>.bin`
//! (Kafka message values as Hunter wrote them with that version) and `<NNNN>.json` (what each
//! record holds, in that version's field names).
//!
//! `.bin` format: each record as a 4-byte big-endian length followed by the message value
//! (single-object encoding: `C3 01`, the fingerprint Hunter wrote then, the Avro body).
//!
//! The fixtures of the versions released before the spec fingerprints were written by the code
//! on `main` then (commit 2a1d7e6 of this history): main's codec wrote apache-avro 0.22's
//! single-object header (the generator then asserted byte equality with main's `Codec` for the
//! current versions and wrote the earlier versions with `GenericSingleObjectWriter` and their
//! schema, see [`legacy_record`]). Later versions are written once by [`write`] with the codec
//! of their release. Fixtures are never rewritten: regenerating them would only prove that
//! today's code agrees with itself.

use std::path::PathBuf;

use apache_avro::Schema;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::types::Value;
use apache_avro::writer::datum::GenericDatumWriter;
use serde::Serialize;

use super::{CONTRACTS, Contract, Version};
use crate::records::action::ActionState;
use crate::records::{
    Command, Ingest, Lead, RecentVersion, Record, Referral, ReferralAction, ReferralActionResult,
    SourceState, SyncRun, Timestamp,
};

const FULL_REFERRAL: &str = include_str!("../records/testdata/full_referral.json");

pub(crate) fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../schemas/fixtures")
}

/// The referrals in the fixtures: two fully populated versions of different referrals and one
/// with nothing but the fields a referral cannot lack.
pub(crate) fn sample_referrals() -> Vec<Referral> {
    let ingest = |run: &str, fetched: i64| Ingest {
        tenant: "contoso".into(),
        fetched_at: Timestamp(fetched),
        sync_run_id: run.into(),
    };
    let full = |id: &str, updated: &str, etag: &str, status: &str| {
        let mut json: serde_json::Value = serde_json::from_str(FULL_REFERRAL).unwrap();
        json["id"] = id.into();
        json["updatedDateTime"] = updated.into();
        json["eTag"] = etag.into();
        json["status"] = status.into();
        Referral::from_api_json(
            &json.to_string(),
            ingest("run-fixture-1", 1_709_800_000_000_000),
        )
        .unwrap()
    };
    vec![
        full(
            "fixture-referral-1",
            "2024-03-06T14:02:11.7654321Z",
            "\"etag-1\"",
            "Active",
        ),
        full(
            "fixture-referral-2",
            "2024-03-07T08:00:00Z",
            "\"etag-2\"",
            "New",
        ),
        Referral::from_api_json(
            r#"{"id":"fixture-referral-3","updatedDateTime":"2024-03-08T00:00:00Z"}"#,
            ingest("run-fixture-2", 1_709_900_000_000_000),
        )
        .unwrap(),
    ]
}

/// The leads of [`sample_referrals`], as the processor makes them (enriched but for the last).
pub(crate) fn sample_leads() -> Vec<Lead> {
    sample_referrals()
        .iter()
        .enumerate()
        .map(|(index, referral)| {
            let mut lead =
                Lead::from_referral(referral, Timestamp(1_709_800_001_000_000 + index as i64))
                    .unwrap();
            if index < 2 {
                lead.company_domain = Some("example.com".into());
                lead.enrichment_version = 1;
                lead.company_domain_source = Some("contact_email".into());
                lead.email_provider = "microsoft365".into();
                lead.email_provider_source = "mx".into();
                lead.company_name_normalized = Some("sample customer one".into());
                lead.size_band = Some("medium".into());
                lead.products = vec!["Azure".into()];
                lead.solutions = vec!["Sample Solution".into()];
                lead.industries = vec!["Manufacturing".into()];
                lead.deal_value_usd = Some(31750.63);
                lead.usd_rate = Some(1.27);
                lead.score = 70;
                lead.priority = "high".into();
                lead.change_type = "status_changed".into();
                lead.previous_status = Some("New".into());
            }
            lead
        })
        .collect()
}

pub(crate) fn sample_sync_runs() -> Vec<SyncRun> {
    vec![
        SyncRun {
            run_id: "run-fixture-1".into(),
            tenant: "contoso".into(),
            trigger: "schedule".into(),
            status: "succeeded".into(),
            started_at: Timestamp(1_709_800_000_000_000),
            finished_at: Some(Timestamp(1_709_800_002_000_000)),
            pages: 3,
            fetched: 250,
            published: 240,
            skipped: 9,
            dead_lettered: 1,
            error_class: None,
            error_message: None,
            coalesced_into: None,
            updated_at: None,
            estimate: None,
            since: None,
        },
        SyncRun {
            run_id: "run-fixture-2".into(),
            tenant: "contoso".into(),
            trigger: "manual".into(),
            status: "failed".into(),
            started_at: Timestamp(1_709_900_000_000_000),
            finished_at: Some(Timestamp(1_709_900_001_000_000)),
            pages: 1,
            fetched: 0,
            published: 0,
            skipped: 0,
            dead_lettered: 0,
            error_class: Some("rate_limited".into()),
            error_message: Some("partner center throttled the poll; it is retried".into()),
            coalesced_into: Some("run-fixture-1".into()),
            updated_at: Some(Timestamp(1_709_900_000_500_000)),
            estimate: Some(5_000),
            since: Some(Timestamp(1_709_000_000_000_000)),
        },
    ]
}

pub(crate) fn sample_source_states() -> Vec<SourceState> {
    vec![
        SourceState {
            tenant: "contoso".into(),
            cursor_updated_at: Some(Timestamp(1_709_800_000_000_000)),
            cursor_id: Some("fixture-referral-2".into()),
            last_run_id: Some("run-fixture-1".into()),
            last_success_at: Some(Timestamp(1_709_800_002_000_000)),
            last_full_sweep_at: Some(Timestamp(1_709_700_000_000_000)),
            recent: vec![RecentVersion {
                id: "fixture-referral-2".into(),
                version: -4_242_424_242,
                updated_at: Timestamp(1_709_798_400_000_000),
            }],
            updated_at: Timestamp(1_709_800_002_000_001),
        },
        SourceState {
            tenant: "fabrikam".into(),
            cursor_updated_at: None,
            cursor_id: None,
            last_run_id: None,
            last_success_at: None,
            last_full_sweep_at: None,
            recent: Vec::new(),
            updated_at: Timestamp(1_709_800_003_000_000),
        },
    ]
}

pub(crate) fn sample_commands() -> Vec<Command> {
    vec![
        Command {
            command_id: "command-fixture-1".into(),
            kind: Command::SYNC_NOW.into(),
            tenant: Some("contoso".into()),
            requested_at: Timestamp(1_709_800_000_000_000),
            since: None,
            referral_id: None,
        },
        Command {
            command_id: "command-fixture-2".into(),
            kind: Command::BACKFILL.into(),
            tenant: None,
            requested_at: Timestamp(1_709_800_005_000_000),
            since: Some(Timestamp(1_709_000_000_000_000)),
            referral_id: None,
        },
        Command {
            command_id: "command-fixture-3".into(),
            kind: Command::FETCH_REFERRAL.into(),
            tenant: Some("contoso".into()),
            requested_at: Timestamp(1_709_800_006_000_000),
            since: None,
            referral_id: Some("2f6e0a1c-58b3-4c0e-9a57-0c1d2e3f4a5b".into()),
        },
    ]
}

pub(crate) fn sample_actions() -> Vec<ReferralAction> {
    vec![
        ReferralAction {
            action_id: "action-fixture-1".into(),
            referral_id: "fixture-referral-1".into(),
            tenant: "contoso".into(),
            action: "won".into(),
            fields: [
                ("deal_value".to_owned(), "25000.50".to_owned()),
                ("currency".to_owned(), "GBP".to_owned()),
                ("closing_date".to_owned(), "2024-06-30".to_owned()),
            ]
            .into_iter()
            .collect(),
            expected_etag: Some("\"etag-1\"".into()),
            expected_status: Some("Active/Accepted".into()),
            actor_name: "alice".into(),
            actor_role: "sales".into(),
            requested_at: Timestamp(1_709_800_010_000_000),
        },
        ReferralAction {
            action_id: "action-fixture-2".into(),
            referral_id: "fixture-referral-2".into(),
            tenant: "contoso".into(),
            action: "accept".into(),
            fields: Default::default(),
            expected_etag: None,
            expected_status: None,
            actor_name: "admin".into(),
            actor_role: "admin".into(),
            requested_at: Timestamp(1_709_800_011_000_000),
        },
    ]
}

pub(crate) fn sample_action_results() -> Vec<ReferralActionResult> {
    let actions = sample_actions();
    let mut applied = ReferralActionResult::of(&actions[0], ActionState::Applied);
    applied.at = Timestamp(1_709_800_012_000_000);
    applied.request_id = Some("request-fixture-1".into());
    applied.to_status = Some("Closed/Won".into());
    let mut conflict = ReferralActionResult::of(&actions[1], ActionState::Conflict);
    conflict.at = Timestamp(1_709_800_013_000_000);
    conflict.message = Some("the referral changed since it was viewed".into());
    conflict.current_etag = Some("\"etag-3\"".into());
    conflict.current_version = Some(r#"{"id":"fixture-referral-2","status":"Closed"}"#.into());
    vec![applied, conflict]
}

/// Splits a `.bin` fixture into its records.
pub(crate) fn split_records(mut bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut records = Vec::new();
    while !bytes.is_empty() {
        let (length, rest) = bytes.split_at(4);
        let length = u32::from_be_bytes(length.try_into().unwrap()) as usize;
        let (record, rest) = rest.split_at(length);
        records.push(record.to_vec());
        bytes = rest;
    }
    records
}

pub(crate) fn contract(name: &str) -> &'static Contract {
    CONTRACTS.iter().find(|c| c.name == name).unwrap()
}

/// The top-level field names of a version.
pub(crate) fn field_names(version: &Version) -> Vec<String> {
    let json: serde_json::Value = serde_json::from_str(version.text).unwrap();
    json["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_owned())
        .collect()
}

/// `value` as the writer of `version` wrote it: apache-avro 0.22's single-object writer (the
/// header main's codec wrote), the body in that version's schema (fields it lacks dropped).
pub(crate) fn legacy_record<T: Record>(value: &T, version: &Version) -> Vec<u8> {
    let current = T::schema();
    let body = GenericDatumWriter::builder(current)
        .human_readable(false)
        .build()
        .unwrap()
        .write_ser_to_vec(value)
        .unwrap();
    let generic: Value = GenericDatumReader::builder(current)
        .build()
        .unwrap()
        .read_value(&mut body.as_slice())
        .unwrap();
    let schema = Schema::parse_str(version.text).unwrap();
    let generic = generic.resolve(&schema).unwrap();
    let mut out = Vec::new();
    apache_avro::GenericSingleObjectWriter::new_with_capacity(&schema, 1024)
        .unwrap()
        .write_value(generic, &mut out)
        .unwrap();
    out
}

fn expected_json<T: Serialize>(value: &T, version: &Version) -> serde_json::Value {
    let names = field_names(version);
    let mut json = serde_json::to_value(value).unwrap();
    json.as_object_mut()
        .unwrap()
        .retain(|key, _| names.contains(key));
    json
}

fn write_fixtures<T: Record + Serialize>(name: &str, values: &[T]) {
    let contract = contract(name);
    let dir = fixtures_dir().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let current = contract.versions.last().unwrap();
    for version in contract.versions {
        if dir.join(format!("{}.bin", version.file)).exists() {
            continue;
        }
        // Only the current version can be written as released: by today's codec.
        assert!(
            std::ptr::eq(version, current),
            "{name} {} has no fixtures and is not the current version: it cannot be written as released",
            version.file
        );
        let codec = crate::codec::Codec::<T>::new("fixtures", None);
        let mut out = Vec::new();
        let mut json = Vec::new();
        for value in values {
            let record = codec.encode_single_object(value).unwrap();
            out.extend_from_slice(&(record.len() as u32).to_be_bytes());
            out.extend_from_slice(&record);
            json.push(expected_json(value, version));
        }
        std::fs::write(dir.join(format!("{}.bin", version.file)), out).unwrap();
        std::fs::write(
            dir.join(format!("{}.json", version.file)),
            serde_json::to_string_pretty(&json).unwrap() + "\n",
        )
        .unwrap();
    }
}

/// Writes the fixtures of versions that have none yet. Run once, with main's codec:
/// `cargo test -p hunter-core --lib contracts::fixtures::write -- --ignored`.
#[test]
#[ignore = "writes schemas/fixtures; run by hand, once per released version"]
fn write() {
    write_fixtures("referral", &sample_referrals());
    write_fixtures("lead", &sample_leads());
    write_fixtures("sync_run", &sample_sync_runs());
    write_fixtures("source_state", &sample_source_states());
    write_fixtures("command", &sample_commands());
    write_fixtures("referral_action", &sample_actions());
    write_fixtures("referral_action_result", &sample_action_results());
}
