// Batched frames: the client asks for them in hello (unless `batch: false`, or a msgpack codec without decodeMulti),
// reads several events from one frame (JSON lines; a msgpack sequence) as if they had come one by one, and against a
// real hub gets every seq once and in order, in both encodings.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import WebSocket from "ws";
import * as msgpack from "@msgpack/msgpack";

import { RuncastClient } from "../src/runcast.js";
import { assertGapFree, fetchLog, startServer, waitFor } from "./helpers.mjs";

/** A socket that answers hello with welcome, and lets the test push raw frames. */
function fakeSocket(encoding) {
  const sockets = [];
  class FakeWebSocket {
    constructor(url, protocols) {
      this.protocol = protocols[0];
      this.readyState = 0;
      this.sent = [];
      sockets.push(this);
      setTimeout(() => { this.readyState = 1; this.onopen?.({}); }, 1);
    }
    send(data) {
      const f = encoding === "msgpack" ? msgpack.decode(data) : JSON.parse(data);
      this.sent.push(f);
      if (f.type === "hello") this.push([{ type: "welcome", connection_id: "c", user: { sub: "u", name: "U", roles: [] }, server: "fake", heartbeat_s: 20, batch: f.batch }]);
      if (f.type === "subscribe") this.push([{ type: "sync", run_id: f.run_id, head_seq: 0, status: "running" }]);
    }
    /** Several frames in one WebSocket message, as a batching hub sends them. */
    push(frames) {
      const data = encoding === "msgpack"
        ? Buffer.concat(frames.map((f) => Buffer.from(msgpack.encode(f)))) // a msgpack sequence
        : frames.map((f) => JSON.stringify(f)).join("\n");
      this.onmessage?.({ data: encoding === "msgpack" ? new Uint8Array(data).buffer : data });
    }
    close() { this.readyState = 3; }
  }
  return { FakeWebSocket, sockets };
}

const ev = (seq) => ({ run_id: "run_1", seq, ts: "2026-01-01T00:00:00.000Z", type: "message.delta", data: { item_id: "m", delta: `w${seq} ` } });

describe("batched frames", () => {
  for (const encoding of ["json", "msgpack"]) {
    test(`a ${encoding} frame with several events is applied event by event`, async () => {
      const { FakeWebSocket, sockets } = fakeSocket(encoding);
      const c = new RuncastClient({ url: "ws://fake/ws", token: "t", WebSocket: FakeWebSocket, encoding, reconnect: false });
      const welcome = await c.connect();
      assert.equal(sockets[0].sent[0].batch, true, "hello asks for batches");
      assert.equal(welcome.batch, true);
      const seen = [];
      c.subscribe("run_1", { onEvent: (e) => seen.push(e.seq) });
      await waitFor(() => c._runs.get("run_1").synced);
      sockets[0].push([ev(1), ev(2), ev(3)]);
      sockets[0].push([ev(3), ev(4)]); // a repeat inside a batch is dropped like any other
      sockets[0].push([ev(5)]);
      assert.deepEqual(seen, [1, 2, 3, 4, 5]);
      assert.equal(c.getState("run_1").items.at(-1).text, "w1 w2 w3 w4 w5 ");
      c.close();
    });
  }

  test("no batches asked for with batch: false, or a msgpack codec that cannot read a sequence", async () => {
    let f = fakeSocket("json");
    let c = new RuncastClient({ url: "ws://fake/ws", token: "t", WebSocket: f.FakeWebSocket, batch: false, reconnect: false });
    await c.connect();
    assert.equal(f.sockets[0].sent[0].batch, undefined);
    c.close();
    f = fakeSocket("msgpack");
    c = new RuncastClient({ url: "ws://fake/ws", token: "t", WebSocket: f.FakeWebSocket, encoding: "msgpack", reconnect: false,
      msgpack: { encode: msgpack.encode, decode: msgpack.decode } });
    await c.connect();
    assert.equal(f.sockets[0].sent[0].batch, undefined);
    c.close();
  });
});

describe("batched frames against a real hub", () => {
  let server;
  before(async () => { server = await startServer({ delay: "0.005", env: { RUNCAST_COALESCE_S: "0" } }); });
  after(async () => { await server?.stop(); });

  for (const encoding of ["json", "msgpack"]) {
    test(`a late joiner's replay comes batched (${encoding}); every seq once, in order, equal to the log`, async () => {
      const alice = server.token("alice", "Alice", ["operator", "approver"]);
      const starter = new RuncastClient({ url: server.ws, token: alice, WebSocket, reconnect: false });
      await starter.connect();
      const runId = await starter.start("demo", "Please free some disk space.");
      const first = [];
      starter.subscribe(runId, { onEvent: (e) => first.push(e) });
      await waitFor(() => first.some((e) => e.type === "run.paused"), { message: "the pause" });

      const frames = [];
      class CountingWebSocket extends WebSocket {
        constructor(...a) { super(...a); this.on("message", () => frames.push(1)); }
      }
      const late = new RuncastClient({ url: server.ws, token: alice, WebSocket: CountingWebSocket, encoding, reconnect: false });
      const welcome = await late.connect();
      assert.equal(welcome.batch, true);
      const seen = [];
      const sub = late.subscribe(runId, { onEvent: (e) => seen.push(e) });
      await waitFor(() => sub.synced, { message: "the replay" });
      assertGapFree(assert, seen.map((e) => e.seq));
      const log = await fetchLog(server, alice, runId);
      assert.deepEqual(seen, log.slice(0, seen.length));
      assert.ok(frames.length < seen.length / 4, `${seen.length} events came in ${frames.length} frames`);
      starter.close();
      late.close();
    });
  }
});
