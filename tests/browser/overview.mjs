// The overview above the table and the Export button, in Debian's headless chromium through
// playwright-core. Run by tests/e2e/export.rs, which starts a real deployment and passes what to
// expect:
//
//   HUNTER_WEB_URL        the API's base URL (serves the page at /)
//   HUNTER_WEB_TOKEN      the admin token
//   HUNTER_WEB_EXPECT     JSON: { total, waiting, expiring, m365_companies, m365_leads, country,
//                         country_m365_leads }, counted in ClickHouse by the test
//   HUNTER_WEB_ARTIFACTS  directory for screenshots and the downloaded CSV
//   HUNTER_CHROMIUM       the browser (default /usr/bin/chromium)
//
// Exits non-zero with the failed step on the first wrong thing it sees.
import { chromium } from "playwright-core";
import { mkdirSync, readFileSync } from "node:fs";
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
  await page.waitForFunction((wanted) => document.getElementById("summary").textContent.trim() === wanted, text, { timeout: 15000 })
    .catch(async () => { throw new Error(`${step}: summary is ${JSON.stringify(await summary(page))}, wanted ${JSON.stringify(text)}`); });
}
const shown = (n) => `${Math.min(50, n)} of ${n} leads`;

const browser = await chromium.launch({
  executablePath: process.env.HUNTER_CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
let page;
try {
  const context = await browser.newContext({ viewport: { width: 1400, height: 900 }, acceptDownloads: true });
  page = await context.newPage();
  const pageErrors = [];
  page.on("pageerror", (error) => pageErrors.push(String(error)));
  page.on("console", (message) => {
    if (/Content Security Policy/i.test(message.text())) pageErrors.push(message.text());
  });

  step = "sign in: the overview shows above the table";
  await page.goto(url + "/");
  await page.locator("#token").waitFor({ state: "visible" });
  await page.fill("#token", token);
  await page.click("#token-form button");
  await waitForSummary(page, shown(expect.total));
  await page.locator("#overview").waitFor({ state: "visible", timeout: 15000 });
  const box = await page.locator("#overview").boundingBox();
  const table = await page.locator("table").first().boundingBox();
  check(box.y + box.height <= table.y, "the overview is not above the table");
  const figure = (group, label) => page.locator(`#${group} .figure`).filter({ has: page.locator(".label", { hasText: label }) });
  const value = async (group, label) => (await figure(group, label).locator(".value").textContent()).trim();
  check(await value("ov-status", "all leads") === String(expect.total), `all leads shows ${await value("ov-status", "all leads")}`);
  check(await value("ov-waiting", "incoming New") === String(expect.waiting), `waiting shows ${await value("ov-waiting", "incoming New")}`);
  check(await value("ov-waiting", "expiring within 48 h") === String(expect.expiring), `expiring shows ${await value("ov-waiting", "expiring within 48 h")}`);
  check(await value("ov-providers", "Microsoft 365") === String(expect.m365_companies), `Microsoft 365 shows ${await value("ov-providers", "Microsoft 365")}`);
  // Providers by name, never the API's values.
  const providerNames = (await page.locator("#ov-providers .figure .label").allTextContents()).map((l) => l.trim());
  check(providerNames.length > 0 && providerNames.every((l) => ["Microsoft 365", "Google Workspace", "Other", "Unknown"].includes(l)), `provider figures: ${providerNames}`);
  check(/^\$[\d,]+$/.test(await page.locator("#ov-pipeline .value").textContent()), "the pipeline is not in USD");
  check(/ago|never/.test(await page.locator("#ov-sync .value").textContent()), "no last sync");
  await shot(page, "overview-01");

  step = "a click on Microsoft 365 filters the table to its leads";
  await figure("ov-providers", "Microsoft 365").click();
  await waitForSummary(page, shown(expect.m365_leads));
  check(await page.locator("#f-provider").inputValue() === "microsoft365", "the provider filter is not set");
  check(await page.locator("#f-has-domain").inputValue() === "true", "the domain filter is not set");
  // The Provider column shows the label; the API's value is the cell's data-provider.
  const providers = await page.locator("#rows tr[data-lead-id] td:nth-child(9)").allTextContents();
  check(providers.length > 0 && providers.every((p) => p === "Microsoft 365"), `providers after the click: ${providers}`);
  const values = await page.locator("#rows tr[data-lead-id] td:nth-child(9)").evaluateAll((cells) => cells.map((c) => c.dataset.provider));
  check(values.every((v) => v === "microsoft365"), `provider values after the click: ${values}`);
  check(await figure("ov-providers", "Microsoft 365").evaluate((el) => el.classList.contains("active")), "the figure is not marked as the active filter");
  await shot(page, "overview-02-m365");

  step = "a click on the incoming New figure filters the table to those";
  await figure("ov-waiting", "incoming New").click();
  await waitForSummary(page, shown(expect.waiting));
  check(await page.locator("#f-provider").inputValue() === "", "the provider filter stayed");
  const statuses = await page.locator("#rows tr[data-lead-id] .badge").allTextContents();
  check(statuses.every((s) => s === "New"), `statuses after the click: ${statuses}`);

  step = "a click on the expiring figure filters the table to those";
  await figure("ov-waiting", "expiring within 48 h").click();
  await waitForSummary(page, shown(expect.expiring));
  check(await page.locator("#f-expiring").inputValue() === "48", "the expiry filter is not set");

  step = "Export downloads the filtered view";
  await figure("ov-providers", "Microsoft 365").click();
  await waitForSummary(page, shown(expect.m365_leads));
  await page.fill("#f-country", expect.country);
  await waitForSummary(page, shown(expect.country_m365_leads));
  const [download] = await Promise.all([
    page.waitForEvent("download", { timeout: 30000 }),
    page.click("#export"),
  ]);
  check(/^hunter-leads-\d{8}T\d{6}Z\.csv$/.test(download.suggestedFilename()), `file name ${download.suggestedFilename()}`);
  const file = join(artifacts, "overview-export.csv");
  await download.saveAs(file);
  const bytes = readFileSync(file);
  check(bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf, "no UTF-8 byte order mark");
  const text = bytes.toString("utf8").slice(1);
  // Domains, providers and countries hold no quotes or line breaks: one line per record.
  const lines = text.split("\r\n").filter((line) => line.length);
  const header = lines[0].split(",");
  check(header[0] === "lead_id", `header ${lines[0]}`);
  const records = lines.slice(1).filter((line) => /^[0-9a-f-]{36},/.test(line));
  check(records.length === expect.country_m365_leads, `${records.length} records downloaded, wanted ${expect.country_m365_leads}`);
  await shot(page, "overview-03-export");

  step = "the all-leads figure clears the filters";
  await figure("ov-status", "all leads").click();
  await waitForSummary(page, shown(expect.total));
  check(await page.locator("#f-country").inputValue() === "", "the country filter stayed");
  check(pageErrors.length === 0, `page errors: ${pageErrors.join("; ")}`);
  console.log("overview page checks passed");
} catch (error) {
  if (page) await shot(page, "overview-failure").catch(() => {});
  console.error(String(error && error.stack || error));
  process.exitCode = 1;
} finally {
  await browser.close();
}
