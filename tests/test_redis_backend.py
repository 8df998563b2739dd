"""The Redis backend against a real redis-server (a throw-away one per test, never the one on 6379).

Several tests run the same steps on MemoryBackend and compare: the two backends must behave the same.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Callable

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from redis_server import RedisServer, redis_server  # noqa: F401 - the fixture (also exposed by conftest.py)
from runcast import runs
from runcast.approvals import Approval, ApprovalPolicy, Person
from runcast.backends.base import Backend, Conflict, LogTrimmed, NotOwner
from runcast.backends.memory import MemoryBackend
from runcast.backends.redis import RedisBackend
from runcast.protocol import ErrorCode, Event
from runcast.runs import Job, Transition

ALICE = Person(sub="u1", name="Alice", roles=["operator"])


@pytest.fixture
async def make(redis_server: RedisServer):  # noqa: F811
    made: list[RedisBackend] = []

    async def _make(**kw: Any) -> RedisBackend:
        b = RedisBackend(redis_server.url, **kw)
        await b.start()
        made.append(b)
        return b

    yield _make
    for b in made:
        await b.close()


@pytest.fixture
async def raw(redis_server: RedisServer):  # noqa: F811
    r = aioredis.Redis.from_url(redis_server.url)
    yield r
    await r.aclose()


async def eventually(pred: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def seqs(events: list[Event]) -> list[int]:
    return [e.seq for e in events]


def types(events: list[Event]) -> list[str]:
    return [e.type for e in events]


def strip(events: list[Event]) -> list[tuple[int, str, dict[str, Any]]]:
    return [(e.seq, e.type, e.data) for e in events]


async def start_run(b: Backend, run_id: str, now: float = 1000.0) -> runs.RunRecord:
    await b.create(runs.new_run(run_id, "demo", f"input of {run_id}", ALICE, now))
    rec = await b.get(run_id)
    assert rec is not None
    return rec


async def claim(
    b: Backend, run_id: str, owner: str, now: float = 1001.0, lease_s: float | None = None
) -> runs.RunRecord:
    rec = await b.get(run_id)
    assert rec is not None
    await b.commit(runs.claim(rec, Job(kind="start", run_id=run_id, segment=1), owner, now, lease_s), rec.version)
    rec = await b.get(run_id)
    assert rec is not None
    return rec


# ------------------------------------------------------------------------------------------------ the log


async def test_append_read_head(make) -> None:
    b = await make()
    assert await b.head("r1") == 0
    assert await b.read("r1") == []
    first = await b.append("r1", [("a", {"i": 1}), ("b", {"i": 2})])
    second = await b.append("r1", [("c", {"i": 3}), ("d", {"i": 4}), ("e", {"i": 5, "nested": {"x": [1, "two"]}})])
    assert seqs(first) == [1, 2] and seqs(second) == [3, 4, 5]
    assert await b.head("r1") == 5
    got = await b.read("r1")
    assert seqs(got) == [1, 2, 3, 4, 5]
    assert types(got) == ["a", "b", "c", "d", "e"]
    assert [e.frame for e in got] == [e.frame for e in first + second]  # ts included
    assert [e.packed() for e in got] == [e.packed() for e in first + second]  # the very bytes that were logged
    assert all(e.run_id == "r1" for e in got)
    assert seqs(await b.read("r1", 2)) == [3, 4, 5]
    assert seqs(await b.read("r1", 1, 3)) == [2, 3]
    assert seqs(await b.read("r1", 0, limit=2)) == [1, 2]
    assert seqs(await b.read("r1", 3, 3)) == []
    assert seqs(await b.read("r1", 5)) == []
    assert seqs(await b.read("r1", 0, limit=0)) == []
    assert await b.append("r1", []) == []
    assert await b.head("r1") == 5
    assert await b.head("other") == 0


async def test_append_sees_writes_of_another_node(make) -> None:
    """Each node caches the head it last saw; a stale guess must cost a retry, never a wrong seq."""
    a, b = await make(), await make()
    assert seqs(await a.append("r1", [("x", {})])) == [1]
    assert seqs(await b.append("r1", [("y", {}), ("y", {})])) == [2, 3]
    assert seqs(await a.append("r1", [("z", {})])) == [4]  # a guessed head 1
    assert seqs(await b.append("r1", [("w", {})])) == [5]  # b guessed head 3
    assert types(await a.read("r1")) == ["x", "y", "y", "z", "w"]


async def test_concurrent_appends_from_two_nodes_are_gap_free(make) -> None:
    nodes = [await make(), await make()]

    async def writer(w: int) -> list[int]:
        node = nodes[w % 2]
        got: list[int] = []
        for n in range(8):
            batch = [("ev", {"w": w, "n": n, "k": k}) for k in range(1 + (w + n) % 3)]
            got += seqs(await node.append("r1", batch))
        return got

    results = await asyncio.gather(*(writer(w) for w in range(16)))
    total = sum(len(r) for r in results)
    assert sorted(s for r in results for s in r) == list(range(1, total + 1))
    log = await nodes[0].read("r1")
    assert seqs(log) == list(range(1, total + 1))
    assert await nodes[1].head("r1") == total
    # every event exactly once, each writer's events in the order it wrote them, each batch contiguous
    keys = [(e.data["w"], e.data["n"], e.data["k"]) for e in log]
    assert len(set(keys)) == total
    for w in range(16):
        mine = [k for k in keys if k[0] == w]
        assert mine == sorted(mine)
    for e, nxt in zip(log, log[1:]):
        if nxt.data["k"] > 0:
            assert (nxt.data["w"], nxt.data["n"], nxt.data["k"]) == (e.data["w"], e.data["n"], e.data["k"] + 1)


async def test_racing_appends_cost_one_round_trip_each(make, raw) -> None:
    """Writers never guess the next seq, so a crowd joining one run at once (a presence event each) never retries:
    one EVALSHA per append, however many race."""
    nodes = [await make(), await make()]
    await nodes[0].append("r1", [("run.started", {})])

    def evalsha(info: dict[str, Any]) -> int:
        return int(info.get("cmdstat_evalsha", {}).get("calls", 0))

    before = evalsha(await raw.info("commandstats"))
    got = await asyncio.gather(*(nodes[i % 2].append("r1", [("participant.joined", {"i": i})]) for i in range(100)))
    assert evalsha(await raw.info("commandstats")) - before == 100
    assert sorted(seqs([e for batch in got for e in batch])) == list(range(2, 102))
    assert [e.seq for e in await nodes[1].read("r1")] == list(range(1, 102))


async def test_log_trimmed(make, raw) -> None:
    b = await make(max_log=5)
    for i in range(1, 8):
        await b.append("r1", [("ev", {"i": i})])
    await b.append("r1", [("ev", {"i": i}) for i in range(8, 13)])
    assert await b.head("r1") == 12
    assert await raw.xlen("runcast:run:{r1}:log") == 5
    with pytest.raises(LogTrimmed) as info:
        await b.read("r1", 0)
    assert info.value.code == ErrorCode.LOG_TRIMMED and info.value.detail["first_kept"] == 8
    with pytest.raises(LogTrimmed) as info:
        await b.read("r1", 6, 9)
    assert info.value.detail["first_kept"] == 8
    got = await b.read("r1", 7)
    assert seqs(got) == [8, 9, 10, 11, 12] and [e.data["i"] for e in got] == [8, 9, 10, 11, 12]
    assert seqs(await b.read("r1", 9, 10)) == [10]
    # the same steps on the memory backend give the same answers
    m = MemoryBackend(max_log=5)
    for i in range(1, 8):
        await m.append("r1", [("ev", {"i": i})])
    await m.append("r1", [("ev", {"i": i}) for i in range(8, 13)])
    with pytest.raises(LogTrimmed) as info:
        await m.read("r1", 0)
    assert info.value.detail["first_kept"] == 8
    assert strip(await m.read("r1", 7)) == strip(got)


async def test_not_owner(make) -> None:
    b = await make()
    with pytest.raises(NotOwner):
        await b.append("r1", [("x", {})], owner="w1")  # no such run
    await start_run(b, "r1")
    with pytest.raises(NotOwner):
        await b.append("r1", [("x", {})], owner="w1")  # queued, nobody owns it
    await claim(b, "r1", "w1")
    with pytest.raises(NotOwner):
        await b.append("r1", [("x", {})], owner="w2")
    with pytest.raises(NotOwner):
        await b.append("r1", [], owner="w2")  # checked even with nothing to log
    assert seqs(await b.append("r1", [("message.delta", {"delta": "hi"})], owner="w1")) == [2]
    rec = await b.get("r1")
    assert rec is not None
    await b.commit(runs.finish(rec, "w1", "completed", {"output": "done"}, 1002.0), rec.version)
    with pytest.raises(NotOwner):
        await b.append("r1", [("x", {})], owner="w1")  # the run ended
    assert types(await b.read("r1")) == ["run.started", "message.delta", "run.completed"]
    assert seqs(await b.read("r1")) == [1, 2, 3]


async def test_an_owner_append_retried_after_a_lost_answer_is_logged_once(make) -> None:
    """The worker retries an append whose answer it never got with the same tx: the retry must not log twice,
    even when a hub logged presence in between (so the head moved)."""
    b = await make()
    other = await make()  # a hub node
    await start_run(b, "r1")
    await claim(b, "r1", "w1")
    first = await b.append(
        "r1", [("message.delta", {"delta": "a"}), ("message.delta", {"delta": "b"})], owner="w1", tx="t1"
    )
    assert seqs(first) == [2, 3]
    await other.append("r1", [("participant.joined", {"sub": "vic"})])
    again = await b.append(
        "r1", [("message.delta", {"delta": "a"}), ("message.delta", {"delta": "b"})], owner="w1", tx="t1"
    )
    assert strip(again) == strip(first)
    assert await b.head("r1") == 4
    nxt = await b.append("r1", [("message.delta", {"delta": "c"})], owner="w1", tx="t2")
    assert seqs(nxt) == [5]
    assert [e.data.get("delta") for e in await b.read("r1", 1) if e.type == "message.delta"] == ["a", "b", "c"]


async def test_more_concurrent_commands_than_connections_wait_for_one(make) -> None:
    """Hundreds of clients replaying at once on one node: commands queue for a pooled connection, none fails."""
    b = await make(max_connections=4)
    await b.append("r1", [("message.delta", {"delta": str(i)}) for i in range(50)])
    reads = await asyncio.gather(*(b.read("r1", after=i) for i in range(50)))
    assert [seqs(r) for r in reads] == [list(range(i + 1, 51)) for i in range(50)]


# ------------------------------------------------------------------------------------------------ records


async def test_create_get_list_and_commit(make) -> None:
    b = await make()
    evs = await b.create(runs.new_run("r1", "demo", "hello", ALICE, 1000.0))
    assert strip(evs) == [
        (1, "run.started", {"agent": "demo", "input": "hello", "started_by": {"sub": "u1", "name": "Alice"}})
    ]
    with pytest.raises(Conflict):
        await b.create(runs.new_run("r1", "demo", "again", ALICE, 1001.0))
    await b.create(runs.new_run("r3", "demo", "c", ALICE, 1003.0))
    await b.create(runs.new_run("r2", "demo", "b", ALICE, 1002.0))
    await b.create(runs.new_run("r2b", "demo", "b2", ALICE, 1002.0))  # same created_at as r2: run_id breaks the tie
    assert [r.run_id for r in await b.list_runs()] == ["r3", "r2b", "r2", "r1"]
    assert [r.run_id for r in await b.list_runs(2)] == ["r3", "r2b"]
    rec = await b.get("r1")
    assert rec is not None and rec.version == 0 and rec.status == "queued" and rec.input == "hello"
    assert await b.get("nope") is None

    jobs = [await b.take_job("w1", 1.0) for _ in range(4)]
    assert [j.run_id for j in jobs if j] == ["r1", "r3", "r2", "r2b"]  # first in, first out
    assert await b.take_job("w1", 0.05) is None


async def test_commit_appends_events_and_queues_jobs(make) -> None:
    b = await make()
    await start_run(b, "r1")
    assert await b.take_job("w1", 1.0) == Job(kind="start", run_id="r1", segment=1)
    rec = await claim(b, "r1", "w1")
    assert (rec.status, rec.owner, rec.version) == ("running", "w1", 1)
    await b.append("r1", [("message.delta", {"delta": "x"})], owner="w1")
    ap = Approval(
        approval_id="ap1",
        call_id="c1",
        tool="t",
        arguments="{}",
        agent="demo",
        policy=ApprovalPolicy(),
        requested_at="2024-01-01T00:00:00Z",
    )
    evs = await b.commit(runs.pause(rec, "w1", [ap], 1003.0), rec.version)
    assert seqs(evs) == [3, 4] and types(evs) == ["approval.requested", "run.paused"]
    rec = await b.get("r1")
    assert rec is not None and (rec.status, rec.version, rec.pending) == ("paused", 2, ["ap1"])
    assert await b.take_job("w1", 0.05) is None
    tr = runs.decide(rec, "ap1", Person(sub="u2", name="Bob", roles=["approver"]), "approve", "ok", False, 1004.0)
    evs = await b.commit(tr, rec.version)
    assert seqs(evs) == [5] and types(evs) == ["approval.decided"]
    assert tr.jobs == [Job(kind="resume", run_id="r1", segment=2)]
    assert await b.take_job("w2", 1.0) == Job(kind="resume", run_id="r1", segment=2)
    rec = await b.get("r1")
    assert rec is not None and (rec.status, rec.version) == ("resuming", 3)
    assert types(await b.read("r1")) == [
        "run.started",
        "message.delta",
        "approval.requested",
        "run.paused",
        "approval.decided",
    ]
    assert seqs(await b.read("r1")) == [1, 2, 3, 4, 5]
    resume = runs.claim(rec, Job(kind="resume", run_id="r1", segment=2), "w2", 1005.0)
    assert strip(await b.commit(resume, 3))[0][:2] == (6, "run.resumed")
    with pytest.raises(Conflict):
        await b.commit(resume, 3)  # stale version: nothing logged
    assert seqs(await b.read("r1")) == [1, 2, 3, 4, 5, 6]


async def test_commit_race_exactly_one_wins(make) -> None:
    a, b = await make(), await make()
    await start_run(a, "r1")
    winners: list[str] = []
    for i in range(50):
        ra, rb = await a.get("r1"), await b.get("r1")
        assert ra is not None and rb is not None and ra.version == rb.version == i
        ta = Transition(ra.model_copy(update={"updated_at": float(i)}), [("race", {"by": "a", "i": i})])
        tb = Transition(rb.model_copy(update={"updated_at": float(i)}), [("race", {"by": "b", "i": i})])
        res = await asyncio.gather(a.commit(ta, i), b.commit(tb, i), return_exceptions=True)
        won = [name for name, r in zip("ab", res) if isinstance(r, list)]
        lost = [r for r in res if isinstance(r, Conflict)]
        assert len(won) == 1 and len(lost) == 1, res
        winners += won
        assert seqs(res[0 if won == ["a"] else 1]) == [i + 2]  # type: ignore[arg-type]
    rec = await a.get("r1")
    assert rec is not None and rec.version == 50
    log = await b.read("r1")
    assert seqs(log) == list(range(1, 52))
    assert types(log) == ["run.started"] + ["race"] * 50
    assert [(e.data["by"], e.data["i"]) for e in log[1:]] == list(zip(winners, range(50)))


async def test_save_and_load_state(make) -> None:
    b = await make()
    assert await b.load_state("r1") is None
    await b.save_state("r1", 1, '{"a": 1}')
    await b.save_state("r1", 2, '{"a": "ünïcode"}')
    assert await b.load_state("r1") == '{"a": "ünïcode"}'


async def test_due_runs(make) -> None:
    b = await make()
    await start_run(b, "r1")
    await start_run(b, "r2")
    assert await b.due_runs(1e12) == []
    await claim(b, "r1", "w1", now=1001.0, lease_s=10)
    assert await b.due_runs(1010.0) == []
    assert await b.due_runs(1011.0) == ["r1"]
    rec = await b.get("r1")
    assert rec is not None
    await b.commit(runs.finish(rec, "w1", "failed", {"code": "x", "message": "y"}, 1002.0), rec.version)
    assert await b.due_runs(1e12) == []
    # a paused run is due when its first open approval expires
    rec = await claim(b, "r2", "w1", now=1001.0)
    aps = [
        Approval(
            approval_id=f"ap{i}",
            call_id=f"c{i}",
            tool="t",
            arguments="{}",
            agent="demo",
            policy=ApprovalPolicy(expires_s=exp),
            requested_at="x",
            expires_at=1001.0 + exp,
        )
        for i, exp in ((1, 99.0), (2, 49.0))
    ]
    await b.commit(runs.pause(rec, "w1", aps, 1001.0), rec.version)
    assert await b.due_runs(1049.0) == []
    assert await b.due_runs(1050.0) == ["r2"]


async def test_retention(make, raw) -> None:
    b = await make(retention_s=60)
    await start_run(b, "r1")
    await b.save_state("r1", 1, "{}")
    keys = [f"runcast:run:{{r1}}:{k}" for k in ("rec", "log", "seq", "state")]
    assert [await raw.pttl(k) for k in keys] == [-1, -1, -1, -1]
    await claim(b, "r1", "w1")
    rec = await b.get("r1")
    assert rec is not None
    await b.commit(runs.finish(rec, "w1", "completed", {"output": "ok"}, 1002.0), rec.version)
    ttls = [await raw.pttl(k) for k in keys]
    assert all(55_000 < t <= 60_000 for t in ttls), ttls
    await b.append("r1", [("participant.left", {"sub": "u1"})])  # presence after the end keeps the TTL
    ttls = [await raw.pttl(k) for k in keys]
    assert all(55_000 < t <= 60_000 for t in ttls), ttls
    # a log with no record at all (presence on a run that never existed) does not stay forever
    await b.append("ghost", [("participant.joined", {})])
    assert 55_000 < await raw.pttl("runcast:run:{ghost}:log") <= 60_000

    short = await make(retention_s=0.2, prefix="short")
    await start_run(short, "r9")
    await claim(short, "r9", "w1")
    rec = await short.get("r9")
    assert rec is not None
    await short.commit(runs.finish(rec, "w1", "completed", {}, 1002.0), rec.version)
    assert [r.run_id for r in await short.list_runs()] == ["r9"]
    await asyncio.sleep(0.35)
    assert await short.get("r9") is None
    assert await short.head("r9") == 0
    assert await short.list_runs() == []
    assert await raw.zcard("{short}:runs") == 0  # the index forgot it too


# ------------------------------------------------------------------------------------------------ jobs


async def test_take_job_gives_each_job_to_one_node(make, raw) -> None:
    a, b = await make(), await make()
    ids = [f"r{i:02d}" for i in range(12)]
    for rid in ids:
        await a.create(runs.new_run(rid, "demo", "x", ALICE, 1000.0))
    got: dict[str, list[Job]] = {"a": [], "b": []}

    async def take(name: str, node: RedisBackend) -> None:
        while sum(len(v) for v in got.values()) < len(ids):
            job = await node.take_job(f"w-{name}", 0.2)
            if job is not None:
                got[name].append(job)
                await asyncio.sleep(0.01)  # let the other node take some too

    await asyncio.wait_for(asyncio.gather(take("a", a), take("b", b)), 10)
    taken = [j.run_id for j in got["a"] + got["b"]]
    assert sorted(taken) == ids  # every job once, none twice
    assert got["a"] and got["b"]
    assert all(j.kind == "start" and j.segment == 1 for j in got["a"] + got["b"])
    for name, node in (("a", a), ("b", b)):
        for job in got[name]:
            await node.ack_job(job)
    assert await raw.xlen("{runcast}:jobs") == 0
    assert (await raw.xpending("{runcast}:jobs", "workers"))["pending"] == 0
    assert await a.take_job("w-a", 0.05) is None and await b.take_job("w-b", 0.05) is None


async def test_job_of_a_dead_worker_is_taken_over(make, raw) -> None:
    a, b = await make(job_idle_s=0.3), await make(job_idle_s=0.3)
    await start_run(a, "r1")
    assert await a.take_job("w-a", 1.0) == Job(kind="start", run_id="r1", segment=1)
    await a.close()  # dies before acking
    assert await b.take_job("w-b", 0.1) is None  # not idle long enough yet
    await asyncio.sleep(0.35)
    job = await b.take_job("w-b", 0.1)
    assert job == Job(kind="start", run_id="r1", segment=1)
    assert b.stats["reclaimed_jobs"] == 1
    await b.ack_job(job)
    assert await raw.xlen("{runcast}:jobs") == 0
    assert await b.take_job("w-b", 0.05) is None


# ------------------------------------------------------------------------------------------------ pub/sub


async def test_signals(make) -> None:
    a, b = await make(), await make()
    got_a: list[tuple[str, dict[str, Any]]] = []
    got_b: list[tuple[str, dict[str, Any]]] = []
    sub_a = await a.listen_signals(lambda rid, msg: got_a.append((rid, msg)))
    sub_b = await b.listen_signals(lambda rid, msg: got_b.append((rid, msg)))
    await a.signal("r1", {"type": "cancel", "mode": "immediate"})
    await b.signal("r2", {"type": "cancel", "mode": "after_turn"})
    want = [("r1", {"type": "cancel", "mode": "immediate"}), ("r2", {"type": "cancel", "mode": "after_turn"})]
    await eventually(lambda: len(got_a) == 2 and len(got_b) == 2, what="signals")
    assert got_a == want and got_b == want
    await sub_b.close()
    await a.signal("r3", {"type": "cancel"})
    await eventually(lambda: len(got_a) == 3, what="third signal")
    await asyncio.sleep(0.05)
    assert got_a[-1] == ("r3", {"type": "cancel"}) and got_b == want
    await sub_a.close()


async def test_subscribe_delivers_events_of_another_node_once_in_order(make, raw) -> None:
    writer, reader = await make(), await make()
    await start_run(writer, "r1")  # seq 1, before anyone listens
    got1: list[Event] = []
    got2: list[Event] = []
    sub1 = await reader.subscribe("r1", got1.extend)
    sub2 = await reader.subscribe("r1", got2.extend)
    assert (await raw.pubsub_numsub("runcast:live:{r1}"))[0][1] == 1  # one Redis subscription per node and run
    await raw.publish("runcast:live:{r1}", b"\xc1 not msgpack")  # garbage on the channel is ignored, not fatal
    sent: list[Event] = []
    sent += await writer.append("r1", [("a", {"i": 2}), ("b", {"i": 3})])
    sent += await writer.append("r1", [("c", {"i": 4})])
    rec = await claim(writer, "r1", "w1")
    sent += await writer.commit(runs.finish(rec, "w1", "completed", {"output": "x"}, 1002.0), rec.version)
    sent += await writer.append("r1", [("d", {"i": 6}), ("e", {"i": 7}), ("f", {"i": 8})])
    await eventually(lambda: len(got1) >= 7 and len(got2) >= 7, what="live events")
    await asyncio.sleep(0.1)  # nothing more (no duplicates) arrives
    assert seqs(got1) == [2, 3, 4, 5, 6, 7, 8] == seqs(got2)
    assert types(got1) == ["a", "b", "c", "run.completed", "d", "e", "f"]
    assert [e.frame for e in got1] == [e.frame for e in sent]
    assert [e.packed() for e in got1] == [e.packed() for e in sent]  # the logged bytes, not a re-encoding
    assert reader.stats["reconnects"] == 0
    assert seqs(await reader.read("r1", 1)) == seqs(got1)
    await sub1.close()
    await sub2.close()


async def test_unsubscribe_stops_delivery(make, raw) -> None:
    writer, reader = await make(), await make()
    got1: list[Event] = []
    got2: list[Event] = []
    sub1 = await reader.subscribe("r1", got1.extend)
    sub2 = await reader.subscribe("r1", got2.extend)
    await writer.append("r1", [("a", {})])
    await eventually(lambda: len(got1) == 1 and len(got2) == 1, what="first event")
    await sub1.close()
    await sub1.close()  # twice is harmless
    await writer.append("r1", [("b", {})])
    await eventually(lambda: len(got2) == 2, what="second event")
    assert (await raw.pubsub_numsub("runcast:live:{r1}"))[0][1] == 1  # sub2 still listens
    await sub2.close()
    for _ in range(100):
        if (await raw.pubsub_numsub("runcast:live:{r1}"))[0][1] == 0:
            break
        await asyncio.sleep(0.01)
    assert (await raw.pubsub_numsub("runcast:live:{r1}"))[0][1] == 0  # the last one left: UNSUBSCRIBE
    await writer.append("r1", [("c", {})])
    await asyncio.sleep(0.1)
    assert seqs(got1) == [1] and seqs(got2) == [1, 2] and types(got2) == ["a", "b"]
    # subscribing again works, and starts from the current head
    got3: list[Event] = []
    sub3 = await reader.subscribe("r1", got3.extend)
    await writer.append("r1", [("d", {})])
    await eventually(lambda: len(got3) == 1, what="event after resubscribe")
    assert seqs(got3) == [4] and types(got3) == ["d"]
    await sub3.close()


# ------------------------------------------------------------------------------------------------ outages


async def test_redis_restart(make, raw, redis_server: RedisServer) -> None:  # noqa: F811
    writer = await make()
    reader = await make()
    reader.reconnect_min_s = 0.5  # a wide window in which events are published while it is away
    reader.subscribe_timeout = 0.3
    got: list[Event] = []
    await reader.subscribe("r1", got.extend)
    await writer.append("r1", [("a", {}), ("b", {}), ("c", {})])
    await eventually(lambda: len(got) == 3, what="events before the outage")

    await raw.save()  # the server runs with --save "": snapshot by hand so the restart keeps the log
    redis_server.stop()
    with pytest.raises(RedisConnectionError):
        await writer.append("r1", [("lost", {})])
    with pytest.raises(RedisConnectionError):
        await writer.commit(Transition(runs.new_run("r2", "demo", "x", ALICE, 1.0).record), 0)
    with pytest.raises(RedisConnectionError):
        await writer.take_job("w1", 0.1)
    with pytest.raises(RedisConnectionError):
        await reader.subscribe("r2", lambda evs: None)  # no SUBSCRIBE confirmation: refused, not stuck
    assert await writer.ping() is False

    redis_server.start()
    # published while the reader is still waiting to reconnect: only the log has them
    assert seqs(await writer.append("r1", [("d", {}), ("e", {})])) == [4, 5]
    await eventually(lambda: len(got) >= 5, what="the gap fill")
    assert reader.stats["reconnects"] >= 1
    assert reader.stats["filled_events"] == 2
    assert await writer.ping() is True
    # and live again
    await writer.append("r1", [("f", {})])
    await eventually(lambda: len(got) >= 6, what="live events after the restart")
    await asyncio.sleep(0.1)
    assert seqs(got) == [1, 2, 3, 4, 5, 6]
    assert types(got) == ["a", "b", "c", "d", "e", "f"]
    assert seqs(await reader.read("r1")) == [1, 2, 3, 4, 5, 6]


async def test_persistent_server_keeps_everything_across_kill_9(make) -> None:
    srv = RedisServer(persist=True)
    srv.start()
    try:
        b = RedisBackend(srv.url)
        await b.start()
        await start_run(b, "r1")
        await b.append("r1", [("a", {}), ("b", {})])
        srv.stop()
        await asyncio.sleep(0.05)
        srv.start()
        assert types(await b.read("r1")) == ["run.started", "a", "b"] and await b.head("r1") == 3
        assert await b.take_job("w1", 1.0) == Job(kind="start", run_id="r1", segment=1)
        await b.close()
    finally:
        srv.cleanup()


async def test_restart_without_data_recreates_the_job_group(make, redis_server: RedisServer) -> None:  # noqa: F811
    b = await make()
    redis_server.stop()
    await asyncio.sleep(0.05)  # let the loop see the dropped sockets, as it would during any real restart
    redis_server.start()  # empty: the consumer group is gone
    assert await b.take_job("w1", 0.05) is None
    await start_run(b, "r1")
    assert await b.take_job("w1", 1.0) == Job(kind="start", run_id="r1", segment=1)


async def test_silent_pubsub_connection_is_replaced(make, redis_server: RedisServer) -> None:  # noqa: F811
    """A Redis that stops answering without closing the socket (SIGSTOP, like a partition) is noticed by the
    reader's PING, which reconnects and fills from the log."""
    writer, reader = await make(), await make()
    reader.ping_after_s, reader.dead_after_s, reader.reconnect_min_s = 0.2, 0.6, 0.05
    got: list[Event] = []
    await reader.subscribe("r1", got.extend)
    await writer.append("r1", [("a", {})])
    await eventually(lambda: len(got) == 1, what="first event")
    redis_server.pause()
    try:
        await asyncio.sleep(1.2)
    finally:
        redis_server.resume()
    assert reader.stats["reconnects"] >= 1  # it gave up on the silent connection
    await writer.append("r1", [("b", {}), ("c", {})])
    await eventually(lambda: len(got) >= 3, what="events after the pause")
    await asyncio.sleep(0.1)
    assert seqs(got) == [1, 2, 3] and types(got) == ["a", "b", "c"]


# ------------------------------------------------------------------------------------------------ parity


async def _scenario(b: Backend) -> list[Any]:
    """The same steps on any backend; the trace must not depend on which one."""
    t: list[Any] = []

    async def attempt(coro: Any) -> Any:
        try:
            return await coro
        except (Conflict, NotOwner, LogTrimmed) as exc:
            return (type(exc).__name__, getattr(exc, "detail", None))

    t.append(strip(await b.create(runs.new_run("r1", "demo", "one", ALICE, 1000.0))))
    t.append(await attempt(b.create(runs.new_run("r1", "demo", "one", ALICE, 1000.0))))
    for rid, now in (("r3", 1003.0), ("r2", 1002.0)):
        await b.create(runs.new_run(rid, "demo", rid, ALICE, now))
    t.append([r.model_dump(exclude={"epoch"}) for r in await b.list_runs()])  # (epochs are random)
    rec = await b.get("r1")
    assert rec is not None
    tr = runs.claim(rec, Job(kind="start", run_id="r1", segment=1), "w1", 1001.0, 30.0)
    t.append(strip(await b.commit(tr, rec.version)))
    t.append(await attempt(b.commit(tr, rec.version)))  # stale
    t.append((await b.get("r1")).model_dump(exclude={"epoch"}))  # type: ignore[union-attr]
    t.append(await b.due_runs(1030.0))
    t.append(await b.due_runs(1031.0))
    t.append(await attempt(b.append("r1", [("x", {})], owner="w2")))
    for i in range(7):
        t.append(strip(await b.append("r1", [("message.delta", {"delta": str(i)})], owner="w1")))
    t.append(await b.head("r1"))
    for args in ((0,), (3,), (4,), (4, 6), (5, None, 2), (8,), (20,)):
        r = await attempt(b.read("r1", *args))
        t.append(r if isinstance(r, tuple) else strip(r))
    rec = await b.get("r1")
    assert rec is not None
    t.append(
        strip(await b.commit(runs.finish(rec, "w1", "completed", {"output": "ok", "usage": {}}, 1004.0), rec.version))
    )
    t.append(await b.due_runs(1e12))
    t.append((await b.get("r1")).model_dump(exclude={"epoch"}))  # type: ignore[union-attr]
    await b.save_state("r2", 1, "state-1")
    t.append(await b.load_state("r2"))
    t.append(await b.load_state("r1"))
    jobs = []
    for _ in range(4):
        jobs.append(await b.take_job("w1", 0.05))
    t.append(jobs)
    return t


async def test_same_behaviour_as_memory_backend(make) -> None:
    memory_trace = await _scenario(MemoryBackend(max_log=5))
    redis_trace = await _scenario(await make(max_log=5))
    assert redis_trace == memory_trace
    # and the trace did exercise the interesting cases
    assert ("Conflict", None) in redis_trace and ("NotOwner", None) in redis_trace
    assert ("LogTrimmed", {"first_kept": 4}) in redis_trace


async def test_an_event_flushed_to_the_webhook_outbox_twice_is_delivered_by_one_entry(make, raw) -> None:
    # Two overlapping commits of one run may both flush the same event (the flush is at least once): two stream
    # entries, one event. Whichever entry is read first delivers it, on whichever node; the other is dropped and acked.
    a, b = await make(), await make()
    await a.outbox_join()
    packed = Event({"run_id": "run_x", "seq": 7, "ts": "t", "type": "run.paused", "data": {}}).packed()
    other = Event({"run_id": "run_x", "seq": 8, "ts": "t", "type": "run.completed", "data": {}}).packed()
    for p in (packed, packed, other):
        await raw.xadd(a._outbox, {"e": p})
    got = await a.outbox_take("n1", count=1, timeout=0.1) + await b.outbox_take("n2", count=10, timeout=0.1)
    assert [(e["run_id"], e["seq"]) for e in got] == [("run_x", 7), ("run_x", 8)]
    pending = await raw.xpending(a._outbox, "deliverers")
    assert pending["pending"] == 2  # the two delivering entries, not yet acked; the duplicate is gone
    # a delivering entry taken over after its process died still delivers (it is the event's own entry)
    a.webhook_claim_s = 0.0
    again = await a.outbox_take("n3", count=10, timeout=0.1)
    assert sorted(e["seq"] for e in again) == [7, 8]


async def test_a_busy_hub_waits_for_the_subscribe_answer_redis_gave(make) -> None:
    """The SUBSCRIBE timeout counts Redis's time, not the loop's lag: a loop held for longer than the timeout (a
    saturated hub) still gets the subscription it asked for, and the lag is measured."""
    from runcast.looplag import LAG

    reader = await make()
    reader.subscribe_timeout = 0.3
    LAG.start()
    try:
        await asyncio.sleep(0.1)
        before = LAG.total_s
        task = asyncio.create_task(reader.subscribe("r_busy", lambda evs: None))
        asyncio.get_running_loop().call_soon(time.sleep, 1.0)  # the loop is held: Redis's answer waits unread
        sub = await asyncio.wait_for(task, 10)
        assert LAG.total_s - before >= 0.9
        await sub.close()
    finally:
        await LAG.stop()


async def test_a_commit_whose_process_died_before_its_flush_is_flushed_by_any_sweep(
    make,
    raw,
    redis_server: RedisServer,  # noqa: F811
    monkeypatch,
) -> None:
    """On one Redis the commit script writes the commit's flush mark itself, in the same step as the record and the
    events (no round trip before them). A process that dies right after it, before flush.lua has put the run's job
    in the shared queue, leaves that mark; once its deadline passes, any node's sweep does the flush."""
    from runcast.backends.redis import backend as redis_backend

    monkeypatch.setattr(redis_backend, "FLUSH_GRACE_S", 0.3)

    class DiesBeforeItsFlush(RedisBackend):
        async def _flush(self, *args: Any, **kwargs: Any) -> None:
            raise RedisConnectionError("the process died between the commit and its flush")

    dying = DiesBeforeItsFlush(redis_server.url)
    await dying.start()
    try:
        await dying.create(runs.new_run("r1", "demo", "input", ALICE, time.time()))
    finally:
        await dying.close()
    assert [m.decode().split(" ")[0] for m in await raw.zrange("{runcast}:flush", 0, -1)] == ["r1"]
    other = await make()
    assert await other.take_job("w1", timeout=0.2) is None  # the start job is still in the run's own outbox
    await asyncio.sleep(0.4)
    await other.due_runs(time.time())
    assert await raw.zrange("{runcast}:flush", 0, -1) == []
    job = await other.take_job("w1", timeout=2)
    assert job is not None and (job.run_id, job.kind, job.segment) == ("r1", "start", 1)
    assert await raw.llen("runcast:run:{r1}:outbox") == 0


async def test_a_conflicting_commit_leaves_no_flush_mark(make, raw) -> None:
    b = await make()
    rec = await start_run(b, "r1")
    await b.commit(runs.claim(rec, Job(kind="start", run_id="r1", segment=1), "w1", 1001.0, None), rec.version)
    with pytest.raises(Conflict):
        await b.commit(runs.claim(rec, Job(kind="start", run_id="r1", segment=1), "w2", 1001.0, None), rec.version)
    assert await raw.zrange("{runcast}:flush", 0, -1) == []
