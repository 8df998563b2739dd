// A page that leads (issue 18), at 1440x900 and 390x844 in headless Chromium against a real `runcast serve`: the hub's
// clock for countdowns, the start form and a filterable run list first, a finished run's outcome first, a status that
// tells a rejection apart, a confirmation where the decision was made, the agent's reason, inbox items that tell
// themselves apart by deadline, the inbox reachable from a run on a phone, no notification offer to viewers, one time
// format with its zone, and the quorum said with or without the run's starter.
// Needs Debian's chromium at /usr/bin/chromium (or CHROMIUM_PATH); playwright-core only drives it.

import assert from "node:assert/strict";
import { existsSync, mkdirSync } from "node:fs";
import path from "node:path";
import { describe, test } from "node:test";

import { REPO_DIR, waitFor } from "../../client_js/test/helpers.mjs";
import { suite } from "./browser.mjs";


const ARTIFACTS = path.join(REPO_DIR, "tests", "artifacts");
const SCREENS = { desktop: { width: 1440, height: 900 }, phone: { width: 390, height: 844 } };
const TIME = /\d\d:\d\d:\d\d UTC/; // the one time format: time of day with its zone (en-GB, UTC)

let server;
let browser;
const { tok } = suite({
  delay: "0.005",
  args: ["--agents", "demo", "--agents", "agents_fixture"],
  env: { PYTHONPATH: [path.join(REPO_DIR, "tests"), path.join(REPO_DIR, "server"), process.env.PYTHONPATH || ""].join(path.delimiter) },
}, {
  dana: ["dana", "Dana", ["admin"]],
  alex: ["alex", "Alex", ["approver"]],
  sam: ["sam", "Sam", ["approver"]],
  vic: ["vic", "Vic", ["viewer"]],
  olga: ["olga", "Olga", ["operator"]],
}, (ready) => {
  ({ server, browser } = ready);
  mkdirSync(ARTIFACTS, { recursive: true });
});

async function person(token, viewport, { hash = "" } = {}) {
  const context = await browser.newContext({ viewport, locale: "en-GB", timezoneId: "UTC", isMobile: viewport.width < 500, hasTouch: viewport.width < 500 });
  const page = await context.newPage();
  page.setDefaultTimeout(20_000);
  page.on("pageerror", (err) => { page.errors = [...(page.errors || []), err]; });
  page.on("dialog", (d) => d.accept());
  await page.goto(`${server.base}/#token=${token}${hash ? `&${hash}` : ""}`);
  await page.locator('[data-testid="connection"][data-state="open"]').waitFor();
  return { context, page };
}

const startRun = async (agent, input, token = tok.olga) => {
  const r = await server.api("/api/runs", token, { method: "POST", body: JSON.stringify({ agent, input }) });
  assert.ok(r.run_id, JSON.stringify(r));
  return r.run_id;
};
const detail = (runId) => server.api(`/api/runs/${runId}`, tok.dana);
const cancelRun = (runId) => server.api(`/api/runs/${runId}/cancel`, tok.dana, { method: "POST", body: "{}" });
const untilPaused = (runId) => waitFor(async () => (await detail(runId)).status === "paused", { message: `${runId} paused` });
const tag = () => `t${Math.random().toString(36).slice(2, 8)}`;

/** The element is inside the viewport, the page not scrolled. */
async function onScreen(page, locator, label) {
  const box = await locator.boundingBox();
  const vp = page.viewportSize();
  assert.ok(box, `${label} is rendered`);
  assert.equal(await page.evaluate(() => window.scrollY), 0, `${label}: the page was not scrolled`);
  assert.ok(box.y >= 0 && box.y + box.height <= vp.height && box.x >= 0 && box.x + box.width <= vp.width,
    `${label} inside the ${vp.width}x${vp.height} viewport: ${JSON.stringify(box)}`);
}

/** Seconds of a countdown text ("… in 0:23 …", "in 1:02:03"). */
function secondsIn(text) {
  const m = /in (?:(\d+):)?(\d+):(\d\d)/.exec(text);
  assert.ok(m, `a countdown in "${text}"`);
  return Number(m[1] || 0) * 3600 + Number(m[2]) * 60 + Number(m[3]);
}

describe("the hub's clock", () => {
  test("a late joiner and a reload of a paused run read the deadline the hub keeps, in the panel and the inbox alike", async () => {
    // The approval is 40 s long; the page opens it when it is 15 s old. A page that took the hub's time from the
    // replayed events (old) would show 0:40, not 0:25.
    const runId = await startRun("demo-clock", "Free some space before the deadline.");
    await untilPaused(runId);
    const expiresAt = Date.parse((await detail(runId)).pending_approvals[0].expires_at);
    await waitFor(() => expiresAt - Date.now() <= 25_000, { timeout: 30_000, interval: 200, message: "the approval is 15 s old" });
    const truth = () => Math.ceil((expiresAt - Date.now()) / 1000); // the hub runs on this machine's clock
    for (const [screen, viewport] of Object.entries(SCREENS)) {
      const { context, page } = await person(tok.alex, viewport, { hash: `run=${runId}` });
      for (const when of ["opened late", "reloaded"]) {
        if (when === "reloaded") await page.reload();
        const deadline = page.locator('[data-testid="decision-panel"] [data-testid="deadline"]');
        await deadline.waitFor();
        const item = page.locator(`[data-testid="inbox-item"][data-run-id="${runId}"] [data-testid="inbox-deadline"]`);
        await item.waitFor();
        const [panelText, inboxText] = [await deadline.textContent(), await item.textContent()];
        const expected = truth();
        const [inPanel, inInbox] = [secondsIn(panelText), secondsIn(inboxText)];
        assert.ok(Math.abs(inPanel - expected) <= 2, `${screen}, ${when}: the panel says ${inPanel} s left ("${panelText}"), the hub ${expected}`);
        assert.ok(Math.abs(inInbox - inPanel) <= 1, `${screen}, ${when}: the inbox (${inInbox} s) and the panel (${inPanel} s) agree`);
        assert.doesNotMatch(panelText, /hub clock/, "no jargon");
        assert.match(panelText, TIME, "the deadline's time with its zone");
      }
      assert.equal(page.errors, undefined, "no script errors");
      await context.close();
    }
    await cancelRun(runId);
  });
});

for (const [screen, viewport] of Object.entries(SCREENS)) {
  describe(`a page that leads, ${screen} ${viewport.width}x${viewport.height}`, () => {
    test("home: the start form first for those who may start, then the runs with titles, filtered and searched", async () => {
      const t = tag();
      const mine = await startRun("demo", `Rotate the ${t} logs\nand keep a week of them`);
      const other = await startRun("demo-quorum", `Ship ${t} 2.4.1`, tok.dana);
      await untilPaused(mine);
      await untilPaused(other);
      const o = await person(tok.olga, viewport);
      const form = o.page.locator('[data-testid="start-form"]');
      await form.waitFor();
      await onScreen(o.page, o.page.locator('[data-testid="start-submit"]'), "the Start button");
      const link = (page, id) => page.locator(`[data-testid="run-link"][data-run-id="${id}"]`);
      await link(o.page, mine).waitFor();
      const formBox = await form.boundingBox();
      assert.ok((await o.page.locator('[data-testid="runs"]').boundingBox()).y > formBox.y, "the runs come after the start form");
      assert.equal(await link(o.page, mine).locator('[data-testid="run-link-title"]').textContent(), `Rotate the ${t} logs`, "a title: the input's first line");
      assert.match(await link(o.page, mine).textContent(), TIME);

      const shown = () => o.page.$$eval('[data-testid="run-link"]', (els) => els.map((e) => e.dataset.runId));
      const until = async (want, label) => {
        await o.page.waitForFunction((ids) => {
          const got = [...document.querySelectorAll('[data-testid="run-link"]')].map((e) => e.dataset.runId);
          return JSON.stringify(got) === JSON.stringify(ids);
        }, want, { timeout: 10_000 }).catch(async () => assert.deepEqual(await shown(), want, label));
      };
      await o.page.fill('[data-testid="filter-q"]', t);
      await until([other, mine], "search: both runs of this test, newest first");
      await o.page.selectOption('[data-testid="filter-agent"]', "demo-quorum");
      await until([other], "agent filter");
      await o.page.selectOption('[data-testid="filter-agent"]', "");
      await o.page.selectOption('[data-testid="filter-started-by"]', "olga");
      await until([mine], "who started: me");
      await o.page.selectOption('[data-testid="filter-status"]', "completed");
      await until([], "status filter");
      assert.equal(await o.page.locator('[data-testid="runs-empty"]').textContent(), "No runs match these filters.");
      await o.page.selectOption('[data-testid="filter-status"]', "paused");
      await until([mine], "paused and mine");
      await o.context.close();

      // A viewer cannot start: the runs come first. An approver's "needs me" is the runs waiting for them.
      const v = await person(tok.vic, viewport);
      await link(v.page, mine).waitFor();
      assert.equal(await v.page.locator('[data-testid="start-form"]').isHidden(), true);
      await onScreen(v.page, v.page.locator('[data-testid="filter-q"]'), "the run search");
      await v.context.close();
      const a = await person(tok.alex, viewport);
      await a.page.fill('[data-testid="filter-q"]', t);
      await link(a.page, mine).waitFor();
      await cancelRun(other);
      await a.page.locator('[data-testid="filter-needs-me"]').check();
      await a.page.waitForFunction((id) => !document.querySelector(`[data-testid="run-link"][data-run-id="${id}"]`), other);
      assert.deepEqual(await a.page.$$eval('[data-testid="run-link"]', (els) => els.map((e) => e.dataset.runId)), [mine]);
      assert.equal(a.page.errors, undefined, "no script errors");
      await a.context.close();
      await cancelRun(mine);
    });

    test("deciding: the agent's reason, the buttons side by side, a confirmation where the decision was made; then the outcome first and a status that tells the rejection apart", async () => {
      const t = tag();
      const runId = await startRun("demo", `Free disk space ${t}`);
      await untilPaused(runId);
      const a = await person(tok.alex, viewport, { hash: `run=${runId}` });
      const { page } = a;
      const panel = page.locator('[data-testid="decision-panel"]');
      const approve = panel.locator('[data-testid="approve"]');
      const reject = panel.locator('[data-testid="reject"]');
      await approve.waitFor();
      assert.match(await panel.locator('[data-testid="agent-reason"]').textContent(),
        /^The agent says: I found three temporary files, about 2\.4 GB in all\. Deleting files cannot be undone/);
      await onScreen(page, panel.locator('[data-testid="agent-reason"]'), "the agent's reason");
      const [ab, rb] = [await approve.boundingBox(), await reject.boundingBox()];
      assert.ok(Math.abs(ab.y - rb.y) < 2 && rb.x > ab.x + ab.width - 1, `Approve and Reject side by side: ${JSON.stringify([ab, rb])}`);
      await onScreen(page, reject, "Reject");

      const panelTop = (await panel.boundingBox()).y;
      await panel.locator('[data-testid="reason"]').fill("keep them");
      await reject.click();
      const confirmation = panel.locator('[data-testid="decision-confirmation"]');
      await confirmation.waitFor();
      assert.match(await confirmation.textContent(), /You rejected delete_files: it does not run, and the agent is told “keep them”\./);
      assert.equal((await panel.boundingBox()).y, panelTop, "the panel stays where it was");
      await onScreen(page, confirmation, "the confirmation");
      assert.equal(await page.evaluate(() => document.activeElement?.dataset.testid), "decision-confirmation", "the focus is on it");

      const status = page.locator('[data-testid="run-status"]');
      await status.filter({ hasText: "completed" }).waitFor();
      assert.equal(await status.textContent(), "completed, 1 tool rejected");
      assert.match(await status.getAttribute("class"), /\bpartial\b/);
      assert.notEqual(await status.evaluate((el) => getComputedStyle(el).backgroundColor),
        await page.evaluate(() => { const x = document.createElement("span"); x.className = "status completed"; document.body.append(x); const c = getComputedStyle(x).backgroundColor; x.remove(); return c; }),
        "its chip is not the plain completed green");
      await panel.locator('[data-testid="confirmation-dismiss"]').click();
      await panel.waitFor({ state: "hidden" });

      // The outcome first: the answer and what was rejected by whom, on screen without scrolling.
      const outcome = page.locator('[data-testid="outcome"]');
      await outcome.waitFor();
      await page.evaluate(() => window.scrollTo(0, 0));
      await onScreen(page, page.locator('[data-testid="outcome-answer"]'), "the answer");
      assert.match(await page.locator('[data-testid="outcome-answer"]').textContent(), /^Answer: Understood, I left every file where it was\./);
      const verdict = await page.locator('[data-testid="outcome-approval"]').textContent();
      assert.match(verdict, /^delete_files: Rejected by Alex · \d\d:\d\d:\d\d UTC: “keep them”$/);
      await onScreen(page, page.locator('[data-testid="outcome-approval"]'), "what was rejected, by whom");
      await page.screenshot({ path: path.join(ARTIFACTS, `outcome-${screen}.png`) });

      // The run list says it too.
      await page.locator('[data-testid="back"]').click();
      await page.fill('[data-testid="filter-q"]', t);
      const link = page.locator(`[data-testid="run-link"][data-run-id="${runId}"] [data-testid="run-link-status"]`);
      await link.filter({ hasText: "completed" }).waitFor();
      assert.equal(await link.textContent(), "completed, 1 tool rejected");
      assert.equal(page.errors, undefined, "no script errors");
      await a.context.close();
    });

    test("the inbox: items tell themselves apart and come by deadline; reachable from a run on a phone; no notification offer to viewers", async () => {
      const t = tag();
      const later = await startRun("demo", `Clean the ${t} cache`);
      const sooner = await startRun("demo-clock", `Urgent ${t} cleanup`);
      const ops = await startRun("demo-handoff", `The ${t} site is down`);
      for (const id of [later, sooner, ops]) await untilPaused(id);
      const a = await person(tok.alex, viewport, { hash: `run=${later}` });
      const { page } = a;
      const item = (id) => page.locator(`[data-testid="inbox-item"][data-run-id="${id}"]`);
      for (const id of [later, sooner, ops]) await item(id).waitFor();
      const order = (await page.$$eval('[data-testid="inbox-item"]', (els) => els.map((e) => e.dataset.runId))).filter((id) => [later, sooner, ops].includes(id));
      const deadlines = Object.fromEntries(await Promise.all([later, ops].map(async (id) => [id, (await detail(id)).pending_approvals[0].expires_at])));
      const tenMinutes = [later, ops].sort((x, y) => deadlines[x].localeCompare(deadlines[y]));
      assert.deepEqual(order, [sooner, ...tenMinutes], "the nearest deadline first (40 s, then the two 10-minute ones by deadline)");
      const texts = await Promise.all([sooner, later, ops].map((id) => item(id).textContent()));
      assert.equal(new Set(texts).size, 3, "no two items read the same");
      assert.match(texts[0], new RegExp(`Janitor asks to run delete_files.*paths: scratch/build-cache\\.tar.*“Urgent ${t} cleanup” · Olga.*Expires in 0:\\d\\d · ${TIME.source}`));
      assert.match(texts[2], new RegExp(`asks to run restart_service.*service: web.*“The ${t} site is down”.*Expires in (9|10):\\d\\d`));

      // From this run's page, the other waiting approvals are one tap away (on a desktop, beside it).
      await page.locator('[data-testid="decision-panel"] [data-testid="approve"]').waitFor();
      await page.evaluate(() => window.scrollTo(0, 0));
      if (screen === "phone") {
        const jump = page.locator('[data-testid="inbox-jump"]');
        await onScreen(page, jump, "the Needs you button");
        assert.match(await jump.textContent(), /^Needs you: \d+$/);
        await jump.click();
        await page.waitForFunction(() => document.activeElement?.id === "inbox-box");
        const box = await item(sooner).boundingBox();
        assert.ok(box.y >= 0 && box.y + box.height <= viewport.height, `the other approval is on screen after one tap: ${JSON.stringify(box)}`);
      } else {
        assert.equal(await page.locator('[data-testid="inbox-jump"]').isVisible(), false);
        await onScreen(page, item(sooner), "the other waiting approval");
      }
      assert.equal(await page.locator('[data-testid="notify"]').isVisible(), true, "an approver is offered notifications");
      await a.context.close();

      const v = await person(tok.vic, viewport, { hash: `run=${later}` });
      await v.page.locator('[data-testid="run-status"]').filter({ hasText: "paused" }).waitFor();
      assert.equal(await v.page.locator('[data-testid="notify"]').isVisible(), false, "a viewer, who can never decide, is not");
      assert.equal(await v.page.locator('[data-testid="inbox-jump"]').isVisible(), false);
      await v.context.close();
      for (const id of [later, sooner, ops]) await cancelRun(id);
    });

    test("the quorum says whether the run's starter counts, and a policy that leaves the starter out is kept", async () => {
      const counted = await startRun("demo-quorum", "Ship it, starter counted", tok.dana);
      const others = await startRun("demo-quorum-others", "Delete it, starter not counted", tok.dana);
      await untilPaused(counted);
      await untilPaused(others);
      const d = await person(tok.dana, viewport, { hash: `run=${counted}` });
      const policy = d.page.locator('[data-testid="decision-panel"] [data-testid="policy"]');
      await policy.waitFor();
      assert.match(await policy.textContent(), /2 different people must approve; the run's starter counts as one of them/);
      await d.page.goto(`${server.base}/#run=${others}`);
      await policy.filter({ hasText: "besides" }).waitFor();
      assert.match(await policy.textContent(), /2 people besides the run's starter must approve \(the starter's approval does not count\)/);
      await d.page.locator('[data-testid="decision-panel"] [data-testid="approve"]').click();
      const votes = d.page.locator('[data-testid="approval"] [data-testid="votes"]');
      await votes.filter({ hasText: "not counted" }).waitFor();
      assert.match(await votes.textContent(), /^Dana \(you\) approved \(the starter: not counted\) · \d\d:\d\d:\d\d UTC$/);
      assert.equal((await detail(others)).status, "paused", "the starter's approval did not count");
      const s = await person(tok.sam, viewport, { hash: `run=${others}` });
      await s.page.locator('[data-testid="decision-panel"] [data-testid="approve"]').click();
      await s.page.locator('[data-testid="why"]').filter({ hasText: "waiting for 1 more approval" }).waitFor();
      assert.equal((await detail(others)).status, "paused", "one counted approval of two");
      assert.equal(d.page.errors, undefined, "no script errors");
      await d.context.close();
      await s.context.close();
      await cancelRun(counted);
      await cancelRun(others);
    });
  });
}
