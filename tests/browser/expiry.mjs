// The page's expiry column, filter and sort in Debian's headless chromium (playwright-core).
// Run by tests/e2e/expiry.rs, which starts a real deployment and passes what to expect:
//
//   HUNTER_WEB_URL        the API's base URL (serves the page at /)
//   HUNTER_WEB_TOKEN      a token
//   HUNTER_WEB_EXPECT     JSON: { soon: [lead ids expiring within 48 h, soonest first],
//                         estimated: the id among them whose expiry is estimated }
//   HUNTER_WEB_ARTIFACTS  directory for screenshots
//   HUNTER_CHROMIUM       the browser (default /usr/bin/chromium)
//
// Exits non-zero with the failed step on the first wrong thing it sees.
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";
import { join } from "node:path";

const url = process.env.HUNTER_WEB_URL;
const expect = JSON.parse(process.env.HUNTER_WEB_EXPECT);
const artifacts = process.env.HUNTER_WEB_ARTIFACTS;
mkdirSync(artifacts, { recursive: true });

let step = "start";
function check(condition, message) {
  if (!condition) throw new Error(`${step}: ${message}`);
}
const browser = await chromium.launch({
  executablePath: process.env.HUNTER_CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
let page;
try {
  page = await (await browser.newContext({ viewport: { width: 1600, height: 900 } })).newPage();
  step = "sign in";
  await page.goto(url + "/");
  await page.locator("#token").waitFor({ state: "visible" });
  await page.fill("#token", process.env.HUNTER_WEB_TOKEN);
  await page.click("#token-form button");
  await page.locator("#rows tr[data-lead-id]").first().waitFor({ timeout: 15000 });

  step = "filter: expiring within 48 h, sorted expiring first";
  await page.selectOption("#f-expiring", "48");
  await page.selectOption("#f-sort", "expires_at");
  const wanted = `${expect.soon.length} of ${expect.soon.length} leads`;
  await page.waitForFunction((text) => document.getElementById("summary").textContent.trim() === text, wanted, { timeout: 15000 })
    .catch(async () => { throw new Error(`${step}: summary ${JSON.stringify(await page.locator("#summary").textContent())}, wanted ${wanted}`); });
  const ids = await page.locator("#rows tr[data-lead-id]").evaluateAll((trs) => trs.map((tr) => tr.dataset.leadId));
  check(JSON.stringify(ids) === JSON.stringify(expect.soon), `rows ${JSON.stringify(ids)}`);

  step = "the Expires column";
  const header = await page.locator("thead th").allTextContents();
  check(header.includes("Expires"), `headers ${JSON.stringify(header)}`);
  for (const id of expect.soon) {
    const cell = page.locator(`#rows tr[data-lead-id="${id}"] td.expires`);
    const text = (await cell.textContent()).trim();
    check(/^\d{4}-\d{2}-\d{2} \d{2}:\d{2}/.test(text), `${id}: ${JSON.stringify(text)}`);
    check(await cell.evaluate((td) => td.classList.contains("soon")), `${id} is not marked as expiring soon`);
    const estimated = text.includes("estimated");
    check(estimated === (id === expect.estimated), `${id}: ${JSON.stringify(text)}`);
  }
  await page.screenshot({ path: join(artifacts, "expiry-soon.png"), fullPage: true });

  step = "the detail shows the expiry";
  await page.locator(`#rows tr[data-lead-id="${expect.estimated}"] td`).first().click();
  await page.locator("#detail[open]").waitFor({ timeout: 15000 });
  const detail = await page.locator("#detail-lead").textContent();
  check(detail.includes("estimated: created + 14 days"), JSON.stringify(detail));
  check(detail.includes("Partner team"), JSON.stringify(detail));
  console.log("expiry page checks passed");
} catch (error) {
  console.error(String(error.stack || error));
  if (page) await page.screenshot({ path: join(artifacts, "expiry-failure.png"), fullPage: true }).catch(() => {});
  process.exitCode = 1;
} finally {
  await browser.close();
}
