// The web page in Debian's headless chromium, driven by playwright-core (no browser download).
// Run by tests/e2e/web.rs, which starts a real deployment and passes what to expect:
//
//   HUNTER_WEB_URL        the API's base URL (serves the page at /)
//   HUNTER_WEB_TOKEN      the admin token;  HUNTER_WEB_READ_TOKEN  a read-only token
//   HUNTER_WEB_EXPECT     JSON: { total, new_total, search, search_total, lead_id, lead_name,
//                         xss (a referral name that is markup), xss_id (its lead id) }
//   HUNTER_WEB_DISABLED_URL  an API on the same data with HUNTER_PARTNER_CENTER_ENABLED=false
//   HUNTER_WEB_ARTIFACTS  directory for screenshots
//   HUNTER_CHROMIUM       the browser (default /usr/bin/chromium)
//
// Exits non-zero with the failed step on the first wrong thing it sees.
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";
import { join } from "node:path";

const url = process.env.HUNTER_WEB_URL;
const token = process.env.HUNTER_WEB_TOKEN;
const readToken = process.env.HUNTER_WEB_READ_TOKEN;
const disabledUrl = process.env.HUNTER_WEB_DISABLED_URL;
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
async function toast(page, pattern) {
  const locator = page.locator("#toast");
  await locator.filter({ hasText: pattern }).waitFor({ state: "visible", timeout: 60000 })
    .catch(async () => { throw new Error(`${step}: no toast matching ${pattern}; the toast says ${JSON.stringify(await locator.textContent())}`); });
  return (await locator.textContent()).trim();
}
async function signIn(page, value) {
  await page.goto(url + "/");
  await page.locator("#token").waitFor({ state: "visible" });
  await page.fill("#token", value);
  await page.click("#token-form button");
}

const browser = await chromium.launch({
  executablePath: process.env.HUNTER_CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
let page;
try {
  const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
  page = await context.newPage();
  const consoleErrors = [];
  page.on("pageerror", (error) => consoleErrors.push(String(error)));
  // Content-Security-Policy violations, as the page sees them and as the console reports them.
  const cspConsole = [];
  page.on("console", (message) => {
    if (/Content Security Policy/i.test(message.text())) cspConsole.push(message.text());
  });
  await context.addInitScript(() => {
    window.__cspViolations = [];
    document.addEventListener("securitypolicyviolation", (event) => {
      window.__cspViolations.push(`${event.violatedDirective} ${event.blockedURI}`);
    });
  });
  const cspViolations = async () => (await page.evaluate(() => window.__cspViolations || [])).concat(cspConsole);
  // Any dialog is a script that should not have run (alert from markup in the data).
  const dialogs = [];
  page.on("dialog", async (dialog) => { dialogs.push(dialog.message()); await dialog.dismiss(); });

  step = "the page is served with its security headers";
  const first = await page.goto(url + "/");
  const served = first.headers();
  const csp = served["content-security-policy"] || "";
  check(csp.includes("frame-ancestors 'none'") && csp.includes("script-src 'self'"), `content-security-policy: ${csp}`);
  check(!csp.includes("unsafe-inline"), `the policy allows inline code: ${csp}`);
  check(served["x-content-type-options"] === "nosniff", `x-content-type-options: ${served["x-content-type-options"]}`);
  check(served["referrer-policy"] === "no-referrer", `referrer-policy: ${served["referrer-policy"]}`);

  step = "a wrong token is refused and the sign-in form comes back";
  await signIn(page, "not-the-token-0000000000");
  await toast(page, /token was refused/);
  check(await page.locator("#login").isVisible(), "the sign-in form is not shown again");
  await shot(page, "01-wrong-token");

  step = "sign in and see the leads";
  await page.fill("#token", token);
  await page.click("#token-form button");
  await waitForSummary(page, `50 of ${expect.total} leads`);
  const rows = page.locator("#rows tr[data-lead-id]");
  check((await rows.count()) === 50, `${await rows.count()} rows shown`);
  const headers = await page.locator("thead").first().locator("th").allTextContents();
  for (const column of ["Status", "Substatus", "Deal value", "USD value", "Company", "Domain", "Provider", "Score", "Updated", "Referral"]) {
    check(headers.includes(column), `column ${column} missing: ${headers}`);
  }
  await shot(page, "02-leads");

  step = "the token is kept for the browser session";
  await page.reload();
  await waitForSummary(page, `50 of ${expect.total} leads`);

  step = "load the next page";
  await page.click("#more");
  const second = Math.min(100, expect.total);
  await waitForSummary(page, `${second} of ${expect.total} leads`);
  const ids = await rows.evaluateAll((trs) => trs.map((tr) => tr.dataset.leadId));
  check(new Set(ids).size === ids.length, "a lead appears twice after paging");

  step = "filter by referral status";
  await page.selectOption("#f-status", "New");
  await waitForSummary(page, `${Math.min(50, expect.new_total)} of ${expect.new_total} leads`);
  const statuses = await page.locator("#rows tr[data-lead-id] .badge").allTextContents();
  check(statuses.length > 0 && statuses.every((s) => s === "New"), `statuses after the filter: ${statuses}`);
  await shot(page, "03-filter-new");

  step = "search by company";
  await page.selectOption("#f-status", "");
  await page.fill("#f-q", expect.search);
  await waitForSummary(page, `${Math.min(50, expect.search_total)} of ${expect.search_total} leads`);
  const companies = await page.locator("#rows tr[data-lead-id] td:nth-child(7)").allTextContents();
  const names = await page.locator("#rows tr[data-lead-id] td:nth-child(2)").allTextContents();
  const domains = await page.locator("#rows tr[data-lead-id] td:nth-child(8)").allTextContents();
  const needle = expect.search.toLowerCase();
  check(companies.every((c, i) => [c, names[i], domains[i]].some((t) => t.toLowerCase().includes(needle))), `rows not matching ${expect.search}`);
  await page.fill("#f-q", "");
  await waitForSummary(page, `50 of ${expect.total} leads`);

  step = "find a lead by its referral name and open its details";
  await page.fill("#f-q", expect.lead_name);
  const row = page.locator(`#rows tr[data-lead-id="${expect.lead_id}"]`);
  await row.waitFor({ timeout: 15000 })
    .catch(() => { throw new Error(`${step}: lead ${expect.lead_id} is not listed when searched by its name`); });
  await row.click();
  const dialog = page.locator("#detail");
  await dialog.waitFor({ state: "visible", timeout: 15000 });
  check((await page.locator("#detail-title").textContent()).trim() === expect.lead_name, `title ${await page.locator("#detail-title").textContent()}`);
  const leadFields = await page.locator("#detail-lead").textContent();
  check(leadFields.includes(expect.lead_id), "the lead id is not shown");
  const raw = JSON.parse(await page.locator("#detail-raw").textContent());
  check(raw.id === expect.lead_id, `raw referral id ${raw.id}`);
  check((await page.locator("#detail-history tr").count()) >= 1, "no history rows");
  await shot(page, "04-detail");
  await page.click("#detail-close");
  await dialog.waitFor({ state: "hidden" });
  await page.fill("#f-q", "");
  await waitForSummary(page, `50 of ${expect.total} leads`);

  step = "a referral named with markup is shown as text";
  await page.fill("#f-q", "onerror");
  const xssRow = page.locator(`#rows tr[data-lead-id="${expect.xss_id}"]`);
  await xssRow.waitFor({ timeout: 15000 })
    .catch(() => { throw new Error(`${step}: lead ${expect.xss_id} is not listed`); });
  const xssCells = await xssRow.locator("td").allTextContents();
  check(xssCells[1] === expect.xss, `the name cell shows ${JSON.stringify(xssCells[1])}`);
  check(xssCells[6] === expect.xss, `the company cell shows ${JSON.stringify(xssCells[6])}`);
  check((await page.locator("#rows img").count()) === 0, "the markup became an image element");
  await xssRow.click();
  await dialog.waitFor({ state: "visible", timeout: 15000 });
  check((await page.locator("#detail-title").textContent()) === expect.xss, "the detail title is not the text");
  check((await page.locator("#detail img").count()) === 0, "the markup became an image element in the detail");
  check((await page.locator("#detail-lead").textContent()).includes(expect.xss), "the company is not shown as text");
  await shot(page, "04b-markup-as-text");
  await page.click("#detail-close");
  await dialog.waitFor({ state: "hidden" });
  check(dialogs.length === 0, `a script from the data ran: ${dialogs}`);
  await page.fill("#f-q", "");
  await waitForSummary(page, `50 of ${expect.total} leads`);

  step = "a row click opens the modal too";
  await rows.first().click();
  await dialog.waitFor({ state: "visible", timeout: 15000 });
  await page.keyboard.press("Escape");
  await dialog.waitFor({ state: "hidden" });

  step = "sync now: toast, status follows the run to completion";
  await page.click("#sync");
  await toast(page, /Sync started/);
  await shot(page, "05-sync-started");
  const finished = await toast(page, /Sync finished|Sync failed/);
  check(/Sync finished/.test(finished), `the sync ended with: ${finished}`);
  const state = await page.locator("#sync-status").getAttribute("data-state");
  check(state === "idle", `sync status ${state} after the run`);
  check((await page.locator("#sync-status-text").textContent()).includes("synced"), "status text");
  check(!(await page.locator("#sync").isDisabled()), "the sync button stays disabled");
  await shot(page, "06-sync-finished");

  step = "a read-only token cannot sync and is told so";
  await page.click("#sign-out");
  await signIn(page, readToken);
  await waitForSummary(page, `50 of ${expect.total} leads`);
  await page.click("#sync");
  const refused = await toast(page, /Sync failed to start/);
  check(refused.includes("admin token"), `the refusal says ${refused}`);
  await shot(page, "07-read-token-sync");

  step = "a sync while the source is disabled is refused, and the page says why";
  await page.goto(disabledUrl + "/");
  await page.locator("#token").waitFor({ state: "visible" });
  await page.fill("#token", token);
  await page.click("#token-form button");
  await waitForSummary(page, `50 of ${expect.total} leads`);
  await page.click("#sync");
  const disabled = await toast(page, /Sync failed to start/);
  check(disabled.includes("HUNTER_PARTNER_CENTER_ENABLED"), `the refusal says ${disabled}`);
  await page.locator("#sync-status-text").filter({ hasText: "sync disabled" }).waitFor({ timeout: 15000 })
    .catch(async () => { throw new Error(`${step}: status ${await page.locator("#sync-status-text").textContent()}`); });
  await shot(page, "08-sync-disabled");

  step = "the page worked without any Content-Security-Policy violation";
  check(consoleErrors.length === 0, `page errors: ${consoleErrors.join("; ")}`);
  const violations = await cspViolations();
  check(violations.length === 0, `CSP violations: ${violations.join("; ")}`);
  check(dialogs.length === 0, `dialogs: ${dialogs}`);

  step = "the policy is enforced: an inline script is blocked and reported";
  // An allowed inline script runs as it is inserted; a blocked one is reported a moment later.
  const ran = await page.evaluate(() => {
    const script = document.createElement("script");
    script.textContent = "window.__inlineRan = true;";
    document.body.append(script);
    return window.__inlineRan === true;
  });
  check(!ran, "an inline script ran under the page's policy");
  await page.waitForFunction(() => (window.__cspViolations || []).some((v) => v.startsWith("script-src")), null, { timeout: 15000 })
    .catch(async () => { throw new Error(`${step}: no violation reported: ${await page.evaluate(() => window.__cspViolations)}`); });
  console.log("web page checks passed");
} catch (error) {
  console.error(String(error.stack || error));
  if (page) await shot(page, "failure").catch(() => {});
  process.exitCode = 1;
} finally {
  await browser.close();
}
