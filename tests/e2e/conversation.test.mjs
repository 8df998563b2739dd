// The run as a conversation, in headless Chromium against a real `runcast serve` (README, "Conversations"): two
// people talk in one run (the queue while paused, a follow-up after completion), and an approval approved with changes.
// Needs Debian's chromium at /usr/bin/chromium (or CHROMIUM_PATH); playwright-core only drives it.

import assert from "node:assert/strict";
import { test } from "node:test";

import { waitFor } from "../../client_js/test/helpers.mjs";
import { suite } from "./browser.mjs";

let server;
let browser;
const { tok } = suite({ delay: "0.005" }, {
  olga: ["olga", "Olga", ["operator"]],
  dana: ["dana", "Dana", ["admin"]],
  alex: ["alex", "Alex", ["approver"]],
}, (ready) => ({ server, browser } = ready));

async function person(token, runId) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, locale: "en-GB", timezoneId: "UTC" });
  const page = await context.newPage();
  page.setDefaultTimeout(30_000);
  page.on("pageerror", (err) => { page.errors = [...(page.errors || []), err]; });
  await page.goto(`${server.base}/#token=${token}&run=${runId}`);
  await page.locator('[data-testid="connection"][data-state="open"]').waitFor();
  return { context, page };
}

async function startRun(token, agent = "demo", input = "tidy up") {
  const r = await fetch(`${server.base}/api/runs`, { method: "POST", headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
    body: JSON.stringify({ agent, input }) });
  assert.equal(r.status, 201);
  return (await r.json()).run_id;
}

const said = (page) => page.locator('[data-testid="said-text"]').allTextContents();

test("two people in one conversation: a queued message while paused, then a follow-up after completion", async () => {
  const runId = await startRun(tok.olga);
  const olga = await person(tok.olga, runId);
  const dana = await person(tok.dana, runId);
  await olga.page.locator('[data-testid="approval"]').first().waitFor();
  await olga.page.locator('[data-testid="say-text"]').fill("Please keep old-logs.zip");
  // who is typing, from presence: Dana sees Olga typing (Olga's own page does not list her), until she sends
  await dana.page.locator('[data-testid="typing"]', { hasText: "Olga is typing…" }).waitFor();
  assert.equal(await olga.page.locator('[data-testid="typing"]').isVisible(), false);
  await olga.page.locator('[data-testid="say-send"]').click();
  await dana.page.locator('[data-testid="typing"]').waitFor({ state: "hidden" });
  // everyone sees the queue, with its author; only the author may withdraw
  await dana.page.locator('[data-testid="queued"]', { hasText: "Olga: Please keep old-logs.zip" }).waitFor();
  assert.equal(await dana.page.locator('[data-testid="queued"] [data-testid="withdraw"]').count(), 0);
  assert.equal(await olga.page.locator('[data-testid="queued"] [data-testid="withdraw"]').count(), 1);
  await dana.page.locator('#decide [data-testid="approve"]').click();
  await olga.page.locator('[data-testid="transcript"]', { hasText: 'Olga, you said: "Please keep old-logs.zip".' }).waitFor();
  await waitFor(async () => (await olga.page.locator('[data-testid="queued"]').count()) === 0, { message: "queue empty" });
  // a follow-up after completion, from the other person
  await waitFor(async () => (await dana.page.locator('[data-testid="say-hint"]').textContent()).startsWith("The agent waits"), { timeout: 30_000, message: "idle hint" });
  await dana.page.locator('[data-testid="say-text"]').fill("Thanks! Anything else?");
  await olga.page.locator('[data-testid="typing"]', { hasText: "Dana is typing…" }).waitFor();
  await dana.page.locator('[data-testid="say-text"]').blur(); // she looks away: no longer typing
  await olga.page.locator('[data-testid="typing"]').waitFor({ state: "hidden" });
  await dana.page.locator('[data-testid="say-text"]').press("Enter");
  await olga.page.locator('[data-testid="transcript"]', { hasText: 'Dana, you said: "Thanks! Anything else?". So far I have heard from: Olga, Dana.' }).waitFor();
  assert.deepEqual(await said(olga.page), ["Please keep old-logs.zip", "Thanks! Anything else?"]);
  assert.deepEqual(await said(dana.page), await said(olga.page));
  for (const p of [olga, dana]) {
    assert.deepEqual(p.page.errors || [], []);
    await p.context.close();
  }
});

test("an approver edits the call's arguments; the schema's refusal shows; the tool runs with the edit", async () => {
  const runId = await startRun(tok.olga);
  const alex = await person(tok.alex, runId);
  const card = alex.page.locator('#decide [data-testid="approval"]').first();
  await card.waitFor();
  await card.locator('[data-testid="edit"] summary').click();
  const area = card.locator('[data-testid="edit-arguments"]');
  // (the details' `toggle` event, which fills the editor, comes a task after the click)
  await waitFor(async () => /build-cache\.tar/.test(await area.inputValue()), { message: "the call's arguments in the editor" });
  await area.fill('{"paths": "scratch/old-logs.zip"}');
  await card.locator('[data-testid="approve-edited"]').click();
  await card.locator('[data-testid="edit-error"]', { hasText: "invalid_arguments" }).waitFor();
  await area.fill('{"paths": ["scratch/old-logs.zip"]}');
  await card.locator('[data-testid="approve-edited"]').click();
  await alex.page.locator('[data-testid="transcript"]', { hasText: "Done. I deleted 1 files: scratch/old-logs.zip." }).waitFor();
  const log = await (await fetch(`${server.base}/api/runs/${runId}/events?limit=1000`, { headers: { Authorization: `Bearer ${tok.dana}` } })).json();
  const decided = log.events.find((e) => e.type === "approval.decided");
  assert.equal(decided.data.arguments, '{"paths":["scratch/old-logs.zip"]}');
  assert.deepEqual(decided.data.changes.map((c) => c.key), ["paths"]);
  assert.deepEqual(alex.page.errors || [], []);
  await alex.context.close();
});
