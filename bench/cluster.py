"""Redis commands per event, one Redis against a Redis Cluster, as watchers grow (nothing is asserted).

    python bench/cluster.py                    # 1, 10, 50, 200 watchers; one redis-server, then 3 masters + 3 replicas
    python bench/cluster.py --watchers 1,50 --events 1000

For each deployment: one `runcast serve --redis URL` (hub + worker) streams a run of E events (the firehose agent of
bench/run.py) to N watchers. Printed per N: the run's wall time relative to one watcher, the delay from an event's
`ts` to its arrival (p50 / p99), and the Redis commands per event, summed over every master from INFO commandstats
(Lua's own calls included; time-driven commands such as blocking job reads and timer scans left out). On a cluster,
live events go by SPUBLISH to the run's shard only, so the commands per event should not grow with N either.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import PERIODIC, bench_live, env, pct  # noqa: E402  (bench/run.py: the same live benchmark)

from hubtest import Process, free_port  # noqa: E402
from redis_cluster import RedisCluster  # noqa: E402
from redis_server import RedisServer  # noqa: E402

TIMED = PERIODIC | {"zcount", "cluster|slots", "cluster|shards", "cluster|nodes", "command", "command|docs",
                    "command|info", "command|count", "readonly", "info", "config|resetstat"}


def stats(ports: list[int]) -> dict[str, int]:
    import redis

    out: dict[str, int] = {}
    for port in ports:
        for k, v in redis.Redis(port=port).info("commandstats").items():
            out[k.removeprefix("cmdstat_")] = out.get(k.removeprefix("cmdstat_"), 0) + v["calls"]
    return out


async def suite(label: str, url: str, masters: list[int], args: argparse.Namespace, tmp: Path) -> list[tuple]:
    port = free_port()
    hub = Process(["serve", "--port", str(port), "--agents", "bench_agents", "--max-queue", "100000", "--redis", url],
                  env(args.events, args.delay), tmp / f"{label}.log", port).start()
    rows = []
    try:
        await bench_live(hub.ws_url, 1)  # warm-up
        one = None
        for n in args.watchers:
            before = stats(masters)
            dt, delays, events = await bench_live(hub.ws_url, n)
            after = stats(masters)
            one = one or dt
            per = sum(after.get(k, 0) - before.get(k, 0) for k in after if k not in TIMED) / events
            rows.append((n, dt / one, pct(delays, 50) * 1000, pct(delays, 99) * 1000, per))
    finally:
        hub.stop()
    return rows


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
    print(f"runcast bench/cluster.py: {os.cpu_count()} cpus; {args.events} events per run; clients and servers share the machine")
    print(f"{'watchers':>8} | {'one redis: time, p50 / p99 ms, cmds/event':>42} | {'cluster: time, p50 / p99 ms, cmds/event':>40}")
    for a, b in zip(single, clustered):
        print(f"{a[0]:>8} | {a[1]:>8.2f}, {a[2]:>6.1f} / {a[3]:>6.1f}, {a[4]:>10.2f} | {b[1]:>8.2f}, {b[2]:>6.1f} / {b[3]:>6.1f}, {b[4]:>10.2f}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
