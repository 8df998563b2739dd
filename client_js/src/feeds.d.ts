// Types for src/feeds.js: the approvals inbox and the live run list (README, "The approvals inbox and the live run list").

import type { Person } from "./state.js";

/** One open approval this person may decide, with its run (the `approval.requested` data and more). */
export interface InboxApproval {
  run_id: string;
  approval_id: string;
  call_id: string;
  tool: string;
  /** The tool's description as the agent's code declares it, or null. */
  description: string | null;
  /** JSON text, as the model wrote it. */
  arguments: string;
  agent: string | null;
  policy: { roles: string[]; quorum: number; allow_self: boolean; count_starter?: boolean };
  requested_at: string;
  /** ISO 8601 on the hub's clock, or null. */
  expires_at: string | null;
  tally: { approve: number; reject: number; needed: number };
  votes: { sub: string; name: string; decision: "approve" | "reject"; at: string }[];
  run: { agent: string; input: string; started_by: Person; created_at: string; status: string };
  /** Subs asked to review it (the run's and the policy's). */
  reviewers?: string[];
  /** True when this person was asked to review it (anyone whose role allows still decides). */
  review_requested?: boolean;
}

/** A run in the live list: the HTTP list's summary, with its version. */
export interface RunSummary {
  run_id: string;
  agent: string;
  status: "queued" | "running" | "paused" | "resuming" | "completed" | "failed" | "cancelled";
  input: string;
  started_by: Person;
  created_at: string;
  segment: number;
  /** Rises with every change; a client keeps the highest. */
  version: number;
  updated_at: number;
  /** Open approvals in this run (for anyone). */
  open_approvals: number;
  /** Approvals of this run that were rejected or expired (a completed run with some is not plainly "completed"). */
  rejected_approvals?: number;
}

export type InboxRemovedReason = "approved" | "rejected" | "expired" | "cancelled" | "voted" | "closed";

/** Someone @mentioned this person in a comment (`inbox.mention`, and the snapshot's `mentions`). */
export interface InboxMention {
  mention_id: string;
  sub: string;
  run_id: string;
  comment_id: string;
  thread_id: string;
  /** The approval whose thread it is in, or null (a comment on the run). */
  approval_id: string | null;
  by: Person;
  /** The comment's first 200 characters. */
  excerpt: string;
  at: string;
}

export interface InboxState {
  /** True once the first snapshot arrived (after each reconnect, until the new one arrives, it holds the old set). */
  ready: boolean;
  approvals: Map<string, InboxApproval>;
  /** The mentions of this person the hub node knows of, newest last (not part of the approvals set). */
  mentions: InboxMention[];
}

export interface RunsState {
  ready: boolean;
  /** The runs this list shows (its `limit`): the hub sends changes of these only. */
  runs: Map<string, RunSummary>;
  /** Changes of runs outside the list since its snapshot (a count: subscribe again, or page, to see them). */
  outside: number;
}

export type InboxChange =
  | { type: "snapshot" }
  | { type: "added"; approval: InboxApproval }
  | { type: "removed"; approval: Partial<InboxApproval> & { approval_id: string; run_id: string }; reason: InboxRemovedReason | (string & {}) }
  | { type: "mention"; mention: InboxMention };

/** One hub tick of a run list: the changed runs it shows (or that entered it), the ids that left it, and how many
 * runs outside it changed. */
export type RunsChange = { type: "snapshot" } | { type: "status"; runs: RunSummary[]; left: string[]; outside: number };

export function initialInbox(): InboxState;
export function initialRuns(): RunsState;
export function applyInboxFrame(state: InboxState, frame: any): InboxChange | null;
export function applyRunsFrame(state: RunsState, frame: any): RunsChange | null;
export function inboxList(state: InboxState, runId?: string): InboxApproval[];
export function needsYou(state: InboxState): Map<string, number>;
export function runList(state: RunsState): RunSummary[];
