"""On Redis, a hub's own worker runs on a thread of its own (worker.ThreadedWorker), with its own event loop and Redis
connections: the agents' steps never make the hub's loop wait (bench/dashboards.py, the `redis` row). Against a
real redis-server: a run started from this loop is streamed by the thread up to its approval, with every seq once,
and stopping the worker ends its thread."""

from __future__ import annotations

import asyncio
import threading
import time

from redis_server import RedisServer, redis_server  # noqa: F401 - the fixture
from runcast import runs
from runcast.approvals import Person
from runcast.backends.redis import RedisBackend
from runcast.demo import demo_registry
from runcast.worker import ThreadedWorker

ADA = Person(sub="ada", name="Ada", roles=["operator"])


async def test_the_hubs_worker_streams_a_run_on_its_own_thread(redis_server: RedisServer) -> None:  # noqa: F811
    hub_backend = RedisBackend(redis_server.url)
    await hub_backend.start()
    worker = ThreadedWorker(hub_backend.twin, demo_registry(delay=0.0), concurrency=4, lease_s=10.0)
    await worker.start()
    try:
        threads = [t for t in threading.enumerate() if t.name == "runcast-worker"]
        assert len(threads) == 1 and threads[0].is_alive()
        assert worker.worker is not None and worker.worker.backend is not hub_backend  # connections of its own
        await hub_backend.create(runs.new_run("r1", "demo", "tidy up the scratch files", ADA, time.time()))
        deadline = time.monotonic() + 30
        while (rec := await hub_backend.get("r1")) is None or rec.status != "paused":
            assert time.monotonic() < deadline, f"the run never paused: {rec and rec.status}"
            await asyncio.sleep(0.05)
        events = await hub_backend.read("r1")
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        kinds = [e.type for e in events]
        assert kinds[0] == "run.started" and kinds[-2:] == ["approval.requested", "run.paused"], kinds
    finally:
        await worker.stop()
        await hub_backend.close()
    assert not threads[0].is_alive()
    assert not [t for t in threading.enumerate() if t.name == "runcast-worker"]


async def test_a_worker_thread_that_fails_to_start_closes_its_backend(redis_server: RedisServer) -> None:  # noqa: F811
    """The worker's own backend is started before the worker; if the worker then cannot start (here: its signal
    channel is refused), that backend is closed on the thread's loop, the error reaches the hub, and no thread stays."""
    made: list[RedisBackend] = []

    class RefusingSignals(RedisBackend):
        async def listen_signals(self, *a: object, **kw: object) -> object:
            raise ConnectionError("no signal channel")

    def make() -> RedisBackend:
        made.append(RefusingSignals(redis_server.url))
        return made[-1]

    worker = ThreadedWorker(make, demo_registry(delay=0.0), concurrency=4, lease_s=10.0)
    try:
        await worker.start()
    except ConnectionError as exc:
        assert "no signal channel" in str(exc)
    else:
        raise AssertionError("the worker started without its signal channel")
    assert len(made) == 1 and made[0]._closing  # closed, not left with open connections
    assert made[0]._redis is not None and made[0]._redis.connection_pool._in_use_connections == set()
    deadline = time.monotonic() + 5
    while [t for t in threading.enumerate() if t.name == "runcast-worker"]:
        assert time.monotonic() < deadline, "the worker thread stayed"
        await asyncio.sleep(0.05)
    await worker.stop()  # a stop after a failed start does nothing
