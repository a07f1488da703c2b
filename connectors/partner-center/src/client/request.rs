//! One call to the Referrals API with its retries: the HTTP attempt, the retry loop and the
//! `Retry-After` hold-off, capped body reads and decoding a reply.

use std::time::{Duration, Instant, SystemTime};

use reqwest::StatusCode;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, IF_MATCH, RETRY_AFTER};
use serde_json::value::RawValue;
use url::Url;
use uuid::Uuid;

use crate::auth::Secret;
use crate::telemetry;

use super::retry::{backoff_delay, parse_retry_after};
use super::{ClientError, PartnerCenterClient};

/// The most of an error reply's body that is read (only its start is reported).
const ERROR_BODY_MAX: usize = 64 * 1024;

/// What one successful HTTP attempt returned.
pub(super) struct Fetched {
    /// The whole body.
    pub(super) body: Vec<u8>,
    /// The service's `request-id` header.
    pub(super) request_id: Option<String>,
}

/// What one call sends besides the URL: a `GET`, or a `PATCH` with its body and headers.
#[derive(Clone, Copy)]
pub(super) enum Outgoing<'a> {
    Get,
    /// A JSON Patch document, `If-Match` (when known) and `Prefer: return=representation`.
    Patch {
        body: &'a [u8],
        if_match: Option<&'a str>,
    },
    /// A JSON body with `POST` or `PUT` (the webhook registration, `webhooks.rs`).
    Json {
        put: bool,
        body: &'a [u8],
    },
    Delete,
}

impl PartnerCenterClient {
    pub(super) async fn get_with_retries<T>(
        &self,
        endpoint: &'static str,
        url: &Url,
        decode: fn(Fetched) -> Result<T, ClientError>,
    ) -> Result<T, ClientError> {
        self.send_with_retries(endpoint, url, Outgoing::Get, decode)
            .await
    }

    /// One call with the retry loop of the module docs (the same for every method: a `PATCH`
    /// repeated after a lost reply is made safe by its `If-Match`, which then answers 412).
    pub(super) async fn send_with_retries<T>(
        &self,
        endpoint: &'static str,
        url: &Url,
        outgoing: Outgoing<'_>,
        decode: fn(Fetched) -> Result<T, ClientError>,
    ) -> Result<T, ClientError> {
        let correlation_id = Uuid::new_v4();
        if let Some(wait) = self.take_hold_off() {
            tracing::info!(
                endpoint,
                wait_ms = wait.as_millis() as u64,
                "waiting out the retry-after of the last call before calling partner center again"
            );
            self.sleep.sleep(wait).await;
        }
        let mut attempt = 0;
        let mut refreshed_after_401 = false;
        let mut fresh_token = None;
        loop {
            attempt += 1;
            let token = match fresh_token.take() {
                Some(token) => Ok(token),
                None => self.tokens.access_token().await.map_err(ClientError::Auth),
            };
            let outcome = match token {
                Ok(token) => self
                    .attempt(endpoint, url, outgoing, &token, correlation_id, attempt)
                    .await
                    .and_then(decode),
                Err(error) => Err(error),
            };
            let error = match outcome {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            if error.status() == Some(401) && !refreshed_after_401 {
                refreshed_after_401 = true;
                tracing::info!(
                    endpoint,
                    attempt,
                    "partner center answered 401, refreshing token"
                );
                fresh_token = Some(self.tokens.refresh_now().await?);
                // The retry after a refresh does not use up an attempt.
                attempt -= 1;
                continue;
            }
            if !error.is_retryable() || attempt >= self.settings.max_attempts {
                if let Some(delay) = error.retry_after() {
                    self.hold_off(delay);
                }
                return Err(error);
            }
            let delay = error.retry_after().unwrap_or_else(|| {
                backoff_delay(
                    self.settings.backoff_base,
                    self.settings.backoff_cap,
                    attempt,
                )
            });
            telemetry::api_retry_scheduled(endpoint, error.reason(), attempt, delay, &error);
            self.sleep.sleep(delay).await;
        }
    }

    /// The next call waits until `delay` from now (or longer, if already asked to).
    fn hold_off(&self, delay: Duration) {
        let until = Instant::now() + delay;
        let mut hold_off = self
            .hold_off_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *hold_off = Some(hold_off.map_or(until, |current| current.max(until)));
    }

    /// What is left of the hold-off, if any; clears it.
    fn take_hold_off(&self) -> Option<Duration> {
        let until = self
            .hold_off_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()?;
        let left = until.saturating_duration_since(Instant::now());
        (!left.is_zero()).then_some(left)
    }

    async fn attempt(
        &self,
        endpoint: &'static str,
        url: &Url,
        outgoing: Outgoing<'_>,
        token: &Secret,
        correlation_id: Uuid,
        attempt: u32,
    ) -> Result<Fetched, ClientError> {
        let started = Instant::now();
        let request = match outgoing {
            Outgoing::Get => self.http.get(url.clone()),
            Outgoing::Patch { body, if_match } => {
                let request = self
                    .http
                    .patch(url.clone())
                    .header(CONTENT_TYPE, "application/json")
                    .header("Prefer", "return=representation")
                    .body(body.to_vec());
                match if_match {
                    Some(etag) => request.header(IF_MATCH, etag),
                    None => request,
                }
            }
            Outgoing::Json { put, body } => {
                let request = if put {
                    self.http.put(url.clone())
                } else {
                    self.http.post(url.clone())
                };
                request
                    .header(CONTENT_TYPE, "application/json")
                    .body(body.to_vec())
            }
            Outgoing::Delete => self.http.delete(url.clone()),
        };
        let sent = request
            .bearer_auth(token.expose())
            .header(ACCEPT, "application/json")
            .header("MS-CorrelationId", correlation_id.to_string())
            .header("client-request-id", Uuid::new_v4().to_string())
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(error) => {
                let error = ClientError::from_reqwest(error);
                telemetry::api_request_finished(
                    endpoint,
                    error.reason(),
                    attempt,
                    None,
                    started.elapsed(),
                );
                return Err(error);
            }
        };
        let status = response.status();
        let request_id = request_id(response.headers());
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| parse_retry_after(value, SystemTime::now()));
        let cap = if status.is_success() {
            self.settings.max_body_bytes
        } else {
            ERROR_BODY_MAX
        };
        let body = read_capped(response, cap).await;
        telemetry::api_request_finished(
            endpoint,
            status.as_str(),
            attempt,
            request_id.as_deref(),
            started.elapsed(),
        );
        let (body, complete) = body.map_err(ClientError::from_reqwest)?;
        if status.is_success() {
            if !complete {
                return Err(ClientError::Decode {
                    message: format!(
                        "the reply body is larger than its cap of {cap} bytes (a full page of \
                         referrals of up to 1 MiB each); lower HUNTER_PARTNER_CENTER_PAGE_SIZE \
                         for smaller pages"
                    ),
                    truncated: false,
                });
            }
            return Ok(Fetched { body, request_id });
        }
        Err(match status {
            StatusCode::REQUEST_TIMEOUT => ClientError::Timeout,
            StatusCode::TOO_MANY_REQUESTS => ClientError::RateLimited { retry_after },
            status if status.is_server_error() => ClientError::Server {
                status: status.as_u16(),
                retry_after,
            },
            status => ClientError::Client {
                status: status.as_u16(),
                body_snippet: snippet(&body),
            },
        })
    }
}

/// Reads a reply body as it arrives, at most `cap` bytes: the bytes read and whether that is the
/// whole body. A `Content-Length` over the cap reads nothing; a body without one stops being
/// read once it passes the cap. Memory stays bounded by the cap either way.
async fn read_capped(
    mut response: reqwest::Response,
    cap: usize,
) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let announced = response.content_length();
    if announced.is_some_and(|length| length > cap as u64) {
        return Ok((Vec::new(), false));
    }
    let mut body = Vec::with_capacity(announced.map_or(16 * 1024, |length| length as usize));
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > cap {
            let room = cap - body.len();
            body.extend_from_slice(&chunk[..room]);
            return Ok((body, false));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, true))
}

fn request_id(headers: &HeaderMap) -> Option<String> {
    ["request-id", "x-ms-request-id"]
        .iter()
        .find_map(|name| headers.get(*name)?.to_str().ok())
        .map(str::to_owned)
}

pub(super) fn decode_entity(fetched: Fetched) -> Result<Box<RawValue>, ClientError> {
    let raw: Box<RawValue> = serde_json::from_slice(&fetched.body).map_err(decode_error)?;
    if !raw.get().starts_with('{') {
        return Err(ClientError::Decode {
            message: "expected a json object".to_owned(),
            truncated: false,
        });
    }
    Ok(raw)
}

/// A PATCH reply: the referral (200 with `Prefer: return=representation`) or nothing (204).
pub(super) fn decode_patched(fetched: Fetched) -> Result<super::Patched, ClientError> {
    let referral = if fetched.body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        Some(decode_entity(Fetched {
            body: fetched.body,
            request_id: fetched.request_id.clone(),
        })?)
    };
    Ok(super::Patched {
        referral,
        request_id: fetched.request_id,
    })
}

pub(super) fn decode_error(error: serde_json::Error) -> ClientError {
    use serde_json::error::Category;
    let truncated = matches!(error.classify(), Category::Eof | Category::Syntax);
    let what = if truncated {
        "not valid json (cut off?)"
    } else {
        "unexpected json shape"
    };
    // Position only: the message could quote referral data (customer names, emails).
    ClientError::Decode {
        message: format!("{what} at line {} column {}", error.line(), error.column()),
        truncated,
    }
}

/// At most 512 characters of an error body, on one line.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut snippet: String = text.chars().take(512).collect();
    if text.chars().count() > 512 {
        snippet.push('…');
    }
    snippet.replace(['\r', '\n'], " ")
}
