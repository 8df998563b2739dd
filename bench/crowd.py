"""Crowd benchmark: a crowd opens a paused run at once, and an approver decides right after.

    python bench/crowd.py                       # crowds of 100 and 500, two hub nodes and a worker on one Redis
    python bench/crowd.py --crowds 50,200 --open-s 1 --decide-after 0.5

For each crowd size N: a run of the demo agent pauses at its approval. N watchers, already connected (alternately to
node 0 and node 1), subscribe to it spread over `--open-s` seconds; `--decide-after` seconds after the last of them,
an approver on node 0 approves. Printed per N:
  - the delay from sending `decide` to `run.resumed` arriving, at every watcher: p50 / p99 / max;
  - presence frames (and their bytes) each watcher got from its subscribe to the run's end: mean / max;
  - when the hub logged `approval.decided` and `run.resumed`, relative to the decide (server side of the delay);
  - the baseline of the same run: the same N watchers, subscribed long enough before the decision that presence has
    gone quiet (`--settle-s`), and the ratio crowd / settled of the p99. A ratio near 1 means the crowd's arrival
    no longer delays the decision; presence frames per watcher that do not grow with N mean its cost is O(N) in all.
The clients run in this process, on the same machine as the servers: the figures include their cost. Nothing is
asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx
import websockets

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "server")]

from hubtest import Process, base_env, free_port, token  # noqa: E402
from redis_server import RedisServer  # noqa: E402

OPERATOR = token("ops", ["operator"], name="Ops")
APPROVER = token("alice", ["approver"], name="Alice")


class Watcher:
    def __init__(self, ws: websockets.ClientConnection) -> None:
        self.ws = ws
        self.resumed_at: float | None = None
        self.completed = asyncio.Event()
        self.presence_frames = 0
        self.presence_bytes = 0
        self.frames = 0
        self.task: asyncio.Task[None] | None = None

    async def read(self, run_id: str) -> None:
        async for msg in self.ws:
            self.frames += 1
            if '"presence"' in msg[:40]:
                self.presence_frames += 1
                self.presence_bytes += len(msg)
                continue
            f = json.loads(msg)
            t = f.get("type")
            if t == "error":
                raise RuntimeError(f"watcher got an error: {f}")
            if f.get("run_id") != run_id or "seq" not in f:
                continue
            if t == "run.resumed" and self.resumed_at is None:
                self.resumed_at = time.perf_counter()
            elif t in ("run.completed", "run.failed", "run.cancelled"):
                self.completed.set()
                return


async def connect(url: str, tok: str) -> websockets.ClientConnection:
    ws = await websockets.connect(url, subprotocols=["runcast.v1.json"], max_size=None, max_queue=None, open_timeout=60)
    await ws.send(json.dumps({"type": "hello", "token": tok}))
    assert json.loads(await ws.recv())["type"] == "welcome"
    return ws


def paused_run(base: str) -> str:
    h = {"Authorization": f"Bearer {OPERATOR}"}
    run_id = httpx.post(base + "/api/runs", json={"agent": "demo", "input": "tidy"}, headers=h, timeout=30).json()[
        "run_id"
    ]
    while True:
        d = httpx.get(f"{base}/api/runs/{run_id}", headers=h, timeout=30).json()
        if d["status"] == "paused":
            return run_id
        time.sleep(0.05)


def approval_id(base: str, run_id: str) -> str:
    d = httpx.get(f"{base}/api/runs/{run_id}", headers={"Authorization": f"Bearer {OPERATOR}"}, timeout=30).json()
    return d["pending_approvals"][0]["approval_id"]


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


async def one(nodes: list[Process], n: int, open_s: float, decide_after: float) -> dict[str, float]:
    base = nodes[0].url
    run_id = paused_run(base)
    ap = approval_id(base, run_id)
    conns = []
    for i in range(n):  # connected beforehand: "opening the run" is the subscribe
        conns.append(await connect(nodes[i % len(nodes)].ws_url, token(f"w{i}", ["viewer"], name=f"W{i}")))
    approver = await connect(nodes[0].ws_url, APPROVER)
    watchers = [Watcher(ws) for ws in conns]
    for w in watchers:
        w.task = asyncio.create_task(w.read(run_id))
    t_open = time.perf_counter()
    for i, w in enumerate(watchers):
        wait = t_open + open_s * i / max(1, n) - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)
        await w.ws.send(json.dumps({"type": "subscribe", "run_id": run_id}))
    opened = time.perf_counter() - t_open
    wait = t_open + open_s + decide_after - time.perf_counter()
    if wait > 0:
        await asyncio.sleep(wait)
    t_decide = time.perf_counter()
    wall_decide = time.time()
    await approver.send(
        json.dumps({"type": "decide", "run_id": run_id, "approval_id": ap, "decision": "approve", "id": "d"})
    )
    await asyncio.wait_for(asyncio.gather(*(w.completed.wait() for w in watchers)), 120)
    delays = [(w.resumed_at - t_decide) * 1000 for w in watchers if w.resumed_at is not None]
    log = httpx.get(
        f"{base}/api/runs/{run_id}/events?limit=1000", headers={"Authorization": f"Bearer {OPERATOR}"}, timeout=30
    ).json()["events"]
    logged = {
        e["type"]: (datetime.fromisoformat(e["ts"].replace("Z", "+00:00")).timestamp() - wall_decide) * 1000
        for e in log
        if e["type"] in ("approval.decided", "run.resumed")
    }
    assert len(delays) == n, f"{n - len(delays)} watchers never saw run.resumed"
    out = {
        "opened_s": opened,
        "p50": pct(delays, 50),
        "p99": pct(delays, 99),
        "max": max(delays),
        "presence_mean": statistics.mean(w.presence_frames for w in watchers),
        "presence_max": max(w.presence_frames for w in watchers),
        "presence_kb_mean": statistics.mean(w.presence_bytes for w in watchers) / 1024,
        "frames_mean": statistics.mean(w.frames for w in watchers),
        "decided_logged": logged.get("approval.decided", float("nan")),
        "resumed_logged": logged.get("run.resumed", float("nan")),
    }
    for w in watchers:
        if w.task:
            w.task.cancel()
    await asyncio.gather(*(w.task for w in watchers if w.task), return_exceptions=True)
    await asyncio.gather(*(ws.close() for ws in conns), approver.close(), return_exceptions=True)
    await asyncio.sleep(1.0)  # let the nodes see them go before the next round
    return out


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--crowds", default="100,500", help="comma-separated crowd sizes")
    p.add_argument("--open-s", type=float, default=1.0, help="the crowd's subscribes are spread over this many seconds")
    p.add_argument(
        "--decide-after", type=float, default=0.5, help="seconds after the last subscribe the approver decides"
    )
    p.add_argument(
        "--settle-s", type=float, default=4.0, help="the baseline: seconds between the last subscribe and the decision"
    )
    p.add_argument("--keep", action="store_true", help="keep the servers' logs")
    args = p.parse_args()
    crowds = [int(x) for x in args.crowds.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="runcast-crowd-"))
    srv = RedisServer()
    srv.start()
    environ = base_env(tmp, RUNCAST_DEMO_DELAY="0.005", RUNCAST_RATE_PER_S="100000", RUNCAST_RATE_BURST="100000")
    worker = Process(["worker", "--agents", "demo", "--redis", srv.url], environ, tmp / "worker.log").start()
    ports = [free_port(), free_port()]
    nodes = [
        Process(
            [
                "serve",
                "--port",
                str(port),
                "--no-worker",
                "--agents",
                "demo",
                "--redis",
                srv.url,
                "--max-queue",
                "100000",
            ],
            environ,
            tmp / f"node{i}.log",
            port,
        )
        for i, port in enumerate(ports)
    ]
    for node in nodes:
        node.start()
    print(
        f"runcast crowd bench: {os.cpu_count()} cpus; two hub nodes and a worker on one redis-server; clients in this process"
    )
    print(
        f"a crowd subscribes over {args.open_s:g} s, the approver decides {args.decide_after:g} s after the last; "
        f"baseline: the same crowd, settled {args.settle_s:g} s"
    )
    print(
        f"{'crowd':>6}  {'decide -> run.resumed at every watcher, ms':>44}  {'presence frames / watcher':>26}  "
        f"{'settled p99':>11}  {'ratio':>5}  {'logged: decided / resumed, ms':>30}"
    )
    print(
        f"{'':>6}  {'p50':>10} {'p99':>10} {'max':>10} {'opened s':>10}  {'mean':>8} {'max':>6} {'KiB':>8}  {'ms':>11}  {'p99':>5}"
        f"  {'crowd':>14} {'settled':>15}"
    )
    try:
        for n in crowds:
            crowd = await one(nodes, n, args.open_s, args.decide_after)
            settled = await one(nodes, n, args.open_s, args.settle_s)
            print(
                f"{n:>6}  {crowd['p50']:>10.1f} {crowd['p99']:>10.1f} {crowd['max']:>10.1f} {crowd['opened_s']:>10.2f}  "
                f"{crowd['presence_mean']:>8.1f} {crowd['presence_max']:>6} {crowd['presence_kb_mean']:>8.1f}  "
                f"{settled['p99']:>11.1f}  {crowd['p99'] / settled['p99']:>5.2f}  "
                f"{crowd['decided_logged']:>6.0f} / {crowd['resumed_logged']:<6.0f} {settled['decided_logged']:>6.0f} / {settled['resumed_logged']:<6.0f}",
                flush=True,
            )
    finally:
        for proc in [*nodes, worker]:
            proc.stop()
        srv.cleanup()
        if args.keep:
            print(f"logs: {tmp}")


if __name__ == "__main__":
    asyncio.run(main())
