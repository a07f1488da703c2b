//! Support for the contract tests (`tests/e2e/contracts.rs`): the registry stand-in as a real
//! process (`hunter-test-registry`), optionally behind stunnel with a CA of the test's own, the
//! committed fixture records, and the Python tools of `tests/avro/`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use rdkafka::ClientConfig;

use crate::{free_port, wait_for};

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The Python of `.local/avro-venv` (fastavro, confluent-kafka; `tests/avro/install.sh`).
pub fn python() -> PathBuf {
    let python = repo().join(".local/avro-venv/bin/python");
    assert!(
        python.exists(),
        "{} missing: run tests/avro/install.sh (tests/run.sh does)",
        python.display()
    );
    python
}

/// Runs a script of `tests/avro/` with the venv's Python (and `env` added to its environment);
/// returns (success, stdout, stderr).
pub fn run_python(
    script: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> anyhow::Result<(bool, String, String)> {
    let output = Command::new(python())
        .arg(repo().join("tests/avro").join(script))
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run tests/avro/{script}"))?;
    Ok((
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

/// The records of a committed fixture, `schemas/fixtures/<contract>/<version>.bin`.
pub fn fixture_records(contract: &str, version: &str) -> anyhow::Result<Vec<Vec<u8>>> {
    let path = repo().join(format!("schemas/fixtures/{contract}/{version}.bin"));
    let mut bytes: &[u8] = &std::fs::read(&path).with_context(|| path.display().to_string())?;
    let mut records = Vec::new();
    while !bytes.is_empty() {
        let (length, rest) = bytes.split_at(4);
        let length = u32::from_be_bytes(length.try_into()?) as usize;
        records.push(rest[..length].to_vec());
        bytes = &rest[length..];
    }
    Ok(records)
}

/// Creates a topic of one partition (the broker does not create topics on first use).
pub async fn create_topic(brokers: &str, topic: &str) -> anyhow::Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let results = admin
        .create_topics(
            [&NewTopic::new(topic, 1, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await?;
    for result in results {
        result.map_err(|(topic, code)| anyhow::anyhow!("create {topic}: {code}"))?;
    }
    Ok(())
}

/// Produces keyed raw records (Java's partitioner, as Hunter produces).
pub async fn produce_raw(
    brokers: &str,
    topic: &str,
    records: &[(String, Vec<u8>)],
) -> anyhow::Result<()> {
    let producer: rdkafka::producer::FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("partitioner", "murmur2_random")
        .create()?;
    for (key, payload) in records {
        producer
            .send(
                rdkafka::producer::FutureRecord::to(topic)
                    .key(key)
                    .payload(payload),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(error, _)| error)?;
    }
    Ok(())
}

/// The `hunter-test-registry` binary (built with this package's tests).
fn registry_bin() -> PathBuf {
    let path = repo().join("target/debug/hunter-test-registry");
    assert!(
        path.exists(),
        "{} missing: `cargo build -p hunter-e2e --bins` (cargo test builds it)",
        path.display()
    );
    path
}

/// The registry stand-in (`hunter-test-registry`) as a process of the test's own, its state in
/// a directory that survives [`OwnRegistry::stop`]. Killed when dropped.
pub struct OwnRegistry {
    dir: tempfile::TempDir,
    port: u16,
    credentials: Option<(String, String)>,
    child: Option<Child>,
    tls: Option<Tls>,
}

/// stunnel terminating TLS in front of the registry, with a certificate of a CA made for the
/// test.
struct Tls {
    child: Child,
    port: u16,
    ca: PathBuf,
}

impl OwnRegistry {
    /// Starts a registry; with `credentials` it demands basic auth.
    pub async fn start(credentials: Option<(&str, &str)>) -> anyhow::Result<Self> {
        let mut registry = OwnRegistry {
            dir: tempfile::tempdir()?,
            port: free_port(),
            credentials: credentials.map(|(u, p)| (u.to_owned(), p.to_owned())),
            child: None,
            tls: None,
        };
        registry.start_again().await?;
        Ok(registry)
    }

    /// The plain-HTTP address.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts the stopped registry again, with the state it had.
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        let log = std::fs::File::create(self.dir.path().join("registry.log"))?;
        let mut command = Command::new(registry_bin());
        command
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .arg("--data")
            .arg(self.dir.path().join("registry.json"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if let Some((user, password)) = &self.credentials {
            command
                .env("HUNTER_TEST_REGISTRY_USER", user)
                .env("HUNTER_TEST_REGISTRY_PASSWORD", password);
        }
        self.child = Some(command.spawn().context("spawn hunter-test-registry")?);
        let url = format!("{}/", self.url());
        wait_for("the registry stand-in", Duration::from_secs(20), || {
            let url = url.clone();
            async move {
                // Any HTTP answer (401 with auth on) means it is up.
                Ok(reqwest::get(&url).await.ok().map(|_| ()))
            }
        })
        .await
    }

    /// Stops it (SIGKILL: as abrupt as an outage gets).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Puts stunnel in front with a certificate for 127.0.0.1 signed by a CA made here; returns
    /// the HTTPS URL and the CA's PEM file.
    pub async fn serve_tls(&mut self) -> anyhow::Result<(String, PathBuf)> {
        let dir = self.dir.path();
        let openssl = |args: &[&str]| -> anyhow::Result<()> {
            let output = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .context("openssl (apt: openssl)")?;
            anyhow::ensure!(
                output.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            Ok(())
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=hunter-test-ca",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ])?;
        std::fs::write(
            dir.join("san.ext"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
        )?;
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ])?;
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "server.pem",
        ])?;
        let port = free_port();
        std::fs::write(
            dir.join("stunnel.conf"),
            format!(
                "foreground = yes\npid =\n[registry]\naccept = 127.0.0.1:{port}\nconnect = 127.0.0.1:{}\ncert = {}\nkey = {}\n",
                self.port,
                dir.join("server.pem").display(),
                dir.join("server.key").display()
            ),
        )?;
        let log = std::fs::File::create(dir.join("stunnel.log"))?;
        let child = Command::new("stunnel")
            .arg(dir.join("stunnel.conf"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("stunnel (apt: stunnel4; deploy/local/stack.sh packages installs it)")?;
        let ca = dir.join("ca.pem");
        self.tls = Some(Tls {
            child,
            port,
            ca: ca.clone(),
        });
        let url = format!("https://127.0.0.1:{port}");
        let pem = std::fs::read(&ca)?;
        let client = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&pem)?)
            .build()?;
        let probe = format!("{url}/");
        wait_for(
            "stunnel in front of the registry",
            Duration::from_secs(20),
            || {
                let (client, probe) = (client.clone(), probe.clone());
                async move { Ok(client.get(&probe).send().await.ok().map(|_| ())) }
            },
        )
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "{e}\n{}",
                std::fs::read_to_string(dir.join("stunnel.log")).unwrap_or_default()
            )
        })?;
        Ok((url, ca))
    }

    /// The registry's log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// The HTTPS port and CA when [`OwnRegistry::serve_tls`] ran.
    pub fn tls(&self) -> Option<(u16, &Path)> {
        self.tls.as_ref().map(|t| (t.port, t.ca.as_path()))
    }

    /// An authenticated request to the registry (for setting up a test's subjects).
    pub fn client_request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = reqwest::Client::new().request(method, format!("{}{path}", self.url()));
        match &self.credentials {
            Some((user, password)) => request.basic_auth(user, Some(password)),
            None => request,
        }
    }
}

impl Drop for OwnRegistry {
    fn drop(&mut self) {
        self.stop();
        if let Some(mut tls) = self.tls.take() {
            let _ = tls.child.kill();
            let _ = tls.child.wait();
        }
    }
}

/// Fails unless `text` contains every one of `needles`.
pub fn expect_all(text: &str, needles: &[&str]) -> anyhow::Result<()> {
    for needle in needles {
        if !text.contains(needle) {
            bail!("expected {needle:?} in:\n{text}");
        }
    }
    Ok(())
}
