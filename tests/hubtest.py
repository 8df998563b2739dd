"""Test harness: real `runcast` processes on free ports, and a real WebSocket client that records every frame."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from collections.abc import Iterator
from typing import Any, Callable

import httpx
import msgpack
import websockets

from runcast import auth

ROOT = Path(__file__).resolve().parents[1]
SECRET = "test-secret-0123456789abcdef0123456789abcdef"
TERMINAL = ("run.completed", "run.failed", "run.cancelled")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def token(sub: str, roles: list[str], runs: list[str] | None = None, ttl: float = 3600, name: str | None = None) -> str:
    return auth.issue(SECRET, sub, name or sub.capitalize(), roles, runs, ttl_s=ttl)


ADMIN = token("root", ["admin"])
OPERATOR = token("ada", ["operator"], name="Ada")
ALICE = token("alice", ["approver"], name="Alice")
BOB = token("bob", ["approver"], name="Bob")
VIEWER = token("vic", ["viewer"], name="Vic")


class Process:
    """One `runcast` process (serve or worker). Output goes to a log file, shown when a test fails."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path, port: int | None = None) -> None:
        self.args, self.env, self.log_path, self.port = args, env, log_path, port
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def start(self, wait: bool = True) -> "Process":
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "runcast.cli", *self.args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        if wait and self.port:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 120) -> None:  # (a loaded CI machine can take a while)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc and self.proc.poll() is not None:
                raise RuntimeError(f"runcast exited with {self.proc.returncode}:\n{self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/healthz", timeout=0.5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"runcast on {self.port} not ready:\n{self.log_path.read_text()[-3000:]}")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def base_env(tmp: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("OPENAI_API_KEY", None)  # nothing reaches the internet
    env.update(
        {
            "RUNCAST_SECRET": SECRET,
            # the demo's dev secret and `runcast login`'s credentials go to the test's own dirs, never the user's
            "XDG_STATE_HOME": str(tmp / "xdg-state"),
            "XDG_CONFIG_HOME": str(tmp / "xdg-config"),
            "RUNCAST_DEMO_DELAY": "0.01",
            "RUNCAST_DEMO_TOOL_LOG": str(tmp / "tools.log"),
            "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT / "server"), env.get("PYTHONPATH", "")]),
            "RUNCAST_LOG_LEVEL": "WARNING",
            "OPENAI_AGENTS_DISABLE_TRACING": "1",
            # Nothing reaches the internet: should anything try OpenAI or any outside host, it meets a closed local port.
            "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
            "HTTP_PROXY": "http://127.0.0.1:9",
            "HTTPS_PROXY": "http://127.0.0.1:9",
            "NO_PROXY": "127.0.0.1,localhost",
            # Suites start many runs as one user: per-user quotas are off unless a test turns them on (test_quotas.py).
            "RUNCAST_MAX_STARTS_PER_MINUTE": "0",
            "RUNCAST_MAX_OPEN_RUNS": "0",
        }
    )
    env.update(extra)
    return env


class Cluster:
    """Hub nodes (and workers) sharing one backend. With the memory backend: one process, one node."""

    def __init__(
        self,
        tmp: Path,
        backend: str,
        redis_url: str | None = None,
        nodes: int = 1,
        workers: int = 0,
        env: dict[str, str] | None = None,
        serve_args: list[str] | None = None,
        worker_args: list[str] | None = None,
    ) -> None:
        self.tmp, self.backend, self.redis_url = tmp, backend, redis_url
        self.env = base_env(tmp, **(env or {}))
        common = ["--agents", "demo", "--agents", "agents_fixture"]
        redis = ["--redis", redis_url] if redis_url else []
        self.nodes: list[Process] = []
        for i in range(nodes):
            port = free_port()
            args = ["serve", "--port", str(port), *common, *redis, *(serve_args or [])]
            if workers and redis_url:
                args.append("--no-worker")
            self.nodes.append(Process(args, self.env, tmp / f"node{i}.log", port))
        self.workers = [
            Process(["worker", *common, *redis, *(worker_args or [])], self.env, tmp / f"worker{i}.log")
            for i in range(workers)
        ]
        self._next = 0

    def start(self) -> "Cluster":
        try:
            for p in self.workers:
                p.start()
            for p in self.nodes:
                p.start(wait=False)
            for p in self.nodes:
                p.wait_ready()
        except BaseException:
            self.stop()  # a node that never got ready must not outlive the test run
            raise
        return self

    def stop(self) -> None:
        for p in self.nodes + self.workers:
            p.stop()

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def ws_url(self, i: int | None = None) -> str:
        """A node's WebSocket URL; without `i`, the next node in turn, so a test's clients spread over every node."""
        if i is None:
            i, self._next = self._next, self._next + 1
        return self.nodes[i % len(self.nodes)].ws_url

    def tool_calls(self, run_id: str, tool: str | None = None) -> list[dict[str, Any]]:
        path = self.tmp / "tools.log"
        if not path.exists():
            return []
        lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
        return [x for x in lines if x["run_id"] == run_id and (tool is None or x["tool"] == tool)]

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.log_path.name}\n{p.log_path.read_text()[-4000:]}"
            for p in self.nodes + self.workers
            if p.log_path.exists()
        )

    # ---- HTTP helpers
    def http(self, method: str, path: str, tok: str = ADMIN, node: int | None = None, **kw: Any) -> httpx.Response:
        if node is None:
            node, self._next = self._next, self._next + 1
        url = self.nodes[node % len(self.nodes)].url + path
        return httpx.request(method, url, headers={"Authorization": f"Bearer {tok}"}, timeout=10, **kw)

    def start_run(self, agent: str = "demo", text: str = "free some disk space", tok: str = OPERATOR) -> str:
        r = self.http("POST", "/api/runs", tok, json={"agent": agent, "input": text})
        assert r.status_code == 201, r.text
        return r.json()["run_id"]

    def wait_status(self, run_id: str, *status: str, timeout: float = 30, node: int | None = None) -> dict[str, Any]:
        """Polls the run's detail (on `node`, or on each node in turn) until its status is one of `status`."""
        deadline = time.monotonic() + timeout
        d: dict[str, Any] = {}
        while time.monotonic() < deadline:
            d = self.http("GET", f"/api/runs/{run_id}", node=node).json()
            if d["status"] in status:
                return d
            time.sleep(0.05)
        raise AssertionError(f"run {run_id} never reached {status}: {d}")

    def log_events(self, run_id: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        since = 0
        while True:
            body = self.http("GET", f"/api/runs/{run_id}/events?since={since}&limit=1000").json()
            out += body["events"]
            if not body["more"]:
                return out
            since = body["next_since"]


@contextlib.contextmanager
def on_redis(tmp: Path, *, persist: bool = False, start: bool = True, **cluster: Any) -> Iterator[Cluster]:
    """A redis-server of its own on a free port (`cluster.redis`) and a Cluster of runcast processes on it. Both are
    stopped afterwards, also when a node never gets ready, so a failed start leaves no redis-server behind. With
    `start=False` the test starts the processes itself (in its own order or with its own timeouts)."""
    from redis_server import RedisServer

    server = RedisServer(persist=persist)
    server.start()
    try:
        c = Cluster(tmp, "redis", server.url, **cluster)
        c.redis = server  # type: ignore[attr-defined]
        try:
            if start:
                c.start()
            yield c
        finally:
            c.stop()
    finally:
        server.cleanup()


class Client:
    """A WebSocket client that records every frame it receives, in order."""

    _ids = itertools.count(1)

    def __init__(self, ws: Any, encoding: str) -> None:
        self.ws, self.encoding = ws, encoding
        self.frames: list[dict[str, Any]] = []
        self.closed: tuple[int, str] | None = None
        self._changed = asyncio.Condition()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def connect(cls, url: str, tok: str | None = None, encoding: str = "json", **kw: Any) -> "Client":
        sub = f"runcast.v1.{encoding}"
        ws = await websockets.connect(url, subprotocols=[sub], max_size=None, **kw)
        client = cls(ws, encoding)
        if tok is not None:
            welcome = await client.request({"type": "hello", "token": tok})
            assert welcome["type"] == "welcome", welcome
        return client

    async def _read(self) -> None:
        try:
            async for msg in self.ws:
                frame = msgpack.unpackb(msg, raw=False) if isinstance(msg, bytes) else json.loads(msg)
                async with self._changed:
                    self.frames.append(frame)
                    self._changed.notify_all()
        except websockets.ConnectionClosed:
            pass
        finally:
            code = self.ws.close_code
            self.closed = (code if code is not None else 1006, self.ws.close_reason or "")
            async with self._changed:
                self._changed.notify_all()

    async def send(self, frame: Any) -> None:
        if isinstance(frame, (bytes, str)):
            await self.ws.send(frame)
        elif self.encoding == "msgpack":
            await self.ws.send(msgpack.packb(frame))
        else:
            await self.ws.send(json.dumps(frame))

    async def wait_for(
        self, pred: Callable[[dict[str, Any]], bool], timeout: float = 15, start: int = 0
    ) -> dict[str, Any]:
        async def scan() -> dict[str, Any]:
            i = start
            async with self._changed:
                while True:
                    while i < len(self.frames):
                        if pred(self.frames[i]):
                            return self.frames[i]
                        i += 1
                    if self.closed:
                        raise ConnectionError(f"closed {self.closed} while waiting")
                    await self._changed.wait()

        try:
            return await asyncio.wait_for(scan(), timeout)
        except TimeoutError as e:
            raise TimeoutError(f"nothing matched within {timeout} s; {self.describe()}") from e

    def describe(self) -> str:
        """What this client had when a wait gave up: its last frames, short (the first thing a CI failure needs)."""
        tail = [
            f"{f.get('type')}#{f['seq']}" if "seq" in f else str(f.get("type") or f.get("code") or "?")
            for f in self.frames[-12:]
        ]
        return f"{len(self.frames)} frames, closed={self.closed}, last: {' '.join(tail)}"

    async def wait_closed(self, timeout: float = 15) -> tuple[int, str]:
        async def wait() -> tuple[int, str]:
            async with self._changed:
                while self.closed is None:
                    await self._changed.wait()
                return self.closed

        return await asyncio.wait_for(wait(), timeout)

    async def request(self, frame: dict[str, Any], timeout: float = 15) -> dict[str, Any]:
        """Send a command with a fresh id; return the ack / error / pong / welcome that answers it."""
        frame = dict(frame)
        if frame.get("type") == "hello":
            n = len(self.frames)
            await self.send(frame)
            return await self.wait_for(lambda f: f["type"] in ("welcome", "error"), timeout, start=n)
        frame.setdefault("id", f"q{next(self._ids)}")
        await self.send(frame)
        return await self.wait_for(
            lambda f: f.get("id") == frame["id"] and f["type"] in ("ack", "error", "pong"), timeout
        )

    async def subscribe(self, run_id: str, since: int | None = None) -> dict[str, Any]:
        n = len(self.frames)
        frame: dict[str, Any] = {"type": "subscribe", "run_id": run_id, "id": f"s{next(self._ids)}"}
        if since is not None:
            frame["since"] = since
        await self.send(frame)
        return await self.wait_for(
            lambda f: (
                (f["type"] == "sync" and f["run_id"] == run_id) or (f["type"] == "error" and f.get("id") == frame["id"])
            ),
            start=n,
        )

    async def subscribe_frame(self, frame: dict[str, Any]) -> dict[str, Any]:
        """Send a subscribe frame as given; return its sync or its error."""
        n = len(self.frames)
        frame = {"id": f"s{next(self._ids)}", **frame}
        await self.send(frame)
        return await self.wait_for(
            lambda f: (
                (f["type"] == "sync" and f["run_id"] == frame["run_id"])
                or (f["type"] == "error" and f.get("id") == frame["id"])
            ),
            start=n,
        )

    def events(self, run_id: str, types: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
        return [
            f for f in self.frames if "seq" in f and f.get("run_id") == run_id and (types is None or f["type"] in types)
        ]

    async def wait_event(self, run_id: str, types: str | tuple[str, ...], timeout: float = 20) -> dict[str, Any]:
        types = (types,) if isinstance(types, str) else types
        return await self.wait_for(lambda f: "seq" in f and f["run_id"] == run_id and f["type"] in types, timeout)

    def presence(self, run_id: str) -> dict[str, dict[str, Any]]:
        """Who is watching, folded from the `presence` control frames of this run: connection id -> entry."""
        from runcast.presence import apply_frame

        held: dict[str, dict[str, Any]] = {}
        for f in self.frames:
            if f.get("type") == "presence" and f.get("run_id") == run_id:
                held = apply_frame(held, f)
        return held

    async def wait_presence(
        self, run_id: str, pred: Callable[[dict[str, dict[str, Any]]], bool], timeout: float = 15
    ) -> dict[str, dict[str, Any]]:
        async def wait() -> dict[str, dict[str, Any]]:
            async with self._changed:
                while True:
                    held = self.presence(run_id)
                    if pred(held):
                        return held
                    if self.closed:
                        raise ConnectionError(f"closed {self.closed} while waiting for presence")
                    await self._changed.wait()

        try:
            return await asyncio.wait_for(wait(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"presence of {run_id} never matched; it is {self.presence(run_id)}") from None

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)


def seqs(events: list[dict[str, Any]]) -> list[int]:
    return [e["seq"] for e in events]


def without_presence(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """(Presence is no longer in the log: kept for logs written by older versions.)"""
    return [e for e in events if not e["type"].startswith("participant.")]


def subs(presence: dict[str, dict[str, Any]]) -> list[str]:
    """The subs in a presence set, one per connection, sorted: a person watching twice shows twice."""
    return sorted(e["sub"] for e in presence.values())


# Redis commands that depend on time, not on events: blocking job reads, timers, lease renewals, health checks, and a
# cluster client's topology reads.
PERIODIC_COMMANDS = {
    "xreadgroup",
    "xautoclaim",
    "zrangebyscore",
    "zcount",
    "ping",
    "info",
    "config|resetstat",
    "config",
    "xpending",
    "client|setinfo",
    "client",
    "cluster|slots",
    "cluster|shards",
    "cluster",
    "command",
    "command|docs",
    "command|info",
    "command|count",
    "readonly",
    "cluster|nodes",
    "xinfo|consumers",
}


def command_counts(servers: list[Any]) -> dict[str, int]:
    """Calls per command so far (INFO commandstats), summed over `servers` (redis-py clients; on a cluster, the masters:
    a replica's own counts repeat its master's writes)."""
    out: dict[str, int] = {}
    for r in servers:
        for k, v in r.info("commandstats").items():
            out[k.removeprefix("cmdstat_")] = out.get(k.removeprefix("cmdstat_"), 0) + v["calls"]
    return out


async def commands_per_event(c: Cluster, servers: list[Any], watchers: int) -> float:
    """Redis commands per event of a run's resumed segment, watched by `watchers` viewers on node 0 and approved on
    node 1: counted from the approval to the run's end, after every watcher has joined."""
    run_id = c.start_run(tok=OPERATOR)
    clients = [await Client.connect(c.ws_url(0), VIEWER) for _ in range(watchers)]
    for w in clients:
        await w.subscribe(run_id)
    paused = await clients[0].wait_event(run_id, "run.paused")
    ap = clients[0].events(run_id, ("approval.requested",))[0]["data"]["approval_id"]
    await asyncio.sleep(0.3)
    before = command_counts(servers)
    a = await Client.connect(c.ws_url(1), ALICE)
    assert (await a.request({"type": "decide", "run_id": run_id, "approval_id": ap, "decision": "approve"}))[
        "type"
    ] == "ack"
    ends = [await w.wait_event(run_id, TERMINAL, timeout=30) for w in clients]
    after = command_counts(servers)
    assert all(e == ends[0] for e in ends)
    used = sum(after.get(k, 0) - before.get(k, 0) for k in after if k not in PERIODIC_COMMANDS)
    for x in (*clients, a):
        await x.close()
    return used / (ends[0]["seq"] - paused["seq"])
