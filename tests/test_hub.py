"""Behaviour of the hub over real sockets: a real `runcast` process, real WebSocket clients, the offline demo model.

Every assertion about delivery checks sequences (seq 1..N, identical lists), not only counts.
"""

from __future__ import annotations

import asyncio
from typing import Any
import json

import httpx
import msgpack
import pytest

from hubtest import ADMIN, ALICE, BOB, OPERATOR, TERMINAL, VIEWER, Client, Cluster, seqs, subs, token, without_presence


async def run_to_pause(hub: Cluster, agent: str = "demo", tok: str = OPERATOR) -> tuple[str, Client, dict]:
    run_id = hub.start_run(agent, tok=tok)
    watcher = await Client.connect(hub.ws_url(), VIEWER)
    await watcher.subscribe(run_id)
    requested = await watcher.wait_event(run_id, "approval.requested")
    await watcher.wait_event(run_id, "run.paused")
    return run_id, watcher, requested["data"]


async def test_three_clients_see_the_same_gapless_sequence_and_the_decision(hub: Cluster) -> None:
    run_id = hub.start_run()
    a = await Client.connect(hub.ws_url(), ALICE)
    b = await Client.connect(hub.ws_url(), VIEWER, encoding="msgpack")
    await a.subscribe(run_id)
    await b.subscribe(run_id)
    await a.wait_event(run_id, "message.delta")
    c = await Client.connect(hub.ws_url(), BOB)  # joins mid-run: replay, then live
    await c.subscribe(run_id)
    req = await a.wait_event(run_id, "approval.requested")
    ack = await a.request(
        {
            "type": "decide",
            "run_id": run_id,
            "approval_id": req["data"]["approval_id"],
            "decision": "approve",
            "reason": "scratch files only",
        }
    )
    assert ack["type"] == "ack" and ack["outcome"] == "decided"
    # the viewer sees who decided, before the run finishes
    decided = await b.wait_event(run_id, "approval.decided")
    assert (
        decided["data"]["by"] == {"sub": "alice", "name": "Alice"} and decided["data"]["reason"] == "scratch files only"
    )
    done = [await x.wait_event(run_id, "run.completed") for x in (a, b, c)]
    assert done[0] == done[1] == done[2]
    last = done[0]["seq"]
    lists = [[e for e in x.events(run_id) if e["seq"] <= last] for x in (a, b, c)]
    assert seqs(lists[0]) == list(range(1, last + 1))
    assert lists[0] == lists[1] == lists[2]
    assert seqs(b.events(run_id, ("approval.decided",)))[0] < last
    kinds = [e["type"] for e in without_presence(lists[0])]
    assert kinds[0] == "run.started" and kinds[-1] == "run.completed"
    assert (
        kinds.index("approval.requested")
        < kinds.index("run.paused")
        < kinds.index("approval.decided")
        < kinds.index("run.resumed")
    )
    assert "Done. I deleted 3 files" in done[0]["data"]["output"]
    assert hub.log_events(run_id)[:last] == lists[0]
    for x in (a, b, c):
        await x.close()


async def test_late_joiner_and_reconnect_with_since_get_exactly_the_missing_events(hub: Cluster) -> None:
    run_id, w, ap = await run_to_pause(hub)
    await w.request({"type": "decide", "run_id": run_id, "approval_id": ap["approval_id"], "decision": "approve"})
    r = await Client.connect(hub.ws_url(), ALICE)
    await r.request({"type": "decide", "run_id": run_id, "approval_id": ap["approval_id"], "decision": "approve"})
    await w.wait_event(run_id, "run.completed")
    log = hub.log_events(run_id)
    head = log[-1]["seq"]

    late = await Client.connect(hub.ws_url(), VIEWER)
    sync = await late.subscribe(run_id)
    assert sync["head_seq"] == head and sync["status"] == "completed"
    before_sync = [f for f in late.frames[: late.frames.index(sync)] if "seq" in f]
    assert before_sync == log  # exactly 1..head before sync, nothing twice
    assert seqs(late.events(run_id)) == list(range(1, len(late.events(run_id)) + 1))
    assert hub.log_events(run_id) == log  # opening a run never writes to its log

    head = log[-1]["seq"]
    k = head // 2
    again = await Client.connect(hub.ws_url(), VIEWER)
    sync = await again.subscribe(run_id, since=k)
    assert sync["head_seq"] == head
    assert [f for f in again.frames[: again.frames.index(sync)] if "seq" in f] == log[k:]
    assert seqs(again.events(run_id))[: head - k] == list(range(k + 1, head + 1))

    # subscribing again on the same connection with the last seq seen gives nothing old
    n = len(again.frames)
    sync = await again.subscribe(run_id, since=head)
    assert [f for f in again.frames[n:] if "seq" in f and f["seq"] <= head] == []
    for x in (w, r, late, again):
        await x.close()


async def test_viewer_decide_is_forbidden_and_changes_nothing(hub: Cluster) -> None:
    run_id, w, ap = await run_to_pause(hub)
    head = hub.log_events(run_id)[-1]["seq"]
    err = await w.request({"type": "decide", "run_id": run_id, "approval_id": ap["approval_id"], "decision": "approve"})
    assert err["type"] == "error" and err["code"] == "forbidden"
    r = hub.http("POST", f"/api/runs/{run_id}/approvals/{ap['approval_id']}", VIEWER, json={"decision": "approve"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    detail = hub.http("GET", f"/api/runs/{run_id}").json()
    assert detail["status"] == "paused" and detail["pending_approvals"][0]["status"] == "pending"
    assert detail["pending_approvals"][0]["tally"] == {"approve": 0, "reject": 0, "needed": 1}
    assert hub.log_events(run_id)[head:] == []
    assert hub.tool_calls(run_id, "delete_files") == []
    await hub_cancel(hub, run_id)
    await w.close()


async def hub_cancel(hub: Cluster, run_id: str) -> None:
    assert hub.http("POST", f"/api/runs/{run_id}/cancel", OPERATOR, json={}).status_code == 200


@pytest.mark.parametrize("round_", range(20))
async def test_racing_approvers_give_one_decision_one_resume_one_execution(hub: Cluster, round_: int) -> None:
    run_id, w, ap = await run_to_pause(hub)
    a = await Client.connect(hub.ws_url(), ALICE)
    b = await Client.connect(hub.ws_url(), BOB)
    decision_b = "reject" if round_ % 2 else "approve"
    frames = [
        {
            "type": "decide",
            "run_id": run_id,
            "approval_id": ap["approval_id"],
            "decision": "approve",
            "reason": "a",
            "id": "x",
        },
        {
            "type": "decide",
            "run_id": run_id,
            "approval_id": ap["approval_id"],
            "decision": decision_b,
            "reason": "b",
            "id": "x",
        },
    ]
    await asyncio.gather(a.send(frames[0]), b.send(frames[1]))
    answers = [await x.wait_for(lambda f: f.get("id") == "x") for x in (a, b)]
    winners = [i for i, f in enumerate(answers) if f["type"] == "ack"]
    assert len(winners) == 1, answers
    loser = answers[1 - winners[0]]
    winner_sub = ["alice", "bob"][winners[0]]
    assert loser["code"] == "already_decided" and loser["winner"]["by"]["sub"] == winner_sub
    assert winner_sub.capitalize() in loser["message"]
    end = await w.wait_event(run_id, TERMINAL)
    assert end["type"] == "run.completed"
    log = hub.log_events(run_id)
    assert [e["data"]["by"]["sub"] for e in log if e["type"] == "approval.decided"] == [winner_sub]
    assert len([e for e in log if e["type"] == "run.resumed"]) == 1
    approved = winners[0] == 0 or decision_b == "approve"
    assert len(hub.tool_calls(run_id, "delete_files")) == (1 if approved else 0)
    assert seqs(log) == list(range(1, len(log) + 1))
    for x in (w, a, b):
        await x.close()


async def test_quorum_of_two_needs_two_different_people(hub: Cluster) -> None:
    run_id, w, ap = await run_to_pause(hub, "demo-quorum")
    assert ap["policy"] == {"roles": ["approver"], "quorum": 2, "allow_self": True, "count_starter": True}
    a = await Client.connect(hub.ws_url(), ALICE)
    first = await a.request(
        {"type": "decide", "run_id": run_id, "approval_id": ap["approval_id"], "decision": "approve"}
    )
    assert first["type"] == "ack" and first["outcome"] == "voted"
    voted = await w.wait_event(run_id, "approval.voted")
    assert voted["data"]["tally"] == {"approve": 1, "reject": 0, "needed": 2}
    twice = await a.request(
        {"type": "decide", "run_id": run_id, "approval_id": ap["approval_id"], "decision": "approve"}
    )
    assert twice["type"] == "error" and twice["code"] == "forbidden"
    assert hub.http("GET", f"/api/runs/{run_id}").json()["status"] == "paused"
    b = await Client.connect(hub.ws_url(), BOB)
    second = await b.request(
        {"type": "decide", "run_id": run_id, "approval_id": ap["approval_id"], "decision": "approve"}
    )
    assert second["type"] == "ack" and second["outcome"] == "decided"
    decided = await w.wait_event(run_id, "approval.decided")
    assert [v["sub"] for v in decided["data"]["voters"]] == ["alice", "bob"]
    end = await w.wait_event(run_id, TERMINAL)
    assert end["type"] == "run.completed" and "deployed 2.4.1 to production" in end["data"]["output"]
    assert len(hub.tool_calls(run_id, "deploy")) == 1
    for x in (w, a, b):
        await x.close()


async def test_rejection_reaches_the_model_as_the_rejection_text(hub: Cluster) -> None:
    run_id, w, ap = await run_to_pause(hub)
    reason = "keep build-cache.tar, the nightly job needs it"
    a = await Client.connect(hub.ws_url(), ALICE)
    ack = await a.request(
        {"type": "decide", "run_id": run_id, "approval_id": ap["approval_id"], "decision": "reject", "reason": reason}
    )
    assert ack["outcome"] == "decided"
    out = await w.wait_for(lambda f: f.get("type") == "tool.output" and f["data"]["call_id"] == ap["call_id"])
    assert out["data"]["output"] == reason
    end = await w.wait_event(run_id, TERMINAL)
    assert end["type"] == "run.completed" and reason in end["data"]["output"]
    assert hub.tool_calls(run_id, "delete_files") == []
    for x in (w, a):
        await x.close()


async def test_cancel_while_paused_ends_the_run_and_the_tool_never_runs(hub: Cluster) -> None:
    run_id, w, ap = await run_to_pause(hub)
    viewer_cancel = await w.request({"type": "cancel", "run_id": run_id})
    assert viewer_cancel["type"] == "error" and viewer_cancel["code"] == "forbidden"
    op = await Client.connect(hub.ws_url(), OPERATOR)
    ack = await op.request({"type": "cancel", "run_id": run_id})
    assert ack["type"] == "ack" and ack["status"] == "cancelled"
    end = await w.wait_event(run_id, TERMINAL)
    assert end["type"] == "run.cancelled" and end["data"]["by"] == {"sub": "ada", "name": "Ada"}
    a = await Client.connect(hub.ws_url(), ALICE)
    late = await a.request(
        {"type": "decide", "run_id": run_id, "approval_id": ap["approval_id"], "decision": "approve"}
    )
    assert late["type"] == "error" and late["code"] == "not_pending"
    await asyncio.sleep(0.3)
    kinds = [e["type"] for e in without_presence(hub.log_events(run_id))]
    assert kinds[-2:] == ["approval.cancelled", "run.cancelled"] and "run.resumed" not in kinds
    assert hub.tool_calls(run_id, "delete_files") == []
    for x in (w, op, a):
        await x.close()


async def test_cancel_while_running_stops_the_stream(hub: Cluster) -> None:
    run_id = hub.start_run()
    op = await Client.connect(hub.ws_url(), OPERATOR)
    await op.subscribe(run_id)
    await op.wait_event(run_id, "message.delta")
    ack = await op.request({"type": "cancel", "run_id": run_id})
    assert ack["type"] == "ack" and ack["status"] == "cancelling"
    end = await op.wait_event(run_id, TERMINAL)
    assert end["type"] == "run.cancelled" and end["data"]["mode"] == "immediate"
    kinds = [e["type"] for e in op.events(run_id)]
    assert "run.paused" not in kinds and "approval.requested" not in kinds
    assert hub.tool_calls(run_id, "delete_files") == []
    assert hub.http("GET", f"/api/runs/{run_id}").json()["status"] == "cancelled"
    await op.close()


async def test_cancel_after_the_turn_lets_the_turn_finish_and_opens_no_approval(hub: Cluster) -> None:
    run_id = hub.start_run("long-turn")
    op = await Client.connect(hub.ws_url(), OPERATOR)
    await op.subscribe(run_id)
    await op.wait_event(run_id, "message.delta")  # the turn that ends asking to delete has begun streaming
    ack = await op.request({"type": "cancel", "run_id": run_id, "mode": "after_turn"})
    assert ack["type"] == "ack" and ack["status"] == "cancelling" and ack["mode"] == "after_turn"
    end = await op.wait_event(run_id, TERMINAL)
    assert end["type"] == "run.cancelled" and end["data"]["mode"] == "after_turn"
    assert end["data"]["by"] == {"sub": "ada", "name": "Ada"}
    kinds = [e["type"] for e in without_presence(op.events(run_id))]
    assert "approval.requested" not in kinds and "run.paused" not in kinds
    assert kinds.count("run.cancelled") == 1 and kinds[-1] == "run.cancelled"
    assert "message.completed" in kinds  # the turn was let finish
    assert hub.tool_calls(run_id, "delete_files") == []
    await op.close()


async def test_always_is_recorded_with_the_decision_and_the_resume(hub: Cluster) -> None:
    run_id, w, ap = await run_to_pause(hub)
    a = await Client.connect(hub.ws_url(), ALICE)
    ack = await a.request(
        {
            "type": "decide",
            "run_id": run_id,
            "approval_id": ap["approval_id"],
            "decision": "approve",
            "always": True,
            "reason": "always fine in scratch/",
        }
    )
    assert ack["outcome"] == "decided"
    decided = await w.wait_event(run_id, "approval.decided")
    assert decided["data"]["always"] is True and decided["data"]["reason"] == "always fine in scratch/"
    resumed = await w.wait_event(run_id, "run.resumed")
    assert resumed["data"]["decisions"][0]["always"] is True
    assert (await w.wait_event(run_id, TERMINAL))["type"] == "run.completed"
    assert len(hub.tool_calls(run_id, "delete_files")) == 1
    for x in (w, a):
        await x.close()


async def test_an_expired_approval_is_rejected_automatically(hub: Cluster) -> None:
    run_id, w, ap = await run_to_pause(hub, "demo-expiring")
    assert ap["expires_at"] is not None
    expired = await w.wait_event(run_id, "approval.expired", timeout=10)
    decided = await w.wait_event(run_id, "approval.decided")
    assert expired["seq"] + 1 == decided["seq"]
    assert decided["data"]["by"] == {"policy": "expired"} and decided["data"]["decision"] == "reject"
    end = await w.wait_event(run_id, TERMINAL)
    assert end["type"] == "run.completed" and "expired" in end["data"]["output"]
    a = await Client.connect(hub.ws_url(), ALICE)
    late = await a.request(
        {"type": "decide", "run_id": run_id, "approval_id": ap["approval_id"], "decision": "approve"}
    )
    assert late["code"] == "already_decided" and late["winner"]["by"] == {"policy": "expired"}
    assert hub.tool_calls(run_id, "delete_files") == []
    for x in (w, a):
        await x.close()


async def test_self_approval_refused_when_the_policy_says_so(hub: Cluster) -> None:
    starter = token("sam", ["approver", "operator"], name="Sam")
    run_id, w, ap = await run_to_pause(hub, "demo-strict", tok=starter)
    s = await Client.connect(hub.ws_url(), starter)
    err = await s.request({"type": "decide", "run_id": run_id, "approval_id": ap["approval_id"], "decision": "approve"})
    assert err["code"] == "forbidden" and "other than" in err["message"]
    a = await Client.connect(hub.ws_url(), ALICE)
    assert (
        await a.request({"type": "decide", "run_id": run_id, "approval_id": ap["approval_id"], "decision": "approve"})
    )["type"] == "ack"
    assert (await w.wait_event(run_id, TERMINAL))["type"] == "run.completed"
    for x in (w, s, a):
        await x.close()


async def test_handoff_run_with_an_operator_approving(hub: Cluster) -> None:
    run_id, w, ap = await run_to_pause(hub, "demo-handoff")
    assert ap["agent"] == "Ops" and ap["tool"] == "restart_service"
    kinds = [e["type"] for e in w.events(run_id)]
    assert "handoff.requested" in kinds and "handoff.completed" in kinds
    assert [e["data"]["agent"] for e in w.events(run_id, ("agent.updated",))] == ["Triage", "Ops"]
    op = await Client.connect(hub.ws_url(), OPERATOR)
    assert (
        await op.request({"type": "decide", "run_id": run_id, "approval_id": ap["approval_id"], "decision": "approve"})
    )["type"] == "ack"
    end = await w.wait_event(run_id, TERMINAL)
    assert end["type"] == "run.completed" and "restarted web" in end["data"]["output"]
    assert [e["data"]["agent"] for e in w.events(run_id, ("agent.updated",))] == [
        "Triage",
        "Ops",
    ]  # not re-announced on resume
    for x in (w, op):
        await x.close()


async def test_a_failing_model_ends_the_run_failed(hub: Cluster) -> None:
    run_id = hub.start_run("broken")
    w = await Client.connect(hub.ws_url(), VIEWER)
    await w.subscribe(run_id)
    end = await w.wait_event(run_id, TERMINAL)
    assert end["type"] == "run.failed" and "the model fell over" in end["data"]["message"]
    await w.close()


@pytest.mark.parametrize("round_", range(10))
async def test_two_approvals_of_one_pause_decided_at_once_give_one_resume(hub: Cluster, round_: int) -> None:
    """The last two open approvals of a pause settled at the same moment (on different nodes with Redis): each gets one
    `approval.decided`, the pause gets one `run.resumed`, after both, and each approved call runs once."""
    run_id = hub.start_run("two-deletes")
    w = await Client.connect(hub.ws_url(), VIEWER)
    await w.subscribe(run_id)
    paused = await w.wait_event(run_id, "run.paused")
    first, second = paused["data"]["pending"]
    a = await Client.connect(hub.ws_url(), ALICE)
    b = await Client.connect(hub.ws_url(), BOB)
    second_decision = "reject" if round_ % 2 else "approve"
    await asyncio.gather(
        a.send({"type": "decide", "run_id": run_id, "approval_id": first, "decision": "approve", "id": "d"}),
        b.send({"type": "decide", "run_id": run_id, "approval_id": second, "decision": second_decision, "id": "d"}),
    )
    answers = [await x.wait_for(lambda f: f.get("id") == "d") for x in (a, b)]
    assert [f.get("outcome") for f in answers] == ["decided", "decided"], answers
    end = await w.wait_event(run_id, TERMINAL)
    assert end["type"] == "run.completed"
    log = hub.log_events(run_id)
    assert seqs(log) == list(range(1, len(log) + 1))
    decided = [e for e in log if e["type"] == "approval.decided"]
    assert sorted(e["data"]["approval_id"] for e in decided) == sorted([first, second])
    resumed = [e for e in log if e["type"] == "run.resumed"]
    assert len(resumed) == 1 and all(e["seq"] < resumed[0]["seq"] for e in decided)
    assert {d["approval_id"]: d["decision"] for d in resumed[0]["data"]["decisions"]} == {
        first: "approve",
        second: second_decision,
    }
    runs_of = [c["args"]["paths"] for c in hub.tool_calls(run_id, "delete_files")]
    assert len(runs_of) == (2 if second_decision == "approve" else 1)
    for x in (w, a, b):
        await x.close()


async def test_every_bad_frame_gets_its_code_and_the_connection_keeps_working(hub: Cluster) -> None:
    run_id, w, ap = await run_to_pause(hub)
    other_run = hub.start_run()
    limited = token("lim", ["approver"], runs=[other_run])
    c = await Client.connect(hub.ws_url(), ALICE)
    detail_before = hub.http("GET", f"/api/runs/{run_id}").json()
    head_before = hub.log_events(run_id)[-1]["seq"]
    cases = [
        ("{not json", "bad_frame"),
        ("[1,2,3]", "bad_frame"),
        (json.dumps({"no_type": 1}), "bad_request"),
        (json.dumps({"type": "subscribe"}), "bad_request"),
        (json.dumps({"type": "subscribe", "run_id": 42}), "bad_request"),
        (json.dumps({"type": "subscribe", "run_id": run_id, "since": "3"}), "bad_request"),
        (
            json.dumps({"type": "decide", "run_id": run_id, "approval_id": ap["approval_id"], "decision": "yes"}),
            "bad_request",
        ),
        (json.dumps({"type": "fly"}), "unknown_type"),
        (json.dumps({"type": "ping", "pad": "x" * 70_000}), "too_large"),
        (json.dumps({"type": "subscribe", "run_id": "run_nope"}), "not_found"),
        (
            json.dumps({"type": "decide", "run_id": run_id, "approval_id": "ap_stale", "decision": "approve"}),
            "not_found",
        ),
        (
            json.dumps(
                {"type": "decide", "run_id": other_run, "approval_id": ap["approval_id"], "decision": "approve"}
            ),
            "not_found",
        ),
        (
            json.dumps(
                {
                    "type": "decide",
                    "run_id": run_id,
                    "approval_id": ap["approval_id"],
                    "decision": "approve",
                    "reason": 7,
                }
            ),
            "bad_request",
        ),
        (json.dumps({"type": "cancel", "run_id": run_id, "mode": "later"}), "bad_request"),
        (json.dumps({"type": "start", "agent": "demo", "input": "x"}), "forbidden"),  # an approver may not start runs
        (json.dumps({"type": "start", "agent": "nope", "input": "x"}), "forbidden"),
        # a second hello renews the connection for the same person only (issue 19): another person is refused
        (json.dumps({"type": "hello", "token": BOB}), "forbidden"),
        (json.dumps({"type": "hello"}), "bad_request"),
        (msgpack.packb({"type": "ping"}), "bad_frame"),  # binary frame on the JSON subprotocol: not JSON
    ]
    for payload, code in cases:
        n = len(c.frames)
        await c.send(payload)
        err = await c.wait_for(lambda f: f["type"] == "error", start=n)
        assert err["code"] == code, (payload[:80], err)
        assert err["message"]
        pong = await c.request({"type": "ping"})
        assert pong["type"] == "pong"
    # none of them changed anything: the run, its approval and its log are as they were (who watched is not the run)
    detail_after = hub.http("GET", f"/api/runs/{run_id}").json()
    assert {k: v for k, v in detail_after.items() if k != "watched"} == {
        k: v for k, v in detail_before.items() if k != "watched"
    }
    assert hub.log_events(run_id)[head_before:] == []
    # a token for another run, a viewer deciding, a stale approval id
    lim = await Client.connect(hub.ws_url(), limited)
    assert (await lim.subscribe(run_id))["code"] == "not_found"  # the same answer as for a run that does not exist
    assert (
        await lim.request({"type": "decide", "run_id": run_id, "approval_id": ap["approval_id"], "decision": "approve"})
    )["code"] == "not_found"
    assert (await lim.subscribe(other_run))["type"] == "sync"
    assert (
        await w.request({"type": "decide", "run_id": run_id, "approval_id": ap["approval_id"], "decision": "approve"})
    )["code"] == "forbidden"
    assert (
        await c.request({"type": "decide", "run_id": run_id, "approval_id": ap["approval_id"], "decision": "approve"})
    )["type"] == "ack"
    stale = await c.request(
        {"type": "decide", "run_id": run_id, "approval_id": ap["approval_id"], "decision": "reject"}
    )
    assert stale["code"] == "already_decided"
    assert (await w.wait_event(run_id, TERMINAL))["type"] == "run.completed"
    assert len(hub.tool_calls(run_id, "delete_files")) == 1
    await hub_cancel(hub, other_run)
    for x in (w, c, lim):
        await x.close()


async def test_msgpack_subprotocol_errors_and_events(hub: Cluster) -> None:
    m = await Client.connect(hub.ws_url(), ALICE, encoding="msgpack")
    assert m.ws.subprotocol == "runcast.v1.msgpack"
    for payload, code in [
        (b"\xc1\xc1\xc1", "bad_frame"),  # not msgpack
        (msgpack.packb([1, 2, 3]), "bad_frame"),  # msgpack, but not a map
        (msgpack.packb({"type": "subscribe", "run_id": 42}), "bad_request"),
        (msgpack.packb({"type": "fly"}), "unknown_type"),
        ('{"type": "ping"}', "bad_frame"),  # a text frame on the msgpack subprotocol
    ]:
        n = len(m.frames)
        await m.send(payload)
        err = await m.wait_for(lambda f: f["type"] == "error", start=n)
        assert err["code"] == code, (payload, err)
        assert (await m.request({"type": "ping"}))["type"] == "pong"
    # a whole run over msgpack, decided over msgpack: the same events as the log
    run_id = hub.start_run()
    await m.subscribe(run_id)
    req = await m.wait_event(run_id, "approval.requested")
    ack = await m.request(
        {"type": "decide", "run_id": run_id, "approval_id": req["data"]["approval_id"], "decision": "approve"}
    )
    assert ack["type"] == "ack" and ack["outcome"] == "decided"
    end = await m.wait_event(run_id, "run.completed")
    got = [e for e in m.events(run_id) if e["seq"] <= end["seq"]]
    assert seqs(got) == list(range(1, end["seq"] + 1))
    assert got == hub.log_events(run_id)[: end["seq"]]
    await m.close()


async def test_hello_rules_and_close_codes(hub: Cluster) -> None:
    # no hello in time: 4401
    quiet = await Client.connect(hub.ws_url())
    assert (await quiet.wait_closed(5))[0] == 4401
    # anything before hello is an error, then a bad token closes with 4401
    c = await Client.connect(hub.ws_url())
    n = len(c.frames)
    await c.send({"type": "ping"})
    assert (await c.wait_for(lambda f: f["type"] == "error", start=n))["code"] == "unauthenticated"
    await c.send({"type": "hello", "token": "not-a-jwt"})
    assert (await c.wait_closed())[0] == 4401
    wrong_secret = Client.connect  # a token signed with another secret
    from runcast import auth

    forged = auth.issue("another-secret-0123456789abcdef0123", "root", "Root", ["admin"])
    f = await wrong_secret(hub.ws_url())
    await f.send({"type": "hello", "token": forged})
    assert (await f.wait_closed())[0] == 4401
    # a token that expires closes the connection with 4401 when it does
    short = await Client.connect(hub.ws_url(), token("eve", ["viewer"], ttl=2))
    assert (await short.wait_closed(10))[0] == 4401
    # a frame over the transport limit: 1009
    big = await Client.connect(hub.ws_url(), ALICE)
    await big.send("x" * (2 * 1024 * 1024))
    assert (await big.wait_closed())[0] == 1009


async def test_origin_is_checked_before_the_upgrade(hub: Cluster) -> None:
    import websockets

    url = hub.ws_url()  # one node: with several, each call may name another
    with pytest.raises(websockets.InvalidStatus) as info:
        await websockets.connect(url, origin="http://evil.example")
    assert info.value.response.status_code == 403
    port = url.split(":")[2].split("/")[0]
    ok = await Client.connect(url, ALICE, origin=f"http://127.0.0.1:{port}")
    assert (await ok.request({"type": "ping"}))["type"] == "pong"
    await ok.close()


async def test_repeated_bad_frames_close_with_1008(hub: Cluster) -> None:
    c = await Client.connect(hub.ws_url(), ALICE)
    for _ in range(80):
        await c.send("{")
    assert (await c.wait_closed())[0] == 1008
    errors = [f for f in c.frames if f["type"] == "error"]
    assert errors and all(f["code"] in ("bad_frame", "rate_limited") for f in errors)


async def test_presence_is_live_state_outside_the_log(hub: Cluster) -> None:
    run_id = hub.start_run()
    a = await Client.connect(hub.ws_url(), ALICE)
    await a.subscribe(run_id)
    first = await a.wait_for(lambda f: f.get("type") == "presence")
    assert first["full"] is True and "seq" not in first and first["run_id"] == run_id
    assert subs(a.presence(run_id)) == ["alice"]  # the full set on subscribe, itself included
    b = await Client.connect(hub.ws_url(), BOB)
    await b.subscribe(run_id)
    seen = await a.wait_presence(run_id, lambda p: subs(p) == ["alice", "bob"])
    bob = next(e for e in seen.values() if e["sub"] == "bob")
    assert bob["name"] == "Bob" and bob["roles"] == ["approver"]
    assert subs(await b.wait_presence(run_id, lambda p: len(p) == 2)) == ["alice", "bob"]
    await b.close()
    await a.wait_presence(run_id, lambda p: subs(p) == ["alice"])
    # an unsubscribe (the connection stays) leaves too, and gets its ack
    c = await Client.connect(hub.ws_url(), VIEWER)
    await c.subscribe(run_id)
    await a.wait_presence(run_id, lambda p: subs(p) == ["alice", "vic"])
    assert (await c.request({"type": "unsubscribe", "run_id": run_id}))["type"] == "ack"
    await a.wait_presence(run_id, lambda p: subs(p) == ["alice"])
    assert (await c.request({"type": "ping"}))["type"] == "pong"
    assert all(f["type"] != "presence" or "seq" not in f for f in a.frames)
    await hub_cancel(hub, run_id)
    await a.wait_event(run_id, "run.cancelled")
    assert not [e for e in hub.log_events(run_id) if e["type"].startswith("participant.")]
    for x in (a, c):
        await x.close()


async def test_a_finished_run_ends_with_its_terminal_event_after_ten_people_open_it(hub: Cluster) -> None:
    run_id = hub.start_run("broken")
    w = await Client.connect(hub.ws_url(), VIEWER)
    await w.subscribe(run_id)
    end = await w.wait_event(run_id, TERMINAL)
    assert end["type"] == "run.failed"
    people = [await Client.connect(hub.ws_url(), token(f"p{i}", ["viewer"], name=f"P{i}")) for i in range(10)]
    twice = await Client.connect(hub.ws_url(), token("p0", ["viewer"], name="P0"))  # p0 in a second tab
    for c in people + [twice]:
        sync = await c.subscribe(run_id)
        assert sync["head_seq"] == end["seq"] and sync["status"] == "failed"
    await w.wait_presence(run_id, lambda p: len(p) == 12)
    log = hub.log_events(run_id)
    assert log[-1] == end  # its terminal event is its last event, whoever looks
    for c in people + [twice]:
        await c.close()
    await w.wait_presence(run_id, lambda p: subs(p) == ["vic"])
    assert hub.log_events(run_id) == log
    watched = hub.http("GET", f"/api/runs/{run_id}").json()["watched"]
    assert sorted(x["sub"] for x in watched) == sorted(["vic"] + [f"p{i}" for i in range(10)])  # each person once
    for x in watched:
        assert x["first_seen"] <= x["last_seen"] and x["first_seen"].endswith("Z")
    assert next(x for x in watched if x["sub"] == "p3")["name"] == "P3"
    await w.close()


async def test_http_api(hub: Cluster) -> None:
    assert hub.http("GET", "/healthz").text == "ok"
    assert hub.http("GET", "/readyz").status_code == 200
    assert hub.http("GET", "/api/runs", "garbage").status_code == 401
    assert (
        hub.http("POST", "/api/runs", VIEWER, json={"agent": "demo", "input": "x"}).json()["error"]["code"]
        == "forbidden"
    )
    bad = hub.http("POST", "/api/runs", OPERATOR, content=b"{oops")
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "bad_frame"
    bad = hub.http("POST", "/api/runs", OPERATOR, json={"agent": 3})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "bad_request"
    run_id, w, ap = await run_to_pause(hub)
    runs = hub.http("GET", "/api/runs").json()["runs"]
    assert runs[0]["run_id"] == run_id and runs[0]["status"] == "paused"  # newest first
    detail = hub.http("GET", f"/api/runs/{run_id}").json()
    assert detail["pending_approvals"][0]["approval_id"] == ap["approval_id"]
    page1 = hub.http("GET", f"/api/runs/{run_id}/events?since=0&limit=5").json()
    assert seqs(page1["events"]) == [1, 2, 3, 4, 5] and page1["more"] and page1["next_since"] == 5
    r = hub.http(
        "POST", f"/api/runs/{run_id}/approvals/{ap['approval_id']}", ALICE, json={"decision": "approve", "reason": "ok"}
    )
    assert r.status_code == 200 and r.json()["outcome"] == "decided"
    r = hub.http("POST", f"/api/runs/{run_id}/approvals/{ap['approval_id']}", BOB, json={"decision": "approve"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "already_decided"
    assert (await w.wait_event(run_id, TERMINAL))["type"] == "run.completed"
    assert hub.http("POST", f"/api/runs/{run_id}/cancel", OPERATOR, json={}).json()["error"]["code"] == "not_pending"
    metrics = hub.http("GET", "/metrics").text
    assert "runcast_connections " in metrics and "runcast_frames_out_total" in metrics
    assert hub.http("GET", "/").status_code == 200
    await w.close()


async def test_a_namespaced_finance_policy_refuses_a_plain_approver(hub: Cluster) -> None:
    """The policy is keyed by the name the wire shows (`files.delete_file`): it applies, and the default never does."""
    run_id, watcher, ap = await run_to_pause(hub, "files-finance")
    assert ap["tool"] == "files.delete_file" and ap["policy"]["roles"] == ["finance"]
    called = [e["data"] for e in watcher.events(run_id, ("tool.called",))]
    assert [(c["call_id"], c["tool"]) for c in called] == [(ap["call_id"], "files.delete_file")]
    alice = await Client.connect(hub.ws_url(), ALICE)  # a plain approver
    err = await alice.request(
        {"type": "decide", "run_id": run_id, "approval_id": ap["approval_id"], "decision": "approve"}
    )
    assert err["type"] == "error" and err["code"] == "forbidden" and "finance" in err["message"]
    fin = await Client.connect(hub.ws_url(), token("fay", ["finance"], name="Fay"))
    ack = await fin.request(
        {"type": "decide", "run_id": run_id, "approval_id": ap["approval_id"], "decision": "approve"}
    )
    assert ack["type"] == "ack" and ack["outcome"] == "decided"
    done = await watcher.wait_event(run_id, "run.completed")
    assert "deleted ledger/2026.csv" in done["data"]["output"]
    assert len(hub.tool_calls(run_id, "files.delete_file")) == 1
    for c in (watcher, alice, fin):
        await c.close()


async def test_bad_http_input_gets_a_4xx_in_the_api_shape_never_a_5xx(hub: Cluster) -> None:
    """Nesting, sizes and odd query values, from any valid token: each has its 4xx, and nothing is logged as a crash."""
    run_id, w, ap = await run_to_pause(hub)
    noroles = token("nobody", [])
    deep = "[" * 30_000 + "]" * 30_000
    deep_agent = '{"agent":' + "[" * 20_000 + "]" * 20_000 + ',"input":"x"}'
    posts = ["/api/runs", f"/api/runs/{run_id}/approvals/{ap['approval_id']}", f"/api/runs/{run_id}/cancel"]
    for path in posts:
        for tok in (OPERATOR, noroles):
            for body in (deep, deep_agent, '{"x":' + "[" * 32 + "]" * 32 + "}"):
                r = hub.http("POST", path, tok, content=body.encode())
                assert r.status_code == 400, (path, r.text)
                assert (
                    r.json()["error"]["code"] == "bad_frame" and "nests deeper than 32" in r.json()["error"]["message"]
                )
            r = hub.http("POST", path, tok, content=json.dumps({"reason": "€" * 22_000}, ensure_ascii=False).encode())
            assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"  # 66,000 bytes, 22,000 characters
            r = hub.http("POST", path, tok, content=b"[1]")
            assert r.status_code == 400 and r.json()["error"]["code"] == "bad_frame"
    r = hub.http("POST", posts[1], ALICE, json={"decision": "maybe"})
    assert r.status_code == 400 and r.json()["error"] == {
        "code": "bad_request",
        "field": "decision",
        "message": r.json()["error"]["message"],
    }
    r = hub.http("POST", posts[2], OPERATOR, json={"mode": ["immediate"]})
    assert r.status_code == 400 and r.json()["error"]["field"] == "mode"
    for query in ("limit=abc", "limit=1e3", "limit=-1", "limit=%F0%9F%98%80", "limit=1" + "0" * 30):
        r = hub.http("GET", f"/api/runs?{query}")
        assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request", (query, r.text)
    for query in ("limit=99999999999999999999", "limit=0", "limit="):  # out of range: clamped to 1..1000
        assert hub.http("GET", f"/api/runs?{query}").status_code == 200, query
    events = f"/api/runs/{run_id}/events"
    for query in ("since=9223372036854775807", "since=-1", "since=abc", "limit=1e3", "since=9007199254740992"):
        r = hub.http("GET", f"{events}?{query}")
        assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request", (query, r.text)
    for query in ("since=9007199254740991", "since=0&limit=99999999999999999999"):
        r = hub.http("GET", f"{events}?{query}")
        assert r.status_code == 200, (query, r.text)
    far = hub.http("GET", f"{events}?since=9007199254740991").json()
    assert far["events"] == [] and not far["more"]
    # nothing above changed the run: it is still paused on the same approval
    assert hub.http("GET", f"/api/runs/{run_id}").json()["pending_approvals"][0]["approval_id"] == ap["approval_id"]
    await hub_cancel(hub, run_id)
    await w.close()
    logs = hub.logs()
    assert "Traceback" not in logs and "RecursionError" not in logs, logs[-3000:]


async def test_watching_needs_a_role_and_a_token_needs_a_sub(hub: Cluster) -> None:
    run_id = hub.start_run()
    fin_run = hub.start_run("demo-finance")
    nobody, finance = token("nobody", []), token("fin", ["finance"])
    c = await Client.connect(hub.ws_url(), nobody)  # a valid token: it may connect, and see nothing
    for rid in (run_id, fin_run):
        err = await c.subscribe(rid)
        assert (
            err["type"] == "error"
            and err["code"] == "not_found"
            and err["message"] == f"no run {rid} that your token may see"
        )
        assert hub.http("GET", f"/api/runs/{rid}", nobody).status_code == 404
        assert hub.http("GET", f"/api/runs/{rid}/events", nobody).status_code == 404
    assert hub.http("GET", "/api/runs", nobody).json()["runs"] == []
    await c.send({"type": "subscribe_runs", "id": "rl"})  # the live run list shows it nothing either
    assert (await c.wait_for(lambda f: f["type"] == "runs" and f.get("id") == "rl"))["runs"] == []
    assert c.events(run_id) == [] and c.events(fin_run) == []
    # a role that only a policy names: its agent's runs, not the others
    f = await Client.connect(hub.ws_url(), finance)
    assert (await f.subscribe(fin_run))["type"] == "sync"
    assert (await f.subscribe(run_id))["code"] == "not_found"
    listed = [r["run_id"] for r in hub.http("GET", "/api/runs", finance).json()["runs"]]
    assert fin_run in listed and run_id not in listed
    for x in (c, f):
        await x.close()
    # an empty (or blank) sub is no identity: refused over WebSocket (4401) and HTTP (401)
    for sub in ("", "  "):
        anon = token(sub, ["admin"])
        e = await Client.connect(hub.ws_url())
        err = await e.request({"type": "hello", "token": anon})
        assert err["type"] == "error" and err["code"] == "unauthenticated" and "sub is empty" in err["message"]
        assert (await e.wait_closed())[0] == 4401
        r = hub.http("GET", "/api/me", anon)
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthenticated"
    # /metrics needs the metrics (or admin) role
    assert hub.http("GET", "/metrics", "garbage").status_code == 401
    assert httpx.get(hub.url + "/metrics").status_code == 401
    assert hub.http("GET", "/metrics", VIEWER).status_code == 403
    assert "runcast_connections" in hub.http("GET", "/metrics", token("prom", ["metrics"])).text
    await hub_cancel(hub, run_id)
    await hub_cancel(hub, fin_run)


async def test_subscribe_with_another_epoch_is_log_reset(hub: Cluster) -> None:
    run_id = hub.start_run("broken")
    c = await Client.connect(hub.ws_url(), VIEWER)
    sync = await c.subscribe(run_id)
    await c.wait_event(run_id, TERMINAL)
    epoch = hub.http("GET", f"/api/runs/{run_id}").json()["epoch"]
    assert epoch and sync["epoch"] == epoch
    head = hub.log_events(run_id)[-1]["seq"]
    n = len(c.frames)
    again = await c.subscribe_frame({"type": "subscribe", "run_id": run_id, "since": head, "epoch": epoch})
    assert again["type"] == "sync" and again["epoch"] == epoch and not [f for f in c.frames[n:] if "seq" in f]
    for frame in ({"since": 1, "epoch": "0123456789abcdef"}, {"since": head + 5, "epoch": epoch}):
        err = await c.subscribe_frame({"type": "subscribe", "run_id": run_id, **frame})
        assert err["type"] == "error" and err["code"] == "log_reset" and err["run_id"] == run_id
        assert err["epoch"] == epoch  # the log the hub has: start afresh from it
    gone = await c.subscribe_frame({"type": "subscribe", "run_id": "run_nosuchrun", "since": 3, "epoch": epoch})
    assert gone["code"] == "log_reset" and "epoch" not in gone
    assert (await c.subscribe_frame({"type": "subscribe", "run_id": "run_nosuchrun"}))["code"] == "not_found"
    await c.close()


async def test_hosted_mcp_output_and_guardrail_failures_reach_every_watcher(hub: Cluster) -> None:
    run_id = hub.start_run("hosted-mcp")
    watchers = [await Client.connect(hub.ws_url(), VIEWER) for _ in range(2)]
    for w in watchers:
        await w.subscribe(run_id)
    for w in watchers:
        await w.wait_event(run_id, "run.completed")
        out = w.events(run_id, ("tool.output",))
        assert [o["data"] for o in out] == [
            {"call_id": "mcp_1", "output": '{"id": 42, "name": "Ann"}', "server": "crm", "tool": "find_contact"}
        ]
        assert w.events(run_id, ("tool.called",))[0]["data"]["tool"] == "crm.find_contact"
    guarded = hub.start_run("guarded", text="my password is hunter2")
    for w in watchers:
        await w.subscribe(guarded)
    for w in watchers:
        failed = await w.wait_event(guarded, "run.failed")
        assert failed["data"]["guardrail"] == {
            "name": "no_secrets",
            "side": "input",
            "output_info": {"found": ["password"]},
        }
    for w in watchers:
        await w.close()


async def test_one_answer_for_no_such_run_and_not_yours(hub: Cluster) -> None:
    """Every run endpoint and WebSocket command answers a run the token may not see (by its run list, or for lack of a
    role) exactly as it answers a run that does not exist: nobody learns which run ids exist."""
    run_id = hub.start_run()
    ap = hub.wait_status(run_id, "paused")["pending_approvals"][0]["approval_id"]
    missing = "run_000000000000"
    nobody, other = token("nobody", []), token("kim", ["viewer", "approver", "operator"], runs=["run_other"])

    def http_answers(tok: str, rid: str) -> list[tuple[int, str]]:
        out = []
        for method, path, body in (
            ("GET", f"/api/runs/{rid}", None),
            ("GET", f"/api/runs/{rid}/events", None),
            ("GET", f"/api/runs/{rid}/audit", None),
            ("GET", f"/api/runs/{rid}/audit?format=csv", None),
            ("POST", f"/api/runs/{rid}/cancel", {}),
            ("POST", f"/api/runs/{rid}/approvals/{ap}", {"decision": "approve"}),
        ):
            r = hub.http(method, path, tok, json=body) if body is not None else hub.http(method, path, tok)
            out.append((r.status_code, r.text.replace(rid, "ID")))
        return out

    for tok in (nobody, other):
        hidden, absent = http_answers(tok, run_id), http_answers(tok, missing)
        assert hidden == absent and {s for s, _ in hidden} == {404}, (hidden, absent)
        c = await Client.connect(hub.ws_url(), tok)
        for cmd in (
            {"type": "subscribe"},
            {"type": "decide", "approval_id": ap, "decision": "approve"},
            {"type": "cancel"},
            {"type": "unsubscribe"},
        ):
            a = await c.request({**cmd, "run_id": run_id})
            b = await c.request({**cmd, "run_id": missing})
            strip = lambda f, rid: {
                k: (v.replace(rid, "ID") if isinstance(v, str) else v) for k, v in f.items() if k != "id"
            }  # noqa: E731
            assert strip(a, run_id) == strip(b, missing), (cmd, a, b)
        await c.close()
    assert hub.wait_status(run_id, "paused")["status"] == "paused"  # nothing was decided or cancelled


def test_the_agents_and_their_policies_only_for_those_who_start_or_decide(hub: Cluster) -> None:
    for tok, status in (
        (token("nobody", []), 403),
        (VIEWER, 403),
        (token("fin", ["finance"]), 200),
        (ALICE, 200),
        (OPERATOR, 200),
        (ADMIN, 200),
    ):
        r = hub.http("GET", "/api/agents", tok)
        assert r.status_code == status, (tok, r.text)
        assert ("agents" in r.json()) == (status == 200)


async def test_pipelined_commands_are_all_answered_and_a_ping_does_not_wait_behind_them(hub: Cluster) -> None:
    """Frames are taken off the socket as they come and queued per connection: a ping sent behind many commands is
    answered before them (and so are the WebSocket's own pongs), every command gets its answer, in order, and every
    start its run_id."""
    from rawws import RawWS, text

    port = int(hub.ws_url().split(":")[2].split("/")[0])
    raw = await RawWS.connect(port)
    assert raw.status == 101
    await raw.send(text({"type": "hello", "token": OPERATOR}))
    assert (await raw.recv_json())["type"] == "welcome"
    frames = [{"type": "subscribe", "id": f"s{i}", "run_id": f"run_nope{i}"} for i in range(30)]
    frames[10:10] = [{"type": "start", "id": f"go{i}", "agent": "demo", "input": "pipelined"} for i in range(4)]
    frames.insert(20, {"type": "ping", "id": "p"})
    await raw.send(b"".join(text(f) for f in frames))  # one write: the hub has them all at once
    answers: list[dict[str, Any]] = []
    while len(answers) < len(frames):
        answers.append(await asyncio.wait_for(raw.recv_json(), 60))
    assert answers[0] == {"type": "pong", "id": "p"}  # not behind the 20 commands before it
    commands = [f["id"] for f in frames if f["type"] != "ping"]
    assert [a.get("id") for a in answers[1:]] == commands  # the others in order, each once
    started = [a for a in answers if str(a.get("id", "")).startswith("go")]
    assert [a["type"] for a in started] == ["ack"] * 4 and all(a["run_id"].startswith("run_") for a in started)
    assert all(
        a["type"] == "error" and a["code"] == "not_found" for a in answers if str(a.get("id", "")).startswith("s")
    )
    for a in started:
        assert hub.http("POST", f"/api/runs/{a['run_id']}/cancel", OPERATOR, json={}).status_code == 200
    raw.writer.close()
