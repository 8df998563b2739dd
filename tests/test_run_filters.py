"""The run list's filters: `GET /api/runs?agent=&status=&started_by=&needs_me=` (runfilter.py), as plain code and
over HTTP on a real hub, memory and Redis."""

from __future__ import annotations

import pytest

from hubtest import ADMIN, ALICE, BOB, OPERATOR, VIEWER, Cluster, token
from runcast import runs
from runcast.approvals import Approval, ApprovalPolicy, Person
from runcast.auth import Identity
from runcast.protocol import ProtocolError
from runcast.runfilter import LIVE, RunFilter, newest_first, select
from runcast.runs import Job

T0 = 1_000_000.0
ADA = Person(sub="ada", name="Ada", roles=["operator"])
ALICE_ID = Identity("alice", "Alice", ("approver",))
VIC_ID = Identity("vic", "Vic", ("viewer",))


def running(run_id: str, agent: str = "demo", by: Person = ADA, at: float = T0) -> runs.RunRecord:
    rec = runs.new_run(run_id, agent, "x", by, at).record
    return runs.claim(rec, Job(kind="start", run_id=run_id, segment=1), "w1", at).record


def paused(run_id: str, policy: ApprovalPolicy | None = None, at: float = T0) -> runs.RunRecord:
    ap = Approval(
        approval_id=f"ap_{run_id}",
        call_id="c",
        tool="delete_files",
        arguments="{}",
        agent="Janitor",
        policy=policy or ApprovalPolicy(),
        requested_at="2026-01-01T00:00:00Z",
    )
    return runs.pause(running(run_id, at=at), "w1", [ap], at).record


def test_a_filter_from_the_query_and_what_it_matches() -> None:
    assert not RunFilter.from_query({}).active
    f = RunFilter.from_query({"agent": "demo", "status": "paused,completed", "started_by": "ada", "needs_me": "1"})
    assert (f.agent, f.statuses, f.started_by, f.needs_me) == ("demo", frozenset({"paused", "completed"}), "ada", True)
    assert RunFilter.from_query({"status": "live"}).statuses == frozenset(LIVE)
    for bad in ({"status": "paused,bogus"}, {"needs_me": "yes"}, {"agent": "a" * 201}, {"q": " " * 201}):
        with pytest.raises(ProtocolError) as exc:
            RunFilter.from_query(bad)
        assert exc.value.code == "bad_request" and exc.value.detail["field"] == next(iter(bad))

    p, r = paused("run_p"), running("run_r", agent="other", by=Person(sub="bob", name="Bob", roles=["operator"]))
    assert [x.run_id for x in select([p, r], ALICE_ID, RunFilter(agent="demo"), 10)] == ["run_p"]
    assert [x.run_id for x in select([p, r], ALICE_ID, RunFilter(statuses=frozenset({"running"})), 10)] == ["run_r"]
    assert [x.run_id for x in select([p, r], ALICE_ID, RunFilter(started_by="bob"), 10)] == ["run_r"]
    assert [x.run_id for x in select([p, r], ALICE_ID, RunFilter(q="BOB X"), 10)] == [
        "run_r"
    ]  # words, as on the socket
    assert RunFilter.from_query({"q": " tidy  up "}).q == "tidy  up" and not RunFilter.from_query({"agent": " "}).active
    # "needs me" is the inbox's rule: a viewer may not decide, an approver may, unless the policy forbids self-approval
    assert [x.run_id for x in select([p, r], ALICE_ID, RunFilter(needs_me=True), 10)] == ["run_p"]
    assert select([p, r], VIC_ID, RunFilter(needs_me=True), 10) == []
    strict = paused("run_s", ApprovalPolicy(roles=["operator"], allow_self=False))
    assert select([strict], Identity("ada", "Ada", ("operator",)), RunFilter(needs_me=True), 10) == []
    assert [x.run_id for x in newest_first([paused("run_a", at=T0), paused("run_b", at=T0 + 5)])] == ["run_b", "run_a"]
    assert len(select([paused(f"run_{i}") for i in range(5)], ALICE_ID, RunFilter(needs_me=True), 2)) == 2


@pytest.mark.parametrize("hub", ["memory", "redis"], indirect=True)
def test_the_run_list_filters_over_http(hub: Cluster) -> None:
    c = hub
    dana = token("dana", ["operator"], name="Dana")
    mine = c.start_run("demo", "tidy up", tok=dana)
    other = c.start_run("demo-quorum", "ship it", tok=OPERATOR)
    c.wait_status(mine, "paused")
    c.wait_status(other, "paused")
    done = c.start_run("demo-handoff", "restart", tok=OPERATOR)
    ap = c.wait_status(done, "paused")["pending_approvals"][0]["approval_id"]
    assert c.http("POST", f"/api/runs/{done}/approvals/{ap}", ALICE, json={"decision": "approve"}).status_code == 200
    c.wait_status(done, "completed")

    def ids(query: str, tok: str = ADMIN) -> list[str]:
        r = c.http("GET", f"/api/runs?{query}", tok)
        assert r.status_code == 200, r.text
        return [x["run_id"] for x in r.json()["runs"] if x["run_id"] in (mine, other, done)]

    assert ids("") == [done, other, mine]  # newest first, unfiltered as before
    assert ids("agent=demo") == [mine]
    assert ids("status=completed") == [done] and ids("status=live") == [other, mine]
    assert ids("started_by=dana") == [mine] and ids("started_by=dana&status=completed") == []
    assert ids("q=TIDY") == [mine] and ids("q=restart&status=completed,failed") == [done]
    assert ids("needs_me=1", ALICE) == [other, mine] and ids("needs_me=1", VIEWER) == []
    c.http(
        "POST",
        f"/api/runs/{other}/approvals/" + c.wait_status(other, "paused")["pending_approvals"][0]["approval_id"],
        BOB,
        json={"decision": "approve"},
    )
    assert ids("needs_me=1", BOB) == [mine] and ids("needs_me=1", ALICE) == [other, mine]  # Bob voted; the quorum waits
    assert ids("status=paused&limit=1") == [other]
    bad = c.http("GET", "/api/runs?status=sleeping")
    assert (
        bad.status_code == 400
        and bad.json()["error"]["code"] == "bad_request"
        and bad.json()["error"]["field"] == "status"
    )


def test_the_openapi_status_pattern_is_the_filters_own() -> None:
    """What the OpenAPI document lets a client send as `status` is exactly the statuses the filter takes."""
    import re

    from runcast.runfilter import STATUSES
    from runcast.specs import _STATUSES

    for s in ["", *STATUSES, "live", "paused,running", "sleeping", "paused,", " paused", "paused ,running", "0" * 10]:
        try:
            RunFilter.from_query({"status": s})
            taken = True
        except ProtocolError:
            taken = False
        assert taken == bool(re.fullmatch(_STATUSES, s)), s
    assert set(re.findall(r"\w+", _STATUSES.split(")")[0])) - {"queued"} <= {*STATUSES, "live"}
