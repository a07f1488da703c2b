//! Outgoing webhooks (docs/notifications.md) on the real stack: the simulator, the broker,
//! ClickHouse and the `hunter` binary's source, processor and notify roles as processes, with
//! webhook receivers served by this test.
//!
//! - a new incoming referral added to the simulator reaches a JSON target and a Teams target
//!   (an Adaptive Card message), each exactly once, also after `notify` is killed (-9) once
//!   the deliveries are recorded and started again;
//! - a target that refuses connections, one that never answers and one that answers garbage
//!   are retried with backoff and recorded as `failed` in `notifications`, while a live target
//!   still gets its delivery and the lead stream's consumer group commits every record.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use hunter_e2e::*;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(90);

/// What the receiver got: (path, body).
type Received = Arc<Mutex<Vec<(String, Value)>>>;

/// A webhook receiver: `/json` answers 200, `/teams` 202 with no body (as Workflows does),
/// `/slack` 200 `ok`, `/garbage` 200 with an HTML page (a captive proxy).
async fn receiver() -> anyhow::Result<(String, Received)> {
    let received: Received = Arc::default();
    async fn hook(
        State(received): State<Received>,
        Path(path): Path<String>,
        body: String,
    ) -> (StatusCode, String) {
        let value = serde_json::from_str(&body).unwrap_or(Value::String(body));
        received.lock().unwrap().push((path.clone(), value));
        match path.as_str() {
            "teams" => (StatusCode::ACCEPTED, String::new()),
            "slack" => (StatusCode::OK, "ok".into()),
            "garbage" => (StatusCode::OK, "<html>please sign in</html>".into()),
            _ => (StatusCode::OK, String::new()),
        }
    }
    let app = Router::new()
        .route("/{path}", post(hook))
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((address, received))
}

/// A port that accepts connections and never answers (a hung target).
async fn silent_port() -> anyhow::Result<u16> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    Ok(port)
}

/// `now` as Partner Center writes it (UTC, 7 fraction digits).
fn now_text() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:07}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second(),
        now.nanosecond() / 100
    )
}

struct Setup {
    deployment: Deployment,
    referrals: Vec<Value>,
    notify: usize,
    /// The notify process's HTTP port (`/metrics`).
    notify_port: u16,
}

/// Simulator with outgoing referrals only (no notification), then source, processor and
/// notify with `targets`.
async fn start(targets: &str, extra: &[(&str, &str)]) -> anyhow::Result<Setup> {
    start_with(outgoing_referrals()?, targets, extra).await
}

/// Five generated referrals, all outgoing (none is news for `new_referral`).
fn outgoing_referrals() -> anyhow::Result<Vec<Value>> {
    let mut referrals = generated_referrals(5, 1616)?;
    for referral in &mut referrals {
        referral["direction"] = "Outgoing".into();
    }
    Ok(referrals)
}

/// The simulator serving `referrals`, then source, processor and notify with `targets`.
async fn start_with(
    referrals: Vec<Value>,
    targets: &str,
    extra: &[(&str, &str)],
) -> anyhow::Result<Setup> {
    let mut deployment = Deployment::new(&referrals)?;
    for (key, value) in [
        ("HUNTER_NOTIFY_TARGETS", targets),
        ("HUNTER_SYNC_INTERVAL_SECS", "2"),
        ("HUNTER_NOTIFY_RETRY_BASE_MS", "200"),
    ]
    .into_iter()
    .chain(extra.iter().copied())
    {
        deployment.env.insert(key.into(), value.into());
    }
    deployment.start_simulator(&[]).await?;
    deployment.login_and_migrate()?;
    let notify_port = free_port();
    let notify = deployment.start_role_on("notify", notify_port).await?;
    for role in ["process", "source"] {
        deployment.start_role_on(role, free_port()).await?;
    }
    Ok(Setup {
        deployment,
        referrals,
        notify,
        notify_port,
    })
}

/// Adds a new incoming `New` referral to the simulator; returns its id.
fn add_incoming(setup: &Setup) -> anyhow::Result<String> {
    let id = uuid::Uuid::new_v4().to_string();
    let mut referral = setup.referrals[0].clone();
    let now = now_text();
    referral["id"] = id.clone().into();
    referral["direction"] = "Incoming".into();
    referral["status"] = "New".into();
    referral["substatus"] = "Pending".into();
    referral["createdDateTime"] = now.clone().into();
    referral["updatedDateTime"] = now.into();
    referral["eTag"] = format!("\"notify-{id}\"").into();
    let mut all = setup.referrals.clone();
    all.push(referral);
    setup.deployment.write_referrals(&all)?;
    Ok(id)
}

/// The bodies `path` got that are about lead `id`.
fn bodies_for(received: &Received, path: &str, id: &str) -> Vec<Value> {
    received
        .lock()
        .unwrap()
        .iter()
        .filter(|(p, body)| p == path && body.to_string().contains(id))
        .map(|(_, body)| body.clone())
        .collect()
}

/// `notifications` rows of lead `id`: (target, attempt, outcome, error), in order.
async fn rows(
    deployment: &Deployment,
    id: &str,
) -> anyhow::Result<Vec<(String, u64, String, String)>> {
    let rows = deployment
        .clickhouse
        .rows(&format!(
            "SELECT target, toString(attempt) AS attempt, outcome, ifNull(error, '') AS error \
             FROM notifications FINAL WHERE lead_id = '{id}' AND kind = 'new_referral' \
             ORDER BY target, at_micros"
        ))
        .await?;
    Ok(rows
        .iter()
        .map(|row| {
            (
                row["target"].as_str().unwrap_or_default().to_owned(),
                row["attempt"].as_str().unwrap_or("0").parse().unwrap_or(0),
                row["outcome"].as_str().unwrap_or_default().to_owned(),
                row["error"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_referral_reaches_json_and_teams_once_across_a_restart() -> anyhow::Result<()> {
    let (address, received) = receiver().await?;
    let targets = format!("hook=json:{address}/json,card=teams:{address}/teams");
    let mut setup = start(&targets, &[]).await?;
    // The outgoing referrals are in before the new one comes: none of them is notified.
    let deployment = &setup.deployment;
    wait_for("the first leads", WAIT, || async {
        Ok((deployment.leads().await?.len() >= 5).then_some(()))
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", deployment.logs()))?;

    let added = Instant::now();
    let id = add_incoming(&setup)?;
    let deployment = &setup.deployment;
    wait_for("the JSON and the Teams delivery", WAIT, || async {
        Ok((!bodies_for(&received, "json", &id).is_empty()
            && !bodies_for(&received, "teams", &id).is_empty())
        .then_some(()))
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", deployment.logs()))?;
    println!(
        "RESULT notify new referral to both receivers: {:.1} s after the simulator had it (sync interval 2 s)",
        added.elapsed().as_secs_f64()
    );

    let json = &bodies_for(&received, "json", &id)[0];
    assert_eq!(json["schema"], "hunter.notification.v1");
    assert_eq!(json["kind"], "new_referral");
    assert_eq!(json["lead"]["lead_id"], id.as_str());
    assert_eq!(json["lead"]["status"], "New");
    assert_eq!(json["tenant"], "test-tenant");
    let teams = &bodies_for(&received, "teams", &id)[0];
    assert_eq!(teams["type"], "message");
    let card = &teams["attachments"][0];
    assert_eq!(
        card["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    assert_eq!(card["content"]["type"], "AdaptiveCard");
    assert!(
        card["content"]["body"][0]["text"]
            .as_str()
            .unwrap()
            .starts_with("New incoming referral"),
        "{teams}"
    );
    // None of the outgoing referrals was announced.
    for referral in &setup.referrals {
        let other = referral["id"].as_str().unwrap();
        assert!(
            bodies_for(&received, "json", other).is_empty(),
            "{other} notified"
        );
    }

    // Both deliveries recorded, then notify killed and started again: nothing is sent twice.
    wait_for("both deliveries recorded", WAIT, || async {
        let rows = rows(deployment, &id).await?;
        let delivered = rows.iter().filter(|r| r.2 == "delivered").count();
        Ok((delivered == 2).then_some(()))
    })
    .await?;
    setup.deployment.process(setup.notify).kill9();
    setup
        .deployment
        .start_role_on("notify", free_port())
        .await?;
    let deployment = &setup.deployment;
    let leads_topic = deployment.topics.leads.clone();
    let leads_total = deployment.topic_count(&leads_topic)?;
    wait_for(
        "the restarted notify to commit every lead",
        WAIT,
        || async {
            let committed = deployment.committed_records("hunter-notify-leads", &leads_topic)?;
            Ok((committed >= leads_total).then_some(()))
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", deployment.logs()))?;
    // A few of the new notify's retry periods for a duplicate to show up, if there were one.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        bodies_for(&received, "json", &id).len(),
        1,
        "JSON sent twice"
    );
    assert_eq!(
        bodies_for(&received, "teams", &id).len(),
        1,
        "Teams sent twice"
    );
    let rows = rows(deployment, &id).await?;
    let queued = rows.iter().filter(|r| r.2 == "queued").count();
    assert_eq!(queued, 2, "queued once per target: {rows:?}");

    setup.deployment.teardown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_targets_are_retried_and_recorded_failed_while_the_live_one_delivers()
-> anyhow::Result<()> {
    let (address, received) = receiver().await?;
    let refused = free_port(); // nothing listens there
    let silent = silent_port().await?;
    let targets = format!(
        "refused=json:http://127.0.0.1:{refused}/hook,silent=teams:http://127.0.0.1:{silent}/hook,\
         junk=slack:{address}/garbage,live=slack:{address}/slack"
    );
    let setup = start(
        &targets,
        &[
            ("HUNTER_NOTIFY_MAX_ATTEMPTS", "3"),
            ("HUNTER_NOTIFY_RETRY_CAP_MS", "1000"),
            ("HUNTER_NOTIFY_TIMEOUT_MS", "1500"),
        ],
    )
    .await?;
    let id = add_incoming(&setup)?;
    let deployment = &setup.deployment;
    wait_for("the live target's delivery", WAIT, || async {
        Ok((!bodies_for(&received, "slack", &id).is_empty()).then_some(()))
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", deployment.logs()))?;
    let slack = &bodies_for(&received, "slack", &id)[0];
    assert_eq!(slack["blocks"][0]["type"], "header");

    let rows = wait_for("the dead targets recorded as failed", WAIT, || async {
        let rows = rows(deployment, &id).await?;
        let failed = rows.iter().filter(|r| r.2 == "failed").count();
        Ok((failed == 3).then_some(rows))
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", deployment.logs()))?;
    for target in ["refused", "silent", "junk"] {
        let steps: Vec<(u64, &str)> = rows
            .iter()
            .filter(|r| r.0 == target)
            .map(|r| (r.1, r.2.as_str()))
            .collect();
        assert_eq!(
            steps,
            [
                (0, "queued"),
                (1, "retrying"),
                (2, "retrying"),
                (3, "failed")
            ],
            "{target}: {rows:?}"
        );
        let error = &rows
            .iter()
            .find(|r| r.0 == target && r.2 == "failed")
            .unwrap()
            .3;
        assert!(
            !error.contains(&format!(":{refused}/hook"))
                && !error.contains(&format!(":{silent}/hook")),
            "the URL is a secret: {error}"
        );
        match target {
            "silent" => assert!(
                error.contains("timed out") || error.contains("timeout"),
                "{error}"
            ),
            "junk" => assert!(error.contains("does not give"), "{error}"),
            _ => {}
        }
    }
    let live: Vec<_> = rows
        .iter()
        .filter(|r| r.0 == "live")
        .map(|r| r.2.as_str())
        .collect();
    assert_eq!(live, ["queued", "delivered"]);
    assert_eq!(bodies_for(&received, "slack", &id).len(), 1);
    // The garbage target was asked three times (retried), and recorded failed.
    assert_eq!(bodies_for(&received, "garbage", &id).len(), 3);

    // The lead stream was never held by the dead targets: the group committed every record.
    let leads_topic = deployment.topics.leads.clone();
    let total = deployment.topic_count(&leads_topic)?;
    wait_for("notify to commit every lead", WAIT, || async {
        Ok(
            (deployment.committed_records("hunter-notify-leads", &leads_topic)? >= total)
                .then_some(()),
        )
    })
    .await?;

    setup.deployment.teardown().await;
    Ok(())
}

/// `instant` as Partner Center writes it (whole seconds, UTC).
fn pc_time(instant: time::OffsetDateTime) -> String {
    instant
        .replace_nanosecond(0)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

/// `template` made into incoming referral `id` with `status`, created at `created`, expiring at
/// `expires` (none: Hunter estimates created + 14 days), as tests/e2e/expiry.rs makes them.
fn expiring_referral(
    template: &Value,
    id: &str,
    status: &str,
    created: time::OffsetDateTime,
    expires: Option<time::OffsetDateTime>,
) -> Value {
    let mut referral = template.clone();
    referral["id"] = id.into();
    referral["direction"] = "Incoming".into();
    referral["status"] = status.into();
    referral["substatus"] = if status == "New" {
        "Pending"
    } else {
        "Accepted"
    }
    .into();
    referral["createdDateTime"] = pc_time(created).into();
    referral["updatedDateTime"] = pc_time(created + time::Duration::hours(1)).into();
    referral["expirationDateTime"] = expires.map_or(Value::Null, |at| pc_time(at).into());
    referral["acceptedDateTime"] = Value::Null;
    referral["closedDateTime"] = Value::Null;
    referral["eTag"] = format!("\"{}\"", uuid::Uuid::new_v4()).into();
    referral
}

/// The JSON bodies about lead `id` by kind.
fn kinds_for(received: &Received, id: &str) -> Vec<String> {
    bodies_for(received, "json", id)
        .iter()
        .filter(|body| body["lead"]["lead_id"] == id)
        .map(|body| body["kind"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// `hunter_notify_expiry_checks_total{kind, outcome="done"}` of the notify on `port`.
async fn checks_done(port: u16, kind: &str) -> anyhow::Result<f64> {
    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await?
        .text()
        .await?;
    Ok(metric_sum(
        &text,
        "hunter_notify_expiry_checks_total",
        &[("kind", kind), ("outcome", "done")],
    )
    .unwrap_or(0.0))
}

/// Waits until the notify on `port` has run `more` hour-before checks after the `since`th.
async fn more_checks(
    deployment: &Deployment,
    port: u16,
    since: f64,
    more: f64,
) -> anyhow::Result<()> {
    wait_for("more hour-before checks", WAIT, || async {
        Ok((checks_done(port, "expiring_within_hour").await? >= since + more).then_some(()))
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", deployment.logs()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_referral_expiring_within_the_hour_is_notified_once_across_checks_and_a_restart()
-> anyhow::Result<()> {
    let (address, received) = receiver().await?;
    let now = time::OffsetDateTime::now_utc();
    let (minutes, days) = (time::Duration::minutes, time::Duration::days);
    let tag = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let hour = format!("exp-hour-{tag}");
    let later = format!("exp-later-{tag}");
    let answered = format!("exp-answered-{tag}");
    let mut referrals = outgoing_referrals()?;
    let template = referrals[0].clone();
    // Partner Center's expiry 40 minutes ahead, unanswered: the one to notify.
    referrals.push(expiring_referral(
        &template,
        &hour,
        "New",
        now - days(13),
        Some(now + minutes(40)),
    ));
    // No expirationDateTime, created two days ago: estimated 12 days ahead, not expiring.
    referrals.push(expiring_referral(
        &template,
        &later,
        "New",
        now - days(2),
        None,
    ));
    // Accepted already, though its expiry is 30 minutes ahead: nothing to answer.
    referrals.push(expiring_referral(
        &template,
        &answered,
        "Active",
        now - days(3),
        Some(now + minutes(30)),
    ));
    let total = referrals.len();
    // The hour-before check every second; the daily one (00:00 UTC) due at every start.
    let mut setup = start_with(
        referrals.clone(),
        &format!("hook=json:{address}/json"),
        &[
            ("HUNTER_NOTIFY_EXPIRY_CHECK_SECS", "1"),
            ("HUNTER_NOTIFY_DAILY_AT", "00:00"),
        ],
    )
    .await?;
    // The checks read ClickHouse: the sink writes the leads there.
    setup.deployment.start_role_on("sink", free_port()).await?;
    let deployment = &setup.deployment;
    let body = wait_for("the hour-before delivery", WAIT, || async {
        Ok(bodies_for(&received, "json", &hour)
            .into_iter()
            .find(|body| body["kind"] == "expiring_within_hour"))
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", deployment.logs()))?;
    assert_eq!(body["schema"], "hunter.notification.v1");
    assert_eq!(body["tenant"], "test-tenant");
    assert!(
        body["title"]
            .as_str()
            .unwrap_or_default()
            .starts_with("Referral expires within the hour"),
        "{body}"
    );
    let lead = &body["lead"];
    assert_eq!(lead["status"], "New", "{body}");
    assert_eq!(lead["direction"], "Incoming", "{body}");
    assert_eq!(
        lead["expires_at"],
        pc_time(now + minutes(40)).as_str(),
        "{body}"
    );
    assert_eq!(lead["expires_at_estimated"], false, "{body}");
    assert_eq!(
        deployment.leads().await?.len(),
        total,
        "every referral is a lead by now"
    );

    // Recorded delivered; then the check runs again (three more times): nothing new.
    wait_for("the delivery recorded", WAIT, || async {
        let rows = deployment
            .clickhouse
            .rows(&format!(
                "SELECT outcome FROM notifications FINAL WHERE lead_id = '{hour}' \
                 AND kind = 'expiring_within_hour' AND outcome = 'delivered'"
            ))
            .await?;
        Ok((!rows.is_empty()).then_some(()))
    })
    .await?;
    let port = setup.notify_port;
    let done = checks_done(port, "expiring_within_hour").await?;
    more_checks(deployment, port, done, 3.0).await?;
    assert_eq!(kinds_for(&received, &hour), ["expiring_within_hour"]);

    // A new version of the referral (renamed in Partner Center, still New, same expiry) is
    // the same referral expiring at the same time: not notified again.
    let renamed = format!("Renamed {tag}");
    for referral in referrals.iter_mut().filter(|r| r["id"] == hour.as_str()) {
        referral["name"] = renamed.as_str().into();
        referral["updatedDateTime"] = pc_time(time::OffsetDateTime::now_utc()).into();
        referral["eTag"] = format!("\"{}\"", uuid::Uuid::new_v4()).into();
    }
    deployment.write_referrals(&referrals)?;
    wait_for("the renamed version in ClickHouse", WAIT, || async {
        let rows = deployment
            .clickhouse
            .rows(&format!(
                "SELECT name FROM leads FINAL WHERE lead_id = '{hour}'"
            ))
            .await?;
        Ok(rows
            .first()
            .is_some_and(|row| row["name"] == renamed.as_str())
            .then_some(()))
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", deployment.logs()))?;
    let done = checks_done(port, "expiring_within_hour").await?;
    more_checks(deployment, port, done, 3.0).await?;
    assert_eq!(
        kinds_for(&received, &hour),
        ["expiring_within_hour"],
        "a new version of the same expiry is not news"
    );

    // notify killed and started again: its first checks (the daily one is due at every start,
    // so it now sees the referral within 48 h) send the daily notice, not the hour one again.
    setup.deployment.process(setup.notify).kill9();
    let port = free_port();
    setup.deployment.start_role_on("notify", port).await?;
    let deployment = &setup.deployment;
    wait_for("the daily delivery after the restart", WAIT, || async {
        Ok(kinds_for(&received, &hour)
            .iter()
            .any(|kind| kind == "expiring_soon")
            .then_some(()))
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", deployment.logs()))?;
    more_checks(deployment, port, 0.0, 3.0).await?;
    let mut kinds = kinds_for(&received, &hour);
    kinds.sort();
    assert_eq!(
        kinds,
        ["expiring_soon", "expiring_within_hour"],
        "each once"
    );
    for other in [&later, &answered] {
        assert_eq!(
            kinds_for(&received, other),
            Vec::<String>::new(),
            "{other} notified"
        );
    }
    let queued = deployment
        .clickhouse
        .rows(&format!(
            "SELECT kind FROM notifications FINAL WHERE lead_id = '{hour}' AND outcome = 'queued' \
             ORDER BY kind"
        ))
        .await?;
    let queued: Vec<&str> = queued
        .iter()
        .filter_map(|row| row["kind"].as_str())
        .collect();
    assert_eq!(
        queued,
        ["expiring_soon", "expiring_within_hour"],
        "queued once each"
    );

    setup.deployment.teardown().await;
    Ok(())
}

/// `deploy/alertmanager/alertmanager.yml` passes `amtool check-config` (Debian's
/// prometheus-alertmanager, installed by tests/alertmanager-install.sh). The compose image is
/// Alertmanager 0.27; Debian's amtool is 0.25, which knows neither `msteams_configs` (0.26)
/// nor a webhook's `url_file` (0.26): with an amtool older than 0.27 those two are replaced in
/// a copy (the Teams receiver left out, the webhook given a literal URL) and the rest, routes,
/// templates and the Slack receiver, is checked as written.
#[test]
fn alertmanager_config_passes_amtool() -> anyhow::Result<()> {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let config = std::fs::read_to_string(repo.join("deploy/alertmanager/alertmanager.yml"))?;
    let version = std::process::Command::new("amtool")
        .arg("--version")
        .output()
        .map_err(|e| {
            anyhow::anyhow!("amtool runs (tests/alertmanager-install.sh installs it): {e}")
        })?;
    let version = String::from_utf8_lossy(&version.stdout).to_string()
        + &String::from_utf8_lossy(&version.stderr);
    let minor: u32 = version
        .split("version 0.")
        .nth(1)
        .and_then(|rest| rest.split('.').next())
        .and_then(|minor| minor.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("amtool --version: {version}"))?;
    let checked = if minor >= 27 {
        config.clone()
    } else {
        let teams = config
            .find("    msteams_configs:")
            .expect("the config has a Teams receiver");
        let mut older = config[..teams].to_owned();
        assert!(older.contains("url_file: /etc/alertmanager/secrets/json-url"));
        older = older.replace(
            "- url_file: /etc/alertmanager/secrets/json-url",
            "- url: http://127.0.0.1:9/amtool-check",
        );
        older
    };
    assert!(config.contains("msteams_configs:") && config.contains("slack_configs:"));
    assert!(!config.contains("https://"), "no webhook URL is committed");
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("alertmanager.yml");
    std::fs::write(&file, checked)?;
    let output = std::process::Command::new("amtool")
        .arg("check-config")
        .arg(&file)
        .output()?;
    assert!(
        output.status.success(),
        "amtool check-config failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}
