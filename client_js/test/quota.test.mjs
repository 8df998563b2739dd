// Per-user start quotas as the client sees them: `start` rejects with a RuncastError `rate_limited` whose frame
// names the quota and when to try again (README, "Quotas").

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import WebSocket from "ws";

import { RuncastClient, RuncastError } from "../src/runcast.js";
import { startServer } from "./helpers.mjs";

let server;

before(async () => {
  server = await startServer({ env: { RUNCAST_MAX_STARTS_PER_MINUTE: "3", RUNCAST_MAX_OPEN_RUNS: "0" } });
});

after(async () => {
  await server?.stop();
});

test("a start over the per-minute quota rejects with rate_limited, the quota and retry_after_s", async () => {
  const c = new RuncastClient({ url: server.ws, token: server.token("quinn", "Quinn", ["operator"]), WebSocket });
  await c.connect();
  for (let i = 0; i < 3; i++) assert.match(await c.start("demo", "hi"), /^run_/);
  const err = await c.start("demo", "one too many").then(() => null, (e) => e);
  assert.ok(err instanceof RuncastError, String(err));
  assert.equal(err.code, "rate_limited");
  assert.equal(err.frame.quota, "starts_per_minute");
  assert.ok(err.frame.retry_after_s >= 1 && err.frame.retry_after_s <= 60, JSON.stringify(err.frame));
  assert.equal(c.status, "open", "a refused start leaves the connection as it was");
  c.close();
});
