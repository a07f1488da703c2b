//! ClickHouse for the tests: the shared server over its HTTP interface ([`ClickHouse`]), and a
//! server of the test's own ([`OwnClickHouse`]) for tests that stop it or serve it over TLS, and
//! one serving HTTPS only with the compose stack's users ([`SecureClickHouse`]).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::deployment::Deployment;
use crate::processes::{tail, terminate_server};
use crate::stack::free_port;

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

    /// [`ClickHouse::drop_database`] from synchronous code (a `Drop`, also while a failed test
    /// unwinds): on a thread of its own with its own runtime and HTTP client, since the test's
    /// runtime may be the one unwinding.
    pub fn drop_database_blocking(&self) {
        let mut clickhouse = self.clone();
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            // The test's client (with its CA) is bound to the test's runtime; this one only ever
            // drops the test's own throwaway database on a loopback server, so it does not
            // check the certificate of a test server with a throwaway CA.
            let client = reqwest::Client::builder()
                .danger_accept_invalid_certs(true)
                .timeout(std::time::Duration::from_secs(10))
                .build();
            if let Ok(client) = client {
                clickhouse.http = client;
                runtime.block_on(clickhouse.drop_database());
            }
        })
        .join();
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

/// A ClickHouse 18.16 of the test's own, HTTPS only, with the compose stack's users.
pub struct SecureClickHouse {
    pub server: OwnClickHouse,
    pub tls: TlsFiles,
    pub database: String,
    pub writer_password: String,
    pub reader_password: String,
    pub analyst_password: String,
    _dir: tempfile::TempDir,
}

impl SecureClickHouse {
    pub async fn start(database: &str) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let tls = TlsFiles::create(dir.path(), "clickhouse")?;
        let secret = || uuid::Uuid::new_v4().simple().to_string();
        let (writer_password, reader_password, analyst_password) = (secret(), secret(), secret());
        let users = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/clickhouse/users.d/hunter.xml"),
        )?;
        // Test only: log every query of Hunter's users, to see who asked what with which limits.
        let log_queries = "<?xml version=\"1.0\"?>\n<yandex><profiles>\
            <default><log_queries>1</log_queries></default>\
            <hunter_reader><log_queries>1</log_queries></hunter_reader>\
            </profiles></yandex>\n";
        let server = OwnClickHouse::start_with(OwnClickHouseOptions {
            tls: Some(tls.clone()),
            users_d: vec![
                ("hunter.xml".into(), users),
                ("zz-test-log-queries.xml".into(), log_queries.into()),
            ],
            env: vec![
                ("HUNTER_CLICKHOUSE_DATABASE".into(), database.into()),
                ("HUNTER_CLICKHOUSE_PASSWORD".into(), writer_password.clone()),
                (
                    "HUNTER_CLICKHOUSE_READER_PASSWORD".into(),
                    reader_password.clone(),
                ),
                (
                    "CLICKHOUSE_ANALYST_PASSWORD".into(),
                    analyst_password.clone(),
                ),
            ],
        })
        .await?;
        assert!(server.url().starts_with("https://"), "{}", server.url());
        Ok(SecureClickHouse {
            server,
            tls,
            database: database.to_owned(),
            writer_password,
            reader_password,
            analyst_password,
            _dir: dir,
        })
    }

    /// A client over HTTPS as `user`.
    pub fn client_as(&self, user: &str) -> anyhow::Result<ClickHouse> {
        let password = match user {
            "hunter_writer" => &self.writer_password,
            "hunter_api" => &self.reader_password,
            "analyst" => &self.analyst_password,
            other => anyhow::bail!("no such user {other}"),
        };
        Ok(self.server.client(&self.database)?.as_user(user, password))
    }

    /// The server's administrator (the test users.xml's `default`, loopback only).
    pub fn admin(&self) -> anyhow::Result<ClickHouse> {
        self.server.client(&self.database)
    }

    /// Points `deployment` at this server: the writer for migrate and the sink, the reader for
    /// the API, the CA trusted.
    pub fn configure(&self, deployment: &mut Deployment) -> anyhow::Result<()> {
        for (name, value) in [
            ("HUNTER_CLICKHOUSE_URL", self.server.url()),
            (
                "HUNTER_CLICKHOUSE_CA_LOCATION",
                self.tls.ca.display().to_string(),
            ),
            ("HUNTER_CLICKHOUSE_USER", "hunter_writer".into()),
            ("HUNTER_CLICKHOUSE_PASSWORD", self.writer_password.clone()),
            ("HUNTER_CLICKHOUSE_READER_USER", "hunter_api".into()),
            (
                "HUNTER_CLICKHOUSE_READER_PASSWORD",
                self.reader_password.clone(),
            ),
        ] {
            deployment.env.insert(name.into(), value);
        }
        deployment.clickhouse = self.client_as("hunter_writer")?;
        Ok(())
    }

    pub fn passwords(&self) -> [&str; 3] {
        [
            &self.writer_password,
            &self.reader_password,
            &self.analyst_password,
        ]
    }
}
