//! Delivery to one target: a worker per target with its own queue, rate limit and retries.
//!
//! Invariants:
//! - one target never waits on another: each has its own task, queue and HTTP requests, so a
//!   dead, slow or garbage-answering target only delays its own deliveries;
//! - an attempt is bounded by `HUNTER_NOTIFY_TIMEOUT_MS`; a retryable failure (network,
//!   timeout, 408, 429, 5xx, a 2xx the format does not accept) is tried again after a backoff
//!   with full jitter (a 429's `Retry-After` when it is longer, up to the cap) until
//!   `HUNTER_NOTIFY_MAX_ATTEMPTS`, then recorded `failed`; a permanent one (another 4xx, a
//!   redirect) is recorded `failed` at once;
//! - every attempt's outcome is recorded (`notifications`), and errors never carry the URL
//!   (it is the target's credential): reqwest's errors are stripped of it.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use hunter_core::config::{NotifyFormat, NotifySettings, NotifyTarget};
use hunter_core::shutdown::Shutdown;
use hunter_core::telemetry::names;
use tokio::sync::mpsc;

use super::event::Event;
use super::store::{Outcome, Recorder, Step};

/// Most deliveries a target may send at once after a quiet spell.
const BURST: f64 = 5.0;

/// A token bucket: `rate_per_minute` deliveries per minute, in bursts of up to [`BURST`].
#[derive(Debug)]
pub struct RateLimit {
    capacity: f64,
    per_second: f64,
    tokens: f64,
    updated: Instant,
}

impl RateLimit {
    pub fn new(rate_per_minute: u32, now: Instant) -> Self {
        let capacity = BURST.min(f64::from(rate_per_minute)).max(1.0);
        RateLimit {
            capacity,
            per_second: f64::from(rate_per_minute) / 60.0,
            tokens: capacity,
            updated: now,
        }
    }

    /// Takes a token at `now`, or says how long until one is there (and takes nothing).
    pub fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.capacity);
        self.updated = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - self.tokens) / self.per_second,
            ))
        }
    }
}

/// How one attempt went.
#[derive(Debug, Clone, PartialEq)]
pub enum Attempt {
    Delivered {
        status: u16,
    },
    /// Worth trying again; `after` is a wait the server asked for (`Retry-After`).
    Retry {
        class: &'static str,
        status: Option<u16>,
        error: String,
        after: Option<Duration>,
    },
    /// Trying again cannot help (the target refuses this request or moved).
    Permanent {
        status: Option<u16>,
        error: String,
    },
}

/// Judges an answer: the status and what the body says, by format. Teams (Workflows answers
/// 202 with no body; incoming webhooks 200 `1`) and Slack (200 `ok`) say more than a status.
pub fn judge(
    format: NotifyFormat,
    status: u16,
    body: &str,
    retry_after: Option<Duration>,
) -> Attempt {
    let shown: String = body.trim().chars().take(200).collect();
    match status {
        200..=299 => {
            let accepted = match format {
                NotifyFormat::Json => true,
                NotifyFormat::Slack => body.trim() == "ok" || body.trim().is_empty(),
                NotifyFormat::Teams => {
                    let body = body.trim();
                    body.is_empty()
                        || body == "1"
                        || (serde_json::from_str::<serde_json::Value>(body).is_ok()
                            && !body.to_ascii_lowercase().contains("error"))
                }
            };
            if accepted {
                Attempt::Delivered { status }
            } else {
                Attempt::Retry {
                    class: "answer",
                    status: Some(status),
                    error: format!(
                        "HTTP {status} with an answer a {} webhook does not give: {shown:?}",
                        format.as_str()
                    ),
                    after: None,
                }
            }
        }
        408 | 425 | 429 | 500..=599 => Attempt::Retry {
            class: "status",
            status: Some(status),
            error: format!("HTTP {status}: {shown:?}"),
            after: retry_after,
        },
        300..=399 => Attempt::Permanent {
            status: Some(status),
            error: format!(
                "HTTP {status}: the webhook redirects; set the target's final URL in HUNTER_NOTIFY_TARGETS"
            ),
        },
        _ => Attempt::Permanent {
            status: Some(status),
            error: format!(
                "HTTP {status}: the target refuses the request ({shown:?}); check the target's URL and format in HUNTER_NOTIFY_TARGETS"
            ),
        },
    }
}

/// The wait before attempt `attempt + 1` (`attempt` failed ones so far, from 1): full-jitter
/// backoff, or the server's `Retry-After` when that is longer, never beyond the cap.
pub fn retry_wait(
    attempt: u32,
    base: Duration,
    cap: Duration,
    asked: Option<Duration>,
) -> Duration {
    let backoff = super::super::backoff(attempt.saturating_sub(1), base, cap);
    asked.map_or(backoff, |asked| asked.max(backoff)).min(cap)
}

/// One request; never returns an error that shows the URL.
pub async fn send(
    client: &reqwest::Client,
    target: &NotifyTarget,
    body: &serde_json::Value,
    timeout: Duration,
) -> Attempt {
    let request = client
        .post(target.url.expose())
        .timeout(timeout)
        .header("user-agent", concat!("hunter/", env!("CARGO_PKG_VERSION")))
        .json(body);
    let response = match request.send().await {
        Ok(response) => response,
        Err(error) => return transport_failure(error),
    };
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    // Read at most 64 KiB of the answer: a garbage-answering target cannot fill memory.
    let mut body = Vec::new();
    let mut response = response;
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                body.extend_from_slice(&chunk);
                if body.len() > 64 * 1024 {
                    break;
                }
            }
            Ok(None) => break,
            Err(error) => return transport_failure(error),
        }
    }
    judge(
        target.format,
        status,
        &String::from_utf8_lossy(&body),
        retry_after,
    )
}

fn transport_failure(error: reqwest::Error) -> Attempt {
    let class = if error.is_timeout() {
        "timeout"
    } else {
        "network"
    };
    // The URL is the target's secret: never in a message.
    let error = error.without_url();
    let mut message = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(inner) = source {
        message.push_str(&format!(": {inner}"));
        source = inner.source();
    }
    Attempt::Retry {
        class,
        status: None,
        error: message,
        after: None,
    }
}

/// A delivery waiting in a target's queue.
#[derive(Debug, Clone)]
pub struct Job {
    pub notification_id: String,
    pub event: Event,
    /// Attempts made so far (a restart continues the count).
    pub attempts: u32,
}

/// A target's worker: takes jobs from `jobs`, sends them in due order within the rate limit,
/// records each attempt, and retries with backoff. Ends on shutdown (an attempt in flight is
/// dropped unrecorded: the delivery stays pending and the next start sends it again).
pub async fn worker(
    target: NotifyTarget,
    settings: NotifySettings,
    client: reqwest::Client,
    recorder: Recorder,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    mut shutdown: Shutdown,
) {
    let name = target.name.clone();
    let mut limit = RateLimit::new(settings.rate_per_minute, Instant::now());
    // Min-heap by due time; the sequence keeps equal times in arrival order.
    let mut queue: BinaryHeap<Reverse<(tokio::time::Instant, u64, usize)>> = BinaryHeap::new();
    let mut slots: Vec<Option<Job>> = Vec::new();
    let mut sequence = 0u64;
    let pending = metrics::gauge!(names::NOTIFY_PENDING, "target" => name.clone());
    pending.set(0.0);
    loop {
        let due = queue.peek().map(|Reverse((due, _, _))| *due);
        tokio::select! {
            biased;
            _ = shutdown.wait() => break,
            received = jobs.recv() => match received {
                Some(job) => {
                    sequence += 1;
                    slots.push(Some(job));
                    queue.push(Reverse((tokio::time::Instant::now(), sequence, slots.len() - 1)));
                    pending.set(queue.len() as f64);
                }
                None => break,
            },
            _ = sleep_until(due), if due.is_some() => {
                // The rate limit: wait for a token, and let the queue go on taking jobs.
                if let Err(wait) = limit.take(Instant::now()) {
                    if let Some(Reverse((_, seq, slot))) = queue.pop() {
                        queue.push(Reverse((tokio::time::Instant::now() + wait, seq, slot)));
                    }
                    continue;
                }
                let Some(Reverse((_, _, slot))) = queue.pop() else { continue };
                let Some(mut job) = slots[slot].take() else { continue };
                let body = super::event::render(&job.event, target.format);
                let started = Instant::now();
                let attempt = tokio::select! {
                    biased;
                    _ = shutdown.wait() => break,
                    attempt = send(&client, &target, &body, settings.timeout) => attempt,
                };
                let elapsed = started.elapsed();
                metrics::histogram!(names::NOTIFY_REQUEST_DURATION_SECONDS, "target" => name.clone())
                    .record(elapsed.as_secs_f64());
                job.attempts += 1;
                let retry = outcome(&name, &target, &settings, &recorder, &job, attempt, elapsed);
                if let Some(wait) = retry {
                    sequence += 1;
                    slots[slot] = Some(job);
                    queue.push(Reverse((tokio::time::Instant::now() + wait, sequence, slot)));
                }
                // Slots of finished jobs are reused once the queue is empty.
                if queue.is_empty() {
                    slots.clear();
                }
                pending.set(queue.len() as f64);
            }
        }
    }
}

/// Records one attempt; returns the wait before the next one when there is to be one.
fn outcome(
    name: &str,
    target: &NotifyTarget,
    settings: &NotifySettings,
    recorder: &Recorder,
    job: &Job,
    attempt: Attempt,
    elapsed: Duration,
) -> Option<Duration> {
    let duration_ms = u32::try_from(elapsed.as_millis()).unwrap_or(u32::MAX);
    let kind = job.event.kind.as_str();
    let step = |outcome: Outcome, status: Option<u16>, error: Option<String>| Step {
        notification_id: job.notification_id.clone(),
        target: target.name.clone(),
        format: target.format,
        event: job.event.clone(),
        attempt: job.attempts,
        outcome,
        http_status: status,
        error,
        duration_ms,
    };
    match attempt {
        Attempt::Delivered { status } => {
            tracing::info!(
                target = name,
                kind,
                lead = job.event.subject(),
                attempts = job.attempts,
                "notification delivered"
            );
            metrics::counter!(names::NOTIFY_DELIVERIES_TOTAL, "target" => name.to_owned(), "kind" => kind, "outcome" => "delivered").increment(1);
            recorder.record(step(Outcome::Delivered, Some(status), None));
            None
        }
        Attempt::Retry {
            class,
            status,
            error,
            after,
        } if job.attempts < settings.max_attempts => {
            metrics::counter!(names::NOTIFY_ATTEMPT_FAILURES_TOTAL, "target" => name.to_owned(), "class" => class).increment(1);
            let wait = retry_wait(job.attempts, settings.retry_base, settings.retry_cap, after);
            tracing::warn!(target = name, kind, lead = job.event.subject(), attempts = job.attempts, %error, retry_in = ?wait, "notification not delivered; retrying");
            recorder.record(step(Outcome::Retrying, status, Some(error)));
            Some(wait)
        }
        Attempt::Retry {
            class,
            status,
            error,
            ..
        } => {
            metrics::counter!(names::NOTIFY_ATTEMPT_FAILURES_TOTAL, "target" => name.to_owned(), "class" => class).increment(1);
            fail(
                name,
                kind,
                recorder,
                job,
                step(Outcome::Failed, status, Some(error)),
            )
        }
        Attempt::Permanent { status, error } => {
            metrics::counter!(names::NOTIFY_ATTEMPT_FAILURES_TOTAL, "target" => name.to_owned(), "class" => "status").increment(1);
            fail(
                name,
                kind,
                recorder,
                job,
                step(Outcome::Failed, status, Some(error)),
            )
        }
    }
}

fn fail(
    name: &str,
    kind: &'static str,
    recorder: &Recorder,
    job: &Job,
    step: Step,
) -> Option<Duration> {
    tracing::error!(
        target = name,
        kind,
        lead = job.event.subject(),
        attempts = job.attempts,
        error = step.error.as_deref().unwrap_or_default(),
        "notification failed; recorded as failed"
    );
    metrics::counter!(names::NOTIFY_DELIVERIES_TOTAL, "target" => name.to_owned(), "kind" => kind, "outcome" => "failed").increment(1);
    recorder.record(step);
    None
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_limit_allows_a_burst_then_the_rate() {
        let start = Instant::now();
        let mut limit = RateLimit::new(60, start);
        for _ in 0..5 {
            assert!(limit.take(start).is_ok());
        }
        let wait = limit.take(start).unwrap_err();
        assert!(
            wait <= Duration::from_secs(1) && wait > Duration::from_millis(900),
            "{wait:?}"
        );
        // One a second at 60 per minute.
        assert!(limit.take(start + Duration::from_millis(1000)).is_ok());
        assert!(limit.take(start + Duration::from_millis(1000)).is_err());
        // A long quiet spell refills to the burst, no more.
        let later = start + Duration::from_secs(3600);
        let taken = (0..20).filter(|_| limit.take(later).is_ok()).count();
        assert_eq!(taken, 5);
        // A slow rate: a burst of one.
        let mut slow = RateLimit::new(1, start);
        assert!(slow.take(start).is_ok());
        let wait = slow.take(start).unwrap_err();
        assert!(wait > Duration::from_secs(59), "{wait:?}");
    }

    #[test]
    fn answers_are_judged_by_format() {
        use NotifyFormat::*;
        assert_eq!(
            judge(Json, 204, "", None),
            Attempt::Delivered { status: 204 }
        );
        assert_eq!(
            judge(Teams, 202, "", None),
            Attempt::Delivered { status: 202 }
        );
        assert_eq!(
            judge(Teams, 200, "1", None),
            Attempt::Delivered { status: 200 }
        );
        assert_eq!(
            judge(Slack, 200, "ok", None),
            Attempt::Delivered { status: 200 }
        );
        // Garbage in a 2xx: retried.
        for (format, body) in [
            (Slack, "<html>proxy login</html>"),
            (Teams, "<html>proxy login</html>"),
            (Teams, "Microsoft Teams endpoint returned HTTP error 429"),
        ] {
            assert!(
                matches!(
                    judge(format, 200, body, None),
                    Attempt::Retry {
                        class: "answer",
                        ..
                    }
                ),
                "{body}"
            );
        }
        // Transient statuses: retried, Retry-After kept.
        let after = Some(Duration::from_secs(7));
        assert_eq!(
            judge(Slack, 429, "rate_limited", after),
            Attempt::Retry {
                class: "status",
                status: Some(429),
                error: "HTTP 429: \"rate_limited\"".into(),
                after
            }
        );
        assert!(matches!(judge(Json, 503, "", None), Attempt::Retry { .. }));
        // The target refuses or moved: no retry.
        assert!(matches!(
            judge(Slack, 404, "no_service", None),
            Attempt::Permanent {
                status: Some(404),
                ..
            }
        ));
        assert!(matches!(
            judge(Json, 301, "", None),
            Attempt::Permanent { .. }
        ));
    }

    #[test]
    fn retries_back_off_within_the_cap_and_honour_retry_after() {
        let (base, cap) = (Duration::from_millis(100), Duration::from_secs(2));
        for attempt in 1..30 {
            let wait = retry_wait(attempt, base, cap, None);
            assert!(wait <= cap);
            assert!(wait <= base * 2u32.saturating_pow(attempt - 1));
        }
        assert!(retry_wait(1, base, cap, Some(Duration::from_secs(1))) >= Duration::from_secs(1));
        assert_eq!(
            retry_wait(1, base, cap, Some(Duration::from_secs(600))),
            cap
        );
    }
}
