// The page's dead-letter view in Debian's headless chromium (playwright-core), run by
// tests/e2e/dlq.rs against a real deployment holding one dead letter:
//
//   HUNTER_WEB_URL        the API's base URL (serves the page at /)
//   HUNTER_WEB_TOKEN      the admin token;  HUNTER_WEB_READ_TOKEN  a read-only token
//   HUNTER_WEB_DLQ_ID     the dead letter's id (PARTITION:OFFSET)
//   HUNTER_WEB_ARTIFACTS  directory for screenshots
//   HUNTER_CHROMIUM       the browser (default /usr/bin/chromium)
//
// The read token sees the dead letter and is refused the replay (a toast, the row stays
// pending); the admin token replays it (a toast, the row says replayed). Exits non-zero with the
// failed step on the first wrong thing it sees.
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";
import { join } from "node:path";

const url = process.env.HUNTER_WEB_URL;
const id = process.env.HUNTER_WEB_DLQ_ID;
const artifacts = process.env.HUNTER_WEB_ARTIFACTS;
mkdirSync(artifacts, { recursive: true });

let step = "start";
async function toast(page, pattern) {
  const locator = page.locator("#toast");
  await locator.filter({ hasText: pattern }).waitFor({ state: "visible", timeout: 60000 })
    .catch(async () => { throw new Error(`${step}: no toast matching ${pattern}; the toast says ${JSON.stringify(await locator.textContent())}`); });
  return (await locator.textContent()).trim();
}
async function openDeadLetters(page, token) {
  await page.goto(url + "/");
  await page.locator("#token").waitFor({ state: "visible" });
  await page.fill("#token", token);
  await page.click("#token-form button");
  await page.click("#dlq-open");
  const row = page.locator(`#dlq-rows tr[data-dlq-id="${id}"]`);
  await row.waitFor({ state: "visible", timeout: 15000 })
    .catch(async () => { throw new Error(`${step}: no row ${id}: ${await page.locator("#dlq-rows").textContent()}`); });
  return row;
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
  step = "read token: listed, replay refused";
  let row = await openDeadLetters(page, process.env.HUNTER_WEB_READ_TOKEN);
  if (!(await row.textContent()).includes("pending")) throw new Error(`${step}: ${await row.textContent()}`);
  await row.locator("button.dlq-replay").click();
  await toast(page, /Replay failed: .*admin token/);
  await page.screenshot({ path: join(artifacts, "dlq-read-token.png"), fullPage: true });

  step = "admin token: replayed";
  const admin = await (await browser.newContext({ viewport: { width: 1400, height: 900 } })).newPage();
  page = admin;
  row = await openDeadLetters(admin, process.env.HUNTER_WEB_TOKEN);
  await row.locator("button.dlq-replay").click();
  await toast(admin, /Replayed 1, skipped 0/);
  // The view reloads at once; the sink records the replay with its next batch: reopen until shown.
  for (let attempt = 0; attempt < 30; attempt++) {
    await admin.click("#dlq-close");
    await admin.click("#dlq-open");
    await admin.waitForTimeout(1000);
    const text = await admin.locator(`#dlq-rows tr[data-dlq-id="${id}"]`).textContent();
    if (/replayed|failed again/.test(text)) break;
    if (attempt === 29) throw new Error(`${step}: the row still says ${text}`);
  }
  await admin.screenshot({ path: join(artifacts, "dlq-replayed.png"), fullPage: true });
  console.log("dead-letter view checks passed");
} catch (error) {
  if (page) await page.screenshot({ path: join(artifacts, "dlq-failure.png"), fullPage: true }).catch(() => {});
  console.error(error.message);
  process.exitCode = 1;
} finally {
  await browser.close();
}
