//! One isolated Hunter deployment on the local stack ([`Deployment`]): its own topic prefix,
//! ClickHouse database, simulator, token cache and API port, the roles it runs and the reads and
//! writes the tests make against it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use hunter_core::kafka::Topics;
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::broker::{OwnBroker, read_topic_with};
use crate::clickhouse::ClickHouse;
use crate::processes::{Process, base_env, run_hunter, tail, wait_for, wait_healthy};
use crate::stack::{Stack, free_port, hunter_bin, unique};

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
    /// Hunter's topics with this deployment's prefix.
    pub topics: Topics,
    pub stack: Stack,
    processes: Vec<Process>,
    /// Set by [`Deployment::teardown`]; otherwise (a failed test) `Drop` cleans up.
    torn_down: bool,
}

/// A test that fails (panics) before `teardown` still leaves nothing running and no database
/// behind: its processes are killed and its ClickHouse database dropped, unless
/// `HUNTER_TEST_KEEP=1` keeps the database for a look. Its topics stay: deleting one topic makes
/// tansu 0.6.0 forget every topic (docs/stack-notes.md), and each deployment's prefix is unique.
impl Drop for Deployment {
    fn drop(&mut self) {
        for process in &mut self.processes {
            process.kill9();
        }
        if !self.torn_down && std::env::var("HUNTER_TEST_KEEP").as_deref() != Ok("1") {
            self.clickhouse.drop_database_blocking();
        }
    }
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
            topics: Topics::with_prefix(&prefix),
            prefix,
            stack,
            processes: Vec::new(),
            torn_down: false,
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

    /// Waits until `GET /api/v1/leads?limit={limit}` counts `total` leads and returns that page;
    /// on a timeout the error carries the processes' logs.
    pub async fn wait_for_leads_in_api(
        &self,
        total: u64,
        limit: u32,
        timeout: Duration,
    ) -> anyhow::Result<serde_json::Value> {
        let path = format!("/api/v1/leads?limit={limit}");
        let waited = wait_for("every lead through the API", timeout, || async {
            let (status, body) = self.get(&path).await?;
            Ok((status == 200 && body["total"].as_u64() == Some(total)).then_some(body))
        })
        .await;
        waited.map_err(|error| anyhow::anyhow!("{error}\n{}", self.logs()))
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
        self.torn_down = true;
    }
}

impl Deployment {
    /// A topic of this deployment (prefix applied) that is not one of Hunter's: Hunter's own are
    /// in [`Deployment::topics`].
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
        let topic = self.topics.sync_runs.clone();
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
        let topic = self.topics.referrals.clone();
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
        let topic = self.topics.commands.clone();
        let command = Command {
            command_id: uuid::Uuid::new_v4().to_string(),
            kind: Command::SYNC_NOW.into(),
            tenant: tenant.map(str::to_owned),
            requested_at: Timestamp::now(),
            since: None,
            referral_id: None,
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

    /// `hunter_sink_failures_total` of `table` on the deployment's API port, over every class.
    pub async fn sink_failures(&self, table: &str) -> anyhow::Result<f64> {
        let label = format!("table=\"{table}\"");
        Ok(self
            .metrics()
            .await?
            .lines()
            .filter(|line| line.starts_with("hunter_sink_failures_total{") && line.contains(&label))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum())
    }

    /// Waits until `hunter_sink_consumption_paused{stream}` on the deployment's API port says
    /// `paused` (the sink's streams; `referrals` also where the processor writes that table).
    pub async fn wait_consumption_paused(
        &self,
        stream: &str,
        paused: bool,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let want = format!(
            r#"hunter_sink_consumption_paused{{stream="{stream}"}} {}"#,
            u8::from(paused)
        );
        wait_for(
            &format!("the {stream} stream paused = {paused}"),
            timeout,
            || async {
                let metrics = self.metrics().await?;
                Ok(metrics.lines().any(|line| line == want).then_some(()))
            },
        )
        .await
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
        let topic = self.topics.referrals.clone();
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
        let topic = self.topics.leads.clone();
        let codec = hunter_core::codec::Codec::<hunter_core::records::Lead>::new(&topic, None);
        let mut leads = Vec::new();
        for (payload, _) in read_topic_with(self.stack.client_config(), &topic, 0)? {
            leads.push(codec.decode(&payload).await?);
        }
        Ok(leads)
    }

    /// Records in `topic` now (high minus low watermarks); the full name, e.g.
    /// `deployment.topics.leads`.
    pub fn topic_count(&self, topic: &str) -> anyhow::Result<i64> {
        let consumer: BaseConsumer = self
            .stack
            .client_config()
            .set("group.id", unique("count"))
            .create()?;
        let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        let mut total = 0;
        for partition in metadata.topics()[0].partitions() {
            let (low, high) =
                consumer.fetch_watermarks(topic, partition.id(), Duration::from_secs(10))?;
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

impl Deployment {
    /// Publishes leads to the lead topic as the processor does (Avro, keyed by lead id).
    pub async fn produce_leads(&self, leads: &[hunter_core::records::Lead]) -> anyhow::Result<()> {
        let topic = self.topics.leads.clone();
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
    /// simulator's `expected` referrals is a live lead in ClickHouse and in the API's answers.
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
        // And through the API, which `all` runs: its read model takes up to a second after
        // ClickHouse (docs/api-read-model.md), so a test reading the API right now could see
        // fewer.
        self.wait_for_leads_in_api(expected, 1, Duration::from_secs(60))
            .await?;
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

impl Deployment {
    /// `hunter topics describe --json`, stdout parsed (the logs go to stderr).
    pub fn describe_topics(&self) -> anyhow::Result<serde_json::Value> {
        let output = std::process::Command::new(hunter_bin())
            .args(["topics", "describe", "--json"])
            .env_clear()
            .envs(base_env())
            .envs(&self.env)
            .output()?;
        anyhow::ensure!(
            output.status.success(),
            "hunter topics describe failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).context("topics describe --json is not JSON")
    }
}

/// One topic of a [`Deployment::describe_topics`] report.
pub fn described_topic<'a>(
    description: &'a serde_json::Value,
    name: &str,
) -> anyhow::Result<&'a serde_json::Value> {
    description["topics"]
        .as_array()
        .and_then(|topics| topics.iter().find(|t| t["name"] == name))
        .with_context(|| format!("{name} missing from {description}"))
}

/// (records held, the named group's lag and committed sum) on a topic.
pub fn group_view(topic: &serde_json::Value, group: &str) -> anyhow::Result<(i64, i64, i64)> {
    let records: i64 = topic["partitions"]
        .as_array()
        .context("partitions")?
        .iter()
        .map(|p| p["high"].as_i64().unwrap_or(0) - p["low"].as_i64().unwrap_or(0))
        .sum();
    let group = topic["groups"]
        .as_array()
        .and_then(|groups| groups.iter().find(|g| g["group"] == group))
        .with_context(|| format!("group {group} missing from {topic}"))?;
    let committed: i64 = group["committed"]
        .as_array()
        .context("committed")?
        .iter()
        .filter_map(|pair| pair[1].as_i64())
        .sum();
    Ok((records, group["lag"].as_i64().context("lag")?, committed))
}

impl Deployment {
    /// How many records of `topic` the consumer group `group` (its name without the prefix,
    /// e.g. `hunter-sink-leads`) has committed: the sum over partitions of the committed offset
    /// minus the low watermark. Read by a client of its own that never joins the group, as the
    /// roles' lag monitor does.
    pub fn committed_records(&self, group: &str, topic: &str) -> anyhow::Result<i64> {
        use rdkafka::{Offset, TopicPartitionList};
        let consumer: BaseConsumer = self
            .stack
            .client_config()
            .set("group.id", format!("{}{group}", self.prefix))
            .set("enable.auto.commit", "false")
            .create()?;
        let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        let mut partitions = TopicPartitionList::new();
        for partition in metadata.topics()[0].partitions() {
            partitions.add_partition(topic, partition.id());
        }
        let committed = consumer.committed_offsets(partitions, Duration::from_secs(10))?;
        let mut total = 0;
        for element in committed.elements() {
            if let Offset::Offset(offset) = element.offset() {
                let (low, _) = consumer.fetch_watermarks(
                    topic,
                    element.partition(),
                    Duration::from_secs(10),
                )?;
                total += offset - low;
            }
        }
        std::thread::spawn(move || drop(consumer));
        Ok(total)
    }
}
