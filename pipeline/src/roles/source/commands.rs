//! The command consumer: "sync now" commands from `hunter.commands.v1` fan out to the tenants'
//! trigger queues; a trigger read more than one sync interval after it was requested is
//! recorded as `expired` and not run; triggers that pile up while a poll runs are coalesced
//! into the next one (see the module docs of [`super`]).
//!
//! A command's offset is stored once it was handed to the tenants: a crash before the run loses
//! the trigger, not data (the next scheduled poll reads the same referrals). A command is not
//! data: an unreadable one is skipped, not dead-lettered.

use std::collections::HashMap;
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

use super::{Outputs, publish_run_logged};
use crate::roles::Context;

/// A manual trigger: the command id becomes the run id.
pub(super) struct Trigger {
    pub(super) command_id: String,
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
        triggers: &HashMap<String, mpsc::Sender<Trigger>>,
        outputs: &Outputs,
        interval: Duration,
        shutdown: &Shutdown,
    ) -> anyhow::Result<()> {
        let (partition, offset) = (message.partition(), message.offset());
        let payload = message.payload().unwrap_or_default().to_vec();
        drop(message);
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
                        });
                    }
                }
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
pub(super) fn drain(triggers: &mut mpsc::Receiver<Trigger>) -> Vec<String> {
    let mut coalesced = Vec::new();
    while let Ok(more) = triggers.try_recv() {
        coalesced.push(more.command_id);
    }
    coalesced
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
                })
                .unwrap();
        }
        assert_eq!(drain(&mut receiver), ["c-1", "c-2", "c-3"]);
        assert!(drain(&mut receiver).is_empty(), "drained triggers are gone");
    }
}
