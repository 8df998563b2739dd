"""How late this process's event loop runs, and a clock that leaves that lateness out.

A task sleeps `TICK_S` again and again; whatever it oversleeps is the loop's lag (a callback that held the loop, or
simply more work than the loop gets through). It is a metric of its own (`runcast_loop_lag_seconds`), and it is kept
out of the backend's timeouts: "no answer from Redis in 5 s" must mean Redis did not answer, not that the hub was too
busy to read the answer. `responsive()` is the monotonic clock minus the lag measured so far, so
`responsive() - start` is how long the loop could have seen an answer since `start`.

The longest stalls of a busy process were the garbage collector's full passes. A hub or worker imports about 190,000
objects (the Agents SDK, openai, pydantic, Starlette) that live as long as the process, and every full collection walked
them all again: 160 ms on a quiet 2-core machine, up to 560 ms under load, with the loop standing still (the tail of
`inbox.added` in issue 24). `freeze_startup_heap()`, called once startup is done, moves them to the permanent
generation, which collections skip. That alone made full collections more frequent: CPython runs one when a quarter
as many objects again as the last one kept have been promoted, and the count kept is now the live heap only. So the
youngest generation is also collected after 20,000 allocations instead of 700: objects that live a few turns of the
loop (frames in flight, a command's futures) die before a collection promotes them. Measured with bench/dashboards.py
on one day's machine (docs/performance.md): memory N=500 M=1,000 paced 1.64x without the freeze, 1.93x with the freeze
alone, 1.54x with both (one sitting each: from sitting to sitting that machine moved by about a fifth).
"""

from __future__ import annotations

import asyncio
import gc
import time

from . import metrics

TICK_S = 0.05
# Lateness below this is the loop's ordinary jitter, not lag (timer resolution, a few callbacks in between).
JITTER_S = 0.005


class LoopLag:
    def __init__(self) -> None:
        self.total_s = 0.0  # lag summed since the monitor started
        self.worst_s = 0.0
        self._task: asyncio.Task[None] | None = None
        self._users = 0

    def responsive(self) -> float:
        """Monotonic seconds minus the loop's lag so far (and the lag of the current tick, as far as it went)."""
        now = time.monotonic()
        pending = max(0.0, now - self._due - JITTER_S) if self._task is not None else 0.0
        return now - self.total_s - pending

    _due = 0.0

    def start(self) -> None:
        """Start measuring (several hubs in one process share one monitor)."""
        self._users += 1
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="runcast-loop-lag")

    async def stop(self) -> None:
        self._users = max(0, self._users - 1)
        if self._users == 0 and self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            self._due = time.monotonic() + TICK_S
            await asyncio.sleep(TICK_S)
            late = time.monotonic() - self._due
            if late > JITTER_S:
                self.total_s += late
                self.worst_s = max(self.worst_s, late)
            metrics.loop_lag.observe(max(0.0, late))


LAG = LoopLag()
YOUNG_THRESHOLD = 20_000  # allocations between collections of the youngest generation (CPython's default: 700)


def freeze_startup_heap() -> int:
    """Leave the objects made so far (imported modules, the registry, the app) out of every later collection.

    Startup's garbage is collected first, so none of it is kept for good. Returns how many objects were frozen."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *gc.get_threshold()[1:])
    return gc.get_freeze_count()
