"""Who is typing (issue 20): a `typing` command marks the connection's presence entry, never the log; the mark reaches
every watcher on every node, and clears on `typing: false`, after its ttl, when the person says something, and when
they leave. On the one-process memory backend and on two hub nodes sharing one Redis (the typist on one node, the
watcher on the other).

Real runcast processes and WebSocket clients; the typing ttl is short here (RUNCAST_TYPING_TTL_S)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hubtest import OPERATOR, VIEWER, Client, Cluster, on_redis, token

OTTO = token("otto", ["operator"], name="Otto")
ENV = {"RUNCAST_TYPING_TTL_S": "1.0"}


@pytest.fixture(scope="module", params=["memory", "redis"])
def hub(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp: Path = tmp_path_factory.mktemp(f"typing-{request.param}")
    if request.param == "memory":
        cluster = Cluster(tmp, "memory", env=ENV).start()
        yield cluster
        cluster.stop()
        return
    with on_redis(tmp, nodes=2, workers=1, env=ENV) as cluster:
        yield cluster


def typists(presence: dict[str, dict[str, Any]]) -> list[str]:
    return sorted(e["sub"] for e in presence.values() if e.get("typing") is True)


async def typing(c: Client, run_id: str, on: Any) -> dict[str, Any]:
    return await c.request({"type": "typing", "run_id": run_id, "typing": on})


async def test_a_watcher_on_the_other_node_sees_who_types_until_it_clears(hub: Cluster) -> None:
    run_id = hub.start_run("quick")  # Ada (operator) starts it
    ada = await Client.connect(hub.ws_url(0), OPERATOR)
    otto = await Client.connect(hub.ws_url(1), OTTO)  # on the other node, when there are two
    for c in (ada, otto):
        await c.subscribe(run_id)
    await otto.wait_for(lambda f: f.get("type") == "run.completed" and f.get("run_id") == run_id)
    await otto.wait_presence(run_id, lambda p: sorted(e["sub"] for e in p.values()) == ["ada", "otto"])
    head = hub.log_events(run_id)[-1]["seq"]

    ack = await typing(ada, run_id, True)
    assert ack["type"] == "ack" and ack["run_id"] == run_id and ack["typing"] is True, ack
    seen = await otto.wait_presence(run_id, lambda p: typists(p) == ["ada"])
    (entry,) = [x for x in seen.values() if x["sub"] == "ada"]
    assert entry["name"] == "Ada" and entry["roles"] == ["operator"]
    await ada.wait_presence(run_id, lambda p: typists(p) == ["ada"])  # the typist's own page sees it too

    assert (await typing(ada, run_id, False))["type"] == "ack"  # the box emptied
    await otto.wait_presence(run_id, lambda p: typists(p) == [] and len(p) == 2)

    await typing(ada, run_id, True)
    await otto.wait_presence(run_id, lambda p: typists(p) == ["ada"])
    await otto.wait_presence(run_id, lambda p: typists(p) == [] and len(p) == 2)  # not renewed: lapses after its ttl

    await typing(ada, run_id, True)
    await otto.wait_presence(run_id, lambda p: typists(p) == ["ada"])
    assert [e for e in hub.log_events(run_id) if e["seq"] > head] == []  # never in the log
    said = await ada.request({"type": "say", "run_id": run_id, "text": "and the logs?"})
    assert said["type"] == "ack", said
    await otto.wait_presence(run_id, lambda p: typists(p) == [] and len(p) == 2)  # who speaks stopped typing

    await typing(ada, run_id, True)
    await otto.wait_presence(run_id, lambda p: typists(p) == ["ada"])
    assert (await ada.request({"type": "unsubscribe", "run_id": run_id}))["type"] == "ack"
    await otto.wait_presence(run_id, lambda p: [e["sub"] for e in p.values()] == ["otto"])
    await ada.subscribe(run_id)  # back: present again, not typing
    back = await otto.wait_presence(run_id, lambda p: len(p) == 2)
    assert typists(back) == []
    for c in (ada, otto):
        await c.close()


async def test_who_may_not_talk_or_is_not_watching_gets_a_stable_code(hub: Cluster) -> None:
    run_id = hub.start_run("quick")
    other = hub.start_run("quick")
    vic = await Client.connect(hub.ws_url(0), VIEWER)
    ada = await Client.connect(hub.ws_url(1), OPERATOR)
    for c in (vic, ada):
        await c.subscribe(run_id)
    cases: list[tuple[Client, dict[str, Any], str]] = [
        (vic, {"run_id": run_id, "typing": True}, "forbidden"),  # a viewer may watch, not talk
        (vic, {"run_id": run_id, "typing": False}, "forbidden"),
        (ada, {"run_id": other, "typing": True}, "bad_request"),  # not subscribed to it
        (ada, {"run_id": run_id, "typing": "yes"}, "bad_request"),
        (ada, {"run_id": run_id, "typing": 1}, "bad_request"),
        (ada, {"run_id": run_id}, "bad_request"),
        (ada, {"typing": True}, "bad_request"),
        (ada, {"run_id": "", "typing": True}, "bad_request"),
    ]
    for c, body, code in cases:
        err = await c.request({"type": "typing", **body})
        assert err["type"] == "error" and err["code"] == code, (body, err)
    assert (await typing(ada, run_id, True))["type"] == "ack"  # the connection is fine after its errors
    await vic.wait_presence(run_id, lambda p: typists(p) == ["ada"])
    assert typists(vic.presence(run_id)) == ["ada"]  # vic's refused typing never showed
    for c in (vic, ada):
        await c.close()


@pytest.fixture(scope="module")
def long_ttl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Two hub nodes on one Redis with a typing ttl no test waits out: a mark that clears was cleared by something."""
    with on_redis(tmp_path_factory.mktemp("typing-ttl"), nodes=2, workers=1, env={"RUNCAST_TYPING_TTL_S": "120"}) as c:
        yield c


async def test_saying_something_on_another_node_or_over_http_clears_the_mark_on_every_node(long_ttl: Cluster) -> None:
    """Ada types on node 1 and speaks from node 0, over the WebSocket and then over HTTP: the node that holds her
    typing connection clears the mark when her message is logged, not when the ttl lapses."""
    hub = long_ttl
    run_id = hub.start_run("quick")
    typist = await Client.connect(hub.ws_url(1), OPERATOR)  # Ada's composer, on node 1
    speaker = await Client.connect(hub.ws_url(0), OPERATOR)  # Ada again, on node 0
    otto = await Client.connect(hub.ws_url(1), OTTO)
    for c in (typist, speaker, otto):
        await c.subscribe(run_id)
    await otto.wait_event(run_id, "run.completed")
    await otto.wait_presence(run_id, lambda p: len(p) == 3)

    assert (await typing(typist, run_id, True))["type"] == "ack"
    await otto.wait_presence(run_id, lambda p: typists(p) == ["ada"])
    said = await speaker.request({"type": "say", "run_id": run_id, "text": "and the logs?"})
    assert said["type"] == "ack", said
    await otto.wait_presence(run_id, lambda p: typists(p) == [] and len(p) == 3, timeout=20)

    assert (await typing(typist, run_id, True))["type"] == "ack"
    await otto.wait_presence(run_id, lambda p: typists(p) == ["ada"])
    r = hub.http("POST", f"/api/runs/{run_id}/messages", OPERATOR, node=0, json={"text": "thanks"})
    assert r.status_code == 201, r.text
    await otto.wait_presence(run_id, lambda p: typists(p) == [] and len(p) == 3, timeout=20)
    for c in (typist, speaker, otto):
        await c.close()
