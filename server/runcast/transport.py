"""What uvicorn does not bound for us: the adapters between the socket and the app (see README, "Limits").

- HTTP: a request's headers must be complete within `header_timeout_s` of the connection opening (or of the previous
  response on a keep-alive connection). Neither of uvicorn's HTTP parsers has such a timeout, so without it an
  unfinished upgrade request (slowloris) holds a socket for as long as the client likes.
- WebSocket (uvicorn's websockets-sansio protocol, subclassed):
  - before the app says the client is authenticated, a message may be at most `PRE_AUTH_MAX_MESSAGE` bytes. The limit
    is checked against the frame header, so a 1 MiB frame is refused before its payload is read, not after it was
    buffered;
  - a message over the limit, whole or in fragments, closes with 1009; a text message that is not UTF-8 closes with
    1007 and one INFO line (uvicorn logs an ERROR with a traceback per frame);
  - when the connection fails that way, the close frame is sent, the write side is shut, and what the client still
    sends is read and dropped for up to `LINGER_S`: closing a socket with unread input makes the kernel answer with
    a reset, and the client would lose the close frame and see 1006.

The app reaches the WebSocket adapter through the ASGI scope:
`scope["extensions"]["runcast.transport"]["authenticated"]()` lifts the pre-auth limit to the transport limit
(`ws_max_size`).
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Any

from uvicorn.protocols.http.auto import AutoHTTPProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import CloseCode

log = logging.getLogger("runcast.ws")

# The largest message before `hello` is accepted. A hello is a token (at most 8 KiB, protocol.py) in a small JSON or
# msgpack map; 16 KiB leaves room and keeps what an unauthenticated client can make the hub hold small.
PRE_AUTH_MAX_MESSAGE = 16 * 1024
# How long a failed connection's leftover input is read and dropped before the socket is closed (see above).
LINGER_S = 2.0
EXTENSION = "runcast.transport"
# Every HTTP protocol object still in memory (weakly held): the debug endpoint counts them, so a test can check that
# an upgraded connection does not keep its HTTP parser.
HTTP_LIVE: weakref.WeakSet[asyncio.Protocol] = weakref.WeakSet()


def http_protocol(header_timeout_s: float) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol (httptools when installed, else h11) with a header-read timeout."""

    class HeaderTimeoutProtocol(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:
            super().connection_made(transport)
            HTTP_LIVE.add(self)
            self._arm_header_timer()

        def _arm_header_timer(self) -> None:
            self._cancel_header_timer()
            self._header_timer = self.loop.call_later(header_timeout_s, self._header_timeout)

        def _header_timeout(self) -> None:
            self._header_timer = None
            transport = self.transport
            if transport.is_closing() or transport.get_protocol() is not self:  # closed, or upgraded to a WebSocket
                return
            cycle = getattr(self, "cycle", None)
            if cycle is None or cycle.response_complete:  # still waiting for a request's headers
                transport.close()

        def handle_websocket_upgrade(self, *args: Any) -> None:
            # The timer's callback holds this HTTP protocol (its parser, headers and buffers) until it fires: at the
            # upgrade the socket is the WebSocket's, so let it go now (6 KiB per connection for 10 s otherwise).
            self._cancel_header_timer()
            super().handle_websocket_upgrade(*args)

        def _cancel_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm_header_timer()  # the next request on this keep-alive connection gets the same time

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_header_timer()
            super().connection_lost(exc)

    return HeaderTimeoutProtocol


class WebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websockets-sansio protocol with the pre-auth limit, 1009 / 1007 closes that arrive, and no
    tracebacks."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # websockets >= 15 names it max_message_size (and also counts fragments against it); older ones max_size
        self._limit_attr = "max_message_size" if hasattr(self.conn, "max_message_size") else "max_size"
        self._full_max = getattr(self.conn, self._limit_attr)
        if self._full_max is None or self._full_max > PRE_AUTH_MAX_MESSAGE:
            setattr(self.conn, self._limit_attr, PRE_AUTH_MAX_MESSAGE)
        self._failed = False
        self.on_writable: Any = None  # wire.SocketWire's flush: what it holds goes to the transport as it drains

    def resume_writing(self) -> None:
        super().resume_writing()
        if self.on_writable is not None:
            self.on_writable()

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:
            scope["extensions"][EXTENSION] = {"authenticated": self._authenticated}

    def _authenticated(self) -> None:
        setattr(self.conn, self._limit_attr, self._full_max)

    def data_received(self, data: bytes) -> None:
        if self._failed:  # lingering after a failure: drop what the client still sends
            return
        super().data_received(data)

    def send_receive_event_to_app(self) -> None:
        data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
        self.frames = []
        if self.close_sent:
            return
        if self.curr_msg_data_type == "text":
            try:
                message: dict[str, Any] = {"type": "websocket.receive", "text": data.decode()}
            except UnicodeDecodeError as exc:
                client = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
                log.info(
                    "closed %s with 1007: a text message is not UTF-8 (%s at byte %d)", client, exc.reason, exc.start
                )
                self.conn.fail(CloseCode.INVALID_DATA, "text message is not valid UTF-8")
                self.handle_parser_exception()
                return
        else:
            message = {"type": "websocket.receive", "bytes": data}
        # a websocket.receive event, built as uvicorn's own data_received builds it; its queue is typed with the ASGI
        # event TypedDicts, which a dict[str, Any] does not narrow to
        self.queue.put_nowait(message)  # type: ignore[arg-type]
        if not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()

    def handle_parser_exception(self) -> None:
        if self._failed:
            return
        self._failed = True
        close = self.conn.close_sent
        code, reason = (close.code, close.reason) if close is not None else (CloseCode.PROTOCOL_ERROR, "")
        self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        self.stop_keepalive()
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()
        if self.transport.can_write_eof():
            self.transport.write_eof()
        if self.close_timer is None:
            self.close_timer = self.loop.call_later(LINGER_S, self.transport.close)

    def eof_received(self) -> None:
        if self._failed:  # the client read our close and hung up: done
            self.transport.close()
        return None
