// The page's wording as pure functions (server/runcast/static/words.js): titles, status, the agent's reason, key
// arguments and the inbox's order.

import assert from "node:assert/strict";
import { test } from "node:test";

import { agentReason, byDeadline, keyArguments, rejectedCount, runTitle, statusLabel } from "../../server/runcast/static/words.js";

test("a run's title is its input's first line, cut; else its agent", () => {
  assert.equal(runTitle("\n  Rotate the logs  \nand keep a week", "demo"), "Rotate the logs");
  assert.equal(runTitle("", "demo"), "demo");
  assert.equal(runTitle("x".repeat(100), "demo"), `${"x".repeat(79)}…`);
});

test("a completed run with rejected tools is not plainly completed", () => {
  assert.deepEqual(statusLabel("completed", 0), { text: "completed", cls: "completed" });
  assert.deepEqual(statusLabel("completed", 1), { text: "completed, 1 tool rejected", cls: "completed partial" });
  assert.deepEqual(statusLabel("completed", 2), { text: "completed, 2 tools rejected", cls: "completed partial" });
  assert.deepEqual(statusLabel("failed", 1), { text: "failed", cls: "failed" });
  assert.equal(rejectedCount({ approvals: { a: { status: "rejected" }, b: { status: "expired" }, c: { status: "approved" } } }), 2);
});

test("the agent's reason is its last message before the approval, not one after it", () => {
  const state = { items: [
    { kind: "message", text: "Hello." }, { kind: "tool" }, { kind: "message", text: "I found three files." },
    { kind: "tool" }, { kind: "approval", approvalId: "ap_1" }, { kind: "resumed" }, { kind: "message", text: "Done." },
    { kind: "approval", approvalId: "ap_2" },
  ] };
  assert.equal(agentReason(state, "ap_1"), "I found three files.");
  assert.equal(agentReason(state, "ap_2"), "Done.");
  assert.equal(agentReason({ items: [{ kind: "approval", approvalId: "ap_1" }] }, "ap_1"), null);
});

test("key arguments in one line; the inbox by deadline, none last", () => {
  assert.equal(keyArguments(JSON.stringify({ paths: ["a", "b", "c", "d"], force: true, dry: false })), "paths: a, b, c, +1 more · force: true · +1 more");
  assert.equal(keyArguments("not json"), "not json");
  const items = [
    { approval_id: "c", requested_at: "2026-01-01T00:00:01Z", expires_at: null },
    { approval_id: "b", requested_at: "2026-01-01T00:00:02Z", expires_at: "2026-01-01T00:10:00Z" },
    { approval_id: "a", requested_at: "2026-01-01T00:00:03Z", expires_at: "2026-01-01T00:01:00Z" },
  ];
  assert.deepEqual(items.sort(byDeadline).map((i) => i.approval_id), ["a", "b", "c"]);
});
