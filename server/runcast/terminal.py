"""Terminal commands for people who live in one: `runcast runs`, `start`, `watch`, `approvals`, `approve`, `reject`,
`audit`.

They talk to a hub over its HTTP API and WebSocket, as any client does, with the hub at RUNCAST_URL (or --url) and
the token from --token-file, RUNCAST_TOKEN or RUNCAST_TOKEN_FILE. Refusals are the API's own error codes, said in
words a person reads.

What they print:
- Colour on a terminal, none when piped or when NO_COLOR is set (Rich decides from the tty and the environment).
- Run data (inputs, tool arguments and outputs, model text, names, reasons) is untrusted: every printed string goes
  through `visible()`, which shows control characters instead of sending them (ESC as `^[`, like gh), and is
  printed as a Rich `Text`, never parsed as markup. `--json` prints exact JSON, with every control character escaped.
- Deadlines count down on the hub's clock (`HubClock`), never this machine's, so a countdown reads as on the page.

Exit codes: 0 done (for `watch` and `start`: the run completed); 1 the hub refused or could not be reached; 2 bad
usage; for `watch` and `start`, 3 the run failed and 4 the run was cancelled.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import stat
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, TextIO
from urllib.parse import urlsplit, urlunsplit

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_FAILED, EXIT_CANCELLED = 0, 1, 2, 3, 4
EXIT_INTERRUPTED = 130  # Ctrl-C, as a shell reports it
DEFAULT_URL = "http://127.0.0.1:8765"
LIVE = "queued,running,paused,resuming"  # the statuses of a run that has not ended (`status=live` on the hub)


class Refused(Exception):
    """The hub answered with an error (its code and message), or could not be reached (code `unreachable`)."""

    def __init__(self, code: str, message: str, detail: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.detail = code, message, detail or {}


class Usage(Exception):
    """The command cannot run as given (exit 2), with what to do instead."""


# ------------------------------------------------------------------------------------------------ what is printed

# Characters that would act on the terminal rather than show: C0 (ESC, BEL, BS, CR...), DEL and C1 (0x9b is a
# one-byte CSI for terminals that honour 8-bit controls), and the bidirectional overrides that reorder what is shown
# (Trojan Source). Tab and (where asked) newline are kept.
_BIDI = frozenset([0x200E, 0x200F, 0x061C, *range(0x202A, 0x202F), *range(0x2066, 0x206A)])


def _shown(cp: int) -> str:
    if cp < 0x20:
        return "^" + chr(cp + 0x40)  # caret notation: ESC is ^[, BEL ^G, CR ^M (as gh and `cat -v` show them)
    if cp == 0x7F:
        return "^?"
    if 0x80 <= cp <= 0x9F:
        return "^[" + chr(cp - 0x40)  # a C1 control as its 7-bit form: 0x9b (CSI) is ^[[
    return f"<U+{cp:04X}>"


_VISIBLE = {cp: _shown(cp) for cp in [*range(0x20), 0x7F, *range(0x80, 0xA0), *_BIDI] if cp != 0x09}
_VISIBLE_LINES = {cp: s for cp, s in _VISIBLE.items() if cp != 0x0A}


def visible(text: Any, newlines: bool = False) -> str:
    """The one sanitizer for everything the terminal commands print: control characters shown, never sent.
    `newlines`: keep line breaks (streamed model text, CSV); else they show as ^J (brief() folds them first)."""
    s = text if isinstance(text, str) else json.dumps(text, ensure_ascii=False)
    if newlines:
        s = s.replace("\r\n", "\n")
    return s.translate(_VISIBLE_LINES if newlines else _VISIBLE)


_JSON_ESCAPES = {cp: f"\\u{cp:04x}" for cp in [0x7F, *range(0x80, 0xA0), *_BIDI]}


def json_text(obj: Any, indent: int | None = None) -> str:
    """Exact JSON (it parses to `obj`), readable (UTF-8 kept), and safe on a terminal: the json module escapes C0
    controls itself; DEL, C1 and the bidi overrides are escaped here too."""
    return json.dumps(obj, ensure_ascii=False, indent=indent).translate(_JSON_ESCAPES)


def brief(text: Any, limit: int = 80) -> str:
    s = text if isinstance(text, str) else json.dumps(text, ensure_ascii=False)
    s = " ".join(s.split())
    return s if len(s) <= limit else s[: limit - 1] + "…"


def _who(by: Any) -> str:
    if not isinstance(by, dict):
        return "someone"
    if by.get("policy") == "expired":
        return "expiry (nobody decided in time)"
    return str(by.get("name") or by.get("sub") or "someone")


Part = str | tuple[Any, str]  # text, or (text, Rich style)


def _expiry(sep: str, when: str | None) -> list[Part]:
    """The parts that say when an approval expires (none when it does not)."""
    return [sep, (when, "yellow")] if when else []


class Out:
    """Where a command prints, through Rich: styles on a terminal only, and every part through visible() as a Text
    (never markup, never emoji codes), so run data can neither style nor steer the terminal."""

    def __init__(self, file: TextIO) -> None:
        from rich.console import Console

        self.file = file
        # soft_wrap: no line is cut or wrapped at Rich's idea of the width (a pipe would get 80 columns)
        self.console = Console(file=file, soft_wrap=True, highlight=False, markup=False, emoji=False)

    @property
    def is_terminal(self) -> bool:
        return self.console.is_terminal

    def text(self, *parts: Part, newlines: bool = False) -> Any:
        from rich.text import Text

        t = Text()
        for p in parts:
            s, style = (p, "") if isinstance(p, str) else p
            t.append(visible(s, newlines=newlines), style=style or None)
        return t

    def line(self, *parts: Part) -> None:
        self.console.print(self.text(*parts))

    def stream(self, text: str) -> None:
        """Model text as it streams: line breaks kept, no newline added."""
        self.console.print(self.text(text, newlines=True), end="")

    def json(self, obj: Any, indent: int | None = None) -> None:
        self.file.write(json_text(obj, indent) + "\n")
        self.file.flush()

    def row(self, fields: Iterable[Any]) -> None:
        """One tab-separated line for scripts (Rich would expand the tabs): each field on one line, through
        visible()."""
        self.file.write("\t".join(visible(brief(f, 10_000).replace("\t", " ")) for f in fields) + "\n")

    def raw_lines(self, text: str) -> None:
        """Text from the hub printed as it is (CSV), control characters shown; line ends kept, CRLF included."""
        self.file.write("\r\n".join(visible(piece, newlines=True) for piece in text.split("\r\n")))
        self.file.flush()

    def flush(self) -> None:
        self.file.flush()


# ------------------------------------------------------------------------------------------------ the hub's clock


def parse_time(iso: Any) -> float | None:
    if not isinstance(iso, str) or not iso:
        return None
    try:
        dt = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()


def left_text(left: int) -> str:
    """M:SS, or H:MM:SS from an hour: the page's format (static/app.js leftText)."""
    hours, rest = divmod(left, 3600)
    mm, ss = divmod(rest, 60)
    return f"{hours}:{mm:02d}:{ss:02d}" if hours else f"{mm}:{ss:02d}"


@dataclass
class HubClock:
    """The hub's time as this process can tell it: an offset from the local clock, set from the hub's `now` (the
    `welcome` and `sync` frames) or from an HTTP answer's `Date` header. A deadline is compared with the hub's time,
    so a wrong local clock, or an event replayed long after it was logged, never changes a countdown."""

    offset: float = 0.0  # hub time minus local time, in seconds
    exact: bool = False  # set from a frame's `now` (milliseconds), not a Date header (whole seconds)

    def from_iso(self, iso: Any) -> None:
        ts = parse_time(iso)
        if ts is not None:
            self.offset, self.exact = ts - time.time(), True

    def from_date_header(self, value: str | None) -> None:
        """HTTP dates have whole seconds: the hub's time was somewhere in that second; take its end, so a countdown
        is at most a second early, never late (with the middle, a fresh ten-minute deadline read "10:01"). A `now`
        from a frame is preferred once there is one."""
        if not value or self.exact:
            return
        try:
            self.offset = parsedate_to_datetime(value).timestamp() + 1.0 - time.time()
        except (TypeError, ValueError):
            pass

    def now(self) -> float:
        return time.time() + self.offset

    def seconds_left(self, iso: Any) -> int | None:
        """Whole seconds until `iso` on the hub's clock, 0 once passed (as the page counts: rounded up)."""
        ts = parse_time(iso)
        return None if ts is None else max(0, math.ceil(ts - self.now()))

    def deadline(self, iso: Any) -> str:
        """`expires in 9:58 (at 06:12:00 UTC)`, or `expired`: the same words and count as the page's inbox."""
        left = self.seconds_left(iso)
        if left is None:
            return ""
        if left == 0:
            return "expired"
        at = datetime.fromtimestamp(parse_time(iso) or 0, UTC).strftime("%H:%M:%S UTC")
        return f"expires in {left_text(left)} (at {at})"

    def ago(self, iso: Any) -> str:
        ts = parse_time(iso)
        if ts is None:
            return ""
        s = max(0, int(self.now() - ts))
        for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
            if s >= size:
                return f"{s // size}{unit} ago"
        return f"{s}s ago"


# ------------------------------------------------------------------------------------------------ the hub


def explain(err: Refused) -> str:
    """The API's error, in words."""
    d, m = err.detail, err.message
    if err.code == "already_decided":
        w = d.get("winner") or {}
        decision = str(w.get("decision") or "decided")
        verb = {"approve": "approved", "reject": "rejected"}.get(decision, decision)
        when = f" at {w['decided_at']}" if w.get("decided_at") else ""
        return f"too late: approval {w.get('approval_id', '')} was already {verb} by {_who(w.get('by'))}{when}."
    if err.code == "unauthenticated":
        return f"the hub did not accept your token ({m}). Set RUNCAST_TOKEN or pass --token-file."
    if err.code == "forbidden":
        return f"not allowed: {m}"
    if err.code == "not_found":
        return f"not found: {m}"
    if err.code == "not_pending":
        return f"nothing to decide: {m}"
    if err.code == "expired":
        return f"too late: {m}. It was rejected automatically."
    if err.code == "rate_limited":
        return f"slow down: {m}"
    if err.code == "busy":
        return f"the agent is busy: {m}"
    if err.code == "unreachable":
        return f"cannot reach the hub: {m}. Check RUNCAST_URL or --url."
    if err.code == "internal":
        return f"the hub had a problem: {m}"
    return f"{err.code}: {m}"


@dataclass
class Api:
    url: str
    token: str
    timeout: float = 15.0
    clock: HubClock = field(default_factory=HubClock)
    _client: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        import httpx

        self.url = self.url.rstrip("/")
        self._client = httpx.Client(timeout=self.timeout, headers={"Authorization": f"Bearer {self.token}"})

    def call(self, method: str, path: str, *, accept: str = "application/json", **kw: Any) -> Any:
        import httpx

        try:
            r = self._client.request(method, self.url + path, headers={"Accept": accept}, **kw)
        except httpx.HTTPError as exc:
            raise Refused("unreachable", f"{type(exc).__name__} {exc}".strip()) from None
        self.clock.from_date_header(r.headers.get("date"))
        if r.status_code >= 400:
            try:
                e = r.json()["error"]
                raise Refused(str(e.get("code")), str(e.get("message")), e)
            except (ValueError, KeyError, TypeError):
                raise Refused("internal", f"HTTP {r.status_code}: {r.text[:200]}") from None
        return r.text if not accept.endswith("json") else r.json()

    @property
    def ws_url(self) -> str:
        parts = urlsplit(self.url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + "/ws", "", ""))


# ------------------------------------------------------------------------------------------------ runs

STATUS_STYLE = {
    "queued": "dim",
    "running": "cyan",
    "paused": "bold yellow",
    "resuming": "cyan",
    "completed": "green",
    "failed": "bold red",
    "cancelled": "magenta",
}


def list_runs(
    api: Api,
    *,
    agent: str | None = None,
    status: str | None = None,
    started_by: str | None = None,
    q: str | None = None,
    needs_me: bool = False,
    limit: int = 30,
) -> list[dict[str, Any]]:
    params: dict[str, Any] = {"limit": limit}
    for k, v in (("agent", agent), ("status", status), ("started_by", started_by), ("q", q)):
        if v:
            params[k] = v
    if needs_me:
        params["needs_me"] = "1"
    return api.call("GET", "/api/runs", params=params)["runs"]


def cmd_runs(api: Api, args: argparse.Namespace, out: Out) -> int:
    started_by = args.started_by
    if args.mine:
        started_by = api.call("GET", "/api/me")["sub"]
    runs = list_runs(
        api,
        agent=args.agent,
        status=args.status,
        started_by=started_by,
        q=args.search,
        needs_me=args.needs_me,
        limit=args.limit,
    )
    if args.json:
        out.json(runs, indent=2)
        return EXIT_OK
    if not out.is_terminal:  # piped: one run a line, tab-separated, no header (as gh prints for scripts)
        for r in runs:
            out.row(
                (
                    r["run_id"],
                    r["agent"],
                    r["status"],
                    _who(r.get("started_by")),
                    r.get("created_at") or "",
                    r.get("input") or "",
                )
            )
        out.flush()
        return EXIT_OK
    if not runs:
        out.line(("No runs match.", "dim"))
        return EXIT_OK
    mine = {a["run_id"] for a in api.call("GET", "/api/approvals", params={"open": "1"})["approvals"]}
    from rich.table import Table

    table = Table(box=None, show_header=True, header_style="bold", pad_edge=False)
    for name, kw in (
        ("RUN", {"style": "bold", "no_wrap": True}),
        ("AGENT", {"no_wrap": True}),
        ("STATUS", {"no_wrap": True}),
        ("STARTED BY", {"no_wrap": True}),
        ("STARTED", {"no_wrap": True}),
        ("INPUT", {"no_wrap": True, "overflow": "ellipsis", "ratio": 1}),
    ):
        table.add_column(name, **kw)
    for r in runs:
        st: list[Part] = [(r["status"], STATUS_STYLE.get(r["status"], ""))]
        if r["run_id"] in mine:
            st.append((" · needs you", "bold yellow"))
        table.add_row(
            out.text(r["run_id"]),
            out.text((r["agent"], "cyan")),
            out.text(*st),
            out.text(_who(r.get("started_by"))),
            out.text((api.clock.ago(r.get("created_at")), "dim")),
            out.text(brief(r.get("input") or "", 200)),
        )
    out.console.print(table)
    return EXIT_OK


def cmd_start(api: Api, args: argparse.Namespace, out: Out) -> int:
    run_id = api.call("POST", "/api/runs", json={"agent": args.agent, "input": args.input})["run_id"]
    if args.detach:
        if args.json:
            out.json({"run_id": run_id})
        else:
            out.line(run_id)  # alone on its line, for `id=$(runcast start ... --detach)`
        return EXIT_OK
    if not args.json:
        out.line(
            ("✓ ", "green"),
            "started ",
            (run_id, "bold"),
            " (agent ",
            (args.agent, "cyan"),
            "); following it. Ctrl-C stops following; the run goes on.",
        )
    return asyncio.run(watch(api, run_id, Printer(out, api.clock, args.json)))


# ------------------------------------------------------------------------------------------------ approvals


def open_approvals(api: Api) -> list[dict[str, Any]]:
    """The open approvals this token may decide: the hub's inbox (`GET /api/approvals?open=1`, the hub's own rules:
    the policy's roles, self-approval, not voted yet), with each approval's run flattened in for printing."""
    items = api.call("GET", "/api/approvals", params={"open": "1"})["approvals"]
    return [
        i
        | {
            "run_agent": (i.get("run") or {}).get("agent"),
            "started_by": (i.get("run") or {}).get("started_by"),
            "input": (i.get("run") or {}).get("input"),
        }
        for i in items
    ]


def cmd_approvals(api: Api, args: argparse.Namespace, out: Out) -> int:
    aps = open_approvals(api)
    if args.json:
        out.json(aps, indent=2)
        return EXIT_OK
    if not aps:
        out.line("No open approvals you may decide.")
        return EXIT_OK
    for ap in aps:
        t = ap.get("tally") or {}
        need = f"{t.get('approve', 0)}/{t.get('needed', (ap.get('policy') or {}).get('quorum', 1))} approvals"
        exp = api.clock.deadline(ap.get("expires_at"))
        out.line(
            f"{ap['run_id']} {ap['approval_id']}  ",
            (ap["tool"], "bold yellow"),
            f"({brief(ap.get('arguments', ''), 60)})",
        )
        out.line(
            "    agent ",
            (str(ap.get("run_agent")), "cyan"),
            f", started by {_who(ap.get('started_by'))}: {brief(ap.get('input') or '', 60)}; {need}",
            *(_expiry(", ", exp)),
        )
        out.line(
            (
                f"    runcast approve {ap['run_id']} {ap['approval_id']}   |   runcast reject {ap['run_id']} "
                f"{ap['approval_id']} [--reason ...]",
                "dim",
            )
        )
    return EXIT_OK


def cmd_inbox(api: Api, args: argparse.Namespace, out: Out) -> int:
    """What needs you: the open approvals you may decide (review requested ones marked) and who mentioned you."""
    aps = open_approvals(api)
    mentions = api.call("GET", "/api/mentions")["mentions"]
    if args.json:
        out.json({"approvals": aps, "mentions": mentions}, indent=2)
        return EXIT_OK
    if not aps:
        out.line("No open approvals you may decide.")
    for ap in aps:
        label = (
            ("review requested", "bold magenta")
            if ap.get("review_requested")
            else ("needs your decision", "bold yellow")
        )
        out.line(
            label,
            f": {ap['run_id']} {ap['approval_id']}  {ap['tool']}({brief(ap.get('arguments', ''), 60)}), "
            f"started by {_who(ap.get('started_by'))}",
        )
    for m in reversed(mentions):
        where = f"{m['run_id']} approval {m['approval_id']}" if m.get("approval_id") else m["run_id"]
        out.line(
            ("mentions you", "bold cyan"),
            f": {_who(m.get('by'))} on {where} at {m.get('at')}: {brief(m.get('excerpt', ''), 100)}",
        )
        out.line((f"    runcast comment {m['run_id']} --reply-to {m['comment_id']} '...'", "dim"))
    return EXIT_OK


def cmd_comment(api: Api, args: argparse.Namespace, out: Out) -> int:
    body: dict[str, Any] = {"text": args.text}
    if args.approval:
        body["approval_id"] = args.approval
    if args.reply_to:
        body["reply_to"] = args.reply_to
    res = api.call("POST", f"/api/runs/{args.run}/comments", json=body)
    out.line(f"commented: {res['comment_id']} in thread {res['thread_id']}")
    return EXIT_OK


def edited_arguments(api: Api, args: argparse.Namespace) -> str | None:
    """Approve with changes: --arguments JSON (the whole edited object), or --set key=value (on the call's own
    arguments; a value that is JSON is taken as JSON, else as a string)."""
    if getattr(args, "arguments", None):
        return str(args.arguments)
    sets = getattr(args, "set", None) or []
    if not sets:
        return None
    detail = api.call("GET", f"/api/runs/{args.run}")
    ap = next((a for a in detail.get("pending_approvals") or [] if a.get("approval_id") == args.approval), None)
    if ap is None:
        raise Refused("not_pending", f"approval {args.approval} is not open in run {args.run}")
    value = json.loads(ap.get("arguments") or "{}")
    for item in sets:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise Refused("bad_request", f"--set takes key=value, got {item!r}")
        try:
            value[key] = json.loads(raw)
        except ValueError:
            value[key] = raw
    return json.dumps(value, ensure_ascii=False)


def cmd_decide(api: Api, args: argparse.Namespace, out: Out, decision: str) -> int:
    body: dict[str, Any] = {"decision": decision}
    if args.reason:
        body["reason"] = args.reason
    edited = edited_arguments(api, args) if decision == "approve" else None
    if edited is not None:
        body["arguments"] = edited
    res = api.call("POST", f"/api/runs/{args.run}/approvals/{args.approval}", json=body)
    verb = "approved" if decision == "approve" else "rejected"
    if res.get("outcome") == "decided" and edited is not None:
        out.line((f"✓ {verb} with changes", "green"), f": {args.approval} runs with {edited}; the run goes on.")
    elif res.get("outcome") == "decided":
        out.line(
            ((f"✓ {verb}", "green" if decision == "approve" else "red")),
            f": {args.approval} is settled; the run goes on.",
        )
    else:
        out.line(f"your vote to {decision} {args.approval} is counted; it needs more approvers before it is settled.")
    return EXIT_OK


AUDIT_FILTERS = ("since", "until", "person", "agent", "tool", "outcome")
OUTCOME_STYLE = {"approved": "green", "rejected": "red", "expired": "yellow", "cancelled": "magenta"}


def audit_entries(api: Api, args: argparse.Namespace) -> list[dict[str, Any]]:
    """GET /api/audit with the command's filters: up to --limit entries, following `next` as far as that needs."""
    params = {k: getattr(args, k) for k in AUDIT_FILTERS if getattr(args, k)}
    found: list[dict[str, Any]] = []
    cursor = None
    while len(found) < args.limit:
        page = api.call(
            "GET",
            "/api/audit",
            params=params | {"limit": min(1000, args.limit - len(found))} | ({"cursor": cursor} if cursor else {}),
        )
        found += page["entries"]
        cursor = page.get("next")
        if not cursor:
            break
    return found[: args.limit]


def cmd_audit(api: Api, args: argparse.Namespace, out: Out) -> int:
    across = [k for k in AUDIT_FILTERS if getattr(args, k)]
    if args.run is None or across:
        if args.run is not None:
            raise Refused(
                "bad_request",
                f"--{across[0]} filters the record across runs: leave out the run "
                f"({args.run}), or leave out the filters for that run's own record",
            )
        from .audit import entries_csv

        found = audit_entries(api, args)
        if args.csv:
            out.raw_lines(entries_csv(found))
        elif args.json:
            out.json({"entries": found}, indent=2)
        elif not out.is_terminal:  # piped: one decision a line, tab-separated
            for e in found:
                out.row(
                    (
                        e["settled_at"],
                        e["outcome"],
                        e["agent"],
                        e["tool"],
                        _who(e.get("settled_by")),
                        e["run_id"],
                        e["approval_id"],
                        e.get("reason") or "",
                    )
                )
            out.flush()
        elif not found:
            out.line(("No decisions match.", "dim"))
        else:
            for e in found:
                out.line(
                    (e["settled_at"], "dim"),
                    "  ",
                    (e["outcome"], OUTCOME_STYLE.get(e["outcome"], "")),
                    "  ",
                    (e["tool"], "bold"),
                    f" ({e['agent']}) by {_who(e.get('settled_by'))}  ",
                    (e["run_id"], "cyan"),
                    *((f"  \u201c{brief(e['reason'], 60)}\u201d",) if e.get("reason") else ()),
                )
        return EXIT_OK
    if args.csv:
        out.raw_lines(api.call("GET", f"/api/runs/{args.run}/audit", accept="text/csv", params={"format": "csv"}))
    else:
        out.json(api.call("GET", f"/api/runs/{args.run}/audit"), indent=2)
    return EXIT_OK


# ------------------------------------------------------------------------------------------------ watch


class Printer:
    """Turns run events into lines for a person (or, with --json, one event per line, exactly once each)."""

    def __init__(self, out: Out, clock: HubClock | None = None, as_json: bool = False) -> None:
        self.out, self.as_json = out, as_json
        self.clock = clock or HubClock()
        self.mid_line = False  # streamed text printed without a newline yet
        self._held: list[tuple[str, str]] = []  # who came, left or types, held while a message streams

    def presence(self, changes: list[tuple[str, str]]) -> None:
        """Who else watches the run (presence.Onlookers' changes): a dim line each, never inside streamed text, and
        not at all with --json (its lines are the run's events, each once)."""
        if self.as_json or not changes:
            return
        self._held += changes
        if not self.mid_line:
            self._tell_held()

    def _tell_held(self) -> None:
        held, self._held = self._held, []
        watching = [name for what, name in held if what == "watching"]
        if watching:
            self._line((f"· watching with you: {', '.join(watching)}", "dim"))
        for what, name in held:
            if what == "joined":
                self._line((f"· {name} is watching", "dim"))
            elif what == "left":
                self._line((f"· {name} left", "dim"))
            elif what == "typing":
                self._line((f"· {name} is typing…", "dim"))
        self.out.flush()

    def _line(self, *parts: Part) -> None:
        if self.mid_line:
            self.out.stream("\n")
            self.mid_line = False
        self.out.line(*parts)

    def event(self, ev: dict[str, Any]) -> None:
        if self.as_json:
            self.out.json(ev)
            return
        t, d = ev.get("type", ""), ev.get("data") or {}
        run_id = str(ev.get("run_id"))
        if t == "message.delta":
            self.out.stream(str(d.get("delta", "")))
            self.mid_line = True
        elif t == "message.completed":
            if self.mid_line:
                self.out.stream("\n")
                self.mid_line = False
        elif t == "run.started":
            self._line(
                ("▶ ", "bold"),
                (run_id, "bold"),
                ": agent ",
                (str(d.get("agent")), "cyan"),
                f", started by {_who(d.get('started_by'))}: {brief(d.get('input', ''))}",
            )
        elif t == "agent.updated":
            self._line(("· agent ", "dim"), (str(d.get("agent")), "cyan"))
        elif t == "tool.called":
            self._line(("→ ", "yellow"), (str(d.get("tool")), "yellow"), f"({brief(d.get('arguments', ''), 100)})")
        elif t == "tool.output":
            self._line(("← ", "dim"), brief(d.get("output", ""), 200))
        elif t in ("handoff.requested", "handoff.completed"):
            self._line((f"· handoff {d.get('from')} → {d.get('to')}", "dim"))
        elif t == "approval.requested":
            pol = d.get("policy") or {}
            exp = self.clock.deadline(d.get("expires_at"))
            ap = str(d.get("approval_id"))
            self._line(
                ("⏸ approval ", "bold yellow"),
                (ap, "bold yellow"),
                " needed: ",
                (str(d.get("tool")), "bold"),
                f"({brief(d.get('arguments', ''), 100)}) — roles {', '.join(pol.get('roles') or [])}, "
                f"{pol.get('quorum', 1)} approver(s)",
                *(_expiry("; ", exp)),
            )
            self._line((f"  runcast approve {run_id} {ap}  |  runcast reject {run_id} {ap} [--reason ...]", "dim"))
        elif t == "approval.voted":
            tl = d.get("tally") or {}
            self._line(
                f"· {_who(d.get('by'))} voted to {d.get('decision')} {d.get('approval_id')} "
                f"({tl.get('approve', 0)}/{tl.get('needed', 1)})" + (f": {d['reason']}" if d.get("reason") else "")
            )
        elif t == "approval.decided":
            ok = d.get("decision") == "approve"
            self._line(
                (f"✔ {d.get('approval_id')} {'approved' if ok else 'rejected'}", "green" if ok else "red"),
                f" by {_who(d.get('by'))}" + (f": {d['reason']}" if d.get("reason") else ""),
            )
        elif t == "approval.expired":
            self._line((f"⌛ {d.get('approval_id')} expired", "red"))
        elif t == "approval.cancelled":
            self._line((f"✖ {d.get('approval_id')} cancelled with the run", "magenta"))
        elif t == "comment.added":
            where = f" on {d['approval_id']}" if d.get("approval_id") else ""
            self._line(
                (f"💬 {_who(d.get('by'))}", "cyan"), f"{where} [{d.get('comment_id')}]: {brief(d.get('text', ''), 200)}"
            )
        elif t == "comment.edited":
            self._line(
                (f"💬 {_who(d.get('by'))}", "cyan"), f" edited {d.get('comment_id')}: {brief(d.get('text', ''), 200)}"
            )
        elif t == "comment.deleted":
            self._line((f"💬 {_who(d.get('by'))}", "cyan"), f" deleted {d.get('comment_id')}")
        elif t in ("thread.resolved", "thread.reopened"):
            self._line((f"💬 {_who(d.get('by'))}", "cyan"), f" {t.split('.')[1]} the thread {d.get('thread_id')}")
        elif t == "run.paused":
            self._line((f"⏸ paused, waiting for {len(d.get('pending') or [])} approval(s)", "yellow"))
        elif t == "run.resumed" and d.get("messages"):
            self._line((f"▶ turn {d.get('turn')}", "cyan"), f": the agent answers {len(d['messages'])} message(s)")
        elif t == "run.resumed":
            self._line(("▶ resumed", "cyan"))
        elif t == "message.said":
            queued = " (queued: the agent is busy)" if d.get("queued") else ""
            self._line((f"💬 {_who(d.get('by'))}", "bold"), f": {d.get('text', '')}{queued}  [{d.get('message_id')}]")
        elif t == "message.withdrawn":
            self._line(f"· {_who(d.get('by'))} withdrew {d.get('message_id')}")
        elif t == "turn.interrupted":
            self._line((f"■ turn {d.get('turn')} interrupted", "yellow"), f" by a message from {_who(d.get('by'))}")
        elif t == "run.completed":
            self._line(("■ completed", "bold green"))
        elif t == "run.failed":
            self._line(("■ failed", "bold red"), f": {d.get('code')}: {d.get('message')}")
        elif t == "run.cancelled":
            self._line(("■ cancelled", "bold magenta"), f" by {_who(d.get('by'))} ({d.get('mode')})")
        if self._held and not self.mid_line:
            self._tell_held()
        self.out.flush()

    def note(self, text: str) -> None:
        if not self.as_json:
            self._line((f"  ({text})", "dim"))
            self.out.flush()
        else:
            print(f"runcast watch: {visible(text)}", file=sys.stderr, flush=True)


ENDINGS = {"run.completed": EXIT_OK, "run.failed": EXIT_FAILED, "run.cancelled": EXIT_CANCELLED}


async def watch(api: Api, run_id: str, printer: Printer, since: int = 0, give_up_s: float = 300.0) -> int:
    """Stream a run until it ends; on a dropped connection reconnect with `since` = the last seq printed, so each
    event is printed exactly once. Gives up after `give_up_s` without a connection."""
    import websockets
    from websockets.typing import Subprotocol

    from .presence import Onlookers

    last = since
    delay = 0.2
    loop = asyncio.get_running_loop()
    onlookers: Onlookers | None = None  # who else watches (kept across reconnects: only changes are printed again)
    down_since: float | None = None
    while True:
        try:
            async with websockets.connect(
                api.ws_url, subprotocols=[Subprotocol("runcast.v1.json")], max_size=None, open_timeout=10
            ) as ws:
                await ws.send(json.dumps({"type": "hello", "token": api.token, "client": "runcast-watch"}))
                welcome = json.loads(await ws.recv())
                if welcome.get("type") != "welcome":
                    raise Refused(welcome.get("code", "unauthenticated"), welcome.get("message", "refused"), welcome)
                api.clock.from_iso(welcome.get("now"))  # the hub's time, where the hub sends it
                if onlookers is None:
                    onlookers = Onlookers(me=(welcome.get("user") or {}).get("sub"))
                await ws.send(json.dumps({"type": "subscribe", "run_id": run_id, "since": last, "id": "w"}))
                if down_since is not None:
                    printer.note(f"reconnected; resuming after event {last}")
                down_since, delay = None, 0.2
                async for raw in ws:
                    frame = json.loads(raw)
                    kind = frame.get("type")
                    if kind == "sync":
                        api.clock.from_iso(frame.get("now"))
                    if kind == "error":
                        if frame.get("code") == "log_trimmed":
                            first = int(frame.get("first_kept", last + 1))
                            printer.note(f"events {last + 1}..{first - 1} are no longer kept; going on from {first}")
                            last = first - 1
                            await ws.send(json.dumps({"type": "subscribe", "run_id": run_id, "since": last, "id": "w"}))
                            continue
                        if frame.get("id") == "w" or frame.get("run_id") == run_id:
                            raise Refused(str(frame.get("code")), str(frame.get("message")), frame)
                        continue
                    if kind == "presence" and frame.get("run_id") == run_id:
                        printer.presence(onlookers.apply(frame))
                        continue
                    if "seq" not in frame or frame.get("run_id") != run_id:
                        continue
                    seq = int(frame["seq"])
                    if seq <= last:
                        continue  # already printed (a replay overlapping what we had)
                    if seq != last + 1:  # a hole: ask again from the last one we have
                        await ws.send(json.dumps({"type": "subscribe", "run_id": run_id, "since": last, "id": "w"}))
                        continue
                    last = seq
                    printer.event(frame)
                    if kind in ENDINGS:
                        return ENDINGS[kind]
        except Refused:
            raise
        except (TimeoutError, OSError, websockets.WebSocketException) as exc:
            now = loop.time()
            if down_since is None:
                down_since = now
                printer.note(f"connection lost ({type(exc).__name__}); reconnecting")
            if now - down_since > give_up_s:
                raise Refused("unreachable", f"no connection for {give_up_s:.0f}s") from None
        await asyncio.sleep(delay * (0.5 + random.random()))
        delay = min(delay * 2, 5.0)


def interactive() -> bool:
    """A person at a terminal: both ends of the command are a tty."""
    return sys.stdin.isatty() and sys.stdout.isatty()


def pick_run(api: Api, out: Out) -> str:
    """`runcast watch` with no run: choose one of the live runs with the arrow keys (prompt_toolkit's `choice`)."""
    if not interactive():
        raise Usage(
            "no run given, and this is not an interactive terminal to choose one in: pass a run id "
            "(runcast watch RUN), or list runs with `runcast runs`"
        )
    live = list_runs(api, status=LIVE, limit=50)
    if not live:
        raise Usage("no live runs to choose from: pass a run id (runcast watch RUN); `runcast runs` lists every run")
    from prompt_toolkit.shortcuts import choice

    def label(r: dict[str, Any]) -> str:
        return visible(
            f"{r['run_id']}  {r['agent']:<14} {r['status']:<9} {_who(r.get('started_by'))}: "
            f"{brief(r.get('input') or '', 50)}"
        )

    try:
        return choice(
            message="Which run do you want to watch? (↑/↓, Enter; Ctrl-C to quit)",
            options=[(r["run_id"], label(r)) for r in live],
        )
    except EOFError:  # Ctrl-D: nothing chosen
        raise KeyboardInterrupt from None


def cmd_watch(api: Api, args: argparse.Namespace, out: Out) -> int:
    run_id = args.run or pick_run(api, out)
    api.call("GET", f"/api/runs/{run_id}")  # a clear not_found / forbidden before streaming (and the hub's clock)
    return asyncio.run(watch(api, run_id, Printer(out, api.clock, args.json), since=args.since, give_up_s=args.give_up))


# ------------------------------------------------------------------------------------------------ the token

TOKEN_ON_COMMAND_LINE = (
    "--token puts your token on the command line, where every user of this machine can read it "
    "(ps, /proc/PID/cmdline); use RUNCAST_TOKEN or --token-file instead"
)


def read_token_file(path: str, warn: Any) -> str:
    try:
        st = os.stat(path)
        with open(path, encoding="utf-8") as f:
            tok = f.read().strip()
    except OSError as exc:
        raise Usage(f"cannot read the token file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise Usage(f"the token file {path} is not text") from None
    if not tok:
        raise Usage(f"the token file {path} is empty")
    if stat.S_ISREG(st.st_mode) and st.st_mode & 0o077:
        warn(f"the token file {path} can be read by other users; chmod 600 {path}")
    return tok


def resolve_token(args: argparse.Namespace, env: dict[str, str] | os._Environ[str], warn: Any) -> str:
    """--token (warned: it is visible to every local user), --token-file, RUNCAST_TOKEN, RUNCAST_TOKEN_FILE, then the
    saved sign-in of `runcast login`."""
    if args.token:
        warn(TOKEN_ON_COMMAND_LINE)
        return args.token
    if args.token_file:
        return read_token_file(args.token_file, warn)
    if env.get("RUNCAST_TOKEN"):
        return env["RUNCAST_TOKEN"]
    if env.get("RUNCAST_TOKEN_FILE"):
        return read_token_file(env["RUNCAST_TOKEN_FILE"], warn)
    from .login import saved_for_command  # the sign-in `runcast login` saved, for this hub (or the last one)

    url, saved = saved_for_command(args.url, explicit_url=bool(env.get("RUNCAST_URL")), default_url=DEFAULT_URL)
    if saved:
        args.url = url
        return saved
    raise Usage(
        "no token: run `runcast login --hub URL`, set RUNCAST_TOKEN, or pass --token-file FILE (under "
        "`make demo`, `runcast serve` prints an export line for the terminal)"
    )


# ------------------------------------------------------------------------------------------------ CLI wiring


def add_commands(sub: Any, *more: Callable[[Any, Callable[[argparse.ArgumentParser, Any], None]], None]) -> None:
    """The terminal's commands; `more` adds others with the same client options (terminal_talk.add_talk_commands,
    handed in by cli.py: terminal_talk.py imports this module, so this one does not import it)."""

    def client(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--url", default=os.environ.get("RUNCAST_URL", DEFAULT_URL), help="the hub (default: $RUNCAST_URL)"
        )
        sp.add_argument(
            "--token-file",
            metavar="FILE",
            help="read your token from this file (else $RUNCAST_TOKEN, else the file $RUNCAST_TOKEN_FILE)",
        )
        sp.add_argument(
            "--token", help="your token (visible to other local users: prefer RUNCAST_TOKEN or --token-file)"
        )

    def on(sp: argparse.ArgumentParser, handler: Any) -> None:
        client(sp)
        sp.set_defaults(func=run_command, handler=handler)

    r = sub.add_parser(
        "runs", help="list runs, newest first (filters: --agent, --status, --started-by, --mine, --needs-me)"
    )
    r.add_argument("--agent", help="only this agent's runs")
    r.add_argument(
        "--status",
        metavar="S,S",
        help=f"only these statuses ({LIVE}, completed, failed, cancelled; 'live' for every run that has not ended)",
    )
    r.add_argument("--started-by", metavar="USER", help="only runs this user id started")
    r.add_argument("--mine", action="store_true", help="only runs you started")
    r.add_argument("--needs-me", action="store_true", help="only runs with an approval you may decide now")
    r.add_argument("--search", "-S", metavar="WORDS", help="only runs whose input, agent, id or starter has every word")
    r.add_argument("--limit", type=int, default=30, help="at most this many (default 30, up to 1000)")
    r.add_argument("--json", action="store_true", help="as JSON")
    on(r, cmd_runs)

    st = sub.add_parser("start", help="start a run and follow it (exit 0 completed, 3 failed, 4 cancelled)")
    st.add_argument("agent")
    st.add_argument("input")
    st.add_argument("--detach", "--no-follow", action="store_true", help="print the run id and exit, without following")
    st.add_argument("--json", action="store_true", help="print each event as one JSON line (with --detach: the id)")
    on(st, cmd_start)

    a = sub.add_parser("approvals", help="list the open approvals your token may decide")
    a.add_argument("--json", action="store_true", help="as JSON")
    on(a, cmd_approvals)

    ap = sub.add_parser("approve", help="approve a tool call")
    ap.add_argument("run")
    ap.add_argument("approval")
    ap.add_argument("--reason", help="shown to everyone watching")
    ap.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="approve with changes: set an argument of the call (JSON value, or a string); repeatable",
    )
    ap.add_argument("--arguments", metavar="JSON", help="approve with changes: the whole edited arguments object")
    on(ap, lambda api, args, out: cmd_decide(api, args, out, "approve"))

    rj = sub.add_parser(
        "reject",
        help="reject a tool call and send it back with instructions (the reason is the model's next instruction)",
    )
    rj.add_argument("run")
    rj.add_argument("approval")
    rj.add_argument(
        "--reason",
        help="why, and what to do instead (optional, as on the page): shown to everyone, and the "
        'model reads it as the call\'s answer (e.g. "only delete the .tar")',
    )
    on(rj, lambda api, args, out: cmd_decide(api, args, out, "reject"))

    ib = sub.add_parser("inbox", help="what needs you: open approvals you may decide, and who mentioned you")
    ib.add_argument("--json", action="store_true", help="as JSON")
    on(ib, cmd_inbox)

    cm = sub.add_parser(
        "comment", help="comment on a run or an approval (@handle mentions someone); the agent never sees it"
    )
    cm.add_argument("run")
    cm.add_argument("text")
    cm.add_argument("--approval", help="comment in this approval's thread")
    cm.add_argument("--reply-to", help="reply in the thread of this comment")
    on(cm, cmd_comment)

    w = sub.add_parser("watch", help="stream a run to the terminal; exit 0 completed, 3 failed, 4 cancelled")
    w.add_argument("run", nargs="?", help="the run (default: choose one of the live runs, on a terminal)")
    w.add_argument("--since", type=int, default=0, help="start after this seq (default: from the beginning)")
    w.add_argument("--json", action="store_true", help="print each event as one JSON line")
    w.add_argument("--give-up", type=float, default=300.0, help="seconds without a connection before giving up")
    on(w, cmd_watch)

    au = sub.add_parser(
        "audit",
        help="print a run's audit record (JSON, or --csv: one row per vote); without a run, "
        "the decisions across runs (GET /api/audit), newest first, by the filters",
    )
    au.add_argument("run", nargs="?", help="the run (leave out for the record across runs)")
    au.add_argument("--csv", action="store_true")
    au.add_argument("--json", action="store_true", help="across runs: the entries as JSON")
    au.add_argument("--since", help="across runs: settled at or after (ISO 8601, e.g. 2026-12-01)")
    au.add_argument("--until", help="across runs: settled at or before (ISO 8601)")
    au.add_argument("--person", help="across runs: a sub who started, voted on or decided it")
    au.add_argument("--agent", help="across runs: this agent's runs")
    au.add_argument("--tool", help="across runs: calls of this tool")
    au.add_argument("--outcome", help="across runs: approved, rejected, expired or cancelled")
    au.add_argument("--limit", type=int, default=100, help="across runs: at most this many (default 100)")
    on(au, cmd_audit)

    for add in more:
        add(sub, on)


def run_command(args: argparse.Namespace) -> None:
    def warn(text: str) -> None:
        print(f"runcast: warning: {text}", file=sys.stderr, flush=True)

    out = Out(sys.stdout)
    try:
        token = resolve_token(args, os.environ, warn)  # (first: a saved sign-in may name the hub)
        api = Api(args.url, token)
        code = args.handler(api, args, out)
    except Usage as err:
        sys.stdout.flush()
        print(f"runcast {args.cmd}: {visible(str(err))}", file=sys.stderr)
        code = EXIT_USAGE
    except Refused as err:
        sys.stdout.flush()
        print(f"runcast {args.cmd}: {visible(explain(err))}", file=sys.stderr)
        code = EXIT_REFUSED
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    raise SystemExit(code)
