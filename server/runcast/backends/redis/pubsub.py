"""The live feed on Redis: one pub/sub connection per process carries every run channel (and the signals channel).

Its reader task dispatches by channel, reconnects with backoff after an outage, subscribes again to every channel,
and then reads each run's log from the last seq it delivered to fill what was published while it was away.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable

import msgpack
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from ... import metrics
from ...protocol import Event
from ..base import LogTrimmed, OnEntry, OnEvents, OnResync, OnSignal, Subscription

log = logging.getLogger("runcast.redis")
READ_PAGE = 1000  # events per XRANGE when filling a hole after a reconnect


class _Channel:
    """One pub/sub channel of this process and everyone here who listens to it."""

    __slots__ = ("name", "run_id", "callbacks", "ready", "last", "needs_fill", "feed")

    def __init__(self, name: bytes, run_id: str | None, feed: bool = False) -> None:
        self.name = name
        self.run_id = run_id  # None: the signals channel (or the feed channel)
        self.feed = feed  # the feed of run changes: callbacks are _FeedListener
        self.callbacks: list[Callable[..., None]] = []
        self.ready = asyncio.Event()  # set once the first SUBSCRIBE is confirmed (and `last` is known)
        self.last: int | None = None  # the highest seq handed to the callbacks
        self.needs_fill = False  # the connection dropped: read the log from `last` once subscribed again


class _RedisSub(Subscription):
    def __init__(self, backend: "LiveFeed", ch: _Channel, cb: Callable[..., None]) -> None:
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
    """Mixed into RedisBackend: uses its `_redis` pool, `head`, `read` and `_intern` (defined there)."""

    _redis: Any
    _chans: dict[bytes, _Channel]
    _ctl: bytes
    _ps: Any
    _reader: asyncio.Task[None] | None
    _closing: bool
    stats: dict[str, int]
    subscribe_timeout: float
    reconnect_min_s: float
    reconnect_max_s: float
    ping_after_s: float
    dead_after_s: float
    connect_timeout_s: float
    prefix: str

    def _live(self, run_id: str) -> bytes:
        return f"{self.prefix}:live:{run_id}".encode()

    @property
    def _signals(self) -> bytes:
        return f"{self.prefix}:signals".encode()

    # ------------------------------------------------------------------ signals
    async def signal(self, run_id: str, message: dict[str, Any]) -> None:
        await self._redis.publish(self._signals, msgpack.packb({"run_id": run_id, "message": message}, use_bin_type=True))

    async def listen_signals(self, on_signal: OnSignal) -> Subscription:
        return await self._add_callback(self._signals, None, on_signal)

    # ------------------------------------------------------------------ the feed of run changes (inbox, run list)
    @property
    def _feed(self) -> bytes:
        return f"{self.prefix}:feed".encode()

    async def subscribe_feed(self, on_entry: OnEntry, on_resync: OnResync | None = None) -> Subscription:
        return await self._add_callback(self._feed, None, _FeedListener(on_entry, on_resync), feed=True)

    # ------------------------------------------------------------------ the live feed
    async def subscribe(self, run_id: str, on_events: OnEvents) -> Subscription:
        return await self._add_callback(self._live(run_id), run_id, on_events)

    async def _add_callback(self, name: bytes, run_id: str | None, cb: Callable[..., None], feed: bool = False) -> Subscription:
        if self._closing:
            raise RuntimeError("the Redis backend is closed")
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read_pubsub(), name=f"runcast-redis-pubsub-{self.prefix}")
        ch = self._chans.get(name)
        first = ch is None
        if ch is None:
            ch = self._chans[name] = _Channel(name, run_id, feed)
        ch.callbacks.append(cb)
        sub = _RedisSub(self, ch, cb)
        if first:
            await self._ps_send("SUBSCRIBE", name)  # while disconnected, the reader subscribes on reconnect
        try:
            await asyncio.wait_for(ch.ready.wait(), self.subscribe_timeout)
        except BaseException as exc:
            await sub.close()
            if isinstance(exc, asyncio.TimeoutError):
                raise RedisConnectionError(f"no answer from Redis to SUBSCRIBE {name.decode()}") from None
            raise
        return sub

    async def _remove_callback(self, ch: _Channel, cb: Callable[..., None]) -> None:
        if cb in ch.callbacks:
            ch.callbacks.remove(cb)
        if not ch.callbacks and self._chans.get(ch.name) is ch:
            del self._chans[ch.name]
            await self._ps_send("UNSUBSCRIBE", ch.name)

    async def _ps_send(self, *args: Any) -> None:
        conn = self._ps
        if conn is None or not conn.is_connected:
            return  # the reader (re)subscribes to whatever is in self._chans when it connects
        try:
            await conn.send_command(*args, check_health=False)
        except (RedisError, OSError) as exc:
            log.warning("pub/sub %s failed (%s); reconnecting", args[0], exc)
            await conn.disconnect(nowait=True)  # the reader notices and starts over

    def _new_ps_connection(self) -> Any:
        pool = self._redis.connection_pool
        kwargs = dict(pool.connection_kwargs)
        # Blocking reads are ours to time (ping_after_s / dead_after_s). Under RESP3 the messages are push frames,
        # read with push_request=True; under RESP2 plain arrays: the same lists either way.
        kwargs.update(socket_timeout=None, retry=Retry(NoBackoff(), 0))
        return pool.connection_class(**kwargs)

    async def _read_pubsub(self) -> None:
        """The one reader of this process's pub/sub connection: dispatch, and survive outages."""
        backoff = self.reconnect_min_s
        down_since: float | None = None
        while not self._closing:
            conn = self._new_ps_connection()
            try:
                await asyncio.wait_for(conn.connect(), self.connect_timeout_s)
                self._ps = conn
                await conn.send_command("SUBSCRIBE", self._ctl, *self._chans, check_health=False)
                backoff = self.reconnect_min_s
                if down_since is not None:
                    metrics.redis_reconnects.inc()
                    log.warning("pub/sub connection to Redis back after %.1fs; filling from the logs", time.monotonic() - down_since)
                    down_since = None
                last_rx = asyncio.get_running_loop().time()
                pinged = False
                while True:
                    if not conn.is_connected:
                        raise RedisConnectionError("pub/sub connection closed")
                    msg = await conn.read_response(timeout=1.0, disconnect_on_error=True, push_request=True)
                    now = asyncio.get_running_loop().time()
                    if msg is None:
                        if now - last_rx > self.dead_after_s:
                            raise RedisConnectionError(f"pub/sub connection silent for {now - last_rx:.0f}s")
                        if now - last_rx > self.ping_after_s and not pinged:
                            await conn.send_command("PING", check_health=False)
                            pinged = True
                        continue
                    last_rx, pinged = now, False
                    await self._on_message(msg)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - an outage (or a bug): reconnect, never die
                if self._closing:
                    pass
                elif down_since is None:
                    down_since = time.monotonic()
                    metrics.redis_errors.labels(source="pubsub").inc()
                    log.warning("pub/sub connection to Redis lost (%s); reconnecting", exc,
                                exc_info=not isinstance(exc, (RedisError, OSError, asyncio.TimeoutError)))
                else:
                    log.debug("pub/sub reconnect failed (%s); next try in %.1fs", exc, backoff)
            finally:
                self._ps = None
                for ch in self._chans.values():
                    if ch.last is not None or (ch.feed and ch.ready.is_set()):
                        ch.needs_fill = True
                await conn.disconnect(nowait=True)
            if self._closing:
                return
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.reconnect_max_s)
            self.stats["reconnects"] += 1

    async def _on_message(self, msg: Any) -> None:
        if not isinstance(msg, list) or not msg:
            return
        kind = msg[0]
        if kind == b"message":
            ch = self._chans.get(msg[1])
            if ch is None:
                return
            if ch.feed:
                try:
                    entry = msgpack.unpackb(msg[2], raw=False)
                    entry["run"]["run_id"]
                except Exception:  # noqa: BLE001 - not ours
                    log.warning("ignoring a malformed message on %r", msg[1])
                    return
                for cb in list(ch.callbacks):
                    try:
                        cb(entry)
                    except Exception:  # noqa: BLE001 - one listener's bug must not stop the others
                        log.exception("feed callback failed")
                return
            try:
                if ch.run_id is None:
                    sig = msgpack.unpackb(msg[2], raw=False)
                    run_id, message = sig["run_id"], sig["message"]
                else:
                    events = [self._intern(b) for b in msgpack.unpackb(msg[2], raw=True)]
            except Exception:  # noqa: BLE001 - not ours (someone else published on our channel)
                log.warning("ignoring a malformed message on %r", msg[1])
                return
            if ch.run_id is None:
                for cb in list(ch.callbacks):
                    try:
                        cb(run_id, message)
                    except Exception:  # noqa: BLE001 - one listener's bug must not stop the others
                        log.exception("signal callback failed")
                return
            self._deliver(ch, events)
        elif kind == b"subscribe":
            ch = self._chans.get(msg[1])
            if ch is None:
                return
            if ch.feed and ch.needs_fill:
                ch.needs_fill = False  # back after an interruption: entries may have been missed
                for cb in list(ch.callbacks):
                    if cb.on_resync is not None:
                        try:
                            cb.on_resync()
                        except Exception:  # noqa: BLE001
                            log.exception("feed resync callback failed")
            if ch.run_id is None:
                ch.ready.set()
            elif ch.last is None:
                # Subscribed: anything after the head is ours live, anything up to it is in the log.
                ch.last = await self.head(ch.run_id)
                ch.ready.set()
            elif ch.needs_fill:
                await self._fill(ch)

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
            except Exception:  # noqa: BLE001
                log.exception("live feed callback for %s failed", ch.run_id)

    async def _fill(self, ch: _Channel) -> None:
        """After a reconnect: hand the callbacks what was logged while this connection was away."""
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
