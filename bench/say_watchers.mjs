// The watchers of bench/say.py: one Node process holding N WebSocket clients (the `ws` package of client_js) on one
// run, so that what the bench measures is the hub and not a Python client process parsing 100 sockets' frames.
//
//   node bench/say_watchers.mjs '{"url": ..., "token": ..., "run_id": ..., "count": 100}'
//
// Prints "ready" once every watcher is synced. Then, for each line {"after": seq} on stdin, it records each watcher's
// arrival time of the first `message.delta` with a seq above `after` (epoch seconds, sub-millisecond), and once
// every watcher has that turn's `run.completed`, prints one JSON line: {"firsts": [...], "ts": {type: ts}} where
// `ts` holds the logged `ts` of the turn's message.said, run.resumed and first message.delta.

import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import path from "node:path";
import readline from "node:readline";

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, "../client_js/package.json"));
const WebSocket = require("ws");

const opt = JSON.parse(process.argv[2]);
const STAGES = new Set(["message.said", "run.resumed", "message.delta"]);
let after = null;
let synced = 0;
let firsts = [];
let done = 0;
let stageTs = {};
const now = () => (performance.timeOrigin + performance.now()) / 1000;

function watcher(i) {
  const w = { i, first: false, done: false };
  const ws = new WebSocket(opt.url, ["runcast.v1.json"], { perMessageDeflate: false, maxPayload: 0 });
  ws.on("open", () => {
    ws.send(JSON.stringify({ type: "hello", token: opt.token }));
    ws.send(JSON.stringify({ type: "subscribe", run_id: opt.run_id }));
  });
  ws.on("message", (data) => {
    const t = now();
    for (const line of data.toString().split("\n")) {
      const f = JSON.parse(line);
      if (f.type === "sync" && f.run_id === opt.run_id) {
        synced += 1;
        if (synced === opt.count) process.stdout.write("ready\n");
        continue;
      }
      if (after === null || f.seq === undefined || f.seq <= after) continue;
      if (STAGES.has(f.type) && stageTs[f.type] === undefined) stageTs[f.type] = Date.parse(f.ts) / 1000;
      if (f.type === "message.delta" && !w.first) {
        w.first = true;
        firsts.push(t);
      } else if (f.type === "run.completed" && !w.done) {
        w.done = true;
        done += 1;
        if (done === opt.count) {
          process.stdout.write(JSON.stringify({ firsts, ts: stageTs }) + "\n");
        }
      }
    }
  });
  ws.on("close", (code) => {
    process.stderr.write(`watcher ${i} closed: ${code}\n`);
  });
  return w;
}

const watchers = Array.from({ length: opt.count }, (_, i) => watcher(i));
const rl = readline.createInterface({ input: process.stdin });
for await (const line of rl) {
  if (!line.trim()) continue;
  const c = JSON.parse(line);
  if (c.exit) process.exit(0);
  for (const w of watchers) {
    w.first = false;
    w.done = false;
  }
  firsts = [];
  done = 0;
  stageTs = {};
  after = c.after;
  process.stdout.write("armed\n");
}
