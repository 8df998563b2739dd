"""A server-to-client WebSocket frame, as bytes: a short header and the payload, unmasked (RFC 6455 5.1).

Plain code, no I/O: the fan-out (fanout.py) and the inbox and run-list feeds (feed.py) frame a message once for every
client of one encoding, and wire.py writes the bytes. Here, below both, so that feed.py (which the backends import)
need not import wire.py (which the layers put above them).
"""

from __future__ import annotations

import struct

TEXT, BINARY = 0x81, 0x82  # FIN + opcode
_SHORT = {op: [bytes((op, n)) for n in range(126)] for op in (TEXT, BINARY)}


def header(payload_len: int, binary: bool) -> bytes:
    op = BINARY if binary else TEXT
    if payload_len < 126:
        return _SHORT[op][payload_len]
    if payload_len < 65536:
        return struct.pack("!BBH", op, 126, payload_len)
    return struct.pack("!BBQ", op, 127, payload_len)


def frame(payload: bytes, binary: bool) -> bytes:
    """One unfragmented, unmasked server frame."""
    return header(len(payload), binary) + payload


def frames(payloads: list[bytes], binary: bool) -> bytes:
    """Several frames, back to back, as one write."""
    parts: list[bytes] = []
    for p in payloads:
        parts.append(header(len(p), binary))
        parts.append(p)
    return b"".join(parts)
