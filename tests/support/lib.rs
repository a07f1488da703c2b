//! Support for the end-to-end tests: the real local stack (broker, ClickHouse) from
//! `deploy/local/stack.sh env`, the real `hunter` binary, and per-test isolation (a topic
//! prefix and a ClickHouse database of its own).

use std::collections::HashMap;
use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::{Message, Offset, TopicPartitionList};

/// Contract tests: the registry stand-in, fixtures, the Python consumers.
pub mod contracts;

/// The local stack's addresses, from the environment `tests/run.sh` sets up.
#[derive(Debug, Clone)]
pub struct Stack {
    pub brokers: String,
    pub clickhouse_url: String,
    /// librdkafka security properties for the tests' own clients (empty: plaintext); set by
    /// [`Deployment::use_secured_broker`].
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

/// A running `hunter` process; killed when dropped. Its output goes to a log file.
pub struct Process {
    pub name: String,
    child: Child,
    pub log: PathBuf,
}

impl Process {
    pub fn spawn(
        name: &str,
        args: &[&str],
        env: &HashMap<String, String>,
        dir: &Path,
    ) -> anyhow::Result<Self> {
        let log = dir.join(format!("{name}.log"));
        let out = File::create(&log)?;
        let child = Command::new(hunter_bin())
            .args(args)
            .env_clear()
            .envs(base_env())
            .envs(env)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("spawn hunter {args:?}"))?;
        Ok(Process {
            name: name.to_owned(),
            child,
            log,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no shutdown hooks run.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for a graceful exit.
    pub fn terminate(&mut self, timeout: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                self.kill9();
                bail!(
                    "{} did not stop within {timeout:?} after SIGTERM\n{}",
                    self.name,
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The parts of the environment a child needs (PATH, HOME), nothing of the test runner's.
fn base_env() -> Vec<(String, String)> {
    ["PATH", "HOME", "RUST_BACKTRACE"]
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
        .chain([("RUST_LOG".to_string(), "info,hunter=debug".to_string())])
        .collect()
}

/// Runs `hunter args` to completion and returns (success, combined output).
pub fn run_hunter(
    args: &[&str],
    env: &HashMap<String, String>,
    timeout: Duration,
) -> anyhow::Result<(bool, String)> {
    let dir = tempfile::tempdir()?;
    let mut process = Process::spawn("oneshot", args, env, dir.path())?;
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = process.child.try_wait()? {
            return Ok((status.success(), process.output()));
        }
        if Instant::now() > deadline {
            let output = process.output();
            process.kill9();
            bail!("hunter {args:?} did not finish within {timeout:?}\n{output}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Polls `check` until it returns `Some`, or fails with the last observation after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last = match check().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => "not yet".to_owned(),
            Err(error) => format!("{error:#}"),
        };
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what} (last: {last})");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits until `url` answers 2xx.
pub async fn wait_healthy(what: &str, url: &str, timeout: Duration) -> anyhow::Result<()> {
    wait_for(what, timeout, || async move {
        Ok(reqwest::get(url)
            .await
            .ok()
            .filter(|r| r.status().is_success())
            .map(|_| ()))
    })
    .await
}

/// ClickHouse over its HTTP interface: the same interface analysts' tools use.
#[derive(Clone)]
pub struct ClickHouse {
    url: String,
    database: String,
    http: reqwest::Client,
    /// User and password; `None`: ClickHouse's `default` user without a password.
    login: Option<(String, String)>,
}

impl ClickHouse {
    pub fn new(url: &str, database: &str) -> Self {
        ClickHouse {
            url: url.trim_end_matches('/').to_owned(),
            database: database.to_owned(),
            http: reqwest::Client::new(),
            login: None,
        }
    }

    /// The same, over HTTPS trusting the CA in `ca` (PEM).
    pub fn trusting(mut self, ca: &Path) -> anyhow::Result<Self> {
        let certificate = reqwest::Certificate::from_pem(&std::fs::read(ca)?)?;
        self.http = reqwest::Client::builder()
            .add_root_certificate(certificate)
            .build()?;
        Ok(self)
    }

    /// The same, as `user` with `password`.
    pub fn as_user(mut self, user: &str, password: &str) -> Self {
        self.login = Some((user.to_owned(), password.to_owned()));
        self
    }

    fn post(&self, url: String) -> reqwest::RequestBuilder {
        let request = self.http.post(url);
        match &self.login {
            Some((user, password)) => request.basic_auth(user, Some(password)),
            None => request,
        }
    }

    /// Runs `sql` and returns its rows as JSON objects.
    pub async fn rows(&self, sql: &str) -> anyhow::Result<Vec<serde_json::Value>> {
        let response = self
            .post(format!("{}/?database={}", self.url, self.database))
            .body(format!("{sql} FORMAT JSONEachRow"))
            .send()
            .await?;
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            bail!("clickhouse {status}: {text}");
        }
        text.lines()
            .map(|line| Ok(serde_json::from_str(line)?))
            .collect()
    }

    pub async fn execute(&self, sql: &str) -> anyhow::Result<()> {
        let response = self
            .post(self.url.clone())
            .body(sql.to_owned())
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("clickhouse: {}", response.text().await?);
        }
        Ok(())
    }

    pub async fn drop_database(&self) {
        let _ = self
            .execute(&format!("DROP DATABASE IF EXISTS {}", self.database))
            .await;
    }
}

/// A ClickHouse server of the test's own, for tests that stop and start it while the shared one
/// stays up for everyone else: the stack's Debian `clickhouse-server` with the stack's config
/// template (deploy/local/clickhouse/, as `deploy/local/stack.sh` renders it), on free ports,
/// with its data in a temporary directory. Killed and deleted when dropped.
pub struct OwnClickHouse {
    /// The HTTP port, or the HTTPS port when the server serves TLS (then there is no HTTP port).
    pub http_port: u16,
    pub tcp_port: u16,
    home: tempfile::TempDir,
    server: Option<Child>,
    /// The CA that signed the server's certificate, when it serves HTTPS only.
    ca: Option<PathBuf>,
    /// The server process's environment (for `from_env` in users.d files).
    env: Vec<(String, String)>,
}

/// How an [`OwnClickHouse`] differs from the stack's server.
#[derive(Debug, Default, Clone)]
pub struct OwnClickHouseOptions {
    /// Serve HTTPS only (`https_port`, no `http_port`) with this certificate and key.
    pub tls: Option<TlsFiles>,
    /// Files for `users.d/`: (file name, XML).
    pub users_d: Vec<(String, String)>,
    /// The server process's environment.
    pub env: Vec<(String, String)>,
}

/// A throwaway CA and a server certificate it signed for 127.0.0.1 and localhost, made with the
/// `openssl` command line in `dir` (PEM files, 2 days).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    pub fn create(dir: &Path, name: &str) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = |file: &str| dir.join(format!("{name}-{file}"));
        let (ca, ca_key, cert, key, csr, ext) = (
            path("ca.pem"),
            path("ca.key"),
            path("server.pem"),
            path("server.key"),
            path("server.csr"),
            path("san.cnf"),
        );
        std::fs::write(&ext, "subjectAltName=IP:127.0.0.1,DNS:localhost\n")?;
        let text = |p: &Path| p.display().to_string();
        let steps: [Vec<String>; 3] = [
            [
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
            ]
            .map(str::to_owned)
            .into_iter()
            .chain([
                format!("/CN=Hunter test CA {name}"),
                "-keyout".into(),
                text(&ca_key),
                "-out".into(),
                text(&ca),
            ])
            .collect(),
            [
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=127.0.0.1",
                "-keyout",
            ]
            .map(str::to_owned)
            .into_iter()
            .chain([text(&key), "-out".into(), text(&csr)])
            .collect(),
            ["x509", "-req", "-days", "2", "-CAcreateserial", "-in"]
                .map(str::to_owned)
                .into_iter()
                .chain([
                    text(&csr),
                    "-CA".into(),
                    text(&ca),
                    "-CAkey".into(),
                    text(&ca_key),
                    "-out".into(),
                    text(&cert),
                    "-extfile".into(),
                    text(&ext),
                ])
                .collect(),
        ];
        for args in steps {
            let output = Command::new("openssl")
                .args(&args)
                .current_dir(dir)
                .output()
                .context("openssl (Debian package openssl)")?;
            anyhow::ensure!(
                output.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(TlsFiles { ca, cert, key })
    }
}

impl OwnClickHouse {
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(OwnClickHouseOptions::default()).await
    }

    pub async fn start_with(options: OwnClickHouseOptions) -> anyhow::Result<Self> {
        let home = tempfile::tempdir()?;
        let (http_port, tcp_port) = (free_port(), free_port());
        let templates = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/local/clickhouse");
        let template = std::fs::read_to_string(templates.join("config.xml"))?;
        let home_text = home.path().display().to_string();
        let config = template
            .replace("@CLICKHOUSE_HOME@", &home_text)
            .replace(
                "<http_port>18123</http_port>",
                &format!("<http_port>{http_port}</http_port>"),
            )
            .replace(
                "<tcp_port>19000</tcp_port>",
                &format!("<tcp_port>{tcp_port}</tcp_port>"),
            );
        anyhow::ensure!(
            config.contains(&format!("<http_port>{http_port}</http_port>"))
                && config.contains(&format!("<tcp_port>{tcp_port}</tcp_port>")),
            "deploy/local/clickhouse/config.xml no longer names ports 18123 and 19000"
        );
        // HTTPS only: the HTTP port becomes the HTTPS port, with the certificate.
        let config = match &options.tls {
            None => config,
            Some(tls) => config
                .replace(
                    &format!("<http_port>{http_port}</http_port>"),
                    &format!("<https_port>{http_port}</https_port>"),
                )
                .replace(
                    "</yandex>",
                    &format!(
                        "    <openSSL>\n        <server>\n            <certificateFile>{}</certificateFile>\n            <privateKeyFile>{}</privateKeyFile>\n            <verificationMode>none</verificationMode>\n            <loadDefaultCAFile>false</loadDefaultCAFile>\n            <disableProtocols>sslv2,sslv3</disableProtocols>\n        </server>\n    </openSSL>\n</yandex>",
                        tls.cert.display(),
                        tls.key.display()
                    ),
                ),
        };
        let etc = home.path().join("etc");
        std::fs::create_dir_all(etc.join("users.d"))?;
        for dir in ["data", "tmp", "user_files", "format_schemas", "logs"] {
            std::fs::create_dir_all(home.path().join(dir))?;
        }
        std::fs::write(etc.join("config.xml"), config)?;
        std::fs::copy(templates.join("users.xml"), etc.join("users.xml"))?;
        for (name, xml) in &options.users_d {
            std::fs::write(etc.join("users.d").join(name), xml)?;
        }
        let mut own = OwnClickHouse {
            http_port,
            tcp_port,
            home,
            server: None,
            ca: options.tls.map(|tls| tls.ca),
            env: options.env,
        };
        own.start_again().await?;
        Ok(own)
    }

    pub fn url(&self) -> String {
        let scheme = if self.ca.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.http_port)
    }

    /// A client of this server's HTTP(S) interface (trusting its CA) as the `default` user.
    pub fn client(&self, database: &str) -> anyhow::Result<ClickHouse> {
        let client = ClickHouse::new(&self.url(), database);
        match &self.ca {
            Some(ca) => client.trusting(ca),
            None => Ok(client),
        }
    }

    /// The server's error log so far.
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.home.path().join("logs/clickhouse-server.err.log"))
            .unwrap_or_default()
    }

    /// Starts the server (again: same config, data and ports) and waits for its `/ping`.
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.server.is_none(), "clickhouse is already running");
        let out = File::create(self.home.path().join("logs/stdout.log"))?;
        let server = Command::new("clickhouse-server")
            .arg(format!(
                "--config-file={}",
                self.home.path().join("etc/config.xml").display()
            ))
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(self.home.path())
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("spawn clickhouse-server (the Debian package; deploy/local/stack.sh up installs it)")?;
        self.server = Some(server);
        let ping = format!("{}/ping", self.url());
        let http = match &self.ca {
            None => reqwest::Client::new(),
            Some(ca) => reqwest::Client::builder()
                .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(ca)?)?)
                .build()?,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(response) = http.get(&ping).send().await
                && response.status().is_success()
            {
                return Ok(());
            }
            let exited = self
                .server
                .as_mut()
                .and_then(|s| s.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() > deadline {
                let log = std::fs::read_to_string(
                    self.home.path().join("logs/clickhouse-server.err.log"),
                )
                .unwrap_or_default();
                bail!(
                    "own clickhouse on {} did not answer /ping (exit: {exited:?})\n{}",
                    self.url(),
                    tail(&log, 30)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGTERM, and waits until the server has exited (SIGKILL after 60 s).
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        let Some(server) = self.server.take() else {
            bail!("clickhouse is not running");
        };
        terminate_server(server, "clickhouse", Duration::from_secs(60)).await
    }
}

impl Drop for OwnClickHouse {
    fn drop(&mut self) {
        if let Some(mut server) = self.server.take() {
            let _ = server.kill();
            let _ = server.wait();
        }
    }
}

/// SIGTERM to a server the tests started, and waits until it has exited (SIGKILL after
/// `timeout`, which is then an error).
async fn terminate_server(mut server: Child, what: &str, timeout: Duration) -> anyhow::Result<()> {
    Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()?;
    let deadline = Instant::now() + timeout;
    while server.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = server.kill();
            let _ = server.wait();
            bail!("{what} did not stop within {timeout:?} of SIGTERM; killed");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

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

/// One isolated Hunter deployment on the local stack: its own topic prefix, ClickHouse
/// database, simulator, token cache and API port.
pub struct Deployment {
    pub dir: tempfile::TempDir,
    pub env: HashMap<String, String>,
    pub api: String,
    pub api_token: String,
    pub simulator: String,
    pub referrals_file: PathBuf,
    pub clickhouse: ClickHouse,
    pub prefix: String,
    pub stack: Stack,
    processes: Vec<Process>,
}

impl Deployment {
    /// Writes `referrals` as the simulator's file and prepares settings; starts nothing.
    pub fn new(referrals: &[serde_json::Value]) -> anyhow::Result<Self> {
        let stack = Stack::from_env();
        let dir = tempfile::tempdir()?;
        let prefix = format!("{}.", unique("t"));
        let database = unique("hunter_t");
        let api_port = free_port();
        let simulator_port = free_port();
        let api_token = uuid::Uuid::new_v4().simple().to_string();
        let referrals_file = dir.path().join("referrals.json");
        std::fs::write(&referrals_file, serde_json::to_vec_pretty(referrals)?)?;
        let simulator = format!("http://127.0.0.1:{simulator_port}");
        let env: HashMap<String, String> = [
            ("HUNTER_KAFKA_BROKERS", stack.brokers.clone()),
            ("HUNTER_KAFKA_TOPIC_PREFIX", prefix.clone()),
            ("HUNTER_CLICKHOUSE_URL", stack.clickhouse_url.clone()),
            ("HUNTER_CLICKHOUSE_DATABASE", database.clone()),
            ("HUNTER_PARTNER_CENTER_ENABLED", "true".into()),
            ("HUNTER_PARTNER_CENTER_TENANT_ID", "test-tenant".into()),
            ("HUNTER_PARTNER_CENTER_CLIENT_ID", "test-client".into()),
            (
                "HUNTER_PARTNER_CENTER_API_URL",
                format!("{simulator}/v1.0/engagements"),
            ),
            ("HUNTER_PARTNER_CENTER_AUTHORITY_URL", simulator.clone()),
            (
                "HUNTER_TOKEN_CACHE",
                dir.path().join("token-cache.json").display().to_string(),
            ),
            ("HUNTER_API_LISTEN", format!("127.0.0.1:{api_port}")),
            ("HUNTER_API_TOKEN", api_token.clone()),
            ("HUNTER_SYNC_INTERVAL_SECS", "3600".into()),
            ("HUNTER_SINK_BATCH_MAX_WAIT_MS", "200".into()),
            // MX lookups never leave the machine in tests: a closed local port answers at once
            // (provider `unknown`); tests of MX enrichment point it at their own server.
            ("HUNTER_ENRICH_DNS_SERVER", "127.0.0.1:9".into()),
            ("HUNTER_ENRICH_DNS_TIMEOUT_MS", "200".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        Ok(Deployment {
            clickhouse: ClickHouse::new(&stack.clickhouse_url, &database),
            dir,
            env,
            api: format!("http://127.0.0.1:{api_port}"),
            api_token,
            simulator,
            referrals_file,
            prefix,
            stack,
            processes: Vec::new(),
        })
    }

    /// Starts the simulator and waits until it answers (loading a million referrals takes about
    /// 30 s).
    pub async fn start_simulator(&mut self, extra: &[&str]) -> anyhow::Result<()> {
        let listen = self.simulator.trim_start_matches("http://").to_owned();
        let file = self.referrals_file.display().to_string();
        let mut args = vec!["simulate", "--referrals", &file, "--listen", &listen];
        args.extend_from_slice(extra);
        let process = Process::spawn("simulator", &args, &self.env, self.dir.path())?;
        self.processes.push(process);
        wait_healthy(
            "the simulator",
            &format!("{}/healthz", self.simulator),
            Duration::from_secs(180),
        )
        .await
    }

    /// `hunter auth login` against the simulator, then `hunter migrate`.
    pub fn login_and_migrate(&self) -> anyhow::Result<()> {
        let (ok, output) = run_hunter(&["auth", "login"], &self.env, Duration::from_secs(60))?;
        anyhow::ensure!(ok, "hunter auth login failed:\n{output}");
        let (ok, output) = run_hunter(&["migrate"], &self.env, Duration::from_secs(60))?;
        anyhow::ensure!(ok, "hunter migrate failed:\n{output}");
        Ok(())
    }

    /// Starts `hunter run ROLE` and waits for its `/healthz`.
    pub async fn start_role(&mut self, role: &str) -> anyhow::Result<usize> {
        let process = Process::spawn(
            &format!("run-{role}-{}", self.processes.len()),
            &["run", role],
            &self.env,
            self.dir.path(),
        )?;
        self.processes.push(process);
        let index = self.processes.len() - 1;
        let result = wait_healthy(
            "hunter's /healthz",
            &format!("{}/healthz", self.api),
            Duration::from_secs(30),
        )
        .await;
        if let Err(error) = result {
            bail!("{error}\n{}", self.processes[index].output());
        }
        Ok(index)
    }

    pub fn processes_len(&self) -> usize {
        self.processes.len()
    }

    pub fn process(&mut self, index: usize) -> &mut Process {
        &mut self.processes[index]
    }

    /// Every process's log, for failure messages.
    pub fn logs(&self) -> String {
        self.processes
            .iter()
            .map(|p| format!("----- {} -----\n{}", p.name, tail(&p.output(), 60)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Every process's whole log.
    pub fn full_logs(&self) -> String {
        self.processes
            .iter()
            .map(Process::output)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// An authenticated GET of an API path, as JSON.
    pub async fn get(
        &self,
        path: &str,
    ) -> anyhow::Result<(reqwest::StatusCode, serde_json::Value)> {
        let response = reqwest::Client::new()
            .get(format!("{}{path}", self.api))
            .bearer_auth(&self.api_token)
            .send()
            .await?;
        let status = response.status();
        Ok((
            status,
            response.json().await.unwrap_or(serde_json::Value::Null),
        ))
    }

    /// Replaces the simulator's referrals (it re-reads the file when it changes).
    pub fn write_referrals(&self, referrals: &[serde_json::Value]) -> anyhow::Result<()> {
        let temp = self.referrals_file.with_extension("tmp");
        std::fs::write(&temp, serde_json::to_vec_pretty(referrals)?)?;
        std::fs::rename(&temp, &self.referrals_file)?;
        Ok(())
    }

    /// Points this deployment (its processes started from now on, and `self.clickhouse`) at
    /// another ClickHouse server, such as an [`OwnClickHouse`].
    pub fn use_clickhouse(&mut self, url: &str) {
        let database = self.env["HUNTER_CLICKHOUSE_DATABASE"].clone();
        self.env
            .insert("HUNTER_CLICKHOUSE_URL".into(), url.to_owned());
        self.clickhouse = ClickHouse::new(url, &database);
    }

    /// Points this deployment (its processes started from now on, and the test's own reads
    /// of its topics) at another broker, such as an [`OwnBroker`].
    pub fn use_broker(&mut self, brokers: &str) {
        self.env
            .insert("HUNTER_KAFKA_BROKERS".into(), brokers.to_owned());
        self.stack.brokers = brokers.to_owned();
    }

    /// Points this deployment at a secured [`OwnBroker`] ([`OwnBroker::start_secured`]): its
    /// processes connect with SASL `mechanism` as `user` over TLS, the test's own clients as the
    /// broker's first user.
    pub fn use_secured_broker(
        &mut self,
        broker: &OwnBroker,
        mechanism: &str,
        user: &str,
        password: &str,
    ) {
        self.use_broker(&broker.brokers());
        self.env
            .extend(broker.hunter_settings(mechanism, user, password));
        self.stack.kafka_client = broker.client_properties();
    }

    /// Stops every process and drops the test database.
    pub async fn teardown(mut self) {
        for process in &mut self.processes {
            process.kill9();
        }
        self.clickhouse.drop_database().await;
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Generated referrals in the API's shape, from the real `hunter simulate --generate`.
pub fn generated_referrals(count: usize, seed: u64) -> anyhow::Result<Vec<serde_json::Value>> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("generated.json");
    generate_referrals_file(&file, count, seed)?;
    let referrals: Vec<serde_json::Value> = serde_json::from_slice(&std::fs::read(&file)?)?;
    anyhow::ensure!(
        referrals.len() == count,
        "generated {} referrals, wanted {count}",
        referrals.len()
    );
    Ok(referrals)
}

/// Writes `count` generated referrals to `file` with the real `hunter simulate --generate`,
/// without reading them back (a million are about 4 GB of JSON).
pub fn generate_referrals_file(file: &Path, count: usize, seed: u64) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let port = free_port().to_string();
    let listen = format!("127.0.0.1:{port}");
    let file_text = file.display().to_string();
    let count_text = count.to_string();
    let seed_text = seed.to_string();
    let mut process = Process::spawn(
        "generate",
        &[
            "simulate",
            "--referrals",
            &file_text,
            "--listen",
            &listen,
            "--generate",
            &count_text,
            "--seed",
            &seed_text,
        ],
        &HashMap::new(),
        dir.path(),
    )?;
    // About 65 s per million on 2 cores.
    let deadline = Instant::now() + Duration::from_secs(30 + count as u64 / 10_000);
    // Said once the file is in place (it is written to a temporary file and renamed).
    let written = format!("wrote {count} generated referrals");
    while !process.output().contains(&written) {
        if Instant::now() > deadline || !process.is_running() {
            bail!(
                "hunter simulate --generate did not write {}:\n{}",
                file.display(),
                process.output()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    process.kill9();
    Ok(())
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

impl Deployment {
    /// A topic of this deployment (prefix applied).
    pub fn topic(&self, base: &str) -> String {
        format!("{}{base}", self.prefix)
    }

    /// GET a simulator control path (`/_simulator/stats`, `/_simulator/referrals`).
    pub async fn simulator_get(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        Ok(reqwest::get(format!("{}{path}", self.simulator))
            .await?
            .error_for_status()?
            .json()
            .await?)
    }

    /// POST a simulator control path (`/_simulator/revoke-refresh-tokens`, ...).
    pub async fn simulator_post(&self, path: &str) -> anyhow::Result<()> {
        reqwest::Client::new()
            .post(format!("{}{path}", self.simulator))
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    /// Every sync run record so far, in topic order (a run appears when it starts and ends).
    pub async fn sync_runs(&self) -> anyhow::Result<Vec<hunter_core::records::SyncRun>> {
        let topic = self.topic("hunter.sync-runs.v1");
        let codec = hunter_core::codec::Codec::<hunter_core::records::SyncRun>::new(&topic, None);
        let mut runs = Vec::new();
        for (payload, _) in read_topic_with(self.stack.client_config(), &topic, 0)? {
            runs.push(codec.decode(&payload).await?);
        }
        Ok(runs)
    }

    /// Waits for a finished run that `matches`, failing with the logs after `timeout`.
    pub async fn wait_for_run(
        &self,
        what: &str,
        timeout: Duration,
        matches: impl Fn(&hunter_core::records::SyncRun) -> bool,
    ) -> anyhow::Result<hunter_core::records::SyncRun> {
        let result = wait_for(what, timeout, || async {
            Ok(self
                .sync_runs()
                .await?
                .into_iter()
                .find(|run| run.status != "running" && matches(run)))
        })
        .await;
        result.map_err(|error| anyhow::anyhow!("{error}\n{}", self.logs()))
    }

    /// Revokes every refresh token and expires every access token at the simulator (as after
    /// 90 idle days), then waits for the source's run that reports the sign-in it needs.
    pub async fn revoke_sign_in(&self) -> anyhow::Result<hunter_core::records::SyncRun> {
        self.simulator_post("/_simulator/revoke-refresh-tokens")
            .await?;
        self.simulator_post("/_simulator/expire-access-tokens")
            .await?;
        self.wait_for_run(
            "a run reporting the sign-in",
            Duration::from_secs(60),
            |r| r.error_class.as_deref() == Some("signin_required"),
        )
        .await
    }

    /// Every referral record in the referral topic: (id, eTag) in topic order.
    pub async fn published_versions(&self) -> anyhow::Result<Vec<(String, String)>> {
        let topic = self.topic("partner-center.referrals.v1");
        let codec = hunter_core::codec::Codec::<hunter_core::records::Referral>::new(&topic, None);
        let mut versions = Vec::new();
        for (payload, _) in read_topic_with(self.stack.client_config(), &topic, 0)? {
            let referral = codec.decode(&payload).await?;
            versions.push((referral.id, referral.e_tag.unwrap_or_default()));
        }
        Ok(versions)
    }

    /// Asks the source for a poll the way the API does: a command on the command topic.
    pub async fn request_sync(&self, tenant: Option<&str>) -> anyhow::Result<String> {
        use hunter_core::records::{Command, Timestamp};
        let topic = self.topic("hunter.commands.v1");
        let command = Command {
            command_id: uuid::Uuid::new_v4().to_string(),
            kind: Command::SYNC_NOW.into(),
            tenant: tenant.map(str::to_owned),
            requested_at: Timestamp::now(),
        };
        let payload = hunter_core::codec::Codec::<Command>::new(&topic, None)
            .encode_single_object(&command)?;
        let producer: rdkafka::producer::FutureProducer = self.stack.client_config().create()?;
        producer
            .send(
                rdkafka::producer::FutureRecord::to(&topic)
                    .key(&command.command_id)
                    .payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(error, _)| error)?;
        Ok(command.command_id)
    }

    /// The current referrals of the simulator: (id, eTag) of each.
    pub async fn simulator_truth(&self) -> anyhow::Result<Vec<(String, String)>> {
        let referrals = self.simulator_get("/_simulator/referrals").await?;
        Ok(referrals
            .as_array()
            .context("referrals array")?
            .iter()
            .map(|r| {
                (
                    r["id"].as_str().unwrap_or_default().to_owned(),
                    r["eTag"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect())
    }

    /// Prometheus text of the running role.
    pub async fn metrics(&self) -> anyhow::Result<String> {
        Ok(reqwest::get(format!("{}/metrics", self.api))
            .await?
            .text()
            .await?)
    }
}

/// Sum of a simulator stats counter map (`{"200": 3, "429": 1}`), for the given statuses
/// (all when empty).
pub fn stat_count(map: &serde_json::Value, statuses: &[&str]) -> u64 {
    map.as_object()
        .map(|m| {
            m.iter()
                .filter(|(status, _)| statuses.is_empty() || statuses.contains(&status.as_str()))
                .map(|(_, n)| n.as_u64().unwrap_or(0))
                .sum()
        })
        .unwrap_or(0)
}

impl Deployment {
    /// Publishes referrals (API JSON) to the referral topic the way the source does: Avro
    /// records keyed by id, Java's partitioner.
    pub async fn produce_referrals(&self, referrals: &[serde_json::Value]) -> anyhow::Result<()> {
        use hunter_core::records::{Ingest, Referral, Timestamp};
        let topic = self.topic("partner-center.referrals.v1");
        let codec = hunter_core::codec::Codec::<Referral>::new(&topic, None);
        let mut records = Vec::with_capacity(referrals.len());
        for raw in referrals {
            let ingest = Ingest {
                tenant: "test-tenant".into(),
                fetched_at: Timestamp::now(),
                sync_run_id: "test".into(),
            };
            let referral = Referral::from_api_json(&raw.to_string(), ingest)?;
            records.push((referral.id.clone(), codec.encode_single_object(&referral)?));
        }
        self.produce_keyed(&topic, &records).await
    }

    /// Produces keyed records the way Hunter does (Java's partitioner), 500 at a time.
    async fn produce_keyed(
        &self,
        topic: &str,
        records: &[(String, Vec<u8>)],
    ) -> anyhow::Result<()> {
        let producer: rdkafka::producer::FutureProducer = self
            .stack
            .client_config()
            .set("partitioner", "murmur2_random")
            .set("linger.ms", "5")
            .create()?;
        for chunk in records.chunks(500) {
            let sends = chunk.iter().map(|(key, payload)| {
                producer.send(
                    rdkafka::producer::FutureRecord::to(topic)
                        .key(key)
                        .payload(payload),
                    Duration::from_secs(30),
                )
            });
            for result in futures::future::join_all(sends).await {
                result.map_err(|(error, _)| error)?;
            }
        }
        Ok(())
    }

    /// Every lead record in the lead topic, in topic order.
    pub async fn leads(&self) -> anyhow::Result<Vec<hunter_core::records::Lead>> {
        let topic = self.topic("hunter.leads.v1");
        let codec = hunter_core::codec::Codec::<hunter_core::records::Lead>::new(&topic, None);
        let mut leads = Vec::new();
        for (payload, _) in read_topic_with(self.stack.client_config(), &topic, 0)? {
            leads.push(codec.decode(&payload).await?);
        }
        Ok(leads)
    }

    /// Records in a topic of this deployment now (high minus low watermarks).
    pub fn topic_count(&self, base: &str) -> anyhow::Result<i64> {
        let topic = self.topic(base);
        let consumer: BaseConsumer = self
            .stack
            .client_config()
            .set("group.id", unique("count"))
            .create()?;
        let metadata = consumer.fetch_metadata(Some(&topic), Duration::from_secs(10))?;
        let mut total = 0;
        for partition in metadata.topics()[0].partitions() {
            let (low, high) =
                consumer.fetch_watermarks(&topic, partition.id(), Duration::from_secs(10))?;
            total += high - low;
        }
        std::thread::spawn(move || drop(consumer));
        Ok(total)
    }

    /// Starts `hunter run ROLE` with its HTTP listener on `port` (for several processes of one
    /// deployment) and waits for its `/healthz`.
    pub async fn start_role_on(&mut self, role: &str, port: u16) -> anyhow::Result<usize> {
        let mut env = self.env.clone();
        env.insert("HUNTER_API_LISTEN".into(), format!("127.0.0.1:{port}"));
        let name = format!("run-{role}-{port}");
        let process = Process::spawn(&name, &["run", role], &env, self.dir.path())?;
        self.processes.push(process);
        let index = self.processes.len() - 1;
        let result = wait_healthy(
            &name,
            &format!("http://127.0.0.1:{port}/healthz"),
            Duration::from_secs(30),
        )
        .await;
        if let Err(error) = result {
            bail!("{error}\n{}", self.processes[index].output());
        }
        Ok(index)
    }
}

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

impl Deployment {
    /// Publishes leads to the lead topic as the processor does (Avro, keyed by lead id).
    pub async fn produce_leads(&self, leads: &[hunter_core::records::Lead]) -> anyhow::Result<()> {
        let topic = self.topic("hunter.leads.v1");
        let codec = hunter_core::codec::Codec::<hunter_core::records::Lead>::new(&topic, None);
        let mut records = Vec::with_capacity(leads.len());
        for lead in leads {
            records.push((lead.lead_id.clone(), codec.encode_single_object(lead)?));
        }
        self.produce_keyed(&topic, &records).await
    }
}

impl Deployment {
    /// Simulator, sign-in, migrations and `hunter run all`, then waits until every one of the
    /// simulator's `expected` referrals is a live lead in ClickHouse.
    pub async fn run_all_until_leads(&mut self, expected: u64) -> anyhow::Result<()> {
        self.start_simulator(&[]).await?;
        self.login_and_migrate()?;
        self.start_role("all").await?;
        let clickhouse = &self.clickhouse;
        let result = wait_for(
            "every referral as a live lead",
            Duration::from_secs(120),
            || async {
                let rows = clickhouse
                    .rows("SELECT toString(count()) AS n FROM leads FINAL")
                    .await?;
                let n: u64 = rows[0]["n"].as_str().unwrap_or("0").parse()?;
                Ok((n == expected).then_some(()))
            },
        )
        .await;
        if let Err(error) = result {
            bail!("{error}\n{}", self.logs());
        }
        Ok(())
    }

    /// An API call with the given token (or none), any method, returning status, headers and
    /// the JSON body (Null when the body is not JSON).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
    ) -> anyhow::Result<(
        reqwest::StatusCode,
        reqwest::header::HeaderMap,
        serde_json::Value,
    )> {
        let mut request = reqwest::Client::new().request(method, format!("{}{path}", self.api));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.json().await.unwrap_or(serde_json::Value::Null);
        Ok((status, headers, body))
    }
}

/// The `hunter_*` metric names in a rule file, dashboard or PromQL text (recording rule names
/// such as `hunter:x:sum` are not metric names and are skipped).
pub fn metric_names_in(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = text.as_bytes();
    let mut at = 0;
    while let Some(found) = text[at..].find("hunter_") {
        let start = at + found;
        let preceded_by_word = start > 0
            && (bytes[start - 1].is_ascii_alphanumeric()
                || matches!(bytes[start - 1], b'_' | b':'));
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        if !preceded_by_word && bytes.get(end) != Some(&b':') {
            names.push(text[start..end].to_owned());
        }
        at = end;
    }
    names
}

/// Whether `series` is a catalogued metric, or a histogram's `_bucket`, `_sum` or `_count`.
pub fn is_catalogued_series(series: &str) -> bool {
    use hunter_core::telemetry::{MetricKind, metric};
    if metric(series).is_some() {
        return true;
    }
    ["_bucket", "_sum", "_count"].iter().any(|suffix| {
        series
            .strip_suffix(suffix)
            .and_then(metric)
            .is_some_and(|m| m.kind == MetricKind::Histogram)
    })
}

/// Grafana dashboards (`dashboards/*.json`) and provisioning (`deploy/grafana/provisioning`),
/// read the way Grafana reads them, and the ClickHouse plugin's macros expanded the way the
/// plugin expands them, so every panel's query can run against a real server. Also usable by
/// tests against other ClickHouse versions (see `dashboards/README.md`).
pub mod grafana {
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};

    use anyhow::Context as _;
    use serde_json::Value;

    /// One query of one panel.
    #[derive(Debug, Clone)]
    pub struct PanelQuery {
        /// The dashboard's file name (`leads.json`).
        pub dashboard: String,
        pub panel_id: i64,
        pub panel_title: String,
        /// The datasource uid of the query (its own, else the panel's).
        pub datasource_uid: String,
        /// `rawSql` (ClickHouse) or `expr` (Prometheus), as written in the dashboard.
        pub text: String,
    }

    pub fn repo() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    /// `dashboards/*.json`, by file name.
    pub fn dashboards() -> anyhow::Result<BTreeMap<String, Value>> {
        let mut out = BTreeMap::new();
        for entry in std::fs::read_dir(repo().join("dashboards"))? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "json") {
                let text = std::fs::read_to_string(&path)?;
                let json = serde_json::from_str(&text)
                    .with_context(|| format!("{} is not JSON", path.display()))?;
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                out.insert(name, json);
            }
        }
        Ok(out)
    }

    /// Every panel of a dashboard, rows' nested panels included.
    pub fn panels(dashboard: &Value) -> Vec<&Value> {
        fn walk<'a>(panels: &'a Value, out: &mut Vec<&'a Value>) {
            for panel in panels.as_array().into_iter().flatten() {
                out.push(panel);
                walk(&panel["panels"], out);
            }
        }
        let mut out = Vec::new();
        walk(&dashboard["panels"], &mut out);
        out
    }

    /// Every query of every panel of every dashboard.
    pub fn queries() -> anyhow::Result<Vec<PanelQuery>> {
        let mut out = Vec::new();
        for (name, dashboard) in dashboards()? {
            for panel in panels(&dashboard) {
                for target in panel["targets"].as_array().into_iter().flatten() {
                    let uid = target["datasource"]["uid"]
                        .as_str()
                        .or(panel["datasource"]["uid"].as_str())
                        .unwrap_or_default();
                    let text = target["rawSql"]
                        .as_str()
                        .or(target["expr"].as_str())
                        .unwrap_or_default();
                    out.push(PanelQuery {
                        dashboard: name.clone(),
                        panel_id: panel["id"].as_i64().unwrap_or(-1),
                        panel_title: panel["title"].as_str().unwrap_or_default().to_owned(),
                        datasource_uid: uid.to_owned(),
                        text: text.to_owned(),
                    });
                }
            }
        }
        Ok(out)
    }

    /// The datasources provisioned in `deploy/grafana/provisioning/datasources/*.yml`: uid ->
    /// type. (A line scan: these files are flat lists of `- name:` entries.)
    pub fn provisioned_datasources() -> anyhow::Result<BTreeMap<String, String>> {
        let mut out = BTreeMap::new();
        let dir = repo().join("deploy/grafana/provisioning/datasources");
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if !path.extension().is_some_and(|e| e == "yml" || e == "yaml") {
                continue;
            }
            let text = std::fs::read_to_string(&path)?;
            let mut uid = None;
            let mut kind = None;
            for line in text.lines().map(str::trim) {
                if line.starts_with("- ")
                    && let (Some(uid), Some(kind)) = (uid.take(), kind.take())
                {
                    out.insert(uid, kind);
                }
                let line = line.trim_start_matches("- ");
                if let Some(value) = line.strip_prefix("uid:") {
                    uid = Some(value.trim().to_owned());
                } else if let Some(value) = line.strip_prefix("type:") {
                    kind = Some(value.trim().to_owned());
                }
            }
            if let (Some(uid), Some(kind)) = (uid, kind) {
                out.insert(uid, kind);
            }
        }
        Ok(out)
    }

    /// The macros of `grafana-clickhouse-datasource` that the panels use, expanded as the plugin
    /// does: `$__timeFilter(col)` to `col >= toDateTime(FROM) AND col <= toDateTime(TO)`,
    /// `$__fromTime`/`$__toTime` to `toDateTime(..)`, `$__interval_s` to whole seconds. Any other
    /// `$__` macro is an error: panels keep to these so they run on ClickHouse 18.16 and current
    /// ClickHouse alike (`$__timeInterval` needs `toStartOfInterval`, which 18.16 lacks).
    pub fn expand_clickhouse_macros(
        sql: &str,
        from_unix: i64,
        to_unix: i64,
        interval_s: u64,
    ) -> anyhow::Result<String> {
        let mut out = String::new();
        let mut rest = sql;
        while let Some(at) = rest.find("$__") {
            out.push_str(&rest[..at]);
            rest = &rest[at..];
            if let Some(after) = rest.strip_prefix("$__timeFilter(") {
                let close = after.find(')').context("$__timeFilter( without )")?;
                let column = after[..close].trim();
                anyhow::ensure!(
                    !column.contains(','),
                    "$__timeFilter takes one column: {column}"
                );
                out.push_str(&format!(
                    "{column} >= toDateTime({from_unix}) AND {column} <= toDateTime({to_unix})"
                ));
                rest = &after[close + 1..];
            } else if let Some(after) = rest.strip_prefix("$__interval_s") {
                out.push_str(&interval_s.max(1).to_string());
                rest = after;
            } else if let Some(after) = rest.strip_prefix("$__fromTime") {
                out.push_str(&format!("toDateTime({from_unix})"));
                rest = after;
            } else if let Some(after) = rest.strip_prefix("$__toTime") {
                out.push_str(&format!("toDateTime({to_unix})"));
                rest = after;
            } else {
                anyhow::bail!(
                    "unsupported macro in panel SQL: {}",
                    &rest[..rest.len().min(30)]
                );
            }
        }
        out.push_str(rest);
        Ok(out)
    }

    /// Grafana's own variables in PromQL, as Grafana would fill them for a short range.
    pub fn expand_prometheus_variables(expr: &str, rate_interval: &str) -> String {
        expr.replace("$__rate_interval", rate_interval)
            .replace("$__interval", rate_interval)
            .replace("$__range", rate_interval)
    }
}

pub mod bench;
pub mod report;
pub mod tls;

/// A finished command's stdout and stderr as one text, for assertions and failure messages.
pub fn output_text(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}
