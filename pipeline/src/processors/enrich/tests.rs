//! Unit tests for the enrichment rules, and MX lookups against a real DNS responder on
//! 127.0.0.1 (never the network).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_resolver::proto::op::{Message, ResponseCode};
use hickory_resolver::proto::rr::rdata::MX;
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use hunter_core::records::{Ingest, Referral};
use proptest::prelude::*;
use serde_json::json;
use tokio::net::UdpSocket;

use super::*;

// ---------------------------------------------------------------------------------------------
// Fixtures

fn referral(value: serde_json::Value) -> Referral {
    Referral::from_api_json(&value.to_string(), Ingest::default()).unwrap()
}

/// A referral whose customer has the given website (None: no website key) and contact emails.
fn referral_with(website: Option<serde_json::Value>, emails: &[&str]) -> Referral {
    let team: Vec<_> = emails
        .iter()
        .map(|email| json!({ "email": email }))
        .collect();
    let mut profile = json!({ "name": "Contoso Ltd", "team": team });
    if let Some(website) = website {
        profile["website"] = website;
    }
    referral(json!({ "id": "r-1", "customerProfile": profile }))
}

fn options(dns_server: SocketAddr) -> EnrichOptions {
    EnrichOptions {
        dns_server: Some(dns_server),
        // Generous: only the silent-server test waits for a timeout, and it sets its own.
        dns_timeout: Duration::from_secs(2),
        mx_cache_ttl: Duration::from_secs(600),
        usd_rates: BTreeMap::from([("GBP".to_owned(), 1.25), ("EUR".to_owned(), 1.1)]),
    }
}

/// A DNS responder on 127.0.0.1 that answers MX questions from a fixed table and counts the
/// questions per name:
///
/// | name | answer |
/// |---|---|
/// | contoso.com | MX contoso-com.mail.protection.outlook.com (Microsoft 365) |
/// | fabrikam.com | MX aspmx.l.google.com, alt1.aspmx.l.google.com (Google) |
/// | slow-fabrikam.com | as fabrikam.com, after 300 ms |
/// | northwind.com | MX mx1.northwind-mail.net (other) |
/// | both.com | a Google and a Microsoft 365 MX |
/// | null-mx.com | the null MX "." (RFC 7505) |
/// | no-mx.com | NOERROR, no answer |
/// | anything else | NXDOMAIN |
struct FakeDns {
    address: SocketAddr,
    queries: Arc<Mutex<HashMap<String, usize>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeDns {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeDns {
    async fn start() -> Self {
        let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let address = socket.local_addr().unwrap();
        let queries = Arc::new(Mutex::new(HashMap::new()));
        let task = tokio::spawn({
            let queries = Arc::clone(&queries);
            async move {
                let mut buffer = vec![0_u8; 4096];
                loop {
                    let Ok((length, peer)) = socket.recv_from(&mut buffer).await else {
                        return;
                    };
                    let Ok(request) = Message::from_vec(&buffer[..length]) else {
                        continue;
                    };
                    let Some(query) = request.queries.first() else {
                        continue;
                    };
                    let name = query.name().to_ascii().trim_end_matches('.').to_owned();
                    *queries.lock().unwrap().entry(name.clone()).or_insert(0) += 1;
                    let socket = Arc::clone(&socket);
                    tokio::spawn(async move {
                        if name == "slow-fabrikam.com" {
                            tokio::time::sleep(Duration::from_millis(300)).await;
                        }
                        let response = Self::answer(&request, &name);
                        let _ = socket.send_to(&response.to_vec().unwrap(), peer).await;
                    });
                }
            }
        });
        Self {
            address,
            queries,
            task,
        }
    }

    fn answer(request: &Message, name: &str) -> Message {
        let mut response = Message::response(request.metadata.id, request.metadata.op_code);
        response.metadata.recursion_desired = request.metadata.recursion_desired;
        response.metadata.recursion_available = true;
        response.queries = request.queries.clone();
        let query = &request.queries[0];
        let exchanges: &[&str] = match name {
            "contoso.com" => &["contoso-com.mail.protection.outlook.com."],
            "fabrikam.com" | "slow-fabrikam.com" => {
                &["aspmx.l.google.com.", "alt1.aspmx.l.google.com."]
            }
            "northwind.com" => &["mx1.northwind-mail.net."],
            "both.com" => &[
                "aspmx.l.google.com.",
                "both-com.mail.protection.outlook.com.",
            ],
            "null-mx.com" => &["."],
            "no-mx.com" => &[],
            _ => {
                response.metadata.response_code = ResponseCode::NXDomain;
                return response;
            }
        };
        if query.query_type() != RecordType::MX {
            return response;
        }
        for (index, exchange) in exchanges.iter().enumerate() {
            let preference = 10 * (index as u16 + 1);
            response.answers.push(Record::from_rdata(
                query.name().clone(),
                300,
                RData::MX(MX::new(preference, Name::from_ascii(exchange).unwrap())),
            ));
        }
        response
    }

    fn queries_for(&self, name: &str) -> usize {
        self.queries
            .lock()
            .unwrap()
            .get(name)
            .copied()
            .unwrap_or_default()
    }
}

async fn provider_of(enricher: &Enricher, email: &str) -> (String, String) {
    let enrichment = enricher
        .enrich(&referral_with(None, &[email]), None, true)
        .await;
    (enrichment.email_provider, enrichment.email_provider_source)
}

fn pair(provider: &str, source: &str) -> (String, String) {
    (provider.to_owned(), source.to_owned())
}

// ---------------------------------------------------------------------------------------------
// Company domain

#[test]
fn registrable_domains_follow_the_public_suffix_list() {
    let cases = [
        ("mail.sales.example.co.uk", Some("example.co.uk")),
        ("www.example.com", Some("example.com")),
        ("Example.COM.", Some("example.com")),
        ("a.b.c.example.com.au", Some("example.com.au")),
        ("shop.example.de", Some("example.de")),
        ("bücher.de", Some("xn--bcher-kva.de")),
        ("contoso.onmicrosoft.com", Some("onmicrosoft.com")),
        ("co.uk", None),
        ("com", None),
        ("localhost", None),
        ("intranet.corp.invalidtld", None),
        ("192.168.1.10", None),
        ("exa mple.com", None),
        ("-bad-.example.com", None),
        ("", None),
    ];
    for (host, expected) in cases {
        assert_eq!(
            registrable_domain(host).as_deref(),
            expected,
            "registrable domain of {host:?}"
        );
    }
}

#[test]
fn websites_are_read_with_or_without_scheme_path_and_port() {
    let cases = [
        ("https://www.contoso.co.uk/about?x=1", Some("contoso.co.uk")),
        ("http://shop.contoso.com:8080", Some("contoso.com")),
        ("www.contoso.com/", Some("contoso.com")),
        ("contoso.com", Some("contoso.com")),
        ("HTTPS://CONTOSO.COM", Some("contoso.com")),
        ("https://10.0.0.1/", None),
        ("not a website", None),
        ("https://", None),
    ];
    for (website, expected) in cases {
        let domain = website_host(website).and_then(|host| registrable_domain(&host));
        assert_eq!(domain.as_deref(), expected, "domain of website {website:?}");
    }
}

#[test]
fn website_is_preferred_over_contact_email() {
    let found = company_domain(&referral_with(
        Some(json!("https://www.contoso.com")),
        &["alex@fabrikam.com"],
    ));
    assert_eq!(found, Some(("contoso.com".to_owned(), "website")));
}

#[test]
fn website_keys_match_in_any_case() {
    for key in [
        "website", "webSite", "WebSite", "WEBSITE", "url", "URL", "Url",
    ] {
        let referral = referral(json!({
            "id": "r-1",
            "customerProfile": { key: "https://contoso.com", "name": "Contoso" },
        }));
        assert_eq!(
            company_domain(&referral),
            Some(("contoso.com".to_owned(), "website")),
            "website under key {key:?}"
        );
    }
}

#[test]
fn the_customer_profile_key_matches_in_any_case() {
    // The record type reads only `customerProfile`; the website lookup reads the raw text.
    let mut referral = referral(json!({ "id": "r-1" }));
    referral.raw_json = json!({
        "id": "r-1",
        "CUSTOMERPROFILE": { "WebSite": "contoso.com" },
    })
    .to_string();
    assert_eq!(
        company_domain(&referral),
        Some(("contoso.com".to_owned(), "website"))
    );
}

#[test]
fn unusable_website_falls_back_to_contact_email() {
    for website in [
        json!("https://gmail.com/contoso"),
        json!("not a url"),
        json!(""),
        json!(42),
        json!(null),
    ] {
        let found = company_domain(&referral_with(
            Some(website.clone()),
            &["alex@mail.fabrikam.co.uk"],
        ));
        assert_eq!(
            found,
            Some(("fabrikam.co.uk".to_owned(), "contact_email")),
            "website {website}"
        );
    }
}

#[test]
fn free_mail_is_never_a_company_domain() {
    let free = [
        "a@gmail.com",
        "a@googlemail.com",
        "a@outlook.com",
        "a@outlook.fr",
        "a@hotmail.com",
        "a@hotmail.co.uk",
        "a@live.com",
        "a@live.fr",
        "a@msn.com",
        "a@yahoo.com",
        "a@yahoo.co.jp",
        "a@mail.yahoo.com",
        "a@aol.com",
        "a@icloud.com",
        "a@me.com",
        "a@proton.me",
        "a@protonmail.com",
        "a@gmx.de",
        "a@gmx.net",
        "a@web.de",
        "a@mail.ru",
        "a@yandex.ru",
        "a@yandex.com",
        "a@qq.com",
        "a@163.com",
    ];
    for email in free {
        assert_eq!(
            company_domain(&referral_with(None, &[email])),
            None,
            "{email}"
        );
    }
    let mut emails = free.to_vec();
    emails.push("alex@contoso.com");
    assert_eq!(
        company_domain(&referral_with(None, &emails)),
        Some(("contoso.com".to_owned(), "contact_email"))
    );
}

#[test]
fn invalid_emails_are_ignored() {
    let invalid = [
        "",
        "   ",
        "alex",
        "alex@",
        "@contoso.com",
        "alex@@contoso.com",
        "a@b@contoso.com",
        "alex smith@contoso.com",
        "alex@contoso",
        "alex@[10.0.0.1]",
        "alex@10.0.0.1",
        "Alex <alex@contoso.com>",
    ];
    for email in invalid {
        assert_eq!(email_domain(email), None, "{email:?}");
    }
    let found = company_domain(&referral_with(
        None,
        &["alex@", "bad", " Sam@Sales.Contoso.COM "],
    ));
    assert_eq!(found, Some(("contoso.com".to_owned(), "contact_email")));
}

#[test]
fn no_website_and_no_emails_means_no_domain() {
    assert_eq!(company_domain(&referral(json!({ "id": "r-1" }))), None);
    assert_eq!(company_domain(&referral_with(None, &[])), None);
}

proptest! {
    #[test]
    fn free_mail_subdomains_are_never_chosen(
        local in "[a-z0-9._-]{1,12}",
        subdomain in proptest::option::of("[a-z0-9]{1,10}"),
        free in proptest::sample::select(FREE_MAIL_DOMAINS.to_vec()),
    ) {
        let host = match subdomain {
            Some(subdomain) => format!("{subdomain}.{free}"),
            None => free.to_owned(),
        };
        let email = format!("{local}@{host}");
        prop_assert_eq!(company_domain(&referral_with(None, &[&email])), None);
    }

    #[test]
    fn free_mail_brands_are_never_chosen_under_any_suffix(
        brand in proptest::sample::select(FREE_MAIL_BRANDS.to_vec()),
        suffix in proptest::sample::select(vec!["com", "co.uk", "de", "fr", "com.au", "co.jp", "ru"]),
    ) {
        let email = format!("someone@{brand}.{suffix}");
        prop_assert_eq!(company_domain(&referral_with(None, &[&email])), None);
    }
}

// ---------------------------------------------------------------------------------------------
// Email provider

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
            EmailProvider::from_exchanges(exchanges.iter().copied()),
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
    let enricher = Enricher::new(EnrichOptions {
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
    let enricher = Enricher::new(EnrichOptions {
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

#[tokio::test]
async fn a_referral_without_a_domain_asks_no_dns() {
    let dns = FakeDns::start().await;
    let enricher = Enricher::new(options(dns.address));
    let enrichment = enricher
        .enrich(&referral(json!({ "id": "r-1" })), None, true)
        .await;
    assert_eq!(enrichment.email_provider, "unknown");
    assert_eq!(enrichment.email_provider_source, "no_domain");
    assert!(dns.queries.lock().unwrap().is_empty());
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

#[test]
fn the_enricher_is_shareable_and_builds_outside_a_runtime() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<Enricher>();
    // The system configuration may be missing here; construction must not fail either way.
    let enricher = Enricher::new(EnrichOptions::default());
    assert!(format!("{enricher:?}").starts_with("Enricher"));
}

// ---------------------------------------------------------------------------------------------
// Name, country, size

#[test]
fn company_names_are_normalised_for_grouping() {
    let cases = [
        ("  Contoso   Ltd ", Some("contoso")),
        ("Contoso Ltd.", Some("contoso")),
        ("CONTOSO LIMITED", Some("contoso")),
        ("Contoso, Inc.", Some("contoso")),
        ("Contoso,Inc.", Some("contoso")),
        ("Contoso Corp", Some("contoso")),
        ("Fabrikam GmbH", Some("fabrikam")),
        ("Fabrikam GmbH & Co. KG", Some("fabrikam")),
        ("Northwind S.A.", Some("northwind")),
        ("Northwind S. A.", Some("northwind")),
        ("Northwind S.A. de C.V.", Some("northwind")),
        ("Tailspin LLC", Some("tailspin")),
        ("Tailspin L.L.C.", Some("tailspin")),
        ("Wingtip Pty Ltd", Some("wingtip")),
        ("Wingtip Sp. z o.o.", Some("wingtip")),
        ("Adatum AB (publ)", Some("adatum")),
        ("Adatum Holdings plc", Some("adatum holdings")),
        ("Johnson & Johnson", Some("johnson & johnson")),
        ("Smith & Co.", Some("smith")),
        ("Sample Customer One Ltd", Some("sample customer one")),
        ("Müller Straße GmbH", Some("müller straße")),
        ("Inc", Some("inc")),
        ("GmbH", Some("gmbh")),
        ("", None),
        ("   ", None),
    ];
    for (name, expected) in cases {
        assert_eq!(
            normalize_company_name(name).as_deref(),
            expected,
            "normalised {name:?}"
        );
    }
}

#[test]
fn countries_normalise_to_alpha2() {
    let cases = [
        ("GB", Some("GB")),
        ("gb", Some("GB")),
        (" de ", Some("DE")),
        ("GBR", Some("GB")),
        ("usa", Some("US")),
        ("DEU", Some("DE")),
        ("United Kingdom", Some("GB")),
        (
            "united kingdom of great britain and northern ireland",
            Some("GB"),
        ),
        ("UK", Some("GB")),
        ("U.K.", Some("GB")),
        ("England", Some("GB")),
        ("United States", Some("US")),
        ("United States of America", Some("US")),
        ("U.S.A.", Some("US")),
        ("Germany", Some("DE")),
        ("Deutschland", Some("DE")),
        ("The Netherlands", Some("NL")),
        ("Korea, Republic of", Some("KR")),
        ("South Korea", Some("KR")),
        ("Côte d'Ivoire", Some("CI")),
        ("Viet Nam", Some("VN")),
        ("Vietnam", Some("VN")),
        ("Türkiye", Some("TR")),
        ("Turkey", Some("TR")),
        ("ZZ", None),
        ("XKX", None),
        ("Atlantis", None),
        ("", None),
    ];
    for (raw, expected) in cases {
        assert_eq!(normalize_country(raw), expected, "country {raw:?}");
    }
}

#[test]
fn every_iso_country_round_trips() {
    assert_eq!(countries::COUNTRIES.len(), 249);
    for (alpha2, alpha3, names) in countries::COUNTRIES {
        assert_eq!(normalize_country(alpha2), Some(*alpha2));
        assert_eq!(normalize_country(alpha3), Some(*alpha2));
        for name in *names {
            assert_eq!(normalize_country(name), Some(*alpha2), "{name}");
        }
    }
    for (alias, alpha2) in countries::ALIASES {
        assert_eq!(normalize_country(alias), Some(*alpha2), "{alias}");
    }
}

#[test]
fn size_values_map_to_bands() {
    let cases = [
        ("1to50employees", Some("small")),
        ("1to9employees", Some("small")),
        ("10to50employees", Some("small")),
        ("51to500employees", Some("medium")),
        ("51to250employees", Some("medium")),
        ("251to1000employees", Some("medium")),
        ("Morethan500employees", Some("large")),
        ("1001to5000employees", Some("large")),
        ("5001to10000employees", Some("enterprise")),
        ("10001to20000employees", Some("enterprise")),
        ("Morethan20000employees", Some("enterprise")),
        ("More than 5000 employees", Some("enterprise")),
        ("1 to 50 employees", Some("small")),
        ("", None),
        ("None", None),
        ("lots", None),
        ("50to1employees", None),
    ];
    for (size, expected) in cases {
        assert_eq!(size_band(size), expected, "size {size:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Money

#[test]
fn deal_values_convert_to_usd() {
    let rates = BTreeMap::from([("GBP".to_owned(), 1.27), ("JPY".to_owned(), 0.006_71)]);
    assert_eq!(
        deal_value_usd(Some(25_000.0), Some("GBP"), &rates),
        (Some(31_750.0), Some(1.27))
    );
    assert_eq!(
        deal_value_usd(Some(25_000.0), Some(" gbp "), &rates),
        (Some(31_750.0), Some(1.27))
    );
    assert_eq!(
        deal_value_usd(Some(1_234.5), Some("usd"), &rates),
        (Some(1_234.5), Some(1.0)),
        "USD needs no table entry"
    );
    assert_eq!(
        deal_value_usd(Some(123_457.0), Some("JPY"), &rates),
        (Some(828.40), Some(0.006_71)),
        "rounded to cents"
    );
}

#[test]
fn a_missing_rate_or_value_gives_none_never_zero() {
    let rates = BTreeMap::from([("GBP".to_owned(), 1.27), ("BAD".to_owned(), f64::NAN)]);
    assert_eq!(
        deal_value_usd(Some(8_000.0), Some("EUR"), &rates),
        (None, None)
    );
    assert_eq!(deal_value_usd(Some(8_000.0), None, &rates), (None, None));
    assert_eq!(
        deal_value_usd(Some(8_000.0), Some(""), &rates),
        (None, None)
    );
    assert_eq!(
        deal_value_usd(Some(8_000.0), Some("BAD"), &rates),
        (None, None)
    );
    assert_eq!(
        deal_value_usd(None, Some("GBP"), &rates),
        (None, Some(1.27))
    );
}

// ---------------------------------------------------------------------------------------------
// Score and change

const DAY: i64 = 24 * 60 * 60 * 1_000_000;

fn inputs<'a>() -> ScoreInputs<'a> {
    ScoreInputs {
        status: Some("Active"),
        substatus: Some("Accepted"),
        deal_value_usd: Some(10_000.0),
        size_band: Some("medium"),
        qualification: Some("SalesQualified"),
        age_micros: Some(2 * DAY),
        email_provider: "microsoft365",
    }
}

#[test]
fn the_score_follows_the_documented_table() {
    // 20 (Active) + 15 ($10k) + 8 (medium) + 15 (SalesQualified) + 10 (2 days) + 10 (M365)
    assert_eq!(score(&inputs()), 78);
    let best = ScoreInputs {
        deal_value_usd: Some(5_000_000.0),
        size_band: Some("enterprise"),
        ..inputs()
    };
    assert_eq!(score(&best), 100);
    let nothing = ScoreInputs {
        status: None,
        substatus: None,
        deal_value_usd: None,
        size_band: None,
        qualification: None,
        age_micros: None,
        email_provider: "unknown",
    };
    assert_eq!(score(&nothing), 0);

    let value_points = |usd: f64| {
        score(&ScoreInputs {
            deal_value_usd: Some(usd),
            ..nothing
        })
    };
    assert_eq!(value_points(100.0), 0);
    assert_eq!(value_points(1_000.0), 7);
    assert_eq!(value_points(10_000.0), 15);
    assert_eq!(value_points(100_000.0), 22);
    assert_eq!(value_points(1_000_000.0), 30);
    assert_eq!(value_points(1e12), 30);

    let age_points = |days: i64| {
        score(&ScoreInputs {
            age_micros: Some(days * DAY),
            ..nothing
        })
    };
    assert_eq!(
        [-1, 0, 7, 8, 30, 31, 90, 91].map(age_points),
        [0, 10, 10, 6, 6, 3, 3, 0]
    );

    let status_points = |status| {
        score(&ScoreInputs {
            status: Some(status),
            ..nothing
        })
    };
    assert_eq!(
        ["active", "New", "None", "Mystery"].map(status_points),
        [20, 15, 0, 0]
    );

    assert_eq!(
        [100, 60, 59, 35, 34, 0].map(priority),
        ["high", "high", "medium", "medium", "low", "low"]
    );
}

#[test]
fn closed_referrals_score_zero_and_low() {
    for (status, substatus) in [
        (Some("Closed"), Some("Won")),
        (Some("closed"), None),
        (Some("Active"), Some("Lost")),
        (None, Some("Declined")),
        (Some("New"), Some("Expired")),
    ] {
        let closed = ScoreInputs {
            status,
            substatus,
            deal_value_usd: Some(5_000_000.0),
            size_band: Some("enterprise"),
            ..inputs()
        };
        assert_eq!(score(&closed), 0, "{status:?}/{substatus:?}");
        assert_eq!(priority(score(&closed)), "low");
    }
}

fn score_inputs() -> impl Strategy<Value = ScoreInputs<'static>> {
    let text =
        |values: &[&'static str]| proptest::option::of(proptest::sample::select(values.to_vec()));
    (
        text(&["None", "New", "Active", "Closed", "active", "Other"]),
        text(&[
            "None", "Pending", "Received", "Accepted", "Won", "Lost", "Declined", "Expired",
        ]),
        proptest::option::of(0.0..1e10_f64),
        text(&["small", "medium", "large", "enterprise"]),
        text(&[
            "None",
            "Direct",
            "MarketingQualified",
            "SalesQualified",
            "x",
        ]),
        proptest::option::of(-400 * DAY..400 * DAY),
        proptest::sample::select(vec!["microsoft365", "google_workspace", "other", "unknown"]),
    )
        .prop_map(
            |(
                status,
                substatus,
                deal_value_usd,
                size_band,
                qualification,
                age_micros,
                email_provider,
            )| {
                ScoreInputs {
                    status,
                    substatus,
                    deal_value_usd,
                    size_band,
                    qualification,
                    age_micros,
                    email_provider,
                }
            },
        )
}

proptest! {
    #[test]
    fn scores_stay_within_bounds(inputs in score_inputs()) {
        let score = score(&inputs);
        prop_assert!((0..=100).contains(&score));
        if is_closed(inputs.status, inputs.substatus) {
            prop_assert_eq!(score, 0);
        }
    }

    #[test]
    fn more_value_never_lowers_the_score(
        inputs in score_inputs(),
        a in 0.0..1e10_f64,
        b in 0.0..1e10_f64,
    ) {
        let (low, high) = if a <= b { (a, b) } else { (b, a) };
        let with = |usd| score(&ScoreInputs { deal_value_usd: usd, ..inputs });
        prop_assert!(with(Some(low)) <= with(Some(high)));
        prop_assert!(with(None) <= with(Some(low)));
    }
}

#[test]
fn change_types() {
    assert_eq!(change_type(Some("New"), None, true), "created");
    assert_eq!(change_type(Some("Active"), Some("New"), true), "created");
    assert_eq!(
        change_type(Some("Active"), Some("New"), false),
        "status_changed"
    );
    assert_eq!(
        change_type(Some("Closed"), Some("Active"), false),
        "status_changed"
    );
    assert_eq!(
        change_type(Some("Active"), Some("Active"), false),
        "updated"
    );
    assert_eq!(
        change_type(Some("Active"), Some(" active "), false),
        "updated"
    );
    assert_eq!(change_type(Some("Active"), None, false), "updated");
    assert_eq!(change_type(None, Some("Active"), false), "updated");
    assert_eq!(change_type(Some("Active"), Some(""), false), "updated");
}

// ---------------------------------------------------------------------------------------------
// Whole referrals

/// The first referral of the research notes §7.1, with a website added.
fn sample_referral() -> Referral {
    referral(json!({
        "id": "0a1b2c3d-1111-4aaa-8bbb-000000000001",
        "createdDateTime": "2024-03-04T09:15:00.1234567Z",
        "updatedDateTime": "2024-03-06T14:02:11.7654321Z",
        "status": "Active", "substatus": "Accepted",
        "type": "Shared", "qualification": "SalesQualified", "direction": "Incoming",
        "customerProfile": {
            "name": "Sample Customer One Ltd", "size": "51to250employees",
            "webSite": "https://www.contoso.com/",
            "address": { "city": "Exampleton", "postalCode": "00000", "country": "GB" },
            "team": [ { "firstName": "Alex", "email": "alex@example.com" } ]
        },
        "details": {
            "dealValue": 25000, "currency": "GBP",
            "requirements": {
                "industries": [ { "id": "Manufacturing" }, { "id": "Manufacturing" } ],
                "products": [ { "id": "Azure" }, { "id": " " }, {} ],
                "services": [ { "id": "DeploymentOrMigration" } ],
                "solutions": [
                    { "id": "SOL-0000001-ABC", "name": "Sample Solution", "type": "Name" },
                    { "id": "SOL-0000002-DEF" }
                ]
            }
        },
        "team": [ { "email": "sam@partner.example" } ]
    }))
}

#[tokio::test]
async fn a_whole_referral_is_enriched() {
    let dns = FakeDns::start().await;
    let enricher = Enricher::new(options(dns.address));
    let enrichment = enricher
        .enrich(&sample_referral(), Some("New"), false)
        .await;
    assert_eq!(
        enrichment,
        Enrichment {
            enrichment_version: ENRICHMENT_VERSION,
            company_domain: Some("contoso.com".to_owned()),
            company_domain_source: Some("website".to_owned()),
            email_provider: "microsoft365".to_owned(),
            email_provider_source: "mx".to_owned(),
            company_name_normalized: Some("sample customer one".to_owned()),
            country: Some("GB".to_owned()),
            size_band: Some("medium".to_owned()),
            products: vec!["Azure".to_owned()],
            solutions: vec!["Sample Solution".to_owned(), "SOL-0000002-DEF".to_owned()],
            industries: vec!["Manufacturing".to_owned()],
            deal_value_usd: Some(31_250.0),
            usd_rate: Some(1.25),
            // 20 Active + floor(7.5 × (log10(31250) − 2)) = 18 + 8 medium + 15 SalesQualified
            // + 10 (2 days old) + 10 Microsoft 365
            score: 81,
            priority: "high".to_owned(),
            change_type: "status_changed".to_owned(),
            previous_status: Some("New".to_owned()),
        }
    );

    // The same version again: same result (the MX answer now comes from the cache).
    let again = enricher
        .enrich(&sample_referral(), Some("New"), false)
        .await;
    assert_eq!(
        Enrichment {
            email_provider_source: "mx".to_owned(),
            ..again
        },
        enrichment
    );
}

#[tokio::test]
async fn a_sparse_referral_is_enriched_without_failing() {
    let dns = FakeDns::start().await;
    let enricher = Enricher::new(options(dns.address));
    let enrichment = enricher
        .enrich(&referral(json!({ "id": "r-1" })), None, true)
        .await;
    assert_eq!(
        enrichment,
        Enrichment {
            enrichment_version: ENRICHMENT_VERSION,
            company_domain: None,
            company_domain_source: None,
            email_provider: "unknown".to_owned(),
            email_provider_source: "no_domain".to_owned(),
            company_name_normalized: None,
            country: None,
            size_band: None,
            products: vec![],
            solutions: vec![],
            industries: vec![],
            deal_value_usd: None,
            usd_rate: None,
            score: 0,
            priority: "low".to_owned(),
            change_type: "created".to_owned(),
            previous_status: None,
        }
    );
}
