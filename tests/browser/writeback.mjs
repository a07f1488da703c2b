// Write-back from the page (docs/writeback.md) in Debian's headless chromium, driven by
// playwright-core. Run by tests/e2e/writeback.rs against a real deployment:
//
//   HUNTER_WEB_URL        the API's base URL (serves the page at /)
//   HUNTER_WEB_TOKEN      a sales token
//   HUNTER_WEB_EXPECT     JSON: { id (an incoming New referral), deal_value, currency,
//                         decline_id (another incoming New referral), conflict_id (one whose
//                         action, sent through the API, ended in conflict) }
//   HUNTER_WEB_ARTIFACTS  directory for screenshots
//   HUNTER_CHROMIUM       the browser (default /usr/bin/chromium)
//
// Accepts the referral, then marks it won (the deal value prefilled), each time waiting for the
// row to show the new status from the lead store; a decline without a reason is not sent.
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
const row = (page, id) => page.locator(`tr[data-lead-id="${id}"]`);
async function waitForRowStatus(page, id, status, substatus) {
  await page.waitForFunction(([id, status, substatus]) => {
    const tr = [...document.querySelectorAll("tr[data-lead-id]")].find((r) => r.dataset.leadId === id);
    return tr && tr.children[2].textContent.trim() === status && tr.children[3].textContent.trim() === substatus;
  }, [id, status, substatus], { timeout: 90000 }).catch(async () => {
    throw new Error(`${step}: the row shows ${JSON.stringify(await row(page, id).textContent())}, wanted ${status}/${substatus}`);
  });
}

const browser = await chromium.launch({
  executablePath: process.env.HUNTER_CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
let page;
try {
  const context = await browser.newContext({ viewport: { width: 1500, height: 900 } });
  page = await context.newPage();
  const errors = [];
  page.on("pageerror", (error) => errors.push(String(error)));
  page.on("console", (message) => { if (/Content Security Policy/i.test(message.text())) errors.push(message.text()); });

  step = "sign in with a sales token";
  await page.goto(url + "/");
  await page.locator("#token").waitFor({ state: "visible" });
  await page.fill("#token", token);
  await page.click("#token-form button");
  await row(page, expect.id).waitFor({ state: "visible", timeout: 30000 });

  step = "an action sent from elsewhere that ended in conflict shows on its row after a load";
  await row(page, expect.conflict_id).locator('.action-state[data-action-state="conflict"]')
    .waitFor({ state: "visible", timeout: 10000 })
    .catch(async () => { throw new Error(`${step}: the row shows ${JSON.stringify(await row(page, expect.conflict_id).textContent())}`); });

  step = "a decline needs a reason";
  await row(page, expect.decline_id).locator('button[data-action="decline"]').click();
  await page.locator("#act").waitFor({ state: "visible" });
  check(await page.locator("#act-reason").isVisible(), "no reason field");
  await page.click("#act-submit");
  check(await page.locator("#act").isVisible(), "the dialog closed without a reason");
  check(!(await page.$eval("#act-reason", (input) => input.checkValidity())), "an empty reason is valid");
  await page.click("#act-cancel");

  step = "accept an incoming New referral";
  const buttons = await row(page, expect.id).locator("td.work button").allTextContents();
  check(JSON.stringify(buttons) === JSON.stringify(["Accept", "Decline"]), `buttons ${JSON.stringify(buttons)}`);
  await row(page, expect.id).locator('button[data-action="accept"]').click();
  await page.locator("#act").waitFor({ state: "visible" });
  check(!(await page.locator("#act-reason").isVisible()), "accept asks for a reason");
  await page.click("#act-submit");
  await row(page, expect.id).locator(".action-state").waitFor({ state: "visible", timeout: 10000 });
  await waitForRowStatus(page, expect.id, "Active", "Accepted");
  await page.screenshot({ path: join(artifacts, "writeback-accepted.png"), fullPage: true });

  step = "win it, the deal value prefilled";
  await row(page, expect.id).locator('button[data-action="won"]').waitFor({ state: "visible", timeout: 30000 });
  await row(page, expect.id).locator('button[data-action="won"]').click();
  await page.locator("#act").waitFor({ state: "visible" });
  const value = await page.inputValue("#act-value");
  check(Number(value) === Number(expect.deal_value), `deal value ${value}, wanted ${expect.deal_value}`);
  check((await page.inputValue("#act-currency")) === expect.currency, `currency ${await page.inputValue("#act-currency")}`);
  check((await page.inputValue("#act-date")) === new Date().toISOString().slice(0, 10), "closing date is not today");
  await page.click("#act-submit");
  await waitForRowStatus(page, expect.id, "Closed", "Won");

  step = "the detail modal lists both actions as applied";
  await row(page, expect.id).locator("td").first().click();
  await page.locator("#detail").waitFor({ state: "visible" });
  await page.waitForFunction(() => document.querySelectorAll('#detail-actions [data-action-state="applied"]').length === 2, null, { timeout: 30000 })
    .catch(async () => { throw new Error(`${step}: ${await page.locator("#detail-actions").textContent()}`); });
  await page.screenshot({ path: join(artifacts, "writeback-won.png"), fullPage: true });
  check(errors.length === 0, `page errors: ${errors.join("; ")}`);
  console.log("write-back page checks passed");
} catch (error) {
  if (page) await page.screenshot({ path: join(artifacts, "writeback-failure.png"), fullPage: true }).catch(() => {});
  console.error(String(error && error.stack || error));
  process.exitCode = 1;
} finally {
  await browser.close();
}
