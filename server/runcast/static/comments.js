// The discussion on the page (README, "Comments"): a thread beside each approval card (in the decision panel and,
// after the decision, in the history), the run's own threads under the transcript, `@` completion from the people
// the hub names for the run, and the person's mentions in the inbox column with a browser notification.
// The agent never sees any of it. Text is always set as text, never as HTML (strict CSP).

import { runThreads, threadComments } from "/client/src/runcast.js";

/** h("div", {class: "x"}, "text", child): text is always set as text. */
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

const fmt = new Intl.DateTimeFormat(undefined, { day: "numeric", month: "short", hour: "2-digit", minute: "2-digit" });
const when = (iso) => (iso ? fmt.format(new Date(iso)) : "");
const MAX_COMMENT = 4000; // comments.MAX_COMMENT

/**
 * The page's hooks: ctx.client() the RuncastClient, ctx.me() the welcome's user, ctx.runId() the open run.
 * @typedef {{client: () => any, me: () => any, runId: () => string | null}} Ctx
 */

// People `@` completes to, per run (asked once per run and again after a comment names someone new).
const peopleCache = new Map();
async function peopleOf(ctx, runId, fresh = false) {
  if (!fresh && peopleCache.has(runId)) return peopleCache.get(runId);
  try {
    const list = await ctx.client().people(runId);
    peopleCache.set(runId, list);
    return list;
  } catch {
    return peopleCache.get(runId) || [];
  }
}

/** A text box with `@` completion: the word being typed after "@" is matched against the people's handles and names. */
function composer(ctx, { placeholder, testid, onSend, initial = "", sendLabel = "Comment" }) {
  const box = h("textarea", { rows: "2", maxlength: String(MAX_COMMENT), placeholder, "aria-label": placeholder, dataset: { testid: `${testid}-box` } });
  box.value = initial;
  const list = h("ul", { class: "mention-list", role: "listbox", dataset: { testid: "mention-options" }, hidden: true });
  const send = h("button", { type: "button", class: "small", dataset: { testid: `${testid}-send` } }, sendLabel);
  const error = h("div", { class: "ap-error small", role: "alert", dataset: { testid: `${testid}-error` }, hidden: true });
  const word = () => {
    const upto = box.value.slice(0, box.selectionStart ?? box.value.length);
    const m = /(^|[^\w@])@([\w.\-]*)$/.exec(upto);
    return m ? { query: m[2], start: upto.length - m[2].length } : null;
  };
  const complete = async () => {
    const w = word();
    const runId = ctx.runId();
    if (!w || !runId) { list.hidden = true; return; }
    const q = w.query.toLowerCase();
    const people = (await peopleOf(ctx, runId)).filter((p) => p.handle.toLowerCase().startsWith(q) || p.name.toLowerCase().includes(q) || p.sub.toLowerCase().startsWith(q)).slice(0, 8);
    list.replaceChildren(...people.map((p) => h("li", { role: "option" }, h("button", {
      type: "button", class: "linkish small", dataset: { testid: "mention-option", handle: p.handle },
      onclick: () => {
        const cur = word();
        if (!cur) return;
        const at = box.selectionStart ?? box.value.length;
        box.value = `${box.value.slice(0, cur.start)}${p.handle} ${box.value.slice(at)}`;
        list.hidden = true;
        box.focus();
      },
    }, `@${p.handle}`, h("span", { class: "muted" }, ` ${p.name}`)))));
    list.hidden = people.length === 0;
  };
  box.addEventListener("input", complete);
  box.addEventListener("focus", () => { const r = ctx.runId(); if (r) peopleOf(ctx, r, true); });
  const go = async () => {
    const text = box.value.trim();
    if (!text) return;
    send.disabled = true;
    error.hidden = true;
    try {
      await onSend(text);
      box.value = "";
      list.hidden = true;
    } catch (err) {
      error.hidden = false;
      error.textContent = err.code === "bad_request" && err.frame?.unknown_mentions
        ? `Nobody here is called ${err.frame.unknown_mentions.join(", ")}: pick a name from the list.`
        : `${err.code || "error"}: ${err.message}`;
    } finally {
      send.disabled = false;
    }
  };
  send.addEventListener("click", go);
  box.addEventListener("keydown", (ev) => { if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) { ev.preventDefault(); go(); } });
  return { el: h("div", { class: "composer" }, box, list, h("div", { class: "actions" }, send), error), box };
}

/** One comment: author, time, text (or "deleted"), "edited", and Edit / Delete for its author. */
function commentEl(ctx, runId, c) {
  const me = ctx.me();
  const mine = me && c.by && c.by.sub === me.sub;
  const body = h("div", { class: "comment-text", dataset: { testid: "comment-text" } }, c.deleted ? "(comment deleted)" : c.text);
  const li = h("li", { class: `comment${c.deleted ? " deleted" : ""}`, dataset: { testid: "comment", commentId: c.commentId, author: c.by?.sub || "" } },
    h("div", { class: "small muted" }, h("b", {}, c.by?.name || "?"), mine ? " (you)" : "", ` · ${when(c.at)}`,
      c.edits ? ` · edited${c.edits > 1 ? ` ${c.edits} times` : ""}` : "", c.deleted && c.deletedBy ? ` · deleted by ${c.deletedBy.name}` : ""),
    body);
  if (mine && !c.deleted) {
    const edit = h("button", { type: "button", class: "linkish small", dataset: { testid: "comment-edit" } }, "Edit");
    const del = h("button", { type: "button", class: "linkish small", dataset: { testid: "comment-delete" } }, "Delete");
    edit.addEventListener("click", () => {
      const ed = composer(ctx, { placeholder: "Edit your comment", testid: "edit", initial: c.text, sendLabel: "Save",
        onSend: (text) => ctx.client().editComment(runId, c.commentId, text) });
      body.replaceWith(ed.el);
      ed.box.focus();
    });
    del.addEventListener("click", () => ctx.client().deleteComment(runId, c.commentId).catch(() => {}));
    li.append(h("div", { class: "comment-actions" }, edit, " ", del));
  }
  return li;
}

/**
 * A thread widget (for one approval, or one run thread): its comments, resolve / reopen, a reply box.
 * @param {Ctx} ctx @param {string} threadId @param {{approvalId?: string, title?: string}} opts
 */
export function threadView(ctx, threadId, opts = {}) {
  const list = h("ol", { class: "comments", dataset: { testid: "comments" } });
  const status = h("span", { class: "small muted", dataset: { testid: "thread-status" } });
  const toggle = h("button", { type: "button", class: "linkish small", dataset: { testid: "thread-resolve" } });
  const el = h("section", { class: "thread", dataset: { testid: "thread", threadId } },
    h("div", { class: "thread-head small" }, h("b", {}, opts.title || "Discussion"), " ", status, " ", toggle), list);
  const reply = composer(ctx, {
    placeholder: opts.approvalId ? "Comment on this approval (@ to mention someone)" : "Reply (@ to mention someone)",
    testid: "comment",
    // a run thread's id is its first comment's: replying to it joins the thread
    onSend: (text) => ctx.client().comment(ctx.runId(), text, opts.approvalId ? { approvalId: opts.approvalId } : { replyTo: threadId }),
  });
  el.append(reply.el);
  let key = null;
  let resolved = false;
  toggle.addEventListener("click", () => ctx.client().resolveThread(ctx.runId(), threadId, !resolved).catch(() => {}));
  return {
    el,
    update(s) {
      const t = s.threads[threadId];
      const comments = threadComments(s, threadId);
      resolved = Boolean(t && t.resolved);
      el.classList.toggle("resolved", resolved);
      toggle.hidden = !t;
      toggle.textContent = resolved ? "Reopen" : "Resolve";
      status.textContent = resolved ? `resolved${t.resolvedBy ? ` by ${t.resolvedBy.name}` : ""}` : comments.length ? `${comments.length} comment${comments.length === 1 ? "" : "s"}` : "";
      const k = `${ctx.me()?.sub}|` + comments.map((c) => `${c.commentId}:${c.edits}:${c.deleted}`).join(",");
      if (k !== key) {
        key = k;
        list.replaceChildren(...comments.map((c) => commentEl(ctx, s.runId, c)));
      }
    },
  };
}

/** The run's own threads (comments not on an approval), under the transcript, and a box to start one. */
export function runDiscussion(ctx) {
  const threads = h("div", { class: "run-threads" });
  const start = composer(ctx, { placeholder: "Comment on this run (@ to mention someone)", testid: "run-comment",
    onSend: (text) => ctx.client().comment(ctx.runId(), text) });
  const el = h("section", { class: "discussion", dataset: { testid: "discussion" } }, h("h2", {}, "Discussion"), threads, start.el);
  const views = new Map();
  return {
    el,
    reset() { views.clear(); threads.replaceChildren(); },
    update(s) {
      for (const t of runThreads(s)) {
        let v = views.get(t.threadId);
        if (!v) { v = threadView(ctx, t.threadId, { title: "Thread" }); views.set(t.threadId, v); threads.append(v.el); }
        v.update(s);
      }
    },
  };
}

/** The inbox column's "Mentions you" list, and a browser notification for a new mention while the tab is hidden. */
export function mentionsBox(ctx) {
  const list = h("ul", { class: "inbox", dataset: { testid: "mentions" } });
  const el = h("section", { class: "inbox-box mentions-box", "aria-labelledby": "mentions-title", hidden: true },
    h("h2", { id: "mentions-title" }, "Mentions you"), list);
  return {
    el,
    render(inbox) {
      const items = [...(inbox?.mentions || [])].reverse();
      el.hidden = items.length === 0;
      list.replaceChildren(...items.map((m) => h("li", {}, h("a", {
        href: `#run=${encodeURIComponent(m.run_id)}${m.approval_id ? `&approval=${encodeURIComponent(m.approval_id)}` : ""}`,
        dataset: { testid: "mention-item", runId: m.run_id, commentId: m.comment_id },
      }, h("b", {}, `${m.by?.name || "Someone"} mentions you`), h("span", { class: "muted small" }, ` · ${when(m.at)}: “${m.excerpt}”`)))));
    },
    notify(m) {
      if (document.visibilityState !== "hidden" || typeof Notification === "undefined" || Notification.permission !== "granted") return;
      try {
        const n = new Notification(`${m.by?.name || "Someone"} mentions you`, { body: m.excerpt, tag: m.mention_id });
        n.onclick = () => { window.focus(); location.hash = `run=${encodeURIComponent(m.run_id)}`; };
      } catch { /* some browsers only allow notifications from a service worker */ }
    },
  };
}
