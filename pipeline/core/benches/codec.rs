//! Avro codec throughput on one core: the CPU ceiling under every stage that reads or writes
//! records (the source encodes referrals, the processor decodes referrals and encodes leads,
//! the sink decodes leads).
//!
//! `cargo bench -p hunter-core --bench codec` (no stack needed); `tests/bench.sh` runs it with
//! the others. N records (default 200,000; `HUNTER_BENCH_RECORDS`), three rounds, median, one
//! thread, records per second for:
//! - referral: parse the API's JSON into a `Referral` (what the source does per item), encode
//!   it (single-object framing), decode it;
//! - lead: derive it from the referral (`Lead::from_referral`, the processor's pure part),
//!   encode, decode;
//! - lead written by an earlier contract version (`schemas/fixtures/lead/0001.bin`, 20 of
//!   today's 36 fields): decode by Avro schema resolution (writer schema → generic value →
//!   today's schema → the Rust type), the path every record older than the current contract
//!   takes.
//!
//! The referral is the full sample of the API (`src/records/testdata/full_referral.json`,
//! 4.8 kB of JSON, its raw text carried inside) with a distinct id per record.

use std::hint::black_box;
use std::time::Instant;

use hunter_core::codec::Codec;
use hunter_core::records::{Ingest, Lead, Referral, Timestamp};

const FULL_REFERRAL: &str = include_str!("../src/records/testdata/full_referral.json");

/// Records per second for `count` calls of `work(index)`.
fn rate(count: usize, mut work: impl FnMut(usize)) -> f64 {
    let started = Instant::now();
    for index in 0..count {
        work(index);
    }
    count as f64 / started.elapsed().as_secs_f64()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn ingest() -> Ingest {
    Ingest {
        tenant: "bench".into(),
        fetched_at: Timestamp::now(),
        sync_run_id: "bench".into(),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(()); // `cargo test --benches` only lists
    }
    let count: usize = std::env::var("HUNTER_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    // A thousand distinct referrals and leads, cycled: distinct ids without holding N records.
    let texts: Vec<String> = (0..1_000)
        .map(|i| {
            FULL_REFERRAL.replacen(
                "0a1b2c3d-1111-4aaa-8bbb-000000000001",
                &format!("0a1b2c3d-1111-4aaa-8bbb-{i:012}"),
                1,
            )
        })
        .collect();
    let referrals: Vec<Referral> = texts
        .iter()
        .map(|text| Referral::from_api_json(text, ingest()))
        .collect::<Result<_, _>>()?;
    let leads: Vec<Lead> = referrals
        .iter()
        .map(|referral| Lead::from_referral(referral, Timestamp::now()))
        .collect::<Result<_, _>>()?;
    let referral_codec = Codec::<Referral>::new("bench.referrals", None);
    let lead_codec = Codec::<Lead>::new("bench.leads", None);
    let encoded_referrals: Vec<Vec<u8>> = referrals
        .iter()
        .map(|r| referral_codec.encode_single_object(r))
        .collect::<Result<_, _>>()?;
    let encoded_leads: Vec<Vec<u8>> = leads
        .iter()
        .map(|l| lead_codec.encode_single_object(l))
        .collect::<Result<_, _>>()?;
    // Leads as contract version 0001 wrote them (the committed fixtures), cycled.
    let old_leads: Vec<Vec<u8>> = {
        let mut bytes: &[u8] = include_bytes!("../../../schemas/fixtures/lead/0001.bin");
        let mut records = Vec::new();
        while !bytes.is_empty() {
            let (length, rest) = bytes.split_at(4);
            let length = u32::from_be_bytes(length.try_into()?) as usize;
            records.push(rest[..length].to_vec());
            bytes = &rest[length..];
        }
        records
    };
    // Decoding is async (a registry may have to be asked); single-object records never wait.
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;

    let measures: [(&str, &str); 7] = [
        ("referral: parse the API's JSON", "info"),
        ("referral: Avro encode", "ceiling"),
        ("referral: Avro decode", "ceiling"),
        ("lead: derive from the referral", "info"),
        ("lead: Avro encode", "ceiling"),
        ("lead: Avro decode", "ceiling"),
        ("lead v0001: Avro decode, resolved", "info"),
    ];
    let mut rounds: Vec<Vec<f64>> = vec![Vec::new(); measures.len()];
    for round in 1..=3 {
        let n = texts.len();
        let results = [
            rate(count, |i| {
                black_box(Referral::from_api_json(&texts[i % n], ingest()).unwrap());
            }),
            rate(count, |i| {
                black_box(
                    referral_codec
                        .encode_single_object(&referrals[i % n])
                        .unwrap(),
                );
            }),
            runtime.block_on(async {
                let started = Instant::now();
                for i in 0..count {
                    black_box(
                        referral_codec
                            .decode(&encoded_referrals[i % n])
                            .await
                            .unwrap(),
                    );
                }
                count as f64 / started.elapsed().as_secs_f64()
            }),
            rate(count, |i| {
                black_box(Lead::from_referral(&referrals[i % n], Timestamp::now()).unwrap());
            }),
            rate(count, |i| {
                black_box(lead_codec.encode_single_object(&leads[i % n]).unwrap());
            }),
            runtime.block_on(async {
                let started = Instant::now();
                for i in 0..count {
                    black_box(lead_codec.decode(&encoded_leads[i % n]).await.unwrap());
                }
                count as f64 / started.elapsed().as_secs_f64()
            }),
            runtime.block_on(async {
                let started = Instant::now();
                for i in 0..count {
                    black_box(
                        lead_codec
                            .decode(&old_leads[i % old_leads.len()])
                            .await
                            .unwrap(),
                    );
                }
                count as f64 / started.elapsed().as_secs_f64()
            }),
        ];
        eprintln!(
            "round {round}: {}",
            measures
                .iter()
                .zip(&results)
                .map(|((name, _), rate)| format!("{name} {rate:.0}/s"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        for (all, result) in rounds.iter_mut().zip(results) {
            all.push(result);
        }
    }

    println!(
        "codec bench, {count} records per measure, one thread, median of 3 \
         (referral {} B, lead {} B of Avro):",
        encoded_referrals[0].len(),
        encoded_leads[0].len()
    );
    let mut rows = Vec::new();
    for ((name, kind), all) in measures.iter().zip(&rounds) {
        let median = median(all.clone());
        println!("  {name:<34} {median:>10.0} records/s");
        rows.push(serde_json::json!({
            "label": name,
            "unit": "records/s",
            "kind": kind,
            "median": median,
            "rounds": all,
        }));
    }
    let result = serde_json::json!({
        "bench": "codec",
        "size": count,
        "size_unit": "records per measure",
        "rows": rows,
        "ratios": [],
        "notes": [format!(
            "one thread; Avro single-object encoding; a referral is {} B of Avro (its raw JSON \
             inside), a lead {} B",
            encoded_referrals[0].len(),
            encoded_leads[0].len()
        )],
        // A smoke run (tests/bench.sh --smoke): a tiny size on a debug build, figures meaningless.
        "smoke": std::env::var("HUNTER_BENCH_SMOKE").is_ok_and(|v| v == "1"),
    });
    println!("RESULT {result}");
    Ok(())
}
