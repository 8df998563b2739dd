"""Comments over real sockets, on both backends (one memory process; several hub nodes on one Redis and on a Redis
Cluster): a thread on an approval, replies, edit and delete with their trace, resolve and reopen, the audit
record, mentions reaching the mentioned person's inbox on another node, and bad input refused with nothing logged."""

from __future__ import annotations

import asyncio
from typing import Any

from hubtest import ALICE, BOB, OPERATOR, TERMINAL, VIEWER, Client, Cluster, token
from test_inbox import ask, wait_added

TALK = ("comment.added", "comment.edited", "comment.deleted", "comment.mention", "thread.resolved", "thread.reopened")


def talk(c: Client, run_id: str) -> list[tuple[str, dict[str, Any]]]:
    return [(e["type"], e["data"]) for e in c.events(run_id, TALK)]


async def test_a_thread_on_an_approval_reaches_every_watcher_and_stays_in_the_history(hub: Cluster) -> None:
    run_id = hub.start_run("demo", "free some disk space")
    bob = await Client.connect(hub.ws_url(0), BOB)
    vic = await Client.connect(hub.ws_url(), VIEWER)
    await bob.subscribe(run_id)
    await vic.subscribe(run_id)
    req = await bob.wait_event(run_id, "approval.requested")
    ap = req["data"]["approval_id"]
    # a viewer (who may not decide) comments on the approval; a person who may decide answers on another node
    ack = await vic.request(
        {"type": "comment", "run_id": run_id, "approval_id": ap, "text": "wait, is build-cache.tar still used?"}
    )
    assert ack["type"] == "ack" and ack["thread_id"] == ap, ack
    first = ack["comment_id"]
    ack2 = await bob.request({"type": "comment", "run_id": run_id, "reply_to": first, "text": "no, it can go"})
    assert ack2["thread_id"] == ap
    r = hub.http("POST", f"/api/runs/{run_id}/comments", OPERATOR, json={"text": "run-level note"})
    assert r.status_code == 201, r.text
    note = r.json()["comment_id"]
    # edit, delete, resolve, reopen
    assert (
        await vic.request(
            {
                "type": "edit_comment",
                "run_id": run_id,
                "comment_id": first,
                "text": "is build-cache.tar still used by CI?",
            }
        )
    )["type"] == "ack"
    refused = await bob.request({"type": "edit_comment", "run_id": run_id, "comment_id": first, "text": "mine now"})
    assert refused["code"] == "forbidden"
    r = hub.http("DELETE", f"/api/runs/{run_id}/comments/{note}", OPERATOR)
    assert r.status_code == 200, r.text
    assert (await bob.request({"type": "resolve_thread", "run_id": run_id, "thread_id": ap}))["changed"] is True
    r = hub.http("POST", f"/api/runs/{run_id}/threads/{ap}", VIEWER, json={"resolved": False})
    assert r.json()["changed"] is True, r.text
    await bob.request({"type": "decide", "run_id": run_id, "approval_id": ap, "decision": "approve"})
    await vic.wait_event(run_id, TERMINAL)
    await bob.wait_event(run_id, TERMINAL)
    want = [
        ("comment.added", ("vic", ap, "wait, is build-cache.tar still used?")),
        ("comment.added", ("bob", ap, "no, it can go")),
        ("comment.added", ("ada", None, "run-level note")),
        ("comment.edited", ("vic", ap, "is build-cache.tar still used by CI?")),
        ("comment.deleted", ("ada", None, None)),
        ("thread.resolved", ("bob", ap, None)),
        ("thread.reopened", ("vic", ap, None)),
    ]
    for c in (bob, vic):
        got = [(t, (d["by"]["sub"], d["approval_id"], d.get("text"))) for t, d in talk(c, run_id)]
        assert got == want
    # a newcomer replays the whole discussion from the log, after the decision
    late = await Client.connect(hub.ws_url(), ALICE)
    await late.subscribe(run_id, since=0)
    await late.wait_event(run_id, TERMINAL)
    assert talk(late, run_id) == talk(bob, run_id)
    # the agent never saw a comment: the tool calls and the model's input are the run's own
    # (the demo model's reply and tool calls would carry any text it was given; "no, it can go" is a comment's)
    agent_side = [e for e in bob.events(run_id) if not e["type"].startswith(("comment.", "thread."))]
    assert hub.tool_calls(run_id) and all("it can go" not in str(c) for c in hub.tool_calls(run_id))
    assert all("it can go" not in str(e) for e in agent_side)
    # the audit record carries the discussion, with its authors and its trace
    doc = hub.http("GET", f"/api/runs/{run_id}/audit", VIEWER).json()
    assert [(c["type"], c["by"]["sub"]) for c in doc["comments"]] == [(t, by) for t, (by, _, _) in want]
    aud = next(a for a in doc["approvals"] if a["approval_id"] == ap)
    assert [c["text"] for c in aud["comments"] if c["type"] == "comment.added"] == [
        "wait, is build-cache.tar still used?",
        "no, it can go",
    ]
    csv = hub.http("GET", f"/api/runs/{run_id}/audit?format=csv", VIEWER).text
    assert "is build-cache.tar still used by CI?" in csv
    for c in (bob, vic, late):
        await c.close()


async def test_a_mention_reaches_the_mentioned_persons_inbox_on_another_node(hub: Cluster) -> None:
    maria_tok = token("maria", ["approver"], name="Maria Lopez")
    run_id = hub.start_run("demo", "free some disk space")
    # Maria watches the run once (so she may be mentioned), then only her inbox is open, on the last node
    m0 = await Client.connect(hub.ws_url(0), maria_tok)
    await m0.subscribe(run_id)
    for _ in range(200):  # (written at the node's next presence tick)
        if any(w["sub"] == "maria" for w in hub.http("GET", f"/api/runs/{run_id}").json()["watched"]):
            break
        await asyncio.sleep(0.05)
    await m0.close()
    maria = await Client.connect(hub.ws_url(len(hub.nodes) - 1), maria_tok)
    snap = await ask(maria, {"type": "subscribe_inbox"}, "inbox")
    assert snap["type"] == "inbox"
    ap = (await wait_added(maria, run_id))["approval_id"]
    vic = await Client.connect(hub.ws_url(0), VIEWER)
    people = await vic.request({"type": "people", "run_id": run_id})
    assert {"sub": "maria", "name": "Maria Lopez", "handle": "MariaLopez"} in people["people"]
    ack = await vic.request(
        {"type": "comment", "run_id": run_id, "approval_id": ap, "text": "@MariaLopez this one is yours"}
    )
    assert ack["type"] == "ack", ack
    m = await maria.wait_for(lambda f: f["type"] == "inbox.mention")
    assert m["mention"]["run_id"] == run_id and m["mention"]["approval_id"] == ap
    assert (
        m["mention"]["by"] == {"sub": "vic", "name": "Vic"}
        and m["mention"]["excerpt"] == "@MariaLopez this one is yours"
    )
    # a reconnect gets it in its snapshot
    again = await Client.connect(hub.ws_url(0), maria_tok)
    snap = await ask(again, {"type": "subscribe_inbox"}, "inbox")
    assert [x["comment_id"] for x in snap.get("mentions", []) if x["run_id"] == run_id] == [ack["comment_id"]]
    # nobody else was told
    alice = await Client.connect(hub.ws_url(), ALICE)
    asnap = await ask(alice, {"type": "subscribe_inbox"}, "inbox")
    assert [x for x in asnap.get("mentions", []) if x["run_id"] == run_id] == []
    await asyncio.sleep(0.3)
    assert [f for f in alice.frames if f["type"] == "inbox.mention"] == []
    hub.http("POST", f"/api/runs/{run_id}/cancel", OPERATOR, json={})
    for c in (maria, vic, again, alice):
        await c.close()


async def test_bad_comments_get_stable_codes_and_log_nothing(hub: Cluster) -> None:
    run_id = hub.start_run("demo")
    vic = await Client.connect(hub.ws_url(), VIEWER)
    await vic.subscribe(run_id)
    await vic.wait_event(run_id, "approval.requested")
    outsider = token("eve", ["viewer"], runs=["run_other"], name="Eve")
    eve = await Client.connect(hub.ws_url(), outsider)
    cases = [
        (vic, {"approval_id": "ap_nope", "text": "hi"}, "not_found"),
        (vic, {"text": "hi @nobody"}, "bad_request"),
        (vic, {"text": "x" * 4001}, "too_large"),
        (vic, {"text": ""}, "bad_request"),
        (vic, {"reply_to": "c_nope", "text": "hi"}, "not_found"),
        (eve, {"text": "let me in"}, "not_found"),  # (a run the token may not see is not named to it)
    ]
    for c, frame, code in cases:
        err = await c.request({"type": "comment", "run_id": run_id, **frame})
        assert err["type"] == "error" and err["code"] == code, (frame, err)
    r = hub.http("POST", f"/api/runs/{run_id}/comments", VIEWER, json={"text": "@nobody"})
    assert r.status_code == 400 and r.json()["error"]["unknown_mentions"] == ["@nobody"]
    r = hub.http("POST", f"/api/runs/{run_id}/comments", VIEWER, json={"text": "y" * 4001})
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"
    # a flood: ten a minute, then rate_limited with a Retry-After
    flooder = token("flo", ["viewer"], name="Flo")
    for i in range(10):
        assert hub.http("POST", f"/api/runs/{run_id}/comments", flooder, json={"text": f"#{i}"}).status_code == 201
    r = hub.http("POST", f"/api/runs/{run_id}/comments", flooder, json={"text": "one more"})
    assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limited" and int(r.headers["Retry-After"]) > 0
    logged = [e for e in hub.log_events(run_id) if e["type"].startswith("comment.")]
    assert [e["data"]["text"] for e in logged] == [f"#{i}" for i in range(10)]
    hub.http("POST", f"/api/runs/{run_id}/cancel", OPERATOR, json={})
    for c in (vic, eve):
        await c.close()


async def test_requested_reviewers_are_marked_in_their_inbox_and_others_still_decide(hub: Cluster) -> None:
    r = hub.http("POST", "/api/runs", OPERATOR, json={"agent": "demo", "input": "tidy", "reviewers": ["alice"]})
    assert r.status_code == 201, r.text
    run_id = r.json()["run_id"]
    alice = await Client.connect(hub.ws_url(0), ALICE)
    bob = await Client.connect(hub.ws_url(len(hub.nodes) - 1), BOB)
    for c in (alice, bob):
        await ask(c, {"type": "subscribe_inbox"}, "inbox")
    a_item, b_item = await wait_added(alice, run_id), await wait_added(bob, run_id)
    assert a_item["review_requested"] is True and "review_requested" not in b_item
    assert a_item["reviewers"] == ["alice"]
    http_items = hub.http("GET", "/api/approvals?open=1", ALICE).json()["approvals"]
    assert [i.get("review_requested") for i in http_items if i["run_id"] == run_id] == [True]
    kinds = [e["type"] for e in hub.log_events(run_id)]
    assert kinds.index("approval.review_requested") == kinds.index("approval.requested") + 1
    bad = hub.http(
        "POST", "/api/runs", OPERATOR, json={"agent": "demo", "input": "x", "reviewers": [f"p{i}" for i in range(11)]}
    )
    assert bad.status_code == 400 and bad.json()["error"]["field"].startswith("reviewers")
    # Bob, not asked, still decides
    ack = await bob.request(
        {"type": "decide", "run_id": run_id, "approval_id": b_item["approval_id"], "decision": "approve"}
    )
    assert ack["type"] == "ack" and ack["outcome"] == "decided"
    for c in (alice, bob):
        await c.close()
