"""The audit record of one run, as plain code: built from the run's record and its event log, as JSON or CSV.

    build(record, events, log_complete=True) -> dict   # GET /api/runs/{id}/audit, `runcast audit RUN`
    to_csv(audit) -> str                              # ... with Accept: text/csv or ?format=csv: one row per vote

The record says who voted (with the roles their token carried), the policy in force and how each approval was
settled; the log says when things happened and whether the tool then ran (its `tool.output` event, by call_id).

Argument digests: `arguments_sha256` is the SHA-256 (hex) of the arguments' canonical JSON encoding, so anyone can
recompute it from the arguments the tool received, whatever spacing or key order the model used:

    json.dumps(json.loads(arguments), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

That is: object keys sorted, no whitespace, strings as UTF-8 with only the characters JSON requires escaped,
numbers as Python writes them (integers exactly; floats in their shortest round-trip form). For the arguments
tools receive (objects of strings, integers, booleans, null, lists) this is the same bytes as RFC 8785 (JCS),
except that JCS orders keys by UTF-16 code units and this by code points (they differ only for keys with
characters beyond U+FFFF). Arguments that are not JSON at all are hashed as their raw UTF-8 bytes, and
`arguments_canonical` says false.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from typing import Any

from .approvals import Approval, changes
from .protocol import now_iso
from .runs import RunRecord

CANONICALIZATION = (
    "sha256(utf8(json.dumps(json.loads(arguments), sort_keys=True, separators=(',', ':'), "
    "ensure_ascii=False))); arguments that are not JSON: sha256 of their raw UTF-8 bytes"
)


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def arguments_digest(arguments: str | dict[str, Any] | list[Any]) -> tuple[str, bool]:
    """(sha256 hex, canonical?) of tool arguments given as the model's JSON text or as the parsed value."""
    if isinstance(arguments, str):
        try:
            value = json.loads(arguments)
        except ValueError:
            return hashlib.sha256(arguments.encode("utf-8")).hexdigest(), False
    else:
        value = arguments
    try:
        return hashlib.sha256(canonical_json(value)).hexdigest(), True
    except ValueError:  # NaN / Infinity: not JSON
        return hashlib.sha256(str(arguments).encode("utf-8")).hexdigest(), False


def _by_call(events: list[dict[str, Any]], type_: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for e in events:
        if e.get("type") == type_:
            cid = (e.get("data") or {}).get("call_id")
            if cid and cid not in out:
                out[cid] = e
    return out


def _by_approval(events: list[dict[str, Any]], type_: str) -> dict[str | None, dict[str, Any]]:
    return {(e.get("data") or {}).get("approval_id"): e for e in events if e.get("type") == type_}


# The discussion (comments.py) as the audit keeps it: every comment, edit, delete, resolve and reopen, in log order.
DISCUSSION = ("comment.added", "comment.edited", "comment.deleted", "thread.resolved", "thread.reopened")


def discussion(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for e in events:
        if e.get("type") in DISCUSSION:
            d = e.get("data") or {}
            item = {
                "type": e["type"],
                "seq": e.get("seq"),
                "at": e.get("ts"),
                "by": d.get("by"),
                "thread_id": d.get("thread_id"),
                "approval_id": d.get("approval_id"),
            }
            if "comment_id" in d:
                item["comment_id"] = d["comment_id"]
            if "text" in d:
                item["text"] = d["text"]
            out.append(item)
    return out


def _approval(
    ap: Approval,
    outputs: dict[str, dict[str, Any]],
    expired: dict[Any, dict[str, Any]],
    cancelled: dict[Any, dict[str, Any]],
    decided_ev: dict[Any, dict[str, Any]],
    talk: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    approved = ap.approved_arguments or ap.arguments  # approved with changes: what the tool ran with
    digest, canonical = arguments_digest(approved)
    try:
        parsed: Any = json.loads(approved)
    except ValueError:
        parsed = None
    d = ap.decided or {}
    if ap.status == "cancelled":
        outcome, how = "cancelled", "cancelled"
        at = (cancelled.get(ap.approval_id) or {}).get("ts")
        by = None
    elif ap.status == "pending":
        outcome, how, at, by = "pending", "open", None, None
    else:
        outcome = ap.status  # approved | rejected
        how = "expired" if (d.get("by") or {}).get("policy") == "expired" else "decided"
        at = d.get("decided_at") or (decided_ev.get(ap.approval_id) or expired.get(ap.approval_id) or {}).get("ts")
        by = d.get("by")
    # The tool's output, logged after the approval was settled (a rejected call's output is the message the model got).
    out = outputs.get(ap.call_id)
    ran = outcome == "approved" and out is not None
    execution: dict[str, Any] = {"ran": ran}
    if ran and out is not None:
        execution |= {
            "at": out["ts"],
            "seq": out["seq"],
            "output": out["data"].get("output"),
            "truncated": bool(out["data"].get("truncated")),
        }
    else:
        execution["why_not"] = {
            "rejected": "rejected" + (" by expiry" if how == "expired" else ""),
            "cancelled": "the run was cancelled",
            "pending": "still waiting for a decision",
        }.get(outcome, "the run ended before the tool ran")
        if out is not None:
            execution["told_model"] = out["data"].get("output")
    return {
        "approval_id": ap.approval_id,
        "call_id": ap.call_id,
        "tool": ap.tool,
        "agent": ap.agent,
        "arguments": approved,  # exactly as approved (the model's JSON text, or the approver's edit of it)
        "arguments_parsed": parsed,
        "original_arguments": ap.arguments,  # as the model wrote them
        "arguments_changes": changes(ap.arguments, ap.approved_arguments) if ap.approved_arguments else [],
        "arguments_sha256": digest,
        "arguments_canonical": canonical,
        "policy": ap.policy.model_dump(),
        "requested_at": ap.requested_at,
        "expires_at": now_iso(ap.expires_at) if ap.expires_at is not None else None,
        "votes": [
            {
                "sub": v.sub,
                "name": v.name,
                "roles": list(v.roles),
                "decision": v.decision,
                "reason": v.reason,
                "always": v.always,
                "at": v.at,
            }
            for v in ap.votes
        ],
        "outcome": outcome,  # approved | rejected | cancelled | pending
        "how": how,  # decided | expired | cancelled | open
        "settled_at": at,
        "settled_by": by,
        "reason": d.get("reason") if outcome in ("approved", "rejected") else None,
        "tally": ap.tally(),
        "tool_execution": execution,
        "comments": [c for c in talk or [] if c["approval_id"] == ap.approval_id],  # its thread
    }


def build(
    rec: RunRecord, events: list[dict[str, Any]], *, log_complete: bool = True, exported_at: str | None = None
) -> dict[str, Any]:
    """The audit document of one run. `events` are the run's logged event frames, ascending by seq."""
    outputs = _by_call(events, "tool.output")
    expired = _by_approval(events, "approval.expired")
    cancelled = _by_approval(events, "approval.cancelled")
    decided = _by_approval(events, "approval.decided")
    started = next((e for e in events if e.get("type") == "run.started"), None)
    end = next((e for e in reversed(events) if e.get("type") in ("run.completed", "run.failed", "run.cancelled")), None)
    ordered = sorted(rec.approvals.values(), key=lambda a: (a.requested_at, a.approval_id))
    talk = discussion(events)
    return {
        "kind": "runcast.audit",
        "version": 1,
        "exported_at": exported_at or now_iso(),
        "digest": CANONICALIZATION,
        "log_complete": log_complete,  # false: older events were trimmed (--max-log), so some times may be missing
        "run": {
            "run_id": rec.run_id,
            "agent": rec.agent,
            "started_by": rec.started_by,
            "input": rec.input,
            "created_at": rec.created_at,
            "status": rec.status,
            "ended_at": end["ts"] if end else None,
            "output": rec.output,
            "error": rec.error,
            "cancelled_by": (rec.cancel or {}).get("by") if rec.status == "cancelled" else None,
            "start_seq": started["seq"] if started else None,
        },
        "approvals": [_approval(a, outputs, expired, cancelled, decided, talk) for a in ordered],
        "comments": talk,  # every thread's, the approvals' too, in log order
    }


CSV_COLUMNS = [
    "run_id",
    "agent",
    "started_by_sub",
    "started_by_name",
    "input",
    "run_status",
    "approval_id",
    "call_id",
    "tool",
    "arguments",
    "arguments_sha256",
    "policy_roles",
    "policy_quorum",
    "policy_allow_self",
    "policy_expires_s",
    "requested_at",
    "expires_at",
    "vote_sub",
    "vote_name",
    "vote_roles",
    "vote_decision",
    "vote_reason",
    "vote_at",
    "outcome",
    "how",
    "settled_at",
    "settled_by",
    "tool_ran",
    "tool_ran_at",
    "tool_output",
    "comment_type",
    "comment_id",
    "thread_id",
    "comment_by_sub",
    "comment_by_name",
    "comment_at",
    "comment_text",
]


def rows(audit: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per vote; an approval nobody voted on (expired, cancelled, open) still gets one row, vote columns
    empty."""
    run = audit["run"]
    out = []
    for ap in audit["approvals"]:
        by = ap["settled_by"] or {}
        ex = ap["tool_execution"]
        base = {
            "run_id": run["run_id"],
            "agent": run["agent"],
            "started_by_sub": run["started_by"].get("sub"),
            "started_by_name": run["started_by"].get("name"),
            "input": run["input"],
            "run_status": run["status"],
            "approval_id": ap["approval_id"],
            "call_id": ap["call_id"],
            "tool": ap["tool"],
            "arguments": ap["arguments"],
            "arguments_sha256": ap["arguments_sha256"],
            "policy_roles": " ".join(ap["policy"]["roles"]),
            "policy_quorum": ap["policy"]["quorum"],
            "policy_allow_self": ap["policy"]["allow_self"],
            "policy_expires_s": ap["policy"].get("expires_s") if ap["policy"].get("expires_s") is not None else "",
            "requested_at": ap["requested_at"],
            "expires_at": ap["expires_at"] or "",
            "outcome": ap["outcome"],
            "how": ap["how"],
            "settled_at": ap["settled_at"] or "",
            "settled_by": by.get("sub") or by.get("policy") or "",
            "tool_ran": ex["ran"],
            "tool_ran_at": ex.get("at", ""),
            "tool_output": ex.get("output", ""),
        }
        for v in ap["votes"] or [None]:
            row = dict(base)
            if v is not None:
                row |= {
                    "vote_sub": v["sub"],
                    "vote_name": v["name"],
                    "vote_roles": " ".join(v["roles"]),
                    "vote_decision": v["decision"],
                    "vote_reason": v["reason"] or "",
                    "vote_at": v["at"],
                }
            out.append(row)
    # The discussion: one row per comment, edit, delete, resolve or reopen (run and approval columns say where).
    by_ap = {ap["approval_id"]: ap for ap in audit["approvals"]}
    for c in audit.get("comments", []):
        ap = by_ap.get(c["approval_id"]) or {}
        by = c.get("by") or {}
        out.append(
            {
                "run_id": run["run_id"],
                "agent": run["agent"],
                "started_by_sub": run["started_by"].get("sub"),
                "started_by_name": run["started_by"].get("name"),
                "input": run["input"],
                "run_status": run["status"],
                "approval_id": c["approval_id"] or "",
                "call_id": ap.get("call_id", ""),
                "tool": ap.get("tool", ""),
                "comment_type": c["type"],
                "comment_id": c.get("comment_id", ""),
                "thread_id": c["thread_id"],
                "comment_by_sub": by.get("sub", ""),
                "comment_by_name": by.get("name", ""),
                "comment_at": c["at"] or "",
                "comment_text": c.get("text", ""),
            }
        )
    return out


# A spreadsheet reads a cell starting with one of these as a formula (=HYPERLINK(...), +cmd|..., @SUM(...)), or, for
# tab and carriage return, as the start of one after it trims the cell. OWASP's CSV-injection guidance: prefix such a
# cell with a single quote, which every spreadsheet shows as text. (A reader that wants the raw value strips it.)
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """A cell as written to the CSV: booleans as true/false, text that a spreadsheet would run neutralized."""
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def to_csv(audit: dict[str, Any]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, restval="", lineterminator="\r\n")
    w.writeheader()
    for row in rows(audit):
        w.writerow({k: csv_cell(v) for k, v in row.items()})
    return buf.getvalue()
