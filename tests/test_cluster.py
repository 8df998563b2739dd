"""Many hub nodes and workers on one real redis-server, and what happens when one of them dies.

Each test builds its own cluster (three hub nodes, two workers) on its own redis-server, because it kills parts of it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_sync

from hubtest import (
    ALICE,
    OPERATOR,
    TERMINAL,
    VIEWER,
    Client,
    Cluster,
    commands_per_event,
    on_redis,
    seqs,
    without_presence,
)

LEASE_S = 2.0


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with on_redis(
        tmp_path, persist=True, nodes=3, workers=2, env={"RUNCAST_LEASE_S": str(LEASE_S), "RUNCAST_DEMO_DELAY": "0.02"}
    ) as c:
        yield c


def run_detail(c: Cluster, run_id: str) -> dict:
    return c.http("GET", f"/api/runs/{run_id}").json()


def wait_until(pred, timeout: float = 20.0, every: float = 0.05):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("condition not met in time")


async def approve(c: Cluster, run_id: str, approval_id: str, tok: str = ALICE, node: int | None = None) -> dict:
    a = await Client.connect(c.ws_url(node), tok)
    ack = await a.request({"type": "decide", "run_id": run_id, "approval_id": approval_id, "decision": "approve"})
    await a.close()
    return ack


async def test_killing_a_hub_node_mid_run_clients_reconnect_elsewhere_with_since(cluster: Cluster) -> None:
    run_id = cluster.start_run()
    on_victim = [await Client.connect(cluster.ws_url(0), VIEWER) for _ in range(3)]
    elsewhere = await Client.connect(cluster.ws_url(1), VIEWER)
    for c in on_victim + [elsewhere]:
        await c.subscribe(run_id)
    await elsewhere.wait_event(run_id, "message.delta")
    cluster.nodes[0].kill()
    received: list[list[dict]] = []
    for i, c in enumerate(on_victim):
        await c.wait_closed()
        got = c.events(run_id)
        assert seqs(got) == list(range(1, len(got) + 1))
        last = got[-1]["seq"]
        back = await Client.connect(cluster.ws_url(1 + i % 2), VIEWER)  # to another node
        sync = await back.subscribe(run_id, since=last)
        assert sync["type"] == "sync"
        received.append((got, back))  # type: ignore[arg-type]
    req = await elsewhere.wait_event(run_id, "approval.requested")
    await approve(cluster, run_id, req["data"]["approval_id"], node=2)
    end = await elsewhere.wait_event(run_id, TERMINAL)
    assert end["type"] == "run.completed"
    full = [e for e in elsewhere.events(run_id) if e["seq"] <= end["seq"]]
    assert seqs(full) == list(range(1, end["seq"] + 1))
    for got, back in received:  # type: ignore[misc]
        await back.wait_event(run_id, "run.completed")
        joined = got + [e for e in back.events(run_id) if e["seq"] <= end["seq"]]
        assert without_presence(joined) == without_presence(full)
        assert seqs(joined) == list(range(1, end["seq"] + 1))  # presence included: exactly once each
        await back.close()
    await elsewhere.close()


async def test_killing_redis_mid_run_the_run_carries_on_and_nothing_is_lost(cluster: Cluster) -> None:
    run_id = cluster.start_run()
    watchers = [await Client.connect(cluster.ws_url(i), VIEWER) for i in range(3)]
    for w in watchers:
        await w.subscribe(run_id)
    await watchers[0].wait_event(run_id, "message.delta")
    cluster.redis.stop()  # type: ignore[attr-defined]
    await asyncio.sleep(1.0)  # the worker keeps streaming; its events wait, in order
    cluster.redis.start()  # type: ignore[attr-defined]
    req = await watchers[1].wait_event(run_id, "approval.requested", timeout=30)
    assert (await approve(cluster, run_id, req["data"]["approval_id"]))["type"] == "ack"
    ends = [await w.wait_event(run_id, TERMINAL, timeout=30) for w in watchers]
    assert all(e["type"] == "run.completed" for e in ends)
    log = cluster.log_events(run_id)
    end = ends[0]["seq"]
    assert seqs(log) == list(range(1, len(log) + 1))
    for w in watchers:  # every client: the full list, each seq once, identical to the log
        got = [e for e in w.events(run_id) if e["seq"] <= end]
        assert got == log[:end]
    text = "".join(e["data"]["delta"] for e in log if e["type"] == "message.delta")
    completed = "".join(e["data"]["text"] for e in log if e["type"] == "message.completed")
    assert text == completed  # no delta lost or doubled across the outage
    assert len(cluster.tool_calls(run_id, "delete_files")) == 1
    # the outage did hit the run while it streamed: its worker held events back and appended them later
    held = [
        p
        for p in cluster.workers
        if "backend unreachable" in p.log_path.read_text() and run_id in p.log_path.read_text()
    ]
    assert held, "the worker never had to hold events back: the outage missed the run"
    # and no client was told anything false: no terminal event but the one at the end, no error frames
    for w in watchers:
        assert [e["type"] for e in w.events(run_id, TERMINAL)] == ["run.completed"]
        assert [f for f in w.frames if f["type"] == "error"] == []
    for w in watchers:
        await w.close()


async def test_killing_the_worker_of_a_paused_run_another_worker_resumes_it(cluster: Cluster) -> None:
    run_id = cluster.start_run()
    w = await Client.connect(cluster.ws_url(), VIEWER)
    await w.subscribe(run_id)
    req = await w.wait_event(run_id, "approval.requested")
    await w.wait_event(run_id, "run.paused")
    (listing,) = cluster.tool_calls(run_id, "list_files")
    first = next(p for p in cluster.workers if p.proc.pid == listing["pid"])
    first.kill()
    assert (await approve(cluster, run_id, req["data"]["approval_id"]))["outcome"] == "decided"
    end = await w.wait_event(run_id, TERMINAL, timeout=30)
    assert end["type"] == "run.completed" and "Done. I deleted 3 files" in end["data"]["output"]
    (deletion,) = cluster.tool_calls(run_id, "delete_files")
    assert deletion["pid"] != listing["pid"]
    await w.close()


async def test_killing_the_worker_mid_segment_fails_the_run_with_worker_lost(cluster: Cluster) -> None:
    run_id = cluster.start_run()
    w = await Client.connect(cluster.ws_url(), VIEWER)
    await w.subscribe(run_id)
    await w.wait_event(run_id, "tool.output")  # list_files ran; the model is streaming its next turn
    owner = run_detail(cluster, run_id)["worker"]
    assert owner and owner.startswith("w-")
    pid = int(owner.split("-")[1])
    assert pid in [p.proc.pid for p in cluster.workers]
    os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    end = await w.wait_event(run_id, TERMINAL, timeout=LEASE_S + 10)
    assert end["type"] == "run.failed" and end["data"]["code"] == "worker_lost"
    assert time.monotonic() - killed_at < LEASE_S + 3
    await asyncio.sleep(LEASE_S)
    assert [c["tool"] for c in cluster.tool_calls(run_id)] == ["list_files"]  # nothing ran twice, nothing after
    kinds = [e["type"] for e in without_presence(cluster.log_events(run_id))]
    assert kinds[-1] == "run.failed" and kinds.count("run.failed") == 1
    await w.close()


async def test_killing_the_worker_while_an_approved_tool_runs_never_runs_it_again(cluster: Cluster) -> None:
    run_id = cluster.start_run("slow-delete")
    w = await Client.connect(cluster.ws_url(), VIEWER)
    await w.subscribe(run_id)
    req = await w.wait_event(run_id, "approval.requested")
    await w.wait_event(run_id, "run.paused")
    assert (await approve(cluster, run_id, req["data"]["approval_id"]))["outcome"] == "decided"
    (started,) = await asyncio.to_thread(wait_until, lambda: cluster.tool_calls(run_id, "slow_delete"))
    os.kill(started["pid"], signal.SIGKILL)  # mid-tool: the approved call has started and will never report back
    end = await w.wait_event(run_id, TERMINAL, timeout=LEASE_S + 10)
    assert end["type"] == "run.failed" and end["data"]["code"] == "worker_lost"
    await asyncio.sleep(LEASE_S * 2)  # time for anyone to (wrongly) run it again
    assert len(cluster.tool_calls(run_id, "slow_delete")) == 1
    log = cluster.log_events(run_id)
    assert seqs(log) == list(range(1, len(log) + 1))
    kinds = [e["type"] for e in without_presence(log)]
    assert kinds.count("run.resumed") == 1 and kinds[-1] == "run.failed"
    await w.close()


async def test_redis_commands_per_event_do_not_grow_with_watchers(cluster: Cluster) -> None:
    r = redis_sync.Redis.from_url(cluster.redis.url)  # type: ignore[attr-defined]
    per_event_1 = await commands_per_event(cluster, [r], 1)
    per_event_200 = await commands_per_event(cluster, [r], 200)
    print(f"redis commands per event: 1 watcher {per_event_1:.2f}, 200 watchers {per_event_200:.2f}")
    assert per_event_200 <= per_event_1 * 1.25 + 0.5


async def test_log_trimmed_is_an_error_not_a_silent_gap(tmp_path: Path) -> None:
    with on_redis(tmp_path, serve_args=["--max-log", "10"]) as c:  # one `runcast serve --redis`: hub and worker
        run_id = c.start_run()
        w = await Client.connect(c.ws_url(), VIEWER)
        await w.subscribe(run_id)
        await w.wait_event(run_id, "run.paused")
        late = await Client.connect(c.ws_url(), VIEWER)
        err = await late.subscribe(run_id, since=0)
        assert err["type"] == "error" and err["code"] == "log_trimmed"
        assert "no longer kept" in err["message"] and err["first_kept"] > 1
        sync = await late.subscribe(run_id, since=err["first_kept"] - 1)
        assert sync["type"] == "sync"
        got = [f for f in late.frames[late.frames.index(err) : late.frames.index(sync)] if "seq" in f]
        assert seqs(got) == list(range(err["first_kept"], sync["head_seq"] + 1))
        await w.close()
        await late.close()


async def test_a_finished_run_expires_after_the_retention_time(tmp_path: Path) -> None:
    with on_redis(tmp_path, serve_args=["--retention", "2"]) as c:
        run_id = c.start_run()
        w = await Client.connect(c.ws_url(), VIEWER)
        await w.subscribe(run_id)
        await w.wait_event(run_id, "run.paused")
        await asyncio.sleep(2.5)  # a live run does not expire
        assert c.http("GET", f"/api/runs/{run_id}").json()["status"] == "paused"
        assert c.http("POST", f"/api/runs/{run_id}/cancel", OPERATOR, json={}).status_code == 200
        await w.wait_event(run_id, TERMINAL)
        await w.close()
        assert c.http("GET", f"/api/runs/{run_id}/events").status_code == 200
        gone = await asyncio.to_thread(
            wait_until, lambda: c.http("GET", f"/api/runs/{run_id}").status_code == 404, 10.0
        )
        assert gone
        assert run_id not in [r["run_id"] for r in c.http("GET", "/api/runs").json()["runs"]]
        r = redis_sync.Redis.from_url(c.redis_url)
        # (who watched it lives --retention past the last watcher, who left just after the cancel)
        assert await asyncio.to_thread(wait_until, lambda: [k for k in r.keys("*") if run_id.encode() in k] == [], 10.0)


async def test_a_worker_streams_at_most_concurrency_segments_at_once(tmp_path: Path) -> None:
    """`runcast worker --concurrency 1`: a second run waits for the first to pause (a paused run holds no slot)."""
    with on_redis(
        tmp_path, nodes=1, workers=1, worker_args=["--concurrency", "1"], env={"RUNCAST_DEMO_DELAY": "0.02"}
    ) as c:
        first, second = c.start_run(), c.start_run()
        w = await Client.connect(c.ws_url(), VIEWER)
        for run_id in (first, second):
            await w.subscribe(run_id)
        paused = await w.wait_event(first, "run.paused")
        began = await w.wait_event(second, "agent.updated")  # the second run's first event from the worker
        assert began["ts"] >= paused["ts"]  # (ISO 8601 UTC, same width: they compare as text)
        ran_first = c.tool_calls(first, "list_files")[0]["ts"]
        assert c.tool_calls(second, "list_files") == [] or c.tool_calls(second, "list_files")[0]["ts"] > ran_first
        await w.wait_event(second, "run.paused")
        await w.close()


async def test_while_redis_is_down_commands_say_so_and_the_connection_stays(cluster: Cluster) -> None:
    c = await Client.connect(cluster.ws_url(0), OPERATOR)
    cluster.redis.stop()  # type: ignore[attr-defined]
    try:
        err = await c.request({"type": "start", "agent": "demo", "input": "x"})
        assert err["type"] == "error" and err["code"] == "internal" and "cannot reach its backend" in err["message"]
        assert (await c.request({"type": "ping"}))["type"] == "pong"
        r = cluster.http("POST", "/api/runs", OPERATOR, node=0, json={"agent": "demo", "input": "x"})
        assert r.status_code == 503 and r.json()["error"]["code"] == "internal" and r.headers["retry-after"] == "1"
        assert cluster.http("GET", "/readyz", node=0).status_code == 503
    finally:
        cluster.redis.start()  # type: ignore[attr-defined]
    ack = await asyncio.to_thread(
        wait_until,
        lambda: (
            cluster.http("POST", "/api/runs", OPERATOR, node=0, json={"agent": "demo", "input": "x"}).status_code == 201
        ),
    )
    assert ack
    assert (await c.request({"type": "start", "agent": "demo", "input": "y"}))["type"] == "ack"
    await c.close()
