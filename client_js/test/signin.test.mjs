// Tokens that end while the connection is open are renewed in place (a renewing hello: the welcome's `expires_at`,
// a token function), against a real hub: the socket and its subscriptions stay. And `sessionToken()`, the token
// function of a page whose person signed in on the hub (its session cookie).

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import WebSocket from "ws";

import { RuncastClient, RuncastError, sessionToken } from "../src/runcast.js";
import { assertGapFree, startServer, waitFor } from "./helpers.mjs";

let server;
before(async () => { server = await startServer({ delay: "0.3" }); });
after(async () => { await server?.stop(); });

test("a short-lived token is renewed before it ends, on the same socket, with no event lost or repeated", async () => {
  let asked = 0;
  const c = new RuncastClient({
    url: server.ws, WebSocket, client: "renew-test",
    token: () => { asked += 1; return server.token("ren", "Ren", ["operator"], { ttlS: 4 }); },
  });
  const closes = [];
  const renewed = [];
  c.on("close", (e) => closes.push(e));
  c.on("renewed", (w) => renewed.push(w));
  const welcome = await c.connect();
  assert.ok(welcome.expires_at > Date.now() / 1000, "the welcome says when the token ends");
  const runId = await c.start("demo", "free some disk space");
  const seqs = [];
  c.subscribe(runId, { onEvent: (ev) => seqs.push(ev.seq) });
  // two renewals: each before the 4-second token would have ended (the hub closes with 4401 at expiry otherwise)
  await waitFor(() => renewed.length >= 2, { timeout: 20_000, message: "two renewals" });
  assert.deepEqual(closes, [], "the socket never closed");
  assert.equal(c.connects, 1);
  assert.ok(asked >= 3);
  assert.equal(renewed[1].connection_id, welcome.connection_id);
  assert.ok(renewed[1].expires_at > welcome.expires_at);
  assert.ok(seqs.length > 0);
  assertGapFree(assert, seqs);
  c.close();
});

test("a renewing hello for someone else is refused and the connection stays who it was", async () => {
  let who = "kai";
  const c = new RuncastClient({ url: server.ws, WebSocket, token: () => server.token(who, who, ["viewer"], { ttlS: 3 }) });
  const errors = [];
  c.on("error", (e) => errors.push(e));
  await c.connect();
  who = "mallory";
  await waitFor(() => errors.length > 0, { timeout: 10_000, message: "the refused renewal" });
  assert.equal(errors[0].code, "forbidden");
  assert.equal(c.user.sub, "kai");
  c.close();
});

test("a renewed token that sees fewer runs ends their subscriptions with forbidden and refreshes the run list", async () => {
  const op = new RuncastClient({ url: server.ws, WebSocket, token: server.token("ada", "Ada", ["operator"]) });
  await op.connect();
  const hidden = await op.start("demo", "the run the renewed token may not see");
  const kept = await op.start("demo", "the run it still sees");
  let runs = ["*"];
  const c = new RuncastClient({ url: server.ws, WebSocket, token: () => server.token("nia", "Nia", ["viewer"], { ttlS: 3, runs }) });
  const renewed = [];
  c.on("renewed", (w) => renewed.push(w));
  await c.connect();
  const errors = { [hidden]: [], [kept]: [] };
  const seen = { [hidden]: [], [kept]: [] };
  for (const id of [hidden, kept]) c.subscribe(id, { onEvent: (ev) => seen[id].push(ev.seq), onError: (e) => errors[id].push(e) });
  const snapshots = [];
  c.subscribeRuns({ onChange: (state, change) => { if (change.type === "snapshot") snapshots.push([...state.runs.keys()]); } });
  await waitFor(() => snapshots.length === 1 && seen[hidden].length > 0 && seen[kept].length > 0, { message: "both runs shown" });
  assert.ok(snapshots[0].includes(hidden) && snapshots[0].includes(kept));
  runs = [kept]; // the next renewal's token sees only `kept`
  await waitFor(() => errors[hidden].length > 0, { timeout: 10_000, message: "the hidden run's subscription ended" });
  assert.equal(errors[hidden][0].code, "forbidden");
  assert.deepEqual(errors[kept], []);
  await waitFor(() => snapshots.length === 2, { message: "the run list's new snapshot" });
  assert.deepEqual(snapshots[1], [kept]);
  assert.ok(renewed.length >= 1);
  assert.equal(c.connects, 1, "the same socket");
  const before = seen[hidden].length;
  await op.cancel(hidden);
  await op.cancel(kept);
  await waitFor(() => c.getState(kept)?.status === "cancelled", { message: "the kept run goes on" });
  assert.equal(seen[hidden].length, before, "nothing of the hidden run after its subscription ended");
  assertGapFree(assert, seen[kept]);
  for (const x of [c, op]) x.close();
});

test("sessionToken(): the session's token, or unauthenticated with the sign-in address that comes back here", async () => {
  const calls = [];
  const ok = sessionToken({ fetch: async (url, opts) => { calls.push([url, opts]); return new Response(JSON.stringify({ token: "t1", user: {} }), { status: 200 }); } });
  assert.equal(await ok(), "t1");
  assert.equal(calls[0][0], "/auth/refresh");
  assert.equal(calls[0][1].method, "POST");
  assert.equal(calls[0][1].credentials, "same-origin");
  const out = sessionToken({ next: "/#run=r1&approval=a1", fetch: async () => new Response(JSON.stringify({ error: { code: "unauthenticated", message: "not signed in", login: "/login" } }), { status: 401 }) });
  await assert.rejects(out(), (err) => err instanceof RuncastError && err.code === "unauthenticated"
    && err.frame.login === `/login?next=${encodeURIComponent("/#run=r1&approval=a1")}`);
  // a client whose session function says "signed out" stops (no retry loop against the hub)
  const c = new RuncastClient({ url: server.ws, WebSocket, token: out });
  await assert.rejects(c.connect(), (err) => err.code === "unauthenticated");
  assert.equal(c.status, "closed");
});
