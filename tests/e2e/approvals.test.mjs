// What needs you, on a desktop (1440x900) and on a phone (390x844), in headless Chromium against a real
// `runcast serve`: the approvals inbox, the pinned decision panel, the story in order, and the honest states.
// Needs Debian's chromium at /usr/bin/chromium (or CHROMIUM_PATH); playwright-core only drives it.

import assert from "node:assert/strict";
import net from "node:net";
import path from "node:path";
import { describe, test } from "node:test";

import { RuncastClient } from "../../client_js/src/runcast.js";
import { makeToken, startProxy, startServer, waitFor } from "../../client_js/test/helpers.mjs";
import { require, suite } from "./browser.mjs";

const WebSocket = require("ws");

const SCREENS = { desktop: { width: 1440, height: 900 }, phone: { width: 390, height: 844 } };

let server;
let browser;
const { tok } = suite({ delay: "0.005" }, {
  dana: ["dana", "Dana", ["admin"]],
  alex: ["alex", "Alex", ["approver"]],
  vic: ["vic", "Vic", ["viewer"]],
}, (ready) => ({ server, browser } = ready));

/**
 * A TCP proxy that can hold back what the browser sends (`stall()`: bytes to the hub are dropped, as on a network that
 * died mid-send), refuse new connections (`block()`), and cut every connection (`cut()`).
 */
async function stallingProxy(targetPort) {
  const pairs = new Set();
  let blocked = false;
  let stalled = false;
  const srv = net.createServer((client) => {
    if (blocked) { client.destroy(); return; }
    const upstream = net.connect(targetPort, "127.0.0.1");
    const pair = { client, upstream };
    pairs.add(pair);
    const drop = () => { client.destroy(); upstream.destroy(); pairs.delete(pair); };
    for (const s of [client, upstream]) { s.on("error", drop); s.on("close", drop); }
    client.on("data", (d) => { if (!stalled) upstream.write(d); });
    upstream.on("data", (d) => client.write(d));
  });
  await new Promise((r) => srv.listen(0, "127.0.0.1", r));
  return {
    base: `http://127.0.0.1:${srv.address().port}`,
    stall() { stalled = true; },
    block() { blocked = true; },
    unblock() { blocked = false; stalled = false; },
    cut() { for (const { client, upstream } of pairs) { client.destroy(); upstream.destroy(); } pairs.clear(); },
    close: () => new Promise((r) => { for (const { client, upstream } of pairs) { client.destroy(); upstream.destroy(); } srv.close(r); }),
  };
}

async function person(token, viewport, { base = server.base, hash = "" } = {}) {
  const context = await browser.newContext({ viewport, locale: "en-GB", timezoneId: "UTC", isMobile: viewport.width < 500, hasTouch: viewport.width < 500 });
  const page = await context.newPage();
  page.setDefaultTimeout(20_000);
  page.on("pageerror", (err) => { page.errors = [...(page.errors || []), err]; });
  page.on("dialog", (d) => d.accept());
  await page.goto(`${base}/#token=${token}${hash ? `&${hash}` : ""}`);
  await page.locator('[data-testid="connection"][data-state="open"]').waitFor();
  return { context, page };
}

const startRun = async (agent, input, token = tok.dana) =>
  (await server.api("/api/runs", token, { method: "POST", body: JSON.stringify({ agent, input }) })).run_id;
const cancelRun = (runId) => server.api(`/api/runs/${runId}/cancel`, tok.dana, { method: "POST", body: "{}" });
const inboxIds = (page) => page.$$eval('[data-testid="inbox-item"]', (els) => els.map((e) => e.dataset.runId));
const untilPaused = (runId) => waitFor(async () => (await server.api(`/api/runs/${runId}`, tok.dana)).status === "paused", { message: `${runId} paused` });

/** The element is inside the viewport, without scrolling. */
async function onScreen(page, locator, label) {
  const box = await locator.boundingBox();
  const vp = page.viewportSize();
  assert.ok(box, `${label} is rendered`);
  assert.equal(await page.evaluate(() => window.scrollY), 0, `${label}: the page was not scrolled`);
  assert.ok(box.y >= 0 && box.y + box.height <= vp.height && box.x >= 0 && box.x + box.width <= vp.width,
    `${label} inside the ${vp.width}x${vp.height} viewport: ${JSON.stringify(box)}`);
}

for (const [screen, viewport] of Object.entries(SCREENS)) {
  describe(`what needs you, ${screen} ${viewport.width}x${viewport.height}`, () => {
    test("the approver lands on the inbox, opens the run, decides from the pinned panel; the story reads in order", async () => {
      const runId = await startRun("demo", "Please free some disk space.");
      const a = await person(tok.alex, viewport);
      const { page } = a;
      // On landing: the inbox and the run list, no Start form (an approver cannot start runs).
      const item = page.locator(`[data-testid="inbox-item"][data-run-id="${runId}"]`);
      await item.waitFor();
      await onScreen(page, item, "the inbox item");
      await onScreen(page, page.locator(`[data-testid="run-link"][data-run-id="${runId}"]`), "the run in the list");
      assert.equal(await page.locator('[data-testid="start-form"]').isHidden(), true, "no Start form for an approver");
      assert.match(await page.title(), /^\(\d+\) Needs you · Runcast$/);
      assert.match(await page.locator(`[data-testid="run-link"][data-run-id="${runId}"]`).textContent(), /needs you: 1/);

      await item.click();
      const panel = page.locator('[data-testid="decision-panel"]');
      const approve = panel.locator('[data-testid="approve"]');
      const reject = panel.locator('[data-testid="reject"]');
      await approve.waitFor();
      await page.evaluate(() => window.scrollTo(0, 0));
      for (const [b, label] of [[approve, "Approve"], [reject, "Reject"]]) {
        assert.equal(await b.isEnabled(), true, `${label} is enabled`);
        await onScreen(page, b, label);
      }
      // The card says what exactly is being approved, by itself.
      const card = await panel.locator('[data-testid="approval"]').textContent();
      for (const want of ["Janitor asks to run delete_files", "started by Dana", "Please free some disk space.",
        "delete_files: Delete files for good (needs a teammate's approval). The demo deletes nothing.",
        "paths", "scratch/build-cache.tar", "Policy: approver (or admin) may decide", "You may decide: you have the approver role"]) {
        assert.ok(card.includes(want), `the card shows "${want}"`);
      }
      assert.match(await panel.locator('[data-testid="deadline"]').textContent(), /^Expires in (9|10):\d\d · at \d\d:\d\d:\d\d UTC$/);
      assert.equal(await panel.locator('[data-testid="raw-arguments"]').isVisible(), false, "raw JSON is one click away");
      assert.equal((await panel.locator('[data-testid="arguments"]').textContent()).match(/scratch\/build-cache\.tar/g).length, 2,
        "the arguments once as fields (and once in the folded raw JSON)");
      assert.equal(await page.getByLabel(/^Reason/).count(), 1, "the reason field has a label");
      assert.match(await page.locator('[data-testid="decision-announcement"]').textContent(), /Needs your decision: Janitor asks to run delete_files/);
      assert.equal(await page.locator('[data-testid="transcript"]').getAttribute("aria-live"), null, "the transcript is not a live region");

      // Keyboard: from the top of the page, the decision panel within 3 Tab presses.
      await page.reload();
      await approve.waitFor();
      let reached = 0;
      for (let i = 1; i <= 3 && !reached; i++) {
        await page.keyboard.press("Tab");
        if (await page.evaluate(() => Boolean(document.activeElement?.closest('[data-testid="decision-panel"]')))) reached = i;
      }
      assert.ok(reached >= 1 && reached <= 3, "the decision panel is reached in at most 3 Tab presses");
      await page.evaluate(() => document.activeElement.blur());
      await page.evaluate(() => window.scrollTo(0, 0));
      // The skip link, first in the tab order, jumps into the panel.
      await page.locator('[data-testid="skip-to-decision"]').focus();
      await page.keyboard.press("Enter");
      assert.equal(await page.evaluate(() => document.activeElement?.dataset.testid), "reason");

      await page.fill('[data-testid="reason"]', "scratch only");
      await approve.click();
      await page.waitForFunction(() => document.querySelector('[data-testid="run-status"]').textContent.includes("completed"));
      // History in order: the card (request, decision) and then the tool's output; the answer once; no cursor.
      const order = await page.evaluate(() => {
        const card = document.querySelector('[data-testid="transcript"] [data-testid="approval"]');
        const out = document.querySelector('[data-testid="gated-output"]');
        return { after: Boolean(card && out && (card.compareDocumentPosition(out) & Node.DOCUMENT_POSITION_FOLLOWING)), out: out?.textContent };
      });
      assert.ok(order.after, "the tool's output is drawn after the decision");
      assert.match(order.out, /delete_files · output.*deleted 3 files/s);
      assert.match(await page.locator('[data-testid="transcript"] [data-testid="decision"]').textContent(), /^Approved by Alex, 1 of 1 · \d\d:\d\d:\d\d UTC: “scratch only”$/);
      assert.equal(await page.locator('[data-final="1"]').count(), 1, "the final answer once");
      assert.equal(await page.locator('[data-testid="final-output"]:visible').count(), 0);
      assert.equal(await page.locator(".streaming").count(), 0, "no cursor on a run that ended");
      // the panel stays, with what was decided, where it was decided; nothing more to decide in it
      assert.match(await page.locator('[data-testid="decision-panel"] [data-testid="decision-confirmation"]').textContent(), /You approved delete_files: the run goes on\./);
      assert.equal(await page.locator('[data-testid="decision-panel"] [data-testid="approval"]').count(), 0);
      assert.equal(await page.locator(`[data-testid="inbox-item"][data-run-id="${runId}"]`).count(), 0);
      assert.equal(page.errors, undefined, "no script errors");
      await a.context.close();
    });

    test("a page watching another run gets the new approval in its inbox and title within 1 s; a viewer never does", async () => {
      const other = await startRun("demo-handoff", "something else");
      await untilPaused(other);
      const a = await person(tok.alex, viewport, { hash: `run=${other}` });
      const v = await person(tok.vic, viewport);
      await a.page.locator('[data-testid="run-status"]').filter({ hasText: "paused" }).waitFor();
      const countBefore = await a.page.locator('[data-testid="inbox-item"]').count();
      // Record, in the page, when each inbox item appears (the page's clock is this machine's clock).
      await a.page.evaluate(() => {
        window.__seenAt = {};
        const note = () => {
          for (const el of document.querySelectorAll('[data-testid="inbox-item"]')) window.__seenAt[el.dataset.runId] ??= { at: Date.now(), title: document.title };
        };
        new MutationObserver(note).observe(document.getElementById("inbox"), { childList: true, subtree: true });
      });
      // A reference client sees approval.requested arrive.
      const ref = new RuncastClient({ url: server.ws, token: tok.dana, WebSocket });
      await ref.connect();
      const runId = await ref.start("demo", "Tidy up, please.");
      let requestedAt = null;
      ref.subscribe(runId, { onEvent: (ev) => { if (ev.type === "approval.requested") requestedAt ??= Date.now(); } });
      await waitFor(() => requestedAt, { message: "approval.requested" });
      const seen = await waitFor(() => a.page.evaluate((id) => window.__seenAt[id], runId), { message: "the inbox item", timeout: 5000 });
      assert.ok(seen.at - requestedAt < 1000, `in the inbox ${seen.at - requestedAt} ms after approval.requested`);
      await a.page.waitForFunction((n) => document.title === `(${n}) Needs you · Runcast`, countBefore + 1, { timeout: 1000 });
      assert.equal(await a.page.locator('[data-testid="inbox-count"]').textContent(), String(countBefore + 1));
      // Still on the other run: nothing moved under the reader.
      assert.equal(new URLSearchParams(new URL(a.page.url()).hash.slice(1)).get("run"), other);
      await a.page.waitForTimeout(500);
      assert.deepEqual(await inboxIds(v.page), [], "the viewer's inbox never shows it");
      assert.equal(await v.page.title(), "Runcast");
      assert.equal(await v.page.locator('[data-testid="needs-you"]').count(), 0);
      await cancelRun(runId);
      await cancelRun(other);
      await a.page.waitForFunction((id) => !document.querySelector(`[data-testid="inbox-item"][data-run-id="${id}"]`), runId);
      ref.close();
      assert.deepEqual([a.page.errors, v.page.errors], [undefined, undefined]);
      await a.context.close();
      await v.context.close();
    });

    test("a 2-of-2 quorum names both voters in the verdict", async () => {
      const runId = await startRun("demo-quorum", "Ship 2.4.1");
      await untilPaused(runId);
      const a = await person(tok.alex, viewport, { hash: `run=${runId}` });
      const d = await person(tok.dana, viewport, { hash: `run=${runId}` });
      await a.page.locator('[data-testid="decision-panel"] [data-testid="approve"]').click();
      await a.page.locator('[data-testid="approval"] [data-testid="why"]').filter({ hasText: "You voted; waiting for 1 more approval" }).waitFor();
      await a.page.waitForFunction((id) => !document.querySelector(`[data-testid="inbox-item"][data-run-id="${id}"]`), runId);
      await d.page.locator('[data-testid="decision-panel"] [data-testid="votes"]').filter({ hasText: "Alex approved" }).waitFor();
      await d.page.locator('[data-testid="decision-panel"] [data-testid="approve"]').click();
      for (const { page } of [a, d]) {
        const verdict = page.locator('[data-testid="transcript"] [data-testid="decision"]');
        await verdict.waitFor();
        assert.match(await verdict.textContent(), /^Approved by Alex and Dana, 2 of 2 · \d\d:\d\d:\d\d UTC$/);
        await page.locator('[data-testid="gated-output"]').filter({ hasText: "deployed 2.4.1" }).waitFor();
      }
      await a.context.close();
      await d.context.close();
    });
  });
}

describe("honest states", () => {
  test("an unknown run id, and a run the token may not see: one message, no spinner, no buttons", async () => {
    const secret = await startRun("demo", "not for everyone");
    const limited = makeToken("lim", "Lim", ["approver"], { runs: ["run_other"] });
    for (const [token, hash] of [[tok.alex, "run=run_doesnotexist"], [limited, `run=${secret}`]]) {
      const { context, page } = await person(token, SCREENS.phone, { hash });
      const msg = page.locator('[data-testid="run-message"]');
      await msg.waitFor();
      assert.equal(await msg.textContent(), "No such run, or not yours to see. Check the link, or pick a run from the list.");
      assert.doesNotMatch(await page.locator('[data-testid="run-status"]').textContent(), /loading/);
      assert.equal(await page.locator('[data-testid="approve"]:visible').count(), 0);
      await context.close();
    }
    await cancelRun(secret);
  });

  test("an unreachable hub: the card says a vote cannot be sent now, and the buttons wait", async () => {
    const proxy = await startProxy(server.port);
    const runId = await startRun("demo", "while the network is flaky");
    await untilPaused(runId);
    const { context, page } = await person(tok.alex, SCREENS.desktop, { base: proxy.base, hash: `run=${runId}` });
    const approve = page.locator('[data-testid="decision-panel"] [data-testid="approve"]');
    await approve.waitFor();
    assert.equal(await approve.isEnabled(), true);
    proxy.block();
    proxy.cut();
    await page.locator('[data-testid="connection"][data-state="reconnecting"]').waitFor();
    const state = page.locator('[data-testid="decision-panel"] [data-testid="vote-state"]');
    await state.filter({ hasText: "The hub is unreachable: a vote cannot be sent now." }).waitFor();
    assert.equal(await approve.isDisabled(), true, "no live buttons while the hub is unreachable");
    assert.equal(await page.locator('[data-testid="decision-panel"] [data-testid="reject"]').isDisabled(), true);
    assert.match(await page.locator('[data-testid="connection"]').textContent(), /unreachable/);
    proxy.unblock();
    await page.locator('[data-testid="connection"][data-state="open"]').waitFor({ timeout: 30_000 });
    await page.waitForFunction(() => !document.querySelector('[data-testid="decision-panel"] [data-testid="approve"]').disabled);
    assert.equal(await state.isHidden(), true);
    await cancelRun(runId);
    await context.close();
    await proxy.close();
  });

  test("a new approval while the tab is hidden: a browser notification (once the person allowed them)", async () => {
    const context = await browser.newContext({ viewport: SCREENS.desktop, locale: "en-GB", timezoneId: "UTC" });
    await context.addInitScript(() => {
      window.__notes = [];
      let permission = "default";
      window.Notification = class {
        constructor(title, opts) { window.__notes.push({ title, ...opts }); }
        static get permission() { return permission; }
        static async requestPermission() { permission = "granted"; return permission; }
      };
      Object.defineProperty(document, "visibilityState", { get: () => window.__hidden ? "hidden" : "visible" });
    });
    const page = await context.newPage();
    await page.goto(`${server.base}/#token=${tok.alex}`);
    await page.locator('[data-testid="connection"][data-state="open"]').waitFor();
    await page.locator('[data-testid="notify"]').click(); // asks for permission (a click: browsers want a gesture)
    await page.locator('[data-testid="notify"]').waitFor({ state: "hidden" });
    const shown = await startRun("demo", "while you look");
    await page.locator(`[data-testid="inbox-item"][data-run-id="${shown}"]`).waitFor();
    assert.deepEqual(await page.evaluate(() => window.__notes), [], "no notification while the tab is visible");
    await page.evaluate(() => { window.__hidden = true; });
    const hidden = await startRun("demo-quorum", "while you are away");
    await page.waitForFunction(() => window.__notes.length === 1);
    const [note] = await page.evaluate(() => window.__notes);
    assert.equal(note.title, "Needs you: deploy");
    assert.match(note.body, /Release asks to run deploy \(run started by Dana\)/);
    await cancelRun(shown);
    await cancelRun(hidden);
    await context.close();
  });

  test("a run the hub forgot (a memory hub restarted): it says so and offers no buttons", async () => {
    const own = await startServer({ delay: "0.005" });
    try {
      const runId = (await own.api("/api/runs", tok.dana, { method: "POST", body: JSON.stringify({ agent: "demo", input: "soon forgotten" }) })).run_id;
      const { context, page } = await person(tok.alex, SCREENS.desktop, { base: own.base, hash: `run=${runId}` });
      await page.locator('[data-testid="decision-panel"] [data-testid="approve"]').waitFor();
      await own.stop("SIGKILL");
      const again = await startServer({ delay: "0.005", port: own.port });
      try {
        const msg = page.locator('[data-testid="run-message"]');
        await msg.filter({ hasText: "The hub no longer knows this run" }).waitFor({ timeout: 30_000 });
        assert.equal(await page.locator('[data-testid="approve"]:visible, [data-testid="reject"]:visible').count(), 0, "no buttons");
        assert.equal(await page.locator('[data-testid="decision-panel"]').isHidden(), true);
        assert.match(await page.locator('[data-testid="run-status"]').textContent(), /not known to the hub/);
        assert.ok((await page.locator('[data-testid="message"]').count()) > 0, "what the hub had sent stays on screen");
        assert.equal(await page.locator(".streaming").count(), 0);
        await context.close();
      } finally {
        await again.stop();
      }
    } finally {
      await own.stop();
    }
  });

  test("a vote whose connection died on the way shows as waiting, and is sent once the hub is back", async () => {
    const proxy = await stallingProxy(server.port);
    const runId = await startRun("demo", "a vote lost on the way");
    await untilPaused(runId);
    const { context, page } = await person(tok.alex, SCREENS.phone, { base: proxy.base, hash: `run=${runId}` });
    const panel = page.locator('[data-testid="decision-panel"]');
    await panel.locator('[data-testid="approve"]').waitFor();
    await page.fill('[data-testid="reason"]', "sent through a dying network");
    proxy.stall(); // the vote leaves the page but never reaches the hub
    await panel.locator('[data-testid="approve"]').click();
    await panel.locator('[data-testid="vote-state"]').filter({ hasText: "Sending your approve vote" }).waitFor();
    proxy.block();
    proxy.cut();
    const waiting = panel.locator('[data-testid="vote-state"]').filter({ hasText: "Your approve vote is waiting to be sent: the hub is unreachable" });
    await waiting.waitFor();
    assert.equal(await panel.locator('[data-testid="approve"]').isDisabled(), true);
    assert.equal((await server.api(`/api/runs/${runId}`, tok.dana)).pending_approvals[0].status, "pending", "the hub never got it");
    proxy.unblock();
    const verdict = page.locator('[data-testid="transcript"] [data-testid="decision"]');
    await verdict.filter({ hasText: "Approved by Alex, 1 of 1" }).waitFor({ timeout: 30_000 });
    assert.match(await verdict.textContent(), /“sent through a dying network”$/);
    await page.waitForFunction(() => document.querySelector('[data-testid="run-status"]').textContent.includes("completed"));
    assert.equal(await page.locator('.ap-error:visible').count(), 0, "no error: the vote was sent once the hub was back");
    await context.close();
    await proxy.close();
  });

  test("a link to one approval (#run=…&approval=…, as webhooks send it) opens the run at that card, focused", async () => {
    const runId = await startRun("demo", "link me to it");
    await untilPaused(runId);
    const ap = (await server.api(`/api/runs/${runId}`, tok.dana)).pending_approvals[0].approval_id;
    const focused = (page) => page.waitForFunction(() => document.activeElement?.dataset.approvalId)
      .then(() => page.evaluate(() => ({
        id: document.activeElement.dataset.approvalId,
        inPanel: Boolean(document.activeElement.closest('[data-testid="decision-panel"]')),
        marked: document.activeElement.classList.contains("targeted"),
        visible: (() => { const r = document.activeElement.getBoundingClientRect(); return r.top < innerHeight && r.bottom > 0; })(),
      })));
    // An approver: the card waits for them, so it is the one in the decision panel.
    const a = await person(tok.alex, SCREENS.phone, { hash: `run=${runId}&approval=${ap}` });
    assert.deepEqual(await focused(a.page), { id: ap, inPanel: true, marked: true, visible: true });
    // A viewer: the same approval, in the run's history.
    const v = await person(tok.vic, SCREENS.phone, { hash: `run=${runId}&approval=${ap}` });
    assert.deepEqual(await focused(v.page), { id: ap, inPanel: false, marked: true, visible: true });
    // A link whose approval is not in the run says so, and the run still opens.
    await v.page.goto(`${server.base}/#run=${runId}&approval=ap_not_here`);
    await v.page.locator('[data-testid="banner"]').filter({ hasText: "This run has no approval ap_not_here" }).waitFor();
    assert.equal(a.page.errors, undefined);
    assert.equal(v.page.errors, undefined);
    await cancelRun(runId);
    await a.context.close();
    await v.context.close();
  });

  test("a new #token= in the same tab takes effect at once; expired and invalid tokens say different things", async () => {
    const runId = await startRun("demo", "who is looking?");
    await untilPaused(runId);
    const { context, page } = await person(tok.vic, SCREENS.desktop);
    assert.match(await page.locator('[data-testid="me"]').textContent(), /^Vic · viewer \(you\)$/);
    assert.deepEqual(await inboxIds(page), []);
    await page.goto(`${server.base}/#token=${tok.alex}`); // the same document: only the fragment changes
    await page.locator('[data-testid="me"]').filter({ hasText: "Alex · approver (you)" }).waitFor();
    await page.locator(`[data-testid="inbox-item"][data-run-id="${runId}"]`).waitFor();
    assert.ok(!page.url().includes("token="), "the new token left the address bar");
    assert.equal(await page.evaluate(() => sessionStorage.getItem("runcast.token")), tok.alex);

    await page.goto(`${server.base}/#token=${makeToken("old", "Old", ["approver"], { ttlS: -60 })}`);
    await page.locator('[data-testid="banner"]').filter({ hasText: "Your link has expired" }).waitFor();
    await page.goto(`${server.base}/#token=${makeToken("eve", "Eve", ["admin"], { secret: "another-secret-entirely-0123456789" })}`);
    await page.locator('[data-testid="banner"]').filter({ hasText: "not valid for this hub" }).waitFor();
    assert.doesNotMatch(await page.locator('[data-testid="banner"]').textContent(), /expired/);
    assert.equal(await page.locator('[data-testid="start-submit"]:visible').count(), 0, "no Start button over an empty agent list");
    assert.equal(page.errors, undefined);
    await cancelRun(runId);
    await context.close();
  });
});
