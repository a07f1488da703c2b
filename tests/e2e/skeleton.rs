//! The walking skeleton end to end on the real stack: the simulator → `hunter run all`
//! (source → broker → processor → broker → sink) → ClickHouse → API.
//!
//! Each test has its own topic prefix, ClickHouse database, simulator and API port.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use hunter_core::codec::Codec;
use hunter_core::records::SyncRun;
use hunter_e2e::{Deployment, generated_referrals, read_topic, run_hunter, wait_for};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};

/// `lead_id -> status` of the live leads (FINAL), with the total and distinct counts.
async fn live_leads(
    deployment: &Deployment,
) -> anyhow::Result<(u64, u64, BTreeMap<String, String>)> {
    let counts = deployment
        .clickhouse
        .rows("SELECT count() AS n, uniqExact(lead_id) AS distinct_ids FROM leads FINAL")
        .await?;
    let n = counts[0]["n"]
        .as_str()
        .map(|s| s.parse().unwrap())
        .or(counts[0]["n"].as_u64())
        .unwrap();
    let distinct = counts[0]["distinct_ids"]
        .as_str()
        .map(|s| s.parse().unwrap())
        .or(counts[0]["distinct_ids"].as_u64())
        .unwrap();
    let rows = deployment
        .clickhouse
        .rows("SELECT lead_id, ifNull(status, '') AS status FROM leads FINAL")
        .await?;
    let statuses = rows
        .into_iter()
        .map(|row| {
            (
                row["lead_id"].as_str().unwrap().to_owned(),
                row["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    Ok((n, distinct, statuses))
}

fn expected_statuses(referrals: &[Value]) -> BTreeMap<String, String> {
    referrals
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().to_owned(),
                r["status"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn referrals_become_leads_exactly_once_and_follow_updates() -> anyhow::Result<()> {
    let mut referrals = generated_referrals(150, 7)?;
    let mut deployment = Deployment::new(&referrals)?;
    deployment.start_simulator(&["--page-size", "40"]).await?;
    deployment.login_and_migrate()?;

    // A poison record already waiting in the referral topic: it must be dead-lettered, and the
    // stream must go on past it.
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &deployment.stack.brokers)
        .create()?;
    let referral_topic = deployment.topics.referrals.clone();
    producer
        .send(
            FutureRecord::to(&referral_topic)
                .key("poison")
                .payload("{\"not\": \"avro\"}"),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)?;

    // The second poll re-reads every referral (an overlap window wider than the data set), so
    // skipping versions already published is exercised on all of them.
    deployment.env.insert(
        "HUNTER_SYNC_OVERLAP_SECS".into(),
        (10 * 365 * 86_400).to_string(),
    );
    deployment.start_role("all").await?;

    // Round one: every referral arrives as exactly one live lead, with the simulator's status.
    let want = expected_statuses(&referrals);
    let result = wait_for(
        "every referral as a lead",
        Duration::from_secs(90),
        || async {
            let (n, distinct, statuses) = live_leads(&deployment).await?;
            Ok((n == 150 && distinct == 150 && statuses == want).then_some(()))
        },
    )
    .await;
    if let Err(error) = result {
        anyhow::bail!("{error}\n{}", deployment.logs());
    }

    // Enriched columns reach ClickHouse too.
    let enriched = deployment
        .clickhouse
        .rows("SELECT count() AS n FROM leads FINAL WHERE enrichment_version = 2 AND priority IN ('high', 'medium', 'low') AND change_type = 'created'")
        .await?;
    assert_eq!(
        enriched[0]["n"]
            .as_str()
            .map(|n| n.parse::<u64>().unwrap())
            .or(enriched[0]["n"].as_u64()),
        Some(150)
    );

    // The API serves them, newest first, behind the token (its read model follows ClickHouse
    // within a second: docs/api-read-model.md).
    let body = deployment
        .wait_for_leads_in_api(150, 500, Duration::from_secs(60))
        .await?;
    assert_eq!(body["total"], 150);
    assert_eq!(body["items"].as_array().unwrap().len(), 150);
    let first = &body["items"][0];
    let by_id: HashMap<&str, &Value> = referrals
        .iter()
        .map(|r| (r["id"].as_str().unwrap(), r))
        .collect();
    let source = by_id[first["lead_id"].as_str().unwrap()];
    assert_eq!(first["name"], source["name"]);
    assert_eq!(first["company_name"], source["customerProfile"]["name"]);
    let (status, body) = deployment.get("/api/v1/leads?limit=0").await?;
    assert_eq!(status, 400, "limit out of range is a 400: {body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("limit"),
        "{body}"
    );

    // The poison record went to the DLQ with its origin and reason.
    let dlq = read_topic(&deployment.stack.brokers, &deployment.topics.dlq, 1)?;
    let (payload, headers) = dlq
        .iter()
        .find(|(_, headers)| headers.get("hunter.stage").map(String::as_str) == Some("processor"))
        .expect("the processor's dead letter");
    assert_eq!(dlq.len(), 1, "one dead letter for one poison record");
    assert_eq!(payload, b"{\"not\": \"avro\"}");
    assert_eq!(
        headers.get("key").map(String::as_str),
        Some("poison"),
        "the dead letter keeps the record's key"
    );
    assert_eq!(
        headers.get("hunter.stage").map(String::as_str),
        Some("processor")
    );
    assert_eq!(headers.get("hunter.original.topic"), Some(&referral_topic));
    assert!(
        headers
            .get("hunter.error")
            .is_some_and(|e| e.contains("framing")),
        "{headers:?}"
    );

    // Round two: the file changes (10 referrals move on), a manual sync picks it up.
    let round_one_status: HashMap<String, String> = referrals
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().to_owned(),
                r["status"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let moved: Vec<String> = referrals
        .iter()
        .take(10)
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    for referral in referrals.iter_mut().take(10) {
        let (status, substatus) = match referral["status"].as_str() {
            Some("Closed") => ("Closed", "Lost"),
            Some("Active") => ("Closed", "Won"),
            _ => ("Active", "Accepted"),
        };
        referral["status"] = json!(status);
        referral["substatus"] = json!(substatus);
        referral["updatedDateTime"] = json!(time_now_rfc3339());
        referral["eTag"] = json!(format!("\"{}\"", uuid::Uuid::new_v4()));
    }
    deployment.write_referrals(&referrals)?;
    let response = reqwest::Client::new()
        .post(format!(
            "{}/api/v1/partner-center/referrals/sync",
            deployment.api
        ))
        .bearer_auth(&deployment.api_token)
        .send()
        .await?;
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await?;
    assert_eq!(body["success"], true);
    let task_id = body["task_id"].as_str().expect("task_id").to_owned();

    let want = expected_statuses(&referrals);
    let result = wait_for("the updates", Duration::from_secs(60), || async {
        let (n, distinct, statuses) = live_leads(&deployment).await?;
        Ok((n == 150 && distinct == 150 && statuses == want).then_some(()))
    })
    .await;
    if let Err(error) = result {
        anyhow::bail!("{error}\n{}", deployment.logs());
    }
    for id in &moved {
        let rows = deployment
            .clickhouse
            .rows(&format!(
                "SELECT substatus FROM leads FINAL WHERE lead_id = '{id}'"
            ))
            .await?;
        let want = referrals.iter().find(|r| r["id"] == json!(id)).unwrap()["substatus"].clone();
        assert_eq!(rows[0]["substatus"], want, "lead {id}");
    }

    // The manual run is recorded under the task id the API returned: it re-read all 150,
    // published the 10 new versions and skipped the ones it had already published.
    let runs_topic = deployment.topics.sync_runs.clone();
    let codec = Codec::<SyncRun>::new(&runs_topic, None);
    let mut finished = None;
    for _ in 0..60 {
        for (payload, _) in read_topic(&deployment.stack.brokers, &runs_topic, 1)? {
            let run = codec.decode(&payload).await?;
            if run.run_id == task_id && run.status != "running" {
                finished = Some(run);
            }
        }
        if finished.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let run =
        finished.unwrap_or_else(|| panic!("no finished sync run {task_id}\n{}", deployment.logs()));
    assert_eq!(
        (run.status.as_str(), run.trigger.as_str()),
        ("succeeded", "manual"),
        "{run:?}"
    );
    // Paging by key reads the records at each page boundary twice: they count as skipped.
    assert_eq!(run.published, 10, "{run:?}");
    assert!(
        run.fetched >= 150 && run.fetched == run.published + run.skipped,
        "{run:?}"
    );

    // Each referral version was published exactly once (150 first versions, 10 second ones,
    // and the poison record), and each became exactly one lead record.
    let published = read_topic(&deployment.stack.brokers, &referral_topic, 161)?;
    assert_eq!(published.len(), 161, "referral records in the topic");
    let leads_topic = deployment.topics.leads.clone();
    assert_eq!(
        read_topic(&deployment.stack.brokers, &leads_topic, 160)?.len(),
        160,
        "lead records"
    );

    // The analysts' tables: every lead version in the history, the status transitions view,
    // the sync runs and the dead letter.
    let count = |rows: Vec<Value>| -> u64 {
        rows[0]["n"]
            .as_str()
            .map(|n| n.parse().unwrap())
            .or(rows[0]["n"].as_u64())
            .unwrap()
    };
    let changed_status = moved
        .iter()
        .filter(|id| {
            let before = &round_one_status[id.as_str()];
            let after = referrals.iter().find(|r| r["id"] == json!(id)).unwrap()["status"]
                .as_str()
                .unwrap();
            before != after
        })
        .count() as u64;
    let clickhouse = &deployment.clickhouse;
    let result = wait_for("the history, runs and dead letters in clickhouse", Duration::from_secs(30), || async {
        let history = count(clickhouse.rows("SELECT count() AS n FROM lead_history FINAL").await?);
        let transitions = count(clickhouse.rows("SELECT count() AS n FROM status_transitions").await?);
        let runs = count(clickhouse.rows(&format!("SELECT count() AS n FROM sync_runs FINAL WHERE run_id = '{task_id}' AND status = 'succeeded' AND published = 10")).await?);
        let dead = count(clickhouse.rows("SELECT count() AS n FROM dlq FINAL WHERE stage = 'processor' AND payload = '{\"not\": \"avro\"}'").await?);
        let referrals_now = count(clickhouse.rows("SELECT count() AS n FROM referrals FINAL WHERE length(raw_json) > 100").await?);
        Ok((history == 160 && transitions == changed_status && runs == 1 && dead == 1 && referrals_now == 150).then_some(()))
    })
    .await;
    if let Err(error) = result {
        anyhow::bail!("{error}\n{}", deployment.logs());
    }
    // The referral as received is kept whole: its raw JSON is the simulator's current version.
    let moved_id = &moved[0];
    let raw = deployment
        .clickhouse
        .rows(&format!(
            "SELECT raw_json FROM referrals FINAL WHERE referral_id = '{moved_id}'"
        ))
        .await?;
    let stored: Value = serde_json::from_str(raw[0]["raw_json"].as_str().unwrap())?;
    let current = referrals
        .iter()
        .find(|r| r["id"] == json!(moved_id))
        .unwrap();
    assert_eq!(&stored, current, "raw referral JSON in clickhouse");
    let metrics_text = reqwest::get(format!("{}/metrics", deployment.api))
        .await?
        .text()
        .await?;
    assert!(
        metrics_text.contains("hunter_sink_end_to_end_latency_seconds_count"),
        "end-to-end latency is measured"
    );

    // The companies view answers (the generated contacts' domains decide how many rows).
    deployment
        .clickhouse
        .rows("SELECT company_domain, leads, pipeline_usd, latest_status FROM companies_by_domain")
        .await?;

    // Metrics are served in Prometheus text.
    let metrics = reqwest::get(format!("{}/metrics", deployment.api))
        .await?
        .text()
        .await?;
    assert!(metrics.contains("hunter_source_polls_total"), "{metrics}");
    assert!(
        metrics.contains("hunter_sink_rows_written_total"),
        "{metrics}"
    );
    assert!(metrics.contains("hunter_dlq_records_total"), "{metrics}");

    deployment.teardown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_refuses_calls_without_the_bearer_token() -> anyhow::Result<()> {
    let mut deployment = Deployment::new(&[])?;
    let (ok, output) = run_hunter(&["migrate"], &deployment.env, Duration::from_secs(60))?;
    assert!(ok, "{output}");
    deployment.start_role("api").await?;
    let client = reqwest::Client::new();
    for (method, path) in [
        ("GET", "/api/v1/leads"),
        ("POST", "/api/v1/partner-center/referrals/sync"),
    ] {
        let url = format!("{}{path}", deployment.api);
        let request = |token: Option<&str>| {
            let builder = if method == "GET" {
                client.get(&url)
            } else {
                client.post(&url)
            };
            match token {
                Some(token) => builder.bearer_auth(token),
                None => builder,
            }
        };
        for token in [None, Some("wrong-token-of-some-length")] {
            let response = request(token).send().await?;
            assert_eq!(response.status(), 401, "{method} {path} with {token:?}");
            let body: Value = response.json().await?;
            assert_eq!(body["error"]["code"], "unauthenticated", "{body}");
        }
    }
    let (status, _) = deployment.get("/api/v1/leads").await?;
    assert_eq!(status, 200);
    // The web page is served at / (it asks for the token itself; the data stays behind it).
    // Its script is a file of its own (the Content-Security-Policy allows no inline script).
    let page = reqwest::get(format!("{}/", deployment.api)).await?;
    assert_eq!(page.status(), 200);
    assert!(page.text().await?.contains("<script src=\"/app.js\">"));
    let script = reqwest::get(format!("{}/app.js", deployment.api)).await?;
    assert_eq!(script.status(), 200);
    assert!(script.text().await?.contains("api(\"/leads?\""));
    // Health and metrics stay open for probes and Prometheus.
    assert_eq!(
        reqwest::get(format!("{}/healthz", deployment.api))
            .await?
            .status(),
        200
    );
    deployment.teardown().await;
    Ok(())
}

#[tokio::test]
async fn invalid_settings_fail_at_start_naming_the_setting() -> anyhow::Result<()> {
    let deployment = Deployment::new(&[])?;
    for (name, value) in [
        ("HUNTER_SYNC_INTERVAL_SECS", "soon"),
        ("HUNTER_PARTNER_CENTER_ENABLED", "perhaps"),
        ("HUNTER_API_LISTEN", "localhost"),
        ("HUNTER_CLICKHOUSE_URL", "ftp://example"),
    ] {
        let mut env = deployment.env.clone();
        env.insert(name.to_owned(), value.to_owned());
        let (ok, output) = run_hunter(&["run", "all"], &env, Duration::from_secs(30))?;
        assert!(!ok, "{name}={value} was accepted");
        assert!(
            output.contains(name),
            "the error for {name}={value} does not name it: {output}"
        );
    }
    Ok(())
}

/// Reads at least `min` records of `topic` from the start: payloads and headers (plus the key
/// as header "key").
fn time_now_rfc3339() -> String {
    // Seven fraction digits, like Partner Center.
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:7]Z"
    );
    time::OffsetDateTime::now_utc().format(&format).unwrap()
}

#[tokio::test]
async fn migrate_is_idempotent_and_finishes_an_interrupted_migration() -> anyhow::Result<()> {
    let deployment = Deployment::new(&[])?;
    let (ok, output) = run_hunter(&["migrate"], &deployment.env, Duration::from_secs(60))?;
    assert!(ok, "{output}");
    assert!(output.contains("12 applied, 0 already applied"), "{output}");
    // The local server is 18.16: the insert deduplication settings wait for a newer one.
    assert!(
        output.contains(
            r#"waiting for a newer clickhouse than 18.16: ["0008_insert_deduplication.sql"]"#
        ),
        "{output}"
    );
    let (ok, output) = run_hunter(&["migrate"], &deployment.env, Duration::from_secs(60))?;
    assert!(ok, "{output}");
    assert!(output.contains("0 applied, 12 already applied"), "{output}");

    // An interrupted 0002: some columns added, the migration not recorded. Running again
    // finishes it.
    deployment
        .clickhouse
        .execute(&format!(
            "ALTER TABLE {db}.hunter_migrations DELETE WHERE name = '0002_lead_enrichment.sql'",
            db = deployment.env["HUNTER_CLICKHOUSE_DATABASE"]
        ))
        .await?;
    // Mutations are asynchronous on MergeTree: wait until the record is gone.
    hunter_e2e::wait_for("the migration record to go", Duration::from_secs(30), || async {
        let rows = deployment.clickhouse.rows("SELECT count() AS n FROM hunter_migrations WHERE name = '0002_lead_enrichment.sql'").await?;
        Ok((rows[0]["n"].as_str() == Some("0") || rows[0]["n"].as_u64() == Some(0)).then_some(()))
    })
    .await?;
    let (ok, output) = run_hunter(&["migrate"], &deployment.env, Duration::from_secs(60))?;
    assert!(ok, "{output}");
    assert!(output.contains("1 applied, 11 already applied"), "{output}");
    let columns = deployment.clickhouse.rows("SELECT name FROM system.columns WHERE database = currentDatabase() AND table = 'leads' AND name = 'score'").await?;
    assert_eq!(columns.len(), 1);
    deployment.clickhouse.drop_database().await;
    Ok(())
}

/// A test that fails before its teardown leaves no database behind: dropping the deployment
/// (what unwinding does) kills its processes and drops its ClickHouse database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_dropped_without_teardown_leaves_no_database() -> anyhow::Result<()> {
    let mut deployment = Deployment::new(&[])?;
    let (ok, output) = run_hunter(&["migrate"], &deployment.env, Duration::from_secs(60))?;
    assert!(ok, "{output}");
    deployment.start_role("api").await?;
    let database = deployment.env["HUNTER_CLICKHOUSE_DATABASE"].clone();
    let server = hunter_e2e::ClickHouse::new(&deployment.stack.clickhouse_url, "system");
    let exists = |database: String| {
        let server = server.clone();
        async move {
            let rows = server
                .rows(&format!(
                    "SELECT name FROM system.databases WHERE name = '{database}'"
                ))
                .await?;
            anyhow::Ok(!rows.is_empty())
        }
    };
    assert!(
        exists(database.clone()).await?,
        "migrate created {database}"
    );
    let api = deployment.api.clone();
    drop(deployment);
    assert!(!exists(database.clone()).await?, "{database} left behind");
    assert!(
        reqwest::get(format!("{api}/healthz")).await.is_err(),
        "the api still answers"
    );
    Ok(())
}
