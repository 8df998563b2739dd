"""Fixtures: real runcast processes, and for the Redis backend a real redis-server on a free port.

`hub` is parametrized over the backends, so the behavioural suite in test_hub.py runs against the one-process
memory backend, against three hub nodes and two workers sharing one Redis (clients spread over the nodes), and
against two hub nodes and a worker on a Redis Cluster of three masters with a replica each (each process given a
different node's address: any node will do).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hubtest import Cluster, on_redis
from redis_cluster import RedisCluster

HUB_ENV = {"RUNCAST_HELLO_TIMEOUT_S": "1.5"}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failing test shows the tail of each runcast process's log it used (CI prints only the report)."""
    outcome = yield
    rep = outcome.get_result()
    if rep.when != "call" or not rep.failed:
        return
    for name, value in getattr(item, "funcargs", {}).items():
        if isinstance(value, Cluster):
            rep.sections.append((f"runcast logs ({name})", value.logs()))


@pytest.fixture(scope="module", params=["memory", "redis", "redis-cluster"])
def hub(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp: Path = tmp_path_factory.mktemp(f"hub-{request.param}")
    if request.param == "memory":
        cluster = Cluster(tmp, "memory", env=HUB_ENV).start()
        yield cluster
        cluster.stop()
        return
    if request.param == "redis-cluster":
        rc = RedisCluster().start()
        cluster = Cluster(tmp, "redis", rc.url, nodes=2, workers=1, env=HUB_ENV)
        for i, p in enumerate(cluster.nodes + cluster.workers):
            p.args[p.args.index(rc.url)] = f"redis://{rc.nodes[i % len(rc.nodes)].addr}"
        try:
            cluster.start()
        except BaseException:
            rc.stop()
            raise
        cluster.redis_cluster = rc  # type: ignore[attr-defined]
        yield cluster
        cluster.stop()
        rc.stop()
        return
    with on_redis(tmp, persist=True, nodes=3, workers=2, env=HUB_ENV) as cluster:
        yield cluster
