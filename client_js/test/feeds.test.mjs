// The approvals inbox and the live run list: the pure folds, and the client against a real `runcast serve`.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import WebSocket from "ws";

import { RuncastClient, applyInboxFrame, applyRunsFrame, inboxList, initialInbox, initialRuns, needsYou, runList } from "../src/runcast.js";
import { startServer, waitFor } from "./helpers.mjs";

describe("feed folds", () => {
  test("inbox: a snapshot replaces, added / removed apply on top", () => {
    const s = initialInbox();
    assert.equal(s.ready, false);
    const a = { approval_id: "ap_1", run_id: "r1", requested_at: "2026-01-01T00:00:02Z" };
    const b = { approval_id: "ap_2", run_id: "r1", requested_at: "2026-01-01T00:00:01Z" };
    const c = { approval_id: "ap_3", run_id: "r2", requested_at: "2026-01-01T00:00:03Z" };
    assert.deepEqual(applyInboxFrame(s, { type: "inbox", approvals: [a] }), { type: "snapshot" });
    assert.equal(s.ready, true);
    assert.deepEqual(applyInboxFrame(s, { type: "inbox.added", approval: b }), { type: "added", approval: b });
    applyInboxFrame(s, { type: "inbox.added", approval: c });
    assert.deepEqual(inboxList(s).map((x) => x.approval_id), ["ap_2", "ap_1", "ap_3"], "oldest request first");
    assert.deepEqual(inboxList(s, "r1").map((x) => x.approval_id), ["ap_2", "ap_1"]);
    assert.deepEqual([...needsYou(s)], [["r1", 2], ["r2", 1]]);
    const gone = applyInboxFrame(s, { type: "inbox.removed", run_id: "r1", approval_id: "ap_1", reason: "approved" });
    assert.deepEqual(gone, { type: "removed", approval: a, reason: "approved" });
    applyInboxFrame(s, { type: "inbox", approvals: [c] });
    assert.deepEqual([...s.approvals.keys()], ["ap_3"], "a new snapshot (after a reconnect) replaces everything");
    assert.equal(applyInboxFrame(s, { type: "pong" }), null);
  });

  test("runs: a tick's changes apply on top; a summary is replaced only by a higher version; newest first", () => {
    const s = initialRuns();
    applyRunsFrame(s, { type: "runs", runs: [{ run_id: "a", version: 3, status: "paused", created_at: "2026-01-01T00:00:01Z" }] });
    assert.equal(applyRunsFrame(s, { type: "run.status", runs: [{ run_id: "a", version: 2, status: "running" }], outside: 0 }), null, "an older version is dropped");
    assert.equal(s.runs.get("a").status, "paused");
    const a5 = { run_id: "a", version: 5, status: "completed", created_at: "2026-01-01T00:00:01Z" };
    const b1 = { run_id: "b", version: 1, status: "queued", created_at: "2026-01-01T00:00:02Z" };
    assert.deepEqual(applyRunsFrame(s, { type: "run.status", runs: [a5, b1], outside: 3 }), { type: "status", runs: [a5, b1], left: [], outside: 3 });
    assert.deepEqual(runList(s).map((r) => [r.run_id, r.status]), [["b", "queued"], ["a", "completed"]]);
    assert.equal(s.outside, 3, "changes outside the list are counted");
    const c1 = { run_id: "c", version: 1, status: "queued", created_at: "2026-01-01T00:00:03Z" };
    assert.deepEqual(applyRunsFrame(s, { type: "run.status", runs: [c1], left: ["a"], outside: 0 }), { type: "status", runs: [c1], left: ["a"], outside: 0 });
    assert.deepEqual(runList(s).map((r) => r.run_id), ["c", "b"], "a run pushed out of the list leaves it");
    applyRunsFrame(s, { type: "runs", runs: [] });
    assert.equal(s.outside, 0, "a snapshot starts the count again");
  });
});

describe("feeds against a real hub", () => {
  let server;
  const tok = {};
  before(async () => {
    server = await startServer({ delay: "0.005" });
    tok.alice = server.token("alice", "Alice", ["approver"]);
    tok.vic = server.token("vic", "Vic", ["viewer"]);
    tok.olga = server.token("olga", "Olga", ["operator"]);
  });
  after(async () => { await server?.stop(); });

  const client = (token) => new RuncastClient({ url: server.ws, token, WebSocket, reconnect: { initialMs: 40, maxMs: 400 } });

  test("a filtered run list: the hub's snapshot, a change of filter, a run that stops matching leaves", async () => {
    const olga = client(tok.olga);
    const vic = client(tok.vic);
    await olga.connect();
    const mine = await olga.start("demo", "a filtered needle run");
    const other = await olga.start("demo", "another run");
    const changes = [];
    vic.subscribeRuns({ onChange: (s, ch) => { if (ch.type === "status") for (const id of ch.left) changes.push(["left", id]); } }, { q: "needle" });
    await vic.connect();
    await waitFor(() => vic.runList.ready && vic.runList.runs.has(mine), { message: "the filtered snapshot" });
    assert.equal(vic.runList.runs.has(other), false, "the other run is not listed");
    await waitFor(() => vic.runList.runs.get(mine)?.status === "paused", { message: "the pause" });
    vic.setRunsFilter({ q: "needle", status: "paused" });
    assert.deepEqual(vic.runsFilter, { q: "needle", status: "paused" });
    await olga.cancel(mine);
    await waitFor(() => !vic.runList.runs.has(mine), { message: "the cancelled run leaves the paused list" });
    assert.deepEqual(changes, [["left", mine]]);
    vic.setRunsFilter({});
    await waitFor(() => vic.runList.runs.has(other), { message: "without filters, every run" });
    await olga.cancel(other);
    olga.close();
    vic.close();
  });

  test("the hub's clock: from welcome and sync, whatever this computer's clock says", async () => {
    const HOUR = 3_600_000;
    const slow = new RuncastClient({ url: server.ws, token: tok.olga, WebSocket, clock: () => Date.now() - HOUR });
    assert.equal(slow.hubOffsetMs, 0, "nothing known before the welcome");
    await slow.connect();
    assert.ok(Math.abs(slow.hubOffsetMs - HOUR) < 2000, `an hour ahead of this computer (${slow.hubOffsetMs})`);
    assert.ok(Math.abs(slow.hubNow() - Date.now()) < 2000, "hubNow is the hub's (here: this machine's) time");
    // A run replayed later: its events' ts are old, the hub's now is not
    const runId = await slow.start("demo", "an old run");
    await new Promise((r) => slow.subscribe(runId, { onSync: r }));
    assert.ok(Math.abs(slow.hubNow() - Date.now()) < 2000);
    await slow.cancel(runId);
    slow.close();
  });

  test("the inbox reaches the approver, not the viewer; survives a reconnect; empties on the decision", async () => {
    const alice = client(tok.alice);
    const vic = client(tok.vic);
    const olga = client(tok.olga);
    const changes = [];
    const feed = alice.subscribeInbox({ onChange: (s, ch) => changes.push(ch.type) });
    const vicFeed = vic.subscribeInbox();
    const runs = [];
    olga.subscribeRuns({ onChange: (s, ch) => { if (ch.type === "status") runs.push(...ch.runs.map((r) => r.status)); } });
    await Promise.all([alice.connect(), vic.connect(), olga.connect()]);
    await waitFor(() => feed.state.ready && vicFeed.state.ready && olga.runList.ready, { message: "the snapshots" });
    const runId = await olga.start("demo", "free some space");
    const ap = await waitFor(() => inboxList(alice.inbox, runId)[0], { message: "the approval in Alice's inbox" });
    assert.equal(ap.tool, "delete_files");
    assert.equal(ap.run.started_by.name, "Olga");
    assert.equal(needsYou(alice.inbox).get(runId), 1);
    await waitFor(() => olga.runList.runs.get(runId)?.status === "paused", { message: "the run list shows the pause" });
    assert.equal(inboxList(vic.inbox, runId).length, 0, "the viewer's inbox never has it");

    alice.dropConnection();
    await waitFor(() => alice.connects === 2 && changes.filter((c) => c === "snapshot").length === 2, { message: "a new snapshot after the reconnect" });
    assert.deepEqual(inboxList(alice.inbox, runId).map((x) => x.approval_id), [ap.approval_id]);

    await alice.decide(runId, ap.approval_id, "approve", "fine");
    await waitFor(() => inboxList(alice.inbox, runId).length === 0, { message: "the approval leaves the inbox" });
    await waitFor(() => olga.runList.runs.get(runId)?.status === "completed", { message: "the run list shows the end" });
    assert.ok(runs.includes("paused") && runs.at(-1) === "completed", runs.join(","));
    assert.deepEqual(changes.slice(0, 2), ["snapshot", "added"]);
    assert.equal(changes.at(-1), "removed");
    feed.unsubscribe();
    assert.equal(alice.inbox.ready, false);
    for (const c of [alice, vic, olga]) c.close();
  });
});
