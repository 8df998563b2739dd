"""The approvals inbox and the live run list as plain code (feed.py, no sockets), and the backends' feed of run
changes (memory, and a real redis-server, including a pub/sub connection cut under it)."""

from __future__ import annotations

import asyncio
import json
import random
import time
from typing import Any, Callable

import pytest
import redis.asyncio as aioredis

from redis_server import RedisServer, redis_server  # noqa: F401 - the fixture

from runcast import feed, runs
from runcast.approvals import Approval, ApprovalPolicy, Person
from runcast.auth import Identity
from runcast.backends.memory import MemoryBackend
from runcast.backends.redis import RedisBackend
from runcast.runs import Job

T0 = 1_000_000.0
ADA = Person(sub="ada", name="Ada", roles=["operator", "approver"])
ALICE = Identity("alice", "Alice", ("approver",))
BOB = Identity("bob", "Bob", ("approver",))
ADA_ID = Identity("ada", "Ada", ("operator", "approver"))
ROOT = Identity("root", "Root", ("admin",))
VIC = Identity("vic", "Vic", ("viewer",))
LIM = Identity("lim", "Lim", ("approver",), runs=("run_other",))


def paused(run_id: str = "run_1", policy: ApprovalPolicy | None = None, n: int = 1) -> runs.RunRecord:
    rec = runs.new_run(run_id, "demo", "free some space", ADA, T0).record
    rec = runs.claim(rec, Job(kind="start", run_id=run_id, segment=1), "w1", T0).record
    aps = [
        Approval(
            approval_id=f"ap_{run_id}_{i}",
            call_id=f"c{i}",
            tool="delete_files",
            arguments='{"paths": ["a"]}',
            agent="Janitor",
            policy=policy or ApprovalPolicy(),
            requested_at=f"2026-01-01T00:00:0{i}Z",
            description="Deletes files.",
            expires_at=T0 + policy.expires_s if policy and policy.expires_s else None,
        )
        for i in range(n)
    ]
    rec = runs.pause(rec, "w1", aps, T0).record
    rec.version = 3
    return rec


def bump(tr: runs.Transition, version: int) -> runs.RunRecord:
    tr.record.version = version
    return tr.record


# ------------------------------------------------------------------------------------------------ the rules


def test_who_sees_an_open_approval() -> None:
    e = feed.entry(paused())
    assert feed.is_open(e) and e["run"]["version"] == 3 and e["run"]["open_approvals"] == 1
    ap = e["approvals"][0]
    assert ap["description"] == "Deletes files." and ap["status"] == "pending" and ap["votes"] == []
    assert {who.sub: feed.why_not(who, e["run"], ap) for who in (ALICE, BOB, ADA_ID, ROOT, VIC, LIM)} == {
        "alice": None,
        "bob": None,
        "ada": None,
        "root": None,
        "vic": "role",
        "lim": "not_visible",
    }
    strict = feed.entry(paused(policy=ApprovalPolicy(allow_self=False)))
    assert feed.why_not(ADA_ID, strict["run"], strict["approvals"][0]) == "self"
    assert feed.why_not(ALICE, strict["run"], strict["approvals"][0]) is None
    finance = feed.entry(paused(policy=ApprovalPolicy(roles=["finance"])))
    assert feed.why_not(ALICE, finance["run"], finance["approvals"][0]) == "role"
    assert feed.why_not(ROOT, finance["run"], finance["approvals"][0]) is None  # admin may always decide
    item = feed.inbox_of(ALICE, [e])[0]
    assert item["run_id"] == "run_1" and item["run"]["started_by"] == {"sub": "ada", "name": "Ada"}
    assert item["run"]["input"] == "free some space" and "status" not in item
    assert feed.inbox_of(VIC, [e]) == [] and feed.inbox_of(LIM, [e]) == []


def test_a_voter_drops_out_and_a_decision_closes_it_for_everyone() -> None:
    rec = paused(policy=ApprovalPolicy(quorum=2))
    aid = rec.pending[0]
    voted = bump(runs.decide(rec, aid, ALICE.person, "approve", None, False, T0 + 1), 4)
    e = feed.entry(voted)
    assert feed.why_not(ALICE, e["run"], e["approvals"][0]) == "voted"
    assert feed.why_not(BOB, e["run"], e["approvals"][0]) is None
    assert e["approvals"][0]["tally"] == {"approve": 1, "reject": 0, "needed": 2}
    done = bump(runs.decide(voted, aid, BOB.person, "approve", None, False, T0 + 2), 5)
    e = feed.entry(done)
    assert not feed.is_open(e) and e["run"]["status"] == "resuming"
    assert feed.why_not(ROOT, e["run"], e["approvals"][0]) == "approved"
    expired = feed.entry(bump(runs.expire_due(paused(policy=ApprovalPolicy(expires_s=5)), T0 + 10), 4))  # type: ignore[arg-type]
    assert expired["approvals"][0]["status"] == "expired" and not feed.is_open(expired)


class Watcher:
    def __init__(self, identity: Identity) -> None:
        self.identity = identity
        self.frames: list[dict[str, Any]] = []

    encoding = "json"

    def send_control(self, frame: Any) -> None:
        self.frames.append(frame)

    def send_shared(self, items: list[feed.Shared]) -> None:
        self.frames += [json.loads(s.get("json")[0]) for s in items]

    def types(self) -> list[str]:
        return [f["type"] for f in self.frames]


def step(f: feed.Feeds, e: dict[str, Any]) -> None:
    """One change, then the node's tick."""
    f.on_entry(e)
    f.flush()


def test_feeds_send_each_watcher_only_its_differences() -> None:
    f = feed.Feeds()
    f.load([])
    alice, bob, vic = Watcher(ALICE), Watcher(BOB), Watcher(VIC)
    for w in (alice, bob, vic):
        f.add_inbox(w, "q1")
    assert alice.frames == [{"type": "inbox", "approvals": [], "id": "q1"}]
    rec = paused(policy=ApprovalPolicy(quorum=2))
    step(f, feed.entry(rec))
    assert alice.types() == bob.types() == ["inbox", "inbox.added"] and vic.types() == ["inbox"]
    step(f, feed.entry(rec))  # the same version again (a node that sees an entry twice): nothing
    step(f, feed.entry(paused(policy=ApprovalPolicy(quorum=2)).model_copy(update={"version": 2})))  # older: nothing
    assert len(alice.frames) == 2
    voted = bump(runs.decide(rec, rec.pending[0], ALICE.person, "approve", None, False, T0 + 1), 4)
    step(f, feed.entry(voted))
    assert alice.frames[-1] == {
        "type": "inbox.removed",
        "run_id": "run_1",
        "approval_id": rec.pending[0],
        "reason": "voted",
    }
    assert bob.types() == ["inbox", "inbox.added"]  # still his to decide: nothing new
    cancelled = bump(runs.cancel(voted, ADA, "immediate", T0 + 2), 5)
    step(f, feed.entry(cancelled))
    assert bob.frames[-1]["type"] == "inbox.removed" and bob.frames[-1]["reason"] == "cancelled"
    assert len(alice.frames) == 3 and vic.types() == ["inbox"]
    assert f.open == {}


def test_reload_after_an_interruption_sends_the_difference() -> None:
    f = feed.Feeds()
    one, two = paused("run_1"), paused("run_2")
    f.load([feed.entry(one)])
    alice = Watcher(ALICE)
    f.add_inbox(alice)
    assert [a["run_id"] for a in alice.frames[0]["approvals"]] == ["run_1"]
    # While the feed was cut, run_1 was decided and run_2 paused: the index now says only run_2 is open.
    f.load([feed.entry(two)])
    assert [(x["type"], x.get("run_id") or x["approval"]["run_id"]) for x in alice.frames[1:]] == [
        ("inbox.removed", "run_1"),
        ("inbox.added", "run_2"),
    ]
    # An index read that raced a newer live entry does not bring back what the live entry closed.
    closed = bump(runs.cancel(two, ADA, "immediate", T0 + 3), 9)
    step(f, feed.entry(closed))
    f.load([feed.entry(two)])  # version 3 < 9: stale
    assert "run_2" not in f.open and alice.frames[-1]["type"] == "inbox.removed"


def test_a_reload_keeps_a_run_opened_while_the_index_was_read() -> None:
    """On one Redis a run's entry is published with its commit and its place in the index written a script later;
    on either backend an entry may arrive between the index read and `load`. Such a run stays in the inbox."""
    f = feed.Feeds()
    alice = Watcher(ALICE)
    f.load([])
    f.add_inbox(alice)
    f.begin_load()
    step(f, feed.entry(paused("run_1")))  # arrives while the index (which does not list it yet) is being read
    f.load([])
    assert "run_1" in f.open
    assert [x["type"] for x in alice.frames[1:]] == ["inbox.added"]  # told once, never taken back
    f.begin_load()  # the next reload: nothing new arrived, and the index is right
    f.load([feed.entry(paused("run_1"))])
    assert "run_1" in f.open and [x["type"] for x in alice.frames[1:]] == ["inbox.added"]


def test_run_list_snapshot_holds_back_live_changes_until_sent() -> None:
    f = feed.Feeds()
    vic, lim = Watcher(VIC), Watcher(LIM)
    f.add_runs(vic, 50)
    f.add_runs(lim, 50)
    rec = paused()
    step(f, feed.entry(rec))  # arrives while the snapshot is being read: held
    assert vic.frames == []
    older = feed.run_summary(rec.model_copy(update={"version": 2, "status": "running"}))
    f.runs_snapshot(vic, [older], "r1")
    assert vic.types() == ["runs", "run.status"] and [r["status"] for r in vic.frames[1]["runs"]] == ["paused"]
    f.runs_snapshot(lim, [older], "r2")
    assert lim.frames == [{"type": "runs", "runs": [], "id": "r2"}]  # a run the token may not see: never
    done = bump(runs.cancel(rec, ADA, "immediate", T0 + 1), 4)
    step(f, feed.entry(done))
    assert [r["status"] for r in vic.frames[-1]["runs"]] == ["cancelled"] and len(lim.frames) == 1


def started(i: int, version: int = 1, status: str = "queued") -> dict[str, Any]:
    rec = runs.new_run(f"run_{i:03d}", "demo", "x", ADA, T0 + i).record
    return feed.entry(rec.model_copy(update={"version": version, "status": status}))


def test_a_run_list_gets_the_runs_it_shows_and_a_count_of_the_others_one_frame_a_tick() -> None:
    f = feed.Feeds()
    vic = Watcher(VIC)
    f.add_runs(vic, 2)
    f.runs_snapshot(vic, [started(2)["run"], started(1)["run"], started(0)["run"]], "r")
    assert [r["run_id"] for r in vic.frames[0]["runs"]] == ["run_002", "run_001"]  # its limit
    # Three runs change in one tick: the two it shows in one frame, the one outside it as a count.
    for i in (0, 1, 2):
        f.on_entry(started(i, 2, "running"))
    f.flush()
    assert vic.types() == ["runs", "run.status"]
    assert [(r["run_id"], r["status"]) for r in vic.frames[1]["runs"]] == [
        ("run_002", "running"),
        ("run_001", "running"),
    ]
    assert vic.frames[1]["outside"] == 1 and "left" not in vic.frames[1]
    # Many changes of one run in a tick: its newest only.
    f.on_entry(started(2, 3, "paused"))
    f.on_entry(started(2, 4, "resuming"))
    f.flush()
    assert vic.frames[2] == {"type": "run.status", "runs": [started(2, 4, "resuming")["run"]], "outside": 0}
    # A new run enters at the top and pushes the oldest shown out; the one pushed out is outside from then on.
    step(f, started(3))
    assert [r["run_id"] for r in vic.frames[3]["runs"]] == ["run_003"] and vic.frames[3]["left"] == ["run_001"]
    # Changes outside it only: counted, and the count sent on its own at most once per OUTSIDE_TICKS flushes.
    step(f, started(1, 5, "completed"))
    step(f, started(0, 5, "completed"))
    for _ in range(feed.OUTSIDE_TICKS):
        f.flush()
    assert vic.frames[4:] == [{"type": "run.status", "runs": [], "outside": 2}]
    for _ in range(feed.OUTSIDE_TICKS):
        f.flush()  # nothing changed: nothing sent
    assert len(vic.frames) == 5


def test_a_run_list_filter_takes_runs_out_when_they_stop_matching() -> None:
    f = feed.Feeds()
    vic = Watcher(VIC)
    f.add_runs(vic, 10, {"status": "paused"})
    f.runs_snapshot(vic, [started(1, 1, "paused")["run"], started(0, 1, "running")["run"]], "r")
    assert [r["run_id"] for r in vic.frames[0]["runs"]] == ["run_001"]
    f.on_entry(started(1, 2, "resuming"))
    f.on_entry(started(0, 2, "paused"))
    f.flush()
    assert vic.frames[1] == {
        "type": "run.status",
        "runs": [started(0, 2, "paused")["run"]],
        "left": ["run_001"],
        "outside": 0,
    }


class Recorder(Watcher):
    def __init__(self, identity: Identity) -> None:
        super().__init__(identity)
        self.shared: list[feed.Shared] = []

    def send_shared(self, items: list[feed.Shared]) -> None:
        self.shared += items
        super().send_shared(items)


def test_run_lists_that_show_the_same_runs_fold_once_and_each_gets_what_it_would_alone() -> None:
    """Lists of one class, limit and filters that show the same runs share one view, folded once a tick; each still
    gets exactly the frames it would get were it the node's only list (its own count of changes outside it, its own
    snapshot, whenever it subscribed)."""
    rng = random.Random(24)
    # (who, limit, filters, the tick it subscribes at)
    specs: list[tuple[Identity, int, dict[str, str] | None, int]] = [
        (VIC, 3, None, 0),
        (VIC, 3, None, 0),
        (VIC, 3, None, 6),  # subscribes later: shares the others' view once it shows what they show
        (ROOT, 3, None, 0),  # another class
        (VIC, 5, None, 0),  # another limit
        (VIC, 3, {"status": "paused"}, 0),  # filters
        (VIC, 3, {"status": "paused"}, 9),
        (LIM, 3, None, 0),  # sees one run only
        (VIC, 3, None, 15),
    ]
    together = feed.Feeds()
    lists = [Watcher(who) for who, *_ in specs]
    alone = [(feed.Feeds(), Watcher(who)) for who, *_ in specs]
    latest: dict[str, dict[str, Any]] = {}  # run_id -> its newest entry
    made = 0
    for tick in range(40):
        listing = sorted((e["run"] for e in latest.values()), key=feed._run_key, reverse=True)
        for (who, limit, filters, at), w, (f, solo) in zip(specs, lists, alone):
            if at == tick:
                for node, watcher in ((together, w), (f, solo)):
                    node.add_runs(watcher, limit, filters)
                    node.runs_snapshot(watcher, listing, "r")
        for _ in range(rng.randint(1, 4)):
            if not latest or rng.random() < 0.4:
                rid = "run_other" if made == 7 else f"run_{made:03d}"
                rec = runs.new_run(rid, "demo", "x", ADA, T0 + made).record
                e = feed.entry(rec.model_copy(update={"version": 1}))
                made += 1
            else:
                old = rng.choice(list(latest.values()))["run"]
                status = rng.choice(["running", "paused", "resuming", "completed"])
                e = {"run": old | {"status": status, "version": old["version"] + 1}, "approvals": []}
            latest[e["run"]["run_id"]] = e
            together.on_entry(e)
            for f, _ in alone:
                f.on_entry(e)
        together.flush()
        for f, _ in alone:
            f.flush()
    for w, (_, solo) in zip(lists, alone):
        assert w.frames == solo.frames
    assert all(len(w.frames) > 5 for w in lists[:7]) and any(f["runs"] for f in lists[7].frames)
    views = [together._runs[w].view for w in lists]
    assert views[0] is views[1] is views[2] is views[8] and views[5] is views[6]  # one fold each, per tick
    assert len({id(v) for v in views}) == 5


def test_a_change_is_encoded_once_for_everyone_who_gets_the_same_frame() -> None:
    f = feed.Feeds()
    f.load([])
    people = [Recorder(Identity(f"p{i}", f"P{i}", ("approver",))) for i in range(5)]
    for w in people:
        f.add_inbox(w)
        f.add_runs(w, 50)
        f.runs_snapshot(w, [])
    step(f, feed.entry(paused()))
    assert [w.types() for w in people] == [["inbox", "runs", "inbox.added", "run.status"]] * 5
    first = people[0].shared
    assert all(a is b for w in people for a, b in zip(w.shared, first))  # the same objects: encoded once
    assert len({id(s.get("json")[1]) for w in people for s in w.shared}) == 2


def test_every_inbox_gets_each_approval_added_and_removed_exactly_once() -> None:
    """Random changes of many runs, flushed at random: each person's inbox, as folded from its frames, is always
    what the rules say, and each approval is added at most once and removed only after it was added."""
    import random

    rnd = random.Random(7)
    people = [
        Identity(
            f"p{i}",
            f"P{i}",
            rnd.choice([("approver",), ("viewer",), ("admin",), ("finance",)]),
            runs=("*",) if i % 4 else (f"run_{i % 6}",),
        )
        for i in range(12)
    ] + [ADA_ID]  # who starts every run: never told of an approval whose policy forbids self-approval
    f = feed.Feeds()
    f.load([])
    ws = [Watcher(p) for p in people]
    for w in ws:
        f.add_inbox(w)
    recs: dict[str, runs.RunRecord] = {}
    version = 10
    for _ in range(300):
        rid = f"run_{rnd.randrange(6)}"
        version += 1
        rec = recs.get(rid)
        if rec is None or rec.status != "paused" or rnd.random() < 0.2:
            policy = ApprovalPolicy(
                roles=rnd.choice([["approver"], ["finance"]]), quorum=rnd.choice([1, 2]), allow_self=rnd.random() < 0.5
            )
            rec = paused(rid, policy, n=rnd.choice([1, 2]))
        else:
            voter = rnd.choice(people)
            try:
                rec = runs.decide(
                    rec,
                    rnd.choice(rec.pending),
                    voter.person,
                    rnd.choice(["approve", "reject"]),
                    None,
                    False,
                    T0 + version,
                ).record
            except Exception:  # noqa: BLE001 - not theirs to decide: another change instead
                rec = runs.cancel(rec, ADA, "immediate", T0 + version).record
        rec.version = version
        recs[rid] = rec
        f.on_entry(feed.entry(rec))
        if rnd.random() < 0.3:
            f.flush()
            for w in ws:
                held: dict[str, int] = {}
                for fr in w.frames:
                    if fr["type"] == "inbox":
                        held = {a["approval_id"]: 1 for a in fr["approvals"]}
                    elif fr["type"] == "inbox.added":
                        assert fr["approval"]["approval_id"] not in held
                        held[fr["approval"]["approval_id"]] = 1
                    elif fr["type"] == "inbox.removed":
                        assert held.pop(fr["approval_id"]) == 1
                assert set(held) == {a["approval_id"] for a in feed.inbox_of(w.identity, f.open.values())}


def test_a_run_list_filter_is_a_predicate_on_the_summary() -> None:
    run = feed.run_summary(paused())
    assert feed.run_matches(run, None) and feed.run_matches(run, {})
    assert feed.run_matches(run, {"agent": "demo", "status": "paused", "started_by": "ada"})
    assert not feed.run_matches(run, {"agent": "demo-quorum"})
    assert not feed.run_matches(run, {"status": "completed"})
    assert feed.run_matches(run, {"status": "completed,paused"}) and feed.run_matches(run, {"status": "live"})
    assert not feed.run_matches(run, {"started_by": "Ada"})  # a sub, not a name
    assert feed.run_matches(run, {"q": "FREE space"})  # words, any order, any case, in the input
    assert feed.run_matches(run, {"q": "ada demo"})  # the starter's name and the agent
    assert not feed.run_matches(run, {"q": "free memory"})


def test_a_filtered_run_list_gets_its_runs_and_is_told_when_one_stops_matching() -> None:
    f = feed.Feeds()
    w = Watcher(VIC)
    f.add_runs(w, 50, {"status": "paused"})
    one, two = paused("run_1"), paused("run_2")
    f.runs_snapshot(w, [feed.run_summary(one), feed.run_summary(two.model_copy(update={"status": "running"}))], "r")
    assert [r["run_id"] for r in w.frames[0]["runs"]] == ["run_1"]
    f.on_entry(feed.entry(bump(runs.cancel(one, ADA, "immediate", T0 + 1), 4)))  # run_1 leaves the filter: told once
    f.on_entry(feed.entry(bump(runs.cancel(two, ADA, "immediate", T0 + 1), 4)))  # never held: nothing
    f.flush()
    assert [(x["runs"], x.get("left")) for x in w.frames[1:]] == [([], ["run_1"])]
    three = paused("run_3")
    step(f, feed.entry(three))  # a run that comes to match is sent
    assert [[r["run_id"] for r in x["runs"]] for x in w.frames[2:]] == [["run_3"]]


# ------------------------------------------------------------------------------------------------ the backends


@pytest.fixture(params=["memory", "redis"])
async def backends(request: pytest.FixtureRequest, redis_server: RedisServer):  # noqa: F811
    made: list[Any] = []

    async def make() -> Any:
        b = MemoryBackend() if request.param == "memory" else RedisBackend(redis_server.url)
        await b.start()
        made.append(b)
        return b

    if request.param == "memory":
        one = await make()

        async def same() -> Any:
            return one  # one process: every "node" is the same backend

        yield same
    else:
        yield make
    for b in made:
        await b.close()


async def eventually(pred: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def test_every_change_of_status_or_approvals_reaches_every_node_once(backends) -> None:
    writer, reader = await backends(), await backends()
    got: list[dict[str, Any]] = []
    sub = await reader.subscribe_feed(got.append)
    await writer.create(runs.new_run("run_f", "demo", "x", ADA, T0))
    rec = await writer.get("run_f")
    await writer.commit(runs.claim(rec, Job(kind="start", run_id="run_f", segment=1), "w1", T0, 10), rec.version)
    rec = await writer.get("run_f")
    renew = runs.renew(rec, "w1", T0 + 1, 10)
    renew.feed = False  # as store.apply sets it: no event, no status change
    await writer.commit(renew, rec.version)
    rec = await writer.get("run_f")
    ap = Approval(
        approval_id="ap_f",
        call_id="c",
        tool="delete_files",
        arguments="{}",
        agent="J",
        policy=ApprovalPolicy(),
        requested_at="t",
    )
    await writer.commit(runs.pause(rec, "w1", [ap], T0 + 2), rec.version)
    await eventually(lambda: len(got) == 3, what="three entries")
    assert [(e["run"]["status"], e["run"]["version"]) for e in got] == [("queued", 0), ("running", 1), ("paused", 3)]
    assert [r.run_id for r in await reader.open_runs()] == ["run_f"]
    rec = await writer.get("run_f")
    await writer.commit(runs.decide(rec, "ap_f", BOB.person, "approve", None, False, T0 + 3), rec.version)
    await eventually(lambda: len(got) == 4, what="the decision")
    assert got[-1]["run"]["status"] == "resuming" and got[-1]["approvals"][0]["status"] == "approved"
    assert await reader.open_runs() == []
    await sub.close()


async def test_a_cut_pubsub_connection_asks_for_a_resync_and_the_feed_comes_back(redis_server: RedisServer) -> None:  # noqa: F811
    b = RedisBackend(redis_server.url)
    b.reconnect_min_s = 0.05
    await b.start()
    raw = aioredis.Redis.from_url(redis_server.url)
    try:
        got: list[dict[str, Any]] = []
        resyncs: list[float] = []
        await b.subscribe_feed(got.append, lambda: resyncs.append(time.monotonic()))
        assert resyncs == []
        await raw.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        await eventually(lambda: len(resyncs) == 1, what="the resync call after the reconnect")
        await b.create(runs.new_run("run_g", "demo", "x", ADA, T0))
        await eventually(lambda: [e["run"]["run_id"] for e in got] == ["run_g"], what="entries after the reconnect")
    finally:
        await raw.aclose()
        await b.close()
