//! The demo as a newcomer sees it (`deploy/local/demo.sh`): the same generated data, the
//! simulator's DNS and the example USD rates (`deploy/local/demo.env`, read here), the real
//! `hunter` binary, broker and ClickHouse, and the page in headless Chromium
//! (`tests/browser/demo.mjs`): every lead has a company domain, mail providers are filled in
//! (Microsoft 365, Google Workspace, other, unknown in the documented mix), deal values have USD
//! values, and the Microsoft 365 filter lists the headline's 55 companies. Screenshots land in
//! `target/browser-artifacts/`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use hunter_e2e::{Deployment, free_port, wait_for};
use serde_json::json;

/// The headline of docs/demo.md: distinct customer domains on Microsoft 365 in the demo data.
const MICROSOFT365_COMPANIES: u64 = 55;
/// Customer domains in the demo data (docs/demo.md).
const COMPANY_DOMAINS: u64 = 120;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// `deploy/local/demo.env`: KEY=VALUE lines, `#` comments.
fn demo_env() -> anyhow::Result<HashMap<String, String>> {
    let text = std::fs::read_to_string(repo().join("deploy/local/demo.env"))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect())
}

async fn count(deployment: &Deployment, sql: &str) -> anyhow::Result<u64> {
    let rows = deployment.clickhouse.rows(sql).await?;
    Ok(rows[0]["n"].as_str().unwrap_or("0").parse()?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_page_shows_domains_providers_and_usd_values() -> anyhow::Result<()> {
    hunter_e2e::browser::browser_dir()?;
    let demo = demo_env()?;
    let referrals: u64 = demo["HUNTER_DEMO_REFERRALS"].parse()?;
    let seed = demo["HUNTER_DEMO_SEED"].clone();

    // The simulator generates the data itself, as demo.sh has it do; its DNS on a free port
    // (demo.sh's fixed 18053 may be taken on a shared machine).
    let mut deployment = Deployment::new(&[])?;
    let dns = format!("127.0.0.1:{}", free_port());
    for key in [
        "HUNTER_ENRICH_DNS_TIMEOUT_MS",
        "HUNTER_ENRICH_USD_RATES",
        "HUNTER_ENRICH_DNS_SERVER",
    ] {
        deployment.env.insert(key.into(), demo[key].clone());
    }
    deployment
        .env
        .insert("HUNTER_ENRICH_DNS_SERVER".into(), dns.clone());
    let generate = referrals.to_string();
    deployment
        .start_simulator(&[
            "--generate",
            &generate,
            "--seed",
            &seed,
            "--dns-listen",
            &dns,
        ])
        .await?;
    deployment.login_and_migrate()?;
    deployment.start_role("all").await?;
    let waited = wait_for(
        "every demo referral as a live lead",
        Duration::from_secs(180),
        || async {
            let n = count(
                &deployment,
                "SELECT toString(count()) AS n FROM leads FINAL",
            )
            .await?;
            Ok((n == referrals).then_some(()))
        },
    )
    .await;
    if let Err(error) = waited {
        anyhow::bail!("{error}\n{}", deployment.logs());
    }

    // What enrichment made of it, in ClickHouse.
    let companies = count(
        &deployment,
        "SELECT toString(uniqExact(company_domain)) AS n FROM leads FINAL WHERE company_domain LIKE '%.example'",
    )
    .await?;
    assert_eq!(companies, COMPANY_DOMAINS, "{}", deployment.logs());
    let m365_companies = count(
        &deployment,
        "SELECT toString(uniqExact(company_domain)) AS n FROM leads FINAL WHERE email_provider = 'microsoft365'",
    )
    .await?;
    assert_eq!(m365_companies, MICROSOFT365_COMPANIES);
    // Every provider answer came from the DNS: no timeout, and the failures are the
    // no-such-domain / no-MX / null-MX domains (dns_error), or leads without a contact.
    let timeouts = count(
        &deployment,
        "SELECT toString(count()) AS n FROM leads FINAL WHERE email_provider_source = 'dns_timeout'",
    )
    .await?;
    assert_eq!(timeouts, 0, "MX lookups timed out");
    let mut providers = serde_json::Map::new();
    for row in deployment
        .clickhouse
        .rows("SELECT email_provider AS p, toString(count()) AS n FROM leads FINAL GROUP BY p")
        .await?
    {
        let n: u64 = row["n"].as_str().unwrap_or("0").parse()?;
        providers.insert(row["p"].as_str().unwrap_or_default().to_owned(), json!(n));
    }
    for provider in ["microsoft365", "google_workspace", "other", "unknown"] {
        assert!(
            providers.get(provider).and_then(|n| n.as_u64()) > Some(0),
            "no {provider} leads: {providers:?}"
        );
    }
    // Every currency of the data has a rate: each deal value has a USD value.
    let without_usd = count(
        &deployment,
        "SELECT toString(count()) AS n FROM leads FINAL WHERE deal_value IS NOT NULL AND deal_value_usd IS NULL",
    )
    .await?;
    assert_eq!(without_usd, 0, "deal values without a USD value");

    let expect = json!({
        "total": referrals,
        "providers": providers,
        "microsoft365_companies": MICROSOFT365_COMPANIES,
    });
    hunter_e2e::browser::run_script(
        "demo.mjs",
        &[
            ("HUNTER_WEB_URL", deployment.api.clone()),
            ("HUNTER_WEB_TOKEN", deployment.api_token.clone()),
            ("HUNTER_WEB_EXPECT", expect.to_string()),
        ],
        "demo page checks passed",
        || deployment.logs(),
    )
    .await?;
    assert!(
        repo()
            .join("target/browser-artifacts/demo-leads.png")
            .exists()
    );
    deployment.teardown().await;
    Ok(())
}
