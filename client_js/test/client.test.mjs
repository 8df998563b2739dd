// The client against a real `runcast serve` (a subprocess on a free port, offline demo agents).

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import WebSocket from "ws";

import { RuncastClient, foldEvents, people, canDecide } from "../src/runcast.js";
import { assertGapFree, fetchLog, startProxy, startServer, waitFor } from "./helpers.mjs";

let server;
const tok = {};

before(async () => {
  // 0.02 s per streamed delta: a demo message streams for about half a second, long enough to cut it in the middle.
  server = await startServer({ delay: "0.02" });
  tok.alice = server.token("alice", "Alice", ["approver", "operator"]);
  tok.bob = server.token("bob", "Bob", ["approver"]);
  tok.vic = server.token("vic", "Vic", ["viewer"]);
  tok.olga = server.token("olga", "Olga", ["operator"]);
});

after(async () => {
  await server?.stop();
});

function client(token, opts = {}) {
  return new RuncastClient({
    url: server.ws, token, WebSocket, reconnect: { initialMs: 40, maxMs: 400 }, ...opts,
  });
}

/** Subscribe and record every event the app is handed. */
function watch(c, runId) {
  const seen = [];
  const sub = c.subscribe(runId, { onEvent: (ev) => seen.push(ev) });
  return { sub, seen, seqs: () => seen.map((e) => e.seq) };
}

const finished = (s) => ["completed", "failed", "cancelled"].includes(s.status);
const pendingApproval = (s) => Object.values(s.approvals).find((a) => a.status === "pending");

describe("client against a real hub", () => {
  test("start, watch, approve: every seq once and in order; the fold equals the hub's log", async () => {
    const alice = client(tok.alice);
    const welcome = await alice.connect();
    assert.equal(welcome.user.sub, "alice");
    const runId = await alice.start("demo", "Please free some disk space.");
    assert.match(runId, /^run_/);
    const w = watch(alice, runId);
    const ap = await waitFor(() => pendingApproval(w.sub.state), { message: "the approval" });
    assert.equal(w.sub.state.status, "paused");
    assert.equal(ap.tool, "delete_files");
    assert.deepEqual(ap.policy, { roles: ["approver"], quorum: 1, allowSelf: true, countStarter: true });
    assert.ok(ap.expiresAt, "the demo approval expires");
    assert.ok(canDecide(w.sub.state, ap, alice.user));
    const ack = await alice.decide(runId, ap.approvalId, "approve", "scratch files only");
    assert.equal(ack.outcome, "decided");
    await waitFor(() => finished(w.sub.state), { message: "the run to finish" });
    const s = w.sub.state;
    assert.equal(s.status, "completed");
    assert.match(s.output, /^Done\. I deleted 3 files/);
    assert.equal(s.approvals[ap.approvalId].status, "approved");
    assert.deepEqual(s.approvals[ap.approvalId].decision.by, { sub: "alice", name: "Alice" });
    assert.equal(s.approvals[ap.approvalId].decision.reason, "scratch files only");
    const calls = Object.values(s.toolCalls);
    assert.deepEqual(calls.map((c) => [c.tool, c.status]), [["list_files", "done"], ["delete_files", "done"]]);
    assert.deepEqual(people(w.sub.presence).map((p) => p.sub), ["alice"]);
    assertGapFree(assert, w.seqs());
    const log = await fetchLog(server, tok.alice, runId);
    assert.equal(log.some((e) => e.type.startsWith("participant.")), false, "presence is not in the log");
    assert.deepEqual(w.seqs(), log.map((e) => e.seq));
    assert.deepEqual(s, foldEvents(runId, log));
    alice.close();
  });

  test("a viewer sees the same run, cannot decide, and sees who decided", async () => {
    const alice = client(tok.alice);
    const vic = client(tok.vic);
    await Promise.all([alice.connect(), vic.connect()]);
    const runId = await alice.start("demo", "tidy up");
    const a = watch(alice, runId);
    const v = watch(vic, runId);
    const ap = await waitFor(() => pendingApproval(v.sub.state), { message: "the approval at the viewer" });
    assert.equal(canDecide(v.sub.state, ap, vic.user), false);
    await assert.rejects(vic.decide(runId, ap.approvalId, "approve"), (err) => err.code === "forbidden");
    await assert.rejects(vic.cancel(runId), (err) => err.code === "forbidden");
    await assert.rejects(vic.start("demo", "x"), (err) => err.code === "forbidden");
    await waitFor(() => people(v.sub.presence).length === 2, { message: "both watchers" });
    await alice.decide(runId, ap.approvalId, "reject", "keep the export");
    await waitFor(() => finished(v.sub.state) && finished(a.sub.state), { message: "both to see the end" });
    const d = v.sub.state.approvals[ap.approvalId];
    assert.equal(d.status, "rejected");
    assert.equal(d.decision.by.name, "Alice");
    assert.equal(d.decision.reason, "keep the export");
    assert.match(v.sub.state.output, /keep the export/);
    await waitFor(() => a.sub.lastSeq === v.sub.lastSeq, { message: "equal heads" });
    assert.deepEqual(v.sub.state, a.sub.state);
    alice.close();
    vic.close();
  });

  test("quorum: a vote is counted, the second person decides, a late vote is told who won", async () => {
    const alice = client(tok.alice);
    const bob = client(tok.bob);
    await Promise.all([alice.connect(), bob.connect()]);
    const runId = await alice.start("demo-quorum", "ship it");
    const a = watch(alice, runId);
    const ap = await waitFor(() => pendingApproval(a.sub.state), { message: "the deploy approval" });
    assert.equal(ap.policy.quorum, 2);
    assert.equal((await alice.decide(runId, ap.approvalId, "approve", "staging is green")).outcome, "voted");
    await waitFor(() => a.sub.state.approvals[ap.approvalId].votes.length === 1, { message: "the vote" });
    assert.deepEqual(a.sub.state.approvals[ap.approvalId].tally, { approve: 1, reject: 0, needed: 2 });
    assert.equal(canDecide(a.sub.state, a.sub.state.approvals[ap.approvalId], alice.user), false, "alice already voted");
    assert.equal((await bob.decide(runId, ap.approvalId, "approve")).outcome, "decided");
    await waitFor(() => finished(a.sub.state), { message: "the release to finish" });
    const done = a.sub.state.approvals[ap.approvalId];
    assert.equal(done.status, "approved");
    assert.deepEqual(done.votes.map((v) => v.by.sub), ["alice", "bob"]);
    assert.deepEqual(done.tally, { approve: 2, reject: 0, needed: 2 });
    await assert.rejects(bob.decide(runId, ap.approvalId, "reject"), (err) => err.code === "already_decided");
    alice.close();
    bob.close();
  });

  test("handoffs are folded into the transcript; cancel ends a paused run and its approval", async () => {
    const olga = client(tok.olga);
    await olga.connect();
    const runId = await olga.start("demo-handoff", "the site is down");
    const o = watch(olga, runId);
    await waitFor(() => o.sub.state.status === "paused", { message: "the pause" });
    const kinds = o.sub.state.items.map((i) => i.kind);
    assert.ok(kinds.includes("handoff"), `a handoff in ${kinds}`);
    const handoff = o.sub.state.items.find((i) => i.kind === "handoff");
    assert.deepEqual([handoff.from, handoff.to, handoff.done], ["Triage", "Ops", true], "the handoff");
    assert.equal(o.sub.state.currentAgent, "Ops");
    assert.deepEqual(Object.values(o.sub.state.toolCalls).map((c) => c.tool), ["restart_service"], "a handoff is not a tool call");
    const ack = await olga.cancel(runId);
    assert.equal(ack.type, "ack");
    await waitFor(() => o.sub.state.status === "cancelled", { message: "the cancel" });
    assert.deepEqual(Object.values(o.sub.state.approvals).map((a) => a.status), ["cancelled"]);
    assert.deepEqual(o.sub.state.cancelled.by, { sub: "olga", name: "Olga" });
    assertGapFree(assert, o.seqs());
    olga.close();
  });

  test("a subscribe to a run that does not exist reports not_found", async () => {
    const vic = client(tok.vic);
    await vic.connect();
    const err = await new Promise((resolve) => vic.subscribe("run_nope", { onError: resolve }));
    assert.equal(err.code, "not_found");
    vic.close();
  });

  test("a refused token is reported and not retried", async () => {
    const bad = client(server.token("mallory", "Mallory", ["admin"], { secret: "not-the-secret-0123456789abcdef0123" }));
    const closes = [];
    bad.on("close", (c) => closes.push(c.code));
    await assert.rejects(bad.connect(), (err) => err.code === "unauthenticated");
    assert.equal(bad.status, "closed");
    assert.deepEqual(closes, [4401]);
  });

  test("a token function whose fresh tokens are refused too: three 4401s, then it gives up", async () => {
    let n = 0;
    const bad = client(() => server.token(`mallory${++n}`, "Mallory", ["admin"], { secret: "not-the-secret-0123456789abcdef0123" }));
    const closes = [];
    bad.on("close", (c) => closes.push(c.code));
    await assert.rejects(bad.connect(), (err) => err.code === "unauthenticated" && err.frame.refusals === 3);
    assert.equal(bad.status, "closed");
    assert.deepEqual(closes, [4401, 4401, 4401]);
    assert.equal(n, 3);
  });

  for (const encoding of ["json", "msgpack"]) {
    test(`cut mid-run (${encoding}): after recovery the fold equals that of a client that never dropped`, async () => {
      const proxy = await startProxy(server.port);
      // The reference client never drops; the other goes through a proxy that we cut like a network.
      const steady = client(tok.alice);
      const flaky = client(tok.bob, { url: proxy.ws, encoding });
      await Promise.all([steady.connect(), flaky.connect()]);
      const runId = await steady.start("demo", "free some space");
      const s = watch(steady, runId);
      const f = watch(flaky, runId);
      const reconnects = [];
      flaky.on("reconnect", (r) => reconnects.push(r));

      // 1. In the middle of the first streamed message.
      await waitFor(() => f.sub.state.items.some((i) => i.kind === "message" && i.text && !i.done), { message: "text streaming" });
      const cutAt1 = f.sub.lastSeq;
      assert.ok(proxy.cut() >= 1, "the proxy had the flaky connection");
      await waitFor(() => flaky.connects === 2 && f.sub.synced, { message: "the first recovery" });

      // 2. A longer outage: events keep coming while the flaky client cannot connect at all.
      proxy.block();
      proxy.cut();
      await waitFor(() => s.sub.state.status === "paused", { message: "the pause" });
      const missed = s.sub.lastSeq - f.sub.lastSeq;
      assert.ok(missed > 0, `the flaky client missed ${missed} events while it was down`);
      assert.equal(f.sub.synced, false);
      proxy.unblock();
      await waitFor(() => flaky.status === "open" && f.sub.synced && f.sub.lastSeq >= s.sub.lastSeq, { message: "the catch-up" });

      // 3. During the final message, after the approval.
      const ap = pendingApproval(f.sub.state);
      assert.ok(ap, "the approval survived the outage");
      await steady.decide(runId, ap.approvalId, "approve", "ok");
      await waitFor(() => f.sub.state.status === "running" && f.sub.state.items.at(-1).kind === "message", { message: "the final message" });
      proxy.cut();
      await waitFor(() => finished(f.sub.state) && finished(s.sub.state), { message: "the end, on both" });

      // Presence settles once the hub has seen the dropped connections go: then both hold the whole log.
      await waitFor(() => {
        const ids = Object.keys(s.sub.presence.entries).sort();
        return flaky.status === "open" && JSON.stringify(ids) === JSON.stringify([steady.connectionId, flaky.connectionId].sort());
      }, { message: "presence to settle" });
      const head = await waitFor(async () => {
        const r = await server.api(`/api/runs/${runId}`, tok.alice);
        return f.sub.lastSeq === r.head_seq && s.sub.lastSeq === r.head_seq && r.head_seq;
      }, { message: "both at the head" });

      assert.ok(cutAt1 > 0 && reconnects.length >= 3, `reconnected ${reconnects.length} times`);
      assert.ok(f.sub.stats.resubscribes >= 3, "each recovery subscribed again with since");
      assertGapFree(assert, f.seqs(), "the flaky client's seqs");
      assertGapFree(assert, s.seqs(), "the steady client's seqs");
      assert.equal(f.seqs().length, head);
      assert.deepEqual(f.sub.state, s.sub.state, "the fold after recovery equals the fold of a client that never dropped");
      assert.deepEqual(f.sub.state, foldEvents(runId, await fetchLog(server, tok.alice, runId)));
      steady.close();
      flaky.close();
      await proxy.close();
    });
  }

  test("msgpack and JSON clients fold the same state (msgpack from the app's own loader)", async () => {
    const j = client(tok.alice);
    let loaded = 0;
    const m = client(tok.bob, { encoding: "msgpack", msgpack: () => { loaded += 1; return import("@msgpack/msgpack"); } });
    await Promise.all([j.connect(), m.connect()]);
    const runId = await j.start("demo-handoff", "restart web");
    const a = watch(j, runId);
    const b = watch(m, runId);
    const ap = await waitFor(() => pendingApproval(b.sub.state), { message: "the approval (msgpack)" });
    await m.decide(runId, ap.approvalId, "approve", "go");
    await waitFor(() => finished(a.sub.state) && finished(b.sub.state), { message: "the end" });
    await waitFor(() => a.sub.lastSeq === b.sub.lastSeq, { message: "equal heads" });
    assert.deepEqual(b.sub.state, a.sub.state);
    assert.equal(b.sub.state.approvals[ap.approvalId].decision.by.name, "Bob");
    assertGapFree(assert, b.seqs());
    assert.equal(loaded, 1, "the loader was used, once");
    j.close();
    m.close();
  });
});
