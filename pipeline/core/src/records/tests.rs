use std::collections::BTreeSet;

use apache_avro::Schema;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::schema::RecordSchema;
use apache_avro::writer::datum::GenericDatumWriter;

use super::*;

const FULL_REFERRAL: &str = include_str!("testdata/full_referral.json");

fn ingest() -> Ingest {
    Ingest {
        tenant: "contoso".into(),
        fetched_at: Timestamp(1_709_800_000_000_000),
        sync_run_id: "run-1".into(),
    }
}

fn round_trip<T: Record + PartialEq + std::fmt::Debug>(value: &T) -> T {
    let writer = GenericDatumWriter::builder(T::schema()).build().unwrap();
    let bytes = writer
        .write_ser_to_vec(value)
        .unwrap_or_else(|e| panic!("{} does not fit its .avsc: {e}", T::FULL_NAME));
    let reader = GenericDatumReader::builder(T::schema()).build().unwrap();
    let back: T = reader.read_deser(&mut bytes.as_slice()).unwrap();
    assert_eq!(
        &back,
        value,
        "{} changed on an Avro round trip",
        T::FULL_NAME
    );
    back
}

/// Every field path of an Avro schema, e.g. `details.requirements.solutions.price`.
fn schema_paths(
    schema: &Schema,
    prefix: &str,
    names: &mut Vec<(String, RecordSchema)>,
) -> BTreeSet<String> {
    let mut paths = BTreeSet::new();
    let record = match schema {
        Schema::Record(record) => {
            names.push((record.name.fullname(None), record.clone()));
            record.clone()
        }
        Schema::Union(union) => {
            for variant in union.variants() {
                paths.extend(schema_paths(variant, prefix, names));
            }
            return paths;
        }
        Schema::Array(array) => return schema_paths(&array.items, prefix, names),
        Schema::Ref { name } => names
            .iter()
            .find(|(full, _)| *full == name.fullname(None))
            .map(|(_, record)| record.clone())
            .expect("reference to a defined record"),
        _ => return paths,
    };
    for field in &record.fields {
        let path = format!("{prefix}{}", field.name);
        paths.insert(path.clone());
        paths.extend(schema_paths(&field.schema, &format!("{path}."), names));
    }
    paths
}

/// Every key path of a JSON value, with arrays looked into.
fn json_paths(value: &serde_json::Value, prefix: &str, out: &mut BTreeSet<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, child) in map {
                let path = format!("{prefix}{key}");
                out.insert(path.clone());
                json_paths(child, &format!("{path}."), out);
            }
        }
        serde_json::Value::Array(items) => {
            for item in items {
                json_paths(item, prefix, out);
            }
        }
        _ => {}
    }
}

/// Paths whose value is null or an empty array: the fixture must fill every field.
fn empty_paths(value: &serde_json::Value, prefix: &str, out: &mut Vec<String>) {
    if let serde_json::Value::Object(map) = value {
        for (key, child) in map {
            let path = format!("{prefix}{key}");
            match child {
                serde_json::Value::Null => out.push(path),
                serde_json::Value::Array(items) if items.is_empty() => out.push(path),
                serde_json::Value::Array(items) => {
                    for item in items {
                        empty_paths(item, &format!("{path}."), out);
                    }
                }
                _ => empty_paths(child, &format!("{path}."), out),
            }
        }
    }
}

fn assert_agrees_with_contract<T: Record + PartialEq + std::fmt::Debug>(value: &T) {
    let json = serde_json::to_value(value).unwrap();
    let mut empty = Vec::new();
    empty_paths(&json, "", &mut empty);
    assert!(
        empty.is_empty(),
        "fixture leaves fields empty, so they are not checked: {empty:?}"
    );
    let mut from_type = BTreeSet::new();
    json_paths(&json, "", &mut from_type);
    let from_contract = schema_paths(T::schema(), "", &mut Vec::new());
    let only_in_type: Vec<_> = from_type.difference(&from_contract).collect();
    let only_in_contract: Vec<_> = from_contract.difference(&from_type).collect();
    assert!(
        only_in_type.is_empty() && only_in_contract.is_empty(),
        "{}: the Rust type and the .avsc disagree; only in the type: {only_in_type:?}, only in the .avsc: {only_in_contract:?}",
        T::FULL_NAME
    );
    round_trip(value);
}

#[test]
fn every_contract_parses_with_its_declared_name() {
    fn name<T: Record>() -> String {
        match T::schema() {
            Schema::Record(record) => record.name.fullname(None),
            other => panic!("{} is not a record: {other:?}", T::FULL_NAME),
        }
    }
    assert_eq!(name::<Referral>(), Referral::FULL_NAME);
    assert_eq!(name::<Lead>(), Lead::FULL_NAME);
    assert_eq!(name::<SyncRun>(), SyncRun::FULL_NAME);
    assert_eq!(name::<SourceState>(), SourceState::FULL_NAME);
    assert_eq!(name::<Command>(), Command::FULL_NAME);
}

#[test]
fn referral_type_agrees_with_referral_avsc() {
    let mut referral = Referral::from_api_json(FULL_REFERRAL, ingest()).unwrap();
    // Set by the source, never by the API: filled in so that the check covers it.
    referral.truncation = Some(Truncation {
        original_json_bytes: 1_900_000,
        original_record_bytes: 3_800_000,
        kept_bytes: 65_536,
        fields: vec!["/details/notes".into()],
    });
    assert_agrees_with_contract(&referral);
}

#[test]
fn a_referral_written_before_truncation_existed_reads_as_whole() {
    // The contract as it was before `truncation` (added with a default): a reader that knows
    // the writer's schema (the registry's, or a fingerprint's history) reads it by name.
    let mut contract: serde_json::Value = serde_json::from_str(Referral::SCHEMA_TEXT).unwrap();
    let fields = contract["fields"].as_array_mut().unwrap();
    fields.retain(|field| field["name"] != "truncation");
    let before = Schema::parse(&contract).unwrap();
    let referral = Referral::from_api_json(FULL_REFERRAL, ingest()).unwrap();
    let apache_avro::types::Value::Record(mut record) = apache_avro::to_value(&referral).unwrap()
    else {
        panic!("a referral is a record");
    };
    record.retain(|(name, _)| name != "truncation");
    let bytes = GenericDatumWriter::builder(&before)
        .build()
        .unwrap()
        .write_value_to_vec(apache_avro::types::Value::Record(record))
        .unwrap();
    let reader = GenericDatumReader::builder(&before).build().unwrap();
    let back: Referral = reader.read_deser(&mut bytes.as_slice()).unwrap();
    assert_eq!(back, referral);
    assert_eq!(back.truncation, None);
}

#[test]
fn referral_json_is_read_leniently_and_kept_raw() {
    let referral = Referral::from_api_json(FULL_REFERRAL, ingest()).unwrap();
    assert_eq!(
        referral.raw_json, FULL_REFERRAL,
        "raw json is the exact text"
    );
    assert!(referral.raw_json.contains("someFutureField"));
    let details = referral.details.as_ref().unwrap();
    assert_eq!(
        details.deal_value,
        Some(25000.5),
        "numeric strings are numbers"
    );
    // 7 fraction digits: the 100 ns digit is dropped, the rest kept.
    let updated = referral.updated_date_time.unwrap();
    assert_eq!(
        updated,
        Timestamp::parse("2024-03-06T14:02:11.765432Z").unwrap()
    );
    let consent = referral.consent.as_ref().unwrap();
    assert_eq!(consent.consent_to_to_share_info_with_others, Some(true));
    let requirements = details.requirements.as_ref().unwrap();
    assert_eq!(requirements.offers_json[0].0, r#"{"id":"offer-1"}"#);
    assert_eq!(
        requirements
            .additional_requirements_json
            .as_ref()
            .unwrap()
            .0,
        r#"{"iot":{"deviceCategory":"Gateway"}}"#
    );
}

#[test]
fn drifting_shapes_are_accepted() {
    let raw = r#"{
        "id": "r-1", "externalReferenceId": "", "updatedDateTime": "2024-03-06T15:30:45Z",
        "createdDateTime": "2024-03-06T15:30:45.5", "closedDateTime": null,
        "customerProfile": { "name": "Two GmbH", "size": "", "team": null,
                             "ids": { "Duns": "123456789", "External": "" } },
        "details": { "dealValue": 8000, "currency": "EUR", "requirements": null },
        "favorite": "true", "team": null
    }"#;
    let referral = Referral::from_api_json(raw, ingest()).unwrap();
    assert_eq!(
        referral.external_reference_id, None,
        "empty string is no value"
    );
    let profile = referral.customer_profile.as_ref().unwrap();
    assert_eq!(profile.size, None);
    assert_eq!(profile.ids.len(), 1, "ids object: empty values dropped");
    assert_eq!(profile.ids[0].profile_type.as_deref(), Some("Duns"));
    assert_eq!(profile.ids[0].id.as_deref(), Some("123456789"));
    assert_eq!(referral.favorite, Some(true));
    assert_eq!(referral.details.as_ref().unwrap().deal_value, Some(8000.0));
    assert!(
        referral.created_date_time.is_some(),
        "a timestamp without offset is UTC"
    );
    round_trip(&referral);
}

#[test]
fn a_referral_without_id_or_with_wrong_types_is_refused() {
    assert!(matches!(
        Referral::from_api_json(r#"{"name": "no id"}"#, ingest()),
        Err(ReferralParseError::MissingId)
    ));
    let error = Referral::from_api_json(r#"{"id": "x", "updatedDateTime": "yesterday"}"#, ingest())
        .unwrap_err();
    assert!(error.to_string().contains("invalid timestamp"), "{error}");
    assert!(
        Referral::from_api_json(r#"{"id": "x", "details": {"dealValue": "lots"}}"#, ingest())
            .is_err()
    );
    assert!(Referral::from_api_json("[1, 2", ingest()).is_err());
}

#[test]
fn lead_type_agrees_with_lead_avsc() {
    let referral = Referral::from_api_json(FULL_REFERRAL, ingest()).unwrap();
    let mut lead = Lead::from_referral(&referral, Timestamp(1)).unwrap();
    lead.company_domain = Some("example.com".into());
    lead.enrichment_version = 1;
    lead.company_domain_source = Some("contact_email".into());
    lead.company_name_normalized = Some("sample customer one".into());
    lead.size_band = Some("medium".into());
    lead.products = vec!["Azure".into()];
    lead.solutions = vec!["Sample Solution".into()];
    lead.industries = vec!["Manufacturing".into()];
    lead.deal_value_usd = Some(31750.63);
    lead.usd_rate = Some(1.27);
    lead.previous_status = Some("New".into());
    assert_eq!(lead.fetched_at, Some(ingest().fetched_at));
    assert_eq!(lead.country.as_deref(), Some("GB"));
    assert_eq!(lead.version, referral.updated_date_time.unwrap().micros());
    // Lead 0004: every new field populated by the full referral.
    assert!(lead.expires_at.is_some() && lead.accepted_at.is_some());
    assert!(lead.closing_at.is_some() && lead.closed_at.is_some());
    assert_eq!(lead.owner_emails, ["sam@partner.example"]);
    lead.expires_at_estimated = true;
    assert_agrees_with_contract(&lead);
}

#[test]
fn a_lead_is_the_same_for_the_same_referral_version() {
    let referral = Referral::from_api_json(FULL_REFERRAL, ingest()).unwrap();
    let first = Lead::from_referral(&referral, Timestamp(5)).unwrap();
    let again = Lead::from_referral(&referral.clone(), Timestamp(5)).unwrap();
    assert_eq!(first, again);
    let mut no_time = referral.clone();
    no_time.updated_date_time = None;
    assert_eq!(
        Lead::from_referral(&no_time, Timestamp(5)),
        Err(LeadError::MissingUpdatedDateTime(referral.id.clone()))
    );
}

#[test]
fn control_types_agree_with_their_avsc() {
    assert_agrees_with_contract(&SyncRun {
        run_id: "run-1".into(),
        tenant: "contoso".into(),
        trigger: "manual".into(),
        status: "failed".into(),
        started_at: Timestamp(1),
        finished_at: Some(Timestamp(2)),
        pages: 3,
        fetched: 4,
        published: 5,
        skipped: 6,
        dead_lettered: 7,
        error_class: Some("rate_limited".into()),
        error_message: Some("throttled".into()),
        coalesced_into: Some("run-0".into()),
        updated_at: Some(Timestamp(2)),
        estimate: Some(8),
        since: Some(Timestamp(0)),
    });
    assert_agrees_with_contract(&SourceState {
        tenant: "contoso".into(),
        cursor_updated_at: Some(Timestamp(10)),
        cursor_id: Some("r-9".into()),
        last_run_id: Some("run-1".into()),
        last_success_at: Some(Timestamp(11)),
        last_full_sweep_at: Some(Timestamp(9)),
        recent: vec![RecentVersion {
            id: "r-9".into(),
            version: -42,
            updated_at: Timestamp(10),
        }],
        updated_at: Timestamp(12),
    });
    assert_agrees_with_contract(&Command {
        command_id: "c-1".into(),
        kind: Command::SYNC_NOW.into(),
        tenant: Some("contoso".into()),
        requested_at: Timestamp(13),
        since: Some(Timestamp(14)),
        referral_id: Some("r-1".into()),
    });
}

#[test]
fn timestamps_print_like_partner_center() {
    let ts = Timestamp::parse("2024-03-06T14:02:11.7654321Z").unwrap();
    assert_eq!(ts.to_rfc3339(), "2024-03-06T14:02:11.7654320Z");
    assert_eq!(Timestamp::parse(&ts.to_rfc3339()).unwrap(), ts);
    assert!(Timestamp::parse("2024-13-01T00:00:00Z").is_err());
}

#[test]
fn odd_ids_are_refused_with_what_is_wrong_and_without_the_id() {
    let with_id = |id: &str| {
        let mut referral: serde_json::Value = serde_json::from_str(FULL_REFERRAL).unwrap();
        referral["id"] = serde_json::Value::String(id.to_owned());
        Referral::from_api_json(&referral.to_string(), ingest())
    };
    for good in [
        "0a1b2c3d-1111-4aaa-8bbb-000000000001",
        "r-1",
        "Ref_2.v1",
        &"x".repeat(referral::MAX_ID_CHARS),
    ] {
        assert!(with_id(good).is_ok(), "{good:?} refused");
    }
    assert!(matches!(with_id(""), Err(ReferralParseError::MissingId)));
    for (odd, says) in [
        ("a b", "' ' (U+0020) at character 2"),
        ("../etc", "'/' (U+002F) at character 3"),
        ("..", "no letter or digit"),
        ("r\u{0}1", "'\\0' (U+0000) at character 2"),
        ("café", "'é' (U+00E9) at character 4"),
        ("<img src=x>", "'<' (U+003C) at character 1"),
        (
            &"x".repeat(referral::MAX_ID_CHARS + 1),
            "is 129 characters long",
        ),
    ] {
        match with_id(odd) {
            Err(error @ ReferralParseError::BadId(_)) => {
                let message = error.to_string();
                assert!(message.contains(says), "{odd:?}: {message}");
                assert!(
                    message.len() < 200,
                    "{odd:?}: the message quotes the id: {message}"
                );
            }
            other => panic!("{odd:?} gave {other:?}"),
        }
    }
}

#[test]
fn an_oversize_referral_is_cut_to_fit_and_says_what_was_cut() {
    let codec = crate::codec::Codec::<Referral>::new("t", None);
    let measure = |r: &Referral| codec.encode_single_object(r).ok().map(|b| b.len());
    let budget = crate::size::REFERRAL_RECORD_BUDGET;
    let notes: String = (0..90_000)
        .map(|i| format!("note {i:04} "))
        .collect::<String>();
    let notes = &notes[..900_000];
    let mut value: serde_json::Value = serde_json::from_str(FULL_REFERRAL).unwrap();
    value["details"]["notes"] = serde_json::Value::String(notes.to_owned());
    let raw = value.to_string();
    let whole = Referral::from_api_json(&raw, ingest()).unwrap();
    let whole_bytes = measure(&whole).unwrap();
    assert!(
        whole_bytes > 2 * 900_000,
        "the notes travel twice: {whole_bytes}"
    );

    let cut = whole
        .cut_to_fit(budget, whole_bytes, measure)
        .expect("a cut fits");
    assert!(measure(&cut).unwrap() <= budget);
    let truncation = cut.truncation.clone().expect("marked");
    assert_eq!(truncation.fields, ["/details/notes"]);
    assert_eq!(truncation.original_json_bytes, raw.len() as i64);
    assert_eq!(truncation.original_record_bytes, whole_bytes as i64);
    assert_eq!(truncation.kept_bytes, crate::size::CUT_STEPS[0] as i64);
    let cut_notes = cut.details.as_ref().unwrap().notes.clone().unwrap();
    assert!(cut_notes.starts_with(&notes[..1000]));
    assert!(cut_notes.ends_with(&format!(
        "[... {}: 65536 of 900000 bytes kept]",
        crate::size::CUT_MARK
    )));
    // rawJson says the same and is still JSON; everything else is untouched.
    let raw_cut: serde_json::Value = serde_json::from_str(&cut.raw_json).unwrap();
    assert_eq!(raw_cut["details"]["notes"], serde_json::json!(cut_notes));
    assert_eq!(
        (&cut.id, &cut.e_tag, &cut.status),
        (&whole.id, &whole.e_tag, &whole.status)
    );
    assert_eq!(cut.customer_profile, whole.customer_profile);
    assert_eq!(cut.ingest, whole.ingest);

    // Nothing long enough to cut (thousands of small values): no cut fits.
    let mut value: serde_json::Value = serde_json::from_str(FULL_REFERRAL).unwrap();
    let member =
        serde_json::json!({"firstName": "Ann", "lastName": "Lee", "email": "ann@example.com"});
    value["team"] = serde_json::Value::Array(vec![member; 12_000]);
    let crowded = Referral::from_api_json(&value.to_string(), ingest()).unwrap();
    let crowded_bytes = measure(&crowded).unwrap();
    assert!(crowded_bytes > budget);
    assert_eq!(crowded.cut_to_fit(budget, crowded_bytes, measure), None);
}
