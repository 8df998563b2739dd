// Who is typing (issue 20): `typing(runId, on)` marks my presence entry at everyone's, never the log, against a real
// `runcast serve` (its typing mark lapses after RUNCAST_TYPING_TTL_S, short here).

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import WebSocket from "ws";

import { RuncastClient, applyPresence, initialPresence, typingPeople } from "../src/runcast.js";
import { fetchLog, startServer, waitFor } from "./helpers.mjs";

let server;
const tok = {};

before(async () => {
  server = await startServer({ delay: "0.01", env: { RUNCAST_TYPING_TTL_S: "1" } });
  tok.ada = server.token("ada", "Ada", ["operator"]);
  tok.otto = server.token("otto", "Otto", ["operator"]);
  tok.vic = server.token("vic", "Vic", ["viewer"]);
});

after(async () => {
  await server?.stop();
});

const client = (token) => new RuncastClient({ url: server.ws, token, WebSocket });

test("Otto sees Ada typing, until she stops, says something, or lets it lapse; Vic may not type", async () => {
  const ada = client(tok.ada);
  const otto = client(tok.otto);
  const vic = client(tok.vic);
  await Promise.all([ada.connect(), otto.connect(), vic.connect()]);
  const runId = await ada.start("demo", "tidy up");
  const subs = {};
  for (const [name, c] of [["ada", ada], ["otto", otto], ["vic", vic]]) subs[name] = c.subscribe(runId);
  const shown = (name) => typingPeople(subs[name].presence, { except: { ada: "ada", otto: "otto", vic: "vic" }[name] }).map((p) => p.name);
  await waitFor(() => subs.otto.presence.count === 3, { message: "three watching" });

  const ack = await ada.typing(runId, true);
  assert.equal(ack.typing, true);
  await waitFor(() => shown("otto").join() === "Ada", { message: "Otto sees Ada typing" });
  assert.deepEqual(shown("ada"), []); // not herself
  await waitFor(() => Object.values(subs.ada.presence.entries).some((p) => p.sub === "ada" && p.typing), { message: "her own mark" });

  await ada.typing(runId, false);
  await waitFor(() => shown("otto").length === 0, { message: "stopped" });
  await ada.typing(runId, true);
  await waitFor(() => shown("vic").join() === "Ada", { message: "Vic sees Ada typing" });
  await waitFor(() => shown("vic").length === 0, { message: "the mark lapsed (not renewed)" });
  await ada.typing(runId, true);
  await waitFor(() => shown("otto").join() === "Ada", { message: "typing again" });
  await ada.say(runId, "keep the zip");
  await waitFor(() => shown("otto").length === 0, { message: "she said it" });

  await assert.rejects(vic.typing(runId, true), (e) => e.code === "forbidden");
  await assert.rejects(otto.typing("run_nothere", true), (e) => e.code === "bad_request");
  const log = await fetchLog(server, tok.ada, runId);
  assert.ok(log.every((e) => !e.type.includes("typing")), "never in the log");
  for (const c of [ada, otto, vic]) c.close();
  assert.equal(await ada.typing(runId, true), null); // not connected: nothing sent
});

test("the fold keeps the typing mark of each entry, and typingPeople lists each person once", () => {
  const p = initialPresence();
  const e = (cid, sub, name, typing) => ({ connection_id: cid, sub, name, roles: ["operator"], ...(typing ? { typing: true } : {}) });
  applyPresence(p, { full: true, listed: "all", joined: [e("c1", "ada", "Ada", true), e("c2", "ada", "Ada", true), e("c3", "otto", "Otto", false)], left: [], count: 3, people: 2 });
  assert.deepEqual(typingPeople(p).map((x) => x.name), ["Ada"]);
  assert.deepEqual(typingPeople(p, { except: "ada" }), []);
  applyPresence(p, { full: false, listed: "all", joined: [e("c3", "otto", "Otto", true), e("c1", "ada", "Ada", false)], left: ["c2"], count: 2, people: 2 });
  assert.deepEqual(typingPeople(p).map((x) => x.name), ["Otto"]);
  assert.equal(p.entries.c1.typing, false);
});
