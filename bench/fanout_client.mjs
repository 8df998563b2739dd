// Watchers for bench/fanout.py: one Node process holding many WebSocket clients (the `ws` package of client_js).
//
//   node bench/fanout_client.mjs '<json options>'
//
// Options: mode ("runcast" | "raw" | "socketio" | "idle"), url, count, token (runcast), run_id (runcast),
// batch (runcast: ask for batched frames), encoding ("json" | "msgpack", runcast), timeout_s.
// Every watcher checks that it sees seq 1..N exactly once and in order, up to the end event. Prints "ready" once every
// watcher is connected (and, for runcast, synced), then one JSON line with the results when all are done (or on timeout).
// The delay of an event is the time from its `ts` (when the server logged it) to its arrival here.

import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import path from "node:path";

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, "../client_js/package.json"));
const WebSocket = require("ws");
const msgpack = await import(require.resolve("@msgpack/msgpack"));

const opt = JSON.parse(process.argv[2]);
const count = opt.count;
const BUCKET_MS = 0.25; // delay histogram: 0.25 ms buckets up to 20 s
const hist = new Uint32Array(80_000);
let events = 0; // event frames (or batched events) received after ready
let frames = 0;
let done = 0;
let ready = 0;
let lastArrival = 0;
let doneAt = 0;
const errors = [];
const closes = {};

function record(ts) {
  const d = Date.now() - ts;
  const b = Math.max(0, Math.min(hist.length - 1, Math.floor(d / BUCKET_MS)));
  hist[b] += 1;
}

function fail(w, msg) {
  if (errors.length < 20) errors.push(`watcher ${w.i}: ${msg}`);
  const first = !w.bad;
  w.bad = true;
  if (first && !w.ready) { // it will never be ready: count it, so the driver hears about it instead of waiting
    failedEarly += 1;
    settle();
  }
}

function finish() {
  if (finished) return;
  const out = { connected: ready, ok: 0, done, events, frames, errors, closes, last_arrival_ms: lastArrival, done_ms: doneAt, hist: {} };
  for (const w of watchers) if (!w.bad && w.done) out.ok += 1;
  hist.forEach((n, i) => { if (n) out.hist[i] = n; });
  out.bucket_ms = BUCKET_MS;
  process.stdout.write(JSON.stringify(out) + "\n");
  finished = true;
}
let finished = false;

function onEvent(w, ev, live) {
  if (ev.seq !== w.last + 1) { fail(w, `seq ${ev.seq} after ${w.last}`); }
  w.last = ev.seq;
  if (live) {
    events += 1;
    const ts = typeof ev.ts === "number" ? ev.ts : Date.parse(ev.ts);
    record(ts);
    lastArrival = Date.now();
  }
  if (ev.end || ev.type === "run.completed" || ev.type === "run.failed" || ev.type === "run.cancelled") {
    markDone(w);
  }
}

function markDone(w) {
  if (w.done) return;
  w.done = true;
  done += 1;
  doneAt = Date.now();
  if (done === count) finish();
}

function markReady(w) {
  if (w.ready || w.bad) return;
  w.ready = true;
  ready += 1;
  settle();
}

// Once every watcher is either ready or failed before it was: "ready", or "failed <json>" with the counts and the
// first errors (the driver stops waiting and says what went wrong).
let failedEarly = 0;
let settled = false;
function settle() {
  if (settled || ready + failedEarly < count) return;
  settled = true;
  if (!failedEarly) process.stdout.write("ready\n");
  else process.stdout.write(`failed ${JSON.stringify({ ready, failed: failedEarly, closes, errors })}\n`);
}

const watchers = [];

function decodeFrame(w, data, isBinary) {
  if (opt.encoding === "msgpack") {
    const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    return opt.batch ? [...msgpack.decodeMulti(bytes)] : [msgpack.decode(bytes)];
  }
  const text = isBinary ? data.toString("utf8") : data.toString();
  return opt.batch && text.includes("\n") ? text.split("\n").map((s) => JSON.parse(s)) : [JSON.parse(text)];
}

function startRuncast(w) {
  const sub = opt.encoding === "msgpack" ? "runcast.v1.msgpack" : "runcast.v1.json";
  const sock = new WebSocket(opt.url, [sub], { perMessageDeflate: false, maxPayload: 1 << 30 });
  w.sock = sock;
  const send = (f) => sock.send(opt.encoding === "msgpack" ? msgpack.encode(f) : JSON.stringify(f));
  sock.on("open", () => send({ type: "hello", token: opt.token, ...(opt.batch ? { batch: true } : {}) }));
  sock.on("message", (data, isBinary) => {
    frames += 1;
    for (const f of decodeFrame(w, data, isBinary)) {
      if (f.type === "welcome") {
        w.subscribe = () => send({ type: "subscribe", run_id: opt.run_id, since: 0, id: "s" });
        if (opt.run_id && !opt.wait_go) w.subscribe();
        else markReady(w);
      } else if (f.type === "sync") {
        w.synced = true;
        markReady(w);
        if (opt.replay && w.last >= f.head_seq) markDone(w);
      } else if (f.type === "error") {
        fail(w, `error ${f.code}: ${f.message}`);
      } else if (typeof f.seq === "number") {
        onEvent(w, f, w.synced && f.type === "message.delta");
      }
    }
  });
  sock.on("close", (code) => { closes[code] = (closes[code] || 0) + 1; if (!w.done) fail(w, `closed ${code}`); });
  sock.on("error", (e) => fail(w, `socket error ${e.message}`));
}

function startRaw(w) {
  const sock = new WebSocket(opt.url, { perMessageDeflate: false, maxPayload: 1 << 30 });
  w.sock = sock;
  sock.on("open", () => { markReady(w); w.subscribe = () => sock.send("go"); });
  sock.on("message", (data) => {
    frames += 1;
    const text = data.toString();
    if (text === "done") { markDone(w); return; }
    onEvent(w, JSON.parse(text), !opt.replay);
  });
  sock.on("close", (code) => { closes[code] = (closes[code] || 0) + 1; if (!w.done) fail(w, `closed ${code}`); });
  sock.on("error", (e) => fail(w, `socket error ${e.message}`));
}

// Socket.IO v5 over Engine.IO v4, websocket transport only: "0{...}" open, "40" connect, "42[name, data]" events,
// "2"/"3" ping/pong.
function startSocketIO(w) {
  const sock = new WebSocket(`${opt.url}/socket.io/?EIO=4&transport=websocket`, { perMessageDeflate: false });
  w.sock = sock;
  sock.on("message", (data) => {
    const text = data.toString();
    if (text[0] === "0") { sock.send("40"); return; }
    if (text === "2") { sock.send("3"); return; }
    if (text.startsWith("40")) { markReady(w); return; }
    if (text.startsWith("42")) {
      frames += 1;
      const [, ev] = JSON.parse(text.slice(2));
      onEvent(w, ev, true);
    }
  });
  sock.on("close", (code) => { closes[code] = (closes[code] || 0) + 1; if (!w.done) fail(w, `closed ${code}`); });
  sock.on("error", (e) => fail(w, `socket error ${e.message}`));
}

const start = { runcast: startRuncast, idle: startRuncast, raw: startRaw, socketio: startSocketIO }[opt.mode];
// Connect in small waves, so the server's accept queue is never the bottleneck.
for (let i = 0; i < count; i++) {
  const w = { i, last: 0, done: false, bad: false, ready: false, synced: false, sock: null };
  watchers.push(w);
  start(w);
  if (i % 50 === 49) await new Promise((r) => setTimeout(r, 20));
}
// The driver's commands, one per line: "go" (replays: every watcher asks now), "report" (print what we have), "exit".
let pending = "";
process.stdin.on("data", (chunk) => {
  pending += chunk.toString();
  let nl;
  while ((nl = pending.indexOf("\n")) >= 0) {
    const cmd = pending.slice(0, nl).trim();
    pending = pending.slice(nl + 1);
    if (cmd === "go") for (const w of watchers) w.subscribe?.();
    else if (cmd === "report") finish();
    else if (cmd === "exit") process.exit(0);
  }
});
process.stdin.on("end", () => process.exit(0));
setTimeout(finish, (opt.timeout_s || 120) * 1000);
