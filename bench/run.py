"""Runcast benchmarks: fan-out of one run's events to many watchers, against a baseline measured in the same run.

    python bench/run.py                      # memory backend, then a hub + worker on a throw-away redis-server
    python bench/run.py --watchers 1,50 --events 1000 --no-redis

What it measures (every figure is printed; nothing is asserted):
  1. replay: N clients subscribe at once to a finished run of E events and receive them all (seq 1..E, checked).
     Baseline: the same E frames, already encoded, sent by a bare Starlette WebSocket endpoint on the same uvicorn.
     Ratio = Runcast's frames per second / the baseline's.
  2. live: N clients watch a run while its worker streams it. Time from start to the last client's `run.completed`,
     relative to one watcher, and the delay from an event's `ts` (when it was logged) to its arrival, p50 / p99.
  3. (Redis) Redis commands per event while the run streams, for each N (from INFO commandstats; the live runs wait
     until every watcher is synced, so the watchers' joining and leaving are not counted).
The clients run in this process, on the same machine as the servers: on 2 cores the figures include the clients' cost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Callable

import httpx
import redis
import websockets

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "server")]

from hubtest import PERIODIC_COMMANDS, SECRET, Process, command_counts, free_port, token  # noqa: E402
from redis_server import RedisServer  # noqa: E402

OPERATOR = token("bench", ["operator", "viewer"], name="Bench")


def env(events: int, delay: float) -> dict[str, str]:
    e = dict(os.environ)
    e.pop("OPENAI_API_KEY", None)
    e.update(
        {
            "RUNCAST_SECRET": SECRET,
            "RUNCAST_COALESCE_S": "0",
            "BENCH_WORDS": str(events),
            "BENCH_DELAY": str(delay),
            "RUNCAST_RATE_PER_S": "100000",
            "RUNCAST_RATE_BURST": "100000",
            "RUNCAST_LOG_LEVEL": "WARNING",
            # a bench is one user opening thousands of connections at once: the per-node caps and quotas are off
            "RUNCAST_MAX_CONNECTIONS": "0",
            "RUNCAST_MAX_UNAUTHENTICATED": "0",
            "RUNCAST_MAX_STARTS_PER_MINUTE": "0",
            "RUNCAST_MAX_OPEN_RUNS": "0",
            "PYTHONPATH": os.pathsep.join([str(ROOT / "bench"), str(ROOT / "server"), e.get("PYTHONPATH", "")]),
        }
    )
    return e


async def hello(url: str) -> websockets.ClientConnection:
    ws = await websockets.connect(url, subprotocols=["runcast.v1.json"], max_size=None, max_queue=None)
    await ws.send(json.dumps({"type": "hello", "token": OPERATOR}))
    assert json.loads(await ws.recv())["type"] == "welcome"
    return ws


async def replay_once(ws: websockets.ClientConnection, run_id: str, head: int) -> None:
    await ws.send(json.dumps({"type": "subscribe", "run_id": run_id, "since": 0}))
    last = 0
    while True:
        f = json.loads(await ws.recv())
        if f.get("run_id") == run_id and "seq" in f:
            assert f["seq"] == last + 1, f"seq {f['seq']} after {last}"
            last = f["seq"]
        elif f["type"] == "sync":
            assert last >= head, (last, head)
            return
        elif f["type"] == "error":
            raise RuntimeError(f"replay refused: {f}")


async def bench_replay(url: str, run_id: str, head: int, n: int) -> float:
    conns = [await hello(url) for _ in range(n)]
    t0 = time.perf_counter()
    await asyncio.gather(*(replay_once(ws, run_id, head) for ws in conns))
    dt = time.perf_counter() - t0
    for ws in conns:
        await ws.close()
    return n * head / dt


async def bench_baseline(url: str, frames: int, n: int) -> float:
    conns = [await websockets.connect(url, max_size=None, max_queue=None) for _ in range(n)]

    async def one(ws: websockets.ClientConnection) -> None:
        await ws.send("go")
        got = 0
        while (msg := await ws.recv()) != "done":
            json.loads(msg)  # the same decoding work as the Runcast clients do
            got += 1
        assert got == frames

    t0 = time.perf_counter()
    await asyncio.gather(*(one(ws) for ws in conns))
    dt = time.perf_counter() - t0
    for ws in conns:
        await ws.close()
    return n * frames / dt


def _ts(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


async def bench_live(
    url: str,
    n: int,
    go: Path | None = None,
    at_go: Callable[[], None] | None = None,
    at_end: Callable[[], None] | None = None,
) -> tuple[float, list[float], int]:
    """n watchers of one firehose run: (seconds from start to the last watcher's run.completed, delays, events).

    With `go` (the hub's BENCH_GO_FILE), the model waits until every watcher is subscribed and synced; `at_go` is
    called just before it is let go, and the time runs from then; `at_end` once every watcher has the run's end,
    before they leave. The window holds the streaming only, not the watchers' joining or leaving (bench/cluster.py
    counts Redis commands over it)."""
    conns = [await hello(url) for _ in range(n)]
    if go is not None:
        go.unlink(missing_ok=True)
    starter = conns[0]
    await starter.send(json.dumps({"type": "start", "agent": "firehose", "input": "go", "id": "s"}))
    while (f := json.loads(await starter.recv())).get("id") != "s":
        pass
    run_id = f["run_id"]
    t0 = time.perf_counter()
    delays: list[float] = []
    synced = asyncio.Event()
    waiting = n

    async def watch(ws: websockets.ClientConnection) -> int:
        nonlocal waiting
        await ws.send(json.dumps({"type": "subscribe", "run_id": run_id}))
        last, live = 0, False
        while True:
            f = json.loads(await ws.recv())
            if f["type"] == "error":
                raise RuntimeError(f"watch refused: {f}")
            if f["type"] == "sync":
                live = True
                waiting -= 1
                if not waiting:
                    synced.set()
            elif f.get("run_id") == run_id and "seq" in f:
                assert f["seq"] == last + 1
                last = f["seq"]
                if live:
                    delays.append(time.time() - _ts(f["ts"]))
                if f["type"] == "run.completed":
                    return last

    tasks = [asyncio.ensure_future(watch(ws)) for ws in conns]
    if go is not None:
        await asyncio.wait(
            [asyncio.ensure_future(synced.wait()), *tasks], timeout=120, return_when=asyncio.FIRST_COMPLETED
        )
        if not synced.is_set():
            raise RuntimeError(f"{waiting} of {n} watchers did not sync: {[t.exception() for t in tasks if t.done()]}")
        if at_go is not None:
            at_go()
        t0 = time.perf_counter()
        go.touch()
    heads = await asyncio.gather(*tasks)
    dt = time.perf_counter() - t0
    if at_end is not None:
        at_end()
    for ws in conns:
        await ws.close()
    return dt, delays, max(heads)


def finished_run(base: str, events: int) -> tuple[str, int]:
    r = httpx.post(
        base + "/api/runs", json={"agent": "firehose", "input": "go"}, headers={"Authorization": f"Bearer {OPERATOR}"}
    )
    run_id = r.json()["run_id"]
    while True:
        d = httpx.get(f"{base}/api/runs/{run_id}", headers={"Authorization": f"Bearer {OPERATOR}"}).json()
        if d["status"] == "completed":
            return run_id, d["head_seq"]
        time.sleep(0.1)


def log_frames(base: str, run_id: str) -> list[str]:
    out, since = [], 0
    while True:
        body = httpx.get(
            f"{base}/api/runs/{run_id}/events?since={since}&limit=1000", headers={"Authorization": f"Bearer {OPERATOR}"}
        ).json()
        out += [json.dumps(e, separators=(",", ":")) for e in body["events"]]
        if not body["more"]:
            return out
        since = body["next_since"]


def pct(xs: list[float], p: float) -> float:
    return statistics.quantiles(xs, n=100)[int(p) - 1] if len(xs) >= 2 else (xs[0] if xs else float("nan"))


def start_baseline(port: int, environ: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "baseline.py"), str(port)],
            env=environ,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def wait_listening(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def suite(label: str, args: argparse.Namespace, tmp: Path, redis_url: str | None) -> None:
    port = free_port()
    serve = ["serve", "--port", str(port), "--agents", "bench_agents", "--max-queue", "100000"] + (
        ["--redis", redis_url] if redis_url else []
    )
    go = tmp / f"go-{label}"  # live runs wait for it until every watcher is synced (bench_live)
    go.touch()
    hub = Process(serve, dict(env(args.events, args.delay), BENCH_GO_FILE=str(go)), tmp / f"{label}.log", port).start()
    bport = free_port()
    baseline: subprocess.Popen[bytes] | None = None
    try:
        base, ws_url = hub.url, hub.ws_url
        run_id, head = finished_run(base, args.events)
        frames_file = tmp / "frames.jsonl"
        frames_file.write_text("\n".join(log_frames(base, run_id)) + "\n")
        baseline = start_baseline(
            bport, dict(env(args.events, args.delay), FRAMES_FILE=str(frames_file)), tmp / "baseline.log"
        )
        await wait_listening(bport)

        print(f"\n== {label}: one run of {head} events (RUNCAST_COALESCE_S=0: one event per streamed word)")
        print(f"{'watchers':>8}  {'replay ev/s':>12}  {'baseline ev/s':>13}  {'ratio':>6}")
        for n in args.watchers:
            await bench_baseline(f"ws://127.0.0.1:{bport}/ws", head, 1)  # warm-up
            b = statistics.median(
                [await bench_baseline(f"ws://127.0.0.1:{bport}/ws", head, n) for _ in range(args.repeat)]
            )
            r = statistics.median([await bench_replay(ws_url, run_id, head, n) for _ in range(args.repeat)])
            print(f"{n:>8}  {r:>12,.0f}  {b:>13,.0f}  {r / b:>6.2f}")

        print(f"\n{'watchers':>8}  {'live run s':>10}  {'vs 1 watcher':>12}  {'delay p50 ms':>12}  {'p99 ms':>8}")
        one = None
        for n in args.watchers:
            # Redis commands over the streaming only: from the go (every watcher synced) to the run's end at each
            marks: list[dict[str, int]] = []
            server = [redis.Redis.from_url(redis_url)] if redis_url else []
            mark = (lambda: marks.append(command_counts(server))) if redis_url else None  # noqa: E731
            dt, delays, events = await bench_live(ws_url, n, go, at_go=mark, at_end=mark)
            one = one or dt
            extra = ""
            if marks:
                before, after = marks
                per = {k: after.get(k, 0) - before.get(k, 0) for k in after if k not in PERIODIC_COMMANDS}
                top = ", ".join(f"{k} {v / events:.2f}" for k, v in sorted(per.items(), key=lambda kv: -kv[1])[:4] if v)
                extra = f"  redis commands/event {sum(per.values()) / events:.2f} ({top})"
            print(
                f"{n:>8}  {dt:>10.2f}  {dt / one:>12.2f}  {pct(delays, 50) * 1000:>12.1f}  {pct(delays, 99) * 1000:>8.1f}{extra}"
            )
    finally:
        hub.stop()
        if baseline is not None:
            baseline.kill()
            baseline.wait()


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=2000, help="words the firehose agent streams (about one event each)")
    p.add_argument(
        "--delay", type=float, default=0.002, help="seconds between the firehose's words (a live run's pace)"
    )
    p.add_argument("--watchers", default="1,10,50,200", help="comma-separated numbers of watchers")
    p.add_argument("--repeat", type=int, default=3, help="runs per replay figure (the median is shown)")
    p.add_argument("--no-redis", action="store_true", help="skip the Redis suite")
    p.add_argument("--redis-only", action="store_true", help="only the Redis suite")
    p.add_argument("--keep", action="store_true", help="keep the servers' logs")
    args = p.parse_args()
    args.watchers = [int(x) for x in args.watchers.split(",")]
    print(
        f"runcast bench: {os.cpu_count()} cpus, python {sys.version.split()[0]}; clients and servers share the machine"
    )
    tmp = Path(tempfile.mkdtemp(prefix="runcast-bench-"))
    try:
        if not args.redis_only:
            await suite("memory backend, one process", args, tmp, None)
        if not args.no_redis:
            srv = RedisServer()
            srv.start()
            try:
                await suite("redis backend, hub + worker on a redis-server", args, tmp, srv.url)
            finally:
                srv.cleanup()
    except BaseException:
        print(f"\nthe servers' logs are in {tmp}", file=sys.stderr)
        raise
    if args.keep:
        print(f"\nthe servers' logs are in {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
