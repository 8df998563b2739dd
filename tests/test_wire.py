"""The send path without a hub process: frames as websockets parses them, batches, and the ASGI fallback (the hub
served by something other than uvicorn's websockets-sansio, here Starlette's TestClient)."""

from __future__ import annotations

import json

import msgpack
import pytest
from starlette.testclient import TestClient
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

from hubtest import OPERATOR, SECRET, VIEWER

from runcast.backends.memory import MemoryBackend
from runcast.fanout import Batch
from runcast.hub import Hub, create_app
from runcast.protocol import BATCH_MAX_BYTES, batch_payloads, make_event
from runcast.settings import Settings
from runcast.wire import frame


def parse_frames(data: bytes) -> list[Frame]:
    """What a client's WebSocket protocol makes of these bytes."""
    client = ClientProtocol(parse_uri("ws://hub/ws"), state=State.OPEN, max_size=None)
    client.receive_data(data)
    assert client.parser_exc is None, client.parser_exc
    return [ev for ev in client.events_received() if isinstance(ev, Frame)]


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 200_000])
def test_frames_parse_as_websocket_frames_at_every_length_encoding(size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    got = parse_frames(frame(payload, True) + frame(b"x" * size, False))
    assert [(f.opcode, f.fin, bytes(f.data)) for f in got] == [
        (Opcode.BINARY, True, payload),
        (Opcode.TEXT, True, b"x" * size),
    ]


def test_a_batch_is_framed_once_per_encoding_and_batching() -> None:
    evs = Batch([make_event("r", s, "message.delta", {"delta": f"w{s}\n"}) for s in range(3, 6)])
    assert evs.contiguous and (evs.first, evs.last) == (3, 5)
    data, payloads = evs.framed("json", False)
    assert evs.framed("json", False)[0] is data  # cached for every watcher
    assert [json.loads(bytes(f.data)) for f in parse_frames(data)] == [e.frame for e in evs]
    data, payloads = evs.framed("json", True)
    [one] = parse_frames(data)
    assert [json.loads(line) for line in bytes(one.data).decode().split("\n")] == [e.frame for e in evs]
    data, _ = evs.framed("msgpack", True)
    [one] = parse_frames(data)
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(bytes(one.data))
    assert list(unpacker) == [e.frame for e in evs]
    assert not Batch([make_event("r", 1, "x", {}), make_event("r", 3, "x", {})]).contiguous


def test_batch_frames_hold_whole_events_up_to_the_limit() -> None:
    evs = [make_event("r", s, "message.delta", {"delta": "y" * 10_000}) for s in range(1, 21)]
    payloads = batch_payloads(evs, "json")
    assert len(payloads) > 1 and all(len(p) <= BATCH_MAX_BYTES for p in payloads)
    assert [json.loads(x)["seq"] for p in payloads for x in p.split(b"\n")] == list(range(1, 21))
    big = make_event("r", 1, "message.completed", {"text": "z" * (BATCH_MAX_BYTES + 1)})
    assert batch_payloads([big], "json") == [big.json_bytes()]  # an event bigger than the limit goes alone


def test_the_asgi_fallback_delivers_in_order_with_and_without_batching(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNCAST_COALESCE_S", "0")
    from runcast.demo import demo_registry

    hub = Hub(MemoryBackend(), demo_registry(delay=0.001), Settings(secret=SECRET, rate_per_s=1000, rate_burst=1000))
    with TestClient(create_app(hub)) as http:
        with http.websocket_connect("/ws", subprotocols=["runcast.v1.json"]) as ws:
            ws.send_json({"type": "hello", "token": OPERATOR})
            assert ws.receive_json()["type"] == "welcome"
            ws.send_json({"type": "start", "agent": "demo", "input": "hi", "id": "s"})
            run_id = ws.receive_json()["run_id"]
        for batch in (False, True):
            with http.websocket_connect("/ws", subprotocols=["runcast.v1.json"]) as ws:
                ws.send_json({"type": "hello", "token": VIEWER, "batch": batch})
                welcome = ws.receive_json()
                assert welcome.get("batch") is (True if batch else None)
                ws.send_json({"type": "subscribe", "run_id": run_id})
                seqs: list[int] = []
                while True:
                    frames_ = [json.loads(x) for x in ws.receive_text().split("\n")]
                    assert batch or len(frames_) == 1
                    seqs += [f["seq"] for f in frames_ if "seq" in f]
                    if any(f["type"] in ("run.paused", "run.completed") for f in frames_):
                        break
                assert seqs == list(range(1, len(seqs) + 1))


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_write_to_a_socket_already_closed_is_dropped_on_either_loop(loop: str) -> None:
    # uvloop's transport raises RuntimeError on a write after close, where asyncio's ignores it; an error frame for a
    # client that just went away used to end its connection's cleanup with that traceback (seen on Redis Cluster CI).
    import asyncio
    from types import SimpleNamespace

    from runcast.wire import SocketWire

    async def main() -> None:
        srv = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        _, w = await asyncio.open_connection("127.0.0.1", srv.sockets[0].getsockname()[1])
        proto = SimpleNamespace(transport=w.transport, handshake_complete=False, close_sent=False)
        wire = SocketWire(proto)
        wire.write(frame(b"before", False), [b"before"], False)
        w.transport.close()
        await asyncio.sleep(0.05)
        wire.write(frame(b"after", False), [b"after"], False)  # must not raise
        assert wire.held() == 0
        srv.close()

    if loop == "uvloop":
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())
