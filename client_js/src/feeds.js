// The two feeds beside the run logs (README, "The approvals inbox and the live run list"), folded as plain code:
// the inbox (every open approval this person may decide) and the live run list. Control frames, no seq: a snapshot
// (`inbox` / `runs`) replaces what a client had, then each change is applied on top. A client that connects again
// subscribes again and gets a new snapshot, so nothing here depends on what came before it.

/** @typedef {import("./feeds.js").InboxState} InboxState */
/** @typedef {import("./feeds.js").RunsState} RunsState */

/** @returns {InboxState} */
export function initialInbox() {
  return { ready: false, approvals: new Map(), mentions: [] };
}

/** @returns {RunsState} */
export function initialRuns() {
  return { ready: false, runs: new Map(), outside: 0 };
}

/**
 * Fold an inbox frame (`inbox`, `inbox.added`, `inbox.removed`) into `state`. Returns the change, or null if the frame
 * is not an inbox frame.
 * @param {InboxState} state @param {any} f
 * `inbox.mention` (someone @mentioned this person in a comment) is a notice beside the approvals, kept newest last.
 * @returns {null | {type: "snapshot"} | {type: "added", approval: any} | {type: "removed", approval: any, reason: string}
 *   | {type: "mention", mention: any}}
 */
export function applyInboxFrame(state, f) {
  switch (f.type) {
    case "inbox":
      state.approvals = new Map((f.approvals || []).map((a) => [a.approval_id, a]));
      state.mentions = [...(f.mentions || [])];
      state.ready = true;
      return { type: "snapshot" };
    case "inbox.added":
      state.approvals.set(f.approval.approval_id, f.approval);
      return { type: "added", approval: f.approval };
    case "inbox.removed": {
      const approval = state.approvals.get(f.approval_id) ?? { approval_id: f.approval_id, run_id: f.run_id };
      state.approvals.delete(f.approval_id);
      return { type: "removed", approval, reason: f.reason ?? "closed" };
    }
    case "inbox.mention":
      if (state.mentions.some((m) => m.mention_id === f.mention.mention_id)) return null;
      state.mentions.push(f.mention);
      if (state.mentions.length > MENTIONS_KEPT) state.mentions.splice(0, state.mentions.length - MENTIONS_KEPT);
      return { type: "mention", mention: f.mention };
    default:
      return null;
  }
}

/** As many mentions as a hub node keeps per person (feed.MENTIONS_PER_PERSON). */
const MENTIONS_KEPT = 50;

/**
 * Fold a run-list frame into `state`. `runs` is the snapshot; `run.status` carries one hub tick of changes: `runs` (the
 * changed runs this list shows, and runs that entered it), `left` (run ids that left it: pushed out by newer runs, or
 * no longer matching its filters) and `outside` (how many runs outside the list changed). A run's summary is replaced
 * only by a higher `version`; `state.outside` counts the changes outside the list since the snapshot.
 * @param {RunsState} state @param {any} f
 * @returns {null | {type: "snapshot"} | {type: "status", runs: any[], left: string[], outside: number}}
 */
export function applyRunsFrame(state, f) {
  if (f.type === "runs") {
    state.runs = new Map((f.runs || []).map((r) => [r.run_id, r]));
    state.outside = 0;
    state.ready = true;
    return { type: "snapshot" };
  }
  if (f.type === "run.status" && Array.isArray(f.runs)) {
    const runs = [];
    for (const run of f.runs) {
      const cur = state.runs.get(run.run_id);
      if (cur && (cur.version ?? -1) >= (run.version ?? 0)) continue;
      state.runs.set(run.run_id, run);
      runs.push(run);
    }
    const left = (f.left || []).filter((id) => state.runs.delete(id));
    const outside = Number(f.outside) || 0;
    state.outside = (state.outside || 0) + outside;
    if (!runs.length && !left.length && !outside) return null;
    return { type: "status", runs, left, outside };
  }
  return null;
}

/** The inbox's approvals, oldest request first (optionally of one run). @param {InboxState} state @param {string} [runId] */
export function inboxList(state, runId) {
  const all = [...state.approvals.values()].filter((a) => runId === undefined || a.run_id === runId);
  return all.sort((a, b) => String(a.requested_at ?? "").localeCompare(String(b.requested_at ?? "")) || a.approval_id.localeCompare(b.approval_id));
}

/** How many approvals wait for this person, per run id. @param {InboxState} state @returns {Map<string, number>} */
export function needsYou(state) {
  const out = new Map();
  for (const a of state.approvals.values()) out.set(a.run_id, (out.get(a.run_id) || 0) + 1);
  return out;
}

/** The runs, newest first. @param {RunsState} state */
export function runList(state) {
  return [...state.runs.values()].sort((a, b) => String(b.created_at ?? "").localeCompare(String(a.created_at ?? "")) || String(b.run_id).localeCompare(String(a.run_id)));
}
