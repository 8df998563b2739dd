"""A Redis that comes back empty is noticed: hub and worker say so (log, /readyz), clients are dropped with 1012, and
a client holding `since` gets `log_reset` on resubscribing, never silence."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hubtest import OPERATOR, TERMINAL, VIEWER, Client, Cluster, on_redis


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with on_redis(tmp_path, nodes=1, workers=1) as c:  # no persistence: a restart comes back empty
        yield c


async def wait_for(pred, timeout: float = 15.0):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError("condition not met in time")


async def test_redis_restarted_empty_gives_log_reset_and_everyone_says_so(cluster: Cluster) -> None:
    run_id = cluster.start_run("broken", tok=OPERATOR)
    c = await Client.connect(cluster.ws_url(0), VIEWER)
    sync = await c.subscribe(run_id)
    end = await c.wait_event(run_id, TERMINAL)
    epoch = sync["epoch"]
    assert cluster.http("GET", "/readyz").text == "ready"

    cluster.redis.stop()  # type: ignore[attr-defined]
    cluster.redis.start()  # type: ignore[attr-defined]  (empty)
    code, _ = await c.wait_closed(timeout=15)  # the hub noticed, and drops its clients to make them resubscribe
    assert code == 1012
    back = await Client.connect(cluster.ws_url(0), VIEWER)
    err = await back.subscribe_frame({"type": "subscribe", "run_id": run_id, "since": end["seq"], "epoch": epoch})
    assert err["type"] == "error" and err["code"] == "log_reset", err
    assert "history you hold was lost" in err["message"]

    ready = cluster.http("GET", "/readyz")
    assert ready.status_code == 200 and "Redis lost its data" in ready.text
    await wait_for(lambda: "Redis lost its data" in cluster.nodes[0].log_path.read_text())
    await wait_for(lambda: "Redis lost its data" in cluster.workers[0].log_path.read_text())

    # the hub goes on with what Redis holds now: a new run, with its own epoch
    new = cluster.start_run("broken", tok=OPERATOR)
    s2 = await back.subscribe(new)
    assert s2["type"] == "sync" and s2["epoch"] and s2["epoch"] != epoch
    await back.wait_event(new, TERMINAL)
    await back.close()
