//! The DNS answers as a real resolver reads them: hickory's `TokioResolver` (the one Hunter's
//! enrichment uses) over UDP against the bound server, and hickory's wire format for the
//! packets a resolver would not send.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_resolver::proto::rr::{DNSClass, Name, RData, RecordType};

use super::*;

/// The demo's data: `deploy/local/demo.sh` generates this many referrals with this seed.
const DEMO_REFERRALS: usize = 500;
const DEMO_SEED: u64 = 42;
/// The demo's headline (README, docs/demo.md): distinct customer domains on Microsoft 365.
const DEMO_MICROSOFT365_COMPANIES: usize = 55;

fn resolver(server: SocketAddr) -> TokioResolver {
    let mut name_server = NameServerConfig::udp_and_tcp(server.ip());
    for connection in &mut name_server.connections {
        connection.port = server.port();
    }
    let mut builder = TokioResolver::builder_with_config(
        ResolverConfig::from_name_servers(vec![name_server]),
        TokioRuntimeProvider::default(),
    );
    builder.options_mut().timeout = Duration::from_secs(5);
    builder.options_mut().cache_size = 0;
    builder.build().unwrap()
}

/// The first `company-N.example` with `setup` for `seed`.
fn domain_with(setup: MailSetup, seed: u64) -> String {
    (0..)
        .map(|n| format!("company-{n}.example"))
        .find(|domain| mail_setup(domain, seed) == setup)
        .unwrap()
}

async fn start(seed: u64) -> (SocketAddr, tokio::task::JoinHandle<io::Result<()>>) {
    let (addr, server) = bind("127.0.0.1:0".parse().unwrap(), seed).await.unwrap();
    (addr, tokio::spawn(server))
}

/// MX answers as (preference, exchange) sorted, read by the resolver.
async fn mx(resolver: &TokioResolver, domain: &str) -> Result<Vec<(u16, String)>, String> {
    match resolver.mx_lookup(format!("{domain}.")).await {
        Ok(lookup) => {
            let mut found: Vec<(u16, String)> = lookup
                .answers()
                .iter()
                .filter_map(|record| match &record.data {
                    RData::MX(mx) => Some((mx.preference, mx.exchange.to_ascii())),
                    _ => None,
                })
                .collect();
            found.sort();
            Ok(found)
        }
        Err(error) if error.is_nx_domain() => Err("nxdomain".into()),
        Err(error) if error.is_no_records_found() => Err("no records".into()),
        Err(error) => Err(error.to_string()),
    }
}

#[tokio::test]
async fn a_real_resolver_reads_every_kind_of_answer() {
    let (addr, server) = start(DEMO_SEED).await;
    let resolver = resolver(addr);

    let m365 = domain_with(MailSetup::Microsoft365, DEMO_SEED);
    let label = m365.replace('.', "-");
    assert_eq!(
        mx(&resolver, &m365).await.unwrap(),
        vec![(0, format!("{label}.mail.protection.outlook.com."))]
    );
    // The case of the question does not matter.
    assert_eq!(
        mx(&resolver, &m365.to_ascii_uppercase())
            .await
            .unwrap()
            .len(),
        1
    );

    let google = domain_with(MailSetup::GoogleWorkspace, DEMO_SEED);
    let exchanges = mx(&resolver, &google).await.unwrap();
    assert_eq!(exchanges.len(), 5, "{exchanges:?}");
    assert_eq!(exchanges[0], (1, "aspmx.l.google.com.".to_owned()));
    assert!(
        exchanges
            .iter()
            .all(|(_, e)| e.ends_with(".aspmx.l.google.com.") || e == "aspmx.l.google.com.")
    );

    let own = domain_with(MailSetup::OwnServer, DEMO_SEED);
    assert_eq!(
        mx(&resolver, &own).await.unwrap(),
        vec![(10, format!("mail.{own}.")), (20, format!("mail2.{own}."))]
    );
    for setup in [
        MailSetup::Proofpoint,
        MailSetup::Mimecast,
        MailSetup::Zoho,
        MailSetup::Ionos,
    ] {
        let domain = domain_with(setup, DEMO_SEED);
        let exchanges = mx(&resolver, &domain).await.unwrap();
        assert!(!exchanges.is_empty(), "{setup:?}");
        assert!(
            exchanges
                .iter()
                .all(|(_, e)| !e.contains("outlook.com") && !e.contains("google")),
            "{setup:?}: {exchanges:?}"
        );
    }

    let nxdomain = domain_with(MailSetup::NoSuchDomain, DEMO_SEED);
    assert_eq!(mx(&resolver, &nxdomain).await, Err("nxdomain".into()));
    let no_mx = domain_with(MailSetup::NoMx, DEMO_SEED);
    assert_eq!(mx(&resolver, &no_mx).await, Err("no records".into()));
    let null_mx = domain_with(MailSetup::NullMx, DEMO_SEED);
    assert_eq!(
        mx(&resolver, &null_mx).await.unwrap(),
        vec![(0, ".".into())]
    );

    // MX only: an existing domain has no address; a deeper name does not exist.
    let a = resolver.ipv4_lookup(format!("{m365}.")).await.unwrap_err();
    assert!(a.is_no_records_found() && !a.is_nx_domain(), "{a}");
    let deeper = resolver
        .mx_lookup(format!("mail.{own}."))
        .await
        .unwrap_err();
    assert!(deeper.is_nx_domain(), "{deeper}");
    // Not our zone: refused, never recursed.
    let outside = resolver.mx_lookup("contoso.com.").await.unwrap_err();
    assert!(
        !outside.is_nx_domain() && outside.to_string().to_lowercase().contains("refused"),
        "{outside}"
    );
    server.abort();
}

fn query(name: &str, kind: RecordType) -> Message {
    let mut message = Message::new(4242, MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(Name::from_ascii(name).unwrap(), kind));
    message
}

fn ask(message: &Message) -> Message {
    let reply = answer(&message.to_vec().unwrap(), DEMO_SEED).expect("a reply");
    let reply = Message::from_vec(&reply).unwrap();
    assert_eq!(reply.metadata.id, message.metadata.id);
    assert_eq!(reply.metadata.message_type, MessageType::Response);
    reply
}

#[test]
fn the_wire_answers_follow_an_authoritative_server() {
    let m365 = domain_with(MailSetup::Microsoft365, DEMO_SEED);

    let reply = ask(&query(&format!("{m365}."), RecordType::MX));
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert!(reply.metadata.authoritative && !reply.metadata.recursion_available);
    assert!(reply.metadata.recursion_desired, "RD is copied");
    assert_eq!(reply.queries.len(), 1);
    assert_eq!(reply.answers.len(), 1);
    assert_eq!(reply.answers[0].ttl, TTL);
    assert!(reply.authorities.is_empty());

    // NODATA and NXDOMAIN carry the zone's SOA for negative caching.
    for (name, kind, code) in [
        (m365.clone(), RecordType::AAAA, ResponseCode::NoError),
        (m365.clone(), RecordType::TXT, ResponseCode::NoError),
        (
            domain_with(MailSetup::NoMx, DEMO_SEED),
            RecordType::MX,
            ResponseCode::NoError,
        ),
        (
            domain_with(MailSetup::NoSuchDomain, DEMO_SEED),
            RecordType::MX,
            ResponseCode::NXDomain,
        ),
        (
            domain_with(MailSetup::NoSuchDomain, DEMO_SEED),
            RecordType::A,
            ResponseCode::NXDomain,
        ),
        ("a.b.example".into(), RecordType::MX, ResponseCode::NXDomain),
        ("example".into(), RecordType::MX, ResponseCode::NoError),
    ] {
        let reply = ask(&query(&format!("{name}."), kind));
        assert_eq!(reply.metadata.response_code, code, "{name} {kind}");
        assert!(reply.answers.is_empty(), "{name} {kind}");
        assert!(
            matches!(reply.authorities.as_slice(), [soa] if soa.record_type() == RecordType::SOA),
            "{name} {kind}: {:?}",
            reply.authorities
        );
    }
    let apex = ask(&query("example.", RecordType::SOA));
    assert_eq!(apex.answers.len(), 1);
    assert_eq!(apex.answers[0].record_type(), RecordType::SOA);

    // Not our zone, or not class IN: REFUSED, nothing else.
    let refused = ask(&query("www.contoso.com.", RecordType::MX));
    assert_eq!(refused.metadata.response_code, ResponseCode::Refused);
    assert!(refused.answers.is_empty() && !refused.metadata.authoritative);
    let mut chaos = Message::new(7, MessageType::Query, OpCode::Query);
    let mut question = Query::query(
        Name::from_ascii(format!("{m365}.")).unwrap(),
        RecordType::MX,
    );
    question.set_query_class(DNSClass::CH);
    chaos.add_query(question);
    assert_eq!(ask(&chaos).metadata.response_code, ResponseCode::Refused);

    // Another opcode: NOTIMP; not exactly one question: FORMERR.
    let mut notify = query(&format!("{m365}."), RecordType::SOA);
    notify.metadata.op_code = OpCode::Notify;
    assert_eq!(ask(&notify).metadata.response_code, ResponseCode::NotImp);
    let mut two = query(&format!("{m365}."), RecordType::MX);
    two.add_query(Query::query(
        Name::from_ascii("example.").unwrap(),
        RecordType::MX,
    ));
    assert_eq!(ask(&two).metadata.response_code, ResponseCode::FormErr);
    let none = Message::new(9, MessageType::Query, OpCode::Query);
    assert_eq!(ask(&none).metadata.response_code, ResponseCode::FormErr);

    // EDNS in, EDNS out.
    let mut with_edns = query(&format!("{m365}."), RecordType::MX);
    let mut edns = Edns::new();
    edns.set_max_payload(4096);
    with_edns.set_edns(edns);
    let reply = ask(&with_edns);
    assert_eq!(reply.edns.as_ref().map(Edns::max_payload), Some(1232));

    // Garbage with a readable header: FORMERR with its id; shorter than a header, or a
    // response: no reply at all.
    let mut garbage = vec![0x12, 0x34, 0x01, 0x00, 0x00, 0x05, 0, 0, 0, 0, 0, 0];
    garbage.extend_from_slice(&[0xff; 7]);
    let reply = Message::from_vec(&answer(&garbage, DEMO_SEED).unwrap()).unwrap();
    assert_eq!(reply.metadata.id, 0x1234);
    assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);
    assert_eq!(answer(&[0x12, 0x34, 0x01], DEMO_SEED), None);
    let mut response = query(&format!("{m365}."), RecordType::MX);
    response.metadata.message_type = MessageType::Response;
    assert_eq!(answer(&response.to_vec().unwrap(), DEMO_SEED), None);
}

#[test]
fn the_mix_has_the_documented_shares_and_is_fixed_by_the_seed() {
    let domains: Vec<String> = (0..20_000)
        .map(|n| format!("company-{n}.example"))
        .collect();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for domain in &domains {
        *counts
            .entry(mail_setup(domain, DEMO_SEED).provider())
            .or_default() += 1;
    }
    let share = |provider| counts[provider] as f64 / domains.len() as f64;
    // 45 / 25 / 15 / 15 % of the module docs, within 1.5 points on 20,000 names.
    for (provider, expected) in [
        ("microsoft365", 0.45),
        ("google_workspace", 0.25),
        ("other", 0.15),
        ("unknown", 0.15),
    ] {
        assert!(
            (share(provider) - expected).abs() < 0.015,
            "{provider}: {} of {}",
            counts[provider],
            domains.len()
        );
    }
    // Deterministic for a seed, different for another.
    let of = |seed| -> Vec<MailSetup> { domains.iter().map(|d| mail_setup(d, seed)).collect() };
    assert_eq!(of(DEMO_SEED), of(DEMO_SEED));
    assert_ne!(of(DEMO_SEED), of(DEMO_SEED + 1));
    assert_eq!(
        mail_setup("Company-1.EXAMPLE.", DEMO_SEED),
        mail_setup("company-1.example", DEMO_SEED)
    );
}

#[test]
fn the_demo_data_has_the_documented_headline() {
    let referrals = crate::generate_referrals(DEMO_REFERRALS, DEMO_SEED);
    let domains: BTreeSet<String> = referrals
        .iter()
        .flat_map(|r| {
            r["customerProfile"]["team"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|member| {
            let email = member["email"].as_str()?.to_owned();
            Some(email.split_once('@')?.1.to_owned())
        })
        .collect();
    let mut by_provider: BTreeMap<&str, usize> = BTreeMap::new();
    for domain in &domains {
        assert!(domain.ends_with(".example"), "{domain}");
        *by_provider
            .entry(mail_setup(domain, DEMO_SEED).provider())
            .or_default() += 1;
    }
    eprintln!("{} customer domains: {by_provider:?}", domains.len());
    assert_eq!(by_provider["microsoft365"], DEMO_MICROSOFT365_COMPANIES);
    // The rest of the figures docs/demo.md gives.
    assert_eq!(domains.len(), 120);
    assert_eq!(by_provider["google_workspace"], 34);
    assert_eq!(by_provider["other"], 12);
    assert_eq!(by_provider["unknown"], 19);
}
