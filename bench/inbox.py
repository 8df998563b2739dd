"""How fast an approval reaches the inbox of everyone who may decide it, against the run's own live events.

    python bench/inbox.py                   # three hub nodes and one worker on a throw-away redis-server
    python bench/inbox.py --watchers 1,50 --runs 5

For each N, N approvers subscribe to their inbox, spread over the three nodes, and one client per node watches each
run. The demo agent runs `--runs` times; each pause is approved over HTTP. Figures, from the `ts` of the logged
`approval.requested` (when the hub logged it) to the arrival of:
  - baseline: that event at the run's watchers (the live path every run event takes);
  - inbox.added at every one of the N inboxes (the feed: commit script PUBLISH, per-node filtering);
  - inbox.removed at every inbox, from the `ts` of the `approval.decided`.
Ratio = inbox p50 / baseline p50 of the same run. Nothing is asserted; the clients share the machine with the servers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import websockets

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "server")]

from hubtest import ADMIN, Cluster, token  # noqa: E402
from redis_server import RedisServer  # noqa: E402


def ts(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


class Conn:
    def __init__(self, ws: Any) -> None:
        self.ws, self.frames = ws, []  # (arrival time, frame)
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for msg in self.ws:
                self.frames.append((time.time(), json.loads(msg)))
        except websockets.ConnectionClosed:
            pass

    @classmethod
    async def open(cls, url: str, tok: str, first: dict[str, Any] | None) -> "Conn":
        ws = await websockets.connect(url, subprotocols=["runcast.v1.json"], max_size=None, max_queue=None)
        await ws.send(json.dumps({"type": "hello", "token": tok}))
        json.loads(await ws.recv())
        c = cls(ws)
        if first:
            await ws.send(json.dumps(first))
        return c

    def find(self, pred: Any) -> tuple[float, dict[str, Any]] | None:
        return next(((t, f) for t, f in self.frames if pred(f)), None)

    async def close(self) -> None:
        await self.ws.close()
        self.task.cancel()


async def until(pred: Any, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise TimeoutError("bench: gave up waiting")
        await asyncio.sleep(0.005)


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))] if xs else float("nan")


async def measure(cluster: Cluster, n: int, rounds: int) -> dict[str, Any]:
    inboxes = [
        await Conn.open(cluster.ws_url(), token(f"ap{i}", ["approver"], name=f"Ap {i}"), {"type": "subscribe_inbox"})
        for i in range(n)
    ]
    await until(lambda: all(c.find(lambda f: f["type"] == "inbox") for c in inboxes))
    watchers = [await Conn.open(cluster.ws_url(i), ADMIN, None) for i in range(len(cluster.nodes))]
    base, added, removed = [], [], []
    for _ in range(rounds):
        run_id = cluster.start_run("demo", "bench", tok=ADMIN)
        for w in watchers:
            await w.ws.send(json.dumps({"type": "subscribe", "run_id": run_id}))
        await until(
            lambda: all(w.find(lambda f: f.get("run_id") == run_id and f.get("type") == "run.paused") for w in watchers)
        )
        hit = watchers[0].find(lambda f: f.get("run_id") == run_id and f.get("type") == "approval.requested")
        assert hit is not None
        req = hit[1]
        aid, t0 = req["data"]["approval_id"], ts(req["ts"])
        for w in watchers:
            t, _ = w.find(lambda f: f.get("run_id") == run_id and f.get("type") == "approval.requested")  # type: ignore[misc]
            base.append(t - t0)
        await until(
            lambda: all(
                c.find(lambda f: f["type"] == "inbox.added" and f["approval"]["approval_id"] == aid) for c in inboxes
            )
        )
        for c in inboxes:
            t, _ = c.find(lambda f: f["type"] == "inbox.added" and f["approval"]["approval_id"] == aid)  # type: ignore[misc]
            added.append(t - t0)
        r = cluster.http("POST", f"/api/runs/{run_id}/approvals/{aid}", ADMIN, json={"decision": "approve"})
        assert r.status_code == 200, r.text
        await until(
            lambda: all(
                w.find(lambda f: f.get("run_id") == run_id and f.get("type") == "approval.decided") for w in watchers
            )
        )
        _, dec = watchers[0].find(lambda f: f.get("run_id") == run_id and f.get("type") == "approval.decided")  # type: ignore[misc]
        t1 = ts(dec["ts"])
        await until(
            lambda: all(c.find(lambda f: f["type"] == "inbox.removed" and f["approval_id"] == aid) for c in inboxes)
        )
        for c in inboxes:
            t, _ = c.find(lambda f: f["type"] == "inbox.removed" and f["approval_id"] == aid)  # type: ignore[misc]
            removed.append(t - t1)
        await until(
            lambda: all(
                w.find(lambda f: f.get("run_id") == run_id and f.get("type") == "run.completed") for w in watchers
            )
        )
        for w in watchers:
            await w.ws.send(json.dumps({"type": "unsubscribe", "run_id": run_id}))
    for c in inboxes + watchers:
        await c.close()
    return {"n": n, "base": base, "added": added, "removed": removed}


def ms(x: float) -> str:
    return f"{x * 1000:.1f}"


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--watchers", default="1,50,200")
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    redis = RedisServer(persist=False)
    redis.start()
    tmp = Path(tempfile.mkdtemp(prefix="runcast-bench-inbox-"))
    cluster = Cluster(
        tmp,
        "redis",
        redis.url,
        nodes=3,
        workers=1,
        env={"RUNCAST_DEMO_DELAY": "0", "RUNCAST_RATE_PER_S": "100000", "RUNCAST_RATE_BURST": "100000"},
    )
    cluster.start()
    try:
        print(
            f"inbox delivery on 3 hub nodes + 1 worker, Redis; {args.runs} approvals per row; times in ms from the logged ts"
        )
        print(
            "| inboxes | baseline: run event p50 / p99 | inbox.added p50 / p99 | ratio (p50) | inbox.removed p50 / p99 |"
        )
        print("|---:|---:|---:|---:|---:|")
        for n in [int(x) for x in args.watchers.split(",")]:
            r = await measure(cluster, n, args.runs)
            b50, a50 = statistics.median(r["base"]), statistics.median(r["added"])
            print(
                f"| {n} | {ms(b50)} / {ms(pct(r['base'], 0.99))} | {ms(a50)} / {ms(pct(r['added'], 0.99))} | "
                f"{a50 / b50:.2f} | {ms(statistics.median(r['removed']))} / {ms(pct(r['removed'], 0.99))} |",
                flush=True,
            )
    finally:
        cluster.stop()
        redis.stop()


if __name__ == "__main__":
    asyncio.run(main())
