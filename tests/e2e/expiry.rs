//! Referral expiry end to end (docs/leads.md), against the real broker, ClickHouse, the `hunter`
//! binary and the simulator: referrals whose expiry is near (Partner Center's
//! `expirationDateTime`, or Hunter's created + 14 days estimate) reach ClickHouse with
//! `expires_at`; `GET /api/v1/leads` filters and sorts by it and refuses bad values with a 400
//! naming the parameter; the gauge `hunter_api_referrals_expiring_soon` counts the incoming `New`
//! ones expiring within 48 h and follows an answered referral on its next refresh. The page
//! (headless Chromium, `tests/browser/expiry.mjs`) shows the column, filters and sorts by it.

use std::collections::HashMap;
use std::time::Duration;

use hunter_e2e::{Deployment, free_port, generated_referrals, metric_sum, wait_for};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

const GAUGE: &str = "hunter_api_referrals_expiring_soon";

fn text(instant: OffsetDateTime) -> String {
    instant
        .replace_nanosecond(0)
        .unwrap()
        .format(&Rfc3339)
        .unwrap()
}

/// `template` (a generated referral, for a realistic shape) made into referral `id` with the
/// given direction, status, creation and expiry.
fn referral(
    template: &Value,
    id: &str,
    direction: &str,
    status: &str,
    created: OffsetDateTime,
    expires: Option<OffsetDateTime>,
) -> Value {
    let mut referral = template.clone();
    referral["id"] = json!(id);
    referral["direction"] = json!(direction);
    referral["status"] = json!(status);
    referral["substatus"] = json!(if status == "New" {
        "Pending"
    } else {
        "Accepted"
    });
    referral["createdDateTime"] = json!(text(created));
    referral["updatedDateTime"] = json!(text(created + time::Duration::hours(1)));
    referral["expirationDateTime"] = expires.map_or(Value::Null, |at| json!(text(at)));
    referral["acceptedDateTime"] = Value::Null;
    referral["closedDateTime"] = Value::Null;
    referral["team"] = json!([
        { "firstName": "Sam", "email": " Sam@Partner.Example " },
        { "firstName": "Kim", "email": "kim@partner.example" },
    ]);
    referral
}

fn ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|item| item["lead_id"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiring_referrals_reach_clickhouse_the_api_and_the_gauge() -> anyhow::Result<()> {
    let now = OffsetDateTime::now_utc();
    let hours = time::Duration::hours;
    let days = time::Duration::days;
    // Generated referrals (created in 2024: their expiries are long past) around six of ours.
    let mut referrals = generated_referrals(16, 29)?;
    let template = referrals[0].clone();
    let ours = [
        // Given by Partner Center, 10 h ahead: expiring soon.
        referral(
            &template,
            "exp-given-10h",
            "Incoming",
            "New",
            now - days(13),
            Some(now + hours(10)),
        ),
        // No expirationDateTime, created 13 days ago: estimated, a day ahead.
        referral(
            &template,
            "exp-estimated-1d",
            "Incoming",
            "New",
            now - days(13),
            None,
        ),
        // Given, 5 days ahead: not within 48 h.
        referral(
            &template,
            "exp-given-5d",
            "Incoming",
            "New",
            now - days(2),
            Some(now + days(5)),
        ),
        // Accepted already, with an expiry 5 h ahead: in the API's window, not in the gauge.
        referral(
            &template,
            "exp-active-5h",
            "Incoming",
            "Active",
            now - days(3),
            Some(now + hours(5)),
        ),
        // Outgoing New without one: no expiry.
        referral(
            &template,
            "exp-outgoing",
            "Outgoing",
            "New",
            now - days(13),
            None,
        ),
        // Estimated six days ago: past.
        referral(
            &template,
            "exp-estimated-past",
            "Incoming",
            "New",
            now - days(20),
            None,
        ),
    ];
    referrals.extend(ours.iter().cloned());
    let total = referrals.len() as u64;
    let mut deployment = Deployment::new(&referrals)?;
    deployment.run_all_until_leads(total).await?;

    // --- ClickHouse: the columns as derived ---------------------------------------------------
    let rows = deployment
        .clickhouse
        .rows(
            "SELECT lead_id, toString(toUnixTimestamp(expires_at)) AS expires, \
             expires_at_estimated AS estimated, owner_emails, toString(closing_at) AS closing \
             FROM leads FINAL WHERE lead_id LIKE 'exp-%'",
        )
        .await?;
    let by_id: HashMap<String, Value> = rows
        .into_iter()
        .map(|row| (row["lead_id"].as_str().unwrap_or_default().to_owned(), row))
        .collect();
    assert_eq!(by_id.len(), 6, "{by_id:#?}");
    let seconds = |at: OffsetDateTime| {
        at.replace_nanosecond(0)
            .unwrap()
            .unix_timestamp()
            .to_string()
    };
    let expect = |id: &str, expires: Option<OffsetDateTime>, estimated: u64| {
        let row = &by_id[id];
        assert_eq!(
            row["expires"].as_str().map(str::to_owned),
            expires.map(seconds),
            "{id}: {row}"
        );
        assert_eq!(row["estimated"].as_u64(), Some(estimated), "{id}: {row}");
    };
    expect("exp-given-10h", Some(now + hours(10)), 0);
    // created + 14 days, created being whole seconds.
    expect("exp-estimated-1d", Some(now - days(13) + days(14)), 1);
    expect("exp-given-5d", Some(now + days(5)), 0);
    expect("exp-active-5h", Some(now + hours(5)), 0);
    expect("exp-outgoing", None, 0);
    expect("exp-estimated-past", Some(now - days(6)), 1);
    assert_eq!(
        by_id["exp-given-10h"]["owner_emails"],
        json!(["sam@partner.example", "kim@partner.example"])
    );
    assert!(by_id["exp-given-10h"]["closing"].is_string());
    // The history keeps what each version said (the sink inserts it after `leads`).
    let history = wait_for("the history row", Duration::from_secs(30), || async {
        let rows = deployment
            .clickhouse
            .rows("SELECT expires_at_estimated AS e FROM lead_history FINAL WHERE lead_id = 'exp-estimated-1d'")
            .await?;
        Ok((!rows.is_empty()).then_some(rows))
    })
    .await?;
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!(history[0]["e"].as_u64(), Some(1));

    // --- The API: filter, sort, bad values -----------------------------------------------------
    let (status, page) = deployment
        .get("/api/v1/leads?expiring_within_hours=48&sort=expires_at")
        .await?;
    assert_eq!(status, 200, "{page}");
    assert_eq!(
        ids(&page),
        ["exp-active-5h", "exp-given-10h", "exp-estimated-1d"],
        "{page}"
    );
    assert_eq!(page["sort"], "expires_at");
    let first = &page["items"][1];
    assert_eq!(first["expires_at"], json!(text(now + hours(10))), "{first}");
    assert_eq!(first["expires_at_estimated"], false);
    assert_eq!(page["items"][2]["expires_at_estimated"], true);
    assert_eq!(
        first["owner_emails"],
        json!(["sam@partner.example", "kim@partner.example"])
    );

    let (_, waiting) = deployment
        .get("/api/v1/leads?status=New&direction=Incoming&expiring_within_hours=48&sort=expires_at")
        .await?;
    assert_eq!(
        ids(&waiting),
        ["exp-given-10h", "exp-estimated-1d"],
        "{waiting}"
    );

    // Everything that expired before tomorrow, the generated referrals' 2024 dates included;
    // soonest first, pages joined by the cursor.
    let before = text(now + days(1) - hours(1));
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/api/v1/leads?expires_before={before}&sort=expires_at&limit=3");
        if let Some(cursor) = &cursor {
            path.push_str(&format!("&cursor={cursor}"));
        }
        let (status, page) = deployment.get(&path).await?;
        assert_eq!(status, 200, "{page}");
        let expiries: Vec<&str> = page["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|item| item["expires_at"].as_str())
            .collect();
        assert_eq!(
            expiries.len(),
            page["items"].as_array().map_or(0, Vec::len),
            "{page}"
        );
        seen.extend(expiries.iter().map(|at| (*at).to_owned()));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen, sorted, "soonest first across pages");
    assert!(
        seen.iter().all(|at| at.as_str() < before.as_str()),
        "{seen:?}"
    );
    let expected = deployment
        .clickhouse
        .rows(&format!(
            "SELECT count() AS n FROM leads FINAL WHERE expires_at < parseDateTimeBestEffort('{before}')"
        ))
        .await?;
    assert_eq!(
        seen.len() as u64,
        expected[0]["n"]
            .as_str()
            .and_then(|n| n.parse().ok())
            .or(expected[0]["n"].as_u64())
            .unwrap(),
        "{seen:?}"
    );
    assert!(
        seen.len() >= 3,
        "the past estimate, the 5 h and 10 h ones: {seen:?}"
    );

    for (query, parameter) in [
        ("expiring_within_hours=0", "expiring_within_hours"),
        ("expiring_within_hours=soon", "expiring_within_hours"),
        ("expiring_within_hours=9000", "expiring_within_hours"),
        ("expires_before=tomorrow", "expires_before"),
        ("sort=expiry", "sort"),
    ] {
        let (status, body) = deployment.get(&format!("/api/v1/leads?{query}")).await?;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error"]["parameter"], parameter, "{query}: {body}");
    }

    // --- The page in headless Chromium: column, filter, sort, the detail ----------------------
    hunter_e2e::browser::browser_dir()?;
    let expect = json!({
        "soon": ["exp-active-5h", "exp-given-10h", "exp-estimated-1d"],
        "estimated": "exp-estimated-1d",
    });
    hunter_e2e::browser::run_script(
        "expiry.mjs",
        &[
            ("HUNTER_WEB_URL", deployment.api.clone()),
            ("HUNTER_WEB_TOKEN", deployment.api_token.clone()),
            ("HUNTER_WEB_EXPECT", expect.to_string()),
        ],
        "expiry page checks passed",
        || deployment.logs(),
    )
    .await?;

    // --- The gauge ----------------------------------------------------------------------------
    // An API started now counts at once: the two incoming New referrals within 48 h.
    let port = free_port();
    deployment.start_role_on("api", port).await?;
    let metrics_url = format!("http://127.0.0.1:{port}/metrics");
    let gauge = |url: String| async move {
        let text = reqwest::get(url).await?.text().await?;
        Ok::<_, anyhow::Error>(metric_sum(&text, GAUGE, &[]))
    };
    let result = wait_for("the gauge to count 2", Duration::from_secs(30), || async {
        Ok((gauge(metrics_url.clone()).await? == Some(2.0)).then_some(()))
    })
    .await;
    if let Err(error) = result {
        anyhow::bail!("{error}\n{}", deployment.logs());
    }

    // The 10 h one is accepted in Partner Center: after the sync, the gauge's next refresh (at
    // most a minute later, the process is not restarted) counts one.
    let mut answered = ours[0].clone();
    answered["status"] = json!("Active");
    answered["substatus"] = json!("Accepted");
    answered["acceptedDateTime"] = json!(text(OffsetDateTime::now_utc()));
    answered["updatedDateTime"] = json!(text(OffsetDateTime::now_utc()));
    answered["eTag"] = json!(format!("\"{}\"", uuid::Uuid::new_v4()));
    for referral in referrals.iter_mut() {
        if referral["id"] == "exp-given-10h" {
            *referral = answered.clone();
        }
    }
    deployment.write_referrals(&referrals)?;
    wait_for(
        "the simulator serving the change",
        Duration::from_secs(30),
        || async {
            let truth = deployment.simulator_truth().await?;
            Ok(truth
                .iter()
                .any(|(id, etag)| {
                    id == "exp-given-10h" && Some(etag.as_str()) == answered["eTag"].as_str()
                })
                .then_some(()))
        },
    )
    .await?;
    deployment.request_sync(None).await?;
    let result = wait_for("the acceptance in ClickHouse", Duration::from_secs(60), || async {
        let rows = deployment
            .clickhouse
            .rows("SELECT status, toString(toUnixTimestamp(accepted_at)) AS a FROM leads FINAL WHERE lead_id = 'exp-given-10h'")
            .await?;
        Ok((rows.first().is_some_and(|r| r["status"] == "Active" && r["a"].is_string())).then_some(()))
    })
    .await;
    if let Err(error) = result {
        anyhow::bail!("{error}\n{}", deployment.logs());
    }
    let result = wait_for(
        "the gauge's next refresh to count 1",
        Duration::from_secs(90),
        || async { Ok((gauge(metrics_url.clone()).await? == Some(1.0)).then_some(())) },
    )
    .await;
    if let Err(error) = result {
        anyhow::bail!("{error}\n{}", deployment.logs());
    }
    deployment.teardown().await;
    Ok(())
}
