//! Partner Center webhooks, simulated: the registration (`/v1.0/engagements/webhooks/
//! registration`: GET, POST, PUT, DELETE, with a bearer token this simulator issued, and the
//! faults of the referrals endpoints) and the events it sends when referrals change.
//!
//! One registration per simulator (Partner Center keeps one per partner account): POST creates
//! or replaces it, PUT replaces an existing one (404 without), GET shows it (404 without),
//! DELETE removes it (204; 404 without). `WebhookUrl` must be an http(s) URL and
//! `WebhookEvents` a non-empty list of events the simulator knows.
//!
//! Events: `referral-updated` for a referral moved on by a mutation (random or
//! `POST /_simulator/mutate-now`) or a PATCH, `referral-created` for late referrals, when the
//! registration lists that event. Each is POSTed as JSON in Partner Center's shape
//! (`EventName`, `ResourceUri` ending in `/referrals/{id}`, `ResourceName`, `AuditUri`,
//! `ResourceChangeUtcDate`), after the change is in the store, so a fetch by id right away sees
//! it. A delivery that fails (not 2xx, no answer in [`ATTEMPT_TIMEOUT`]) is tried again, up to
//! [`ATTEMPTS`] times as Partner Center does, [`RETRY_BASE`] doubling between attempts; each
//! event is delivered on its own task, so a dead receiver holds nothing up.
//! `GET /_simulator/stats` counts deliveries (`webhooks`).
//!
//! Not simulated: Partner Center's signature (an RSA-SHA256 signature of the body by a
//! certificate chaining to the Microsoft root, docs/partner-center-webhooks.md). The simulator
//! has no such certificate; the callback URL's shared secret is what the receiver checks.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::api::{Reply, error_reply, serve_api};
use super::generate::format_instant;
use super::{Simulator, lock};

/// Delivery attempts per event (Partner Center makes 10, then queues the event offline).
pub const ATTEMPTS: u32 = 10;
/// The wait before the second attempt; doubled each time, capped at [`RETRY_CAP`].
pub const RETRY_BASE: Duration = Duration::from_millis(500);
const RETRY_CAP: Duration = Duration::from_secs(30);
/// How long one attempt may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

pub(super) const REFERRAL_CREATED: &str = "referral-created";
pub(super) const REFERRAL_UPDATED: &str = "referral-updated";
const KNOWN_EVENTS: [&str; 3] = [REFERRAL_CREATED, REFERRAL_UPDATED, "test-created"];

/// A registration, in Partner Center's member names.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Registration {
    #[serde(rename = "SubscriberId", default)]
    subscriber_id: Option<String>,
    #[serde(rename = "WebhookUrl")]
    webhook_url: String,
    #[serde(rename = "WebhookEvents")]
    webhook_events: Vec<String>,
    #[serde(
        rename = "signatureTokenToMsSignatureHeader",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    signature_token_to_ms_signature_header: Option<bool>,
}

/// Deliveries, for `GET /_simulator/stats`.
#[derive(Default, Debug, Clone, Serialize)]
pub(super) struct DeliveryStats {
    /// Events whose delivery was answered 2xx.
    delivered: u64,
    /// Attempts that failed (not 2xx, or no answer), retried or not.
    failed_attempts: u64,
    /// Events given up after [`ATTEMPTS`].
    abandoned: u64,
}

/// The registration and the deliveries' client.
pub(super) struct Webhooks {
    registration: std::sync::Mutex<Option<Registration>>,
    pub(super) stats: Arc<std::sync::Mutex<DeliveryStats>>,
    http: reqwest::Client,
}

impl Default for Webhooks {
    fn default() -> Self {
        Webhooks {
            registration: std::sync::Mutex::default(),
            stats: Arc::default(),
            http: reqwest::Client::builder()
                .timeout(ATTEMPT_TIMEOUT)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap_or_default(),
        }
    }
}

/// Checks a registration body; `Err` is the 400's message.
fn parse_registration(body: &[u8]) -> Result<Registration, String> {
    let registration: Registration = serde_json::from_slice(body)
        .map_err(|error| format!("not a webhook registration: {error}"))?;
    let url = url::Url::parse(&registration.webhook_url)
        .map_err(|error| format!("WebhookUrl is not a URL: {error}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("WebhookUrl must be an http or https URL".to_owned());
    }
    if registration.webhook_events.is_empty() {
        return Err("WebhookEvents is empty".to_owned());
    }
    if let Some(unknown) = registration
        .webhook_events
        .iter()
        .find(|event| !KNOWN_EVENTS.contains(&event.as_str()))
    {
        return Err(format!("unknown event {unknown:?}"));
    }
    Ok(registration)
}

impl Simulator {
    fn registration_reply(&self, method: &str, body: &[u8]) -> Reply {
        let mut current = lock(&self.webhooks.registration);
        let show = |registration: &Registration| {
            Reply::new(
                StatusCode::OK,
                serde_json::to_string(registration).unwrap_or_default(),
            )
        };
        let none = || {
            error_reply(
                StatusCode::NOT_FOUND,
                "itemNotFound",
                "no webhook registration for this partner",
            )
        };
        match method {
            "GET" => current.as_ref().map_or_else(none, show),
            "DELETE" => match current.take() {
                Some(_) => {
                    tracing::info!("simulator webhook registration removed");
                    Reply::new(StatusCode::NO_CONTENT, String::new())
                }
                None => none(),
            },
            _ => {
                if method == "PUT" && current.is_none() {
                    return none();
                }
                let mut registration = match parse_registration(body) {
                    Ok(registration) => registration,
                    Err(message) => {
                        return error_reply(StatusCode::BAD_REQUEST, "invalidRequest", &message);
                    }
                };
                registration.subscriber_id = current
                    .as_ref()
                    .and_then(|r| r.subscriber_id.clone())
                    .or_else(|| Some(uuid::Uuid::new_v4().to_string()));
                tracing::info!(events = ?registration.webhook_events, "simulator webhook registered");
                let reply = show(&registration);
                *current = Some(registration);
                reply
            }
        }
    }

    /// Sends `event` for each referral id (changed at `at`) to the registered URL, when the
    /// registration lists the event; each delivery on its own task (see the module docs).
    pub(super) fn notify(&self, event: &'static str, ids: &[String], at: OffsetDateTime) {
        let Some(registration) = lock(&self.webhooks.registration).clone() else {
            return;
        };
        if !registration.webhook_events.iter().any(|e| e == event) {
            return;
        }
        let date = format_instant(at, 7);
        for id in ids {
            let body = serde_json::json!({
                "EventName": event,
                "ResourceUri": format!("http://{}/v1.0/engagements/referrals/{id}", self.addr),
                "ResourceName": "referral",
                "AuditUri": null,
                "ResourceChangeUtcDate": date,
            })
            .to_string();
            let http = self.webhooks.http.clone();
            let stats = self.webhooks.stats.clone();
            let url = registration.webhook_url.clone();
            let id = id.clone();
            tokio::spawn(async move { deliver(http, stats, url, id, body).await });
        }
    }
}

async fn deliver(
    http: reqwest::Client,
    stats: Arc<std::sync::Mutex<DeliveryStats>>,
    url: String,
    id: String,
    body: String,
) {
    let mut wait = RETRY_BASE;
    for attempt in 1..=ATTEMPTS {
        let sent = http
            .post(&url)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await;
        match sent {
            Ok(response) if response.status().is_success() => {
                lock(&stats).delivered += 1;
                tracing::debug!(id, attempt, "simulator webhook delivered");
                return;
            }
            Ok(response) => {
                tracing::info!(
                    id,
                    attempt,
                    status = response.status().as_u16(),
                    "simulator webhook refused; retrying"
                );
            }
            Err(error) => {
                tracing::info!(id, attempt, %error, "simulator webhook not delivered; retrying");
            }
        }
        lock(&stats).failed_attempts += 1;
        if attempt < ATTEMPTS {
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(RETRY_CAP);
        }
    }
    lock(&stats).abandoned += 1;
    tracing::warn!(id, "simulator webhook abandoned after {ATTEMPTS} attempts");
}

/// `GET|POST|PUT|DELETE /v1.0/engagements/webhooks/registration`.
pub(super) async fn registration(
    State(simulator): State<Arc<Simulator>>,
    method: axum::http::Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    serve_api(&simulator, "webhooks_registration", &headers, || async {
        simulator.registration_reply(method.as_str(), &body)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registrations_need_a_url_and_known_events() {
        let ok = br#"{"WebhookUrl":"https://h/x","WebhookEvents":["referral-created","referral-updated"],"signatureTokenToMsSignatureHeader":true}"#;
        let parsed = parse_registration(ok).unwrap();
        assert_eq!(parsed.webhook_events.len(), 2);
        for bad in [
            &br#"{"WebhookEvents":["referral-created"]}"#[..],
            br#"{"WebhookUrl":"ftp://h/x","WebhookEvents":["referral-created"]}"#,
            br#"{"WebhookUrl":"https://h/x","WebhookEvents":[]}"#,
            br#"{"WebhookUrl":"https://h/x","WebhookEvents":["subscription-updated"]}"#,
            b"[]",
        ] {
            assert!(
                parse_registration(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
