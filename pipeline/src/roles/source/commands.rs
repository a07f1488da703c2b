//! The command consumer: "sync now" commands from `hunter.commands.v1` fan out to the tenants'
//! trigger queues; a trigger read more than one sync interval after it was requested is
//! recorded as `expired` and not run; triggers that pile up while a poll runs are coalesced
//! into the next one (see the module docs of [`super`]).
//!
//! A command's offset is stored once it was handed to the tenants: a crash before the run loses
//! the trigger, not data (the next scheduled poll reads the same referrals). A command is not
//! data: an unreadable one is skipped, not dead-lettered.
//!
//! A `backfill` command (`hunter backfill`) is a trigger too, for a run that reads everything
//! (or from its `since`) and records its progress after every page. It never expires (the
//! schedule does not re-read what it asks for). One backfill at a time per tenant: a backfill
//! that arrives while one that covers it (full, or from an earlier `since`) runs for the tenant
//! is recorded at once as `coalesced` into the running one; one queued behind a poll joins the
//! next run, which then becomes the backfill (the schedule's tick coalesces with it too).
//!
//! A `fetch_referral` command (a Partner Center webhook event, `fetch.rs`) goes to the addressed
//! tenants' fetch queues; like a sync trigger it is dropped when read more than one sync interval
//! after it was requested (the polls since have read the referral), and when a tenant's queue is
//! full (the poll reads it). A kind this build does not know is skipped, its offset stored.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use hunter_core::codec::Codec;
use hunter_core::kafka::{Fault, Fetch, GroupConsumer, Subscription};
use hunter_core::records::{Command, RunStatus, RunTrigger, SyncRun, Timestamp};
use hunter_core::shutdown::Shutdown;
use hunter_core::telemetry::names;
use rdkafka::Message;
use rdkafka::message::BorrowedMessage;
use tokio::sync::mpsc;

use super::fetch::Fetch as ReferralFetch;
use super::{Outputs, publish_run_logged};
use crate::roles::Context;

/// A manual trigger: the command id becomes the run id.
pub(super) struct Trigger {
    pub(super) command_id: String,
    /// A backfill, and the `updatedDateTime` it reads from (`None` inside: everything).
    pub(super) backfill: Option<Option<Timestamp>>,
}

/// The backfill running per tenant: its run id and `since`.
pub(super) type Running = Arc<Mutex<HashMap<String, (String, Option<Timestamp>)>>>;

/// Whether a running backfill from `running_since` reads everything one from `wanted` would.
pub(super) fn covers(running_since: Option<Timestamp>, wanted: Option<Timestamp>) -> bool {
    match (running_since, wanted) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(running), Some(wanted)) => running <= wanted,
    }
}

/// Where commands go, per tenant: poll triggers and webhook fetches.
#[derive(Default)]
pub(super) struct TenantQueues {
    pub(super) triggers: HashMap<String, mpsc::Sender<Trigger>>,
    pub(super) fetches: HashMap<String, mpsc::Sender<ReferralFetch>>,
}

/// The source's subscription to the commands topic.
pub(super) struct Commands {
    consumer: GroupConsumer,
    codec: Codec<Command>,
}

impl Commands {
    pub(super) fn subscribe(context: &Context, shutdown: &Shutdown) -> anyhow::Result<Self> {
        let topics = &context.topics;
        let consumer = GroupConsumer::subscribe(
            &context.settings.kafka,
            Subscription {
                stage: "source",
                group_id: &context.group_id("source-commands"),
                client_id: "hunter-source",
                topic: &topics.commands,
                fetch: Fetch::Prompt,
            },
            shutdown.clone(),
        )
        .context("kafka consumer")?;
        let codec = Codec::<Command>::new(&topics.commands, context.registry.clone());
        Ok(Commands { consumer, codec })
    }

    pub(super) fn consumer(&self) -> &GroupConsumer {
        &self.consumer
    }

    /// Hands one command to the tenants' `triggers` (or records it as expired); an error is
    /// fatal for the source.
    pub(super) async fn handle(
        &self,
        message: BorrowedMessage<'_>,
        queues: &TenantQueues,
        running: &Running,
        outputs: &Outputs,
        interval: Duration,
        shutdown: &Shutdown,
    ) -> anyhow::Result<()> {
        let (partition, offset) = (message.partition(), message.offset());
        let payload = message.payload().unwrap_or_default().to_vec();
        drop(message);
        let (triggers, fetches) = (&queues.triggers, &queues.fetches);
        let mut waiting = shutdown.clone();
        match self
            .codec
            .decode_patiently(&payload, &mut waiting, "source")
            .await
        {
            Ok(command) if command.kind == Command::SYNC_NOW => {
                let expired = trigger_expired(&command, interval);
                for (name, queue) in triggers {
                    if !addressed_to(&command, name) {
                        continue;
                    }
                    if let Some(reason) = expired.as_deref() {
                        tracing::warn!(tenant = %name, task_id = %command.command_id, "{reason}");
                        let mut run =
                            SyncRun::started(&command.command_id, name, RunTrigger::Manual);
                        run.finish(RunStatus::Expired);
                        run.error_message = Some(reason.to_owned());
                        publish_run_logged(outputs, &run).await;
                    } else {
                        tracing::info!(tenant = %name, task_id = %command.command_id, "sync requested");
                        // A full queue means many triggers are pending: one more adds nothing.
                        let _ = queue.try_send(Trigger {
                            command_id: command.command_id.clone(),
                            backfill: None,
                        });
                    }
                }
            }
            Ok(command) if command.kind == Command::BACKFILL => {
                for (name, queue) in triggers {
                    if !addressed_to(&command, name) {
                        continue;
                    }
                    let serving = running
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .get(name)
                        .filter(|(_, since)| covers(*since, command.since))
                        .map(|(run_id, _)| run_id.clone());
                    if let Some(run_id) = serving {
                        tracing::info!(tenant = %name, task_id = %command.command_id, run_id, "backfill requested; joined the running one");
                        publish_coalesced(outputs, name, vec![command.command_id.clone()], &run_id)
                            .await;
                        continue;
                    }
                    tracing::info!(tenant = %name, task_id = %command.command_id, "backfill requested");
                    let _ = queue.try_send(Trigger {
                        command_id: command.command_id.clone(),
                        backfill: Some(command.since),
                    });
                }
            }
            Ok(command) if command.kind == Command::FETCH_REFERRAL => {
                route_fetch(&command, fetches, interval);
            }
            Ok(command) => tracing::debug!(kind = %command.kind, "command not for the source"),
            Err(error) => match Fault::from(error) {
                // Shutdown while the registry was away: the command is read again later.
                Fault::Transient(_) => return Ok(()),
                Fault::Fatal(error) => anyhow::bail!("{error}"),
                Fault::Record(error) => {
                    tracing::warn!(error = %error.reason, "unreadable command ignored")
                }
            },
        }
        self.consumer.store_offset(partition, offset);
        Ok(())
    }

    pub(super) fn close(self) {
        self.consumer.close();
    }
}

/// Hands a `fetch_referral` command to the addressed tenants' fetch queues (see the module docs).
fn route_fetch(
    command: &Command,
    fetches: &HashMap<String, mpsc::Sender<ReferralFetch>>,
    interval: Duration,
) {
    let Some(referral_id) = command.referral_id.clone().filter(|id| !id.is_empty()) else {
        tracing::warn!(task_id = %command.command_id, "fetch_referral command without a referral id ignored");
        return;
    };
    if let Some(reason) = trigger_expired(command, interval) {
        tracing::info!(task_id = %command.command_id, referral_id, "webhook fetch not run: {reason}");
        metrics::counter!(names::SOURCE_WEBHOOK_FETCHES_TOTAL, "tenant" => command.tenant.clone().unwrap_or_default(), "outcome" => "expired")
            .increment(1);
        return;
    }
    for (name, queue) in fetches {
        if !addressed_to(command, name) {
            continue;
        }
        let fetch = ReferralFetch {
            command_id: command.command_id.clone(),
            referral_id: referral_id.clone(),
        };
        if queue.try_send(fetch).is_err() {
            tracing::warn!(tenant = %name, referral_id, "webhook fetch queue full; the next poll reads the referral");
        }
    }
}

/// Whether `command` asks for a sync of `tenant` (no tenant: every tenant).
fn addressed_to(command: &Command, tenant: &str) -> bool {
    command.tenant.as_deref().is_none_or(|t| t == tenant)
}

/// Why a sync trigger is too old to run: read more than one sync `interval` after it was
/// requested (see the module docs); `None` when it may run.
fn trigger_expired(command: &Command, interval: Duration) -> Option<String> {
    let age_micros = Timestamp::now()
        .micros()
        .saturating_sub(command.requested_at.micros());
    let limit = i64::try_from(interval.as_micros()).unwrap_or(i64::MAX);
    (age_micros > limit).then(|| {
        format!(
            "sync trigger expired: requested {} s ago, longer than the sync interval of {} s \
             (HUNTER_SYNC_INTERVAL_SECS); not run, the scheduled polls cover it",
            age_micros / 1_000_000,
            interval.as_secs()
        )
    })
}

/// The triggers already queued: the run about to start serves them too.
pub(super) fn drain(triggers: &mut mpsc::Receiver<Trigger>) -> Vec<Trigger> {
    let mut coalesced = Vec::new();
    while let Ok(more) = triggers.try_recv() {
        coalesced.push(more);
    }
    coalesced
}

/// The run that serves `first` (`None`: the schedule's tick, with `tick_id`) and the triggers
/// drained with it: its id, whether it is a backfill and from when, and the ids it serves
/// besides its own. A backfill among them makes the run the first backfill's (from the
/// earliest `since`; everything when any asked for everything).
pub(super) fn plan(
    first: Option<Trigger>,
    tick_id: String,
    drained: Vec<Trigger>,
) -> (String, Option<Option<Timestamp>>, Vec<String>) {
    let mut all: Vec<Trigger> = first.into_iter().chain(drained).collect();
    let backfills: Vec<Option<Timestamp>> = all.iter().filter_map(|t| t.backfill).collect();
    let backfill = (!backfills.is_empty()).then(|| {
        if backfills.iter().any(Option::is_none) {
            None
        } else {
            backfills.iter().flatten().min().copied()
        }
    });
    let lead =
        all.iter()
            .position(|t| t.backfill.is_some())
            .or(if all.is_empty() || tick_id.is_empty() {
                Some(0)
            } else {
                None
            });
    let run_id = match lead {
        Some(index) if index < all.len() => all.remove(index).command_id,
        _ => tick_id,
    };
    (
        run_id,
        backfill,
        all.into_iter().map(|t| t.command_id).collect(),
    )
}

/// Records each coalesced trigger as served by the run `run_id`.
pub(super) async fn publish_coalesced(
    outputs: &Outputs,
    tenant: &str,
    coalesced: Vec<String>,
    run_id: &str,
) {
    for command_id in coalesced {
        metrics::counter!(names::SOURCE_TRIGGERS_COALESCED_TOTAL, "tenant" => tenant.to_owned())
            .increment(1);
        let mut run = SyncRun::started(&command_id, tenant, RunTrigger::Manual);
        run.finish(RunStatus::Coalesced);
        run.coalesced_into = Some(run_id.to_owned());
        publish_run_logged(outputs, &run).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sync_now(tenant: Option<&str>, age: Duration) -> Command {
        let age = i64::try_from(age.as_micros()).unwrap();
        Command {
            command_id: "c-1".into(),
            kind: Command::SYNC_NOW.into(),
            tenant: tenant.map(str::to_owned),
            requested_at: Timestamp(Timestamp::now().micros() - age),
            since: None,
            referral_id: None,
        }
    }

    #[test]
    fn a_trigger_younger_than_the_interval_runs() {
        let interval = Duration::from_secs(300);
        assert_eq!(
            trigger_expired(&sync_now(None, Duration::ZERO), interval),
            None
        );
        assert_eq!(
            trigger_expired(&sync_now(None, Duration::from_secs(60)), interval),
            None
        );
    }

    #[test]
    fn a_trigger_older_than_the_interval_expires_with_the_setting_named() {
        let interval = Duration::from_secs(300);
        let reason = trigger_expired(&sync_now(None, Duration::from_secs(3600)), interval)
            .expect("an hour-old trigger expires");
        assert!(reason.contains("HUNTER_SYNC_INTERVAL_SECS"), "{reason}");
        assert!(reason.contains("of 300 s"), "{reason}");
    }

    fn trigger(id: &str, backfill: Option<Option<Timestamp>>) -> Trigger {
        Trigger {
            command_id: id.into(),
            backfill,
        }
    }

    #[test]
    fn a_backfill_queued_behind_a_tick_or_a_sync_makes_the_run_a_backfill() {
        // The tick's run becomes the backfill's, under the backfill's id.
        let (id, backfill, served) = plan(None, "tick".into(), vec![trigger("b-1", Some(None))]);
        assert_eq!(
            (id.as_str(), backfill, served.len()),
            ("b-1", Some(None), 0)
        );
        // A sync now picked first: the backfill still leads, the sync is served by it.
        let (id, backfill, served) = plan(
            Some(trigger("s-1", None)),
            String::new(),
            vec![
                trigger("b-1", Some(Some(Timestamp(5)))),
                trigger("b-2", Some(Some(Timestamp(3)))),
            ],
        );
        assert_eq!(id, "b-1");
        assert_eq!(
            backfill,
            Some(Some(Timestamp(3))),
            "from the earliest since"
        );
        assert_eq!(served, ["s-1", "b-2"]);
        // One asks for everything: everything.
        let (_, backfill, _) = plan(
            Some(trigger("b-1", Some(Some(Timestamp(5))))),
            String::new(),
            vec![trigger("b-2", Some(None))],
        );
        assert_eq!(backfill, Some(None));
        // No backfill: the first trigger's run, as before.
        let (id, backfill, served) = plan(
            Some(trigger("s-1", None)),
            String::new(),
            vec![trigger("s-2", None)],
        );
        assert_eq!(
            (id.as_str(), backfill, served),
            ("s-1", None, vec!["s-2".to_owned()])
        );
        // A tick alone.
        let (id, backfill, served) = plan(None, "tick".into(), vec![]);
        assert_eq!((id.as_str(), backfill, served.len()), ("tick", None, 0));
    }

    #[test]
    fn a_running_backfill_covers_one_from_a_later_since_only() {
        assert!(covers(None, None));
        assert!(covers(None, Some(Timestamp(1))));
        assert!(!covers(Some(Timestamp(1)), None));
        assert!(covers(Some(Timestamp(1)), Some(Timestamp(2))));
        assert!(!covers(Some(Timestamp(2)), Some(Timestamp(1))));
    }

    #[test]
    fn a_trigger_without_tenant_is_for_every_tenant() {
        let everyone = sync_now(None, Duration::ZERO);
        assert!(addressed_to(&everyone, "a") && addressed_to(&everyone, "b"));
        let one = sync_now(Some("a"), Duration::ZERO);
        assert!(addressed_to(&one, "a"));
        assert!(!addressed_to(&one, "b"));
    }

    #[test]
    fn queued_triggers_are_drained_in_order_into_one_run() {
        let (sender, mut receiver) = mpsc::channel(4);
        for id in ["c-1", "c-2", "c-3"] {
            sender
                .try_send(Trigger {
                    command_id: id.into(),
                    backfill: None,
                })
                .unwrap();
        }
        let ids: Vec<String> = drain(&mut receiver)
            .into_iter()
            .map(|t| t.command_id)
            .collect();
        assert_eq!(ids, ["c-1", "c-2", "c-3"]);
        assert!(drain(&mut receiver).is_empty(), "drained triggers are gone");
    }
}
