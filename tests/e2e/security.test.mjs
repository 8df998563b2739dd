// The page's security headers, in headless Chromium against a real `runcast serve`: an injected inline script is
// blocked by the Content-Security-Policy (the browser reports the violation), and the page works as before.

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { waitFor } from "../../client_js/test/helpers.mjs";
import { suite } from "./browser.mjs";

let server;
let browser;
suite({ delay: "0.005" }, {}, (ready) => ({ server, browser } = ready));

describe("page security headers", () => {
  test("every answer carries the CSP, nosniff and no-referrer", async () => {
    for (const p of ["/", "/static/app.js", "/healthz", "/api/agents"]) {
      const r = await fetch(server.base + p);
      const csp = r.headers.get("content-security-policy");
      assert.match(csp, /script-src 'self';/, p);
      assert.match(csp, /frame-ancestors 'none'/, p);
      assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/, p);
      assert.equal(r.headers.get("x-content-type-options"), "nosniff", p);
      assert.equal(r.headers.get("referrer-policy"), "no-referrer", p);
    }
  });

  test("an injected inline script is blocked and reported, and the page still starts and shows a run", async () => {
    const token = server.token("olga", "Olga", ["operator", "approver"]);
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    // Before any of the page's scripts: collect the violations the browser reports.
    await context.addInitScript(() => {
      window.__violations = [];
      document.addEventListener("securitypolicyviolation", (e) =>
        window.__violations.push({ directive: e.effectiveDirective, blocked: e.blockedURI, disposition: e.disposition }));
    });
    const page = await context.newPage();
    page.setDefaultTimeout(20_000);
    const console = [];
    page.on("console", (m) => console.push(m.text()));
    const errors = [];
    page.on("pageerror", (e) => errors.push(e));
    await page.goto(`${server.base}/#token=${token}`);
    await page.locator('[data-testid="connection"][data-state="open"]').waitFor();

    // What an HTML injection would do: a <script> element, an inline event handler, a javascript: URL.
    await page.evaluate(() => {
      const s = document.createElement("script");
      s.textContent = "window.__pwned = 'script';";
      document.body.append(s);
      const box = document.createElement("div");
      box.innerHTML = '<img src="data:," onerror="window.__pwned = \'handler\'"><a id="jsurl" href="javascript:window.__pwned=\'url\'">x</a>';
      document.body.append(box);
      document.getElementById("jsurl").click();
    });
    await waitFor(async () => (await page.evaluate(() => window.__violations.length)) >= 3,
      { message: "three CSP violations reported" });
    const violations = await page.evaluate(() => window.__violations);
    assert.equal(await page.evaluate(() => window.__pwned), undefined, "no injected code ran");
    assert.ok(violations.every((v) => v.disposition === "enforce"), JSON.stringify(violations));
    assert.ok(violations.some((v) => v.directive === "script-src-elem" && v.blocked === "inline"), JSON.stringify(violations));
    assert.ok(violations.some((v) => v.directive === "script-src-attr"), JSON.stringify(violations));
    assert.ok(console.some((t) => t.includes("Content Security Policy")), console.join("\n"));

    // The app itself is untouched: start a run from the form and watch it reach its approval.
    await page.locator('[data-testid="start-agent"] option[value="demo"]').waitFor({ state: "attached" });
    await page.selectOption('[data-testid="start-agent"]', "demo");
    await page.fill('[data-testid="start-input"]', "Please free some disk space.");
    await page.click('[data-testid="start-submit"]');
    await page.waitForFunction(() => new URLSearchParams(location.hash.slice(1)).get("run"));
    await page.locator('[data-testid="transcript"] [data-testid="message"]').first().waitFor();
    await waitFor(async () => /paused|waiting/i.test(await page.locator('[data-testid="run-status"]').textContent()),
      { message: "the run reaches its approval in the page" });
    assert.deepEqual(errors, []);
    const runId = new URLSearchParams(new URL(page.url()).hash.slice(1)).get("run");
    await server.api(`/api/runs/${runId}/cancel`, token, { method: "POST", body: "{}" });
    await context.close();
  });
});
