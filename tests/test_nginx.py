"""Two hub nodes behind a real nginx (Debian's package, the project's deploy/nginx.conf), a worker, one Redis.

WebSocket clients only ever talk to nginx. A node is killed mid-run; then both nodes are restarted in turn with
SIGTERM under 50 watchers: a node stops accepting, closes its clients with 1012 and exits within its grace period,
and its clients come back through nginx with `since`. Every watcher gets 1..N once each and the terminal event; the
approval given meanwhile is decided once and its tool runs once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from hubtest import ADMIN, ALICE, OPERATOR, TERMINAL, VIEWER, Client, Cluster, on_redis, seqs, without_presence
from nginx_server import Nginx

GRACE_S = 3.0


@pytest.fixture
def lb(tmp_path: Path) -> Iterator[tuple[Cluster, Nginx]]:
    with on_redis(
        tmp_path,
        persist=True,
        nodes=2,
        workers=1,
        serve_args=["--grace", str(GRACE_S)],
        env={"RUNCAST_DEMO_DELAY": "0.03", "RUNCAST_LEASE_S": "5"},
    ) as c:
        ngx = Nginx([p.port for p in c.nodes]).start()  # type: ignore[misc]
        try:
            yield c, ngx
        finally:
            ngx.stop()


async def watch(
    url: str, run_id: str, closes: list[tuple[int, str]], tok: str = VIEWER, timeout: float = 120
) -> list[dict[str, Any]]:
    """A watcher as the browser client behaves: on any close it reconnects (through nginx) and resubscribes with
    `since` = the last seq it has, until it sees the run's terminal event. Returns every event it received."""
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        since = got[-1]["seq"] if got else 0
        try:
            c = await Client.connect(url, tok)
            answer = await c.subscribe(run_id, since=since)
            if answer["type"] != "sync":
                raise ConnectionError(answer)
        except (OSError, ConnectionError, AssertionError, asyncio.TimeoutError, websockets.WebSocketException):
            await asyncio.sleep(0.1)
            continue
        try:
            await c.wait_event(run_id, TERMINAL, timeout=deadline - time.monotonic())
            done = True
        except ConnectionError:
            done = False
        got += [e for e in c.events(run_id)]
        if c.closed:
            closes.append(c.closed)
        await c.close()
        if done:
            return got
        await asyncio.sleep(0.05)
    raise AssertionError(f"watcher did not see the end of {run_id}: last seq {got[-1]['seq'] if got else 0}")


async def connect(url: str, tok: str = VIEWER) -> Client:
    """Connect through nginx as a client would: a 502 (every node just refused) or a refused connection is retried."""
    last: BaseException | None = None
    for _ in range(100):
        try:
            return await Client.connect(url, tok)
        except (OSError, AssertionError, asyncio.TimeoutError, websockets.WebSocketException) as exc:
            last = exc
            await asyncio.sleep(0.1)
    raise AssertionError(f"nginx never let a client through: {last!r}")


async def decide(url: str, run_id: str, approval_id: str) -> dict[str, Any]:
    """Approve through nginx, trying again while nodes restart (a refused or closed connection is not an answer)."""
    while True:
        try:
            c = await Client.connect(url, ALICE)
            ack = await c.request(
                {"type": "decide", "run_id": run_id, "approval_id": approval_id, "decision": "approve"}
            )
            await c.close()
        except (OSError, ConnectionError, AssertionError, asyncio.TimeoutError, websockets.WebSocketException):
            await asyncio.sleep(0.1)
            continue
        if ack["type"] == "error" and ack["code"] == "internal":
            await asyncio.sleep(0.1)
            continue
        return ack


def log_through(ngx: Nginx, run_id: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    since = 0
    while True:
        body = httpx.get(
            f"{ngx.url}/api/runs/{run_id}/events?since={since}&limit=1000",
            headers={"Authorization": f"Bearer {OPERATOR}"},
            timeout=10,
        ).json()
        out += body["events"]
        if not body["more"]:
            return out
        since = body["next_since"]


def check_exactly_once(histories: list[list[dict[str, Any]]], c: Cluster, ngx: Nginx, run_id: str) -> int:
    log = log_through(ngx, run_id)
    last = next(e for e in log if e["type"] in TERMINAL)["seq"]
    for h in histories:
        assert seqs(h) == list(range(1, len(h) + 1)), "a watcher saw a gap or a repeat"
        assert len(h) >= last and h[last - 1]["type"] == "run.completed"  # (presence events may follow it)
        assert h[:last] == log[:last]
    kinds = [e["type"] for e in without_presence(log)]
    assert kinds.count("approval.decided") == 1 and kinds.count("run.resumed") == 1
    assert len(c.tool_calls(run_id, "delete_files")) == 1
    return last


async def test_websockets_through_nginx_survive_a_node_killed_mid_run(lb: tuple[Cluster, Nginx]) -> None:
    c, ngx = lb
    assert httpx.get(ngx.url + "/readyz").text == "ready"
    run_id = c.start_run("long-turn", tok=OPERATOR)
    closes: list[tuple[int, str]] = []
    watchers = [asyncio.create_task(watch(ngx.ws_url, run_id, closes)) for _ in range(10)]
    probe = await connect(ngx.ws_url)
    await probe.subscribe(run_id)
    await probe.wait_event(run_id, "message.delta")
    await probe.close()
    c.nodes[0].kill()  # mid-stream: its clients see their connections drop
    probe = await connect(ngx.ws_url)
    await probe.subscribe(run_id)
    req = await probe.wait_event(run_id, "approval.requested", timeout=60)
    assert (await decide(ngx.ws_url, run_id, req["data"]["approval_id"]))["type"] == "ack"
    histories = await asyncio.gather(*watchers)
    check_exactly_once(histories, c, ngx, run_id)
    assert closes, "no watcher was on the killed node"
    await probe.close()


async def test_rolling_restart_with_sigterm_under_50_watchers_loses_nothing(lb: tuple[Cluster, Nginx]) -> None:
    c, ngx = lb
    run_id = c.start_run("long-turn", tok=OPERATOR)
    closes: list[tuple[int, str]] = []
    watchers = [asyncio.create_task(watch(ngx.ws_url, run_id, closes)) for _ in range(50)]
    probe = await connect(ngx.ws_url)
    await probe.subscribe(run_id)
    await probe.wait_event(run_id, "message.delta")
    await probe.close()
    exits = []
    for node in c.nodes:  # one after the other, each back before the next goes
        assert node.proc is not None
        t0 = time.monotonic()
        node.proc.terminate()  # SIGTERM
        await asyncio.to_thread(node.proc.wait, GRACE_S + 10)
        exits.append(time.monotonic() - t0)
        node.start(wait=False)
        await asyncio.to_thread(node.wait_ready)
    assert all(t <= GRACE_S + 2 for t in exits), exits
    assert any(code == 1012 for code, _ in closes), closes  # a draining node says "service restart"
    probe = await connect(ngx.ws_url)
    await probe.subscribe(run_id)
    req = await probe.wait_event(run_id, "approval.requested", timeout=60)
    assert (await decide(ngx.ws_url, run_id, req["data"]["approval_id"]))["type"] == "ack"
    histories = await asyncio.gather(*watchers)
    last = check_exactly_once(histories, c, ngx, run_id)
    print(
        f"rolling restart: 50 watchers, {last} events, {len(closes)} closes "
        f"({sum(1 for code, _ in closes if code == 1012)} with 1012), node exits after SIGTERM: "
        + ", ".join(f"{t:.2f}s" for t in exits)
    )
    await probe.close()


async def test_a_draining_node_reports_not_ready_then_closes_its_clients_with_1012(tmp_path: Path) -> None:
    c = Cluster(tmp_path, "memory", serve_args=["--drain-delay", "1.5", "--grace", "2"]).start()
    try:
        node = c.nodes[0]
        client = await Client.connect(node.ws_url, VIEWER)
        assert httpx.get(node.url + "/readyz").status_code == 200
        assert node.proc is not None
        t0 = time.monotonic()
        node.proc.terminate()
        await asyncio.sleep(0.5)
        r = httpx.get(node.url + "/readyz")
        assert (r.status_code, r.text) == (503, "draining")  # still serving, but no longer ready
        metrics = httpx.get(node.url + "/metrics", headers={"Authorization": f"Bearer {ADMIN}"}).text
        assert "runcast_draining 1.0" in metrics
        assert (await client.wait_closed(timeout=10))[0] == 1012
        await asyncio.to_thread(node.proc.wait, 10)
        assert 1.5 <= time.monotonic() - t0 <= 1.5 + 2 + 2
    finally:
        c.stop()
