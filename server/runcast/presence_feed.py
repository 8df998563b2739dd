"""A hub node's presence: its watchers' entries in the backend, and `presence` frames to its clients.

The rules are in `presence.py`; this module only moves data. One task per node ticks every `interval_s`: for each run
a local client watches it writes the joins and leaves of its clients since the last tick (one call each), reads the
run's presence set from the backend (only when its version moved), folds it into the run's `RunPresence`, and sends
the frame that comes out, encoded once per encoding, to every local watcher of the
run. Another task refreshes this node's entries every `refresh_s`; entries live `ttl_s` (1.6 refreshes) in the
backend, so when a node dies its watchers leave everyone's list within two refresh intervals.

Who is typing (`presence.Typing`'s rules) changes a local watcher's entry: the new entry is written as a join at the
next tick (the backend's version moves when an entry changes), and each tick first drops the marks that lapsed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Protocol

from .backends.base import Backend
from .presence import INTERVAL_S, LIST_MAX, TYPING_TTL_S, Entry, RunPresence, Typing, with_typing
from .protocol import encode

log = logging.getLogger("runcast.presence")
REFRESH_S = 2.0  # how often a node refreshes its watchers' entries (RUNCAST_PRESENCE_REFRESH_S)
TTL_FACTOR = 1.6  # an entry lives this many refresh intervals past its last refresh


class Watcher(Protocol):
    encoding: Any

    def send(self, item: Any) -> None: ...


class _Run:
    __slots__ = ("dirty", "joins", "leaves", "local", "typing", "view")

    def __init__(self, view: RunPresence, typing_ttl_s: float) -> None:
        self.view = view
        self.typing = Typing(typing_ttl_s)  # which local watchers are typing, until when
        self.local: dict[Watcher, Entry] = {}
        self.dirty = 0  # local joins / leaves since the last backend read began (that read may predate them)
        # Written to the backend at the next tick, all at once: a crowd joining costs one write per run per tick.
        self.joins: dict[str, Entry] = {}
        self.leaves: dict[str, Entry] = {}


class PresenceFeed:
    def __init__(
        self,
        backend: Backend,
        *,
        interval_s: float = INTERVAL_S,
        refresh_s: float = REFRESH_S,
        list_max: int = LIST_MAX,
        typing_ttl_s: float = TYPING_TTL_S,
    ) -> None:
        self.backend = backend
        self.typing_ttl_s = typing_ttl_s
        self.interval_s = interval_s
        self.refresh_s = refresh_s
        self.ttl_s = refresh_s * TTL_FACTOR
        self.list_max = list_max
        self._runs: dict[str, _Run] = {}
        self._tasks: list[asyncio.Task[Any]] = []

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._tick_loop(), name="runcast-presence-tick"),
            asyncio.create_task(self._refresh_loop(), name="runcast-presence-refresh"),
        ]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for run_id, run in list(self._runs.items()):  # a clean stop says goodbye; a killed node's entries expire
            try:
                await self.backend.presence_leave(run_id, [*run.local.values(), *run.leaves.values()])
            except Exception:
                pass
        self._runs.clear()

    # ------------------------------------------------------------------ local watchers
    async def join(self, run_id: str, watcher: Watcher, entry: Entry) -> None:
        """Announce `entry` on the run, then send `watcher` the whole set (its own entry included)."""
        run = self._runs.get(run_id)
        if run is None:
            view = RunPresence(run_id, interval_s=self.interval_s, list_max=self.list_max)
            run = self._runs[run_id] = _Run(view, self.typing_ttl_s)
            try:
                version, entries = await self.backend.presence_read(run_id)
                if entries is not None:
                    run.view.replace(entries, version)
            except Exception as exc:
                log.warning("presence of %s not read: %s", run_id, exc)
        run.local[watcher] = entry
        run.dirty += 1
        run.view.join(entry)
        run.leaves.pop(entry["connection_id"], None)  # (a leave not written yet would undo this join at the tick)
        run.joins[entry["connection_id"]] = entry
        watcher.send(encode(run.view.snapshot(), watcher.encoding))

    async def leave(self, run_id: str, watcher: Watcher) -> None:
        run = self._runs.get(run_id)
        if run is None or watcher not in run.local:
            return
        entry = run.local.pop(watcher)
        run.typing.clear(entry["connection_id"])
        run.dirty += 1
        run.view.leave(entry["connection_id"])
        # A join not written yet is written all the same, then this leave (joins go first at the tick): whoever opened
        # the run, however briefly, is in its `watched` record.
        run.leaves[entry["connection_id"]] = entry
        if not run.local:  # the last local watcher: say goodbye now, nobody ticks for this run any more
            del self._runs[run_id]
            try:
                await self._flush(run_id, run)
            except Exception as exc:
                log.warning("presence leave on %s not written: %s", run_id, exc)

    # ------------------------------------------------------------------ who is typing
    def set_typing(self, run_id: str, watcher: Watcher, on: bool) -> bool:
        """`watcher` (a connection in the run's presence set) is typing, or stopped; False if it is not in the set.
        A change goes to the backend and to every watcher at the next tick, as the entry's `joined`."""
        run = self._runs.get(run_id)
        entry = run.local.get(watcher) if run is not None else None
        if run is None or entry is None:
            return False
        if run.typing.set(entry["connection_id"], on, time.monotonic()):
            self._retype(run, watcher, on)
        return True

    def said(self, run_id: str, sub: str) -> None:
        """`sub` said something on the run: their local connections to it are no longer typing."""
        run = self._runs.get(run_id)
        if run is None:
            return
        for watcher, entry in list(run.local.items()):
            if entry["sub"] == sub and run.typing.clear(entry["connection_id"]):
                self._retype(run, watcher, False)

    def _expire_typing(self, run: _Run) -> None:
        gone = set(run.typing.expired(time.monotonic()))
        if gone:
            for watcher, entry in list(run.local.items()):
                if entry["connection_id"] in gone:
                    self._retype(run, watcher, False)

    def _retype(self, run: _Run, watcher: Watcher, on: bool) -> None:
        entry = run.local[watcher] = with_typing(run.local[watcher], on)
        run.dirty += 1
        run.view.join(entry)
        run.joins[entry["connection_id"]] = entry  # a changed entry is written as a join (the backend's version moves)

    async def _flush(self, run_id: str, run: _Run) -> None:
        """Write this node's joins and leaves since the last tick: one call each, however many there were."""
        if run.joins:
            joins, run.joins = run.joins, {}
            try:
                await self.backend.presence_join(run_id, list(joins.values()), self.ttl_s)
            except BaseException:
                run.joins = joins | run.joins
                raise
        if run.leaves:
            leaves, run.leaves = run.leaves, {}
            try:
                await self.backend.presence_leave(run_id, list(leaves.values()))
            except BaseException:
                run.leaves = leaves | run.leaves
                raise

    # ------------------------------------------------------------------ the clock
    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            for run_id, run in list(self._runs.items()):
                try:
                    await self._tick(run_id, run)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.debug("presence tick of %s: %s", run_id, exc)

    async def _tick(self, run_id: str, run: _Run) -> None:
        self._expire_typing(run)
        await self._flush(run_id, run)
        dirty = run.dirty
        version, entries = await self.backend.presence_read(run_id, run.view.version)
        if entries is not None and run.dirty == dirty and self._runs.get(run_id) is run:
            run.view.replace(entries, version)
        elif entries is not None:
            run.view.version = None  # a local change raced this read: read again next tick
        frame = run.view.frame(time.monotonic())
        if frame is None or not run.local:
            return
        encoded: dict[Any, Any] = {}
        for w in list(run.local):
            data = encoded.get(w.encoding)
            if data is None:
                data = encoded[w.encoding] = encode(frame, w.encoding)
            w.send(data)

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_s)
            for run_id, run in list(self._runs.items()):
                try:
                    await self.backend.presence_refresh(run_id, list(run.local.values()), self.ttl_s)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.debug("presence refresh of %s: %s", run_id, exc)
