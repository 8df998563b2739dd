// The dashboards of bench/dashboards.py: one Node process holding M WebSocket clients (the `ws` package of
// client_js), each an approver subscribed to its inbox (`subscribe_inbox`) and to the run list (`subscribe_runs`,
// limit 50), as a team's open pages are. A Python client process would be the bottleneck at M=1,000 (it spent 19 s
// of CPU where the hub spent 9), and the figures would be the client's, not the hub's.
//
//   node bench/dashboards_client.mjs      (driven over stdin / stdout: one JSON command per line, one JSON answer)
//
// Commands ({"cmd": ...}):
//   open {dashboards: [{url, hub, token}]}  connect, hello, subscribe; answers once every one has both snapshots
//   frames                                  feed frames received so far (inbox.added, inbox.removed, run.status)
//   wait {what: "added"|"removed", ids, timeout_s}   until every dashboard has seen each id; {ok}
//   latency {what, at: {id: ts}}            per hub, arrival - ts over every (dashboard, id): {hub: [p50, p99, n]}
//   inboxes                                 every dashboard's inbox (folded from its frames): [[ids...], ...]
//   subscribe {run_id, timeout_s}           every dashboard subscribes to the run; answers once all are synced
//   until_event {run_id, type, timeout_s}   until every dashboard has that event of the run; {ok}
//   status                                  {errors: {code: n}, closes: {code: n}}
//   close                                   close them all and exit
// Arrival times are Date.now() / 1000, on the machine's clock (the events' `ts` are the hub's, same clock).

import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import path from "node:path";
import readline from "node:readline";

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, "../client_js/package.json"));
const WebSocket = require("ws");

const dashboards = [];
let allFrames = 0;
const errors = {};
const closes = {};

function onFrame(d, f, now) {
  allFrames += 1;
  const t = f.type;
  if (t === "inbox") {
    d.inbox = new Set(f.approvals.map((a) => a.approval_id));
    d.gotInbox = true;
  } else if (t === "runs") {
    d.gotRuns = true;
  } else if (t === "inbox.added") {
    d.feed += 1;
    const id = f.approval.approval_id;
    d.inbox.add(id);
    if (!d.added.has(id)) d.added.set(id, now);
  } else if (t === "inbox.removed") {
    d.feed += 1;
    d.inbox.delete(f.approval_id);
    if (!d.removed.has(f.approval_id)) d.removed.set(f.approval_id, now);
  } else if (t === "run.status") {
    d.feed += 1;
  } else if (t === "sync") {
    d.synced.add(f.run_id);
  } else if (t === "error") {
    errors[f.code || "?"] = (errors[f.code || "?"] || 0) + 1;
  }
  if (f.run_id && f.seq !== undefined) {
    const k = `${f.run_id} ${f.type}`;
    d.seen.add(k);
  }
}

function open(spec) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(spec.url, ["runcast.v1.json"], { perMessageDeflate: false, maxPayload: 0 });
    const d = {
      ws,
      hub: spec.hub,
      inbox: new Set(), // the ids only: the check compares ids, and 1,000 dashboards holding every approval
      // object they were sent kept half a million parsed trees alive (4 s of this process's 13 s went to its GC)
      added: new Map(),
      removed: new Map(),
      feed: 0,
      gotInbox: false,
      gotRuns: false,
      synced: new Set(),
      seen: new Set(),
    };
    ws.on("open", () => {
      ws.send(JSON.stringify({ type: "hello", token: spec.token }));
      ws.send(JSON.stringify({ type: "subscribe_inbox", id: "i" }));
      ws.send(JSON.stringify({ type: "subscribe_runs", id: "r", limit: 50 }));
      resolve(d);
    });
    ws.on("message", (data) => {
      const now = Date.now() / 1000;
      const text = data.toString();
      for (const line of text.split("\n")) onFrame(d, JSON.parse(line), now);
    });
    ws.on("close", (code) => {
      d.closed = code;
      if (!d.closing) closes[code] = (closes[code] || 0) + 1;
    });
    ws.on("error", (err) => reject(err));
  });
}

async function until(pred, timeoutS) {
  const end = Date.now() + timeoutS * 1000;
  while (!pred()) {
    if (Date.now() > end) return false;
    await new Promise((r) => setTimeout(r, 20));
  }
  return true;
}

function pct(xs, p) {
  return xs.length ? xs[Math.min(xs.length - 1, Math.floor(p * xs.length))] : null;
}

async function handle(c) {
  switch (c.cmd) {
    case "open": {
      // 50 handshakes at a time: a page load is not a thundering herd of 1,000 at one instant
      for (let i = 0; i < c.dashboards.length; i += 50) {
        dashboards.push(...(await Promise.all(c.dashboards.slice(i, i + 50).map(open))));
      }
      const ok = await until(() => dashboards.every((d) => d.gotInbox && d.gotRuns), c.timeout_s || 300);
      return { ok, count: dashboards.length };
    }
    case "frames":
      return { feed: dashboards.reduce((n, d) => n + d.feed, 0), all: allFrames };
    case "wait": {
      const key = c.what;
      const ok = await until(() => dashboards.every((d) => c.ids.every((id) => d[key].has(id))), c.timeout_s);
      return { ok };
    }
    case "latency": {
      const per = {};
      for (const d of dashboards) {
        const got = d[c.what];
        for (const [id, ts] of Object.entries(c.at)) {
          const t = got.get(id);
          if (t !== undefined) (per[d.hub] ||= []).push(t - ts);
        }
      }
      const out = {};
      for (const [hub, xs] of Object.entries(per)) {
        xs.sort((a, b) => a - b);
        out[hub] = [pct(xs, 0.5), pct(xs, 0.99), xs.length];
      }
      return out;
    }
    case "inboxes":
      return { inboxes: dashboards.map((d) => [...d.inbox]) };
    case "subscribe": {
      for (const d of dashboards) d.ws.send(JSON.stringify({ type: "subscribe", run_id: c.run_id }));
      const ok = await until(() => dashboards.every((d) => d.synced.has(c.run_id)), c.timeout_s || 300);
      return { ok };
    }
    case "until_event": {
      const k = `${c.run_id} ${c.type}`;
      const ok = await until(() => dashboards.every((d) => d.seen.has(k)), c.timeout_s || 300);
      return { ok };
    }
    case "status":
      return { errors, closes };
    case "close": {
      for (const d of dashboards) {
        d.closing = true;
        d.ws.close();
      }
      setTimeout(() => process.exit(0), 200);
      return { ok: true };
    }
    default:
      return { error: `unknown command ${c.cmd}` };
  }
}

const rl = readline.createInterface({ input: process.stdin });
for await (const line of rl) {
  if (!line.trim()) continue;
  let answer;
  try {
    answer = await handle(JSON.parse(line));
  } catch (err) {
    answer = { error: String(err && err.stack ? err.stack : err) };
  }
  process.stdout.write(JSON.stringify(answer) + "\n");
}
