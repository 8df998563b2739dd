"""Per-node fan-out: one backend subscription per run, however many local clients watch it.

Events from the backend are not written to the watchers inside the backend's callback (which runs in the worker's
append, or the pub/sub reader): they are gathered per run and delivered on the next turn of the event loop, as one
`Batch`, to at most SLICE watchers per turn. So everything appended in one turn reaches a client in one write, the
worker's append returns at once, and between slices the loop runs the worker and the sockets' reads: however many
watch, the agent keeps its pace. A batch is encoded and framed once per (encoding, batching) for all its watchers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

from .backends.base import Backend, Subscription
from .protocol import Event, batch_payloads
from .wire import frames

log = logging.getLogger("runcast.fanout")
SLICE = 200  # watchers written to per turn of the event loop (about a millisecond's work)


class Batch(list):
    """Events of one run delivered together (ascending seq), with their frames made once for every watcher."""

    def __init__(self, events: list[Event]) -> None:
        super().__init__(events)
        self.first = events[0].seq if events else 0
        self.last = events[-1].seq if events else 0
        self.contiguous = bool(events) and self.last - self.first == len(events) - 1
        self._framed: dict[tuple[str, bool], tuple[bytes, list[bytes]]] = {}

    def framed(self, encoding: str, batched: bool) -> tuple[bytes, list[bytes]]:
        """(the bytes to write, the frames' payloads): one frame per event, or as few as batching allows."""
        key = (encoding, batched and len(self) > 1)
        got = self._framed.get(key)
        if got is None:
            payloads = batch_payloads(self, encoding) if key[1] else [ev.payload(encoding) for ev in self]  # type: ignore[arg-type]
            got = self._framed[key] = (frames(payloads, encoding == "msgpack"), payloads)
        return got


class Watcher(Protocol):
    def on_live(self, run_id: str, events: list[Event]) -> None: ...


class _Feed:
    __slots__ = ("busy", "pending", "ready", "run_id", "sub", "watchers")

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.watchers: set[Watcher] = set()
        self.sub: Subscription | None = None
        self.ready = asyncio.Event()
        self.pending: list[Event] = []  # arrived, not yet being delivered
        self.busy = False  # a delivery is scheduled or under way (one at a time per run: order)


class Fanout:
    def __init__(self, backend: Backend, on_batch: Callable[[str, list[Event]], None] | None = None) -> None:
        self.backend = backend
        self._feeds: dict[str, _Feed] = {}
        self._on_batch = on_batch  # once per batch of a watched run's events on this node, before its watchers get it
        self.cpu_s = 0.0  # the loop thread's CPU in delivering to watchers (/metrics: runcast_fanout_cpu_seconds)

    @property
    def runs_watched(self) -> int:
        return len(self._feeds)

    def watchers(self, run_id: str) -> int:
        feed = self._feeds.get(run_id)
        return len(feed.watchers) if feed else 0

    async def join(self, run_id: str, watcher: Watcher) -> None:
        """Returns once the live feed is active, so a log read made afterwards overlaps it (no hole between them)."""
        feed = self._feeds.get(run_id)
        if feed is None:
            feed = self._feeds[run_id] = _Feed(run_id)
            feed.watchers.add(watcher)
            try:
                feed.sub = await self.backend.subscribe(run_id, lambda evs: self._dispatch(feed, evs))
            except BaseException:
                self._feeds.pop(run_id, None)
                raise
            feed.ready.set()
            if not feed.watchers:  # everyone left while we subscribed
                await self._drop(run_id, feed)
            return
        feed.watchers.add(watcher)
        await feed.ready.wait()

    async def leave(self, run_id: str, watcher: Watcher) -> None:
        feed = self._feeds.get(run_id)
        if feed is None:
            return
        feed.watchers.discard(watcher)
        if not feed.watchers and feed.ready.is_set():
            await self._drop(run_id, feed)

    async def _drop(self, run_id: str, feed: _Feed) -> None:
        if self._feeds.get(run_id) is feed:
            del self._feeds[run_id]
        if feed.sub is not None:
            await feed.sub.close()

    def _dispatch(self, feed: _Feed, events: list[Event]) -> None:
        feed.pending += events
        if not feed.busy:
            feed.busy = True
            asyncio.get_running_loop().call_soon(self._next, feed)

    def _next(self, feed: _Feed) -> None:
        if not feed.pending:
            feed.busy = False
            return
        batch = Batch(feed.pending)
        feed.pending = []
        if self._on_batch is not None:
            try:
                self._on_batch(feed.run_id, batch)
            except Exception:
                log.exception("reading a batch of %s on this node failed", feed.run_id)
        self._deliver(feed, batch, list(feed.watchers), 0)

    def _deliver(self, feed: _Feed, batch: Batch, watchers: list[Watcher], start: int) -> None:
        t0 = time.thread_time()
        end = start + SLICE
        run_id = feed.run_id
        for w in watchers[start:end]:
            try:
                w.on_live(run_id, batch)
            except Exception:
                log.exception("delivering %s to a watcher failed", run_id)
        self.cpu_s += time.thread_time() - t0
        loop = asyncio.get_running_loop()
        if end < len(watchers):
            loop.call_soon(self._deliver, feed, batch, watchers, end)
        else:
            loop.call_soon(self._next, feed)
