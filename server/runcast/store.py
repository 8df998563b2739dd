"""Applying a state-machine transition to a run through any backend, with compare-and-set retries."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable

from .backends.base import Backend, Conflict
from .protocol import ErrorCode, Event, ProtocolError
from .runs import RunRecord, Transition

MAX_RETRIES = 100
log = logging.getLogger("runcast.store")


Observer = Callable[[list[Event], RunRecord], None]
"""Called once per landed commit with the events it logged and the new record (metrics.observe_events): the store
sits below the metrics in the layers, so the caller hands the observer in."""


async def apply(
    backend: Backend,
    run_id: str,
    fn: Callable[[RunRecord], Transition | None],
    *,
    persist: bool = False,
    observe: Observer | None = None,
) -> tuple[Transition | None, list[Event]]:
    """Read the run, compute `fn(record)` (pure; may raise ProtocolError), commit it if the record did not move.

    Returns (transition, logged events), or (None, []) when fn had nothing to do. A transition that carries an
    error (an expiry found by a vote) is committed first, then the error is raised.

    When the backend is unreachable: a commit whose answer was lost is retried until we know whether it landed
    (each transition carries a `tx` id that the stored record keeps). With `persist` (the worker, which must not
    drop an outcome), every outage is waited out; without it, a commit that surely did not happen raises.
    """
    tx = secrets.token_hex(8)
    pending: Transition | None = None  # committed, answer lost: it may have landed
    conflicts = 0
    delay = 0.05
    while conflicts < MAX_RETRIES:
        try:
            rec = await backend.get(run_id)
            if rec is None:
                raise ProtocolError(ErrorCode.NOT_FOUND, f"no run {run_id} that your token may see", run_id=run_id)
            if pending is not None and rec.tx == tx:
                if pending.error is not None:
                    raise pending.error
                return pending, []  # it landed before the connection dropped
            pending = None
            tr = fn(rec)
            if tr is None:
                return None, []
            tr.record.tx = tx
            tr.feed = bool(tr.events) or tr.record.status != rec.status
            try:
                events = await backend.commit(tr, rec.version)
            except backend.transient_errors:
                pending = tr
                raise
        except Conflict:
            conflicts += 1
            continue
        except backend.transient_errors as exc:
            if pending is None and not persist:
                raise ProtocolError(ErrorCode.INTERNAL, "the hub's backend is unreachable; try again shortly") from exc
            log.warning("run %s: backend unreachable (%s); retrying in %.2fs", run_id, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
            continue
        if observe is not None:
            observe(events, tr.record)
        if tr.error is not None:
            raise tr.error
        return tr, events
    raise ProtocolError(ErrorCode.INTERNAL, f"run {run_id} is changing too fast; try again")
