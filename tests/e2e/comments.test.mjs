// The discussion in headless Chromium against a real `runcast serve`: Vic (a viewer) comments on an approval with an
// @mention picked from the completion list; Alex, in another browser context, sees the mention in the inbox column
// and the comment beside the decision, replies, and decides; the thread stays in the history.
// Needs Debian's chromium at /usr/bin/chromium (or CHROMIUM_PATH); playwright-core only drives it.

import assert from "node:assert/strict";
import { test } from "node:test";

import { waitFor } from "../../client_js/test/helpers.mjs";
import { suite } from "./browser.mjs";

let server;
let browser;
const { tok } = suite({ delay: "0.005" }, {
  dana: ["dana", "Dana", ["admin"]],
  alex: ["alex", "Alex Kim", ["approver"]],
  vic: ["vic", "Vic", ["viewer"]],
}, (ready) => ({ server, browser } = ready));

async function person(token, hash = "") {
  const context = await browser.newContext({ viewport: { width: 1440, height: 900 }, locale: "en-GB", timezoneId: "UTC" });
  const page = await context.newPage();
  page.setDefaultTimeout(20_000);
  page.on("pageerror", (err) => { page.errors = [...(page.errors || []), err]; });
  await page.goto(`${server.base}/#token=${token}${hash ? `&${hash}` : ""}`);
  await page.locator('[data-testid="connection"][data-state="open"]').waitFor();
  return { context, page };
}

test("a comment with a mention reaches the mentioned person's inbox in another browser; the thread stays after the decision", async () => {
  const { run_id: runId } = await server.api("/api/runs", tok.dana, { method: "POST", body: JSON.stringify({ agent: "demo", input: "free some disk space" }) });
  // Alex opens the run first (so the hub knows Alex watched it), then keeps only the inbox in view
  const alex = await person(tok.alex, `run=${runId}`);
  const card = alex.page.locator('[data-testid="decision-panel"] [data-testid="approval"]');
  await card.waitFor();
  await waitFor(async () => (await server.api(`/api/runs/${runId}`, tok.dana)).watched.some((w) => w.sub === "alex"), { message: "alex in the watched record" });

  const vic = await person(tok.vic, `run=${runId}`);
  const vcard = vic.page.locator('[data-testid="transcript"] [data-testid="approval"]');
  await vcard.waitFor();
  const box = vcard.locator('[data-testid="comment-box"]');
  await box.fill("Wait, is build-cache.tar still used? @Al");
  await box.press("End");
  await box.dispatchEvent("input");
  const option = vcard.locator('[data-testid="mention-option"][data-handle="AlexKim"]');
  await option.click();
  assert.equal(await box.inputValue(), "Wait, is build-cache.tar still used? @AlexKim ");
  await box.fill(`${await box.inputValue()}this one is yours`);
  await vcard.locator('[data-testid="comment-send"]').click();
  await vcard.locator('[data-testid="comment"]').first().waitFor();
  assert.equal(await vcard.locator('[data-testid="comment"] [data-testid="comment-text"]').first().textContent(),
    "Wait, is build-cache.tar still used? @AlexKim this one is yours");

  // a mention of nobody is refused on the page, and nothing is added
  await box.fill("@Nobody look");
  await vcard.locator('[data-testid="comment-send"]').click();
  await vcard.locator('[data-testid="comment-error"]:not([hidden])').waitFor();
  assert.match(await vcard.locator('[data-testid="comment-error"]').textContent(), /Nobody here is called @Nobody/);

  // Alex's inbox column says Vic mentions Alex; the comment sits beside the decision
  const item = alex.page.locator('[data-testid="mention-item"]');
  await item.waitFor();
  assert.match(await item.textContent(), /^Vic mentions you/);
  assert.equal(await item.getAttribute("data-run-id"), runId);
  await card.locator('[data-testid="comment"]').first().waitFor();
  assert.match(await card.locator('[data-testid="comment-text"]').first().textContent(), /@AlexKim this one is yours/);
  await card.locator('[data-testid="comment-box"]').fill("No, it can go.");
  await card.locator('[data-testid="comment-send"]').click();
  await vcard.locator('[data-testid="comment"]').nth(1).waitFor();
  await card.locator('[data-testid="approve"]').click();
  // after the decision the thread is in the history, for both
  const hist = alex.page.locator(`[data-testid="transcript"] [data-testid="approval"][data-status="approved"] [data-testid="comment"]`);
  await waitFor(async () => (await hist.count()) === 2, { message: "the thread in Alex's history" });
  await waitFor(async () => (await vic.page.locator('[data-testid="transcript"] [data-testid="approval"][data-status="approved"] [data-testid="comment"]').count()) === 2,
    { message: "the thread in Vic's history" });
  // and a new browser for Alex gets the mention from its inbox snapshot
  const again = await person(tok.alex);
  await again.page.locator('[data-testid="mention-item"]').waitFor();
  for (const p of [alex.page, vic.page, again.page]) assert.deepEqual(p.errors || [], []);
  for (const c of [alex.context, vic.context, again.context]) await c.close();
});
