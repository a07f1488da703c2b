//! The shared local stack's addresses (from the environment `tests/run.sh` sets up), the `hunter`
//! binary under test, free ports and unique names for per-test isolation.

use std::net::TcpListener;
use std::path::{Path, PathBuf};

use rdkafka::ClientConfig;

/// The local stack's addresses, from the environment `tests/run.sh` sets up.
#[derive(Debug, Clone)]
pub struct Stack {
    pub brokers: String,
    pub clickhouse_url: String,
    /// librdkafka security properties for the tests' own clients (empty: plaintext); set by
    /// [`crate::Deployment::use_secured_broker`].
    pub kafka_client: Vec<(String, String)>,
}

impl Stack {
    pub fn from_env() -> Self {
        let get = |name: &str| {
            std::env::var(name).unwrap_or_else(|_| {
                panic!("{name} is not set: run the tests with ./tests/run.sh (or eval \"$(deploy/local/stack.sh env)\")")
            })
        };
        Stack {
            brokers: get("HUNTER_KAFKA_BROKERS"),
            clickhouse_url: get("HUNTER_CLICKHOUSE_URL"),
            kafka_client: Vec::new(),
        }
    }

    /// A client configuration for the stack's broker, with its security properties.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        for (key, value) in &self.kafka_client {
            config.set(key, value);
        }
        config
    }
}

/// The `hunter` binary under test.
pub fn hunter_bin() -> PathBuf {
    if let Ok(path) = std::env::var("HUNTER_BIN") {
        return PathBuf::from(path);
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/hunter");
    assert!(
        path.exists(),
        "{} missing: run `cargo build -p hunter` first (tests/run.sh does)",
        path.display()
    );
    path
}

/// A port free on 127.0.0.1 right now, handed out once per test process.
///
/// Ports come from below the kernel's ephemeral range (32768-60999 on Debian): a port taken from
/// `bind(0)` and released can be handed to an outgoing connection (to the broker, ClickHouse)
/// before the child process binds it, which failed CI once with "Address already in use".
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    // Each test binary starts in its own block so a lingering child of an earlier binary is
    // unlikely to hold the same ports.
    let base = 21_000 + (std::process::id() % 50) as u16 * 200;
    loop {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed) % 10_000;
        let port = 21_000 + (base - 21_000 + offset) % 10_000;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A short random name part for topics, groups and databases.
pub fn unique(label: &str) -> String {
    format!(
        "{label}{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    )
}
