"""The bytes under one accepted WebSocket: what the hub writes to a client, how much of it the client has not taken
yet, and how the connection is closed.

A server-to-client WebSocket frame is a short header and the payload, unmasked (RFC 6455 5.1). Without an extension
(the hub runs uvicorn with permessage-deflate off) the frame of an event is the same bytes for every client of one
encoding, so the fan-out frames once and each client costs one `transport.write` of bytes that are ready.

`SocketWire` writes them to the socket's transport directly. It knows uvicorn's websockets-sansio protocol object
(which owns the transport and the handshake, pings and the close handshake); that knowledge is all in this module, and
`attach` checks for it. Anything else (another ASGI server, an extension negotiated) gets `AsgiWire`: the same
interface over the ASGI `send`, with a writer task and its own count of the bytes it holds.

"Held" bytes are those written and not yet taken by the client: the transport's write buffer (or AsgiWire's queue).
The kernel's socket buffers come before them, so a client that stops reading is first absorbed there.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import sys
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

# the framing itself is plain code in framing.py; re-exported, where the hub's writers and tests have found it
from .framing import frame as frame
from .framing import frames as frames
from .framing import header as header

log = logging.getLogger("runcast.wire")

if sys.platform == "linux":
    import fcntl
    import termios

    _OUTQ: int | None = termios.TIOCOUTQ  # == SIOCOUTQ: a socket's unsent bytes
else:  # elsewhere, only the transport's buffer counts as progress
    _OUTQ = None

# A client that does not answer our close (or read what is before it) within this many seconds is cut off, unless it
# took some of what is before the frame meanwhile (it is reading: it will get there); CLOSE_MAX_S bounds that.
CLOSE_GRACE_S = 5.0
CLOSE_MAX_S = 60.0
# Replays (which can wait) write while fewer than this many bytes are held, then wait for the client.
REPLAY_HIGH_WATER = 256 * 1024
ASGI_SEND_KEY = "runcast.asgi_send"  # where CaptureSend leaves the server's own `send` in a WebSocket's scope


class CaptureSend:
    """ASGI middleware: keeps the server's `send` of a WebSocket in its scope (Starlette wraps the one it passes on).
    Not a coroutine: it hands back the app's own, so an idle connection holds no extra frame for it."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def __call__(self, scope: Any, receive: Any, send: Any) -> Any:
        if scope["type"] == "websocket":
            scope[ASGI_SEND_KEY] = send
        return self.app(scope, receive, send)


class SocketWire:
    """Pre-framed bytes straight to uvicorn's transport (websockets-sansio protocol, no extension).

    The transport takes writes while its buffer is under its high-water mark (64 KiB); past it (the protocol's
    `writable` is cleared), further writes wait here, in `_pending`, as whole writes (each one or more whole frames),
    and go to the transport as it drains. So what a slow consumer has not taken is mostly ours, at frame boundaries,
    and a 4408 can drop it and put the close frame right behind the transport's few kilobytes (the kernel's buffers
    come before them): a client still reading, however slowly, gets the close frame and learns why."""

    direct = True

    def __init__(self, proto: Any) -> None:
        self._proto = proto
        self._transport = proto.transport
        self._pending: deque[bytes] = deque()
        self._pending_bytes = 0
        self._drain: asyncio.Task[None] | None = None
        self.written = 0  # bytes handed to write() in all (taken by the client = written - held)
        self._close_started, self._unsent_then = 0.0, 0
        # The handshake's request and response (headers and all) are not needed once it is done: about 3 KiB of
        # every idle connection.
        if proto.handshake_complete:
            proto.request = proto.response = None
        if hasattr(proto, "on_writable"):  # transport.WebSocketProtocol calls it from resume_writing
            proto.on_writable = self._flush

    def write(self, data: bytes, payloads: list[bytes], binary: bool) -> None:
        """`data` is `frames(payloads, binary)`: the socket takes the former, AsgiWire the latter."""
        # A socket the client closed under us takes nothing: asyncio's transport ignores such a write, uvloop's raises
        # RuntimeError ("the handler is closed"), which would end the connection's cleanup with a traceback.
        if self._proto.close_sent or self._transport.is_closing():
            return
        self.written += len(data)
        writable = getattr(self._proto, "writable", None)
        if self._pending or (writable is not None and not writable.is_set()):
            self._pending.append(data)
            self._pending_bytes += len(data)
            if getattr(self._proto, "on_writable", None) is None and self._drain is None:
                self._drain = asyncio.get_running_loop().create_task(self._drain_when_writable())
            return
        self._transport.write(data)

    def _flush(self) -> None:
        """The transport drained under its low-water mark: hand it what waits, until it is full again."""
        p = self._proto
        while self._pending and p.writable.is_set() and not p.close_sent and not self._transport.is_closing():
            data = self._pending.popleft()
            self._pending_bytes -= len(data)
            self._transport.write(data)

    async def _drain_when_writable(self) -> None:
        """(A protocol without the on_writable hook: wait for its `writable` instead.)"""
        try:
            while self._pending and not self._proto.disconnected and not self._proto.close_sent:
                await self._proto.writable.wait()
                self._flush()
                await asyncio.sleep(0)
        finally:
            self._drain = None

    def held(self) -> int:
        return self._transport.get_write_buffer_size() + self._pending_bytes

    def untaken(self) -> int:
        """Everything written that the client has not read: what we hold and the kernel's send queue."""
        return self._unsent() + self._pending_bytes

    async def room(self) -> None:
        """Wait while the client holds more than REPLAY_HIGH_WATER bytes (returns at once if it is gone)."""
        p = self._proto
        while self.held() > REPLAY_HIGH_WATER and not p.disconnected:
            if p.writable.is_set():  # not paused by the transport (a high-water mark above ours): poll
                await asyncio.sleep(0.005)
            else:  # uvicorn's flow control: set again when the transport drops under its low-water mark
                await p.writable.wait()

    def close_now(self, code: int, reason: str, drop: bool = False) -> None:
        """Send the close frame now, behind what the transport holds, without waiting for room (uvicorn's own close
        waits for the buffer to drain below its high-water mark: a slow consumer may never get there). With `drop`
        (a slow consumer), what waits in `_pending` is dropped first, so the close frame is a few KiB away from the
        client instead of megabytes. The read side sees a disconnect at once. A client that has not taken it all
        within CLOSE_GRACE_S is cut off (a client that reads nothing at all never gets the frame)."""
        p = self._proto
        if p.close_sent or p.disconnected or self._transport.is_closing():
            return
        if drop:
            self._pending.clear()
            self._pending_bytes = 0
        else:
            while self._pending:  # everything before the close frame, in order (the transport buffers it)
                data = self._pending.popleft()
                self._transport.write(data)
            self._pending_bytes = 0
        # What uvicorn does for an ASGI "websocket.close", minus the wait.
        p.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        p.conn.send_close(code, reason)
        self._transport.write(b"".join(p.conn.data_to_send()))
        p.close_sent = True
        if p.read_paused:
            p.read_paused = False
            self._transport.resume_reading()
        self._close_started, self._unsent_then = p.loop.time(), self._unsent()
        p.close_timer = p.loop.call_later(CLOSE_GRACE_S, self._cut)

    def _unsent(self) -> int:
        """Bytes before the close frame that the client has not taken: the transport's buffer and the kernel's send
        queue (Linux's SIOCOUTQ; the kernel holds megabytes for a client that reads slowly)."""
        n = self._transport.get_write_buffer_size()
        sock = self._transport.get_extra_info("socket")
        if sock is not None and _OUTQ is not None:
            try:
                n += struct.unpack("i", fcntl.ioctl(sock.fileno(), _OUTQ, b"\0\0\0\0"))[0]
            except (OSError, ValueError):
                pass
        return n

    def _cut(self) -> None:
        p = self._proto
        p.close_timer = None
        if p.disconnected:
            return
        unsent = self._unsent()
        if unsent < self._unsent_then and p.loop.time() - self._close_started < CLOSE_MAX_S:
            # still reading (it took some of what is before the close frame): it will get to the frame
            self._unsent_then = unsent
            p.close_timer = p.loop.call_later(CLOSE_GRACE_S, self._cut)
            return
        self._transport.abort()  # close() would wait for the client to read what is buffered, maybe forever


class AsgiWire:
    """The same interface over the ASGI `send`: a queue of payloads and a task that sends them."""

    direct = False

    def __init__(self, send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        self._send = send
        self._queue: deque[tuple[bytes, bool] | tuple[int, str]] = deque()
        self._bytes = 0
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._closing = False
        self.gone = False
        self.written = 0
        self._task = asyncio.get_running_loop().create_task(self._run())

    def write(self, data: bytes, payloads: list[bytes], binary: bool) -> None:
        if self._closing or self.gone:
            return
        for p in payloads:
            self._queue.append((p, binary))
            self._bytes += len(p)
            self.written += len(p)
        self._drained.clear()
        self._wake.set()

    def held(self) -> int:
        return self._bytes

    def untaken(self) -> int:
        return self._bytes

    async def room(self) -> None:
        while self._bytes > REPLAY_HIGH_WATER and not self.gone:
            await self._drained.wait()

    def close_now(self, code: int, reason: str, drop: bool = False) -> None:
        """Close after what is queued, or (`drop`: a slow consumer) instead of it."""
        if self._closing:
            return
        self._closing = True
        if drop:
            self._queue.clear()
            self._bytes = 0
        self._queue.append((code, reason))
        self._wake.set()

    async def _run(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._queue:
                    item = self._queue.popleft()
                    if isinstance(item[0], int):
                        code, reason = item
                        await self._send({"type": "websocket.close", "code": code, "reason": reason})
                        return
                    payload, binary = item
                    self._bytes -= len(payload)
                    if binary:
                        await self._send({"type": "websocket.send", "bytes": payload})
                    else:
                        await self._send({"type": "websocket.send", "text": payload.decode()})
                self._drained.set()
        except Exception as exc:
            log.debug("ASGI writer stopped: %r", exc)
        finally:
            self.gone = True
            self._queue.clear()
            self._bytes = 0
            self._drained.set()

    async def aclose(self) -> None:
        """Wait (briefly) for what is queued, then stop."""
        if not self._task.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._task), CLOSE_GRACE_S if self._closing else 0.5)
            except (TimeoutError, Exception):
                pass
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


def attach(send: Callable[..., Any] | None) -> SocketWire | None:
    """A SocketWire if `send` is uvicorn's websockets-sansio `send` of an open connection without extensions."""
    proto = getattr(send, "__self__", None)
    # (by name, in the class or a base: transport.py subclasses it for the pre-auth limit and the 1009 / 1007 closes)
    if proto is None or "WebSocketsSansIOProtocol" not in {c.__name__ for c in type(proto).__mro__}:
        return None
    needed = (
        "transport",
        "conn",
        "queue",
        "writable",
        "close_sent",
        "disconnected",
        "read_paused",
        "loop",
        "close_timer",
        "handshake_complete",
        "request",
        "response",
    )
    if not all(hasattr(proto, a) for a in needed) or getattr(proto.conn, "extensions", None):
        return None
    if not hasattr(proto.transport, "get_write_buffer_size"):
        return None
    return SocketWire(proto)
