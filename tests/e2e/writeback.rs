//! Write-back of referral actions (docs/writeback.md) on the real stack: the broker, ClickHouse,
//! the `hunter` binary's roles as separate processes and the simulator's PATCH.
//!
//! - accept, decline, won and lost round trips: 202, the action `applied` with Partner Center's
//!   request id, the lead in ClickHouse with the new status (bounded wait), the audit row with
//!   the actor, the simulator holding the change;
//! - a change made in Partner Center between the view and the action: `conflict` with the
//!   current version attached, no PATCH sent, nothing overwritten;
//! - an illegal transition, a negative deal value, an unknown currency: 400 naming the field,
//!   before anything is sent (the simulator's PATCH count does not move);
//! - a read token: 403; a Referrals User without write rights at Partner Center: `rejected`
//!   naming the role;
//! - kill -9 of the source after its PATCH was applied and before it recorded the result: after
//!   the restart the action is `applied` and the simulator counted exactly one PATCH.

use std::time::Duration;

use hunter_e2e::*;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(90);

/// Referral `index` of the generated ones, made `status`/`substatus` and `Incoming`.
fn shaped(referrals: &mut [Value], index: usize, status: &str, substatus: &str) -> String {
    let referral = &mut referrals[index];
    referral["status"] = status.into();
    referral["substatus"] = substatus.into();
    referral["direction"] = "Incoming".into();
    referral["eTag"] = format!("\"e2e-{index}\"").into();
    referral["id"].as_str().unwrap().to_owned()
}

struct Stack {
    deployment: Deployment,
    sales: String,
    read: String,
    source: usize,
}

/// Simulator, sign-in, migrations, then the roles as separate processes (so the source can be
/// killed alone); returns once every referral is in ClickHouse.
async fn start(referrals: &[Value]) -> anyhow::Result<Stack> {
    let mut deployment = Deployment::new(referrals)?;
    let sales = uuid::Uuid::new_v4().simple().to_string();
    let read = uuid::Uuid::new_v4().simple().to_string();
    deployment.env.insert(
        "HUNTER_API_TOKENS".into(),
        format!("alice={sales}:sales,rita={read}:read"),
    );
    deployment.start_simulator(&[]).await?;
    deployment.login_and_migrate()?;
    deployment.start_role("api").await?;
    for role in ["process", "sink"] {
        deployment.start_role_on(role, free_port()).await?;
    }
    let source = deployment.start_role_on("source", free_port()).await?;
    let expected = referrals.len();
    let clickhouse = &deployment.clickhouse;
    let waited = wait_for("every referral in clickhouse", WAIT, || async {
        let rows = clickhouse
            .rows("SELECT toString(count()) AS n FROM referrals FINAL")
            .await?;
        let leads = clickhouse
            .rows("SELECT toString(count()) AS n FROM leads FINAL")
            .await?;
        let n = |rows: &[Value]| rows[0]["n"].as_str().unwrap_or("0").parse::<usize>();
        Ok((n(&rows)? == expected && n(&leads)? == expected).then_some(()))
    })
    .await;
    if let Err(error) = waited {
        anyhow::bail!("{error}\n{}", deployment.logs());
    }
    Ok(Stack {
        deployment,
        sales,
        read,
        source,
    })
}

impl Stack {
    async fn post(&self, id: &str, body: Value, token: &str) -> anyhow::Result<(u16, Value)> {
        let response = reqwest::Client::new()
            .post(format!(
                "{}/api/v1/referrals/{id}/actions",
                self.deployment.api
            ))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    /// Posts an action with the sales token and expects 202; returns the action id.
    async fn act(&self, id: &str, body: Value) -> anyhow::Result<String> {
        let (status, answer) = self.post(id, body.clone(), &self.sales).await?;
        anyhow::ensure!(status == 202, "{body} on {id}: {status} {answer}");
        assert_eq!(answer["state"], "queued", "{answer}");
        Ok(answer["action_id"].as_str().unwrap().to_owned())
    }

    /// Waits for the action's final state through the API.
    async fn settled(&self, action_id: &str) -> anyhow::Result<Value> {
        let path = format!("/api/v1/actions/{action_id}");
        let deployment = &self.deployment;
        let waited = wait_for("the action's final state", WAIT, || async {
            let (status, body) = deployment.get(&path).await?;
            Ok((status == 200 && body["final"] == true).then_some(body))
        })
        .await;
        waited.map_err(|error| anyhow::anyhow!("{error}\n{}", deployment.logs()))
    }

    async fn lead_status(&self, id: &str) -> anyhow::Result<(String, String)> {
        let rows = self
            .deployment
            .clickhouse
            .rows(&format!(
                "SELECT status, substatus FROM leads FINAL WHERE referral_id = '{id}'"
            ))
            .await?;
        Ok((
            rows[0]["status"].as_str().unwrap_or("").to_owned(),
            rows[0]["substatus"].as_str().unwrap_or("").to_owned(),
        ))
    }

    async fn wait_lead(&self, id: &str, status: &str, substatus: &str) -> anyhow::Result<()> {
        let want = (status.to_owned(), substatus.to_owned());
        let waited = wait_for("the lead's new status in clickhouse", WAIT, || async {
            Ok((self.lead_status(id).await? == want).then_some(()))
        })
        .await;
        waited.map_err(|error| anyhow::anyhow!("{error}\n{}", self.deployment.logs()))
    }

    async fn patches(&self) -> anyhow::Result<u64> {
        let stats = self.deployment.simulator_get("/_simulator/stats").await?;
        Ok(stats["requests"]["referral_patch"]
            .as_object()
            .map_or(0, |by_status| {
                by_status.values().filter_map(Value::as_u64).sum()
            }))
    }

    async fn simulator_referral(&self, id: &str) -> anyhow::Result<Value> {
        let all = self
            .deployment
            .simulator_get("/_simulator/referrals")
            .await?;
        Ok(all
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id)
            .cloned()
            .unwrap())
    }

    async fn audit(&self, action_id: &str) -> anyhow::Result<Vec<Value>> {
        self.deployment
            .clickhouse
            .rows(&format!(
                "SELECT state, actor_name, actor_role, from_status, to_status, request_id \
                 FROM referral_actions FINAL WHERE action_id = '{action_id}' ORDER BY at_micros"
            ))
            .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_round_trip_conflict_and_refusals() -> anyhow::Result<()> {
    let mut referrals = generated_referrals(8, 1501)?;
    let to_accept = shaped(&mut referrals, 0, "New", "Received");
    let to_decline = shaped(&mut referrals, 1, "New", "Pending");
    let to_win = shaped(&mut referrals, 2, "Active", "Accepted");
    let to_lose = shaped(&mut referrals, 3, "Active", "Accepted");
    let contested = shaped(&mut referrals, 4, "New", "Received");
    let untouched = shaped(&mut referrals, 5, "New", "Received");
    let stack = start(&referrals).await?;
    let today = time::OffsetDateTime::now_utc().date();

    // Refusals first: nothing may reach Partner Center.
    let before = stack.patches().await?;
    for (id, body, field) in [
        (
            &untouched,
            json!({"action": "won", "deal_value": 10, "currency": "USD"}),
            "action",
        ),
        (
            &to_win,
            json!({"action": "won", "deal_value": -5, "currency": "USD"}),
            "deal_value",
        ),
        (
            &to_win,
            json!({"action": "won", "deal_value": 5, "currency": "XXY"}),
            "currency",
        ),
        (
            &to_win,
            json!({"action": "won", "deal_value": 5, "currency": "USD", "closing_date": (today - time::Duration::days(3)).to_string()}),
            "closing_date",
        ),
        (&untouched, json!({"action": "decline"}), "reason"),
        (&untouched, json!({"action": "promote"}), "action"),
    ] {
        let (status, answer) = stack.post(id, body.clone(), &stack.sales).await?;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["error"]["code"], "invalid_action", "{answer}");
        assert_eq!(answer["error"]["field"], field, "{body}: {answer}");
    }
    let (status, answer) = stack
        .post(
            "no-such-referral",
            json!({"action": "accept"}),
            &stack.sales,
        )
        .await?;
    assert_eq!(status, 404, "{answer}");
    let (status, answer) = stack
        .post(&untouched, json!({"action": "accept"}), &stack.read)
        .await?;
    assert_eq!(status, 403, "{answer}");
    let (_, listed) = stack
        .deployment
        .get(&format!("/api/v1/referrals/{untouched}/actions"))
        .await?;
    assert_eq!(listed, json!([]), "refused actions are not queued");

    // The four round trips. The time from the POST to the lead's new status in ClickHouse is
    // printed (a figure for docs/writeback.md, not an assertion: the machine is shared).
    let posted = std::time::Instant::now();
    let accept = stack.act(&to_accept, json!({"action": "accept"})).await?;
    stack.wait_lead(&to_accept, "Active", "Accepted").await?;
    eprintln!(
        "write-back: POST to the lead's new status in clickhouse: {:?}",
        posted.elapsed()
    );
    let decline = stack
        .act(
            &to_decline,
            json!({"action": "decline", "reason": "Not our region"}),
        )
        .await?;
    let won = stack
        .act(
            &to_win,
            json!({"action": "won", "deal_value": "125000.50", "currency": "eur", "closing_date": today.to_string()}),
        )
        .await?;
    let lost = stack
        .act(
            &to_lose,
            json!({"action": "lost", "reason": "Lost to competitor", "deal_value": 9000, "currency": "GBP"}),
        )
        .await?;
    for (action_id, id, status, substatus) in [
        (&accept, &to_accept, "Active", "Accepted"),
        (&decline, &to_decline, "Closed", "Declined"),
        (&won, &to_win, "Closed", "Won"),
        (&lost, &to_lose, "Closed", "Lost"),
    ] {
        let settled = stack.settled(action_id).await?;
        assert_eq!(settled["state"], "applied", "{settled}");
        assert_eq!(settled["actor_name"], "alice");
        assert!(settled["request_id"].is_string(), "{settled}");
        assert_eq!(settled["to_status"], format!("{status}/{substatus}"));
        stack.wait_lead(id, status, substatus).await?;
        let truth = stack.simulator_referral(id).await?;
        assert_eq!(
            (truth["status"].as_str(), truth["substatus"].as_str()),
            (Some(status), Some(substatus))
        );
        let audit = stack.audit(action_id).await?;
        let states: Vec<&str> = audit.iter().filter_map(|r| r["state"].as_str()).collect();
        assert_eq!(states, ["queued", "sent", "applied"], "{audit:?}");
        assert_eq!(audit[2]["actor_name"], "alice");
        assert_eq!(audit[2]["actor_role"], "sales");
    }
    let truth = stack.simulator_referral(&to_win).await?;
    assert_eq!(truth["details"]["dealValue"], "125000.50");
    assert_eq!(truth["details"]["currency"], "EUR");
    assert_eq!(
        stack.simulator_referral(&to_decline).await?["statusReason"],
        "Not our region"
    );
    assert_eq!(stack.patches().await? - before, 4, "one PATCH per action");

    // Someone changes the referral in Partner Center after the user looked at it.
    let seen = stack
        .deployment
        .get(&format!("/api/v1/referrals/{contested}"))
        .await?
        .1["etag"]
        .clone();
    let mut edited = stack
        .deployment
        .simulator_get("/_simulator/referrals")
        .await?
        .as_array()
        .unwrap()
        .clone();
    for referral in &mut edited {
        if referral["id"] == contested.as_str() {
            referral["status"] = "Closed".into();
            referral["substatus"] = "Declined".into();
            referral["statusReason"] = "Declined by a colleague".into();
            referral["eTag"] = "\"changed-elsewhere\"".into();
        }
    }
    stack.deployment.write_referrals(&edited)?;
    let patches = stack.patches().await?;
    let action = stack
        .act(&contested, json!({"action": "accept", "etag": seen}))
        .await?;
    let settled = stack.settled(&action).await?;
    assert_eq!(settled["state"], "conflict", "{settled}");
    assert_eq!(
        settled["current_version"]["statusReason"],
        "Declined by a colleague"
    );
    assert_eq!(settled["current_etag"], "\"changed-elsewhere\"");
    assert_eq!(
        stack.patches().await?,
        patches,
        "no PATCH over the other change"
    );
    let truth = stack.simulator_referral(&contested).await?;
    assert_eq!(truth["substatus"], "Declined", "not overwritten");

    // A Referrals User without write rights: rejected, naming the role.
    stack
        .deployment
        .simulator_post("/_simulator/write-access?allowed=false")
        .await?;
    let action = stack.act(&untouched, json!({"action": "accept"})).await?;
    let settled = stack.settled(&action).await?;
    assert_eq!(settled["state"], "rejected", "{settled}");
    assert!(
        settled["message"]
            .as_str()
            .unwrap()
            .contains("Referrals Admin"),
        "{settled}"
    );
    let (_, listed) = stack
        .deployment
        .get(&format!("/api/v1/referrals/{untouched}/actions"))
        .await?;
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    stack.deployment.teardown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_killed_after_its_patch_does_not_send_it_again() -> anyhow::Result<()> {
    let mut referrals = generated_referrals(4, 1502)?;
    let id = shaped(&mut referrals, 0, "New", "Received");
    let mut stack = start(&referrals).await?;
    assert_eq!(stack.patches().await?, 0);
    // Every reply is held back 2 s after the simulator did the work: the PATCH is applied and
    // counted, and the source waits for its answer; it is killed then.
    stack
        .deployment
        .simulator_post("/_simulator/faults?spec=slow:1")
        .await?;
    let action = stack.act(&id, json!({"action": "accept"})).await?;
    let applied = wait_for("the PATCH applied at the simulator", WAIT, || async {
        Ok((stack.patches().await? >= 1).then_some(()))
    })
    .await;
    if let Err(error) = applied {
        anyhow::bail!("{error}\n{}", stack.deployment.logs());
    }
    stack.deployment.process(stack.source).kill9();
    stack
        .deployment
        .simulator_post("/_simulator/faults")
        .await?;
    let (_, body) = stack
        .deployment
        .get(&format!("/api/v1/actions/{action}"))
        .await?;
    assert_ne!(body["state"], "applied", "killed before the result: {body}");
    assert_eq!(stack.simulator_referral(&id).await?["status"], "Active");

    stack.source = stack
        .deployment
        .start_role_on("source", free_port())
        .await?;
    let settled = stack.settled(&action).await?;
    assert_eq!(settled["state"], "applied", "{settled}");
    assert_eq!(
        stack.patches().await?,
        1,
        "the PATCH was not sent a second time"
    );
    stack.wait_lead(&id, "Active", "Accepted").await?;
    stack.deployment.teardown().await;
    Ok(())
}

/// The page (headless Chromium, `tests/browser/writeback.mjs`): accept an incoming referral,
/// then mark it won with the deal value prefilled; a decline without a reason is not sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_accepts_and_wins_a_referral() -> anyhow::Result<()> {
    hunter_e2e::browser::browser_dir()?;
    let mut referrals = generated_referrals(5, 1503)?;
    let id = shaped(&mut referrals, 0, "New", "Received");
    let decline_id = shaped(&mut referrals, 1, "New", "Received");
    let conflict_id = shaped(&mut referrals, 2, "New", "Received");
    referrals[0]["details"]["dealValue"] = json!(4321.5);
    referrals[0]["details"]["currency"] = json!("EUR");
    let stack = start(&referrals).await?;

    // An action sent from elsewhere (not from the page's tab) that ends in `conflict` (the eTag
    // it was based on is not the referral's): its row must show it after the page loads.
    let contested = stack
        .act(
            &conflict_id,
            json!({"action": "accept", "etag": "\"seen-long-ago\""}),
        )
        .await?;
    assert_eq!(stack.settled(&contested).await?["state"], "conflict");
    let (status, open) = stack.deployment.get("/api/v1/actions?open=true").await?;
    assert_eq!(status, 200, "{open}");
    let open_ids: Vec<&str> = open
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|view| view["action_id"].as_str())
        .collect();
    assert_eq!(open_ids, [contested.as_str()], "{open}");
    let (status, refused) = stack.deployment.get("/api/v1/actions?open=maybe").await?;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(refused["error"]["parameter"], "open", "{refused}");

    let expect = json!({"id": id, "decline_id": decline_id, "conflict_id": conflict_id,
        "deal_value": 4321.5, "currency": "EUR"});
    hunter_e2e::browser::run_script(
        "writeback.mjs",
        &[
            ("HUNTER_WEB_URL", stack.deployment.api.clone()),
            ("HUNTER_WEB_TOKEN", stack.sales.clone()),
            ("HUNTER_WEB_EXPECT", expect.to_string()),
        ],
        "write-back page checks passed",
        || stack.deployment.logs(),
    )
    .await?;
    let truth = stack.simulator_referral(&id).await?;
    assert_eq!(
        (truth["status"].as_str(), truth["substatus"].as_str()),
        (Some("Closed"), Some("Won"))
    );
    assert_eq!(truth["details"]["dealValue"], "4321.5");
    assert_eq!(
        stack.simulator_referral(&decline_id).await?["status"],
        "New",
        "the decline was not sent"
    );
    // The page's two applied actions are no longer open; with open=false every action shows.
    let (_, open) = stack.deployment.get("/api/v1/actions?open=true").await?;
    assert_eq!(open.as_array().map(Vec::len), Some(1), "{open}");
    let (_, all) = stack.deployment.get("/api/v1/actions?open=false").await?;
    let applied = all
        .as_array()
        .unwrap()
        .iter()
        .filter(|view| view["state"] == "applied" && view["referral_id"] == id.as_str())
        .count();
    assert_eq!(applied, 2, "{all}");
    stack.deployment.teardown().await;
    Ok(())
}
