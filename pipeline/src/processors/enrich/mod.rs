//! Lead enrichment: facts derived from one referral version, plus one DNS question.
//!
//! [`Enricher::enrich`] fills the enrichment fields of the [`Lead`] made of a [`Referral`]:
//!
//! | field | derived from |
//! |---|---|
//! | `company_domain` | `customerProfile.website` / `webSite` / `url` in the raw JSON (key in any case), else the first valid, non-free-mail email of `customerProfile.team`; cut to the registrable domain with the compiled-in Public Suffix List (`psl`), so `mail.sales.example.co.uk` → `example.co.uk`; a name under the reserved `.example` (RFC 2606, demo data) counts at its second level (`a.northwind.example` → `northwind.example`, since enrichment version 2). Free-mail domains (gmail.com, hotmail.\*, yahoo.\*, …) are never a company domain |
//! | `email_provider` | MX records of `company_domain` (the only network access): any exchange under `mail.protection.outlook.com` → `microsoft365`, else any under `google.com` / `googlemail.com` → `google_workspace`, else `other`; NXDOMAIN, no MX or a null MX → `unknown` (`dns_error`); no answer within `dns_timeout` → `unknown` (`dns_timeout`); no domain → `unknown` (`no_domain`) |
//! | `company_name_normalized` | `customerProfile.name`: lower-cased, commas dropped, whitespace collapsed, trailing legal forms (Ltd, GmbH, Inc., S.A., LLC, GmbH & Co. KG, Sp. z o.o., …) removed |
//! | `country` | `customerProfile.address.country`: ISO 3166-1 alpha-2, alpha-3 or an English (or common local) name → alpha-2; anything else stays as the API gave it, trimmed and upper-cased ([`Lead::from_referral`]), and no country stays `None` |
//! | `size_band` | `customerProfile.size` (`1to50employees`, `Morethan500employees`, …): the band of the range's *lower* bound, so a range is never overstated: small ≤ 50 < medium ≤ 500 < large ≤ 5000 < enterprise (`251to1000employees` → medium, `Morethan500employees` → large) |
//! | `products`, `solutions`, `industries` | `details.requirements`: product ids, solution names (else ids), industry ids; trimmed, empty and repeated values dropped, order kept |
//! | `deal_value_usd`, `usd_rate` | `details.dealValue` × [`EnrichSettings::usd_rates`]`[currency]` (currency upper-cased; USD is 1.0 even if the table lacks it), rounded to cents. No value, no currency or no rate → `None`, never 0 |
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
mod domain;
mod mx;
mod normalize;
mod score;

use std::collections::HashSet;
use std::sync::Arc;

use hunter_core::config::EnrichSettings;
use hunter_core::records::{EmailProvider, EmailProviderSource, Lead, Referral};

use domain::company_domain;
use mx::MxLookup;
use normalize::{deal_value_usd, normalize_company_name, normalize_country, size_band};
use score::{ScoreInputs, change_type, priority, score};

pub use mx::{MX_CACHE_CAPACITY, MX_FAILURE_CACHE_TTL_MAX};

/// Bumped whenever a rule above, or a field [`Lead::from_referral`] derives, changes, so rows
/// made by different rules can be told apart, and the processor makes a lead of older rules
/// again when its referral version is read again (`hunter backfill`; `processors::dedupe`).
/// 2: `expires_at`, `accepted_at`, `closing_at`, `closed_at`, `owner_emails` (lead 0004), and
/// names under `.example` get a company domain.
pub const ENRICHMENT_VERSION: i32 = 2;

/// Enriches [`Lead`]s in place; holds the DNS resolver and the MX cache. Share it with an `Arc`.
pub struct Enricher {
    options: EnrichSettings,
    mx: Arc<MxLookup>,
}

impl std::fmt::Debug for Enricher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enricher")
            .field("options", &self.options)
            .field("resolver_ready", &self.mx.resolver_ready())
            .finish_non_exhaustive()
    }
}

impl Enricher {
    /// Never fails: a resolver that cannot be configured (no resolv.conf) is logged once and
    /// every lookup then reports `unknown` / `dns_error`.
    pub fn new(options: EnrichSettings) -> Self {
        let mx = Arc::new(MxLookup::new(&options));
        Self { options, mx }
    }

    /// Fills the enrichment fields of `lead`, the lead [`Lead::from_referral`] made of
    /// `referral`; `previous_status` and `first_version` are what the processor saw of the
    /// referral before. A `company_domain` or `country` the rules cannot derive leaves what the
    /// lead already has (the country as the API gave it); every other enrichment field is set.
    ///
    /// Never fails and never takes longer than about dns_timeout (DNS failures -> Unknown).
    pub async fn enrich(
        &self,
        lead: &mut Lead,
        referral: &Referral,
        previous_status: Option<&str>,
        first_version: bool,
    ) {
        let prepared = self.prepare(lead, referral, previous_status, first_version);
        self.finish(lead, prepared).await;
    }

    /// The part of [`Enricher::enrich`] that reads the referral: every field but the email
    /// provider and what depends on it (the score and priority), which [`Enricher::finish`]
    /// sets once the MX lookup answered. The processor drops the referral (kilobytes, its raw
    /// JSON among them) right after this, so what waits for DNS is the lead alone.
    pub fn prepare(
        &self,
        lead: &mut Lead,
        referral: &Referral,
        previous_status: Option<&str>,
        first_version: bool,
    ) -> Prepared {
        let company_domain = company_domain(referral);
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

        lead.enrichment_version = ENRICHMENT_VERSION;
        let lookup = company_domain.is_some();
        lead.company_domain_source = company_domain
            .as_ref()
            .map(|(_, source)| (*source).to_owned());
        if let Some((domain, _)) = company_domain {
            lead.company_domain = Some(domain);
        }
        lead.company_name_normalized = profile
            .and_then(|profile| profile.name.as_deref())
            .and_then(normalize_company_name);
        if let Some(country) = profile
            .and_then(|profile| profile.address.as_ref())
            .and_then(|address| address.country.as_deref())
            .and_then(normalize_country)
        {
            lead.country = Some(country.to_owned());
        }
        lead.size_band = size_band.map(str::to_owned);
        lead.products = distinct(
            requirements
                .into_iter()
                .flat_map(|requirements| &requirements.products)
                .filter_map(|tag| tag.id.as_deref()),
        );
        lead.solutions = distinct(
            requirements
                .into_iter()
                .flat_map(|requirements| &requirements.solutions)
                .filter_map(|solution| {
                    non_blank(solution.name.as_deref()).or(solution.id.as_deref())
                }),
        );
        lead.industries = distinct(
            requirements
                .into_iter()
                .flat_map(|requirements| &requirements.industries)
                .filter_map(|tag| tag.id.as_deref()),
        );
        lead.deal_value_usd = deal_value_usd;
        lead.usd_rate = usd_rate;
        lead.change_type = change_type(referral.status.as_deref(), previous_status, first_version)
            .as_str()
            .to_owned();
        lead.previous_status = previous_status.map(str::to_owned);
        Prepared {
            lookup,
            status: referral.status.clone(),
            substatus: referral.substatus.clone(),
            qualification: referral.qualification.clone(),
            age_micros: match (referral.created_date_time, referral.updated_date_time) {
                (Some(created), Some(updated)) => Some(updated.micros() - created.micros()),
                _ => None,
            },
        }
    }

    /// The rest of [`Enricher::enrich`] after [`Enricher::prepare`]: the email provider of the
    /// lead's company domain (an MX lookup, cached), then the score and priority.
    pub async fn finish(&self, lead: &mut Lead, prepared: Prepared) {
        let (email_provider, email_provider_source) = match (&lead.company_domain, prepared.lookup)
        {
            (Some(domain), true) => self.mx.provider_for(domain).await,
            _ => (EmailProvider::Unknown, EmailProviderSource::NoDomain),
        };
        let score = score(&ScoreInputs {
            status: prepared.status.as_deref(),
            substatus: prepared.substatus.as_deref(),
            deal_value_usd: lead.deal_value_usd,
            size_band: lead.size_band.as_deref(),
            qualification: prepared.qualification.as_deref(),
            age_micros: prepared.age_micros,
            email_provider,
        });
        lead.email_provider = email_provider.as_str().to_owned();
        lead.email_provider_source = email_provider_source.as_str().to_owned();
        lead.score = score;
        lead.priority = priority(score).as_str().to_owned();
    }
}

/// What [`Enricher::finish`] needs of a referral [`Enricher::prepare`] read (a few short
/// strings: the referral itself need not wait for the DNS answer).
#[derive(Debug)]
pub struct Prepared {
    /// The rules derived a company domain (`lead.company_domain`): its MX is looked up.
    lookup: bool,
    status: Option<String>,
    substatus: Option<String>,
    qualification: Option<String>,
    /// `updatedDateTime − createdDateTime` in microseconds.
    age_micros: Option<i64>,
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
