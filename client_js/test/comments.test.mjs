// Comments (README, "Comments"): the fold of the discussion events into threads, and the inbox's mentions.

import assert from "node:assert/strict";
import { test } from "node:test";

import { foldEvents, runThreads, threadComments } from "../src/state.js";
import { applyInboxFrame, initialInbox } from "../src/feeds.js";

let seq = 0;
const ev = (type, data = {}) => ({ run_id: "r", seq: ++seq, ts: `2026-01-01T00:00:${String(seq).padStart(2, "0")}.000Z`, type, data });
const vic = { sub: "vic", name: "Vic" };
const bob = { sub: "bob", name: "Bob" };

test("threads on an approval and on the run; edits, deletes, resolve and reopen", () => {
  seq = 0;
  const s = foldEvents("r", [
    ev("run.started", { agent: "demo", input: "x", started_by: bob }),
    ev("comment.added", { comment_id: "c1", thread_id: "ap1", approval_id: "ap1", reply_to: null, by: vic, text: "still used?", mentions: [] }),
    ev("comment.added", { comment_id: "c2", thread_id: "ap1", approval_id: "ap1", reply_to: "c1", by: bob, text: "no, @vic", mentions: [vic] }),
    ev("comment.mention", { comment_id: "c2", thread_id: "ap1", approval_id: "ap1", by: bob, mentioned: vic, text: "no, @vic" }),
    ev("comment.added", { comment_id: "c3", thread_id: "c3", approval_id: null, reply_to: null, by: vic, text: "run note", mentions: [] }),
    ev("comment.edited", { comment_id: "c1", thread_id: "ap1", approval_id: "ap1", by: vic, text: "still used by CI?", mentions: [], edits: 1 }),
    ev("comment.deleted", { comment_id: "c3", thread_id: "c3", approval_id: null, by: vic }),
    ev("thread.resolved", { thread_id: "ap1", approval_id: "ap1", by: bob }),
  ]);
  assert.deepEqual(threadComments(s, "ap1").map((c) => [c.commentId, c.by.sub, c.text, c.edits]),
    [["c1", "vic", "still used by CI?", 1], ["c2", "bob", "no, @vic", 0]]);
  assert.equal(s.comments.c2.replyTo, "c1");
  assert.deepEqual(s.comments.c2.mentions, [vic]);
  assert.equal(s.threads.ap1.resolved, true);
  assert.deepEqual(s.threads.ap1.resolvedBy, bob);
  assert.deepEqual(runThreads(s).map((t) => t.threadId), ["c3"]);
  assert.equal(s.comments.c3.deleted, true);
  assert.equal(s.comments.c3.text, "");
  // no transcript item for the discussion: the agent's transcript stays the agent's
  assert.deepEqual(s.items.map((i) => i.kind), ["started"]);
});

test("the inbox keeps mentions beside the approvals, once each", () => {
  const st = initialInbox();
  const m = { mention_id: "c2:vic:0", sub: "vic", run_id: "r", comment_id: "c2", thread_id: "ap1", approval_id: "ap1", by: bob, excerpt: "no, @vic", at: "t" };
  assert.deepEqual(applyInboxFrame(st, { type: "inbox", approvals: [] }), { type: "snapshot" });
  assert.deepEqual(st.mentions, []);
  assert.deepEqual(applyInboxFrame(st, { type: "inbox.mention", mention: m }), { type: "mention", mention: m });
  assert.equal(applyInboxFrame(st, { type: "inbox.mention", mention: m }), null);
  assert.equal(st.approvals.size, 0);
  applyInboxFrame(st, { type: "inbox", approvals: [], mentions: [m] });
  assert.deepEqual(st.mentions, [m]);
});
