// Test helpers shared by the client's unit tests and the browser tests in tests/e2e/:
// a real `runcast serve` on a free port, a throw-away redis-server, tokens, a TCP proxy whose connections a test can
// cut, and waitFor.

import { spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const CLIENT_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
export const REPO_DIR = path.resolve(CLIENT_DIR, "..");
export const SECRET = "test-secret-0123456789abcdef0123456789abcdef";

/** RUNCAST_BIN if set, else <repo>/.venv/bin/runcast, else `runcast` on PATH. */
export function runcastBin() {
  if (process.env.RUNCAST_BIN) return process.env.RUNCAST_BIN;
  const venv = path.join(REPO_DIR, ".venv", "bin", "runcast");
  return existsSync(venv) ? venv : "runcast";
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/**
 * Poll `cond` until it returns a truthy value (returned), or fail after `timeout` ms with `message`.
 * @template T @param {() => T | Promise<T>} cond @returns {Promise<T>}
 */
export async function waitFor(cond, { timeout = 15_000, interval = 20, message = "condition" } = {}) {
  const end = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      const v = await cond();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > end) throw new Error(`timed out after ${timeout} ms waiting for ${message}${last ? `: ${last.message}` : ""}`);
    await new Promise((r) => setTimeout(r, interval));
  }
}

const b64url = (buf) => Buffer.from(buf).toString("base64url");

/** An HS256 JWT like `runcast token` makes. */
export function makeToken(sub, name, roles, { secret = SECRET, ttlS = 3600, runs = ["*"] } = {}) {
  const now = Math.floor(Date.now() / 1000);
  const head = b64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const body = b64url(JSON.stringify({ sub, name, roles, runs, iat: now, exp: now + ttlS }));
  const sig = createHmac("sha256", secret).update(`${head}.${body}`).digest("base64url");
  return `${head}.${body}.${sig}`;
}

/** Send `signal` to a child process and wait until it is gone (SIGKILL after 5 s). */
async function stopProcess(proc, signal = "SIGTERM") {
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  const gone = new Promise((r) => proc.once("exit", r));
  proc.kill(signal);
  const t = setTimeout(() => proc.kill("SIGKILL"), 5000);
  await gone;
  clearTimeout(t);
}

/**
 * Start `runcast serve` on a free port (or on `port`, e.g. to restart a node where it was) and wait until it answers
 * /healthz. `stop("SIGKILL")` kills it without letting it drain (a crash).
 * @returns {Promise<{port: number, base: string, ws: string, stop: (signal?: NodeJS.Signals) => Promise<void>, token: typeof makeToken, api: (p: string, tok: string, opts?: any) => Promise<any>, logs: () => string}>}
 */
export async function startServer({ delay = "0.01", env = {}, args = [], port: wanted = null } = {}) {
  const port = wanted ?? await freePort();
  let output = "";
  const proc = spawn(runcastBin(), ["serve", "--host", "127.0.0.1", "--port", String(port), ...args], {
    env: { ...process.env, RUNCAST_SECRET: SECRET, RUNCAST_DEMO_DELAY: String(delay), RUNCAST_LOG_LEVEL: "WARNING",
      RUNCAST_MAX_STARTS_PER_MINUTE: "0", RUNCAST_MAX_OPEN_RUNS: "0", ...env },  // per-user quotas off unless a test sets them
    stdio: ["ignore", "pipe", "pipe"],
  });
  proc.stdout.on("data", (d) => { output += d; });
  proc.stderr.on("data", (d) => { output += d; });
  let exited = false;
  proc.on("exit", () => { exited = true; });
  const base = `http://127.0.0.1:${port}`;
  await waitFor(async () => {
    if (exited) throw new Error(`runcast serve exited:\n${output}`);
    const r = await fetch(`${base}/healthz`);
    return r.ok;
  }, { timeout: 30_000, interval: 50, message: `runcast serve on ${port}` });
  const api = async (p, tok, opts = {}) => {
    const r = await fetch(base + p, {
      ...opts,
      headers: { Authorization: `Bearer ${tok}`, "Content-Type": "application/json", ...(opts.headers || {}) },
    });
    return r.json();
  };
  return {
    port,
    base,
    ws: `ws://127.0.0.1:${port}/ws`,
    token: (sub, name, roles, o) => makeToken(sub, name, roles, o),
    api,
    logs: () => output,
    async stop(signal = "SIGTERM") {
      if (exited) return;
      await stopProcess(proc, signal);
    },
  };
}

/** True once something on 127.0.0.1:`port` answers a Redis PING. */
function redisAnswers(port) {
  return new Promise((resolve) => {
    const sock = net.connect(port, "127.0.0.1");
    const done = (ok) => { sock.destroy(); resolve(ok); };
    sock.setTimeout(500, () => done(false));
    sock.on("error", () => done(false));
    sock.on("data", (d) => done(d.toString().startsWith("+PONG")));
    sock.on("connect", () => sock.write("PING\r\n"));
  });
}

/**
 * A throw-away redis-server (REDIS_SERVER, else /usr/bin/redis-server) on a free port, in its own temp dir, with no
 * persistence (`--save "" --appendonly no`). `stop()` kills it and removes the dir.
 * @returns {Promise<{port: number, url: string, stop: () => Promise<void>, logs: () => string}>}
 */
export async function startRedis() {
  const bin = process.env.REDIS_SERVER || "/usr/bin/redis-server";
  if (!existsSync(bin)) throw new Error(`no redis-server at ${bin}: apt-get install -y redis-server (or set REDIS_SERVER)`);
  let port;
  do port = await freePort(); while (port === 6379);
  const dir = mkdtempSync(path.join(os.tmpdir(), "runcast-redis-"));
  let output = "";
  const proc = spawn(bin, ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir], {
    cwd: dir, stdio: ["ignore", "pipe", "pipe"],
  });
  proc.stdout.on("data", (d) => { output += d; });
  proc.stderr.on("data", (d) => { output += d; });
  let exited = false;
  proc.on("exit", () => { exited = true; });
  const stop = async () => {
    await stopProcess(proc, "SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await waitFor(async () => {
      if (exited) throw new Error(`redis-server exited:\n${output}`);
      return redisAnswers(port);
    }, { timeout: 10_000, interval: 20, message: `redis-server on ${port}` });
  } catch (err) {
    await stop();
    throw err;
  }
  return { port, url: `redis://127.0.0.1:${port}/0`, stop, logs: () => output };
}

/** The whole log of a run over HTTP (paged). */
export async function fetchLog(server, token, runId) {
  const events = [];
  let since = 0;
  for (;;) {
    const page = await server.api(`/api/runs/${runId}/events?since=${since}&limit=1000`, token);
    events.push(...page.events);
    if (!page.more) return events;
    since = page.next_since;
  }
}

/**
 * A TCP proxy to `targetPort` that a test can break like a network: `cut()` destroys every open connection at once
 * (no WebSocket close frame: the client sees 1006), `block()` refuses new ones until `unblock()`.
 */
export async function startProxy(targetPort) {
  const pairs = new Set();
  let blocked = false;
  let accepted = 0;
  const server = net.createServer((client) => {
    if (blocked) { client.destroy(); return; }
    accepted += 1;
    const upstream = net.connect(targetPort, "127.0.0.1");
    const pair = { client, upstream };
    pairs.add(pair);
    const drop = () => { client.destroy(); upstream.destroy(); pairs.delete(pair); };
    client.on("error", drop);
    upstream.on("error", drop);
    client.on("close", drop);
    upstream.on("close", drop);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  const { port } = server.address();
  return {
    port,
    base: `http://127.0.0.1:${port}`,
    ws: `ws://127.0.0.1:${port}/ws`,
    get open() { return pairs.size; },
    get accepted() { return accepted; },
    cut() {
      const n = pairs.size;
      for (const p of [...pairs]) { p.client.destroy(); p.upstream.destroy(); pairs.delete(p); }
      return n;
    },
    block() { blocked = true; },
    unblock() { blocked = false; },
    close() {
      for (const p of [...pairs]) { p.client.destroy(); p.upstream.destroy(); }
      return new Promise((r) => server.close(r));
    },
  };
}

/** Seqs must be 1..n, each once, in order. */
export function assertGapFree(assert, seqs, label = "seqs") {
  assert.deepEqual(seqs, Array.from({ length: seqs.length }, (_, i) => i + 1), `${label} must be 1..${seqs.length} with no hole or repeat`);
}
