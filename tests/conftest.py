"""Fixtures: real runcast processes (and, for the Redis backend, a real redis-server on a free port)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hubtest import Cluster


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One `runcast serve` process with the memory backend, shared by a test module (each test uses its own runs)."""
    tmp: Path = tmp_path_factory.mktemp("hub")
    cluster = Cluster(tmp, "memory", env={"RUNCAST_HELLO_TIMEOUT_S": "1.5"}).start()
    yield cluster
    cluster.stop()
