"""The live feed on Redis: pub/sub connections that carry every run channel (and the signals channel).

On one Redis: one connection per process, classic SUBSCRIBE. On a Redis Cluster: sharded pub/sub (SSUBSCRIBE, Redis
7), one connection per master that serves a channel this process listens to, so an event is sent only to the shard
that owns its run's slot (classic PUBLISH on a cluster is copied to every node). A run's channel carries the run's
hash tag (`P:live:{R}`), so it lives in the same slot as the run's keys and the append script publishes it there.

Each connection has a reader task that dispatches by channel, reconnects with backoff after an outage, subscribes
again, and then reads each run's log from the last seq it delivered to fill what was published while it was away.
On a cluster, a channel moves when its slot does: a master that loses a slot (a migration: `sunsubscribe` from the
server; a failover: the connection drops; a stale slot map: `MOVED` to SSUBSCRIBE) makes the reader refresh the slot
map and subscribe at the new owner, then fill from the log.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgpack
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError

from ... import metrics
from ...looplag import LAG
from ...protocol import Event
from ..base import LogTrimmed, OnEntry, OnEvents, OnResync, OnSignal, Subscription

log = logging.getLogger("runcast.redis")
READ_PAGE = 1000  # events per XRANGE when filling a hole after a reconnect
SINGLE = "single"  # the shard name on one Redis
REFRESH_MIN_S = 0.2  # at most one slot-map refresh this often, however many channels move at once


class _Channel:
    """One pub/sub channel of this process and everyone here who listens to it."""

    __slots__ = ("callbacks", "confirmed", "feed", "last", "name", "needs_fill", "ready", "run_id", "shard")

    def __init__(self, name: bytes, run_id: str | None, feed: bool = False) -> None:
        self.name = name
        self.run_id = run_id  # None: the signals channel (or the feed channel)
        self.feed = feed  # the feed of run changes: callbacks are _FeedListener
        self.callbacks: list[Callable[..., None]] = []
        self.ready = asyncio.Event()  # set once the first SUBSCRIBE is confirmed (and `last` is known)
        self.last: int | None = None  # the highest seq handed to the callbacks
        self.needs_fill = False  # the subscription lapsed: read the log from `last` once subscribed again
        self.shard: str | None = None  # the name of the shard (node) it is subscribed on
        self.confirmed = False  # the shard confirmed the current subscription


class _Shard:
    """One pub/sub connection: to the single Redis, or to one master of a cluster."""

    __slots__ = ("chans", "conn", "host", "name", "port", "reader")

    def __init__(self, name: str, host: str | None = None, port: int | None = None) -> None:
        self.name, self.host, self.port = name, host, port
        self.conn: Any = None  # the Connection while it is up
        self.reader: asyncio.Task[None] | None = None
        self.chans: set[bytes] = set()


class _RedisSub(Subscription):
    def __init__(self, backend: LiveFeed, ch: _Channel, cb: Callable[..., None]) -> None:
        self._backend, self._ch, self._cb = backend, ch, cb
        self._closed = False

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._backend._remove_callback(self._ch, self._cb)


class _FeedListener:
    """A subscriber of the feed channel: entries, and a call when the channel is back after an interruption."""

    __slots__ = ("on_entry", "on_resync")

    def __init__(self, on_entry: OnEntry, on_resync: OnResync | None) -> None:
        self.on_entry, self.on_resync = on_entry, on_resync

    def __call__(self, entry: dict[str, Any]) -> None:
        self.on_entry(entry)


class LiveFeed:
    """Mixed into RedisBackend: uses its `_redis` client, `cluster`, `head`, `read` and `_intern` (defined there)."""

    _redis: Any
    cluster: bool
    _chans: dict[bytes, _Channel]
    _shards: dict[str, _Shard]
    _ctl: bytes
    _closing: bool

    if TYPE_CHECKING:  # RedisBackend's, declared here for the type checker only (the mixin has no body for them)

        def _intern(self, packed: bytes) -> Event: ...

        async def head(self, run_id: str) -> int: ...

        async def read(
            self, run_id: str, after: int = 0, upto: int | None = None, limit: int | None = None
        ) -> list[Event]: ...

    _refreshed_at: float
    stats: dict[str, int]
    subscribe_timeout: float
    reconnect_min_s: float
    reconnect_max_s: float
    ping_after_s: float
    dead_after_s: float
    connect_timeout_s: float
    prefix: str

    def _live(self, run_id: str) -> bytes:
        return f"{self.prefix}:live:{{{run_id}}}".encode()

    @property
    def _signals(self) -> bytes:
        return f"{self.prefix}:signals".encode()

    @property
    def _sub_cmd(self) -> tuple[str, str, bytes, bytes]:
        """(subscribe, unsubscribe, message kind, unsubscribe kind) for this deployment."""
        if self.cluster:
            return "SSUBSCRIBE", "SUNSUBSCRIBE", b"smessage", b"sunsubscribe"
        return "SUBSCRIBE", "UNSUBSCRIBE", b"message", b"unsubscribe"

    # ------------------------------------------------------------------ signals
    async def signal(self, run_id: str, message: dict[str, Any]) -> None:
        payload = msgpack.packb({"run_id": run_id, "message": message}, use_bin_type=True)
        if self.cluster:
            await self._redis.execute_command("SPUBLISH", self._signals, payload)
        else:
            await self._redis.publish(self._signals, payload)

    async def listen_signals(self, on_signal: OnSignal) -> Subscription:
        return await self._add_callback(self._signals, None, on_signal)

    # ------------------------------------------------------------------ the feed of run changes (inbox, run list)
    @property
    def _feed(self) -> bytes:
        return f"{{{self.prefix}}}:feed".encode()  # the {P} slot: published by flush.lua with the other shared keys

    async def subscribe_feed(self, on_entry: OnEntry, on_resync: OnResync | None = None) -> Subscription:
        return await self._add_callback(self._feed, None, _FeedListener(on_entry, on_resync), feed=True)

    # ------------------------------------------------------------------ the live feed
    async def subscribe(self, run_id: str, on_events: OnEvents) -> Subscription:
        return await self._add_callback(self._live(run_id), run_id, on_events)

    async def _add_callback(
        self, name: bytes, run_id: str | None, cb: Callable[..., None], feed: bool = False
    ) -> Subscription:
        if self._closing:
            raise RuntimeError("the Redis backend is closed")
        ch = self._chans.get(name)
        first = ch is None
        if ch is None:
            ch = self._chans[name] = _Channel(name, run_id, feed)
        ch.callbacks.append(cb)
        sub = _RedisSub(self, ch, cb)
        if first:
            await self._place(ch)  # while disconnected, the shard's reader subscribes on reconnect
        try:
            await self._until_ready(ch)
        except BaseException as exc:
            await sub.close()
            if isinstance(exc, asyncio.TimeoutError):
                raise RedisConnectionError(f"no answer from Redis to SUBSCRIBE {name.decode()}") from None
            raise
        return sub

    async def _until_ready(self, ch: _Channel) -> None:
        """Wait for Redis to confirm the subscription: up to `subscribe_timeout` of the loop's responsive time
        (looplag.py). A hub too busy to read the answer answers late; only a Redis that does not answer is an error."""
        start = LAG.responsive()
        while True:
            left = self.subscribe_timeout - (LAG.responsive() - start)
            if left <= 0:
                raise TimeoutError
            try:
                await asyncio.wait_for(ch.ready.wait(), left)
                return
            except TimeoutError:
                continue

    async def _remove_callback(self, ch: _Channel, cb: Callable[..., None]) -> None:
        if cb in ch.callbacks:
            ch.callbacks.remove(cb)
        if not ch.callbacks and self._chans.get(ch.name) is ch:
            del self._chans[ch.name]
            shard = self._shards.get(ch.shard or "")
            ch.shard = None
            if shard is not None:
                shard.chans.discard(ch.name)
                await self._send(shard, self._sub_cmd[1], ch.name)
                if self.cluster and not shard.chans:
                    self._drop_shard(shard)

    # ------------------------------------------------------------------ shards
    def _node_for(self, name: bytes) -> tuple[str, str | None, int | None]:
        if not self.cluster:
            return SINGLE, None, None
        node = self._redis.nodes_manager.get_node_from_slot(self._redis.keyslot(name))
        return node.name, node.host, int(node.port)

    def _shard(self, name: str, host: str | None, port: int | None) -> _Shard:
        shard = self._shards.get(name)
        if shard is None:
            shard = self._shards[name] = _Shard(name, host, port)
        if shard.reader is None or shard.reader.done():
            shard.reader = asyncio.create_task(self._read_shard(shard), name=f"runcast-redis-pubsub-{name}")
        return shard

    def _drop_shard(self, shard: _Shard) -> None:
        if self._shards.get(shard.name) is shard:
            del self._shards[shard.name]
        if shard.reader is not None and shard.reader is not asyncio.current_task():
            shard.reader.cancel()

    async def _place(self, ch: _Channel) -> None:
        """Subscribe `ch` on the shard that owns its slot now (by the slot map this process has)."""
        name, host, port = self._node_for(ch.name)
        old = self._shards.get(ch.shard or "")
        if old is not None and old.name != name:
            old.chans.discard(ch.name)
        shard = self._shard(name, host, port)
        ch.shard, ch.confirmed = name, False
        shard.chans.add(ch.name)
        await self._send(shard, self._sub_cmd[0], ch.name)

    async def _move_away(self, shard: _Shard, names: list[bytes], why: str) -> None:
        """These channels' slots are no longer served here (or we cannot tell): refresh the slot map, subscribe where
        they are now served, and fill each one from the log once subscribed there."""
        await self._refresh_slots()
        for name in names:
            ch = self._chans.get(name)
            if ch is None or ch.shard != shard.name:
                shard.chans.discard(name)
                continue
            if ch.last is not None or (ch.feed and ch.ready.is_set()):
                ch.needs_fill = True
            log.info("channel %s moves from %s (%s)", name.decode(), shard.name, why)
            await self._place(ch)

    async def _refresh_slots(self) -> None:
        if not self.cluster:
            return
        now = time.monotonic()
        if now - self._refreshed_at < REFRESH_MIN_S:
            return
        self._refreshed_at = now
        try:
            self._redis._initialize = True  # redis-py reads CLUSTER SLOTS again, under its own lock
            await self._redis.initialize()
        except Exception as exc:
            metrics.redis_errors.labels(source="cluster").inc()
            log.warning("could not refresh the cluster's slot map: %s", exc)

    async def _send(self, shard: _Shard, *args: Any) -> None:
        conn = shard.conn
        if conn is None or not conn.is_connected:
            return  # the reader (re)subscribes to whatever is in shard.chans when it connects
        try:
            await conn.send_command(*args, check_health=False)
        except (RedisError, OSError) as exc:
            log.warning("pub/sub %s on %s failed (%s); reconnecting", args[0], shard.name, exc)
            await conn.disconnect(nowait=True)  # the reader notices and starts over

    def _new_connection(self, shard: _Shard) -> Any:
        # Blocking reads are ours to time (ping_after_s / dead_after_s). Under RESP3 the messages are push frames,
        # read with push_request=True; under RESP2 plain arrays: the same lists either way.
        if self.cluster:
            node = self._redis.get_node(host=shard.host, port=shard.port)
            if node is None:
                node = next(iter(self._redis.get_nodes()))
            kwargs = dict(node.connection_kwargs)
            kwargs.update(host=shard.host, port=shard.port)
            cls = node.connection_class
        else:
            pool = self._redis.connection_pool
            kwargs = dict(pool.connection_kwargs)
            cls = pool.connection_class
        kwargs.update(socket_timeout=None, retry=Retry(NoBackoff(), 0))
        return cls(**kwargs)

    async def _read_shard(self, shard: _Shard) -> None:
        """The one reader of a shard's pub/sub connection: dispatch, and survive outages and slot moves."""
        backoff = self.reconnect_min_s
        down_since: float | None = None
        sub, _unsub, _msg, _gone = self._sub_cmd
        while not self._closing:
            if self.cluster and (self._shards.get(shard.name) is not shard or not shard.chans):
                if self._shards.get(shard.name) is shard:
                    del self._shards[shard.name]
                return
            conn = self._new_connection(shard)
            try:
                await asyncio.wait_for(conn.connect(), self.connect_timeout_s)
                shard.conn = conn
                if not self.cluster:
                    await conn.send_command("SUBSCRIBE", self._ctl, *shard.chans, check_health=False)
                elif shard.chans:
                    await conn.send_command(sub, *shard.chans, check_health=False)
                backoff = self.reconnect_min_s
                if down_since is not None:
                    metrics.redis_reconnects.inc()
                    log.warning(
                        "pub/sub connection to %s back after %.1fs; filling from the logs",
                        shard.name,
                        time.monotonic() - down_since,
                    )
                    down_since = None
                last_rx = asyncio.get_running_loop().time()
                pinged = False
                while True:
                    if not conn.is_connected:
                        raise RedisConnectionError("pub/sub connection closed")
                    if self.cluster and not shard.chans:
                        if self._shards.get(shard.name) is shard:
                            del self._shards[shard.name]
                        return  # nothing left to listen to here
                    try:
                        msg = await conn.read_response(timeout=1.0, disconnect_on_error=True, push_request=True)
                    except ResponseError as exc:  # an answer to (S)SUBSCRIBE: MOVED, CLUSTERDOWN, TRYAGAIN...
                        metrics.redis_errors.labels(source="cluster" if self.cluster else "pubsub").inc()
                        await self._on_error_reply(shard, exc)
                        continue
                    now = asyncio.get_running_loop().time()
                    if msg is None:
                        if now - last_rx > self.dead_after_s:
                            raise RedisConnectionError(f"pub/sub connection silent for {now - last_rx:.0f}s")
                        if now - last_rx > self.ping_after_s and not pinged:
                            await conn.send_command("PING", check_health=False)
                            pinged = True
                        continue
                    last_rx, pinged = now, False
                    await self._on_message(shard, msg)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._closing:
                    pass
                elif down_since is None:
                    down_since = time.monotonic()
                    metrics.redis_errors.labels(source="pubsub").inc()
                    log.warning(
                        "pub/sub connection to %s lost (%s); reconnecting",
                        shard.name,
                        exc,
                        exc_info=not isinstance(exc, (RedisError, OSError, asyncio.TimeoutError)),
                    )
                else:
                    log.debug("pub/sub reconnect to %s failed (%s); next try in %.1fs", shard.name, exc, backoff)
            finally:
                shard.conn = None
                for name in shard.chans:
                    ch = self._chans.get(name)
                    if ch is not None:
                        ch.confirmed = False
                        if ch.last is not None or (ch.feed and ch.ready.is_set()):
                            ch.needs_fill = True
                await conn.disconnect(nowait=True)
            if self._closing:
                return
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.reconnect_max_s)
            self.stats["reconnects"] += 1
            if self.cluster:  # a failover moves the slots to another node: follow them before trying this one again
                try:
                    await self._refresh_slots()
                    await self._move_away(
                        shard, [n for n in list(shard.chans) if self._node_for(n)[0] != shard.name], "connection lost"
                    )
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.debug("pub/sub: cannot follow the slots of %s yet: %s", shard.name, exc)

    async def _on_error_reply(self, shard: _Shard, exc: ResponseError) -> None:
        log.info("pub/sub on %s: %s", shard.name, exc)
        await asyncio.sleep(0.05)  # TRYAGAIN / CLUSTERDOWN during a failover: give the cluster a moment
        self._refreshed_at = 0.0
        await self._refresh_slots()
        for name in list(shard.chans):
            ch = self._chans.get(name)
            if ch is None or ch.confirmed:
                continue
            if self._node_for(name)[0] != shard.name:
                await self._move_away(shard, [name], str(exc))
            else:
                await self._send(shard, self._sub_cmd[0], name)

    async def _on_message(self, shard: _Shard, msg: Any) -> None:
        if not isinstance(msg, list) or not msg:
            return
        kind = msg[0]
        _sub, _unsub, message, gone = self._sub_cmd
        if kind == message:
            ch = self._chans.get(msg[1])
            if ch is None:
                return
            if ch.feed:
                try:
                    entry = msgpack.unpackb(msg[2], raw=False)
                    entry["run"]["run_id"]
                except Exception:
                    log.warning("ignoring a malformed message on %r", msg[1])
                    return
                for cb in list(ch.callbacks):
                    try:
                        cb(entry)
                    except Exception:
                        log.exception("feed callback failed")
                return
            try:
                if ch.run_id is None:
                    sig = msgpack.unpackb(msg[2], raw=False)
                    run_id, message_ = sig["run_id"], sig["message"]
                else:
                    events = [self._intern(b) for b in msgpack.unpackb(msg[2], raw=True)]
            except Exception:
                log.warning("ignoring a malformed message on %r", msg[1])
                return
            if ch.run_id is None:
                for cb in list(ch.callbacks):
                    try:
                        cb(run_id, message_)
                    except Exception:
                        log.exception("signal callback failed")
                return
            self._deliver(ch, events)
        elif kind in (b"subscribe", b"ssubscribe"):
            ch = self._chans.get(msg[1])
            if ch is None or ch.shard != shard.name:
                return
            ch.confirmed = True
            if ch.feed and ch.needs_fill:
                ch.needs_fill = False  # back after an interruption: entries may have been missed
                for cb in list(ch.callbacks):
                    if isinstance(cb, _FeedListener) and cb.on_resync is not None:  # a feed's callbacks are these
                        try:
                            cb.on_resync()
                        except Exception:
                            log.exception("feed resync callback failed")
            if ch.run_id is None:
                ch.ready.set()
            elif ch.last is None:
                # Subscribed: anything after the head is ours live, anything up to it is in the log.
                ch.last = await self.head(ch.run_id)
                ch.ready.set()
            elif ch.needs_fill:
                await self._fill(ch)
        elif kind == gone and self.cluster:
            # The server dropped the subscription (its slot moved away); ours to SUNSUBSCRIBE were removed first.
            ch = self._chans.get(msg[1])
            if ch is not None and ch.shard == shard.name:
                ch.confirmed = False
                await self._move_away(shard, [ch.name], "slot moved")

    def _deliver(self, ch: _Channel, events: list[Event]) -> None:
        if ch.last is not None:
            events = [ev for ev in events if ev.seq > ch.last]
        if not events:
            return
        ch.last = events[-1].seq
        assert ch.run_id is not None
        for cb in list(ch.callbacks):
            try:
                cb(events)
            except Exception:
                log.exception("live feed callback for %s failed", ch.run_id)

    async def _fill(self, ch: _Channel) -> None:
        """After a reconnect or a move: hand the callbacks what was logged while the subscription lapsed."""
        assert ch.run_id is not None and ch.last is not None
        after = ch.last
        while self._chans.get(ch.name) is ch:
            try:
                events = await self.read(ch.run_id, after, limit=READ_PAGE)
            except LogTrimmed as err:
                after = err.detail["first_kept"] - 1  # the hole stays; the hub's Cursor sees it and reports it
                continue
            self.stats["filled_events"] += len(events)
            self._deliver(ch, events)
            if len(events) < READ_PAGE:
                break
            after = events[-1].seq
        ch.needs_fill = False
