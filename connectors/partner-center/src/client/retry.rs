//! Retry timing: exponential backoff with full jitter, `Retry-After`, and a replaceable sleep.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use rand::Rng as _;

/// Upper bound on a server's `Retry-After`, so a date far in the future cannot park the source.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// How the client waits between attempts. Tests replace it to run retries instantly.
pub trait Sleep: Send + Sync {
    /// Waits for `duration`.
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

/// Sleeps on the tokio timer.
#[derive(Clone, Copy, Debug, Default)]
pub struct TokioSleep;

impl Sleep for TokioSleep {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(tokio::time::sleep(duration))
    }
}

/// The delay before retry number `retry` (1 for the first retry): a uniform draw from
/// `0..=min(cap, base * 2^(retry-1))` ("full jitter", so that many clients that failed together
/// do not retry together).
pub fn backoff_delay(base: Duration, cap: Duration, retry: u32) -> Duration {
    let exponent = retry.saturating_sub(1).min(31);
    let ceiling = base.saturating_mul(1u32 << exponent).min(cap);
    if ceiling.is_zero() {
        return Duration::ZERO;
    }
    let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rand::rng().random_range(0..=nanos))
}

/// Parses a `Retry-After` value: delay-seconds or an HTTP date (RFC 9110 §10.2.3). A date in
/// the past means "now". Capped at [`MAX_RETRY_AFTER`]. `None` when it is neither.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let delay = if !value.is_empty() && value.bytes().all(|byte| byte.is_ascii_digit()) {
        // All digits: huge values saturate instead of failing.
        Duration::from_secs(value.parse::<u64>().unwrap_or(u64::MAX))
    } else {
        let at = httpdate::parse_http_date(value).ok()?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(delay.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn retry_after_seconds() {
        let now = SystemTime::now();
        assert_eq!(parse_retry_after("30", now), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(parse_retry_after("-5", now), None);
        assert_eq!(parse_retry_after("1.5", now), None);
        assert_eq!(parse_retry_after("", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn retry_after_http_dates() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        // IMF-fixdate, obsolete RFC 850 and asctime forms.
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Sunday, 06-Nov-94 08:49:47 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_retry_after("Sun Nov  6 08:49:39 1994", now),
            Some(Duration::from_secs(2))
        );
        // In the past: retry now.
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        // Far future: capped.
        assert_eq!(
            parse_retry_after("Fri, 31 Dec 2100 23:59:59 GMT", now),
            Some(MAX_RETRY_AFTER)
        );
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let base = Duration::from_secs(2);
        let cap = Duration::from_secs(300);
        for _ in 0..200 {
            assert!(backoff_delay(base, cap, 1) <= Duration::from_secs(2));
            assert!(backoff_delay(base, cap, 3) <= Duration::from_secs(8));
            assert!(backoff_delay(base, cap, 30) <= cap);
            assert!(backoff_delay(base, cap, u32::MAX) <= cap);
        }
        assert_eq!(backoff_delay(Duration::ZERO, cap, 5), Duration::ZERO);
        // Full jitter: over many draws the spread covers most of the range.
        let draws: Vec<_> = (0..500).map(|_| backoff_delay(base, cap, 4)).collect();
        assert!(draws.iter().any(|d| *d < Duration::from_secs(4)));
        assert!(draws.iter().any(|d| *d > Duration::from_secs(12)));
    }

    proptest! {
        #[test]
        fn retry_after_seconds_round_trip(secs in 0u64..=3600) {
            prop_assert_eq!(
                parse_retry_after(&secs.to_string(), SystemTime::now()),
                Some(Duration::from_secs(secs))
            );
        }

        #[test]
        fn retry_after_dates_round_trip(offset in 0u64..=3600) {
            let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
            let date = httpdate::fmt_http_date(now + Duration::from_secs(offset));
            prop_assert_eq!(parse_retry_after(&date, now), Some(Duration::from_secs(offset)));
        }
    }
}
