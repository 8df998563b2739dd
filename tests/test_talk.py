"""The team talks to the agent (issue 20): a run goes on as a shared conversation, on every backend.

Real runcast processes, real WebSocket clients, the offline demo model (its follow-up answers name who said what).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from hubtest import ALICE, OPERATOR, VIEWER, Client, Cluster, Process, on_redis, seqs, token, without_presence

OTTO = token("otto", ["operator"], name="Otto")


def kinds(events: list[dict]) -> list[str]:
    return [e["type"] for e in without_presence(events) if not e["type"].endswith(".delta")]


async def say(c: Client, run_id: str, text: str) -> dict:
    return await c.request({"type": "say", "run_id": run_id, "text": text})


async def approve_next(hub: Cluster, w: Client, run_id: str, after: int = 0) -> dict:
    req = await w.wait_for(
        lambda f: f.get("type") == "approval.requested" and f.get("run_id") == run_id and f["seq"] > after
    )
    a = await Client.connect(hub.ws_url(), ALICE)
    ack = await a.request(
        {"type": "decide", "run_id": run_id, "approval_id": req["data"]["approval_id"], "decision": "approve"}
    )
    assert ack["type"] == "ack", ack
    await a.close()
    return req


async def wait_turn_done(w: Client, run_id: str, turn: int) -> dict:
    return await w.wait_for(
        lambda f: f.get("type") == "run.completed" and f.get("run_id") == run_id and f["data"].get("turn") == turn,
        timeout=30,
    )


async def test_three_turn_conversation_with_two_speakers(hub: Cluster) -> None:
    run_id = hub.start_run()  # Ada (operator) starts it
    ada = await Client.connect(hub.ws_url(), OPERATOR)
    otto = await Client.connect(hub.ws_url(), OTTO)
    for c in (ada, otto):
        await c.subscribe(run_id)
    await approve_next(hub, ada, run_id)
    await wait_turn_done(ada, run_id, 1)
    ack = await say(ada, run_id, "Thanks! Is anything else big?")
    assert ack["type"] == "ack" and ack["queued"] is False and ack["message_id"].startswith("msg_")
    said = await otto.wait_event(run_id, "message.said")
    assert (
        said["data"]["by"] == {"sub": "ada", "name": "Ada"} and said["data"]["text"] == "Thanks! Is anything else big?"
    )
    two = await wait_turn_done(otto, run_id, 2)
    assert two["data"]["output"] == 'Ada, you said: "Thanks! Is anything else big?". So far I have heard from: Ada.'
    assert (await say(otto, run_id, "Keep the logs next time."))["queued"] is False
    three = await wait_turn_done(ada, run_id, 3)
    assert three["data"]["output"] == 'Otto, you said: "Keep the logs next time.". So far I have heard from: Ada, Otto.'
    log = hub.log_events(run_id)
    assert seqs(log) == list(range(1, len(log) + 1))
    k = kinds(log)
    assert k.count("run.started") == 1 and k.count("run.completed") == 3
    turns = [
        (e["type"], e["data"].get("turn")) for e in log if e["type"] in ("message.said", "run.resumed", "run.completed")
    ]
    assert turns == [
        ("run.resumed", None),
        ("run.completed", 1),
        ("message.said", None),
        ("run.resumed", 2),
        ("run.completed", 2),
        ("message.said", None),
        ("run.resumed", 3),
        ("run.completed", 3),
    ]
    # each turn starts with the agent that ended the last one: announced once, not once per turn
    assert [e["data"]["agent"] for e in log if e["type"] == "agent.updated"] == [three["data"]["agent"]]
    # a late joiner gets the whole conversation from the log, in order
    late = await Client.connect(hub.ws_url(), VIEWER)
    sync = await late.subscribe(run_id)
    assert sync["status"] == "completed" and [f for f in late.frames if "seq" in f] == log
    assert len(hub.tool_calls(run_id, "delete_files")) == 1  # the approved tool ran once, not once per turn
    for c in (ada, otto, late):
        await c.close()


async def test_message_queued_while_paused_is_answered_after_the_approval(hub: Cluster) -> None:
    run_id = hub.start_run()
    ada = await Client.connect(hub.ws_url(), OPERATOR)
    await ada.subscribe(run_id)
    await ada.wait_event(run_id, "run.paused")
    ack = await say(ada, run_id, "Please keep old-logs.zip")
    assert ack["queued"] is True
    said = await ada.wait_event(run_id, "message.said")
    assert said["data"]["queued"] is True
    assert hub.http("GET", f"/api/runs/{run_id}").json()["queue"][0]["text"] == "Please keep old-logs.zip"
    await approve_next(hub, ada, run_id)
    one = await wait_turn_done(ada, run_id, 1)
    assert one["data"]["output"].startswith("Done. I deleted 3 files")
    two = await wait_turn_done(ada, run_id, 2)
    assert two["data"]["output"].startswith('Ada, you said: "Please keep old-logs.zip".')
    detail = hub.wait_status(run_id, "completed")
    assert detail["queue"] == [] and detail["turn"] == 2
    k = kinds(hub.log_events(run_id))
    assert (
        k.index("message.said")
        < k.index("approval.decided")
        < k.index("run.completed")
        < k.index("run.resumed", k.index("run.completed"))
    )
    await ada.close()


async def test_withdraw_a_queued_message(hub: Cluster) -> None:
    run_id = hub.start_run()
    ada = await Client.connect(hub.ws_url(), OPERATOR)
    await ada.subscribe(run_id)
    await ada.wait_event(run_id, "run.paused")
    mid = (await say(ada, run_id, "never mind"))["message_id"]
    otto = await Client.connect(hub.ws_url(), OTTO)
    err = await otto.request({"type": "withdraw", "run_id": run_id, "message_id": mid})
    assert err["type"] == "error" and err["code"] == "forbidden"
    r = hub.http("DELETE", f"/api/runs/{run_id}/messages/{mid}", OPERATOR)
    assert r.status_code == 200 and r.json()["message_id"] == mid
    gone = await ada.wait_event(run_id, "message.withdrawn")
    assert gone["data"] == {"message_id": mid, "by": {"sub": "ada", "name": "Ada"}}
    await approve_next(hub, ada, run_id)
    await wait_turn_done(ada, run_id, 1)
    assert hub.wait_status(run_id, "completed")["turn"] == 1  # nothing left to answer
    for c in (ada, otto):
        await c.close()


async def test_interrupt_ends_the_turn_at_the_next_safe_point(hub: Cluster) -> None:
    run_id = hub.start_run("talk-interrupt")
    ada = await Client.connect(hub.ws_url(), OPERATOR)
    await ada.subscribe(run_id)
    await ada.wait_event(run_id, "message.delta")
    ack = await say(ada, run_id, "Stop, only list them.")
    assert ack["queued"] is True
    end = await ada.wait_event(run_id, "turn.interrupted", timeout=30)
    assert end["data"]["by"] == {"sub": "ada", "name": "Ada"}
    two = await wait_turn_done(ada, run_id, 2)
    assert two["data"]["output"].startswith('Ada, you said: "Stop, only list them.".')
    k = kinds(hub.log_events(run_id))
    # the first model call finished (its listing ran), its second never came: no delete was asked for
    assert k.index("tool.output") < k.index("turn.interrupted") < k.index("run.resumed")
    assert "approval.requested" not in k
    assert len(hub.tool_calls(run_id, "list_files")) == 1 and hub.tool_calls(run_id, "delete_files") == []
    await ada.close()


async def test_reject_policy_refuses_a_busy_run(hub: Cluster) -> None:
    run_id = hub.start_run("talk-reject")
    ada = await Client.connect(hub.ws_url(), OPERATOR)
    await ada.subscribe(run_id)
    await ada.wait_event(run_id, "run.paused")
    head = hub.log_events(run_id)[-1]["seq"]
    err = await say(ada, run_id, "hello?")
    assert err["type"] == "error" and err["code"] == "busy"
    r = hub.http("POST", f"/api/runs/{run_id}/messages", OPERATOR, json={"text": "hello?"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "busy"
    assert [e for e in hub.log_events(run_id) if e["seq"] > head] == []
    await approve_next(hub, ada, run_id)
    await wait_turn_done(ada, run_id, 1)
    assert (await say(ada, run_id, "and now?"))["type"] == "ack"  # once the turn completed, it listens again
    await wait_turn_done(ada, run_id, 2)
    await ada.close()


async def test_two_simultaneous_senders_on_two_nodes(hub: Cluster) -> None:
    run_id = hub.start_run("quick")
    a = await Client.connect(hub.ws_url(0), OPERATOR)
    b = await Client.connect(hub.ws_url(1), OTTO)
    for c in (a, b):
        await c.subscribe(run_id)
    await wait_turn_done(a, run_id, 1)
    acks = await asyncio.gather(say(a, run_id, "from Ada"), say(b, run_id, "from Otto"))
    assert all(x["type"] == "ack" for x in acks)
    # one starts the next turn; the other waits for it, or, when that turn has already completed (the quick agent
    # answers within milliseconds, and its first delta waits for no window), starts the turn after it
    assert sorted(x["queued"] for x in acks) in ([False, True], [False, False])
    await wait_turn_done(a, run_id, 3)
    await wait_turn_done(b, run_id, 3)
    log = hub.log_events(run_id)
    said = [e["data"]["text"] for e in log if e["type"] == "message.said"]
    assert sorted(said) == ["from Ada", "from Otto"]
    # one turn at a time: every resumed turn completes before the next one starts
    flow = [(e["type"], e["data"].get("turn")) for e in log if e["type"] in ("run.resumed", "run.completed")]
    assert flow == [
        ("run.completed", 1),
        ("run.resumed", 2),
        ("run.completed", 2),
        ("run.resumed", 3),
        ("run.completed", 3),
    ]
    first, second = said
    outs = [e["data"]["output"] for e in log if e["type"] == "run.completed"]
    assert first in outs[1] and second in outs[2]
    for c in (a, b):  # everyone saw the same order
        assert [f for f in c.frames if "seq" in f and f["seq"] <= log[-1]["seq"]] == log
        await c.close()


async def test_bad_messages_get_stable_codes_and_change_nothing(hub: Cluster) -> None:
    run_id = hub.start_run("talk-strict")
    ada = await Client.connect(hub.ws_url(), OPERATOR)
    await ada.subscribe(run_id)
    await wait_turn_done(ada, run_id, 1)
    head = hub.log_events(run_id)[-1]["seq"]
    viewer = await Client.connect(hub.ws_url(), VIEWER)
    cases = [(viewer, "hi", "forbidden"), (ada, "   ", "bad_request"), (ada, "x" * 101, "too_large")]
    for c, text, code in cases:
        err = await say(c, run_id, text)
        assert err["type"] == "error" and err["code"] == code, (text, err)
    r = hub.http("POST", f"/api/runs/{run_id}/messages", VIEWER, json={"text": "hi"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    r = hub.http("POST", f"/api/runs/{run_id}/messages", OPERATOR, json={"text": 5})
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request"
    # a run the token may not see: the same answer as for no run at all
    elsewhere = await Client.connect(hub.ws_url(), token("ada", ["operator"], runs=["run_other"], name="Ada"))
    err = await say(elsewhere, run_id, "hi")
    assert err["type"] == "error" and err["code"] == "not_found", err
    await elsewhere.close()
    assert [e for e in hub.log_events(run_id) if e["seq"] > head] == []
    # a flood: three a minute, counted on every node
    for i in range(3):
        r = hub.http("POST", f"/api/runs/{run_id}/messages", OPERATOR, json={"text": f"m{i}"})
        assert r.status_code == 201, r.text
    r = hub.http("POST", f"/api/runs/{run_id}/messages", OPERATOR, json={"text": "m3"})
    assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limited" and int(r.headers["Retry-After"]) >= 1
    assert [e["data"]["text"] for e in hub.log_events(run_id) if e["type"] == "message.said"] == ["m0", "m1", "m2"]
    # a cancelled run's conversation is over
    other = hub.start_run("talk-interrupt")
    assert hub.http("POST", f"/api/runs/{other}/cancel", OPERATOR, json={}).status_code == 200
    hub.wait_status(other, "cancelled")
    err = await say(ada, other, "still there?")
    assert err["type"] == "error" and err["code"] == "not_pending"
    for c in (ada, viewer):
        await c.close()


async def test_a_worker_killed_between_turns_the_next_worker_continues_the_conversation(tmp_path: Path) -> None:
    with on_redis(tmp_path, nodes=1, workers=1) as hub:
        run_id = hub.start_run()
        ada = await Client.connect(hub.ws_url(), OPERATOR)
        await ada.subscribe(run_id)
        await approve_next(hub, ada, run_id)
        await wait_turn_done(ada, run_id, 1)
        await say(ada, run_id, "first question")
        await wait_turn_done(ada, run_id, 2)
        hub.workers[0].kill()
        fresh = Process(hub.workers[0].args, hub.env, tmp_path / "worker-new.log")
        hub.workers.append(fresh.start(wait=False))
        await say(await Client.connect(hub.ws_url(), OTTO), run_id, "second question")
        three = await wait_turn_done(ada, run_id, 3)
        # the new worker read the conversation the dead one kept in Redis: it knows Ada spoke before
        assert three["data"]["output"] == 'Otto, you said: "second question". So far I have heard from: Ada, Otto.'
        assert len(hub.tool_calls(run_id, "delete_files")) == 1
        await ada.close()


async def test_approve_with_changes_runs_the_tool_with_the_edited_arguments(hub: Cluster) -> None:
    run_id = hub.start_run()
    w = await Client.connect(hub.ws_url(), VIEWER)
    await w.subscribe(run_id)
    req = await w.wait_event(run_id, "approval.requested")
    ap = req["data"]["approval_id"]
    head = hub.log_events(run_id)[-1]["seq"]
    a = await Client.connect(hub.ws_url(), ALICE)
    frame = {"type": "decide", "run_id": run_id, "approval_id": ap, "decision": "approve"}
    for bad in ('{"paths": "scratch/old-logs.zip"}', '{"paths": []', '{"paths": [], "force": true}'):
        err = await a.request(frame | {"arguments": bad})
        assert err["type"] == "error" and err["code"] == "invalid_arguments", err
    err = await w.request(frame | {"arguments": '{"paths": []}'})  # a viewer may not decide, edited or not
    assert err["code"] == "forbidden"
    r = hub.http("POST", f"/api/runs/{run_id}/approvals/{ap}", ALICE, json={"decision": "approve", "arguments": "{}"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "invalid_arguments"
    assert [e for e in hub.log_events(run_id) if e["seq"] > head] == []  # nothing of the run changed
    ack = await a.request(frame | {"arguments": '{"paths": ["scratch/tmp-export.csv"]}'})
    assert ack["type"] == "ack" and ack["outcome"] == "decided"
    decided = await w.wait_event(run_id, "approval.decided")
    assert decided["data"]["arguments"] == '{"paths":["scratch/tmp-export.csv"]}'
    assert decided["data"]["original_arguments"] == req["data"]["arguments"]
    assert decided["data"]["changes"] == [
        {
            "key": "paths",
            "from": ["scratch/build-cache.tar", "scratch/old-logs.zip", "scratch/tmp-export.csv"],
            "to": ["scratch/tmp-export.csv"],
        }
    ]
    done = await w.wait_event(run_id, "run.completed", timeout=30)
    assert [c["args"] for c in hub.tool_calls(run_id, "delete_files")] == [{"paths": ["scratch/tmp-export.csv"]}]
    # the model's next turn saw the edited call and its output
    assert done["data"]["output"].startswith("Done. I deleted 1 files: scratch/tmp-export.csv.")
    audit = hub.http("GET", f"/api/runs/{run_id}/audit").json()["approvals"][0]
    assert audit["arguments_parsed"] == {"paths": ["scratch/tmp-export.csv"]}
    assert (
        audit["original_arguments"] == req["data"]["arguments"]
        and audit["arguments_changes"] == decided["data"]["changes"]
    )
    assert audit["tool_execution"]["ran"] is True
    for c in (w, a):
        await c.close()
