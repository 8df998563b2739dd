"""`runcast serve --metrics-bind HOST:PORT`: `/metrics` without a token on an address of its own (README, "Metrics").

On the main port `/metrics` needs a token with the `metrics` or `admin` role. An operator who would rather keep
tokens out of the Prometheus config serves the metrics on a private address instead: this is a tiny HTTP/1.0
listener in the hub's event loop (so a scrape reads the hub's state on the thread that changes it), answering
`GET /metrics` and nothing else, with the same limits as the main port: small headers, read within a timeout.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from .metrics import CONTENT_TYPE

log = logging.getLogger("runcast.metrics")
MAX_HEAD_BYTES = 8 * 1024  # a scrape's request line and headers
HEAD_TIMEOUT_S = 5.0


def parse_bind(value: str) -> tuple[str, int]:
    """'127.0.0.1:9100', '[::1]:9100' or ':9100' (all addresses) -> (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--metrics-bind takes HOST:PORT, got {value!r}")
    return (host.strip("[]") or "0.0.0.0"), int(port)


class MetricsListener:
    def __init__(self, bind: str, render: Callable[[], str]) -> None:
        self.host, self.port = parse_bind(bind)
        self._render = render
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port, limit=MAX_HEAD_BYTES)
        log.info("metrics on http://%s:%d/metrics", self.host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT_S)
            parts = head.split(b"\r\n", 1)[0].split(b" ")
            if len(parts) == 3 and parts[0] in (b"GET", b"HEAD") and parts[1].split(b"?")[0] == b"/metrics":
                status, ctype, body = "200 OK", CONTENT_TYPE, self._render().encode()
                if parts[0] == b"HEAD":
                    body_out = b""
                else:
                    body_out = body
            else:
                status, ctype, body = (
                    "404 Not Found",
                    "text/plain; charset=utf-8",
                    b"only GET /metrics is served here\n",
                )
                body_out = body
            writer.write(
                f"HTTP/1.0 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n".encode()
                + body_out
            )
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        except Exception:
            log.exception("metrics scrape failed")
        finally:
            writer.close()
