// Types for @runcast/client/state (src/state.js): the state of a run folded from its events, and the helpers a UI
// uses to decide what to show. Hand-written; the JS needs no build step. src/runcast.d.ts re-exports all of it.

export const TERMINAL: readonly ["completed", "failed", "cancelled"];

export interface User {
  sub: string;
  name: string;
  roles: string[];
}

/** A run event as it comes off the wire (PROTOCOL.md, "Run events"). */
export interface RunEvent {
  run_id: string;
  seq: number;
  ts: string;
  type: string;
  data: Record<string, any>;
}

export type RunStatus = "unknown" | "running" | "paused" | "completed" | "failed" | "cancelled";

export interface Person {
  sub: string;
  name: string;
}

export interface Vote {
  by: Person | null;
  decision: "approve" | "reject";
  reason: string | null;
  at: string | null;
  /** false: the run's starter, under a policy whose count_starter is false (not counted towards the quorum). */
  counted?: boolean;
}

/** One comment (comment.added, then .edited / .deleted). Never seen by the agent. */
export interface CommentState {
  commentId: string;
  threadId: string;
  approvalId: string | null;
  replyTo: string | null;
  by: Person | null;
  /** "" once deleted (the log keeps the comment.added that had it). */
  text: string;
  mentions: Person[];
  at: string | null;
  seq: number;
  edits: number;
  editedAt: string | null;
  deleted: boolean;
  deletedBy: Person | null;
}

/** A thread: on an approval (its id is the approval's) or on the run (its id is its first comment's). */
export interface ThreadState {
  threadId: string;
  approvalId: string | null;
  resolved: boolean;
  resolvedBy: Person | null;
  comments: string[];
}

export interface ApprovalState {
  approvalId: string;
  callId: string | null;
  tool: string | null;
  /** JSON text, as the model wrote it. */
  arguments: string;
  agent: string | null;
  /** The tool's description as the agent's code declares it (null from an older hub, or none declared). */
  description: string | null;
  /** countStarter: whether the run's starter's approval counts towards the quorum. */
  policy: { roles: string[]; quorum: number; allowSelf: boolean; countStarter: boolean };
  requestedAt: string | null;
  /** ISO 8601, the hub's clock; null when it never expires. */
  expiresAt: string | null;
  status: "pending" | "approved" | "rejected" | "expired" | "cancelled";
  tally: { approve: number; reject: number; needed: number };
  votes: Vote[];
  decision: {
    decision: "approve" | "reject";
    /** a person, or {policy: "expired"} */
    by: (Person & { policy?: undefined }) | { policy: string } | null;
    reason: string | null;
    always: boolean;
    decidedAt: string | null;
    /** Approved with changes: [{key, from, to}]; null when approved (or rejected) as the model wrote it. */
    changes?: { key: string; from: unknown; to: unknown }[] | null;
  } | null;
  /** Approved with changes: the arguments the tool runs with (JSON text); `arguments` stays the model's. */
  approvedArguments?: string | null;
}

export interface ToolCallState {
  callId: string;
  tool: string | null;
  agent: string | null;
  arguments: string;
  status: "preparing" | "called" | "awaiting_approval" | "approved" | "rejected" | "cancelled" | "done";
  output: string | null;
  truncated: boolean;
  approvalId: string | null;
  calledSeq: number | null;
  outputSeq: number | null;
}

/** One connection watching a run (a `presence` frame's entry). */
export interface Participant {
  connectionId: string;
  sub: string;
  name: string;
  roles: string[];
  /** The person is typing to the run's agent now (the `typing` command; it lapses by itself). */
  typing: boolean;
}

/** Who watches a run now, from the hub's `presence` frames (live state, not in the run's log). */
export interface Presence {
  /** "all": every connection is in `entries`; "deciders": past the hub's limit, only people who may decide are. */
  listed: "all" | "deciders";
  /** Connections watching, listed or not. */
  count: number;
  /** Distinct people watching, listed or not. */
  people: number;
  /** By connection id: one person may watch from several connections. */
  entries: Record<string, Participant>;
}

/** A `presence` control frame (no seq, never replayed). */
export interface PresenceFrame {
  type: "presence";
  run_id: string;
  full: boolean;
  listed: "all" | "deciders";
  joined: { connection_id: string; sub: string; name: string; roles: string[]; typing?: true }[];
  left: string[];
  count: number;
  people: number;
}

/** One entry of the transcript, in the order it happened. `key` is stable: use it to key DOM nodes. */
export type TranscriptItem =
  | { kind: "message"; key: string; id: string; agent: string | null; text: string; done: boolean }
  | { kind: "reasoning"; key: string; id: string; agent: string | null; text: string; done: boolean }
  | { kind: "tool"; key: string; callId: string }
  | { kind: "handoff"; key: string; from: string | null; to: string | null; done: boolean }
  | { kind: "approval"; key: string; approvalId: string }
  | { kind: "started"; key: string; seq: number; ts: string; agent: string | null; input: string | null; by: Person | null }
  | { kind: "paused"; key: string; seq: number; ts: string; pending: string[] }
  | { kind: "resumed"; key: string; seq: number; ts: string; decisions: { approvalId: string; decision: string; by: any }[];
      /** a conversation's next turn (README, "Conversations"): its number and the messages it answers */
      turn: number | null; messages: string[] }
  | { kind: "said"; key: string; seq: number; ts: string; messageId: string; by: Person | null; text: string; at: string | null;
      /** said while the agent was busy; `withdrawn` once its author took it back */
      queued: boolean; withdrawn: boolean }
  | { kind: "interrupted"; key: string; seq: number; ts: string; by: Person | null; turn: number }
  | { kind: "completed"; key: string; seq: number; ts: string; output: any; agent: string | null }
  | { kind: "failed"; key: string; seq: number; ts: string; code: string; message: string }
  | { kind: "cancelled"; key: string; seq: number; ts: string; by: Person | null; mode: string }
  | { kind: "mcp"; key: string; seq: number; ts: string; event: string; [key: string]: any }
  | { kind: "other"; key: string; seq: number; ts: string; type: string; data: Record<string, any> };

/** The state of one run, folded from its events only: equal events give deepEqual states. */
export interface RunState {
  runId: string;
  /** The last seq applied. */
  seq: number;
  status: RunStatus;
  /** The registered agent name the run was started with. */
  agent: string | null;
  input: string | null;
  startedBy: Person | null;
  startedAt: string | null;
  updatedAt: string | null;
  /** The SDK agent speaking now (changes on handoffs). */
  currentAgent: string | null;
  segment: number;
  items: TranscriptItem[];
  toolCalls: Record<string, ToolCallState>;
  approvals: Record<string, ApprovalState>;
  /** Approval ids of the current pause. */
  pending: string[];
  output: any;
  /** The SDK's usage total (`requests`, `input_tokens`, `output_tokens`, `total_tokens`, and `cached_tokens` /
   * `reasoning_tokens` when not 0): from `run.completed`, or from `run.failed` (spent before the failure). */
  usage: Record<string, number> | null;
  /** `message`: the failure's cause chain in one line, secrets redacted. `guardrail`: the guardrail whose tripwire failed the run (`side`: input, output, tool_input or tool_output). */
  error: { code: string; message: string; guardrail?: { name: string; side: string; output_info: any; truncated?: boolean } } | null;
  cancelled: { by: Person | null; mode: string } | null;
  /** The discussion: comments by id, threads by id. */
  comments: Record<string, CommentState>;
  threads: Record<string, ThreadState>;
  /** The conversation's turn: 1 answers the input, each later one the messages it took. */
  turn: number;
  /** Messages said while the agent was busy, waiting for the next turn, oldest first. */
  queue: QueuedMessage[];
}

export interface QueuedMessage {
  messageId: string;
  by: Person | null;
  text: string;
  at: string | null;
}

export function initialRunState(runId: string): RunState;
export function applyEvent(state: RunState, event: RunEvent): RunState;
export function foldEvents(runId: string, events: RunEvent[]): RunState;
export function initialPresence(): Presence;
export function applyPresence(presence: Presence, frame: PresenceFrame): Presence;
export function people(presence: Presence): { sub: string; name: string; roles: string[]; connections: number }[];
/** Who is typing to the run's agent now, one entry per person; `except`: a sub to leave out (yourself). */
export function typingPeople(presence: Presence, opts?: { except?: string | null }): { sub: string; name: string }[];
export function hasRole(user: User | null | undefined, ...roles: string[]): boolean;
export function canDecide(state: RunState, approval: ApprovalState, user: User | null | undefined): boolean;
export function canCancel(state: RunState, user: User | null | undefined): boolean;
export function canStart(user: User | null | undefined): boolean;
/** May `user` talk to the run's agent now (the agent's `talk` policy from GET /api/agents; default operators and the starter)? */
export function canSay(state: RunState, user: User | null | undefined, talk?: { roles?: string[]; starter?: boolean }): boolean;
export function openApprovals(state: RunState): ApprovalState[];
/** A thread's comments in the order they were made (deleted ones stay, marked). */
export function threadComments(state: RunState, threadId: string): CommentState[];
/** The run's threads that are not on an approval. */
export function runThreads(state: RunState): ThreadState[];
