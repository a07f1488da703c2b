//! Write-back (docs/writeback.md): referral actions from `hunter.referral-actions.v1` sent to
//! Partner Center as `PATCH {api}/referrals/{id}` by the tenant's own loop, so they share the
//! tenant's sign-in and its one request at a time with the polls.
//!
//! For each action, in the tenant's loop:
//!
//! 1. `GET` the referral as Partner Center holds it now;
//! 2. its eTag is the one the user saw (or the action names none): the referral has not moved,
//!    so the change was not made: record `sent`, then `PATCH` with `If-Match: <that eTag>` and
//!    `Prefer: return=representation`;
//!    its eTag moved on and it already holds what the action sets: `applied`, without a PATCH
//!    (the source crashed after its PATCH and before recording the result, or the same change
//!    was made elsewhere); it moved on otherwise: `conflict`, with the current version;
//! 3. the PATCH answers the referral: it is published on `partner-center.referrals.v1` as the
//!    next version (the processor makes the lead, the sink writes it) and the action is
//!    `applied` with Partner Center's request id. `412`: the GET and comparison of step 2 decide
//!    between `applied` (a retried PATCH whose first attempt was applied) and `conflict`,
//!    never retried over someone else's change. Other `4xx`: `rejected` with the service's
//!    message (a `403` names the role needed). `429`/`5xx`/timeouts are retried by the client
//!    with its backoff; when its attempts run out, or sign-in needs a person: `failed`.
//!
//! Exactly once toward Partner Center: the action's offset is stored only after its final
//! result was acknowledged by the broker, so a crash at any point replays the action, and the
//! replay starts at step 1, which sees a change already made (the eTag moved on, the fields are
//! the action's) and does not send it again. A PATCH repeated by the client's own retries
//! carries the old eTag and gets 412, so it cannot apply twice either. Failing to record a
//! result stops the source (its supervisor restarts it, the action is replayed).

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context as _;
use hunter_core::codec::Codec;
use hunter_core::kafka::{Fault, Fetch, GroupConsumer, Subscription};
use hunter_core::records::action::{ActionState, Plan, ReferralView, plan};
use hunter_core::records::{ReferralAction, ReferralActionResult};
use hunter_core::shutdown::Shutdown;
use hunter_partner_center::client::ClientError;
use rdkafka::Message;
use rdkafka::producer::FutureRecord;
use rdkafka::util::Timeout;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use super::{Outputs, Tenant};
use crate::roles::Context;

/// Actions waiting for one tenant's loop at most (the consumer waits for each anyway).
pub(super) const QUEUE: usize = 16;

/// One action handed to a tenant's loop; `done` says whether its final result was recorded.
pub(super) struct Job {
    pub(super) action: ReferralAction,
    pub(super) done: oneshot::Sender<Result<(), String>>,
}

/// Reads the actions topic and hands each action to its tenant's loop, one at a time, storing
/// its offset once the tenant recorded the final result. Ends on shutdown; an error stops the
/// source (the action is read again after the restart).
pub(super) async fn consume(
    context: Context,
    outputs: std::sync::Arc<Outputs>,
    tenants: HashMap<String, mpsc::Sender<Job>>,
    mut shutdown: Shutdown,
) -> anyhow::Result<()> {
    let topics = &context.topics;
    let consumer = GroupConsumer::subscribe(
        &context.settings.kafka,
        Subscription {
            stage: "source",
            group_id: &context.group_id("source-referral-actions"),
            client_id: "hunter-source-actions",
            topic: &topics.referral_actions,
            fetch: Fetch::Prompt,
        },
        shutdown.clone(),
    )
    .context("kafka consumer (referral actions)")?;
    let codec = Codec::<ReferralAction>::new(&topics.referral_actions, context.registry.clone());
    let result = async {
        loop {
            let message = tokio::select! {
                _ = shutdown.wait() => return Ok(()),
                received = consumer.recv() => received.context("kafka consume (referral actions)")?,
            };
            let (partition, offset) = (message.partition(), message.offset());
            let payload = message.payload().unwrap_or_default().to_vec();
            drop(message);
            let mut waiting = shutdown.clone();
            let action = match codec.decode_patiently(&payload, &mut waiting, "source").await {
                Ok(action) => action,
                Err(error) => match Fault::from(error) {
                    Fault::Transient(_) => return Ok(()),
                    Fault::Fatal(error) => anyhow::bail!("{error}"),
                    Fault::Record(error) => {
                        tracing::warn!(error = %error.reason, offset, "unreadable referral action skipped");
                        consumer.store_offset(partition, offset);
                        continue;
                    }
                },
            };
            let Some(queue) = tenants.get(&action.tenant) else {
                let mut failed = ReferralActionResult::of(&action, ActionState::Failed);
                failed.message = Some(format!(
                    "tenant `{}` is not configured in this source (HUNTER_PARTNER_CENTER_TENANTS)",
                    action.tenant
                ));
                record(&outputs, &failed)
                    .await
                    .map_err(|error| anyhow::anyhow!("{error}"))?;
                consumer.store_offset(partition, offset);
                continue;
            };
            let (done, finished) = oneshot::channel();
            let action_id = action.action_id.clone();
            if queue.send(Job { action, done }).await.is_err() {
                return Ok(());
            }
            let outcome = tokio::select! {
                _ = shutdown.wait() => return Ok(()),
                outcome = finished => outcome,
            };
            match outcome {
                Ok(Ok(())) => consumer.store_offset(partition, offset),
                // The tenant loop stopped (shutdown): the action is read again after the start.
                Err(_) => return Ok(()),
                Ok(Err(error)) => anyhow::bail!(
                    "the result of referral action {action_id} could not be recorded ({error}); \
                     stopping so that it is read again and checked against partner center"
                ),
            }
        }
    }
    .await;
    consumer.close();
    result
}

/// Produces one step and waits for the broker's acknowledgement.
async fn record(outputs: &Outputs, result: &ReferralActionResult) -> Result<(), String> {
    let payload = outputs
        .action_results
        .encode(result)
        .await
        .map_err(|error| error.to_string())?;
    outputs
        .producer
        .send(
            FutureRecord::to(&outputs.topics.referral_action_results)
                .key(&result.referral_id)
                .payload(&payload),
            Timeout::After(Duration::from_secs(30)),
        )
        .await
        .map(|_| ())
        .map_err(|(error, _)| error.to_string())?;
    metrics::counter!(hunter_core::telemetry::names::SOURCE_REFERRAL_ACTIONS_TOTAL, "state" => result.state.clone())
        .increment(1);
    tracing::info!(
        action_id = %result.action_id,
        referral_id = %result.referral_id,
        state = %result.state,
        message = result.message.as_deref().unwrap_or(""),
        "referral action step recorded"
    );
    Ok(())
}

/// Handles one job in the tenant's loop and says how it went.
pub(super) async fn handle(tenant: &mut Tenant, outputs: &Outputs, job: Job) {
    let outcome = apply(tenant, outputs, &job.action).await;
    let outcome = match outcome {
        Ok(result) => record(outputs, &result).await,
        Err(error) => Err(error),
    };
    let _ = job.done.send(outcome);
}

/// While sign-in needs a person: the action is `failed` with what to run, no API call.
pub(super) async fn handle_signin_required(tenant: &Tenant, outputs: &Outputs, job: Job) {
    let mut failed = ReferralActionResult::of(&job.action, ActionState::Failed);
    failed.message = Some(format!(
        "partner center sign-in is needed for tenant {}: run `hunter auth login`, then send the action again",
        tenant.name
    ));
    let _ = job.done.send(record(outputs, &failed).await);
}

/// `Status/Substatus` of a referral's JSON.
fn status_of(referral: &Value) -> String {
    format!(
        "{}/{}",
        referral["status"].as_str().unwrap_or("None"),
        referral["substatus"].as_str().unwrap_or("None")
    )
}

/// The message of a Partner Center error body (`{"error": {"message"}}`), else its start.
fn service_message(snippet: &str) -> String {
    serde_json::from_str::<Value>(snippet)
        .ok()
        .and_then(|body| {
            body.pointer("/error/message")
                .or_else(|| body.get("message"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| snippet.to_owned())
}

/// The final result of one action (steps 1–3 of the module docs); an `Err` only when a step
/// could not be recorded or a referral not published (the action is then replayed).
async fn apply(
    tenant: &mut Tenant,
    outputs: &Outputs,
    action: &ReferralAction,
) -> Result<ReferralActionResult, String> {
    let result = |state: ActionState| ReferralActionResult::of(action, state);
    let failed = |error: &ClientError| {
        let mut failed = result(ActionState::Failed);
        failed.message = Some(match error {
            ClientError::Auth(error) => format!(
                "partner center sign-in failed ({error}); run `hunter auth login` for tenant {} and send the action again",
                action.tenant
            ),
            other => {
                format!("partner center did not take the change ({other}); send the action again")
            }
        });
        failed
    };
    // 1. The referral as it is now.
    let current = match tenant.client.get_referral(&action.referral_id).await {
        Ok(Some(raw)) => raw,
        Ok(None) => {
            let mut rejected = result(ActionState::Rejected);
            rejected.message = Some(
                "partner center does not know this referral, or the signed-in account cannot see it"
                    .to_owned(),
            );
            return Ok(rejected);
        }
        Err(error) => return Ok(failed(&error)),
    };
    let current: Value = serde_json::from_str(current.get()).map_err(|e| e.to_string())?;
    // The plan is made against the status the user saw (the action's), with the referral's
    // current direction, type and notes.
    let (status, substatus) = action
        .expected_status
        .as_deref()
        .and_then(|s| s.split_once('/'))
        .map(|(s, sub)| (Some(s.to_owned()), Some(sub.to_owned())))
        .unwrap_or_else(|| {
            (
                current["status"].as_str().map(str::to_owned),
                current["substatus"].as_str().map(str::to_owned),
            )
        });
    let view = ReferralView {
        status,
        substatus,
        direction: current["direction"].as_str().map(str::to_owned),
        referral_type: current["type"].as_str().map(str::to_owned),
    };
    let requested_on =
        time::OffsetDateTime::from_unix_timestamp(action.requested_at.micros() / 1_000_000)
            .map(|at| at.date().to_string())
            .unwrap_or_default();
    let planned = match plan(
        &action.action,
        &action.fields,
        &view,
        current.pointer("/details/notes").and_then(Value::as_str),
        &requested_on,
    ) {
        Ok(planned) => planned,
        Err(refusal) => {
            let mut rejected = result(ActionState::Rejected);
            rejected.message = Some(format!("not sent: {refusal}"));
            return Ok(rejected);
        }
    };
    let current_etag = current["eTag"].as_str().map(str::to_owned);
    let unchanged = action.expected_etag.is_none() || action.expected_etag == current_etag;
    // 2. Moved on since the user looked: done already, or someone else's change.
    if !unchanged {
        return settle_moved(tenant, outputs, action, &planned, current).await;
    }
    let mut sent = result(ActionState::Sent);
    sent.to_status = planned.to_status.clone();
    record(outputs, &sent).await?;
    let if_match = action.expected_etag.clone().or(current_etag);
    let patched = tenant
        .client
        .patch_referral(
            &action.referral_id,
            &planned.operations,
            if_match.as_deref(),
        )
        .await;
    match patched {
        Ok(patched) => {
            // 3. The new version: as returned, else (204) read back.
            let referral = match patched.referral {
                Some(raw) => serde_json::from_str::<Value>(raw.get()).map_err(|e| e.to_string())?,
                None => match tenant.client.get_referral(&action.referral_id).await {
                    Ok(Some(raw)) => serde_json::from_str(raw.get()).map_err(|e| e.to_string())?,
                    _ => current.clone(),
                },
            };
            publish(tenant, outputs, action, &referral).await?;
            let mut applied = result(ActionState::Applied);
            applied.request_id = patched.request_id;
            applied.to_status = Some(status_of(&referral));
            Ok(applied)
        }
        Err(ClientError::Client { status: 412, .. }) => {
            match tenant.client.get_referral(&action.referral_id).await {
                Ok(Some(raw)) => {
                    let now: Value = serde_json::from_str(raw.get()).map_err(|e| e.to_string())?;
                    settle_moved(tenant, outputs, action, &planned, now).await
                }
                Ok(None) => {
                    let mut rejected = result(ActionState::Rejected);
                    rejected.message = Some("the referral is gone from partner center".to_owned());
                    Ok(rejected)
                }
                Err(error) => Ok(failed(&error)),
            }
        }
        Err(ClientError::Client {
            status,
            body_snippet,
        }) => {
            let mut rejected = result(ActionState::Rejected);
            let message = service_message(&body_snippet);
            rejected.message = Some(if status == 403 {
                format!(
                    "partner center refused (403): the signed-in account may not update referrals; \
                     it needs the Referrals Admin role (or Referrals User with write access) in \
                     Partner Center. Its message: {message}"
                )
            } else {
                format!("partner center refused ({status}): {message}")
            });
            rejected.to_status = planned.to_status.clone();
            Ok(rejected)
        }
        Err(error) => Ok(failed(&error)),
    }
}

/// The referral's eTag is not the one the user saw: `applied` if it holds what the action sets
/// (the current version is published), else `conflict` with the current version attached.
async fn settle_moved(
    tenant: &mut Tenant,
    outputs: &Outputs,
    action: &ReferralAction,
    planned: &Plan,
    current: Value,
) -> Result<ReferralActionResult, String> {
    if planned.is_applied_to(&current) {
        publish(tenant, outputs, action, &current).await?;
        let mut applied = ReferralActionResult::of(action, ActionState::Applied);
        applied.to_status = Some(status_of(&current));
        applied.message = Some(
            "partner center already holds this change (sent before a restart, or made elsewhere); not sent again"
                .to_owned(),
        );
        return Ok(applied);
    }
    let mut conflict = ReferralActionResult::of(action, ActionState::Conflict);
    conflict.message = Some(format!(
        "the referral changed in partner center since it was viewed (now {}); nothing was overwritten: look at the new version and act again",
        status_of(&current)
    ));
    conflict.to_status = planned.to_status.clone();
    conflict.current_etag = current["eTag"].as_str().map(str::to_owned);
    conflict.current_version = Some(current.to_string());
    Ok(conflict)
}

/// Publishes a referral version read from Partner Center, acknowledged, and remembers it so the
/// next poll does not publish it again (`fetch::publish_version`, shared with webhook fetches).
async fn publish(
    tenant: &mut Tenant,
    outputs: &Outputs,
    action: &ReferralAction,
    referral: &Value,
) -> Result<(), String> {
    let run_id = format!("action-{}", action.action_id);
    let outcome =
        super::fetch::publish_version(tenant, outputs, &referral.to_string(), &run_id).await?;
    if outcome == super::fetch::Outcome::LeftToPoll {
        tracing::warn!(referral_id = %action.referral_id, "written-back referral left to the next poll");
    }
    Ok(())
}
