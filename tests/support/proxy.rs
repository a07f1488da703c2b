//! A TCP proxy on 127.0.0.1 that can stop answering ([`SilentProxy`]): in front of a server, it
//! turns the server into one that accepts connections and requests but never answers, the way a
//! hung or partitioned server looks to a client, while the real server stays up for the other
//! tests.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// Forwards connections to `upstream` until [`SilentProxy::hold`]; from then on, until
/// [`SilentProxy::forward`], it forwards nothing in either direction, on the connections it
/// has and on new ones (which it still accepts): what clients send is recorded
/// ([`SilentProxy::held`]) and dropped, and they get no answer. Stops when dropped.
pub struct SilentProxy {
    pub address: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

struct State {
    upstream: SocketAddr,
    holding: AtomicBool,
    held: Mutex<Vec<u8>>,
}

impl Drop for SilentProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SilentProxy {
    pub async fn start(upstream: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let state = Arc::new(State {
            upstream,
            holding: AtomicBool::new(false),
            held: Mutex::new(Vec::new()),
        });
        let shared = state.clone();
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                connections.spawn(serve(client, shared.clone()));
            }
        });
        Ok(SilentProxy {
            address,
            state,
            task,
        })
    }

    /// `http://` URL of the proxy.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// From now on nothing goes through; clients are left waiting.
    pub fn hold(&self) {
        self.state
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.state.holding.store(true, Ordering::SeqCst);
    }

    /// Forwards again (what was held stays dropped).
    pub fn forward(&self) {
        self.state.holding.store(false, Ordering::SeqCst);
    }

    /// What clients sent since [`SilentProxy::hold`], lossily as text.
    pub fn held(&self) -> String {
        String::from_utf8_lossy(&self.state.held.lock().unwrap_or_else(|e| e.into_inner()))
            .into_owned()
    }
}

async fn serve(mut client: TcpStream, state: Arc<State>) {
    let upstream = if state.holding.load(Ordering::SeqCst) {
        None
    } else {
        TcpStream::connect(state.upstream).await.ok()
    };
    let Some(upstream) = upstream else {
        // Held (or the server is gone): read and record, never answer.
        let mut buffer = vec![0u8; 64 * 1024];
        while let Ok(n @ 1..) = client.read(&mut buffer).await {
            record(&state, &buffer[..n]);
        }
        return;
    };
    let (mut client_read, mut client_write) = client.into_split();
    let (mut upstream_read, mut upstream_write) = upstream.into_split();
    let to_server = {
        let state = state.clone();
        async move {
            let mut buffer = vec![0u8; 64 * 1024];
            while let Ok(n @ 1..) = client_read.read(&mut buffer).await {
                if state.holding.load(Ordering::SeqCst) {
                    record(&state, &buffer[..n]);
                } else if upstream_write.write_all(&buffer[..n]).await.is_err() {
                    break;
                }
            }
        }
    };
    let to_client = async move {
        let mut buffer = vec![0u8; 64 * 1024];
        while let Ok(n @ 1..) = upstream_read.read(&mut buffer).await {
            if state.holding.load(Ordering::SeqCst) {
                continue;
            }
            if client_write.write_all(&buffer[..n]).await.is_err() {
                break;
            }
        }
        // A server that does not answer does not close either: while held, the server's side
        // closing (its keep-alive timeout) is not passed on; the client keeps waiting.
        if state.holding.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
    };
    // Either side closing ends the connection.
    tokio::select! {
        _ = to_server => {}
        _ = to_client => {}
    }
}

fn record(state: &State, bytes: &[u8]) {
    state
        .held
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .extend_from_slice(bytes);
}
