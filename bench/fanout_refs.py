"""The references of bench/fanout.py, each a server process that broadcasts a paced stream of run-like events.

    python bench/fanout_refs.py floor PORT       # pre-framed bytes, one transport.write per client: the floor
    python bench/fanout_refs.py naive PORT       # Starlette on uvicorn: a loop of `await ws.send_text` per client
    python bench/fanout_refs.py socketio PORT REDIS_URL   # python-socketio with its Redis manager, on uvicorn

`GET /go?n=N&rate=R` starts the stream: N events (the last one carries `end: true`), one every 1/R s (the same
interval pacing as the firehose agent: a late timer makes the run longer, it is not caught up). Each event has the shape
and about the size of Runcast's `message.delta`, with `seq` 1..N and `ts` (ISO, ms) set when it is made.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import struct
import sys
from datetime import datetime, timezone
from urllib.parse import parse_qs, urlsplit


def make_event(seq: int, n: int) -> str:
    ts = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    ev = {
        "run_id": "run_bench0000000",
        "seq": seq,
        "ts": ts,
        "type": "message.delta",
        "data": {"item_id": "msg_1_12345678", "agent": "Firehose", "delta": f"word{seq} "},
    }
    if seq == n:
        ev["end"] = True
    return json.dumps(ev, separators=(",", ":"))


async def paced(n: int, rate: float, emit) -> None:  # noqa: ANN001
    for seq in range(1, n + 1):
        await emit(make_event(seq, n))
        await asyncio.sleep(1 / rate)


def go_args(target: str) -> tuple[int, float]:
    q = parse_qs(urlsplit(target).query)
    return int(q["n"][0]), float(q["rate"][0])


# ------------------------------------------------------------------------------------------------ the floor
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def frame_text(payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x81, n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x81, 126, n)
    else:
        head = struct.pack("!BBQ", 0x81, 127, n)
    return head + payload


class FloorProtocol(asyncio.Protocol):
    """A WebSocket server reduced to what a broadcast needs: the handshake, then writes. Reads are discarded."""

    clients: set["FloorProtocol"] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.buf = b""
        self.open = False

    def data_received(self, data: bytes) -> None:
        if self.open:
            return
        self.buf += data
        if b"\r\n\r\n" not in self.buf:
            return
        head = self.buf.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
        target = head[0].split(" ")[1]
        headers = {k.strip().lower(): v.strip() for k, v in (h.split(":", 1) for h in head[1:] if ":" in h)}
        if target.startswith("/go"):
            n, rate = go_args(target)
            asyncio.get_running_loop().create_task(self.broadcast(n, rate))
            self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
            self.transport.close()
            return
        accept = base64.b64encode(hashlib.sha1(headers["sec-websocket-key"].encode() + GUID).digest())
        self.transport.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        self.open = True
        self.clients.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.clients.discard(self)

    @classmethod
    async def broadcast(cls, n: int, rate: float) -> None:
        async def emit(text: str) -> None:
            data = frame_text(text.encode())
            for c in list(cls.clients):
                c.transport.write(data)

        await paced(n, rate, emit)


async def floor(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(FloorProtocol, "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


# ------------------------------------------------------------------------------------------------ naive Starlette
def naive_app():  # noqa: ANN201
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route, WebSocketRoute
    from starlette.websockets import WebSocket, WebSocketDisconnect

    clients: set[WebSocket] = set()

    async def ws(socket: WebSocket) -> None:
        await socket.accept()
        clients.add(socket)
        try:
            while True:
                await socket.receive_text()
        except WebSocketDisconnect:
            pass
        finally:
            clients.discard(socket)

    async def go(request: Request) -> PlainTextResponse:
        n, rate = go_args(str(request.url))

        async def emit(text: str) -> None:
            for c in list(clients):
                try:
                    await c.send_text(text)
                except Exception:  # noqa: BLE001
                    clients.discard(c)

        asyncio.get_running_loop().create_task(paced(n, rate, emit))
        return PlainTextResponse("ok")

    return Starlette(routes=[WebSocketRoute("/ws", ws), Route("/go", go)])


# ------------------------------------------------------------------------------------------------ python-socketio
def socketio_app(redis_url: str):  # noqa: ANN201
    import socketio
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    sio = socketio.AsyncServer(
        async_mode="asgi", client_manager=socketio.AsyncRedisManager(redis_url), cors_allowed_origins="*"
    )

    async def go(request: Request) -> PlainTextResponse:
        n, rate = go_args(str(request.url))

        async def emit(text: str) -> None:
            await sio.emit("ev", json.loads(text))  # through Redis pub/sub, as with several nodes

        asyncio.get_running_loop().create_task(paced(n, rate, emit))
        return PlainTextResponse("ok")

    return socketio.ASGIApp(sio, other_asgi_app=Starlette(routes=[Route("/go", go)]))


def main() -> None:
    kind, port = sys.argv[1], int(sys.argv[2])
    loop = os.environ.get("RUNCAST_LOOP", "asyncio")
    if kind == "floor":
        if loop == "uvloop":
            import uvloop

            uvloop.run(floor(port))
        else:
            asyncio.run(floor(port))
        return
    import uvicorn

    app = naive_app() if kind == "naive" else socketio_app(sys.argv[3])
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        ws="websockets-sansio",
        ws_per_message_deflate=False,
        backlog=4096,
        loop=loop,
    )


if __name__ == "__main__":
    main()
