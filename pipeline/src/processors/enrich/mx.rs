//! The email provider from a domain's MX records: the one DNS question of enrichment, its cache
//! and the coalescing of concurrent lookups (see the parent module's doc for the rules).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use tokio::sync::watch;

use hunter_core::config::EnrichSettings;
use hunter_core::records::{EmailProvider, EmailProviderSource};

/// Most domains the MX cache holds; one more evicts the oldest insertion.
pub const MX_CACHE_CAPACITY: usize = 100_000;

/// Longest a failed MX lookup is remembered, so a transient resolver problem heals quickly.
pub const MX_FAILURE_CACHE_TTL_MAX: Duration = Duration::from_secs(60);

/// How much longer than `dns_timeout` a caller waits for the lookup task before giving up on
/// it (the task itself is bounded by `dns_timeout`; this only covers scheduling delays).
const LOOKUP_WAIT_GRACE: Duration = Duration::from_millis(100);

/// Who hosts a domain's mail, as far as its MX records tell: Microsoft wins over Google when a
/// domain lists both (mid-migration domains do); `None` for no usable exchange.
fn from_exchanges<'a>(exchanges: impl IntoIterator<Item = &'a str>) -> Option<EmailProvider> {
    use EmailProvider::{GoogleWorkspace, Microsoft365, Other};
    let mut provider = None;
    for exchange in exchanges {
        let exchange = exchange.trim_end_matches('.').to_ascii_lowercase();
        if exchange.is_empty() {
            // RFC 7505 null MX ("."): the domain accepts no mail.
            continue;
        }
        let found = if is_under(&exchange, "mail.protection.outlook.com") {
            Microsoft365
        } else if is_under(&exchange, "google.com") || is_under(&exchange, "googlemail.com") {
            GoogleWorkspace
        } else {
            Other
        };
        provider = Some(match (provider, found) {
            (_, Microsoft365) | (Some(Microsoft365), _) => Microsoft365,
            (_, GoogleWorkspace) | (Some(GoogleWorkspace), _) => GoogleWorkspace,
            _ => found,
        });
    }
    provider
}

/// `host` is `zone` or a name below it.
fn is_under(host: &str, zone: &str) -> bool {
    host == zone
        || host
            .strip_suffix(zone)
            .is_some_and(|prefix| prefix.ends_with('.'))
}

/// What one MX lookup found; the cached unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MxResult {
    Provider(EmailProvider),
    /// NXDOMAIN, no MX, a null MX, or a resolver error.
    Error,
    Timeout,
}

impl MxResult {
    /// The provider and `email_provider_source`; `from_cache` only changes an answer's source:
    /// a failure keeps its reason.
    fn outcome(self, from_cache: bool) -> (EmailProvider, EmailProviderSource) {
        match self {
            Self::Provider(provider) if from_cache => (provider, EmailProviderSource::MxCache),
            Self::Provider(provider) => (provider, EmailProviderSource::Mx),
            Self::Error => (EmailProvider::Unknown, EmailProviderSource::DnsError),
            Self::Timeout => (EmailProvider::Unknown, EmailProviderSource::DnsTimeout),
        }
    }
}

fn build_resolver(options: &EnrichSettings) -> Result<TokioResolver, NetError> {
    let provider = TokioRuntimeProvider::default();
    let mut builder = match options.dns_server {
        Some(server) => {
            let mut name_server = NameServerConfig::udp_and_tcp(server.ip());
            for connection in &mut name_server.connections {
                connection.port = server.port();
            }
            TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(vec![name_server]),
                provider,
            )
        }
        None => TokioResolver::builder(provider)?,
    };
    let resolver_options = builder.options_mut();
    resolver_options.timeout = options.dns_timeout;
    resolver_options.attempts = 1;
    // Our cache is the one with the documented TTLs; a second one would hide lookups.
    resolver_options.cache_size = 0;
    builder.build()
}

pub(super) struct MxLookup {
    /// `None` when the system configuration could not be read.
    resolver: Option<TokioResolver>,
    timeout: Duration,
    answer_ttl: Duration,
    failure_ttl: Duration,
    state: Mutex<MxState>,
}

struct MxState {
    cache: MxCache,
    /// Lookups under way, by domain: later callers wait on the same channel (coalescing).
    in_flight: HashMap<String, watch::Receiver<Option<MxResult>>>,
}

impl MxLookup {
    /// The lookup of `options`: its resolver, timeout and cache lifetimes. A resolver that
    /// cannot be configured is logged once; every lookup then reports `unknown` / `dns_error`.
    pub(super) fn new(options: &EnrichSettings) -> Self {
        let resolver = match build_resolver(options) {
            Ok(resolver) => Some(resolver),
            Err(error) => {
                tracing::warn!(
                    %error,
                    "dns resolver unavailable: email providers will be unknown; check resolv.conf or set a dns server"
                );
                None
            }
        };
        let answer_ttl = options.mx_cache_ttl;
        Self {
            resolver,
            timeout: options.dns_timeout,
            answer_ttl,
            failure_ttl: answer_ttl.min(MX_FAILURE_CACHE_TTL_MAX),
            state: Mutex::new(MxState {
                cache: MxCache::new(MX_CACHE_CAPACITY),
                in_flight: HashMap::new(),
            }),
        }
    }

    pub(super) fn resolver_ready(&self) -> bool {
        self.resolver.is_some()
    }

    fn state(&self) -> MutexGuard<'_, MxState> {
        // The state stays consistent under a panic (single inserts/removes), so poison is moot.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(super) async fn provider_for(
        self: &Arc<Self>,
        domain: &str,
    ) -> (EmailProvider, EmailProviderSource) {
        let mut receiver = {
            let mut state = self.state();
            if let Some(cached) = state.cache.get(domain, Instant::now()) {
                return cached.outcome(true);
            }
            match state.in_flight.get(domain) {
                Some(receiver) => receiver.clone(),
                None => {
                    let (sender, receiver) = watch::channel(None);
                    state.in_flight.insert(domain.to_owned(), receiver.clone());
                    tokio::spawn(Arc::clone(self).lookup_task(domain.to_owned(), sender));
                    receiver
                }
            }
        };
        let waited = tokio::time::timeout(
            self.timeout + LOOKUP_WAIT_GRACE,
            receiver.wait_for(Option::is_some),
        )
        .await
        .map(|answer| answer.map(|result| *result));
        match waited {
            Ok(Ok(result)) => result.unwrap_or(MxResult::Error).outcome(false),
            Ok(Err(_closed)) => {
                // The task ended without an answer (a panic, or runtime shutdown): unblock the
                // domain for the next caller.
                let mut state = self.state();
                if state
                    .in_flight
                    .get(domain)
                    .is_some_and(|current| current.same_channel(&receiver))
                {
                    state.in_flight.remove(domain);
                }
                MxResult::Error.outcome(false)
            }
            Err(_elapsed) => MxResult::Timeout.outcome(false),
        }
    }

    async fn lookup_task(self: Arc<Self>, domain: String, sender: watch::Sender<Option<MxResult>>) {
        let result = self.query(&domain).await;
        let ttl = match result {
            MxResult::Provider(_) => self.answer_ttl,
            MxResult::Error | MxResult::Timeout => self.failure_ttl,
        };
        {
            let mut state = self.state();
            let now = Instant::now();
            state.cache.insert(domain.clone(), result, now + ttl);
            state.in_flight.remove(&domain);
        }
        sender.send_replace(Some(result));
    }

    async fn query(&self, domain: &str) -> MxResult {
        let Some(resolver) = &self.resolver else {
            return MxResult::Error;
        };
        // Fully qualified, so the resolv.conf search list adds no queries.
        let fqdn = format!("{domain}.");
        match tokio::time::timeout(self.timeout, resolver.mx_lookup(fqdn.as_str())).await {
            Err(_) | Ok(Err(NetError::Timeout)) => {
                tracing::debug!(domain, "mx lookup timed out");
                MxResult::Timeout
            }
            Ok(Err(error)) => {
                tracing::debug!(domain, %error, "mx lookup failed");
                MxResult::Error
            }
            Ok(Ok(lookup)) => {
                let exchanges: Vec<String> = lookup
                    .answers()
                    .iter()
                    .filter_map(|record| match &record.data {
                        RData::MX(mx) => Some(mx.exchange.to_ascii()),
                        _ => None,
                    })
                    .collect();
                from_exchanges(exchanges.iter().map(String::as_str))
                    .map_or(MxResult::Error, MxResult::Provider)
            }
        }
    }
}

/// A bounded map of MX results with a deadline each; full means the oldest insertion goes.
struct MxCache {
    capacity: usize,
    next_sequence: u64,
    entries: HashMap<String, CacheEntry>,
    /// Insertion sequence → domain, oldest first, for eviction.
    by_age: BTreeMap<u64, String>,
}

struct CacheEntry {
    result: MxResult,
    expires_at: Instant,
    sequence: u64,
}

impl MxCache {
    fn new(capacity: usize) -> Self {
        Self {
            capacity,
            next_sequence: 0,
            entries: HashMap::new(),
            by_age: BTreeMap::new(),
        }
    }

    fn get(&mut self, domain: &str, now: Instant) -> Option<MxResult> {
        let entry = self.entries.get(domain)?;
        if entry.expires_at > now {
            return Some(entry.result);
        }
        let sequence = entry.sequence;
        self.entries.remove(domain);
        self.by_age.remove(&sequence);
        None
    }

    fn insert(&mut self, domain: String, result: MxResult, expires_at: Instant) {
        if self.capacity == 0 {
            return;
        }
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        if let Some(previous) = self.entries.remove(&domain) {
            self.by_age.remove(&previous.sequence);
        }
        while self.entries.len() >= self.capacity {
            let Some((_, oldest)) = self.by_age.pop_first() else {
                break;
            };
            self.entries.remove(&oldest);
        }
        self.by_age.insert(sequence, domain.clone());
        self.entries.insert(
            domain,
            CacheEntry {
                result,
                expires_at,
                sequence,
            },
        );
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use tokio::net::UdpSocket;

    use super::*;
    use crate::processors::enrich::Enricher;
    use crate::processors::enrich::tests::{FakeDns, options, pair, provider_of};

    #[test]
    fn mx_exchanges_classify_providers() {
        use EmailProvider::*;
        let cases: [(&[&str], Option<EmailProvider>); 9] = [
            (
                &["contoso-com.mail.protection.outlook.com."],
                Some(Microsoft365),
            ),
            (
                &["aspmx.l.google.com.", "alt1.aspmx.l.google.com."],
                Some(GoogleWorkspace),
            ),
            (&["smtp.google.com"], Some(GoogleWorkspace)),
            (&["mx.googlemail.com."], Some(GoogleWorkspace)),
            (&["mx1.northwind-mail.net."], Some(Other)),
            (&["notgoogle.com.", "outlook.com.evil.net."], Some(Other)),
            (
                &["aspmx.l.google.com.", "x.mail.protection.outlook.com."],
                Some(Microsoft365),
            ),
            (&["."], None),
            (&[], None),
        ];
        for (exchanges, expected) in cases {
            assert_eq!(
                from_exchanges(exchanges.iter().copied()),
                expected,
                "{exchanges:?}"
            );
        }
    }

    #[tokio::test]
    async fn mx_lookups_against_a_local_dns_server() {
        let dns = FakeDns::start().await;
        let enricher = Enricher::new(options(dns.address));
        let cases = [
            ("alex@contoso.com", pair("microsoft365", "mx")),
            ("alex@fabrikam.com", pair("google_workspace", "mx")),
            ("alex@northwind.com", pair("other", "mx")),
            ("alex@both.com", pair("microsoft365", "mx")),
            ("alex@does-not-exist.com", pair("unknown", "dns_error")),
            ("alex@no-mx.com", pair("unknown", "dns_error")),
            ("alex@null-mx.com", pair("unknown", "dns_error")),
            ("alex@gmail.com", pair("unknown", "no_domain")),
        ];
        for (email, expected) in cases {
            assert_eq!(provider_of(&enricher, email).await, expected, "{email}");
        }
        assert_eq!(dns.queries_for("gmail.com"), 0);
    }

    #[tokio::test]
    async fn mx_answers_are_cached_per_domain() {
        let dns = FakeDns::start().await;
        let enricher = Enricher::new(options(dns.address));

        assert_eq!(
            provider_of(&enricher, "alex@contoso.com").await,
            pair("microsoft365", "mx")
        );
        assert_eq!(
            provider_of(&enricher, "sam@sales.contoso.com").await,
            pair("microsoft365", "mx_cache")
        );
        assert_eq!(dns.queries_for("contoso.com"), 1);

        // A failure is cached too, and keeps its reason.
        assert_eq!(
            provider_of(&enricher, "a@does-not-exist.com").await,
            pair("unknown", "dns_error")
        );
        assert_eq!(
            provider_of(&enricher, "b@does-not-exist.com").await,
            pair("unknown", "dns_error")
        );
        assert_eq!(dns.queries_for("does-not-exist.com"), 1);
    }

    #[tokio::test]
    async fn a_zero_cache_ttl_asks_every_time() {
        let dns = FakeDns::start().await;
        let enricher = Enricher::new(EnrichSettings {
            mx_cache_ttl: Duration::ZERO,
            ..options(dns.address)
        });
        for _ in 0..2 {
            assert_eq!(
                provider_of(&enricher, "alex@fabrikam.com").await,
                pair("google_workspace", "mx")
            );
        }
        assert_eq!(dns.queries_for("fabrikam.com"), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_lookups_of_one_domain_are_coalesced() {
        let dns = FakeDns::start().await;
        let enricher = Arc::new(Enricher::new(options(dns.address)));
        let mut lookups = tokio::task::JoinSet::new();
        for index in 0..8 {
            let enricher = Arc::clone(&enricher);
            lookups.spawn(async move {
                provider_of(&enricher, &format!("user{index}@slow-fabrikam.com")).await
            });
        }
        while let Some(result) = lookups.join_next().await {
            assert_eq!(result.unwrap(), pair("google_workspace", "mx"));
        }
        assert_eq!(dns.queries_for("slow-fabrikam.com"), 1);
    }

    #[tokio::test]
    async fn a_silent_dns_server_degrades_to_unknown_within_the_timeout() {
        // Bound but never read: every query goes unanswered.
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let dns_timeout = Duration::from_millis(300);
        let enricher = Enricher::new(EnrichSettings {
            dns_timeout,
            ..options(silent.local_addr().unwrap())
        });

        let started = Instant::now();
        let first = provider_of(&enricher, "alex@contoso.com").await;
        let elapsed = started.elapsed();
        assert_eq!(first, pair("unknown", "dns_timeout"));
        assert!(
            elapsed >= dns_timeout - Duration::from_millis(50),
            "gave up early: {elapsed:?}"
        );
        assert!(
            elapsed < dns_timeout + Duration::from_millis(700),
            "blocked too long: {elapsed:?}"
        );

        // The timeout is remembered (for min(ttl, 60 s)), so the next lead does not wait again.
        let started = Instant::now();
        let second = provider_of(&enricher, "sam@contoso.com").await;
        assert_eq!(second, pair("unknown", "dns_timeout"));
        assert!(started.elapsed() < Duration::from_millis(100));
    }

    #[test]
    fn the_mx_cache_expires_and_evicts_the_oldest_insertion() {
        let now = Instant::now();
        let later = now + Duration::from_secs(10);
        let answer = MxResult::Provider(EmailProvider::Other);
        let mut cache = MxCache::new(2);

        cache.insert("a.com".to_owned(), answer, later);
        cache.insert("b.com".to_owned(), MxResult::Error, later);
        assert_eq!(cache.get("a.com", now), Some(answer));
        cache.insert("c.com".to_owned(), MxResult::Timeout, later);
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get("a.com", now), None, "oldest insertion evicted");
        assert_eq!(cache.get("b.com", now), Some(MxResult::Error));
        assert_eq!(cache.get("c.com", now), Some(MxResult::Timeout));

        // Re-inserting refreshes a domain's age: b is now newer than c.
        cache.insert("b.com".to_owned(), answer, later);
        cache.insert("d.com".to_owned(), answer, later);
        assert_eq!(cache.get("c.com", now), None);
        assert_eq!(cache.get("b.com", now), Some(answer));

        assert_eq!(cache.get("d.com", later), None, "expired at its deadline");
        assert_eq!(cache.len(), 1);

        let mut disabled = MxCache::new(0);
        disabled.insert("a.com".to_owned(), answer, later);
        assert_eq!(disabled.get("a.com", now), None);
    }
}
