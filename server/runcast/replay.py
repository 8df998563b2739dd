"""Replay-then-live merging, as plain code.

A subscriber asks for everything after `since`. The hub starts listening to the live feed first, then reads the
log; the two overlap, and the live feed may skip (a dropped pub/sub message, a reconnect). `Cursor` hands each seq
to the client exactly once, in order, and says which range to read from the log when it sees a hole.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Generic, Protocol, TypeVar


class HasSeq(Protocol):
    @property
    def seq(self) -> int: ...


E = TypeVar("E", bound=HasSeq)  # the event type (protocol.Event on the hub): what goes in comes out


class Cursor(Generic[E]):
    """Per (client, run): the last seq delivered, and live events held back while a replay or gap fill is under way."""

    def __init__(self, since: int = 0, max_held: int = 10_000) -> None:
        self.last = since
        self.max_held = max_held
        self._held: dict[int, E] = {}
        self.replaying = True  # until end_replay(); live events are held, not delivered
        self.overflow = False  # more held events than max_held: the client must be dropped and come back with since

    def history(self, events: Iterable[E]) -> list[E]:
        """Events read from the log (ascending). Delivers those that continue the sequence."""
        out: list[E] = []
        for ev in events:
            if ev.seq == self.last + 1:
                out.append(ev)
                self.last = ev.seq
        if self.replaying:
            if self._held and min(self._held) <= self.last:  # held live events the log has now given: let them go
                for s in [s for s in self._held if s <= self.last]:
                    del self._held[s]
            return out
        return out + self._drain()

    def live(self, ev: E) -> list[E]:
        """One event from the live feed. Delivers it (and any held successors) if it is next; else holds it."""
        if ev.seq <= self.last:
            return []  # already delivered from the log
        if self.replaying or ev.seq != self.last + 1:
            if len(self._held) >= self.max_held:
                self.overflow = True
                return []
            self._held[ev.seq] = ev
            return []
        self.last = ev.seq
        return [ev, *self._drain()]

    def follows(self, first: int, last: int) -> bool:
        """The fast path of the live feed: True (and the events first..last count as delivered) when they simply
        continue the sequence, with no replay under way and nothing held. Else nothing changes: use `live`."""
        if first != self.last + 1 or self.replaying or self._held:
            return False
        self.last = last
        return True

    def end_replay(self) -> list[E]:
        self.replaying = False
        return self._drain()

    def _drain(self) -> list[E]:
        out: list[E] = []
        for s in [s for s in self._held if s <= self.last]:
            del self._held[s]
        while (ev := self._held.pop(self.last + 1, None)) is not None:
            out.append(ev)
            self.last = ev.seq
        return out

    def gap(self) -> tuple[int, int] | None:
        """(after, upto): a hole between what was delivered and the oldest held live event, to read from the log."""
        if self.replaying or not self._held:
            return None
        first = min(self._held)
        return (self.last, first - 1) if first > self.last + 1 else None
