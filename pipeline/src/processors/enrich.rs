//! Lead enrichment: facts derived from one referral version, plus one DNS question.
//!
//! [`Enricher::enrich`] turns a [`Referral`] into an [`Enrichment`]:
//!
//! | field | derived from |
//! |---|---|
//! | `company_domain` | `customerProfile.website` / `webSite` / `url` in the raw JSON (key in any case), else the first valid, non-free-mail email of `customerProfile.team`; cut to the registrable domain with the compiled-in Public Suffix List (`psl`), so `mail.sales.example.co.uk` → `example.co.uk`. Free-mail domains (gmail.com, hotmail.\*, yahoo.\*, …) are never a company domain |
//! | `email_provider` | MX records of `company_domain` (the only network access): any exchange under `mail.protection.outlook.com` → `microsoft365`, else any under `google.com` / `googlemail.com` → `google_workspace`, else `other`; NXDOMAIN, no MX or a null MX → `unknown` (`dns_error`); no answer within `dns_timeout` → `unknown` (`dns_timeout`); no domain → `unknown` (`no_domain`) |
//! | `company_name_normalized` | `customerProfile.name`: lower-cased, commas dropped, whitespace collapsed, trailing legal forms (Ltd, GmbH, Inc., S.A., LLC, GmbH & Co. KG, Sp. z o.o., …) removed |
//! | `country` | `customerProfile.address.country`: ISO 3166-1 alpha-2, alpha-3 or an English (or common local) name → alpha-2; anything else → `None` |
//! | `size_band` | `customerProfile.size` (`1to50employees`, `Morethan500employees`, …): the band of the range's *lower* bound, so a range is never overstated: small ≤ 50 < medium ≤ 500 < large ≤ 5000 < enterprise (`251to1000employees` → medium, `Morethan500employees` → large) |
//! | `products`, `solutions`, `industries` | `details.requirements`: product ids, solution names (else ids), industry ids; trimmed, empty and repeated values dropped, order kept |
//! | `deal_value_usd`, `usd_rate` | `details.dealValue` × [`EnrichOptions::usd_rates`]`[currency]` (currency upper-cased; USD is 1.0 even if the table lacks it), rounded to cents. No value, no currency or no rate → `None`, never 0 |
//! | `score`, `priority` | the formula below |
//! | `change_type` | `created` when this is the referral's first version, else `status_changed` when both statuses are known and differ (trimmed, case-insensitive), else `updated` |
//!
//! # Score
//!
//! The sum of the rows below, clamped to 0..=100 (the maxima add up to exactly 100). A closed
//! referral (`status` Closed, or `substatus` Won / Lost / Declined / Expired) scores **0**
//! whatever the other inputs. String inputs are compared case-insensitively.
//!
//! | input | points |
//! |---|---|
//! | `status` | Active 20 · New 15 · anything else or missing 0 |
//! | `deal_value_usd` = v | `floor(7.5 × (log10(v) − 2))` capped at 30 when v > 100, else 0 (and 0 when `None`): $1k → 7, $10k → 15, $100k → 22, $1M and up → 30 |
//! | `size_band` | enterprise 15 · large 12 · medium 8 · small 4 · unknown 0 |
//! | `qualification` | SalesQualified 15 · MarketingQualified 10 · Direct 8 · anything else 0 |
//! | age = `updatedDateTime − createdDateTime` | ≤ 7 days 10 · ≤ 30 days 6 · ≤ 90 days 3 · older, negative or a timestamp missing 0 |
//! | `email_provider` | microsoft365 10 · google_workspace 5 · other 3 · unknown 0 |
//!
//! `priority` is `high` at a score ≥ 60, `medium` at ≥ 35, else `low`.
//!
//! # Invariants
//!
//! - No wall clock: everything but `email_provider` is a pure function of the referral version
//!   and the arguments, so replaying a version yields the same enrichment as long as the MX
//!   answer is the same. The score depends on the provider, so it is deterministic for one
//!   referral version *and* one provider answer.
//! - [`Enricher::enrich`] never fails and returns within about `dns_timeout`: every DNS failure
//!   degrades to `unknown` with the reason in `email_provider_source`.
//!
//! # MX cache
//!
//! One answer per registrable domain, kept for `mx_cache_ttl`; a failure (error or timeout) is
//! kept for `min(mx_cache_ttl, 60 s)` and replayed with its original source (`dns_error` /
//! `dns_timeout`), while a cached answer reports `mx_cache`. At most [`MX_CACHE_CAPACITY`]
//! domains; inserting one more evicts the oldest insertion. Concurrent lookups of one domain are
//! coalesced: the first caller spawns a single lookup task and every caller waits for its
//! result, so there is one DNS query per domain per cache lifetime. The task runs to the end
//! even if its callers are cancelled, so a dropped `enrich` future never wedges a domain.
//! `enrich` must run inside a tokio runtime (it spawns that task).

mod countries;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use hunter_core::records::Referral;
use tokio::sync::watch;

/// Bumped whenever a rule above changes, so rows enriched by different rules can be told apart.
pub const ENRICHMENT_VERSION: i32 = 1;

/// Most domains the MX cache holds; one more evicts the oldest insertion.
pub const MX_CACHE_CAPACITY: usize = 100_000;

/// Longest a failed MX lookup is remembered, so a transient resolver problem heals quickly.
pub const MX_FAILURE_CACHE_TTL_MAX: Duration = Duration::from_secs(60);

/// How much longer than `dns_timeout` a caller waits for the lookup task before giving up on
/// it (the task itself is bounded by `dns_timeout`; this only covers scheduling delays).
const LOOKUP_WAIT_GRACE: Duration = Duration::from_millis(100);

/// Where MX questions go, how long answers count, and how money converts to USD.
#[derive(Debug, Clone)]
pub struct EnrichOptions {
    /// DNS server for MX lookups (tests run one on 127.0.0.1); None = the system's resolv.conf.
    pub dns_server: Option<SocketAddr>,
    /// Per-lookup timeout; a timeout degrades to `unknown`, never blocks longer.
    pub dns_timeout: Duration,
    /// How long an MX answer (or a failure, shorter: min(ttl, 60 s)) is cached per domain.
    pub mx_cache_ttl: Duration,
    /// Currency code (upper case ISO 4217) -> USD per unit. Missing rate -> deal_value_usd None (never 0).
    pub usd_rates: BTreeMap<String, f64>,
}

impl Default for EnrichOptions {
    /// The system resolver, 2 s per lookup, MX answers kept 6 hours, no exchange rates but USD.
    fn default() -> Self {
        Self {
            dns_server: None,
            dns_timeout: Duration::from_secs(2),
            mx_cache_ttl: Duration::from_secs(6 * 60 * 60),
            usd_rates: BTreeMap::new(),
        }
    }
}

/// What Hunter derives from one referral version; the rules are in the module doc.
#[derive(Debug, Clone, PartialEq)]
pub struct Enrichment {
    /// [`ENRICHMENT_VERSION`] of the rules that produced this.
    pub enrichment_version: i32,
    /// Registrable domain of the customer (Public Suffix List), never a free-mail domain.
    pub company_domain: Option<String>,
    /// `"website"` | `"contact_email"`: where `company_domain` came from.
    pub company_domain_source: Option<String>,
    /// `"microsoft365"` | `"google_workspace"` | `"other"` | `"unknown"`.
    pub email_provider: String,
    /// `"mx"` | `"mx_cache"` | `"dns_error"` | `"dns_timeout"` | `"no_domain"`.
    pub email_provider_source: String,
    /// The customer name for grouping: case-folded, legal form removed.
    pub company_name_normalized: Option<String>,
    /// ISO 3166-1 alpha-2, upper case.
    pub country: Option<String>,
    /// `"small"` | `"medium"` | `"large"` | `"enterprise"`.
    pub size_band: Option<String>,
    /// `details.requirements.products[].id`.
    pub products: Vec<String>,
    /// `details.requirements.solutions[]`: name, else id.
    pub solutions: Vec<String>,
    /// `details.requirements.industries[].id`.
    pub industries: Vec<String>,
    /// Deal value in USD, rounded to cents; `None` without a value or a rate.
    pub deal_value_usd: Option<f64>,
    /// USD per unit of the deal's currency, when the currency has a rate.
    pub usd_rate: Option<f64>,
    /// 0..=100, see the module doc.
    pub score: i32,
    /// `"high"` | `"medium"` | `"low"`.
    pub priority: String,
    /// `"created"` | `"status_changed"` | `"updated"`.
    pub change_type: String,
    /// The status of the version before this one, as the caller knew it.
    pub previous_status: Option<String>,
}

/// Derives [`Enrichment`]s; holds the DNS resolver and the MX cache. Share it with an `Arc`.
pub struct Enricher {
    options: EnrichOptions,
    mx: Arc<MxLookup>,
}

impl std::fmt::Debug for Enricher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enricher")
            .field("options", &self.options)
            .field("resolver_ready", &self.mx.resolver.is_some())
            .finish_non_exhaustive()
    }
}

impl Enricher {
    /// Never fails: a resolver that cannot be configured (no resolv.conf) is logged once and
    /// every lookup then reports `unknown` / `dns_error`.
    pub fn new(options: EnrichOptions) -> Self {
        let resolver = match build_resolver(&options) {
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
        let mx = Arc::new(MxLookup {
            resolver,
            timeout: options.dns_timeout,
            answer_ttl,
            failure_ttl: answer_ttl.min(MX_FAILURE_CACHE_TTL_MAX),
            state: Mutex::new(MxState {
                cache: MxCache::new(MX_CACHE_CAPACITY),
                in_flight: HashMap::new(),
            }),
        });
        Self { options, mx }
    }

    /// Never fails and never takes longer than about dns_timeout (DNS failures -> Unknown).
    pub async fn enrich(
        &self,
        referral: &Referral,
        previous_status: Option<&str>,
        first_version: bool,
    ) -> Enrichment {
        let company_domain = company_domain(referral);
        let (email_provider, email_provider_source) = match &company_domain {
            Some((domain, _)) => {
                let (provider, source) = self.mx.provider_for(domain).await;
                (provider.as_str(), source)
            }
            None => (EmailProvider::Unknown.as_str(), "no_domain"),
        };

        let profile = referral.customer_profile.as_ref();
        let details = referral.details.as_ref();
        let requirements = details.and_then(|details| details.requirements.as_ref());
        let size_band = profile
            .and_then(|profile| profile.size.as_deref())
            .and_then(size_band);
        let (deal_value_usd, usd_rate) = deal_value_usd(
            details.and_then(|details| details.deal_value),
            details.and_then(|details| details.currency.as_deref()),
            &self.options.usd_rates,
        );

        let score = score(&ScoreInputs {
            status: referral.status.as_deref(),
            substatus: referral.substatus.as_deref(),
            deal_value_usd,
            size_band,
            qualification: referral.qualification.as_deref(),
            age_micros: match (referral.created_date_time, referral.updated_date_time) {
                (Some(created), Some(updated)) => Some(updated.micros() - created.micros()),
                _ => None,
            },
            email_provider,
        });

        Enrichment {
            enrichment_version: ENRICHMENT_VERSION,
            company_domain_source: company_domain
                .as_ref()
                .map(|(_, source)| (*source).to_owned()),
            company_domain: company_domain.map(|(domain, _)| domain),
            email_provider: email_provider.to_owned(),
            email_provider_source: email_provider_source.to_owned(),
            company_name_normalized: profile
                .and_then(|profile| profile.name.as_deref())
                .and_then(normalize_company_name),
            country: profile
                .and_then(|profile| profile.address.as_ref())
                .and_then(|address| address.country.as_deref())
                .and_then(normalize_country)
                .map(str::to_owned),
            size_band: size_band.map(str::to_owned),
            products: distinct(
                requirements
                    .into_iter()
                    .flat_map(|requirements| &requirements.products)
                    .filter_map(|tag| tag.id.as_deref()),
            ),
            solutions: distinct(
                requirements
                    .into_iter()
                    .flat_map(|requirements| &requirements.solutions)
                    .filter_map(|solution| {
                        non_blank(solution.name.as_deref()).or(solution.id.as_deref())
                    }),
            ),
            industries: distinct(
                requirements
                    .into_iter()
                    .flat_map(|requirements| &requirements.industries)
                    .filter_map(|tag| tag.id.as_deref()),
            ),
            deal_value_usd,
            usd_rate,
            score,
            priority: priority(score).to_owned(),
            change_type: change_type(referral.status.as_deref(), previous_status, first_version)
                .to_owned(),
            previous_status: previous_status.map(str::to_owned),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Company domain

/// Registrable domains that are mailbox providers, not companies.
const FREE_MAIL_DOMAINS: &[&str] = &[
    "126.com",
    "163.com",
    "aim.com",
    "aliyun.com",
    "att.net",
    "bellsouth.net",
    "bigpond.com",
    "bk.ru",
    "bol.com.br",
    "btinternet.com",
    "charter.net",
    "comcast.net",
    "cox.net",
    "daum.net",
    "earthlink.net",
    "email.com",
    "fastmail.com",
    "fastmail.fm",
    "foxmail.com",
    "free.fr",
    "freenet.de",
    "gmail.com",
    "googlemail.com",
    "hanmail.net",
    "hey.com",
    "hushmail.com",
    "icloud.com",
    "inbox.ru",
    "interia.pl",
    "laposte.net",
    "libero.it",
    "list.ru",
    "mac.com",
    "mail.com",
    "mail.ru",
    "me.com",
    "msn.com",
    "naver.com",
    "ntlworld.com",
    "o2.pl",
    "onet.pl",
    "optonline.net",
    "orange.fr",
    "passport.com",
    "pm.me",
    "proton.me",
    "protonmail.ch",
    "protonmail.com",
    "qq.com",
    "rambler.ru",
    "rediffmail.com",
    "rocketmail.com",
    "rogers.com",
    "sbcglobal.net",
    "seznam.cz",
    "sfr.fr",
    "shaw.ca",
    "sina.cn",
    "sina.com",
    "sky.com",
    "sohu.com",
    "sympatico.ca",
    "t-online.de",
    "talktalk.net",
    "terra.com.br",
    "tuta.com",
    "tuta.io",
    "tutanota.com",
    "tutanota.de",
    "uol.com.br",
    "verizon.net",
    "virginmedia.com",
    "wanadoo.fr",
    "web.de",
    "windowslive.com",
    "wp.pl",
    "ya.ru",
    "yeah.net",
    "ymail.com",
    "zoho.com",
    "zohomail.com",
];

/// Free-mail brands registered under many suffixes (`hotmail.co.uk`, `yahoo.co.jp`, `gmx.de`):
/// matched against the label left of the public suffix.
const FREE_MAIL_BRANDS: &[&str] = &[
    "aol", "gmx", "hotmail", "live", "outlook", "yahoo", "yandex",
];

/// The customer's registrable domain and where it was found (`"website"` or `"contact_email"`).
fn company_domain(referral: &Referral) -> Option<(String, &'static str)> {
    let from_website = website(&referral.raw_json)
        .and_then(|website| website_host(&website))
        .and_then(|host| registrable_domain(&host))
        .filter(|domain| !is_free_mail(domain));
    if let Some(domain) = from_website {
        return Some((domain, "website"));
    }
    referral
        .customer_profile
        .as_ref()?
        .team
        .iter()
        .filter_map(|member| member.email.as_deref())
        .filter_map(email_domain)
        .find(|domain| !is_free_mail(domain))
        .map(|domain| (domain, "contact_email"))
}

/// `customerProfile.website` / `webSite` / `url` from the raw API JSON, keys in any case. The
/// record type has no such field (the API docs do not list one), so only the raw JSON has it.
fn website(raw_json: &str) -> Option<String> {
    let root: serde_json::Value = serde_json::from_str(raw_json).ok()?;
    let profiles: Vec<&serde_json::Map<String, serde_json::Value>> = root
        .as_object()?
        .iter()
        .filter(|(key, _)| key.eq_ignore_ascii_case("customerProfile"))
        .filter_map(|(_, profile)| profile.as_object())
        .collect();
    ["website", "url"].iter().find_map(|wanted| {
        profiles
            .iter()
            .flat_map(|profile| profile.iter())
            .filter(|(key, _)| key.eq_ignore_ascii_case(wanted))
            .find_map(|(_, value)| non_blank(value.as_str()))
            .map(str::to_owned)
    })
}

/// The host of a website as people type it: with or without a scheme, path or port.
fn website_host(website: &str) -> Option<String> {
    let website = website.trim();
    if website.chars().any(char::is_whitespace) {
        return None;
    }
    let parsed = if website.contains("://") {
        url::Url::parse(website)
    } else {
        url::Url::parse(&format!("http://{website}"))
    };
    match parsed.ok()?.host()? {
        url::Host::Domain(domain) => Some(domain.to_owned()),
        url::Host::Ipv4(_) | url::Host::Ipv6(_) => None,
    }
}

/// The registrable domain of an email address; `None` for anything that is not one.
fn email_domain(email: &str) -> Option<String> {
    let email = email.trim();
    let (local, domain) = email.split_once('@')?;
    let valid_local = !local.is_empty()
        && !local
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "<>()[],;:\"".contains(c));
    if !valid_local || domain.contains('@') || domain.starts_with('[') {
        return None;
    }
    registrable_domain(domain)
}

/// `mail.sales.example.co.uk` → `example.co.uk`, IDNs as punycode. `None` for an IP address,
/// a bare public suffix, an unlisted suffix (`corp.local`) or a malformed name.
fn registrable_domain(host: &str) -> Option<String> {
    let host = host.trim().trim_end_matches('.');
    let host = match url::Host::parse(host).ok()? {
        url::Host::Domain(domain) => domain,
        url::Host::Ipv4(_) | url::Host::Ipv6(_) => return None,
    };
    let host = host.to_ascii_lowercase();
    let valid_labels = host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if !valid_labels {
        return None;
    }
    let domain = psl::domain(host.as_bytes())?;
    if !domain.suffix().is_known() {
        return None;
    }
    std::str::from_utf8(domain.as_bytes())
        .ok()
        .map(str::to_owned)
}

/// Whether a registrable domain belongs to a mailbox provider rather than a company.
fn is_free_mail(registrable_domain: &str) -> bool {
    if FREE_MAIL_DOMAINS.contains(&registrable_domain) {
        return true;
    }
    let brand = registrable_domain.split('.').next().unwrap_or_default();
    FREE_MAIL_BRANDS.contains(&brand)
}

// ---------------------------------------------------------------------------------------------
// Email provider (MX)

/// Who hosts a domain's mail, as far as its MX records tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EmailProvider {
    Microsoft365,
    GoogleWorkspace,
    Other,
    Unknown,
}

impl EmailProvider {
    fn as_str(self) -> &'static str {
        match self {
            Self::Microsoft365 => "microsoft365",
            Self::GoogleWorkspace => "google_workspace",
            Self::Other => "other",
            Self::Unknown => "unknown",
        }
    }

    /// Microsoft wins over Google when a domain lists both (mid-migration domains do).
    fn from_exchanges<'a>(exchanges: impl IntoIterator<Item = &'a str>) -> Option<Self> {
        let mut provider = None;
        for exchange in exchanges {
            let exchange = exchange.trim_end_matches('.').to_ascii_lowercase();
            if exchange.is_empty() {
                // RFC 7505 null MX ("."): the domain accepts no mail.
                continue;
            }
            let found = if is_under(&exchange, "mail.protection.outlook.com") {
                Self::Microsoft365
            } else if is_under(&exchange, "google.com") || is_under(&exchange, "googlemail.com") {
                Self::GoogleWorkspace
            } else {
                Self::Other
            };
            provider = Some(match (provider, found) {
                (_, Self::Microsoft365) | (Some(Self::Microsoft365), _) => Self::Microsoft365,
                (_, Self::GoogleWorkspace) | (Some(Self::GoogleWorkspace), _) => {
                    Self::GoogleWorkspace
                }
                _ => found,
            });
        }
        provider
    }
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
    fn outcome(self, from_cache: bool) -> (EmailProvider, &'static str) {
        match self {
            Self::Provider(provider) if from_cache => (provider, "mx_cache"),
            Self::Provider(provider) => (provider, "mx"),
            Self::Error => (EmailProvider::Unknown, "dns_error"),
            Self::Timeout => (EmailProvider::Unknown, "dns_timeout"),
        }
    }
}

fn build_resolver(options: &EnrichOptions) -> Result<TokioResolver, NetError> {
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

struct MxLookup {
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
    fn state(&self) -> MutexGuard<'_, MxState> {
        // The state stays consistent under a panic (single inserts/removes), so poison is moot.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn provider_for(self: &Arc<Self>, domain: &str) -> (EmailProvider, &'static str) {
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
                EmailProvider::from_exchanges(exchanges.iter().map(String::as_str))
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

// ---------------------------------------------------------------------------------------------
// Company name, country, size

/// Legal forms removed from the end of a company name, as tokens with dots and parentheses
/// dropped ("S.A." → "sa", "S. A." → "s" "a"). Longer forms are tried first.
const LEGAL_FORMS: &[&[&str]] = &[
    &["public", "limited", "company"],
    &["kabushiki", "kaisha"],
    &["private", "limited"],
    &["sp", "z", "oo"],
    &["s", "a"],
    &["s", "l"],
    &["s", "r", "l"],
    &["b", "v"],
    &["n", "v"],
    &["de", "cv"],
    &["sà", "rl"],
    &["&", "co"],
    &["and", "co"],
    &["ab"],
    &["ag"],
    &["aps"],
    &["as"],
    &["asa"],
    &["a/s"],
    &["bv"],
    &["bhd"],
    &["co"],
    &["company"],
    &["corp"],
    &["corporation"],
    &["cv"],
    &["ev"],
    &["gmbh"],
    &["inc"],
    &["incorporated"],
    &["kft"],
    &["kg"],
    &["kgaa"],
    &["kk"],
    &["limited"],
    &["llc"],
    &["llp"],
    &["lp"],
    &["ltd"],
    &["ltda"],
    &["mbh"],
    &["nv"],
    &["ohg"],
    &["oy"],
    &["oyj"],
    &["pc"],
    &["plc"],
    &["pte"],
    &["pty"],
    &["publ"],
    &["pvt"],
    &["sa"],
    &["sarl"],
    &["sàrl"],
    &["sas"],
    &["se"],
    &["sl"],
    &["spa"],
    &["sdn"],
    &["srl"],
    &["ug"],
    &["zrt"],
];

/// The name for grouping: lower-cased, commas dropped, whitespace collapsed, legal forms
/// removed from the end (repeatedly, so "GmbH & Co. KG" goes whole); never empty.
fn normalize_company_name(name: &str) -> Option<String> {
    let lowered = name.to_lowercase().replace(',', " ");
    let mut tokens: Vec<&str> = lowered.split_whitespace().collect();
    loop {
        let keys: Vec<String> = tokens
            .iter()
            .map(|token| token.replace(['.', '(', ')'], ""))
            .collect();
        let strip = LEGAL_FORMS
            .iter()
            .filter(|form| form.len() < keys.len())
            .find(|form| {
                keys[keys.len() - form.len()..]
                    .iter()
                    .zip(form.iter())
                    .all(|(key, part)| key == part)
            })
            .map(|form| form.len());
        match strip {
            Some(count) => tokens.truncate(tokens.len() - count),
            None => break,
        }
    }
    let normalized = tokens.join(" ");
    let normalized = normalized
        .trim_end_matches(['-', ';', ':', '&', '/'])
        .trim_end();
    (!normalized.is_empty()).then(|| normalized.to_owned())
}

/// ISO 3166-1 alpha-2 for an alpha-2, an alpha-3 or a country name; `None` when unknown.
fn normalize_country(raw: &str) -> Option<&'static str> {
    static INDEX: OnceLock<HashMap<String, &'static str>> = OnceLock::new();
    let index = INDEX.get_or_init(|| {
        // Codes are keyed upper case and names lower case, so the two never collide.
        let mut index = HashMap::new();
        for (alpha2, alpha3, names) in countries::COUNTRIES {
            index.insert((*alpha2).to_owned(), *alpha2);
            index.insert((*alpha3).to_owned(), *alpha2);
            for name in *names {
                index.insert(country_name_key(name), *alpha2);
            }
        }
        for (alias, alpha2) in countries::ALIASES {
            index.insert(country_name_key(alias), *alpha2);
        }
        index
    });
    let raw = raw.trim();
    if matches!(raw.len(), 2 | 3)
        && raw.chars().all(|c| c.is_ascii_alphabetic())
        && let Some(alpha2) = index.get(&raw.to_ascii_uppercase())
    {
        return Some(alpha2);
    }
    index.get(&country_name_key(raw)).copied()
}

/// Lower case, `.` and apostrophes dropped, other punctuation as space, a leading "the" gone.
fn country_name_key(name: &str) -> String {
    let cleaned: String = name
        .to_lowercase()
        .chars()
        .filter(|c| !matches!(c, '.' | '\'' | '’'))
        .map(|c| if c.is_alphanumeric() { c } else { ' ' })
        .collect();
    let words: Vec<&str> = cleaned.split_whitespace().collect();
    match words.as_slice() {
        ["the", rest @ ..] if !rest.is_empty() => rest.join(" "),
        _ => words.join(" "),
    }
}

/// The band of a `customerProfile.size` value's lower bound; `None` for anything unparsable.
fn size_band(size: &str) -> Option<&'static str> {
    let key: String = size
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let body = key.strip_suffix("employees").unwrap_or(&key);
    let lower_bound: u64 = if let Some(above) = body.strip_prefix("morethan") {
        above.parse::<u64>().ok()?.checked_add(1)?
    } else {
        let (low, high) = body.split_once("to")?;
        let (low, high) = (low.parse::<u64>().ok()?, high.parse::<u64>().ok()?);
        if low > high {
            return None;
        }
        low
    };
    Some(match lower_bound {
        0..=50 => "small",
        51..=500 => "medium",
        501..=5000 => "large",
        _ => "enterprise",
    })
}

// ---------------------------------------------------------------------------------------------
// Money, score, change

/// `(deal_value_usd, usd_rate)`: the value rounded to cents, `None` without a value or a rate.
fn deal_value_usd(
    deal_value: Option<f64>,
    currency: Option<&str>,
    usd_rates: &BTreeMap<String, f64>,
) -> (Option<f64>, Option<f64>) {
    let rate = currency
        .map(|currency| currency.trim().to_ascii_uppercase())
        .filter(|currency| !currency.is_empty())
        .and_then(|currency| match usd_rates.get(&currency) {
            Some(rate) => Some(*rate),
            None if currency == "USD" => Some(1.0),
            None => None,
        })
        .filter(|rate| rate.is_finite() && *rate > 0.0);
    let value = deal_value
        .zip(rate)
        .map(|(value, rate)| (value * rate * 100.0).round() / 100.0)
        .filter(|value| value.is_finite());
    (value, rate)
}

/// Everything the score reads; see the module doc for the formula.
#[derive(Debug, Clone, Copy)]
struct ScoreInputs<'a> {
    status: Option<&'a str>,
    substatus: Option<&'a str>,
    deal_value_usd: Option<f64>,
    size_band: Option<&'a str>,
    qualification: Option<&'a str>,
    /// `updatedDateTime − createdDateTime` in microseconds.
    age_micros: Option<i64>,
    email_provider: &'a str,
}

fn is_closed(status: Option<&str>, substatus: Option<&str>) -> bool {
    let is = |value: Option<&str>, wanted: &str| {
        value.is_some_and(|value| value.trim().eq_ignore_ascii_case(wanted))
    };
    is(status, "Closed")
        || ["Won", "Lost", "Declined", "Expired"]
            .iter()
            .any(|closed| is(substatus, closed))
}

fn score(inputs: &ScoreInputs<'_>) -> i32 {
    if is_closed(inputs.status, inputs.substatus) {
        return 0;
    }
    let lower = |value: Option<&str>| value.map(|value| value.trim().to_ascii_lowercase());

    let status = match lower(inputs.status).as_deref() {
        Some("active") => 20,
        Some("new") => 15,
        _ => 0,
    };
    let value = match inputs.deal_value_usd {
        Some(usd) if usd > 100.0 => (7.5 * (usd.log10() - 2.0)).floor().min(30.0) as i32,
        _ => 0,
    };
    let size = match inputs.size_band {
        Some("enterprise") => 15,
        Some("large") => 12,
        Some("medium") => 8,
        Some("small") => 4,
        _ => 0,
    };
    let qualification = match lower(inputs.qualification).as_deref() {
        Some("salesqualified") => 15,
        Some("marketingqualified") => 10,
        Some("direct") => 8,
        _ => 0,
    };
    const DAY_MICROS: i64 = 24 * 60 * 60 * 1_000_000;
    let age = match inputs.age_micros {
        Some(age) if age < 0 => 0,
        Some(age) if age <= 7 * DAY_MICROS => 10,
        Some(age) if age <= 30 * DAY_MICROS => 6,
        Some(age) if age <= 90 * DAY_MICROS => 3,
        _ => 0,
    };
    let provider = match inputs.email_provider {
        "microsoft365" => 10,
        "google_workspace" => 5,
        "other" => 3,
        _ => 0,
    };
    (status + value + size + qualification + age + provider).clamp(0, 100)
}

fn priority(score: i32) -> &'static str {
    match score {
        60.. => "high",
        35..=59 => "medium",
        _ => "low",
    }
}

fn change_type(
    status: Option<&str>,
    previous_status: Option<&str>,
    first_version: bool,
) -> &'static str {
    if first_version {
        return "created";
    }
    match (non_blank(status), non_blank(previous_status)) {
        (Some(current), Some(previous))
            if !current.trim().eq_ignore_ascii_case(previous.trim()) =>
        {
            "status_changed"
        }
        _ => "updated",
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn non_blank(value: Option<&str>) -> Option<&str> {
    value.filter(|value| !value.trim().is_empty())
}

/// Trimmed, non-empty, first occurrence only, in input order.
fn distinct<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut seen = HashSet::new();
    values
        .into_iter()
        .map(str::trim)
        .filter(|value| !value.is_empty() && seen.insert(*value))
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests;
