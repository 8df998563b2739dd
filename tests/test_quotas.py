"""Per-user quotas on starting runs, on both backends (memory: one node; Redis: two nodes, one quota across them),
and the memory backend forgetting finished runs after --retention."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import websockets

from hubtest import ADMIN, TERMINAL, Client, Cluster, on_redis, token
from rawws import rss_bytes

QUOTA_ENV = {
    "RUNCAST_MAX_STARTS_PER_MINUTE": "20",
    "RUNCAST_MAX_OPEN_RUNS": "6",
    "RUNCAST_RATE_PER_S": "1000",
    "RUNCAST_RATE_BURST": "1000",
}


@pytest.fixture(scope="module", params=["memory", "redis"])
def hub(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp: Path = tmp_path_factory.mktemp(f"quota-{request.param}")
    if request.param == "memory":
        cluster = Cluster(tmp, "memory", env=QUOTA_ENV).start()
        yield cluster
        cluster.stop()
        return
    with on_redis(tmp, nodes=2, env=QUOTA_ENV) as cluster:
        yield cluster


async def _finished(hub: Cluster, run_id: str) -> None:
    for _ in range(200):
        if hub.http("GET", f"/api/runs/{run_id}").json()["status"] in ("completed", "failed", "cancelled"):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{run_id} did not finish")


async def test_starts_per_minute_hold_across_ten_connections_of_one_user(hub: Cluster) -> None:
    busy = token("busy", ["operator"])
    conns = [await Client.connect(hub.ws_url(), busy) for _ in range(10)]
    started: list[str] = []
    for round_ in range(4):  # 20 starts, 5 at once (under the open-runs cap), from 10 connections: all admitted
        batch = conns[(round_ % 2) * 5 :][:5]
        acks = await asyncio.gather(*(c.request({"type": "start", "agent": "quick", "input": "hi"}) for c in batch))
        assert [a["type"] for a in acks] == ["ack"] * 5, acks
        started += [a["run_id"] for a in acks]
        for rid in started[-5:]:
            await _finished(hub, rid)  # finished runs are not open: only the per-minute quota binds below
    refused = await asyncio.gather(*(c.request({"type": "start", "agent": "quick", "input": "hi"}) for c in conns))
    for err in refused:
        assert err["type"] == "error" and err["code"] == "rate_limited" and err["quota"] == "starts_per_minute", err
        assert 1 <= err["retry_after_s"] <= 60
    r = hub.http("POST", "/api/runs", busy, json={"agent": "quick", "input": "http"})
    assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(r.headers["retry-after"]) <= 60
    # someone else is not affected
    assert hub.http("POST", "/api/runs", token("other", ["operator"]), json={"agent": "quick"}).status_code == 201
    # nothing was created for the refused starts
    mine = [
        r for r in hub.http("GET", "/api/runs?limit=1000", ADMIN).json()["runs"] if r["started_by"]["sub"] == "busy"
    ]
    assert sorted(r["run_id"] for r in mine) == sorted(started)
    for c in conns:
        assert (await c.request({"type": "ping"}))["type"] == "pong"
        await c.close()


async def test_open_runs_per_user_are_capped_until_one_finishes(hub: Cluster) -> None:
    waiter = token("waiter", ["operator"])
    c = await Client.connect(hub.ws_url(), waiter)
    runs = [(await c.request({"type": "start", "agent": "demo", "input": "x"}))["run_id"] for _ in range(6)]
    err = await c.request({"type": "start", "agent": "demo", "input": "x"})
    assert err["type"] == "error" and err["code"] == "rate_limited" and err["quota"] == "open_runs"
    assert err["retry_after_s"] == 10
    r = hub.http("POST", "/api/runs", waiter, json={"agent": "demo"})
    assert r.status_code == 429 and r.headers["retry-after"] == "10" and r.json()["error"]["quota"] == "open_runs"
    assert (await c.request({"type": "cancel", "run_id": runs[0]}))["type"] == "ack"
    await _finished(hub, runs[0])
    again = await c.request({"type": "start", "agent": "demo", "input": "x"})
    assert again["type"] == "ack"
    for rid in runs[1:] + [again["run_id"]]:
        assert (await c.request({"type": "cancel", "run_id": rid}))["type"] == "ack"
    await c.close()


@pytest.fixture(scope="module")
def forgetful(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = Cluster(
        tmp_path_factory.mktemp("retention"),
        "memory",
        serve_args=["--retention", "1"],
        env={"RUNCAST_RATE_PER_S": "100000", "RUNCAST_RATE_BURST": "100000", "RUNCAST_LOG_LEVEL": "ERROR"},
    ).start()
    yield cluster
    cluster.stop()


async def _churn(hub: Cluster, n: int, workers: int = 48) -> None:
    """n runs of the quick agent, each watched to its end; `workers` connections, each one run at a time."""

    async def worker(i: int, count: int) -> None:
        async with websockets.connect(hub.ws_url(), subprotocols=["runcast.v1.json"], max_size=None) as ws:
            await ws.send(json.dumps({"type": "hello", "token": token(f"churn{i % 8}", ["operator"])}))
            assert json.loads(await ws.recv())["type"] == "welcome"
            for _ in range(count):
                await ws.send(json.dumps({"type": "start", "agent": "quick", "input": "x", "id": "s"}))
                ack = json.loads(await ws.recv())
                assert ack["type"] == "ack", ack
                rid = ack["run_id"]
                await ws.send(json.dumps({"type": "subscribe", "run_id": rid}))
                while json.loads(await ws.recv())["type"] not in TERMINAL:
                    pass
                await ws.send(json.dumps({"type": "unsubscribe", "run_id": rid, "id": "u"}))
                while json.loads(await ws.recv()).get("id") != "u":
                    pass

    await asyncio.gather(*(worker(i, n // workers + (i < n % workers)) for i in range(workers)))


async def test_memory_backend_forgets_finished_runs_after_retention(forgetful: Cluster) -> None:
    hub = forgetful
    pid = hub.nodes[0].proc.pid  # type: ignore[union-attr]
    await _churn(hub, 1500)  # warm up: every code path and allocator arena in use
    await asyncio.sleep(2.5)
    before = rss_bytes(pid)
    t0 = time.monotonic()
    await _churn(hub, 10_000)
    took = time.monotonic() - t0
    await asyncio.sleep(2.5)  # past retention: everything finished is forgotten
    after = rss_bytes(pid)
    assert hub.http("GET", "/api/runs?limit=1000", ADMIN).json()["runs"] == []
    print(f"10,000 runs in {took:.1f} s; RSS {before / 2**20:.1f} MiB -> {after / 2**20:.1f} MiB")
    assert after <= before * 1.05, (before, after)
