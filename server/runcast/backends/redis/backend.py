"""The Redis backend: many hub nodes and workers on one Redis, or on a Redis Cluster.

Layout (`P` is the prefix, `R` a run id). A run's keys and channel carry the hash tag `{R}`, so on a cluster they
live in the run's slot and each script touches one slot; the structures shared by all runs carry the tag `{P}`, so
they share one slot (one master) with one another:

    P:run:{R}:rec     the RunRecord as JSON (with `version`, the compare-and-set token)
    P:run:{R}:log     a Stream: one entry per event, id `<seq>-0`, one field `e` = the event's msgpack bytes
    P:run:{R}:seq     the head seq (0 or missing: no events); the first kept seq is head - XLEN(log) + 1
    P:run:{R}:state   the saved RunState (hash: segment, state), and tx: "<tx> <first seq>" of the owner's last append
    P:run:{R}:outbox  a List of the jobs a commit queued, until they are in {P}:jobs (see "Commits" below)
    P:run:{R}:hooks   a List of the events a commit logged for webhooks, until they are in {P}:webhooks:outbox
    P:live:{R}        pub/sub channel (sharded on a cluster): one message per append, a msgpack array of the events
    P:signals         pub/sub channel (sharded on a cluster): msgpack {run_id, message}
    {P}:jobs          a Stream of jobs (field `j` = Job JSON), consumer group `workers`
    {P}:timers        ZSET run_id -> earliest of (approval deadline, lease end): what `due_runs` scans
    {P}:timerv        HASH run_id -> the record version {P}:timers was last written from (late writes lose)
    {P}:done          ZSET run_id -> when it ended: its {P}:timerv field is dropped an hour later
    {P}:runs          ZSET run_id -> creation time: `list_runs`
    {P}:open          ZSET run_id -> creation time of the runs paused with an open approval: `open_runs` (the inbox)
    {P}:audit         ZSET "<run_id> <approval_id>" -> settle time (ms): every settled approval (GET /api/audit)
    {P}:audit:rows    HASH "<run_id> <approval_id>" -> its audit entry (JSON, audit.entry): what a query reads
    {P}:audit:person:{S} / :tool:{T} / :agent:{A}   the same ZSET per person (started, voted or decided), tool, agent
    {P}:feed          pub/sub channel (sharded on a cluster): a run's feed entry (msgpack, feed.entry) on each change
                      of its status or approvals; entries carry the record's version (a late one is dropped by nodes)
    {P}:webhooks:*    the webhook outbox (a Stream) and delivery records: see outbox.py
    {P}:flush         ZSET "<run_id> <tx>" -> deadline: commits whose jobs and timer are not yet in the {P} keys
    P:user:{U}:starts ZSET run_id -> start time (ms): user U's starts in the quota window (quota.lua)
    P:user:{U}:open   ZSET run_id -> start time (ms): U's runs not known to be finished (pruned from their records)
    {P}:sentinel      a random value each process checks every second: gone means Redis lost its data (datawatch.py)
    P:run:{R}:presence, :presence:data, :presence:v, :watched    who watches (see presence.py)

Appends (the hot path: every event) are one script in the run's slot: log, head, trim, publish. Events are packed
in Python with a placeholder seq: "seq" is the first key of the map and its value a fixed-width uint32 (see
`_template`), so the script writes the real seq into those four bytes. Writers never guess the next seq, so many
writers on one run (a worker streaming, hubs logging presence) never make each other retry. Nothing is retried on
a connection error: a write whose answer was lost may have happened, so it is the caller's decision (a retry of a
commit then meets a Conflict; an owner's append carries a tx id for its retry).

Commits (a state change: start, claim, pause, vote, finish...) touch the run's slot and the shared {P} slot, which a
cluster cannot do in one script. So a commit is an outbox: (1) mark "<run> <tx>" in {P}:flush with a deadline (on
one Redis the commit script of (2) writes it);
(2) one script in the run's slot checks the version, stores the record, appends the events and pushes the jobs to
the run's outbox (on one Redis it also publishes the run's feed entry, so the inboxes hear of the change with its
events); (3) one script in the {P} slot adds the outbox's jobs to {P}:jobs, writes the run's timer and its place in
{P}:open and its settled approvals in {P}:audit*, and on a cluster publishes the feed entry (if this version is newer
than the one they were written from), indexes the run and clears the mark; (4) the flushed jobs leave the outbox. If
a process dies between (2) and (4), any sweeper finds the mark past its deadline and does (3)
and (4) from the stored record and outbox. A job may so reach {P}:jobs twice: claiming is a compare-and-set on the
run's status and segment, so the second copy is refused and dropped. The same path runs on a single Redis.

Modules: `backend.py` (this: the log, records, saved states, timers), `jobs.py` (the job queue), `pubsub.py` (the
live feed and signals: pub/sub connections and their readers), `scripts.py` with the Lua scripts in `lua/`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections import OrderedDict
from datetime import datetime
from typing import Any

import msgpack
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import (
    ClusterDownError,
    ClusterError,
    MasterDownError,
    RedisClusterException,
    RedisError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.maint_notifications import MaintNotificationsConfig

from ... import audit, feed, metrics, quotas
from ...protocol import WEBHOOK_EVENTS, Event, now_iso
from ...quotas import Refusal, StartQuota
from ...runs import TERMINAL, RunRecord, Transition, WireEvents
from ..base import Backend, Conflict, LogTrimmed, NotOwner
from . import scripts
from .datawatch import DataWatch
from .jobs import JobQueue
from .outbox import OutboxQueue
from .presence import Presence
from .pubsub import LiveFeed, _Channel, _Shard

log = logging.getLogger("runcast.redis")

FLUSH_GRACE_S = 5.0  # a commit's jobs and timer not in the {P} keys after this long are put there by a sweeper
_EVENT_CACHE = 20_000  # recent events this process keeps decoded, by their packed bytes (see _intern)
# A packed event: fixmap header, "seq" (0xa3 's' 'e' 'q'), uint32 marker 0xce, then the seq's 4 bytes, then the rest.
_SEQ_AT = 6
_SEQ_HEAD = b"\xa3seq\xce"


def _created_score(rec: RunRecord) -> float:
    try:
        return datetime.fromisoformat(rec.created_at.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return rec.updated_at or time.time()


def _timer_score(rec: RunRecord) -> float | None:
    times = []
    d = rec.deadline()
    if d is not None:
        times.append(d)
    if rec.status == "running" and rec.lease_until is not None:
        times.append(rec.lease_until)
    return min(times) if times else None


class RedisBackend(OutboxQueue, JobQueue, LiveFeed, Presence, DataWatch, Backend):
    name = "redis"
    # redis-py's ConnectionError (BusyLoadingError included) and TimeoutError are not the builtin ones.
    # On a cluster, a failover answers CLUSTERDOWN / MASTERDOWN / TRYAGAIN for a moment: the command did not run.
    # ClusterError("TTL exhausted."): redis-py followed MOVED / ASK / TRYAGAIN until its redirect budget ran out (a
    # script whose keys a slot migration has split answers TRYAGAIN until the last key moves: longer than that budget
    # on a loaded machine); no try ran the command. (ClusterDownError and MasterDownError are ClusterErrors too.)
    # RedisClusterException: no node gave a full slot map (mid-failover); the command did not run.
    transient_errors = (
        RedisConnectionError,
        RedisTimeoutError,
        ConnectionError,
        TimeoutError,
        OSError,
        ClusterError,
        ClusterDownError,
        MasterDownError,
        TryAgainError,
        SlotNotCoveredError,
        RedisClusterException,
    )

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "runcast",
        max_log: int | None = 100_000,
        retention_s: float = 7 * 86400,
        job_idle_s: float = 30.0,
        max_connections: int = 64,
        pool_timeout_s: float = 10.0,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.max_log = max_log
        self.retention_s = retention_s
        self.job_idle_s = job_idle_s  # a job taken this long ago and never acked is given to another worker
        self.subscribe_timeout = 5.0
        self.reconnect_min_s = 0.1
        self.reconnect_max_s = 2.0
        self.ping_after_s = 5.0  # the pub/sub connection has been silent this long: PING it
        self.dead_after_s = 15.0  # ... and this long: consider it dead and reconnect
        self.connect_timeout_s = 5.0  # connecting, handshake included
        self.stats = {"reconnects": 0, "filled_events": 0, "reclaimed_jobs": 0}
        # No retries inside redis-py: a script whose answer was lost may have run, and re-running an append would
        # log its events twice. Errors go to the caller; a broken pooled connection is replaced on next use.
        # (redis-py skips that check of pooled connections while "maintenance notifications" are on, so after a
        # Redis restart every idle connection would fail once: they are a Redis Enterprise feature; off.)
        self.max_connections = max_connections
        self.pool_timeout_s = pool_timeout_s
        self.cluster = False  # found out by start(): INFO cluster says cluster_enabled:1
        self._redis: Any = None
        self._events: OrderedDict[bytes, Event] = OrderedDict()
        self._job_ids: dict[tuple[str, str, int], list[bytes]] = {}
        self._unacked: list[bytes] = []
        self._next_reclaim = 0.0
        self._next_prune = 0.0
        self._chans: dict[bytes, _Channel] = {}
        self._shards: dict[str, _Shard] = {}
        self._refreshed_at = 0.0
        self._ctl = f"{prefix}:ctl:{id(self):x}:{time.time_ns()}".encode()  # keeps the connection in pub/sub mode
        self._closing = False
        self._init_datawatch()

    def twin(self) -> RedisBackend:
        """A backend like this one with connections of its own, for another event loop (a hub's worker thread)."""
        return RedisBackend(
            self.url,
            prefix=self.prefix,
            max_log=self.max_log,
            retention_s=self.retention_s,
            job_idle_s=self.job_idle_s,
            max_connections=self.max_connections,
            pool_timeout_s=self.pool_timeout_s,
        )

    # ------------------------------------------------------------------ keys
    def _k(self, run_id: str, what: str) -> str:
        return f"{self.prefix}:run:{{{run_id}}}:{what}"

    def _g(self, what: str) -> str:
        """A key shared by all runs: they share the {P} hash tag, so one script can write several of them."""
        return f"{{{self.prefix}}}:{what}"

    @property
    def _timers(self) -> str:
        return self._g("timers")

    @property
    def _runs(self) -> str:
        return self._g("runs")

    @property
    def _flush_marks(self) -> str:
        return self._g("flush")

    @property
    def _open(self) -> str:
        return self._g("open")

    @property
    def _retention_ms(self) -> int:
        return int(self.retention_s * 1000) if self.retention_s and self.retention_s > 0 else 0

    # ------------------------------------------------------------------ lifecycle
    async def _is_cluster(self) -> bool:
        probe = aioredis.Redis.from_url(
            self.url,
            retry=Retry(NoBackoff(), 0),
            socket_timeout=10.0,
            socket_connect_timeout=3.0,
            maint_notifications_config=MaintNotificationsConfig(enabled=False),
        )
        try:
            return str((await probe.info("cluster")).get("cluster_enabled", 0)) == "1"
        finally:
            await probe.aclose()

    def _client(self) -> Any:
        common: dict[str, Any] = dict(
            retry=Retry(NoBackoff(), 0),
            socket_timeout=10.0,
            socket_connect_timeout=3.0,
            maint_notifications_config=MaintNotificationsConfig(enabled=False),
        )
        if self.cluster:
            # Any node's address will do: the client reads the slot map from it and follows MOVED / ASK itself
            # (those are not retries: the command did not run). A connection error is not retried, as above, but
            # makes the client read the slot map again before its next command (a failover).
            return RedisCluster.from_url(self.url, max_connections=max(self.max_connections, 256), **common)
        # A blocking pool: when every connection is busy (hundreds of clients replaying at once), a command waits for
        # one instead of failing with "Too many connections".
        pool = aioredis.BlockingConnectionPool.from_url(
            self.url, max_connections=self.max_connections, timeout=self.pool_timeout_s, **common
        )
        return aioredis.Redis.from_pool(pool)  # owns the pool: aclose() closes it

    async def start(self) -> None:
        if self._redis is None:
            self.cluster = await self._is_cluster()
            self._redis = self._client()
            self._append_script = self._redis.register_script(scripts.APPEND)
            self._commit_script = self._redis.register_script(scripts.COMMIT)
            self._flush_script = self._redis.register_script(scripts.FLUSH)
            self._read_script = self._redis.register_script(scripts.READ)
            self._save_state_script = self._redis.register_script(scripts.SAVE_STATE)
            self._quota_script = self._redis.register_script(scripts.QUOTA)
            self._publish = "SPUBLISH" if self.cluster else "PUBLISH"
        await self._redis.ping()
        await self._ensure_group()
        for script in (
            self._append_script,
            self._commit_script,
            self._flush_script,
            self._read_script,
            self._save_state_script,
            self._quota_script,
        ):
            await self._redis.script_load(script.script)  # (Script reloads by itself after a Redis restart)
        if self.cluster:
            log.info("Redis Cluster at %s: sharded pub/sub, %d masters", self.url, len(self._redis.get_primaries()))
        await self._arm_sentinel()
        self._start_datawatch()

    def _after_outage(self) -> None:
        """On a cluster: read the slot map again before the next command, from any node this process has known (not
        only the address it was given, which may be the master that just died)."""
        if not self.cluster or self._redis is None:
            return
        nm = self._redis.nodes_manager
        for node in list(nm.nodes_cache.values()):
            if node.name not in nm.startup_nodes:
                nm.startup_nodes[node.name] = ClusterNode(node.host, node.port, **nm.connection_kwargs)
        self._redis._initialize = True

    async def take_job(self, worker_id: str, timeout: float) -> Any:
        try:
            return await super().take_job(worker_id, timeout)
        except self.transient_errors:
            self._after_outage()
            raise

    async def close(self) -> None:
        self._closing = True
        await self._stop_datawatch()
        readers = [s.reader for s in self._shards.values() if s.reader is not None]
        for t in readers:
            t.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        self._shards.clear()
        if self._redis is not None:
            await self._redis.aclose()

    async def ping(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except (RedisError, OSError):
            return False

    # ------------------------------------------------------------------ the log
    @staticmethod
    def _template(run_id: str, type_: str, data: dict[str, Any], ts: str) -> bytes:
        """The packed event with seq 0 in a fixed-width slot (the scripts write the real seq into it)."""
        body = b"".join(
            msgpack.packb(k) + msgpack.packb(v, use_bin_type=True)
            for k, v in (("run_id", run_id), ("ts", ts), ("type", type_), ("data", data))
        )
        return b"\x85" + _SEQ_HEAD + b"\x00\x00\x00\x00" + body

    def _templates(self, run_id: str, events: WireEvents) -> list[bytes]:
        ts = now_iso()
        return [self._template(run_id, t, d, ts) for t, d in events]

    def _logged(self, run_id: str, first: int, templates: list[bytes]) -> list[Event]:
        """The events as the script logged them: seq first, first + 1, ... (the same bytes it wrote)."""
        out = []
        for i, tmpl in enumerate(templates):
            packed = tmpl[:_SEQ_AT] + (first + i).to_bytes(4, "big") + tmpl[_SEQ_AT + 4 :]
            out.append(self._intern(packed))
        return out

    async def append(
        self, run_id: str, events: WireEvents, *, owner: str | None = None, tx: str | None = None
    ) -> list[Event]:
        if not events and owner is None:
            return []
        keys = [self._k(run_id, "rec"), self._k(run_id, "log"), self._k(run_id, "seq"), self._k(run_id, "state")]
        templates = self._templates(run_id, events)
        res = await self._append_script(
            keys=keys,
            args=[
                owner or "",
                self._publish,
                self.max_log or 0,
                self._live(run_id),
                self._retention_ms,
                tx or "",
                *templates,
            ],
        )
        code = int(res[0])
        if code == scripts.NOT_OWNER:
            raise NotOwner(run_id)
        if code == scripts.LANDED:  # an earlier try of this append landed; its answer was lost
            first = int(res[1])
            return await self.read(run_id, first - 1, upto=first + len(events) - 1)
        return self._logged(run_id, int(res[1]), templates)

    def _intern(self, packed: bytes) -> Event:
        """The one Event object of this process for these bytes: when many clients replay the same range (late
        joiners, or everyone reconnecting after a node died), each event is decoded and encoded once per node, not
        once per client. Bounded; the oldest entries go first."""
        ev = self._events.get(packed)
        if ev is None:
            ev = self._events[packed] = Event.unpack(packed)
            if len(self._events) > _EVENT_CACHE:
                self._events.popitem(last=False)
        return ev

    async def read(self, run_id: str, after: int = 0, upto: int | None = None, limit: int | None = None) -> list[Event]:
        res = await self._read_script(
            keys=[self._k(run_id, "log"), self._k(run_id, "seq")],
            args=[after, "" if upto is None else upto, -1 if limit is None else max(0, limit)],
        )
        if int(res[0]) == scripts.TRIMMED:
            raise LogTrimmed(run_id, int(res[1]))
        return [self._intern(b) for b in res[1:]]

    async def head(self, run_id: str) -> int:
        raw = await self._redis.get(self._k(run_id, "seq"))
        return int(raw) if raw is not None else 0

    # ------------------------------------------------------------------ records
    async def _write(self, mode: str, tr: Transition, expected_version: int) -> list[Event]:
        rec = tr.record
        run_id = rec.run_id
        if mode == "commit":
            rec = rec.model_copy()
            rec.version = expected_version + 1
        mark = f"{run_id} {secrets.token_hex(6)}"
        deadline = time.time() + FLUSH_GRACE_S
        if self.cluster:  # (1) see the docstring; one Redis writes the mark in the commit script itself
            await self._redis.zadd(self._flush_marks, {mark: deadline})
        templates = self._templates(run_id, tr.events)
        jobs = [j.model_dump_json() for j in tr.jobs]
        hooks = ",".join(str(i + 1) for i, (t, _) in enumerate(tr.events) if t in WEBHOOK_EVENTS)  # webhooks.py
        publish = tr.feed or mode == "create"
        # One Redis: the commit script publishes the feed entry itself (see commit.lua); a cluster's flush does.
        fe = feed.entry(rec)
        entry = msgpack.packb(fe, use_bin_type=True) if publish and not self.cluster else b""
        res = await self._commit_script(  # (2)
            keys=[
                self._k(run_id, "rec"),
                self._k(run_id, "log"),
                self._k(run_id, "seq"),
                self._k(run_id, "state"),
                self._k(run_id, "outbox"),
                self._k(run_id, "hooks"),
                *([] if self.cluster else [self._flush_marks]),
            ],
            args=[
                mode,
                expected_version,
                rec.model_dump_json(),
                self._publish,
                len(templates),
                self.max_log or 0,
                self._live(run_id),
                "1" if rec.status in TERMINAL else "0",
                self._retention_ms,
                len(jobs),
                hooks,
                self._feed,
                entry,
                "" if self.cluster else mark,
                deadline,
                *templates,
                *jobs,
            ],
        )
        if int(res[0]) == scripts.CONFLICT:
            if self.cluster:  # (one Redis wrote no mark: the script answered before writing anything)
                await self._clear_mark(mark)
            raise Conflict(run_id)
        n_jobs = int(res[2])
        try:
            await self._flush(
                rec,
                [bytes(j) for j in res[3 : 3 + n_jobs]],
                [bytes(h) for h in res[3 + n_jobs :]],
                mark,
                publish=publish and not entry,
                fe=fe,
            )  # (3), (4)
        except (RedisError, OSError) as exc:  # committed: a sweeper finishes it after FLUSH_GRACE_S
            metrics.redis_errors.labels(source="command").inc()
            log.warning("run %s: committed, but its jobs and timer wait for a sweeper (%s)", run_id, exc)
        return self._logged(run_id, int(res[1]), templates)

    async def _clear_mark(self, mark: str) -> None:
        try:
            await self._redis.zrem(self._flush_marks, mark)
        except (RedisError, OSError):
            pass  # a sweeper finds it later and does a harmless flush

    async def _flush(
        self,
        rec: RunRecord | None,
        outbox: list[bytes],
        hooks: list[bytes],
        mark: str,
        run_id: str | None = None,
        publish: bool = True,
        fe: dict[str, Any] | None = None,
    ) -> None:
        """Put a committed record's jobs, webhook events, timer, open-index place and feed entry into the shared {P}
        keys, then take those jobs and events out of the run's lists."""
        run_id = rec.run_id if rec is not None else run_id
        assert run_id is not None
        if rec is None:  # gone (retention): nothing to index, only the mark to clear
            args: list[Any] = [
                run_id,
                -1,
                "",
                "0",
                "",
                mark,
                repr(time.time()),
                "0",
                self._publish,
                self._feed,
                "",
                0,
                0,
            ]
        else:
            score = _timer_score(rec)
            fe = fe if fe is not None else feed.entry(rec)
            args = [
                run_id,
                rec.version,
                "" if score is None else repr(float(score)),
                "1" if rec.status in TERMINAL else "0",
                repr(_created_score(rec)),
                mark,
                repr(time.time()),
                "1" if feed.is_open(fe) else "0",
                self._publish,
                self._feed,
                msgpack.packb(fe, use_bin_type=True) if publish else b"",
                len(outbox),
                len(hooks),
                *outbox,
                *hooks,
            ]
        keys = [
            self._jobs,
            self._timers,
            self._g("timerv"),
            self._runs,
            self._flush_marks,
            self._g("done"),
            self._open,
            self._outbox,
            self._g("audit"),
            self._g("audit:rows"),
        ]
        if rec is not None:  # the settled approvals: indexed in the same script (audit.py)
            found = audit.entries(rec)
            args.append(len(found))
            for e in found:
                fkeys = [self._audit_key(f) for f in audit.facets(e)]
                args += [audit.member(e), audit.score(e), json.dumps(e, separators=(",", ":")), len(fkeys)]
                for k in fkeys:
                    keys.append(k)
                    args.append(len(keys))
        await self._flush_script(keys=keys, args=args)
        if outbox or hooks:
            async with self._redis.pipeline(transaction=False) as pipe:
                for job in outbox:
                    pipe.lrem(self._k(run_id, "outbox"), 1, job)
                for hook in hooks:
                    pipe.lrem(self._k(run_id, "hooks"), 1, hook)
                await pipe.execute()

    def _audit_key(self, facet: tuple[str, str] | None) -> str:
        return self._g("audit") if facet is None else self._g(f"audit:{facet[0]}:{facet[1]}")

    async def audit_scan(
        self, facet: tuple[str, str] | None, since_ms: int, until_ms: int, before: tuple[int, str] | None, count: int
    ) -> list[tuple[int, str, dict[str, Any]]]:
        key = self._audit_key(facet)
        top = until_ms if before is None else min(until_ms, before[0])
        found: list[tuple[int, str]] = []
        offset = 0
        while len(found) < count:  # members of one score come in reverse order: skip those not before the cursor
            got = await self._redis.zrevrangebyscore(key, top, since_ms, start=offset, num=count, withscores=True)
            for m, s in got:
                pair = (int(s), m.decode())
                if before is None or pair < before:
                    found.append(pair)
            if len(got) < count:
                break
            offset += len(got)
        found = found[:count]
        rows = await self._redis.hmget(self._g("audit:rows"), [m for _, m in found]) if found else []
        return [(s, m, json.loads(r)) for (s, m), r in zip(found, rows, strict=True) if r is not None]

    async def _repair(self, now: float) -> None:
        """Commits whose process died before their flush (their mark is past its deadline): flush them now."""
        for raw in await self._redis.zrangebyscore(self._flush_marks, "-inf", now, start=0, num=100):
            mark = raw.decode()
            run_id = mark.rsplit(" ", 1)[0]
            rec = await self.get(run_id)
            outbox = await self._redis.lrange(self._k(run_id, "outbox"), 0, -1)
            hooks = await self._redis.lrange(self._k(run_id, "hooks"), 0, -1)
            log.info("run %s: flushing a commit whose process did not (%s)", run_id, mark)
            self.stats["repaired_commits"] = self.stats.get("repaired_commits", 0) + 1
            await self._flush(rec, list(outbox), list(hooks), mark, run_id=run_id)

    async def create(self, tr: Transition) -> list[Event]:
        return await self._write("create", tr, tr.record.version)

    async def commit(self, tr: Transition, expected_version: int) -> list[Event]:
        return await self._write("commit", tr, expected_version)

    async def get(self, run_id: str) -> RunRecord | None:
        raw = await self._redis.get(self._k(run_id, "rec"))
        return RunRecord.model_validate_json(raw) if raw is not None else None

    async def list_runs(self, limit: int = 50) -> list[RunRecord]:
        out: list[RunRecord] = []
        seen: set[str] = set()
        start = 0
        while len(out) < limit:
            want = limit - len(out)
            ids = await self._redis.zrevrange(self._runs, start, start + want - 1)
            if not ids:
                break
            keys = [self._k(i.decode(), "rec") for i in ids]
            raws = await (self._redis.mget_nonatomic(keys) if self.cluster else self._redis.mget(keys))
            gone = [i for i, raw in zip(ids, raws, strict=True) if raw is None]
            for raw in raws:
                if raw is not None:
                    rec = RunRecord.model_validate_json(raw)
                    if rec.run_id not in seen:  # ranks shift when runs are created meanwhile
                        seen.add(rec.run_id)
                        out.append(rec)
            if gone:  # their records expired (retention): drop them from the index
                await self._redis.zrem(self._runs, *gone)
            start += len(ids) - len(gone)
            if len(ids) < want:
                break
        return out

    async def open_runs(self) -> list[RunRecord]:
        ids = await self._redis.zrange(self._open, 0, -1)
        if not ids:
            return []
        keys = [self._k(i.decode(), "rec") for i in ids]
        raws = await (self._redis.mget_nonatomic(keys) if self.cluster else self._redis.mget(keys))
        gone = [i for i, raw in zip(ids, raws, strict=True) if raw is None]
        if gone:
            await self._redis.zrem(self._open, *gone)
        recs = [RunRecord.model_validate_json(raw) for raw in raws if raw is not None]
        return [r for r in recs if feed.is_open(feed.entry(r))]

    # ------------------------------------------------------------------ saved RunStates
    async def save_state(self, run_id: str, segment: int, state: str) -> None:
        await self._save_state_script(
            keys=[self._k(run_id, "state"), self._k(run_id, "rec")], args=[segment, state, self._retention_ms]
        )

    async def load_state(self, run_id: str) -> str | None:
        raw = await self._redis.hget(self._k(run_id, "state"), "state")
        return raw.decode() if raw is not None else None

    # ------------------------------------------------------------------ per-user start quotas
    def _user(self, user: str, what: str) -> str:
        return f"{self.prefix}:user:{{{user}}}:{what}"

    async def admit_start(self, user: str, run_id: str, now: float, quota: StartQuota) -> Refusal | None:
        if quota.off:
            return None
        open_key = self._user(user, "open")
        if quota.max_open > 0:  # forget the runs that finished (or expired) since: their records say so
            ids = await self._redis.zrange(open_key, 0, -1)
            if ids:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for rid in ids:
                        pipe.get(self._k(rid.decode(), "rec"))
                    raws = await pipe.execute()
                done = [
                    rid
                    for rid, raw in zip(ids, raws, strict=True)
                    if raw is None or json.loads(raw).get("status") in TERMINAL
                ]
                if done:
                    await self._redis.zrem(open_key, *done)
        res = await self._quota_script(
            keys=[self._user(user, "starts"), open_key],
            args=[
                int(now * 1000),
                int(quotas.WINDOW_S * 1000),
                quota.starts_per_minute,
                quota.max_open,
                run_id,
                self._retention_ms or 7 * 86400 * 1000,
            ],
        )
        code = int(res[0])
        if code == scripts.QUOTA_OPEN:
            return Refusal("open_runs", quotas.OPEN_RETRY_S)
        if code == scripts.QUOTA_RATE:
            return Refusal("starts_per_minute", int(res[1]) / 1000)
        return None

    # ------------------------------------------------------------------ timers
    async def due_runs(self, now: float) -> list[str]:
        try:
            async with self._redis.pipeline(transaction=False) as pipe:  # one slot: one round trip
                pipe.zrangebyscore(self._timers, "-inf", now)
                pipe.zcount(self._flush_marks, "-inf", time.time())
                due, unflushed = await pipe.execute()
        except self.transient_errors:
            self._after_outage()
            raise
        if unflushed:
            await self._repair(time.time())
        return [r.decode() for r in due]
