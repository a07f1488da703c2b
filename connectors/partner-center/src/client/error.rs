//! Why a Referrals API call failed, and whether it is worth retrying.

use std::time::Duration;

use crate::auth::AuthError;

/// Why a Referrals API call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No usable access token.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// HTTP 429.
    #[error("partner center throttled the request (http 429{})", fmt_retry_after(*retry_after))]
    RateLimited {
        /// The server's `Retry-After`, if it sent one.
        retry_after: Option<Duration>,
    },
    /// Connection refused or reset, DNS failure, body cut off mid-stream.
    #[error("network error calling partner center: {0}")]
    Network(String),
    /// No complete reply within the request timeout (or HTTP 408).
    #[error("partner center request timed out")]
    Timeout,
    /// HTTP 5xx.
    #[error("partner center server error: http {status}{}", fmt_retry_after(*retry_after))]
    Server {
        /// HTTP status.
        status: u16,
        /// The server's `Retry-After`, if it sent one (503 may).
        retry_after: Option<Duration>,
    },
    /// HTTP 4xx other than 408 and 429 (a second 401, 400 bad `$filter`, 403 missing role, ...).
    #[error("partner center rejected the request: http {status}: {body_snippet}")]
    Client {
        /// HTTP status.
        status: u16,
        /// Start of the error body (the service's error JSON).
        body_snippet: String,
    },
    /// The body is not the JSON expected.
    #[error("partner center reply could not be decoded: {message}")]
    Decode {
        /// Where and how decoding failed (never quotes the body).
        message: String,
        /// Not valid JSON at all (cut off): retried. Valid JSON of the wrong shape is not.
        truncated: bool,
    },
    /// An `@odata.nextLink` that must not be followed with our token.
    #[error("@odata.nextLink {reason}")]
    NextLink {
        /// What is wrong with it.
        reason: String,
    },
    /// A request this client will not send (bad settings, an empty or odd id).
    #[error("invalid request: {0}")]
    Invalid(String),
}

fn fmt_retry_after(retry_after: Option<Duration>) -> String {
    retry_after.map_or_else(String::new, |delay| {
        format!(", retry after {} s", delay.as_secs_f64())
    })
}

impl ClientError {
    /// Whether the same call may succeed later without anyone's help.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Auth(error) => error.is_retryable(),
            ClientError::RateLimited { .. } | ClientError::Network(_) | ClientError::Timeout => {
                true
            }
            ClientError::Server { status, .. } => matches!(status, 500 | 502 | 503 | 504),
            ClientError::Decode { truncated, .. } => *truncated,
            ClientError::Client { .. } | ClientError::NextLink { .. } | ClientError::Invalid(_) => {
                false
            }
        }
    }

    /// The server's `Retry-After`, which takes precedence over backoff.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ClientError::RateLimited { retry_after } | ClientError::Server { retry_after, .. } => {
                *retry_after
            }
            _ => None,
        }
    }

    /// HTTP status, when the service answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::RateLimited { .. } => Some(429),
            ClientError::Server { status, .. } | ClientError::Client { status, .. } => {
                Some(*status)
            }
            _ => None,
        }
    }

    /// A bounded label for metrics and logs.
    pub(super) fn reason(&self) -> &'static str {
        match self {
            ClientError::Auth(_) => "auth",
            ClientError::RateLimited { .. } => "429",
            ClientError::Network(_) => "network",
            ClientError::Timeout => "timeout",
            ClientError::Server { .. } => "5xx",
            ClientError::Client { .. } => "4xx",
            ClientError::Decode { .. } => "decode",
            ClientError::NextLink { .. } | ClientError::Invalid(_) => "invalid",
        }
    }

    pub(super) fn from_reqwest(error: reqwest::Error) -> Self {
        if error.is_timeout() {
            return ClientError::Timeout;
        }
        let mut text = error.to_string();
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        ClientError::Network(text)
    }
}
