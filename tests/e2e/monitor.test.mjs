// The run monitor (server/runcast/static/) in headless Chromium, against a real `runcast serve`.
// Run with the client's tests: `cd client_js && npm ci && npm test` (or `npm run test:e2e`).
// Needs Debian's chromium at /usr/bin/chromium (or CHROMIUM_PATH); playwright-core only drives it, never downloads one.

import assert from "node:assert/strict";
import { copyFileSync, existsSync, mkdirSync } from "node:fs";
import path from "node:path";
import { describe, test } from "node:test";

import { RuncastClient } from "../../client_js/src/runcast.js";
import { REPO_DIR, fetchLog, startProxy, waitFor } from "../../client_js/test/helpers.mjs";
import { require, suite } from "./browser.mjs";

const WebSocket = require("ws");  // (the client package's dev dependency)

const ARTIFACTS = path.join(REPO_DIR, "tests", "artifacts");

let server;
let browser;
// 0.02 s per streamed delta: slow enough that "while the text streams" is a real moment, fast enough for CI.
const { tok } = suite({ delay: "0.02" }, {
  alice: ["alice", "Alice", ["approver", "operator"]],
  vic: ["vic", "Vic", ["viewer"]],
  olga: ["olga", "Olga", ["operator"]],
}, (ready) => {
  ({ server, browser } = ready);
  mkdirSync(ARTIFACTS, { recursive: true });
});

/**
 * A person: their own browser context (own sessionStorage), one page opened with their token in the fragment.
 * `skewMs`: this person's computer clock is off by that much (Date.now() in the page; `window.__clockSkewMs` moves it).
 */
async function person(token, { base = server.base, hash = "", skewMs = 0 } = {}) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, locale: "en-GB", timezoneId: "UTC" });
  if (skewMs) {
    await context.addInitScript((skew) => {
      const realNow = Date.now.bind(Date);
      window.__clockSkewMs = skew;
      Date.now = () => realNow() + window.__clockSkewMs;
    }, skewMs);
  }
  const page = await context.newPage();
  page.setDefaultTimeout(20_000);
  page.on("pageerror", (err) => { page.errors = [...(page.errors || []), err]; });
  page.on("dialog", (d) => d.accept());
  await page.goto(`${base}/#token=${token}${hash ? `&${hash}` : ""}`);
  await page.locator('[data-testid="connection"][data-state="open"]').waitFor();
  return { context, page };
}

const messages = (page) => page.$$eval('[data-testid="transcript"] [data-testid="message"]', (els) => els.map((e) => e.textContent));
const runIdOf = (page) => new URLSearchParams(new URL(page.url()).hash.slice(1)).get("run");
const pageState = (page) => page.evaluate(() => window.runcastMonitor.state && JSON.parse(JSON.stringify(window.runcastMonitor.state)));
const statusText = (page) => page.locator('[data-testid="run-status"]').textContent();
const runLinks = (page) => page.$$eval('[data-testid="run-link"]', (els) => els.map((e) => e.dataset.runId));
const participantsText = (page) => page.locator('[data-testid="participants"]').textContent();

/** Record every distinct text of every streamed message, as the page shows it (a MutationObserver in the page). */
async function recordStreaming(page) {
  await page.evaluate(() => {
    window.__seen = [];
    const box = document.querySelector('[data-testid="transcript"]');
    new MutationObserver(() => {
      const texts = [...box.querySelectorAll('[data-testid="message"]')].map((e) => e.textContent);
      const last = window.__seen.at(-1);
      if (!last || last.join("\u0000") !== texts.join("\u0000")) window.__seen.push(texts);
    }).observe(box, { subtree: true, childList: true, characterData: true });
  });
}

/** The snapshots of message `i` seen by recordStreaming: each a prefix of the next, growing to `final`. */
async function assertStreamed(page, i, final, label) {
  const seen = (await page.evaluate(() => window.__seen)).map((texts) => texts[i]).filter((t) => t !== undefined);
  const distinct = seen.filter((t, k) => t !== seen[k - 1]);
  assert.ok(distinct.length >= 3, `${label}: message ${i} streamed in ${distinct.length} steps`);
  for (const t of distinct) assert.ok(final.startsWith(t), `${label}: "${t}" is a prefix of the final text`);
  assert.equal(distinct.at(-1), final);
}

async function startFromForm(page, agent, input) {
  await page.locator(`[data-testid="start-agent"] option[value="${agent}"]`).waitFor({ state: "attached" });
  await page.selectOption('[data-testid="start-agent"]', agent);
  await page.fill('[data-testid="start-input"]', input);
  await recordStreaming(page);
  await page.click('[data-testid="start-submit"]');
  await page.waitForFunction(() => new URLSearchParams(location.hash.slice(1)).get("run"));
  return runIdOf(page);
}

/** A Node client watching the same run from start to end, never dropping: the reference. */
async function reference(runId, token = tok.olga) {
  const c = new RuncastClient({ url: server.ws, token, WebSocket });
  await c.connect();
  const sub = c.subscribe(runId);
  return { c, sub };
}

/** Wait until the page and the reference hold the whole log (presence included), then return both states. */
async function settledStates(page, ref, runId) {
  let states;
  await waitFor(async () => {
    const head = (await server.api(`/api/runs/${runId}`, tok.alice)).head_seq;
    const ps = await pageState(page);
    states = [ps, JSON.parse(JSON.stringify(ref.sub.state))];
    return ps && ps.seq === head && ref.sub.lastSeq === head;
  }, { message: "the page and the reference at the head of the log" });
  return states;
}

describe("run monitor in Chromium", () => {
  test("an approver and a viewer watch one run: same text, only the approver decides, both see the decision and the answer", async () => {
    const a = await person(tok.alice);
    const v = await person(tok.vic);
    assert.ok(!a.page.url().includes("token="), "the token left the address bar");
    assert.equal(await a.page.evaluate(() => sessionStorage.getItem("runcast.token")), tok.alice, "the token is kept for the tab");
    assert.equal(await v.page.locator('[data-testid="start-form"]').isHidden(), true, "a viewer cannot start runs: no form");
    assert.match(await v.page.locator('[data-testid="start-hint"]').textContent(), /needs the operator role; you are viewer/);

    // An earlier run, so that "newest first" means something.
    const earlier = (await server.api("/api/runs", tok.alice, { method: "POST", body: JSON.stringify({ agent: "demo-handoff", input: "first" }) })).run_id;
    assert.match(earlier, /^run_/);
    const runId = await startFromForm(a.page, "demo", "Please free some disk space.");
    assert.match(runId, /^run_/);
    await server.api(`/api/runs/${earlier}/cancel`, tok.alice, { method: "POST", body: "{}" });

    // The home page lists the two runs newest first (Alice is on her run already); the viewer opens the one at the top.
    for (const { page } of [v]) {
      await page.locator(`[data-testid="run-link"][data-run-id="${runId}"]`).waitFor();
      await page.locator(`[data-testid="run-link"][data-run-id="${earlier}"]`).waitFor();
      assert.deepEqual((await runLinks(page)).slice(0, 2), [runId, earlier], "the run list is newest first");
    }
    await v.page.locator('[data-testid="run-link"]').first().click();

    // Both reach the approval step.
    for (const { page } of [a, v]) {
      await page.locator('[data-testid="approval"]').waitFor();
      await page.waitForFunction(() => document.querySelector('[data-testid="run-status"]').textContent.includes("paused"));
    }
    await assertStreamed(a.page, 0, (await messages(a.page))[0], "approver");
    const atPause = await messages(a.page);
    assert.equal(atPause.length, 2);
    assert.match(atPause[1], /^I found three temporary files/);
    assert.deepEqual(await messages(v.page), atPause, "both pages show the same text");

    // The card: tool, agent, arguments, policy, countdown; buttons only for the approver.
    const cardA = a.page.locator('[data-testid="approval"]');
    const cardV = v.page.locator('[data-testid="approval"]');
    const card = await cardA.textContent();
    for (const want of ["Janitor asks to run delete_files", "scratch/build-cache.tar", "Policy: approver (or admin) may decide",
      "1 approval needed", "started by Alice", "Please free some disk space.", "Delete files for good"]) {
      assert.ok(card.includes(want), `the card shows "${want}"`);
    }
    assert.match(await cardA.locator('[data-testid="deadline"]').textContent(), /^Expires in \d+:\d\d · at \d\d:\d\d:\d\d UTC$/);
    assert.equal(await cardA.locator('[data-testid="approve"]').count(), 1);
    assert.equal(await cardA.locator('[data-testid="reject"]').count(), 1);
    assert.equal(await v.page.locator('[data-testid="approve"]:visible').count(), 0, "the viewer sees no approve button");
    assert.equal(await v.page.locator('[data-testid="reject"]:visible').count(), 0, "nor a reject button");
    assert.equal(await v.page.locator('[data-testid="reason"]:visible').count(), 0);
    assert.match(await cardV.textContent(), /You cannot decide: it needs the approver role \(or admin\); you are viewer/);
    // Cancel: the button is on both pages, shown only to the approver (who is also an operator).
    assert.equal(await v.page.locator('[data-testid="cancel"]').count(), 1);
    assert.equal(await v.page.locator('[data-testid="cancel"]').isHidden(), true, "the viewer sees no cancel button");
    assert.equal(await a.page.locator('[data-testid="cancel"]').isVisible(), true, "the operator does");

    // Who is watching, live, on both pages.
    for (const { page } of [a, v]) {
      await page.waitForFunction(() => {
        const t = document.querySelector('[data-testid="participants"]').textContent;
        return t.includes("Alice") && t.includes("Vic");
      });
    }
    assert.match(await a.page.locator('[data-testid="participants"]').textContent(), /Alice \(approver, operator\) · you/);
    // Who watched (the run's detail, not its log): each person once.
    await a.page.waitForFunction(() => {
      const t = document.querySelector('[data-testid="watched"]').textContent;
      return t.includes("Alice") && t.includes("Vic");
    });
    assert.equal(await a.page.locator('[data-testid="watched"] li').count(), 2);

    // The screenshot of the run view at the approval step.
    await a.page.fill('[data-testid="reason"]', "Only the scratch files; checked the list.");
    const shot = path.join(ARTIFACTS, "approval-step.png");
    // At 1440x900, as the README says: the inbox, the run list and the pinned decision panel in one viewport.
    await a.page.setViewportSize({ width: 1440, height: 900 });
    await a.page.evaluate(() => window.scrollTo(0, 0));
    await a.page.screenshot({ path: shot });
    if (process.env.RUNCAST_UPDATE_SCREENSHOT) copyFileSync(shot, path.join(REPO_DIR, "docs", "screenshot.png"));

    // The approver approves with a reason; every page shows who, when and why; the buttons go away.
    await recordStreaming(v.page);
    await cardA.locator('[data-testid="approve"]').click();
    for (const { page } of [v, a]) {
      const decision = page.locator('[data-testid="approval"] [data-testid="decision"]');
      await decision.waitFor();
      assert.match(await decision.textContent(), /^Approved by Alice, 1 of 1 · \d\d:\d\d:\d\d UTC: “Only the scratch files; checked the list\.”$/);
      await page.waitForFunction(() => document.querySelector('[data-testid="run-status"]').textContent.includes("completed"));
      assert.equal(await page.locator('[data-testid="approve"]:visible, [data-testid="reject"]:visible, [data-testid="reason"]:visible').count(), 0);
    }
    const finalA = await a.page.locator('[data-final="1"]').textContent();
    assert.match(finalA, /^Done\. I deleted 3 files/);
    assert.equal(await v.page.locator('[data-final="1"]').textContent(), finalA);
    assert.equal(await a.page.locator('[data-testid="final-output"]:visible').count(), 0, "the final answer is shown once");
    const end = await messages(a.page);
    assert.deepEqual(await messages(v.page), end, "the same text on both pages at the end");
    assert.equal(end.at(-1), finalA);
    await assertStreamed(v.page, 2, end[2], "viewer"); // the viewer watched the last message stream in
    const tools = await v.page.locator('[data-testid="tool-call"]').allTextContents();
    assert.equal(tools.length, 2);
    assert.match(tools[0], /list_files.*done.*scratch\/old-logs\.zip \(340 MB\)/s);
    assert.match(tools[1], /delete_files.*done/s);
    assert.match(await v.page.locator('[data-testid="gated-output"]').textContent(), /delete_files · output.*deleted 3 files/s);
    // The run list follows the run.
    await v.page.waitForFunction((id) => document.querySelector(`[data-run-id="${id}"]`)?.textContent.includes("completed"), runId);

    // The page's fold is the log's.
    const log = await fetchLog(server, tok.alice, runId);
    const [sa, sv] = [await pageState(a.page), await pageState(v.page)];
    assert.deepEqual(sa.items, sv.items);
    assert.equal(Math.max(sa.seq, sv.seq) <= log.length, true);
    assert.deepEqual([a.page.errors, v.page.errors], [undefined, undefined], "no script errors");

    // The viewer closes their page: they leave the approver's list of who is watching.
    assert.match(await participantsText(a.page), /Vic/);
    await v.context.close();
    await a.page.waitForFunction(() => !document.querySelector('[data-testid="participants"]').textContent.includes("Vic"));
    assert.equal(await participantsText(a.page), "Alice (approver, operator) · you");
    await a.context.close();
  });

  test("reload mid-run, while streaming and at the approval: nothing lost, nothing doubled", async () => {
    const a = await person(tok.alice);
    const runId = await startFromForm(a.page, "demo", "Tidy the scratch folder.");
    const ref = await reference(runId);
    // Mid-stream: the first message has started and is not finished.
    await a.page.waitForFunction(() => document.querySelector('[data-testid="message"]')?.textContent.length > 0
      && document.querySelector(".item.msg.streaming"));
    const before = (await messages(a.page))[0];
    await a.page.reload();
    assert.equal(runIdOf(a.page), runId, "the run is still in the address");
    await a.page.locator('[data-testid="connection"][data-state="open"]').waitFor();
    await a.page.waitForFunction((t) => document.querySelector('[data-testid="message"]')?.textContent.startsWith(t), before);

    // At the approval: reload again; the card comes back with its buttons.
    await a.page.locator('[data-testid="approval"] [data-testid="approve"]').waitFor();
    const atPause = await messages(a.page);
    await a.page.reload();
    await a.page.locator('[data-testid="approval"] [data-testid="approve"]').waitFor();
    assert.deepEqual(await messages(a.page), atPause);
    assert.match(await statusText(a.page), /paused/);
    await a.page.fill('[data-testid="reason"]', "fine");
    await a.page.click('[data-testid="approve"]');
    await a.page.waitForFunction(() => document.querySelector('[data-testid="run-status"]').textContent.includes("completed"));

    const [ps, rs] = await settledStates(a.page, ref, runId);
    assert.deepEqual(ps, rs, "the reloaded page folds exactly the state of a client that never reloaded");
    assert.deepEqual(await messages(a.page), rs.items.filter((i) => i.kind === "message").map((i) => i.text));
    assert.equal(await a.page.locator('[data-testid="approval"]').count(), 1);
    assert.equal(await a.page.locator('[data-testid="tool-call"]').count(), 2);
    assert.equal(await a.page.locator('[data-final="1"]').count(), 1);
    ref.c.close();
    await a.context.close();
  });

  test("a dropped network: the page says so, reconnects, and the view comes back whole", async () => {
    const proxy = await startProxy(server.port);
    const olga = new RuncastClient({ url: server.ws, token: tok.alice, WebSocket });
    await olga.connect();
    const runId = await olga.start("demo", "Free some space, please.");
    const ref = { c: olga, sub: olga.subscribe(runId) };
    // The page talks to the hub through a proxy that we can cut like a network.
    const v = await person(tok.vic, { base: proxy.base, hash: `run=${runId}` });
    await v.page.waitForFunction(() => document.querySelector('[data-testid="message"]')?.textContent.length > 0);

    proxy.block();
    assert.ok(proxy.cut() >= 1);
    await v.page.locator('[data-testid="connection"][data-state="reconnecting"]').waitFor();
    // While the page is offline the run goes on: it pauses, is approved, and finishes.
    const ap = await waitFor(() => Object.values(ref.sub.state.approvals).find((x) => x.status === "pending"), { message: "the approval" });
    await olga.decide(runId, ap.approvalId, "approve", "approved while you were offline");
    await waitFor(() => ref.sub.state.status === "completed", { message: "the run to complete" });
    assert.match(await statusText(v.page), /running|paused/, "the page has not seen the end yet");

    proxy.unblock();
    await v.page.locator('[data-testid="connection"][data-state="open"]').waitFor({ timeout: 30_000 });
    await v.page.waitForFunction(() => document.querySelector('[data-testid="run-status"]').textContent.includes("completed"));
    assert.match(await v.page.locator('[data-testid="decision"]').textContent(), /Approved by Alice, 1 of 1 · .*approved while you were offline/);
    const [ps, rs] = await settledStates(v.page, ref, runId);
    assert.deepEqual(ps, rs, "after the outage the page folds exactly the state of a client that never dropped");
    assert.deepEqual(await messages(v.page), rs.items.filter((i) => i.kind === "message").map((i) => i.text));
    assert.equal(await v.page.evaluate(() => window.runcastMonitor.client.connects), 2);
    olga.close();
    await v.context.close();
    await proxy.close();
  });

  test("an operator cancels a paused run; a handoff shows; the approval ends as cancelled", async () => {
    const o = await person(tok.olga);
    const runId = await startFromForm(o.page, "demo-handoff", "The web service returns errors.");
    await o.page.locator('[data-testid="approval"]').waitFor();
    assert.match(await o.page.locator('[data-testid="handoff"]').textContent(), /Triage → Ops/);
    assert.equal(await o.page.locator('[data-testid="approve"]').count(), 1, "operator is in restart_service's policy");
    await o.page.click('[data-testid="cancel"]');
    await o.page.waitForFunction(() => document.querySelector('[data-testid="run-status"]').textContent.includes("cancelled"));
    assert.match(await o.page.locator('[data-testid="decision"]').textContent(), /Cancelled with the run/);
    assert.equal(await o.page.locator('[data-testid="approve"]:visible').count(), 0);
    assert.equal(await o.page.locator('[data-testid="cancel"]').isHidden(), true);
    const log = await fetchLog(server, tok.olga, runId);
    assert.deepEqual(log.slice(-2).map((e) => e.type), ["approval.cancelled", "run.cancelled"], "the log ends with the cancel");
    assert.deepEqual(log.at(-1).data.by, { sub: "olga", name: "Olga" });
    await o.context.close();
  });

  test("the countdown runs on the hub's clock, not the browser's; at zero the buttons go away", async () => {
    // This computer's clock is an hour fast: the page must go by the hub's clock, which it sends with welcome and sync.
    const a = await person(tok.alice, { skewMs: 3_600_000 });
    const runId = await startFromForm(a.page, "demo", "Free some space, with a wrong clock.");
    const card = a.page.locator('[data-testid="approval"]');
    await card.locator('[data-testid="approve"]').waitFor();
    const offset = await a.page.evaluate(() => window.runcastMonitor.clockOffsetMs);
    assert.ok(Math.abs(offset + 3_600_000) < 5000, `the hub's clock is estimated an hour behind the browser's (${offset} ms)`);
    assert.match(await card.locator('[data-testid="deadline"]').textContent(), /^Expires in (9|10):\d\d · at \d\d:\d\d:\d\d UTC$/, "the demo's 10 minutes");

    // Ten minutes and more pass (the page's clock moves on): the countdown reaches zero before the hub's expiry event
    // arrives, and the page stops offering a decision the hub would refuse.
    await a.page.evaluate(() => { window.__clockSkewMs += 11 * 60_000; });
    await card.locator('[data-testid="approve"]').waitFor({ state: "hidden", timeout: 5000 });
    assert.equal(await card.locator('[data-testid="reject"]:visible, [data-testid="reason"]:visible').count(), 0);
    assert.equal(await card.locator('[data-testid="deadline"]').textContent(), "Expired: being rejected automatically…");
    assert.equal((await server.api(`/api/runs/${runId}`, tok.alice)).status, "paused", "the hub has not expired it yet");
    assert.equal(a.page.errors, undefined, "no script errors");
    await server.api(`/api/runs/${runId}/cancel`, tok.alice, { method: "POST", body: "{}" });
    await a.context.close();
  });
});
