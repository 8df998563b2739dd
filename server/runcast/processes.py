"""`runcast serve --processes N` (and `--worker-process`): one node on every core, over Redis.

The parent starts N `runcast serve` children on the same host and port, each with its own listening socket bound with
SO_REUSEPORT (`--reuse-port`; the kernel spreads new connections over them), and, unless `--no-worker`, one
`runcast worker` child:
the agents' streaming never shares an event loop with a fan-out. Every process talks to the same Redis, as separate
nodes would. The parent only supervises: it makes one secret for all of them when none is set (and prints the links),
forwards SIGTERM/SIGINT (each hub then closes its clients with 1012), and if any child dies it stops the others and
exits with that child's code, so whatever supervises the node (systemd, Kubernetes) restarts it whole.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

STOP_MARGIN_S = 5.0  # past the longest drain a child was given, it is killed


def stop_timeout(args: argparse.Namespace, env: dict[str, str]) -> float:
    """How long the children get after SIGTERM: each hub's drain delay and grace, the worker's grace (its segments
    finish or are handed back), whichever is longest, plus a margin. Past it, they are killed."""
    hub = args.drain_delay + args.grace
    worker = float(env.get("RUNCAST_WORKER_GRACE_S", "25")) if not args.no_worker else 0.0
    return max(hub, worker) + STOP_MARGIN_S


def _without(argv: list[str], flag: str, takes_value: bool) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == flag:
            skip = takes_value
            continue
        if takes_value and a.startswith(flag + "="):
            continue
        out.append(a)
    return out


def hub_argv(argv: list[str], separate_worker: bool, dev: bool) -> list[str]:
    """A child hub's command line: the parent's, as one process bound with SO_REUSEPORT."""
    out = _without(_without(argv, "--processes", True), "--worker-process", False)
    out += ["--reuse-port"]
    if separate_worker and "--no-worker" not in out:
        out += ["--no-worker"]
    if dev and "--dev" not in out:
        out += ["--dev"]
    return out


def worker_argv(args: argparse.Namespace) -> list[str]:
    out = [
        "worker",
        "--redis",
        args.redis,
        "--concurrency",
        str(args.concurrency),
        "--max-log",
        str(args.max_log),
        "--retention",
        str(args.retention),
        "--lease",
        str(args.lease),
    ]
    for a in args.agents or []:
        out += ["--agents", a]
    if args.model:
        out += ["--model", args.model]
    out += ["--model-api", args.model_api]
    if args.tracing:
        out += ["--tracing", args.tracing]
    return out


def supervise(
    args: argparse.Namespace,
    argv: list[str],
    print_links: Callable[[str, argparse.Namespace], None],
    dev_secret: Callable[[], str],
) -> None:
    """`print_links` and `dev_secret` are cli.py's, handed in: cli.py imports this module, not the other way."""
    if not args.redis:
        raise SystemExit(
            "runcast serve: --processes and --worker-process need --redis URL (processes share runs only through Redis)"
        )
    env = dict(os.environ)
    # the demo (no secret, no issuer): every child reads the dev secret from the user's state dir, made here first
    made_secret = not env.get("RUNCAST_SECRET") and not args.jwks_url and not args.oidc_issuer
    dev = args.dev or made_secret
    if made_secret:
        made = dev_secret()
    separate_worker = not args.no_worker
    cmd = [sys.executable, "-m", "runcast.cli"]
    children: list[subprocess.Popen[bytes]] = []
    if separate_worker:
        children.append(subprocess.Popen(cmd + worker_argv(args), env=env))
    for _ in range(args.processes):
        children.append(subprocess.Popen(cmd + hub_argv(argv, separate_worker, dev), env=env))
    print(
        f"runcast serve: {args.processes} hub process(es) on {args.host}:{args.port}"
        f"{' and a worker process' if separate_worker else ''}, pids {' '.join(str(c.pid) for c in children)}",
        flush=True,
    )
    if made_secret:
        print_links(made, args)

    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    code = 0
    while not stopping:
        dead = [c for c in children if c.poll() is not None]
        if dead:
            code = dead[0].returncode or 1
            print(
                f"runcast serve: process {dead[0].pid} exited with {dead[0].returncode}; stopping the others",
                file=sys.stderr,
                flush=True,
            )
            break
        time.sleep(0.2)
    for c in children:
        if c.poll() is None:
            c.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + stop_timeout(args, env)
    for c in children:
        try:
            c.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            c.kill()
            c.wait()
    raise SystemExit(code)
