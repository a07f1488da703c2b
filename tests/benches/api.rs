//! `GET /api/v1/leads` under load against the same query sent straight to ClickHouse.
//!
//! `cargo bench -p hunter-e2e --bench api` with the local stack up, its settings in the
//! environment, `HUNTER_BIN` naming a release build and `wrk` installed (Debian package).
//!
//! N leads (default 1,000,000; `HUNTER_BENCH_LEADS`) are inserted into a fresh database in
//! ten inserts (as the sink would leave them: several parts, not merged by hand). Then, three
//! times each, median, with wrk at 32 connections for 20 s (`HUNTER_BENCH_SECONDS`):
//! - api: `GET /api/v1/leads?status=Active&min_score=30&limit=50` with the default page cache
//!   (`HUNTER_API_CACHE_MS` 1000: one ClickHouse query set a second for this question);
//! - api, no cache: the same on a second API process with `HUNTER_API_CACHE_MS=0` (every request
//!   asks ClickHouse: page + total count + the page's rows);
//! - ceiling: the page query the API sends first (ids and sort keys under FINAL, filters,
//!   sort, LIMIT 51) as a GET to ClickHouse's HTTP interface;
//! - count: the API's total-count query alone on ClickHouse (the API runs both at once, then
//!   reads the page's 50 rows by (lead id, version)).
//! - distinct questions (docs/api-read-model.md): a wrk script asks random filters, sorts,
//!   search text, page sizes and later pages (a cursor at a random lead) of two more API
//!   processes, both without the page cache: one with the read model (the default), one with
//!   `HUNTER_API_READ_MODEL=off` (every question to ClickHouse, the baseline). Also reported:
//!   the model's rebuild time at start, its bytes per lead, and the API's memory per lead from
//!   its RSS (the model's process minus the baseline's, over the leads).

use std::process::Command;
use std::time::Duration;

use hunter_e2e::bench::{Report, RowKind};
use hunter_e2e::{ClickHouse, Process, Stack, free_port, run_hunter, unique, wait_healthy};

#[derive(Debug, Clone, Copy)]
struct Load {
    requests_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
}

fn millis(text: &str) -> f64 {
    let text = text.trim();
    if let Some(v) = text.strip_suffix("us") {
        v.parse::<f64>().unwrap() / 1000.0
    } else if let Some(v) = text.strip_suffix("ms") {
        v.parse::<f64>().unwrap()
    } else if let Some(v) = text.strip_suffix('s') {
        v.parse::<f64>().unwrap() * 1000.0
    } else {
        panic!("unreadable wrk latency {text:?}")
    }
}

/// Runs wrk and reads its latency distribution and request rate.
fn wrk(url: &str, headers: &[&str], seconds: u64) -> anyhow::Result<Load> {
    wrk_with(url, headers, seconds, None)
}

/// [`wrk`] with a Lua script that makes each request.
fn wrk_with(
    url: &str,
    headers: &[&str],
    seconds: u64,
    script: Option<&std::path::Path>,
) -> anyhow::Result<Load> {
    let mut command = Command::new("wrk");
    command.args(["-t2", "-c32", "--latency", "--timeout", "30s"]);
    command.arg(format!("-d{seconds}s"));
    if let Some(script) = script {
        command.arg("-s").arg(script);
    }
    for header in headers {
        command.args(["-H", header]);
    }
    let output = command.arg(url).output()?;
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    anyhow::ensure!(output.status.success(), "wrk failed: {text}");
    let field = |prefix: &str| -> Option<String> {
        text.lines()
            .map(str::trim)
            .find(|line| line.starts_with(prefix))
            .map(|line| line.split_whitespace().nth(1).unwrap_or("").to_owned())
    };
    let errors = text
        .lines()
        .find(|line| line.contains("Non-2xx or 3xx responses"))
        .and_then(|line| line.split(':').nth(1))
        .map_or(0, |n| n.trim().parse().unwrap_or(0));
    anyhow::ensure!(
        !text.contains(" 0 requests in"),
        "no request completed within the run: {text}"
    );
    Ok(Load {
        requests_per_second: field("Requests/sec:").unwrap_or_default().parse()?,
        p50_ms: millis(&field("50%").unwrap_or_default()),
        p99_ms: millis(&field("99%").unwrap_or_default()),
        errors,
    })
}

const PAGE_SQL: &str = "SELECT lead_id, version, toString(toInt64(toUInt32(updated_at))) FROM leads FINAL WHERE status IN ('Active') AND score >= 30 ORDER BY toInt64(toUInt32(updated_at)) DESC, lead_id DESC LIMIT 51 FORMAT RowBinary";
const COUNT_SQL: &str =
    "SELECT count() FROM leads FINAL WHERE status IN ('Active') AND score >= 30 FORMAT RowBinary";

/// The wrk script of distinct questions over the leads of [`insert_sql`]: random filters (each
/// with its own chance), sort and direction, page size, search text in a quarter of the
/// questions, and in half of them a later page: a cursor at a random lead's sort key.
fn random_questions_script(leads: u64) -> String {
    r#"
local leads = LEADS
local statuses = {"New", "Active", "Closed"}
local substatuses = {"Pending", "Accepted", "Won", "Lost"}
local qualifications = {"None", "Direct", "MarketingQualified", "SalesQualified"}
local providers = {"microsoft365", "google_workspace", "other", "unknown"}
local countries = {"US", "DE", "NL", "FR", "GB"}
local sorts = {"updated_at", "created_at", "score", "deal_value_usd", "company"}
local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
local function pick(list) return list[math.random(1, #list)] end
local function b64(data)
  return ((data:gsub(".", function(x)
    local r, b = "", x:byte()
    for i = 8, 1, -1 do r = r .. (b % 2 ^ i - b % 2 ^ (i - 1) > 0 and "1" or "0") end
    return r
  end) .. "0000"):gsub("%d%d%d?%d?%d?%d?", function(x)
    if #x < 6 then return "" end
    local c = 0
    for i = 1, 6 do c = c + (x:sub(i, i) == "1" and 2 ^ (6 - i) or 0) end
    return alphabet:sub(c + 1, c + 1)
  end))
end
local counter = 0
setup = function(thread) counter = counter + 1; thread:set("seed", counter) end
init = function() math.randomseed(os.time() * 100 + (seed or 0)) end
request = function()
  local parts = {}
  if math.random() < 0.5 then parts[#parts + 1] = "status=" .. pick(statuses) end
  if math.random() < 0.3 then parts[#parts + 1] = "substatus=" .. pick(substatuses) .. "," .. pick(substatuses) end
  if math.random() < 0.2 then parts[#parts + 1] = "qualification=" .. pick(qualifications) end
  if math.random() < 0.3 then parts[#parts + 1] = "provider=" .. pick(providers) end
  if math.random() < 0.3 then parts[#parts + 1] = "country=" .. pick(countries) .. "," .. pick(countries) end
  if math.random() < 0.2 then parts[#parts + 1] = "direction=" .. pick({"Incoming", "Outgoing"}) end
  if math.random() < 0.4 then parts[#parts + 1] = "min_score=" .. math.random(0, 100) end
  if math.random() < 0.2 then
    parts[#parts + 1] = "updated_since=" .. os.date("!%Y-%m-%dT%H:%M:%SZ", 1700000000 + math.random(0, 30000000))
  end
  if math.random() < 0.25 then
    parts[#parts + 1] = "q=" .. pick({"company%20" .. math.random(0, 49999), "Referral%20" .. math.random(0, leads - 1),
      "COMPANY" .. math.random(0, 4999), "ral%20" .. math.random(0, 999)})
  end
  local key = pick(sorts)
  local sort = (math.random() < 0.5 and "-" or "") .. key
  parts[#parts + 1] = "sort=" .. sort
  parts[#parts + 1] = "limit=" .. pick({10, 20, 50, 50, 100})
  if math.random() < 0.5 then
    local n = math.random(0, leads - 1)
    local k
    if key == "updated_at" then k = string.format("%d", 1700000000 + (n * 7919) % 30000000)
    elseif key == "created_at" then k = string.format("%d", 1700000000 + n * 7)
    elseif key == "score" then k = string.format("%d", n % 101)
    elseif key == "deal_value_usd" then k = string.format("%d", (n % 100000) * 100)
    else k = '"Company ' .. (n % 50000) .. '"' end
    parts[#parts + 1] = "cursor=" .. b64('{"s":"' .. sort .. '","k":' .. k .. ',"i":"lead-' .. n .. '"}')
  end
  return wrk.format("GET", "/api/v1/leads?" .. table.concat(parts, "&"))
end
"#
    .replace("LEADS", &leads.to_string())
}

/// Waits until ClickHouse runs no query older than a second (those of wrk clients that left:
/// 18.16 finishes them), at least 5 s and at most 120 s.
async fn drain(clickhouse: &ClickHouse) {
    tokio::time::sleep(Duration::from_secs(5)).await;
    for _ in 0..115 {
        let busy = clickhouse
            .rows("SELECT toUInt8(count() > 0) AS busy FROM system.processes WHERE elapsed > 1")
            .await
            .ok()
            .and_then(|rows| rows.first().and_then(|row| row["busy"].as_u64()))
            .is_some_and(|busy| busy == 1);
        if !busy {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    println!("clickhouse still busy after 120 s; measuring anyway");
}

/// A process's resident memory in bytes (`VmRSS` of /proc).
fn rss_bytes(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS for {pid}"))?
        .parse()?;
    Ok(kib * 1024.0)
}

/// A gauge's value from a `/metrics` text.
async fn gauge(base: &str, name: &str) -> anyhow::Result<Option<f64>> {
    let text = reqwest::get(format!("{base}/metrics"))
        .await?
        .text()
        .await?;
    Ok(text
        .lines()
        .find(|line| line.starts_with(&format!("{name} ")))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|value| value.parse().ok()))
}

fn insert_sql(from: u64, to: u64) -> String {
    format!(
        "INSERT INTO leads (lead_id, referral_id, tenant, name, status, substatus, direction, qualification, referral_type, company_name, company_domain, country, deal_value, currency, created_at, updated_at, version, processed_at, enrichment_version, email_provider, email_provider_source, products, solutions, industries, deal_value_usd, score, priority, change_type) \
         SELECT concat('lead-', toString(number)), concat('lead-', toString(number)), 'bench', concat('Referral ', toString(number)), \
         arrayElement(['New', 'Active', 'Closed'], number % 3 + 1), arrayElement(['Pending', 'Accepted', 'Won', 'Lost'], number % 4 + 1), \
         if(number % 2 = 0, 'Incoming', 'Outgoing'), arrayElement(['None', 'Direct', 'MarketingQualified', 'SalesQualified'], number % 4 + 1), 'Shared', \
         concat('Company ', toString(number % 50000)), concat('company', toString(number % 50000), '.com'), arrayElement(['US', 'DE', 'NL', 'FR', 'GB'], number % 5 + 1), \
         toDecimal64(number % 100000, 2), 'USD', toDateTime(1700000000 + number * 7), toDateTime(1700000000 + (number * 7919) % 30000000), \
         number, now(), 1, arrayElement(['microsoft365', 'google_workspace', 'other', 'unknown'], number % 4 + 1), 'mx', \
         emptyArrayString(), emptyArrayString(), emptyArrayString(), toDecimal64(number % 100000, 2), toUInt8(number % 101), 'medium', 'created' \
         FROM numbers({to}) WHERE number >= {from}"
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let Some(leads) = hunter_e2e::bench::start("api", "HUNTER_BENCH_LEADS", 1_000_000)? else {
        return Ok(()); // `cargo test --benches` only lists
    };
    let leads = leads as u64;
    let seconds: u64 = std::env::var("HUNTER_BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    anyhow::ensure!(
        Command::new("wrk").arg("--version").output().is_ok(),
        "wrk missing: apt-get install wrk"
    );
    // Its topics (`hunter migrate` creates them) on a broker of the bench's own.
    let broker = hunter_e2e::bench::broker().await?;
    let stack = Stack::from_env();
    let database = unique("hunter_bench_api");
    let api_port = free_port();
    let token = uuid::Uuid::new_v4().simple().to_string();
    let env: std::collections::HashMap<String, String> = [
        ("HUNTER_KAFKA_BROKERS", broker.brokers()),
        ("HUNTER_KAFKA_TOPIC_PREFIX", format!("{}.", unique("b"))),
        ("HUNTER_CLICKHOUSE_URL", stack.clickhouse_url.clone()),
        ("HUNTER_CLICKHOUSE_DATABASE", database.clone()),
        ("HUNTER_PARTNER_CENTER_ENABLED", "false".into()),
        ("HUNTER_API_LISTEN", format!("127.0.0.1:{api_port}")),
        ("HUNTER_API_TOKEN", token.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let (ok, output) = run_hunter(&["migrate"], &env, Duration::from_secs(60))?;
    anyhow::ensure!(ok, "migrate: {output}");
    let clickhouse = ClickHouse::new(&stack.clickhouse_url, &database);
    let step = leads.div_ceil(10);
    for from in (0..leads).step_by(step as usize) {
        let response = reqwest::Client::new()
            .post(format!(
                "{}/?database={database}",
                stack.clickhouse_url.trim_end_matches('/')
            ))
            .body(insert_sql(from, (from + step).min(leads)))
            .send()
            .await?;
        anyhow::ensure!(
            response.status().is_success(),
            "insert: {}",
            response.text().await?
        );
    }
    let parts = clickhouse
        .rows("SELECT toString(count()) AS n FROM system.parts WHERE active AND database = currentDatabase() AND table = 'leads'")
        .await?;
    println!(
        "{leads} leads in {database}.leads, {} active parts",
        parts[0]["n"].as_str().unwrap_or("?")
    );

    let dir = tempfile::tempdir()?;
    let _api = Process::spawn("bench-api", &["run", "api"], &env, dir.path())?;
    let api = format!("http://127.0.0.1:{api_port}");
    wait_healthy(
        "the api",
        &format!("{api}/healthz"),
        Duration::from_secs(30),
    )
    .await?;
    let uncached_port = free_port();
    let mut uncached_env = env.clone();
    uncached_env.insert("HUNTER_API_CACHE_MS".into(), "0".into());
    // The ClickHouse path, as before the read model.
    uncached_env.insert("HUNTER_API_READ_MODEL".into(), "off".into());
    uncached_env.insert(
        "HUNTER_API_LISTEN".into(),
        format!("127.0.0.1:{uncached_port}"),
    );
    let _uncached = Process::spawn(
        "bench-api-uncached",
        &["run", "api"],
        &uncached_env,
        dir.path(),
    )?;
    let uncached = format!("http://127.0.0.1:{uncached_port}");
    wait_healthy(
        "the uncached api",
        &format!("{uncached}/healthz"),
        Duration::from_secs(30),
    )
    .await?;

    // The read model, without the page cache: every question is computed.
    let model_port = free_port();
    let mut model_env = env.clone();
    model_env.insert("HUNTER_API_CACHE_MS".into(), "0".into());
    model_env.insert(
        "HUNTER_API_LISTEN".into(),
        format!("127.0.0.1:{model_port}"),
    );
    let model_api = Process::spawn("bench-api-model", &["run", "api"], &model_env, dir.path())?;
    let model = format!("http://127.0.0.1:{model_port}");
    wait_healthy(
        "the api with the read model",
        &format!("{model}/healthz"),
        Duration::from_secs(30),
    )
    .await?;
    let started = std::time::Instant::now();
    loop {
        if gauge(&model, "hunter_api_read_model_leads").await? == Some(leads as f64) {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "the read model was not built within 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The read model without its row store: the page's rows from ClickHouse (as before the
    // row store), cache off.
    let norows_port = free_port();
    let mut norows_env = model_env.clone();
    norows_env.insert("HUNTER_API_READ_MODEL_ROWS".into(), "off".into());
    norows_env.insert(
        "HUNTER_API_LISTEN".into(),
        format!("127.0.0.1:{norows_port}"),
    );
    let norows_api = Process::spawn(
        "bench-api-model-norows",
        &["run", "api"],
        &norows_env,
        dir.path(),
    )?;
    let norows = format!("http://127.0.0.1:{norows_port}");
    wait_healthy(
        "the api with the read model, rows off",
        &format!("{norows}/healthz"),
        Duration::from_secs(30),
    )
    .await?;
    loop {
        if gauge(&norows, "hunter_api_read_model_leads").await? == Some(leads as f64) {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(900),
            "the read model without rows was not built in time"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rebuild_seconds = gauge(&model, "hunter_api_read_model_rebuild_seconds")
        .await?
        .unwrap_or_default();
    let model_bytes = gauge(&model, "hunter_api_read_model_bytes")
        .await?
        .unwrap_or_default();
    let norows_rebuild_seconds = gauge(&norows, "hunter_api_read_model_rebuild_seconds")
        .await?
        .unwrap_or_default();
    let norows_bytes = gauge(&norows, "hunter_api_read_model_bytes")
        .await?
        .unwrap_or_default();
    println!(
        "read model: {leads} leads rebuilt in {rebuild_seconds:.2} s, {:.0} bytes per lead",
        model_bytes / leads as f64
    );
    let script = dir.path().join("questions.lua");
    std::fs::write(&script, random_questions_script(leads))?;

    let query = "/api/v1/leads?status=Active&min_score=30&limit=50";
    let api_url = format!("{api}{query}");
    let uncached_url = format!("{uncached}{query}");
    let auth = format!("Authorization: Bearer {token}");
    // The API's answer is right before it is timed.
    let page: serde_json::Value = reqwest::Client::new()
        .get(&api_url)
        .bearer_auth(&token)
        .send()
        .await?
        .json()
        .await?;
    anyhow::ensure!(
        page["items"].as_array().map(Vec::len) == Some(50),
        "unexpected page: {page}"
    );
    println!("total for the filter: {}", page["total"]);
    let encode =
        |sql: &str| -> String { url::form_urlencoded::byte_serialize(sql.as_bytes()).collect() };
    let base = stack.clickhouse_url.trim_end_matches('/');
    let ceiling_url = format!("{base}/?database={database}&query={}", encode(PAGE_SQL));
    let count_url = format!("{base}/?database={database}&query={}", encode(COUNT_SQL));

    let (mut api_runs, mut uncached_runs, mut ceiling_runs, mut count_runs) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut model_runs, mut baseline_runs, mut norows_runs) = (Vec::new(), Vec::new(), Vec::new());
    let random_url = |base: &str| format!("{base}/api/v1/leads");
    for round in 1..=3 {
        let a = wrk(&api_url, &[&auth], seconds)?;
        let u = wrk(&uncached_url, &[&auth], seconds)?;
        let c = wrk(&ceiling_url, &[], seconds)?;
        let n = wrk(&count_url, &[], seconds)?;
        // ClickHouse 18.16 finishes the queries of clients that left: before each distinct-
        // questions run, let the earlier run's queries drain, or the read model's polls queue
        // behind them, the model goes stale and its questions go to ClickHouse (the share of
        // rows read from ClickHouse is reported below).
        drain(&clickhouse).await;
        let m = wrk_with(&random_url(&model), &[&auth], seconds, Some(&script))?;
        let b = wrk_with(&random_url(&uncached), &[&auth], seconds, Some(&script))?;
        tokio::time::sleep(Duration::from_secs(5)).await;
        let r = wrk_with(&random_url(&norows), &[&auth], seconds, Some(&script))?;
        println!(
            "round {round}: api {a:?}\n  api without cache {u:?}\n  clickhouse page query {c:?}\n  clickhouse count query {n:?}\n  distinct questions, read model {m:?}\n  distinct questions, clickhouse path {b:?}\n  distinct questions, read model without rows {r:?}"
        );
        anyhow::ensure!(m.errors == 0, "non-2xx answers from the read model");
        anyhow::ensure!(
            r.errors == 0,
            "non-2xx answers from the read model without rows"
        );
        norows_runs.push(r);
        model_runs.push(m);
        baseline_runs.push(b);
        anyhow::ensure!(
            a.errors == 0 && u.errors == 0 && c.errors == 0 && n.errors == 0,
            "non-2xx answers under load"
        );
        api_runs.push(a);
        uncached_runs.push(u);
        ceiling_runs.push(c);
        count_runs.push(n);
        // ClickHouse 18.16 finishes queries whose HTTP client left: let them drain.
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    let mut report = Report::new("api", leads as usize, "leads");
    let mut summary = |name: &str, kind: RowKind, runs: &[Load]| {
        let rounds = |f: fn(&Load) -> f64| runs.iter().map(f).collect::<Vec<_>>();
        let rps = report.row(
            &format!("{name}: requests/s"),
            "requests/s",
            kind,
            &rounds(|r| r.requests_per_second),
        );
        let p50 = report.row(
            &format!("{name}: p50"),
            "ms",
            RowKind::Info,
            &rounds(|r| r.p50_ms),
        );
        let p99 = report.row(&format!("{name}: p99"), "ms", kind, &rounds(|r| r.p99_ms));
        println!("{name:<28} {rps:>9.1} req/s   p50 {p50:>7.1} ms   p99 {p99:>7.1} ms");
        (rps, p50, p99)
    };
    println!("\nmedians of 3, wrk -t2 -c32 -d{seconds}s, {leads} leads:");
    let (api_rps, _, api_p99) = summary(
        "api `GET /leads`, page cache on (default)",
        RowKind::Hunter,
        &api_runs,
    );
    let (uncached_rps, _, uncached_p99) = summary(
        "api `GET /leads`, cache off (every request asks ClickHouse)",
        RowKind::Info,
        &uncached_runs,
    );
    let (ceiling_rps, _, ceiling_p99) = summary(
        "ClickHouse: the page query alone (ceiling)",
        RowKind::Ceiling,
        &ceiling_runs,
    );
    summary(
        "ClickHouse: the count query alone",
        RowKind::Info,
        &count_runs,
    );
    let (model_rps, _, model_p99) = summary(
        "api distinct questions, read model with its rows (default), cache off",
        RowKind::Hunter,
        &model_runs,
    );
    let (norows_rps, _, norows_p99) = summary(
        "api distinct questions, read model without rows (page rows from ClickHouse), cache off",
        RowKind::Info,
        &norows_runs,
    );
    let (baseline_rps, _, baseline_p99) = summary(
        "api distinct questions, ClickHouse path, cache off (baseline)",
        RowKind::Info,
        &baseline_runs,
    );
    let baseline_errors: u64 = baseline_runs.iter().map(|r| r.errors).sum();
    // Where the model API's page rows came from over all rounds: rows from ClickHouse mean
    // questions it answered while not fresh (or rows the store had in another version).
    let text = reqwest::get(format!("{model}/metrics"))
        .await?
        .text()
        .await?;
    let rows_from = |from: &str| {
        hunter_e2e::metric_sum(&text, "hunter_api_lead_rows_total", &[("from", from)])
            .unwrap_or(0.0)
    };
    let (from_store, from_clickhouse) = (rows_from("store"), rows_from("clickhouse"));
    println!(
        "read model api: {from_store} page rows from its row store, {from_clickhouse} from ClickHouse"
    );
    report.row(
        "read model with rows: share of page rows read from ClickHouse (model not fresh)",
        "%",
        RowKind::Info,
        &[100.0 * from_clickhouse / (from_store + from_clickhouse).max(1.0)],
    );
    let model_rss = rss_bytes(model_api.pid())?;
    let baseline_rss = rss_bytes(_uncached.pid())?;
    let per_lead = (model_rss - baseline_rss) / leads as f64;
    let norows_per_lead = (rss_bytes(norows_api.pid())? - baseline_rss) / leads as f64;
    println!(
        "api RSS: read model {:.0} MiB, clickhouse path {:.0} MiB: {per_lead:.0} bytes per lead; \
         the model's own count {:.0} bytes per lead; clickhouse path non-2xx: {baseline_errors}",
        model_rss / 1048576.0,
        baseline_rss / 1048576.0,
        model_bytes / leads as f64
    );
    report.row(
        "read model with rows: rebuild at start",
        "s",
        RowKind::Info,
        &[rebuild_seconds],
    );
    report.row(
        "read model with rows: its own bytes per lead (model and rows)",
        "bytes",
        RowKind::Info,
        &[model_bytes / leads as f64],
    );
    report.row(
        "api memory per lead (RSS, model with rows minus ClickHouse path)",
        "bytes",
        RowKind::Info,
        &[per_lead],
    );
    report.row(
        "read model without rows: rebuild at start",
        "s",
        RowKind::Info,
        &[norows_rebuild_seconds],
    );
    report.row(
        "read model without rows: its own bytes per lead",
        "bytes",
        RowKind::Info,
        &[norows_bytes / leads as f64],
    );
    report.row(
        "api memory per lead (RSS, model without rows minus ClickHouse path)",
        "bytes",
        RowKind::Info,
        &[norows_per_lead],
    );
    report.ratio(
        "distinct questions, read model p99 in ms",
        model_p99,
        Some("<= 50"),
    );
    report.ratio(
        "distinct questions, read model requests/s",
        model_rps,
        Some(">= 1000"),
    );
    report.ratio(
        "distinct questions, read model / ClickHouse path, requests/s",
        model_rps / baseline_rps,
        None,
    );
    report.ratio(
        "distinct questions, read model / ClickHouse path, p99",
        model_p99 / baseline_p99,
        None,
    );
    report.ratio(
        "distinct questions, read model with rows / without, requests/s",
        model_rps / norows_rps,
        None,
    );
    report.ratio(
        "distinct questions, read model with rows / without, p99",
        model_p99 / norows_p99,
        None,
    );
    report.ratio("api p99 in ms, page cache on", api_p99, Some("<= 50"));
    report.ratio(
        "api cache off / page query, requests/s",
        uncached_rps / ceiling_rps,
        None,
    );
    report.ratio(
        "api cache off / page query, p99",
        uncached_p99 / ceiling_p99,
        None,
    );
    report.note(&format!(
        "wrk -t2 -c32 -d{seconds}s on `GET /api/v1/leads?status=Active&min_score=30&limit=50`"
    ));
    println!(
        "api (cached) / clickhouse page query: {:.2} of the requests/s, p99 {:.3}x",
        api_rps / ceiling_rps,
        api_p99 / ceiling_p99
    );
    println!(
        "api (no cache) / clickhouse page query: {:.2} of the requests/s, p99 {:.2}x",
        uncached_rps / ceiling_rps,
        uncached_p99 / ceiling_p99
    );
    clickhouse.drop_database().await;
    drop(broker);
    report.print();
    Ok(())
}
