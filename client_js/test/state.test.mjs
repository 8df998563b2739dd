// The fold (src/state.js) on hand-written logs: the cases the demo agents do not produce.

import assert from "node:assert/strict";
import { test } from "node:test";

import {
  applyEvent, applyPresence, canCancel, canDecide, canStart, foldEvents, initialPresence, initialRunState, openApprovals, people,
} from "../src/state.js";

let seq = 0;
const ev = (type, data = {}) => ({ run_id: "r", seq: ++seq, ts: `2026-01-01T00:00:${String(seq).padStart(2, "0")}.000Z`, type, data });
const alice = { sub: "alice", name: "Alice", roles: ["approver", "operator"] };
const bob = { sub: "bob", name: "Bob", roles: ["approver"] };
const vic = { sub: "vic", name: "Vic", roles: ["viewer"] };
const root = { sub: "root", name: "Root", roles: ["admin"] };

function pausedLog(policy = { roles: ["approver"], quorum: 2, allow_self: false }, expires = "2026-01-01T00:10:00.000Z") {
  seq = 0;
  return [
    ev("run.started", { agent: "demo-quorum", input: "ship", started_by: { sub: "alice", name: "Alice" } }),
    ev("agent.updated", { agent: "Release" }),
    ev("participant.joined", { sub: "alice", name: "Alice", roles: alice.roles, connection_id: "c1" }),
    ev("message.delta", { item_id: "m1", delta: "Deploying " }),
    ev("tool.args.delta", { call_id: "call_1", delta: "{\"version\":" }),
    ev("tool.args.delta", { call_id: "call_1", delta: " \"2.4.1\"}" }),
    ev("message.delta", { item_id: "m1", delta: "now." }),
    ev("message.completed", { item_id: "m1", text: "Deploying now.", agent: "Release" }),
    ev("tool.called", { call_id: "call_1", tool: "deploy", arguments: "{\"version\": \"2.4.1\"}", agent: "Release" }),
    ev("approval.requested", { approval_id: "ap1", call_id: "call_1", tool: "deploy", arguments: "{\"version\": \"2.4.1\"}", agent: "Release", policy, expires_at: expires }),
    ev("run.paused", { pending: ["ap1"], segment: 1 }),
  ];
}

test("streaming text and arguments; the transcript keeps the order things happened in", () => {
  const s = foldEvents("r", pausedLog());
  assert.equal(s.status, "paused");
  assert.equal(s.currentAgent, "Release");
  assert.deepEqual(s.items.map((i) => i.kind), ["started", "message", "tool", "approval", "paused"]);
  assert.equal(s.items[1].text, "Deploying now.");
  assert.equal(s.items[1].done, true);
  assert.equal(s.toolCalls.call_1.status, "awaiting_approval");
  assert.equal(s.toolCalls.call_1.arguments, "{\"version\": \"2.4.1\"}");
  assert.deepEqual(s.pending, ["ap1"]);
  assert.deepEqual(openApprovals(s).map((a) => a.approvalId), ["ap1"]);
  assert.equal(new Set(s.items.map((i) => i.key)).size, s.items.length, "keys are unique");
});

test("who may decide: roles, admin, self-approval, one vote each", () => {
  const s = foldEvents("r", pausedLog());
  const ap = s.approvals.ap1;
  assert.equal(canDecide(s, ap, alice), false, "allow_self is false and Alice started the run");
  assert.equal(canDecide(s, ap, bob), true);
  assert.equal(canDecide(s, ap, vic), false);
  assert.equal(canDecide(s, ap, root), true);
  assert.equal(canDecide(s, ap, null), false);
  applyEvent(s, ev("approval.voted", { approval_id: "ap1", by: { sub: "bob", name: "Bob" }, decision: "approve", reason: "ok", tally: { approve: 1, reject: 0, needed: 2 } }));
  assert.equal(canDecide(s, s.approvals.ap1, bob), false, "Bob voted");
  assert.equal(canDecide(s, s.approvals.ap1, root), true);
  assert.equal(canCancel(s, alice), true);
  assert.equal(canCancel(s, bob), false);
  assert.equal(canStart(vic), false);
  assert.equal(canStart(root), true);
});

test("a quorum settled by a second person records both votes and the decision", () => {
  const s = foldEvents("r", pausedLog());
  applyEvent(s, ev("approval.voted", { approval_id: "ap1", by: { sub: "bob", name: "Bob" }, decision: "approve", reason: null, tally: { approve: 1, reject: 0, needed: 2 } }));
  applyEvent(s, ev("approval.decided", { approval_id: "ap1", call_id: "call_1", decision: "approve", by: { sub: "root", name: "Root" }, reason: "go", always: false, decided_at: "2026-01-01T00:01:00.000Z", tally: { approve: 2, reject: 0, needed: 2 } }));
  applyEvent(s, ev("run.resumed", { decisions: [{ approval_id: "ap1", decision: "approve", by: { sub: "root", name: "Root" } }], segment: 2 }));
  applyEvent(s, ev("tool.output", { call_id: "call_1", output: "deployed" }));
  const ap = s.approvals.ap1;
  assert.equal(ap.status, "approved");
  assert.deepEqual(ap.votes.map((v) => [v.by.sub, v.decision]), [["bob", "approve"], ["root", "approve"]]);
  assert.deepEqual(ap.decision, { decision: "approve", by: { sub: "root", name: "Root" }, reason: "go", always: false, decidedAt: "2026-01-01T00:01:00.000Z" });
  assert.equal(s.status, "running");
  assert.equal(s.segment, 2);
  assert.deepEqual(s.pending, []);
  assert.equal(s.toolCalls.call_1.status, "done");
  assert.equal(s.toolCalls.call_1.output, "deployed");
});

test("expiry: expired, then rejected by policy", () => {
  const s = foldEvents("r", pausedLog());
  applyEvent(s, ev("approval.expired", { approval_id: "ap1" }));
  applyEvent(s, ev("approval.decided", { approval_id: "ap1", call_id: "call_1", decision: "reject", by: { policy: "expired" }, reason: "The approval expired", always: false, decided_at: "2026-01-01T00:10:00.000Z" }));
  assert.equal(s.approvals.ap1.status, "expired");
  assert.deepEqual(s.approvals.ap1.decision.by, { policy: "expired" });
  assert.deepEqual(s.approvals.ap1.votes, [], "a policy is not a voter");
  assert.equal(s.toolCalls.call_1.status, "rejected");
  assert.equal(canDecide(s, s.approvals.ap1, root), false);
});

test("cancel while paused ends the approval; failure is kept", () => {
  const s = foldEvents("r", pausedLog());
  applyEvent(s, ev("approval.cancelled", { approval_id: "ap1" }));
  applyEvent(s, ev("run.cancelled", { by: { sub: "alice", name: "Alice" }, mode: "immediate" }));
  assert.equal(s.status, "cancelled");
  assert.equal(s.approvals.ap1.status, "cancelled");
  assert.equal(s.toolCalls.call_1.status, "cancelled");
  assert.deepEqual(s.cancelled, { by: { sub: "alice", name: "Alice" }, mode: "immediate" });
  assert.equal(canCancel(s, alice), false);

  const f = foldEvents("r", [...pausedLog().slice(0, 4), ev("run.failed", { code: "worker_lost", message: "gone" })]);
  assert.equal(f.status, "failed");
  assert.deepEqual(f.error, { code: "worker_lost", message: "gone" });
  assert.equal(f.items.at(-1).kind, "failed");
  assert.equal(f.usage, null);

  // a model failure carries the usage spent before it
  const usage = { requests: 1, input_tokens: 107, output_tokens: 24, total_tokens: 131 };
  const m = foldEvents("r", [...pausedLog().slice(0, 4), ev("run.failed", { code: "APIConnectionError", message: "Connection error: peer closed connection", usage })]);
  assert.deepEqual(m.usage, usage);
  assert.deepEqual(m.error, { code: "APIConnectionError", message: "Connection error: peer closed connection" });
});

test("presence: one entry per person, counting their connections; frames, not the log", () => {
  const p = initialPresence();
  const entry = (cid, sub, roles = []) => ({ connection_id: cid, sub, name: sub[0].toUpperCase() + sub.slice(1), roles });
  applyPresence(p, { type: "presence", run_id: "r", full: true, listed: "all", joined: [entry("c1", "alice"), entry("c2", "vic")], left: [], count: 2, people: 2 });
  applyPresence(p, { type: "presence", run_id: "r", full: false, listed: "all", joined: [entry("c3", "alice")], left: ["c2"], count: 2, people: 1 });
  assert.deepEqual(people(p), [{ sub: "alice", name: "Alice", roles: [], connections: 2 }]);
  assert.equal(p.count, 2);
  // a full frame replaces what was held; past the hub's limit only deciders are listed, the totals stay
  applyPresence(p, { type: "presence", run_id: "r", full: true, listed: "deciders", joined: [entry("c9", "bob", ["approver"])], left: [], count: 120, people: 101 });
  assert.deepEqual(people(p).map((x) => x.sub), ["bob"]);
  assert.deepEqual([p.listed, p.count, p.people], ["deciders", 120, 101]);
  // logs written before presence left the log fold to the same state as without those events
  seq = 0;
  const legacy = foldEvents("r", [ev("run.started", { agent: "a", input: "", started_by: alice }),
    ev("participant.joined", { sub: "alice", name: "Alice", roles: [], connection_id: "c1" })]);
  assert.deepEqual(legacy.items.map((i) => i.kind), ["started"]);
});

test("handoffs, reasoning, MCP and unknown events", () => {
  seq = 0;
  const s = foldEvents("r", [
    ev("run.started", { agent: "demo-handoff", input: "x", started_by: { sub: "a", name: "A" } }),
    ev("reasoning.delta", { item_id: "rs", delta: "Route " }),
    ev("reasoning.completed", { item_id: "rs", summary: "Route it to Ops." }),
    ev("tool.args.delta", { call_id: "h1", delta: "{}" }),
    ev("handoff.requested", { from: "Triage", to: "Ops", call_id: "h1" }),
    ev("handoff.completed", { from: "Triage", to: "Ops" }),
    ev("mcp.tools_listed", { server: "files", tools: ["read"] }),
    ev("custom.thing", { x: 1 }),
  ]);
  assert.deepEqual(s.items.map((i) => i.kind), ["started", "reasoning", "handoff", "mcp", "other"]);
  assert.equal(s.items[1].text, "Route it to Ops.");
  assert.deepEqual([s.items[2].from, s.items[2].to, s.items[2].done, s.items[2].key], ["Triage", "Ops", true, "handoff:h1"]);
  assert.deepEqual(s.toolCalls, {});
  assert.deepEqual(s.items[4].data, { x: 1 });
  assert.deepEqual(JSON.parse(JSON.stringify(s)), s, "the state is plain JSON");
});
