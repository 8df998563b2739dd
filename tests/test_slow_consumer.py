"""A client that stops reading is closed with 4408 once it holds `--max-send-bytes` (1 MiB by default), promptly,
on both backends, both encodings, with and without batched frames; the other watchers are not held up."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import msgpack
import pytest
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

from hubtest import ALICE, VIEWER, Client, Cluster, on_redis

LIMIT = 1024 * 1024
ENV = {"RUNCAST_COALESCE_S": "0", "RUNCAST_RATE_PER_S": "10000", "RUNCAST_RATE_BURST": "10000"}


@pytest.fixture(scope="module", params=["memory", "redis"])
def fast_hub(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp(f"slow-{request.param}")
    if request.param == "redis":
        with on_redis(tmp, env=ENV) as cluster:
            yield cluster
        return
    cluster = Cluster(tmp, "memory", env=ENV).start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module", params=["memory", "redis"])
def small_limit_hub(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A hub with --max-send-bytes 64 KiB: a burst outgrows it past the kernel's socket buffers, which on loopback
    absorb megabytes and hide the difference between a prompt reader and a slow one at the 1 MiB default."""
    tmp = tmp_path_factory.mktemp(f"small-{request.param}")
    args = ["--max-send-bytes", "65536"]
    if request.param == "redis":
        with on_redis(tmp, env=ENV, serve_args=args) as cluster:
            yield cluster
        return
    cluster = Cluster(tmp, "memory", env=ENV, serve_args=args).start()
    yield cluster
    cluster.stop()


class SlowClient:
    """A raw socket with a tiny receive buffer, driven by websockets' sans-I/O protocol: it reads only when told."""

    def __init__(self, hub: Cluster, encoding: str, batch: bool, rcvbuf: int = 4096) -> None:
        self.encoding, self.batch = encoding, batch
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.connect(("127.0.0.1", int(hub.url.rsplit(":", 1)[1])))
        self.proto = ClientProtocol(
            parse_uri(hub.ws_url()), subprotocols=[Subprotocol(f"runcast.v1.{encoding}")], max_size=None
        )
        self.proto.send_request(self.proto.connect())
        self.sock.sendall(b"".join(self.proto.data_to_send()))
        while not self.proto.handshake_exc and self.proto.state is not State.OPEN:
            self.proto.receive_data(self.sock.recv(65536))
        self.received = 0  # payload bytes of frames
        self.ended = False  # the socket ended (or was reset) without a close frame

    def send(self, frame: dict[str, Any]) -> None:
        if self.encoding == "msgpack":
            self.proto.send_binary(msgpack.packb(frame))
        else:
            self.proto.send_text(json.dumps(frame).encode())
        self.sock.sendall(b"".join(self.proto.data_to_send()))

    def frames(self, data: bytes) -> list[dict[str, Any]]:
        if self.encoding == "msgpack":
            return _unpack_all(data)  # one map, or with batching a sequence of them
        return [json.loads(line) for line in data.decode().split("\n")]

    def read_to_close(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        self.sock.settimeout(15)
        while self.proto.close_rcvd is None:
            data = self.sock.recv(1 << 20)
            assert data, "socket closed without a close frame"
            self.proto.receive_data(data)
            for ev in self.proto.events_received():
                if isinstance(ev, Frame) and ev.opcode in (Opcode.TEXT, Opcode.BINARY):
                    self.received += len(ev.data)
                    out += self.frames(ev.data)
        return out


def _unpack_all(data: bytes) -> list[dict[str, Any]]:
    u = msgpack.Unpacker(raw=False, strict_map_key=False)
    u.feed(data)
    return list(u)


def payload_size(frame: dict[str, Any], encoding: str) -> int:
    if encoding == "msgpack":
        return len(msgpack.packb(frame))
    return len(json.dumps(frame, separators=(",", ":"), ensure_ascii=False).encode())


def slow_closed(hub: Cluster) -> int:
    text = hub.http("GET", "/metrics", node=0).text
    return int(
        float(next(x for x in text.splitlines() if x.startswith("runcast_slow_consumers_closed_total ")).split()[1])
    )


@pytest.mark.parametrize("encoding,batch", [("json", False), ("msgpack", True), ("json", True), ("msgpack", False)])
async def test_a_client_that_stops_reading_gets_4408_promptly_and_holds_no_one_up(
    fast_hub: Cluster, encoding: str, batch: bool
) -> None:
    hub = fast_hub
    before = slow_closed(hub)
    run_id = hub.start_run("big-args", "go")
    fast = await Client.connect(hub.ws_url(), VIEWER, encoding=encoding)
    arrivals: dict[int, float] = {}

    slow = SlowClient(hub, encoding, batch)
    slow.send({"type": "hello", "token": ALICE, "batch": batch})
    slow.send({"type": "subscribe", "run_id": run_id, "since": 0})
    await fast.subscribe(run_id, since=0)

    # The slow one reads nothing; meanwhile the fast one takes every event as it comes, and we watch the counter.
    closed_at = None
    reading: asyncio.Task[list[dict[str, Any]]] | None = None
    seen = 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        await asyncio.sleep(0.02)
        now = time.time()
        for f in fast.frames[seen:]:
            if "seq" in f:
                arrivals[f["seq"]] = now
        seen = len(fast.frames)
        if closed_at is None and await asyncio.to_thread(slow_closed, hub) > before:
            closed_at = now
            # it reads again now: what the kernel holds, then the close frame (a client that went on reading nothing
            # would be cut off once the frame's deadline passes, wire.CLOSE_GRACE_S)
            reading = asyncio.create_task(asyncio.to_thread(slow.read_to_close))
        if fast.closed or (closed_at is not None and any(f.get("type") == "run.completed" for f in fast.frames[-3:])):
            break
    assert closed_at is not None and reading is not None, "the slow consumer was never closed"
    end = await fast.wait_event(run_id, "run.completed", timeout=60)

    # The fast watcher got every event, in order, and was never held up: each arrived soon after it was logged.
    events = fast.events(run_id)
    assert [e["seq"] for e in events] == list(range(1, end["seq"] + 1))
    delays = [
        arrivals[e["seq"]] - datetime.fromisoformat(e["ts"].replace("Z", "+00:00")).timestamp()
        for e in events
        if e["type"] == "tool.args.delta" and e["seq"] in arrivals
    ]
    assert delays and max(delays) < 2.0, f"the fast watcher waited up to {max(delays):.2f}s"

    # The slow one, reading since it was closed, finds a gap-free prefix of the run and then 4408, whose reason says
    # how much it held.
    got = await reading
    close = slow.proto.close_rcvd
    assert close.code == 4408 and "reconnect and subscribe with since" in close.reason
    seqs = [f["seq"] for f in got if "seq" in f and f.get("run_id") == run_id]
    assert seqs == list(range(1, len(seqs) + 1))
    assert seqs[-1] < end["seq"], "the slow consumer was closed only after the run ended"
    held = int(re.search(r"(\d+) bytes unread", close.reason).group(1))
    assert held > LIMIT
    # When did it start holding the limit? What it received is what the kernel's buffers took plus the few KiB the
    # transport kept; it went over the limit once the kernel's share plus the limit had been sent to it (every watcher
    # is sent the same events at the same moment: the fast one's arrival times tell when). `received` bounds the
    # kernel's share from above, so the crossing found is, if anything, late.
    kernel = slow.received
    sent, crossed_at = 0, None
    for e in events:
        sent += payload_size(e, encoding)
        if sent >= kernel + LIMIT:
            crossed_at = arrivals[e["seq"]]
            break
    assert crossed_at is not None
    assert closed_at - crossed_at <= 2.0, f"closed {closed_at - crossed_at:.2f}s after holding the limit"
    slow.sock.close()

    # It comes back with since and gets the rest, exactly.
    back = await Client.connect(hub.ws_url(), ALICE, encoding=encoding)
    sync = await back.subscribe(run_id, since=seqs[-1])
    rest = [f for f in back.frames[: back.frames.index(sync)] if "seq" in f and f["run_id"] == run_id]
    assert [f["seq"] for f in rest] == list(range(seqs[-1] + 1, sync["head_seq"] + 1))
    for c in (fast, back):
        await c.close()


def read_slowly(
    slow: SlowClient,
    chunk: int,
    pause: float,
    limit_s: float = 60,
    until: Callable[[list[dict[str, Any]]], bool] | None = None,
) -> tuple[int | None, list[dict[str, Any]]]:
    """Read `chunk` bytes every `pause` s until the close frame (its code), the end of the socket (None), `until(frames
    so far)` holds, or `limit_s`, answering pings as it reads them (a reading that outlasts the hub's 20 s ping and 20 s
    wait was closed with 1011 otherwise). Nothing for 15 s raises TimeoutError, with what was read in `.frames`."""
    out: list[dict[str, Any]] = []
    slow.sock.settimeout(15)
    deadline = time.monotonic() + limit_s
    while slow.proto.close_rcvd is None and time.monotonic() < deadline and not (until and until(out)):
        try:
            data = slow.sock.recv(chunk)
        except ConnectionResetError:
            slow.ended = True
            return None, out
        except TimeoutError as exc:
            exc.frames = out  # type: ignore[attr-defined]
            raise
        if not data:
            slow.ended = True
            return None, out
        slow.proto.receive_data(data)
        for ev in slow.proto.events_received():
            if isinstance(ev, Frame) and ev.opcode in (Opcode.TEXT, Opcode.BINARY):
                slow.received += len(ev.data)
                out += slow.frames(ev.data)
        pong = b"".join(slow.proto.data_to_send())  # a client that reads answers the hub's pings, as browsers do
        if pong:
            try:
                slow.sock.sendall(pong)
            except OSError:  # (the hub closed the socket behind its close frame)
                pass
        time.sleep(pause)
    return (slow.proto.close_rcvd.code if slow.proto.close_rcvd else None), out


@pytest.mark.parametrize("encoding", ["json", "msgpack"])
async def test_a_client_reading_slowly_is_told_why_with_4408(fast_hub: Cluster, encoding: str) -> None:
    """A client that reads, but at 160 KB/s (the run streams 6 MiB at ~1.6 MB/s), goes over the limit and is closed:
    what the hub still held for it is dropped, so the close frame is a few KiB behind what it is reading and it gets
    4408 with the reason, not 1006 (the frame used to wait behind the megabyte it was not reading, and was cut off)."""
    hub = fast_hub
    run_id = hub.start_run("big-args", "go")
    slow = SlowClient(hub, encoding, False)
    slow.send({"type": "hello", "token": ALICE})
    slow.send({"type": "subscribe", "run_id": run_id, "since": 0})
    code, got = await asyncio.to_thread(read_slowly, slow, 8192, 0.05)
    slow.sock.close()
    assert code == 4408, f"closed with {code}, after {slow.received} bytes"
    assert "reconnect and subscribe with since" in slow.proto.close_rcvd.reason
    seqs = [f["seq"] for f in got if "seq" in f and f.get("run_id") == run_id]
    assert seqs == list(range(1, len(seqs) + 1))  # a gap-free prefix: since=seqs[-1] picks up exactly


async def test_a_client_reading_nothing_at_all_is_dropped(fast_hub: Cluster) -> None:
    """A client that takes nothing is closed without waiting for it: the hub drops its socket (no close frame can
    reach a client that reads nothing) and holds nothing for it; the other watchers go on."""
    hub = fast_hub
    before = slow_closed(hub)
    run_id = hub.start_run("big-args", "go")
    slow = SlowClient(hub, "json", False)
    slow.send({"type": "hello", "token": ALICE})
    slow.send({"type": "subscribe", "run_id": run_id, "since": 0})
    watcher = await Client.connect(hub.ws_url(), VIEWER)
    await watcher.subscribe(run_id, since=0)
    end = await watcher.wait_event(run_id, "run.completed", timeout=60)
    assert [e["seq"] for e in watcher.events(run_id)] == list(range(1, end["seq"] + 1))
    deadline = time.monotonic() + 30
    while slow_closed(hub) == before and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert slow_closed(hub) > before
    await asyncio.sleep(7)  # past the close frame's deadline (wire.CLOSE_GRACE_S)
    code, _ = await asyncio.to_thread(read_slowly, slow, 1 << 20, 0)
    assert code is None  # cut off: the socket ended without a close frame
    slow.sock.close()
    await watcher.close()


@pytest.mark.parametrize("encoding", ["json", "msgpack"])
async def test_a_prompt_reader_keeps_its_connection_through_a_burst(fast_hub: Cluster, encoding: str) -> None:
    """6 MiB of events with no pause between them: a client that reads as fast as it can is never dropped (it may be
    behind by more than the limit for a moment, but it keeps taking more than the limit per grace) and gets every seq."""
    hub = fast_hub
    run_id = hub.start_run("big-args-burst", "go")
    c = await Client.connect(hub.ws_url(), VIEWER, encoding=encoding)
    await c.subscribe(run_id, since=0)
    end = await c.wait_event(run_id, "run.completed", timeout=60)
    assert c.closed is None
    assert [e["seq"] for e in c.events(run_id)] == list(range(1, end["seq"] + 1))
    await c.close()


@pytest.mark.parametrize("pause", [0.02, 0.1])
async def test_a_reader_taking_more_than_the_limit_per_second_is_not_a_slow_consumer(
    fast_hub: Cluster, pause: float
) -> None:
    """A client reading up to 256 KiB every 20 ms or every 100 ms (12.8 or 2.6 MB/s: more than the limit per grace)
    through a burst with no pause between events. At 100 ms it is slower than the run (about 5 MB/s here), so it is
    behind by megabytes for seconds: it reads promptly all the same, so it is never closed and gets every seq (the
    hub used to close it with 4408, or drop it, a grace after it went over the limit). (This test was dropped once as flaky: its reader waited 15 s for data after the run had completed, and threw
    away the frames of its last read, run.completed included. The hub was never stalled.)"""
    hub = fast_hub
    run_id = hub.start_run("big-args-burst", "go")
    reader = SlowClient(hub, "json", True, rcvbuf=256 * 1024)
    reader.send({"type": "hello", "token": ALICE, "batch": True})
    reader.send({"type": "subscribe", "run_id": run_id, "since": 0})

    def completed(frames: list[dict[str, Any]]) -> bool:
        return any(f.get("type") == "run.completed" and f.get("run_id") == run_id for f in frames)

    def read() -> tuple[int | str | None, list[dict[str, Any]]]:
        try:
            code, got = read_slowly(reader, 262144, pause, limit_s=60, until=completed)
        except TimeoutError as exc:
            return "nothing for 15 s, and no close frame", exc.frames  # type: ignore[attr-defined]
        if code is None and reader.ended:
            return 1006, got  # dropped without a close frame
        return (None if completed(got) else code or "no run.completed within 60 s"), got

    code, got = await asyncio.to_thread(read)
    reader.sock.close()
    seqs = [f["seq"] for f in got if "seq" in f and f.get("run_id") == run_id]
    head = hub.wait_status(run_id, "completed")["head_seq"]
    assert code is None, f"{code}: {reader.proto.close_rcvd}, after {reader.received} bytes, seq {seqs[-1:]} of {head}"
    assert seqs == list(range(1, head + 1))


@pytest.mark.parametrize("pause,rcvbuf", [(0.05, 65536), (0.1, 65536), (0.02, 4096)])
async def test_a_prompt_reader_behind_a_burst_is_not_dropped(
    small_limit_hub: Cluster, pause: float, rcvbuf: int
) -> None:
    """Issue 23's finding: with no delay between events, a client that reads promptly was closed with 4408. Here the
    limit is 64 KiB and the client takes 200 KB to 2.6 MB a second, more than the limit per grace, while the run
    writes 6 MiB faster than that. It drains the kernel's send queue first, so the hub's own buffer does not move for
    a while: the hub counts what the client took from the kernel's queue too, and never drops it."""
    hub = small_limit_hub
    run_id = hub.start_run("big-args-burst", "go")
    reader = SlowClient(hub, "json", True, rcvbuf=rcvbuf)
    reader.send({"type": "hello", "token": ALICE, "batch": True})
    reader.send({"type": "subscribe", "run_id": run_id, "since": 0})

    def completed(frames: list[dict[str, Any]]) -> bool:
        return any(f.get("type") == "run.completed" and f.get("run_id") == run_id for f in frames)

    # The 4 KiB reader takes about 30 s here; in one clean-clone CI on a loaded machine it had read 1,231 of 1,513
    # seqs, unclosed, when a 90 s limit ended its reading. What is checked is that it is never closed and gets every
    # seq, not its speed: so a generous limit, and a stall (nothing for 15 s) still fails at once (read_slowly).
    code, got = await asyncio.to_thread(read_slowly, reader, 262144, pause, 300, completed)
    reader.sock.close()
    seqs = [f["seq"] for f in got if "seq" in f and f.get("run_id") == run_id]
    assert code is None, f"closed with {code}: {reader.proto.close_rcvd}, at seq {seqs[-1:]}"
    assert completed(got), f"no run.completed after 300 s of reading; {reader.received} bytes, seq {seqs[-1:]}"
    assert seqs == list(range(1, hub.wait_status(run_id, "completed")["head_seq"] + 1))
