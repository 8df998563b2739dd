// Runcast browser client: one WebSocket to a hub, any number of watched runs, each folded into a state.
//
// The guarantee to the app: for every subscribed run, `onEvent` sees seq 1, 2, 3, ... exactly once and in order,
// across gaps, dropped sockets and hub restarts (close 1012) or slow-consumer drops (close 4408): the client keeps the
// last seq per run, drops repeats, and on a hole or a reconnect subscribes again with `since`.
//
// No build step: this file is a plain ES module. msgpack is loaded only when asked for (see README).

import { applyEvent, applyPresence, initialPresence, initialRunState } from "./state.js";
import { applyInboxFrame, applyRunsFrame, initialInbox, initialRuns } from "./feeds.js";

export {
  applyEvent, foldEvents, initialRunState, people, typingPeople, canDecide, canCancel, canSay, canStart, hasRole, openApprovals, TERMINAL,
  initialPresence, applyPresence, threadComments, runThreads,
} from "./state.js";
export { applyInboxFrame, applyRunsFrame, initialInbox, initialRuns, inboxList, needsYou, runList } from "./feeds.js";

export const VERSION = "0.1.0";
export const SUBPROTOCOL_JSON = "runcast.v1.json";
export const SUBPROTOCOL_MSGPACK = "runcast.v1.msgpack";

/** Close codes after which the client comes back on its own (everything but a deliberate close and a refused token). */
const CLOSE_AUTH = 4401;
const CLOSE_RESTARTING = 1012;
/** With a token function: a token or session this long before its end is renewed in place (a renewing hello). */
const RENEW_BEFORE_MS = 60_000;

/** With a token function: consecutive 4401s (no `welcome` in between) after which the client gives up. */
const MAX_REFUSALS = 3;
/** After a `sync` whose head is past what we applied: resubscribes that gained nothing before we report the hole. */
const MAX_SYNC_RETRIES = 3;

/** A monotonic clock for timeouts: a wall clock that jumps (NTP, a resumed laptop) must not kill a healthy socket. */
const monotonic = () => (globalThis.performance?.now ? globalThis.performance.now() : Date.now());
const messageOf = (err) => String(err?.message || err);

/**
 * An `error` frame from the hub, or a local failure, as an Error. Local codes: `disconnected`, `timeout`, `closed`,
 * `unauthenticated` (the token was refused or is missing), `codec_unavailable` (msgpack could not be loaded),
 * (from the hub, among others: `log_reset`, the run's log is not the one the client held: see `onReset`),
 * `token_error` (the token function threw; the client retries), `gap` (the hub's replay kept leaving a hole).
 */
export class RuncastError extends Error {
  /** @param {string} code @param {string} message @param {Record<string, any>} [frame] */
  constructor(code, message, frame = {}) {
    super(message);
    this.name = "RuncastError";
    this.code = code;
    this.frame = frame;
  }
}

function defaultUrl() {
  const loc = globalThis.location;
  if (!loc || !loc.host) throw new Error("runcast: pass `url` (ws://host:port/ws) outside a browser");
  return `${loc.protocol === "https:" ? "wss" : "ws"}://${loc.host}/ws`;
}

class RunEntry {
  constructor(runId) {
    this.runId = runId;
    this.state = initialRunState(runId);
    this.presence = initialPresence(); // who watches now: from `presence` frames, not from the log
    this.lastSeq = 0;
    this.epoch = null; // the epoch of the log lastSeq counts in (from `sync`): sent back with `since`
    this.listeners = new Set();
    this.synced = false;
    this.inflight = 0; // subscribes sent on this socket whose `sync` has not come back yet
    this.duplicates = 0; // events dropped because they were already applied (for diagnostics and tests)
    this.resubscribes = 0; // subscribes sent with `since` after a gap or a reconnect
    this.syncRetries = 0; // resubscribes in a row because a `sync` announced more than the replay gave
    this.syncRetryFrom = 0; // lastSeq when the latest of those was sent
  }
}

/**
 * A subscription handle: the live state of one run, and a way to stop watching it.
 */
export class Subscription {
  /** @param {RuncastClient} client @param {RunEntry} entry @param {object} handlers */
  constructor(client, entry, handlers) {
    this._client = client;
    this._entry = entry;
    this.handlers = handlers;
    this.runId = entry.runId;
  }

  /** The folded state (updated in place as events arrive). */
  get state() { return this._entry.state; }
  /** Who watches the run now (updated in place as `presence` frames arrive). */
  get presence() { return this._entry.presence; }
  /** The last seq applied. */
  get lastSeq() { return this._entry.lastSeq; }
  /** True between the hub's `sync` (replay done) and the next drop. */
  get synced() { return this._entry.synced; }
  /** Counters: events dropped as repeats, subscribes sent again with `since`. */
  get stats() { return { duplicates: this._entry.duplicates, resubscribes: this._entry.resubscribes }; }

  unsubscribe() { this._client._unsubscribe(this); }
}

/**
 * A handle on one of the two feeds (the approvals inbox, the live run list): its folded state, and a way to stop.
 */
export class Feed {
  /** @param {RuncastClient} client @param {"inbox"|"runs"} kind @param {object} handlers */
  constructor(client, kind, handlers) {
    this._client = client;
    this.kind = kind;
    this.handlers = handlers;
  }

  /** The folded feed (InboxState or RunsState), updated in place. */
  get state() { return this._client._feeds[this.kind].state; }

  unsubscribe() { this._client._unsubscribeFeed(this); }
}

const RUNS_FILTERS = ["agent", "status", "started_by", "q"];

/** The run-list filters the hub knows, without empty ones. @param {any} f @returns {RunsFilter} */
function cleanFilters(f = {}) {
  const out = {};
  for (const k of RUNS_FILTERS) {
    const v = typeof f[k] === "string" ? f[k].trim() : "";
    if (v) out[k] = v;
  }
  return out;
}

const FEED_FRAMES = { inbox: "inbox", "inbox.added": "inbox", "inbox.removed": "inbox", "inbox.mention": "inbox", runs: "runs", "run.status": "runs" };

/**
 * @typedef {import("./runcast.js").ClientOptions} ClientOptions
 * @typedef {import("./runcast.js").RunsFilter} RunsFilter
 * @typedef {import("./runcast.js").RunHandlers} RunHandlers
 */

export class RuncastClient {
  /** @param {ClientOptions} options */
  constructor(options = {}) {
    this.url = options.url || defaultUrl();
    this._token = options.token;
    this.encoding = options.encoding === "msgpack" ? "msgpack" : "json";
    this._WebSocket = options.WebSocket || globalThis.WebSocket;
    if (!this._WebSocket) throw new Error("runcast: no WebSocket here; pass one (e.g. the `ws` package) as options.WebSocket");
    // `msgpack` is a codec ({encode, decode}) or a function that loads one (e.g. `() => import("/vendor/msgpack.mjs")`).
    this._codecLoader = typeof options.msgpack === "function" ? options.msgpack : null;
    this._codec = typeof options.msgpack === "function" ? null : options.msgpack || null;
    this.clientName = options.client || `runcast-js/${VERSION}`;
    // Batched frames: the hub may put several events in one frame (JSON lines; a msgpack sequence). On by default;
    // with msgpack only when the codec has `decodeMulti`.
    this.batch = options.batch !== false;
    const r = options.reconnect || {};
    this.backoff = {
      initialMs: r.initialMs ?? 250,
      maxMs: r.maxMs ?? 10_000,
      factor: r.factor ?? 2,
      jitter: r.jitter ?? 0.5, // the delay is drawn from [d * (1 - jitter), d]
    };
    this.reconnectEnabled = options.reconnect !== false;
    this.commandTimeoutMs = options.commandTimeoutMs ?? 15_000;
    this.heartbeatMs = options.heartbeatMs ?? null; // null: use the hub's heartbeat_s from `welcome`
    this._random = options.random || Math.random;
    this._clock = options.clock || Date.now; // this computer's clock (a test may set one that is off)

    /** @type {"idle"|"connecting"|"open"|"reconnecting"|"closed"} */
    this.status = "idle";
    /** @type {{sub: string, name: string, roles: string[]}|null} */
    this.user = null;
    this.connectionId = null;
    this.server = null;
    this.attempt = 0; // failed attempts since the last `welcome`
    this.connects = 0; // welcomes received, over the client's life
    this._hubOffsetMs = null; // how far the hub's clock is ahead of ours, from `now` in welcome and sync

    this._ws = null;
    this._runs = new Map();
    this._pending = new Map(); // command id -> {resolve, reject, timer, frame}
    this._queued = []; // commands waiting for the socket to be open
    this._nextId = 1;
    this._listeners = new Map();
    this._retryTimer = null;
    this._beatTimer = null;
    this._lastFrameAt = 0;
    this._closedByUser = false;
    this._openWaiters = [];
    this._tokenInUse = null; // the token sent in the hello of the current socket
    this._refusedToken = null; // the token of the last 4401, until a welcome
    this._refusals = 0; // 4401s since the last welcome
    this._feeds = {
      inbox: { state: initialInbox(), listeners: new Set(), limit: null },
      runs: { state: initialRuns(), listeners: new Set(), limit: 50, filters: {} },
    };

    if (options.watchNetwork !== false && typeof globalThis.addEventListener === "function" && typeof globalThis.document !== "undefined") {
      this._onOnline = () => { if (this.status === "reconnecting") this._retryNow(); };
      this._onVisible = () => {
        if (globalThis.document.visibilityState === "visible" && this.status === "reconnecting") this._retryNow();
      };
      globalThis.addEventListener("online", this._onOnline);
      globalThis.document.addEventListener("visibilitychange", this._onVisible);
    }
  }

  // ------------------------------------------------------------------------------------------ connection events

  /**
   * Listen to the connection: "status" (status), "welcome" (frame), "close" ({code, reason}), "reconnect"
   * ({attempt, delayMs, code}), "error" (RuncastError not tied to a command). Returns a function that removes it.
   * @param {string} type @param {(arg: any) => void} fn
   */
  on(type, fn) {
    if (!this._listeners.has(type)) this._listeners.set(type, new Set());
    this._listeners.get(type).add(fn);
    return () => this._listeners.get(type)?.delete(fn);
  }

  _emit(type, arg) {
    for (const fn of this._listeners.get(type) || []) {
      try { fn(arg); } catch (e) { console.error("runcast listener failed", e); }
    }
  }

  _setStatus(s) {
    if (this.status === s) return;
    this.status = s;
    this._emit("status", s);
  }

  // ------------------------------------------------------------------------------------------ connecting

  /**
   * Open the connection (once; it then stays up by itself until `close()`). Resolves with the `welcome` frame.
   * @returns {Promise<any>}
   */
  connect() {
    this._closedByUser = false;
    if (this.status === "open") return Promise.resolve(this._welcome);
    const waiter = new Promise((resolve, reject) => this._openWaiters.push({ resolve, reject }));
    if (this.status === "idle" || this.status === "closed") {
      this._refusals = 0; // a deliberate connect starts over, even after a refused token
      this._refusedToken = null;
      this._open();
    }
    return waiter;
  }

  /**
   * The token for the next hello. A missing token is `unauthenticated` (permanent); a token function that throws is
   * `token_error` (transient: the client tries again with backoff).
   * @returns {Promise<string>}
   */
  async _tokenValue() {
    let t = this._token;
    if (typeof t === "function") {
      try {
        t = await t();
      } catch (err) {
        if (err instanceof RuncastError && err.code === "unauthenticated") throw err; // e.g. signed out: not retried
        throw new RuncastError("token_error", `runcast: the token function failed: ${messageOf(err)}`, { cause: err });
      }
    }
    if (!t) throw new RuncastError("unauthenticated", "runcast: no token");
    return t;
  }

  async _loadCodec() {
    if (this.encoding !== "msgpack" || this._codec) return;
    // A bare specifier: resolved by Node, or in a browser by an import map (see README); or the app's own loader.
    const mod = this._codecLoader ? await this._codecLoader() : await import("@msgpack/msgpack");
    if (typeof mod?.encode !== "function" || typeof mod?.decode !== "function") throw new Error("no encode/decode in the module");
    this._codec = { encode: mod.encode, decode: mod.decode, decodeMulti: mod.decodeMulti };
  }

  async _open() {
    this._setStatus(this.connects === 0 && this.attempt === 0 ? "connecting" : "reconnecting");
    try {
      await this._loadCodec();
    } catch (err) {
      if (!this._closedByUser) this._failOpen(new RuncastError("codec_unavailable", `runcast: could not load the msgpack codec: ${messageOf(err)}`));
      return;
    }
    let token;
    try {
      token = await this._tokenValue();
    } catch (err) {
      if (!this._closedByUser) this._onTokenFailure(err);
      return;
    }
    if (this._closedByUser) return;
    if (this._refusedToken !== null && token === this._refusedToken) {
      this._failOpen(new RuncastError("unauthenticated", "runcast: the token function returned the token the hub just refused", { code: CLOSE_AUTH }));
      return;
    }
    this._tokenInUse = token;
    const sub = this.encoding === "msgpack" ? SUBPROTOCOL_MSGPACK : SUBPROTOCOL_JSON;
    let ws;
    try {
      ws = new this._WebSocket(this.url, [sub]);
    } catch (err) {
      this._onSocketGone(null, 1006, String(err?.message || err));
      return;
    }
    ws.binaryType = "arraybuffer";
    this._ws = ws;
    ws.onopen = () => {
      if (this._ws !== ws) return;
      this._lastFrameAt = monotonic();
      this._welcomed = false;
      const hello = { type: "hello", token, client: this.clientName };
      if (this._wantsBatch()) hello.batch = true;
      this._rawSend(hello);
      this._startHeartbeat(null); // a hub that never answers hello is given up on like a silent one
    };
    ws.onmessage = (m) => {
      if (this._ws !== ws) return;
      this._lastFrameAt = monotonic();
      let frames;
      try {
        frames = this._decode(m.data);
      } catch (err) {
        this._emit("error", new RuncastError("bad_frame", `runcast: undecodable frame from the hub: ${err?.message || err}`));
        return;
      }
      for (const frame of frames) {
        if (this._ws !== ws) return; // a frame of this batch closed the socket (e.g. a refused token)
        this._onFrame(frame);
      }
    };
    ws.onclose = (e) => this._onSocketGone(ws, e.code, e.reason || "");
    ws.onerror = () => { /* a close follows */ };
  }

  /** Give up: the status becomes closed, and everything waiting for a connection fails with `err`. */
  _failOpen(err) {
    this._setStatus("closed");
    for (const c of this._queued.splice(0)) c.reject(err);
    for (const w of this._openWaiters.splice(0)) w.reject(err);
    this._emit("error", err);
  }

  /** No token this time: a missing one ends the client; a failing token function is retried like a dropped socket. */
  _onTokenFailure(err) {
    if (err.code !== "token_error" || !this.reconnectEnabled) { this._failOpen(err); return; }
    this._emit("error", err);
    this._scheduleReconnect(0);
  }

  /**
   * A 4401. A fixed token is refused for good; a token function gets another chance, up to MAX_REFUSALS in a row
   * (and not at all if it hands back the token just refused: see `_open`). Returns the error to stop with, or null.
   * @param {string} reason
   * @returns {RuncastError|null}
   */
  _onRefused(reason) {
    this._refusals += 1;
    this._refusedToken = this._tokenInUse;
    const refreshable = typeof this._token === "function";
    if (refreshable && this.reconnectEnabled && this._refusals < MAX_REFUSALS) return null;
    const why = refreshable && this._refusals >= MAX_REFUSALS ? ` (${this._refusals} tokens refused in a row)` : "";
    return new RuncastError("unauthenticated", `${reason || "the hub refused the token (4401)"}${why}`, { code: CLOSE_AUTH, refusals: this._refusals });
  }

  /** Ask the hub for batched frames? Only if we can read them. */
  _wantsBatch() {
    return this.batch && (this.encoding !== "msgpack" || typeof this._codec?.decodeMulti === "function");
  }

  /** A frame off the socket -> the frames in it: one, or with batching several (JSON lines, or a msgpack sequence). */
  _decode(data) {
    if (typeof data === "string") return decodeJsonLines(data);
    const bytes = data instanceof ArrayBuffer ? new Uint8Array(data) : ArrayBuffer.isView(data) ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength) : null;
    if (!bytes) throw new Error("unsupported frame type");
    if (this._codec) return this._codec.decodeMulti ? [...this._codec.decodeMulti(bytes)] : [this._codec.decode(bytes)];
    return decodeJsonLines(new TextDecoder().decode(bytes));
  }

  _rawSend(frame) {
    const ws = this._ws;
    if (!ws || ws.readyState !== 1) return false;
    ws.send(this.encoding === "msgpack" ? this._codec.encode(frame) : JSON.stringify(frame));
    return true;
  }

  /** The socket is gone (closed by either side, or declared dead by the heartbeat). */
  _onSocketGone(ws, code, reason) {
    if (ws && this._ws !== ws) return; // an old socket we already gave up on
    const wasOpen = this.status === "open";
    this._ws = null;
    clearTimeout(this._renewTimer);
    this._renewId = null;
    this._stopHeartbeat();
    for (const entry of this._runs.values()) { entry.synced = false; entry.inflight = 0; entry.subscribeIds?.clear(); }
    for (const [id, p] of this._pending) {
      clearTimeout(p.timer);
      p.reject(new RuncastError("disconnected", `runcast: the connection closed (${code}) before the hub answered ${p.frame.type}`, { code }));
      this._pending.delete(id);
    }
    this._emit("close", { code, reason, wasOpen });
    if (this._closedByUser) { this._setStatus("closed"); return; }
    if (code === CLOSE_AUTH) {
      const err = this._onRefused(reason);
      if (err) { this._failOpen(err); return; }
    }
    if (!this.reconnectEnabled) { this._failOpen(new RuncastError("disconnected", `runcast: closed (${code}) ${reason}`, { code })); return; }
    this._scheduleReconnect(code);
  }

  /** Exponential backoff with jitter; a hub that says it is restarting (1012) is retried at once (still jittered). */
  _delayFor(attempt, code) {
    const { initialMs, maxMs, factor, jitter } = this.backoff;
    const base = code === CLOSE_RESTARTING && attempt === 0 ? initialMs : Math.min(maxMs, initialMs * factor ** attempt);
    return Math.round(base * (1 - jitter * this._random()));
  }

  _scheduleReconnect(code) {
    const delayMs = this._delayFor(this.attempt, code);
    this.attempt += 1;
    this._setStatus("reconnecting");
    this._emit("reconnect", { attempt: this.attempt, delayMs, code });
    clearTimeout(this._retryTimer);
    this._retryTimer = setTimeout(() => { this._retryTimer = null; this._open(); }, delayMs);
  }

  _retryNow() {
    if (this._retryTimer === null) return;
    clearTimeout(this._retryTimer);
    this._retryTimer = null;
    this._open();
  }

  _startHeartbeat(heartbeatS) {
    this._stopHeartbeat();
    const every = this.heartbeatMs ?? Math.max(1000, (heartbeatS || 10) * 1000);
    // The hub pings at the WebSocket level, which a browser answers without telling the page; a silent, half-open TCP
    // connection is found by our own `ping`: no frame at all for two beats means the socket is dead.
    this._beatTimer = setInterval(() => {
      if (!this._ws) return;
      if (monotonic() - this._lastFrameAt > 2 * every + 1000) {
        const ws = this._ws;
        try { ws.close(4000, "heartbeat timeout"); } catch { /* ignore */ }
        this._onSocketGone(ws, 1006, "no frame from the hub within two heartbeats");
        return;
      }
      if (this._welcomed) this._rawSend({ type: "ping" });
    }, every);
  }

  _stopHeartbeat() {
    clearInterval(this._beatTimer);
    this._beatTimer = null;
  }

  /** Stop for good: no reconnect. */
  close() {
    this._closedByUser = true;
    clearTimeout(this._renewTimer);
    clearTimeout(this._retryTimer);
    this._retryTimer = null;
    this._stopHeartbeat();
    const ws = this._ws;
    if (ws) {
      try { ws.close(1000, "bye"); } catch { /* ignore */ }
      this._onSocketGone(ws, 1000, "closed by the client");
    } else {
      this._setStatus("closed");
    }
    for (const c of this._queued.splice(0)) c.reject(new RuncastError("closed", "runcast: the client was closed"));
    for (const w of this._openWaiters.splice(0)) w.reject(new RuncastError("closed", "runcast: the client was closed"));
    if (this._onOnline) {
      globalThis.removeEventListener("online", this._onOnline);
      globalThis.document.removeEventListener("visibilitychange", this._onVisible);
    }
  }

  /**
   * For tests and for an app that knows better (e.g. it saw the network drop): drop the socket now, without a close
   * handshake, as a network failure would; the client reconnects and resubscribes as it would after any drop.
   */
  dropConnection() {
    const ws = this._ws;
    if (!ws) return;
    try { ws.close(4000, "dropped by the client"); } catch { /* ignore */ }
    this._onSocketGone(ws, 1006, "dropped by the client");
  }

  // ------------------------------------------------------------------------------------------ frames

  _onFrame(f) {
    if (typeof f.seq === "number" && f.run_id !== undefined) { this._onEvent(f); return; }
    if (f.id !== undefined && f.id === this._renewId) { this._onRenewed(f); return; }
    if (FEED_FRAMES[f.type]) { this._onFeedFrame(FEED_FRAMES[f.type], f); return; }
    switch (f.type) {
      case "welcome": this._onWelcome(f); break;
      case "sync": this._onSync(f); break;
      case "ack": this._settle(f, null); break;
      case "error": this._onError(f); break;
      case "pong": this._settle(f, null); break;
      case "presence": this._onPresence(f); break;
      default: break; // an unknown control frame from a newer hub: ignore
    }
  }

  /**
   * The hub's clock: `now` in welcome and sync is when the hub sent the frame, so `now - arrival` is a lower bound of
   * (hub clock - our clock), short by the time the frame spent on the way; the largest since the welcome is the best.
   * A new connection (perhaps another hub node) starts over.
   */
  _sampleClock(f, fresh) {
    const at = Date.parse(f.now ?? "");
    if (Number.isNaN(at)) return;
    const sample = at - this._clock();
    this._hubOffsetMs = fresh || this._hubOffsetMs === null ? sample : Math.max(this._hubOffsetMs, sample);
  }

  /** How far the hub's clock is ahead of this computer's, in ms (0 until the first `welcome`). */
  get hubOffsetMs() { return this._hubOffsetMs ?? 0; }

  /** The hub's time now, in ms since the epoch: deadlines (`expires_at`) are on this clock. */
  hubNow() { return this._clock() + this.hubOffsetMs; }

  _onWelcome(f) {
    this._scheduleRenewal(f);
    this._sampleClock(f, true);
    this._welcome = f;
    this.user = f.user;
    this.connectionId = f.connection_id;
    this.server = f.server;
    this.attempt = 0;
    this.connects += 1;
    this._refusals = 0;
    this._refusedToken = null;
    this._welcomed = true;
    this._setStatus("open");
    this._startHeartbeat(f.heartbeat_s);
    this._emit("welcome", f);
    for (const entry of this._runs.values()) this._sendSubscribe(entry);
    for (const kind of ["inbox", "runs"]) if (this._feeds[kind].listeners.size) this._sendFeedSubscribe(kind);
    for (const c of this._queued.splice(0)) this._dispatch(c);
    for (const w of this._openWaiters.splice(0)) w.resolve(f);
  }

  // ------------------------------------------------------------------------------------------ renewal
  // A token (or sign-in session) that ends while the connection is open: with a token function, the client asks it
  // for a new one shortly before `expires_at` and sends a renewing hello on the same socket. The hub answers with a
  // welcome (same connection, every subscription kept) or an error; either way nothing is dropped or replayed.

  _scheduleRenewal(f) {
    clearTimeout(this._renewTimer);
    if (typeof this._token !== "function" || typeof f.expires_at !== "number") return;
    const left = f.expires_at * 1000 - Date.now();
    const delay = Math.max(1000, left - Math.min(RENEW_BEFORE_MS, left / 5));
    this._renewTimer = setTimeout(() => { this._renew(); }, delay);
    this._renewTimer?.unref?.(); // (Node: a pending renewal does not keep the process alive)
  }

  async _renew() {
    const ws = this._ws;
    let token;
    try {
      token = await this._tokenValue();
    } catch (err) {
      this._emit("error", err); // the hub closes with 4401 at expiry; the reconnect asks the function again
      return;
    }
    if (this._ws !== ws || !ws) return;
    this._renewId = `renew-${this._nextId++}`;
    this._tokenInUse = token;
    this._rawSend({ type: "hello", id: this._renewId, token, client: this.clientName });
  }

  _onRenewed(f) {
    this._renewId = null;
    if (f.type !== "welcome") {
      this._emit("error", new RuncastError(f.code || "unauthenticated", `runcast: renewing the token failed: ${f.message || ""}`));
      return;
    }
    this._welcome = f;
    this.user = f.user;
    this._scheduleRenewal(f);
    this._emit("renewed", f);
  }

  _sendSubscribe(entry) {
    const frame = { type: "subscribe", run_id: entry.runId, id: `sub-${this._nextId++}` };
    if (entry.lastSeq > 0) {
      frame.since = entry.lastSeq;
      if (entry.epoch) frame.epoch = entry.epoch; // a log that is not this one answers log_reset, never silence
      entry.resubscribes += 1;
    }
    entry.subscribeIds = entry.subscribeIds || new Set();
    entry.subscribeIds.add(frame.id);
    entry.inflight += 1; // before sending: the answer may come back synchronously (tests, in-process transports)
    if (!this._rawSend(frame)) entry.inflight -= 1;
  }

  _onEvent(ev) {
    const entry = this._runs.get(ev.run_id);
    if (!entry) return;
    if (ev.seq <= entry.lastSeq) { entry.duplicates += 1; return; }
    if (ev.seq !== entry.lastSeq + 1) {
      // A hole: ask for everything after what we have. While that replay is under way, further holes are expected.
      if (entry.inflight === 0) this._sendSubscribe(entry);
      return;
    }
    entry.lastSeq = ev.seq;
    applyEvent(entry.state, ev);
    for (const sub of entry.listeners) call(sub.handlers.onEvent, ev, entry.state);
  }

  _onPresence(f) {
    const entry = this._runs.get(f.run_id);
    if (!entry) return;
    applyPresence(entry.presence, f);
    for (const sub of entry.listeners) call(sub.handlers.onPresence, entry.presence, f);
  }

  _onSync(f) {
    this._sampleClock(f, false);
    const entry = this._runs.get(f.run_id);
    if (!entry) return;
    entry.inflight = Math.max(0, entry.inflight - 1);
    if (f.epoch) entry.epoch = f.epoch;
    if (entry.inflight > 0) return;
    entry.subscribeIds?.clear();
    if (this._syncLeftHole(entry, f)) return;
    entry.synced = true;
    for (const sub of entry.listeners) call(sub.handlers.onSync, entry.state, f);
  }

  /**
   * The hub says its replay reached `head_seq`, but we applied less: an event was lost between the log and us. Ask
   * again from what we have (true), instead of calling the run synced with a hole in it. If that keeps gaining
   * nothing, tell the app (`gap`) rather than loop.
   * @param {RunEntry} entry @param {{head_seq?: number}} f
   */
  _syncLeftHole(entry, f) {
    if (typeof f.head_seq !== "number" || f.head_seq <= entry.lastSeq) { entry.syncRetries = 0; return false; }
    if (entry.syncRetries > 0 && entry.lastSeq <= entry.syncRetryFrom) {
      if (entry.syncRetries >= MAX_SYNC_RETRIES) {
        entry.syncRetries = 0;
        const err = new RuncastError("gap", `runcast: the hub announced seq ${f.head_seq} for ${entry.runId} but replayed only up to ${entry.lastSeq}`, f);
        for (const sub of entry.listeners) call(sub.handlers.onError, err);
        return false;
      }
    } else {
      entry.syncRetries = 0;
    }
    entry.syncRetries += 1;
    entry.syncRetryFrom = entry.lastSeq;
    this._sendSubscribe(entry);
    return true;
  }

  _onError(f) {
    // An answer to a subscribe we sent (no promise waits on those).
    for (const entry of this._runs.values()) {
      if (f.id && entry.subscribeIds && entry.subscribeIds.has(f.id)) {
        entry.subscribeIds.delete(f.id);
        entry.inflight = Math.max(0, entry.inflight - 1);
        if ((f.code === "log_reset" && f.epoch) || (f.field === "since" && f.code === "bad_request")) {
          // The hub's log for this run is not the one we applied (its store lost or rebuilt it): the history we hold
          // is gone. Start over from what the hub has now, and tell the app (onReset gets the error).
          this._reset(entry, new RuncastError(f.code, f.message, f));
          return;
        }
        // (log_reset without an epoch: the hub has no such run any more. Nothing to start afresh from: the state
        // stays as it was, and onError says its history was lost.)
        const err = new RuncastError(f.code, f.message, f);
        for (const sub of entry.listeners) call(sub.handlers.onError, err);
        return;
      }
    }
    if (f.id && this._pending.has(f.id)) { this._settle(f, new RuncastError(f.code, f.message, f)); return; }
    const err = new RuncastError(f.code, f.message, f);
    const entry = f.run_id ? this._runs.get(f.run_id) : null;
    if (entry) for (const sub of entry.listeners) call(sub.handlers.onError, err);
    this._emit("error", err);
  }

  _reset(entry, reason) {
    entry.state = initialRunState(entry.runId);
    entry.lastSeq = 0;
    entry.epoch = reason?.frame?.epoch ?? null;
    entry.synced = false;
    entry.syncRetries = 0;
    entry.resets = (entry.resets || 0) + 1;
    for (const sub of entry.listeners) call(sub.handlers.onReset, entry.state, reason);
    this._sendSubscribe(entry);
  }

  _settle(f, err) {
    if (f.id && f.id.startsWith("sub-")) {
      for (const entry of this._runs.values()) entry.subscribeIds?.delete(f.id);
    }
    const p = f.id ? this._pending.get(f.id) : null;
    if (!p) return;
    this._pending.delete(f.id);
    clearTimeout(p.timer);
    if (err) p.reject(err);
    else p.resolve(f);
  }

  // ------------------------------------------------------------------------------------------ runs

  /**
   * Watch a run. Handlers: `onEvent(event, state)` for each event, applied once and in order; `onSync(state, frame)`
   * when the replay is done (after each (re)subscribe); `onError(err)`; `onReset(state, err)` if the hub's log is not
   * the one we held (`err.code` "log_reset": its store lost it; the client starts the run afresh, from seq 1);
   * `onPresence(presence, frame)` when who watches changes (the whole set on each (re)subscribe, then changes).
   * A second subscription to a run already watched shares its state (its `onEvent` sees only later events).
   * @param {string} runId
   * @param {RunHandlers} [handlers]
   * @returns {Subscription}
   */
  subscribe(runId, handlers = {}) {
    let entry = this._runs.get(runId);
    const fresh = !entry;
    if (fresh) {
      entry = new RunEntry(runId);
      this._runs.set(runId, entry);
    }
    const sub = new Subscription(this, entry, handlers);
    entry.listeners.add(sub);
    if (fresh) {
      if (this.status === "open") this._sendSubscribe(entry);
      else if (this.status === "idle") this._open();
    } else if (entry.synced) {
      call(handlers.onSync, entry.state, { type: "sync", run_id: runId, head_seq: entry.lastSeq });
    }
    return sub;
  }

  _unsubscribe(sub) {
    const entry = this._runs.get(sub.runId);
    if (!entry || !entry.listeners.delete(sub) || entry.listeners.size) return;
    this._runs.delete(sub.runId);
    this._rawSend({ type: "unsubscribe", run_id: sub.runId, id: `unsub-${this._nextId++}` });
  }

  /** The folded state of a watched run, or null. @param {string} runId */
  getState(runId) {
    return this._runs.get(runId)?.state ?? null;
  }

  // ------------------------------------------------------------------------------------------ the two feeds

  /**
   * The approvals inbox: every open approval, across all runs, that this person may decide (their roles, the policy,
   * self-approval, the runs their token may see). `onChange(state, change)` after the snapshot (`{type: "snapshot"}`,
   * again after each reconnect) and after each `added` / `removed`. Live: no polling.
   * @param {import("./runcast.js").FeedHandlers<import("./feeds.js").InboxState, import("./feeds.js").InboxChange>} [handlers]
   * @returns {Feed}
   */
  subscribeInbox(handlers = {}) {
    return this._subscribeFeed("inbox", handlers);
  }

  /**
   * The live run list: the newest `limit` runs this token may see, then, once per hub tick, the changes of the runs it
   * shows (runs appear, pause, end; a newer run pushes the oldest out) and a count of changes outside it
   * (`state.outside`), from whichever hub node the change happened on.
   * @param {import("./runcast.js").FeedHandlers<import("./feeds.js").RunsState, import("./feeds.js").RunsChange>} [handlers]
   * Filters (`agent`, `status`, `started_by` (a sub), `q`: words) narrow the list on the hub; see `setRunsFilter`.
   * @param {{limit?: number} & RunsFilter} [opts]
   * @returns {Feed}
   */
  subscribeRuns(handlers = {}, opts = {}) {
    if (opts.limit) this._feeds.runs.limit = opts.limit;
    const { limit: _limit, ...filters } = opts;
    if (Object.keys(filters).length) this._feeds.runs.filters = cleanFilters(filters);
    return this._subscribeFeed("runs", handlers);
  }

  /**
   * Change the run list's filters (empty or missing values: no filter). The hub answers with a new `runs` snapshot,
   * which replaces the list. @param {RunsFilter} filters
   */
  setRunsFilter(filters) {
    const feed = this._feeds.runs;
    const next = cleanFilters(filters);
    if (JSON.stringify(next) === JSON.stringify(feed.filters)) return;
    feed.filters = next;
    if (feed.listeners.size && this.status === "open") this._sendFeedSubscribe("runs");
  }

  /** The run list's filters in effect. @returns {RunsFilter} */
  get runsFilter() { return { ...this._feeds.runs.filters }; }

  /** The folded inbox (empty until its first snapshot). @returns {import("./feeds.js").InboxState} */
  get inbox() { return this._feeds.inbox.state; }

  /** The folded run list. @returns {import("./feeds.js").RunsState} */
  get runList() { return this._feeds.runs.state; }

  _subscribeFeed(kind, handlers) {
    const feed = this._feeds[kind];
    const handle = new Feed(this, kind, handlers);
    const first = feed.listeners.size === 0;
    feed.listeners.add(handle);
    if (first) {
      if (this.status === "open") this._sendFeedSubscribe(kind);
      else if (this.status === "idle") this._open();
    } else if (feed.state.ready) {
      call(handlers.onChange, feed.state, { type: "snapshot" });
    }
    return handle;
  }

  _sendFeedSubscribe(kind) {
    const frame = { type: kind === "inbox" ? "subscribe_inbox" : "subscribe_runs", id: `${kind}-${this._nextId++}` };
    if (kind === "runs" && this._feeds.runs.limit) frame.limit = this._feeds.runs.limit;
    if (kind === "runs") Object.assign(frame, this._feeds.runs.filters);
    this._rawSend(frame);
  }

  _unsubscribeFeed(handle) {
    const feed = this._feeds[handle.kind];
    if (!feed.listeners.delete(handle) || feed.listeners.size) return;
    feed.state = handle.kind === "inbox" ? initialInbox() : initialRuns();
    this._rawSend({ type: `unsubscribe_${handle.kind}`, id: `unfeed-${this._nextId++}` });
  }

  _onFeedFrame(kind, f) {
    const feed = this._feeds[kind];
    if (!feed.listeners.size) return;
    const change = kind === "inbox" ? applyInboxFrame(feed.state, f) : applyRunsFrame(feed.state, f);
    if (!change) return;
    for (const h of feed.listeners) call(h.handlers.onChange, feed.state, change);
  }

  // ------------------------------------------------------------------------------------------ commands

  _command(frame) {
    frame.id = `c${this._nextId++}`;
    return new Promise((resolve, reject) => {
      const cmd = { frame, resolve, reject };
      if (this.status === "open") this._dispatch(cmd);
      else if (this._closedByUser || this.status === "closed") reject(new RuncastError("closed", "runcast: not connected; call connect()"));
      else {
        this._queued.push(cmd);
        if (this.status === "idle") this._open();
      }
    });
  }

  _dispatch(cmd) {
    const { frame, resolve, reject } = cmd;
    const timer = setTimeout(() => {
      if (this._pending.delete(frame.id)) reject(new RuncastError("timeout", `runcast: no answer to ${frame.type} within ${this.commandTimeoutMs} ms`));
    }, this.commandTimeoutMs);
    this._pending.set(frame.id, { resolve, reject, timer, frame });
    if (!this._rawSend(frame)) {
      this._pending.delete(frame.id);
      clearTimeout(timer);
      reject(new RuncastError("disconnected", "runcast: the connection is not open"));
    }
  }

  /**
   * Approve or reject a pending tool call. Resolves with the ack (`outcome`: "decided" or "voted"); rejects with a
   * RuncastError whose `code` is the hub's (`already_decided` names the winner in `err.frame.winner`, `forbidden`, ...).
   * Never retried by the client: if the socket drops before the answer, it rejects with `disconnected` and the run's
   * events tell what happened.
   * @param {string} runId @param {string} approvalId @param {"approve"|"reject"} decision
   * `opts.arguments` approves with changes: the edited arguments (checked by the hub against the tool's schema:
   * `invalid_arguments` when they do not fit).
   * @param {string} [reason] @param {{always?: boolean, arguments?: object|string}} [opts]
   */
  decide(runId, approvalId, decision, reason, opts = {}) {
    const frame = { type: "decide", run_id: runId, approval_id: approvalId, decision };
    if (reason) frame.reason = reason;
    if (opts.always) frame.always = true;
    if (opts.arguments !== undefined) { // approve with changes: the edited call (an object, or its JSON text)
      frame.arguments = typeof opts.arguments === "string" ? opts.arguments : JSON.stringify(opts.arguments);
    }
    return this._command(frame);
  }

  /**
   * Comment on a run, on one of its approvals (`approvalId`: that approval's thread), or reply to a comment
   * (`replyTo`: its thread). `@handle` mentions a person (see `people`). Resolves with the ack (`comment_id`,
   * `thread_id`); rejects with the hub's code (`not_found`, `bad_request` with `unknown_mentions`, `too_large`,
   * `rate_limited`). The agent never sees a comment.
   * @param {string} runId @param {string} text @param {{approvalId?: string, replyTo?: string}} [opts]
   */
  comment(runId, text, opts = {}) {
    const frame = { type: "comment", run_id: runId, text };
    if (opts.approvalId) frame.approval_id = opts.approvalId;
    if (opts.replyTo) frame.reply_to = opts.replyTo;
    return this._command(frame);
  }

  /** Replace the text of your own comment (the log keeps that it was edited). @param {string} runId @param {string} commentId @param {string} text */
  editComment(runId, commentId, text) {
    return this._command({ type: "edit_comment", run_id: runId, comment_id: commentId, text });
  }

  /** Delete your own comment (the log keeps that it was deleted). @param {string} runId @param {string} commentId */
  deleteComment(runId, commentId) {
    return this._command({ type: "delete_comment", run_id: runId, comment_id: commentId });
  }

  /** Resolve a thread, or reopen it with `resolved` false. @param {string} runId @param {string} threadId @param {boolean} [resolved] */
  resolveThread(runId, threadId, resolved = true) {
    return this._command({ type: "resolve_thread", run_id: runId, thread_id: threadId, resolved });
  }

  /**
   * Who `@` completes to in this run's comments: the people who watch, watched, started, voted or may decide it.
   * @param {string} runId @returns {Promise<{sub: string, name: string, handle: string}[]>}
   */
  async people(runId) {
    const ack = await this._command({ type: "people", run_id: runId });
    return ack.people;
  }

  /** Cancel a run (operator or admin). @param {string} runId @param {"immediate"|"after_turn"} [mode] */
  cancel(runId, mode = "immediate") {
    return this._command({ type: "cancel", run_id: runId, mode });
  }

  /**
   * Start a run of a registered agent (operator or admin). Resolves with the new run id.
   * `opts.reviewers`: people (subs) asked to review its approvals (their inbox says "review requested").
   * @param {string} agent @param {string} input @param {{reviewers?: string[]}} [opts] @returns {Promise<string>}
   */
  async start(agent, input, opts = {}) {
    const frame = { type: "start", agent, input: input ?? "" };
    if (opts.reviewers?.length) frame.reviewers = opts.reviewers;
    const ack = await this._command(frame);
    return ack.run_id;
  }

  /**
   * Say something to the run's agent (README, "Conversations"). Resolves with the ack: `message_id`, and `queued`
   * (true: the agent is busy; the message waits in the run's queue and can be withdrawn). Rejects with the hub's code:
   * `forbidden`, `bad_request` (empty), `too_large`, `busy` (the agent takes no message while busy), `not_pending`
   * (the run failed or was cancelled), `rate_limited`.
   * @param {string} runId @param {string} text
   */
  say(runId, text) {
    return this._command({ type: "say", run_id: runId, text });
  }

  /**
   * Tell everyone watching the run that I am typing to its agent (`on`: true; send it again every couple of seconds
   * while the person types: the hub drops the mark 6 s after the last one) or that I stopped (false). Live state,
   * never logged: it marks my entry in everyone's `presence` (`typing: true`); saying something clears it too.
   * Needs the run subscribed and the right to `say` there (else rejects with `bad_request` / `forbidden`). While the
   * client is not connected it sends nothing and resolves with null (the mark would be stale by the time it went).
   * @param {string} runId @param {boolean} on
   */
  typing(runId, on) {
    if (this.status !== "open") return Promise.resolve(null);
    return this._command({ type: "typing", run_id: runId, typing: Boolean(on) });
  }

  /** Take back a message of mine still waiting in the run's queue. @param {string} runId @param {string} messageId */
  withdraw(runId, messageId) {
    return this._command({ type: "withdraw", run_id: runId, message_id: messageId });
  }

  /** Run again: a new run with a finished run's agent and input. Resolves with the new run id. @param {string} runId */
  async rerun(runId) {
    const ack = await this._command({ type: "rerun", run_id: runId });
    return ack.run_id;
  }

  /** Round trip to the hub. */
  ping() {
    return this._command({ type: "ping" });
  }
}

/** Compact JSON never holds a raw newline, so a text frame with one is a batch: one event per line. */
function decodeJsonLines(text) {
  return text.includes("\n") ? text.split("\n").map((line) => JSON.parse(line)) : [JSON.parse(text)];
}

function call(fn, ...args) {
  if (typeof fn !== "function") return;
  try { fn(...args); } catch (e) { console.error("runcast handler failed", e); }
}

/**
 * A token function for a page of the hub itself, signed in with the hub's sign-in (a session cookie): each call
 * renews the session (POST /auth/refresh, same origin, the cookie goes with it) and returns the session's token for
 * `hello`. Not signed in: it throws `unauthenticated` with `login`, the address that signs in and comes back to
 * `next` (default: this page, fragment included). Use it as `new RuncastClient({ token: sessionToken() })`.
 * @param {{refreshUrl?: string, loginUrl?: string, next?: string, fetch?: typeof fetch}} [options]
 * @returns {() => Promise<string>}
 */
export function sessionToken(options = {}) {
  const doFetch = options.fetch || globalThis.fetch;
  return async () => {
    const r = await doFetch(options.refreshUrl || "/auth/refresh",
      { method: "POST", credentials: "same-origin", headers: { Accept: "application/json" } });
    const body = await r.json().catch(() => ({}));
    if (r.status === 401 || r.status === 403) {
      const here = options.next ?? (globalThis.location ? globalThis.location.pathname + globalThis.location.search + globalThis.location.hash : "/");
      const login = `${options.loginUrl || body?.error?.login || "/login"}?next=${encodeURIComponent(here)}`;
      throw new RuncastError("unauthenticated", `runcast: not signed in (${body?.error?.message || r.status}); sign in at ${login}`, { login });
    }
    if (!r.ok || typeof body?.token !== "string") throw new Error(`the hub's session endpoint answered ${r.status}`);
    return body.token;
  };
}
