"""Terminal commands for talking to a run's agent: `runcast say RUN TEXT`, `runcast withdraw RUN MESSAGE`,
`runcast rerun RUN` (conversation.py; README, "Conversations"). Same token, URL, errors and exit codes as terminal.py.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from typing import Any

from .terminal import EXIT_OK, Api, Out, Printer, watch


def cmd_say(api: Api, args: argparse.Namespace, out: Out) -> int:
    head = int(api.call("GET", f"/api/runs/{args.run}").get("head_seq") or 0) if args.watch else 0
    res = api.call("POST", f"/api/runs/{args.run}/messages", json={"text": args.text})
    if res.get("queued"):
        out.line(
            f"queued {res['message_id']}: the agent is busy; it answers when its current turn completes "
            f"(take it back with: runcast withdraw {args.run} {res['message_id']})"
        )
    else:
        out.line(f"said {res['message_id']}: the agent is answering")
    if not args.watch:
        return EXIT_OK
    return asyncio.run(watch(api, args.run, Printer(out, api.clock), since=head))


def cmd_withdraw(api: Api, args: argparse.Namespace, out: Out) -> int:
    api.call("DELETE", f"/api/runs/{args.run}/messages/{args.message}")
    out.line(f"withdrew {args.message}")
    return EXIT_OK


def cmd_rerun(api: Api, args: argparse.Namespace, out: Out) -> int:
    res = api.call("POST", f"/api/runs/{args.run}/rerun", json={})
    out.line(res["run_id"])  # only the id: `runcast watch $(runcast rerun RUN)`
    return EXIT_OK


def add_talk_commands(sub: Any, on: Callable[[argparse.ArgumentParser, Any], None]) -> None:
    s = sub.add_parser("say", help="say something to a run's agent; it answers in the same run")
    s.add_argument("run")
    s.add_argument("text")
    s.add_argument("--watch", action="store_true", help="then stream the run until its turn ends")
    on(s, cmd_say)

    w = sub.add_parser("withdraw", help="take back a message of yours still waiting in a run's queue")
    w.add_argument("run")
    w.add_argument("message")
    on(w, cmd_withdraw)

    r = sub.add_parser("rerun", help="start a new run with a finished run's agent and input; prints its id")
    r.add_argument("run")
    on(r, cmd_rerun)
