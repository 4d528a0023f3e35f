// payhook's dashboard end to end: real payhook and receiver processes, Debian's headless
// Chromium driven by playwright-core. Prints one line per check and "N passed, N failed".
import { spawn } from "node:child_process";
import { mkdtempSync, mkdirSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { PNG } from "pngjs";

const arg = (name) => {
  const i = process.argv.indexOf(name);
  if (i < 0 || !process.argv[i + 1]) throw new Error(`missing ${name}`);
  return process.argv[i + 1];
};
const PAYHOOK = arg("--payhook");
const OUT = arg("--out");
const ADMIN = "ui-test-admin-token-0123456789";
const ORDER = "ui-order-42";
const ODD_NAME = `Zebra <b>Night</b> & "Co"`; // markup in a name must show as text
const PAGE = 50;                                 // the dashboard's page size (app.js)
const children = [];
let passed = 0;

function check(what, ok, detail = "") {
  if (!ok) throw new Error(`${what}${detail ? `: ${detail}` : ""}`);
  passed += 1;
  console.log(`ok   ${what}`);
}

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

function start(name, args, env = {}) {
  const child = spawn(PAYHOOK, args, { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  let log = "";
  child.stdout.on("data", (d) => { log += d; });
  child.stderr.on("data", (d) => { log += d; });
  child.on("exit", (code) => { if (code) log += `\n[${name} exited ${code}]`; });
  children.push({ name, child, log: () => log });
  return child;
}

async function until(what, fn, ms = 15000) {
  const deadline = Date.now() + ms;
  let last;
  while (Date.now() < deadline) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what}${last ? ` (${last.message})` : ""}`);
}

async function api(base, method, path, body) {
  const resp = await fetch(base + path, {
    method,
    headers: { authorization: `Bearer ${ADMIN}`, "content-type": "application/json" },
    body: body && JSON.stringify(body),
  });
  const json = await resp.json().catch(() => null);
  if (!resp.ok) throw new Error(`${method} ${path}: ${resp.status} ${JSON.stringify(json)}`);
  return json;
}

/// Seeds one merchant whose callbacks go to `payhook listen`, and one delivered operation.
async function seed(dir) {
  const [apiPort, rxPort] = [await freePort(), await freePort()];
  const base = `http://127.0.0.1:${apiPort}`;
  start("serve", ["serve", "--listen", `127.0.0.1:${apiPort}`, "--database", join(dir, "payhook.db"),
    "--allow-private-targets", "--poll-interval", "100ms"], { PAYHOOK_ADMIN_TOKEN: ADMIN });
  await until("payhook serve", async () => (await fetch(`${base}/readyz`)).ok);
  const m = await api(base, "POST", "/v1/merchants",
    { name: "UI Test Shop", callback_url: `http://127.0.0.1:${rxPort}/hook` });
  start("listen", ["listen", "--port", String(rxPort), "--secret", m.signing_secret]);
  await until("payhook listen", async () => {
    try { await fetch(`http://127.0.0.1:${rxPort}/`); return true; } catch { return false; }
  });
  const op = await api(base, "POST", "/v1/operations", { merchant_id: m.id, external_id: ORDER,
    amount: 4200, currency: "UAH", kind: "purchase" });
  await api(base, "POST", "/v1/operations", { merchant_id: m.id, external_id: "ui-order-other",
    amount: 100, currency: "UAH", kind: "purchase" });
  await api(base, "POST", `/v1/operations/${op.id}/status`, { status: "success" });
  await until("the callback to be delivered", async () => {
    const { data } = await api(base, "GET", `/v1/operations/${op.id}/deliveries`);
    return data.length === 1 && data[0].state === "delivered";
  });
  check("seeded a delivered callback through payhook serve and payhook listen", true);
  return { base, op };
}

/// For the merchants page: a merchant with markup in its name whose one callback goes to a
/// closed port and is exhausted after one attempt (so recovery has something to queue), and
/// enough others for a second page.
async function seedMerchants(base) {
  const dead = await freePort();
  const zebra = await api(base, "POST", "/v1/merchants", { name: ODD_NAME,
    callback_url: `http://127.0.0.1:${dead}/hook`, retry: { interval: "100ms", max_attempts: 1 } });
  const op = await api(base, "POST", "/v1/operations", { merchant_id: zebra.id,
    external_id: "ui-zebra-1", amount: 700, currency: "UAH", kind: "purchase" });
  await api(base, "POST", `/v1/operations/${op.id}/status`, { status: "success" });
  await until("the zebra callback to be exhausted", async () => {
    const { data } = await api(base, "GET", `/v1/operations/${op.id}/deliveries`);
    return data.length === 1 && data[0].state === "exhausted";
  });
  await Promise.all(Array.from({ length: PAGE + 1 }, (_, i) =>
    api(base, "POST", "/v1/merchants", { name: `Bulk shop ${i}` })));
  check("seeded a merchant with an exhausted callback, and 51 more", true);
  return zebra;
}

/// Not blank: many pixels, several distinct colours, and real variance in brightness.
function checkScreenshot(path) {
  const png = PNG.sync.read(readFileSync(path));
  const colours = new Set();
  let sum = 0;
  let sumSq = 0;
  const n = png.width * png.height;
  for (let i = 0; i < png.data.length; i += 4) {
    const [r, g, b] = [png.data[i], png.data[i + 1], png.data[i + 2]];
    colours.add((r << 16) | (g << 8) | b);
    const y = 0.2126 * r + 0.7152 * g + 0.0722 * b;
    sum += y;
    sumSq += y * y;
  }
  const variance = sumSq / n - (sum / n) ** 2;
  check(`screenshot ${png.width}x${png.height} is not blank`,
    png.width >= 800 && colours.size > 50 && variance > 100,
    `${colours.size} colours, brightness variance ${variance.toFixed(1)}`);
}

async function screenshot(page, name) {
  mkdirSync(OUT, { recursive: true });
  const shot = join(OUT, name);
  await page.screenshot({ path: shot, fullPage: true });
  console.log(`     screenshot: ${shot}`);
  checkScreenshot(shot);
}

const merchantIds = (page) =>
  page.$$eval("#merchants tr[data-merchant-row]", (rows) => rows.map((r) => r.dataset.merchantRow));

/// The merchants page: paging, filters (a key sent only when picked), markup in a name shown
/// as text, the health the server reports (badge, filter, destination figures), pause and
/// resume as the API sees them, and recovery.
async function merchantsPage(page, base, zebra) {
  const lists = []; // every GET /v1/merchants?… the page made
  page.on("request", (r) => {
    const url = new URL(r.url());
    if (url.pathname === "/v1/merchants") lists.push(url.searchParams);
  });
  await page.click('nav.tabs [data-tab="merchants"]');
  await page.waitForSelector("#merchants tr[data-merchant-row]");
  check("the merchants page shows the first 50 merchants and More",
    (await merchantIds(page)).length === PAGE && await page.isVisible("#merchants-more"));
  await page.click("#merchants-more");
  await until("the second page", async () => (await merchantIds(page)).length === PAGE + 3);
  check("More pages on with next_after (53 merchants, then no More)",
    !(await page.isVisible("#merchants-more")) && lists.at(-1).get("after") !== null);

  await page.selectOption("#merchant-dialect", "xpay");
  await page.waitForSelector("#merchants td:has-text('No merchant matches')");
  check("the dialect filter is sent and applied", lists.at(-1).get("dialect") === "xpay");
  await page.selectOption("#merchant-dialect", "");
  await until("the unfiltered list", async () => (await merchantIds(page)).length === PAGE);

  const row = `#merchants tr[data-merchant-row="${zebra.id}"]`;
  await page.fill("#merchant-name", "zebra <B>night");
  await page.click("#merchant-filter-btn");
  await until("only the zebra merchant", async () => {
    const ids = await merchantIds(page);
    return ids.length === 1 && ids[0] === zebra.id;
  });
  check("filtering by a part of the name shows only that merchant", true);
  check("the name is shown as text, not markup",
    (await page.textContent(`${row} td.name`)) === ODD_NAME && (await page.$$(`${row} td.name *`)).length === 0);
  check("its state badge says active", (await page.textContent(`${row} td.state .badge`)) === "active");
  check("no list request sent a health key", lists.every((q) => !q.has("health")));
  await realHealth(page, base, lists, row, zebra);

  for (const [action, state] of [["pause", "paused"], ["resume", "active"]]) {
    await page.click(`${row} button[data-action="${action}"]`);
    await until(`the API to report ${state}`, async () =>
      (await api(base, "GET", `/v1/merchants/${zebra.id}`)).state === state);
    await until(`the row to show ${state}`, async () =>
      (await page.textContent(`${row} td.state .badge`)) === state);
    const other = action === "pause" ? "resume" : "pause";
    check(`${action} makes it ${state} (API and row), and the row offers ${other}`,
      (await page.$(`${row} button[data-action="${other}"]`)) !== null
        && (await page.$(`${row} button[data-action="${action}"]`)) === null);
  }

  await page.click(`${row} button[data-action="recover"]`);
  const form = `form[data-recover="${zebra.id}"]`;
  await page.waitForSelector(`${form} input[name="since"]`);
  const back = await page.$eval(`${form} input[name="since"]`, (el) => Date.now() - new Date(el.value).getTime());
  check("Recover's form defaults to 24 h ago", Math.abs(back - 864e5) <= 120000, `${back} ms ago`);
  const answered = page.waitForResponse((r) =>
    r.url().endsWith(`/v1/merchants/${zebra.id}/recover`) && r.request().method() === "POST");
  await page.click(`${form} button[type="submit"]`);
  const resp = await answered;
  const { queued } = await resp.json();
  check("the server answered the recovery", resp.status() === 200 && Number.isInteger(queued),
    `${resp.status()} ${queued}`);
  await until("the recovery's flash", async () =>
    (await page.textContent("#flash")).includes(`queued ${queued} `));
  check(`the flash shows what the server answered: queued ${queued}`, true);
  check("the exhausted callback was queued again", queued === 1, String(queued));
}

const HEALTH_STATES = ["healthy", "failing", "disabled", "unknown"];
const shownAt = (iso) => (iso ? iso.replace("T", " ").replace(/\.\d+Z$/, "Z") : "—"); // app.js's when()

/// Picks `value` in the health filter, waits for the server's answer to that request, and
/// returns the merchant ids the page then shows.
async function pickHealth(page, value) {
  const answered = page.waitForResponse((r) => {
    const url = new URL(r.url());
    return url.pathname === "/v1/merchants" && url.searchParams.get("health") === value;
  });
  await page.selectOption("#merchant-health", value);
  const resp = await answered;
  const ids = (await resp.json()).data.map((m) => m.id);
  await until(`the list filtered by health=${value}`, async () => {
    const rows = await merchantIds(page);
    return ids.length ? rows.join() === ids.join()
      : rows.length === 0 && await page.isVisible("#merchants td:has-text('No merchant matches')");
  });
  return ids;
}

/// The health the server reports for the zebra merchant (whose callback failed against a
/// closed port), as `GET /v1/merchants/{id}` has it: the row's badge, the health filter (sent
/// as `health=`, applied by the server), and each destination's figures when the row is opened.
/// Runs before recovery, which would attempt the callback again and move the figures on.
async function realHealth(page, base, lists, row, zebra) {
  const { health } = await until("the API to report the zebra destination's failure", async () => {
    const m = await api(base, "GET", `/v1/merchants/${zebra.id}`);
    return m.health?.destinations?.some((d) => d.consecutive_failures > 0) && m;
  });
  check(`the API reports the zebra merchant's health: ${health.state}, ${health.destinations.length} destination(s)`,
    HEALTH_STATES.includes(health.state) && health.state !== "unknown"
      && health.destinations.some((d) => d.url === zebra.callback_url), JSON.stringify(health));
  const reread = page.waitForResponse((r) => new URL(r.url()).pathname === "/v1/merchants");
  await page.click("#merchant-filter-btn"); // read the list again, now the API has the health
  await reread;
  let badgeText;
  await until(`the row's health badge to say ${health.state}`, async () =>
    (badgeText = await page.textContent(`${row} td.health .badge`, { timeout: 1000 })) === health.state)
    .catch(() => {});
  check(`its health badge says ${health.state}, as the API reports`, badgeText === health.state, badgeText);

  const other = HEALTH_STATES.find((s) => s !== health.state);
  check(`the health filter ${other} (sent as health=${other}) leaves it out`,
    !(await pickHealth(page, other)).includes(zebra.id) && lists.at(-1).get("health") === other);
  check(`the health filter ${health.state} (sent as health=${health.state}) shows it`,
    (await pickHealth(page, health.state)).includes(zebra.id) && lists.at(-1).get("health") === health.state
      && (await page.textContent(`${row} td.health .badge`)) === health.state);

  await page.click(`${row} td.name`);
  const details = `tr[data-merchant-details="${zebra.id}"] table.destinations`;
  await page.waitForSelector(details);
  const shown = await page.$$eval(`${details} tbody tr`, (trs) => trs.map((tr) => {
    const td = [...tr.querySelectorAll("td")];
    return { url: td[0].querySelector("code").textContent, disabled: !!td[0].querySelector(".badge.disabled"),
      cells: td.slice(1).map((c) => c.textContent.trim()) };
  }));
  const want = health.destinations.map((d) => ({ url: d.url, disabled: d.disabled,
    cells: [String(d.consecutive_failures), shownAt(d.failing_since), shownAt(d.last_success_at),
      shownAt(d.last_failure_at)] }));
  check("a clicked merchant shows each destination's URL, failures in a row and times, as the API reports",
    shown.length === want.length && want.every((w, i) => shown[i].url === w.url && shown[i].disabled === w.disabled
      && w.cells.every((c, j) => shown[i].cells[j] === c)),
    `shown ${JSON.stringify(shown)}, API ${JSON.stringify(want)}`);
  await screenshot(page, "merchants.png");

  await page.selectOption("#merchant-health", "");
  await until("the list without the health filter", async () =>
    !lists.at(-1).has("health") && (await merchantIds(page)).join() === zebra.id);
}

async function browse({ base, op }) {
  const profile = mkdtempSync(join(tmpdir(), "payhook-ui-chromium-"));
  // A fresh profile per run: playwright passes it to Chromium as --user-data-dir.
  const browser = await chromium.launchPersistentContext(profile, {
    executablePath: "/usr/bin/chromium",
    headless: true,
    viewport: { width: 1280, height: 1000 },
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  try {
    const page = await browser.newPage();
    const errors = [];
    page.on("pageerror", (e) => errors.push(e.message));
    await page.goto(`${base}/ui`);
    check("the login form is shown", await page.isVisible("#login-form"));

    await page.fill("#token", "wrong-token-that-is-long-enough");
    await page.click("#login");
    await page.waitForSelector("#login-error:not([hidden])");
    check("a wrong token is refused", (await page.textContent("#login-error")).includes("refused"));

    await page.fill("#token", ADMIN);
    await page.click("#login");
    await page.waitForSelector("#stats tbody tr[data-merchant]");
    const stats = await page.textContent("#stats tbody");
    check("merchant stats show the shop and its success rate",
      stats.includes("UI Test Shop") && stats.includes("100.0%"), stats);
    check("the admin token is kept in sessionStorage",
      (await page.evaluate(() => sessionStorage.getItem("payhook.adminToken"))) === ADMIN);
    await page.waitForSelector(`#ops tr[data-op="${op.id}"]`);
    check("the operations list shows both operations", (await page.$$("#ops tr[data-op]")).length === 2);

    await page.fill("#search-external", ORDER);
    await page.click("#search-btn");
    await page.waitForSelector("#timeline:not([hidden]) #events");
    const rows = await page.$$("#ops tr[data-op]");
    check("searching the order id finds exactly that operation", rows.length === 1);
    const timeline = await page.textContent("#timeline");
    check("the timeline shows the operation, its events and the delivered attempt",
      timeline.includes(op.id) && timeline.includes("created") && timeline.includes("success")
        && timeline.includes("delivered") && /200/.test(timeline), timeline.slice(0, 400));

    await page.click("#timeline button.resend");
    await page.waitForSelector("#flash:not([hidden])");
    check("resend is confirmed", (await page.textContent("#flash")).includes("Resent"),
      await page.textContent("#flash"));
    await until("the resent attempt in the timeline", async () => {
      await page.click(`#ops tr[data-op="${op.id}"]`);
      await page.waitForSelector("#timeline .attempts");
      return (await page.$$("#timeline .attempts tbody tr")).length === 2
        && !(await page.textContent("#timeline [data-delivery-card]")).includes(" pending ");
    });
    check("the timeline shows the second attempt after resend", true);
    await screenshot(page, "dashboard.png");

    await merchantsPage(page, base, await seedMerchants(base));
    check("the page raised no script errors", errors.length === 0, errors.join("; "));
  } finally {
    await browser.close();
    rmSync(profile, { recursive: true, force: true });
  }
}

async function main() {
  const dir = mkdtempSync(join(tmpdir(), "payhook-ui-"));
  try {
    await browse(await seed(dir));
    console.log(`ui: ${passed} passed, 0 failed`);
  } catch (e) {
    console.error(`FAILED: ${e.message}`);
    for (const c of children) console.error(`--- ${c.name} output ---\n${c.log().slice(-3000)}`);
    console.log(`ui: ${passed} passed, 1 failed`);
    process.exitCode = 1;
  } finally {
    for (const c of children) c.child.kill("SIGTERM");
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
