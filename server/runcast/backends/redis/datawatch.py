"""Noticing that Redis lost its data: a restart without persistence, or a failover to a replica that missed writes.

Every process sets `{P}:sentinel` to a random value if it is missing (SET NX) and remembers the value it found. Then it
looks again every `watch_s`: a sentinel that is gone, or holds another value, means the data this process knew is
gone. It says so in its log (as an error: runs and their logs from before are lost, clients holding `since` will get
`log_reset`), keeps the fact for `/readyz`, calls `on_data_lost`, and arms a new sentinel so the next loss is
noticed too.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

from redis.exceptions import RedisError

log = logging.getLogger("runcast.redis")
WATCH_S = 1.0


class DataWatch:
    """Mixed into RedisBackend: uses its `_redis` and `prefix`."""

    _redis: Any
    prefix: str

    def _init_datawatch(self) -> None:
        self.data_lost_at: float | None = None  # when this process last noticed Redis had lost its data
        self.on_data_lost: Callable[[], None] | None = None
        self._sentinel_value: bytes | None = None
        self._watch_task: asyncio.Task[None] | None = None

    @property
    def _sentinel(self) -> str:
        return f"{{{self.prefix}}}:sentinel"  # with the other shared keys, in the prefix's slot (see `_g`)

    async def _arm_sentinel(self) -> None:
        await self._redis.set(self._sentinel, secrets.token_hex(8), nx=True)
        self._sentinel_value = await self._redis.get(self._sentinel)

    def data_lost_message(self) -> str | None:
        if self.data_lost_at is None:
            return None
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.data_lost_at))
        return (
            f"Redis lost its data at {at} (the sentinel key {self._sentinel} was gone): runs and logs from before "
            "are lost; clients holding their history get log_reset"
        )

    async def check_data(self) -> bool:
        """Look at the sentinel now. True if the data is as this process left it."""
        value = await self._redis.get(self._sentinel)
        if self._sentinel_value is not None and value == self._sentinel_value:
            return True
        if self._sentinel_value is None:  # never armed (Redis was down at start)
            await self._arm_sentinel()
            return True
        self.data_lost_at = time.time()
        log.error("%s", self.data_lost_message())
        await self._arm_sentinel()
        if self.on_data_lost is not None:
            try:
                self.on_data_lost()
            except Exception:
                log.exception("on_data_lost failed")
        return False

    async def _watch_data(self) -> None:
        while True:
            await asyncio.sleep(WATCH_S)
            try:
                await self.check_data()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError):
                pass  # an outage: the data may or may not be there when it is back; look then

    def _start_datawatch(self) -> None:
        self._watch_task = asyncio.create_task(self._watch_data(), name=f"runcast-redis-datawatch-{self.prefix}")

    async def _stop_datawatch(self) -> None:
        if self._watch_task is not None:
            self._watch_task.cancel()
            await asyncio.gather(self._watch_task, return_exceptions=True)
            self._watch_task = None
