//! A DNS server on 127.0.0.1 for the enrichment's MX lookups ([`MxServer`]).

use std::collections::HashMap;

/// A DNS server on 127.0.0.1 answering MX questions from a table (`domain -> exchanges`);
/// other names get NXDOMAIN. Stops when dropped.
pub struct MxServer {
    pub address: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MxServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MxServer {
    pub async fn start(table: HashMap<String, Vec<String>>) -> anyhow::Result<Self> {
        use hickory_resolver::proto::op::{Message, ResponseCode};
        use hickory_resolver::proto::rr::rdata::MX;
        use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
        let address = socket.local_addr()?;
        let task = tokio::spawn(async move {
            let mut buffer = vec![0u8; 4096];
            while let Ok((length, peer)) = socket.recv_from(&mut buffer).await {
                let Ok(request) = Message::from_vec(&buffer[..length]) else {
                    continue;
                };
                let Some(query) = request.queries.first().cloned() else {
                    continue;
                };
                let name = query.name().to_ascii().trim_end_matches('.').to_owned();
                let mut response = Message::response(request.metadata.id, request.metadata.op_code);
                response.metadata.recursion_desired = request.metadata.recursion_desired;
                response.metadata.recursion_available = true;
                response.queries = request.queries.clone();
                match table.get(&name) {
                    None => response.metadata.response_code = ResponseCode::NXDomain,
                    Some(exchanges) if query.query_type() == RecordType::MX => {
                        for (index, exchange) in exchanges.iter().enumerate() {
                            let Ok(exchange) = Name::from_ascii(exchange) else {
                                continue;
                            };
                            response.answers.push(Record::from_rdata(
                                query.name().clone(),
                                300,
                                RData::MX(MX::new(10 * (index as u16 + 1), exchange)),
                            ));
                        }
                    }
                    Some(_) => {}
                }
                if let Ok(bytes) = response.to_vec() {
                    let _ = socket.send_to(&bytes, peer).await;
                }
            }
        });
        Ok(MxServer { address, task })
    }
}

/// A DNS server on 127.0.0.1 that never answers: every question is recorded
/// ([`SilentDnsServer::questions`]) and left unanswered, so a resolver pointed at it waits out its
/// whole timeout. Stops when dropped.
pub struct SilentDnsServer {
    pub address: std::net::SocketAddr,
    questions: std::sync::Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SilentDnsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SilentDnsServer {
    pub async fn start() -> anyhow::Result<Self> {
        use hickory_resolver::proto::op::Message;
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
        let address = socket.local_addr()?;
        let questions =
            std::sync::Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
        let seen = questions.clone();
        let task = tokio::spawn(async move {
            let mut buffer = vec![0u8; 4096];
            while let Ok((length, _peer)) = socket.recv_from(&mut buffer).await {
                let Ok(request) = Message::from_vec(&buffer[..length]) else {
                    continue;
                };
                let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
                for query in &request.queries {
                    seen.insert(query.name().to_ascii().trim_end_matches('.').to_owned());
                }
            }
        });
        Ok(SilentDnsServer {
            address,
            questions,
            task,
        })
    }

    /// The names asked about so far (without the trailing dot).
    pub fn questions(&self) -> std::collections::BTreeSet<String> {
        self.questions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}
