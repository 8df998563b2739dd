"""The approvals inbox and the live run list, over real sockets, on both backends (one memory process; three hub
nodes and two workers on one Redis, with every person's connection on another node than the run's decider).

An approval must reach exactly the people who may decide it, leave everyone's inbox when it is decided, expires or
is cancelled, and a client that connects again gets the current set.
"""

from __future__ import annotations

import asyncio
from typing import Any

from hubtest import ADMIN, ALICE, BOB, OPERATOR, TERMINAL, VIEWER, Client, Cluster, token

QUIET_S = 0.6  # how long a "nothing arrives" check waits after the same change reached everyone who should see it


async def ask(c: Client, frame: dict[str, Any], answer: str) -> dict[str, Any]:
    """Send a feed command; return the snapshot (`answer`), ack or error that carries its id."""
    frame = dict(frame, id=f"f{len(c.frames)}-{id(frame)}")
    await c.send(frame)
    return await c.wait_for(lambda f: f.get("id") == frame["id"] and f["type"] in (answer, "ack", "error"))


async def inbox(hub: Cluster, tok: str, node: int | None = None) -> tuple[Client, dict[str, Any]]:
    c = await Client.connect(hub.ws_url(node), tok)
    snap = await ask(c, {"type": "subscribe_inbox"}, "inbox")
    assert snap["type"] == "inbox", snap
    return c, snap


def added(c: Client, run_id: str) -> list[dict[str, Any]]:
    return [f["approval"] for f in c.frames if f["type"] == "inbox.added" and f["approval"]["run_id"] == run_id]


def removed(c: Client, run_id: str) -> list[dict[str, Any]]:
    return [f for f in c.frames if f["type"] == "inbox.removed" and f["run_id"] == run_id]


async def wait_added(c: Client, run_id: str, timeout: float = 20) -> dict[str, Any]:
    f = await c.wait_for(lambda f: f["type"] == "inbox.added" and f["approval"]["run_id"] == run_id, timeout)
    return f["approval"]


async def wait_removed(c: Client, run_id: str, timeout: float = 20) -> dict[str, Any]:
    return await c.wait_for(lambda f: f["type"] == "inbox.removed" and f["run_id"] == run_id, timeout)


async def close_all(*clients: Client) -> None:
    for c in clients:
        await c.close()


async def test_an_approval_reaches_exactly_the_people_who_may_decide_and_leaves_when_decided(hub: Cluster) -> None:
    other = hub.start_run("demo", "another run")
    limited = token("lim", ["approver"], runs=[other], name="Lim")  # an approver whose token sees only `other`
    people = {
        name: await inbox(hub, tok)
        for name, tok in [
            ("alice", ALICE),
            ("bob", BOB),
            ("root", ADMIN),
            ("vic", VIEWER),
            ("ada", OPERATOR),
            ("lim", limited),
        ]
    }
    run_id = hub.start_run("demo", "free some disk space")
    mays, may_nots = ["alice", "bob", "root"], ["vic", "ada", "lim"]
    items = {n: await wait_added(people[n][0], run_id) for n in mays}
    ap = items["alice"]
    assert items["alice"] == items["bob"] == items["root"]
    assert ap["tool"] == "delete_files" and ap["agent"] == "Janitor"
    assert ap["description"] == "Delete files for good (needs a teammate's approval). The demo deletes nothing."
    assert ap["policy"] == {"roles": ["approver"], "quorum": 1, "allow_self": True, "count_starter": True}
    assert ap["run"]["started_by"] == {"sub": "ada", "name": "Ada"} and ap["run"]["input"] == "free some disk space"
    assert ap["tally"] == {"approve": 0, "reject": 0, "needed": 1} and ap["votes"] == []
    assert ap["expires_at"] and ap["requested_at"]
    await asyncio.sleep(QUIET_S)
    for n in may_nots:
        assert added(people[n][0], run_id) == [], n
    # the HTTP view of the same inbox
    for tok, want in [(ALICE, True), (ADMIN, True), (VIEWER, False), (OPERATOR, False), (limited, False)]:
        r = hub.http("GET", "/api/approvals?open=1", tok)
        assert r.status_code == 200, r.text
        ids = [a["approval_id"] for a in r.json()["approvals"]]
        assert (ap["approval_id"] in ids) is want, (tok, ids)
    assert hub.http("GET", "/api/approvals?open=0", ALICE).json()["error"]["code"] == "bad_request"
    assert hub.http("GET", "/api/approvals?open=1", "garbage").status_code == 401

    # Bob decides (on his own node): it leaves every inbox that had it, and only those.
    ack = await people["bob"][0].request(
        {"type": "decide", "run_id": run_id, "approval_id": ap["approval_id"], "decision": "approve"}
    )
    assert ack["type"] == "ack"
    for n in mays:
        gone = await wait_removed(people[n][0], run_id)
        assert gone == {
            "type": "inbox.removed",
            "run_id": run_id,
            "approval_id": ap["approval_id"],
            "reason": "approved",
        }
    w = await Client.connect(hub.ws_url(), VIEWER)
    await w.subscribe(run_id)
    assert (await w.wait_event(run_id, TERMINAL))["type"] == "run.completed"
    await asyncio.sleep(QUIET_S)
    for n in mays:
        assert len(added(people[n][0], run_id)) == 1 and len(removed(people[n][0], run_id)) == 1, n
    for n in may_nots:
        assert added(people[n][0], run_id) == [] and removed(people[n][0], run_id) == [], n
    assert all(
        a["approval_id"] != ap["approval_id"] for a in hub.http("GET", "/api/approvals", ALICE).json()["approvals"]
    )
    assert hub.http("POST", f"/api/runs/{other}/cancel", OPERATOR, json={}).status_code == 200
    await close_all(w, *(c for c, _ in people.values()))


async def test_a_reconnecting_client_gets_the_current_set(hub: Cluster) -> None:
    run_id = hub.start_run("demo")
    a, _ = await inbox(hub, ALICE)
    ap = await wait_added(a, run_id)
    await a.close()
    # a new connection, on another node: the open approval is in its snapshot, with everything the card needs
    again, snap = await inbox(hub, ALICE)
    mine = [x for x in snap["approvals"] if x["run_id"] == run_id]
    assert mine == [ap]
    viewer, vsnap = await inbox(hub, VIEWER)
    assert [x for x in vsnap["approvals"] if x["run_id"] == run_id] == []
    # subscribing again on the same connection answers the snapshot again
    snap2 = await ask(again, {"type": "subscribe_inbox"}, "inbox")
    assert [x for x in snap2["approvals"] if x["run_id"] == run_id] == [ap]
    # after the decision, a reconnect no longer gets it
    r = hub.http(
        "POST", f"/api/runs/{run_id}/approvals/{ap['approval_id']}", BOB, json={"decision": "reject", "reason": "no"}
    )
    assert r.status_code == 200
    gone = await wait_removed(again, run_id)
    assert gone["reason"] == "rejected"
    third, snap3 = await inbox(hub, ALICE)
    assert [x for x in snap3["approvals"] if x["run_id"] == run_id] == []
    # unsubscribe: nothing more arrives
    assert (await third.request({"type": "unsubscribe_inbox"}))["type"] == "ack"
    run2 = hub.start_run("demo")
    await wait_added(again, run2)
    await asyncio.sleep(QUIET_S)
    assert added(third, run2) == []
    assert hub.http("POST", f"/api/runs/{run2}/cancel", OPERATOR, json={}).status_code == 200
    assert (await wait_removed(again, run2))["reason"] == "cancelled"
    await close_all(again, viewer, third)


async def test_expired_and_cancelled_approvals_leave_every_inbox(hub: Cluster) -> None:
    a, _ = await inbox(hub, ALICE)
    b, _ = await inbox(hub, ADMIN)
    expiring = hub.start_run("demo-expiring")
    cancelled = hub.start_run("demo")
    for c in (a, b):
        await wait_added(c, expiring)
        await wait_added(c, cancelled)
    assert hub.http("POST", f"/api/runs/{cancelled}/cancel", OPERATOR, json={}).status_code == 200
    for c in (a, b):
        assert (await wait_removed(c, expiring))["reason"] == "expired"
        assert (await wait_removed(c, cancelled))["reason"] == "cancelled"
    await close_all(a, b)


async def test_quorum_voter_and_self_approval_rules(hub: Cluster) -> None:
    a, _ = await inbox(hub, ALICE)
    b, _ = await inbox(hub, BOB)
    run_id = hub.start_run("demo-quorum")
    ap = await wait_added(a, run_id)
    await wait_added(b, run_id)
    assert (
        await a.request({"type": "decide", "run_id": run_id, "approval_id": ap["approval_id"], "decision": "approve"})
    )["outcome"] == "voted"
    # Alice voted: it leaves her inbox (she cannot vote twice); Bob still has it, and learns nothing new
    assert (await wait_removed(a, run_id))["reason"] == "voted"
    await asyncio.sleep(QUIET_S)
    assert removed(b, run_id) == []
    snap = await ask(b, {"type": "subscribe_inbox"}, "inbox")
    mine = [x for x in snap["approvals"] if x["run_id"] == run_id]
    assert len(mine) == 1 and mine[0]["tally"] == {"approve": 1, "reject": 0, "needed": 2}
    assert [v["sub"] for v in mine[0]["votes"]] == ["alice"]
    assert (
        await b.request({"type": "decide", "run_id": run_id, "approval_id": ap["approval_id"], "decision": "approve"})
    )["outcome"] == "decided"
    assert (await wait_removed(b, run_id))["reason"] == "approved"

    # allow_self=False: the approver who started the run never sees it; another approver does
    sam = token("sam", ["approver", "operator"], name="Sam")
    s, _ = await inbox(hub, sam)
    strict = hub.start_run("demo-strict", tok=sam)
    await wait_added(a, strict)
    await asyncio.sleep(QUIET_S)
    assert added(s, strict) == []
    assert hub.http("GET", "/api/approvals?open=1", sam).json()["approvals"] == [] or all(
        x["run_id"] != strict for x in hub.http("GET", "/api/approvals?open=1", sam).json()["approvals"]
    )
    assert hub.http("POST", f"/api/runs/{strict}/cancel", OPERATOR, json={}).status_code == 200
    await close_all(a, b, s)


def statuses(c: Client, run_id: str) -> list[dict[str, Any]]:
    """The changes of one run a run list received (each `run.status` carries the changed runs of one tick)."""
    return [r for f in c.frames if f["type"] == "run.status" for r in f["runs"] if r["run_id"] == run_id]


async def test_the_run_list_is_live_on_every_node(hub: Cluster) -> None:
    watchers = []
    for i in range(len(hub.nodes)):
        c = await Client.connect(hub.ws_url(i), VIEWER)
        snap = await ask(c, {"type": "subscribe_runs", "limit": 10}, "runs")
        assert snap["type"] == "runs" and len(snap["runs"]) <= 10
        assert [r["created_at"] for r in snap["runs"]] == sorted((r["created_at"] for r in snap["runs"]), reverse=True)
        watchers.append(c)
    run_id = hub.start_run("demo")
    for c in watchers:
        await c.wait_for(lambda f: any(r["status"] == "paused" for r in statuses(c, run_id)))
        paused = next(r for r in statuses(c, run_id) if r["status"] == "paused")
        assert paused["open_approvals"] == 1 and paused["agent"] == "demo"
        assert paused["started_by"] == {"sub": "ada", "name": "Ada"}
    assert hub.http("POST", f"/api/runs/{run_id}/cancel", OPERATOR, json={}).status_code == 200
    for c in watchers:
        await c.wait_for(lambda f: any(r["status"] == "cancelled" for r in statuses(c, run_id)))
        seen = statuses(c, run_id)
        versions = [r["version"] for r in seen]
        assert versions == sorted(set(versions)), versions  # each change at most once, in order
        assert seen[0]["status"] in ("queued", "running", "paused") and seen[-1]["status"] == "cancelled"
        assert "paused" in [r["status"] for r in seen]
    # a token limited to other runs never hears of this one; a new subscriber's snapshot has it with its status
    limited = await Client.connect(hub.ws_url(), token("lim2", ["viewer"], runs=["run_none"]))
    lsnap = await ask(limited, {"type": "subscribe_runs"}, "runs")
    assert lsnap["runs"] == []
    late = await Client.connect(hub.ws_url(), VIEWER)
    snap = await ask(late, {"type": "subscribe_runs"}, "runs")
    assert [r["status"] for r in snap["runs"] if r["run_id"] == run_id] == ["cancelled"]
    # a list of one run: a newer run takes its place (and the one it showed leaves it)
    one = await Client.connect(hub.ws_url(), VIEWER)
    osnap = await ask(one, {"type": "subscribe_runs", "limit": 1}, "runs")
    assert [r["run_id"] for r in osnap["runs"]] == [run_id]
    run2 = hub.start_run("demo")
    await late.wait_for(lambda f: bool(statuses(late, run2)))
    entered = await one.wait_for(lambda f: f["type"] == "run.status" and bool(f.get("left")))
    assert entered["left"] == [run_id] and [r["run_id"] for r in entered["runs"]] == [run2]
    await asyncio.sleep(QUIET_S)
    assert [f for f in limited.frames if f["type"] == "run.status"] == []
    assert (await late.request({"type": "unsubscribe_runs"}))["type"] == "ack"
    assert hub.http("POST", f"/api/runs/{run2}/cancel", OPERATOR, json={}).status_code == 200
    await close_all(limited, late, one, *watchers)


async def test_a_filtered_run_list_on_every_backend(hub: Cluster) -> None:
    sam = token("sam", ["operator"], name="Sam")
    mine = hub.start_run("demo", "rotate the quarterly report", tok=sam)
    other = hub.start_run("demo-quorum", "ship it")
    c = await Client.connect(hub.ws_url(), VIEWER)
    for filters, want, not_want in [
        ({"started_by": "sam"}, mine, other),
        ({"agent": "demo-quorum"}, other, mine),
        ({"q": "QUARTERLY report"}, mine, other),
    ]:
        snap = await ask(c, {"type": "subscribe_runs", **filters}, "runs")
        ids = [r["run_id"] for r in snap["runs"]]
        assert want in ids and not_want not in ids, (filters, ids)
    bad = await ask(c, {"type": "subscribe_runs", "status": 3}, "runs")
    assert bad["type"] == "error" and bad["code"] == "bad_request"
    # live: subscribed to paused runs only, a run that pauses arrives, and once cancelled it leaves the list
    snap = await ask(c, {"type": "subscribe_runs", "status": "paused", "q": "filtered"}, "runs")
    run_id = hub.start_run("demo", "filtered live")
    await c.wait_for(lambda f: any(r["status"] == "paused" for r in statuses(c, run_id)))
    assert hub.http("POST", f"/api/runs/{run_id}/cancel", OPERATOR, json={}).status_code == 200
    await c.wait_for(lambda f: f["type"] == "run.status" and run_id in f.get("left", []))
    assert [r["status"] for r in statuses(c, run_id)] == ["paused"]  # queued/running never matched: not sent
    for r in (mine, other):
        hub.http("POST", f"/api/runs/{r}/cancel", OPERATOR, json={})
    await close_all(c)


def mentions_run(f: dict[str, Any], run_id: str) -> bool:
    """Whether a frame tells anything of `run_id`: its events, its inbox items, its place in a run list."""
    if f.get("run_id") == run_id or (f.get("approval") or {}).get("run_id") == run_id:
        return True
    return any(r.get("run_id") == run_id for r in f.get("runs") or []) or run_id in (f.get("left") or [])


async def test_a_renewed_token_that_sees_less_ends_what_it_may_no_longer_watch(hub: Cluster) -> None:
    """A renewing `hello` keeps the connection, not what the new token may not see: its subscription to a run outside
    the token's `runs` ends with `forbidden`, and the inbox and the run list start again from a snapshot of the new
    scope. Nothing of that run reaches the connection afterwards, on any node."""
    hidden = hub.start_run("demo", "the run the renewed token may not see")
    kept = hub.start_run("demo", "the run it still sees")
    alice = await Client.connect(hub.ws_url(), ALICE)  # the decider, on the first node
    for run_id in (hidden, kept):
        assert (await alice.subscribe(run_id))["type"] == "sync"
        await alice.wait_event(run_id, "run.paused")
    wide = token("lin", ["approver"], name="Lin")
    narrow = token("lin", ["approver"], runs=[kept], name="Lin")
    lin = await Client.connect(hub.ws_url(len(hub.nodes) - 1), wide)  # on another node than the decider's
    for run_id in (hidden, kept):
        assert (await lin.subscribe(run_id))["type"] == "sync"
    snap = await ask(lin, {"type": "subscribe_inbox"}, "inbox")
    assert {hidden, kept} <= {a["run_id"] for a in snap["approvals"]}
    lsnap = await ask(lin, {"type": "subscribe_runs", "limit": 50}, "runs")
    assert {hidden, kept} <= {r["run_id"] for r in lsnap["runs"]}

    n = len(lin.frames)
    welcome = await lin.request({"type": "hello", "token": narrow})
    assert welcome["type"] == "welcome" and welcome["user"]["sub"] == "lin", welcome
    ended = await lin.wait_for(lambda f: f["type"] == "error" and f.get("run_id") == hidden, start=n)
    assert ended["code"] == "forbidden" and "renewed token" in ended["message"]
    inbox_again = await lin.wait_for(lambda f: f["type"] == "inbox", start=n)
    assert {a["run_id"] for a in inbox_again["approvals"]} == {kept}
    runs_again = await lin.wait_for(lambda f: f["type"] == "runs", start=n)
    assert [r["run_id"] for r in runs_again["runs"]] == [kept]

    # both runs are decided and finish: the connection hears of `kept` (its events, inbox, run list), never `hidden`
    m = len(lin.frames)
    for run_id in (hidden, kept):
        ap = alice.events(run_id, ("approval.requested",))[-1]["data"]
        decide = {"type": "decide", "run_id": run_id, "approval_id": ap["approval_id"], "decision": "approve"}
        assert (await alice.request(decide))["type"] == "ack"
        await alice.wait_event(run_id, "run.completed")
    await lin.wait_event(kept, "run.completed")
    await lin.wait_for(lambda f: f["type"] == "inbox.removed" and f["run_id"] == kept, start=m)
    await lin.wait_for(
        lambda f: (
            f["type"] == "run.status" and any(r == {**r, "run_id": kept, "status": "completed"} for r in f["runs"])
        ),
        start=m,
    )
    await asyncio.sleep(QUIET_S)
    after = next(i for i, f in enumerate(lin.frames) if f is ended) + 1
    assert [f for f in lin.frames[after:] if mentions_run(f, hidden)] == []
    assert (await lin.subscribe(hidden))["code"] == "not_found"  # as for any run the token may not see
    seen = [e["seq"] for e in lin.events(kept)]
    assert seen == list(range(1, seen[-1] + 1))  # the run it kept: every seq once, in order, across the renewal
    await close_all(alice, lin)
