"""Presence: the sans-I/O rules (coalescing, the size past which only deciders are listed), and the backends' presence
set (expiry when a node stops refreshing, versions, the who-watched record), the same steps on memory and Redis."""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator

import pytest

from redis_server import redis_server  # noqa: F401 - the fixture
from runcast.backends.base import Backend
from runcast.backends.memory import MemoryBackend
from runcast.backends.redis import RedisBackend
from runcast.presence import Onlookers, RunPresence, Typing, apply_frame, entry_of, with_typing


def e(cid: str, sub: str, roles: tuple[str, ...] = ("viewer",)) -> dict[str, Any]:
    return entry_of(cid, sub, sub.capitalize(), roles)


# ---------------------------------------------------------------------------------------------- the rules


def test_changes_within_an_interval_leave_as_one_frame():
    p = RunPresence("r1", interval_s=0.25)
    p.join(e("c1", "alice"))
    f1 = p.frame(now=10.0)
    assert f1 and [x["connection_id"] for x in f1["joined"]] == ["c1"] and f1["left"] == [] and f1["full"] is False
    for i in range(2, 40):
        p.join(e(f"c{i}", f"u{i}"))
    p.leave("c1")
    assert p.frame(now=10.1) is None  # within the interval: held back
    f2 = p.frame(now=10.25)
    assert len(f2["joined"]) == 38 and f2["left"] == ["c1"] and f2["count"] == 38 and f2["people"] == 38
    assert p.frame(now=20.0) is None  # nothing changed since


def test_a_join_and_leave_within_one_interval_cancel_out():
    p = RunPresence("r1")
    p.join(e("c1", "alice"))
    p.frame(now=1.0)
    p.join(e("c2", "bob"))
    p.leave("c2")
    assert p.frame(now=2.0) is None


def test_past_the_limit_only_the_people_who_may_decide_are_listed():
    p = RunPresence("r1", list_max=5)
    p.join(e("a", "alice", ("approver",)))
    for i in range(5):
        p.join(e(f"v{i}", f"v{i}"))
    full = p.frame(now=1.0)  # 6 > 5: the mode changed, so a full frame
    assert full["full"] is True and full["listed"] == "deciders"
    assert [x["sub"] for x in full["joined"]] == ["alice"] and full["count"] == 6
    p.join(e("v9", "v9"))
    p.join(e("o", "olga", ("operator",)))
    diff = p.frame(now=2.0)
    assert diff["full"] is False and [x["sub"] for x in diff["joined"]] == ["olga"] and diff["count"] == 8
    for i in range(5):
        p.leave(f"v{i}")
    back = p.frame(now=3.0)  # 3 <= 5: every entry listed again, as a full frame
    assert (
        back["full"] is True
        and back["listed"] == "all"
        and sorted(x["sub"] for x in back["joined"]) == ["alice", "olga", "v9"]
    )


def test_a_client_folds_frames_to_the_set_whatever_it_missed_before_a_snapshot():
    p = RunPresence("r1")
    p.join(e("c1", "alice"))
    p.join(e("c2", "bob"))
    held = apply_frame({}, p.snapshot())
    p.leave("c1")
    p.join(e("c1", "alice"))  # joins and leaves are idempotent
    held = apply_frame(held, p.frame(now=5.0) or {})
    assert sorted(held) == ["c1", "c2"]
    p.replace({"c2": e("c2", "bob"), "c3": e("c3", "cy")})
    held = apply_frame(held, p.frame(now=6.0))
    assert sorted(held) == ["c2", "c3"]


def test_typing_lapses_after_its_ttl_unless_renewed():
    t = Typing(ttl_s=6.0)
    assert t.set("c1", True, now=100.0) is True  # a change: written and sent
    assert t.set("c1", True, now=104.0) is False  # a renewal: only the deadline moves
    assert t.expired(now=109.9) == []  # 6 s after the renewal, not after the first
    assert "c1" in t
    assert t.expired(now=110.0) == ["c1"]
    assert "c1" not in t and t.expired(now=200.0) == []  # answered once


def test_typing_clears_on_false_on_say_and_on_leave():
    t = Typing(ttl_s=6.0)
    t.set("c1", True, now=0.0)
    t.set("c2", True, now=0.0)
    assert t.set("c1", False, now=1.0) is True and "c1" not in t
    assert t.set("c1", False, now=1.5) is False  # not typing already: no change
    assert t.clear("c2") is True and t.clear("c2") is False  # said something, or left
    assert t.expired(now=100.0) == []


def test_a_typing_entry_reaches_watchers_as_a_joined_change():
    p = RunPresence("r1")
    ada = e("c1", "ada", ("operator",))
    p.join(ada)
    held = apply_frame({}, p.snapshot())
    p.frame(now=1.0)
    p.join(with_typing(ada, True))
    f = p.frame(now=2.0)
    assert f["joined"] == [{**ada, "typing": True}] and f["left"] == [] and f["count"] == 1
    held = apply_frame(held, f)
    assert held["c1"]["typing"] is True
    p.join(with_typing(held["c1"], False))
    held = apply_frame(held, p.frame(now=3.0))
    assert "typing" not in held["c1"] and held["c1"] == ada
    assert with_typing(ada, False) == ada and "typing" not in ada  # a copy; the key is absent when not typing


# ---------------------------------------------------------------------------------------------- both backends


@pytest.fixture(params=["memory", "redis"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    if request.param == "memory":
        yield MemoryBackend()
        return
    srv = request.getfixturevalue("redis_server")
    b = RedisBackend(srv.url)
    await b.start()
    yield b
    await b.close()


async def test_entries_not_refreshed_expire_and_the_version_moves(backend: Backend) -> None:
    v0, empty = await backend.presence_read("r1")
    assert empty == {}
    await backend.presence_join("r1", [e("n1-a", "alice"), e("n1-b", "bob")], ttl_s=0.6)  # node 1
    await backend.presence_join("r1", [e("n2-c", "cy")], ttl_s=0.6)  # node 2
    v1, entries = await backend.presence_read("r1", v0)
    assert v1 != v0 and sorted(entries) == ["n1-a", "n1-b", "n2-c"] and entries["n1-a"]["name"] == "Alice"
    assert await backend.presence_read("r1", v1) == (v1, None)  # nothing changed: nothing read
    await backend.presence_join("r1", [e("n1-a", "alice")], ttl_s=0.6)  # a refresh is no change
    assert await backend.presence_read("r1", v1) == (v1, None)
    await backend.presence_join("r1", [{**e("n1-a", "alice"), "typing": True}], ttl_s=0.6)  # a changed entry
    v1b, entries = await backend.presence_read("r1", v1)
    assert v1b != v1 and entries["n1-a"]["typing"] is True and "typing" not in entries["n1-b"]
    await backend.presence_refresh("r1", [e("n1-a", "alice")], ttl_s=0.6)  # a refresh carrying a change, too
    v1, entries = await backend.presence_read("r1", v1b)
    assert v1 != v1b and "typing" not in entries["n1-a"]
    for _ in range(4):  # node 1 keeps refreshing, node 2 died
        await asyncio.sleep(0.3)
        await backend.presence_join("r1", [e("n1-a", "alice"), e("n1-b", "bob")], ttl_s=0.6)
    v2, entries = await backend.presence_read("r1", v1)
    assert v2 != v1 and sorted(entries) == ["n1-a", "n1-b"]
    await backend.presence_leave("r1", [e("n1-b", "bob")])
    v3, entries = await backend.presence_read("r1", v2)
    assert v3 != v2 and sorted(entries) == ["n1-a"]
    assert (await backend.presence_read("other", None))[1] == {}


async def test_the_who_watched_record_lists_each_person_once(backend: Backend) -> None:
    await backend.presence_join("r1", [e("c1", "alice"), e("c2", "alice")], ttl_s=5)
    await asyncio.sleep(0.05)
    await backend.presence_join("r1", [e("c3", "bob")], ttl_s=5)
    await asyncio.sleep(0.05)
    await backend.presence_leave("r1", [e("c1", "alice")])
    watched = await backend.watched("r1")
    assert [w["sub"] for w in watched] == ["alice", "bob"]
    alice, bob = watched
    assert alice["name"] == "Alice" and alice["first_seen"] < bob["first_seen"] <= alice["last_seen"]
    assert bob["first_seen"] == bob["last_seen"]
    assert await backend.watched("nobody") == []


def test_onlookers_tell_people_not_connections_and_leave_out_the_watcher() -> None:
    """The terminal's view of presence (presence.Onlookers): the first frame sums up who is there; then each person
    who comes or goes once (a second tab is not a second person), and who starts typing; never the watcher itself."""
    o = Onlookers(me="vic")
    first = {"full": True, "joined": [e("c0", "vic"), e("c1", "ada"), e("c2", "ada"), e("c3", "bo")], "left": []}
    assert o.apply(first) == [("watching", "Ada"), ("watching", "Bo")]
    assert o.apply({"full": False, "joined": [e("c4", "otto")], "left": ["c2"]}) == [("joined", "Otto")]
    assert o.apply({"full": False, "joined": [], "left": ["c1"]}) == [("left", "Ada")]  # her last tab
    typing = with_typing(e("c4", "otto", ("operator",)), True)
    assert o.apply({"full": False, "joined": [typing], "left": []}) == [("typing", "Otto")]
    assert o.apply({"full": False, "joined": [typing], "left": []}) == []  # still typing: told once
    assert o.apply({"full": False, "joined": [with_typing(typing, False)], "left": []}) == []
    assert o.apply({"full": False, "joined": [typing], "left": []}) == [("typing", "Otto")]  # typing again
    # a full frame (a reconnect) tells only what changed meanwhile, and the watcher's own connections never count
    again = {"full": True, "joined": [e("c9", "vic"), e("c3", "bo"), e("c5", "cy")], "left": []}
    assert sorted(o.apply(again)) == [("joined", "Cy"), ("left", "Otto")]
