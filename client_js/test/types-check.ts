// Never run, only type-checked (`npm run test:types`, tsc --noEmit): the package's declarations as an app uses them,
// through the package's own entry points ("@runcast/client" and "@runcast/client/state", resolved by its exports).
// Each `@ts-expect-error` is a promise that the declarations refuse something; tsc fails if it is accepted.

import {
  RuncastClient, RuncastError, Subscription, VERSION, SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK,
  TERMINAL, applyEvent, canCancel, canDecide, canSay, canStart, foldEvents, hasRole, initialRunState, openApprovals, people,
  initialPresence, applyPresence,
} from "@runcast/client";
import type {
  Ack, ApprovalState, ClientOptions, ClientStatus, ErrorCode, MsgpackCodec, Presence, PresenceFrame, RunEvent, RunHandlers,
  RunState, SyncFrame, TranscriptItem, User, Welcome,
} from "@runcast/client";
import * as state from "@runcast/client/state";
import type { RunState as StateRunState, User as StateUser } from "@runcast/client/state";
// @ts-expect-error: the state entry point is the fold and its helpers only, not the client
import { RuncastClient as NotInState } from "@runcast/client/state";
// @ts-expect-error: nor the client's constants
import { VERSION as NotInStateEither } from "@runcast/client/state";

const versions: string[] = [VERSION, SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK];

// ------------------------------------------------------------------------------------------------ a client

const options: ClientOptions = {
  url: "wss://hub.example/ws",
  token: async () => "a.jwt.token",
  encoding: "msgpack",
  msgpack: () => import("@msgpack/msgpack"),
  reconnect: { initialMs: 250, maxMs: 10_000, factor: 2, jitter: 0.5 },
  commandTimeoutMs: 15_000,
  batch: true,
};
const codec: MsgpackCodec = { encode: () => new Uint8Array(), decode: () => null };
const batchingCodec: MsgpackCodec = { encode: () => new Uint8Array(), decode: () => null, decodeMulti: () => [null] };
const batching: boolean = new RuncastClient({ ...options, msgpack: batchingCodec, batch: false }).batch;
const client = new RuncastClient({ ...options, msgpack: codec });
// @ts-expect-error: no such encoding
new RuncastClient({ encoding: "cbor" });

client.on("status", (s: ClientStatus) => s === "reconnecting");
client.on("reconnect", ({ attempt, delayMs, code }) => attempt + delayMs + code);
client.on("error", (err) => {
  const code: ErrorCode | string = err.code;
  if (err.code === "unauthenticated" || err.code === "codec_unavailable" || err.code === "token_error") return code;
  return err.frame;
});

async function app(runId: string): Promise<void> {
  const welcome: Welcome = await client.connect();
  const me: User = welcome.user;
  const handlers: RunHandlers = {
    onEvent(ev: RunEvent, s: RunState) { console.log(ev.seq, ev.type, s.status); },
    onSync(s: RunState, frame: SyncFrame) { console.log(frame.head_seq === s.seq); },
    onError(err: RuncastError) { console.log(err.code, err.message); },
    onReset(s: RunState) { console.log(s.items.length); },
  };
  const sub: Subscription = client.subscribe(runId, handlers);
  for (const ap of openApprovals(sub.state)) {
    if (!canDecide(sub.state, ap, me)) continue;
    client.decide(runId, ap.approvalId, "approve", "looks right", { always: false })
      .then((ack: Ack) => ack.outcome === "decided" || ack.outcome === "voted")
      .catch((err: RuncastError) => err.code === "already_decided");
  }
  // @ts-expect-error: a decision is "approve" or "reject"
  client.decide(runId, "ap_1", "maybe");
  if (canCancel(sub.state, client.user)) await client.cancel(runId, "after_turn");
  if (canStart(client.user)) {
    const started: string = await client.start("demo", "free some space");
    client.getState(started)?.approvals;
  }
  if (canSay(sub.state, client.user, { roles: ["operator"], starter: true })) {
    const said = await client.say(runId, "and the logs?");
    if (said.queued) await client.withdraw(runId, said.message_id);
    const queue: string[] = sub.state.queue.map((m) => `${m.by?.name}: ${m.text}`);
    const again: string = await client.rerun(runId);
    console.log(queue, again, sub.state.turn);
  }
  console.log(sub.lastSeq, sub.synced, sub.stats.duplicates, sub.stats.resubscribes, client.connectionId, client.attempt);
  sub.unsubscribe();
  client.close();
}

// ------------------------------------------------------------------------------------------------ the fold

function render(s: RunState): string[] {
  return s.items.map((it: TranscriptItem) => {
    switch (it.kind) {
      case "message": case "reasoning": return `${it.agent ?? "agent"}: ${it.text}`;
      case "tool": return `${s.toolCalls[it.callId].tool} (${s.toolCalls[it.callId].status})`;
      case "approval": {
        const ap: ApprovalState = s.approvals[it.approvalId];
        return `${ap.tool}: ${ap.status}, ${ap.tally.approve}/${ap.tally.needed}, expires ${ap.expiresAt ?? "never"}`;
      }
      case "handoff": return `${it.from} → ${it.to}`;
      default: return it.key;
    }
  });
}

const events: RunEvent[] = [{ run_id: "run_1", seq: 1, ts: "2026-01-01T00:00:00Z", type: "run.started", data: { agent: "demo" } }];
const folded: RunState = foldEvents("run_1", events);
const same: StateRunState = state.foldEvents("run_1", events);
applyEvent(initialRunState("run_1"), events[0]);
state.applyEvent(state.initialRunState("run_1"), events[0]);
const frame: PresenceFrame = { type: "presence", run_id: "run_1", full: true, listed: "all", joined: [], left: [], count: 0, people: 0 };
const watching: Presence = applyPresence(initialPresence(), frame);
const watchers: number = people(watching).length + state.people(state.applyPresence(state.initialPresence(), frame)).length
  + watching.count + watching.people;
// @ts-expect-error: who watches is not part of the folded run state
people(folded);
const admin: StateUser = { sub: "root", name: "Root", roles: ["admin"] };
const checks: boolean[] = [hasRole(admin, "operator"), state.canStart(admin), state.canCancel(same, admin),
  state.canDecide(same, state.openApprovals(same)[0], admin), TERMINAL.includes("completed"), state.TERMINAL.length === 3];
// @ts-expect-error: the fold is read-only in its terminal list
TERMINAL.push("paused");

export { app, render, versions, watchers, checks, NotInState, NotInStateEither };

// ------------------------------------------------------------------------------------------------ the two feeds

import { Feed, applyInboxFrame, applyRunsFrame, inboxList, initialInbox, initialRuns, needsYou, runList } from "@runcast/client";
import type { InboxApproval, InboxChange, InboxState, RunSummary, RunsChange, RunsState } from "@runcast/client";

const inboxFeed: Feed = client.subscribeInbox({
  onChange(s: InboxState, change: InboxChange) {
    if (change.type === "added") console.log(change.approval.tool, change.approval.run.started_by.name, change.approval.description);
    if (change.type === "removed") console.log(change.reason, change.approval.approval_id);
    const waiting: InboxApproval[] = inboxList(s);
    const perRun: Map<string, number> = needsYou(s);
    console.log(waiting.length, perRun.size);
  },
});
client.subscribeRuns({ onChange(s: RunsState, change: RunsChange) { if (change.type === "status") console.log(change.runs.map((r) => r.version), change.left, change.outside, s.outside); } }, { limit: 20 });
const newest: RunSummary[] = runList(client.runList);
applyInboxFrame(initialInbox(), { type: "inbox", approvals: [] });
applyRunsFrame(initialRuns(), { type: "runs", runs: [] });
inboxFeed.unsubscribe();
console.log(newest, client.inbox.ready);
// the run list takes a limit and filters; a filter is text
client.subscribeRuns({}, { status: "paused", agent: "demo", started_by: "ada", q: "disk space" });
client.setRunsFilter({ q: "disk" });
const inEffect: string | undefined = client.runsFilter.q;
// @ts-expect-error: a filter the hub does not know
client.setRunsFilter({ colour: "red" });
const hubTime: number = client.hubNow() + client.hubOffsetMs;
console.log(inEffect, hubTime);
// @ts-expect-error: the offset is the client's to keep
client.hubOffsetMs = 5;

// ------------------------------------------------------------------------------------------------ comments

import { runThreads, threadComments } from "@runcast/client";
import type { CommentState, InboxMention, ThreadState } from "@runcast/client";

client.comment("run_1", "@MariaLopez this one is yours", { approvalId: "ap_1" })
  .then((ack) => client.editComment("run_1", ack.comment_id, "edited").then((e) => e.edits))
  .catch((err: RuncastError) => err.code === "rate_limited");
client.resolveThread("run_1", "ap_1", false).then((a) => a.changed);
client.deleteComment("run_1", "c_1");
client.people("run_1").then((ps) => ps.map((p) => p.handle));
const threads: ThreadState[] = runThreads(initialRunState("run_1"));
const thread: CommentState[] = threadComments(initialRunState("run_1"), "ap_1");
const mentions: InboxMention[] = client.inbox.mentions;
console.log(threads, thread.map((c) => c.by?.name), mentions.map((m) => m.excerpt));
// @ts-expect-error: a comment's options name an approval, not a tool
client.comment("run_1", "hi", { tool: "delete_files" });
client.start("demo", "tidy", { reviewers: ["alice"] }).then((id: string) => id);

// ------------------------------------------------------------------------------------------------ who is typing

import { typingPeople } from "@runcast/client";

client.typing("run_1", true).then((ack) => ack?.typing === true);
const typingNow: { sub: string; name: string }[] = typingPeople(watching, { except: client.user?.sub });
const marked: boolean = Object.values(watching.entries).some((p) => p.typing);
const typed: PresenceFrame = { ...frame, joined: [{ connection_id: "c_1", sub: "ada", name: "Ada", roles: [], typing: true }] };
// @ts-expect-error: typing is a boolean, not a string
client.typing("run_1", "yes");
console.log(typingNow.map((p) => p.name), marked, typed);
