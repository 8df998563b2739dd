"""Fixtures: real runcast processes, and for the Redis backend a real redis-server on a free port.

`hub` is parametrized over both backends, so the behavioural suite in test_hub.py runs once against the one-process
memory backend and once against three hub nodes and two workers sharing one Redis (clients spread over the nodes).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hubtest import Cluster
from redis_server import RedisServer

HUB_ENV = {"RUNCAST_HELLO_TIMEOUT_S": "1.5"}


@pytest.fixture(scope="module", params=["memory", "redis"])
def hub(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp: Path = tmp_path_factory.mktemp(f"hub-{request.param}")
    if request.param == "memory":
        cluster = Cluster(tmp, "memory", env=HUB_ENV).start()
        yield cluster
        cluster.stop()
        return
    redis = RedisServer(persist=True)
    redis.start()
    try:
        cluster = Cluster(tmp, "redis", redis.url, nodes=3, workers=2, env=HUB_ENV).start()
    except BaseException:
        redis.stop()
        raise
    cluster.redis = redis  # type: ignore[attr-defined]
    yield cluster
    cluster.stop()
    redis.stop()
