// The page in headless Chromium when the hub's Redis comes back empty: the run's history is lost, and the page says
// so (the client got `log_reset` for the epoch it held) instead of showing a run that no longer exists as if it did.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";

import { REPO_DIR, freePort, startServer, waitFor } from "../../client_js/test/helpers.mjs";
import { launch, needChromium } from "./browser.mjs";

const REDIS = process.env.REDIS_SERVER || "/usr/bin/redis-server";

/** A redis-server with no persistence on `port`: each start is an empty one. */
function redisOn(port) {
  let proc = null;
  let dir = null;
  return {
    url: `redis://127.0.0.1:${port}/0`,
    async start() {
      dir = mkdtempSync(path.join(os.tmpdir(), "runcast-redis-"));
      proc = spawn(REDIS, ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir],
        { cwd: dir, stdio: "ignore" });
      await waitFor(async () => {
        const r = spawn("redis-cli", ["-p", String(port), "ping"], { stdio: ["ignore", "pipe", "ignore"] });
        let out = "";
        r.stdout.on("data", (d) => { out += d; });
        await new Promise((res) => r.on("exit", res));
        return out.includes("PONG");
      }, { timeout: 10_000, message: `redis-server on ${port}` });
    },
    async kill() {
      if (!proc) return;
      const gone = new Promise((r) => proc.once("exit", r));
      proc.kill("SIGKILL");
      await gone;
      proc = null;
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

let redis;
let server;
let browser;

before(async () => {
  needChromium();
  redis = redisOn(await freePort());
  await redis.start();
  server = await startServer({ delay: "0.01", args: ["--redis", redis.url] });
  browser = await launch();
});

after(async () => {
  await browser?.close();
  await server?.stop();
  await redis?.kill();
});

test("Redis restarted empty: the page says the run's history was lost", async () => {
  const alice = server.token("alice", "Alice", ["approver", "operator"]);
  const { run_id: runId } = await server.api("/api/runs", alice, { method: "POST", body: JSON.stringify({ agent: "demo", input: "tidy" }) });
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  page.setDefaultTimeout(20_000);
  await page.goto(`${server.base}/#token=${alice}&run=${runId}`);
  await page.locator('[data-testid="approval"]').waitFor(); // the run, paused at its approval, with its history
  assert.equal(await page.locator('[data-testid="history-lost"]').isHidden(), true);
  const epoch = await page.evaluate(() => window.runcastMonitor.client._runs.values().next().value.epoch);
  assert.match(epoch, /^[0-9a-f]{16}$/);

  await redis.kill();
  await redis.start(); // empty

  const note = page.locator('[data-testid="history-lost"]');
  await note.waitFor({ state: "visible", timeout: 20_000 });
  assert.match(await note.textContent(), /lost this run's history/);
  await page.locator('[data-testid="run-message"]').filter({ hasText: "The hub no longer knows this run" }).waitFor();
  assert.equal(await page.locator('[data-testid="approve"]:visible, [data-testid="reject"]:visible').count(), 0, "no buttons");
  await waitFor(() => server.logs().includes("Redis lost its data"), { message: "the hub's log to say so" });
  await context.close();
});
