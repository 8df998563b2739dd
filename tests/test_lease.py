"""A worker's lease on a running run, on a real redis-server: a renewal the backend did not take is tried again.

Under load (bench/dashboards.py, 500 runs on a hub that also runs the agents) the Redis pool had no free connection
for a while; a renewal then failed once, the worker stopped renewing for good, and the run failed as worker_lost while
it streamed. Here the pool's free connection (the other waits for jobs) is held by a blocking command across a renewal.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from redis_server import RedisServer, redis_server  # noqa: F401 - the fixture

from runcast.auth import Identity
from runcast.backends.redis import RedisBackend
from runcast.demo import demo_registry
from runcast.service import Service
from runcast.worker import Sweeper, Worker

OPERATOR = Identity(sub="ada", name="Ada", roles=("operator",))
LEASE_S = 3.0  # renewed every 1 s


async def test_a_renewal_that_found_no_connection_is_tried_again(
    redis_server: RedisServer,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = RedisBackend(redis_server.url, max_connections=2, pool_timeout_s=0.1)  # the worker's (one waits for jobs)
    reader = RedisBackend(redis_server.url)  # the test's: it must not wait for the worker's pool
    await backend.start()
    await reader.start()
    registry = demo_registry(delay=0.15)  # about 7 s of streaming before the pause: longer than the lease
    worker = Worker(backend, registry, lease_s=LEASE_S)
    sweeper = Sweeper(backend, interval=0.1, grace_s=0)
    await worker.start()
    await sweeper.start()
    try:
        run_id = (await Service(reader, registry).start(OPERATOR, "demo", "free some space"))["run_id"]
        for _ in range(500):
            rec = await reader.get(run_id)
            if rec is not None and rec.status == "running":
                break
            await asyncio.sleep(0.01)
        assert rec is not None and rec.status == "running"
        with caplog.at_level(logging.WARNING, logger="runcast.worker"):
            # The pool's other connection is busy for 1.5 s: the renewal due meanwhile finds none.
            await hold_the_pool(backend, 1.5)
            for _ in range(2000):
                rec = await reader.get(run_id)
                assert rec is not None
                if rec.status != "running":
                    break
                await asyncio.sleep(0.01)
        assert rec.status == "paused", rec.error  # before: failed, worker_lost
        assert any("lease renewal failed" in r.getMessage() for r in caplog.records), "no renewal met the busy pool"
        types = [e.frame["type"] for e in await reader.read(run_id)]
        assert "run.failed" not in types and types[-1] == "run.paused", types[-3:]
    finally:
        await sweeper.stop()
        await worker.stop()
        await backend.close()
        await reader.close()


async def hold_the_pool(backend: RedisBackend, seconds: float) -> None:
    """Take the pool's free connection (the worker may hold it for a moment: try again) and block it for `seconds`."""
    from redis.exceptions import ConnectionError as NoConnection

    for _ in range(100):
        try:
            await backend._redis.blpop(["lease-test:nothing"], timeout=seconds)
            return
        except NoConnection:
            continue
    raise AssertionError("never got the pool's connection")


def test_a_process_that_runs_agents_has_a_redis_connection_per_run() -> None:
    """With 500 runs in one worker and 64 connections, a renewal waited out the pool's 10 s (as long as the lease) and
    runs failed as worker_lost while streaming (bench/dashboards.py, redis+worker N=500). A process that runs agents
    now has a connection per run on top of the hub's 64; a hub that runs none keeps 64."""
    import argparse

    from runcast import cli

    def pool(cmd: str, **kw: object) -> int:
        ns = argparse.Namespace(cmd=cmd, redis="redis://127.0.0.1:9/0", max_log=0, retention=0.0, **kw)
        return cli._backend(ns).max_connections

    assert pool("worker", concurrency=512) == 64 + 512
    assert pool("serve", concurrency=512, no_worker=False) == 64 + 512
    assert pool("serve", concurrency=512, no_worker=True) == 64
