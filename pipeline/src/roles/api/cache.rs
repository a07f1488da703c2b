//! A short-lived cache of lead pages, so many callers asking the same question cost ClickHouse
//! one query set per `HUNTER_API_CACHE_MS` instead of one each.
//!
//! - Keyed by the validated request (filters, sort, limit, cursor), never by the token.
//! - Fresh (younger than the TTL): served as is.
//! - Stale: served as is while one background refresh runs; so an answer is at most
//!   TTL + one refresh old, and only the very first caller of a question waits for ClickHouse.
//! - Missing: concurrent callers of the same question share one computation (single flight).
//! - Errors are not cached. At most [`MAX_ENTRIES`] questions; past that, entries unused for a
//!   while are dropped, and when all are in use the answer is computed without caching.
//! - TTL 0 turns the cache off.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt as _;
use futures::future::{BoxFuture, Shared};

/// A computed answer (serialised once) or why it failed.
pub(crate) type Answer = Result<Arc<Vec<u8>>, Arc<String>>;

pub(crate) const MAX_ENTRIES: usize = 1024;

struct Entry {
    value: Option<(Instant, Arc<Vec<u8>>)>,
    inflight: Option<Shared<BoxFuture<'static, Answer>>>,
    used: Instant,
}

pub(crate) struct PageCache {
    ttl: Duration,
    entries: Mutex<HashMap<String, Entry>>,
}

enum Plan {
    Ready(Arc<Vec<u8>>),
    Wait(Shared<BoxFuture<'static, Answer>>),
}

impl PageCache {
    pub(crate) fn new(ttl: Duration) -> Self {
        PageCache {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The answer for `key`, computing it with `compute` when needed (see the module notes).
    pub(crate) async fn get<F, Fut>(self: &Arc<Self>, key: String, compute: F) -> Answer
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Answer> + Send + 'static,
    {
        if self.ttl.is_zero() {
            return compute().await;
        }
        let mut compute = Some(compute);
        let mut computation = || (compute.take().expect("computed once"))();
        let plan = {
            let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            if !entries.contains_key(&key) && entries.len() >= MAX_ENTRIES {
                let idle = self.ttl * 10;
                entries.retain(|_, entry| {
                    entry.inflight.is_some() || now.duration_since(entry.used) < idle
                });
            }
            if !entries.contains_key(&key) && entries.len() >= MAX_ENTRIES {
                None
            } else {
                let entry = entries.entry(key.clone()).or_insert(Entry {
                    value: None,
                    inflight: None,
                    used: now,
                });
                entry.used = now;
                Some(match (&entry.value, &entry.inflight) {
                    (Some((at, value)), _) if now.duration_since(*at) < self.ttl => {
                        Plan::Ready(value.clone())
                    }
                    (Some((_, value)), Some(_)) => Plan::Ready(value.clone()),
                    (Some((_, value)), None) => {
                        let stale = value.clone();
                        let refresh = self.start(&key, entry, computation());
                        tokio::spawn(refresh);
                        Plan::Ready(stale)
                    }
                    (None, Some(inflight)) => Plan::Wait(inflight.clone()),
                    (None, None) => Plan::Wait(self.start(&key, entry, computation())),
                })
            }
        };
        match plan {
            None => computation().await,
            Some(Plan::Ready(value)) => Ok(value),
            Some(Plan::Wait(inflight)) => inflight.await,
        }
    }

    /// Registers the computation as in flight; when it ends, its answer (if any) is stored.
    fn start(
        self: &Arc<Self>,
        key: &str,
        entry: &mut Entry,
        computation: impl Future<Output = Answer> + Send + 'static,
    ) -> Shared<BoxFuture<'static, Answer>> {
        let cache = Arc::clone(self);
        let key = key.to_owned();
        let shared = async move {
            let answer = computation.await;
            let mut entries = cache.entries.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(entry) = entries.get_mut(&key) {
                entry.inflight = None;
                if let Ok(value) = &answer {
                    entry.value = Some((Instant::now(), value.clone()));
                }
            }
            answer
        }
        .boxed()
        .shared();
        entry.inflight = Some(shared.clone());
        shared
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn answer(text: &str) -> Answer {
        Ok(Arc::new(text.as_bytes().to_vec()))
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_computation_and_fresh_answers_are_reused() {
        let cache = Arc::new(PageCache::new(Duration::from_secs(60)));
        let calls = Arc::new(AtomicUsize::new(0));
        let ask = || {
            let calls = calls.clone();
            cache.get("q".into(), move || async move {
                calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
                answer("page")
            })
        };
        let answers = futures::future::join_all((0..20).map(|_| ask())).await;
        assert!(
            answers
                .iter()
                .all(|a| a.as_deref().unwrap().as_slice() == b"page")
        );
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "one computation for 20 callers"
        );
        ask().await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1, "a fresh answer is reused");
    }

    #[tokio::test]
    async fn stale_answers_are_served_while_one_refresh_runs() {
        let cache = Arc::new(PageCache::new(Duration::from_millis(20)));
        let version = Arc::new(AtomicUsize::new(0));
        let ask = || {
            let version = version.clone();
            cache.get("q".into(), move || async move {
                let n = version.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(30)).await;
                answer(&format!("v{n}"))
            })
        };
        assert_eq!(ask().await.unwrap().as_slice(), b"v0");
        tokio::time::sleep(Duration::from_millis(30)).await;
        // Stale: the old answer at once, and a refresh starts.
        assert_eq!(ask().await.unwrap().as_slice(), b"v0");
        assert_eq!(ask().await.unwrap().as_slice(), b"v0", "no second refresh");
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(
            ask().await.unwrap().as_slice(),
            b"v1",
            "the refreshed answer"
        );
        assert_eq!(version.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn errors_are_not_cached_and_zero_ttl_turns_it_off() {
        let cache = Arc::new(PageCache::new(Duration::from_secs(60)));
        let failed = cache
            .get("q".into(), || async { Err(Arc::new("down".to_owned())) })
            .await;
        assert!(failed.is_err());
        let ok = cache.get("q".into(), || async { answer("up") }).await;
        assert_eq!(ok.unwrap().as_slice(), b"up");

        let off = Arc::new(PageCache::new(Duration::ZERO));
        let calls = Arc::new(AtomicUsize::new(0));
        for _ in 0..3 {
            let calls = calls.clone();
            off.get("q".into(), move || async move {
                calls.fetch_add(1, Ordering::SeqCst);
                answer("x")
            })
            .await
            .unwrap();
        }
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn the_number_of_questions_is_bounded() {
        let cache = Arc::new(PageCache::new(Duration::from_secs(60)));
        for n in 0..(MAX_ENTRIES + 10) {
            cache
                .get(format!("q{n}"), || async { answer("x") })
                .await
                .unwrap();
        }
        let entries = cache.entries.lock().unwrap().len();
        assert_eq!(entries, MAX_ENTRIES);
    }
}
