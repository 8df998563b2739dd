"""Per-node fan-out: one backend subscription per run, however many local clients watch it.

Each event reaches every local watcher as the same `Event` object, whose encodings are cached, so a node encodes an
event once per encoding whatever the number of clients.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from .backends.base import Backend, Subscription
from .protocol import Event


class Watcher(Protocol):
    def on_live(self, run_id: str, events: list[Event]) -> None: ...


class _Feed:
    __slots__ = ("watchers", "sub", "ready")

    def __init__(self) -> None:
        self.watchers: set[Watcher] = set()
        self.sub: Subscription | None = None
        self.ready = asyncio.Event()


class Fanout:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._feeds: dict[str, _Feed] = {}

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
            feed = self._feeds[run_id] = _Feed()
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

    @staticmethod
    def _dispatch(feed: _Feed, events: list[Event]) -> None:
        for w in list(feed.watchers):
            w.on_live(events[0].run_id, events)
