"""Fan-out to many watchers, against references measured in the same run on the same machine with the same clients.

    .venv/bin/python bench/fanout.py                          # everything, 1,000 watchers (a few minutes)
    .venv/bin/python bench/fanout.py --only floor,runcast --rates 100 --watchers 200

The watchers are Node processes (bench/fanout_client.mjs, the `ws` package of client_js), never in a server's process.
Each checks that it saw seq 1..N exactly once and in order. The servers:

  floor      pre-framed bytes, one `transport.write` per client per event (bench/fanout_refs.py): the floor for Python
  naive      Starlette on uvicorn, a loop of `await ws.send_text` per client per event
  socketio   python-socketio with its Redis manager (an optional bench dependency: pip install '.[bench]')
  runcast    `runcast serve` (memory backend) streaming the firehose agent with RUNCAST_COALESCE_S=0, so one event per
             word; the watchers connect and sync first, then the model starts (BENCH_GO_FILE)

and, separately: replay (a finished 2,000-event run to 200 clients at once, against a bare Starlette endpoint sending
the same frames: bench/baseline.py), idle (RSS per idle authenticated connection), processes (`--processes N` on Redis,
delivered events per second with N = 1 and 2).

Server CPU is utime + stime from /proc/PID/stat (the server and its child processes), over the streaming window only;
per delivered event = CPU / (watchers x events they received). Delay is from the event's `ts` (set when it is logged or
made) to its arrival at a watcher. Every figure is printed, with its ratio to the floor of the same run; nothing is
asserted. Figures are noisy on a shared machine: compare ratios, and rerun.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "server")]

from hubtest import SECRET, free_port, token  # noqa: E402

CLIENT = ROOT / "bench" / "fanout_client.mjs"
OPERATOR = token("bench", ["operator", "viewer"], name="Bench")
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


# ------------------------------------------------------------------------------------------------ processes
def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / TICK


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
        except FileNotFoundError:
            pass
    return total


def family(pid: int) -> list[int]:
    """pid and its descendants."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def bench_env(**extra: str) -> dict[str, str]:
    e = dict(os.environ)
    e.pop("OPENAI_API_KEY", None)
    e.update(
        {
            "RUNCAST_SECRET": SECRET,
            "RUNCAST_COALESCE_S": "0",
            "RUNCAST_LOG_LEVEL": "WARNING",
            "RUNCAST_RATE_PER_S": "100000",
            "RUNCAST_RATE_BURST": "100000",
            "OPENAI_AGENTS_DISABLE_TRACING": "1",
            "RUNCAST_LOOP": os.environ.get("RUNCAST_LOOP", "asyncio"),
            # a bench is one user opening thousands of connections at once: the per-node caps and quotas are off
            "RUNCAST_MAX_CONNECTIONS": "0",
            "RUNCAST_MAX_UNAUTHENTICATED": "0",
            "RUNCAST_MAX_STARTS_PER_MINUTE": "0",
            "RUNCAST_MAX_OPEN_RUNS": "0",
            "PYTHONPATH": os.pathsep.join([str(ROOT / "bench"), str(ROOT / "server"), e.get("PYTHONPATH", "")]),
        }
    )
    e.update(extra)
    return e


def raise_nofile() -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Server:
    def __init__(self, argv: list[str], env: dict[str, str], log: Path, port: int) -> None:
        self.port = port
        self.proc = subprocess.Popen(
            argv, env=env, stdout=open(log, "ab"), stderr=subprocess.STDOUT, cwd=ROOT, preexec_fn=raise_nofile
        )
        self.log = log

    @property
    def pids(self) -> list[int]:
        return family(self.proc.pid)

    def wait_listening(self, path: str = "/healthz", timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited:\n{self.log.read_text()[-3000:]}")
            try:
                httpx.get(f"http://127.0.0.1:{self.port}{path}", timeout=0.5)
                return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError(f"server on {self.port} not listening:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Watchers:
    """`procs` Node processes holding `count` watchers between them."""

    def __init__(self, count: int, procs: int, **opt: Any) -> None:
        self.count = count
        per = [count // procs + (1 if i < count % procs else 0) for i in range(procs)]
        self.procs = [
            subprocess.Popen(
                ["node", str(CLIENT), json.dumps(dict(opt, count=n))],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                bufsize=1,
                preexec_fn=raise_nofile,
            )
            for n in per
            if n
        ]

    async def _line(self, p: subprocess.Popen[str]) -> str:
        assert p.stdout is not None
        return (await asyncio.to_thread(p.stdout.readline)).strip()

    async def ready(self, timeout: float = 180) -> None:
        lines = await asyncio.wait_for(asyncio.gather(*(self._line(p) for p in self.procs)), timeout)
        bad = [json.loads(x.removeprefix("failed ")) for x in lines if x != "ready"]
        if bad:
            closes: dict[str, int] = {}
            for b in bad:
                for k, v in b["closes"].items():
                    closes[k] = closes.get(k, 0) + v
            raise RuntimeError(
                f"{sum(b['failed'] for b in bad)} of {self.count} watchers failed to connect "
                f"(closes {closes}): {[e for b in bad for e in b['errors']][:3]}"
            )

    def say(self, cmd: str) -> None:
        for p in self.procs:
            assert p.stdin is not None
            p.stdin.write(cmd + "\n")
            p.stdin.flush()

    async def measure(self, pids: list[int], go: Any) -> tuple["Result", float, float]:
        """Calls `go()` (what starts the stream) and waits for every watcher's results: (results, the CPU seconds `pids`
        used meanwhile, the wall-clock time of the go)."""
        c0, t0 = cpu_seconds(pids), time.time()
        go()
        res = await self.results()
        return res, cpu_seconds(pids) - c0, t0

    async def results(self) -> "Result":
        outs = [json.loads(x) for x in await asyncio.gather(*(self._line(p) for p in self.procs))]
        return Result.merge(outs)

    def close(self) -> None:
        for p in self.procs:
            try:
                self.say("exit")
            except (BrokenPipeError, ValueError):
                pass
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


@dataclass
class Result:
    connected: int = 0
    ok: int = 0
    events: int = 0
    frames: int = 0
    done_ms: float = 0
    errors: list[str] = field(default_factory=list)
    closes: dict[str, int] = field(default_factory=dict)
    hist: dict[int, int] = field(default_factory=dict)
    bucket_ms: float = 0.25

    @classmethod
    def merge(cls, outs: list[dict[str, Any]]) -> "Result":
        r = cls()
        for o in outs:
            r.connected += o["connected"]
            r.ok += o["ok"]
            r.events += o["events"]
            r.frames += o["frames"]
            r.done_ms = max(r.done_ms, o["done_ms"])
            r.errors += o["errors"]
            for k, v in o["closes"].items():
                r.closes[k] = r.closes.get(k, 0) + v
            for k, v in o["hist"].items():
                r.hist[int(k)] = r.hist.get(int(k), 0) + v
            r.bucket_ms = o["bucket_ms"]
        return r

    def pct(self, p: float) -> float:
        total = sum(self.hist.values())
        if not total:
            return float("nan")
        want, seen = total * p / 100, 0
        for k in sorted(self.hist):
            seen += self.hist[k]
            if seen >= want:
                return (k + 0.5) * self.bucket_ms
        return float("nan")


@dataclass
class Row:
    name: str
    watchers: int
    rate: float
    cpu_us: float = float("nan")
    p50: float = float("nan")
    p99: float = float("nan")
    wall: float = float("nan")
    delivered_s: float = float("nan")
    ok: str = ""
    note: str = ""


# ------------------------------------------------------------------------------------------------ scenarios
async def live_reference(
    kind: str,
    args: argparse.Namespace,
    tmp: Path,
    rate: float,
    n: int,
    watchers: int,
    redis_url: str | None = None,
    loop: str = "asyncio",
) -> Row:
    port = free_port()
    argv = [sys.executable, str(ROOT / "bench" / "fanout_refs.py"), kind, str(port)] + (
        [redis_url] if redis_url else []
    )
    srv = Server(argv, bench_env(RUNCAST_LOOP=loop), tmp / f"{kind}.log", port)
    w: Watchers | None = None
    try:
        srv.wait_listening("/go?n=0&rate=1" if kind == "floor" else "/nothing")
        mode = "socketio" if kind == "socketio" else "raw"
        url = f"ws://127.0.0.1:{port}" + ("" if kind == "socketio" else "/ws")
        w = Watchers(watchers, args.client_procs, mode=mode, url=url, timeout_s=args.timeout)
        await w.ready()
        await asyncio.sleep(1)
        res, cpu, t0 = await w.measure(
            srv.pids, lambda: httpx.get(f"http://127.0.0.1:{port}/go?n={n}&rate={rate}", timeout=10)
        )
        return _row(kind, watchers, rate, res, cpu, t0, n)
    finally:
        if w:
            w.close()
        srv.stop()


def _row(name: str, watchers: int, rate: float, res: Result, cpu: float, t0: float, n: int) -> Row:
    wall = res.done_ms / 1000 - t0 if res.done_ms else float("nan")
    row = Row(
        name,
        watchers,
        rate,
        cpu_us=cpu / max(1, res.events) * 1e6,
        p50=res.pct(50),
        p99=res.pct(99),
        wall=wall,
        delivered_s=res.events / wall if wall == wall and wall > 0 else float("nan"),
    )
    row.ok = f"{res.ok}/{watchers}"
    if res.errors:
        row.note = "; ".join(res.errors[:3])
    row.note = (row.note + f" {n / wall:.0f} ev/s").strip() if wall == wall else row.note
    return row


def start_runcast(tmp: Path, name: str, env: dict[str, str], extra: list[str] | None = None) -> Server:
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "runcast.cli",
        "serve",
        "--port",
        str(port),
        "--agents",
        "bench_agents",
        *(extra or []),
    ]
    srv = Server(argv, env, tmp / f"{name}.log", port)
    srv.wait_listening()
    return srv


def start_run(port: int) -> str:
    r = httpx.post(
        f"http://127.0.0.1:{port}/api/runs",
        json={"agent": "firehose", "input": "go"},
        headers={"Authorization": f"Bearer {OPERATOR}"},
        timeout=10,
    )
    r.raise_for_status()
    return r.json()["run_id"]


def src_env(src: Path | None) -> dict[str, str]:
    """Run another checkout's runcast (its server/ first on the path) with this bench's agents."""
    if src is None:
        return {}
    return {"PYTHONPATH": os.pathsep.join([str(ROOT / "bench"), str(src / "server"), os.environ.get("PYTHONPATH", "")])}


def failed(name: str, watchers: int, rate: float, exc: BaseException) -> Row:
    return Row(
        name,
        watchers,
        rate,
        ok="failed",
        note=f"{type(exc).__name__}: {str(exc).splitlines()[-1] if str(exc) else ''}"[:200],
    )


async def live_runcast(
    args: argparse.Namespace,
    tmp: Path,
    rate: float,
    n: int,
    watchers: int,
    label: str = "runcast",
    extra: list[str] | None = None,
    env: dict[str, str] | None = None,
    batch: bool = False,
    src: Path | None = None,
) -> Row:
    go = tmp / f"go-{time.monotonic_ns()}"
    srv = start_runcast(
        tmp,
        label.replace(" ", "_"),
        bench_env(BENCH_WORDS=str(n), BENCH_DELAY=str(1 / rate), BENCH_GO_FILE=str(go), **src_env(src), **(env or {})),
        extra,
    )
    w: Watchers | None = None
    try:
        run_id = start_run(srv.port)
        w = Watchers(
            watchers,
            args.client_procs if watchers > 1 else 1,
            mode="runcast",
            url=f"ws://127.0.0.1:{srv.port}/ws",
            token=OPERATOR,
            run_id=run_id,
            timeout_s=args.timeout,
            batch=batch,
        )
        await w.ready()
        await asyncio.sleep(1)
        res, cpu, t0 = await w.measure(srv.pids, go.touch)
        return _row(label, watchers, rate, res, cpu, t0, n)
    finally:
        if w:
            w.close()
        srv.stop()


async def replay(
    args: argparse.Namespace, tmp: Path, events: int, clients: int, src: Path | None = None, label: str = "runcast"
) -> list[Row]:
    go = tmp / "go-replay"
    go.touch()
    srv = start_runcast(
        tmp,
        "replay",
        bench_env(BENCH_WORDS=str(events), BENCH_DELAY="0", BENCH_GO_FILE=str(go), **src_env(src)),
        ["--max-queue", "100000"],
    )
    base: Server | None = None
    rows = []
    try:
        run_id = start_run(srv.port)
        hdr = {"Authorization": f"Bearer {OPERATOR}"}
        while (d := httpx.get(f"http://127.0.0.1:{srv.port}/api/runs/{run_id}", headers=hdr).json())[
            "status"
        ] != "completed":
            time.sleep(0.2)
        head = d["head_seq"]
        frames, since = [], 0
        while True:
            body = httpx.get(
                f"http://127.0.0.1:{srv.port}/api/runs/{run_id}/events?since={since}&limit=1000", headers=hdr
            ).json()
            frames += [json.dumps(e, separators=(",", ":")) for e in body["events"]]
            if not body["more"]:
                break
            since = body["next_since"]
        (tmp / "frames.jsonl").write_text("\n".join(frames) + "\n")
        bport = free_port()
        base = Server(
            [sys.executable, str(ROOT / "bench" / "baseline.py"), str(bport)],
            bench_env(FRAMES_FILE=str(tmp / "frames.jsonl")),
            tmp / "baseline.log",
            bport,
        )
        base.wait_listening("/nothing")

        async def once(kind: str, b: bool = False) -> Row:
            if kind == "baseline":
                w = Watchers(
                    clients,
                    args.client_procs,
                    mode="raw",
                    url=f"ws://127.0.0.1:{bport}/ws",
                    replay=True,
                    timeout_s=args.timeout,
                )
                pids = base.pids if base else []
            else:
                w = Watchers(
                    clients,
                    args.client_procs,
                    mode="runcast",
                    url=f"ws://127.0.0.1:{srv.port}/ws",
                    token=OPERATOR,
                    run_id=run_id,
                    wait_go=True,
                    replay=True,
                    timeout_s=args.timeout,
                    batch=b,
                )
                pids = srv.pids
            try:
                await w.ready()
                await asyncio.sleep(0.5)
                res, cpu, t0 = await w.measure(pids, lambda: w.say("go"))
            finally:
                w.close()
            dt = res.done_ms / 1000 - t0
            name = "replay: bare Starlette" if kind == "baseline" else f"replay: {label}{' (batch)' if b else ''}"
            return Row(
                name,
                clients,
                0,
                cpu_us=cpu / (clients * head) * 1e6,
                wall=dt,
                delivered_s=clients * head / dt,
                ok=f"{res.ok}/{clients}",
                note="; ".join(res.errors[:2]) + f" {head} events",
            )

        for _ in range(args.repeat):
            rows.append(await once("baseline"))
            rows.append(await once("runcast"))
            if args.batch and src is None:
                rows.append(await once("runcast", True))
        return rows
    finally:
        if base:
            base.stop()
        srv.stop()


async def idle(args: argparse.Namespace, tmp: Path, conns: int, src: Path | None = None, label: str = "runcast") -> Row:
    try:
        return await _idle(args, tmp, conns, src, label)
    except RuntimeError as exc:
        return failed(f"idle: {label}", conns, 0, exc)


async def _idle(args: argparse.Namespace, tmp: Path, conns: int, src: Path | None, label: str) -> Row:
    srv = start_runcast(tmp, "idle", bench_env(**src_env(src)))
    w: Watchers | None = None
    try:
        httpx.get(f"http://127.0.0.1:{srv.port}/api/agents", headers={"Authorization": f"Bearer {OPERATOR}"})
        warm = Watchers(100, 1, mode="idle", url=f"ws://127.0.0.1:{srv.port}/ws", token=OPERATOR, timeout_s=600)
        await warm.ready()
        await asyncio.sleep(1)
        r0 = rss_bytes(srv.pids)
        c0, t0 = cpu_seconds(srv.pids), time.monotonic()
        w = Watchers(
            conns,
            max(4, conns // 2500),
            mode="idle",
            url=f"ws://127.0.0.1:{srv.port}/ws",
            token=OPERATOR,
            timeout_s=600,
        )
        await w.ready(timeout=600)
        up_s, cpu_ms = time.monotonic() - t0, (cpu_seconds(srv.pids) - c0) * 1000 / conns
        await asyncio.sleep(2)
        r1 = rss_bytes(srv.pids)
        warm.close()
        per = (r1 - r0) / conns
        return Row(
            f"idle: {label}",
            conns,
            0,
            ok=f"{conns}",
            note=f"RSS {r0 / 2**20:.0f} -> {r1 / 2**20:.0f} MiB, "
            f"{per / 1024:.1f} KiB per authenticated connection; all up in {up_s:.1f} s, "
            f"server CPU {cpu_ms:.2f} ms per connection (upgrade and hello)",
        )
    finally:
        if w:
            w.close()
        srv.stop()


def _role(pid: int) -> str:
    """serve or worker, from a process's command line (the --processes parent is a serve that only supervises)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_text().split("\0")
    except FileNotFoundError:
        return "?"
    return "worker" if "worker" in argv else "serve" if "serve" in argv else "?"


async def processes(
    args: argparse.Namespace, tmp: Path, procs: int, redis_url: str, watchers: int, n: int, rate: float
) -> Row:
    """`runcast serve --processes N --worker-process` on Redis: a run at `rate` events per second (0: as fast as the
    worker streams it), delivered events per second (all watchers) over the streaming window. The note says how much
    CPU the watchers' own processes took: they share the machine's cores with the hub processes."""
    go = tmp / f"go-procs-{procs}-{rate:g}"
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "runcast.cli",
        "serve",
        "--port",
        str(port),
        "--agents",
        "bench_agents",
        "--redis",
        redis_url,
        "--processes",
        str(procs),
        "--worker-process",
    ]
    delay = str(1 / rate) if rate else "0"
    srv = Server(
        argv,
        bench_env(BENCH_WORDS=str(n), BENCH_DELAY=delay, BENCH_GO_FILE=str(go)),
        tmp / f"procs{procs}-{rate:g}.log",
        port,
    )
    w: Watchers | None = None
    try:
        srv.wait_listening()
        time.sleep(3)  # every hub process listening (the first one answered)
        run_id = start_run(port)
        w = Watchers(
            watchers,
            args.client_procs,
            mode="runcast",
            url=f"ws://127.0.0.1:{port}/ws",
            token=OPERATOR,
            run_id=run_id,
            timeout_s=args.timeout,
            batch=args.batch,
        )
        await w.ready()
        await asyncio.sleep(1)
        pids, client_pids = srv.pids, [p.pid for p in w.procs]
        roles = {pid: _role(pid) for pid in pids}
        each0 = {pid: cpu_seconds([pid]) for pid in pids}
        c0, t0, w0 = cpu_seconds(pids), time.time(), cpu_seconds(client_pids)
        go.touch()
        res = await w.results()
        c1, w1 = cpu_seconds(pids), cpu_seconds(client_pids)
        each = {pid: cpu_seconds([pid]) - each0[pid] for pid in pids}
        row = _row(
            f"--processes {procs} (redis, {f'{rate:g} ev/s' if rate else 'burst'})", watchers, rate, res, c1 - c0, t0, n
        )
        if row.wall == row.wall:
            hubs = " + ".join(f"{each[p] / row.wall:.2f}" for p in pids if roles[p] == "serve" and each[p] > 0.01)
            worker = sum(each[p] for p in pids if roles[p] == "worker") / row.wall
            row.note += (
                f"; cores: hub processes {hubs}, worker {worker:.2f}, the watchers' Node processes "
                f"{(w1 - w0) / row.wall:.2f}"
            )
        return row

    finally:
        if w:
            w.close()
        srv.stop()


# ------------------------------------------------------------------------------------------------ the table
def show(rows: list[Row], floor_cpu: dict[float, float]) -> None:
    print(
        f"\n{'what':<34} {'watchers':>8} {'ev/s':>5} {'CPU µs/deliv':>12} {'x floor':>7} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'wall s':>7} {'deliv/s':>9} {'seq ok':>10}  note"
    )
    for r in rows:
        fl = floor_cpu.get(r.rate)
        ratio = r.cpu_us / fl if fl else float("nan")
        print(
            f"{r.name:<34} {r.watchers:>8} {r.rate:>5.0f} {r.cpu_us:>12.2f} {ratio:>7.2f} {r.p50:>7.1f} {r.p99:>7.1f} "
            f"{r.wall:>7.2f} {r.delivered_s:>9,.0f} {r.ok:>10}  {r.note}",
            flush=True,
        )


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--watchers", type=int, default=1000)
    p.add_argument("--rates", default="100,50", help="events per second of the live runs")
    p.add_argument("--seconds", type=float, default=15, help="length of each live run at its rate")
    p.add_argument("--client-procs", type=int, default=4, help="Node processes the watchers are spread over")
    p.add_argument(
        "--only",
        default="floor,naive,socketio,runcast,replay,processes,idle",
        help="comma-separated: floor, naive, socketio, runcast, replay, processes, idle",
    )
    p.add_argument("--replay-events", type=int, default=2000)
    p.add_argument("--replay-clients", type=int, default=200)
    p.add_argument("--idle", type=int, default=10_000, help="idle connections to measure memory with")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--burst-events", type=int, default=1000, help="events of each --processes run")
    p.add_argument("--processes-rates", default="0", help="events per second of the --processes runs (0: a burst)")
    p.add_argument("--batch", action="store_true", help="also measure Runcast with batched frames")
    p.add_argument("--timeout", type=float, default=300)
    p.add_argument("--keep", action="store_true", help="keep the servers' logs")
    p.add_argument("--uvloop", action="store_true", help="also measure the floor and Runcast on uvloop")
    p.add_argument(
        "--base", type=Path, help="also measure the runcast of this checkout (e.g. an export of an older commit)"
    )
    args = p.parse_args()
    only = set(args.only.split(","))
    rates = [float(x) for x in args.rates.split(",")]
    raise_nofile()
    print(
        f"runcast fan-out bench, {time.strftime('%Y-%m-%d %H:%M %Z')}: {platform.machine()} {os.cpu_count()} cpus "
        f"({_cpu_model()}), python {sys.version.split()[0]}, node {_node()}; servers and watchers share the machine",
        flush=True,
    )
    tmp = Path(tempfile.mkdtemp(prefix="runcast-fanout-"))
    rows: list[Row] = []
    floor_cpu: dict[float, float] = {}
    redis = None
    try:
        for rate in rates:
            n = int(rate * args.seconds)
            if "floor" in only:
                r = await live_reference("floor", args, tmp, rate, n, args.watchers)
                r.name = "floor: pre-framed transport.write"
                floor_cpu[rate] = r.cpu_us
                rows.append(r)
                show([r], floor_cpu)
            if "naive" in only:
                r = await live_reference("naive", args, tmp, rate, n, args.watchers)
                r.name = "naive Starlette send_text loop"
                rows.append(r)
                show([r], floor_cpu)
            if "socketio" in only:
                if redis is None:
                    from redis_server import RedisServer

                    redis = RedisServer()
                    redis.start()
                r = await live_reference("socketio", args, tmp, rate, n, args.watchers, redis.url)
                r.name = "python-socketio + AsyncRedisManager"
                rows.append(r)
                show([r], floor_cpu)
            if "runcast" in only:
                one = await live_runcast(args, tmp, rate, n, 1, "runcast, 1 watcher")
                rows.append(one)
                show([one], floor_cpu)
                r = await live_runcast(args, tmp, rate, n, args.watchers)
                r.note = f"wall {r.wall / one.wall:.2f}x 1 watcher; " + r.note
                rows.append(r)
                show([r], floor_cpu)
                if args.uvloop:
                    f = await live_reference("floor", args, tmp, rate, n, args.watchers, loop="uvloop")
                    f.name = "floor on uvloop"
                    rows.append(f)
                    show([f], floor_cpu)
                    r = await live_runcast(
                        args, tmp, rate, n, args.watchers, "runcast on uvloop", env={"RUNCAST_LOOP": "uvloop"}
                    )
                    r.note = f"wall {r.wall / one.wall:.2f}x 1 watcher; " + r.note
                    rows.append(r)
                    show([r], floor_cpu)
                if args.base:
                    try:
                        r = await live_runcast(args, tmp, rate, n, args.watchers, "runcast (base)", src=args.base)
                        r.note = f"wall {r.wall / one.wall:.2f}x 1 watcher; " + r.note
                    except Exception as exc:  # noqa: BLE001 - an old checkout may not run here: say so, go on
                        r = failed("runcast (base)", args.watchers, rate, exc)
                    rows.append(r)
                    show([r], floor_cpu)
                if args.batch:
                    r = await live_runcast(args, tmp, rate, n, args.watchers, "runcast (batch)", batch=True)
                    r.note = f"wall {r.wall / one.wall:.2f}x 1 watcher; " + r.note
                    rows.append(r)
                    show([r], floor_cpu)
        if "replay" in only:
            rr = await replay(args, tmp, args.replay_events, args.replay_clients)
            if args.base:
                rr += [
                    r
                    for r in await replay(
                        args, tmp, args.replay_events, args.replay_clients, args.base, "runcast (base)"
                    )
                    if "bare" not in r.name
                ]
            base = [r for r in rr if "bare" in r.name]
            for r in rr:
                r.note = f"{r.delivered_s / base[0].delivered_s:.2f}x bare; " + r.note
            rows += rr
            show(rr, floor_cpu)
        if "processes" in only:
            if redis is None:
                from redis_server import RedisServer

                redis = RedisServer()
                redis.start()
            for prate in [float(x) for x in args.processes_rates.split(",")]:
                pr = []
                for procs in (1, 2):
                    pr.append(await processes(args, tmp, procs, redis.url, args.watchers, args.burst_events, prate))
                pr[1].note = (
                    f"{pr[1].delivered_s / pr[0].delivered_s:.2f}x the deliveries/s of 1 process; " + pr[1].note
                )
                rows += pr
                show(pr, floor_cpu)
        if "idle" in only:
            r = await idle(args, tmp, args.idle)
            rows.append(r)
            show([r], floor_cpu)
            if args.base:
                r = await idle(args, tmp, args.idle, args.base, "runcast (base)")
                rows.append(r)
                show([r], floor_cpu)
    finally:
        if redis is not None:
            redis.cleanup()
        if args.keep:
            print(f"\nlogs in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print("\n== all figures of this run")
    show(rows, floor_cpu)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"


def _node() -> str:
    try:
        return subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "?"


if __name__ == "__main__":
    asyncio.run(main())
