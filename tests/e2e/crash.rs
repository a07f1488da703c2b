//! The crash suite: the whole pipeline (simulator → source → processor → sink → ClickHouse) as
//! separate processes on a real broker and ClickHouse, with referrals flowing and changing
//! while the roles are killed with SIGKILL at seeded random points and restarted, and (second
//! test) while the broker and ClickHouse themselves are stopped, killed and restarted. Then
//! ClickHouse (`leads FINAL`, `lead_history`) and the lead topic are compared with the
//! simulator's truth: 0 lost, 0 duplicate live leads or lead versions, every latest status right.
//!
//! The size is small by default so the suite runs in `tests/run.sh`; the flags make it large:
//!
//! ```sh
//! HUNTER_CRASH_REFERRALS=100000 HUNTER_CRASH_KILLS=20 HUNTER_CRASH_SEED=7 \
//!   cargo test -p hunter-e2e --test e2e -- crash:: --nocapture
//! ```
//!
//! `HUNTER_CRASH_SEED` picks the kill schedule (which role, when, how long it stays down) and the
//! simulator's data changes; a failing seed is printed and reproduces the same schedule.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use hunter_e2e::{Deployment, OwnBroker, OwnClickHouse, free_port, generated_referrals};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};

const ROLES: [&str; 3] = ["source", "process", "sink"];

fn setting<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(text) => text
            .parse()
            .unwrap_or_else(|_| panic!("{name}={text:?} is not a valid value")),
        Err(_) => default,
    }
}

/// One kill: which role, after how long since the previous one, how long it stays down.
#[derive(Debug, Clone)]
struct Kill {
    role: &'static str,
    after: Duration,
    down: Duration,
}

/// The seeded schedule: every role is killed at least once (the first three kills are a
/// shuffled round of all three), the rest pick a role at random; gaps of 0.3–4 s, and each
/// killed role stays down 0–2 s.
fn schedule(kills: usize, rng: &mut StdRng) -> Vec<Kill> {
    let mut first: Vec<&'static str> = ROLES.to_vec();
    for i in (1..first.len()).rev() {
        first.swap(i, rng.random_range(0..=i));
    }
    (0..kills)
        .map(|i| Kill {
            role: first
                .get(i)
                .copied()
                .unwrap_or_else(|| ROLES[rng.random_range(0..ROLES.len())]),
            after: Duration::from_millis(rng.random_range(300..4_000)),
            down: Duration::from_millis(rng.random_range(0..2_000)),
        })
        .collect()
}

/// The role exits that answer an injected broker fault by design (role, what its error line
/// says): a restarted tansu may refuse a producer forever ("Unknown broker error", see
/// `docs/stack-notes.md`), so the source stops after polls in a row failed on Kafka (or at once
/// on a fatal producer error) and the processor on a produce that failed after librdkafka's own
/// retries, for their supervisor to start them with fresh Kafka clients; neither moved its
/// cursor or offsets, so nothing is lost.
const ANSWERS_TO_BROKER_FAULTS: [(&str, &str); 4] = [
    ("source", "polls in a row failed publishing to kafka"),
    ("source", "the kafka producer failed fatally"),
    ("process", "produce to "),
    ("process", "dead-letter produce failed"),
];

/// The running process index of each role.
struct Roles {
    index: HashMap<&'static str, usize>,
}

impl Roles {
    async fn start(deployment: &mut Deployment) -> anyhow::Result<Self> {
        let mut index = HashMap::new();
        for role in ROLES {
            index.insert(role, deployment.start_role_on(role, free_port()).await?);
        }
        Ok(Roles { index })
    }

    fn kill9(&self, deployment: &mut Deployment, role: &'static str) {
        deployment.process(self.index[role]).kill9();
    }

    async fn restart(
        &mut self,
        deployment: &mut Deployment,
        role: &'static str,
    ) -> anyhow::Result<()> {
        let index = deployment.start_role_on(role, free_port()).await?;
        self.index.insert(role, index);
        Ok(())
    }

    /// What a supervisor (systemd, Kubernetes' restart policy) does: starts again every role
    /// whose process exited, and returns why each had stopped (the last error line of its log).
    ///
    /// The test never kills a role behind the supervisor's back (its own kill -9s restart the
    /// role at once), so every exit seen here is the role's own decision, and only the
    /// documented stops after a restarted broker keeps refusing a producer
    /// ([`ANSWERS_TO_BROKER_FAULTS`]) answer the faults injected, and only once the broker was
    /// faulted (`broker_faulted`). Any other exit (a panic, an error, a signal the test did not
    /// send, the sink giving up on ClickHouse) fails with the role, its exit status and its
    /// log's tail.
    async fn revive(
        &mut self,
        deployment: &mut Deployment,
        broker_faulted: bool,
    ) -> anyhow::Result<Vec<String>> {
        let mut reasons = Vec::new();
        for role in ROLES {
            let process = deployment.process(self.index[role]);
            let Some(status) = process.exit_status() else {
                continue;
            };
            let output = process.output();
            let last = output
                .lines()
                .rev()
                .find(|line| line.starts_with("error:"))
                .unwrap_or("(no error line)")
                .to_owned();
            let answers_a_fault = broker_faulted
                && ANSWERS_TO_BROKER_FAULTS
                    .iter()
                    .any(|(by, reason)| *by == role && last.contains(reason));
            if !answers_a_fault {
                // The tail without librdkafka's reconnection warnings, which fill it otherwise.
                let log: Vec<_> = output
                    .lines()
                    .filter(|line| !line.contains("librdkafka retries by itself"))
                    .collect();
                anyhow::bail!(
                    "the {role} process exited on its own ({status}), not because of a fault \
                     the test injected: {last}\n----- {role} log, last 40 lines -----\n{}",
                    hunter_e2e::tail(&log.join("\n"), 40)
                );
            }
            reasons.push(format!("{role} ({status}): {last}"));
            self.restart(deployment, role).await?;
        }
        Ok(reasons)
    }

    /// Fails when a role died on its own (not killed by the test).
    fn check_alive(&self, deployment: &mut Deployment) -> anyhow::Result<()> {
        for (role, index) in &self.index {
            if !deployment.process(*index).is_running() {
                anyhow::bail!(
                    "the {role} process exited on its own\n{}",
                    deployment.logs()
                );
            }
        }
        Ok(())
    }
}

/// What production runs the roles and the broker under: a supervisor that starts again a role
/// whose process exited (systemd, Kubernetes' restart policy; compose's `restart:`), and a
/// liveness probe that restarts a broker which stopped answering metadata requests for 10 s
/// (tansu 0.6.0 was seen to wedge itself after a restart under load: a panic in its storage
/// service, after which every request fails). Every intervention is recorded with its reason.
struct Supervisor<'a> {
    broker: &'a mut OwnBroker,
    restarts: Vec<String>,
    broker_silent_since: Option<Instant>,
    /// Whether the test has stopped or killed the broker yet.
    broker_faulted: bool,
}

impl Supervisor<'_> {
    async fn tick(&mut self, deployment: &mut Deployment, roles: &mut Roles) -> anyhow::Result<()> {
        self.restarts
            .extend(roles.revive(deployment, self.broker_faulted).await?);
        if !self.broker.is_started() || self.broker.answers().await {
            self.broker_silent_since = None;
            return Ok(());
        }
        let since = *self.broker_silent_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= Duration::from_secs(10) {
            let log = std::fs::read_to_string(self.broker.log()).unwrap_or_default();
            let why = log
                .lines()
                .find(|line| line.contains("panicked"))
                .unwrap_or("no answer to metadata requests");
            self.restarts
                .push(format!("broker (liveness probe, silent 10 s): {why}"));
            self.broker.kill9()?;
            self.broker.start_again().await?;
            self.broker_silent_since = None;
        }
        Ok(())
    }

    /// Supervises for `seconds`.
    async fn run(
        &mut self,
        deployment: &mut Deployment,
        roles: &mut Roles,
        seconds: u64,
    ) -> anyhow::Result<()> {
        let until = Instant::now() + Duration::from_secs(seconds);
        while Instant::now() < until {
            self.tick(deployment, roles).await?;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Ok(())
    }
}

/// How far each stage got: records on the referral and lead topics, rows in `leads`.
async fn progress(deployment: &Deployment) -> String {
    let referrals = deployment.topic_count(&deployment.topics.referrals);
    let leads = deployment.topic_count(&deployment.topics.leads);
    let rows = deployment
        .clickhouse
        .rows("SELECT toString(count()) AS n FROM leads")
        .await
        .map(|rows| rows[0]["n"].as_str().unwrap_or("?").to_owned());
    let show = |r: anyhow::Result<String>| r.unwrap_or_else(|e| format!("? ({e})"));
    format!(
        "referral records {}, lead records {}, lead rows {}",
        show(referrals.map(|n| n.to_string())),
        show(leads.map(|n| n.to_string())),
        show(rows)
    )
}

/// The warnings and errors of the role processes (the simulator's request log is left out).
fn role_problems(deployment: &Deployment) -> String {
    deployment
        .full_logs()
        .lines()
        .filter(|line| line.contains("WARN") || line.contains("ERROR"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The simulator's current referrals: id → (eTag, status, updatedDateTime).
async fn truth(
    deployment: &Deployment,
) -> anyhow::Result<HashMap<String, (String, String, String)>> {
    let referrals = deployment.simulator_get("/_simulator/referrals").await?;
    let text = |r: &serde_json::Value, k: &str| r[k].as_str().unwrap_or_default().to_owned();
    Ok(referrals
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|r| {
            (
                text(r, "id"),
                (
                    text(r, "eTag"),
                    text(r, "status"),
                    text(r, "updatedDateTime"),
                ),
            )
        })
        .collect())
}

/// The live leads in ClickHouse: referral id → (etag, status), and how many live rows there
/// are in all (more rows than ids would be a duplicate live lead).
async fn live_leads(
    deployment: &Deployment,
) -> anyhow::Result<(HashMap<String, (String, String)>, usize)> {
    let rows = deployment
        .clickhouse
        .rows("SELECT referral_id, ifNull(etag, '') AS etag, ifNull(status, '') AS status FROM leads FINAL")
        .await?;
    let count = rows.len();
    let text = |r: &serde_json::Value, k: &str| r[k].as_str().unwrap_or_default().to_owned();
    let leads = rows
        .iter()
        .map(|r| (text(r, "referral_id"), (text(r, "etag"), text(r, "status"))))
        .collect();
    Ok((leads, count))
}

/// What differs between ClickHouse's live leads and the truth (empty when they agree).
fn differences(
    truth: &HashMap<String, (String, String, String)>,
    live: &HashMap<String, (String, String)>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (id, (etag, status, updated)) in truth {
        match live.get(id) {
            None => out.push(format!("{id}: lost (latest {etag} {status} {updated})")),
            Some((live_etag, live_status)) if live_etag != etag || live_status != status => out
                .push(format!(
                    "{id}: live {live_etag} {live_status}, truth {etag} {status} {updated}"
                )),
            Some(_) => {}
        }
    }
    out.extend(
        live.keys()
            .filter(|id| !truth.contains_key(*id))
            .map(|id| format!("{id}: a live lead the simulator never had")),
    );
    out.sort();
    out
}

/// The deployment every test of this file runs: the simulator moves referrals on while the
/// source polls every second in pages of 50, and the three roles run as separate processes.
async fn start_pipeline(
    referrals: usize,
    seed: u64,
    mutate: f64,
    servers: Option<(&OwnBroker, &OwnClickHouse)>,
) -> anyhow::Result<(Deployment, Roles)> {
    let started = Instant::now();
    let generated = generated_referrals(referrals, seed)?;
    let mut deployment = Deployment::new(&generated)?;
    drop(generated);
    if let Some((broker, clickhouse)) = servers {
        deployment.use_broker(&broker.brokers());
        deployment.use_clickhouse(&clickhouse.url());
    }
    let seed_text = seed.to_string();
    let mutate_text = mutate.to_string();
    deployment
        .start_simulator(&[
            "--page-size",
            "50",
            "--seed",
            &seed_text,
            "--mutate",
            &mutate_text,
            "--mutate-burst",
            "4",
        ])
        .await?;
    deployment.login_and_migrate()?;
    for (name, value) in [
        ("HUNTER_SYNC_INTERVAL_SECS", "1"),
        ("HUNTER_SINK_BATCH_ROWS", "500"),
    ] {
        deployment.env.insert(name.into(), value.into());
    }
    let roles = Roles::start(&mut deployment).await?;
    eprintln!(
        "pipeline up with {referrals} referrals after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok((deployment, roles))
}

/// Stops the data moving, asks for one more poll and waits until ClickHouse holds exactly the
/// simulator's truth; then checks the lead topic and the dead-letter queue. Returns a summary.
async fn converge_and_check(
    deployment: &mut Deployment,
    roles: &mut Roles,
    supervised: Option<&mut Supervisor<'_>>,
    timeout: Duration,
) -> anyhow::Result<String> {
    deployment
        .simulator_post("/_simulator/mutate?rate=0")
        .await?;
    let truth = truth(deployment).await?;
    // The source polls every second anyway; a trigger only saves the wait (and may time out
    // on a broker that has just been restarted with a backlog).
    if let Err(error) = deployment.request_sync(None).await {
        eprintln!("sync trigger not sent ({error}); waiting for the scheduled poll");
    }
    let converged = Instant::now();
    let mut supervised = supervised;
    loop {
        match &mut supervised {
            Some(supervisor) => supervisor.tick(deployment, roles).await?,
            None => roles.check_alive(deployment)?,
        }
        let (live, _) = live_leads(deployment).await?;
        let diff = differences(&truth, &live);
        if diff.is_empty() {
            break;
        }
        if converged.elapsed() > timeout {
            anyhow::bail!(
                "ClickHouse's live leads still differ from the simulator's truth after {timeout:?}: \
                 {} differ, e.g. {:?}\n{}\n{}",
                diff.len(),
                &diff[..diff.len().min(3)],
                progress(deployment).await,
                role_problems(deployment)
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let converge_secs = converged.elapsed().as_secs_f64();

    // 0 duplicate live leads: one row per lead under FINAL, and every lead id once.
    let (live, rows) = live_leads(deployment).await?;
    assert_eq!(rows, live.len(), "a lead has two live rows");
    assert_eq!(live.len(), truth.len());

    // The lead topic, as downstream subscribers read it: no lead version twice, and the last
    // lead of every id is the truth's latest version.
    let leads = deployment.leads().await?;
    let mut seen = HashSet::new();
    let doubled: Vec<_> = leads
        .iter()
        .filter(|l| !seen.insert((l.lead_id.clone(), l.version)))
        .map(|l| (l.lead_id.clone(), l.version))
        .collect();
    assert!(
        doubled.is_empty(),
        "{} lead versions published twice on the lead topic, e.g. {:?}",
        doubled.len(),
        &doubled[..doubled.len().min(5)]
    );
    let mut last = HashMap::new();
    for lead in &leads {
        last.insert(
            lead.referral_id.clone(),
            (
                lead.etag.clone().unwrap_or_default(),
                lead.status.clone().unwrap_or_default(),
            ),
        );
    }
    let topic_diff = differences(&truth, &last);
    assert!(
        topic_diff.is_empty(),
        "the lead topic's last lead per id differs from the truth for {}: {:?}",
        topic_diff.len(),
        &topic_diff[..topic_diff.len().min(5)]
    );

    // Every lead version on the topic is a history row (the topic is compacted, so it may
    // hold fewer versions than were produced; history keeps them all, once each under FINAL).
    let history: HashSet<(String, i64)> = deployment
        .clickhouse
        .rows("SELECT lead_id, toString(version) AS version FROM lead_history FINAL")
        .await?
        .iter()
        .map(|r| {
            (
                r["lead_id"].as_str().unwrap_or_default().to_owned(),
                r["version"]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(-1),
            )
        })
        .collect();
    let unrecorded: Vec<_> = leads
        .iter()
        .filter(|l| !history.contains(&(l.lead_id.clone(), l.version)))
        .map(|l| (l.lead_id.clone(), l.version))
        .collect();
    assert!(
        unrecorded.is_empty(),
        "{} lead versions on the topic have no lead_history row, e.g. {:?}",
        unrecorded.len(),
        &unrecorded[..unrecorded.len().min(5)]
    );

    // Nothing was dead-lettered: a crash must not turn good records into bad ones.
    let dlq = deployment.topic_count(&deployment.topics.dlq)?;
    assert_eq!(dlq, 0, "records went to the dead-letter topic");

    let referral_records = deployment.topic_count(&deployment.topics.referrals)?;
    let rejoins = deployment
        .full_logs()
        .lines()
        .filter(|line| line.contains("rejoining the group"))
        .count();
    let statuses: HashSet<_> = truth
        .values()
        .map(|(_, status, _)| status.as_str())
        .collect();
    Ok(format!(
        "{} referrals ({} statuses), {referral_records} referral records, {} lead records \
         on the compacted topic, {} lead versions in lead_history, {rejoins} group rejoins, \
         converged {converge_secs:.1} s after the data stopped moving",
        truth.len(),
        statuses.len(),
        leads.len(),
        history.len()
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_kill_9_of_every_role_loses_nothing_and_doubles_nothing() -> anyhow::Result<()> {
    let referrals: usize = setting("HUNTER_CRASH_REFERRALS", 3_000);
    let kills: usize = setting("HUNTER_CRASH_KILLS", 20);
    let seed: u64 = setting("HUNTER_CRASH_SEED", 8);
    // Mutations rewrite the simulator's whole file; keep them rare on large runs.
    let mutate: f64 = setting(
        "HUNTER_CRASH_MUTATE",
        if referrals > 20_000 { 0.02 } else { 0.3 },
    );
    let mut rng = StdRng::seed_from_u64(seed);
    let plan = schedule(kills, &mut rng);
    eprintln!("crash suite: seed {seed}, {referrals} referrals, {kills} kills: {plan:?}");

    // A broker of the test's own when asked (HUNTER_CRASH_OWN_BROKER=1, e.g. to read its log
    // with HUNTER_TEST_TANSU_LOG=debug); the shared one otherwise.
    let own = if setting("HUNTER_CRASH_OWN_BROKER", 0u8) == 1 {
        let broker = OwnBroker::start().await?;
        let clickhouse = OwnClickHouse::start().await?;
        eprintln!(
            "own broker {}, log {}",
            broker.brokers(),
            broker.log().display()
        );
        Some((broker, clickhouse))
    } else {
        None
    };
    let servers = own.as_ref().map(|(b, c)| (b, c));
    let (mut deployment, mut roles) = start_pipeline(referrals, seed, mutate, servers).await?;
    let started = Instant::now();
    let mut killed: HashMap<&str, usize> = HashMap::new();
    for (n, kill) in plan.iter().enumerate() {
        tokio::time::sleep(kill.after).await;
        roles.check_alive(&mut deployment)?;
        let live = progress(&deployment).await;
        roles.kill9(&mut deployment, kill.role);
        *killed.entry(kill.role).or_default() += 1;
        eprintln!(
            "kill {:>2} at {:>5.1} s: {} ({live}), down {} ms",
            n + 1,
            started.elapsed().as_secs_f64(),
            kill.role,
            kill.down.as_millis()
        );
        tokio::time::sleep(kill.down).await;
        roles.restart(&mut deployment, kill.role).await?;
    }
    let stats = deployment.simulator_get("/_simulator/stats").await?;
    let moved = stats["mutations"]["referrals"].as_u64().unwrap_or(0);
    let timeout = Duration::from_secs(240 + referrals as u64 / 200);
    let summary = converge_and_check(&mut deployment, &mut roles, None, timeout).await?;
    eprintln!(
        "crash suite (seed {seed}): {kills} kills {killed:?}, {moved} referral moves; {summary}"
    );
    assert!(
        referrals < 1_000 || moved > 0 || mutate == 0.0,
        "the simulator moved nothing on: {stats}"
    );
    deployment.teardown().await;
    Ok(())
}

/// The server-fault run: the broker and ClickHouse stopped, killed and restarted under a
/// flowing pipeline, then convergence on the simulator's truth. At its default size it is part of
/// `./tests/run.sh`; at 100,000 referrals it is the benchmark script's long suite
/// (`tests/bench.sh --only server_faults`), which renders its `RESULT` line (printed whether the
/// run passed or not, with what the broker did and what the supervisor did about it) into
/// BENCHMARKS.md.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_and_clickhouse_stopped_killed_and_restarted_mid_run_lose_nothing()
-> anyhow::Result<()> {
    use futures::FutureExt as _;

    let referrals: usize = setting("HUNTER_CRASH_REFERRALS", 3_000);
    let seed: u64 = setting("HUNTER_CRASH_SEED", 8);
    let mutate: f64 = setting(
        "HUNTER_CRASH_MUTATE",
        if referrals > 20_000 { 0.02 } else { 0.3 },
    );
    // Servers of the test's own: the shared ones stay up for the other tests. Under the bench
    // script the broker's storage goes where the benches keep theirs (cleaned at exit).
    let mut broker = if std::env::var_os("HUNTER_BENCH_DIR").is_some() {
        hunter_e2e::bench::broker().await?
    } else {
        OwnBroker::start().await?
    };
    let mut clickhouse = OwnClickHouse::start().await?;
    let started = Instant::now();
    let (mut deployment, mut roles) =
        start_pipeline(referrals, seed, mutate, Some((&broker, &clickhouse))).await?;
    let broker_log = broker.log();
    // The roles and the broker run under a supervisor, as in production (see [`Supervisor`]).
    // Nothing may be lost either way.
    let mut supervisor = Supervisor {
        broker: &mut broker,
        restarts: Vec::new(),
        broker_silent_since: None,
        broker_faulted: false,
    };
    let mut timeline = Vec::new();
    let outcome = std::panic::AssertUnwindSafe(server_faults(
        &mut deployment,
        &mut roles,
        &mut supervisor,
        &mut clickhouse,
        referrals,
        &mut timeline,
    ))
    .catch_unwind()
    .await;
    let outcome = match outcome {
        Ok(result) => result,
        Err(panic) => Err(anyhow::anyhow!(
            "{}",
            panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("a panic")
        )),
    };
    let restarts = std::mem::take(&mut supervisor.restarts);
    eprintln!(
        "server faults: {} supervisor restarts {restarts:#?}",
        restarts.len()
    );
    // Each panic as "where: message" (the line after "panicked at" holds the message), without
    // the thread's name and id, which differ between otherwise identical panics.
    let log = std::fs::read_to_string(&broker_log).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    let tansu_panics = lines
        .iter()
        .enumerate()
        .filter_map(|(at, line)| {
            let place = line.split_once("panicked at ")?.1.trim_end_matches(':');
            let place = place.rsplit("/src/").next().unwrap_or(place);
            let message = lines.get(at + 1).copied().unwrap_or_default().trim();
            Some(format!("panicked at {place}: {message}"))
        })
        .collect::<Vec<_>>();
    let report = fault_report(
        referrals,
        seed,
        mutate,
        started.elapsed(),
        &outcome,
        &timeline,
        &restarts,
        &tansu_panics,
    );
    report.print();
    deployment.teardown().await;
    drop(broker);
    drop(clickhouse);
    let (summary, _) = outcome?;
    eprintln!("server faults: {summary}");
    Ok(())
}

/// What passing needs of the server-fault run once the pipeline runs: the fault schedule under
/// the supervisor, then convergence. Returns the convergence summary and its time.
async fn server_faults(
    d: &mut Deployment,
    r: &mut Roles,
    supervisor: &mut Supervisor<'_>,
    clickhouse: &mut OwnClickHouse,
    referrals: usize,
    timeline: &mut Vec<String>,
) -> anyhow::Result<(String, f64)> {
    let started = Instant::now();
    let mut at = |what: &str| {
        let line = format!("{:.1} s: {what}", started.elapsed().as_secs_f64());
        eprintln!("{line}");
        timeline.push(line);
    };

    supervisor.run(d, r, 3).await?;
    at("broker: SIGTERM, down 8 s");
    supervisor.broker_faulted = true;
    supervisor.broker.stop().await?;
    supervisor.run(d, r, 8).await?;
    supervisor.broker.start_again().await?;
    at("broker: back");

    supervisor.run(d, r, 4).await?;
    at("clickhouse: SIGTERM, down 10 s");
    clickhouse.stop().await?;
    supervisor.run(d, r, 10).await?;
    clickhouse.start_again().await?;
    at("clickhouse: back");

    supervisor.run(d, r, 4).await?;
    at("broker: SIGKILL, down 3 s");
    supervisor.broker_faulted = true;
    supervisor.broker.kill9()?;
    supervisor.run(d, r, 3).await?;
    supervisor.broker.start_again().await?;
    at("broker: back");

    supervisor.run(d, r, 4).await?;
    at("broker and clickhouse: both SIGTERM, down 6 s");
    supervisor.broker_faulted = true;
    supervisor.broker.stop().await?;
    clickhouse.stop().await?;
    supervisor.run(d, r, 6).await?;
    supervisor.broker.start_again().await?;
    clickhouse.start_again().await?;
    at("both back; converging");
    at(&progress(d).await);

    let timeout = Duration::from_secs(240 + referrals as u64 / 200);
    let converging = Instant::now();
    let summary = converge_and_check(d, r, Some(supervisor), timeout).await?;
    let secs = converging.elapsed().as_secs_f64();
    at("converged and checked");
    Ok((summary, secs))
}

/// The server-fault run's `RESULT` (BENCHMARKS.md's `server_faults` section): passed or how it
/// failed, how long it took, what the broker did (its panics) and what the supervisor did (each
/// restart with its reason), and the fault timeline.
#[allow(clippy::too_many_arguments)]
fn fault_report(
    referrals: usize,
    seed: u64,
    mutate: f64,
    took: Duration,
    outcome: &anyhow::Result<(String, f64)>,
    timeline: &[String],
    restarts: &[String],
    tansu_panics: &[String],
) -> hunter_e2e::bench::Report {
    use hunter_e2e::bench::{Report, RowKind};
    let mut report = Report::new("server_faults", referrals, "referrals");
    let passed = outcome.is_ok();
    report.row(
        "run passed (1) or failed (0)",
        "",
        RowKind::Hunter,
        &[if passed { 1.0 } else { 0.0 }],
    );
    report.row(
        "whole run: pipeline start, faults, convergence, checks",
        "s",
        RowKind::Info,
        &[took.as_secs_f64()],
    );
    if let Ok((_, converge)) = outcome {
        report.row(
            "from the last fault's end to ClickHouse equal to the truth (most referrals still to flow then)",
            "s",
            RowKind::Info,
            &[*converge],
        );
    }
    let by = |what: &str| restarts.iter().filter(|r| r.starts_with(what)).count() as f64;
    report.row(
        "broker restarted by the liveness probe",
        "times",
        RowKind::Info,
        &[by("broker")],
    );
    for role in ROLES {
        report.row(
            &format!("{role} restarted by the supervisor"),
            "times",
            RowKind::Info,
            &[by(role)],
        );
    }
    report.row(
        "tansu panics in its log",
        "panics",
        RowKind::Info,
        &[tansu_panics.len() as f64],
    );
    report.note(&format!(
        "Seed {seed}, {:.0} % of the referrals changed while the faults ran.",
        mutate * 100.0
    ));
    match outcome {
        Ok((summary, _)) => report.note(&format!("Passed: {summary}.")),
        Err(error) => {
            let text = format!("{error:#}");
            let first: String = text
                .lines()
                .next()
                .unwrap_or_default()
                .chars()
                .take(400)
                .collect();
            report.note(&format!("**Failed**: {first}"));
        }
    }
    report.note(&format!("Faults: {}.", timeline.join("; ")));
    for restart in restarts {
        report.note(&format!("Supervisor: {}", restart.replace('\n', " ")));
    }
    let mut distinct: Vec<(&String, usize)> = Vec::new();
    for panic in tansu_panics {
        match distinct.iter_mut().find(|(seen, _)| *seen == panic) {
            Some((_, times)) => *times += 1,
            None => distinct.push((panic, 1)),
        }
    }
    for (panic, times) in distinct.iter().take(5) {
        let text: String = panic.chars().take(300).collect();
        report.note(&format!("tansu ({times} times): {text}"));
    }
    report
}
