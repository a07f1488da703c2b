//! Partner Center webhooks end to end (docs/partner-center-webhooks.md): the real `hunter`
//! binary (`run all`, `webhooks register|status`), the simulator sending events to the
//! registered callback, the broker and ClickHouse.
//!
//! With the poll interval at 600 s (only the startup poll runs during the test), a status change
//! made in the simulator reaches `leads FINAL` by the webhook alone: the test checks no second
//! poll ran, and prints the measured latency (the target is 5 s; the wait is generous
//! because the machine is shared, and speed belongs to benchmarks). Then the receiver's bad
//! input: 401 without or with a wrong secret (and with the API's bearer token instead), 400 on a
//! malformed event, a repeated event queued once, an unknown referral fetched and published, and
//! 429 with `Retry-After` past the sender's fetch budget.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use hunter_core::records::Command;
use hunter_e2e::*;
use serde_json::{Value, json};

/// Fetches one sender may trigger a minute in this test: the simulator (127.0.0.1) sends a few
/// events, the rate-limit check exhausts the budget of an address of its own.
const FETCHES_PER_MINUTE: u32 = 5;

/// A client whose requests come from `127.0.0.N`: each check has its own sender budget.
fn client_from(n: u8) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, n)))
        .build()?)
}

/// An event in Partner Center's shape.
fn event(name: &str, referral_id: &str, changed: &str) -> Value {
    json!({
        "EventName": name,
        "ResourceUri": format!("https://api.partnercenter.microsoft.com/engagements/v1/referrals/{referral_id}"),
        "ResourceName": "referral",
        "AuditUri": null,
        "ResourceChangeUtcDate": changed,
    })
}

/// The status of `id` in `leads FINAL`, if it is there.
async fn lead_status(deployment: &Deployment, id: &str) -> anyhow::Result<Option<String>> {
    anyhow::ensure!(
        id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
        "odd id {id}"
    );
    let rows = deployment
        .clickhouse
        .rows(&format!(
            "SELECT status FROM leads FINAL WHERE lead_id = '{id}'"
        ))
        .await?;
    Ok(rows
        .first()
        .and_then(|row| row["status"].as_str().map(str::to_owned)))
}

/// The `fetch_referral` commands on the command topic for `referral_id`.
async fn fetch_commands(deployment: &Deployment, referral_id: &str) -> anyhow::Result<usize> {
    let topic = deployment.topics.commands.clone();
    let codec = hunter_core::codec::Codec::<Command>::new(&topic, None);
    let mut count = 0;
    for (payload, _) in read_topic_with(deployment.stack.client_config(), &topic, 0)? {
        let command = codec.decode(&payload).await?;
        if command.kind == Command::FETCH_REFERRAL
            && command.referral_id.as_deref() == Some(referral_id)
        {
            count += 1;
        }
    }
    Ok(count)
}

/// The sync runs recorded so far (each run has a start and an end record: counted once).
async fn run_ids(deployment: &Deployment) -> anyhow::Result<std::collections::BTreeSet<String>> {
    Ok(deployment
        .sync_runs()
        .await?
        .into_iter()
        .map(|run| run.run_id)
        .collect())
}

/// The source's webhook fetches with `outcome`, from its metrics.
async fn fetches(deployment: &Deployment, outcome: &str) -> anyhow::Result<f64> {
    let text = deployment.metrics().await?;
    Ok(text
        .lines()
        .filter(|line| {
            line.starts_with("hunter_source_webhook_fetches_total{")
                && line.contains(&format!("outcome=\"{outcome}\""))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_event_brings_the_change_without_a_poll_and_bad_events_are_refused()
-> anyhow::Result<()> {
    let referrals = generated_referrals(20, 1616)?;
    let mut deployment = Deployment::new(&referrals)?;
    let secret = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let callback = format!("{}/api/v1/partner-center/webhooks", deployment.api);
    for (key, value) in [
        ("HUNTER_SYNC_INTERVAL_SECS", "600".to_owned()),
        ("HUNTER_PARTNER_CENTER_WEBHOOK_SECRET", secret.clone()),
        ("HUNTER_PARTNER_CENTER_WEBHOOK_URL", callback.clone()),
        (
            "HUNTER_PARTNER_CENTER_WEBHOOK_FETCHES_PER_MINUTE",
            FETCHES_PER_MINUTE.to_string(),
        ),
    ] {
        deployment.env.insert(key.to_owned(), value);
    }
    deployment.run_all_until_leads(20).await?;

    // Register: the callback with the secret and the tenant; the secret is never printed.
    let (ok, output) = run_hunter(
        &["webhooks", "register"],
        &deployment.env,
        Duration::from_secs(60),
    )?;
    assert!(ok, "{output}");
    assert!(output.contains("registered"), "{output}");
    assert!(
        !output.contains(&secret),
        "the secret was printed: {output}"
    );
    let (ok, output) = run_hunter(
        &["webhooks", "status"],
        &deployment.env,
        Duration::from_secs(60),
    )?;
    assert!(ok, "{output}");
    assert!(output.contains("this deployment's callback"), "{output}");
    assert!(
        !output.contains(&secret),
        "the secret was printed: {output}"
    );
    let (ok, output) = run_hunter(
        &["webhooks", "register"],
        &deployment.env,
        Duration::from_secs(60),
    )?;
    assert!(ok && output.contains("already registered"), "{output}");

    // A status change in the simulator reaches ClickHouse by the webhook alone.
    let truth = deployment.simulator_get("/_simulator/referrals").await?;
    let target = truth
        .as_array()
        .unwrap()
        .iter()
        .find(|r| matches!(r["status"].as_str(), Some("New" | "Active")))
        .ok_or_else(|| anyhow::anyhow!("no referral with a status step"))?
        .clone();
    let id = target["id"].as_str().unwrap().to_owned();
    let before = lead_status(&deployment, &id).await?;
    assert_eq!(before.as_deref(), target["status"].as_str());
    let runs_before = run_ids(&deployment).await?;
    let started = Instant::now();
    let moved: Value = reqwest::Client::new()
        .post(format!(
            "{}/_simulator/mutate-now?id={id}",
            deployment.simulator
        ))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let new_status = moved["status"].as_str().unwrap().to_owned();
    assert_ne!(Some(new_status.as_str()), before.as_deref());
    let latency = loop {
        if lead_status(&deployment, &id).await?.as_deref() == Some(new_status.as_str()) {
            break started.elapsed();
        }
        if started.elapsed() > Duration::from_secs(60) {
            anyhow::bail!(
                "the new status {new_status} of {id} did not reach leads FINAL in 60 s\n{}",
                deployment.logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!(
        "webhook latency: simulator status change to leads FINAL in {} ms (target 5000 ms)",
        latency.as_millis()
    );
    assert_eq!(
        run_ids(&deployment).await?,
        runs_before,
        "a poll ran: the change must have come by the webhook"
    );
    let stats = deployment.simulator_get("/_simulator/stats").await?;
    assert!(
        stats["webhooks"]["delivered"].as_u64() >= Some(1),
        "{stats}"
    );

    // Unauthenticated: no secret, a wrong one, the API's bearer token instead: 401, JSON.
    let outsider = client_from(11)?;
    let body = event("referral-updated", &id, "2026-03-01T10:00:00Z");
    for (what, url, bearer) in [
        ("no token", callback.clone(), false),
        (
            "a wrong token",
            format!("{callback}?token=0123456789abcdef0123456789abcdef"),
            false,
        ),
        ("the admin bearer token", callback.clone(), true),
    ] {
        let mut request = outsider.post(&url).json(&body);
        if bearer {
            request = request.bearer_auth(&deployment.api_token);
        }
        let response = request.send().await?;
        assert_eq!(response.status(), 401, "{what}");
        let answer: Value = response.json().await?;
        assert_eq!(
            answer["error"]["code"], "unauthenticated",
            "{what}: {answer}"
        );
    }
    let authorized = format!("{callback}?token={secret}");

    // Malformed: 400 with a JSON error naming the field; nothing queued.
    let sender = client_from(12)?;
    for (body, field) in [
        ("{not json".to_owned(), "body"),
        (
            event("referral-updated", "", "2026-03-01T10:00:00Z").to_string(),
            "ResourceUri",
        ),
        (
            event("referral-updated", &id, "last tuesday").to_string(),
            "ResourceChangeUtcDate",
        ),
    ] {
        let response = sender
            .post(&authorized)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await?;
        assert_eq!(response.status(), 400, "{body}");
        let answer: Value = response.json().await?;
        assert_eq!(answer["error"]["code"], "invalid_event", "{answer}");
        assert_eq!(answer["error"]["field"], field, "{answer}");
    }

    // A repeated event is queued once; the source finds the version published already.
    let other = truth.as_array().unwrap()[1]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(other, id);
    let repeated = event("referral-updated", &other, "2026-03-01T10:00:00.1234567Z");
    let unchanged_before = fetches(&deployment, "unchanged").await?;
    let first = sender.post(&authorized).json(&repeated).send().await?;
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await?;
    assert_eq!(first["status"], "queued", "{first}");
    // Partner Center retries with the same event; the same instant spelled in another offset.
    let again = sender
        .post(&authorized)
        .json(&event(
            "referral-updated",
            &other,
            "2026-03-01T11:00:00.1234567+01:00",
        ))
        .send()
        .await?;
    assert_eq!(again.status(), 200);
    let again: Value = again.json().await?;
    assert_eq!(again["status"], "duplicate", "{again}");
    wait_for(
        "the fetch of the repeated event",
        Duration::from_secs(30),
        || async {
            Ok((fetches(&deployment, "unchanged").await? >= unchanged_before + 1.0).then_some(()))
        },
    )
    .await
    .map_err(|error| anyhow::anyhow!("{error}\n{}", deployment.logs()))?;
    assert_eq!(
        fetch_commands(&deployment, &other).await?,
        1,
        "one fetch queued"
    );

    // A referral Hunter has never seen: created late in the simulator (older than the poll's
    // window, so only the webhook brings it), fetched by id and published.
    let added: Value = reqwest::Client::new()
        .post(format!(
            "{}/_simulator/late?count=1&at=2020-01-01T00:00:00Z",
            deployment.simulator
        ))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let new_id = added["ids"][0].as_str().unwrap().to_owned();
    wait_for(
        "the new referral as a lead",
        Duration::from_secs(60),
        || async { Ok(lead_status(&deployment, &new_id).await?.map(|_| ())) },
    )
    .await
    .map_err(|error| anyhow::anyhow!("{error}\n{}", deployment.logs()))?;
    // An id Partner Center does not know: queued, fetched, nothing published.
    let not_found_before = fetches(&deployment, "not_found").await?;
    let response = sender
        .post(&authorized)
        .json(&event(
            "referral-created",
            "0a1b2c3d-0000-4000-8000-00000000dead",
            "2026-03-01T10:00:00Z",
        ))
        .send()
        .await?;
    assert_eq!(response.status(), 202);
    wait_for(
        "the fetch of an unknown id",
        Duration::from_secs(30),
        || async {
            Ok((fetches(&deployment, "not_found").await? >= not_found_before + 1.0).then_some(()))
        },
    )
    .await
    .map_err(|error| anyhow::anyhow!("{error}\n{}", deployment.logs()))?;
    assert_eq!(
        lead_status(&deployment, "0a1b2c3d-0000-4000-8000-00000000dead").await?,
        None
    );

    // The sender's budget: FETCHES_PER_MINUTE fetches, then 429 with Retry-After.
    let flooder = client_from(13)?;
    for n in 0..FETCHES_PER_MINUTE {
        let response = flooder
            .post(&authorized)
            .json(&event(
                "referral-updated",
                &format!("0a1b2c3d-0000-4000-8000-0000000010{n:02}"),
                "2026-03-01T10:00:00Z",
            ))
            .send()
            .await?;
        assert_eq!(response.status(), 202, "fetch {n}");
    }
    let response = flooder
        .post(&authorized)
        .json(&event(
            "referral-updated",
            "0a1b2c3d-0000-4000-8000-000000001099",
            "2026-03-01T10:00:00Z",
        ))
        .send()
        .await?;
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no Retry-After"))?;
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let answer: Value = response.json().await?;
    assert_eq!(answer["error"]["code"], "too_many_fetches", "{answer}");
    // Another sender is not held back.
    let response = sender
        .post(&authorized)
        .json(&event(
            "referral-updated",
            "0a1b2c3d-0000-4000-8000-000000001100",
            "2026-03-01T10:00:00Z",
        ))
        .send()
        .await?;
    assert_eq!(response.status(), 202);

    assert_eq!(
        run_ids(&deployment).await?,
        runs_before,
        "no poll ran during the test"
    );
    deployment.teardown().await;
    Ok(())
}
