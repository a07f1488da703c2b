//! The web page in headless Chromium (Debian's `chromium`, driven by playwright-core from
//! npm: `tests/browser/web.mjs`) against a real deployment: sign in, the leads table, paging,
//! filters, the detail modal, the sync button's toasts and the status indicator, a read-only
//! token; under the page's Content-Security-Policy (no violation reported, and an inline script
//! is blocked), a referral named `<img src=x onerror=alert(1)>` shown as text, and the 409 of a
//! sync while the source is disabled shown as a toast. Screenshots land in
//! `target/browser-artifacts/`.

use hunter_e2e::{Deployment, Process, free_port, generated_referrals, wait_healthy};
use serde_json::json;

const REFERRALS: usize = 120;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_lists_filters_opens_details_and_follows_a_sync() -> anyhow::Result<()> {
    hunter_e2e::browser::browser_dir()?;
    let mut referrals = generated_referrals(REFERRALS, 21)?;
    // Markup in the data is text on the page, never HTML (the page uses textContent only).
    let xss = "<img src=x onerror=alert(1)>";
    referrals[9]["name"] = json!(xss);
    referrals[9]["customerProfile"]["name"] = json!(xss);
    let xss_id = referrals[9]["id"].clone();
    let mut deployment = Deployment::new(&referrals)?;
    // A real token: `read-only-token-for-the-browser` is refused at start (docs/security.md).
    let read_token = format!("read-{}", uuid::Uuid::new_v4().simple());
    deployment
        .env
        .insert("HUNTER_API_READ_TOKEN".into(), read_token.clone());
    deployment.run_all_until_leads(REFERRALS as u64).await?;

    // What the page must show, from the simulator's data.
    let new_total = referrals.iter().filter(|r| r["status"] == "New").count();
    let lead = &referrals[7];
    let search = lead["customerProfile"]["name"]
        .as_str()
        .unwrap()
        .split_whitespace()
        .last()
        .unwrap()
        .to_owned();
    let rows = deployment
        .clickhouse
        .rows(&format!(
            "SELECT toString(count()) AS n FROM leads FINAL WHERE positionCaseInsensitiveUTF8(ifNull(company_name, ''), '{s}') > 0 OR positionCaseInsensitiveUTF8(ifNull(name, ''), '{s}') > 0 OR positionCaseInsensitiveUTF8(ifNull(company_domain, ''), '{s}') > 0",
            s = search.replace('\'', "")
        ))
        .await?;
    let search_total: u64 = rows[0]["n"].as_str().unwrap().parse()?;
    let expect = json!({
        "total": REFERRALS,
        "new_total": new_total,
        "search": search,
        "search_total": search_total,
        "lead_id": lead["id"],
        "lead_name": lead["name"],
        "xss": xss,
        "xss_id": xss_id,
    });
    // A second API on the same data with the source switched off: its sync button must say so.
    let disabled_port = free_port();
    let mut disabled_env = deployment.env.clone();
    disabled_env.insert("HUNTER_PARTNER_CENTER_ENABLED".into(), "false".into());
    disabled_env.insert(
        "HUNTER_API_LISTEN".into(),
        format!("127.0.0.1:{disabled_port}"),
    );
    let disabled_url = format!("http://127.0.0.1:{disabled_port}");
    let _disabled_api = Process::spawn(
        "run-api-disabled",
        &["run", "api"],
        &disabled_env,
        deployment.dir.path(),
    )?;
    wait_healthy(
        "the api with the source disabled",
        &format!("{disabled_url}/healthz"),
        std::time::Duration::from_secs(30),
    )
    .await?;
    hunter_e2e::browser::run_script(
        "web.mjs",
        &[
            ("HUNTER_WEB_URL", deployment.api.clone()),
            ("HUNTER_WEB_TOKEN", deployment.api_token.clone()),
            ("HUNTER_WEB_READ_TOKEN", read_token),
            ("HUNTER_WEB_DISABLED_URL", disabled_url),
            ("HUNTER_WEB_EXPECT", expect.to_string()),
        ],
        "web page checks passed",
        || deployment.logs(),
    )
    .await?;
    deployment.teardown().await;
    Ok(())
}
