// Conversations (README, "Conversations"): say, the queue, withdraw, rerun, against a real `runcast serve`, and the
// fold of their events.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import WebSocket from "ws";

import { RuncastClient, canSay, foldEvents } from "../src/runcast.js";
import { startServer, waitFor } from "./helpers.mjs";

let server;
const tok = {};

before(async () => {
  server = await startServer({ delay: "0.01" });
  tok.ada = server.token("ada", "Ada", ["operator"]);
  tok.bob = server.token("bob", "Bob", ["approver"]);
  tok.vic = server.token("vic", "Vic", ["viewer"]);
});

after(async () => {
  await server?.stop();
});

const client = (token) => new RuncastClient({ url: server.ws, token, WebSocket });

test("two people in one conversation: the queue while paused, withdraw, the next turns, rerun", async () => {
  const ada = client(tok.ada);
  const bob = client(tok.bob);
  await Promise.all([ada.connect(), bob.connect()]);
  const runId = await ada.start("demo", "tidy up");
  ada.subscribe(runId);
  bob.subscribe(runId);
  const paused = await waitFor(() => ada.getState(runId)?.status === "paused" && ada.getState(runId));
  const ap = Object.values(paused.approvals)[0];
  const keep = await ada.say(runId, "keep the zip");
  assert.equal(keep.queued, true);
  const oops = await ada.say(runId, "oops");
  await waitFor(() => bob.getState(runId).queue.length === 2, { message: "both queued at Bob's" });
  assert.deepEqual(bob.getState(runId).queue.map((m) => [m.by.name, m.text]), [["Ada", "keep the zip"], ["Ada", "oops"]]);
  await assert.rejects(bob.withdraw(runId, oops.message_id), (e) => e.code === "forbidden");
  await ada.withdraw(runId, oops.message_id);
  await waitFor(() => bob.getState(runId).queue.length === 1, { message: "withdrawn at Bob's" });
  assert.equal(canSay(bob.getState(runId), bob.user), false); // an approver who did not start it
  await assert.rejects(bob.say(runId, "hi"), (e) => e.code === "forbidden");
  await bob.decide(runId, ap.approvalId, "approve");
  const done = await waitFor(() => {
    const s = bob.getState(runId);
    return s.status === "completed" && s.turn === 2 && s;
  }, { timeout: 30_000, message: "turn 2 completed" });
  assert.deepEqual(done.queue, []);
  assert.match(done.output, /^Ada, you said: "keep the zip"\./);
  const said = done.items.filter((i) => i.kind === "said").map((i) => [i.text, i.queued, i.withdrawn]);
  assert.deepEqual(said, [["keep the zip", true, false], ["oops", true, true]]);
  assert.deepEqual(done.items.filter((i) => i.kind === "resumed").map((i) => [i.turn, i.messages]),
    [[null, []], [2, [keep.message_id]]]);
  assert.equal(canSay(done, ada.user), true);
  const after = await ada.say(runId, "thanks");
  assert.equal(after.queued, false);
  await waitFor(() => ada.getState(runId).turn === 3 && ada.getState(runId).status === "completed", { timeout: 30_000 });
  const again = await ada.rerun(runId);
  assert.notEqual(again, runId);
  const vic = client(tok.vic);
  await vic.connect();
  await assert.rejects(vic.say(runId, "me too"), (e) => e.code === "forbidden");
  for (const c of [ada, bob, vic]) c.close();
});

test("the fold: said, queued, taken by a turn, interrupted", () => {
  let seq = 0;
  const ev = (type, data = {}) => ({ run_id: "r", seq: ++seq, ts: "2026-01-01T00:00:00.000Z", type, data });
  const ada = { sub: "ada", name: "Ada" };
  const s = foldEvents("r", [
    ev("run.started", { agent: "demo", input: "hi", started_by: ada }),
    ev("message.said", { message_id: "m1", by: ada, text: "more", at: "t", queued: true }),
    ev("turn.interrupted", { by: ada, segment: 1, turn: 1 }),
    ev("run.resumed", { decisions: [], segment: 2, turn: 2, messages: ["m1"] }),
  ]);
  assert.equal(s.turn, 2);
  assert.deepEqual(s.queue, []);
  assert.deepEqual(s.items.map((i) => i.kind), ["started", "said", "interrupted", "resumed"]);
  assert.equal(canSay(s, { sub: "ada", name: "Ada", roles: ["viewer"] }), true); // the starter
  assert.equal(canSay(s, { sub: "vic", name: "Vic", roles: ["viewer"] }), false);
  assert.equal(canSay(s, { sub: "vic", name: "Vic", roles: ["viewer"] }, { roles: ["viewer"] }), true);
});

test("approve with changes: the schema's refusal, then the edited call runs", async () => {
  const ada = client(tok.ada);
  const bob = client(tok.bob);
  await Promise.all([ada.connect(), bob.connect()]);
  const runId = await ada.start("demo", "tidy up");
  bob.subscribe(runId);
  const paused = await waitFor(() => bob.getState(runId)?.status === "paused" && bob.getState(runId));
  const ap = Object.values(paused.approvals)[0];
  await assert.rejects(bob.decide(runId, ap.approvalId, "approve", undefined, { arguments: { paths: "x" } }),
    (e) => e.code === "invalid_arguments" && /paths/.test(e.message));
  await bob.decide(runId, ap.approvalId, "approve", "only the csv", { arguments: { paths: ["scratch/tmp-export.csv"] } });
  const done = await waitFor(() => bob.getState(runId).status === "completed" && bob.getState(runId), { timeout: 30_000 });
  const decided = done.approvals[ap.approvalId];
  assert.equal(decided.approvedArguments, '{"paths":["scratch/tmp-export.csv"]}');
  assert.equal(decided.arguments, ap.arguments); // the model's, kept
  assert.deepEqual(decided.decision.changes.map((c) => c.key), ["paths"]);
  assert.equal(done.toolCalls[decided.callId].arguments, decided.approvedArguments);
  assert.match(done.output, /^Done\. I deleted 1 files: scratch\/tmp-export\.csv\./);
  for (const c of [ada, bob]) c.close();
});
