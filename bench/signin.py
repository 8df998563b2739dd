"""The hub's CPU per connection, from the upgrade to `welcome`, for each way of saying who you are, in one run:

    .venv/bin/python bench/signin.py                 # 3 rounds x 600 connections of each kind (about a minute)
    .venv/bin/python bench/signin.py --connections 300 --rounds 2

  hs256    a token signed with RUNCAST_SECRET in hello (the baseline)
  rs256    a token signed with a team's own RSA key, checked against its JWKS (--jwks-url; the keys are cached, so
           no request per connection: the bench checks the JWKS server saw one request in all)
  cookie   the hub's sign-in session: the cookie on the upgrade, and a hello without a token

One `runcast serve` (memory backend) serves all three, interleaved round by round, so each kind meets the same
machine. Hub CPU is utime + stime from /proc/PID/stat around each batch; per connection = CPU / connections. Each
connection opens, says hello, waits for welcome and closes; `--concurrency` run at once. Prints each round and the
median per kind with its ratio to hs256 (the goal: within 1.2x). Nothing is asserted; rerun on a noisy machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import websockets

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "server")]

from hubtest import SECRET, free_port, token  # noqa: E402
from keyserver import AUDIENCE, ISSUER, KeyServer  # noqa: E402

from runcast import auth  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
KINDS = ("hs256", "rs256", "cookie")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


async def one(url: str, tok: str | None, cookie: str | None) -> None:
    headers = {"Cookie": f"runcast_session={cookie}"} if cookie else None
    async with websockets.connect(
        url,
        subprotocols=["runcast.v1.json"],
        additional_headers=headers,  # type: ignore[list-item]
        compression=None,
    ) as ws:
        await ws.send(json.dumps({"type": "hello", **({"token": tok} if tok else {})}))
        frame = json.loads(await ws.recv())
        if frame.get("type") != "welcome":
            raise RuntimeError(f"not welcomed: {frame}")


async def batch(url: str, n: int, concurrency: int, tok: str | None, cookie: str | None) -> None:
    sem = asyncio.Semaphore(concurrency)

    async def run() -> None:
        async with sem:
            await one(url, tok, cookie)

    await asyncio.gather(*(run() for _ in range(n)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--connections", type=int, default=600, help="per kind per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--concurrency", type=int, default=20)
    args = p.parse_args()

    keys = KeyServer().start()
    keys.add("bench-rsa", "RS256")
    port = free_port()
    log = tempfile.NamedTemporaryFile(prefix="runcast-bench-signin-", suffix=".log", delete=False)
    env = dict(
        os.environ,
        RUNCAST_SECRET=SECRET,
        RUNCAST_LOG_LEVEL="WARNING",
        PYTHONPATH=str(ROOT / "server"),
        RUNCAST_MAX_UNAUTHENTICATED="0",
        RUNCAST_MAX_CONNECTIONS="0",
        RUNCAST_RATE_PER_S="100000",
    )
    env.pop("OPENAI_API_KEY", None)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "runcast.cli",
            "serve",
            "--port",
            str(port),
            "--no-worker",
            "--jwks-url",
            keys.url,
            "--jwt-issuer",
            ISSUER,
            "--jwt-audience",
            AUDIENCE,
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"ws://127.0.0.1:{port}/ws"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit(f"the hub did not start: {Path(log.name).read_text()[-2000:]}")
            time.sleep(0.1)
        ttl = 3600.0
        who = auth.Identity("bench", "Bench", ("viewer",))
        creds = {
            "hs256": (token("bench", ["viewer"], ttl=ttl), None),
            "rs256": (keys.sign("bench-rsa", "bench", ttl=ttl, roles=["viewer"]), None),
            "cookie": (None, auth.Authenticator(SECRET, session_secret=SECRET).issue_session(who, ttl)),
        }
        # warm-up: imports, the JWKS fetch, the first of everything
        for kind in KINDS:
            asyncio.run(batch(url, 50, args.concurrency, *creds[kind]))
        per: dict[str, list[float]] = {k: [] for k in KINDS}
        print(
            f"runcast sign-in bench: {args.connections} connections per kind per round, "
            f"{args.concurrency} at once, {args.rounds} rounds; hub CPU per connection (upgrade to welcome)"
        )
        for r in range(args.rounds):
            row = []
            for kind in KINDS:
                before = cpu_seconds(proc.pid)
                asyncio.run(batch(url, args.connections, args.concurrency, *creds[kind]))
                time.sleep(0.2)  # the closes' last work is counted in this batch, not the next
                us = (cpu_seconds(proc.pid) - before) / args.connections * 1e6
                per[kind].append(us)
                row.append(f"{kind} {us:7.0f} us")
            print(f"  round {r + 1}: " + "   ".join(row))
        base = statistics.median(per["hs256"])
        print("median hub CPU per connection:")
        for kind in KINDS:
            m = statistics.median(per[kind])
            print(f"  {kind:7s} {m:7.0f} us   {m / base:5.2f}x hs256")
        print(f"JWKS requests over the whole run: {keys.requests} (keys cached: not one per connection)")
    finally:
        proc.terminate()
        proc.wait(10)
        keys.stop()


if __name__ == "__main__":
    main()
