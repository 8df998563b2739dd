"""The job queue on Redis: a Stream with one consumer group, so each start or resume is taken by one worker, and a
job whose worker died before acking it is handed to another after `job_idle_s`."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from redis.exceptions import RedisError, ResponseError

from ...runs import Job

log = logging.getLogger("runcast.redis")
GROUP = "workers"


def _job_key(job: Job) -> tuple[str, str, int]:
    return (job.run_id, job.kind, job.segment)


class JobQueue:
    """Mixed into RedisBackend: uses its `_redis`, `_jobs` key and `job_idle_s`."""

    _redis: Any
    job_idle_s: float
    stats: dict[str, int]
    _job_ids: dict[tuple[str, str, int], list[bytes]]
    _unacked: list[bytes]
    _next_reclaim: float
    _next_prune: float
    prefix: str

    @property
    def _jobs(self) -> str:
        return f"{{{self.prefix}}}:jobs"  # the {P} hash tag: one slot with the other shared keys (backend.py)

    async def _ensure_group(self) -> None:
        try:
            await self._redis.xgroup_create(self._jobs, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _take(self, entry_id: bytes, fields: dict[bytes, bytes] | None) -> Job | None:
        if not fields or b"j" not in fields:
            return None
        job = Job.model_validate_json(fields[b"j"])
        self._job_ids.setdefault(_job_key(job), []).append(entry_id)
        return job

    async def _retry_acks(self) -> None:
        if self._unacked:
            ids, self._unacked = self._unacked, []
            await self._ack_ids(ids)

    async def _ack_ids(self, ids: list[bytes]) -> None:
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.xack(self._jobs, GROUP, *ids)
                pipe.xdel(self._jobs, *ids)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            # Not fatal: the entries stay pending and are handed out again after job_idle_s; the claim then fails
            # (the run is no longer queued / resuming) and that worker acks them.
            log.warning("could not ack jobs %s (%s); will retry", ids, exc)
            self._unacked += ids

    async def take_job(self, worker_id: str, timeout: float) -> Job | None:
        await self._retry_acks()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout)
        if loop.time() >= self._next_reclaim:
            # A job delivered to a worker that died before acking it: take it over.
            self._next_reclaim = loop.time() + min(5.0, self.job_idle_s / 2)
            try:
                res = await self._redis.xautoclaim(
                    self._jobs, GROUP, worker_id, min_idle_time=int(self.job_idle_s * 1000), start_id="0-0", count=1
                )
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                await self._ensure_group()
                res = None
            for entry_id, fields in res[1] if res else []:
                job = self._take(entry_id, fields)
                if job is None:
                    await self._ack_ids([entry_id])
                else:
                    self.stats["reclaimed_jobs"] += 1
                    self._next_reclaim = 0.0  # there may be more
                    log.info("job %s/%s for %s taken over from a silent worker", job.kind, job.segment, job.run_id)
                    return job
        if loop.time() >= self._next_prune:
            self._next_prune = loop.time() + 600.0
            await self._prune_consumers()
        while True:
            left = deadline - loop.time()
            block = int(min(left, 2.0) * 1000) if left > 0 else None  # BLOCK 0 would wait forever
            if block is not None and block <= 0:
                block = 1
            try:
                res = await self._redis.xreadgroup(GROUP, worker_id, {self._jobs: ">"}, count=1, block=block)
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                await self._ensure_group()  # Redis lost the group (restart without persistence)
                continue
            for _stream, entries in res.items() if isinstance(res, dict) else res or []:
                for entry_id, fields in entries:
                    job = self._take(entry_id, fields)
                    if job is not None:
                        return job
                    await self._ack_ids([entry_id])  # not a job: drop it
            if loop.time() >= deadline:
                return None

    async def _prune_consumers(self) -> None:
        """Forget consumers (worker ids) that hold no job and have not asked for one in an hour: every worker
        process has its own id, so without this the group would remember every worker that ever ran."""
        try:
            for c in await self._redis.xinfo_consumers(self._jobs, GROUP):
                if int(c.get("pending", 1)) == 0 and int(c.get("idle", 0)) > 3_600_000:
                    await self._redis.xgroup_delconsumer(self._jobs, GROUP, c["name"])
        except ResponseError as exc:
            log.debug("could not prune job consumers: %s", exc)

    async def ack_job(self, job: Job) -> None:
        ids = self._job_ids.pop(_job_key(job), None)
        if ids:
            await self._ack_ids(ids)
