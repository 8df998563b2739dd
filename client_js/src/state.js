// The state of one run, folded from its events (PROTOCOL.md, "Run events").
//
// `applyEvent(state, event)` is a pure reducer in spirit: the state it builds depends only on the events it was given,
// in order, and never on the clock, the connection or the order of arrival. Two clients that applied the same events
// hold deepEqual states; that is what lets an app render from it without re-implementing the protocol, and what the
// reconnect tests compare. It mutates `state` in place (a streamed message can have thousands of deltas) and returns it.

/** @typedef {import("./state.js").RunState} RunState */
/** @typedef {import("./state.js").RunEvent} RunEvent */
/** @typedef {import("./state.js").User} User */
/** @typedef {import("./state.js").ApprovalState} ApprovalState */

export const TERMINAL = Object.freeze(["completed", "failed", "cancelled"]);

/**
 * An empty run state: what a client knows before the first event.
 * @param {string} runId
 * @returns {RunState}
 */
export function initialRunState(runId) {
  return {
    runId,
    seq: 0,
    status: "unknown",
    agent: null,
    input: null,
    startedBy: null,
    startedAt: null,
    updatedAt: null,
    currentAgent: null,
    segment: 1,
    items: [],
    toolCalls: {},
    approvals: {},
    pending: [],
    output: null,
    usage: null,
    error: null,
    cancelled: null,
    comments: {},
    threads: {},
    turn: 1,
    queue: [],
  };
}

/** The thread a comment event names, made on first sight (a thread on an approval has the approval's id). */
function threadOf(state, d) {
  let t = state.threads[d.thread_id];
  if (!t) t = state.threads[d.thread_id] = { threadId: d.thread_id, approvalId: d.approval_id ?? null, resolved: false, resolvedBy: null, comments: [] };
  return t;
}

function findItem(state, key) {
  for (let i = state.items.length - 1; i >= 0; i--) if (state.items[i].key === key) return state.items[i];
  return null;
}

function textItem(state, kind, id, agent) {
  const key = `${kind === "message" ? "msg" : "rs"}:${id}`;
  let item = findItem(state, key);
  if (!item) {
    item = { kind, key, id, agent: agent ?? state.currentAgent, text: "", done: false };
    state.items.push(item);
  }
  return item;
}

function toolCall(state, callId) {
  let call = state.toolCalls[callId];
  if (!call) {
    call = state.toolCalls[callId] = {
      callId, tool: null, agent: state.currentAgent, arguments: "", status: "preparing",
      output: null, truncated: false, approvalId: null, calledSeq: null, outputSeq: null,
    };
    state.items.push({ kind: "tool", key: `tool:${callId}`, callId });
  }
  return call;
}

function note(state, ev, kind, extra) {
  state.items.push({ kind, key: `ev:${ev.seq}`, seq: ev.seq, ts: ev.ts, ...extra });
}

/**
 * Fold one event into the state. The caller guarantees order (the client applies seq n+1 after n, exactly once).
 * Unknown event types are kept in the transcript as `{kind: "other"}` so nothing a newer hub sends is lost.
 * @param {RunState} state
 * @param {RunEvent} ev
 * @returns {RunState}
 */
export function applyEvent(state, ev) {
  const d = ev.data || {};
  state.seq = ev.seq;
  state.updatedAt = ev.ts ?? state.updatedAt;
  switch (ev.type) {
    case "run.started":
      state.status = "running";
      state.agent = d.agent ?? null;
      state.input = d.input ?? null;
      state.startedBy = d.started_by ?? null;
      state.startedAt = ev.ts ?? null;
      note(state, ev, "started", { agent: d.agent ?? null, input: d.input ?? null, by: d.started_by ?? null });
      break;
    case "agent.updated":
      state.currentAgent = d.agent ?? null;
      break;
    case "message.delta":
      textItem(state, "message", d.item_id).text += d.delta ?? "";
      break;
    case "message.completed": {
      const item = textItem(state, "message", d.item_id, d.agent);
      item.text = d.text ?? item.text;
      if (d.agent) item.agent = d.agent;
      item.done = true;
      break;
    }
    case "reasoning.delta":
      textItem(state, "reasoning", d.item_id).text += d.delta ?? "";
      break;
    case "reasoning.completed": {
      const item = textItem(state, "reasoning", d.item_id);
      if (d.summary != null) item.text = d.summary;
      item.done = true;
      break;
    }
    case "tool.args.delta": {
      const call = toolCall(state, d.call_id);
      if (call.status === "preparing") call.arguments += d.delta ?? "";
      break;
    }
    case "tool.called": {
      const call = toolCall(state, d.call_id);
      call.tool = d.tool ?? call.tool;
      call.arguments = d.arguments ?? call.arguments;
      if (d.agent) call.agent = d.agent;
      if (call.status === "preparing") call.status = "called";
      call.calledSeq = ev.seq;
      break;
    }
    case "tool.output": {
      const call = toolCall(state, d.call_id);
      call.output = d.output ?? null;
      call.truncated = Boolean(d.truncated);
      if (call.status !== "rejected") call.status = "done";
      call.outputSeq = ev.seq;
      break;
    }
    case "handoff.requested": {
      // The model's handoff is a function call whose arguments may have streamed as tool.args.delta: it is a handoff.
      const from = d.from ?? null, to = d.to ?? null;
      if (d.call_id && state.toolCalls[d.call_id] && !state.toolCalls[d.call_id].tool) {
        delete state.toolCalls[d.call_id];
        const item = findItem(state, `tool:${d.call_id}`);
        if (item) {
          delete item.callId;
          Object.assign(item, { kind: "handoff", key: `handoff:${d.call_id}`, from, to, done: false });
        }
      } else {
        state.items.push({ kind: "handoff", key: d.call_id ? `handoff:${d.call_id}` : `ev:${ev.seq}`, from, to, done: false });
      }
      break;
    }
    case "handoff.completed": {
      let item = null;
      for (let i = state.items.length - 1; i >= 0; i--) {
        const it = state.items[i];
        if (it.kind === "handoff" && !it.done && it.from === (d.from ?? null) && it.to === (d.to ?? null)) { item = it; break; }
      }
      if (item) item.done = true;
      else state.items.push({ kind: "handoff", key: `ev:${ev.seq}`, from: d.from ?? null, to: d.to ?? null, done: true });
      break;
    }
    case "approval.requested": {
      const policy = d.policy || { roles: [], quorum: 1, allow_self: true };
      state.approvals[d.approval_id] = {
        approvalId: d.approval_id,
        callId: d.call_id ?? null,
        tool: d.tool ?? null,
        arguments: d.arguments ?? "",
        agent: d.agent ?? null,
        description: d.description ?? null,
        policy: { roles: [...(policy.roles || [])], quorum: policy.quorum ?? 1, allowSelf: policy.allow_self !== false,
          countStarter: policy.count_starter !== false },
        requestedAt: ev.ts ?? null,
        expiresAt: d.expires_at ?? null,
        status: "pending",
        tally: { approve: 0, reject: 0, needed: policy.quorum ?? 1 },
        votes: [],
        decision: null,
      };
      const call = d.call_id ? state.toolCalls[d.call_id] : null;
      if (call) { call.status = "awaiting_approval"; call.approvalId = d.approval_id; }
      state.items.push({ kind: "approval", key: `ap:${d.approval_id}`, approvalId: d.approval_id });
      break;
    }
    case "approval.voted": {
      const ap = state.approvals[d.approval_id];
      if (!ap) break;
      ap.votes.push({ by: d.by ?? null, decision: d.decision, reason: d.reason ?? null, at: ev.ts ?? null, counted: d.counted !== false });
      if (d.tally) ap.tally = { ...d.tally };
      break;
    }
    case "approval.decided": {
      const ap = state.approvals[d.approval_id];
      if (!ap) break;
      const byPolicy = d.by && d.by.policy;
      if (ap.status === "pending") ap.status = byPolicy === "expired" ? "expired" : d.decision === "approve" ? "approved" : "rejected";
      ap.decision = {
        decision: d.decision,
        by: d.by ?? null,
        reason: d.reason ?? null,
        always: Boolean(d.always),
        decidedAt: d.decided_at ?? ev.ts ?? null,
      };
      if (d.original_arguments != null) { // approved with changes: what the tool runs with, and what changed
        ap.decision.changes = d.changes || [];
        ap.approvedArguments = d.arguments ?? null;
      }
      if (d.tally) ap.tally = { ...d.tally };
      if (d.by && d.by.sub) ap.votes.push({ by: { sub: d.by.sub, name: d.by.name }, decision: d.decision, reason: d.reason ?? null, at: d.decided_at ?? ev.ts ?? null });
      const call = ap.callId ? state.toolCalls[ap.callId] : null;
      if (call && call.status === "awaiting_approval") call.status = d.decision === "approve" ? "approved" : "rejected";
      if (call && ap.approvedArguments) call.arguments = ap.approvedArguments;
      break;
    }
    case "approval.expired": {
      const ap = state.approvals[d.approval_id];
      if (ap && ap.status === "pending") ap.status = "expired";
      break;
    }
    case "approval.cancelled": {
      const ap = state.approvals[d.approval_id];
      if (ap && ap.status === "pending") ap.status = "cancelled";
      const call = ap && ap.callId ? state.toolCalls[ap.callId] : null;
      if (call && call.status === "awaiting_approval") call.status = "cancelled";
      break;
    }
    case "run.paused":
      state.status = "paused";
      state.pending = [...(d.pending || [])];
      note(state, ev, "paused", { pending: [...(d.pending || [])] });
      break;
    case "run.resumed":
      state.status = "running";
      state.pending = [];
      if (d.segment) state.segment = d.segment;
      if (d.turn) state.turn = d.turn;
      if (d.messages) state.queue = state.queue.filter((m) => !d.messages.includes(m.messageId)); // this turn took them
      note(state, ev, "resumed", {
        decisions: (d.decisions || []).map((x) => ({ approvalId: x.approval_id, decision: x.decision, by: x.by ?? null })),
        turn: d.turn ?? null, messages: [...(d.messages || [])],
      });
      break;
    case "message.said": {
      const m = { messageId: d.message_id, by: d.by ?? null, text: d.text ?? "", at: d.at ?? ev.ts ?? null };
      if (d.queued) state.queue.push(m);
      note(state, ev, "said", { ...m, queued: !!d.queued, withdrawn: false });
      break;
    }
    case "message.withdrawn": {
      state.queue = state.queue.filter((m) => m.messageId !== d.message_id);
      const said = state.items.find((i) => i.kind === "said" && i.messageId === d.message_id);
      if (said) said.withdrawn = true;
      break;
    }
    case "turn.interrupted":
      note(state, ev, "interrupted", { by: d.by ?? null, turn: d.turn ?? state.turn });
      break;
    case "run.completed":
      state.status = "completed";
      state.output = d.output ?? null;
      state.usage = d.usage ?? null;
      state.pending = [];
      note(state, ev, "completed", { output: d.output ?? null, agent: d.agent ?? state.currentAgent });
      break;
    case "run.failed":
      state.status = "failed";
      state.error = { code: d.code ?? "error", message: d.message ?? "" };
      if (d.guardrail) state.error.guardrail = d.guardrail; // {name, side, output_info}: which guardrail tripped
      if (d.usage) state.usage = d.usage; // the tokens spent before the failure (absent for worker_lost)
      state.pending = [];
      note(state, ev, "failed", { code: d.code ?? "error", message: d.message ?? "" });
      break;
    case "run.cancelled":
      state.status = "cancelled";
      state.cancelled = { by: d.by ?? null, mode: d.mode ?? "immediate" };
      state.pending = [];
      for (const ap of Object.values(state.approvals)) if (ap.status === "pending") ap.status = "cancelled";
      note(state, ev, "cancelled", { by: d.by ?? null, mode: d.mode ?? "immediate" });
      break;
    case "comment.added": {
      // The discussion (never given to the agent): threads of comments, on the run or beside an approval.
      const t = threadOf(state, d);
      state.comments[d.comment_id] = {
        commentId: d.comment_id, threadId: d.thread_id, approvalId: d.approval_id ?? null, replyTo: d.reply_to ?? null,
        by: d.by ?? null, text: d.text ?? "", mentions: d.mentions ?? [], at: ev.ts ?? null, seq: ev.seq,
        edits: 0, editedAt: null, deleted: false, deletedBy: null,
      };
      if (!t.comments.includes(d.comment_id)) t.comments.push(d.comment_id);
      break;
    }
    case "comment.edited": {
      const c = state.comments[d.comment_id];
      if (c) Object.assign(c, { text: d.text ?? c.text, mentions: d.mentions ?? c.mentions, edits: d.edits ?? c.edits + 1, editedAt: ev.ts ?? null });
      break;
    }
    case "comment.deleted": {
      const c = state.comments[d.comment_id];
      if (c) Object.assign(c, { deleted: true, deletedBy: d.by ?? null, text: "" });
      break;
    }
    case "thread.resolved":
    case "thread.reopened": {
      const t = threadOf(state, d);
      t.resolved = ev.type === "thread.resolved";
      t.resolvedBy = t.resolved ? d.by ?? null : null;
      break;
    }
    case "comment.mention":
      break; // the comment.added (or .edited) before it says who was mentioned; this one is for webhooks and inboxes
    case "participant.joined":
    case "participant.left":
      break; // logs written before presence left the log: who watches is the `presence` frame's now
    case "mcp.tools_listed":
      note(state, ev, "mcp", { event: "tools_listed", server: d.server ?? null, tools: d.tools ?? [] });
      break;
    case "mcp.approval.requested":
      note(state, ev, "mcp", { event: "approval_requested", requestId: d.request_id ?? null, server: d.server ?? null, tool: d.tool ?? null, arguments: d.arguments ?? null });
      break;
    case "mcp.approval.responded":
      note(state, ev, "mcp", { event: "approval_responded", requestId: d.request_id ?? null, approved: Boolean(d.approved), reason: d.reason ?? null });
      break;
    default:
      note(state, ev, "other", { type: ev.type, data: d });
  }
  return state;
}

/**
 * Fold a whole log (e.g. from `GET /api/runs/{id}/events`) into a state.
 * @param {string} runId
 * @param {RunEvent[]} events ascending by seq
 * @returns {RunState}
 */
export function foldEvents(runId, events) {
  const state = initialRunState(runId);
  for (const ev of events) applyEvent(state, ev);
  return state;
}

// ---------------------------------------------------------------------------------------------- helpers for UIs

// ---------------------------------------------------------------------------------------------- presence
// Who watches a run is live state, not part of its log: the hub sends `presence` control frames (no seq), the whole
// set when a client subscribes and then what changed, at most every 250 ms. Past a size the hub chooses it lists only
// the people who may decide (`listed: "deciders"`); `count` and `people` always give the totals.

/** @typedef {import("./state.js").Presence} Presence */

/** Nobody, as far as we know yet. @returns {Presence} */
export function initialPresence() {
  return { listed: "all", count: 0, people: 0, entries: {} };
}

/**
 * Apply one `presence` frame (full: replace; else: joined and left) to `presence`, in place.
 * @param {Presence} presence @param {any} frame @returns {Presence}
 */
export function applyPresence(presence, frame) {
  if (frame.full) presence.entries = {};
  for (const cid of frame.left || []) delete presence.entries[cid];
  for (const e of frame.joined || []) {
    presence.entries[e.connection_id] = {
      connectionId: e.connection_id, sub: e.sub, name: e.name ?? e.sub, roles: [...(e.roles || [])], typing: e.typing === true,
    };
  }
  presence.listed = frame.listed === "deciders" ? "deciders" : "all";
  presence.count = typeof frame.count === "number" ? frame.count : Object.keys(presence.entries).length;
  presence.people = typeof frame.people === "number" ? frame.people : new Set(Object.values(presence.entries).map((e) => e.sub)).size;
  return presence;
}

/**
 * The people listed as watching, one entry per user (a user may watch from several tabs), in the order they arrived.
 * @param {Presence} presence
 * @returns {{sub: string, name: string, roles: string[], connections: number}[]}
 */
export function people(presence) {
  const bySub = new Map();
  for (const p of Object.values(presence?.entries || {})) {
    const cur = bySub.get(p.sub);
    if (cur) cur.connections += 1;
    else bySub.set(p.sub, { sub: p.sub, name: p.name, roles: p.roles, connections: 1 });
  }
  return [...bySub.values()];
}

/**
 * Who is typing to the run's agent now (the hub's `typing` mark on presence entries), one entry per person, in the
 * order they arrived; `except` leaves out a person (yourself: "Dana is typing…" is about the others).
 * @param {Presence} presence @param {{except?: string|null}} [opts]
 * @returns {{sub: string, name: string}[]}
 */
export function typingPeople(presence, { except = null } = {}) {
  const bySub = new Map();
  for (const p of Object.values(presence?.entries || {})) {
    if (p.typing && p.sub !== except && !bySub.has(p.sub)) bySub.set(p.sub, { sub: p.sub, name: p.name });
  }
  return [...bySub.values()];
}

/** @param {User|null|undefined} user @param {...string} roles */
export function hasRole(user, ...roles) {
  return Boolean(user && user.roles && (user.roles.includes("admin") || roles.some((r) => user.roles.includes(r))));
}

/**
 * May `user` vote on this approval now? Mirrors the hub's rules (the hub checks again; this only decides which buttons
 * to show): the approval is pending, the user has one of the policy's roles (or admin), has not voted yet, and is not
 * the person who started the run when the policy forbids self-approval.
 * @param {RunState} state @param {ApprovalState} approval @param {User|null|undefined} user
 */
export function canDecide(state, approval, user) {
  if (!user || !approval || approval.status !== "pending") return false;
  if (state.status === "cancelled" || state.status === "completed" || state.status === "failed") return false;
  if (!hasRole(user, ...approval.policy.roles)) return false;
  if (approval.votes.some((v) => v.by && v.by.sub === user.sub)) return false;
  if (!approval.policy.allowSelf && state.startedBy && state.startedBy.sub === user.sub) return false;
  return true;
}

/** May `user` cancel this run now (operator or admin, run not finished)? */
export function canCancel(state, user) {
  return hasRole(user, "operator") && !TERMINAL.includes(state.status) && state.status !== "unknown";
}

/**
 * May `user` talk to this run's agent now (`say`)? The agent's talk policy (GET /api/agents, `talk`) names the roles;
 * the run's starter may too unless it says `starter: false`; admin always. A failed or cancelled run's conversation
 * is over. Whether a busy run takes the message (`enqueue`, `interrupt`) or refuses it (`reject`) is the hub's answer.
 * @param {RunState} state @param {User|null} user @param {{roles?: string[], starter?: boolean}} [talk]
 */
export function canSay(state, user, talk = {}) {
  if (!user || state.status === "unknown" || state.status === "failed" || state.status === "cancelled") return false;
  if (hasRole(user, ...(talk.roles || ["operator"]))) return true;
  return talk.starter !== false && !!state.startedBy && state.startedBy.sub === user.sub;
}

/** May `user` start runs (operator or admin)? */
export function canStart(user) {
  return hasRole(user, "operator");
}

/** Approvals still open, oldest first. @param {RunState} state */
/**
 * A thread's comments in the order they were made (deleted ones stay, marked, so replies keep their place).
 * @param {RunState} state @param {string} threadId @returns {import("./state.js").CommentState[]}
 */
export function threadComments(state, threadId) {
  const t = state.threads[threadId];
  return t ? t.comments.map((id) => state.comments[id]).filter(Boolean) : [];
}

/** The run's threads that are not on an approval, oldest first. @param {RunState} state */
export function runThreads(state) {
  return Object.values(state.threads).filter((t) => t.approvalId === null);
}

export function openApprovals(state) {
  return Object.values(state.approvals).filter((a) => a.status === "pending");
}
