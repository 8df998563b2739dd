"""Applying a state-machine transition to a run through any backend, with compare-and-set retries."""

from __future__ import annotations

from typing import Callable

from .backends.base import Backend, Conflict
from .protocol import ErrorCode, Event, ProtocolError
from .runs import RunRecord, Transition

MAX_RETRIES = 100


async def apply(backend: Backend, run_id: str, fn: Callable[[RunRecord], Transition | None]) -> tuple[Transition | None, list[Event]]:
    """Read the run, compute `fn(record)` (pure; may raise ProtocolError), commit it if the record did not move.

    Returns (transition, logged events), or (None, []) when fn had nothing to do. A transition that carries an
    error (an expiry found by a vote) is committed first, then the error is raised.
    """
    for _ in range(MAX_RETRIES):
        rec = await backend.get(run_id)
        if rec is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no run {run_id}")
        tr = fn(rec)
        if tr is None:
            return None, []
        try:
            events = await backend.commit(tr, rec.version)
        except Conflict:
            continue
        if tr.error is not None:
            raise tr.error
        return tr, events
    raise ProtocolError(ErrorCode.INTERNAL, f"run {run_id} is changing too fast; try again")
