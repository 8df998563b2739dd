// The audit view: GET /api/audit (settled approvals across runs, newest first) with its filters, each row linking to
// its run and approval. The filters live in the address (`#audit&person=alex&since=2026-12-01`), so a view can be
// shared and a reload comes back to it. Everything from the hub is set as text, never as HTML.

export const AUDIT_FILTERS = ["person", "agent", "tool", "outcome", "since", "until"];
const OUTCOMES = ["approved", "rejected", "expired", "cancelled"];

/** The GET /api/audit query for the filters in `params` (URLSearchParams of the hash); `until` as a date is the whole day. */
export function auditQuery(params, cursor = null) {
  const q = new URLSearchParams();
  for (const k of AUDIT_FILTERS) {
    let v = (params.get(k) || "").trim();
    if (!v) continue;
    if (k === "until" && /^\d{4}-\d{2}-\d{2}$/.test(v)) v = `${v}T23:59:59.999Z`;
    q.set(k, v);
  }
  if (cursor) q.set("cursor", cursor);
  return q;
}

function el(tag, attrs = {}, ...children) {
  const n = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") n.textContent = v;
    else if (k.startsWith("data-") || k === "for" || k === "aria-label") n.setAttribute(k, v);
    else n[k] = v;
  }
  for (const c of children) if (c) n.append(c);
  return n;
}

function who(by) {
  if (!by) return "—";
  if (by.policy === "expired") return "expiry";
  return by.name || by.sub || "someone";
}

function row(e) {
  const link = el("a", { href: `#run=${encodeURIComponent(e.run_id)}&approval=${encodeURIComponent(e.approval_id)}`,
    text: e.run_id, "data-testid": "audit-run-link" });
  const tr = el("tr", { "data-testid": "audit-row" });
  tr.dataset.run = e.run_id;
  tr.dataset.outcome = e.outcome;
  for (const [cls, content] of [["when", e.settled_at], ["outcome", e.outcome], ["tool", e.tool], ["agent", e.agent],
    ["by", who(e.settled_by)], ["started", who(e.started_by)], ["run", link], ["reason", e.reason || ""]]) {
    const td = el("td", { className: `audit-${cls}` });
    td.append(content);
    if (cls === "outcome") td.classList.add(`outcome-${e.outcome}`);
    tr.append(td);
  }
  return tr;
}

/** Render the view into `root`: the filter form (submitting it changes the address) and the first page of rows. */
export async function showAudit(root, { api, params }) {
  root.replaceChildren();
  const form = el("form", { className: "audit-filter", role: "search", "data-testid": "audit-filter" });
  for (const k of ["person", "agent", "tool"]) {
    form.append(el("input", { name: k, type: "search", placeholder: k === "person" ? "Person (sub)" : k[0].toUpperCase() + k.slice(1),
      value: params.get(k) || "", "aria-label": k, "data-testid": `audit-${k}` }));
  }
  const outcome = el("select", { name: "outcome", "aria-label": "Outcome", "data-testid": "audit-outcome" },
    el("option", { value: "", text: "Any outcome" }), ...OUTCOMES.map((o) => el("option", { value: o, text: o })));
  outcome.value = params.get("outcome") || "";
  form.append(outcome);
  for (const k of ["since", "until"]) {
    form.append(el("label", { className: "small", text: `${k} ` },
      el("input", { name: k, type: "date", value: (params.get(k) || "").slice(0, 10), "data-testid": `audit-${k}` })));
  }
  form.append(el("button", { type: "submit", className: "primary", text: "Show", "data-testid": "audit-submit" }));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const h = new URLSearchParams();
    h.set("audit", "");
    for (const k of AUDIT_FILTERS) if (form.elements[k].value) h.set(k, form.elements[k].value);
    location.hash = h.toString().replace("audit=", "audit");
  });
  const body = el("tbody", { "data-testid": "audit-rows" });
  const head = el("thead", {}, el("tr", {}, ...["Settled", "Outcome", "Tool", "Agent", "Decided by", "Started by", "Run", "Reason"]
    .map((h) => el("th", { scope: "col", text: h }))));
  const note = el("p", { className: "muted small", "data-testid": "audit-note" });
  const more = el("button", { type: "button", text: "More", hidden: true, "data-testid": "audit-more" });
  root.append(el("h1", { text: "Audit" }), form, el("table", { className: "audit-table", "data-testid": "audit-table" }, head, body), note, more);

  let cursor = null;
  const load = async () => {
    more.disabled = true;
    try {
      const page = await api(`/api/audit?${auditQuery(params, cursor)}`);
      for (const e of page.entries) body.append(row(e));
      cursor = page.next;
      more.hidden = !cursor;
      note.textContent = body.children.length ? "" : "No decisions match.";
    } catch (err) {
      note.textContent = err.message;
      note.dataset.code = err.code || "";
    } finally {
      more.disabled = false;
    }
  };
  more.addEventListener("click", load);
  await load();
}
