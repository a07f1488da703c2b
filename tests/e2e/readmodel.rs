//! The API's read model (docs/api-read-model.md) against the ClickHouse path, on the shared
//! stack's ClickHouse in a database of the test's own.
//!
//! - The same random questions (filters, sorts, text, pages followed by cursor) asked of an API
//!   with the model and of one without (`HUNTER_API_READ_MODEL=off`), both without the page
//!   cache, over leads inserted with awkward values (NULLs, values no filter names, equal sort
//!   keys, older versions, non-ASCII text): the answers must be equal, byte for byte as JSON.
//! - The model's pages take their rows from its row store (`HUNTER_API_READ_MODEL_ROWS`, on by
//!   default): the rows it served from the store, counted by `hunter_api_lead_rows_total`, are
//!   most of its rows, before and after the updates, and the answers are still ClickHouse's.
//! - A lead written by the sink is in the model's answers shortly after it is in ClickHouse
//!   (the lag is printed; the assertion waits generously: no timed assertions), and a newer
//!   version replaces the older one.

use std::time::{Duration, Instant};

use hunter_core::records::{Ingest, Lead, Referral, Timestamp};
use hunter_e2e::{ClickHouse, Deployment, free_port, generated_referrals, run_hunter, wait_for};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom as _;
use rand::{Rng as _, SeedableRng as _};
use reqwest::StatusCode;
use serde_json::Value;

fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn nullable(value: Option<&str>) -> String {
    value.map_or_else(|| "NULL".to_owned(), quote)
}

const COMPANIES: &[Option<&str>] = &[
    None,
    Some(""),
    Some("Contoso"),
    Some("contoso"),
    Some("Fabrikam GmbH"),
    Some("Müller & Söhne"),
    Some("ÆON Kelvin Corp"),
    Some("Northwind Traders"),
    Some("O'Brien Ltd"),
];
const NAMES: &[Option<&str>] = &[
    None,
    Some("Azure migration"),
    Some("azure MIGRATION phase 2"),
    Some("Dynamics rollout"),
    Some("Straße upgrade"),
    Some("Teams voice"),
    Some("İstanbul office"),
];
const DOMAINS: &[Option<&str>] = &[
    None,
    Some("contoso.com"),
    Some("fabrikam.de"),
    Some("MUELLER.example"),
    Some("northwind.io"),
];
const STATUSES: &[Option<&str>] = &[
    None,
    Some("New"),
    Some("Active"),
    Some("Closed"),
    Some("None"),
    Some("new"),
    Some("Weird"),
];
const SUBSTATUSES: &[Option<&str>] = &[None, Some("Pending"), Some("Won"), Some("Lost"), Some("")];
const DIRECTIONS: &[Option<&str>] = &[None, Some("Incoming"), Some("Outgoing")];
const QUALIFICATIONS: &[Option<&str>] = &[None, Some("Direct"), Some("SalesQualified")];
const COUNTRIES: &[Option<&str>] = &[
    None,
    Some("US"),
    Some("DE"),
    Some("NL"),
    Some("us"),
    Some("USA"),
];
const PROVIDERS: &[&str] = &[
    "microsoft365",
    "google_workspace",
    "other",
    "unknown",
    "Other",
];

/// One random lead version as an INSERT's VALUES tuple.
fn random_row(rng: &mut StdRng, id: &str, version: u64) -> String {
    let updated = 1_767_000_000 + 3_600 * rng.random_range(0..12u64);
    let created = if rng.random_bool(0.2) {
        "NULL".to_owned()
    } else {
        format!(
            "toDateTime({})",
            1_760_000_000 + 86_400 * rng.random_range(0..6u64)
        )
    };
    let deal = if rng.random_bool(0.2) {
        "NULL".to_owned()
    } else {
        format!("{}.50", rng.random_range(0..5u64) * 250)
    };
    format!(
        "({id}, {id}, 't', {name}, {status}, {substatus}, {direction}, {qualification}, {company}, \
         {domain}, {country}, {created}, toDateTime({updated}), {version}, now(), {provider}, \
         {deal}, {score})",
        id = quote(id),
        name = nullable(*NAMES.choose(rng).unwrap()),
        status = nullable(*STATUSES.choose(rng).unwrap()),
        substatus = nullable(*SUBSTATUSES.choose(rng).unwrap()),
        direction = nullable(*DIRECTIONS.choose(rng).unwrap()),
        qualification = nullable(*QUALIFICATIONS.choose(rng).unwrap()),
        company = nullable(*COMPANIES.choose(rng).unwrap()),
        domain = nullable(*DOMAINS.choose(rng).unwrap()),
        country = nullable(*COUNTRIES.choose(rng).unwrap()),
        provider = quote(PROVIDERS.choose(rng).unwrap()),
        score = rng.random_range(0..5u8) * 20,
    )
}

async fn insert(clickhouse: &ClickHouse, database: &str, rows: &[String]) -> anyhow::Result<()> {
    clickhouse
        .execute(&format!(
            "INSERT INTO {database}.leads (lead_id, referral_id, tenant, name, status, substatus, \
             direction, qualification, company_name, company_domain, country, created_at, \
             updated_at, version, processed_at, email_provider, deal_value_usd, score) VALUES {}",
            rows.join(", ")
        ))
        .await
}

/// A random `GET /leads` query string (without cursor).
fn random_question(rng: &mut StdRng) -> String {
    let mut parts = Vec::new();
    let mut maybe = |rng: &mut StdRng, parameter: &str, values: &[&str], most: usize| {
        if rng.random_bool(0.3) {
            let n = rng.random_range(1..=most);
            let chosen: Vec<&str> = values.choose_multiple(rng, n).copied().collect();
            parts.push(format!("{parameter}={}", chosen.join(",")));
        }
    };
    maybe(rng, "status", &["New", "active", "Closed", "None"], 2);
    maybe(rng, "substatus", &["Pending", "Won", "lost"], 2);
    maybe(rng, "direction", &["Incoming", "Outgoing"], 1);
    maybe(
        rng,
        "qualification",
        &["Direct", "SalesQualified", "None"],
        2,
    );
    maybe(rng, "provider", &["microsoft365", "other", "unknown"], 2);
    maybe(rng, "country", &["US", "de", "NL", "FR"], 2);
    if rng.random_bool(0.3) {
        parts.push(format!("min_score={}", rng.random_range(0..=100)));
    }
    if rng.random_bool(0.2) {
        let at = time::OffsetDateTime::from_unix_timestamp(
            1_767_000_000 + 3_600 * rng.random_range(0..12i64),
        )
        .unwrap();
        parts.push(format!(
            "updated_since={}",
            at.format(&time::format_description::well_known::Rfc3339)
                .unwrap()
        ));
    }
    if rng.random_bool(0.15) {
        parts.push(format!("has_domain={}", rng.random_bool(0.5)));
    }
    if rng.random_bool(0.35) {
        let text = [
            "contoso",
            "CONTOSO",
            "gmbh",
            "azure",
            "migration p",
            "ü",
            "straße",
            "İ",
            "o'b",
            "&",
            ".de",
            "s",
            "kelvin",
            "xyz",
        ]
        .choose(rng)
        .unwrap();
        parts.push(format!(
            "q={}",
            url::form_urlencoded::byte_serialize(text.as_bytes()).collect::<String>()
        ));
    }
    if rng.random_bool(0.8) {
        let sort = [
            "updated_at",
            "-updated_at",
            "created_at",
            "-created_at",
            "score",
            "-score",
            "deal_value_usd",
            "-deal_value_usd",
            "company",
            "-company",
            // Sorts and filters the model does not hold go to ClickHouse (model_filters).
            "expires_at",
            "-expires_at",
        ]
        .choose(rng)
        .unwrap();
        parts.push(format!("sort={sort}"));
    }
    parts.push(format!("limit={}", rng.random_range(1..=15)));
    parts.join("&")
}

async fn get(base: &str, token: &str, path: &str) -> anyhow::Result<(StatusCode, Value)> {
    let response = reqwest::Client::new()
        .get(format!("{base}{path}"))
        .bearer_auth(token)
        .send()
        .await?;
    Ok((response.status(), response.json().await?))
}

/// The lead rows an API served from its row store and from ClickHouse so far.
async fn rows_served(base: &str) -> anyhow::Result<(f64, f64)> {
    let text = reqwest::get(format!("{base}/metrics"))
        .await?
        .text()
        .await?;
    let from = |source: &str| {
        hunter_e2e::metric_sum(&text, "hunter_api_lead_rows_total", &[("from", source)])
            .unwrap_or(0.0)
    };
    Ok((from("store"), from("clickhouse")))
}

/// The model's leads gauge, once it is built.
async fn model_leads(base: &str) -> anyhow::Result<Option<u64>> {
    let text = reqwest::get(format!("{base}/metrics"))
        .await?
        .text()
        .await?;
    Ok(text
        .lines()
        .find(|line| line.starts_with("hunter_api_read_model_leads "))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|value| value.parse::<f64>().ok())
        .map(|value| value as u64))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_models_answers_equal_clickhouses_for_random_questions() -> anyhow::Result<()> {
    let mut deployment = Deployment::new(&[])?;
    let (ok, output) = run_hunter(&["migrate"], &deployment.env, Duration::from_secs(60))?;
    anyhow::ensure!(ok, "migrate: {output}");
    let database = deployment.env["HUNTER_CLICKHOUSE_DATABASE"].clone();
    let clickhouse = deployment.clickhouse.clone();
    let mut rng = StdRng::seed_from_u64(17);
    // 600 leads in three inserts, every fifth with an older version inserted after the newer.
    let mut rows = Vec::new();
    let lead_id = |n: u64| {
        if n.is_multiple_of(7) {
            format!("A{n:04}-Mixed")
        } else {
            format!("lead-{n:04}")
        }
    };
    for n in 0..600u64 {
        let id = lead_id(n);
        rows.push(random_row(&mut rng, &id, 1_000 + n % 3));
        if n % 5 == 0 {
            rows.push(random_row(&mut rng, &id, 10));
        }
    }
    for chunk in rows.chunks(rows.len().div_ceil(3)) {
        insert(&clickhouse, &database, chunk).await?;
    }

    deployment
        .env
        .insert("HUNTER_API_CACHE_MS".into(), "0".into());
    let model_port = free_port();
    deployment.start_role_on("api", model_port).await?;
    deployment
        .env
        .insert("HUNTER_API_READ_MODEL".into(), "off".into());
    let plain_port = free_port();
    deployment.start_role_on("api", plain_port).await?;
    let model = format!("http://127.0.0.1:{model_port}");
    let plain = format!("http://127.0.0.1:{plain_port}");
    let token = deployment.api_token.clone();
    let built = wait_for("the read model built", Duration::from_secs(60), || async {
        Ok((model_leads(&model).await? == Some(600)).then_some(()))
    })
    .await;
    if let Err(error) = built {
        anyhow::bail!("{error}\n{}", deployment.logs());
    }
    anyhow::ensure!(
        model_leads(&plain).await?.is_none(),
        "HUNTER_API_READ_MODEL=off builds no model"
    );

    let compare = |path: String| {
        let (model, plain, token) = (model.clone(), plain.clone(), token.clone());
        async move {
            let (model_status, from_model) = get(&model, &token, &path).await?;
            let (plain_status, from_clickhouse) = get(&plain, &token, &path).await?;
            anyhow::ensure!(
                model_status == StatusCode::OK && plain_status == StatusCode::OK,
                "{path}: {model_status} {from_model} / {plain_status} {from_clickhouse}"
            );
            anyhow::ensure!(
                from_model == from_clickhouse,
                "{path}: the model answered\n{from_model}\nClickHouse answered\n{from_clickhouse}"
            );
            Ok::<_, anyhow::Error>(from_model)
        }
    };
    let mut pages = 0;
    let mut nonempty = 0;
    for _ in 0..60 {
        let question = random_question(&mut rng);
        let mut path = format!("/api/v1/leads?{question}");
        for _ in 0..3 {
            let page = compare(path.clone()).await?;
            pages += 1;
            if page["total"].as_u64().unwrap_or(0) > 0 {
                nonempty += 1;
            }
            match page["next_cursor"].as_str() {
                Some(cursor) => path = format!("/api/v1/leads?{question}&cursor={cursor}"),
                None => break,
            }
        }
    }
    println!("{pages} pages equal ({nonempty} not empty)");
    anyhow::ensure!(
        nonempty > pages / 2,
        "the questions are too narrow to compare much"
    );
    // The model's rows came from its row store. (Rows come from ClickHouse while the model is
    // not fresh, a poll taking over a second on a loaded machine, so not all of them need to.)
    let (store, from_clickhouse) = rows_served(&model).await?;
    println!("model api rows: {store} from the row store, {from_clickhouse} from ClickHouse");
    anyhow::ensure!(
        store > 0.0 && store >= 4.0 * from_clickhouse,
        "rows from the store {store}, from ClickHouse {from_clickhouse}"
    );
    let (plain_store, _) = rows_served(&plain).await?;
    anyhow::ensure!(
        plain_store == 0.0,
        "the model is off, yet {plain_store} rows from a store"
    );

    // Updates: newer versions of 50 leads and 20 new leads; both paths agree once the model
    // has them, and the newest version is the one shown.
    let mut updates = Vec::new();
    let updated: std::collections::HashSet<String> =
        (0..50u64).map(|n| lead_id(n * 11 + 1)).collect();
    for id in &updated {
        updates.push(random_row(&mut rng, id, 5_000));
    }
    for n in 600..620u64 {
        updates.push(random_row(&mut rng, &format!("lead-{n:04}"), 1));
    }
    insert(&clickhouse, &database, &updates).await?;
    let caught_up = wait_for(
        "the updates in the model",
        Duration::from_secs(30),
        || async {
            let (_, page) = get(&model, &token, "/api/v1/leads?limit=1&sort=-score").await?;
            let (_, detail) = get(&plain, &token, "/api/v1/leads/lead-0012").await?;
            Ok(
                (page["total"].as_u64() == Some(620) && detail["lead"]["version"] == 5_000)
                    .then_some(()),
            )
        },
    )
    .await;
    if let Err(error) = caught_up {
        anyhow::bail!("{error}\n{}", deployment.logs());
    }
    for _ in 0..40 {
        let question = random_question(&mut rng);
        compare(format!("/api/v1/leads?{question}")).await?;
    }
    let (store_after, _) = rows_served(&model).await?;
    anyhow::ensure!(
        store_after > store,
        "the updated answers were not served from the row store"
    );
    // Every lead's version in the model's pages is its newest.
    let mut cursor: Option<String> = None;
    let mut seen = 0;
    loop {
        let mut path = "/api/v1/leads?limit=500&sort=company".to_owned();
        if let Some(cursor) = &cursor {
            path.push_str(&format!("&cursor={cursor}"));
        }
        let page = compare(path).await?;
        for item in page["items"].as_array().unwrap() {
            let id = item["lead_id"].as_str().unwrap();
            if updated.contains(id) {
                anyhow::ensure!(item["version"] == 5_000, "{id}: {item}");
            }
            seen += 1;
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    anyhow::ensure!(seen == 620, "{seen} leads paged through");
    deployment.teardown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lead_written_by_the_sink_is_in_the_api_about_a_second_later() -> anyhow::Result<()> {
    let mut deployment = Deployment::new(&[])?;
    let (ok, output) = run_hunter(&["migrate"], &deployment.env, Duration::from_secs(60))?;
    anyhow::ensure!(ok, "migrate: {output}");
    deployment.start_role("api").await?;
    deployment.start_role_on("sink", free_port()).await?;
    let api = deployment.api.clone();
    let built = wait_for("the read model built", Duration::from_secs(60), || async {
        Ok((model_leads(&api).await? == Some(0)).then_some(()))
    })
    .await;
    if let Err(error) = built {
        anyhow::bail!("{error}\n{}", deployment.logs());
    }
    let raw = generated_referrals(1, 91)?.remove(0);
    let referral = Referral::from_api_json(&raw.to_string(), Ingest::default())?;
    let lead = Lead::from_referral(&referral, Timestamp::now())?;
    let id = lead.lead_id.clone();
    let clickhouse = deployment.clickhouse.clone();

    // The same lead in two versions: each must show in the API, the newer replacing the older.
    let newer = Lead {
        status: Some("Closed".into()),
        substatus: Some("Won".into()),
        version: lead.version + 1,
        ..lead.clone()
    };
    let mut lags = Vec::new();
    for version in [&lead, &newer] {
        deployment
            .produce_leads(std::slice::from_ref(version))
            .await?;
        let sql = format!(
            "SELECT toString(count()) AS n FROM leads WHERE lead_id = '{id}' AND version = {}",
            version.version
        );
        let in_clickhouse = wait_for(
            "the lead in clickhouse",
            Duration::from_secs(60),
            || async {
                let rows = clickhouse.rows(&sql).await?;
                Ok((rows[0]["n"].as_str() == Some("1")).then(Instant::now))
            },
        )
        .await?;
        let path = "/api/v1/leads?limit=10".to_owned();
        let in_api = wait_for("the lead in the api", Duration::from_secs(10), || async {
            let (status, page) = deployment.get(&path).await?;
            anyhow::ensure!(status == StatusCode::OK, "{status} {page}");
            let items = page["items"].as_array().cloned().unwrap_or_default();
            Ok((page["total"] == 1
                && items.len() == 1
                && items[0]["lead_id"] == id.as_str()
                && items[0]["version"] == version.version)
                .then(Instant::now))
        })
        .await;
        let in_api = match in_api {
            Ok(at) => at,
            Err(error) => anyhow::bail!("{error}\n{}", deployment.logs()),
        };
        lags.push(in_api.saturating_duration_since(in_clickhouse));
    }
    let (_, closed) = deployment.get("/api/v1/leads?status=Closed").await?;
    anyhow::ensure!(closed["total"] == 1, "the newer version filters: {closed}");
    let (_, new) = deployment.get("/api/v1/leads?status=New,Active").await?;
    anyhow::ensure!(new["total"] == 0, "the older version is gone: {new}");
    println!(
        "visible in the api after clickhouse: {} ms (first version), {} ms (newer version)",
        lags[0].as_millis(),
        lags[1].as_millis()
    );
    deployment.teardown().await;
    Ok(())
}
