// The page's status indicator while `hunter backfill` runs, in Debian's headless chromium
// (playwright-core). Run by tests/e2e/web_backfill.rs, which starts a deployment whose simulator
// pages slowly, waits for this script's "signed in" line, then runs the backfill. Gets:
//
//   HUNTER_WEB_URL        the API's base URL (serves the page at /)
//   HUNTER_WEB_TOKEN      the admin token
//   HUNTER_WEB_EXPECT     JSON: { estimate (the first poll's fetched count), total (leads) }
//   HUNTER_WEB_ARTIFACTS  directory for screenshots (backfill-running.png, backfill-ended.png)
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

// `backfill: 120/~211 (56%) referrals read, 0 published, 12 pages, 24s` (app.js backfillText).
const PROGRESS = /^backfill: (\d+)\/~(\d+) \((\d+)%\) referrals read, (\d+) published, (\d+) pages, (\d+)s$/;

let step = "start";
function check(condition, message) {
  if (!condition) throw new Error(`${step}: ${message}`);
}
async function shot(page, name) {
  await page.screenshot({ path: join(artifacts, `${name}.png`), fullPage: true });
}
const statusText = (page) => page.evaluate(() => document.getElementById("sync-status-text").textContent.trim());
const statusState = (page) => page.evaluate(() => document.getElementById("sync-status").dataset.state);

const browser = await chromium.launch({
  executablePath: process.env.HUNTER_CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
let page;
try {
  const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
  page = await context.newPage();
  const pageErrors = [];
  page.on("pageerror", (error) => pageErrors.push(String(error)));

  step = "sign in";
  await page.goto(url + "/");
  await page.locator("#token").waitFor({ state: "visible" });
  await page.fill("#token", token);
  await page.click("#token-form button");
  await page.waitForFunction((wanted) => document.getElementById("summary").textContent.trim() === wanted,
    `50 of ${expect.total} leads`, { timeout: 30000 });
  console.log("signed in");

  step = "the indicator shows the running backfill's progress line";
  // The page refreshes its status every 10 s by itself; nothing here reloads it.
  await page.waitForFunction((source) => new RegExp(source).test(document.getElementById("sync-status-text").textContent.trim()),
    PROGRESS.source, { timeout: 180000, polling: 250 })
    .catch(async () => { throw new Error(`${step}: the indicator says ${JSON.stringify(await statusText(page))}`); });
  const first = await statusText(page);
  check((await statusState(page)) === "running", `state ${await statusState(page)} while it says ${first}`);
  await shot(page, "backfill-running");

  step = "the line follows the run until it ends";
  const seen = [first];
  const deadline = Date.now() + 300000;
  let text = first;
  // "syncing…" may show for one refresh if the run's state and its final record arrive apart.
  while (PROGRESS.test(text) || text === "syncing…") {
    check(Date.now() < deadline, `still ${text} after 5 minutes`);
    await page.waitForTimeout(250);
    text = await statusText(page);
    if (text !== seen[seen.length - 1]) seen.push(text);
  }
  const progress = seen.filter((line) => PROGRESS.test(line)).map((line) => line.match(PROGRESS).slice(1).map(Number));
  for (const [fetched, estimate, percent, , pages] of progress) {
    check(estimate === expect.estimate, `estimate ${estimate}, the first poll read ${expect.estimate}: ${seen}`);
    check(percent === Math.min(99, Math.floor(fetched * 100 / estimate)), `percent ${percent} of ${fetched}/${estimate}`);
    // The run's start record (nothing settled yet: with pages read ahead, the first progress
    // record comes once the first page is acknowledged) says 0 of both; any later one has both.
    check((pages >= 1 && fetched >= 1) || (pages === 0 && fetched === 0), `pages ${pages}, fetched ${fetched}`);
  }
  check(progress.some(([fetched, , , , pages]) => pages >= 1 && fetched >= 1), `no progress past the start: ${seen}`);
  for (let i = 1; i < progress.length; i++) {
    check(progress[i][0] >= progress[i - 1][0] && progress[i][4] >= progress[i - 1][4], `progress went back: ${seen}`);
  }

  step = "the end of the run";
  // The refresh that finds the run ended: the last success is the backfill's.
  check(/^synced \d+ s ago$/.test(text), `after the backfill the indicator says ${JSON.stringify(text)} (seen: ${seen.join(" | ")})`);
  check((await statusState(page)) === "idle", `state ${await statusState(page)} after the run`);
  await shot(page, "backfill-ended");
  check(pageErrors.length === 0, `errors on the page: ${pageErrors}`);
  console.log(`seen: ${seen.join(" | ")}`);
  console.log("backfill status checks passed");
} catch (error) {
  console.error(String(error && error.stack || error));
  if (page) await shot(page, "backfill-failure").catch(() => {});
  process.exitCode = 1;
} finally {
  await browser.close();
}
