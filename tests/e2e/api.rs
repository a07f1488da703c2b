//! The API on a real deployment: simulator → `hunter run all` → broker → ClickHouse → API.
//!
//! Expected answers come from the leads as stored in ClickHouse, filtered and sorted here in
//! Rust (an oracle independent of the API's SQL), and from the simulator's referrals.

use std::collections::HashSet;
use std::time::Duration;

use hunter_e2e::{Deployment, generated_referrals, wait_for};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const REFERRALS: usize = 240;

/// A lead as stored, for the oracle.
#[derive(Debug, Clone)]
struct Stored {
    id: String,
    name: String,
    company: String,
    domain: String,
    status: String,
    country: String,
    provider: String,
    score: u64,
    updated: u64,
}

async fn stored_leads(deployment: &Deployment) -> anyhow::Result<Vec<Stored>> {
    let rows = deployment
        .clickhouse
        .rows(
            "SELECT lead_id, ifNull(name, '') AS name, ifNull(company_name, '') AS company, \
             ifNull(company_domain, '') AS domain, ifNull(status, '') AS status, \
             ifNull(country, '') AS country, email_provider, toString(score) AS score, \
             toString(toUInt32(updated_at)) AS updated FROM leads FINAL",
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| {
            let text = |key: &str| row[key].as_str().unwrap_or_default().to_owned();
            Stored {
                id: text("lead_id"),
                name: text("name"),
                company: text("company"),
                domain: text("domain"),
                status: text("status"),
                country: text("country"),
                provider: text("email_provider"),
                score: text("score").parse().unwrap(),
                updated: text("updated").parse().unwrap(),
            }
        })
        .collect())
}

/// Every page of `query` (without `limit`/`cursor`), following `next_cursor`.
async fn all_pages(
    deployment: &Deployment,
    query: &str,
    limit: u32,
) -> anyhow::Result<(Vec<Value>, u64)> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    let mut total = None;
    for _ in 0..100 {
        let mut path = format!("/api/v1/leads?limit={limit}");
        if !query.is_empty() {
            path.push('&');
            path.push_str(query);
        }
        if let Some(cursor) = &cursor {
            path.push_str("&cursor=");
            path.push_str(cursor);
        }
        let (status, page) = deployment.get(&path).await?;
        anyhow::ensure!(status == StatusCode::OK, "{path}: {status} {page}");
        let page_total = page["total"].as_u64().unwrap();
        anyhow::ensure!(
            *total.get_or_insert(page_total) == page_total,
            "total changed between pages"
        );
        let page_items = page["items"].as_array().unwrap();
        anyhow::ensure!(page_items.len() <= limit as usize, "page over its limit");
        items.extend(page_items.iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return Ok((items, total.unwrap_or(0))),
        }
    }
    anyhow::bail!("more than 100 pages")
}

fn ids(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|item| item["lead_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leads_filters_pages_details_and_sync_follow_up() -> anyhow::Result<()> {
    let referrals = generated_referrals(REFERRALS, 11)?;
    let mut deployment = Deployment::new(&referrals)?;
    let read_token = "read-only-token-0123456789".to_owned();
    deployment
        .env
        .insert("HUNTER_API_READ_TOKEN".into(), read_token.clone());
    deployment.env.insert(
        "HUNTER_API_CORS_ORIGINS".into(),
        "http://allowed.example".into(),
    );
    deployment.run_all_until_leads(REFERRALS as u64).await?;
    let stored = stored_leads(&deployment).await?;
    assert_eq!(stored.len(), REFERRALS);

    // Every lead exactly once over all pages, newest update first, ties by lead id descending.
    let (items, total) = all_pages(&deployment, "", 37).await?;
    assert_eq!(total, REFERRALS as u64);
    let mut expected = stored.clone();
    expected.sort_by(|a, b| b.updated.cmp(&a.updated).then(b.id.cmp(&a.id)));
    assert_eq!(
        ids(&items),
        expected.iter().map(|s| s.id.clone()).collect::<Vec<_>>()
    );

    // The default page: 50 items, a cursor, the total.
    let (status, page) = deployment.get("/api/v1/leads").await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["items"].as_array().unwrap().len(), 50);
    assert_eq!(page["limit"], json!(50));
    assert_eq!(page["sort"], json!("-updated_at"));
    assert!(page["next_cursor"].is_string());

    // Filters, each against the oracle.
    let some_country = stored
        .iter()
        .find(|s| !s.country.is_empty())
        .unwrap()
        .country
        .clone();
    let word = stored
        .iter()
        .find_map(|s| s.company.split_whitespace().next().map(str::to_owned))
        .unwrap();
    let needle = word.to_lowercase();
    type Oracle = Box<dyn Fn(&Stored) -> bool>;
    let (country_for_oracle, needle_for_oracle) = (some_country.clone(), needle.clone());
    let cases: Vec<(String, Oracle)> = vec![
        (
            "status=New".into(),
            Box::new(|s: &Stored| s.status == "New"),
        ),
        (
            "status=active,closed".into(),
            Box::new(|s: &Stored| s.status == "Active" || s.status == "Closed"),
        ),
        (
            format!("country={}", some_country.to_lowercase()),
            Box::new(move |s: &Stored| s.country == country_for_oracle),
        ),
        ("min_score=40".into(), Box::new(|s: &Stored| s.score >= 40)),
        (
            "provider=unknown".into(),
            Box::new(|s: &Stored| s.provider == "unknown"),
        ),
        (
            format!("q={word}"),
            Box::new(move |s: &Stored| {
                [&s.company, &s.name, &s.domain]
                    .iter()
                    .any(|t| t.to_lowercase().contains(&needle_for_oracle))
            }),
        ),
        (
            "status=New&min_score=20".into(),
            Box::new(|s: &Stored| s.status == "New" && s.score >= 20),
        ),
    ];
    for (query, oracle) in &cases {
        let (items, total) = all_pages(&deployment, query, 100).await?;
        let mut want: Vec<&Stored> = stored.iter().filter(|s| oracle(s)).collect();
        want.sort_by(|a, b| b.updated.cmp(&a.updated).then(b.id.cmp(&a.id)));
        assert!(
            !want.is_empty(),
            "{query}: the data set has no match; pick another"
        );
        assert_eq!(total, want.len() as u64, "{query}: total");
        assert_eq!(
            ids(&items),
            want.iter().map(|s| s.id.clone()).collect::<Vec<_>>(),
            "{query}: items"
        );
    }
    // updated_since: the newest lead's own second selects it and everything as new.
    let newest = expected[0].updated;
    let since = time::OffsetDateTime::from_unix_timestamp(newest as i64)?
        .format(&time::format_description::well_known::Rfc3339)?;
    let (items, total) = all_pages(&deployment, &format!("updated_since={since}"), 100).await?;
    let want = stored.iter().filter(|s| s.updated >= newest).count();
    assert_eq!((items.len(), total), (want, want as u64));

    // Sorts: by score descending and company ascending, stable over pages.
    let (items, _) = all_pages(&deployment, "sort=-score", 41).await?;
    let scores: Vec<u64> = items.iter().map(|i| i["score"].as_u64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    assert_eq!(
        ids(&items).into_iter().collect::<HashSet<_>>().len(),
        REFERRALS
    );
    let (items, _) = all_pages(&deployment, "sort=company", 41).await?;
    let companies: Vec<String> = items
        .iter()
        .map(|i| i["company_name"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(companies.windows(2).all(|w| w[0] <= w[1]), "{companies:?}");
    assert_eq!(
        ids(&items).into_iter().collect::<HashSet<_>>().len(),
        REFERRALS
    );

    // Bad parameters: 400 with a JSON error naming the parameter.
    for (query, parameter) in [
        ("status=Open", "status"),
        ("limit=0", "limit"),
        ("limit=abc", "limit"),
        ("limit=100000", "limit"),
        ("min_score=200", "min_score"),
        ("updated_since=last-week", "updated_since"),
        ("country=Narnia", "country"),
        ("cursor=garbage", "cursor"),
        ("sort=password", "sort"),
    ] {
        let (status, body) = deployment.get(&format!("/api/v1/leads?{query}")).await?;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert_eq!(body["error"]["code"], json!("invalid_parameter"), "{query}");
        assert_eq!(
            body["error"]["parameter"],
            json!(parameter),
            "{query}: {body}"
        );
    }
    let (status, body) = deployment.get("/api/v1/leads?colour=red").await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("colour"),
        "{body}"
    );
    // A cursor of another sort is refused rather than misread.
    let (_, page) = deployment.get("/api/v1/leads?limit=5").await?;
    let cursor = page["next_cursor"].as_str().unwrap();
    let (status, body) = deployment
        .get(&format!("/api/v1/leads?sort=score&cursor={cursor}"))
        .await?;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["parameter"], json!("cursor"));
    // Text that would break naive SQL is only ever a search term.
    let (status, body) = deployment
        .get("/api/v1/leads?q=%27%29%3B%20DROP%20TABLE%20leads%3B%20--")
        .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["total"], json!(0));
    assert_eq!(stored_leads(&deployment).await?.len(), REFERRALS);

    // A lead with its history, and its referral exactly as the simulator served it.
    let referral = &referrals[3];
    let id = referral["id"].as_str().unwrap();
    let (status, detail) = deployment.get(&format!("/api/v1/leads/{id}")).await?;
    assert_eq!(status, StatusCode::OK, "{detail}");
    assert_eq!(detail["lead"]["lead_id"], json!(id));
    assert_eq!(detail["lead"]["status"], referral["status"]);
    assert_eq!(detail["lead"]["name"], referral["name"]);
    let history = detail["history"].as_array().unwrap();
    assert_eq!(history.len(), 1, "{detail}");
    assert_eq!(history[0]["change_type"], json!("created"));
    let (status, stored_referral) = deployment.get(&format!("/api/v1/referrals/{id}")).await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&stored_referral["referral"], referral);
    for path in [
        "/api/v1/leads/no-such-lead",
        "/api/v1/referrals/no-such-referral",
    ] {
        let (status, body) = deployment.get(path).await?;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(body["error"]["code"], json!("not_found"));
    }

    // Access: no token and a wrong token get 401 with a JSON error; the read token reads but
    // may not trigger a sync.
    let admin = deployment.api_token.clone();
    for token in [None, Some("wrong-token-wrong-token")] {
        let (status, headers, body) = deployment.call(Method::GET, "/api/v1/leads", token).await?;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(headers["www-authenticate"], "Bearer");
        assert_eq!(body["error"]["code"], json!("unauthenticated"));
    }
    let (status, _, _) = deployment
        .call(Method::GET, "/api/v1/leads?limit=1", Some(&read_token))
        .await?;
    assert_eq!(status, StatusCode::OK);
    let (status, _, body) = deployment
        .call(
            Method::POST,
            "/api/v1/partner-center/referrals/sync",
            Some(&read_token),
        )
        .await?;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], json!("forbidden"));

    // Sync: the customer moves one referral on; trigger, then follow the task to completion.
    let mut referrals = referrals;
    let moved = referrals
        .iter()
        .position(|r| r["status"] != json!("Closed"))
        .unwrap();
    let moved_id = referrals[moved]["id"].as_str().unwrap().to_owned();
    referrals[moved]["status"] = json!("Closed");
    referrals[moved]["substatus"] = json!("Won");
    referrals[moved]["eTag"] = json!("\"moved-by-the-api-test\"");
    referrals[moved]["updatedDateTime"] = json!(
        time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339)?
    );
    deployment.write_referrals(&referrals)?;
    // The closed leads as the page cache holds them now, without the moved one.
    let closed_ids = |page: &Value| -> Vec<String> { ids(page["items"].as_array().unwrap()) };
    let (_, closed) = deployment
        .get("/api/v1/leads?status=Closed&limit=500")
        .await?;
    assert!(!closed_ids(&closed).contains(&moved_id));
    let (status, _, accepted) = deployment
        .call(
            Method::POST,
            "/api/v1/partner-center/referrals/sync",
            Some(&admin),
        )
        .await?;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    assert_eq!(accepted["success"], json!(true));
    let task_id = accepted["task_id"].as_str().unwrap().to_owned();
    let (status, task) = deployment
        .get(&format!("/api/v1/sync/runs/{task_id}"))
        .await?;
    assert_eq!(
        status,
        StatusCode::OK,
        "a task just handed out is known: {task}"
    );
    let finished = wait_for(
        "the triggered sync to finish",
        Duration::from_secs(60),
        || async {
            let (_, task) = deployment
                .get(&format!("/api/v1/sync/runs/{task_id}"))
                .await?;
            Ok((task["state"] == json!("succeeded")).then_some(task))
        },
    )
    .await;
    let task = match finished {
        Ok(task) => task,
        Err(error) => anyhow::bail!("{error}\n{}", deployment.logs()),
    };
    let runs = task["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "{task}");
    assert_eq!(runs[0]["run_id"], json!(task_id));
    assert_eq!(runs[0]["trigger"], json!("manual"));
    assert_eq!(runs[0]["published"], json!(1), "{task}");
    let (_, detail) = deployment.get(&format!("/api/v1/leads/{moved_id}")).await?;
    let moved_lead = wait_for(
        "the moved lead's new version",
        Duration::from_secs(30),
        || async {
            let (_, detail) = deployment.get(&format!("/api/v1/leads/{moved_id}")).await?;
            Ok((detail["history"].as_array().map(Vec::len) == Some(2)).then_some(detail))
        },
    )
    .await
    .map_err(|error| anyhow::anyhow!("{error}: last seen {detail}"))?;
    assert_eq!(moved_lead["lead"]["status"], json!("Closed"));
    // The cached list catches up within its lifetime (1 s) plus one refresh.
    wait_for(
        "the cached list to show the change",
        Duration::from_secs(10),
        || async {
            let (_, closed) = deployment
                .get("/api/v1/leads?status=Closed&limit=500")
                .await?;
            Ok(closed_ids(&closed).contains(&moved_id).then_some(()))
        },
    )
    .await?;
    assert_eq!(moved_lead["lead"]["substatus"], json!("Won"));
    assert_eq!(
        moved_lead["history"][1]["change_type"],
        json!("status_changed")
    );
    assert_eq!(
        moved_lead["history"][1]["previous_status"],
        moved_lead["history"][0]["status"]
    );
    let (status, body) = deployment
        .get("/api/v1/sync/runs/00000000-no-such-task")
        .await?;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (_, recent) = deployment.get("/api/v1/sync/runs?limit=5").await?;
    let recent = recent["items"].as_array().unwrap();
    assert!(recent.iter().any(|run| run["run_id"] == json!(task_id)));
    assert!(recent.iter().any(|run| run["trigger"] == json!("startup")));
    let (status, body) = deployment.get("/api/v1/sync/runs?limit=0").await?;
    assert_eq!(
        (status, &body["error"]["parameter"]),
        (StatusCode::BAD_REQUEST, &json!("limit"))
    );
    let (status, body) = deployment.get("/api/v1/sync/runs?tenant=nobody").await?;
    assert_eq!(
        (status, &body["error"]["parameter"]),
        (StatusCode::BAD_REQUEST, &json!("tenant"))
    );

    let (status, sync) = deployment.get("/api/v1/partner-center/sync/status").await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(sync["enabled"], json!(true));
    assert_eq!(sync["state"], json!("idle"), "{sync}");
    assert_eq!(sync["interval_seconds"], json!(3600));
    let tenant = &sync["tenants"][0];
    assert_eq!(tenant["state"], json!("idle"));
    assert_eq!(tenant["last_run"]["status"], json!("succeeded"));
    let last_success = time::OffsetDateTime::parse(
        tenant["last_success_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )?;
    assert!(time::OffsetDateTime::now_utc() - last_success < time::Duration::minutes(5));
    let next = time::OffsetDateTime::parse(
        tenant["next_run_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )?;
    assert!(
        next > time::OffsetDateTime::now_utc() + time::Duration::minutes(50),
        "{sync}"
    );

    // Limits: a large body is refused with 413 and a JSON error.
    let response = reqwest::Client::new()
        .post(format!(
            "{}/api/v1/partner-center/referrals/sync",
            deployment.api
        ))
        .bearer_auth(&admin)
        .body(vec![b'x'; 100 * 1024])
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: Value = response.json().await?;
    assert_eq!(body["error"]["code"], json!("payload_too_large"));

    // CORS: only the configured origin is allowed.
    for (origin, allowed) in [
        ("http://allowed.example", true),
        ("http://evil.example", false),
    ] {
        let response = reqwest::Client::new()
            .request(Method::OPTIONS, format!("{}/api/v1/leads", deployment.api))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "GET")
            .header("Access-Control-Request-Headers", "authorization")
            .send()
            .await?;
        let allow = response
            .headers()
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(
            allow.as_deref() == Some(origin),
            allowed,
            "{origin}: {allow:?}"
        );
    }

    // Readiness, the OpenAPI document and the request metrics.
    let response = reqwest::get(format!("{}/readyz", deployment.api)).await?;
    assert_eq!(response.status(), StatusCode::OK);
    let ready: Value = response.json().await?;
    assert_eq!(ready["checks"], json!({"broker": "ok", "clickhouse": "ok"}));
    let (status, document) = deployment.get("/api/v1/openapi.json").await?;
    assert_eq!(status, StatusCode::OK);
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    assert!(document["paths"]["/leads"]["get"].is_object());
    let metrics = deployment.metrics().await?;
    assert!(
        metrics.contains("hunter_api_request_duration_seconds_count{route=\"/api/v1/leads\"}"),
        "request durations by route template"
    );
    assert!(metrics.contains("route=\"/api/v1/leads\",status=\"4xx\""));

    deployment.teardown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_cors_origins_no_browser_origin_is_allowed() -> anyhow::Result<()> {
    let referrals = generated_referrals(5, 3)?;
    let mut deployment = Deployment::new(&referrals)?;
    deployment.run_all_until_leads(5).await?;
    let response = reqwest::Client::new()
        .get(format!("{}/api/v1/leads", deployment.api))
        .bearer_auth(&deployment.api_token)
        .header("Origin", "http://anything.example")
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    let response = reqwest::Client::new()
        .request(Method::OPTIONS, format!("{}/api/v1/leads", deployment.api))
        .header("Origin", "http://anything.example")
        .header("Access-Control-Request-Method", "GET")
        .send()
        .await?;
    assert!(
        response
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    deployment.teardown().await;
    Ok(())
}
