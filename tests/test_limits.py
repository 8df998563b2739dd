"""Limits that protect the hub: a slow consumer is closed with 4408 and comes back with `since` losing nothing;
the others are not slowed down. Its own server, with a small per-client queue."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator

import pytest
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

from hubtest import ALICE, TERMINAL, VIEWER, Client, Cluster, seqs


@pytest.fixture(scope="module")
def small_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = Cluster(
        tmp_path_factory.mktemp("limits"),
        "memory",
        serve_args=["--max-queue", "64"],
        env={"RUNCAST_RATE_PER_S": "10000", "RUNCAST_RATE_BURST": "10000"},
    ).start()
    yield cluster
    cluster.stop()


async def test_slow_consumer_is_closed_with_4408_and_recovers_with_since(small_hub: Cluster) -> None:
    hub = small_hub
    # A run that talks a lot: 1,500 live events of 4 KiB for every watcher (6 MiB, about 400 a second).
    run_id = hub.start_run("big-args")
    watcher = await Client.connect(hub.ws_url(), VIEWER)
    await watcher.subscribe(run_id)

    # A client that stops reading: a raw socket with a tiny receive buffer, driven by websockets' sans-I/O protocol.
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", int(hub.url.rsplit(":", 1)[1])))
    proto = ClientProtocol(parse_uri(hub.ws_url()), subprotocols=[Subprotocol("runcast.v1.json")])
    proto.send_request(proto.connect())
    sock.sendall(b"".join(proto.data_to_send()))
    while not proto.handshake_exc and proto.state is not State.OPEN:
        proto.receive_data(sock.recv(65536))
    for frame in ({"type": "hello", "token": ALICE}, {"type": "subscribe", "run_id": run_id}):
        proto.send_text(json.dumps(frame).encode())
    sock.sendall(b"".join(proto.data_to_send()))

    def slow_closed() -> int:
        text = hub.http("GET", "/metrics").text
        return int(
            float(next(x for x in text.splitlines() if x.startswith("runcast_slow_consumers_closed_total ")).split()[1])
        )

    for _ in range(600):  # the limit is on bytes held for a while: give it that while
        if slow_closed():
            break
        await asyncio.sleep(0.1)
    assert slow_closed() == 1

    # the slow one, reading again as soon as it is closed (one that goes on reading nothing is cut off without a close
    # frame once its deadline passes), finds what was in flight and then its close: 4408
    last_seq = 0
    sock.settimeout(10)
    while proto.close_rcvd is None:
        data = sock.recv(1 << 20)
        assert data, "socket closed without a close frame"
        proto.receive_data(data)
        for ev in proto.events_received():
            if isinstance(ev, Frame) and ev.opcode is Opcode.TEXT and b'"seq"' in ev.data:
                seq = json.loads(ev.data)["seq"]
                assert seq == last_seq + 1 or last_seq == 0  # in order, no hole, up to the cut
                last_seq = seq
    assert proto.close_rcvd.code == 4408
    sock.close()
    # the fast clients were never held up
    await watcher.wait_event(run_id, "run.completed", timeout=60)
    assert (await watcher.request({"type": "ping"}))["type"] == "pong"

    # it comes back with since and gets exactly what it missed
    back = await Client.connect(hub.ws_url(), ALICE)
    sync = await back.subscribe(run_id, since=last_seq)
    replay = [f for f in back.frames[: back.frames.index(sync)] if "seq" in f]
    assert seqs(replay) == list(range(last_seq + 1, sync["head_seq"] + 1))
    assert replay == hub.log_events(run_id)[last_seq : sync["head_seq"]]
    for c in (watcher, back):
        await c.close()


@pytest.fixture(scope="module")
def strict_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Few commands a second, and a sweeper that (after its first pass) never runs: votes meet expiries themselves."""
    cluster = Cluster(
        tmp_path_factory.mktemp("strict"),
        "memory",
        env={
            "RUNCAST_RATE_PER_S": "5",
            "RUNCAST_RATE_BURST": "5",
            "RUNCAST_MAX_STRIKES": "20",
            "RUNCAST_SWEEP_S": "3600",
        },
    ).start()
    yield cluster
    cluster.stop()


async def test_rate_limited_commands_get_their_own_error_then_1008(strict_hub: Cluster) -> None:
    c = await Client.connect(strict_hub.ws_url(), ALICE)
    for i in range(60):
        await c.send({"type": "ping", "id": f"p{i}"})
    code, _ = await c.wait_closed()
    assert code == 1008
    answers = {f["id"]: f for f in c.frames if f.get("id", "").startswith("p")}
    pongs = [i for i in range(60) if answers.get(f"p{i}", {}).get("type") == "pong"]
    limited = [i for i in range(60) if answers.get(f"p{i}", {}).get("code") == "rate_limited"]
    assert pongs and pongs == list(range(len(pongs)))  # the burst is answered, in order
    assert len(limited) == 21 and limited[0] == len(pongs)  # then each gets rate_limited with its id; over 20: closed
    assert all("slow down" in answers[f"p{i}"]["message"] for i in limited)
    # another connection of the same person is not affected
    d = await Client.connect(strict_hub.ws_url(), ALICE)
    assert (await d.request({"type": "ping"}))["type"] == "pong"
    await d.close()


async def test_a_vote_after_the_deadline_gets_expired_and_settles_the_approval(strict_hub: Cluster) -> None:
    hub = strict_hub
    run_id = hub.start_run("demo-expiring")
    w = await Client.connect(hub.ws_url(), VIEWER)
    await w.subscribe(run_id)
    req = await w.wait_event(run_id, "approval.requested")
    await w.wait_event(run_id, "run.paused")
    await asyncio.sleep(1.3)  # past expires_at; no sweeper pass in between
    a = await Client.connect(hub.ws_url(), ALICE)
    err = await a.request(
        {"type": "decide", "run_id": run_id, "approval_id": req["data"]["approval_id"], "decision": "approve"}
    )
    assert err["type"] == "error" and err["code"] == "expired"
    end = await w.wait_event(run_id, TERMINAL)
    assert end["type"] == "run.completed"
    kinds = [e["type"] for e in hub.log_events(run_id) if not e["type"].startswith("participant.")]
    i = kinds.index("approval.expired")
    assert kinds[i : i + 3] == ["approval.expired", "approval.decided", "run.resumed"]
    decided = next(e for e in hub.log_events(run_id) if e["type"] == "approval.decided")
    assert decided["data"]["by"] == {"policy": "expired"} and decided["data"]["decision"] == "reject"
    assert "expired" in end["data"]["output"] or "approval expired" in end["data"]["output"].lower()
    assert hub.tool_calls(run_id, "delete_files") == []
    for x in (w, a):
        await x.close()
