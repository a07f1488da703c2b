use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::config::SchemaRegistrySettings;
use crate::contracts::fixtures;
use crate::records::{Command, Lead, Referral, Timestamp};

fn command() -> Command {
    Command {
        command_id: "c-1".into(),
        kind: Command::SYNC_NOW.into(),
        tenant: None,
        requested_at: Timestamp(42),
        since: None,
        referral_id: None,
    }
}

fn registry(url: &str) -> Option<Arc<Registry>> {
    Some(Arc::new(
        Registry::new(
            &url::Url::parse(url).unwrap(),
            &SchemaRegistrySettings::default(),
        )
        .unwrap(),
    ))
}

#[tokio::test]
async fn single_object_round_trip_with_the_spec_fingerprint() {
    let codec = Codec::<Command>::new("hunter.commands.v1", None);
    let bytes = codec.encode(&command()).await.unwrap();
    assert_eq!(&bytes[..2], &SINGLE_OBJECT_MAGIC);
    assert_eq!(canonical::hex(&bytes[2..10]), "243df79193d66efb");
    assert_eq!(codec.decode(&bytes).await.unwrap(), command());
}

#[test]
fn the_referral_fingerprint_is_the_specifications() {
    // The value fastavro and Java's SchemaNormalization give for schemas/referral.avsc as
    // released in version 0002 (with `truncation`, docs/record-size.md; 0001 was
    // d431a4e88e409385, for which apache-avro 0.22 gave 5a23b9548247cdaf).
    let codec = Codec::<Referral>::new("t", None);
    let bytes = codec
        .encode_single_object(&fixtures::sample_referrals()[0])
        .unwrap();
    assert_eq!(canonical::hex(&bytes[2..10]), "a5b62763d2573675");
}

#[test]
fn the_body_is_what_apache_avro_writes_after_a_different_header() {
    let value = apache_avro::to_value(command()).unwrap();
    let mut reference = Vec::new();
    apache_avro::GenericSingleObjectWriter::new_with_capacity(Command::schema(), 64)
        .unwrap()
        .write_value(value, &mut reference)
        .unwrap();
    let ours = Codec::<Command>::new("t", None)
        .encode_single_object(&command())
        .unwrap();
    assert_eq!(&ours[..2], &reference[..2], "magic");
    assert_ne!(
        &ours[2..10],
        &reference[2..10],
        "apache-avro's legacy fingerprint"
    );
    assert_eq!(&ours[10..], &reference[10..], "body");
}

#[tokio::test]
async fn records_with_the_legacy_header_of_the_version_before_spec_fingerprints_are_read() {
    // What main wrote before spec fingerprints: apache-avro's header, command version 0001
    // (the version then current; `since` came with 0002 and reads as its default).
    let schema = apache_avro::Schema::parse_str(include_str!(
        "../../../../schemas/history/command/0001.avsc"
    ))
    .unwrap();
    let apache_avro::types::Value::Record(mut fields) = apache_avro::to_value(command()).unwrap()
    else {
        panic!("a command is a record");
    };
    fields.retain(|(name, _)| name != "since" && name != "referral_id");
    let mut legacy = Vec::new();
    apache_avro::GenericSingleObjectWriter::new_with_capacity(&schema, 64)
        .unwrap()
        .write_value(apache_avro::types::Value::Record(fields), &mut legacy)
        .unwrap();
    assert_eq!(canonical::hex(&legacy[2..10]), "400b966dcd6f8b79");
    let codec = Codec::<Command>::new("t", None);
    assert_eq!(codec.decode(&legacy).await.unwrap(), command());
}

#[tokio::test]
async fn bad_bytes_are_named_errors() {
    let codec = Codec::<Command>::new("t", None);
    assert!(matches!(codec.decode(&[]).await, Err(CodecError::Empty)));
    assert!(matches!(
        codec.decode(&[0x7b, 0x22]).await,
        Err(CodecError::UnknownFraming(0x7b))
    ));
    assert!(matches!(
        codec.decode(&[0xC3, 0x01, 1]).await,
        Err(CodecError::Truncated(3))
    ));
    let unknown = codec.decode(&[0xC3, 0x01, 1, 2, 3, 4, 5, 6, 7, 8, 0]).await;
    assert!(
        matches!(&unknown, Err(CodecError::UnknownFingerprint(f)) if f == "0102030405060708"),
        "{unknown:?}"
    );
    assert!(!unknown.unwrap_err().is_retryable());
    assert!(matches!(
        codec.decode(&[0, 0, 0, 0, 7, 2]).await,
        Err(CodecError::NoRegistry(7))
    ));
    let mut good = codec.encode_single_object(&command()).unwrap();
    good.truncate(good.len() - 3);
    assert!(matches!(
        codec.decode(&good).await,
        Err(CodecError::Body { .. })
    ));
}

/// A stand-in for a Confluent Schema Registry (unit tests only; the end-to-end tests use
/// `tests/registry`): register under a subject, schema by id, and a switch that makes every
/// request fail with a status.
struct StandIn {
    url: String,
    schemas: Arc<Mutex<Vec<String>>>,
    fail_with: Arc<Mutex<Option<u16>>>,
    requests: Arc<AtomicUsize>,
}

async fn stand_in() -> StandIn {
    use axum::extract::{Path, State};
    use axum::http::StatusCode;
    use axum::response::{IntoResponse, Response};
    use axum::routing::{get, post};
    use axum::{Json, Router};
    #[derive(Clone)]
    struct Shared {
        schemas: Arc<Mutex<Vec<String>>>,
        fail_with: Arc<Mutex<Option<u16>>>,
        requests: Arc<AtomicUsize>,
    }
    fn failure(shared: &Shared) -> Option<Response> {
        shared.requests.fetch_add(1, Ordering::SeqCst);
        let status = (*shared.fail_with.lock().unwrap())?;
        Some(
            (
                StatusCode::from_u16(status).unwrap(),
                Json(serde_json::json!({"error_code": status, "message": "stand-in says no"})),
            )
                .into_response(),
        )
    }
    let register = |State(shared): State<Shared>, Json(body): Json<serde_json::Value>| async move {
        if let Some(failed) = failure(&shared) {
            return failed;
        }
        let text = body["schema"].as_str().unwrap().to_owned();
        let mut all = shared.schemas.lock().unwrap();
        let id = match all.iter().position(|s| *s == text) {
            Some(index) => index + 1,
            None => {
                all.push(text);
                all.len()
            }
        };
        Json(serde_json::json!({ "id": id })).into_response()
    };
    let by_id = |State(shared): State<Shared>, Path(id): Path<usize>| async move {
        if let Some(failed) = failure(&shared) {
            return failed;
        }
        let all = shared.schemas.lock().unwrap();
        match all.get(id.wrapping_sub(1)) {
            Some(schema) => Json(serde_json::json!({ "schema": schema })).into_response(),
            None => (
                StatusCode::NOT_FOUND,
                Json(serde_json::json!({"error_code": 40403, "message": "Schema not found"})),
            )
                .into_response(),
        }
    };
    let shared = Shared {
        schemas: Default::default(),
        fail_with: Default::default(),
        requests: Default::default(),
    };
    let app = Router::new()
        .route("/subjects/{subject}/versions", post(register))
        .route("/schemas/ids/{id}", get(by_id))
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    StandIn {
        url: format!("http://{address}"),
        schemas: shared.schemas,
        fail_with: shared.fail_with,
        requests: shared.requests,
    }
}

#[tokio::test]
async fn confluent_framing_through_a_registry_and_readers_accept_both() {
    let registry_stand_in = stand_in().await;
    let confluent = Codec::<Command>::new("hunter.commands.v1", registry(&registry_stand_in.url));
    let bytes = confluent.encode(&command()).await.unwrap();
    assert_eq!(bytes[0], CONFLUENT_MAGIC);
    let id = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
    assert_eq!(id, 1, "registered under the topic's subject");
    assert_eq!(registry_stand_in.schemas.lock().unwrap().len(), 1);
    assert_eq!(confluent.decode(&bytes).await.unwrap(), command());
    // A reader configured with a registry reads single-object records too.
    let single = Codec::<Command>::new("t", None)
        .encode_single_object(&command())
        .unwrap();
    assert_eq!(confluent.decode(&single).await.unwrap(), command());
    // The body after the 5-byte header is the same Avro body as after the 10-byte one.
    assert_eq!(&bytes[5..], &single[10..]);
}

#[tokio::test]
async fn registry_failures_say_whether_to_wait_stop_or_dead_letter() {
    let registry_stand_in = stand_in().await;
    let codec = Codec::<Command>::new("hunter.commands.v1", registry(&registry_stand_in.url));
    let record = |id: u32| {
        let mut bytes = vec![CONFLUENT_MAGIC];
        bytes.extend_from_slice(&id.to_be_bytes());
        bytes.extend_from_slice(
            &Codec::<Command>::new("t", None)
                .encode_single_object(&command())
                .unwrap()[10..],
        );
        bytes
    };
    for (status, retryable, fatal) in [
        (503, true, false),
        (500, true, false),
        (429, true, false),
        (401, false, true),
        (403, false, true),
        (422, false, false),
    ] {
        *registry_stand_in.fail_with.lock().unwrap() = Some(status);
        let error = codec.decode(&record(1)).await.unwrap_err();
        assert_eq!(
            (error.is_retryable(), error.is_fatal()),
            (retryable, fatal),
            "{status}: {error}"
        );
        if status == 401 {
            assert!(
                error
                    .to_string()
                    .contains("HUNTER_SCHEMA_REGISTRY_PASSWORD"),
                "{error}"
            );
        }
    }
    *registry_stand_in.fail_with.lock().unwrap() = None;
    // An id the registry does not have is the record's fault.
    let error = codec.decode(&record(99)).await.unwrap_err();
    assert!(!error.is_retryable() && !error.is_fatal(), "{error}");
    // A registry that is not there at all is an outage.
    let gone = Codec::<Command>::new("t", registry("http://127.0.0.1:9"));
    let error = gone.decode(&record(1)).await.unwrap_err();
    assert!(error.is_retryable(), "{error}");
    let error = gone.encode(&command()).await.unwrap_err();
    assert!(error.is_retryable(), "{error}");
}

#[tokio::test]
async fn decode_patiently_waits_out_an_outage_and_gives_up_only_on_shutdown() {
    let registry_stand_in = stand_in().await;
    let writer = Codec::<Command>::new("hunter.commands.v1", registry(&registry_stand_in.url));
    let bytes = writer.encode(&command()).await.unwrap();
    // A fresh reader (nothing cached) while the registry answers 503.
    let reader = Codec::<Command>::new("hunter.commands.v1", registry(&registry_stand_in.url));
    *registry_stand_in.fail_with.lock().unwrap() = Some(503);
    let (_trigger, mut shutdown) = crate::shutdown::channel();
    let fail_with = registry_stand_in.fail_with.clone();
    let requests = registry_stand_in.requests.clone();
    let before = requests.load(Ordering::SeqCst);
    let heal = tokio::spawn(async move {
        while requests.load(Ordering::SeqCst) < before + 3 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        *fail_with.lock().unwrap() = None;
    });
    let decoded = reader.decode_patiently(&bytes, &mut shutdown, "test").await;
    heal.await.unwrap();
    assert_eq!(decoded.unwrap(), command());
    assert!(registry_stand_in.requests.load(Ordering::SeqCst) >= before + 4);

    // Shutdown during an outage returns the retryable error (the caller keeps the record).
    let reader = Codec::<Command>::new("hunter.commands.v1", registry(&registry_stand_in.url));
    *registry_stand_in.fail_with.lock().unwrap() = Some(502);
    let (trigger, mut shutdown) = crate::shutdown::channel();
    trigger.trigger();
    let error = reader
        .decode_patiently(&bytes, &mut shutdown, "test")
        .await
        .unwrap_err();
    assert!(error.is_retryable());
    // A record's own fault returns at once, whatever the registry does.
    let (_trigger, mut shutdown) = crate::shutdown::channel();
    assert!(matches!(
        reader
            .decode_patiently(&[0x7b], &mut shutdown, "test")
            .await,
        Err(CodecError::UnknownFraming(0x7b))
    ));
}

#[tokio::test]
async fn a_registry_schema_of_an_earlier_version_is_resolved_into_the_current_one() {
    let registry_stand_in = stand_in().await;
    let old = &crate::contracts::history("lead")[0];
    let old_registry = registry(&registry_stand_in.url).unwrap();
    let id = old_registry
        .register(
            "hunter.leads.v1-value",
            crate::contracts::CONTRACTS[1].versions[0].text,
        )
        .await
        .unwrap();
    // A lead written with version 0001 (20 fields) and Confluent framing.
    let lead = fixtures::sample_leads().remove(0);
    let mut single = fixtures::legacy_record(&lead, &crate::contracts::CONTRACTS[1].versions[0]);
    assert_eq!(&single[2..10], &old.legacy_fingerprint.unwrap());
    let body = single.split_off(10);
    let mut bytes = vec![CONFLUENT_MAGIC];
    bytes.extend_from_slice(&id.to_be_bytes());
    bytes.extend_from_slice(&body);
    let codec = Codec::<Lead>::new("hunter.leads.v1", Some(old_registry));
    let read = codec.decode(&bytes).await.unwrap();
    assert_eq!(read.lead_id, lead.lead_id);
    assert_eq!(read.version, lead.version);
    // Fields version 0001 lacked take the current schema's defaults.
    assert_eq!(read.email_provider, "unknown");
    assert_eq!(read.priority, "low");
    assert_eq!(read.enrichment_version, 0);
    assert_eq!(read.fetched_at, None);
}

#[tokio::test]
async fn a_part_of_a_record_reads_as_the_same_fields_of_the_whole_record() {
    use crate::records::ReferralVersion;
    let codec = Codec::<Referral>::new("partner-center.referrals.v1", None);
    let referrals = fixtures::sample_referrals();
    assert!(referrals.len() > 1);
    for referral in &referrals {
        // The current version: read straight into the part, the other fields skipped.
        let bytes = codec.encode_single_object(referral).unwrap();
        let part: ReferralVersion = codec.decode_as(&bytes).await.unwrap();
        assert_eq!(part, ReferralVersion::from(referral.clone()));
        assert!(!part.raw_json.is_empty());
        // Every earlier version: resolved into the whole record, then cut to the part.
        let released = crate::contracts::history("referral");
        for (version, known) in crate::contracts::CONTRACTS[0].versions.iter().zip(released) {
            // Written with that version's schema, named by its spec fingerprint.
            let mut old = fixtures::legacy_record(referral, version);
            old[2..10].copy_from_slice(&known.fingerprint);
            let whole = codec.decode(&old).await.unwrap();
            let part: ReferralVersion = codec.decode_as(&old).await.unwrap();
            assert_eq!(
                part,
                ReferralVersion::from(whole),
                "referral {}",
                version.file
            );
        }
    }
    // A body cut short is the record's error, as for the whole record.
    let bytes = codec.encode_single_object(&referrals[0]).unwrap();
    let error = codec
        .decode_as::<ReferralVersion>(&bytes[..bytes.len() - 3])
        .await
        .unwrap_err();
    assert!(!error.is_retryable() && !error.is_fatal(), "{error}");
}
