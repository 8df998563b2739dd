"""Terminal commands for people who live in one: `runcast approvals`, `approve`, `reject`, `watch`, `audit`.

They talk to a hub over its HTTP API and WebSocket, as any client does, with the token in RUNCAST_TOKEN (or --token)
and the hub at RUNCAST_URL (or --url). Refusals are the API's own error codes, said in words a person reads.

Exit codes: 0 done (for `watch`: the run completed); 1 the hub refused or could not be reached; 2 bad usage;
for `watch`, 3 the run failed and 4 the run was cancelled.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
from dataclasses import dataclass, field
from typing import Any, TextIO
from urllib.parse import urlsplit, urlunsplit

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_FAILED, EXIT_CANCELLED = 0, 1, 2, 3, 4
DEFAULT_URL = "http://127.0.0.1:8765"


class Refused(Exception):
    """The hub answered with an error (its code and message), or could not be reached (code `unreachable`)."""

    def __init__(self, code: str, message: str, detail: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.detail = code, message, detail or {}


def _who(by: Any) -> str:
    if not isinstance(by, dict):
        return "someone"
    if by.get("policy") == "expired":
        return "expiry (nobody decided in time)"
    return str(by.get("name") or by.get("sub") or "someone")


def explain(err: Refused) -> str:
    """The API's error, in words."""
    d, m = err.detail, err.message
    if err.code == "already_decided":
        w = d.get("winner") or {}
        verb = {"approve": "approved", "reject": "rejected"}.get(w.get("decision"), w.get("decision") or "decided")
        when = f" at {w['decided_at']}" if w.get("decided_at") else ""
        return f"too late: approval {w.get('approval_id', '')} was already {verb} by {_who(w.get('by'))}{when}."
    if err.code == "unauthenticated":
        return f"the hub did not accept your token ({m}). Set RUNCAST_TOKEN or pass --token."
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


def brief(text: Any, limit: int = 80) -> str:
    s = text if isinstance(text, str) else json.dumps(text, ensure_ascii=False)
    s = " ".join(s.split())
    return s if len(s) <= limit else s[: limit - 1] + "…"


# ------------------------------------------------------------------------------------------------ approvals


def open_approvals(api: Api) -> list[dict[str, Any]]:
    """The open approvals this token may decide: the hub's inbox (`GET /api/approvals?open=1`, the hub's own rules:
    the policy's roles, self-approval, not voted yet), with each approval's run flattened in for printing."""
    items = api.call("GET", "/api/approvals", params={"open": "1"})["approvals"]
    return [i | {"run_agent": (i.get("run") or {}).get("agent"), "started_by": (i.get("run") or {}).get("started_by"),
                 "input": (i.get("run") or {}).get("input")} for i in items]


def cmd_approvals(api: Api, args: argparse.Namespace, out: TextIO) -> int:
    aps = open_approvals(api)
    if args.json:
        out.write(json.dumps(aps, indent=2) + "\n")
        return EXIT_OK
    if not aps:
        out.write("No open approvals you may decide.\n")
        return EXIT_OK
    for ap in aps:
        t = ap.get("tally") or {}
        need = f"{t.get('approve', 0)}/{t.get('needed', (ap.get('policy') or {}).get('quorum', 1))} approvals"
        exp = f", expires {ap['expires_at']}" if ap.get("expires_at") else ""
        out.write(f"{ap['run_id']} {ap['approval_id']}  {ap['tool']}({brief(ap.get('arguments', ''), 60)})\n"
                  f"    agent {ap.get('run_agent')}, started by {_who(ap.get('started_by'))}; {need}{exp}\n"
                  f"    runcast approve {ap['run_id']} {ap['approval_id']}   |   runcast reject {ap['run_id']} "
                  f"{ap['approval_id']} --reason ...\n")
    return EXIT_OK


def cmd_inbox(api: Api, args: argparse.Namespace, out: TextIO) -> int:
    """What needs you: the open approvals you may decide (review requested ones marked) and who mentioned you."""
    aps = open_approvals(api)
    mentions = api.call("GET", "/api/mentions")["mentions"]
    if args.json:
        out.write(json.dumps({"approvals": aps, "mentions": mentions}, indent=2, ensure_ascii=False) + "\n")
        return EXIT_OK
    if aps:
        for ap in aps:
            label = "review requested" if ap.get("review_requested") else "needs your decision"
            out.write(f"{label}: {ap['run_id']} {ap['approval_id']}  {ap['tool']}"
                      f"({brief(ap.get('arguments', ''), 60)}), started by {_who(ap.get('started_by'))}\n")
    else:
        out.write("No open approvals you may decide.\n")
    for m in reversed(mentions):
        where = f"{m['run_id']} approval {m['approval_id']}" if m.get("approval_id") else m["run_id"]
        out.write(f"mentions you: {_who(m.get('by'))} on {where} at {m.get('at')}: {brief(m.get('excerpt', ''), 100)}\n"
                  f"    runcast comment {m['run_id']} --reply-to {m['comment_id']} '...'\n")
    return EXIT_OK


def cmd_comment(api: Api, args: argparse.Namespace, out: TextIO) -> int:
    body: dict[str, Any] = {"text": args.text}
    if args.approval:
        body["approval_id"] = args.approval
    if args.reply_to:
        body["reply_to"] = args.reply_to
    res = api.call("POST", f"/api/runs/{args.run}/comments", json=body)
    out.write(f"commented: {res['comment_id']} in thread {res['thread_id']}\n")
    return EXIT_OK


def cmd_decide(api: Api, args: argparse.Namespace, out: TextIO, decision: str) -> int:
    body: dict[str, Any] = {"decision": decision}
    if args.reason:
        body["reason"] = args.reason
    res = api.call("POST", f"/api/runs/{args.run}/approvals/{args.approval}", json=body)
    verb = "approved" if decision == "approve" else "rejected"
    if res.get("outcome") == "decided":
        out.write(f"{verb}: {args.approval} is settled; the run goes on.\n")
    else:
        out.write(f"your vote to {decision} {args.approval} is counted; it needs more approvers before it is settled.\n")
    return EXIT_OK


def cmd_audit(api: Api, args: argparse.Namespace, out: TextIO) -> int:
    if args.csv:
        out.write(api.call("GET", f"/api/runs/{args.run}/audit", accept="text/csv", params={"format": "csv"}))
    else:
        out.write(json.dumps(api.call("GET", f"/api/runs/{args.run}/audit"), indent=2, ensure_ascii=False) + "\n")
    return EXIT_OK


# ------------------------------------------------------------------------------------------------ watch


class Printer:
    """Turns run events into lines for a person (or, with --json, one event per line, exactly once each)."""

    def __init__(self, out: TextIO, as_json: bool = False) -> None:
        self.out, self.as_json = out, as_json
        self.mid_line = False  # streamed text printed without a newline yet

    def _line(self, text: str) -> None:
        if self.mid_line:
            self.out.write("\n")
            self.mid_line = False
        self.out.write(text + "\n")

    def event(self, ev: dict[str, Any]) -> None:
        if self.as_json:
            self.out.write(json.dumps(ev, ensure_ascii=False) + "\n")
            self.out.flush()
            return
        t, d = ev.get("type", ""), ev.get("data") or {}
        if t == "message.delta":
            self.out.write(str(d.get("delta", "")))
            self.mid_line = True
        elif t == "message.completed":
            if self.mid_line:
                self.out.write("\n")
                self.mid_line = False
        elif t == "run.started":
            self._line(f"▶ {ev.get('run_id')}: agent {d.get('agent')}, started by {_who(d.get('started_by'))}: {brief(d.get('input', ''))}")
        elif t == "agent.updated":
            self._line(f"· agent {d.get('agent')}")
        elif t == "tool.called":
            self._line(f"→ {d.get('tool')}({brief(d.get('arguments', ''), 100)})")
        elif t == "tool.output":
            self._line(f"← {brief(d.get('output', ''), 200)}")
        elif t in ("handoff.requested", "handoff.completed"):
            self._line(f"· handoff {d.get('from')} → {d.get('to')}")
        elif t == "approval.requested":
            pol = d.get("policy") or {}
            exp = f"; expires {d['expires_at']}" if d.get("expires_at") else ""
            self._line(f"⏸ approval {d.get('approval_id')} needed: {d.get('tool')}({brief(d.get('arguments', ''), 100)}) — "
                       f"roles {', '.join(pol.get('roles') or [])}, {pol.get('quorum', 1)} approver(s){exp}\n"
                       f"  runcast approve {ev.get('run_id')} {d.get('approval_id')}  |  runcast reject "
                       f"{ev.get('run_id')} {d.get('approval_id')} --reason ...")
        elif t == "approval.voted":
            tl = d.get("tally") or {}
            self._line(f"· {_who(d.get('by'))} voted to {d.get('decision')} {d.get('approval_id')} "
                       f"({tl.get('approve', 0)}/{tl.get('needed', 1)})" + (f": {d['reason']}" if d.get("reason") else ""))
        elif t == "approval.decided":
            verb = "approved" if d.get("decision") == "approve" else "rejected"
            self._line(f"✔ {d.get('approval_id')} {verb} by {_who(d.get('by'))}" + (f": {d['reason']}" if d.get("reason") else ""))
        elif t == "approval.expired":
            self._line(f"⌛ {d.get('approval_id')} expired")
        elif t == "approval.cancelled":
            self._line(f"✖ {d.get('approval_id')} cancelled with the run")
        elif t == "comment.added":
            where = f" on {d['approval_id']}" if d.get("approval_id") else ""
            self._line(f"💬 {_who(d.get('by'))}{where} [{d.get('comment_id')}]: {brief(d.get('text', ''), 200)}")
        elif t == "comment.edited":
            self._line(f"💬 {_who(d.get('by'))} edited {d.get('comment_id')}: {brief(d.get('text', ''), 200)}")
        elif t == "comment.deleted":
            self._line(f"💬 {_who(d.get('by'))} deleted {d.get('comment_id')}")
        elif t in ("thread.resolved", "thread.reopened"):
            self._line(f"💬 {_who(d.get('by'))} {t.split('.')[1]} the thread {d.get('thread_id')}")
        elif t == "run.paused":
            self._line(f"⏸ paused, waiting for {len(d.get('pending') or [])} approval(s)")
        elif t == "run.resumed":
            self._line("▶ resumed")
        elif t == "run.completed":
            self._line("■ completed")
        elif t == "run.failed":
            self._line(f"■ failed: {d.get('code')}: {d.get('message')}")
        elif t == "run.cancelled":
            self._line(f"■ cancelled by {_who(d.get('by'))} ({d.get('mode')})")
        self.out.flush()

    def note(self, text: str) -> None:
        if not self.as_json:
            self._line(f"  ({text})")
            self.out.flush()
        else:
            print(f"runcast watch: {text}", file=sys.stderr, flush=True)


ENDINGS = {"run.completed": EXIT_OK, "run.failed": EXIT_FAILED, "run.cancelled": EXIT_CANCELLED}


async def watch(api: Api, run_id: str, printer: Printer, since: int = 0, give_up_s: float = 300.0) -> int:
    """Stream a run until it ends; on a dropped connection reconnect with `since` = the last seq printed, so each
    event is printed exactly once. Gives up after `give_up_s` without a connection."""
    import websockets

    last = since
    delay = 0.2
    loop = asyncio.get_running_loop()
    down_since: float | None = None
    while True:
        try:
            async with websockets.connect(api.ws_url, subprotocols=["runcast.v1.json"], max_size=None,
                                          open_timeout=10) as ws:
                await ws.send(json.dumps({"type": "hello", "token": api.token, "client": "runcast-watch"}))
                welcome = json.loads(await ws.recv())
                if welcome.get("type") != "welcome":
                    raise Refused(welcome.get("code", "unauthenticated"), welcome.get("message", "refused"), welcome)
                await ws.send(json.dumps({"type": "subscribe", "run_id": run_id, "since": last, "id": "w"}))
                if down_since is not None:
                    printer.note(f"reconnected; resuming after event {last}")
                down_since, delay = None, 0.2
                async for raw in ws:
                    frame = json.loads(raw)
                    kind = frame.get("type")
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
        except (OSError, asyncio.TimeoutError, websockets.WebSocketException) as exc:
            now = loop.time()
            if down_since is None:
                down_since = now
                printer.note(f"connection lost ({type(exc).__name__}); reconnecting")
            if now - down_since > give_up_s:
                raise Refused("unreachable", f"no connection for {give_up_s:.0f}s") from None
        await asyncio.sleep(delay * (0.5 + random.random()))
        delay = min(delay * 2, 5.0)


def cmd_watch(api: Api, args: argparse.Namespace, out: TextIO) -> int:
    api.call("GET", f"/api/runs/{args.run}")  # a clear not_found / forbidden before streaming
    return asyncio.run(watch(api, args.run, Printer(out, args.json), since=args.since, give_up_s=args.give_up))


# ------------------------------------------------------------------------------------------------ CLI wiring


def add_commands(sub: Any) -> None:
    def client(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--url", default=os.environ.get("RUNCAST_URL", DEFAULT_URL), help="the hub (default: $RUNCAST_URL)")
        sp.add_argument("--token", default=os.environ.get("RUNCAST_TOKEN"), help="your token (default: $RUNCAST_TOKEN)")

    a = sub.add_parser("approvals", help="list the open approvals your token may decide")
    client(a)
    a.add_argument("--json", action="store_true", help="as JSON")
    a.set_defaults(func=run_command, handler=cmd_approvals)

    ap = sub.add_parser("approve", help="approve a tool call")
    client(ap)
    ap.add_argument("run")
    ap.add_argument("approval")
    ap.add_argument("--reason", help="shown to everyone watching")
    ap.set_defaults(func=run_command, handler=lambda api, args, out: cmd_decide(api, args, out, "approve"))

    rj = sub.add_parser("reject", help="reject a tool call (the reason goes to the model)")
    client(rj)
    rj.add_argument("run")
    rj.add_argument("approval")
    rj.add_argument("--reason", required=True, help="why (shown to everyone and told to the model)")
    rj.set_defaults(func=run_command, handler=lambda api, args, out: cmd_decide(api, args, out, "reject"))

    ib = sub.add_parser("inbox", help="what needs you: open approvals you may decide, and who mentioned you")
    client(ib)
    ib.add_argument("--json", action="store_true", help="as JSON")
    ib.set_defaults(func=run_command, handler=cmd_inbox)

    cm = sub.add_parser("comment", help="comment on a run or an approval (@handle mentions someone); the agent never sees it")
    client(cm)
    cm.add_argument("run")
    cm.add_argument("text")
    cm.add_argument("--approval", help="comment in this approval's thread")
    cm.add_argument("--reply-to", help="reply in the thread of this comment")
    cm.set_defaults(func=run_command, handler=cmd_comment)

    w = sub.add_parser("watch", help="stream a run to the terminal; exit 0 completed, 3 failed, 4 cancelled")
    client(w)
    w.add_argument("run")
    w.add_argument("--since", type=int, default=0, help="start after this seq (default: from the beginning)")
    w.add_argument("--json", action="store_true", help="print each event as one JSON line")
    w.add_argument("--give-up", type=float, default=300.0, help="seconds without a connection before giving up")
    w.set_defaults(func=run_command, handler=cmd_watch)

    au = sub.add_parser("audit", help="print a run's audit record (JSON, or --csv: one row per vote)")
    client(au)
    au.add_argument("run")
    au.add_argument("--csv", action="store_true")
    au.set_defaults(func=run_command, handler=cmd_audit)


def run_command(args: argparse.Namespace) -> None:
    if not args.token:
        print("runcast: no token: set RUNCAST_TOKEN or pass --token", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)
    api = Api(args.url, args.token)
    try:
        code = args.handler(api, args, sys.stdout)
    except Refused as err:
        sys.stdout.flush()
        print(f"runcast {args.cmd}: {explain(err)}", file=sys.stderr)
        code = EXIT_REFUSED
    except KeyboardInterrupt:
        code = 130
    raise SystemExit(code)
