"""Redis commands per event, one Redis against a Redis Cluster, as watchers grow (nothing is asserted).

    python bench/cluster.py                    # 1, 10, 50, 200 watchers; one redis-server, then 3 masters + 3 replicas
    python bench/cluster.py --watchers 1,50 --events 1000

For each deployment: one `runcast serve --redis URL` (hub + worker) streams a run of E events (the firehose agent of
bench/run.py) to N watchers. Printed per N: the run's wall time relative to one watcher, the delay from an event's
`ts` to its arrival (p50 / p99), and the Redis commands per event, summed over every master from INFO commandstats
(Lua's own calls included; time-driven commands such as blocking job reads and timer scans left out), counted over
the streaming only: the model waits (BENCH_GO_FILE) until every watcher has joined and synced. What the watchers'
joining and leaving cost (hello, subscribe, the replay read, the presence join and leave) is printed apart, per
watcher. On a cluster, live
events go by SPUBLISH to the run's shard only, so the commands per event should not grow with N either.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import bench_live, env, pct  # noqa: E402  (bench/run.py: the same live benchmark)

from hubtest import PERIODIC_COMMANDS, Process, command_counts, free_port, token  # noqa: E402
from redis_cluster import RedisCluster  # noqa: E402
from redis_server import RedisServer  # noqa: E402


async def suite(label: str, url: str, ports: list[int], args: argparse.Namespace, tmp: Path) -> list[tuple]:
    import redis

    masters = [redis.Redis(port=p) for p in ports]
    port = free_port()
    go = tmp / f"go-{label}"
    hub = Process(
        ["serve", "--port", str(port), "--agents", "bench_agents", "--max-queue", "100000", "--redis", url],
        dict(env(args.events, args.delay), BENCH_GO_FILE=str(go)),
        tmp / f"{label}.log",
        port,
    ).start()
    rows = []
    try:
        h0 = histogram_counts(hub.url)
        await bench_live(hub.ws_url, 1, go)  # warm-up
        one = None
        for n in args.watchers:
            marks: list[dict[str, int]] = [command_counts(masters)]
            mark = lambda: marks.append(command_counts(masters))  # noqa: E731
            dt, delays, events = await bench_live(hub.ws_url, n, go, at_go=mark, at_end=mark)
            await asyncio.sleep(0.5)  # the watchers' leaving lands
            mark()
            one = one or dt
            joining, streaming, leaving = (counted(a, b) for a, b in zip(marks, marks[1:]))
            rows.append(
                (
                    n,
                    dt / one,
                    pct(delays, 50) * 1000,
                    pct(delays, 99) * 1000,
                    streaming / events,
                    (joining + leaving) / n,
                )
            )
        h1 = histogram_counts(hub.url)
        print(
            f"{label}: samples the hub's histograms took over these runs: "
            + ", ".join(f"{k} +{h1[k] - h0[k]:,.0f}" for k in HISTOGRAMS),
            flush=True,
        )
    finally:
        hub.stop()
    return rows


HISTOGRAMS = ("runcast_delivery_delay_seconds", "runcast_segment_duration_seconds")


def histogram_counts(base_url: str) -> dict[str, float]:
    """Samples observed so far by each histogram of the hub's /metrics (every label summed), parsed with
    prometheus_client's own parser."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(
        f"{base_url}/metrics", headers={"Authorization": f"Bearer {token('bench', ['metrics'])}"}, timeout=10
    ).text
    out = dict.fromkeys(HISTOGRAMS, 0.0)
    for fam in text_string_to_metric_families(text):
        for sample in fam.samples:
            if sample.name.removesuffix("_count") in out and sample.name.endswith("_count"):
                out[sample.name.removesuffix("_count")] += sample.value
    return out


def counted(before: dict[str, int], after: dict[str, int]) -> int:
    return sum(after.get(k, 0) - before.get(k, 0) for k in after if k not in PERIODIC_COMMANDS)


def fmt(r: tuple) -> str:
    return f"{r[1]:.2f}, {r[2]:.1f} / {r[3]:.1f}, {r[4]:.2f}, {r[5]:.1f}"


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=2000)
    p.add_argument("--delay", type=float, default=0.002)
    p.add_argument("--watchers", default="1,10,50,200")
    args = p.parse_args()
    args.watchers = [int(x) for x in args.watchers.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="runcast-bench-cluster-"))
    srv = RedisServer()
    srv.start()
    try:
        single = await suite("single", srv.url, [srv.port], args, tmp)
    finally:
        srv.cleanup()
    rc = RedisCluster().start()
    try:
        clustered = await suite("cluster", rc.url, [m["port"] for m in rc.masters()], args, tmp)
    finally:
        rc.stop()
    print(
        f"runcast bench/cluster.py, {time.strftime('%Y-%m-%d %H:%M %Z')}: {os.cpu_count()} cpus; {args.events} "
        "events per run; clients and servers share the machine"
    )
    print("time: the run's wall time against 1 watcher; cmds/event: Redis commands while the run streams, per event;")
    print(
        "cmds/watcher: commands of a watcher joining and leaving (hello, subscribe, replay, presence), once per watcher\n"
    )
    head = "time, p50 / p99 ms, cmds/event, cmds/watcher"
    print(f"{'watchers':>8} | {'one redis: ' + head:>55} | {'cluster: ' + head:>55}")
    for a, b in zip(single, clustered):
        print(f"{a[0]:>8} | {fmt(a):>55} | {fmt(b):>55}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
