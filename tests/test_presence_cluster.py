"""Presence across hub nodes on one Redis when a node is killed: its watchers leave everyone's list by themselves
(their entries are no longer refreshed), and the node, restarted, shows nobody twice."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hubtest import ALICE, OPERATOR, Client, Cluster, on_redis, subs, token

REFRESH_S = 1.5


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with on_redis(tmp_path, nodes=2, workers=1, env={"RUNCAST_PRESENCE_REFRESH_S": str(REFRESH_S)}) as c:
        yield c


async def test_a_killed_nodes_watchers_leave_and_its_restart_shows_nobody_twice(cluster: Cluster) -> None:
    run_id = cluster.start_run("demo", tok=OPERATOR)
    observer = await Client.connect(cluster.ws_url(1), ALICE)
    await observer.subscribe(run_id)
    toks = {s: token(s, ["viewer"]) for s in ("p1", "p2", "vic")}
    on_victim = [await Client.connect(cluster.ws_url(0), t) for t in toks.values()]
    for c in on_victim:
        await c.subscribe(run_id)
    everyone = ["alice", "p1", "p2", "vic"]
    await observer.wait_presence(run_id, lambda p: subs(p) == everyone)
    await asyncio.sleep(REFRESH_S * 1.2)  # past a refresh: the entries' expiry now comes from a refresh, not the join

    cluster.nodes[0].kill()  # SIGKILL: nobody says goodbye for its watchers
    killed = time.monotonic()
    await observer.wait_presence(run_id, lambda p: subs(p) == ["alice"], timeout=10)
    gone_after = time.monotonic() - killed
    assert gone_after <= 2 * REFRESH_S, f"the killed node's watchers left after {gone_after:.2f}s"

    cluster.nodes[0].start()  # the same node, restarted; its watchers come back to it
    back = [await Client.connect(cluster.ws_url(0), t) for t in toks.values()]
    for c in back:
        await c.subscribe(run_id)
    await observer.wait_presence(run_id, lambda p: subs(p) == everyone)
    await asyncio.sleep(2 * REFRESH_S)  # long enough for any stale entry to have shown up, or expired
    for c in [observer, *back]:
        assert subs(c.presence(run_id)) == everyone  # each person once, on both nodes
    assert {e["connection_id"] for e in observer.presence(run_id).values()} == {
        e["connection_id"] for e in back[0].presence(run_id).values()
    }
    watched = cluster.http("GET", f"/api/runs/{run_id}", node=1).json()["watched"]
    assert sorted(w["sub"] for w in watched) == everyone  # the record lists each person once
    for c in [observer, *back, *on_victim]:
        await c.close()
