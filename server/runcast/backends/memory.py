"""The one-process backend: everything in dicts. Each method runs without awaiting in between, so it is atomic."""

from __future__ import annotations

import asyncio
import bisect
import collections
import itertools
import time
from collections import OrderedDict, deque
from typing import Any

from .. import audit, feed, quotas
from ..protocol import WEBHOOK_EVENTS, Event, make_event
from ..quotas import Refusal, StartQuota
from ..runs import Job, RunRecord, Transition, WireEvents
from .base import Backend, Conflict, LogTrimmed, NotOwner, OnEntry, OnEvents, OnResync, OnSignal, Subscription


class _Sub(Subscription):
    def __init__(self, registry: dict[Any, list[Any]], key: Any, cb: Any) -> None:
        self._registry, self._key, self._cb = registry, key, cb
        registry.setdefault(key, []).append(cb)

    async def close(self) -> None:
        cbs = self._registry.get(self._key, [])
        if self._cb in cbs:
            cbs.remove(self._cb)
        if not cbs:
            self._registry.pop(self._key, None)


class MemoryBackend(Backend):
    name = "memory"

    def __init__(self, max_log: int | None = None, retention_s: float | None = None) -> None:
        self.max_log = max_log
        self.retention_s = retention_s  # a finished run is forgotten this long after it finished (None: kept)
        self._finished: OrderedDict[str, float] = OrderedDict()  # run_id -> when it finished, oldest first
        self._next_forget = 0.0
        self._starts: dict[str, deque[float]] = {}  # per user: starts in the quota window
        self._open: dict[str, set[str]] = {}  # per user: runs started and not known to be finished
        self._logs: dict[str, list[Event]] = {}
        self._first: dict[str, int] = {}  # first seq still kept, per run
        self._records: dict[str, RunRecord] = {}
        self._states: dict[str, str] = {}
        self._subs: dict[Any, list[Any]] = {}
        self._signal_subs: dict[Any, list[Any]] = {}
        self._jobs: asyncio.Queue[Job] = asyncio.Queue()
        self._feed_subs: dict[Any, list[Any]] = {}
        self._outbox: collections.deque[dict[str, Any]] | None = None  # once a deliverer joined (webhooks.py)
        self._outbox_ready = asyncio.Event()
        self._outbox_ids = itertools.count(1)
        self._deliveries: collections.OrderedDict[str, dict[str, Any]] = collections.OrderedDict()
        self._lanes: dict[str, collections.OrderedDict[str, dict[str, Any]]] = {}
        self._lane_ids = itertools.count(1)
        self._leases: dict[str, tuple[str, float]] = {}
        self._circuits: dict[str, dict[str, Any]] = {}
        self._presence: dict[str, dict[str, tuple[float, dict[str, Any]]]] = {}  # run -> cid -> (expiry, entry)
        self._presence_v: dict[str, int] = {}  # per live set; from one counter, so a version never comes back
        self._presence_n = 0
        self._watched: dict[str, dict[str, dict[str, Any]]] = {}  # run -> sub -> {sub, name, first_seen, last_seen}
        # the audit index: (score, member) sorted, overall and per facet; member -> entry
        self._audit: list[tuple[int, str]] = []
        self._audit_facets: dict[tuple[str, str], list[tuple[int, str]]] = {}
        self._audit_entries: dict[str, dict[str, Any]] = {}

    # ---- log
    def _append(self, run_id: str, events: WireEvents) -> list[Event]:
        if not events:
            return []
        log = self._logs.setdefault(run_id, [])
        first = self._first.setdefault(run_id, 1)
        seq = first + len(log)
        now = time.time()
        out = [make_event(run_id, seq + i, t, d, now) for i, (t, d) in enumerate(events)]
        log.extend(out)
        if self.max_log is not None and len(log) > self.max_log:
            drop = len(log) - self.max_log
            del log[:drop]
            self._first[run_id] = first + drop
        for cb in list(self._subs.get(run_id, [])):
            cb(out)
        return out

    async def append(
        self, run_id: str, events: WireEvents, *, owner: str | None = None, tx: str | None = None
    ) -> list[Event]:  # (in one process no answer is ever lost: tx has nothing to do)
        if owner is not None:
            rec = self._records.get(run_id)
            if rec is None or rec.status != "running" or rec.owner != owner:
                raise NotOwner(run_id)
        return self._append(run_id, events)

    async def read(self, run_id: str, after: int = 0, upto: int | None = None, limit: int | None = None) -> list[Event]:
        log = self._logs.get(run_id, [])
        first = self._first.get(run_id, 1)
        if after + 1 < first:
            raise LogTrimmed(run_id, first)
        start = after + 1 - first
        stop = len(log) if upto is None else max(start, min(len(log), upto + 1 - first))
        if limit is not None:
            stop = min(stop, start + limit)
        return log[start:stop]

    async def head(self, run_id: str) -> int:
        return self._first.get(run_id, 1) + len(self._logs.get(run_id, [])) - 1

    async def subscribe(self, run_id: str, on_events: OnEvents) -> Subscription:
        return _Sub(self._subs, run_id, on_events)

    # ---- records
    async def create(self, tr: Transition) -> list[Event]:
        rid = tr.record.run_id
        if rid in self._records:
            raise Conflict(rid)
        self._records[rid] = tr.record.model_copy(deep=True)
        for job in tr.jobs:
            self._jobs.put_nowait(job)
        events = self._append(rid, tr.events)
        self._publish(self._records[rid])
        self._to_outbox(events)
        return events

    async def get(self, run_id: str) -> RunRecord | None:
        rec = self._records.get(run_id)
        return rec.model_copy(deep=True) if rec is not None else None

    async def list_runs(self, limit: int = 50) -> list[RunRecord]:
        recs = sorted(self._records.values(), key=lambda r: (r.created_at, r.run_id), reverse=True)
        return [r.model_copy(deep=True) for r in recs[:limit]]

    async def commit(self, tr: Transition, expected_version: int) -> list[Event]:
        rid = tr.record.run_id
        cur = self._records.get(rid)
        if cur is None or cur.version != expected_version:
            raise Conflict(rid)
        rec = tr.record.model_copy(deep=True)
        rec.version = expected_version + 1
        self._records[rid] = rec
        if rec.terminal and rid not in self._finished:
            self._finished[rid] = time.time()
        elif not rec.terminal:  # a conversation's next turn: the run is live again
            self._finished.pop(rid, None)
        self._audit_index(rec)
        events = self._append(rid, tr.events)
        self._to_outbox(events)
        for job in tr.jobs:
            self._jobs.put_nowait(job)
        if tr.feed:
            self._publish(rec)
        return events

    # ---- the feed
    def _publish(self, rec: RunRecord) -> None:
        e = feed.entry(rec)
        for cb in list(self._feed_subs.get("*", [])):
            cb(e)

    async def subscribe_feed(self, on_entry: OnEntry, on_resync: OnResync | None = None) -> Subscription:
        return _Sub(self._feed_subs, "*", on_entry)  # one process: nothing is ever missed, no resync

    async def open_runs(self) -> list[RunRecord]:
        return [r.model_copy(deep=True) for r in self._records.values() if feed.is_open(feed.entry(r))]

    # ---- the audit index (audit.py): written in the same step as the commit that settles an approval
    def _audit_index(self, rec: RunRecord) -> None:
        for e in audit.entries(rec):
            m = audit.member(e)
            if m in self._audit_entries:
                continue  # settled once, indexed once
            self._audit_entries[m] = e
            key = (audit.score(e), m)
            bisect.insort(self._audit, key)
            for f in audit.facets(e):
                bisect.insort(self._audit_facets.setdefault(f, []), key)

    async def audit_scan(
        self, facet: tuple[str, str] | None, since_ms: int, until_ms: int, before: tuple[int, str] | None, count: int
    ) -> list[tuple[int, str, dict[str, Any]]]:
        keys = self._audit if facet is None else self._audit_facets.get(facet, [])
        lo = bisect.bisect_left(keys, (since_ms, ""))
        hi = bisect.bisect_right(keys, (until_ms, "\U0010ffff"))
        if before is not None:
            hi = min(hi, bisect.bisect_left(keys, before))
        return [(s, m, self._audit_entries[m]) for s, m in reversed(keys[max(lo, hi - count) : hi])]

    # ---- states
    async def save_state(self, run_id: str, segment: int, state: str) -> None:
        self._states[run_id] = state

    async def load_state(self, run_id: str) -> str | None:
        return self._states.get(run_id)

    # ---- jobs
    async def take_job(self, worker_id: str, timeout: float) -> Job | None:
        try:
            return await asyncio.wait_for(self._jobs.get(), timeout)
        except TimeoutError:
            return None

    # ---- signals
    async def signal(self, run_id: str, message: dict[str, Any]) -> None:
        for cb in list(self._signal_subs.get("*", [])):
            cb(run_id, message)

    async def listen_signals(self, on_signal: OnSignal) -> Subscription:
        return _Sub(self._signal_subs, "*", on_signal)

    # ---- retention: what Redis does with key expiry, done here on the sweeper's calls
    def _housekeep(self, now: float) -> None:
        """At most once a second: forget finished runs past retention, and users with no recent start."""
        if now < self._next_forget:
            return
        self._next_forget = now + min(1.0, self.retention_s / 2) if self.retention_s else now + 1.0
        for user, starts in list(self._starts.items()):
            while starts and starts[0] <= now - quotas.WINDOW_S:
                starts.popleft()
            if not starts and not self._open.get(user):
                del self._starts[user]
                self._open.pop(user, None)
        if self.retention_s is None:
            return
        while self._finished:
            rid, at = next(iter(self._finished.items()))
            if at + self.retention_s > now:
                break
            del self._finished[rid]
            for store in (self._records, self._logs, self._first, self._states, self._watched):
                store.pop(rid, None)

    # ---- per-user start quotas
    async def admit_start(self, user: str, run_id: str, now: float, quota: StartQuota) -> Refusal | None:
        if quota.off:
            return None
        starts = self._starts.setdefault(user, deque())
        open_ = self._open.setdefault(user, set())
        open_.difference_update([r for r in open_ if (rec := self._records.get(r)) is None or rec.terminal])
        refusal = quotas.check(starts, len(open_), now, quota)
        if refusal is None:
            starts.append(now)
            open_.add(run_id)
        return refusal

    # ---- presence
    def _seen(self, run_id: str, entry: dict[str, Any], now: float) -> None:
        rec = self._watched.setdefault(run_id, {}).setdefault(entry["sub"], {"sub": entry["sub"], "first_seen": now})
        rec["name"], rec["last_seen"] = entry.get("name") or entry["sub"], now

    def _bump(self, run_id: str) -> None:
        if self._presence.get(run_id):
            self._presence_n += 1
            self._presence_v[run_id] = self._presence_n
        else:  # an empty set keeps nothing
            self._presence.pop(run_id, None)
            self._presence_v.pop(run_id, None)

    async def presence_join(self, run_id: str, entries: list[dict[str, Any]], ttl_s: float) -> None:
        now = time.time()
        live = self._presence.setdefault(run_id, {})
        added = False  # an entry new or changed (`typing`): the version moves
        for e in entries:
            held = live.get(e["connection_id"])
            added |= held is None or held[1] != e
            live[e["connection_id"]] = (now + ttl_s, dict(e))
            self._seen(run_id, e, now)
        if added:
            self._bump(run_id)

    async def presence_leave(self, run_id: str, entries: list[dict[str, Any]]) -> None:
        now = time.time()
        live = self._presence.get(run_id, {})
        removed = False
        for e in entries:
            removed |= live.pop(e["connection_id"], None) is not None
            self._seen(run_id, e, now)
        if removed:
            self._bump(run_id)

    async def presence_read(
        self, run_id: str, known_version: int | None = None
    ) -> tuple[int, dict[str, dict[str, Any]] | None]:
        now = time.time()
        live = self._presence.get(run_id, {})
        gone = [cid for cid, (exp, _) in live.items() if exp <= now]
        for cid in gone:
            del live[cid]
        if gone:
            self._bump(run_id)
        v = self._presence_v.get(run_id, 0)
        if v == known_version:
            return v, None
        return v, {cid: dict(e) for cid, (_, e) in live.items()}

    async def watched(self, run_id: str) -> list[dict[str, Any]]:
        return sorted(
            (dict(r) for r in self._watched.get(run_id, {}).values()), key=lambda r: (r["first_seen"], r["sub"])
        )

    # ---- timers
    async def due_runs(self, now: float) -> list[str]:
        self._housekeep(now)
        out = []
        for rid, rec in self._records.items():
            d = rec.deadline()
            if (d is not None and d <= now) or (
                rec.status == "running" and rec.lease_until is not None and rec.lease_until <= now
            ):
                out.append(rid)
        return out

    # ---- webhook outbox: an in-process queue (one process: whoever joined delivers everything)
    def _to_outbox(self, events: list[Event]) -> None:
        if self._outbox is None:
            return
        for ev in events:
            if ev.type in WEBHOOK_EVENTS:
                self._outbox.append({"id": str(next(self._outbox_ids)), **ev.frame})
                self._outbox_ready.set()

    async def outbox_join(self) -> None:
        if self._outbox is None:
            self._outbox = collections.deque(maxlen=100_000)

    async def outbox_take(self, consumer: str, count: int, timeout: float) -> list[dict[str, Any]]:
        if self._outbox is None:
            await self.outbox_join()
        assert self._outbox is not None
        if not self._outbox:
            self._outbox_ready.clear()
            try:
                await asyncio.wait_for(self._outbox_ready.wait(), timeout)
            except TimeoutError:
                return []
        return [self._outbox.popleft() for _ in range(min(count, len(self._outbox)))]

    async def outbox_touch(self, consumer: str, entry_id: str) -> None:
        pass

    async def outbox_ack(self, entry_id: str) -> None:
        pass

    async def lane_push(self, entry_id: str, items: list[tuple[str, dict[str, Any]]]) -> None:
        for lane, item in items:
            self._lanes.setdefault(lane, collections.OrderedDict())[str(next(self._lane_ids))] = item

    async def lane_ids(self) -> list[str]:
        return list(self._lanes)

    async def lane_lease(self, lane: str, holder: str, ttl_s: float) -> bool:
        now = time.monotonic()
        cur = self._leases.get(lane)
        if cur is not None and cur[0] != holder and cur[1] > now:
            return False
        self._leases[lane] = (holder, now + ttl_s)
        return True

    async def lane_release(self, lane: str, holder: str) -> None:
        if self._leases.get(lane, ("",))[0] == holder:
            del self._leases[lane]

    async def lane_read(self, lane: str, count: int) -> list[tuple[str, dict[str, Any]]]:
        return list(itertools.islice(self._lanes.get(lane, {}).items(), count))

    async def lane_done(self, lane: str, item_id: str) -> None:
        items = self._lanes.get(lane)
        if items is not None:
            items.pop(item_id, None)

    async def lane_length(self, lane: str) -> int:
        return len(self._lanes.get(lane, {}))

    async def circuit_put(self, lane: str, state: dict[str, Any]) -> None:
        self._circuits[lane] = dict(state)

    async def circuits(self) -> list[dict[str, Any]]:
        return [dict(c) | {"queued": len(self._lanes.get(k, {}))} for k, c in self._circuits.items()]

    async def delivery_get(self, key: str) -> dict[str, Any] | None:
        rec = self._deliveries.get(key)
        return dict(rec) if rec is not None else None

    async def delivery_put(self, key: str, record: dict[str, Any]) -> None:
        self._deliveries[key] = dict(record)
        self._deliveries.move_to_end(key)
        while len(self._deliveries) > 1000:
            self._deliveries.popitem(last=False)

    async def deliveries(self, limit: int = 100) -> list[dict[str, Any]]:
        return [dict(r) for r in reversed(list(self._deliveries.values())[-limit:])]
