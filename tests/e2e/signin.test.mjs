// Signing in on the page with a real OpenID Provider (tests/oidc/provider.mjs: oidc-provider), in headless Chromium
// against a real `runcast serve --oidc-issuer …`: Alex opens an approval's deep link while signed out, signs in
// through the provider's own login and consent pages, comes back to that approval, opens it again in a second tab
// (no token anywhere: the hub's session cookie), and approves it there, as the name and roles his groups map to.
// Then Sign out. And the demo's dev sign-in page (make demo): Dana, Alex and Vic, no token in any link.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";

import { REPO_DIR, freePort, makeToken, startServer, waitFor } from "../../client_js/test/helpers.mjs";
import { launch, needChromium } from "./browser.mjs";

const OIDC_DIR = path.join(REPO_DIR, "tests", "oidc");
const CLIENT_SECRET = "runcast-e2e-client-secret-0123456789";

/** The test OpenID Provider, with `redirectUris` registered for the client `runcast`. */
async function startProvider(redirectUris) {
  assert.ok(existsSync(path.join(OIDC_DIR, "node_modules", "oidc-provider")), `run npm ci in ${OIDC_DIR} (make test does)`);
  const proc = spawn("node", [path.join(OIDC_DIR, "provider.mjs"), JSON.stringify({ redirect_uris: redirectUris, secret: CLIENT_SECRET })],
    { cwd: OIDC_DIR, stdio: ["ignore", "pipe", "pipe"] });
  let err = "";
  proc.stderr.on("data", (d) => { err += d; });
  const line = await new Promise((resolve, reject) => {
    proc.stdout.once("data", (d) => resolve(String(d)));
    proc.once("exit", () => reject(new Error(`the provider exited: ${err}`)));
  });
  return { issuer: JSON.parse(line).issuer, stop: () => proc.kill("SIGTERM") };
}

let browser;
before(async () => {
  needChromium();
  browser = await launch();
});
after(async () => { await browser?.close(); });

describe("sign-in with the team's OpenID Provider", () => {
  let op;
  let server;
  let admin;
  before(async () => {
    const port = await freePort();
    op = await startProvider([`http://127.0.0.1:${port}/auth/callback`]);
    const dir = mkdtempSync(path.join(os.tmpdir(), "runcast-oidc-"));
    const secretFile = path.join(dir, "client-secret");
    writeFileSync(secretFile, CLIENT_SECRET);
    server = await startServer({
      port, delay: "0.005",
      args: ["--oidc-issuer", op.issuer, "--oidc-client-id", "runcast", "--oidc-client-secret-file", secretFile,
        "--oidc-role-map", "ops=admin,oncall=approver,eng=viewer"],
    });
    admin = makeToken("root", "Root", ["admin"]);
  });
  after(async () => { await server?.stop(); op?.stop(); });

  test("a deep link opened signed out comes back to its approval after sign-in; a second tab approves it", async () => {
    const runId = (await server.api("/api/runs", admin, { method: "POST", body: JSON.stringify({ agent: "demo", input: "free some disk space" }) })).run_id;
    await waitFor(async () => (await server.api(`/api/runs/${runId}`, admin)).status === "paused", { message: "paused" });
    const ap = (await server.api(`/api/runs/${runId}`, admin)).pending_approvals[0].approval_id;
    const deepLink = `${server.base}/#run=${runId}&approval=${ap}`;

    const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, locale: "en-GB", timezoneId: "UTC" });
    const page = await context.newPage();
    page.setDefaultTimeout(20_000);
    const urls = [];
    page.on("framenavigated", (f) => { if (f === page.mainFrame()) urls.push(f.url()); });
    await page.goto(deepLink);
    // signed out: the page offers Sign in, and the link comes back to this approval
    const signIn = page.locator('[data-testid="sign-in"]');
    await signIn.waitFor();
    assert.equal(await signIn.getAttribute("href"), `/login?next=${encodeURIComponent(`/#run=${runId}&approval=${ap}`)}`);
    await signIn.click();
    // the provider's own pages: login, then consent
    await page.waitForURL((u) => u.href.startsWith(op.issuer));
    await page.fill('input[name="login"]', "alex");
    await page.fill('input[name="password"]', "any password");
    await page.click('button[type="submit"]');
    await page.locator('button:has-text("Continue")').click();
    // back on the hub, at that approval, as the person the provider's groups say
    await page.waitForURL((u) => u.href.startsWith(server.base) && u.hash.includes(ap));
    await page.locator('[data-testid="connection"][data-state="open"]').waitFor();
    assert.equal(await page.locator('[data-testid="me"]').textContent(), "Alex Approver · approver, viewer (you)");
    await page.waitForFunction((id) => document.activeElement?.dataset.approvalId === id, ap);
    // no token, code or secret in any address the browser was at (the provider's own, and the hub's)
    for (const u of urls.filter((x) => x.startsWith(server.base))) assert.doesNotMatch(u, /token=|code=|eyJ/, u);

    // a second tab of the same browser: the same deep link, signed in by the cookie, decides there
    const tab2 = await context.newPage();
    tab2.setDefaultTimeout(20_000);
    await tab2.goto(deepLink);
    await tab2.locator('[data-testid="connection"][data-state="open"]').waitFor();
    const approve = tab2.locator('[data-testid="decision-panel"] [data-testid="approve"]');
    await approve.waitFor();
    await approve.click();
    await waitFor(async () => (await server.api(`/api/runs/${runId}`, admin)).status === "completed", { message: "completed" });
    const events = (await server.api(`/api/runs/${runId}/events`, admin)).events;
    const decided = events.find((e) => e.type === "approval.decided" && e.data.approval_id === ap);
    assert.equal(decided.data.decision, "approve");
    assert.deepEqual(decided.data.by && { sub: decided.data.by.sub, name: decided.data.by.name }, { sub: "alex", name: "Alex Approver" });
    // the first tab saw it too (a live subscription on its own socket)
    await page.waitForFunction(() => document.querySelector('[data-testid="run-status"]')?.textContent.includes("completed"));

    // Sign out: every tab's session ends; the page offers Sign in again
    await tab2.locator('[data-testid="sign-out"]').click();
    await tab2.waitForURL((u) => u.pathname === "/auth/logout");
    assert.match(await tab2.textContent("body"), /signed out/i);
    await page.reload();
    await page.locator('[data-testid="sign-in"]').waitFor();
    await context.close();
  });
});
