"""Many runs, many people: N runs at once (2 watchers each) while M dashboards keep the inbox and the run list open.

    python bench/dashboards.py                                   # the grid of issue 24 (long: minutes per row)
    python bench/dashboards.py --grid memory:50:100,redis:50:100  # smaller rows: backend:N:M
    python bench/dashboards.py --grid redis+worker:500:500       # the agents in a `runcast worker` process
    python bench/dashboards.py --grid memory:500:1000 --pairs 5  # five sittings of the row, and their median pace

Each row is one sitting per backend: fresh hub(s), then N runs started with the demo agent (two starter connections
pipeline N/2 `start`s each; every run is watched by two watcher connections), first with no dashboards (the
baseline), then with M dashboards (approvers subscribed to `subscribe_inbox` and to `subscribe_runs` with limit 50).
Memory: one hub that runs the worker. Redis: two hubs on one redis-server, the first also runs the worker; the
clients are spread over both. redis+worker: the same two hubs, both `--no-worker`, and the agents in one `runcast
worker` process (the deployment docs/deploying.md recommends: the agents never share a hub's event loop). Quotas off, rate limits off, `--concurrency 512`, `RUNCAST_DEMO_DELAY=0`.

Printed per row, all from the same sitting:
  - time from the first `start` to every run paused (seen by its watchers), with dashboards and without (ratio);
  - `inbox.added` p50 / p99 per hub: from the `ts` of the logged `approval.requested` to its arrival at each
    dashboard (and, in brackets, of the same event at the run's first watcher: the run-event path, which the
    feeds' cannot beat); `inbox.removed` p50 / p99 per hub, from the `ts` of the `approval.cancelled` (every run is cancelled
    over HTTP once all are paused);
  - hub CPU per dashboard frame, against the floor, measured in the hubs: the event loop thread's CPU in the feeds'
    flushes (each tick's fold and writes; `runcast_feed_cpu_seconds`) from the first start to all paused, per feed
    frame written then (`runcast_feed_frames_out`); the floor is the same thread's CPU in the run-event fan-out's
    writes (`runcast_fanout_cpu_seconds`: pre-framed bytes, one write per client) per frame while the M dashboard
    connections watch three runs' live events. Beside it, the whole-process figure it replaced: (the hubs' process
    CPU over the same window, minus the sitting without dashboards) / dashboard frames, against (the process CPU of
    the three watched runs, less three unwatched) / their frames. Both sittings' hubs spend 20-30 s of CPU on the
    runs either way, so that difference of two sittings carries seconds of noise against a signal of a few seconds;
    the thread CPU clock counts only the code in question (user and system time of the loop's thread: the socket
    writes included, other threads such as the Redis worker's not);
  - dashboard frames per run per dashboard (inbox.added, inbox.removed, run.status over the whole sitting);
  - errors (by code) and closes, on every client; starts not acked;
  - the consistency check: every dashboard's inbox, folded from its frames, against `GET /api/approvals` with its
    token, once all runs are paused and again at the end.
Nothing is asserted. The dashboards are one Node process (bench/dashboards_client.mjs), the watchers and starters
this Python process; all share the machine with the hubs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import websockets

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "server")]

from hubtest import ADMIN, OPERATOR, Process, base_env, free_port, token  # noqa: E402
from redis_server import RedisServer  # noqa: E402

DEFAULT_GRID = "memory:50:500,memory:500:1000,memory:1000:200,redis:200:500,redis:500:500,redis:500:1000"
CLK = os.sysconf("SC_CLK_TCK")
FLOOR_ROUNDS = 3  # runs watched (and not) for the floor
# The hub closes a keep-alive connection idle past its header timeout (10 s): no reuse, no stale connection.
NO_KEEPALIVE = httpx.Limits(max_keepalive_connections=0)


def ts(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def cpu_s(pid: int) -> float:
    """utime + stime of a process (and its reaped children), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / CLK


async def hub_counters(hubs: "Hubs") -> dict[str, float]:
    """The delivery counters of /metrics, summed over the hubs: fanout_cpu, feed_cpu (seconds), feed_frames."""
    from prometheus_client.parser import text_string_to_metric_families

    names = {
        "runcast_fanout_cpu_seconds_total": "fanout_cpu",
        "runcast_feed_cpu_seconds_total": "feed_cpu",
        "runcast_feed_frames_out_total": "feed_frames",
    }
    out = dict.fromkeys(names.values(), 0.0)
    async with httpx.AsyncClient(timeout=60, limits=NO_KEEPALIVE) as http:
        for i in range(len(hubs.procs)):
            r = await http.get(hubs.http(i) + "/metrics", headers={"Authorization": f"Bearer {ADMIN}"})
            for fam in text_string_to_metric_families(r.text):
                for sample in fam.samples:
                    if sample.name in names:
                        out[names[sample.name]] += sample.value
    return out


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))] if xs else float("nan")


class NodeDashboards:
    """The M dashboards, in one Node process (bench/dashboards_client.mjs): one JSON command per line, one answer."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.specs: list[dict[str, Any]] = []

    @classmethod
    async def start(cls) -> "NodeDashboards":
        proc = await asyncio.create_subprocess_exec(
            "node",
            str(ROOT / "bench" / "dashboards_client.mjs"),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=1 << 26,
        )
        return cls(proc)

    async def call(self, cmd: str, **args: Any) -> Any:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write((json.dumps({"cmd": cmd, **args}) + "\n").encode())
        await self.proc.stdin.drain()
        answer = json.loads(await self.proc.stdout.readline())
        if isinstance(answer, dict) and "error" in answer:
            raise RuntimeError(f"dashboards_client {cmd}: {answer['error']}")
        return answer

    def cpu(self) -> float:
        return cpu_s(self.proc.pid)

    async def stop(self) -> None:
        if self.proc.returncode is None:
            try:
                await asyncio.wait_for(self.call("close"), 10)
            except Exception:
                pass
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
            except TimeoutError:
                self.proc.kill()


class Conn:
    """One client (the watchers and the starters): its errors, how it closed, and `on_frame` for every frame."""

    def __init__(self, ws: Any, hub: int, tok: str) -> None:
        self.ws, self.hub, self.tok = ws, hub, tok
        self.errors: Counter[str] = Counter()
        self.closed: int | None = None
        self.on_frame: Any = None
        self.task = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, url: str, hub: int, tok: str) -> "Conn":
        ws = await websockets.connect(
            url, subprotocols=["runcast.v1.json"], max_size=None, max_queue=None, open_timeout=120, ping_timeout=None
        )
        await ws.send(json.dumps({"type": "hello", "token": tok}))
        json.loads(await ws.recv())
        return cls(ws, hub, tok)

    async def _read(self) -> None:
        try:
            async for msg in self.ws:
                now = time.time()
                for line in msg.splitlines() if isinstance(msg, str) else [msg]:
                    f = json.loads(line)
                    if f.get("type") == "error":
                        self.errors[f.get("code", "?")] += 1
                    if self.on_frame is not None:
                        self.on_frame(self, now, f)
        except websockets.ConnectionClosed as exc:
            self.closed = exc.rcvd.code if exc.rcvd else 1006

    async def send(self, frame: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(frame))

    async def close(self) -> None:
        await self.ws.close()
        self.task.cancel()


async def until(pred: Any, timeout: float, what: str) -> bool:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            print(f"  (gave up waiting for {what} after {timeout:.0f} s)", flush=True)
            return False
        await asyncio.sleep(0.02)
    return True


class Hubs:
    def __init__(self, backend: str, tmp: Path, redis_url: str | None) -> None:
        env = base_env(
            tmp,
            RUNCAST_DEMO_DELAY="0",
            RUNCAST_RATE_PER_S="1000000",
            RUNCAST_RATE_BURST="1000000",
            RUNCAST_LOG_LEVEL="WARNING",
        )
        common = ["--agents", "demo", "--concurrency", "512", "--max-connections", "0", "--max-unauthenticated", "0"]
        self.procs = []
        self.workers = []
        for i in range(1 if backend == "memory" else 2):
            args = ["serve", "--port", str(free_port()), *common]
            if redis_url:
                args += ["--redis", redis_url]
            if i > 0 or backend == "redis+worker":
                args.append("--no-worker")  # the first hub runs the worker, or (redis+worker) a process of its own
            self.procs.append(Process(args, env, tmp / f"hub{i}.log", int(args[2])))
        if backend == "redis+worker":
            worker = ["worker", "--agents", "demo", "--concurrency", "512", "--redis", str(redis_url)]
            self.workers.append(Process(worker, env, tmp / "worker.log"))

    def start(self) -> "Hubs":
        for p in self.procs:
            p.start(wait=False)
        for p in self.procs:
            p.wait_ready()
        for w in self.workers:
            w.start(wait=False)
        return self

    def stop(self) -> None:
        for p in self.procs + self.workers:
            p.stop()

    def cpu(self) -> list[float]:
        return [cpu_s(p.proc.pid) for p in self.procs]  # type: ignore[union-attr]

    def ws(self, i: int) -> str:
        return self.procs[i % len(self.procs)].ws_url

    def http(self, i: int) -> str:
        return self.procs[i % len(self.procs)].url


async def inbox_check(hubs: Hubs, dashboards: NodeDashboards) -> tuple[int, int]:
    """(dashboards whose inbox matches GET /api/approvals with their token, dashboards checked)."""
    sem = asyncio.Semaphore(32)
    ok = 0
    inboxes = (await dashboards.call("inboxes"))["inboxes"]
    async with httpx.AsyncClient(timeout=60, limits=NO_KEEPALIVE) as http:

        async def one(spec: dict[str, Any], inbox: list[str]) -> bool:
            async with sem:
                r = await http.get(
                    hubs.http(spec["hub"]) + "/api/approvals?open=1",
                    headers={"Authorization": f"Bearer {spec['token']}"},
                )
            return r.status_code == 200 and {a["approval_id"] for a in r.json()["approvals"]} == set(inbox)

        for good in await asyncio.gather(*(one(spec, ib) for spec, ib in zip(dashboards.specs, inboxes))):
            ok += good
    return ok, len(inboxes)


async def sitting(backend: str, n: int, m: int, redis_url: str | None, floor: bool) -> dict[str, Any]:
    """One sitting: fresh hubs, M dashboards, N runs. Returns the figures of the row."""
    tmp = Path(tempfile.mkdtemp(prefix=f"runcast-bench-dash-{backend}-"))
    if redis_url:
        import redis as sync_redis

        sync_redis.Redis.from_url(redis_url).flushall()
    hubs = Hubs(backend, tmp, redis_url).start()
    nh = len(hubs.procs)
    out: dict[str, Any] = {"hubs": nh}
    dashboards = await NodeDashboards.start()
    try:
        dashboards.specs = [
            {"url": hubs.ws(i), "hub": i % nh, "token": token(f"dash{i}", ["approver"], name=f"Dash {i}", ttl=7200)}
            for i in range(m)
        ]
        if m and not (await dashboards.call("open", dashboards=dashboards.specs, timeout_s=300))["ok"]:
            print("  (gave up waiting for the dashboards' snapshots after 300 s)", flush=True)
        pool = max(2, n // 5)
        watchers = [await Conn.open(hubs.ws(i), i % nh, ADMIN) for i in range(pool)]
        starters = [await Conn.open(hubs.ws(i), i % nh, OPERATOR) for i in range(2)]
        run_ids: list[str] = []
        requested: dict[str, tuple[str, float]] = {}  # run_id -> (approval_id, ts of approval.requested)
        paused_at: dict[str, float] = {}
        closed_ts: dict[str, float] = {}  # approval_id -> ts of approval.cancelled / decided
        unanswered = {"start": 0}
        watched: list[float] = []  # approval.requested at its first watcher, from its ts (the run-event path)

        def on_watch(c: Conn, now: float, f: dict[str, Any]) -> None:
            t = f.get("type")
            if t == "approval.requested":
                if f["run_id"] not in requested:
                    watched.append(now - ts(f["ts"]))
                requested.setdefault(f["run_id"], (f["data"]["approval_id"], ts(f["ts"])))
                paused_at.setdefault(f["run_id"], now)
            elif t in ("approval.cancelled", "approval.decided", "approval.expired"):
                closed_ts.setdefault(f["data"]["approval_id"], ts(f["ts"]))

        acks: list[dict[str, Any]] = []

        def on_start(c: Conn, now: float, f: dict[str, Any]) -> None:
            if f.get("type") == "ack" and "run_id" in f:
                rid = f["run_id"]
                run_ids.append(rid)
                k = len(run_ids) - 1
                for w in (watchers[(2 * k) % pool], watchers[(2 * k + 1) % pool]):
                    asyncio.ensure_future(w.send({"type": "subscribe", "run_id": rid}))
            acks.append(f)

        for w in watchers:
            w.on_frame = on_watch
        for s in starters:
            s.on_frame = on_start
        counters0 = await hub_counters(hubs)
        cpu0 = hubs.cpu()
        me0 = time.process_time() + dashboards.cpu()
        frames0 = (await dashboards.call("frames"))["feed"]
        t0 = time.time()
        for j, s in enumerate(starters):
            k = n // 2 + (n % 2 if j == 0 else 0)
            for i in range(k):
                await s.ws.send(json.dumps({"type": "start", "id": f"s{j}-{i}", "agent": "demo", "input": "bench"}))
        await until(lambda: len(acks) >= n, 600, "every start answered")
        await until(lambda: len(paused_at) >= len(run_ids), 900, "every run paused")
        t_paused = max(paused_at.values(), default=t0) - t0
        cpu1 = hubs.cpu()
        out["clients_cpu"] = time.process_time() + dashboards.cpu() - me0
        counters1 = await hub_counters(hubs)
        out["feed_cpu"] = counters1["feed_cpu"] - counters0["feed_cpu"]
        out["feed_frames"] = counters1["feed_frames"] - counters0["feed_frames"]
        frames1 = (await dashboards.call("frames"))["feed"]
        out["paused_s"] = t_paused
        out["watched"] = sorted(watched)
        out["starts_acked"] = len(run_ids)
        unanswered["start"] = n - len(acks)
        out["start_errors"] = Counter(f.get("code") for f in acks if f.get("type") == "error")
        out["cpu_run"] = [b - a for a, b in zip(cpu0, cpu1)]
        out["dash_frames_run"] = frames1 - frames0
        if m:
            aids = sorted({a for a, _ in requested.values()})
            if not (await dashboards.call("wait", what="added", ids=aids, timeout_s=120))["ok"]:
                print("  (gave up waiting for every inbox.added after 120 s)", flush=True)
            await asyncio.sleep(1.0)
            out["check_paused"] = await inbox_check(hubs, dashboards)
            out["added"] = await dashboards.call("latency", what="added", at=dict(requested.values()))
        # Every run cancelled over HTTP: each approval leaves every inbox.
        sem = asyncio.Semaphore(16)
        async with httpx.AsyncClient(timeout=120, limits=NO_KEEPALIVE) as http:

            async def cancel(i: int, rid: str) -> None:
                async with sem:
                    await http.post(
                        hubs.http(i) + f"/api/runs/{rid}/cancel",
                        json={},
                        headers={"Authorization": f"Bearer {OPERATOR}"},
                    )

            await asyncio.gather(*(cancel(i, rid) for i, rid in enumerate(run_ids)))
        if m:
            aids = sorted({a for a, _ in requested.values()})
            if not (await dashboards.call("wait", what="removed", ids=aids, timeout_s=300))["ok"]:
                print("  (gave up waiting for every inbox.removed after 300 s)", flush=True)
            await until(lambda: set(aids) <= set(closed_ts), 60, "the watchers' approval.cancelled")
            at = {a: closed_ts[a] for a in aids if a in closed_ts}
            out["removed"] = await dashboards.call("latency", what="removed", at=at)
            await asyncio.sleep(1.0)
            out["check_end"] = await inbox_check(hubs, dashboards)
            out["frames_per_run_dash"] = (await dashboards.call("frames"))["feed"] / max(1, n * m)
        if floor and m:
            # The floor: the same M connections watch one run's live events (the run-event fan-out path: pre-framed
            # bytes, one write per client). The CPU of the same run with nobody watching is taken off.
            async with httpx.AsyncClient(timeout=60, limits=NO_KEEPALIVE) as http:
                auth = {"Authorization": f"Bearer {ADMIN}"}

                async def floor_run(watch: bool) -> tuple[float, float, int]:
                    """(the hubs' process CPU, their fan-out thread CPU, run-event frames the dashboards got)."""
                    r = await http.post(
                        hubs.http(0) + "/api/runs", json={"agent": "demo", "input": "floor"}, headers=auth
                    )
                    rid = r.json()["run_id"]
                    if watch:
                        await dashboards.call("subscribe", run_id=rid, timeout_s=300)
                    aid = None
                    while aid is None:
                        det = (await http.get(hubs.http(0) + f"/api/runs/{rid}", headers=auth)).json()
                        aid = next((a["approval_id"] for a in det.get("pending_approvals") or []), None)
                        await asyncio.sleep(0.05)
                    before = await dashboards.call("frames")
                    k0 = await hub_counters(hubs)
                    c0 = hubs.cpu()
                    await http.post(
                        hubs.http(0) + f"/api/runs/{rid}/approvals/{aid}", json={"decision": "approve"}, headers=auth
                    )
                    if watch:
                        await dashboards.call("until_event", run_id=rid, type="run.completed", timeout_s=300)
                    else:
                        while (await http.get(hubs.http(0) + f"/api/runs/{rid}", headers=auth)).json()[
                            "status"
                        ] != "completed":
                            await asyncio.sleep(0.01)
                    c1 = hubs.cpu()
                    k1 = await hub_counters(hubs)
                    after = await dashboards.call("frames")
                    # the run's own events: the dashboards' feed frames of it (run.status, inbox) are not the floor's
                    got = (after["all"] - before["all"]) - (after["feed"] - before["feed"])
                    return sum(c1) - sum(c0), k1["fanout_cpu"] - k0["fanout_cpu"], got

                # One run's events to M clients is a few hundredths of a second of CPU, near the resolution of the
                # process CPU clock (1 / CLK_TCK per process): FLOOR_ROUNDS runs each way, alternately, and no
                # whole-process floor at all when the difference is within that resolution (a ratio against it would
                # be noise). The thread CPU clock of the fan-out has nanoseconds.
                alone = cpu = fan = 0.0
                frames = 0
                for _ in range(FLOOR_ROUNDS):
                    alone += (await floor_run(False))[0]
                    c, fc, f = await floor_run(True)
                    cpu, fan, frames = cpu + c, fan + fc, frames + f
                resolution = 2 * FLOOR_ROUNDS * len(hubs.procs) / CLK
                out["floor_us"] = (cpu - alone) / max(1, frames) * 1e6 if cpu - alone > resolution else None
                out["fanout_floor_us"] = fan / max(1, frames) * 1e6
                out["floor_frames"] = frames
        conns = watchers + starters
        status = await dashboards.call("status")
        out["errors"] = sum((c.errors for c in conns), Counter(status["errors"]))
        out["closes"] = Counter(c.closed for c in conns if c.closed is not None) + Counter(status["closes"])
        for c in conns:
            await c.close()
        logs = "".join(p.log_path.read_text() for p in hubs.procs if p.log_path.exists())
        out["log_internal"] = logs.count("cannot reach its backend") + logs.count("no answer from Redis")
    finally:
        await dashboards.stop()
        hubs.stop()
    return out


def ms(x: float) -> str:
    return f"{x * 1000:.0f}"


def per_hub(d: dict[str, list[float]]) -> str:
    """{hub: [p50, p99, samples]} as 'hub0 p50 / p99'."""
    return "; ".join(f"hub{h} {ms(p50)} / {ms(p99)}" for h, (p50, p99, _) in sorted(d.items())) or "-"


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grid", default=DEFAULT_GRID, help="comma-separated backend:N:M rows (default: the issue's grid)")
    ap.add_argument("--no-floor", action="store_true", help="skip the floor measurement")
    ap.add_argument(
        "--pairs",
        type=int,
        default=1,
        help="sittings per row, each a baseline then the dashboards, one table line each; with more than one, the "
        "median pace of the row is printed after the table (the machine's speed drifts between sittings)",
    )
    args = ap.parse_args()
    rows = [(b, int(n), int(m)) for b, n, m in (r.split(":") for r in args.grid.split(","))]
    redis = None
    if any(b.startswith("redis") for b, _, _ in rows):
        redis = RedisServer(persist=False)
        redis.start()
    print(
        "| backend | N | M | all paused (no dashboards; ratio; CPU until then) | inbox.added p50 / p99 ms | inbox.removed p50 / p99 ms | "
        "hub CPU per dashboard frame, feeds' thread CPU (fan-out floor; ratio); whole hub (floor; ratio) | frames per run per dashboard | errors, closes, starts not acked | "
        "inboxes = /api/approvals (paused; end) |"
    )
    print("|---|---:|---:|---|---|---|---|---:|---|---|", flush=True)
    paces: dict[str, list[float]] = {}
    try:
        for backend, n, m in [row for row in rows for _ in range(max(1, args.pairs))]:
            url = redis.url if backend.startswith("redis") and redis else None
            base = await sitting(backend, n, 0, url, floor=False)
            r = await sitting(backend, n, m, url, floor=not args.no_floor)
            paces.setdefault(f"{backend} N={n} M={m}", []).append(r["paused_s"] / base["paused_s"])
            extra = sum(r["cpu_run"]) - sum(base["cpu_run"])
            per = extra / max(1, r["dash_frames_run"]) * 1e6
            direct = r["feed_cpu"] / max(1, r["feed_frames"]) * 1e6
            floor = r.get("floor_us")
            fan = r.get("fanout_floor_us")
            cost = f"{direct:.2f} µs" + (f" ({fan:.2f} µs; **{direct / fan:.2f}x**)" if fan else "")
            cost += f"; whole hub {per:.1f} µs" + (
                f" ({floor:.1f} µs; {per / floor:.2f}x)"
                if floor
                else " (floor within the CPU clock's resolution: not measured)"
                if "floor_us" in r
                else ""
            )
            errs = dict(r["errors"] + base["errors"])
            w = r["watched"]
            watched = f"{ms(pct(w, 0.5))} / {ms(pct(w, 0.99))}" if w else "-"
            print(
                f"| {backend}{' x' + str(r['hubs']) if r['hubs'] > 1 else ''} | {n} | {m} | "
                f"{r['paused_s']:.1f} s ({base['paused_s']:.1f} s; {r['paused_s'] / base['paused_s']:.2f}x; hubs' CPU "
                f"{sum(r['cpu_run']):.1f} s vs {sum(base['cpu_run']):.1f} s, clients' {r['clients_cpu']:.1f} s vs "
                f"{base['clients_cpu']:.1f} s) | "
                f"{per_hub(r.get('added', {}))} (the run's watchers: {watched}) | {per_hub(r.get('removed', {}))} | {cost} | "
                f"{r.get('frames_per_run_dash', float('nan')):.2f} | errors {errs or 0}, closes {dict(r['closes']) or 0}, "
                f"not acked {n - r['starts_acked']} (baseline {n - base['starts_acked']}), log 'internal' {r['log_internal']} | "
                f"{'%d/%d' % r['check_paused'] if 'check_paused' in r else '-'}; {'%d/%d' % r['check_end'] if 'check_end' in r else '-'} |",
                flush=True,
            )
        if args.pairs > 1:
            print()
            for row, xs in paces.items():
                each = ", ".join(f"{x:.2f}x" for x in xs)
                print(f"pace, {row}: median {statistics.median(xs):.2f}x over {len(xs)} sittings ({each})", flush=True)
    finally:
        if redis:
            redis.stop()


if __name__ == "__main__":
    asyncio.run(main())
