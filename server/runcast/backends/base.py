"""The backend interface: where runs live. The hub and the worker only ever talk to this.

`memory` (one process) and `redis` (many nodes) implement it with the same behaviour; one test suite runs against both.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any

from ..protocol import ErrorCode, Event, ProtocolError
from ..quotas import Refusal, StartQuota
from ..runs import Job, RunRecord, Transition, WireEvents

OnEvents = Callable[[list[Event]], None]
OnSignal = Callable[[str, dict[str, Any]], None]
OnEntry = Callable[[dict[str, Any]], None]  # a run's feed entry (feed.entry): its summary and its pause's approvals
OnResync = Callable[[], None]  # the feed was interrupted: entries may have been missed; read the index again


class Conflict(Exception):
    """The record changed since it was read (compare-and-set lost); read again and retry."""


class NotOwner(Exception):
    """A worker tried to write to a run it no longer owns (its lease was lost, or the run ended)."""


class LogTrimmed(ProtocolError):
    def __init__(self, run_id: str, first_kept: int) -> None:
        super().__init__(
            ErrorCode.LOG_TRIMMED,
            f"events of run {run_id} before seq {first_kept} are no longer kept; "
            f"resubscribe with since >= {first_kept - 1}"
            " or fetch the run's current state over HTTP",
            first_kept=first_kept,
        )


class Subscription(abc.ABC):
    @abc.abstractmethod
    async def close(self) -> None: ...


class Backend(abc.ABC):
    name = "abstract"
    # Errors that mean "the backend is unreachable for now": callers that must not lose data retry on these.
    transient_errors: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError)

    async def start(self) -> None:  # noqa: B027 - optional hook
        pass

    async def close(self) -> None:  # noqa: B027
        pass

    # ---- the run log and its live feed
    @abc.abstractmethod
    async def append(
        self, run_id: str, events: WireEvents, *, owner: str | None = None, tx: str | None = None
    ) -> list[Event]:
        """Give the events the next seqs, log them, then publish them. With `owner`, refuse (NotOwner) unless that
        worker still runs the run. With `tx` (an owner's retry after an append whose answer was lost), an append
        with that tx that already landed is not logged again: its logged events are returned instead."""

    @abc.abstractmethod
    async def read(self, run_id: str, after: int = 0, upto: int | None = None, limit: int | None = None) -> list[Event]:
        """Logged events with after < seq <= upto, ascending. LogTrimmed if some of them are no longer kept."""

    @abc.abstractmethod
    async def head(self, run_id: str) -> int: ...

    @abc.abstractmethod
    async def subscribe(self, run_id: str, on_events: OnEvents) -> Subscription:
        """Live events of one run, as they are appended (at most once: the hub fills holes from the log)."""

    # ---- run records: every change is a Transition committed with compare-and-set on `version`
    @abc.abstractmethod
    async def create(self, tr: Transition) -> list[Event]: ...

    @abc.abstractmethod
    async def get(self, run_id: str) -> RunRecord | None: ...

    @abc.abstractmethod
    async def list_runs(self, limit: int = 50) -> list[RunRecord]:
        """Newest first."""

    @abc.abstractmethod
    async def commit(self, tr: Transition, expected_version: int) -> list[Event]:
        """Atomically: check the stored version, store tr.record (version + 1), append tr.events, queue tr.jobs.
        Raises Conflict when the version moved."""

    # ---- the feed of run changes (the approvals inbox and the live run list) and the index of open runs
    @abc.abstractmethod
    async def subscribe_feed(self, on_entry: OnEntry, on_resync: OnResync | None = None) -> Subscription:
        """Every committed change of a run's status or approvals, as `feed.entry(record)`, from every node (at most
        once, in commit order per run). `on_resync` is called when the feed was interrupted and is back."""

    @abc.abstractmethod
    async def open_runs(self) -> list[RunRecord]:
        """Every run paused with an open approval (the index the inbox is rebuilt from)."""

    # ---- the audit index across runs (audit.py): one entry per settled approval, written as the commit lands
    @abc.abstractmethod
    async def audit_scan(
        self, facet: tuple[str, str] | None, since_ms: int, until_ms: int, before: tuple[int, str] | None, count: int
    ) -> list[tuple[int, str, dict[str, Any]]]:
        """Up to `count` index entries (score, member, entry), newest first, with since_ms <= score <= until_ms and
        (score, member) < `before`; from the facet's index (("person", sub), ("tool", name), ("agent", name)) or
        from all of them."""

    # ---- saved RunStates (the SDK's own JSON; never from a client)
    @abc.abstractmethod
    async def save_state(self, run_id: str, segment: int, state: str) -> None: ...

    @abc.abstractmethod
    async def load_state(self, run_id: str) -> str | None: ...

    # ---- the queue of runs to start or resume: each job is taken by exactly one worker
    @abc.abstractmethod
    async def take_job(self, worker_id: str, timeout: float) -> Job | None: ...

    async def ack_job(self, job: Job) -> None:  # noqa: B027
        pass

    # ---- signals to whichever worker runs a run (cancel)
    @abc.abstractmethod
    async def signal(self, run_id: str, message: dict[str, Any]) -> None: ...

    @abc.abstractmethod
    async def listen_signals(self, on_signal: OnSignal) -> Subscription: ...

    # ---- timers: paused runs with an approval deadline, running runs with a lease
    @abc.abstractmethod
    async def due_runs(self, now: float) -> list[str]: ...

    # ---- per-user start quotas (quotas.py)
    @abc.abstractmethod
    async def admit_start(self, user: str, run_id: str, now: float, quota: StartQuota) -> Refusal | None:
        """Count a start of `run_id` by `user` against `quota`, across every node: None when admitted (the start is
        counted, and the run is open until its record is terminal or gone), else the Refusal (nothing counted)."""

    # ---- presence: who watches a run right now (never in the log), and who ever watched it
    # Each node writes only its own watchers' entries and refreshes them; an entry not refreshed within its `ttl_s`
    # is gone (the node died). `presence_read` returns the set and a version that moves with every change.
    async def presence_join(self, run_id: str, entries: list[dict[str, Any]], ttl_s: float) -> None:
        """Add (or refresh) these entries ({connection_id, sub, name, roles}) until now + ttl_s, and record each
        person in the run's who-watched record (first seen stays, last seen moves)."""
        raise NotImplementedError

    async def presence_refresh(self, run_id: str, entries: list[dict[str, Any]], ttl_s: float) -> None:
        """A node's periodic refresh of entries it joined: the same as presence_join, where a backend has no cheaper
        way."""
        await self.presence_join(run_id, entries, ttl_s)

    async def presence_leave(self, run_id: str, entries: list[dict[str, Any]]) -> None:
        """Remove these entries now (their person's last seen moves to now)."""
        raise NotImplementedError

    async def presence_read(
        self, run_id: str, known_version: int | None = None
    ) -> tuple[int, dict[str, dict[str, Any]] | None]:
        """(version, connection_id -> entry) of the live entries; (version, None) when the version is
        `known_version`."""
        raise NotImplementedError

    async def watched(self, run_id: str) -> list[dict[str, Any]]:
        """Who ever watched the run: [{sub, name, first_seen, last_seen}] (epoch seconds), first seen first."""
        raise NotImplementedError

    async def ping(self) -> bool:
        return True

    # ---- the webhook outbox (webhooks.py): an entry per event of webhooks.EVENTS, written atomically with the event
    # by create/commit; each entry is taken by exactly one deliverer, which acks it once every endpoint is done.
    @abc.abstractmethod
    async def outbox_join(self) -> None:
        """This process will deliver: from now on (memory) / as one consumer of the group (Redis)."""

    @abc.abstractmethod
    async def outbox_take(self, consumer: str, count: int, timeout: float) -> list[dict[str, Any]]:
        """Entries {id, run_id, seq, ts, type, data} for this consumer: new ones, or ones whose deliverer went
        silent."""

    @abc.abstractmethod
    async def outbox_touch(self, consumer: str, entry_id: str) -> None:
        """Still working on it (so nobody takes it over)."""

    @abc.abstractmethod
    async def outbox_ack(self, entry_id: str) -> None: ...

    # ---- receiver lanes (webhooks.py): each receiver (endpoint id) has its own queue of deliveries, so a slow or dead
    # one holds up only itself; one process at a time delivers a lane (its lease), in order.
    @abc.abstractmethod
    async def lane_push(self, entry_id: str, items: list[tuple[str, dict[str, Any]]]) -> None:
        """Append each (lane, item) to its lane and ack the outbox entry `entry_id`, in one atomic step."""

    @abc.abstractmethod
    async def lane_ids(self) -> list[str]:
        """The lanes that have ever had an item (not yet emptied and forgotten)."""

    @abc.abstractmethod
    async def lane_lease(self, lane: str, holder: str, ttl_s: float) -> bool:
        """Take, or renew, the right to deliver `lane` for `ttl_s`; False when another holder has it."""

    @abc.abstractmethod
    async def lane_release(self, lane: str, holder: str) -> None: ...

    @abc.abstractmethod
    async def lane_read(self, lane: str, count: int) -> list[tuple[str, dict[str, Any]]]:
        """The oldest `count` items of the lane, (item id, item), oldest first; they stay until lane_done."""

    @abc.abstractmethod
    async def lane_done(self, lane: str, item_id: str) -> None: ...

    @abc.abstractmethod
    async def lane_length(self, lane: str) -> int: ...

    @abc.abstractmethod
    async def circuit_put(self, lane: str, state: dict[str, Any]) -> None:
        """A receiver's circuit state (webhooks.Circuit.public()), shown by GET /api/webhooks/deliveries."""

    @abc.abstractmethod
    async def circuits(self) -> list[dict[str, Any]]: ...

    # ---- delivery records, shared by every node: status and attempts per (webhook-id, endpoint)
    @abc.abstractmethod
    async def delivery_get(self, key: str) -> dict[str, Any] | None: ...

    @abc.abstractmethod
    async def delivery_put(self, key: str, record: dict[str, Any]) -> None: ...

    @abc.abstractmethod
    async def deliveries(self, limit: int = 100) -> list[dict[str, Any]]:
        """The most recently updated delivery records, newest first."""
