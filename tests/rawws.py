"""A bare-bytes WebSocket client for the hostile-client tests: every frame is built by hand, so a test can send what a
well-behaved library never would (fragments, invalid UTF-8, oversized headers, half an upgrade), and it costs the test
process little enough to open thousands of connections."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import struct
from typing import Any

TEXT, BINARY, CONT, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA


def frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """One client frame (masked, as RFC 6455 requires of clients)."""
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 1 << 16:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    mask = os.urandom(4)
    if not payload:
        return head + mask
    body = (int.from_bytes(payload, "big") ^ int.from_bytes((mask * (n // 4 + 1))[:n], "big")).to_bytes(n, "big")
    return head + mask + body


def text(obj: Any) -> bytes:
    return frame(TEXT, json.dumps(obj).encode())


def upgrade_request(
    port: int,
    subprotocol: str | None = "runcast.v1.json",
    host: str | None = None,
    origin: str | None = None,
    path: str = "/ws",
    forwarded_for: str | None = None,
) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host or f'127.0.0.1:{port}'}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    if subprotocol:
        lines.append(f"Sec-WebSocket-Protocol: {subprotocol}")
    if origin:
        lines.append(f"Origin: {origin}")
    if forwarded_for:
        lines.append(f"X-Forwarded-For: {forwarded_for}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class RawWS:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, status: int, head: bytes) -> None:
        self.reader, self.writer, self.status, self.head = reader, writer, status, head

    @classmethod
    async def connect(cls, port: int, source: str | None = None, **kw: Any) -> "RawWS":
        """`source`: the local address to connect from (any of 127.0.0.0/8 on Linux), as another client would."""
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, limit=1 << 22, local_addr=(source, 0) if source else None
        )
        writer.write(upgrade_request(port, **kw))
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        return cls(reader, writer, status, head)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def recv(self) -> tuple[int, bytes]:
        """The next whole server frame (servers do not mask, and Runcast does not fragment)."""
        b0, b1 = await self.reader.readexactly(2)
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", await self.reader.readexactly(8))
        return b0 & 0x0F, await self.reader.readexactly(n)

    async def recv_json(self) -> dict[str, Any]:
        while True:
            op, data = await self.recv()
            if op in (TEXT, BINARY):
                return json.loads(data)
            if op == CLOSE:
                raise ConnectionError(f"closed {struct.unpack('!H', data[:2])[0] if data else 1005}")

    async def hello(self, token: str) -> dict[str, Any]:
        await self.send(text({"type": "hello", "token": token}))
        return await self.recv_json()

    async def close_code(self, timeout: float = 10) -> int:
        """Read until the server's close frame: its code (1005 without one; 1006 if the socket just ended)."""

        async def wait() -> int:
            while True:
                try:
                    op, data = await self.recv()
                except (asyncio.IncompleteReadError, ConnectionError):
                    return 1006
                if op == CLOSE:
                    return struct.unpack("!H", data[:2])[0] if len(data) >= 2 else 1005

        return await asyncio.wait_for(wait(), timeout)

    async def close(self, code: int = 1000) -> None:
        try:
            self.writer.write(frame(CLOSE, struct.pack("!H", code)))
            await self.writer.drain()
            await asyncio.wait_for(self.close_code(), 5)
        except (ConnectionError, asyncio.TimeoutError, OSError):
            pass
        self.abort()

    def abort(self) -> None:
        self.writer.transport.abort()


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")
