// The client's sequencing and reconnect rules against a scripted hub (a fake WebSocket), for the cases a real hub
// does not produce on demand: a hole in the live feed or in a replay, a repeated event, close 1012, 4401 and 4408, a
// dead silent socket, a log shorter than what the client holds, the backoff schedule, and when the client gives up.

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { RuncastClient } from "../src/runcast.js";
import { assertGapFree, waitFor } from "./helpers.mjs";

/** A scripted hub: keeps a log per run, answers hello/subscribe/ping like the real one, and lets a test misbehave. */
class FakeHub {
  constructor() {
    this.logs = new Map();
    this.sockets = [];
    this.received = [];
    this.refuse = false; // sockets close (1006) before opening
    this.silent = false; // answer nothing at all (a half-open TCP connection)
    this.accept = () => true; // which tokens a hello may carry; any other is closed with 4401
    this.replayDrop = () => false; // (event, subscribe frame) => true: leave that event out of the replay
    this.connections = 0;
    const hub = this;
    this.WebSocket = class FakeWebSocket {
      constructor(url, protocols) {
        this.url = url;
        this.protocol = protocols[0];
        this.readyState = 0;
        this.subs = new Set();
        hub.sockets.push(this);
        setTimeout(() => {
          if (hub.refuse) { this.readyState = 3; this.onclose?.({ code: 1006, reason: "" }); return; }
          this.readyState = 1;
          this.onopen?.({});
        }, 1);
      }
      send(data) {
        const f = JSON.parse(data);
        hub.received.push(f);
        if (hub.silent) return;
        hub.handle(this, f);
      }
      close(code = 1000, reason = "") { this.serverClose(code, reason); }
      serverClose(code, reason = "") {
        if (this.readyState === 3) return;
        this.readyState = 3;
        setTimeout(() => this.onclose?.({ code, reason }), 1);
      }
      deliver(frame) { if (this.readyState === 1) this.onmessage?.({ data: JSON.stringify(frame) }); }
    };
  }

  get live() { return this.sockets.filter((s) => s.readyState === 1); }

  log(runId) {
    if (!this.logs.has(runId)) this.logs.set(runId, []);
    return this.logs.get(runId);
  }

  /** Append an event to a run's log; `to` decides which subscribed sockets get it live (default: all). */
  append(runId, type, data = {}, { to = () => true } = {}) {
    const log = this.log(runId);
    const ev = { run_id: runId, seq: log.length + 1, ts: `2026-01-01T00:00:${String(log.length).padStart(2, "0")}.000Z`, type, data };
    log.push(ev);
    for (const s of this.live) if (s.subs.has(runId) && to(s)) s.deliver(ev);
    return ev;
  }

  handle(ws, f) {
    if (f.type === "hello") {
      if (!this.accept(f.token)) { ws.serverClose(4401, "token refused"); return; }
      this.connections += 1;
      ws.deliver({ type: "welcome", connection_id: `c_${this.connections}`, user: { sub: "u", name: "U", roles: ["admin"] }, server: "fake", heartbeat_s: 20 });
    } else if (f.type === "subscribe") {
      const log = this.log(f.run_id);
      const since = f.since ?? 0;
      const epoch = this.epochs?.get(f.run_id);
      if (f.epoch && epoch && f.epoch !== epoch) {
        ws.deliver({ type: "error", id: f.id, code: "log_reset", message: "the history you hold was lost", run_id: f.run_id, epoch });
        return;
      }
      if (since > log.length) {
        ws.deliver({ type: "error", id: f.id, code: "bad_request", message: "since past head", field: "since", run_id: f.run_id });
        return;
      }
      ws.subs.add(f.run_id);
      for (const ev of log.slice(since)) if (!this.replayDrop(ev, f)) ws.deliver(ev);
      ws.deliver({ type: "sync", run_id: f.run_id, head_seq: log.length, status: "running", ...(epoch ? { epoch } : {}) });
    } else if (f.type === "ping") {
      ws.deliver({ type: "pong", id: f.id });
    } else if (f.type === "decide") {
      this.lastDecide = { ws, f };
    }
  }
}

function makeClient(hub, opts = {}) {
  return new RuncastClient({ url: "ws://fake/ws", token: "t", WebSocket: hub.WebSocket, reconnect: { initialMs: 5, maxMs: 40 }, ...opts });
}

function watch(c, runId) {
  const seen = [];
  const resets = [];
  const sub = c.subscribe(runId, { onEvent: (ev) => seen.push(ev.seq), onReset: () => resets.push(seen.length) });
  return { sub, seen, resets };
}

const subscribes = (hub) => hub.received.filter((f) => f.type === "subscribe");
const hellos = (hub) => hub.received.filter((f) => f.type === "hello").map((f) => f.token);

/**
 * How a promise ends within `ms`: {rejected: err}, {resolved: value}, or "pending" (so that a test of something that
 * used to hang fails instead of hanging).
 */
function settled(p, ms = 3000) {
  let timer;
  const late = new Promise((r) => { timer = setTimeout(() => r("pending"), ms); });
  return Promise.race([p.then((v) => ({ resolved: v }), (e) => ({ rejected: e })), late]).finally(() => clearTimeout(timer));
}

/** Record the client's "error" and "close" events. */
function record(c) {
  const errors = [];
  const closes = [];
  c.on("error", (e) => errors.push(e.code));
  c.on("close", (e) => closes.push(e.code));
  return { errors, closes };
}

describe("sequencing and reconnect (scripted hub)", () => {
  test("a hole in the live feed: subscribe again with since; the app sees no hole and no repeat", async () => {
    const hub = new FakeHub();
    const c = makeClient(hub);
    await c.connect();
    const w = watch(c, "r1");
    await waitFor(() => w.sub.synced);
    hub.append("r1", "run.started", { agent: "demo", input: "x", started_by: { sub: "u", name: "U" } });
    hub.append("r1", "message.delta", { item_id: "m", delta: "a" });
    hub.append("r1", "message.delta", { item_id: "m", delta: "b" }, { to: () => false }); // lost on the way
    hub.append("r1", "message.delta", { item_id: "m", delta: "c" });
    await waitFor(() => w.sub.lastSeq === 4, { message: "the hole to be filled" });
    assert.deepEqual(subscribes(hub).map((f) => f.since), [undefined, 2]);
    // seq 4 came before 3 was known: it was dropped, then applied once from the replay
    hub.sockets[0].deliver(hub.log("r1")[3]); // and a plain repeat from the hub
    hub.append("r1", "message.delta", { item_id: "m", delta: "d" });
    await waitFor(() => w.sub.lastSeq === 5);
    assertGapFree(assert, w.seen);
    assert.equal(w.sub.state.items.find((i) => i.kind === "message").text, "abcd");
    assert.ok(w.sub.stats.duplicates >= 1);
    c.close();
  });

  for (const code of [1012, 4408, 1006]) {
    test(`close ${code}: reconnect, resubscribe with since, continue without a repeat`, async () => {
      const hub = new FakeHub();
      const c = makeClient(hub);
      const reconnects = [];
      c.on("reconnect", (r) => reconnects.push(r));
      await c.connect();
      const w = watch(c, "r1");
      await waitFor(() => w.sub.synced);
      for (let i = 0; i < 5; i++) hub.append("r1", "message.delta", { item_id: "m", delta: String(i) });
      await waitFor(() => w.sub.lastSeq === 5);
      hub.refuse = true; // down for a while: events go on without this client
      hub.sockets[0].serverClose(code, "bye");
      await waitFor(() => reconnects.length >= 2, { message: "failed attempts" });
      for (let i = 5; i < 8; i++) hub.append("r1", "message.delta", { item_id: "m", delta: String(i) });
      hub.refuse = false;
      await waitFor(() => c.status === "open" && w.sub.synced && w.sub.lastSeq === 8, { message: "the recovery" });
      assert.deepEqual(subscribes(hub).map((f) => f.since), [undefined, 5]);
      assert.equal(reconnects[0].code, code);
      assert.equal(c.connects, 2);
      assert.ok(reconnects[0].delayMs <= 5, "the first retry waits at most the initial delay");
      assertGapFree(assert, w.seen);
      assert.equal(w.sub.state.items[0].text, "01234567");
      c.close();
    });
  }

  test("backoff grows exponentially with jitter, capped, and resets after a welcome", async () => {
    const hub = new FakeHub();
    const c = makeClient(hub, { reconnect: { initialMs: 4, maxMs: 32, factor: 2, jitter: 0.5 }, random: () => 1 });
    await c.connect();
    const delays = [];
    c.on("reconnect", (r) => delays.push(r.delayMs));
    hub.refuse = true;
    hub.sockets[0].serverClose(1006);
    await waitFor(() => delays.length >= 6, { message: "six attempts" });
    // random() = 1 takes the whole jitter: each delay is half its base: 4, 8, 16, 32, 32, ... halved
    assert.deepEqual(delays.slice(0, 6), [2, 4, 8, 16, 16, 16]);
    hub.refuse = false;
    await waitFor(() => c.status === "open");
    assert.equal(c.attempt, 0);
    c.close();

    const d = makeClient(new FakeHub(), { reconnect: { initialMs: 100, maxMs: 1000, jitter: 0.5 }, random: () => 0.25 });
    assert.equal(d._delayFor(0, 1006), 88); // 100 * (1 - 0.5 * 0.25)
    assert.equal(d._delayFor(3, 1006), 700); // 800 * 0.875
    assert.equal(d._delayFor(9, 1006), 875); // capped at 1000
  });

  test("a silent socket (no pong, no events) is declared dead after two heartbeats and replaced", async () => {
    const hub = new FakeHub();
    const c = makeClient(hub, { heartbeatMs: 30 });
    await c.connect();
    const w = watch(c, "r1");
    hub.append("r1", "run.started", { agent: "demo", input: "", started_by: null });
    await waitFor(() => w.sub.lastSeq === 1);
    const gone = [];
    c.on("close", (e) => gone.push(e));
    hub.silent = true;
    await waitFor(() => gone.length >= 1, { message: "the heartbeat to give up", timeout: 5000 });
    assert.match(gone[0].reason, /heartbeat/);
    hub.silent = false; // a hub that swallowed the next hello as well is given up on the same way
    hub.append("r1", "run.completed", { output: "ok" });
    await waitFor(() => c.status === "open" && w.sub.lastSeq === 2, { message: "the recovery" });
    assertGapFree(assert, w.seen);
    assert.equal(w.sub.state.status, "completed");
    c.close();
  });

  test("commands: pending ones fail with `disconnected` on a drop; new ones wait for the next welcome", async () => {
    const hub = new FakeHub();
    const c = makeClient(hub);
    await c.connect();
    const p = c.decide("r1", "ap_1", "approve", "why not");
    await waitFor(() => hub.lastDecide);
    assert.deepEqual(hub.lastDecide.f, { type: "decide", run_id: "r1", approval_id: "ap_1", decision: "approve", reason: "why not", id: hub.lastDecide.f.id });
    hub.sockets[0].serverClose(1012);
    await assert.rejects(p, (err) => err.code === "disconnected");
    const pong = c.ping(); // issued while reconnecting
    assert.equal((await pong).type, "pong");
    c.close();
    await assert.rejects(c.ping(), (err) => err.code === "closed");
  });

  test("a hub whose log is shorter than ours (rebuilt): the state starts over from its log", async () => {
    const hub = new FakeHub();
    const c = makeClient(hub);
    await c.connect();
    const w = watch(c, "r1");
    for (let i = 0; i < 3; i++) hub.append("r1", "message.delta", { item_id: "m", delta: "x" });
    await waitFor(() => w.sub.lastSeq === 3);
    hub.logs.set("r1", []);
    hub.append("r1", "message.delta", { item_id: "m", delta: "y" });
    hub.sockets[0].serverClose(1012);
    await waitFor(() => c.status === "open" && w.sub.synced && w.resets.length === 1, { message: "the reset" });
    assert.equal(w.sub.lastSeq, 1);
    assert.equal(w.sub.state.items[0].text, "y");
    c.close();
  });

  test("a log with another epoch (the store lost it, then numbered anew past our seq): log_reset, and a fresh start", async () => {
    const hub = new FakeHub();
    hub.epochs = new Map([["r1", "e1"]]);
    const c = makeClient(hub);
    await c.connect();
    const w = watch(c, "r1");
    w.sub.handlers.onReset = (state, err) => { w.resets.push(err?.code); };
    for (let i = 0; i < 3; i++) hub.append("r1", "message.delta", { item_id: "m", delta: "x" });
    await waitFor(() => w.sub.lastSeq === 3 && w.sub.synced);
    hub.logs.set("r1", []);
    hub.epochs.set("r1", "e2");
    for (const d of ["a", "b", "c", "d"]) hub.append("r1", "message.delta", { item_id: "m", delta: d }, { to: () => false }); // longer than ours
    hub.sockets[0].serverClose(1012);
    await waitFor(() => c.status === "open" && w.sub.synced && w.resets.length === 1, { message: "the reset" });
    const resub = hub.received.filter((f) => f.type === "subscribe" && f.since === 3);
    assert.equal(resub.length, 1);
    assert.equal(resub[0].epoch, "e1", "the epoch goes with since");
    assert.deepEqual(w.resets, ["log_reset"]);
    assert.equal(w.sub.lastSeq, 4);
    assert.equal(w.sub.state.items[0].text, "abcd", "the new log only, nothing of the lost one");
    c.close();
  });

  test("presence frames: the whole set, then changes; kept out of the folded state", async () => {
    const hub = new FakeHub();
    const c = makeClient(hub);
    await c.connect();
    const seen = [];
    const sub = c.subscribe("r1", { onPresence: (p) => seen.push(Object.keys(p.entries).sort().join(",")) });
    await waitFor(() => sub.synced);
    const ws = hub.sockets[0];
    const e = (cid, sub_) => ({ connection_id: cid, sub: sub_, name: sub_, roles: [] });
    ws.deliver({ type: "presence", run_id: "r1", full: true, listed: "all", joined: [e("c1", "u"), e("c2", "v")], left: [], count: 2, people: 2 });
    ws.deliver({ type: "presence", run_id: "r1", full: false, listed: "all", joined: [e("c3", "w")], left: ["c1"], count: 2, people: 2 });
    ws.deliver({ type: "presence", run_id: "other", full: true, listed: "all", joined: [e("c9", "x")], left: [], count: 1, people: 1 });
    assert.deepEqual(seen, ["c1,c2", "c2,c3"]);
    assert.deepEqual(Object.keys(sub.presence.entries).sort(), ["c2", "c3"]);
    assert.equal("participants" in sub.state, false);
    c.close();
  });

  test("two subscriptions to one run share one hub subscription; the last unsubscribe ends it", async () => {
    const hub = new FakeHub();
    const c = makeClient(hub);
    await c.connect();
    const a = watch(c, "r1");
    await waitFor(() => a.sub.synced);
    const synced = [];
    const b = c.subscribe("r1", { onSync: (s) => synced.push(s.seq) });
    assert.equal(b.state, a.sub.state);
    assert.deepEqual(synced, [0]);
    a.sub.unsubscribe();
    assert.equal(hub.received.filter((f) => f.type === "unsubscribe").length, 0);
    b.unsubscribe();
    assert.equal(hub.received.filter((f) => f.type === "unsubscribe").length, 1);
    assert.equal(subscribes(hub).length, 1);
    c.close();
  });

  test("a hole at the end of a replay (sync says more than was sent): subscribe again with since, not synced before", async () => {
    const hub = new FakeHub();
    for (let i = 0; i < 3; i++) hub.append("r1", "message.delta", { item_id: "m", delta: String(i) });
    let dropped = 0;
    hub.replayDrop = (ev) => ev.seq === 3 && dropped++ === 0; // lost once, on the way from the log
    const c = makeClient(hub);
    await c.connect();
    const syncs = [];
    const seen = [];
    const sub = c.subscribe("r1", { onEvent: (ev) => seen.push(ev.seq), onSync: (s) => syncs.push(s.seq) });
    await waitFor(() => sub.synced, { message: "the sync" });
    assert.deepEqual(subscribes(hub).map((f) => f.since), [undefined, 2], "the second subscribe asks for what is missing");
    assert.equal(sub.lastSeq, 3);
    assert.deepEqual(syncs, [3], "the app is told `synced` only once the replay is whole");
    assertGapFree(assert, seen);
    assert.equal(sub.state.items[0].text, "012");
    c.close();
  });

  test("a hub whose replay keeps leaving a hole: after a few tries the app gets a `gap` error, not a loop", async () => {
    const hub = new FakeHub();
    for (let i = 0; i < 3; i++) hub.append("r1", "message.delta", { item_id: "m", delta: String(i) });
    hub.replayDrop = (ev) => ev.seq === 2;
    const c = makeClient(hub);
    await c.connect();
    const errors = [];
    const sub = c.subscribe("r1", { onError: (e) => errors.push(e.code) });
    await waitFor(() => errors.length === 1, { message: "the gap error" });
    assert.deepEqual(errors, ["gap"]);
    assert.deepEqual(subscribes(hub).map((f) => f.since), [undefined, 1, 1, 1]);
    assert.equal(sub.lastSeq, 1);
    c.close();
  });

  test("a command queued while reconnecting fails when a refused token (4401) ends the client", async () => {
    const hub = new FakeHub();
    const c = makeClient(hub);
    const { errors } = record(c);
    await c.connect();
    hub.refuse = true;
    hub.sockets[0].serverClose(1006);
    await waitFor(() => c.status === "reconnecting");
    const p = c.decide("r1", "ap_1", "approve", "queued while offline");
    hub.accept = () => false; // the hub comes back, and has revoked the token
    hub.refuse = false;
    const out = await settled(p);
    assert.notEqual(out, "pending", "the queued decide must not hang");
    assert.equal(out.rejected?.code, "unauthenticated");
    assert.equal(c.status, "closed");
    assert.deepEqual(errors, ["unauthenticated"]);
    assert.equal(hub.received.filter((f) => f.type === "decide").length, 0, "never sent");
  });

  test("with reconnect: false, a command waiting for the first connection fails when it cannot be made", async () => {
    const hub = new FakeHub();
    hub.refuse = true;
    const c = makeClient(hub, { reconnect: false });
    const out = await settled(c.ping());
    assert.notEqual(out, "pending", "the queued ping must not hang");
    assert.equal(out.rejected?.code, "disconnected");
    assert.equal(c.status, "closed");
  });

  test("a token function handing back the token just refused: give up at once", async () => {
    const hub = new FakeHub();
    hub.accept = (t) => t !== "revoked";
    let calls = 0;
    const c = makeClient(hub, { token: () => { calls += 1; return "revoked"; } });
    const { errors, closes } = record(c);
    const out = await settled(c.connect());
    assert.notEqual(out, "pending", "connect must not retry forever");
    assert.equal(out.rejected?.code, "unauthenticated");
    assert.deepEqual(hellos(hub), ["revoked"], "one hello: the same token is not sent again");
    assert.equal(calls, 2, "asked once more for a fresh token");
    assert.deepEqual(closes, [4401]);
    assert.deepEqual(errors, ["unauthenticated"]);
    assert.equal(c.status, "closed");
  });

  test("a token function whose fresh tokens are refused too: give up after three 4401s in a row", async () => {
    const hub = new FakeHub();
    hub.accept = () => false;
    let n = 0;
    const c = makeClient(hub, { token: async () => `t${++n}` });
    const { errors } = record(c);
    const out = await settled(c.connect());
    assert.notEqual(out, "pending", "connect must not retry forever");
    assert.equal(out.rejected?.code, "unauthenticated");
    assert.equal(out.rejected.frame.refusals, 3);
    assert.deepEqual(hellos(hub), ["t1", "t2", "t3"]);
    assert.deepEqual(errors, ["unauthenticated"]);
    assert.equal(c.status, "closed");
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(hellos(hub).length, 3, "and no more attempts after that");
  });

  test("a token function refreshing after 4401s: a welcome resets the count of refusals", async () => {
    const hub = new FakeHub();
    const good = new Set(["ok1", "ok2"]);
    hub.accept = (t) => good.has(t);
    const script = ["old1", "old2", "ok1", "old3", "ok2"];
    const c = makeClient(hub, { token: () => script.shift() });
    await c.connect();
    assert.deepEqual(hellos(hub), ["old1", "old2", "ok1"], "two refusals, then a welcome");
    // The token expires mid-session (a 4401), and the next one is refused too: two refusals again, then a welcome.
    hub.live[0].serverClose(4401, "token expired");
    await waitFor(() => c.status === "open" && c.connects === 2, { message: "the second welcome" });
    assert.deepEqual(hellos(hub), ["old1", "old2", "ok1", "old3", "ok2"]);
    c.close();
  });

  test("a token function that throws is a transient failure: retried with backoff, not a close", async () => {
    const hub = new FakeHub();
    let calls = 0;
    const c = makeClient(hub, {
      token: async () => {
        calls += 1;
        if (calls <= 2) throw new Error("the auth server is down");
        return "t";
      },
    });
    const { errors } = record(c);
    const reconnects = [];
    c.on("reconnect", (r) => reconnects.push(r));
    const out = await settled(c.connect());
    assert.ok(out.resolved, `connect resolves once the token function works (${out.rejected?.code ?? out})`);
    assert.equal(c.status, "open");
    assert.deepEqual(errors, ["token_error", "token_error"], "each failure is reported, none is final");
    assert.deepEqual(reconnects.map((r) => r.code), [0, 0]);
    assert.ok(reconnects[1].delayMs >= reconnects[0].delayMs, "with backoff");
    c.close();
  });

  test("msgpack that cannot be loaded is `codec_unavailable`, not `unauthenticated`", async () => {
    const hub = new FakeHub();
    const c = makeClient(hub, { encoding: "msgpack", msgpack: async () => { throw new Error("offline"); } });
    const { errors } = record(c);
    const out = await settled(c.connect());
    assert.equal(out.rejected?.code, "codec_unavailable");
    assert.match(out.rejected.message, /offline/);
    assert.deepEqual(errors, ["codec_unavailable"]);
    assert.equal(c.status, "closed");
    assert.equal(hub.sockets.length, 0, "no socket was opened");
  });
});
