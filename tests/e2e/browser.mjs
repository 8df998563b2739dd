// What the page tests share: Debian's Chromium driven by playwright-core (never a downloaded browser), and a suite's
// setup: a real `runcast serve`, one browser, one token per person.

import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { after, before } from "node:test";

import { REPO_DIR, startServer } from "../../client_js/test/helpers.mjs";

// playwright-core and ws are the client package's dev dependencies: resolve them from there.
export const require = createRequire(path.join(REPO_DIR, "client_js", "package.json"));
export const { chromium } = require("playwright-core");
export const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
export const LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync"];

export function needChromium() {
  assert.ok(existsSync(CHROMIUM), `no Chromium at ${CHROMIUM}: apt-get install -y chromium (or set CHROMIUM_PATH)`);
}

export function launch() {
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: LAUNCH_ARGS });
}

/**
 * Registers the suite's before() and after(): before() starts a hub (`startServer(options)`), makes a token per person
 * (`people`: {key: [sub, name, roles]} gives `tok[key]`), launches Chromium and calls `ready({server, browser, tok})`;
 * after() stops both. Returns that object ({server, browser, tok}), filled in by before(). (`ready` is where a file
 * takes them: node:test does not run a file's root before() hooks in the order they were registered.)
 */
export function suite(options, people = {}, ready = () => {}) {
  const s = { server: undefined, browser: undefined, tok: {} };
  before(async () => {
    needChromium();
    s.server = await startServer(options);
    for (const [key, [sub, name, roles]] of Object.entries(people)) s.tok[key] = s.server.token(sub, name, roles);
    s.browser = await launch();
    await ready(s);
  });
  after(async () => {
    await s.browser?.close();
    await s.server?.stop();
  });
  return s;
}
