//! The security review's findings (issue 13), each proven on the real binary and stack:
//!
//! - no shipped example token works; placeholders and weak tokens stop Hunter at start with the
//!   setting named and how to make a good one;
//! - `.env`, token caches, `.local/` and `target/` are ignored by git and kept out of the Docker
//!   build context; the token cache defaults to a private per-user state directory, and an old
//!   cache in the working directory keeps working with a warning;
//! - a manual sync while the source is disabled is a 409 `sync_disabled`; triggers join the one
//!   already queued; a trigger older than the sync interval is recorded `expired`, not run;
//! - the web page and the API send a CSP without `unsafe-inline`, `nosniff` and
//!   `Referrer-Policy` (the browser side is in `web.rs`);
//! - `/readyz` names the failing component with a short class, never the error text; `Bearer` is
//!   matched in any case; wrong tokens are throttled per client address (429 + Retry-After);
//! - plain-http sign-in URLs are refused off loopback unless `HUNTER_ALLOW_INSECURE_HTTP=true`;
//!   `hunter doctor` prints no password embedded in a URL.

use std::collections::HashMap;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use hunter_core::security::check_token;
use hunter_e2e::{
    Deployment, OwnBroker, OwnClickHouse, free_port, generated_referrals, hunter_bin, run_hunter,
    wait_for,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn env_of(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A token as `openssl rand -hex 32` makes one.
fn good_token() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

// --- 2. placeholder tokens -------------------------------------------------------------------

#[test]
fn no_shipped_example_token_works_and_weak_tokens_stop_hunter() -> anyhow::Result<()> {
    // The examples ship no working token.
    let example = std::fs::read_to_string(repo().join(".env.example"))?;
    for setting in ["HUNTER_API_TOKEN", "HUNTER_API_READ_TOKEN"] {
        let line = example
            .lines()
            .find(|line| line.starts_with(&format!("{setting}=")))
            .unwrap_or_else(|| panic!(".env.example lacks {setting}"));
        assert_eq!(line, format!("{setting}="), ".env.example ships a token");
    }
    assert!(example.contains("openssl rand -hex 32"));
    let kustomization = std::fs::read_to_string(repo().join("deploy/k8s/kustomization.yaml"))?;
    assert!(
        !kustomization
            .lines()
            .any(|line| line.trim() == "- secret.example.yaml"),
        "kustomization.yaml applies the example Secret"
    );

    // The values the examples used to ship, and weak ones, stop every command at start.
    let refused = [
        ("HUNTER_API_TOKEN", "change-me-to-a-long-random-token"),
        ("HUNTER_API_TOKEN", "replace-with-a-long-random-token"),
        (
            "HUNTER_API_READ_TOKEN",
            "replace-with-another-long-random-token",
        ),
        (
            "HUNTER_API_TOKEN",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        ),
        ("HUNTER_API_TOKEN", "0123456789abcdef"),
        ("HUNTER_API_READ_TOKEN", "0123456789abcdef0123456789abcdef"),
    ];
    let admin = good_token();
    for (setting, value) in refused {
        let mut env = env_of(&[
            ("HUNTER_PARTNER_CENTER_ENABLED", "false"),
            ("HUNTER_API_LISTEN", "127.0.0.1:1"),
        ]);
        env.insert("HUNTER_API_TOKEN".into(), admin.clone());
        env.insert(setting.into(), value.into());
        let (ok, output) = run_hunter(&["run", "api"], &env, Duration::from_secs(30))?;
        assert!(!ok, "{setting}={value} was accepted:\n{output}");
        assert!(output.contains(setting), "{output}");
        assert!(output.contains("openssl rand -hex 32"), "{output}");
        assert!(
            !output.contains(value),
            "the refused token is printed:\n{output}"
        );
    }

    // What the demo and the tests generate passes the same rule.
    let demo = std::fs::read_to_string(repo().join("deploy/local/demo.sh"))?;
    let generator = "head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n'";
    assert!(
        demo.contains(generator),
        "demo.sh makes its token differently"
    );
    for _ in 0..20 {
        let output = Command::new("bash").args(["-c", generator]).output()?;
        let token = String::from_utf8(output.stdout)?;
        assert_eq!(check_token(&token), Ok(()), "demo token {token}");
        let test_token = uuid::Uuid::new_v4().simple().to_string();
        assert_eq!(check_token(&test_token), Ok(()), "test token {test_token}");
    }
    Ok(())
}

// --- 3. secrets out of the tree and the image --------------------------------------------------

/// Paths that must never be committed nor sent to `docker build`.
const SECRET_PATHS: &[&str] = &[
    ".env",
    ".env.production",
    "deploy/.env",
    "hunter-token-cache.json",
    "hunter-token-cache-fabrikam.json",
    "token-cache.json",
    "deploy/local/token-cache-contoso.json",
    "pipeline/hunter-token-cache.json",
    ".local/demo/api-token",
    ".local/demo/token-cache.json",
    "target/debug/hunter",
];

#[test]
fn secrets_are_ignored_by_git_and_kept_out_of_the_docker_context() -> anyhow::Result<()> {
    for path in SECRET_PATHS {
        let output = Command::new("git")
            .args(["check-ignore", "--no-index", "-q", path])
            .current_dir(repo())
            .output()?;
        assert!(
            output.status.success(),
            "git does not ignore {path} (.gitignore)"
        );
    }
    let output = Command::new("git")
        .args(["check-ignore", "--no-index", "-q", ".env.example"])
        .current_dir(repo())
        .output()?;
    assert!(!output.status.success(), ".env.example must stay tracked");

    let dockerignore = DockerIgnore::parse(&std::fs::read_to_string(repo().join(".dockerignore"))?);
    for path in SECRET_PATHS {
        assert!(
            dockerignore.excludes(path),
            "{path} would be sent to docker build (.dockerignore)"
        );
    }
    for kept in [
        "Cargo.toml",
        "pipeline/src/main.rs",
        "schemas/referral.avsc",
        "deploy/Dockerfile",
    ] {
        assert!(
            !dockerignore.excludes(kept),
            "{kept} is needed by the image build"
        );
    }
    Ok(())
}

/// `.dockerignore` read as Docker reads it: patterns relative to the context root, `*` and `?`
/// within one path segment, `**` any number of segments, `!` re-includes, the last matching
/// pattern wins, and a path is excluded when it or any directory above it is.
struct DockerIgnore {
    rules: Vec<(bool, Vec<String>)>,
}

impl DockerIgnore {
    fn parse(text: &str) -> Self {
        let rules = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .map(|line| {
                let (exclude, pattern) = match line.strip_prefix('!') {
                    Some(rest) => (false, rest),
                    None => (true, line),
                };
                let segments = pattern
                    .trim_start_matches("./")
                    .trim_matches('/')
                    .split('/')
                    .map(str::to_owned)
                    .collect();
                (exclude, segments)
            })
            .collect();
        DockerIgnore { rules }
    }

    fn excludes(&self, path: &str) -> bool {
        let segments: Vec<&str> = path.split('/').collect();
        // The path itself or any of its parent directories.
        (1..=segments.len()).any(|n| self.matches(&segments[..n]))
    }

    fn matches(&self, path: &[&str]) -> bool {
        let mut excluded = false;
        for (exclude, pattern) in &self.rules {
            if segments_match(pattern, path) {
                excluded = *exclude;
            }
        }
        excluded
    }
}

fn segments_match(pattern: &[String], path: &[&str]) -> bool {
    match (pattern.first(), path.first()) {
        (None, None) => true,
        (Some(first), _) if first == "**" => {
            (0..=path.len()).any(|skip| segments_match(&pattern[1..], &path[skip..]))
        }
        (Some(first), Some(segment)) => {
            glob(first.as_bytes(), segment.as_bytes()) && segments_match(&pattern[1..], &path[1..])
        }
        _ => false,
    }
}

/// `*` and `?` within one segment.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match (pattern.first(), text.first()) {
        (None, None) => true,
        (Some(b'*'), _) => (0..=text.len()).any(|skip| glob(&pattern[1..], &text[skip..])),
        (Some(b'?'), Some(_)) => glob(&pattern[1..], &text[1..]),
        (Some(p), Some(t)) if p == t => glob(&pattern[1..], &text[1..]),
        _ => false,
    }
}

/// `hunter args` with exactly `env` (plus PATH) in the working directory `dir`.
fn hunter_in(dir: &Path, args: &[&str], env: &HashMap<String, String>) -> (bool, String) {
    let output = Command::new(hunter_bin())
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env)
        .current_dir(dir)
        .output()
        .expect("hunter runs");
    (output.status.success(), hunter_e2e::output_text(&output))
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_cache_lives_in_a_private_state_directory() -> anyhow::Result<()> {
    let mut deployment = Deployment::new(&generated_referrals(3, 5)?)?;
    deployment.start_simulator(&[]).await?;
    let root = tempfile::tempdir()?;
    let mut env = deployment.env.clone();
    env.remove("HUNTER_TOKEN_CACHE");

    // Without HUNTER_TOKEN_CACHE: $HOME/.local/state/hunter/token-cache.json, in directories
    // only the user may enter, and nothing in the working directory.
    let home = root.path().join("home");
    let work = root.path().join("work");
    std::fs::create_dir_all(&home)?;
    std::fs::create_dir_all(&work)?;
    env.insert("HOME".into(), home.display().to_string());
    let (ok, output) = hunter_in(&work, &["auth", "login"], &env);
    assert!(ok, "{output}");
    let cache = home.join(".local/state/hunter/token-cache.json");
    assert!(
        cache.is_file(),
        "no cache at {}:\n{output}",
        cache.display()
    );
    assert_eq!(mode(&cache), 0o600);
    for dir in [".local", ".local/state", ".local/state/hunter"] {
        assert_eq!(mode(&home.join(dir)), 0o700, "{dir}");
    }
    assert_eq!(
        std::fs::read_dir(&work)?.count(),
        0,
        "files in the working dir"
    );

    // XDG_STATE_HOME, when set, is the state directory.
    let xdg = root.path().join("xdg");
    env.insert("XDG_STATE_HOME".into(), xdg.display().to_string());
    let (ok, output) = hunter_in(&work, &["auth", "login"], &env);
    assert!(ok, "{output}");
    assert!(xdg.join("hunter/token-cache.json").is_file(), "{output}");
    assert_eq!(mode(&xdg.join("hunter")), 0o700);

    // An existing deployment with the old default (a cache in the working directory, none at
    // the new place) keeps its sign-in and is told how to move it.
    let old_home = root.path().join("old-home");
    let old_work = root.path().join("old-work");
    std::fs::create_dir_all(&old_home)?;
    std::fs::create_dir_all(&old_work)?;
    std::fs::copy(&cache, old_work.join("hunter-token-cache.json"))?;
    env.remove("XDG_STATE_HOME");
    env.insert("HOME".into(), old_home.display().to_string());
    let (ok, output) = hunter_in(&old_work, &["auth", "status"], &env);
    assert!(ok, "the old cache is not used:\n{output}");
    assert!(
        output.contains("hunter-token-cache.json") && output.contains("old default"),
        "no warning about the old location:\n{output}"
    );
    assert!(
        output.contains(&old_home.join(".local/state/hunter").display().to_string()),
        "the warning does not say where to move it:\n{output}"
    );
    deployment.teardown().await;
    Ok(())
}

// --- 4. manual sync while disabled, joined and expired triggers -------------------------------

async fn post_sync(api: &str, token: &str) -> anyhow::Result<(StatusCode, Value)> {
    let response = reqwest::Client::new()
        .post(format!("{api}/api/v1/partner-center/referrals/sync"))
        .bearer_auth(token)
        .send()
        .await?;
    Ok((
        response.status(),
        response.json().await.unwrap_or(Value::Null),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_while_disabled_is_refused_and_the_page_sends_its_security_headers()
-> anyhow::Result<()> {
    let mut deployment = Deployment::new(&[])?;
    deployment
        .env
        .insert("HUNTER_PARTNER_CENTER_ENABLED".into(), "false".into());
    let (ok, output) = run_hunter(&["migrate"], &deployment.env, Duration::from_secs(60))?;
    anyhow::ensure!(ok, "migrate: {output}");
    deployment.start_role("api").await?;

    let (status, body) = post_sync(&deployment.api, &deployment.api_token).await?;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], json!("sync_disabled"));
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("HUNTER_PARTNER_CENTER_ENABLED"),
        "{body}"
    );
    assert_eq!(
        deployment.topic_count(&deployment.topics.commands)?,
        0,
        "a command was queued for a disabled source"
    );

    // The page: a CSP without inline code, no framing, no sniffing, no referrer.
    let page = reqwest::get(format!("{}/", deployment.api)).await?;
    assert_eq!(page.status(), StatusCode::OK);
    let header = |response: &reqwest::Response, name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let csp = header(&page, "content-security-policy");
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{directive} missing: {csp}");
    }
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{csp}"
    );
    let html = page.text().await?;
    assert!(
        !html.contains("<style") && !html.contains(" style="),
        "inline style"
    );
    for (at, _) in html.match_indices("<script") {
        assert!(
            html[at..].starts_with("<script src="),
            "inline script at {at}"
        );
    }
    assert!(
        !html.contains(" onclick=") && !html.contains(" onload="),
        "inline handler"
    );
    for (path, content_type) in [
        ("/", "text/html"),
        ("/app.js", "text/javascript"),
        ("/app.css", "text/css"),
        ("/api/v1/leads", "application/json"),
        ("/healthz", ""),
    ] {
        let response = reqwest::Client::new()
            .get(format!("{}{path}", deployment.api))
            .bearer_auth(&deployment.api_token)
            .send()
            .await?;
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        assert!(
            header(&response, "content-type").starts_with(content_type),
            "{path}"
        );
        assert_eq!(
            header(&response, "x-content-type-options"),
            "nosniff",
            "{path}"
        );
        assert_eq!(
            header(&response, "referrer-policy"),
            "no-referrer",
            "{path}"
        );
        assert!(
            header(&response, "content-security-policy").contains("frame-ancestors 'none'"),
            "{path}"
        );
    }
    deployment.teardown().await;
    Ok(())
}

/// Puts a `sync_now` command on the command topic as the API does, requested `age` ago.
async fn old_command(deployment: &Deployment, age: Duration) -> anyhow::Result<String> {
    use hunter_core::records::{Command as SyncCommand, Timestamp};
    let topic = deployment.topics.commands.clone();
    let requested = time::OffsetDateTime::now_utc() - age;
    let command = SyncCommand {
        command_id: uuid::Uuid::new_v4().to_string(),
        kind: SyncCommand::SYNC_NOW.into(),
        tenant: None,
        requested_at: Timestamp::from_offset_date_time(requested),
        since: None,
        referral_id: None,
    };
    let payload = hunter_core::codec::Codec::<SyncCommand>::new(&topic, None)
        .encode_single_object(&command)?;
    let producer: rdkafka::producer::FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &deployment.stack.brokers)
        .create()?;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn triggers_join_the_queued_one_and_an_old_trigger_expires() -> anyhow::Result<()> {
    let mut deployment = Deployment::new(&generated_referrals(5, 8)?)?;
    deployment.start_simulator(&[]).await?;
    deployment.login_and_migrate()?;
    // A trigger from two hours ago (the interval is one hour), left while no source ran.
    let stale = old_command(&deployment, Duration::from_secs(7_200)).await?;

    // Only the API runs: nothing picks triggers up, so every further trigger joins the first.
    deployment.start_role("api").await?;
    let (status, first) = post_sync(&deployment.api, &deployment.api_token).await?;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    assert_eq!(first["joined"], json!(false));
    let task_id = first["task_id"].as_str().unwrap().to_owned();
    for _ in 0..5 {
        let (status, again) = post_sync(&deployment.api, &deployment.api_token).await?;
        assert_eq!(status, StatusCode::ACCEPTED, "{again}");
        assert_eq!(
            again["task_id"],
            json!(task_id),
            "a second command was queued"
        );
        assert_eq!(again["joined"], json!(true));
    }
    assert_eq!(
        deployment.topic_count(&deployment.topics.commands)?,
        2,
        "the stale command and one trigger"
    );
    let (_, task) = deployment
        .get(&format!("/api/v1/sync/runs/{task_id}"))
        .await?;
    assert_eq!(task["state"], json!("queued"), "{task}");

    // The source and the sink start: the stale trigger is recorded expired, never run; the
    // queued one runs.
    let (source_port, sink_port) = (free_port(), free_port());
    deployment.start_role_on("source", source_port).await?;
    deployment.start_role_on("sink", sink_port).await?;
    let expired = wait_for("the stale trigger's task", Duration::from_secs(90), || {
        let deployment = &deployment;
        let stale = stale.clone();
        async move {
            let (_, task) = deployment
                .get(&format!("/api/v1/sync/runs/{stale}"))
                .await?;
            Ok((task["state"] == json!("expired")).then_some(task))
        }
    })
    .await
    .map_err(|error| anyhow::anyhow!("{error}\n{}", deployment.logs()))?;
    let run = &expired["runs"][0];
    assert_eq!(run["status"], json!("expired"), "{expired}");
    assert!(
        run["error_message"]
            .as_str()
            .unwrap_or_default()
            .contains("HUNTER_SYNC_INTERVAL_SECS"),
        "{expired}"
    );
    let finished = wait_for("the queued trigger's run", Duration::from_secs(90), || {
        let deployment = &deployment;
        let task_id = task_id.clone();
        async move {
            let (_, task) = deployment
                .get(&format!("/api/v1/sync/runs/{task_id}"))
                .await?;
            Ok((task["state"] == json!("succeeded")).then_some(task))
        }
    })
    .await
    .map_err(|error| anyhow::anyhow!("{error}\n{}", deployment.logs()))?;
    assert_eq!(
        finished["runs"][0]["trigger"],
        json!("manual"),
        "{finished}"
    );
    let runs = deployment.sync_runs().await?;
    assert!(
        runs.iter()
            .filter(|r| r.run_id == stale)
            .all(|r| r.status == "expired"),
        "the stale trigger ran: {runs:?}"
    );

    // Once its run is recorded, the next trigger is a new task.
    let (status, next) = post_sync(&deployment.api, &deployment.api_token).await?;
    assert_eq!(status, StatusCode::ACCEPTED, "{next}");
    assert_ne!(next["task_id"], json!(task_id));
    assert_eq!(next["joined"], json!(false));
    deployment.teardown().await;
    Ok(())
}

// --- 7. open endpoints ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_names_the_component_and_a_class_never_the_error() -> anyhow::Result<()> {
    let mut clickhouse = OwnClickHouse::start().await?;
    let mut broker = OwnBroker::start().await?;
    let mut deployment = Deployment::new(&[])?;
    deployment.use_clickhouse(&clickhouse.url());
    deployment.use_broker(&broker.brokers());
    deployment
        .env
        .insert("HUNTER_PARTNER_CENTER_ENABLED".into(), "false".into());
    let (ok, output) = run_hunter(&["migrate"], &deployment.env, Duration::from_secs(120))?;
    anyhow::ensure!(ok, "migrate: {output}");
    let api = deployment.start_role("api").await?;
    let readyz = format!("{}/readyz", deployment.api);
    let response = reqwest::get(&readyz).await?;
    assert_eq!(response.status(), StatusCode::OK);

    clickhouse.stop().await?;
    let body = wait_for(
        "readyz to see clickhouse gone",
        Duration::from_secs(30),
        || {
            let readyz = readyz.clone();
            async move {
                let response = reqwest::get(&readyz).await?;
                let status = response.status();
                let body: Value = response.json().await?;
                Ok((status == StatusCode::SERVICE_UNAVAILABLE).then_some(body))
            }
        },
    )
    .await?;
    assert_eq!(
        body,
        json!({"ready": false, "checks": {"clickhouse": "unreachable", "broker": "ok"}})
    );

    broker.stop().await?;
    let body = wait_for(
        "readyz to see the broker gone",
        Duration::from_secs(60),
        || {
            let readyz = readyz.clone();
            async move {
                let body: Value = reqwest::get(&readyz).await?.json().await?;
                Ok((body["checks"]["broker"] != json!("ok")).then_some(body))
            }
        },
    )
    .await?;
    let class = body["checks"]["broker"].as_str().unwrap_or_default();
    assert!(
        ["unreachable", "timeout"].contains(&class),
        "broker class {class:?}: {body}"
    );
    let text = body.to_string();
    for leak in [
        "127.0.0.1",
        &broker.port.to_string(),
        &clickhouse.http_port.to_string(),
    ] {
        assert!(!text.contains(leak), "readyz says {leak}: {text}");
    }
    // The detail is in the log, for the operator.
    let log = deployment.process(api).output();
    assert!(log.contains("readiness check failed"), "{log}");
    deployment.teardown().await;
    Ok(())
}

/// A client whose requests come from `source` (any 127.0.0.0/8 address is this machine).
fn client_from(source: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(source.parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
}

async fn leads_status(
    client: &reqwest::Client,
    api: &str,
    authorization: &str,
) -> anyhow::Result<(StatusCode, reqwest::header::HeaderMap, Value)> {
    let response = client
        .get(format!("{api}/api/v1/leads?limit=1"))
        .header("authorization", authorization)
        .send()
        .await?;
    let status = response.status();
    let headers = response.headers().clone();
    Ok((
        status,
        headers,
        response.json().await.unwrap_or(Value::Null),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_in_any_case_and_wrong_tokens_throttled_per_address() -> anyhow::Result<()> {
    let mut deployment = Deployment::new(&[])?;
    deployment
        .env
        .insert("HUNTER_PARTNER_CENTER_ENABLED".into(), "false".into());
    let (ok, output) = run_hunter(&["migrate"], &deployment.env, Duration::from_secs(60))?;
    anyhow::ensure!(ok, "migrate: {output}");
    deployment.start_role("api").await?;
    let api = deployment.api.clone();
    let token = deployment.api_token.clone();
    let here = client_from("127.0.0.1");
    let elsewhere = client_from("127.0.0.2");

    // RFC 6750: the scheme is case-insensitive.
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let (status, _, body) = leads_status(&here, &api, &format!("{scheme} {token}")).await?;
        assert_eq!(status, StatusCode::OK, "{scheme}: {body}");
    }
    // Valid tokens never count, however many.
    for _ in 0..30 {
        let (status, _, _) = leads_status(&here, &api, &format!("Bearer {token}")).await?;
        assert_eq!(status, StatusCode::OK);
    }
    // Ten wrong tokens are 401s; the eleventh is throttled.
    let wrong = format!("Bearer {}", good_token());
    for attempt in 1..=10 {
        let (status, _, body) = leads_status(&here, &api, &wrong).await?;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "attempt {attempt}: {body}"
        );
    }
    let (status, headers, body) = leads_status(&here, &api, &wrong).await?;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"]["code"], json!("too_many_failed_attempts"));
    let retry_after: u64 = headers["retry-after"].to_str()?.parse()?;
    assert!((1..=6).contains(&retry_after), "Retry-After {retry_after}");
    // The right token still works from the same address; another address is not throttled.
    let (status, _, _) = leads_status(&here, &api, &format!("Bearer {token}")).await?;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = leads_status(&elsewhere, &api, &wrong).await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // After Retry-After, one more attempt is allowed again.
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    let (status, _, _) = leads_status(&here, &api, &wrong).await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    deployment.teardown().await;
    Ok(())
}

// --- 8. plain http for sign-in, passwords in doctor's URLs --------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_sign_in_is_refused_off_loopback() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cache = dir.path().join("cache.json").display().to_string();
    let base = [
        ("HUNTER_PARTNER_CENTER_TENANT_ID", "t"),
        ("HUNTER_PARTNER_CENTER_CLIENT_ID", "c"),
        ("HUNTER_TOKEN_CACHE", cache.as_str()),
    ];
    for setting in [
        "HUNTER_PARTNER_CENTER_AUTHORITY_URL",
        "HUNTER_PARTNER_CENTER_API_URL",
    ] {
        let mut env = env_of(&base);
        env.insert(setting.into(), "http://login.partner.example:80".into());
        let (ok, output) = run_hunter(&["auth", "status"], &env, Duration::from_secs(30))?;
        assert!(!ok, "{output}");
        assert!(
            output.contains(&format!("invalid {setting}"))
                && output.contains("HUNTER_ALLOW_INSECURE_HTTP"),
            "{output}"
        );
        // The development switch and loopback addresses get past the check (status then
        // says that no one signed in yet).
        for extra in [
            vec![
                (setting, "http://login.partner.example:80"),
                ("HUNTER_ALLOW_INSECURE_HTTP", "true"),
            ],
            vec![(setting, "http://127.0.0.1:9")],
            vec![(setting, "http://localhost:9")],
        ] {
            let mut env = env_of(&base);
            env.extend(env_of(&extra));
            let (_, output) = run_hunter(&["auth", "status"], &env, Duration::from_secs(30))?;
            assert!(!output.contains("invalid HUNTER_"), "{extra:?}: {output}");
            assert!(output.contains("tenant t"), "{extra:?}: {output}");
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_prints_no_password_embedded_in_a_url() -> anyhow::Result<()> {
    let deployment = Deployment::new(&[])?;
    let mut env = deployment.env.clone();
    env.insert("HUNTER_PARTNER_CENTER_ENABLED".into(), "false".into());
    // Nothing listens there: every check that uses them prints the URL with its error.
    let registry = format!(
        "http://registry-user:REGISTRY-PW-7c1d@127.0.0.1:{}/",
        free_port()
    );
    let clickhouse = format!(
        "http://ch-user:CLICKHOUSE-PW-93ab@127.0.0.1:{}",
        free_port()
    );
    env.insert("HUNTER_SCHEMA_REGISTRY_URL".into(), registry);
    env.insert("HUNTER_CLICKHOUSE_URL".into(), clickhouse);
    // Plain http allowed by the switch is a warning (the source is off: nothing is called).
    env.insert(
        "HUNTER_PARTNER_CENTER_AUTHORITY_URL".into(),
        "http://login.partner.example".into(),
    );
    env.insert("HUNTER_ALLOW_INSECURE_HTTP".into(), "true".into());
    let (ok, output) = run_hunter(&["doctor"], &env, Duration::from_secs(120))?;
    assert!(!ok, "doctor passed with nothing listening:\n{output}");
    assert!(
        output
            .lines()
            .any(|line| line.starts_with("warn  plain http")
                && line.contains("login.partner.example")),
        "no warning about plain http:\n{output}"
    );
    for password in ["REGISTRY-PW-7c1d", "CLICKHOUSE-PW-93ab"] {
        assert!(!output.contains(password), "{password} printed:\n{output}");
    }
    assert!(
        output.contains("registry-user:***@") && output.contains("ch-user:***@"),
        "the URLs are not shown redacted:\n{output}"
    );
    // Config errors quote no password either.
    let mut broken = env.clone();
    broken.insert(
        "HUNTER_CLICKHOUSE_URL".into(),
        "ftp://ch-user:CLICKHOUSE-PW-93ab@127.0.0.1:1".into(),
    );
    let (ok, output) = run_hunter(&["doctor"], &broken, Duration::from_secs(60))?;
    assert!(!ok && output.contains("HUNTER_CLICKHOUSE_URL"), "{output}");
    assert!(!output.contains("CLICKHOUSE-PW-93ab"), "{output}");
    deployment.teardown().await;
    Ok(())
}
