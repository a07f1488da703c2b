//! Referrals fetched by id for Partner Center webhook events (`fetch_referral` commands, docs/
//! partner-center-webhooks.md): `GET {api}/referrals/{id}` in the tenant's own loop (between
//! polls, one request at a time per tenant, with the tenant's sign-in), published on
//! `partner-center.referrals.v1` as the next version when it is one the source has not
//! published yet — the same check as the poll's, so a duplicate event, or a version the poll
//! already took, publishes nothing. A referral the source has never seen is published like any
//! other new version.
//!
//! Best effort by design: the poll stays the reconciliation. A fetch that fails (the API, the
//! broker, sign-in) is logged and counted, never retried here and never dead-lettered: the next
//! poll reads the same referral. A referral whose JSON cannot be read, or whose record is over
//! the budget, is left to the poll as well, which dead-letters or cuts it by the record-size
//! policy (doing it here too would dead-letter it twice). A fetch does not move the cursor.

use hunter_core::records::{Ingest, Referral, Timestamp};
use hunter_core::telemetry::names;
use hunter_partner_center::cursor;

use super::Tenant;
use super::poll::Publish;

/// Fetches waiting for one tenant's loop at most; past it a fetch is dropped (the poll covers
/// it), so a burst of events never holds the API role or the command consumer.
pub(super) const QUEUE: usize = 256;

/// One referral to get by id, from one `fetch_referral` command.
#[derive(Debug, Clone)]
pub(super) struct Fetch {
    pub(super) command_id: String,
    pub(super) referral_id: String,
}

/// What one fetch did (the metric's `outcome`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    Published,
    /// The version was published already (by the poll, an earlier event, a write-back).
    Unchanged,
    /// Partner Center does not know the id, or this tenant cannot see it.
    NotFound,
    Failed,
    /// Unreadable or over the record budget: the poll handles it.
    LeftToPoll,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Published => "published",
            Outcome::Unchanged => "unchanged",
            Outcome::NotFound => "not_found",
            Outcome::Failed => "failed",
            Outcome::LeftToPoll => "left_to_poll",
        }
    }
}

/// Gets the referral and publishes it when it is a new version; never fails the loop.
pub(super) async fn handle(tenant: &mut Tenant, outputs: &impl Publish, fetch: Fetch) -> Outcome {
    let outcome = match tenant.client.get_referral(&fetch.referral_id).await {
        Ok(None) => Outcome::NotFound,
        Err(error) => {
            tracing::warn!(tenant = %tenant.name, referral_id = %fetch.referral_id, %error,
                "webhook fetch failed; the next poll reads the referral");
            Outcome::Failed
        }
        Ok(Some(raw)) => {
            let run_id = format!("webhook-{}", fetch.command_id);
            match publish_version(tenant, outputs, raw.get(), &run_id).await {
                Ok(outcome) => outcome,
                Err(error) => {
                    tracing::warn!(tenant = %tenant.name, referral_id = %fetch.referral_id, %error,
                        "webhook fetch not published; the next poll reads the referral");
                    Outcome::Failed
                }
            }
        }
    };
    metrics::counter!(names::SOURCE_WEBHOOK_FETCHES_TOTAL, "tenant" => tenant.name.clone(), "outcome" => outcome.as_str())
        .increment(1);
    tracing::info!(tenant = %tenant.name, referral_id = %fetch.referral_id, command_id = %fetch.command_id,
        outcome = outcome.as_str(), "webhook fetch");
    outcome
}

/// Publishes a referral's JSON as read from Partner Center when its version (eTag, else
/// `updatedDateTime`) is not published yet, waits for the broker's acknowledgement and
/// remembers it, so the poll does not publish it again. Shared with write-back. `Err` only when
/// Kafka or the codec failed.
pub(super) async fn publish_version(
    tenant: &mut Tenant,
    outputs: &impl Publish,
    raw: &str,
    sync_run_id: &str,
) -> Result<Outcome, String> {
    let ingest = Ingest {
        tenant: tenant.name.clone(),
        fetched_at: Timestamp::now(),
        sync_run_id: sync_run_id.to_owned(),
    };
    let referral = match Referral::from_api_json(raw, ingest) {
        Ok(referral) => referral,
        Err(error) => {
            tracing::warn!(tenant = %tenant.name, %error, "referral read by id is not readable; left to the poll, which dead-letters it");
            return Ok(Outcome::LeftToPoll);
        }
    };
    let version = cursor::version_of(referral.e_tag.as_deref(), referral.updated_date_time);
    if tenant.published.is_published(&referral.id, version) {
        return Ok(Outcome::Unchanged);
    }
    let payload = outputs
        .encode_referral(&referral)
        .await
        .map_err(|e| e.message().to_owned())?;
    if payload.len() > hunter_core::size::REFERRAL_RECORD_BUDGET {
        // The poll applies the record-size policy to it (cut or dead letter).
        tracing::warn!(id = %referral.id, bytes = payload.len(), "referral read by id left to the next poll (over the record budget)");
        return Ok(Outcome::LeftToPoll);
    }
    // Acknowledged (acks=all) before it counts as published.
    outputs
        .send_referral(referral.id.clone(), payload)
        .await
        .map_err(|error| error.to_string())?;
    tenant.published.remember(
        referral.id.clone(),
        version,
        referral.updated_date_time.unwrap_or_default(),
    );
    Ok(Outcome::Published)
}
