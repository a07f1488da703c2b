//! Hostile input for the two parsers that take bytes from outside: the referral JSON parser
//! (the Partner Center API's answers) and the Avro decoder (anything in a topic). Whatever
//! arrives, they return a value or an error; they never panic, hang or overflow the stack.

use proptest::prelude::*;
use serde_json::Value;

use super::*;
use crate::codec::Codec;

const FULL_REFERRAL: &str = include_str!("testdata/full_referral.json");

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(future)
}

/// Any JSON value, up to a few levels deep, with the referral's own field names mixed in so
/// the parser's lenient paths (numbers as strings, ids as array or object) are reached.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "[ -~]{0,12}".prop_map(Value::String),
        Just(Value::String("2026-11-28T10:00:00.1234567Z".into())),
    ];
    let keys = prop_oneof![
        Just("id".to_owned()),
        Just("updatedDateTime".to_owned()),
        Just("status".to_owned()),
        Just("customerProfile".to_owned()),
        Just("ids".to_owned()),
        Just("details".to_owned()),
        Just("dealValue".to_owned()),
        Just("team".to_owned()),
        Just("address".to_owned()),
        "[a-z]{1,8}",
    ];
    leaf.prop_recursive(4, 64, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(keys.clone(), inner, 0..8)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

fn ingest() -> Ingest {
    Ingest {
        tenant: "t".into(),
        fetched_at: Timestamp(0),
        sync_run_id: "r".into(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn any_json_is_a_referral_or_an_error(value in json()) {
        let _ = Referral::from_api_json(&value.to_string(), ingest());
    }

    #[test]
    fn any_field_of_a_real_referral_replaced_by_anything_is_a_referral_or_an_error(
        field in "[a-zA-Z]{1,20}",
        replacement in json(),
    ) {
        let mut referral: Value = serde_json::from_str(FULL_REFERRAL).unwrap();
        let object = referral.as_object_mut().unwrap();
        let key = object.keys().find(|k| k.eq_ignore_ascii_case(&field)).cloned().unwrap_or(field);
        object.insert(key, replacement);
        if let Ok(parsed) = Referral::from_api_json(&referral.to_string(), ingest()) {
            prop_assert!(!parsed.id.trim().is_empty());
        }
    }

    #[test]
    fn any_bytes_decode_to_a_record_or_an_error(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let codec = Codec::<Referral>::new("hostile", None);
        let _ = block_on(codec.decode(&bytes));
    }

    /// Random bytes never get past the 10-byte header, so the body decoder (and, for an older
    /// version, schema resolution) would never see hostile input: prefix each released version's
    /// header, spec and legacy, so every body path is fuzzed.
    #[test]
    fn any_body_after_a_valid_header_decodes_to_a_record_or_an_error(
        version in any::<prop::sample::Index>(),
        legacy in any::<bool>(),
        body in prop::collection::vec(any::<u8>(), 0..600),
    ) {
        for (contract, decode) in [
            ("referral", decode_as::<Referral> as fn(&[u8]) -> Option<String>),
            ("lead", decode_as::<Lead>),
        ] {
            let released = crate::contracts::history(contract);
            let released = &released[version.index(released.len())];
            let fingerprint = match (legacy, released.legacy_fingerprint) {
                (true, Some(legacy)) => legacy,
                _ => released.fingerprint,
            };
            let mut bytes = crate::codec::SINGLE_OBJECT_MAGIC.to_vec();
            bytes.extend_from_slice(&fingerprint);
            bytes.extend_from_slice(&body);
            // A record or an error; an error is about the body, never the header.
            if let Some(error) = decode(&bytes) {
                prop_assert!(!error.contains("unknown schema fingerprint"), "{}: {}", released.label(), error);
                prop_assert!(!error.contains("unknown framing"), "{}: {}", released.label(), error);
            }
        }
    }

    #[test]
    fn a_real_record_with_bytes_changed_decodes_to_a_record_or_an_error(
        changes in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let codec = Codec::<Referral>::new("hostile", None);
        let referral = Referral::from_api_json(FULL_REFERRAL, ingest()).unwrap();
        let mut bytes = codec.encode_single_object(&referral).unwrap();
        for (at, value) in changes {
            let at = at.index(bytes.len());
            bytes[at] = value;
        }
        if truncate {
            bytes.truncate(cut.index(bytes.len()));
        }
        let _ = block_on(codec.decode(&bytes));
    }
}

/// Decodes `bytes` as a `T` without a registry: `None` for a record, the error's text otherwise.
fn decode_as<T: crate::records::Record>(bytes: &[u8]) -> Option<String> {
    let codec = Codec::<T>::new("hostile", None);
    block_on(codec.decode(bytes))
        .err()
        .map(|error| error.to_string())
}

#[test]
fn deeply_nested_and_oversized_json_is_refused() {
    let array = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert!(Referral::from_api_json(&array, ingest()).is_err());
    // Under a field the parser reads and under one it ignores (serde_json skips those without
    // a depth limit): both refused by depth.
    for field in ["details", "unknownField"] {
        let nested = format!(
            "{{\"id\": \"x\", \"{field}\": {}1{}}}",
            "{\"a\": ".repeat(50_000),
            "}".repeat(50_000)
        );
        let refused = matches!(
            Referral::from_api_json(&nested, ingest()),
            Err(ReferralParseError::TooDeep)
        );
        assert!(refused, "{field}: deep nesting accepted");
    }
    // Brackets inside strings are text, not nesting.
    let mut referral: Value = serde_json::from_str(FULL_REFERRAL).unwrap();
    referral["name"] = Value::String("[[[[{{{{\\\"".repeat(100));
    assert!(Referral::from_api_json(&referral.to_string(), ingest()).is_ok());
    // Size.
    let mut referral: Value = serde_json::from_str(FULL_REFERRAL).unwrap();
    referral["notes"] = Value::String("x".repeat(Referral::MAX_JSON_BYTES));
    let refused = matches!(
        Referral::from_api_json(&referral.to_string(), ingest()),
        Err(ReferralParseError::TooLarge(_))
    );
    assert!(refused, "an oversized referral was accepted");
}
