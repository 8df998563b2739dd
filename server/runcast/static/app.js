// The run monitor: a list of runs, a form to start one, and a live view of one run, built on the Runcast client
// (client_js/, served by the hub at /client/). No framework and no build step: the transcript is a keyed list of
// DOM nodes, each updated in place from the folded run state, so typing a reason is never interrupted by a delta.

import { RuncastClient, canCancel, canDecide, canStart, needsYou, people, runList } from "/client/src/runcast.js";

const $ = (id) => document.getElementById(id);

/** h("div", {class: "x", dataset: {testid: "y"}}, "text", child) — text is always set as text, never as HTML. */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "dataset") Object.assign(el.dataset, v);
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  el.append(...children.filter((c) => c !== null && c !== undefined));
  return el;
}

function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
}

const time = (iso) => (iso ? new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" }) : "");

function pretty(args) {
  try {
    return JSON.stringify(JSON.parse(args), null, 2);
  } catch {
    return String(args ?? "");
  }
}

function plural(n, one, many) {
  return `${n} ${n === 1 ? one : many}`;
}

// ---------------------------------------------------------------------------------------------- token and route
// The token arrives in the fragment (never sent to a server, so never in a log), is kept for this tab only, and is
// removed from the address bar. The fragment then holds the open run: `#run=<id>`, so a reload comes back to it.

const hashParams = () => new URLSearchParams(location.hash.slice(1));
const fromUrl = hashParams().get("token");
if (fromUrl) {
  sessionStorage.setItem("runcast.token", fromUrl);
  const rest = hashParams();
  rest.delete("token");
  history.replaceState(null, "", location.pathname + location.search + (rest.toString() ? `#${rest}` : ""));
}
const token = sessionStorage.getItem("runcast.token");

// ---------------------------------------------------------------------------------------------- the hub's clock
// Deadlines (an approval's expires_at) are on the hub's clock, and this computer's may be off by minutes. Each event's
// `ts` is when the hub logged it, so on arrival `ts - Date.now()` is a lower bound of (hub clock - our clock), short
// by the time the event spent on the way: the largest of the recent samples is the best estimate.

const clockSamples = [];
const CLOCK_SAMPLES = 64;

/** @param {{ts?: string}} ev */
function sampleClock(ev) {
  const ts = Date.parse(ev.ts ?? "");
  if (Number.isNaN(ts)) return;
  clockSamples.push(ts - Date.now());
  if (clockSamples.length > CLOCK_SAMPLES) clockSamples.shift();
}

/** How far the hub's clock is ahead of ours, in ms (0 until an event has arrived). */
function clockOffsetMs() {
  return clockSamples.length ? Math.max(...clockSamples) : 0;
}

/** The hub's time now, as well as we can tell. */
const hubNow = () => Date.now() + clockOffsetMs();

// ---------------------------------------------------------------------------------------------- page state

let client = null;
let me = null;
let agents = [];
let runs = [];
/** @type {{runId: string, sub: import("/client/src/runcast.js").Subscription, nodes: Map<string, any>, errors: Map<string, string>} | null} */
let view = null;

function banner(text) {
  $("banner").textContent = text || "";
  $("banner").hidden = !text;
}

async function api(path, opts = {}) {
  const r = await fetch(path, { ...opts, headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" } });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(body?.error?.message || `${r.status} ${r.statusText}`);
  return body;
}

// ---------------------------------------------------------------------------------------------- connection

const CONN_TEXT = { idle: "not connected", connecting: "connecting…", open: "live", reconnecting: "reconnecting…", closed: "disconnected" };

function connect() {
  client = new RuncastClient({ token, client: "runcast-monitor/0.1" });
  client.on("status", (status) => {
    $("conn").dataset.state = status;
    setText($("conn"), CONN_TEXT[status] || status);
  });
  client.on("welcome", (w) => {
    me = w.user;
    setText($("me"), `${me.name} · ${me.roles.join(", ") || "no roles"}`);
    banner("");
    renderStartForm();
    scheduleRender();
  });
  // The run list and the inbox are live feeds (no polling): runs appear and change status from every hub node.
  client.subscribeRuns({ onChange: (s) => { runs = runList(s); renderRuns(); } });
  client.subscribeInbox({ onChange: () => renderRuns() });
  client.on("error", (err) => {
    if (err.code === "unauthenticated") {
      sessionStorage.removeItem("runcast.token");
      banner("Your token was refused or has expired. Open the page again with a new #token=… link.");
    } else {
      banner(`${err.code}: ${err.message}`);
    }
  });
  client.connect().catch(() => { /* reported through the "error" listener */ });
}

// ---------------------------------------------------------------------------------------------- runs list and start form

async function loadAgents() {
  try {
    agents = (await api("/api/agents")).agents || [];
  } catch {
    return;
  }
  $("agent").replaceChildren(...agents.map((a) => h("option", { value: a.name }, a.name)));
  showAgentDescription();
}

function showAgentDescription() {
  const a = agents.find((x) => x.name === $("agent").value);
  setText($("agent-desc"), a ? a.description || "" : "");
}

function renderStartForm() {
  const allowed = canStart(me);
  $("start").querySelector("button").disabled = !allowed;
  setText($("start-hint"), me && !allowed ? "Starting a run needs the operator role." : "");
}

function renderRuns() {
  const waiting = client ? needsYou(client.inbox) : new Map();
  const total = [...waiting.values()].reduce((a, b) => a + b, 0);
  document.title = total ? `(${total}) Runcast` : "Runcast";
  const sorted = [...runs].sort((a, b) => (b.created_at || "").localeCompare(a.created_at || "") || b.run_id.localeCompare(a.run_id));
  $("runs").replaceChildren(...sorted.map((r) => {
    const live = view && view.runId === r.run_id && view.sub.state.status !== "unknown" ? view.sub.state.status : r.status;
    return h("a", {
      href: `#run=${encodeURIComponent(r.run_id)}`,
      class: `run-link${view && view.runId === r.run_id ? " current" : ""}`,
      dataset: { testid: "run-link", runId: r.run_id },
    },
    h("span", { class: "run-link-top" }, h("b", {}, r.agent),
      waiting.get(r.run_id) ? h("span", { class: "chip pending", dataset: { testid: "needs-you" } }, `needs you: ${waiting.get(r.run_id)}`) : null,
      h("span", { class: `status small ${live}` }, live)),
    h("span", { class: "muted small" }, `${r.started_by?.name || "?"} · ${time(r.created_at)} · ${r.run_id}`));
  }));
}

$("agent").addEventListener("change", showAgentDescription);

$("start").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const button = $("start").querySelector("button");
  button.disabled = true;
  try {
    const runId = await client.start($("agent").value, $("input").value);
    location.hash = `run=${encodeURIComponent(runId)}`;
  } catch (err) {
    banner(`Could not start the run: ${err.message}`);
  } finally {
    renderStartForm();
  }
});

// ---------------------------------------------------------------------------------------------- the run view

function openRun(runId) {
  if (view && view.runId === runId) return;
  if (view) view.sub.unsubscribe();
  $("transcript").replaceChildren();
  const nodes = new Map();
  const sub = client.subscribe(runId, {
    onEvent: (ev) => { sampleClock(ev); scheduleRender(); },
    onSync: scheduleRender,
    onReset: () => { nodes.clear(); $("transcript").replaceChildren(); scheduleRender(); },
    onError: (err) => banner(`${runId}: ${err.message}`),
  });
  view = { runId, sub, nodes, errors: new Map(), lastStatus: null };
  $("view").hidden = false;
  $("empty").hidden = true;
  renderRuns();
  scheduleRender();
}

function closeRun() {
  if (view) view.sub.unsubscribe();
  view = null;
  $("view").hidden = true;
  $("empty").hidden = false;
  renderRuns();
}

function route() {
  const runId = hashParams().get("run");
  if (runId) openRun(runId);
  else closeRun();
}

let renderQueued = false;
function scheduleRender() {
  if (renderQueued) return;
  renderQueued = true;
  queueMicrotask(() => { renderQueued = false; render(); });
}

function render() {
  if (!view) return;
  const s = view.sub.state;
  setText($("run-agent"), s.agent ? `${s.agent}${s.currentAgent ? ` · ${s.currentAgent}` : ""}` : view.runId);
  setText($("run-meta"), s.startedBy ? `${view.runId} · started by ${s.startedBy.name} at ${time(s.startedAt)}` : view.runId);
  const status = s.status === "unknown" ? "loading" : s.status;
  const st = $("status");
  st.className = `status ${status}`;
  const waiting = s.status === "paused" ? ` · waiting for ${plural(s.pending.length, "approval", "approvals")}` : "";
  setText(st, status + waiting);
  $("cancel").hidden = !canCancel(s, me);
  renderParticipants(s);
  renderTranscript(s);
  if (view.lastStatus !== s.status) {
    view.lastStatus = s.status;
    renderRuns();
  }
}

function renderParticipants(s) {
  const list = people(s).map((p) => h("li", { title: p.roles.join(", ") || "no roles", class: me && p.sub === me.sub ? "you" : "" },
    p.name, me && p.sub === me.sub ? " (you)" : "", p.connections > 1 ? ` ×${p.connections}` : ""));
  const key = list.map((li) => li.textContent).join("|");
  if ($("participants").dataset.key !== key) {
    $("participants").dataset.key = key;
    $("participants").replaceChildren(...list);
  }
}

/** Keyed, in-place rendering: one DOM node per transcript item, created once, then updated. */
function renderTranscript(s) {
  const box = $("transcript");
  const seen = new Set();
  let prev = null;
  for (const item of s.items) {
    seen.add(item.key);
    let node = view.nodes.get(item.key);
    if (!node) {
      node = build(item);
      view.nodes.set(item.key, node);
    }
    const want = prev ? prev.nextSibling : box.firstChild;
    if (want !== node.el) box.insertBefore(node.el, want);
    node.update(item, s);
    prev = node.el;
  }
  for (const [key, node] of view.nodes) {
    if (!seen.has(key)) { node.el.remove(); view.nodes.delete(key); }
  }
}

function build(item) {
  switch (item.kind) {
    case "message": return buildText("message", "msg");
    case "reasoning": return buildText("reasoning", "reasoning");
    case "tool": return buildTool();
    case "approval": return buildApproval(item.approvalId);
    case "handoff": return buildNote("handoff", (it) => `Handoff: ${it.from ?? "?"} → ${it.to ?? "?"}${it.done ? "" : " …"}`);
    case "started": return buildNote("started", (it) => `${it.by?.name || "Someone"} started ${it.agent}${it.input ? `: “${it.input}”` : ""}`);
    case "paused": return buildNote("paused", (it) => `Paused at ${time(it.ts)}: waiting for ${plural(it.pending.length, "approval", "approvals")}`);
    case "resumed": return buildNote("resumed", (it, s) => `Resumed at ${time(it.ts)}: ${it.decisions.map((d) => {
      const ap = s.approvals[d.approvalId];
      return `${ap?.tool || "tool"} ${d.decision === "approve" ? "approved" : "rejected"}${d.by?.name ? ` by ${d.by.name}` : ""}`;
    }).join(", ") || "no decisions"}`);
    case "completed": return buildFinal();
    case "failed": return buildNote("failed", (it) => `Failed: ${it.code}: ${it.message}`);
    case "cancelled": return buildNote("cancelled", (it) => `Cancelled${it.by?.name ? ` by ${it.by.name}` : ""}${it.mode === "after_turn" ? " (after the turn)" : ""}`);
    case "mcp": return buildNote("mcp", (it) => `MCP ${it.server || ""}: ${it.event.replace("_", " ")}${it.tool ? ` ${it.tool}` : ""}${it.tools ? ` (${it.tools.length} tools)` : ""}`);
    default: return buildNote("other", (it) => `${it.type}`);
  }
}

function buildText(kind, cls) {
  const who = h("div", { class: "who" });
  const text = h("div", { class: "text", dataset: { testid: kind } });
  const el = h("div", { class: `item ${cls}`, dataset: { kind } }, who, text);
  return {
    el,
    update(it) {
      setText(who, kind === "reasoning" ? `${it.agent || "Agent"} is thinking` : it.agent || "Agent");
      setText(text, it.text);
      el.classList.toggle("streaming", !it.done);
    },
  };
}

const TOOL_STATUS = {
  preparing: "writing arguments…", called: "running…", awaiting_approval: "waiting for approval",
  approved: "approved · running…", rejected: "rejected", cancelled: "cancelled", done: "done",
};

function buildTool() {
  const name = h("code", { class: "tool-name" });
  const chip = h("span", { class: "chip" });
  const who = h("span", { class: "muted small" });
  const args = h("pre", { class: "args" });
  const out = h("pre", { class: "output", dataset: { testid: "tool-output" } });
  const el = h("div", { class: "item tool", dataset: { kind: "tool", testid: "tool-call" } },
    h("div", { class: "tool-head" }, name, chip, who), args, out);
  return {
    el,
    update(it, s) {
      const call = s.toolCalls[it.callId];
      setText(name, call.tool || "tool");
      setText(chip, TOOL_STATUS[call.status] || call.status);
      chip.className = `chip ${call.status}`;
      setText(who, call.agent ? `called by ${call.agent}` : "");
      setText(args, pretty(call.arguments));
      out.hidden = call.output === null;
      setText(out, call.output === null ? "" : `${call.status === "rejected" ? "Rejected: " : ""}${call.output}${call.truncated ? " … (cut)" : ""}`);
    },
  };
}

function buildNote(kind, text) {
  const el = h("div", { class: `item note ${kind}`, dataset: { kind, testid: kind === "handoff" ? "handoff" : undefined } });
  return { el, update(it, s) { setText(el, text(it, s)); } };
}

function buildFinal() {
  const text = h("div", { class: "text", dataset: { testid: "final-output" } });
  const el = h("div", { class: "item final", dataset: { kind: "completed" } }, h("div", { class: "who" }, "Completed · final answer"), text);
  return {
    el,
    update(it) { setText(text, typeof it.output === "string" ? it.output : JSON.stringify(it.output, null, 2)); },
  };
}

// ---------------------------------------------------------------------------------------------- approval cards

const AP_STATUS = { pending: "waiting for a decision", approved: "approved", rejected: "rejected", expired: "expired: rejected", cancelled: "cancelled" };

/** Whole seconds until `expiresAt` on the hub's clock; 0 once it has passed. */
function secondsLeft(expiresAt) {
  return Math.max(0, Math.ceil((Date.parse(expiresAt) - hubNow()) / 1000));
}

function countdown(left) {
  return left > 0 ? `expires in ${Math.floor(left / 60)}:${String(left % 60).padStart(2, "0")}` : "Expired: being rejected automatically…";
}

function whyNot(s, ap) {
  if (!me) return "";
  if (ap.votes.some((v) => v.by?.sub === me.sub)) return "You voted; waiting for the others.";
  if (!ap.policy.allowSelf && s.startedBy?.sub === me.sub && canDecide(s, ap, { ...me, sub: "" })) {
    return "You started this run: someone else must approve it.";
  }
  return `Waiting for someone with the ${ap.policy.roles.join(" or ")} role.`;
}

function buildApproval(approvalId) {
  const title = h("div", { class: "ap-title" });
  const chip = h("span", { class: "chip" });
  const args = h("pre", { class: "args" });
  const policy = h("div", { class: "small muted", dataset: { testid: "policy" } });
  const clock = h("div", { class: "countdown small", dataset: { testid: "countdown" } });
  const tally = h("div", { class: "tally small" });
  const votes = h("ul", { class: "votes small" });
  const decision = h("div", { class: "decision", dataset: { testid: "decision" } });
  const hint = h("div", { class: "hint small muted" });
  const error = h("div", { class: "ap-error small", role: "alert" });
  let actions = null;
  const el = h("div", { class: "item approval", dataset: { kind: "approval", testid: "approval", approvalId } },
    h("div", { class: "ap-head" }, title, chip), args, policy, clock, tally, votes, decision, hint, error);

  function makeActions() {
    const reason = h("input", { type: "text", placeholder: "Reason (optional, shown to everyone)", maxlength: "2000", dataset: { testid: "reason" } });
    const send = (decisionWord) => async () => {
      for (const b of actions.querySelectorAll("button")) b.disabled = true;
      view.errors.delete(approvalId);
      try {
        await client.decide(view.runId, approvalId, decisionWord, reason.value.trim() || undefined);
      } catch (err) {
        const winner = err.frame?.winner;
        view.errors.set(approvalId, winner?.by?.name ? `${err.message}` : `Not recorded: ${err.message}`);
        for (const b of actions?.querySelectorAll("button") || []) b.disabled = false;
      }
      scheduleRender();
    };
    return h("div", { class: "actions" }, reason,
      h("button", { type: "button", class: "primary", dataset: { testid: "approve" }, onclick: send("approve") }, "Approve"),
      h("button", { type: "button", class: "danger-outline", dataset: { testid: "reject" }, onclick: send("reject") }, "Reject"));
  }

  return {
    el,
    update(it, s) {
      const ap = s.approvals[approvalId];
      el.dataset.status = ap.status;
      el.classList.toggle("open", ap.status === "pending");
      setText(title, `${ap.agent || "The agent"} asks to run ${ap.tool}`);
      setText(chip, AP_STATUS[ap.status] || ap.status);
      chip.className = `chip ${ap.status}`;
      setText(args, pretty(ap.arguments));
      const p = ap.policy;
      setText(policy, `Who may approve: ${p.roles.join(" or ")} (or admin) · needs ${p.quorum === 1 ? "1 approval" : `${p.quorum} different people`}`
        + `${p.allowSelf ? "" : " · not the person who started the run"} · a reject ends it`);
      // At zero the hub's timer rejects the call (approval.expired follows): no more buttons, whatever the events say.
      const ticking = Boolean(ap.status === "pending" && ap.expiresAt && !TERMINAL_RUN.includes(s.status));
      const lapsed = ticking && secondsLeft(ap.expiresAt) === 0;
      clock.hidden = !ticking;
      clock.classList.toggle("lapsed", lapsed);
      if (ticking) setText(clock, countdown(secondsLeft(ap.expiresAt)));
      tally.hidden = p.quorum === 1;
      setText(tally, `${ap.tally.approve} of ${ap.tally.needed} approvals${ap.tally.reject ? `, ${ap.tally.reject} rejected` : ""}`);
      const voteLines = ap.status === "pending" || p.quorum > 1 ? ap.votes : [];
      const vkey = voteLines.map((v) => `${v.by?.sub}:${v.decision}`).join(",");
      if (votes.dataset.key !== vkey) {
        votes.dataset.key = vkey;
        votes.replaceChildren(...voteLines.map((v) => h("li", {},
          `${v.by?.name || "?"} ${v.decision === "approve" ? "approved" : "rejected"} at ${time(v.at)}${v.reason ? `: “${v.reason}”` : ""}`)));
      }
      const d = ap.decision;
      decision.hidden = !d && ap.status !== "cancelled";
      if (ap.status === "cancelled") setText(decision, "Cancelled with the run: the tool did not run.");
      else if (d && d.by?.policy === "expired") setText(decision, `Expired at ${time(d.decidedAt)}: rejected automatically.`);
      else if (d) {
        setText(decision, `${d.decision === "approve" ? "Approved" : "Rejected"} by ${d.by?.name || "?"} at ${time(d.decidedAt)}${d.reason ? `: “${d.reason}”` : ""}`);
      }
      const allowed = canDecide(s, ap, me) && !lapsed;
      if (allowed && !actions) { actions = makeActions(); el.insertBefore(actions, hint); }
      if (!allowed && actions) { actions.remove(); actions = null; }
      hint.hidden = allowed || lapsed || ap.status !== "pending" || TERMINAL_RUN.includes(s.status);
      if (!hint.hidden) setText(hint, whyNot(s, ap));
      const err = view.errors.get(approvalId) || "";
      error.hidden = !err;
      setText(error, err);
    },
  };
}

const TERMINAL_RUN = ["completed", "failed", "cancelled"];

$("cancel").addEventListener("click", async () => {
  if (!view || !confirm("Cancel this run? Open approvals end, and no approved tool runs after this.")) return;
  try {
    await client.cancel(view.runId);
  } catch (err) {
    banner(`Could not cancel: ${err.message}`);
  }
});

// ---------------------------------------------------------------------------------------------- start

// For the browser tests and for curious people in the console: the client and the folded state of the open run.
// clockOffsetMs: how far the hub's clock is estimated to be ahead of this browser's.
window.runcastMonitor = {
  get client() { return client; },
  get state() { return view ? view.sub.state : null; },
  get clockOffsetMs() { return clockOffsetMs(); },
};

if (!token) {
  $("no-token").hidden = false;
  $("start").querySelector("button").disabled = true;
} else {
  connect();
  loadAgents();
  setInterval(() => { if (view && view.sub.state.status === "paused") scheduleRender(); }, 1000); // countdowns
  window.addEventListener("hashchange", route);
  route();
}
