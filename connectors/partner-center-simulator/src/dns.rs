//! The simulator's DNS: an authoritative server for the zone `example.` that answers the MX
//! question of Hunter's enrichment for the generated customers' domains (`hunter simulate
//! --dns-listen 127.0.0.1:18053`), so a demo shows company domains and mail providers.
//!
//! Generated customers write from `<company>.example` (module `generate`); `.example` is
//! reserved for documentation (RFC 2606), so no real DNS ever answers for it and nothing here
//! can collide with a real company.
//!
//! # The mix
//!
//! Each `<label>.example` gets one [`MailSetup`], a pure function of the name (lower-cased)
//! and the seed (`--seed`, 42 by default and in the demo): a stable 64-bit hash of both picks a
//! bucket of 100. The shares are what a Microsoft partner's customer base plausibly looks like:
//!
//! | share | setup | MX answer |
//! |---|---|---|
//! | 45 % | Microsoft 365 | `0 <label>-example.mail.protection.outlook.com.` |
//! | 25 % | Google Workspace | `1 aspmx.l.google.com.`, `5 alt1.aspmx.l.google.com.`, `5 alt2…`, `10 alt3…`, `10 alt4…` |
//! | 4 % | own mail server | `10 mail.<label>.example.`, `20 mail2.<label>.example.` |
//! | 4 % | Proofpoint gateway | `10 mx0a-<n>.pphosted.com.`, `10 mx0b-<n>.pphosted.com.` |
//! | 3 % | Mimecast gateway | `10 eu-smtp-inbound-1.mimecast.com.`, `10 eu-smtp-inbound-2.mimecast.com.` |
//! | 2 % | Zoho Mail | `10 mx.zoho.eu.`, `20 mx2.zoho.eu.`, `50 mx3.zoho.eu.` |
//! | 2 % | IONOS | `10 mx00.ionos.de.`, `10 mx01.ionos.de.` |
//! | 7 % | no such domain | NXDOMAIN |
//! | 5 % | no mail | NOERROR, no MX (the SOA in the authority section) |
//! | 3 % | refuses mail | the null MX of RFC 7505: `0 .` |
//!
//! Hunter classifies these as `microsoft365`, `google_workspace`, `other` (the five "other"
//! rows: a gateway in front of Microsoft 365 hides it, as in real life) and `unknown`
//! (`dns_error`: the last three rows).
//!
//! # Answers, as an authoritative server gives them
//!
//! - `<label>.example` MX: the table; any other type: NOERROR without answers (NODATA), or
//!   NXDOMAIN for the no-such-domain bucket. Answers carry the AA bit, TTL 300, and the zone's
//!   SOA in the authority section when they are empty (negative caching, RFC 2308).
//! - `example.` itself: its SOA for an SOA question, NODATA otherwise; a deeper name
//!   (`mail.<label>.example`) is NXDOMAIN.
//! - A name outside `example.` or a class other than IN: REFUSED (not our zone; no recursion).
//! - An opcode other than QUERY: NOTIMP; not exactly one question: FORMERR; a packet that is
//!   not a DNS query (too short, a response, undecodable): FORMERR when its header can be read,
//!   else dropped without a reply.
//!
//! UDP only: every answer is far below 512 bytes, so a resolver never needs TCP.

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use hickory_resolver::proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_resolver::proto::rr::rdata::{MX, SOA};
use hickory_resolver::proto::rr::{DNSClass, Name, RData, Record, RecordType};

/// The zone the simulator is authoritative for.
pub const ZONE: &str = "example";

/// TTL of every record served.
const TTL: u32 = 300;

/// How a generated customer domain receives mail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MailSetup {
    Microsoft365,
    GoogleWorkspace,
    /// `mail.<domain>` and `mail2.<domain>`.
    OwnServer,
    Proofpoint,
    Mimecast,
    Zoho,
    Ionos,
    /// NXDOMAIN: the domain does not exist.
    NoSuchDomain,
    /// The domain exists and has no MX.
    NoMx,
    /// A null MX (RFC 7505): the domain accepts no mail.
    NullMx,
}

impl MailSetup {
    /// The provider Hunter's enrichment derives from this setup's answer
    /// (`microsoft365`, `google_workspace`, `other`, `unknown`).
    pub fn provider(self) -> &'static str {
        match self {
            Self::Microsoft365 => "microsoft365",
            Self::GoogleWorkspace => "google_workspace",
            Self::OwnServer | Self::Proofpoint | Self::Mimecast | Self::Zoho | Self::Ionos => {
                "other"
            }
            Self::NoSuchDomain | Self::NoMx | Self::NullMx => "unknown",
        }
    }

    /// The MX records of `domain` (preference, exchange); empty without MX.
    pub fn exchanges(self, domain: &str) -> Vec<(u16, String)> {
        let label = domain.trim_end_matches('.').replace('.', "-");
        let number = stable_hash(domain.as_bytes(), 0) % 100_000_000;
        let list = |items: &[(u16, &str)]| {
            items
                .iter()
                .map(|(preference, exchange)| (*preference, (*exchange).to_owned()))
                .collect()
        };
        match self {
            Self::Microsoft365 => vec![(0, format!("{label}.mail.protection.outlook.com."))],
            Self::GoogleWorkspace => list(&[
                (1, "aspmx.l.google.com."),
                (5, "alt1.aspmx.l.google.com."),
                (5, "alt2.aspmx.l.google.com."),
                (10, "alt3.aspmx.l.google.com."),
                (10, "alt4.aspmx.l.google.com."),
            ]),
            Self::OwnServer => vec![
                (10, format!("mail.{domain}.")),
                (20, format!("mail2.{domain}.")),
            ],
            Self::Proofpoint => vec![
                (10, format!("mx0a-{number:08}.pphosted.com.")),
                (10, format!("mx0b-{number:08}.pphosted.com.")),
            ],
            Self::Mimecast => list(&[
                (10, "eu-smtp-inbound-1.mimecast.com."),
                (10, "eu-smtp-inbound-2.mimecast.com."),
            ]),
            Self::Zoho => list(&[
                (10, "mx.zoho.eu."),
                (20, "mx2.zoho.eu."),
                (50, "mx3.zoho.eu."),
            ]),
            Self::Ionos => list(&[(10, "mx00.ionos.de."), (10, "mx01.ionos.de.")]),
            Self::NullMx => list(&[(0, ".")]),
            Self::NoSuchDomain | Self::NoMx => Vec::new(),
        }
    }
}

/// The mail setup of a customer domain (`northwind-ltd.example`, any case, with or without the
/// final dot) for `seed`: the bucket table of the module docs.
pub fn mail_setup(domain: &str, seed: u64) -> MailSetup {
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    match stable_hash(domain.as_bytes(), seed) % 100 {
        0..45 => MailSetup::Microsoft365,
        45..70 => MailSetup::GoogleWorkspace,
        70..74 => MailSetup::OwnServer,
        74..78 => MailSetup::Proofpoint,
        78..81 => MailSetup::Mimecast,
        81..83 => MailSetup::Zoho,
        83..85 => MailSetup::Ionos,
        85..92 => MailSetup::NoSuchDomain,
        92..97 => MailSetup::NoMx,
        _ => MailSetup::NullMx,
    }
}

/// FNV-1a over the seed and the bytes, then the splitmix64 finaliser: the same on every
/// platform and release (unlike `std`'s hashers), so a seed's mix never changes.
fn stable_hash(bytes: &[u8], seed: u64) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in seed.to_le_bytes().iter().chain(bytes) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash = (hash ^ (hash >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash = (hash ^ (hash >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

/// Binds the UDP socket; returns the bound address and the server future, which answers until
/// it is dropped (an error sending one reply is logged, not fatal).
pub async fn bind(
    listen: SocketAddr,
    seed: u64,
) -> io::Result<(SocketAddr, impl Future<Output = io::Result<()>> + Send)> {
    let socket = tokio::net::UdpSocket::bind(listen).await?;
    let addr = socket.local_addr()?;
    tracing::info!(%addr, zone = ZONE, seed, "simulator dns listening (udp, mx for *.example)");
    Ok((addr, async move {
        let mut buffer = vec![0u8; 4096];
        loop {
            let (length, peer) = socket.recv_from(&mut buffer).await?;
            let Some(reply) = answer(&buffer[..length], seed) else {
                continue;
            };
            if let Err(error) = socket.send_to(&reply, peer).await {
                tracing::warn!(%error, %peer, "simulator dns could not send a reply");
            }
        }
    }))
}

/// The reply to one request packet (wire format), or `None` for one that gets no reply.
pub fn answer(packet: &[u8], seed: u64) -> Option<Vec<u8>> {
    let response = match Message::from_vec(packet) {
        Ok(request) if request.metadata.message_type == MessageType::Query => {
            respond(&request, seed)
        }
        // A response sent to us: replying could loop between two servers.
        Ok(_) => return None,
        Err(_) => {
            // The header is readable: FORMERR with the request's id, as servers do.
            if packet.len() < 12 || packet[2] & 0x80 != 0 {
                return None;
            }
            let id = u16::from_be_bytes([packet[0], packet[1]]);
            let op_code = OpCode::from_u8((packet[2] >> 3) & 0x0f);
            let mut response = Message::response(id, op_code);
            response.metadata.response_code = ResponseCode::FormErr;
            response
        }
    };
    response.to_vec().ok()
}

fn respond(request: &Message, seed: u64) -> Message {
    let mut response = Message::response(request.metadata.id, request.metadata.op_code);
    response.metadata.recursion_desired = request.metadata.recursion_desired;
    response.metadata.recursion_available = false;
    if let Some(edns) = &request.edns {
        let mut reply = Edns::new();
        reply.set_max_payload(edns.max_payload().clamp(512, 1232));
        response.set_edns(reply);
    }
    if request.metadata.op_code != OpCode::Query {
        response.metadata.response_code = ResponseCode::NotImp;
        return response;
    }
    let [query] = request.queries.as_slice() else {
        response.metadata.response_code = ResponseCode::FormErr;
        return response;
    };
    response.queries = request.queries.clone();
    let name = query
        .name()
        .to_ascii()
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let labels: Vec<&str> = name.split('.').collect();
    let in_zone = labels.last() == Some(&ZONE);
    if !in_zone || query.query_class() != DNSClass::IN {
        response.metadata.response_code = ResponseCode::Refused;
        return response;
    }
    response.metadata.authoritative = true;
    let soa = soa_record();
    match labels.len() {
        // The apex.
        1 => {
            if query.query_type() == RecordType::SOA {
                response.answers.push(soa);
            } else {
                response.authorities.push(soa);
            }
        }
        // A customer domain.
        2 => {
            let setup = mail_setup(&name, seed);
            if setup == MailSetup::NoSuchDomain {
                response.metadata.response_code = ResponseCode::NXDomain;
            } else if query.query_type() == RecordType::MX {
                for (preference, exchange) in setup.exchanges(&name) {
                    if let Ok(exchange) = Name::from_ascii(&exchange) {
                        response.answers.push(Record::from_rdata(
                            query.name().clone(),
                            TTL,
                            RData::MX(MX::new(preference, exchange)),
                        ));
                    }
                }
            }
            if response.answers.is_empty() {
                response.authorities.push(soa);
            }
        }
        _ => {
            response.metadata.response_code = ResponseCode::NXDomain;
            response.authorities.push(soa);
        }
    }
    response
}

/// `example. SOA ns.example. hostmaster.example. 1 3600 600 86400 300`.
fn soa_record() -> Record {
    let name = |text: &str| Name::from_ascii(text).unwrap_or_else(|_| Name::root());
    Record::from_rdata(
        name("example."),
        TTL,
        RData::SOA(SOA::new(
            name("ns.example."),
            name("hostmaster.example."),
            1,
            3600,
            600,
            86_400,
            TTL,
        )),
    )
}

#[cfg(test)]
mod tests;
