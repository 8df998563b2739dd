"""Runcast on a real Redis Cluster (three masters with a replica each, Debian's redis-server, created with
`redis-cli --cluster create`): the backend behaves as on one Redis; a run's slot migrates mid-run and the master of
a paused run fails over, and every watcher still gets 1..N once each while the tool runs once. The behavioural
suite (test_hub.py) also runs on a cluster, through the `hub` fixture in conftest.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from hubtest import ALICE, OPERATOR, TERMINAL, VIEWER, Client, Cluster, commands_per_event, seqs, without_presence
from redis_cluster import RedisCluster
from runcast.backends.memory import MemoryBackend
from runcast.backends.redis import RedisBackend
from test_redis_backend import _scenario


@pytest.fixture
def rc() -> Iterator[RedisCluster]:
    c = RedisCluster().start()
    yield c
    c.stop()


def spread(c: Cluster, rc: RedisCluster) -> Cluster:
    """Give each runcast process a different node's address (a replica's too): any node will do."""
    for i, p in enumerate(c.nodes + c.workers):
        p.args[p.args.index(rc.url)] = f"redis://{rc.nodes[i % len(rc.nodes)].addr}"
    return c


async def test_the_backend_finds_the_cluster_and_behaves_as_on_one_redis(rc: RedisCluster) -> None:
    b = RedisBackend(f"redis://{rc.nodes[-1].addr}", max_log=5)  # a replica's address
    await b.start()
    try:
        assert b.cluster
        assert await _scenario(b) == await _scenario(MemoryBackend(max_log=5))
        # every key of a run is in the run's slot; the shared ones in the prefix's slot
        keys = [k.decode() for n in rc.masters() for k in rc.node_by_port(n["port"]).client().keys("*")]
        run_keys = [k for k in keys if ":run:" in k]
        assert run_keys and all("{r1}" in k or "{r2}" in k or "{r3}" in k for k in run_keys)
        assert {rc.keyslot(k) for k in keys if ":run:" not in k} == {rc.keyslot("runcast")}
    finally:
        await b.close()


async def test_live_feed_follows_a_migrated_slot_and_a_failover_without_gaps(rc: RedisCluster) -> None:
    writer = RedisBackend(rc.url)
    reader = RedisBackend(f"redis://{rc.nodes[1].addr}")
    await writer.start()
    await reader.start()
    try:
        got: list = []
        await reader.subscribe("rm", got.extend)
        for i in range(3):
            await writer.append("rm", [("a", {"i": i})])
        slot = rc.keyslot("rm")
        others = [
            rc.node_by_port(m["port"]) for m in rc.masters() if rc.node_by_port(m["port"]) is not rc.master_of(slot)
        ]
        await asyncio.to_thread(rc.migrate_slot, slot, others[0])
        for i in range(3):
            await writer.append("rm", [("b", {"i": i})])
        deadline = time.monotonic() + 10
        while len(got) < 6 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert seqs_of(got) == [1, 2, 3, 4, 5, 6]
        # the master now holding the slot dies; its replica takes over; appends go on after the client notices
        await asyncio.to_thread(rc.replicate, "rm")
        await asyncio.to_thread(rc.kill_master_of, slot)
        await retry(lambda: writer.append("rm", [("c", {})]))
        deadline = time.monotonic() + 20
        while len(got) < 7 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert seqs_of(got) == [1, 2, 3, 4, 5, 6, 7]
    finally:
        await writer.close()
        await reader.close()


async def test_an_append_during_a_slot_migration_fails_as_transient_and_is_not_logged(rc: RedisCluster) -> None:
    """While a slot migrates, a script over a run's keys answers TRYAGAIN (some of its keys are on the other node, or
    do not exist) until the last key has moved. redis-py gives up after its redirect budget with ClusterError("TTL
    exhausted."): that must count as "unreachable for now" (the worker then waits and retries; before, the run
    failed mid-stream when a migration outlasted the budget) and nothing may have been logged."""
    b = RedisBackend(rc.url)
    await b.start()
    try:
        await b.append("rt", [("a", {})])
        loop = asyncio.get_running_loop()
        seen: list[BaseException | None] = []

        def mid_migration() -> None:  # called between MIGRATE batches, from the migrating thread
            if seen:
                return
            try:
                asyncio.run_coroutine_threadsafe(b.append("rt", [("b", {})]), loop).result(timeout=30)
                seen.append(None)
            except Exception as exc:  # noqa: BLE001
                seen.append(exc)

        slot = rc.keyslot("rt")
        other = next(rc.node_by_port(m["port"]) for m in rc.masters() if m["port"] != rc.master_of(slot).port)
        await asyncio.to_thread(rc.migrate_slot, slot, other, between_keys=mid_migration)
        assert seen and isinstance(seen[0], b.transient_errors), seen
        assert seqs_of(await b.append("rt", [("c", {})])) == [2]
        assert [e.frame["type"] for e in await b.read("rt", 0)] == ["a", "c"]
    finally:
        await b.close()


def seqs_of(events: list) -> list[int]:
    return [e.seq for e in events]


async def retry(call, timeout: float = 20.0):  # noqa: ANN001, ANN201
    """What a client does during a failover: try again until the cluster answers."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await call()
        except Exception:  # noqa: BLE001
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


@pytest.fixture(scope="module")
def hubs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Two hub nodes and a worker on one cluster, shared by the tests below (in this order: the failover leaves
    one master without a replica, which the last test does not mind)."""
    rc = RedisCluster().start()
    c = spread(
        Cluster(
            tmp_path_factory.mktemp("cluster-hubs"),
            "redis",
            rc.url,
            nodes=2,
            workers=1,
            env={"RUNCAST_LEASE_S": "5", "RUNCAST_DEMO_DELAY": "0.02"},
        ),
        rc,
    )
    c.redis_cluster = rc  # type: ignore[attr-defined]
    try:
        c.start()
    except BaseException:
        rc.stop()
        raise
    yield c
    c.stop()
    rc.stop()


def check_once_each(clients: list[Client], run_id: str, c: Cluster) -> int:
    ends = [x.events(run_id, TERMINAL) for x in clients]
    assert all(len(e) == 1 and e[0]["type"] == "run.completed" for e in ends), ends
    last = ends[0][0]["seq"]
    for x in clients:
        got = seqs(x.events(run_id))
        assert got == list(range(1, last + 1)), (got[:5], len(got), last)
    first = clients[0].events(run_id)
    assert all(x.events(run_id) == first for x in clients)  # the same events, not only the same seqs
    assert c.log_events(run_id)[:last] == first
    kinds = [e["type"] for e in without_presence(first)]
    assert kinds.count("approval.decided") == 1 and kinds.count("run.resumed") == 1
    return last


async def test_a_slot_migrates_mid_run_and_every_watcher_gets_each_event_once(hubs: Cluster) -> None:
    rc: RedisCluster = hubs.redis_cluster  # type: ignore[attr-defined]
    run_id = hubs.start_run(tok=OPERATOR)
    watchers = [await Client.connect(hubs.ws_url(), VIEWER) for _ in range(6)]
    for w in watchers:
        await w.subscribe(run_id)
    await watchers[0].wait_event(run_id, "message.delta")
    slot = rc.keyslot(run_id)
    src = rc.master_of(slot)
    dst = next(rc.node_by_port(m["port"]) for m in rc.masters() if m["port"] != src.port)
    moved = await asyncio.to_thread(rc.migrate_slot, slot, dst, between_keys=lambda: time.sleep(0.05))
    assert moved >= 3 and rc.master_of(slot) is dst
    req = await watchers[0].wait_event(run_id, "approval.requested", timeout=30)
    a = await Client.connect(hubs.ws_url(), ALICE)
    ack = await a.request(
        {"type": "decide", "run_id": run_id, "approval_id": req["data"]["approval_id"], "decision": "approve"}
    )
    assert ack["type"] == "ack", ack
    for w in watchers:
        await w.wait_event(run_id, TERMINAL, timeout=30)
    check_once_each(watchers, run_id, hubs)
    assert len(hubs.tool_calls(run_id, "delete_files")) == 1
    for x in (*watchers, a):
        await x.close()


async def test_the_master_of_a_paused_run_fails_over_then_it_is_approved(hubs: Cluster) -> None:
    rc: RedisCluster = hubs.redis_cluster  # type: ignore[attr-defined]
    run_id = hubs.start_run(tok=OPERATOR)
    watchers = [await Client.connect(hubs.ws_url(), VIEWER) for _ in range(6)]
    for w in watchers:
        await w.subscribe(run_id)
    req = await watchers[0].wait_event(run_id, "approval.requested", timeout=30)
    for w in watchers:
        await w.wait_event(run_id, "run.paused")
    await asyncio.to_thread(rc.replicate, run_id)  # the replica has the paused run before its master dies
    new = await asyncio.to_thread(rc.kill_master_of, rc.keyslot(run_id))
    assert new.proc is not None
    a = await Client.connect(hubs.ws_url(), ALICE)

    async def decide() -> dict:
        ack = await a.request(
            {"type": "decide", "run_id": run_id, "approval_id": req["data"]["approval_id"], "decision": "approve"}
        )
        if ack["type"] == "error" and ack["code"] == "internal":  # the hub could not reach the run's master yet
            raise ConnectionError(ack["message"])
        return ack

    ack = await retry(decide)
    assert ack["type"] == "ack" and ack["outcome"] == "decided", ack
    for w in watchers:
        await w.wait_event(run_id, TERMINAL, timeout=40)
    check_once_each(watchers, run_id, hubs)
    assert len(hubs.tool_calls(run_id, "delete_files")) == 1
    for x in (*watchers, a):
        await x.close()


async def test_redis_commands_per_event_do_not_grow_with_watchers_on_a_cluster(hubs: Cluster) -> None:
    rc: RedisCluster = hubs.redis_cluster  # type: ignore[attr-defined]
    masters = [rc.node_by_port(m["port"]).client() for m in rc.masters()]
    per_event_1 = await commands_per_event(hubs, masters, 1)
    per_event_100 = await commands_per_event(hubs, masters, 100)
    print(f"cluster: redis commands per event: 1 watcher {per_event_1:.2f}, 100 watchers {per_event_100:.2f}")
    assert per_event_100 <= per_event_1 * 1.25 + 0.5
