"""The webhook outbox on Redis: a Stream written by each commit (one entry per webhook-worthy event; the commit script
keeps them in the run's slot with the event, and the flush moves them here, at least once), read through one consumer
group by every process that delivers webhooks, so each entry goes to exactly one of them; an entry whose process
died (not touched for `claim_s`) is taken over with XAUTOCLAIM.

Keys (the `{P}` hash tag keeps them in one cluster slot with the other keys shared by all runs, so flush.lua, which
moves a commit's webhook events here from the run's own list, writes them in the same script; see backend.py):

    {P}:webhooks:outbox      Stream, field `e` = the packed event (as logged); group `deliverers`
    {P}:webhooks:deliveries  Hash: "<webhook-id> <endpoint id>" -> delivery record JSON (status, attempts, ...)
    {P}:webhooks:recent      ZSET of those keys by last update: the newest `DELIVERIES_KEPT` are kept
    {P}:webhooks:lane:<endpoint id>  Stream, field `j` = a delivery (JSON {endpoint, entry, body}): the receiver's own
                             queue, filled from the outbox (XADD with the outbox entry's XACK, in one MULTI)
    {P}:webhooks:lanes       Set of those endpoint ids
    {P}:webhooks:lease:<endpoint id>  the process that delivers that lane now (SET NX PX, renewed; taken over after)
    {P}:webhooks:circuits    Hash: endpoint id -> its circuit state JSON (webhooks.Circuit)
    {P}:webhooks:entry:<run_id>:<seq>  the outbox entry that delivers that event (SET NX when first read): the flush
                             is at least once, so one event may reach the stream twice; the second entry is dropped
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from redis.exceptions import ResponseError

from ...protocol import Event

log = logging.getLogger("runcast.redis")
GROUP = "deliverers"
DELIVERIES_KEPT = 1000
# the lease of a lane: renewed by its holder only (compare and set)
_RENEW = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
ENTRY_OWNER_S = 3 * 86400  # longer than a delivery is retried (webhooks.py gives up after a day)


class OutboxQueue:
    """Mixed into RedisBackend: uses its `_redis` and `prefix`."""

    _redis: Any
    prefix: str
    webhook_claim_s: float = 30.0

    @property
    def _outbox(self) -> str:
        return f"{{{self.prefix}}}:webhooks:outbox"

    @property
    def _deliveries_key(self) -> str:
        return f"{{{self.prefix}}}:webhooks:deliveries"

    @property
    def _recent_key(self) -> str:
        return f"{{{self.prefix}}}:webhooks:recent"

    async def outbox_join(self) -> None:
        try:
            await self._redis.xgroup_create(self._outbox, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    @staticmethod
    def _entry(entry_id: bytes, fields: dict[bytes, bytes] | None) -> dict[str, Any] | None:
        if not fields or b"e" not in fields:
            return None
        return {"id": entry_id.decode(), **Event.unpack(fields[b"e"]).frame}

    async def outbox_take(self, consumer: str, count: int, timeout: float) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        try:
            # first, entries whose deliverer went silent (killed mid-delivery): they are ours now
            res = await self._redis.xautoclaim(
                self._outbox,
                GROUP,
                consumer,
                min_idle_time=int(self.webhook_claim_s * 1000),
                start_id="0-0",
                count=count,
            )
            for entry_id, fields in res[1] if res else []:
                e = self._entry(entry_id, fields)
                if e is None:
                    await self.outbox_ack(entry_id.decode())
                else:
                    log.info(
                        "webhook entry %s (%s of %s) taken over from a silent deliverer",
                        e["id"],
                        e["type"],
                        e["run_id"],
                    )
                    out.append(e)
            if out:
                return out
            res = await self._redis.xreadgroup(
                GROUP, consumer, {self._outbox: ">"}, count=count, block=max(1, int(timeout * 1000))
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self.outbox_join()  # Redis lost the group (a restart without persistence)
            return []
        for _stream, entries in res.items() if isinstance(res, dict) else res or []:
            for entry_id, fields in entries:
                e = self._entry(entry_id, fields)
                if e is None or not await self._first_entry_of_event(e):
                    await self.outbox_ack(entry_id.decode())  # not an event, or an event another entry delivers
                else:
                    out.append(e)
        return out

    async def _first_entry_of_event(self, e: dict[str, Any]) -> bool:
        """Two commits of one run that overlap may both flush the same event to the outbox (at least once, by design):
        the first entry read for an event delivers it, a later one is dropped, so a receiver is not sent it twice."""
        key = f"{{{self.prefix}}}:webhooks:entry:{e['run_id']}:{e['seq']}"
        if await self._redis.set(key, e["id"], nx=True, ex=ENTRY_OWNER_S):
            return True
        owner = await self._redis.get(key)
        return owner is None or owner.decode() == e["id"]

    async def outbox_touch(self, consumer: str, entry_id: str) -> None:
        await self._redis.xclaim(self._outbox, GROUP, consumer, 0, [entry_id], justid=True)

    async def outbox_ack(self, entry_id: str) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.xack(self._outbox, GROUP, entry_id)
            pipe.xdel(self._outbox, entry_id)
            await pipe.execute()

    def _lane_key(self, lane: str) -> str:
        return f"{{{self.prefix}}}:webhooks:lane:{lane}"

    async def lane_push(self, entry_id: str, items: list[tuple[str, dict[str, Any]]]) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            for lane, item in items:
                pipe.xadd(self._lane_key(lane), {"j": json.dumps(item)})
                pipe.sadd(f"{{{self.prefix}}}:webhooks:lanes", lane)
            pipe.xack(self._outbox, GROUP, entry_id)
            pipe.xdel(self._outbox, entry_id)
            await pipe.execute()

    async def lane_ids(self) -> list[str]:
        return sorted(x.decode() for x in await self._redis.smembers(f"{{{self.prefix}}}:webhooks:lanes"))

    async def lane_lease(self, lane: str, holder: str, ttl_s: float) -> bool:
        key = f"{{{self.prefix}}}:webhooks:lease:{lane}"
        ms = max(1, int(ttl_s * 1000))
        if await self._redis.set(key, holder, nx=True, px=ms):
            return True
        return bool(await self._redis.eval(_RENEW, 1, key, holder, ms))

    async def lane_release(self, lane: str, holder: str) -> None:
        await self._redis.eval(_RELEASE, 1, f"{{{self.prefix}}}:webhooks:lease:{lane}", holder)

    async def lane_read(self, lane: str, count: int) -> list[tuple[str, dict[str, Any]]]:
        res = await self._redis.xrange(self._lane_key(lane), "-", "+", count=count)
        return [(i.decode(), json.loads(f[b"j"])) for i, f in res]

    async def lane_done(self, lane: str, item_id: str) -> None:
        await self._redis.xdel(self._lane_key(lane), item_id)

    async def lane_length(self, lane: str) -> int:
        return int(await self._redis.xlen(self._lane_key(lane)))

    async def circuit_put(self, lane: str, state: dict[str, Any]) -> None:
        await self._redis.hset(f"{{{self.prefix}}}:webhooks:circuits", lane, json.dumps(state))

    async def circuits(self) -> list[dict[str, Any]]:
        raw = await self._redis.hgetall(f"{{{self.prefix}}}:webhooks:circuits")
        out = []
        for k, v in sorted(raw.items()):
            out.append(json.loads(v) | {"queued": await self.lane_length(k.decode())})
        return out

    async def delivery_get(self, key: str) -> dict[str, Any] | None:
        raw = await self._redis.hget(self._deliveries_key, key)
        return json.loads(raw) if raw is not None else None

    async def delivery_put(self, key: str, record: dict[str, Any]) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(self._deliveries_key, key, json.dumps(record))
            pipe.zadd(self._recent_key, {key: time.time()})
            pipe.zrange(self._recent_key, 0, -DELIVERIES_KEPT - 1)
            res = await pipe.execute()
        old = res[2]
        if old:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.zrem(self._recent_key, *old)
                pipe.hdel(self._deliveries_key, *old)
                await pipe.execute()

    async def deliveries(self, limit: int = 100) -> list[dict[str, Any]]:
        keys = await self._redis.zrevrange(self._recent_key, 0, max(0, limit - 1))
        if not keys:
            return []
        raws = await self._redis.hmget(self._deliveries_key, keys)
        return [json.loads(r) for r in raws if r is not None]
