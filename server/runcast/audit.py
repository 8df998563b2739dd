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
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .approvals import Approval, changes
from .protocol import ErrorCode, ProtocolError, now_iso
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


# ---------------------------------------------------------------------------------------------------------------
# The record across runs: GET /api/audit, `runcast audit --person ...`.
#
# Each approval gets one index entry when it settles (approved, rejected, expired or cancelled), written by the
# backend as it commits the record that settles it (memory: in commit; Redis: in flush.lua, the {P}-slot script of
# the same commit, which a sweeper re-runs from the stored record if the committing process died). The entry is
# self-contained (who started, voted and decided, the tool, the arguments' digest), so a query reads only the index:
# newest first, by settle time, through the most selective facet the filters name (person, tool, agent), so its
# cost is the page's, not the number of runs kept.

OUTCOMES = ("approved", "rejected", "expired", "cancelled")
FACETS = ("person", "tool", "agent")  # the order a query picks its index in: the most selective first
QUERY_LIMIT = (1, 1000, 100)  # ?limit=: min, max, default
SCAN_BATCH = 200  # index entries read per round trip
SCAN_MAX = 5000  # index entries one request examines at most; past that it answers a short page and a `next`
MAX_FILTER_CHARS = 200
ENTRY_COLUMNS = [
    "settled_at",
    "outcome",
    "run_id",
    "approval_id",
    "agent",
    "tool",
    "arguments_sha256",
    "decided_by_sub",
    "decided_by_name",
    "reason",
    "started_by_sub",
    "started_by_name",
    "voters",
    "requested_at",
    "link",
]


_LEAP_SECOND = re.compile(r"(T\d\d:\d\d:)60")


def _ms(iso: str | None) -> int | None:
    """An ISO 8601 / RFC 3339 time as epoch ms (`t`/`z` in either case; a leap second :60 read as :59)."""
    if not iso:
        return None
    try:
        dt = datetime.fromisoformat(_LEAP_SECOND.sub(r"\g<1>59", iso.upper()).replace("Z", "+00:00"))
    except (ValueError, OverflowError):
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def entry(rec: RunRecord, ap: Approval) -> dict[str, Any] | None:
    """The index entry of one settled approval (None while it is pending)."""
    if not ap.settled:
        return None
    d = ap.decided or {}
    by = d.get("by")
    if ap.status == "cancelled":
        outcome, at = "cancelled", ap.settled_at or d.get("decided_at") or rec.created_at
        by = (rec.cancel or {}).get("by")
    else:
        outcome = "expired" if (by or {}).get("policy") == "expired" else ap.status
        at = d.get("decided_at") or ap.settled_at or rec.created_at
    digest, _ = arguments_digest(ap.approved_arguments or ap.arguments)
    started = rec.started_by or {}
    people = {started.get("sub")} | {v.sub for v in ap.votes} | {(by or {}).get("sub")}
    return {
        "run_id": rec.run_id,
        "approval_id": ap.approval_id,
        "call_id": ap.call_id,
        "agent": rec.agent,
        "tool": ap.tool,
        "arguments_sha256": digest,
        "outcome": outcome,
        "settled_at": at,
        "settled_by": by,
        "reason": d.get("reason") if outcome != "cancelled" else None,
        "started_by": {"sub": started.get("sub"), "name": started.get("name")},
        "votes": [{"sub": v.sub, "name": v.name, "decision": v.decision, "at": v.at} for v in ap.votes],
        "requested_at": ap.requested_at,
        "policy_roles": list(ap.policy.roles),
        "people": sorted(p for p in people if p),
        "link": f"/#run={rec.run_id}&approval={ap.approval_id}",
    }


def entries(rec: RunRecord) -> list[dict[str, Any]]:
    return [e for ap in rec.approvals.values() if (e := entry(rec, ap)) is not None]


def member(e: dict[str, Any]) -> str:
    """The entry's name in the index (unique): run and approval."""
    return f"{e['run_id']} {e['approval_id']}"


def score(e: dict[str, Any]) -> int:
    """Its place in the index: the settle time in milliseconds."""
    return _ms(e["settled_at"]) or 0


def facets(e: dict[str, Any]) -> list[tuple[str, str]]:
    """The facet indexes the entry is in: each person in it, its tool, its agent."""
    return [("person", p) for p in e["people"]] + [("tool", e["tool"]), ("agent", e["agent"])]


@dataclass
class Query:
    since_ms: int = -(2**62)
    until_ms: int = 2**62
    person: str | None = None
    agent: str | None = None
    tool: str | None = None
    outcome: str | None = None
    limit: int = QUERY_LIMIT[2]
    before: tuple[int, str] | None = None  # the cursor: the last entry of the previous page

    @property
    def facet(self) -> tuple[str, str] | None:
        for name in FACETS:
            value = getattr(self, name)
            if value:
                return name, value
        return None

    def matches(self, e: dict[str, Any]) -> bool:
        return (
            (self.person is None or self.person in e["people"])
            and (self.agent is None or e["agent"] == self.agent)
            and (self.tool is None or e["tool"] == self.tool)
            and (self.outcome is None or e["outcome"] == self.outcome)
        )


def _bad(field: str, message: str) -> ProtocolError:
    return ProtocolError(ErrorCode.BAD_REQUEST, message, field=field)


def parse_time(field: str, raw: str) -> int:
    """An ISO 8601 date or date-time (no zone: UTC) as epoch milliseconds, or bad_request naming the field."""
    ms = _ms(raw) if len(raw) <= 40 else None
    if ms is None:
        raise _bad(field, f"'{field}' must be an ISO 8601 date or date-time, like 2026-12-01 or 2026-12-01T09:00:00Z")
    return ms


# A cursor is a position in the index (the last entry of a page): its score and its member's UTF-8 as hex. Any
# well-formed one is a position (CURSOR_PATTERN); clients treat it as opaque.
CURSOR_PATTERN = r"^[0-9]{1,16}\.(?:[0-9a-f]{2}){0,400}$"
_CURSOR = re.compile(CURSOR_PATTERN)


def encode_cursor(last: tuple[int, str]) -> str:
    return f"{last[0]}.{last[1].encode('utf-8').hex()}"


def decode_cursor(raw: str) -> tuple[int, str]:
    if not _CURSOR.match(raw):
        raise _bad("cursor", "'cursor' is not one this hub gave out: pass the `next` of the previous page")
    s, m = raw.split(".", 1)
    return int(s), bytes.fromhex(m).decode("utf-8", errors="replace")


def parse_query(params: Any, limit: int) -> Query:
    """GET /api/audit's filters (a mapping of query parameters) as a Query; nonsense gets bad_request with its field."""
    q = Query(limit=limit)
    # since, until, outcome and cursor given empty are nonsense too (a person, agent or tool given empty: no filter)
    if params.get("since") is not None:
        q.since_ms = parse_time("since", params["since"])
    if params.get("until") is not None:
        q.until_ms = parse_time("until", params["until"])
    for name in ("person", "agent", "tool"):
        value = params.get(name)
        if value:
            if len(value) > MAX_FILTER_CHARS:
                raise _bad(name, f"'{name}' is over {MAX_FILTER_CHARS} characters")
            setattr(q, name, value)
    outcome = params.get("outcome")
    if outcome is not None:
        if outcome not in OUTCOMES:
            raise _bad("outcome", f"'outcome' must be one of {', '.join(OUTCOMES)}")
        q.outcome = outcome
    if params.get("cursor") is not None:
        q.before = decode_cursor(params["cursor"])
    return q


ScanFn = Callable[
    [tuple[str, str] | None, int, int, tuple[int, str] | None, int], Awaitable[list[tuple[int, str, dict[str, Any]]]]
]


async def search(
    scan: ScanFn, q: Query, visible: Callable[[dict[str, Any]], bool]
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of entries, newest first, and the cursor of the next (None: no more). `scan(facet, since_ms,
    until_ms, before, count)` is the backend's: up to `count` index entries strictly before `before`, newest first.
    A page may hold fewer than `limit` entries when many were filtered out (SCAN_MAX): follow `next` until None."""
    out: list[dict[str, Any]] = []
    before, seen = q.before, 0
    while True:
        batch = await scan(q.facet, q.since_ms, q.until_ms, before, SCAN_BATCH)
        for s, m, e in batch:
            before, seen = (s, m), seen + 1
            if q.matches(e) and visible(e):
                out.append(e)
                if len(out) == q.limit:
                    return out, encode_cursor(before)
        if len(batch) < SCAN_BATCH:
            return out, None
        if seen >= SCAN_MAX:
            return out, encode_cursor(before) if before else None


def public(e: dict[str, Any]) -> dict[str, Any]:
    """An entry as GET /api/audit answers it (without the index's bookkeeping)."""
    return {k: v for k, v in e.items() if k not in ("people", "policy_roles")}


def entries_csv(items: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=ENTRY_COLUMNS, restval="", lineterminator="\r\n")
    w.writeheader()
    for e in items:
        by = e.get("settled_by") or {}
        row = {
            "settled_at": e["settled_at"],
            "outcome": e["outcome"],
            "run_id": e["run_id"],
            "approval_id": e["approval_id"],
            "agent": e["agent"],
            "tool": e["tool"],
            "arguments_sha256": e["arguments_sha256"],
            "decided_by_sub": by.get("sub") or by.get("policy") or "",
            "decided_by_name": by.get("name") or "",
            "reason": e.get("reason") or "",
            "started_by_sub": e["started_by"].get("sub") or "",
            "started_by_name": e["started_by"].get("name") or "",
            "voters": " ".join(f"{v['sub']}:{v['decision']}" for v in e["votes"]),
            "requested_at": e["requested_at"],
            "link": e["link"],
        }
        w.writerow({k: csv_cell(v) for k, v in row.items()})
    return buf.getvalue()
