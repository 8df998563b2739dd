"""Runcast's added latency on a conversation's next turn: from `say` to the first delta at every one of N watchers,
against the bare Agents SDK producing its first delta in-process with the same scripted model and the same input,
measured in the same run.

    python bench/say.py                         # memory, then a hub + worker on a throw-away redis-server
    python bench/say.py --watchers 100 --rounds 20 --no-redis --coalesce 0

Each round: one `say` on a completed run (the `quick` fixture agent, a DemoModel without delay), timed from just
before the frame is sent to the first `message.delta` of that turn at each watcher (the watchers are one Node
process, bench/say_watchers.mjs, as bench/fanout.py's are: a Python process parsing 100 sockets' frames would
measure itself); the baseline is
`Runner.run_streamed(agent, <the same conversation>)` to its first `response.output_text.delta`, in this process.
Printed: p50 / p95 of both and of the difference (the hub's added latency). `--coalesce` sets RUNCAST_COALESCE_S
(an item's first delta goes out at once; the deltas that follow it within that window are merged; 0.025 by default).
Nothing is asserted.
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
from pathlib import Path

import httpx
import websockets

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "server")]

from hubtest import SECRET, Process, free_port, token  # noqa: E402

OPERATOR = token("bench", ["operator", "viewer"], name="Bench")


# The logged events of a turn, in order; their `ts` (the hub's and the worker's clocks: this machine's) split the
# latency into stages.
STAGES = ("message.said", "run.resumed", "message.delta")


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


def env(coalesce: str) -> dict[str, str]:
    e = dict(os.environ)
    e.pop("OPENAI_API_KEY", None)
    e.update(
        {
            "RUNCAST_SECRET": SECRET,
            "RUNCAST_COALESCE_S": coalesce,
            "RUNCAST_LOG_LEVEL": "WARNING",
            "RUNCAST_RATE_PER_S": "100000",
            "RUNCAST_RATE_BURST": "100000",
            "RUNCAST_MAX_CONNECTIONS": "0",
            "RUNCAST_MAX_UNAUTHENTICATED": "0",
            "RUNCAST_MAX_STARTS_PER_MINUTE": "0",
            "RUNCAST_MAX_OPEN_RUNS": "0",
            "OPENAI_AGENTS_DISABLE_TRACING": "1",
            "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT / "server"), e.get("PYTHONPATH", "")]),
        }
    )
    return e


async def hub_rounds(
    base: str, url: str, watchers: int, rounds: int
) -> tuple[list[float], str, dict[str, list[float]]]:
    """Each round: `say` on a completed run, timed from just before the frame is sent to the first delta of that turn
    at each watcher (bench/say_watchers.mjs, one Node process: the hub's latency, not a Python client's)."""
    http = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {OPERATOR}"}, timeout=30)
    run_id = http.post("/api/runs", json={"agent": "quick", "input": "hello"}).json()["run_id"]
    while http.get(f"/api/runs/{run_id}").json()["status"] != "completed":
        await asyncio.sleep(0.05)
    opt = {"url": url, "token": OPERATOR, "run_id": run_id, "count": watchers}
    node = await asyncio.create_subprocess_exec(
        "node",
        str(ROOT / "bench" / "say_watchers.mjs"),
        json.dumps(opt),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        limit=1 << 24,
    )
    assert node.stdin and node.stdout

    async def line() -> str:
        return (await asyncio.wait_for(node.stdout.readline(), 120)).decode().strip()  # type: ignore[union-attr]

    assert await line() == "ready"
    await asyncio.sleep(0.5)
    sayer = await websockets.connect(url, subprotocols=["runcast.v1.json"])
    await sayer.send(json.dumps({"type": "hello", "token": OPERATOR}))
    await sayer.recv()
    samples: list[float] = []
    stages: dict[str, list[float]] = {
        k: [] for k in ("hub takes say", "worker starts turn", "model to first delta", "fan-out to last watcher")
    }
    for i in range(rounds):
        node.stdin.write((json.dumps({"after": http.get(f"/api/runs/{run_id}").json()["head_seq"]}) + "\n").encode())
        await node.stdin.drain()
        assert await line() == "armed"
        await asyncio.sleep(0.05)
        t0 = time.time()
        await sayer.send(json.dumps({"type": "say", "run_id": run_id, "text": f"question {i}", "id": f"s{i}"}))
        got = json.loads(await line())
        firsts = [t - t0 for t in got["firsts"]]
        samples += firsts
        st = got["ts"]
        if all(k in st for k in STAGES):
            stages["hub takes say"].append(st["message.said"] - t0)
            stages["worker starts turn"].append(st["run.resumed"] - st["message.said"])
            stages["model to first delta"].append(st["message.delta"] - st["run.resumed"])
            stages["fan-out to last watcher"].append(t0 + max(firsts) - st["message.delta"])
        while http.get(f"/api/runs/{run_id}").json()["status"] != "completed":
            await asyncio.sleep(0.02)
    node.stdin.write(b'{"exit": true}\n')
    await node.stdin.drain()
    await node.wait()
    await sayer.close()
    return samples, run_id, stages


async def sdk_rounds(rounds: int) -> list[float]:
    """The bare SDK: the same agent and model, the same kind of conversation, to its first text delta."""
    from agents import RunConfig, Runner

    sys.path.insert(0, str(ROOT / "tests"))
    import agents_fixture
    from runcast.conversation import model_message

    agent = agents_fixture.AGENTS["quick"]
    history: list = [{"role": "user", "content": "hello"}]
    first = Runner.run_streamed(agent, history, run_config=RunConfig(tracing_disabled=True))
    async for _ in first.stream_events():
        pass
    history = first.to_input_list()
    out = []
    for i in range(rounds):
        conv = history + [model_message({"by": {"sub": "bench", "name": "Bench"}, "text": f"question {i}"})]
        t0 = time.perf_counter()
        r = Runner.run_streamed(agent, conv, run_config=RunConfig(tracing_disabled=True))
        got = None
        async for ev in r.stream_events():
            if got is None and getattr(getattr(ev, "data", None), "type", "") == "response.output_text.delta":
                got = time.perf_counter() - t0
        out.append(got or 0.0)
        history = r.to_input_list()
    return out


async def suite(label: str, args: argparse.Namespace, tmp: Path, redis_url: str | None) -> None:
    port = free_port()
    common = ["--agents", "demo", "--agents", "agents_fixture"]
    serve = Process(
        ["serve", "--port", str(port), *common, *(["--redis", redis_url] if redis_url else [])],
        env(args.coalesce),
        tmp / f"{label}.log",
        port,
    )
    serve.start()
    try:
        hub, _, stages = await hub_rounds(serve.url, serve.ws_url, args.watchers, args.rounds)
    finally:
        serve.stop()
    sdk = await sdk_rounds(args.rounds)
    ms = lambda x: f"{x * 1000:.1f} ms"  # noqa: E731
    print(f"{label}: {args.watchers} watchers x {args.rounds} says (coalesce {args.coalesce} s)")
    print(
        f"  say -> first delta at each watcher: p50 {ms(statistics.median(hub))}, p95 {ms(pct(hub, 0.95))} ({len(hub)} samples)"
    )
    print(f"  bare SDK, in-process, first delta:  p50 {ms(statistics.median(sdk))}, p95 {ms(pct(sdk, 0.95))}")
    if all(stages.values()):
        print(
            "  where it goes (p50, from the events' ts, ms resolution): "
            + ", ".join(f"{k} {ms(statistics.median(v))}" for k, v in stages.items())
        )
    print(
        f"  added by Runcast: p50 {ms(statistics.median(hub) - statistics.median(sdk))}, "
        f"p95 {ms(pct(hub, 0.95) - pct(sdk, 0.95))}",
        flush=True,
    )


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--watchers", type=int, default=100)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--coalesce", default="0.025")
    p.add_argument("--no-redis", action="store_true")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="runcast-say-"))
    await suite("memory", args, tmp, None)
    if not args.no_redis:
        from redis_server import RedisServer

        server = RedisServer()
        server.start()
        try:
            await suite("redis", args, tmp, server.url)
        finally:
            server.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
