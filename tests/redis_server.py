"""A real, throw-away redis-server for tests: its own port (never 6379), its own temp dir, no persistence.

    srv = RedisServer(); srv.start(); ... srv.url ... srv.stop()  # kill -9
    srv.start()  # the same port again; loads dump.rdb from its dir if a test ran SAVE before stopping

By default the server keeps nothing on disk (`--save "" --appendonly no`): a restart after stop() comes back empty.
`RedisServer(persist=True)` runs it with an fsync-always append-only file instead, so a kill -9 loses no
acknowledged write and a restart comes back with everything, like a production Redis with AOF.

Tests get one through the `redis_server` fixture (function-scoped: a fresh server per test).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from typing import Iterator

import pytest

REDIS_SERVER = shutil.which("redis-server")


def _free_port() -> int:
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port != 6379:
            return port


def _ping(port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    def __init__(self, port: int | None = None, *, persist: bool = False) -> None:
        if REDIS_SERVER is None:
            raise RuntimeError("redis-server is not installed")
        self.persist = persist
        self.port = port or _free_port()
        self.dir = tempfile.mkdtemp(prefix="runcast-redis-")
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = os.path.join(self.dir, "redis.log")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        """Start (or restart, on the same port) and return once it answers PING."""
        if self.running:
            return
        with open(self._log, "ab") as logf:
            aof = ["--appendonly", "yes", "--appendfsync", "always"] if self.persist else ["--appendonly", "no"]
            self.proc = subprocess.Popen(
                [
                    REDIS_SERVER,
                    "--port",
                    str(self.port),
                    "--save",
                    "",
                    *aof,
                    "--bind",
                    "127.0.0.1",
                    "--dir",
                    self.dir,
                    "--logfile",
                    "",
                ],
                cwd=self.dir,
                stdout=logf,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"redis-server on port {self.port} exited with {self.proc.returncode}: {self.log_tail()}"
                )
            if _ping(self.port):
                return
            time.sleep(0.01)
        self.stop()
        raise RuntimeError(f"redis-server on port {self.port} did not answer PING within {timeout}s: {self.log_tail()}")

    def stop(self) -> None:
        """kill -9: no shutdown, no save; clients see their sockets reset."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)  # also ends a paused (SIGSTOP) server
            self.proc.wait(5)
        self.proc = None

    def pause(self) -> None:
        """SIGSTOP: the server keeps its sockets but answers nothing (a network partition, roughly)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self, n: int = 2000) -> str:
        try:
            with open(self._log, "rb") as f:
                return f.read()[-n:].decode(errors="replace")
        except OSError:
            return ""


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    if REDIS_SERVER is None:  # a test that cannot run fails: a skip would pass for a test that never ran
        pytest.fail("redis-server is not installed: make system-deps (apt-get install -y redis-server redis-tools)")
    srv = RedisServer()
    srv.start()
    try:
        yield srv
    finally:
        srv.cleanup()
