//! Failed bearer tokens throttled per client address: a token bucket of [`BURST`] failures
//! that refills at [`BURST`] per [`WINDOW`].
//!
//! Invariants:
//! - only a wrong token costs: a request with a valid token is never throttled and never counts
//!   (a caller behind the same proxy as a scanner keeps working), and a request without any
//!   `Authorization` header is a plain 401;
//! - past the burst, a wrong token is answered 429 with `Retry-After` (whole seconds until the
//!   bucket holds one attempt again) instead of 401;
//! - memory is bounded: at most [`MAX_CLIENTS`] addresses are tracked; when full, addresses whose
//!   bucket has refilled are forgotten first, then the longest idle one;
//! - IPv6 clients are grouped by /64 (one host usually holds a whole /64), IPv4-mapped IPv6
//!   addresses count as their IPv4 address.
//!
//! The client address is the TCP peer: behind a reverse proxy it is the proxy's, so a scanner
//! there makes wrong tokens of every client behind it answer 429 (valid ones still work).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Wrong tokens an address may present at once before it is throttled.
pub const BURST: f64 = 10.0;
/// The time in which a full burst is refilled.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Addresses tracked at most.
pub const MAX_CLIENTS: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Attempts left (fractional while refilling).
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    fn refilled(self, now: Instant) -> Self {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        Bucket {
            tokens: (self.tokens + elapsed * BURST / WINDOW.as_secs_f64()).min(BURST),
            updated: now,
        }
    }
}

/// The per-address failure buckets.
#[derive(Default)]
pub(crate) struct AuthThrottle {
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl AuthThrottle {
    /// Records one wrong token from `client`; `Err(retry_after)` when the address had no attempt
    /// left (answer 429).
    pub fn failure(&self, client: IpAddr, now: Instant) -> Result<(), Duration> {
        let key = key(client);
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if !buckets.contains_key(&key) && buckets.len() >= MAX_CLIENTS {
            make_room(&mut buckets, now);
        }
        let bucket = buckets
            .get(&key)
            .map(|b| b.refilled(now))
            .unwrap_or(Bucket {
                tokens: BURST,
                updated: now,
            });
        if bucket.tokens >= 1.0 {
            buckets.insert(
                key,
                Bucket {
                    tokens: bucket.tokens - 1.0,
                    updated: now,
                },
            );
            return Ok(());
        }
        buckets.insert(key, bucket);
        let missing = 1.0 - bucket.tokens;
        let seconds = (missing * WINDOW.as_secs_f64() / BURST).ceil().max(1.0);
        Err(Duration::from_secs(seconds as u64))
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.buckets.lock().unwrap().len()
    }
}

/// Forgets refilled buckets, else the longest idle one.
fn make_room(buckets: &mut HashMap<IpAddr, Bucket>, now: Instant) {
    buckets.retain(|_, bucket| bucket.refilled(now).tokens < BURST);
    if buckets.len() >= MAX_CLIENTS
        && let Some(oldest) = buckets
            .iter()
            .min_by_key(|(_, bucket)| bucket.updated)
            .map(|(ip, _)| *ip)
    {
        buckets.remove(&oldest);
    }
}

/// The bucket key of an address: IPv4 as is, IPv6 by its /64.
pub(super) fn key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                IpAddr::V6(segments.into())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_429_then_refill() {
        let throttle = AuthThrottle::default();
        let client: IpAddr = "192.0.2.7".parse().unwrap();
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        let start = Instant::now();
        for _ in 0..10 {
            assert_eq!(throttle.failure(client, start), Ok(()));
        }
        let retry = throttle.failure(client, start).unwrap_err();
        assert_eq!(retry, Duration::from_secs(6));
        // Another address is not affected.
        assert_eq!(throttle.failure(other, start), Ok(()));
        // Refused attempts do not push the wait further out.
        assert_eq!(
            throttle.failure(client, start + Duration::from_secs(3)),
            Err(Duration::from_secs(3))
        );
        // One attempt back after 6 s, a full burst after a minute.
        assert_eq!(
            throttle.failure(client, start + Duration::from_secs(6)),
            Ok(())
        );
        assert!(
            throttle
                .failure(client, start + Duration::from_secs(6))
                .is_err()
        );
        let later = start + Duration::from_secs(70);
        for _ in 0..10 {
            assert_eq!(throttle.failure(client, later), Ok(()));
        }
        assert!(throttle.failure(client, later).is_err());
    }

    #[test]
    fn ipv6_by_prefix_and_mapped_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        assert_eq!(key(a), key(b));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(key(mapped), "192.0.2.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn memory_is_bounded() {
        let throttle = AuthThrottle::default();
        let now = Instant::now();
        for n in 0..(MAX_CLIENTS as u32 + 50) {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + n));
            let _ = throttle.failure(ip, now);
        }
        assert!(throttle.tracked() <= MAX_CLIENTS);
        // Refilled buckets make room for everyone later.
        let later = now + WINDOW * 2;
        let _ = throttle.failure("192.0.2.99".parse().unwrap(), later);
        assert!(throttle.tracked() < 10);
    }
}
