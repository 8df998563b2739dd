"""Terminal commands for talking to a run's agent: `runcast say RUN TEXT`, `runcast withdraw RUN MESSAGE`,
`runcast rerun RUN` (conversation.py; README, "Conversations"). Same token, URL, errors and exit codes as terminal.py.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any, Callable, TextIO

from .terminal import EXIT_OK, Api, Printer, run_command, watch


def cmd_say(api: Api, args: argparse.Namespace, out: TextIO) -> int:
    head = int(api.call("GET", f"/api/runs/{args.run}").get("head_seq") or 0) if args.watch else 0
    res = api.call("POST", f"/api/runs/{args.run}/messages", json={"text": args.text})
    if res.get("queued"):
        out.write(f"queued {res['message_id']}: the agent is busy; it answers when its current turn completes "
                  f"(take it back with: runcast withdraw {args.run} {res['message_id']})\n")
    else:
        out.write(f"said {res['message_id']}: the agent is answering\n")
    out.flush()
    if not args.watch:
        return EXIT_OK
    return asyncio.run(watch(api, args.run, Printer(out), since=head))


def cmd_withdraw(api: Api, args: argparse.Namespace, out: TextIO) -> int:
    api.call("DELETE", f"/api/runs/{args.run}/messages/{args.message}")
    out.write(f"withdrew {args.message}\n")
    return EXIT_OK


def cmd_rerun(api: Api, args: argparse.Namespace, out: TextIO) -> int:
    res = api.call("POST", f"/api/runs/{args.run}/rerun", json={})
    out.write(f"{res['run_id']}\n")  # only the id: `runcast watch $(runcast rerun RUN)`
    return EXIT_OK


def add_talk_commands(sub: Any, client: Callable[[argparse.ArgumentParser], None]) -> None:
    s = sub.add_parser("say", help="say something to a run's agent; it answers in the same run")
    client(s)
    s.add_argument("run")
    s.add_argument("text")
    s.add_argument("--watch", action="store_true", help="then stream the run until its turn ends")
    s.set_defaults(func=run_command, handler=cmd_say)

    w = sub.add_parser("withdraw", help="take back a message of yours still waiting in a run's queue")
    client(w)
    w.add_argument("run")
    w.add_argument("message")
    w.set_defaults(func=run_command, handler=cmd_withdraw)

    r = sub.add_parser("rerun", help="start a new run with a finished run's agent and input; prints its id")
    client(r)
    r.add_argument("run")
    r.set_defaults(func=run_command, handler=cmd_rerun)
