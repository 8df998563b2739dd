// What the page says about runs and approvals, as plain functions of the data (no DOM): a run's title, its status in
// words, the agent's own reason for a call, and the key arguments of a call in one line.

const TITLE_MAX = 80;
const VALUE_MAX = 60;

/** Cut `text` to `max` characters, with an ellipsis when it was longer. */
export function cut(text, max) {
  const t = String(text ?? "");
  return t.length > max ? `${t.slice(0, max - 1).trimEnd()}…` : t;
}

/** A run's title: the first line of its input, else the agent's name. */
export function runTitle(input, agent) {
  const line = String(input ?? "").split("\n").map((l) => l.trim()).find(Boolean);
  return line ? cut(line, TITLE_MAX) : agent || "Run";
}

/**
 * A run's status in words and its chip's class: a completed run whose tool calls were rejected (or expired) is not
 * plainly "completed".
 * @param {string} status @param {number} rejected how many of its approvals were rejected or expired
 */
export function statusLabel(status, rejected = 0) {
  if (status === "completed" && rejected > 0) {
    return { text: `completed, ${rejected} tool${rejected === 1 ? "" : "s"} rejected`, cls: "completed partial" };
  }
  return { text: status, cls: status };
}

/** How many approvals of a folded run were rejected or expired. */
export function rejectedCount(state) {
  return Object.values(state.approvals || {}).filter((ap) => ap.status === "rejected" || ap.status === "expired").length;
}

/** The agent's own reason for a call: the text of its last message before the approval was requested, or null. */
export function agentReason(state, approvalId) {
  const items = state.items || [];
  const at = items.findIndex((i) => i.kind === "approval" && i.approvalId === approvalId);
  for (let k = (at < 0 ? items.length : at) - 1; k >= 0; k--) {
    const it = items[k];
    if (it.kind === "message" && String(it.text ?? "").trim()) return String(it.text).trim();
    if (it.kind === "approval" || it.kind === "resumed" || it.kind === "started") break;
  }
  return null;
}

function shortValue(v) {
  if (Array.isArray(v)) {
    const shown = v.slice(0, 3).map(shortValue).join(", ");
    return v.length > 3 ? `${shown}, +${v.length - 3} more` : shown || "(none)";
  }
  if (v !== null && typeof v === "object") return `{${Object.keys(v).length} fields}`;
  return cut(typeof v === "string" ? v : JSON.stringify(v), VALUE_MAX);
}

/** The first `max` arguments of a call in one line ("paths: a.tmp, b.tmp, +1 more"); the raw text, cut, if not JSON. */
export function keyArguments(raw, max = 2) {
  let parsed;
  try { parsed = JSON.parse(raw); } catch { return cut(raw, VALUE_MAX); }
  if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) return shortValue(parsed);
  const keys = Object.keys(parsed);
  const shown = keys.slice(0, max).map((k) => `${k}: ${shortValue(parsed[k])}`);
  return keys.length > max ? `${shown.join(" · ")} · +${keys.length - max} more` : shown.join(" · ");
}

/** Inbox order: the nearest deadline first (none last), then the oldest request. */
export function byDeadline(a, b) {
  const da = a.expires_at ? Date.parse(a.expires_at) : Infinity;
  const db = b.expires_at ? Date.parse(b.expires_at) : Infinity;
  if (da !== db) return da < db ? -1 : 1;
  return String(a.requested_at ?? "").localeCompare(String(b.requested_at ?? "")) || String(a.approval_id).localeCompare(String(b.approval_id));
}
