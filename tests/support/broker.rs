//! Kafka for the tests: a tansu broker of the test's own ([`OwnBroker`], plain or SASL over TLS)
//! and reading a topic back from the start ([`read_topic`]).

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::processes::{base_env, output_text, tail, terminate_server};
use crate::stack::{free_port, unique};
use crate::tls;

/// A tansu broker of the test's own, for tests that stop and restart the broker while the
/// shared one stays up for everyone else: the stack's `tansu` (`deploy/local/stack.sh up`
/// installs it) with durable `sqlite://` storage in a temporary directory, on a free port.
/// Killed and deleted when dropped. Topics are created by `hunter migrate`, as on any broker.
///
/// [`OwnBroker::start_secured`] makes it a secured broker: SASL (tansu's `--authentication`) over
/// TLS (stunnel in front), the way hosted Kafka services are reached.
pub struct OwnBroker {
    /// The port clients connect to (stunnel's, when secured).
    pub port: u16,
    home: tempfile::TempDir,
    server: Option<Child>,
    secured: Option<Secured>,
}

impl OwnBroker {
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(tempfile::tempdir()?).await
    }

    /// [`OwnBroker::start`] with its storage in a new directory `tansu-*` under `base`: benches
    /// keep it under `.local/bench` (see [`crate::bench::dir`]), where `tests/bench.sh` finds
    /// what a killed bench left by the `tansu.pid` every start writes.
    pub async fn start_in(base: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(base)?;
        let base = std::fs::canonicalize(base)?;
        Self::start_with(tempfile::Builder::new().prefix("tansu-").tempdir_in(base)?).await
    }

    async fn start_with(home: tempfile::TempDir) -> anyhow::Result<Self> {
        let mut own = OwnBroker {
            port: free_port(),
            home,
            server: None,
            secured: None,
        };
        own.start_again().await?;
        Ok(own)
    }

    /// The running broker's process id.
    pub fn pid(&self) -> Option<u32> {
        self.server.as_ref().map(Child::id)
    }

    /// Bytes its storage takes on disk now.
    pub fn disk_bytes(&self) -> u64 {
        std::fs::read_dir(self.home.path())
            .map(|entries| {
                entries
                    .filter_map(|entry| entry.ok()?.metadata().ok())
                    .map(|metadata| metadata.len())
                    .sum()
            })
            .unwrap_or(0)
    }

    /// The broker's version line (`tansu 0.6.0`).
    pub fn version() -> String {
        Command::new(Self::tansu())
            .arg("--version")
            .output()
            .ok()
            .filter(|output| output.status.success())
            .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
            .unwrap_or_else(|| "unknown".to_owned())
    }

    /// The broker's log (`HUNTER_TEST_TANSU_LOG` sets its `RUST_LOG`; default `warn`).
    pub fn log(&self) -> PathBuf {
        self.home.path().join("tansu.log")
    }

    /// `host:port` for `HUNTER_KAFKA_BROKERS`.
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn tansu() -> PathBuf {
        let on_path = std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("tansu"))
                .find(|candidate| candidate.is_file())
        });
        on_path.unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cargo/bin/tansu")
        })
    }

    /// Starts the broker (again: same storage and port) and waits until it answers a Kafka
    /// metadata request.
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.server.is_none(), "the broker is already running");
        let (listen, authentication) = match &self.secured {
            Some(secured) => (secured.inner_port, true),
            None => (self.port, false),
        };
        self.spawn_tansu(listen, self.port, authentication)?;
        self.wait_answering(self.client_config()).await
    }

    /// Starts tansu listening on `listen`, advertising `advertised` to clients (stunnel's port
    /// when secured: clients reconnect to what the metadata says).
    fn spawn_tansu(
        &mut self,
        listen: u16,
        advertised: u16,
        authentication: bool,
    ) -> anyhow::Result<()> {
        let url = format!("tcp://127.0.0.1:{listen}");
        let advertised = format!("tcp://127.0.0.1:{advertised}");
        let storage = format!("sqlite://{}/tansu.db", self.home.path().display());
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.home.path().join("tansu.log"))?;
        // As deploy/local/stack.sh runs it: from / (tansu resolves the sqlite path against its
        // working directory), with nothing of the test runner's environment.
        let server = Command::new(Self::tansu())
            .args(["broker", "--cluster-id", "hunter-test"])
            .args([
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &advertised,
            ])
            .args(["--storage-engine", &storage])
            .args(authentication.then_some("--authentication"))
            .current_dir("/")
            .env_clear()
            .envs(base_env())
            .env(
                "RUST_LOG",
                std::env::var("HUNTER_TEST_TANSU_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("spawn tansu (deploy/local/stack.sh up installs it)")?;
        std::fs::write(self.home.path().join("tansu.pid"), server.id().to_string())?;
        self.server = Some(server);
        Ok(())
    }

    /// Waits until the broker answers a metadata request from a client configured as `config`.
    async fn wait_answering(&mut self, config: ClientConfig) -> anyhow::Result<()> {
        let brokers = config
            .get("bootstrap.servers")
            .unwrap_or_default()
            .to_owned();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let config = config.clone();
            let answered = tokio::task::spawn_blocking(move || {
                let consumer: BaseConsumer = config.create()?;
                consumer.fetch_metadata(None, Duration::from_secs(2))?;
                anyhow::Ok(())
            })
            .await?;
            if answered.is_ok() {
                return Ok(());
            }
            let exited = self
                .server
                .as_mut()
                .and_then(|s| s.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() > deadline {
                let log =
                    std::fs::read_to_string(self.home.path().join("tansu.log")).unwrap_or_default();
                bail!(
                    "own tansu on {brokers} did not answer (exit: {exited:?}): {answered:?}\n{}",
                    tail(&log, 30)
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// SIGTERM, and waits until the broker has exited (SIGKILL after 30 s).
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        let Some(server) = self.server.take() else {
            bail!("the broker is not running");
        };
        terminate_server(server, "tansu", Duration::from_secs(30)).await
    }

    /// Whether the broker process was started (and not stopped) by this handle.
    pub fn is_started(&self) -> bool {
        self.server.is_some()
    }

    /// A liveness probe: does the broker answer a metadata request within 3 s?
    pub async fn answers(&self) -> bool {
        let config = self.client_config();
        tokio::task::spawn_blocking(move || {
            let consumer: BaseConsumer = config.create()?;
            consumer.fetch_metadata(None, Duration::from_secs(3))?;
            anyhow::Ok(())
        })
        .await
        .map(|answered| answered.is_ok())
        .unwrap_or(false)
    }

    /// SIGKILL: no shutdown hooks run; only what its storage made durable survives.
    pub fn kill9(&mut self) -> anyhow::Result<()> {
        let Some(mut server) = self.server.take() else {
            bail!("the broker is not running");
        };
        server.kill()?;
        server.wait()?;
        Ok(())
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        if let Some(mut server) = self.server.take() {
            let _ = server.kill();
            let _ = server.wait();
        }
        if let Some(mut stunnel) = self.secured.as_mut().and_then(|s| s.stunnel.take()) {
            let _ = stunnel.kill();
            let _ = stunnel.wait();
        }
    }
}

/// What makes an [`OwnBroker`] a secured one (see [`OwnBroker::start_secured`]).
struct Secured {
    /// Where tansu itself listens (SASL without TLS); only stunnel connects to it.
    inner_port: u16,
    ca: tls::TestCa,
    certificate: tls::ServerCertificate,
    /// Every user the broker knows, with its password (SCRAM-SHA-256 and -512 credentials each).
    users: Vec<(String, String)>,
    stunnel: Option<Child>,
}

impl OwnBroker {
    /// A broker that clients reach with SASL over TLS, as hosted Kafka services are reached:
    ///
    /// - tansu with `--authentication` listens on an inner port. Its SCRAM users (`users`, each
    ///   with SCRAM-SHA-256 and SCRAM-SHA-512 credentials) are created first by a run without
    ///   authentication on the same storage, with `tansu user create`: tansu 0.6.0 serves
    ///   AlterUserScramCredentials only to an authenticated client, and keeps the credentials in
    ///   its storage. It offers no PLAIN: tansu 0.6.0's rsasl is built with SCRAM and
    ///   OAUTHBEARER only, and it drops a client that asks for PLAIN at the handshake.
    /// - stunnel (Debian's `stunnel4`) terminates TLS on [`OwnBroker::port`] with a certificate
    ///   for 127.0.0.1 signed by a CA of the test's own ([`OwnBroker::ca`]), and tansu advertises
    ///   that port, so clients come back through TLS after the metadata request. (tansu 0.6.0
    ///   takes `--cert`/`--key` but its listener never uses the TLS acceptor it builds.)
    pub async fn start_secured(users: &[(&str, &str)]) -> anyhow::Result<Self> {
        anyhow::ensure!(!users.is_empty(), "a secured broker needs a user");
        let home = tempfile::tempdir()?;
        let ca = tls::TestCa::new(&home.path().join("pki"), "broker-ca")?;
        let certificate = ca.issue_server("broker")?;
        let inner_port = free_port();
        let mut own = OwnBroker {
            port: free_port(),
            home,
            server: None,
            secured: None,
        };
        own.spawn_tansu(inner_port, inner_port, false)?;
        let mut plain = ClientConfig::new();
        plain.set("bootstrap.servers", format!("127.0.0.1:{inner_port}"));
        own.wait_answering(plain).await?;
        for (user, password) in users {
            for mechanism in ["scram256", "scram512"] {
                let output = Command::new(Self::tansu())
                    .args(["user", "create", "--broker"])
                    .arg(format!("tcp://127.0.0.1:{inner_port}"))
                    .args(["--mechanism", mechanism, user, password])
                    .env_clear()
                    .envs(base_env())
                    .output()
                    .context("tansu user create")?;
                anyhow::ensure!(
                    output.status.success(),
                    "tansu user create {user} ({mechanism}) failed: {}",
                    output_text(&output)
                );
            }
        }
        own.stop().await?;
        own.secured = Some(Secured {
            inner_port,
            ca,
            certificate,
            users: users
                .iter()
                .map(|(u, p)| (u.to_string(), p.to_string()))
                .collect(),
            stunnel: None,
        });
        own.start_stunnel().await?;
        own.start_again().await?;
        Ok(own)
    }

    /// The PEM file of the CA that signed the secured broker's certificate.
    pub fn ca(&self) -> Option<&Path> {
        self.secured.as_ref().map(|s| s.ca.certificate.as_path())
    }

    /// Hunter's settings for this broker: SASL over TLS with `mechanism` as `user`, trusting
    /// [`OwnBroker::ca`] (plain `HUNTER_KAFKA_BROKERS` when the broker is not secured).
    pub fn hunter_settings(
        &self,
        mechanism: &str,
        user: &str,
        password: &str,
    ) -> Vec<(String, String)> {
        let mut settings = vec![("HUNTER_KAFKA_BROKERS".to_owned(), self.brokers())];
        if let Some(ca) = self.ca() {
            for (name, value) in [
                ("HUNTER_KAFKA_SECURITY_PROTOCOL", "sasl_ssl"),
                ("HUNTER_KAFKA_SASL_MECHANISM", mechanism),
                ("HUNTER_KAFKA_SASL_USERNAME", user),
                ("HUNTER_KAFKA_SASL_PASSWORD", password),
                ("HUNTER_KAFKA_SSL_CA_LOCATION", &ca.display().to_string()),
            ] {
                settings.push((name.to_owned(), value.to_owned()));
            }
        }
        settings
    }

    /// librdkafka properties for the test's own clients (as the first user, SCRAM-SHA-256 over
    /// TLS), without `bootstrap.servers`; empty when the broker is not secured.
    pub fn client_properties(&self) -> Vec<(String, String)> {
        let Some(secured) = &self.secured else {
            return Vec::new();
        };
        let (user, password) = &secured.users[0];
        [
            ("security.protocol", "sasl_ssl"),
            ("sasl.mechanism", "SCRAM-SHA-256"),
            ("sasl.username", user),
            ("sasl.password", password),
            (
                "ssl.ca.location",
                &secured.ca.certificate.display().to_string(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    /// A client configuration that reaches this broker (with [`OwnBroker::client_properties`]).
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", self.brokers());
        for (key, value) in self.client_properties() {
            config.set(key, value);
        }
        config
    }

    /// stunnel on [`OwnBroker::port`], forwarding to tansu's inner port; waits until it listens.
    async fn start_stunnel(&mut self) -> anyhow::Result<()> {
        let port = self.port;
        let home = self.home.path().to_owned();
        let secured = self.secured.as_mut().context("not a secured broker")?;
        let config = home.join("stunnel.conf");
        std::fs::write(
            &config,
            format!(
                "foreground = yes\npid =\ndebug = notice\n[kafka]\naccept = 127.0.0.1:{port}\nconnect = 127.0.0.1:{}\ncert = {}\nkey = {}\n",
                secured.inner_port,
                secured.certificate.certificate.display(),
                secured.certificate.key.display()
            ),
        )?;
        let binary = ["stunnel4", "stunnel"]
            .into_iter()
            .find(|name| {
                Command::new("sh")
                    .args(["-c", &format!("command -v {name}")])
                    .output()
                    .is_ok_and(|o| o.status.success())
            })
            .context("stunnel4 is not installed (deploy/local/stack.sh packages installs it)")?;
        let log = File::create(home.join("stunnel.log"))?;
        let mut child = Command::new(binary)
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawn stunnel")?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "stunnel exited ({status}):\n{}",
                    std::fs::read_to_string(home.join("stunnel.log")).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("stunnel did not listen on 127.0.0.1:{port}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        secured.stunnel = Some(child);
        Ok(())
    }
}

/// A record as read back: payload, and headers (with the key as header "key").
pub type ReadRecord = (Vec<u8>, HashMap<String, String>);

pub fn read_topic(brokers: &str, topic: &str, min: usize) -> anyhow::Result<Vec<ReadRecord>> {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    read_topic_with(config, topic, min)
}

/// [`read_topic`] with a client configuration of the caller's (a secured broker's).
pub fn read_topic_with(
    mut config: ClientConfig,
    topic: &str,
    min: usize,
) -> anyhow::Result<Vec<ReadRecord>> {
    let consumer: BaseConsumer = config
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let partitions: Vec<i32> = metadata.topics()[0]
        .partitions()
        .iter()
        .map(|p| p.id())
        .collect();
    // Wait until the topic holds at least `min` records, then read up to the end seen then.
    let deadline = Instant::now() + Duration::from_secs(30);
    let ends = loop {
        let mut ends = HashMap::new();
        for partition in &partitions {
            let (low, high) =
                consumer.fetch_watermarks(topic, *partition, Duration::from_secs(10))?;
            if high > low {
                ends.insert(*partition, (low, high));
            }
        }
        let total: i64 = ends.values().map(|(low, high)| high - low).sum();
        if total as usize >= min {
            break ends;
        }
        if Instant::now() > deadline {
            bail!("{topic}: {total} records, wanted at least {min}");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut out = Vec::new();
    if ends.is_empty() {
        return Ok(out);
    }
    let mut assignment = TopicPartitionList::new();
    for (partition, (low, _)) in &ends {
        assignment.add_partition_offset(topic, *partition, Offset::Offset(*low))?;
    }
    consumer.assign(&assignment)?;
    let mut remaining: HashMap<i32, i64> = ends.iter().map(|(p, (_, high))| (*p, *high)).collect();
    while !remaining.is_empty() {
        anyhow::ensure!(
            Instant::now() < deadline + Duration::from_secs(30),
            "{topic}: reading did not reach the end"
        );
        let Some(message) = consumer.poll(Duration::from_millis(300)) else {
            continue;
        };
        let message = message?;
        if let Some(end) = remaining.get(&message.partition()).copied() {
            if message.offset() + 1 >= end {
                remaining.remove(&message.partition());
            }
            if message.offset() >= end {
                continue;
            }
        } else {
            continue;
        }
        let mut headers = HashMap::new();
        if let Some(all) = message.headers() {
            for header in all.iter() {
                headers.insert(
                    header.key.to_owned(),
                    String::from_utf8_lossy(header.value.unwrap_or_default()).into_owned(),
                );
            }
        }
        if let Some(key) = message.key() {
            headers.insert("key".to_owned(), String::from_utf8_lossy(key).into_owned());
        }
        out.push((message.payload().unwrap_or_default().to_vec(), headers));
    }
    std::thread::spawn(move || drop(consumer));
    Ok(out)
}
