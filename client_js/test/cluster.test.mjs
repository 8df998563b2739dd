// The client against two `runcast serve` nodes sharing one real redis-server: a run started on one node is watched
// and decided from both, and a node that is killed mid-run and started again on its port loses its clients nothing.
//
// Node A is a hub and a worker (it streams the runs); node B is a hub only (`--no-worker`), so killing it never
// takes a run's worker with it: what is tested is the client's recovery, not the cluster's handling of a lost worker
// (that is tests/test_cluster.py's).

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import WebSocket from "ws";

import { RuncastClient, foldEvents } from "../src/runcast.js";
import { assertGapFree, fetchLog, makeToken, startRedis, startServer, waitFor } from "./helpers.mjs";

let redis;
let nodeA;
let nodeB;
const tok = {
  alice: makeToken("alice", "Alice", ["approver", "operator"]),
  bob: makeToken("bob", "Bob", ["approver"]),
};

/** Node B's options, kept to start it again on the same port. */
const nodeBOptions = () => ({ delay: "0.02", args: ["--redis", redis.url, "--no-worker"] });

before(async () => {
  redis = await startRedis();
  // 0.02 s per streamed delta: the first message streams for about half a second, long enough to kill a node in it.
  [nodeA, nodeB] = await Promise.all([
    startServer({ delay: "0.02", args: ["--redis", redis.url] }),
    startServer(nodeBOptions()),
  ]);
});

after(async () => {
  await Promise.all([nodeA?.stop(), nodeB?.stop()]);
  await redis?.stop();
});

function client(node, token) {
  return new RuncastClient({ url: node.ws, token, WebSocket, reconnect: { initialMs: 50, maxMs: 500 } });
}

/** Subscribe and record every event the app is handed. */
function watch(c, runId) {
  const seen = [];
  const sub = c.subscribe(runId, { onEvent: (ev) => seen.push(ev.seq) });
  return { sub, seen };
}

const finished = (s) => ["completed", "failed", "cancelled"].includes(s.status);
const pendingApproval = (s) => Object.values(s.approvals).find((a) => a.status === "pending");

/**
 * Wait until both watchers hold the whole log as the hub has it, then return [head, state a, state b, the log's own
 * fold], all taken at that moment (presence events may still arrive later).
 */
async function atHead(a, b, runId, node) {
  let states;
  const head = await waitFor(async () => {
    const r = await node.api(`/api/runs/${runId}`, tok.alice);
    if (a.sub.lastSeq !== r.head_seq || b.sub.lastSeq !== r.head_seq) return 0;
    states = [structuredClone(a.sub.state), structuredClone(b.sub.state)];
    return r.head_seq;
  }, { message: "both clients at the head of the log" });
  const log = (await fetchLog(node, tok.alice, runId)).filter((e) => e.seq <= head);
  return [head, ...states, foldEvents(runId, log)];
}

describe("client against two nodes on one Redis", () => {
  test("a client on each node, approve from one: both fold the same state, seqs 1..N", async () => {
    const alice = client(nodeA, tok.alice);
    const bob = client(nodeB, tok.bob);
    await Promise.all([alice.connect(), bob.connect()]);
    const runId = await alice.start("demo", "Please free some disk space.");
    const a = watch(alice, runId);
    const b = watch(bob, runId);
    const ap = await waitFor(() => pendingApproval(b.sub.state), { message: "the approval, seen on node B" });
    const ack = await bob.decide(runId, ap.approvalId, "approve", "decided on node B");
    assert.equal(ack.outcome, "decided");
    await waitFor(() => finished(a.sub.state) && finished(b.sub.state), { message: "the end, on both nodes" });

    const [head, sa, sb, logFold] = await atHead(a, b, runId, nodeB);
    assert.equal(sa.status, "completed");
    assert.deepEqual(sa.approvals[ap.approvalId].decision.by, { sub: "bob", name: "Bob" });
    assert.equal(sa.approvals[ap.approvalId].decision.reason, "decided on node B");
    assert.deepEqual(sb, sa, "the clients on node A and node B fold the same state");
    assert.deepEqual(sa, logFold, "and it is the fold of the log");
    assertGapFree(assert, a.seen.filter((s) => s <= head), "node A's client");
    assertGapFree(assert, b.seen.filter((s) => s <= head), "node B's client");
    assert.equal(a.seen.filter((s) => s <= head).length, head);
    assert.equal(b.seen.filter((s) => s <= head).length, head);
    alice.close();
    bob.close();
  });

  test("node B is killed mid-stream and started again on its port: its client comes back with since, nothing lost", async () => {
    const alice = client(nodeA, tok.alice);
    const bob = client(nodeB, tok.bob);
    await Promise.all([alice.connect(), bob.connect()]);
    const runId = await alice.start("demo", "Tidy the scratch folder.");
    const a = watch(alice, runId);
    const b = watch(bob, runId);
    const closes = [];
    bob.on("close", (c) => closes.push(c.code));

    // Kill node B (no drain, no close frame) while the first message streams.
    await waitFor(() => b.sub.state.items.some((i) => i.kind === "message" && i.text && !i.done), { message: "text streaming on B" });
    await nodeB.stop("SIGKILL");
    await waitFor(() => bob.status === "reconnecting", { message: "bob's client to notice" });
    const cutAt = b.sub.lastSeq;
    // The run goes on through node A while B is down.
    await waitFor(() => a.sub.state.status === "paused", { message: "the pause, on A" });
    assert.ok(a.sub.lastSeq > b.sub.lastSeq, `bob's client missed ${a.sub.lastSeq - b.sub.lastSeq} events while B was down`);
    assert.equal(b.sub.synced, false);

    nodeB = await startServer({ ...nodeBOptions(), port: nodeB.port });
    await waitFor(() => bob.status === "open" && b.sub.synced && b.sub.lastSeq >= a.sub.lastSeq, { message: "the catch-up on the new B" });
    const ap = pendingApproval(b.sub.state);
    assert.ok(ap, "the approval reached bob after the restart");
    await bob.decide(runId, ap.approvalId, "approve", "after the restart");
    await waitFor(() => finished(a.sub.state) && finished(b.sub.state), { message: "the end, on both" });

    const [head, sa, sb, logFold] = await atHead(a, b, runId, nodeA);
    assert.ok(cutAt > 0 && closes[0] === 1006, `bob's socket died with the node (closes: ${closes})`);
    assert.equal(bob.connects, 2);
    assert.ok(b.sub.stats.resubscribes >= 1, "bob's client subscribed again with since");
    assertGapFree(assert, b.seen.filter((s) => s <= head), "bob's seqs across the restart");
    assert.equal(b.seen.filter((s) => s <= head).length, head);
    assert.equal(sb.status, "completed");
    assert.deepEqual(sb, sa, "the fold after the restart equals the fold of a client that never dropped");
    assert.deepEqual(sb, logFold);
    alice.close();
    bob.close();
  });
});
