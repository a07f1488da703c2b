use std::collections::BTreeSet;
use std::path::PathBuf;

use apache_avro::rabin::Rabin;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::fixtures::{self, field_names, fixtures_dir, split_records};
use super::*;
use crate::codec::Codec;
use crate::records::{
    Command, Lead, Record, Referral, ReferralAction, ReferralActionResult, SourceState, SyncRun,
};

fn schemas_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../schemas")
}

#[test]
fn every_history_file_is_listed_and_the_newest_is_the_current_contract() {
    let mut on_disk = BTreeSet::new();
    for dir in std::fs::read_dir(schemas_dir().join("history")).unwrap() {
        let dir = dir.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(&dir).unwrap() {
            let file = file.unwrap().path();
            on_disk.insert(format!(
                "{}/{}",
                dir.file_name().unwrap().to_string_lossy(),
                file.file_name().unwrap().to_string_lossy()
            ));
        }
    }
    let listed: BTreeSet<String> = CONTRACTS
        .iter()
        .flat_map(|c| {
            c.versions
                .iter()
                .map(move |v| format!("{}/{}.avsc", c.name, v.file))
        })
        .collect();
    assert_eq!(on_disk, listed, "schemas/history and CONTRACTS disagree");
    for contract in CONTRACTS {
        let current =
            std::fs::read_to_string(schemas_dir().join(format!("{}.avsc", contract.name))).unwrap();
        let newest = contract.versions.last().unwrap();
        assert_eq!(
            canonical::parsing_canonical_form(&current).unwrap(),
            canonical::parsing_canonical_form(newest.text).unwrap(),
            "schemas/{0}.avsc changed: a contract change is a new version: copy it to \
             schemas/history/{0}/NNNN.avsc, add it to CONTRACTS and write its fixtures \
             (see docs/contracts.md)",
            contract.name
        );
        let files: Vec<&str> = contract.versions.iter().map(|v| v.file).collect();
        let expected: Vec<String> = (1..=files.len()).map(|n| format!("{n:04}")).collect();
        assert_eq!(
            files, expected,
            "{}: versions are numbered 0001, 0002, …",
            contract.name
        );
        assert_eq!(
            history(contract.name)
                .last()
                .unwrap()
                .schema
                .name()
                .unwrap()
                .fullname(None),
            contract.full_name
        );
    }
    let names = |r: &[&str]| r.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(
        CONTRACTS
            .iter()
            .map(|c| c.name.to_owned())
            .collect::<BTreeSet<_>>(),
        names(&[
            Referral::CONTRACT,
            Lead::CONTRACT,
            SyncRun::CONTRACT,
            SourceState::CONTRACT,
            Command::CONTRACT,
            ReferralAction::CONTRACT,
            ReferralActionResult::CONTRACT
        ]),
        "every record type has a history and every history a record type"
    );
}

#[test]
fn spec_fingerprints_are_the_committed_ones_computed_by_fastavro() {
    let committed = committed_fingerprints();
    let listed: usize = CONTRACTS.iter().map(|c| c.versions.len()).sum();
    assert_eq!(
        committed.len(),
        listed,
        "fingerprints.tsv has one line per version"
    );
    for (contract, file, spec, _) in &committed {
        let version = history(contract)
            .iter()
            .find(|v| v.file == file)
            .unwrap_or_else(|| panic!("fingerprints.tsv names {contract} {file}"));
        assert_eq!(
            canonical::hex(&version.fingerprint),
            canonical::hex(spec),
            "{contract} {file}: Hunter's spec fingerprint differs from fastavro's (tests/avro/fingerprints.py)"
        );
    }
}

#[test]
fn legacy_fingerprints_are_apache_avros_and_what_the_fixtures_carry() {
    for contract in CONTRACTS {
        for version in history(contract.name) {
            let Some(legacy) = version.legacy_fingerprint else {
                continue;
            };
            // apache-avro 0.22 (pinned) computes it: the value main's codec wrote.
            let apache = version.schema.fingerprint::<Rabin>().bytes;
            assert_eq!(&apache[..8], &legacy, "{}", version.label());
            assert_ne!(legacy, version.fingerprint, "{}", version.label());
            let bin = std::fs::read(
                fixtures_dir().join(format!("{}/{}.bin", contract.name, version.file)),
            )
            .unwrap();
            for record in split_records(&bin) {
                assert_eq!(
                    &record[2..10],
                    &legacy,
                    "{} fixture header",
                    version.label()
                );
            }
        }
    }
}

/// Full transitive compatibility: every version reads every other's records.
fn check_history(versions: &[&Schema]) -> Result<(), String> {
    for (i, older) in versions.iter().enumerate() {
        for (j, newer) in versions.iter().enumerate().skip(i + 1) {
            compatibility::mutually_readable(older, newer)
                .map_err(|e| format!("version {} and version {}: {e}", i + 1, j + 1))?;
        }
    }
    Ok(())
}

#[test]
fn every_contract_version_reads_and_is_read_by_every_other() {
    for contract in CONTRACTS {
        let versions: Vec<&Schema> = history(contract.name).iter().map(|v| &v.schema).collect();
        if let Err(error) = check_history(&versions) {
            panic!(
                "{}: a contract change must be backward and forward compatible with every \
                 released version (docs/contracts.md): {error}",
                contract.name
            );
        }
    }
}

/// The lead contract with one more version, test-only: `extra` is appended to its fields.
fn evolved_lead(extra: &str) -> Schema {
    let mut json: serde_json::Value =
        serde_json::from_str(CONTRACTS[1].versions.last().unwrap().text).unwrap();
    json["fields"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::from_str(extra).unwrap());
    Schema::parse(&json).unwrap()
}

#[test]
fn the_history_check_refuses_an_incompatible_change() {
    let lead: Vec<&Schema> = history("lead").iter().map(|v| &v.schema).collect();
    let with = |schema: &Schema| -> Result<(), String> {
        let mut all = lead.clone();
        all.push(schema);
        check_history(&all)
    };
    // Compatible: a new optional field with a default.
    assert_eq!(
        with(&evolved_lead(
            r#"{"name":"region","type":["null","string"],"default":null}"#
        )),
        Ok(())
    );
    // A new field without a default: old records lack it.
    let error = with(&evolved_lead(r#"{"name":"region","type":"string"}"#)).unwrap_err();
    assert!(
        error.contains("Lead.region") && error.contains("no default"),
        "{error}"
    );
    // A changed type.
    let mut json: serde_json::Value =
        serde_json::from_str(CONTRACTS[1].versions.last().unwrap().text).unwrap();
    json["fields"][18]["type"] = "string".into(); // version: long → string
    assert_eq!(json["fields"][18]["name"], "version");
    let error = with(&Schema::parse(&json).unwrap()).unwrap_err();
    assert!(error.contains("Lead.version"), "{error}");
    // A removed field that has no default: old readers need it.
    let mut json: serde_json::Value =
        serde_json::from_str(CONTRACTS[1].versions.last().unwrap().text).unwrap();
    json["fields"].as_array_mut().unwrap().remove(18);
    let error = with(&Schema::parse(&json).unwrap()).unwrap_err();
    assert!(
        error.contains("Lead.version") && error.contains("older"),
        "{error}"
    );
}

/// Compares a record read by today's code with what its fixture says it holds: every field the
/// writer had keeps its value; every other top-level field holds the current schema's default.
fn assert_fixture_reads<T: Record + Serialize + DeserializeOwned>() {
    let contract = fixtures::contract(T::CONTRACT);
    let current: serde_json::Value =
        serde_json::from_str(contract.versions.last().unwrap().text).unwrap();
    let defaults: std::collections::HashMap<String, Option<serde_json::Value>> = current["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["name"].as_str().unwrap().to_owned(),
                f.get("default").cloned(),
            )
        })
        .collect();
    let codec = Codec::<T>::new("fixtures", None);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    for version in contract.versions {
        let dir = fixtures_dir().join(contract.name);
        let bin = std::fs::read(dir.join(format!("{}.bin", version.file)))
            .unwrap_or_else(|e| panic!("{} {}: no fixture ({e})", contract.name, version.file));
        let expected: Vec<serde_json::Value> = serde_json::from_str(
            &std::fs::read_to_string(dir.join(format!("{}.json", version.file))).unwrap(),
        )
        .unwrap();
        let records = split_records(&bin);
        assert_eq!(records.len(), expected.len());
        let written = field_names(version);
        for (record, expected) in records.iter().zip(&expected) {
            let read: T = runtime
                .block_on(codec.decode(record))
                .unwrap_or_else(|e| panic!("{} {}: {e}", contract.name, version.file));
            let read = serde_json::to_value(&read).unwrap();
            for (field, default) in &defaults {
                let got = &read[field.as_str()];
                if written.contains(field) {
                    assert_eq!(
                        got,
                        &expected[field.as_str()],
                        "{} {} {field}",
                        contract.name,
                        version.file
                    );
                } else {
                    let default = default.as_ref().unwrap_or_else(|| {
                        panic!(
                            "{field} is new since {} {} and has no default",
                            contract.name, version.file
                        )
                    });
                    assert_eq!(
                        got, default,
                        "{} {}: {field} takes its default",
                        contract.name, version.file
                    );
                }
            }
        }
    }
}

#[test]
fn fixture_records_of_every_released_version_are_read_by_todays_code() {
    assert_fixture_reads::<Referral>();
    assert_fixture_reads::<Lead>();
    assert_fixture_reads::<SyncRun>();
    assert_fixture_reads::<SourceState>();
    assert_fixture_reads::<Command>();
    assert_fixture_reads::<ReferralAction>();
    assert_fixture_reads::<ReferralActionResult>();
}

#[test]
fn fixtures_exist_for_every_released_version() {
    for contract in CONTRACTS {
        for version in contract.versions {
            for ext in ["bin", "json"] {
                let path = fixtures_dir().join(format!("{}/{}.{ext}", contract.name, version.file));
                assert!(
                    path.exists(),
                    "{} is missing: run `cargo test -p hunter-core --lib contracts::fixtures::write -- --ignored` once when a version is released",
                    path.display()
                );
            }
        }
    }
}

/// A test-only next version of the lead: records it writes are read by today's code, and
/// today's records by a reader of it.
#[tokio::test]
async fn an_evolved_contract_reads_and_is_read_by_todays() {
    let evolved = evolved_lead(r#"{"name":"region","type":"string","default":"unknown"}"#);
    let released = history("lead");
    // Today's reader with the evolved version in its history (as if released, then rolled
    // back: old code meeting newer records).
    let evolved_text = serde_json::to_string(&evolved).unwrap();
    let form = canonical::parsing_canonical_form(&evolved_text).unwrap();
    let mut lead = fixtures::sample_leads().remove(0);
    lead.score = 91;
    // Written by a writer of the evolved version: its spec fingerprint, its body.
    let value = {
        let body = apache_avro::writer::datum::GenericDatumWriter::builder(Lead::schema())
            .build()
            .unwrap()
            .write_ser_to_vec(&lead)
            .unwrap();
        let mut value = apache_avro::reader::datum::GenericDatumReader::builder(Lead::schema())
            .build()
            .unwrap()
            .read_value(&mut body.as_slice())
            .unwrap();
        if let apache_avro::types::Value::Record(fields) = &mut value {
            fields.push((
                "region".into(),
                apache_avro::types::Value::String("emea".into()),
            ));
        }
        value
    };
    let mut record = crate::codec::SINGLE_OBJECT_MAGIC.to_vec();
    record.extend_from_slice(&canonical::fingerprint(&form));
    record.extend(
        apache_avro::writer::datum::GenericDatumWriter::builder(&evolved)
            .build()
            .unwrap()
            .write_value_to_vec(value)
            .unwrap(),
    );
    // Unknown to today's codec: a dead letter, not a guess.
    let today = Codec::<Lead>::new("t", None);
    assert!(matches!(
        today.decode(&record).await,
        Err(crate::codec::CodecError::UnknownFingerprint(_))
    ));
    // Known (the evolved version added to the history, as a later release does): resolved.
    let mut with_evolved: Vec<Released> = released
        .iter()
        .map(|v| Released {
            contract: v.contract,
            file: v.file,
            schema: v.schema.clone(),
            canonical: v.canonical.clone(),
            fingerprint: v.fingerprint,
            legacy_fingerprint: v.legacy_fingerprint,
        })
        .collect();
    let current = with_evolved.pop().unwrap();
    with_evolved.push(Released {
        contract: "lead",
        file: "0004",
        schema: evolved.clone(),
        canonical: form.clone(),
        fingerprint: canonical::fingerprint(&form),
        legacy_fingerprint: None,
    });
    with_evolved.push(current);
    let with_evolved: &'static [Released] = Box::leak(with_evolved.into_boxed_slice());
    let reader = Codec::<Lead>::with_history("t", None, with_evolved);
    let read = reader.decode(&record).await.unwrap();
    assert_eq!(
        read, lead,
        "the field today's reader lacks is skipped, the rest read"
    );
    // And today's records, read by a reader of the evolved version, get its default.
    let today_record = today.encode_single_object(&lead).unwrap();
    let resolved = apache_avro::reader::datum::GenericDatumReader::builder(Lead::schema())
        .reader_schema(&evolved)
        .build()
        .unwrap()
        .read_value(&mut &today_record[10..])
        .unwrap();
    let apache_avro::types::Value::Record(fields) = resolved else {
        panic!("a record")
    };
    assert_eq!(
        fields
            .iter()
            .find(|(name, _)| name == "region")
            .map(|(_, v)| v.clone()),
        Some(apache_avro::types::Value::String("unknown".into()))
    );
}

/// Apache Avro's own canonical-form and fingerprint test cases (share/test/data/
/// schema-tests.txt in apache/avro; not copied here): `AVRO_SCHEMA_TESTS=path cargo test -p
/// hunter-core --lib contracts::tests::apache_avro_schema_tests -- --ignored`.
#[test]
#[ignore = "needs apache/avro's share/test/data/schema-tests.txt in AVRO_SCHEMA_TESTS"]
fn apache_avro_schema_tests() {
    let path = std::env::var("AVRO_SCHEMA_TESTS").expect("AVRO_SCHEMA_TESTS");
    let text = std::fs::read_to_string(path).unwrap();
    let (mut cases, mut checked) = (0, 0);
    // Cases start at a line `// NNN`; other `//` lines are comments.
    let mut starts: Vec<usize> = Vec::new();
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let t = line.trim();
        if t.len() > 3 && t.starts_with("// ") && t[3..].chars().all(|c| c.is_ascii_digit()) {
            starts.push(offset);
        }
        offset += line.len();
    }
    starts.push(text.len());
    for window in starts.windows(2) {
        let case: String = text[window[0]..window[1]]
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        let field = |name: &str| -> Option<String> {
            // `<<name value` on one line, or `<<name` then lines up to a line `name`.
            let lines: Vec<&str> = case.lines().collect();
            let start = lines
                .iter()
                .position(|l| l.starts_with(&format!("<<{name}")))?;
            let first = lines[start][name.len() + 2..].trim();
            if !first.is_empty() {
                return Some(first.to_owned());
            }
            let end = lines[start + 1..].iter().position(|l| l.trim() == name)? + start + 1;
            Some(lines[start + 1..end].join("\n"))
        };
        let Some(input) = field("INPUT") else {
            continue;
        };
        cases += 1;
        let expected = field("canonical").unwrap();
        let form =
            canonical::parsing_canonical_form(&input).unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(form, expected, "{input}");
        if let Some(fingerprint) = field("fingerprint") {
            let fingerprint: i64 = fingerprint.parse().unwrap();
            assert_eq!(
                canonical::crc64_avro(expected.as_bytes()) as i64,
                fingerprint,
                "{input}"
            );
            checked += 1;
        }
    }
    assert!(
        cases > 30 && checked > 10,
        "{cases} cases, {checked} fingerprints"
    );
}
