// The run monitor: what needs you (the approvals inbox), the live run list, a form to start a run, and a live view of
// one run, built on the Runcast client (client_js/, served by the hub at /client/). No framework and no build step:
// the transcript is a keyed list of DOM nodes, each updated in place from the folded run state, so typing a reason is
// never interrupted by a delta. Text is always set as text, never as HTML; no inline script or style (strict CSP).

import {
  RuncastClient, TERMINAL, canCancel, canDecide, canStart, hasRole, inboxList, needsYou, people, runList,
} from "/client/src/runcast.js";
import { argumentsEditor, buildSaid, interruptedText, renderConversation } from "/static/conversation.js";
import { agentReason, byDeadline, keyArguments, rejectedCount, runTitle, statusLabel } from "/static/words.js";
import * as signin from "/static/signin.js";
import { mentionsBox, runDiscussion, threadView } from "/static/comments.js";
import { showAudit } from "/static/audit.js";

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
  el.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return el;
}

function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
}

function plural(n, one, many) {
  return `${n} ${n === 1 ? one : many}`;
}

/** "Dana and Alex", "Dana, Alex and Sam". */
function names(list) {
  return list.length <= 1 ? list.join("") : `${list.slice(0, -1).join(", ")} and ${list.at(-1)}`;
}

// ---------------------------------------------------------------------------------------------- times
// One format for every time: its time of day with the time zone ("14:03:07 UTC"), with its date when it is not today,
// and its full date, time and time zone in a tooltip.

const ZONE = Intl.DateTimeFormat().resolvedOptions().timeZone || "local time";
const sameDay = (a, b) => a.getFullYear() === b.getFullYear() && a.getMonth() === b.getMonth() && a.getDate() === b.getDate();
const fmtTime = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit", timeZoneName: "short" });
const fmtDayTime = new Intl.DateTimeFormat(undefined, {
  day: "numeric", month: "short", hour: "2-digit", minute: "2-digit", second: "2-digit", timeZoneName: "short",
});
const fmtFull = new Intl.DateTimeFormat(undefined, { dateStyle: "full", timeStyle: "long" });

/** The short text of a time: its time of day today, else with its date. */
function shortTime(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return "";
  return sameDay(d, new Date(hubNow())) ? fmtTime.format(d) : fmtDayTime.format(d);
}

/** A <time> element: short text, full date, time and time zone in its tooltip. */
function timeEl(iso, text = shortTime(iso)) {
  if (!iso) return null;
  const d = new Date(iso);
  return h("time", { datetime: d.toISOString(), title: `${fmtFull.format(d)} (${ZONE})` }, text);
}

// ---------------------------------------------------------------------------------------------- token and route
// The token arrives in the fragment (never sent to a server, so never in a log), is kept for this tab only, and is
// removed from the address bar. The fragment then holds the open run: `#run=<id>`, so a reload comes back to it.
// A new `#token=` pasted into the same tab takes effect at once (hashchange): the page starts over as that person.

const hashParams = () => new URLSearchParams(location.hash.slice(1));
const approvalHash = (ap) => `run=${encodeURIComponent(ap.run_id)}&approval=${encodeURIComponent(ap.approval_id)}`;

/** Take a token from the address (and remove it from there). True if there was one. */
function takeToken() {
  const fromUrl = hashParams().get("token");
  if (!fromUrl) return false;
  sessionStorage.setItem("runcast.token", fromUrl);
  const rest = hashParams();
  rest.delete("token");
  history.replaceState(null, "", location.pathname + location.search + (rest.toString() ? `#${rest}` : ""));
  return true;
}
takeToken();
let token = sessionStorage.getItem("runcast.token");

// ---------------------------------------------------------------------------------------------- the hub's clock
// Deadlines (an approval's expires_at) are on the hub's clock, and this computer's may be off by minutes. The hub
// sends its time with `welcome` and each `sync` (never guessed from events, whose `ts` are old in a replayed history):
// the client keeps the offset, and every countdown on the page (decision panel, inbox) reads the same one.

/** The hub's time now (this computer's until the first welcome). */
const hubNow = () => (client ? client.hubNow() : Date.now());

/** Whole seconds until `expiresAt` on the hub's clock; 0 once it has passed. */
function secondsLeft(expiresAt) {
  return Math.max(0, Math.ceil((Date.parse(expiresAt) - hubNow()) / 1000));
}

function leftText(left) {
  const hours = Math.floor(left / 3600);
  const mm = Math.floor((left % 3600) / 60);
  const ss = String(left % 60).padStart(2, "0");
  return hours ? `${hours}:${String(mm).padStart(2, "0")}:${ss}` : `${mm}:${ss}`;
}

// ---------------------------------------------------------------------------------------------- page state

let client = null;
let me = null;
let agents = [];
let runs = [];
let runsOutside = 0; // changes of runs older than the list shows, since its snapshot
let authProblem = null; // "expired" | "invalid" | "missing"
/** @type {any} */
let view = null;
// The discussion (comments.js): threads beside approvals and under the transcript, and the mentions in the inbox column.
const talkCtx = { client: () => client, me: () => me, runId: () => view?.runId ?? null };
const discussion = runDiscussion(talkCtx);
const mentions = mentionsBox(talkCtx);
$("transcript").after(discussion.el);
document.querySelector(".inbox-box").after(mentions.el);
const announced = new Set(); // approval ids announced in the decision panel's live region
let notifiedReady = false; // the inbox's first snapshot arrived: later additions may notify

function banner(text) {
  setText($("banner"), text || "");
  $("banner").hidden = !text;
}

async function api(path, opts = {}) {
  // signed in (a token function): the session cookie goes with the request (same origin) instead of a header
  const auth = typeof token === "string" ? { Authorization: `Bearer ${token}` } : {};
  const r = await fetch(path, { ...opts, headers: { ...auth, "Content-Type": "application/json" } });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) {
    const err = new Error(body?.error?.message || `${r.status} ${r.statusText}`);
    err.code = body?.error?.code;
    throw err;
  }
  return body;
}

function roleText(user) {
  return user?.roles?.length ? user.roles.join(", ") : "no roles";
}

// ---------------------------------------------------------------------------------------------- connection

const CONN_TEXT = { idle: "not connected", connecting: "connecting…", open: "live", reconnecting: "hub unreachable: retrying…", closed: "disconnected" };

/** What to tell someone whose token the hub refused, and what to do about it. */
function tokenMessage(err) {
  if (/expired/i.test(err?.message || "")) {
    authProblem = "expired";
    return "Your link has expired. Ask whoever runs this hub for a new one (runcast token …) and open it in this tab.";
  }
  authProblem = "invalid";
  return "This link's token is not valid for this hub (made with another secret, or cut short). Open the link the hub "
    + "printed, or paste a new #token=… link into this tab.";
}

function connect() {
  const c = new RuncastClient({ token, client: "runcast-monitor/0.2" });
  client = c;
  c.on("status", (status) => {
    if (client !== c) return;
    $("conn").dataset.state = status;
    setText($("conn"), CONN_TEXT[status] || status);
    renderAll();
  });
  c.on("welcome", (w) => {
    if (client !== c) return;
    me = w.user;
    authProblem = null;
    setText($("me"), `${me.name} · ${roleText(me)} (you)`);
    banner("");
    loadAgents();
    resendWaitingVotes();
    renderAll();
  });
  c.on("error", (err) => {
    if (client !== c) return;
    if (err.code === "unauthenticated") {
      sessionStorage.removeItem("runcast.token");
      banner(typeof token === "function" ? signin.sessionMessage(err) : tokenMessage(err));
      if (typeof token === "function") { restart(); return; } // offers Sign in, which comes back to this address
      me = null;
      renderAll();
    } else {
      banner(`${err.code}: ${err.message}`);
    }
  });
  // The run list and the inbox are live feeds (no polling), from every hub node.
  // The hub sends changes of the runs shown here, and a count of the others that changed (runsOutside).
  c.subscribeRuns({ onChange: (s) => { if (client === c) { runs = runList(s); runsOutside = s.outside; renderRuns(); } } }, { limit: 100, ...runsFilter() });
  c.subscribeInbox({ onChange: (s, change) => { if (client === c) onInbox(s, change); } });
  c.connect().catch(() => { /* reported through the "error" listener */ });
}

/** A new person in this tab: drop everything of the previous one and start over. */
function restart() {
  if (client) client.close();
  client = null;
  me = null;
  authProblem = null;
  runs = [];
  runsOutside = 0;
  agents = [];
  announced.clear();
  notifiedReady = false;
  for (const node of inboxNodes.values()) node.el.remove();
  inboxNodes.clear();
  if (view) { view = null; $("transcript").replaceChildren(); $("decide-cards").replaceChildren(); }
  setText($("me"), "");
  banner("");
  token = sessionStorage.getItem("runcast.token");
  start();
}

// ---------------------------------------------------------------------------------------------- inbox

function onInbox(s, change) {
  if (change.type === "snapshot") notifiedReady = true;
  else if (change.type === "mention") mentions.notify(change.mention);
  else if (change.type === "added" && notifiedReady) {
    notify(change.approval);
    const ap = change.approval;
    if (!announced.has(ap.approval_id)) { // once per approval, here or by the decision panel
      announced.add(ap.approval_id);
      setText($("decide-live"), `Needs your decision: ${ap.agent || "an agent"} asks to run ${ap.tool} (run started by ${ap.run?.started_by?.name || "someone"}).`);
    }
  }
  renderRuns();
  renderInbox();
  scheduleRender();
}

function notify(ap) {
  if (document.visibilityState !== "hidden" || typeof Notification === "undefined" || Notification.permission !== "granted") return;
  try {
    const n = new Notification(`Needs you: ${ap.tool}`, {
      body: `${ap.agent || "An agent"} asks to run ${ap.tool} (run started by ${ap.run?.started_by?.name || "someone"})`,
      tag: ap.approval_id,
    });
    n.onclick = () => { window.focus(); location.hash = approvalHash(ap); };
  } catch { /* some browsers only allow notifications from a service worker */ }
}

$("notify").addEventListener("click", async () => {
  try { await Notification.requestPermission(); } catch { /* ignore */ }
  renderInbox();
});

/** Whether this person could ever be asked to decide (a role besides viewer and auditor): only they are offered
 * notifications. */
const mayEverDecide = (user) => Boolean(user && user.roles.some((r) => r !== "viewer" && r !== "auditor"));

/** The countdown of a deadline on the hub's clock, the same text in the decision panel and the inbox. */
function countdownText(expiresAt) {
  const left = secondsLeft(expiresAt);
  return left ? `in ${leftText(left)}` : "expired";
}

/**
 * One inbox item: what is asked and by which run's request, its key arguments, and its deadline. Built once per
 * approval; `update` only changes its countdown and whether it is the open run's (nodes stay put between ticks).
 */
function buildInboxItem(ap) {
  const request = ap.run?.input ? runTitle(ap.run.input, ap.run?.agent) : "";
  const countdown = h("span", { class: "countdown small", dataset: { testid: "inbox-deadline" } });
  const link = h("a", { href: `#${approvalHash(ap)}`, dataset: { testid: "inbox-item", runId: ap.run_id, approvalId: ap.approval_id } },
    h("b", {}, `${ap.agent || "Agent"} asks to run ${ap.tool}`),
    ap.review_requested ? h("span", { class: "chip review", dataset: { testid: "review-requested" } }, "review requested") : null,
    h("span", { class: "inbox-args", dataset: { testid: "inbox-args" } }, keyArguments(ap.arguments)),
    request ? h("span", { class: "inbox-request small", dataset: { testid: "inbox-request" } }, `“${request}” · ${ap.run?.started_by?.name || "?"}`) : null,
    ap.expires_at ? countdown : h("span", { class: "muted small" }, "No deadline · asked ", timeEl(ap.requested_at)));
  const deadline = ap.expires_at ? timeEl(ap.expires_at) : null;
  return {
    el: h("li", {}, link),
    update(current) {
      link.className = ap.run_id === current ? "current" : "";
      if (!ap.expires_at) return;
      const left = secondsLeft(ap.expires_at);
      countdown.classList.toggle("lapsed", left === 0);
      const text = left ? `Expires ${countdownText(ap.expires_at)} · ` : "Expired · ";
      if (countdown.firstChild?.textContent !== text) countdown.replaceChildren(text, deadline);
    },
  };
}

const inboxNodes = new Map(); // approval id -> built item

function renderInbox() {
  mentions.render(client ? client.inbox : null);
  const items = client ? inboxList(client.inbox).sort(byDeadline) : [];
  const count = $("inbox-count");
  setText(count, String(items.length));
  count.classList.toggle("some", items.length > 0);
  $("inbox-empty").hidden = items.length > 0 || !me;
  setText($("inbox-empty"), me && hasRole(me, "approver") ? "Nothing waits for your decision." : "Nothing waits for your decision (your roles decide no approvals by default).");
  $("notify").hidden = !(mayEverDecide(me) && typeof Notification !== "undefined" && Notification.permission === "default");
  const current = view?.runId;
  const list = $("inbox");
  let prev = null;
  for (const ap of items) {
    let node = inboxNodes.get(ap.approval_id);
    if (!node || node.ap !== ap) { node?.el.remove(); node = { ...buildInboxItem(ap), ap }; inboxNodes.set(ap.approval_id, node); }
    node.update(current);
    const want = prev ? prev.nextSibling : list.firstChild;
    if (want !== node.el) list.insertBefore(node.el, want);
    prev = node.el;
  }
  const keep = new Set(items.map((ap) => ap.approval_id));
  for (const [id, node] of inboxNodes) if (!keep.has(id)) { node.el.remove(); inboxNodes.delete(id); }
  // On a phone the inbox is below the page: the top bar keeps it one tap away.
  const jump = $("inbox-jump");
  jump.hidden = !items.length;
  setText(jump, `Needs you: ${items.length}`);
  document.title = items.length ? `(${items.length}) Needs you · Runcast` : "Runcast";
}

$("inbox-jump").addEventListener("click", () => {
  const box = $("inbox-box");
  box.scrollIntoView({ block: "start" });
  box.focus({ preventScroll: true });
});

// ---------------------------------------------------------------------------------------------- runs list and start form

async function loadAgents() {
  if (!me || !canStart(me)) { renderStartForm(); return; }
  try {
    agents = (await api("/api/agents")).agents || [];
  } catch {
    agents = [];
  }
  const sel = $("agent");
  const keep = sel.value;
  sel.replaceChildren(...agents.map((a) => h("option", { value: a.name }, a.name)));
  if (keep && agents.some((a) => a.name === keep)) sel.value = keep;
  showAgentDescription();
  renderStartForm();
}

function showAgentDescription() {
  const a = agents.find((x) => x.name === $("agent").value);
  setText($("agent-desc"), a ? a.description || "" : "");
}

/** The Start form only for people who may start runs, and only with agents to start; otherwise why not. */
function renderStartForm() {
  const allowed = Boolean(me && canStart(me));
  const online = client?.status === "open";
  $("start").hidden = !allowed;
  $("start").querySelector("button").disabled = !allowed || !agents.length || !online;
  const hint = !me ? "" : !allowed ? `Starting a run needs the operator role; you are ${roleText(me)}.`
    : !online ? "The hub is unreachable: a run cannot be started now." : !agents.length ? "This hub has no agents to start." : "";
  setText($("start-hint"), hint);
  $("start-hint").hidden = !hint;
}

// The run list's filters: agent, status, who started and words go to the hub (subscribe_runs); "needs me" is the
// inbox's, so it is applied here. The choices offered are every agent and person seen so far.
const knownAgents = new Set();
const knownPeople = new Map(); // sub -> name

function runsFilter() {
  return { q: $("f-q").value, agent: $("f-agent").value, status: $("f-status").value, started_by: $("f-by").value };
}

/** Replace a select's options (value, text) when they changed, keeping what is selected. */
function setOptions(sel, first, options) {
  const key = JSON.stringify(options);
  if (sel.dataset.key === key) return;
  sel.dataset.key = key;
  const keep = sel.value;
  sel.replaceChildren(h("option", { value: "" }, first), ...options.map(([value, text]) => h("option", { value }, text)));
  sel.value = options.some(([value]) => value === keep) ? keep : "";
}

function renderFilterChoices() {
  for (const a of agents) knownAgents.add(a.name);
  for (const r of runs) {
    if (r.agent) knownAgents.add(r.agent);
    if (r.started_by?.sub) knownPeople.set(r.started_by.sub, r.started_by.name || r.started_by.sub);
  }
  setOptions($("f-agent"), "Any agent", [...knownAgents].sort().map((a) => [a, a]));
  const people = [...knownPeople].filter(([sub]) => sub !== me?.sub).sort((a, b) => a[1].localeCompare(b[1]));
  setOptions($("f-by"), "Anyone", [...(me ? [[me.sub, `Me (${me.name})`]] : []), ...people]);
}

let filterTimer = null;
function filterChanged(delayMs = 0) {
  clearTimeout(filterTimer);
  filterTimer = setTimeout(() => { client?.setRunsFilter(runsFilter()); renderRuns(); }, delayMs);
}
$("f-q").addEventListener("input", () => filterChanged(250));
for (const id of ["f-agent", "f-status", "f-by"]) $(id).addEventListener("change", () => filterChanged());
$("f-mine").addEventListener("change", () => renderRuns());
$("runs-filter").addEventListener("submit", (ev) => { ev.preventDefault(); filterChanged(); });

/** One run in the list: its title (the input's first line), status in words, who started it and when. */
function runLink(r, waiting) {
  const live = view && view.runId === r.run_id && view.sub.state.status !== "unknown" ? view.sub.state : null;
  const label = live ? statusLabel(live.status, rejectedCount(live)) : statusLabel(r.status, r.rejected_approvals || 0);
  const n = waiting.get(r.run_id) || 0;
  return h("a", {
    href: `#run=${encodeURIComponent(r.run_id)}`,
    class: `run-link${view && view.runId === r.run_id ? " current" : ""}`,
    "aria-current": view && view.runId === r.run_id ? "page" : null,
    dataset: { testid: "run-link", runId: r.run_id },
  },
  h("span", { class: "run-link-top" }, h("b", { dataset: { testid: "run-link-title" } }, runTitle(r.input, r.agent)),
    n ? h("span", { class: "chip needs-you", dataset: { testid: "needs-you" } }, `needs you: ${n}`) : null,
    h("span", { class: `status small ${label.cls}`, dataset: { testid: "run-link-status" } }, label.text)),
  h("span", { class: "muted small snippet" }, `${r.agent} · ${r.started_by?.name || "?"} · `, timeEl(r.created_at)));
}

function renderRuns() {
  const waiting = client ? needsYou(client.inbox) : new Map();
  renderFilterChoices();
  const shown = $("f-mine").checked ? runs.filter((r) => waiting.has(r.run_id)) : runs;
  const filtered = Object.values(runsFilter()).some(Boolean) || $("f-mine").checked;
  $("runs-empty").hidden = shown.length > 0 || !me;
  $("runs-outside").hidden = !runsOutside;
  setText($("runs-outside"), `${runsOutside} change${runsOutside === 1 ? "" : "s"} in older runs not listed here`);
  setText($("runs-empty"), filtered ? "No runs match these filters." : "No runs yet.");
  $("runs").replaceChildren(...shown.map((r) => runLink(r, waiting)));
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

function openRun(runId, approvalId = null) {
  if (view && view.runId === runId) {
    if (approvalId && approvalId !== view.target) { view.target = approvalId; scheduleRender(); }
    return;
  }
  if (view) view.sub.unsubscribe();
  $("transcript").replaceChildren();
  $("decide-cards").replaceChildren();
  discussion.reset();
  $("decide-done").replaceChildren();
  $("history-lost").hidden = true;
  const nodes = new Map();
  // target: the approval a link named (`#run=<id>&approval=<id>`, as webhooks and Slack send it), shown once it is here
  // confirmations: the decisions made on this page, said where they were made (the decision panel) until dismissed
  const v = { runId, sub: null, nodes, errors: new Map(), votes: new Map(), confirmations: new Map(), lastStatus: null,
    problem: null, synced: false, target: approvalId };
  view = v;
  v.sub = client.subscribe(runId, {
    onEvent: () => { scheduleRender(); },
    onSync: () => { v.synced = true; v.problem = null; resendWaitingVotes(); scheduleRender(); },
    onReset: (_state, err) => {
      nodes.clear();
      $("transcript").replaceChildren();
      $("decide-cards").replaceChildren();
      if (err?.code === "log_reset") {
        // The hub's store lost this run's log (e.g. Redis restarted empty): what we showed is gone; say so.
        $("history-lost").hidden = false;
        setText($("history-lost"), `The hub lost this run's history (${err.message}). Starting it afresh from what the hub has now.`);
      }
      scheduleRender();
    },
    onPresence: () => { scheduleRender(); loadWatchedSoon(); },
    onError: (err) => {
      if (err.code === "log_reset") {
        // The hub's store lost this run (e.g. Redis restarted empty): what is on screen is all there is; say so.
        $("history-lost").hidden = false;
        setText($("history-lost"), `The hub lost this run's history (${err.message}).`);
        v.problem = "forgotten";
      } else if (err.code === "forbidden" && v.sub.state.seq > 0) v.problem = "revoked"; // a renewed sign-in that sees less
      else if (err.code === "not_found" || err.code === "forbidden") v.problem = v.sub.state.seq > 0 ? "forgotten" : "unknown";
      else banner(`${runId}: ${err.message}`);
      scheduleRender();
    },
  });
  $("view").hidden = false;
  $("empty").hidden = true;
  document.body.classList.remove("at-home");
  $("watched").replaceChildren();
  setText($("watched-count"), "0");
  renderRuns();
  renderInbox();
  scheduleRender();
  loadWatched();
}

/** Who ever watched the open run, each person once with first and last seen (the run's detail; not its log). */
async function loadWatched() {
  if (!view) return;
  const runId = view.runId;
  let detail;
  try {
    detail = await api(`/api/runs/${encodeURIComponent(runId)}`);
  } catch {
    return;
  }
  if (!view || view.runId !== runId) return;
  const list = (detail.watched || []).map((w) => h("li", {}, w.name || w.sub, " ", timeEl(w.first_seen), "–", timeEl(w.last_seen)));
  setText($("watched-count"), String(list.length));
  $("watched").replaceChildren(...list);
}

let watchedTimer = null;
/** Presence changed: read who watched again, at most every two seconds. */
function loadWatchedSoon() {
  if (watchedTimer) return;
  watchedTimer = setTimeout(() => { watchedTimer = null; loadWatched(); }, 2000);
}

function closeRun() {
  if (view) view.sub.unsubscribe();
  view = null;
  $("view").hidden = true;
  $("empty").hidden = false;
  document.body.classList.add("at-home");
  $("skip").hidden = true;
  renderRuns();
  renderInbox();
}

function route() {
  if (takeToken()) { restart(); return; }
  if (!client) return;
  const audit = hashParams().has("audit");  // the audit view (audit.js): `#audit&person=...`
  $("audit-view").hidden = !audit;
  if (audit) {
    closeRun();
    $("empty").hidden = true;
    showAudit($("audit-view"), { api, params: hashParams() });
    return;
  }
  const runId = hashParams().get("run");
  if (runId) openRun(runId, hashParams().get("approval"));
  else closeRun();
}

let renderQueued = false;
function scheduleRender() {
  if (renderQueued) return;
  renderQueued = true;
  queueMicrotask(() => { renderQueued = false; render(); });
}

function renderAll() {
  renderStartForm();
  renderRuns();
  renderInbox();
  scheduleRender();
}

const STATUS_TEXT = { unknown: "loading…", gone: "not known to the hub", hidden: "no longer yours to see" };

/** The run's honest state, when it is not simply its status. */
function runProblem(s) {
  if (view.problem === "unknown") return "No such run, or not yours to see. Check the link, or pick a run from the list.";
  if (view.problem === "revoked") {
    return "Your renewed sign-in may no longer watch this run, so nothing more of it arrives here. What is shown is what came before; ask an admin if you still need it.";
  }
  if (view.problem === "forgotten") {
    return "The hub no longer knows this run (it restarted without keeping its runs). What is shown is what it had sent; nothing here can be decided.";
  }
  if (client && client.status !== "open" && s.status === "unknown") return "Cannot reach the hub: this run will load when it is back.";
  return null;
}

function render() {
  if (!view) return;
  const s = view.sub.state;
  const problem = runProblem(s);
  const gone = view.problem !== null;
  setText($("run-agent"), s.agent ? `${s.agent}${s.currentAgent ? ` · ${s.currentAgent}` : ""}` : view.runId);
  const meta = $("run-meta");
  const metaKey = `${s.startedBy?.sub}|${s.startedAt}`;
  if (meta.dataset.key !== metaKey) {
    meta.dataset.key = metaKey;
    meta.replaceChildren(...(s.startedBy ? [`Started by ${s.startedBy.name}${me && s.startedBy.sub === me.sub ? " (you)" : ""} · `, timeEl(s.startedAt), ` · ${view.runId}`] : [view.runId]));
  }
  $("run-input").hidden = !s.input;
  setText($("run-input"), s.input ? `Input: “${s.input}”` : "");
  const status = view.problem === "revoked" ? "hidden" : gone ? "gone" : s.status === "unknown" ? (problem ? "unreachable" : "unknown") : s.status;
  const st = $("status");
  const label = statusLabel(status, rejectedCount(s));
  st.className = `status ${label.cls}`;
  const waiting = s.status === "paused" && !gone ? ` · waiting for ${plural(s.pending.length, "approval", "approvals")}` : "";
  setText(st, (STATUS_TEXT[status] || label.text) + waiting);
  $("cancel").hidden = gone || !canCancel(s, me);
  $("cancel").disabled = client?.status !== "open";
  $("cancel").title = client?.status !== "open" ? "The hub is unreachable: cancelling is not possible now." : "";
  const msg = $("run-msg");
  msg.hidden = !problem;
  msg.classList.toggle("bad", Boolean(problem));
  setText(msg, problem || "");
  renderParticipants(view.sub.presence);
  renderOutcome(s);
  renderTranscript(s);
  discussion.update(s);
  if (!gone) {
    renderConversation(s, {
      runId: view.runId, me, client, talk: agents.find((a) => a.name === s.agent)?.talk, presence: view.sub.presence,
    });
  }
  if (view.lastStatus !== s.status) {
    if (view.lastStatus && TERMINAL.includes(s.status)) setText($("run-announce"), `Run ${s.status}.`);
    view.lastStatus = s.status;
    renderRuns();
  }
}

/** A finished run's outcome first: its answer (or why it ended), and each approval's verdict, by whom. */
function renderOutcome(s) {
  const box = $("outcome");
  const ended = TERMINAL.includes(s.status);
  box.hidden = !ended;
  if (!ended) return;
  box.dataset.status = s.status;
  const answer = s.status === "completed"
    ? [h("b", {}, "Answer: "), typeof s.output === "string" ? s.output : JSON.stringify(s.output, null, 2)]
    : s.status === "failed" ? [h("b", {}, "Failed: "), `${s.error?.code || "error"}: ${s.error?.message || ""}`]
      : [h("b", {}, "Cancelled"), s.cancelled?.by?.name ? ` by ${s.cancelled.by.name}` : ""];
  const aps = Object.values(s.approvals).map((ap) => {
    const vt = verdictText(s, ap);
    const parts = Array.isArray(vt) ? vt : [vt || ap.status];
    return h("li", { class: `verdict-line ${ap.status}`, dataset: { testid: "outcome-approval" } }, h("code", {}, ap.tool), ": ", ...parts.filter(Boolean));
  });
  const key = `${s.status}|${JSON.stringify(s.output)}|${aps.map((li) => li.textContent).join("|")}`;
  if (box.dataset.key === key) return;
  box.dataset.key = key;
  $("outcome-answer").replaceChildren(...answer);
  $("outcome-approvals").replaceChildren(...aps);
  $("outcome-approvals").hidden = !aps.length;
}

function renderParticipants(presence) {
  const list = people(presence).map((p) => h("li", { title: roleText(p), class: me && p.sub === me.sub ? "you" : "" },
    `${p.name} (${roleText(p)})`, me && p.sub === me.sub ? " · you" : "", p.connections > 1 ? ` ×${p.connections}` : ""));
  // Past the hub's limit only the people who may decide are listed; the others are counted.
  const unlisted = presence.people - new Set(Object.values(presence.entries).map((e) => e.sub)).size;
  if (presence.listed === "deciders" && unlisted > 0) {
    list.push(h("li", { class: "more", dataset: { testid: "more-watching" } }, `+ ${plural(unlisted, "viewer", "viewers")}`));
  }
  const key = list.map((li) => li.textContent).join("|");
  if ($("participants").dataset.key !== key) {
    $("participants").dataset.key = key;
    $("participants").replaceChildren(...list);
  }
}

/**
 * The order the story is told in: an approval's card (request, votes, decision) comes where it was requested; the
 * output of a tool that waited for approval comes after the run resumed (its decision), not above the card; the
 * "paused" note is folded into the card.
 */
function storyItems(s) {
  const out = [];
  const gated = (callId) => Boolean(s.toolCalls[callId]?.approvalId);
  for (const item of s.items) {
    if (item.kind === "paused") continue;
    out.push(item);
    if (item.kind === "resumed") {
      for (const d of item.decisions) {
        const ap = s.approvals[d.approvalId];
        if (ap?.callId && s.toolCalls[ap.callId]) out.push({ kind: "output", key: `out:${ap.callId}`, callId: ap.callId, approvalId: ap.approvalId });
      }
    }
  }
  // a gated call that ended without a resume (cancelled, expired with the run gone): its outcome still shows
  for (const call of Object.values(s.toolCalls)) {
    if (gated(call.callId) && call.output !== null && !out.some((i) => i.key === `out:${call.callId}`)) {
      out.push({ kind: "output", key: `out:${call.callId}`, callId: call.callId, approvalId: call.approvalId });
    }
  }
  return out;
}

/** Approvals of this run that wait for this person's decision (the pinned panel shows them). */
function mine(s) {
  if (!view || view.problem) return [];
  return Object.values(s.approvals).filter((ap) => canDecide(s, ap, me) || view.votes.has(ap.approvalId) && ap.status === "pending");
}

/** Keyed, in-place rendering: one DOM node per transcript item, created once, then updated. */
function renderTranscript(s) {
  const box = $("transcript");
  const seen = new Set();
  const pinned = new Set(mine(s).map((ap) => ap.approvalId));
  let prev = null;
  const place = (key, make, item, parent, after) => {
    seen.add(key);
    let node = view.nodes.get(key);
    if (!node) { node = make(); view.nodes.set(key, node); }
    const want = after ? after.nextSibling : parent.firstChild;
    if (want !== node.el || node.el.parentNode !== parent) parent.insertBefore(node.el, want);
    node.update(item, s);
    return node.el;
  };
  const items = storyItems(s);
  const last = lastMessage(s);
  for (const item of items) {
    if (item.kind === "approval" && pinned.has(item.approvalId)) {
      prev = place(`ph:${item.approvalId}`, () => buildPlaceholder(item.approvalId), item, box, prev);
      continue;
    }
    prev = place(item.key, () => build(item), { ...item, final: item === last && s.status === "completed" }, box, prev);
  }
  // the pinned decision panel: the same cards, moved to the top while they wait for you
  const cards = $("decide-cards");
  let pprev = null;
  for (const ap of mine(s)) {
    pprev = place(`ap:${ap.approvalId}`, () => buildApproval(ap.approvalId), { kind: "approval", approvalId: ap.approvalId }, cards, pprev);
  }
  for (const [key, node] of view.nodes) {
    if (!seen.has(key)) { node.el.remove(); view.nodes.delete(key); }
  }
  if (view.target) showTarget(s);
  const open = pinned.size > 0;
  renderConfirmations(s);
  $("decide").hidden = !open && !view.confirmations.size;
  setText($("decide-title"), open ? "Needs your decision" : "Your decision");
  $("skip").hidden = !open;
  setText($("skip"), open ? `Jump to your decision (${pinned.size})` : "Jump to your decision");
  for (const id of pinned) {
    if (!announced.has(id)) {
      announced.add(id);
      const ap = s.approvals[id];
      setText($("decide-live"), `Needs your decision: ${ap.agent || "the agent"} asks to run ${ap.tool}.`);
    }
  }
}

/** What this person just decided, said in the decision panel where they clicked (the card goes back to the story). */
function confirmationText(s, ap, c) {
  const tool = ap?.tool || "the tool";
  if (c.outcome === "voted") {
    const more = (ap?.tally?.needed ?? ap?.policy?.quorum ?? 1) - (ap?.tally?.approve ?? 0);
    return ap?.status === "pending"
      ? `Your approval of ${tool} is recorded: waiting for ${plural(Math.max(more, 1), "more approval", "more approvals")}.`
      : `Your approval of ${tool} is recorded; it is now ${ap?.status}.`;
  }
  return c.decision === "approve" ? `You approved ${tool}: the run goes on.`
    : `You rejected ${tool}: it does not run, and the agent is told${c.reason ? ` “${c.reason}”` : ""}.`;
}

function renderConfirmations(s) {
  const box = $("decide-done");
  const list = [...view.confirmations].map(([id, c]) => [id, confirmationText(s, s.approvals[id], c), c.decision]);
  const key = JSON.stringify(list);
  if (box.dataset.key === key) return;
  const fresh = list.length > (box.dataset.key ? JSON.parse(box.dataset.key).length : 0);
  box.dataset.key = key;
  box.replaceChildren(...list.map(([id, text, decision]) => {
    const dismiss = h("button", { type: "button", class: "small", dataset: { testid: "confirmation-dismiss" } }, "OK");
    dismiss.addEventListener("click", () => { view.confirmations.delete(id); scheduleRender(); });
    return h("div", { class: `confirmation ${decision}`, role: "status", tabindex: "-1", dataset: { testid: "decision-confirmation", approvalId: id } },
      h("span", {}, decision === "approve" ? "✓ " : "✗ ", text), dismiss);
  }));
  // the button that was clicked has gone with its card: the confirmation takes the focus, without scrolling
  // (unless the person is already typing elsewhere: only the body, a detached node or a button of this panel, such as
  // the one just clicked, gives it up)
  const a = document.activeElement;
  const idle = !a || a === document.body || !a.isConnected || (a.tagName === "BUTTON" && $("decide").contains(a));
  if (fresh && box.lastElementChild && idle) {
    box.lastElementChild.focus({ preventScroll: true });
  }
}

/** The approval a link named: its card (in the decision panel while it waits for you, else in the history) is
 * scrolled to, marked and focused, once. A link to an approval this run does not have says so. */
function showTarget(s) {
  const id = view.target;
  if (!s.approvals[id]) {
    if (view.synced) {
      view.target = null;
      banner(`This run has no approval ${id}: the link may be for another run.`);
    }
    return;
  }
  const card = [...document.querySelectorAll("#decide-cards [data-kind=approval], #transcript [data-kind=approval]")]
    .find((el) => el.dataset.approvalId === id);
  if (!card) return;
  view.target = null;
  for (const old of document.querySelectorAll(".item.targeted")) old.classList.remove("targeted");
  card.classList.add("targeted");
  card.tabIndex = -1;
  requestAnimationFrame(() => {
    card.scrollIntoView({ block: "center" });
    card.focus({ preventScroll: true });
  });
}

$("skip").addEventListener("click", (ev) => {
  ev.preventDefault();
  const panel = $("decide");
  panel.scrollIntoView({ block: "start" });
  (panel.querySelector("input, button:not(:disabled)") || panel).focus();
});

/** The run's last message, when the run completed with it as its answer (shown once, marked final). */
function lastMessage(s) {
  if (s.status !== "completed") return null;
  const msgs = s.items.filter((i) => i.kind === "message");
  const m = msgs.at(-1);
  return m && typeof s.output === "string" && m.text.trim() === s.output.trim() ? m : null;
}

function build(item) {
  switch (item.kind) {
    case "message": return buildText("message", "msg");
    case "reasoning": return buildText("reasoning", "reasoning");
    case "tool": return buildTool();
    case "output": return buildOutput();
    case "approval": return buildApproval(item.approvalId);
    case "handoff": return buildNote("handoff", (it) => [`Handoff: ${it.from ?? "?"} → ${it.to ?? "?"}${it.done ? "" : " …"}`]);
    case "started": return buildNote("started", (it) => [`${it.by?.name || "Someone"} started ${it.agent}${it.input ? `: “${it.input}”` : ""} · `, timeEl(it.ts)]);
    case "said": return buildSaid();
    case "interrupted": return buildNote("interrupted", interruptedText);
    case "resumed": return buildNote("resumed", (it, s) => it.turn ? [`Turn ${it.turn} `, timeEl(it.ts), `: the agent answers ${it.messages.length === 1 ? "the message" : `${it.messages.length} messages`} above`] : [`Resumed `, timeEl(it.ts), `: ${it.decisions.map((d) => {
      const ap = s.approvals[d.approvalId];
      const word = ap?.status === "expired" ? "expired (rejected)" : d.decision === "approve" ? "approved" : "rejected";
      return `${ap?.tool || "tool"} ${word}`;
    }).join(", ") || "no decisions"}`]);
    case "completed": return buildCompleted();
    case "failed": return buildNote("failed", (it) => [`Failed `, timeEl(it.ts), `: ${it.code}: ${it.message}`]);
    case "cancelled": return buildNote("cancelled", (it) => [`Cancelled${it.by?.name ? ` by ${it.by.name}` : ""}${it.mode === "after_turn" ? " (after the turn)" : ""} · `, timeEl(it.ts)]);
    case "mcp": return buildNote("mcp", (it) => [`MCP ${it.server || ""}: ${it.event.replace("_", " ")}${it.tool ? ` ${it.tool}` : ""}${it.tools ? ` (${it.tools.length} tools)` : ""}`]);
    default: return buildNote("other", (it) => [`${it.type}`]);
  }
}

function buildText(kind, cls) {
  const who = h("div", { class: "who" });
  const text = h("div", { class: "text", dataset: { testid: kind } });
  const el = h("div", { class: `item ${cls}`, dataset: { kind } }, who, text);
  return {
    el,
    update(it, s) {
      const name = it.agent || "Agent";
      setText(who, kind === "reasoning" ? `${name} is thinking` : it.final ? `${name} · final answer` : name);
      setText(text, it.text);
      el.classList.toggle("final", Boolean(it.final));
      if (it.final) text.dataset.final = "1"; else delete text.dataset.final;
      // no blinking cursor once the run has ended: a cut-off message stays cut off
      el.classList.toggle("streaming", !it.done && !TERMINAL.includes(s.status) && !view.problem);
    },
  };
}

const TOOL_STATUS = {
  preparing: "writing arguments…", called: "running…", awaiting_approval: "waiting for approval",
  approved: "approved · running…", rejected: "rejected: not run", cancelled: "cancelled: not run", done: "done",
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
      const gated = Boolean(call.approvalId);
      const ap = gated ? s.approvals[call.approvalId] : null;
      setText(name, call.tool || "tool");
      const st = ap?.status === "expired" ? "expired" : call.status;
      setText(chip, st === "expired" ? "expired: not run" : ((TERMINAL.includes(s.status) || view.problem) && ["called", "approved", "preparing"].includes(st) ? "stopped" : TOOL_STATUS[st] || st));
      chip.className = `chip ${st}`;
      setText(who, call.agent ? `called by ${call.agent}` : "");
      // a call that waits for approval shows its arguments on its card; its output comes after the decision
      args.hidden = gated;
      setText(args, gated ? "" : pretty(call.arguments));
      out.hidden = gated || call.output === null;
      setText(out, gated || call.output === null ? "" : `${call.output}${call.truncated ? " … (cut)" : ""}`);
      if (gated) setText(who, `${call.agent ? `called by ${call.agent} · ` : ""}arguments and decision on the approval below`);
    },
  };
}

/** The output of a tool that waited for approval, after its decision: a rejection or expiry looks like a failure. */
function buildOutput() {
  const who = h("div", { class: "who" });
  const out = h("pre", { class: "output", dataset: { testid: "tool-output" } });
  const el = h("div", { class: "item output", dataset: { kind: "output", testid: "gated-output" } }, who, out);
  return {
    el,
    update(it, s) {
      const call = s.toolCalls[it.callId];
      const ap = s.approvals[it.approvalId];
      const failed = ap && ap.status !== "approved";
      el.classList.toggle("failed", Boolean(failed));
      el.dataset.status = ap?.status || "";
      const what = ap?.status === "expired" ? "expired: not run" : ap?.status === "rejected" ? "rejected: not run" : ap?.status === "cancelled" ? "cancelled: not run" : "output";
      setText(who, `${call.tool || "tool"} · ${what}`);
      const text = call.output === null ? (failed ? "" : TERMINAL.includes(s.status) ? "No output: the run ended first." : "running…") : `${call.output}${call.truncated ? " … (cut)" : ""}`;
      setText(out, failed && call.output !== null ? `What the agent was told: ${text}` : text);
      out.hidden = !text;
    },
  };
}

function buildNote(kind, parts) {
  const el = h("div", { class: `item note ${kind}`, dataset: { kind, testid: kind === "handoff" ? "handoff" : undefined } });
  let key = null;
  return {
    el,
    update(it, s) {
      const content = parts(it, s);
      const k = content.map((c) => (typeof c === "string" ? c : c?.textContent ?? "")).join("");
      if (k !== key) { key = k; el.replaceChildren(...content.filter(Boolean)); }
    },
  };
}

/** The end of a completed run: the answer once (marked on the last message when it is the answer). */
function buildCompleted() {
  const note = h("div", { class: "who" });
  const text = h("div", { class: "text", dataset: { testid: "final-output" } });
  const el = h("div", { class: "item final", dataset: { kind: "completed" } }, note, text);
  return {
    el,
    update(it, s) {
      const out = typeof it.output === "string" ? it.output : JSON.stringify(it.output, null, 2);
      const shown = lastMessage(s) !== null;
      el.className = shown ? "item note completed" : "item final";
      note.replaceChildren(shown ? "Completed " : "Completed · final answer · ", timeEl(it.ts), shown ? ": the answer is the message above." : "");
      text.hidden = shown;
      setText(text, shown ? "" : out);
    },
  };
}

function pretty(args) {
  try {
    return JSON.stringify(JSON.parse(args), null, 2);
  } catch {
    return String(args ?? "");
  }
}

// ---------------------------------------------------------------------------------------------- approval cards

/** The arguments as readable fields: nested values folded, long strings wrapped. */
function fields(value, depth = 0) {
  if (value === null || typeof value !== "object") {
    return h("span", { class: typeof value === "string" ? "str" : "val" }, typeof value === "string" ? value : JSON.stringify(value));
  }
  if (Array.isArray(value)) {
    if (!value.length) return h("span", { class: "val" }, "(none)");
    const list = h("ul", {}, ...value.map((v) => h("li", {}, fields(v, depth + 1))));
    return depth > 0 || value.length > 8 ? h("details", { open: value.length <= 8 ? true : null }, h("summary", {}, plural(value.length, "item", "items")), list) : list;
  }
  const keys = Object.keys(value);
  if (!keys.length) return h("span", { class: "val" }, "(empty)");
  const dl = h("dl", { class: "ap-args" }, ...keys.flatMap((k) => [h("dt", {}, k), h("dd", {}, fields(value[k], depth + 1))]));
  return depth > 0 ? h("details", {}, h("summary", {}, plural(keys.length, "field", "fields")), dl) : dl;
}

function argsView(raw) {
  let parsed;
  try { parsed = JSON.parse(raw); } catch { parsed = undefined; }
  const readable = parsed === undefined ? h("pre", { class: "args" }, String(raw ?? "")) : fields(parsed);
  return h("div", { class: "ap-arguments", dataset: { testid: "arguments" } }, readable,
    h("details", { class: "raw" }, h("summary", {}, "Raw JSON"), h("pre", { dataset: { testid: "raw-arguments" } }, pretty(raw))));
}

/** The quorum in words, saying whether the run's starter counts as one of the people (README, count_starter). */
function quorumText(p) {
  if (p.quorum === 1) return p.allowSelf ? "1 approval needed" : "1 approval needed, not from the person who started the run";
  if (!p.allowSelf) return `${p.quorum} different people must approve, not the person who started the run`;
  if (p.countStarter === false) return `${p.quorum} people besides the run's starter must approve (the starter's approval does not count)`;
  return `${p.quorum} different people must approve; the run's starter counts as one of them`;
}

/** Why this person may or may not decide (the hub's own rules, said in words). */
function whyText(s, ap) {
  if (!me) return { ok: false, text: "" };
  const p = ap.policy;
  if (ap.status !== "pending" || TERMINAL.includes(s.status)) return null;
  if (view.problem) return { ok: false, text: "The hub no longer knows this run: nothing can be decided." };
  if (canDecide(s, ap, me)) {
    const via = me.roles.includes("admin") ? "you are an admin" : `you have the ${p.roles.find((r) => me.roles.includes(r))} role`;
    return { ok: true, text: `You may decide: ${via}${p.quorum > 1 ? `; ${p.quorum - ap.tally.approve} more approval${p.quorum - ap.tally.approve === 1 ? "" : "s"} needed` : ""}.` };
  }
  if (ap.votes.some((v) => v.by?.sub === me.sub)) return { ok: false, text: `You voted; waiting for ${plural(p.quorum - ap.tally.approve, "more approval", "more approvals")} from others.` };
  if (!hasRole(me, ...p.roles)) return { ok: false, text: `You cannot decide: it needs the ${p.roles.join(" or ")} role (or admin); you are ${roleText(me)}.` };
  if (!p.allowSelf && s.startedBy?.sub === me.sub) return { ok: false, text: "You cannot decide: you started this run, so someone else must approve it." };
  return { ok: false, text: "You cannot decide this one." };
}

function verdictText(s, ap) {
  const d = ap.decision;
  if (ap.status === "cancelled") return "Cancelled with the run: the tool did not run.";
  if (ap.status === "expired" || d?.by?.policy === "expired") return ["Expired ", timeEl(d?.decidedAt), ": no one decided in time, so it was rejected automatically."];
  if (!d) return null;
  if (d.decision === "approve") {
    const approvers = ap.votes.filter((v) => v.decision === "approve").map((v) => v.by?.name || "?");
    const who = names([...new Set(approvers.length ? approvers : [d.by?.name || "?"])]);
    return [`Approved by ${who}, ${ap.tally.approve || approvers.length} of ${ap.policy.quorum} · `, timeEl(d.decidedAt), d.reason ? `: “${d.reason}”` : ""];
  }
  return [`Rejected by ${d.by?.name || "?"} · `, timeEl(d.decidedAt), d.reason ? `: “${d.reason}”` : ""];
}

function buildPlaceholder(approvalId) {
  const link = h("a", { href: "#decide", dataset: { testid: "approval-placeholder" } });
  link.addEventListener("click", (ev) => { ev.preventDefault(); $("skip").click(); });
  const el = h("div", { class: "item placeholder", dataset: { kind: "approval-placeholder", approvalId } }, link);
  return {
    el,
    update(it, s) { setText(link, `${s.approvals[approvalId]?.tool || "A tool"} waits for your decision: see the panel at the top ↑`); },
  };
}

function buildApproval(approvalId) {
  const title = h("h3", { class: "ap-title" });
  const chip = h("span", { class: "chip" });
  const context = h("div", { class: "small", dataset: { testid: "context" } });
  const saysBody = h("span", {});
  const says = h("blockquote", { class: "ap-reason", dataset: { testid: "agent-reason" } }, h("b", {}, "The agent says: "), saysBody);
  const desc = h("blockquote", { class: "ap-desc", dataset: { testid: "tool-description" } });
  const argsBox = h("div", {});
  const policy = h("div", { class: "small muted", dataset: { testid: "policy" } });
  const why = h("div", { class: "why small", dataset: { testid: "why" } });
  const deadline = h("div", { class: "deadline small", dataset: { testid: "deadline" } });
  const votes = h("ol", { class: "votes small", dataset: { testid: "votes" } });
  const verdict = h("div", { class: "verdict", dataset: { testid: "decision" } });
  const state = h("div", { class: "ap-state small", role: "status", dataset: { testid: "vote-state" } });
  const error = h("div", { class: "ap-error small", role: "alert" });
  const reasonId = `reason-${approvalId}`;
  const reason = h("input", { id: reasonId, type: "text", maxlength: "2000", dataset: { testid: "reason" } });
  const approve = h("button", { type: "button", class: "primary", dataset: { testid: "approve" } }, "Approve");
  const reject = h("button", { type: "button", class: "danger-outline", dataset: { testid: "reject" } }, "Reject");
  const actions = h("div", { class: "actions" },
    h("label", { class: "reason", for: reasonId }, "Reason (optional; everyone sees it). Reject sends the call back with "
      + "instructions: the agent reads the reason as its answer, so say what to do instead.", reason),
    h("div", { class: "buttons" }, approve, reject),
    argumentsEditor(approvalId, view?.sub.state.approvals[approvalId], async (args) => {
      const v = view;
      await client.decide(v.runId, approvalId, "approve", reason.value.trim() || undefined, { arguments: args });
      v.confirmations.set(approvalId, { decision: "approve", reason: reason.value.trim() || undefined, outcome: "decided" });
      if (view === v) scheduleRender();
    }));
  const thread = threadView(talkCtx, approvalId, { approvalId, title: "Discussion" }); // beside the decision, and after it
  const el = h("article", { class: "item approval", dataset: { kind: "approval", testid: "approval", approvalId } },
    h("div", { class: "ap-head" }, title, chip), context, says, desc, argsBox, policy, why, deadline, votes, verdict, state, error, actions,
    thread.el);
  let argsKey = null;
  let descKey = null;

  const send = (word) => async () => {
    const v = view;
    if (!v || !client) return;
    v.errors.delete(approvalId);
    v.votes.set(approvalId, { decision: word, reason: reason.value.trim() || undefined, sending: true });
    scheduleRender();
    await sendVote(v, approvalId);
  };
  approve.addEventListener("click", send("approve"));
  reject.addEventListener("click", send("reject"));

  return {
    el,
    update(it, s) {
      const ap = s.approvals[approvalId];
      if (!ap) return;
      thread.update(s);
      const online = client?.status === "open";
      el.dataset.status = ap.status;
      el.classList.toggle("open", ap.status === "pending" && !TERMINAL.includes(s.status));
      setText(title, `${ap.agent || "The agent"} asks to run ${ap.tool}`);
      setText(chip, { pending: "waiting for a decision", approved: "approved", rejected: "rejected", expired: "expired: rejected", cancelled: "cancelled" }[ap.status] || ap.status);
      chip.className = `chip ${ap.status}`;
      const ctxKey = `${s.startedBy?.sub}|${s.input}|${ap.requestedAt}|${me?.sub}`;
      if (context.dataset.key !== ctxKey) {
        context.dataset.key = ctxKey;
        const starter = s.startedBy ? `started by ${s.startedBy.name}${me && s.startedBy.sub === me.sub ? " (you)" : ""}` : "";
        context.replaceChildren(`Requested `, timeEl(ap.requestedAt), ` in a run ${starter}${s.agent ? ` (agent ${s.agent})` : ""}`,
          s.input ? `, who asked: “${s.input}”` : "");
      }
      // the agent's own reason (its last message before asking), where the decision is made
      const reasonText = agentReason(s, approvalId);
      says.hidden = !reasonText;
      setText(saysBody, reasonText || "");
      if (descKey !== ap.description) {
        descKey = ap.description;
        desc.hidden = !ap.description;
        setText(desc, ap.description ? `${ap.tool}: ${ap.description}` : "");
      }
      if (argsKey !== ap.arguments) {
        argsKey = ap.arguments;
        argsBox.replaceChildren(argsView(ap.arguments));
      }
      const p = ap.policy;
      setText(policy, `Policy: ${p.roles.join(" or ")} (or admin) may decide · ${quorumText(p)} · one reject ends it`);
      const w = whyText(s, ap);
      why.hidden = !w || !w.text;
      if (w) { setText(why, w.text); why.className = `why small ${w.ok ? "yes" : "no"}`; }
      // The deadline: date, time and time zone, and the countdown on the hub's clock. At zero the hub's timer rejects
      // the call (approval.expired follows): no more buttons, whatever the events say.
      const ticking = Boolean(ap.status === "pending" && ap.expiresAt && !TERMINAL.includes(s.status) && !view.problem);
      const left = ticking ? secondsLeft(ap.expiresAt) : null;
      const lapsed = ticking && left === 0;
      deadline.hidden = !ticking;
      deadline.classList.toggle("lapsed", lapsed);
      if (ticking) {
        const d = new Date(ap.expiresAt);
        const text = lapsed ? "Expired: being rejected automatically…" : `Expires ${countdownText(ap.expiresAt)} · at ${shortTime(ap.expiresAt)}`;
        if (deadline.textContent !== text) deadline.replaceChildren(h("time", { datetime: d.toISOString(), title: `${fmtFull.format(d)} (${ZONE})` }, text));
      }
      const vkey = ap.votes.map((v) => `${v.by?.sub}:${v.decision}:${v.at}:${v.counted}`).join(",");
      if (votes.dataset.key !== vkey) {
        votes.dataset.key = vkey;
        votes.replaceChildren(...ap.votes.map((v) => h("li", {},
          `${v.by?.name || "?"}${me && v.by?.sub === me.sub ? " (you)" : ""} ${v.decision === "approve" ? "approved" : "rejected"}${v.counted === false ? " (the starter: not counted)" : ""} · `, timeEl(v.at), v.reason ? `: “${v.reason}”` : "")));
      }
      votes.hidden = !ap.votes.length || (p.quorum === 1 && ap.status !== "pending");
      const vt = verdictText(s, ap);
      verdict.hidden = !vt;
      if (vt) {
        const parts = Array.isArray(vt) ? vt : [vt];
        const k = parts.map((c) => (typeof c === "string" ? c : c?.textContent ?? "")).join("");
        if (verdict.dataset.key !== k) { verdict.dataset.key = k; verdict.replaceChildren(...parts.filter(Boolean)); }
      }
      // Honest states: a vote waiting to be sent, a hub that cannot be reached, a run the hub forgot.
      const mineVote = view.votes.get(approvalId);
      const allowed = canDecide(s, ap, me) && !lapsed && !view.problem;
      let stateText = "";
      if (mineVote && ap.status === "pending") {
        stateText = online ? `Sending your ${mineVote.decision} vote…`
          : `Your ${mineVote.decision} vote is waiting to be sent: the hub is unreachable. It is sent when the hub is back (unless someone decides first).`;
      } else if (allowed && !online) {
        stateText = "The hub is unreachable: a vote cannot be sent now. The buttons come back when it is.";
      }
      state.hidden = !stateText;
      setText(state, stateText);
      actions.hidden = !allowed && !(mineVote && ap.status === "pending");
      const usable = allowed && online && !mineVote;
      approve.disabled = reject.disabled = reason.disabled = !usable;
      const err = view.errors.get(approvalId) || "";
      error.hidden = !err;
      setText(error, err);
    },
  };
}

/** Send (or send again after a drop) a vote this page holds; it stays "waiting" until the hub answers. */
async function sendVote(v, approvalId) {
  const vote = v.votes.get(approvalId);
  if (!vote || !client || client.status !== "open" || vote.inflight) return;
  vote.inflight = true;
  try {
    const ack = await client.decide(v.runId, approvalId, vote.decision, vote.reason);
    v.votes.delete(approvalId);
    v.confirmations.set(approvalId, { decision: vote.decision, reason: vote.reason, outcome: ack?.outcome || "decided" });
  } catch (err) {
    if (err.code === "disconnected" || err.code === "timeout" || err.code === "closed") {
      vote.inflight = false; // kept: sent again once the hub is back and the run is synced
    } else {
      v.votes.delete(approvalId);
      v.errors.set(approvalId, err.frame?.winner ? err.message : `Not recorded: ${err.message}`);
    }
  }
  if (view === v) scheduleRender();
}

/** After a reconnect: votes that did not reach the hub are sent again, unless the log shows them (or a decision). */
function resendWaitingVotes() {
  if (!view || !client || client.status !== "open" || !view.synced) return;
  const s = view.sub.state;
  for (const [id, vote] of view.votes) {
    const ap = s.approvals[id];
    if (!ap || ap.status !== "pending" || ap.votes.some((x) => x.by?.sub === me?.sub)) { view.votes.delete(id); continue; }
    if (!vote.inflight) sendVote(view, id);
  }
  scheduleRender();
}

$("cancel").addEventListener("click", async () => {
  if (!view || !confirm("Cancel this run? Open approvals end, and no approved tool runs after this.")) return;
  try {
    await client.cancel(view.runId);
  } catch (err) {
    banner(`Could not cancel: ${err.message}`);
  }
});

for (const back of $("view").querySelectorAll('[data-testid="back"], [data-testid="back-top"]')) {
  back.addEventListener("click", (ev) => {
    ev.preventDefault();
    location.hash = "";
  });
}

// ---------------------------------------------------------------------------------------------- start

// For the browser tests and for curious people in the console: the client and the folded state of the open run.
// clockOffsetMs: how far the hub's clock is ahead of this browser's (from the hub's `now` in welcome and sync).
window.runcastMonitor = {
  get client() { return client; },
  get state() { return view ? view.sub.state : null; },
  get presence() { return view ? view.sub.presence : null; },
  get clockOffsetMs() { return client ? client.hubOffsetMs : 0; },
};

async function start() {
  if (!token) { // no #token=: the hub's sign-in session, if this browser has one
    const s = await signin.session();
    if (s?.user) {
      token = signin.sessionTokenFn();
      signin.addSignOut(document.querySelector("header.top"));
    } else {
      signin.showSignIn($("no-token"), s);
    }
  }
  $("no-token").hidden = Boolean(token);
  if (!token) {
    $("start").hidden = true;
    if (!authProblem) banner("");
    renderAll();
    return;
  }
  connect();
  route();
  renderAll();
}

window.addEventListener("hashchange", route);
// countdowns (in the cards and the inbox), once a second, on the hub's clock
setInterval(() => {
  if (view && view.sub.state.status === "paused") scheduleRender();
  if (client && client.inbox.approvals.size) renderInbox();
}, 1000);
start();
