// The demo's page in Debian's headless chromium (playwright-core, no browser download): what a
// newcomer sees after deploy/local/demo.sh. Run by tests/e2e/demo.rs, which starts the demo's
// setup (the simulator's generated data and DNS, the example USD rates) and passes:
//
//   HUNTER_WEB_URL        the API's base URL (serves the page at /)
//   HUNTER_WEB_TOKEN      the admin token
//   HUNTER_WEB_EXPECT     JSON: { total, providers: { provider: leads }, microsoft365_companies }
//   HUNTER_WEB_ARTIFACTS  directory for screenshots (demo-leads.png, demo-microsoft365.png)
//   HUNTER_CHROMIUM       the browser (default /usr/bin/chromium)
//
// Exits non-zero with the failed step on the first wrong thing it sees.
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";
import { join } from "node:path";

const url = process.env.HUNTER_WEB_URL;
const token = process.env.HUNTER_WEB_TOKEN;
const expect = JSON.parse(process.env.HUNTER_WEB_EXPECT);
const artifacts = process.env.HUNTER_WEB_ARTIFACTS;
mkdirSync(artifacts, { recursive: true });

let step = "start";
function check(condition, message) {
  if (!condition) throw new Error(`${step}: ${message}`);
}
async function shot(page, name) {
  await page.screenshot({ path: join(artifacts, `${name}.png`), fullPage: true });
}
async function summary(page) {
  return (await page.locator("#summary").textContent()).trim();
}
async function waitForSummary(page, text) {
  await page.waitForFunction((wanted) => document.getElementById("summary").textContent.trim() === wanted, text, { timeout: 30000 })
    .catch(async () => { throw new Error(`${step}: summary is ${JSON.stringify(await summary(page))}, wanted ${JSON.stringify(text)}`); });
}
// The cells of one column (by its header) of every lead row shown.
async function column(page, header) {
  const headers = (await page.locator("thead").first().locator("th").allTextContents()).map((h) => h.trim());
  const index = headers.indexOf(header);
  check(index >= 0, `no column ${header}: ${headers}`);
  return (await page.locator(`#rows tr[data-lead-id] td:nth-child(${index + 1})`).allTextContents()).map((c) => c.trim());
}

// The page shows providers by name; the API's values (the filter's option values) stay as they are.
const providerLabels = { microsoft365: "Microsoft 365", google_workspace: "Google Workspace", other: "Other", unknown: "Unknown" };
// The raw provider of every lead row shown (the Provider cell's data-provider).
async function providerValues(page) {
  return page.locator("#rows tr[data-lead-id] td[data-provider]").evaluateAll((cells) => cells.map((c) => c.dataset.provider));
}

const browser = await chromium.launch({
  executablePath: process.env.HUNTER_CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
let page;
try {
  const context = await browser.newContext({ viewport: { width: 1600, height: 1000 } });
  page = await context.newPage();
  const pageErrors = [];
  page.on("pageerror", (error) => pageErrors.push(String(error)));

  step = "sign in and see the demo's leads";
  await page.goto(url + "/");
  await page.locator("#token").waitFor({ state: "visible" });
  await page.fill("#token", token);
  await page.click("#token-form button");
  await waitForSummary(page, `50 of ${expect.total} leads`);

  step = "the first page shows company domains, mail providers and USD values";
  const domains = await column(page, "Domain");
  const providers = await column(page, "Provider");
  const deals = await column(page, "Deal value");
  const usd = await column(page, "USD value");
  check(domains.length === 50, `${domains.length} rows`);
  const filled = domains.filter(Boolean);
  check(filled.length > 0 && filled.every((d) => /^[a-z0-9-]+\.example$/.test(d)), `domains: ${domains}`);
  const shown = new Set(providers);
  for (const label of ["Microsoft 365", "Google Workspace"]) {
    check(shown.has(label), `no ${label} among the providers shown: ${[...shown]}`);
  }
  check(providers.every((p) => Object.values(providerLabels).includes(p)), `providers (labels, never raw values): ${providers}`);
  // Each label stands for the lead's API value.
  const raw = await providerValues(page);
  check(raw.length === providers.length && raw.every((value, i) => providerLabels[value] === providers[i]), `labels ${providers} for values ${raw}`);
  // The filter's options: the same labels, the API's values.
  const options = await page.locator("#f-provider option").evaluateAll((os) => os.filter((o) => o.value).map((o) => [o.value, o.textContent.trim()]));
  check(JSON.stringify(options) === JSON.stringify(Object.entries(providerLabels)), `filter options: ${JSON.stringify(options)}`);
  // Every row with a deal value has its USD value (the demo's rates cover every currency).
  deals.forEach((deal, i) => {
    check(!deal || /^[\d.,]+ USD$/.test(usd[i]), `row ${i}: deal value ${deal} has USD value ${JSON.stringify(usd[i])}`);
  });
  check(usd.some((value) => value.endsWith(" USD")), `no USD values: ${usd}`);
  check(deals.some((deal) => deal && !deal.endsWith(" USD")), `no deal in another currency on the first page: ${deals}`);
  await shot(page, "demo-leads");

  step = "the Microsoft 365 filter lists the headline's companies";
  const m365 = expect.providers.microsoft365;
  await page.selectOption("#f-provider", "microsoft365");
  await waitForSummary(page, `${Math.min(50, m365)} of ${m365} leads`);
  for (let loaded = Math.min(50, m365); loaded < m365;) {
    await page.click("#more");
    loaded = Math.min(loaded + 50, m365);
    await waitForSummary(page, `${loaded} of ${m365} leads`);
  }
  const m365Providers = new Set(await column(page, "Provider"));
  check(m365Providers.size === 1 && m365Providers.has("Microsoft 365"), `providers after the filter: ${[...m365Providers]}`);
  const companies = new Set(await column(page, "Domain"));
  check(!companies.has(""), "a Microsoft 365 lead without a domain");
  check(companies.size === expect.microsoft365_companies, `${companies.size} Microsoft 365 companies on the page, wanted ${expect.microsoft365_companies}`);
  await page.evaluate(() => window.scrollTo(0, 0));
  await shot(page, "demo-microsoft365");

  step = "the other providers filter too";
  for (const provider of ["google_workspace", "other", "unknown"]) {
    const total = expect.providers[provider];
    await page.selectOption("#f-provider", provider);
    await waitForSummary(page, `${Math.min(50, total)} of ${total} leads`);
    const seen = new Set(await column(page, "Provider"));
    check(seen.size === 1 && seen.has(providerLabels[provider]), `providers after filtering ${provider}: ${[...seen]}`);
    const values = new Set(await providerValues(page));
    check(values.size === 1 && values.has(provider), `values after filtering ${provider}: ${[...values]}`);
  }
  await page.selectOption("#f-provider", "");
  await waitForSummary(page, `50 of ${expect.total} leads`);
  // The overview above the table, where the page has one (issue 16), goes into the screenshot.
  await shot(page, "demo-page");

  check(pageErrors.length === 0, `errors on the page: ${pageErrors}`);
  console.log("demo page checks passed");
} catch (error) {
  console.error(String(error && error.stack || error));
  if (page) await shot(page, "demo-failure").catch(() => {});
  process.exitCode = 1;
} finally {
  await browser.close();
}
