"""Soak: everything hostile at once, for minutes, on two hub nodes and a worker over one Redis.

    python bench/soak.py                 # about 3 minutes
    python bench/soak.py --seconds 600

While it runs:
  - runs of the `demo` agent start every `--run-every` s and are approved (each makes approval and run events, so
    webhooks);
  - webhooks go to a healthy receiver, one that trickles its answer (1 byte / 2 s), one that answers 200 MB and a dead
    one (tests/webhook_receiver.py);
  - normal watchers (on each node in turn) watch every run from its start to its end;
  - churn: connections open, say hello, subscribe, and close, all the time;
  - slow consumers: a client subscribes to a fast run of big events (`big-args`) and reads nothing.
It samples each hub node's RSS, open file descriptors and asyncio tasks (GET /debug/connections) after a warm-up and at
the end, and checks: they stay flat (within `--tolerance`, or a few fds/tasks), the normal watchers saw every seq of
every run, and the healthy receiver got every webhook event. It prints the figures and exits 1 if a check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import websockets

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "server")]
from hubtest import ADMIN, ALICE, OPERATOR, VIEWER, Cluster, free_port, on_redis  # noqa: E402

SECRET = "whsec_" + "cnVuY2FzdC1zb2FrLXdlYmhvb2sta2V5LTMyYnl0ZXM="  # base64 of a 32-byte test key
EVENTS = "approval.requested,approval.decided,run.completed"


class Receiver:
    def __init__(self, tmp: Path, *flags: str) -> None:
        self.port = free_port()
        self.log = tmp / f"receiver-{self.port}.jsonl"
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "tests" / "webhook_receiver.py"), str(self.port), str(self.log), *flags],
            stdout=subprocess.PIPE,
        )
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == b"ready"
        self.url = f"http://127.0.0.1:{self.port}"

    def lines(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(x) for x in self.log.read_text().splitlines() if x.strip()]

    def requests(self) -> list[dict[str, Any]]:
        return [x for x in self.lines() if "status" in x]

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(5)


def proc_stats(pid: int) -> tuple[int, int]:
    """(RSS in KiB, open fds) of a process."""
    rss = next(
        int(line.split()[1])
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if line.startswith("VmRSS:")
    )
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def sample(c: Cluster) -> list[dict[str, int]]:
    out = []
    for i, node in enumerate(c.nodes):
        dbg = c.http("GET", "/debug/connections", ADMIN, node=i).json()  # (runs a gc and malloc_trim first)
        rss, fds = proc_stats(node.proc.pid)
        out.append({"rss_kib": rss, "fds": fds, "tasks": dbg["tasks"], "open": dbg["open"]})
    return out


async def watch(url: str, run_id: str, done: dict[str, list[int]]) -> None:
    async with websockets.connect(url, subprotocols=["runcast.v1.json"], max_size=None) as ws:
        await ws.send(json.dumps({"type": "hello", "token": VIEWER}))
        await ws.send(json.dumps({"type": "subscribe", "run_id": run_id, "since": 0}))
        seqs: list[int] = []
        async for msg in ws:
            for line in msg.split("\n"):
                f = json.loads(line)
                if f.get("run_id") == run_id and "seq" in f:
                    seqs.append(f["seq"])
                    if f["type"] in ("run.completed", "run.failed", "run.cancelled"):
                        done[run_id] = seqs
                        return


async def churn(url: str, stop: float, counts: dict[str, int]) -> None:
    while time.monotonic() < stop:
        try:
            async with websockets.connect(url, subprotocols=["runcast.v1.json"]) as ws:
                await ws.send(json.dumps({"type": "hello", "token": VIEWER}))
                await ws.recv()
                if random.random() < 0.5:
                    await ws.send(json.dumps({"type": "subscribe_runs", "id": "l"}))
                    await ws.recv()
            counts["churned"] += 1
        except Exception:  # noqa: BLE001 - a 503 under load is part of the test
            counts["churn_errors"] += 1
        await asyncio.sleep(0.02)


def slow_consumer(port: int, run_id: str, hold_s: float) -> None:
    """A raw client that subscribes to a big run and reads nothing for `hold_s`, then goes."""
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    from websockets.client import ClientProtocol
    from websockets.typing import Subprotocol
    from websockets.uri import parse_uri

    p = ClientProtocol(
        parse_uri(f"ws://127.0.0.1:{port}/ws"), subprotocols=[Subprotocol("runcast.v1.json")], max_size=None
    )
    p.send_request(p.connect())
    s.sendall(b"".join(p.data_to_send()))
    s.recv(4096)
    p.send_text(json.dumps({"type": "hello", "token": ALICE}).encode())
    p.send_text(json.dumps({"type": "subscribe", "run_id": run_id, "since": 0}).encode())
    s.sendall(b"".join(p.data_to_send()))
    time.sleep(hold_s)
    s.close()


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=180.0)
    ap.add_argument("--run-every", type=float, default=1.5)
    ap.add_argument("--churners", type=int, default=8)
    ap.add_argument("--tolerance", type=float, default=0.25, help="RSS may grow by this fraction from warm-up to end")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="runcast-soak-"))
    healthy, trickle, huge = Receiver(tmp), Receiver(tmp, "--trickle"), Receiver(tmp, "--huge")
    dead = f"http://127.0.0.1:{free_port()}/dead"
    hooks = tmp / "webhooks.txt"
    hooks.write_text(
        "".join(f"{u} events={EVENTS}\n" for u in (f"{healthy.url}/ok", f"{trickle.url}/t", f"{huge.url}/h", dead))
    )
    env = {
        "RUNCAST_WEBHOOK_SECRET": SECRET,
        "RUNCAST_WEBHOOK_TIMEOUT_S": "5",
        "RUNCAST_WEBHOOK_RETRY_FOR_S": "60",
        "RUNCAST_DEBUG_ENDPOINTS": "1",
        "RUNCAST_DEMO_DELAY": "0.01",
        "RUNCAST_WEBHOOK_BACKOFF_MAX_S": "10",
    }
    args_ = ["--agents", "agents_fixture", "--webhook-file", str(hooks), "--public-url", "http://soak.invalid"]
    ok = True
    try:
        with on_redis(tmp, nodes=2, workers=1, env=env, serve_args=args_, worker_args=args_, start=False) as c:
            for p in [*c.workers, *c.nodes]:
                p.start(wait=False)
            for p in c.nodes:
                p.wait_ready(timeout=600)  # three processes importing the Agents SDK at once on a busy machine
            ws_urls = [c.ws_url(i) for i in range(2)]
            ports = [int(n.url.rsplit(":", 1)[1]) for n in c.nodes]
            t_start = time.monotonic()
            stop = t_start + args.seconds
            counts = {"churned": 0, "churn_errors": 0, "runs": 0, "slow": 0}
            done: dict[str, list[int]] = {}
            tasks = [asyncio.create_task(churn(ws_urls[i % 2], stop, counts)) for i in range(args.churners)]
            runs: list[str] = []
            first: list[dict[str, int]] | None = None
            warm_at = t_start + min(30.0, args.seconds / 4)
            i = 0
            while time.monotonic() < stop - 10:
                if first is None and time.monotonic() >= warm_at:
                    first = await asyncio.to_thread(sample, c)
                    print(f"warm-up sample ({time.monotonic() - t_start:.0f}s): {first}", flush=True)
                run = (
                    await asyncio.to_thread(
                        c.http, "POST", "/api/runs", OPERATOR, None, json={"agent": "demo", "input": f"soak {i}"}
                    )
                ).json()["run_id"]
                runs.append(run)
                counts["runs"] += 1
                tasks.append(asyncio.create_task(watch(ws_urls[i % 2], run, done)))  # on each node in turn
                if i % 10 == 0:  # a slow consumer on a fast run of big events
                    big = (
                        await asyncio.to_thread(
                            c.http, "POST", "/api/runs", OPERATOR, None, json={"agent": "big-args", "input": "go"}
                        )
                    ).json()["run_id"]
                    tasks.append(asyncio.create_task(asyncio.to_thread(slow_consumer, ports[i % 2], big, 12.0)))
                    counts["slow"] += 1

                async def approve(run_id: str) -> None:
                    d = await asyncio.to_thread(c.wait_status, run_id, "paused", timeout=60)
                    apid = d["pending_approvals"][0]["approval_id"]
                    await asyncio.to_thread(
                        c.http,
                        "POST",
                        f"/api/runs/{run_id}/approvals/{apid}",
                        ALICE,
                        None,
                        json={"decision": "approve"},
                    )

                tasks.append(asyncio.create_task(approve(run)))
                i += 1
                await asyncio.sleep(args.run_every)
            await asyncio.gather(*tasks, return_exceptions=True)
            for r in runs:
                await asyncio.to_thread(c.wait_status, r, "completed", "failed", "cancelled", timeout=60)
            # the healthy receiver: every webhook event of every run (give it a moment to drain)
            want = {f"msg_{r}_{e['seq']}" for r in runs for e in c.log_events(r) if e["type"] in EVENTS.split(",")}
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not want <= {
                x["id"] for x in healthy.requests() if x["status"] == 200
            }:
                await asyncio.sleep(0.5)
            await asyncio.sleep(3)
            last = await asyncio.to_thread(sample, c)
            got = {x["id"] for x in healthy.requests() if x["status"] == 200}
            print(f"end sample ({time.monotonic() - t_start:.0f}s): {last}")
            print(
                f"runs {counts['runs']}, churned connections {counts['churned']} ({counts['churn_errors']} refused "
                f"or failed), slow consumers {counts['slow']}"
            )
            print(
                f"healthy receiver: {len(got & want)}/{len(want)} webhook events delivered "
                f"({len(healthy.requests())} requests); trickling receiver: {len(trickle.requests())} attempts, "
                f"cut off after {max((h['closed_after'] for h in trickle.lines() if 'closed_after' in h), default=0):.1f}s "
                f"at most; 200 MB receiver: {len(huge.requests())} attempts, at most "
                f"{max((h['sent'] for h in huge.lines() if 'sent' in h), default=0) / 1e6:.1f} MB sent before the hub hung up; "
                f"dead receiver: {sum(1 for d in c.http('GET', '/api/webhooks/deliveries?limit=1000', ADMIN).json()['deliveries'] if d['url'].endswith('/dead'))} delivery records"
            )
            recv = {
                r["endpoint"]: r["circuit"]
                for r in c.http("GET", "/api/webhooks/deliveries", ADMIN).json()["receivers"]
            }
            print(f"circuits: {recv}")
            missing = [r for r in runs if done.get(r) != list(range(1, len(done.get(r) or []) + 1)) or r not in done]
            print(f"normal watchers: {len(runs) - len(missing)}/{len(runs)} runs seen whole, every seq in order")
            assert first is not None
            for n, (a, b) in enumerate(zip(first, last)):
                print(
                    f"node {n}: RSS {a['rss_kib'] / 1024:.1f} -> {b['rss_kib'] / 1024:.1f} MiB, fds {a['fds']} -> {b['fds']}, "
                    f"tasks {a['tasks']} -> {b['tasks']}, open connections {a['open']} -> {b['open']}"
                )
                if (
                    b["rss_kib"] > a["rss_kib"] * (1 + args.tolerance)
                    or b["fds"] > a["fds"] + 10
                    or b["tasks"] > a["tasks"] + 10
                ):
                    print(f"FAIL: node {n} grew")
                    ok = False
            if missing:
                print(f"FAIL: {len(missing)} runs not seen whole")
                ok = False
            if not want <= got:
                print(f"FAIL: the healthy receiver lacks {len(want - got)} events")
                ok = False
    finally:
        for r in (healthy, trickle, huge):
            r.stop()
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
