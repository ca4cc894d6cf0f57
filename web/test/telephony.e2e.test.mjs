// End-to-end test of the telephony page in headless Chromium (playwright-core,
// the Debian `chromium` package; no browser download), against the local API.
// Run by scripts/browser-test.sh, which starts the local API and passes:
//   READY_FILE    the local API's ready file: {"api", "web", "standins", "token"}
//   DATABASE_URL  the API's database, to check rows directly with psql
//   ARTIFACTS_DIR where screenshots go (default ../artifacts)
//   CHROMIUM      the browser binary (default /usr/bin/chromium)
// Needs the local API's demo data, fresh: the demo org's three active numbers.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = path.dirname(fileURLToPath(import.meta.url));
const ready = JSON.parse(readFileSync(process.env.READY_FILE ?? assert.fail("READY_FILE is not set"), "utf8"));
const { api, web, standins, token } = ready;
const DATABASE_URL = process.env.DATABASE_URL ?? assert.fail("DATABASE_URL is not set");
const ARTIFACTS = process.env.ARTIFACTS_DIR ?? path.resolve(here, "../../artifacts");
mkdirSync(ARTIFACTS, { recursive: true });

const [KEPT, RELEASED, PENDING] = ["+14155550100", "+14155550101", "+14155550102"];
const OTHER_ORGS_NUMBER = "+14155550199";
const SEEDED_AUTH_TOKEN = "d3e0d3e0d3e0d3e0d3e0d3e0d3e0d3e0"; // the demo credential's token
const WAIT = 15_000;

// ---- helpers -----------------------------------------------------------------

/** The API's view of one number: its newest entry, including released history. */
async function apiNumber(phoneNumber) {
  const r = await fetch(`${api}/api/managed-telephony/status?include=released`, {
    headers: { Authorization: `Bearer ${token}` },
  });
  assert.equal(r.status, 200, `status answered ${r.status}`);
  const body = await r.json();
  return body.numbers.find((n) => n.phoneNumber === phoneNumber);
}

async function failProvider(provider, mode, times) {
  const r = await fetch(`${standins}/__control/fail`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ provider, mode, times }),
  });
  assert.equal(r.status, 200, `control endpoint answered ${r.status}`);
}

/** One value from the database (psql -At). */
function sql(query) {
  return execFileSync("psql", [DATABASE_URL, "-X", "-At", "-v", "ON_ERROR_STOP=1", "-c", query], {
    encoding: "utf8",
  }).trim();
}

const row = (page, n) => page.locator(`li.number[data-number="${n}"]`);

async function textOf(page, selector) {
  await page.locator(selector).waitFor({ state: "visible", timeout: WAIT });
  return page.locator(selector).innerText();
}

/** Wait until an element's text matches `re`; returns the text. */
async function waitForText(page, selector, re) {
  await page.waitForFunction(
    ([sel, src, flags]) => {
      const node = document.querySelector(sel);
      return !!node && !node.hidden && new RegExp(src, flags).test(node.textContent ?? "");
    },
    [selector, re.source, re.flags],
    { timeout: WAIT },
  );
  return page.locator(selector).innerText();
}

// ---- the browser -----------------------------------------------------------

let browser;
let page;
const consoleErrors = [];

before(async () => {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  page = await browser.newPage({ viewport: { width: 1024, height: 800 } });
  page.on("pageerror", (e) => consoleErrors.push(String(e)));
  page.setDefaultTimeout(WAIT);
});

after(async () => {
  await browser?.close();
});

// ---- the main flow (in order: each step starts where the last one ended) -----

test("shows the credential summary and the three seeded numbers, never a token", async () => {
  await page.goto(`${web}/`);
  await row(page, PENDING).waitFor();
  const listed = await page.locator("li.number").evaluateAll((rows) => rows.map((r) => r.dataset.number));
  assert.deepEqual([...listed].sort(), [KEPT, RELEASED, PENDING]);
  for (const n of [KEPT, RELEASED, PENDING]) {
    assert.equal(await row(page, n).getAttribute("data-status"), "active");
    assert.match(await row(page, n).innerText(), /Active/);
  }

  const credential = await textOf(page, "#credential dl");
  assert.match(credential, /AC0000000000000000000000000000d3e0/);
  assert.match(credential, /\+14155550100/);
  assert.match(credential, /Managed by the platform/);
  assert.match(credential, /Vapi\s+Synced/);

  // Nothing token-like anywhere: no bare 32-hex string (an SID's hex follows "AC"/"PN"),
  // not the demo credential's auth token, not the bearer token.
  const text = await page.locator("body").innerText();
  const html = await page.content();
  assert.doesNotMatch(text, /(?<![0-9A-Za-z])[0-9a-f]{32}(?![0-9A-Za-z])/i);
  for (const secret of [SEEDED_AUTH_TOKEN, token]) {
    assert.ok(!text.includes(secret) && !html.includes(secret), "the page shows a token");
  }
  assert.equal(await page.locator("#error").isHidden(), true, await page.locator("#error").innerText());
});

test("Delete is reachable by keyboard; Escape and Cancel change nothing", async () => {
  // Keyboard: Tab from Refresh lands on the first Delete button, with a visible focus ring.
  await page.locator("#refresh").focus();
  await page.keyboard.press("Tab");
  const focused = await page.evaluate(() => {
    const a = document.activeElement;
    return { label: a?.getAttribute("aria-label"), outline: a ? getComputedStyle(a).outlineStyle : "" };
  });
  assert.match(focused.label ?? "", /^Delete \+1415555010\d$/);
  assert.notEqual(focused.outline, "none", "focused button has no visible outline");

  // Enter opens the confirmation (focus on Cancel), Escape closes it.
  const target = focused.label.replace("Delete ", "");
  await page.keyboard.press("Enter");
  const dialog = page.getByRole("dialog");
  await dialog.waitFor({ state: "visible" });
  assert.match(await dialog.innerText(), new RegExp(`${target.replace("+", "\\+")}[\\s\\S]*This cannot be undone`));
  assert.equal(await page.evaluate(() => document.activeElement?.textContent), "Cancel");
  await page.keyboard.press("Escape");
  await dialog.waitFor({ state: "hidden" });

  // Mouse: Cancel.
  await page.getByRole("button", { name: `Delete ${RELEASED}` }).click();
  await dialog.waitFor({ state: "visible" });
  assert.match(await dialog.innerText(), /\+14155550101/);
  await dialog.getByRole("button", { name: "Cancel" }).click();
  await dialog.waitFor({ state: "hidden" });

  for (const n of [target, RELEASED]) {
    assert.equal(await row(page, n).getAttribute("data-status"), "active");
    assert.equal((await apiNumber(n)).status, "active");
    assert.equal(sql(`SELECT status FROM managed_phone_numbers WHERE phone_number = '${n}' ORDER BY created_at DESC LIMIT 1`), "active");
  }
  assert.equal(await page.locator("li.number").count(), 3);
});

test("confirming a delete releases the number (button shows progress, list refreshes)", async () => {
  // Record whether the row's button was ever disabled with "Releasing…" (it may be brief).
  await page.evaluate((n) => {
    window.__sawReleasing = false;
    new MutationObserver((records) => {
      for (const r of records)
        for (const node of r.addedNodes) {
          const b = node instanceof Element ? node.querySelector(`li[data-number="${n}"] button`) : null;
          if (b && b.disabled && b.textContent === "Releasing…") window.__sawReleasing = true;
        }
    }).observe(document.getElementById("numbers"), { childList: true, subtree: true });
  }, RELEASED);

  await page.getByRole("button", { name: `Delete ${RELEASED}` }).click();
  const dialog = page.getByRole("dialog");
  await dialog.waitFor({ state: "visible" });
  const asked = await dialog.innerText();
  assert.match(asked, /\+14155550101/);
  assert.match(asked, /This cannot be undone/);
  await page.screenshot({ path: path.join(ARTIFACTS, "telephony-confirm.png") });
  await dialog.getByRole("button", { name: "Delete number" }).click();

  await row(page, RELEASED).waitFor({ state: "detached" });
  assert.match(await waitForText(page, "#notice", /released/), /\+14155550101 was released\./);
  assert.equal(await page.evaluate(() => window.__sawReleasing), true, "no 'Releasing…' progress shown");
  assert.equal(await page.locator("#error").isHidden(), true, await page.locator("#error").innerText());
  assert.equal(await page.locator("li.number").count(), 2);

  const fromApi = await apiNumber(RELEASED);
  assert.equal(fromApi.status, "released");
  assert.ok(fromApi.releasedAt, "releasedAt is set");
  assert.equal(
    sql(`SELECT status || ' ' || (released_at IS NOT NULL) FROM managed_phone_numbers WHERE phone_number = '${RELEASED}' ORDER BY created_at DESC LIMIT 1`),
    "released true",
  );
  assert.equal(sql(`SELECT count(*) FROM phone_number_mapping WHERE inbound_phone_number = '${RELEASED}'`), "0");
  await page.screenshot({ path: path.join(ARTIFACTS, "telephony-released.png"), fullPage: true });
});

test("a provider failure shows the number as pending release; Retry finishes it", async () => {
  await failProvider("twilio", "500", 10);
  try {
    await page.getByRole("button", { name: `Delete ${PENDING}` }).click();
    const dialog = page.getByRole("dialog");
    await dialog.waitFor({ state: "visible" });
    await dialog.getByRole("button", { name: "Delete number" }).click();

    await page.locator(`li.number[data-number="${PENDING}"][data-status="release_pending"]`).waitFor();
    const shown = await row(page, PENDING).innerText();
    assert.match(shown, /Release pending/);
    assert.match(shown, /Twilio/);
    assert.match(await waitForText(page, "#notice", /Twilio/), /no longer takes calls.*Twilio.*may still be billed/s);

    const fromApi = await apiNumber(PENDING);
    assert.equal(fromApi.status, "release_pending");
    assert.deepEqual(fromApi.release?.pending, ["twilio"]);
    assert.equal(sql(`SELECT count(*) FROM phone_number_mapping WHERE inbound_phone_number = '${PENDING}'`), "0");
    await page.screenshot({ path: path.join(ARTIFACTS, "telephony-pending.png"), fullPage: true });
  } finally {
    await failProvider("twilio", "none", 0);
  }

  await page.getByRole("button", { name: `Retry releasing ${PENDING}` }).click();
  await row(page, PENDING).waitFor({ state: "detached" });
  assert.match(await waitForText(page, "#notice", /released/), /\+14155550102 was released\./);
  assert.equal((await apiNumber(PENDING)).status, "released");
  assert.equal(sql(`SELECT status FROM managed_phone_numbers WHERE phone_number = '${PENDING}' ORDER BY created_at DESC LIMIT 1`), "released");

  // The number that was never confirmed is untouched.
  assert.deepEqual(await page.locator("li.number").evaluateAll((r) => r.map((x) => x.dataset.number)), [KEPT]);
  assert.equal((await apiNumber(KEPT)).status, "active");
  assert.deepEqual(consoleErrors, []);
});

// ---- errors, empty state, narrow screen: each on a fresh page -------------------

async function freshPage(t, viewport = { width: 1024, height: 800 }) {
  const context = await browser.newContext({ viewport });
  t.after(() => context.close());
  const p = await context.newPage();
  p.setDefaultTimeout(WAIT);
  return p;
}

/** Serve the page a different /config.json. */
const withConfig = (p, config) =>
  p.route("**/config.json", (route) => route.fulfill({ json: config }));

test("an API error is shown in words: a bad token's 401", async (t) => {
  const p = await freshPage(t);
  await withConfig(p, { apiBase: api, token: "not-a-valid-token" });
  await p.goto(`${web}/`);
  const shown = await waitForText(p, "#error", /Unauthorized/);
  assert.match(shown, /Could not load the telephony status: Unauthorized \(HTTP 401\)/);
  assert.match(await p.locator("#numbers").innerText(), /Not loaded/);
});

test("an API error is shown in words with its request id: a number of another org (404)", async (t) => {
  const p = await freshPage(t);
  // The listing pretends the page shows a number this org doesn't own; the DELETE is real.
  await p.route(`${api}/api/managed-telephony/status`, async (route) => {
    if (route.request().method() !== "GET") return route.fallback();
    const response = await route.fetch();
    const body = await response.json();
    body.numbers.push({ ...body.numbers[0], phoneNumber: OTHER_ORGS_NUMBER, status: "active" });
    await route.fulfill({ response, json: body, headers: { ...response.headers(), "access-control-allow-origin": web } });
  });
  await p.goto(`${web}/`);
  await p.getByRole("button", { name: `Delete ${OTHER_ORGS_NUMBER}` }).click();
  await p.getByRole("dialog").getByRole("button", { name: "Delete number" }).click();
  const shown = await waitForText(p, "#error", /404/);
  assert.match(shown, /Could not release \+14155550199: .*\+14155550199.*\(HTTP 404, number_not_found\)/);
  assert.match(shown, /Request id: \S+/);
  await p.screenshot({ path: path.join(ARTIFACTS, "telephony-error.png"), fullPage: true });
  assert.equal(sql(`SELECT status FROM managed_phone_numbers WHERE phone_number = '${OTHER_ORGS_NUMBER}'`), "active");
});

test("a network failure is shown in words", async (t) => {
  const p = await freshPage(t);
  await withConfig(p, { apiBase: "http://127.0.0.1:9", token });
  await p.goto(`${web}/`);
  assert.match(await waitForText(p, "#error", /reach/), /Could not reach the telephony API at http:\/\/127\.0\.0\.1:9/);
});

test("loading state, then empty state", async (t) => {
  const p = await freshPage(t);
  let answer;
  const answered = new Promise((resolve) => (answer = resolve));
  await p.route(`${api}/api/managed-telephony/status`, async (route) => {
    await answered; // held until the loading state was seen
    await route.fulfill({ json: { credential: null, numbers: [] }, headers: { "access-control-allow-origin": web } });
  });
  await p.goto(`${web}/`);
  assert.equal(await textOf(p, "#numbers"), "Loading managed numbers…");
  assert.equal(await p.locator("#numbers").getAttribute("aria-busy"), "true");
  answer();
  assert.equal(await textOf(p, "#numbers .empty"), "No managed numbers.");
  assert.match(await p.locator("#credential").innerText(), /No Twilio credential connected/);
});

test("readable at 360 px: no horizontal scrolling, buttons full width", async (t) => {
  const p = await freshPage(t, { width: 360, height: 740 });
  await p.goto(`${web}/`);
  await row(p, KEPT).waitFor();
  const { scroll, client } = await p.evaluate(() => ({
    scroll: document.documentElement.scrollWidth,
    client: document.documentElement.clientWidth,
  }));
  assert.ok(scroll <= client, `page is ${scroll}px wide in a ${client}px viewport`);
  const button = await p.getByRole("button", { name: `Delete ${KEPT}` }).boundingBox();
  assert.ok(button && button.width > 250, `Delete button is ${button?.width}px wide`);
  await p.screenshot({ path: path.join(ARTIFACTS, "telephony-narrow.png"), fullPage: true });
});
