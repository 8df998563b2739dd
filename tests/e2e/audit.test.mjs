// The audit view in headless Chromium (1440x900) against a real `runcast serve`: decisions by Alex and by Bob on
// three runs; an auditor opens the audit view, filters to Alex, sees exactly Alex's decisions newest first, and
// follows a row's link to its run. Needs Debian's chromium at /usr/bin/chromium (or CHROMIUM_PATH).

import assert from "node:assert/strict";
import { test } from "node:test";

import { waitFor } from "../../client_js/test/helpers.mjs";
import { suite } from "./browser.mjs";

let server;
let browser;
const { tok } = suite({ delay: "0.005" }, {
  dana: ["dana", "Dana", ["operator"]],
  alex: ["alex", "Alex Kim", ["approver"]],
  bob: ["bob", "Bob", ["approver"]],
  audrey: ["audrey", "Audrey", ["auditor"]],
}, (ready) => ({ server, browser } = ready));

async function decided(tokFor, decision, reason) {
  const { run_id: runId } = await server.api("/api/runs", tok.dana, { method: "POST", body: JSON.stringify({ agent: "demo", input: "free some disk space" }) });
  let ap;
  await waitFor(async () => { ap = (await server.api(`/api/runs/${runId}`, tok.dana)).pending_approvals?.[0]; return !!ap; }, { message: "the approval" });
  await server.api(`/api/runs/${runId}/approvals/${ap.approval_id}`, tokFor, { method: "POST", body: JSON.stringify({ decision, reason }) });
  return { runId, approvalId: ap.approval_id };
}

test("the audit view filtered to one person lists that person's decisions, newest first, each linking to its run", async () => {
  const first = await decided(tok.alex, "approve", "old logs");
  const other = await decided(tok.bob, "reject", "keep them");
  const second = await decided(tok.alex, "reject", "<b>not</b> today");

  const context = await browser.newContext({ viewport: { width: 1440, height: 900 }, locale: "en-GB", timezoneId: "UTC" });
  const page = await context.newPage();
  page.setDefaultTimeout(20_000);
  const errors = [];
  page.on("pageerror", (err) => errors.push(err));
  await page.goto(`${server.base}/#token=${tok.audrey}`);
  await page.locator('[data-testid="connection"][data-state="open"]').waitFor();
  await page.locator('[data-testid="audit-link"]').click();
  await page.locator('[data-testid="audit-view"]').waitFor();
  await waitFor(async () => (await page.locator('[data-testid="audit-row"]').count()) === 3, { message: "every decision" });

  await page.locator('[data-testid="audit-person"]').fill("alex");
  await page.locator('[data-testid="audit-submit"]').click();
  await waitFor(async () => (await page.locator('[data-testid="audit-row"]').count()) === 2, { message: "alex's decisions" });
  assert.match(page.url(), /#audit&person=alex$/);
  const rows = page.locator('[data-testid="audit-row"]');
  assert.deepEqual(await rows.evaluateAll((trs) => trs.map((tr) => [tr.dataset.run, tr.dataset.outcome])),
    [[second.runId, "rejected"], [first.runId, "approved"]]);
  assert.equal(await rows.nth(0).locator(".audit-reason").textContent(), "<b>not</b> today");  // text, never HTML
  assert.equal(await rows.nth(0).locator(".audit-by").textContent(), "Alex Kim");
  assert.ok(!(await rows.evaluateAll((trs) => trs.map((tr) => tr.dataset.run))).includes(other.runId));

  await rows.nth(1).locator('[data-testid="audit-run-link"]').click();
  await page.locator('[data-testid="audit-view"]').waitFor({ state: "hidden" });
  assert.equal(new URLSearchParams(new URL(page.url()).hash.slice(1)).get("run"), first.runId);
  // the auditor may read the run the record links to (and is offered no decision there)
  await page.locator('[data-testid="run-status"]').filter({ hasText: "completed" }).waitFor();
  assert.deepEqual(errors, []);
  await context.close();
});
