"""GET /api/audit latency for one person's week, with 100 and with 10,000 runs kept, on Redis.

    python bench/audit.py                          # a throw-away redis-server and one `runcast serve`
    python bench/audit.py --sizes 100,10000 --requests 300

Runs are seeded in-process through the Redis backend's own create (the same commit and flush scripts a hub uses,
so the audit index is written as it is in production): each has one settled approval, over the last 30 days, among
50 people. The person measured ("alex") has the same 20 decisions in the last week at every size; what grows is
everyone else's record and alex's older weeks. Then `runcast serve` answers GET /api/audit?person=alex&since=<a week
ago> over HTTP (one client, sequential requests, after 20 warm-up ones). The ratio is p50 at each size against p50
at the first size of the same run: flat means the query reads the index, not the runs kept. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "server")]

from hubtest import Cluster, token  # noqa: E402
from redis_server import RedisServer  # noqa: E402

from runcast.approvals import Approval, ApprovalPolicy, Vote  # noqa: E402
from runcast.backends.redis.backend import RedisBackend  # noqa: E402
from runcast.runs import RunRecord, Transition  # noqa: E402

PERSON = "alex"
PERSON_WEEK = 20  # alex's decisions in the last week, at every size
PEOPLE = [f"p{i:02d}" for i in range(49)]
DAY_S = 86400.0


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def record(i: int, now: float) -> RunRecord:
    """Run i: settled by alex in the last week (the first PERSON_WEEK), by alex earlier, or by someone else."""
    if i < PERSON_WEEK:
        who, at = PERSON, now - (i + 0.5) * (6 * DAY_S / PERSON_WEEK)
    elif i % 50 == 0:
        who, at = PERSON, now - 8 * DAY_S - (i % 22) * DAY_S  # alex's older weeks
    else:
        who, at = PEOPLE[i % len(PEOPLE)], now - (i * 7919 % 30_000) / 30_000 * 30 * DAY_S
    when = iso(at)
    ap = Approval(
        approval_id=f"ap_{i}",
        call_id=f"c{i}",
        tool=("deploy", "delete_files", "refund")[i % 3],
        arguments='{"n": %d}' % i,
        agent="Bench",
        policy=ApprovalPolicy(roles=["approver"]),
        requested_at=iso(at - 30),
        status="approved" if i % 4 else "rejected",
        votes=[Vote(sub=who, name=who.title(), roles=["approver"], decision="approve" if i % 4 else "reject", at=when)],
        decided={
            "approval_id": f"ap_{i}",
            "decision": "approve" if i % 4 else "reject",
            "by": {"sub": who, "name": who.title()},
            "decided_at": when,
            "reason": None,
        },
    )
    return RunRecord(
        run_id=f"run_bench{i:06d}",
        agent="demo",
        input="bench",
        started_by={"sub": "ops", "name": "Ops"},
        created_at=iso(at - 60),
        status="completed",
        approvals={ap.approval_id: ap},
        updated_at=at,
    )


async def seed(url: str, start: int, stop: int, now: float) -> None:
    backend = RedisBackend(url)
    await backend.start()
    try:
        for lo in range(start, stop, 100):
            await asyncio.gather(*(backend.create(Transition(record(i, now))) for i in range(lo, min(stop, lo + 100))))
    finally:
        await backend.close()


def measure(base: str, tok: str, since: str, n: int) -> tuple[list[float], int]:
    with httpx.Client(headers={"Authorization": f"Bearer {tok}"}, timeout=30) as client:
        params = {"person": PERSON, "since": since}
        for _ in range(20):
            client.get(f"{base}/api/audit", params=params)
        times, rows = [], 0
        for _ in range(n):
            t0 = time.perf_counter()
            r = client.get(f"{base}/api/audit", params=params)
            times.append(time.perf_counter() - t0)
            r.raise_for_status()
            rows = len(r.json()["entries"])
    return times, rows


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(p * len(s)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100,10000")
    ap.add_argument("--requests", type=int, default=300)
    args = ap.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    redis = RedisServer(persist=False)
    redis.start()
    tmp = Path(tempfile.mkdtemp(prefix="runcast-bench-audit-"))
    cluster = Cluster(
        tmp,
        "redis",
        redis.url,
        nodes=1,
        workers=0,
        env={"RUNCAST_RATE_PER_S": "100000", "RUNCAST_RATE_BURST": "100000"},
    )
    cluster.start()
    now = time.time()
    since = iso(now - 7 * DAY_S)
    tok = token("aud", ["auditor"])
    try:
        print(
            f"GET /api/audit?person={PERSON}&since=<7 days ago> through `runcast serve` on Redis; "
            f"{args.requests} sequential requests per row; times in ms"
        )
        print("| runs kept | entries returned | p50 | p99 | p50 vs first row |")
        print("|---:|---:|---:|---:|---:|")
        seeded, first = 0, None
        for size in sizes:
            t0 = time.perf_counter()
            asyncio.run(seed(redis.url, seeded, size, now))
            seeded = size
            print(f"(seeded {size} runs in {time.perf_counter() - t0:.1f}s)", file=sys.stderr, flush=True)
            times, rows = measure(cluster.url, tok, since, args.requests)
            p50 = statistics.median(times)
            first = first or p50
            print(
                f"| {size} | {rows} | {p50 * 1000:.2f} | {pct(times, 0.99) * 1000:.2f} | {p50 / first:.2f} |",
                flush=True,
            )
    finally:
        cluster.stop()
        redis.stop()


if __name__ == "__main__":
    main()
