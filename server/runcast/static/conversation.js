// The run as a conversation (README, "Conversations"): the composer under the transcript, the queue of messages said
// while the agent is busy (each withdrawable by its author), the said/interrupted items of the transcript, "run again",
// and the approve-with-changes editor of an approval card, and who is typing (from presence, never the log). Text is
// always set as text, never as HTML.

import { TERMINAL, canSay, typingPeople } from "/client/src/runcast.js";

const TYPING_EVERY_MS = 2000; // while the person types, the composer renews its typing mark this often (the hub's lasts 6 s)

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "dataset") Object.assign(el.dataset, Object.fromEntries(Object.entries(v).filter(([, x]) => x !== undefined)));
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  el.append(...children.filter((c) => c !== null && c !== undefined && c !== false));
  return el;
}

const errorText = (err) => (err?.code ? `${err.code}: ${err.message}` : String(err?.message || err));

/** A message someone said to the agent, in the transcript (queued ones say so until a turn takes them). */
export function buildSaid() {
  const who = h("div", { class: "who" });
  const text = h("div", { class: "text", dataset: { testid: "said-text" } });
  const el = h("div", { class: "item said", dataset: { kind: "said", testid: "said" } }, who, text);
  return {
    el,
    update(it, s) {
      const waiting = it.queued && !it.withdrawn && s.queue.some((m) => m.messageId === it.messageId);
      const state = it.withdrawn ? " · withdrawn" : waiting ? " · queued: the agent answers when its turn ends" : "";
      who.textContent = `${it.by?.name || "Someone"} said${state}`;
      el.classList.toggle("withdrawn", it.withdrawn);
      if (text.textContent !== it.text) text.textContent = it.text;
    },
  };
}

export function interruptedText(it) {
  return [`Turn ${it.turn} interrupted by a message from ${it.by?.name || "someone"}; the agent goes on with it`];
}

/** "Dana is typing…", "Dana and Otto are typing…", "Dana, Otto and 2 others are typing…", or "". */
export function typingText(names) {
  if (names.length === 0) return "";
  if (names.length === 1) return `${names[0]} is typing…`;
  if (names.length === 2) return `${names[0]} and ${names[1]} are typing…`;
  const more = names.length - 2;
  return `${names[0]}, ${names[1]} and ${more} ${more === 1 ? "other" : "others"} are typing…`;
}

/**
 * The composer and the queue, under the transcript (created once, next to it). `ctx`: {runId, me, client, talk,
 * presence} where `talk` is the agent's talk policy from GET /api/agents (who may talk) and `presence` who watches.
 */
export function renderConversation(s, ctx) {
  let box = document.getElementById("conversation");
  if (!box) {
    box = buildComposer();
    document.getElementById("transcript").after(box);
  }
  box.update(s, ctx);
}

function buildComposer() {
  const queue = h("ul", { class: "queue", dataset: { testid: "queue" } });
  const queueBox = h("div", { class: "queue-box" }, h("div", { class: "small muted" }, "Waiting for the agent's next turn:"), queue);
  const text = h("textarea", { id: "say-text", rows: "2", maxlength: "4000", dataset: { testid: "say-text" },
    placeholder: "Say something to the agent… (Enter sends, Shift+Enter for a new line)" });
  const send = h("button", { type: "submit", class: "primary", dataset: { testid: "say-send" } }, "Send");
  const again = h("button", { type: "button", dataset: { testid: "rerun" } }, "Run again");
  const hint = h("p", { class: "small muted", dataset: { testid: "say-hint" } });
  const error = h("p", { class: "small bad", role: "alert", dataset: { testid: "say-error" } });
  const form = h("form", { class: "composer", dataset: { testid: "composer" }, autocomplete: "off" },
    h("label", { for: "say-text", class: "small muted" }, "Talk to the agent"), text, h("div", { class: "buttons" }, send, again));
  const typingLine = h("p", { class: "small muted typing", dataset: { testid: "typing" }, "aria-live": "polite" });
  const el = h("section", { id: "conversation", class: "conversation" }, typingLine, queueBox, form, hint, error);
  let ctx = null;
  const nodes = new Map();

  // Who is typing: the hub marks my presence entry while the box has text (renewed every TYPING_EVERY_MS while I
  // type; it lapses by itself when I stop), and unmarks it when the box empties, on send, on blur, on another run.
  let marked = null; // the run my typing mark is on, and when I last renewed it
  const stopTyping = () => {
    if (!marked) return;
    const { runId } = marked;
    marked = null;
    ctx?.client.typing(runId, false).catch(() => {}); // (best effort: the mark lapses anyway)
  };
  const typed = () => {
    if (!ctx || form.hidden || !text.value.trim()) { stopTyping(); return; }
    const now = Date.now();
    if (marked && marked.runId === ctx.runId && now - marked.at < TYPING_EVERY_MS) return;
    if (marked && marked.runId !== ctx.runId) stopTyping();
    marked = { runId: ctx.runId, at: now };
    ctx.client.typing(ctx.runId, true).catch(() => { marked = null; });
  };
  text.addEventListener("input", typed);
  text.addEventListener("blur", stopTyping);

  const submit = async (ev) => {
    ev?.preventDefault();
    const value = text.value;
    if (!ctx || !value.trim()) return;
    stopTyping();
    send.disabled = true;
    error.textContent = "";
    try {
      await ctx.client.say(ctx.runId, value);
      text.value = "";
    } catch (err) {
      error.textContent = errorText(err);
    } finally {
      send.disabled = false;
    }
  };
  form.addEventListener("submit", submit);
  text.addEventListener("keydown", (ev) => { if (ev.key === "Enter" && !ev.shiftKey) submit(ev); });
  again.addEventListener("click", async () => {
    if (!ctx) return;
    error.textContent = "";
    try {
      const runId = await ctx.client.rerun(ctx.runId);
      location.hash = `run=${encodeURIComponent(runId)}`;
    } catch (err) {
      error.textContent = errorText(err);
    }
  });

  el.update = (s, c) => {
    if (marked && marked.runId !== c.runId) stopTyping(); // (another run is shown now)
    ctx = c;
    const may = canSay(s, c.me, c.talk || {});
    form.hidden = !may;
    if (!may) stopTyping();
    const typists = c.presence ? typingPeople(c.presence, { except: c.me?.sub }).map((p) => p.name) : [];
    const line = typingText(typists);
    if (typingLine.textContent !== line) typingLine.textContent = line;
    typingLine.hidden = !line;
    again.hidden = !(TERMINAL.includes(s.status) && c.me?.roles.some((r) => r === "operator" || r === "admin"));
    hint.textContent = may ? (s.status === "completed" ? "The agent waits: what you say starts its next turn, in this run."
      : "The agent is busy: what you say waits in the queue, for everyone to see, until its turn ends.")
      : s.status === "failed" || s.status === "cancelled" ? "This run's conversation is over." : "";
    hint.hidden = !hint.textContent;
    queueBox.hidden = s.queue.length === 0;
    const seen = new Set();
    let prev = null;
    for (const m of s.queue) {
      seen.add(m.messageId);
      let li = nodes.get(m.messageId);
      if (!li) {
        const withdraw = h("button", { type: "button", class: "link", dataset: { testid: "withdraw" } }, "Withdraw");
        withdraw.addEventListener("click", async () => {
          try { await ctx.client.withdraw(ctx.runId, m.messageId); } catch (err) { error.textContent = errorText(err); }
        });
        li = h("li", { dataset: { testid: "queued", messageId: m.messageId } }, h("b", {}, `${m.by?.name || "Someone"}: `), m.text, " ",
          c.me && m.by?.sub === c.me.sub ? withdraw : null);
        nodes.set(m.messageId, li);
      }
      const want = prev ? prev.nextSibling : queue.firstChild;
      if (want !== li) queue.insertBefore(li, want);
      prev = li;
    }
    for (const [id, li] of nodes) if (!seen.has(id)) { li.remove(); nodes.delete(id); }
  };
  return el;
}

/**
 * Approve with changes, inside an approval card: the call's arguments as editable JSON; the hub checks them against
 * the tool's schema (`invalid_arguments` is shown here) and the tool runs with them. Only for a quorum of 1.
 * `decide(argumentsText)` sends the vote.
 */
export function argumentsEditor(approvalId, ap, decide) {
  const id = `edit-${approvalId}`;
  const area = h("textarea", { id, rows: "5", spellcheck: "false", dataset: { testid: "edit-arguments" } });
  const go = h("button", { type: "button", class: "primary", dataset: { testid: "approve-edited" } }, "Approve with these arguments");
  const error = h("p", { class: "small bad", role: "alert", dataset: { testid: "edit-error" } });
  const el = h("details", { class: "edit", dataset: { testid: "edit" } },
    h("summary", {}, "Approve with changes…"),
    h("label", { for: id, class: "small muted" }, "The call's arguments (JSON). The hub checks them against the tool's schema; the tool runs with them, and the record keeps both."),
    area, go, error);
  el.hidden = !ap || ap.policy.quorum > 1;
  el.addEventListener("toggle", () => {
    if (el.open && !area.value) {
      try { area.value = JSON.stringify(JSON.parse(ap.arguments), null, 2); } catch { area.value = ap.arguments || ""; }
    }
  });
  go.addEventListener("click", async () => {
    error.textContent = "";
    try {
      JSON.parse(area.value);
    } catch (err) {
      error.textContent = `not JSON: ${err.message}`;
      return;
    }
    go.disabled = true;
    try {
      await decide(area.value);
    } catch (err) {
      error.textContent = errorText(err);
    } finally {
      go.disabled = false;
    }
  });
  return el;
}
