// Types for @runcast/client (src/runcast.js). Hand-written; the JS needs no build step. The run state and its helpers
// are declared in ./state.d.ts (the "@runcast/client/state" entry point) and re-exported from here, as runcast.js
// re-exports state.js.

export * from "./state.js";
export * from "./feeds.js";
import type { Presence, PresenceFrame, RunEvent, RunState, User } from "./state.js";
import type { InboxChange, InboxState, RunsChange, RunsState } from "./feeds.js";

export const VERSION: string;
export const SUBPROTOCOL_JSON: "runcast.v1.json";
export const SUBPROTOCOL_MSGPACK: "runcast.v1.msgpack";

export interface Welcome {
  type: "welcome";
  connection_id: string;
  user: User;
  server: string;
  heartbeat_s: number;
  protocol?: number;
  /** true when this connection gets batched frames (the hello asked, and the hub can). */
  batch?: boolean;
  /** When the token or sign-in session ends (seconds since the epoch); the hub closes with 4401 then. */
  expires_at?: number | null;
  /** Set on the answer to a renewing hello (the hello's id). */
  id?: string | null;
  /** The hub's clock when it sent this frame (ISO 8601 UTC with ms). */
  now?: string;
}

/** Filters of the live run list (README: "The approvals inbox and the live run list"); all given must hold. */
export interface RunsFilter {
  agent?: string;
  status?: string;
  /** A person's sub. */
  started_by?: string;
  /** Words, any case, each found in the input, agent, run id or the starter's name. */
  q?: string;
}

export interface SyncFrame {
  type: "sync";
  run_id: string;
  head_seq: number;
  status?: string;
  /** The run log's epoch; the client sends it back with `since`, and a log that is not this one answers `log_reset`. */
  epoch?: string;
  /** The hub's clock when it sent this frame (ISO 8601 UTC with ms). */
  now?: string;
}

export interface Ack {
  type: "ack";
  id?: string;
  run_id?: string;
  outcome?: "decided" | "voted";
  approval_id?: string;
  status?: string;
  [key: string]: any;
}

/** The two functions of @msgpack/msgpack the client uses. */
export interface MsgpackCodec {
  encode(value: unknown): Uint8Array;
  decode(bytes: Uint8Array): unknown;
  /** Needed for batched frames in msgpack (a sequence of values); without it the client does not ask for them. */
  decodeMulti?(bytes: Uint8Array): Iterable<unknown>;
}

export interface ClientOptions {
  /** ws(s)://host/ws; in a browser defaults to the page's own host. */
  url?: string;
  /**
   * The JWT, or a function returning one (called before every connect: lets an app refresh it). A fixed token that
   * the hub refuses (close 4401) ends the client at once; a function is asked again, up to three 4401s in a row, and
   * not after it hands back the token just refused. A function that throws is retried with backoff (`token_error`).
   */
  token?: string | (() => string | Promise<string>);
  // With a function, a token whose welcome says `expires_at` is renewed in place a minute before it ends (a renewing
  // hello on the same socket: subscriptions kept); the client emits "renewed". `sessionToken()` is such a function
  // for a page of the hub whose person signed in there. A function that throws a RuncastError `unauthenticated` ends
  // the client (signed out) rather than being retried.
  /** "json" (default) or "msgpack" (loads @msgpack/msgpack, or uses `msgpack`). */
  encoding?: "json" | "msgpack";
  /**
   * {encode, decode} from @msgpack/msgpack, or a function loading them (e.g. `() => import("/vendor/msgpack.mjs")`),
   * when a bare import cannot be resolved (a browser with no import map). A codec that fails to load ends the client
   * with `codec_unavailable`.
   */
  msgpack?: MsgpackCodec | (() => Promise<MsgpackCodec>);
  /** A WebSocket constructor (e.g. the `ws` package in Node < 22). Defaults to globalThis.WebSocket. */
  WebSocket?: any;
  /** Sent in hello. */
  client?: string;
  /**
   * Ask the hub for batched frames (default true): when several events wait for this client, one frame carries them
   * (JSON lines, or a msgpack sequence), which costs the hub and the browser less per event. The app sees no change.
   */
  batch?: boolean;
  /** Backoff between reconnect attempts, or false to never reconnect. */
  reconnect?: false | { initialMs?: number; maxMs?: number; factor?: number; jitter?: number };
  commandTimeoutMs?: number;
  /** Our own ping interval; defaults to the hub's heartbeat_s. A socket silent for two beats is dropped. */
  heartbeatMs?: number;
  /** In a browser: retry at once when the network comes back or the tab becomes visible (default true). */
  watchNetwork?: boolean;
  /** For tests: the random source of the jitter. */
  random?: () => number;
  /** This computer's clock in ms (default Date.now); `hubNow()` is it plus the hub's offset. */
  clock?: () => number;
}

export interface RunHandlers {
  onEvent?(event: RunEvent, state: RunState): void;
  onSync?(state: RunState, frame: SyncFrame): void;
  onError?(error: RuncastError): void;
  /**
   * The hub's log of this run is not the one the client held (`error.code` "log_reset": the hub's store lost it or
   * rebuilt it): the client has started the run afresh, from seq 1, with an empty state. (If the hub has no such run
   * any more, there is nothing to start from: `onError` gets the `log_reset` and the state stays as it was.)
   */
  onReset?(state: RunState, error?: RuncastError): void;
  /** Who watches changed: the whole set after each (re)subscribe, then joins and leaves (at most every 250 ms). */
  onPresence?(presence: Presence, frame: PresenceFrame): void;
}

/**
 * The hub's error codes (PROTOCOL.md), and the client's own: `disconnected`, `timeout`, `closed`, `unauthenticated`,
 * `codec_unavailable`, `token_error`, `gap`.
 */
export type ErrorCode =
  | "bad_frame" | "bad_request" | "unknown_type" | "unauthenticated" | "forbidden" | "not_found" | "already_decided"
  | "not_pending" | "expired" | "rate_limited" | "too_large" | "log_trimmed" | "log_reset" | "busy" | "invalid_arguments" | "internal"
  | "disconnected" | "timeout" | "closed" | "codec_unavailable" | "token_error" | "gap";

export class RuncastError extends Error {
  /** One of ErrorCode (a newer hub may send others). */
  code: ErrorCode | (string & {});
  /**
   * The error frame as the hub sent it. A `rate_limited` start refused by a per-user quota also carries
   * `quota` (`"starts_per_minute"` or `"open_runs"`) and `retry_after_s` (whole seconds).
   */
  frame: Record<string, any> & { quota?: "starts_per_minute" | "open_runs"; retry_after_s?: number };
  constructor(code: string, message: string, frame?: Record<string, any>);
}

export class Subscription {
  readonly runId: string;
  handlers: RunHandlers;
  readonly state: RunState;
  /** Who watches the run now (live state from `presence` frames, not from the log). */
  readonly presence: Presence;
  readonly lastSeq: number;
  readonly synced: boolean;
  readonly stats: { duplicates: number; resubscribes: number };
  unsubscribe(): void;
}

export interface FeedHandlers<S, C> {
  /** After each snapshot (the first, and one after every reconnect) and each change. */
  onChange?(state: S, change: C): void;
}

/** A handle on the approvals inbox or the live run list. */
export class Feed {
  readonly kind: "inbox" | "runs";
  handlers: FeedHandlers<any, any>;
  readonly state: InboxState | RunsState;
  unsubscribe(): void;
}

export type ClientStatus = "idle" | "connecting" | "open" | "reconnecting" | "closed";

export class RuncastClient {
  constructor(options?: ClientOptions);
  readonly url: string;
  readonly encoding: "json" | "msgpack";
  /** Whether the client asks for batched frames (the `batch` option). */
  readonly batch: boolean;
  status: ClientStatus;
  user: User | null;
  connectionId: string | null;
  server: string | null;
  attempt: number;
  connects: number;
  /** How far the hub's clock is ahead of this computer's, in ms, from `now` in welcome and sync (0 before). */
  readonly hubOffsetMs: number;
  /** The hub's time now, in ms since the epoch: approval deadlines (`expires_at`) are on this clock. */
  hubNow(): number;
  on(type: "status", fn: (status: ClientStatus) => void): () => void;
  on(type: "welcome", fn: (frame: Welcome) => void): () => void;
  /** The token was renewed in place (a renewing hello): same connection, every subscription kept. */
  on(type: "renewed", fn: (frame: Welcome) => void): () => void;
  on(type: "close", fn: (info: { code: number; reason: string; wasOpen: boolean }) => void): () => void;
  /** `code` is the close code of the socket that went, or 0 when none was opened (the token function threw). */
  on(type: "reconnect", fn: (info: { attempt: number; delayMs: number; code: number }) => void): () => void;
  on(type: "error", fn: (error: RuncastError) => void): () => void;
  connect(): Promise<Welcome>;
  close(): void;
  dropConnection(): void;
  subscribe(runId: string, handlers?: RunHandlers): Subscription;
  getState(runId: string): RunState | null;
  /** Every open approval this person may decide, live (README: "The approvals inbox and the live run list"). */
  subscribeInbox(handlers?: FeedHandlers<InboxState, InboxChange>): Feed;
  /** The newest runs this token may see, live on every hub node. */
  subscribeRuns(handlers?: FeedHandlers<RunsState, RunsChange>, opts?: { limit?: number } & RunsFilter): Feed;
  /** Change the run list's filters; the hub answers with a new snapshot. */
  setRunsFilter(filters: RunsFilter): void;
  readonly runsFilter: RunsFilter;
  readonly inbox: InboxState;
  readonly runList: RunsState;
  /** `opts.arguments`: approve with changes (the edited call; `invalid_arguments` when the tool's schema refuses it). */
  decide(runId: string, approvalId: string, decision: "approve" | "reject", reason?: string,
         opts?: { always?: boolean; arguments?: Record<string, unknown> | string }): Promise<Ack>;
  cancel(runId: string, mode?: "immediate" | "after_turn"): Promise<Ack>;
  /** Comment on a run, on an approval's thread (`approvalId`), or reply (`replyTo`). Never seen by the agent. */
  comment(runId: string, text: string, opts?: { approvalId?: string; replyTo?: string }): Promise<Ack & { comment_id: string; thread_id: string }>;
  editComment(runId: string, commentId: string, text: string): Promise<Ack & { comment_id: string; edits: number }>;
  deleteComment(runId: string, commentId: string): Promise<Ack & { comment_id: string }>;
  resolveThread(runId: string, threadId: string, resolved?: boolean): Promise<Ack & { thread_id: string; resolved: boolean; changed: boolean }>;
  /** Who `@` completes to in this run's comments. */
  people(runId: string): Promise<{ sub: string; name: string; handle: string }[]>;
  start(agent: string, input: string, opts?: { reviewers?: string[] }): Promise<string>;
  /** Say something to the run's agent; `queued` when the agent is busy (README, "Conversations"). */
  say(runId: string, text: string): Promise<Ack & { run_id: string; message_id: string; queued: boolean }>;
  /**
   * I am typing to the run's agent (true; renew it every couple of seconds) or stopped (false): my presence entry's
   * `typing` mark, never logged. Resolves with null, sending nothing, while not connected.
   */
  typing(runId: string, on: boolean): Promise<(Ack & { run_id: string; typing: boolean }) | null>;
  /** Take back a message of mine still waiting in the run's queue. */
  withdraw(runId: string, messageId: string): Promise<Ack & { run_id: string; message_id: string }>;
  /** A new run with a finished run's agent and input; resolves with its id. */
  rerun(runId: string): Promise<string>;
  ping(): Promise<{ type: "pong"; id?: string }>;
}

/**
 * A token function for a page of the hub whose person signed in there (the hub's session cookie): each call renews
 * the session (POST /auth/refresh) and returns its token. Not signed in: throws RuncastError `unauthenticated` whose
 * `frame.login` is the sign-in address that comes back to `next` (default: this page).
 */
export function sessionToken(options?: {
  refreshUrl?: string;
  loginUrl?: string;
  next?: string;
  fetch?: typeof fetch;
}): () => Promise<string>;
