//! The fixtures the enrichment tests share (a real DNS responder on 127.0.0.1, never the
//! network), and the tests of whole referrals. The rules' own tests sit next to them, in
//! `domain.rs`, `mx.rs`, `normalize.rs` and `score.rs`.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_resolver::proto::op::{Message, ResponseCode};
use hickory_resolver::proto::rr::rdata::MX;
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use hunter_core::records::{Ingest, Lead, Referral, Timestamp};
use serde_json::json;
use tokio::net::UdpSocket;

use super::*;

// ---------------------------------------------------------------------------------------------
// Fixtures

pub(super) fn referral(value: serde_json::Value) -> Referral {
    Referral::from_api_json(&value.to_string(), Ingest::default()).unwrap()
}

/// A referral whose customer has the given website (None: no website key) and contact emails.
pub(super) fn referral_with(website: Option<serde_json::Value>, emails: &[&str]) -> Referral {
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

pub(super) fn options(dns_server: SocketAddr) -> EnrichSettings {
    EnrichSettings {
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
pub(super) struct FakeDns {
    pub(super) address: SocketAddr,
    pub(super) queries: Arc<Mutex<HashMap<String, usize>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeDns {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeDns {
    pub(super) async fn start() -> Self {
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

    pub(super) fn queries_for(&self, name: &str) -> usize {
        self.queries
            .lock()
            .unwrap()
            .get(name)
            .copied()
            .unwrap_or_default()
    }
}

pub(super) async fn provider_of(enricher: &Enricher, email: &str) -> (String, String) {
    let lead = enriched(enricher, &referral_with(None, &[email]), None, true).await;
    (lead.email_provider, lead.email_provider_source)
}

/// `Lead::default()` (so a referral without `updatedDateTime` can be enriched too) enriched.
pub(super) async fn enriched(
    enricher: &Enricher,
    referral: &Referral,
    previous_status: Option<&str>,
    first_version: bool,
) -> Lead {
    let mut lead = Lead::default();
    enricher
        .enrich(&mut lead, referral, previous_status, first_version)
        .await;
    lead
}

pub(super) fn pair(provider: &str, source: &str) -> (String, String) {
    (provider.to_owned(), source.to_owned())
}

#[tokio::test]
async fn a_referral_without_a_domain_asks_no_dns() {
    let dns = FakeDns::start().await;
    let enricher = Enricher::new(options(dns.address));
    let lead = enriched(&enricher, &referral(json!({ "id": "r-1" })), None, true).await;
    assert_eq!(lead.email_provider, "unknown");
    assert_eq!(lead.email_provider_source, "no_domain");
    assert!(dns.queries.lock().unwrap().is_empty());
}

#[test]
fn the_enricher_is_shareable_and_builds_outside_a_runtime() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<Enricher>();
    // The system configuration may be missing here; construction must not fail either way.
    let enricher = Enricher::new(EnrichSettings::default());
    assert!(format!("{enricher:?}").starts_with("Enricher"));
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
    let referral = sample_referral();
    let made = Lead::from_referral(&referral, Timestamp(0)).unwrap();
    let mut lead = made.clone();
    enricher
        .enrich(&mut lead, &referral, Some("New"), false)
        .await;
    // Every enrichment field is set, and nothing else of the lead changes.
    assert_eq!(
        lead,
        Lead {
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
            ..made.clone()
        }
    );

    // The same version again: same result (the MX answer now comes from the cache).
    let mut again = made;
    enricher
        .enrich(&mut again, &referral, Some("New"), false)
        .await;
    assert_eq!(again.email_provider_source, "mx_cache");
    assert_eq!(
        Lead {
            email_provider_source: "mx".to_owned(),
            ..again
        },
        lead
    );
}

#[tokio::test]
async fn a_sparse_referral_is_enriched_without_failing() {
    let dns = FakeDns::start().await;
    let enricher = Enricher::new(options(dns.address));
    let lead = enriched(&enricher, &referral(json!({ "id": "r-1" })), None, true).await;
    assert_eq!(
        lead,
        Lead {
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
            ..Lead::default()
        }
    );
}

#[tokio::test]
async fn a_country_the_rules_do_not_know_stays_as_the_api_gave_it() {
    let dns = FakeDns::start().await;
    let enricher = Enricher::new(options(dns.address));
    let referral = referral(json!({
        "id": "r-1",
        "updatedDateTime": "2024-03-06T14:02:11Z",
        "customerProfile": { "address": { "country": " atlantis " } }
    }));
    let mut lead = Lead::from_referral(&referral, Timestamp(0)).unwrap();
    enricher.enrich(&mut lead, &referral, None, true).await;
    assert_eq!(lead.country.as_deref(), Some("ATLANTIS"));
    assert_eq!(lead.company_domain, None);
}
