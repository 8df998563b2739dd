"""The Redis backend: many hub nodes and workers on one Redis.

Layout (`P` is the prefix, `R` a run id; the `{R}` hash tag keeps one run's keys in one cluster slot):

    P:run:{R}:rec     the RunRecord as JSON (with `version`, the compare-and-set token)
    P:run:{R}:log     a Stream: one entry per event, id `<seq>-0`, one field `e` = the event's msgpack bytes
    P:run:{R}:seq     the head seq (0 or missing: no events); the first kept seq is head - XLEN(log) + 1
    P:run:{R}:state   the saved RunState (hash: segment, state), and tx: "<tx> <first seq>" of the owner's last append
    P:live:R          pub/sub channel: one message per append, a msgpack array of the packed events
    P:signals         pub/sub channel: msgpack {run_id, message}
    P:jobs            a Stream of jobs (field `j` = Job JSON), consumer group `workers`
    P:timers          ZSET run_id -> earliest of (approval deadline, lease end): what `due_runs` scans
    P:runs            ZSET run_id -> creation time: `list_runs`

Every write that must be atomic (the append with its next seq and owner check, a commit with its version check)
is one Lua script. Events are packed in Python with a placeholder seq: "seq" is the first key of the map and its
value a fixed-width uint32 (see `_template`), so the script writes the real seq into those four bytes. Writers never
guess the next seq, so many writers on one run (a worker streaming, hubs logging presence) never make each other
retry. Nothing is retried on a connection error: a write whose answer was lost may have happened, so it is the
caller's decision (a retry of a commit then meets a Conflict; an owner's append carries a tx id for its retry).

One pub/sub connection per backend instance carries every live feed of the process. Its reader task dispatches by
channel, reconnects with backoff after an outage, subscribes again to every channel, and then reads each run's log
from the last seq it delivered to fill what was published while it was away.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from datetime import datetime
from typing import Any, Callable

import msgpack
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.maint_notifications import MaintNotificationsConfig

from ..protocol import Event, now_iso
from ..runs import TERMINAL, Job, RunRecord, Transition, WireEvents
from .base import Backend, Conflict, LogTrimmed, NotOwner, OnEvents, OnSignal, Subscription

log = logging.getLogger("runcast.redis")

GROUP = "workers"
READ_PAGE = 1000  # events per XRANGE when filling a hole after a reconnect
_EVENT_CACHE = 20_000  # recent events this process keeps decoded, by their packed bytes (see _intern)

# Script answers: {OK, first_seq} | {CONFLICT} | {NOT_OWNER} | {LANDED, first_seq}
_OK, _CONFLICT, _NOT_OWNER, _LANDED, _TRIMMED = 0, 2, 3, 4, 1
# A packed event: fixmap header, "seq" (0xa3 's' 'e' 'q'), uint32 marker 0xce, then the seq's 4 bytes, then the rest.
_SEQ_AT = 6
_SEQ_HEAD = b"\xa3seq\xce"

# Shared by both write scripts: XADD the events with ids head+1.., set the head, trim exactly, publish them as one
# message. `base` is the index in ARGV just before the first event.
_LUA_APPEND = """
local function append_events(log_key, seq_key, head, n, base, maxlen, channel)
  local evs = {}
  for i = 1, n do
    local tmpl = ARGV[base + i]
    local ev = string.sub(tmpl, 1, 6) .. struct.pack('>I4', head + i) .. string.sub(tmpl, 11)
    redis.call('XADD', log_key, string.format('%d-0', head + i), 'e', ev)
    evs[i] = ev
  end
  redis.call('SET', seq_key, string.format('%d', head + n))
  if maxlen > 0 then
    redis.call('XTRIM', log_key, 'MAXLEN', maxlen)
  end
  redis.call('PUBLISH', channel, cmsgpack.pack(evs))
end
"""

# KEYS: rec, log, seq, state.  ARGV: owner ('' = any), (unused), maxlen (0 = keep all), channel,
# retention_ms (for a log with no record), tx ('' = none), event templates...
# With a tx (a worker's append, which it retries after a lost answer), the state hash keeps `tx` = "<tx> <first>" of
# the owner's last append: a retry whose first try landed is answered {4, first} instead of logging the events twice.
APPEND_SCRIPT = _LUA_APPEND + """
local owner = ARGV[1]
local tx = ARGV[6]
if owner ~= '' then
  local raw = redis.call('GET', KEYS[1])
  if not raw then return {3} end
  local rec = cjson.decode(raw)
  if rec.status ~= 'running' or rec.owner ~= owner then return {3} end
end
if tx ~= '' then
  local last = redis.call('HGET', KEYS[4], 'tx')
  if last then
    local last_tx, last_first = string.match(last, '^(%S+) (%d+)$')
    if last_tx == tx then return {4, tonumber(last_first)} end
  end
end
local head = tonumber(redis.call('GET', KEYS[3]) or '0')
local n = #ARGV - 6
if n == 0 then return {0, head + 1} end
append_events(KEYS[2], KEYS[3], head, n, 6, tonumber(ARGV[3]), ARGV[4])
if tx ~= '' then
  redis.call('HSET', KEYS[4], 'tx', tx .. ' ' .. string.format('%d', head + 1))
end
-- a finished run's log keeps the record's time to live; a log with no record at all gets one of its own
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then
  for i = 2, 4 do redis.call('PEXPIRE', KEYS[i], ttl) end
elseif ttl == -2 and tonumber(ARGV[5]) > 0 then
  for i = 2, 4 do redis.call('PEXPIRE', KEYS[i], ARGV[5]) end
end
return {0, head + 1}
"""

# KEYS: rec, log, seq, state, timers, runs, jobs.
# ARGV: 1 mode ('create' | 'commit'), 2 expected version, 3 new record JSON, 4 (unused), 5 number of
# events, 6 maxlen, 7 channel, 8 timer score ('' = none), 9 created score, 10 terminal ('1' | '0'),
# 11 retention_ms, 12 run id, 13 number of jobs, then the events, then the jobs (JSON).
COMMIT_SCRIPT = _LUA_APPEND + """
local cur = redis.call('GET', KEYS[1])
if ARGV[1] == 'create' then
  if cur then return {2} end
else
  if not cur then return {2} end
  local rec = cjson.decode(cur)
  if tonumber(rec.version) ~= tonumber(ARGV[2]) then return {2} end
end
local n = tonumber(ARGV[5])
local head = tonumber(redis.call('GET', KEYS[3]) or '0')
local run_id = ARGV[12]
-- the events first: should an XADD fail (a log out of step with its seq key), nothing else has been written
if n > 0 then
  append_events(KEYS[2], KEYS[3], head, n, 13, tonumber(ARGV[6]), ARGV[7])
end
redis.call('SET', KEYS[1], ARGV[3])
local jobs = tonumber(ARGV[13])
for i = 1, jobs do
  redis.call('XADD', KEYS[7], '*', 'j', ARGV[13 + n + i])
end
if ARGV[8] == '' then
  redis.call('ZREM', KEYS[5], run_id)
else
  redis.call('ZADD', KEYS[5], ARGV[8], run_id)
end
redis.call('ZADD', KEYS[6], ARGV[9], run_id)
if ARGV[10] == '1' and tonumber(ARGV[11]) > 0 then
  for i = 1, 4 do redis.call('PEXPIRE', KEYS[i], ARGV[11]) end
else
  for i = 2, 4 do redis.call('PERSIST', KEYS[i]) end
end
return {0, head + 1}
"""

# KEYS: log, seq.  ARGV: after, upto ('' = to the end), limit (-1 = none).  -> {0, packed...} | {1, first_kept}
READ_SCRIPT = """
local head = tonumber(redis.call('GET', KEYS[2]) or '0')
local first = head - redis.call('XLEN', KEYS[1]) + 1
local after = tonumber(ARGV[1])
if after + 1 < first then return {1, first} end
local limit = tonumber(ARGV[3])
if limit == 0 then return {0} end
local stop = '+'
if ARGV[2] ~= '' then
  local upto = tonumber(ARGV[2])
  if upto <= after then return {0} end
  stop = string.format('%d-0', upto)
end
local start = string.format('%d-0', after + 1)
local res
if limit > 0 then
  res = redis.call('XRANGE', KEYS[1], start, stop, 'COUNT', limit)
else
  res = redis.call('XRANGE', KEYS[1], start, stop)
end
local out = {0}
for i = 1, #res do
  local fields = res[i][2]
  if fields then out[#out + 1] = fields[2] end
end
return out
"""

# KEYS: state, rec.  ARGV: segment, state, retention_ms.
SAVE_STATE_SCRIPT = """
redis.call('HSET', KEYS[1], 'segment', ARGV[1], 'state', ARGV[2])
local ttl = redis.call('PTTL', KEYS[2])
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
elseif ttl == -2 and tonumber(ARGV[3]) > 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
"""


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


def _job_key(job: Job) -> tuple[str, str, int]:
    return (job.run_id, job.kind, job.segment)


class _Channel:
    """One pub/sub channel of this process and everyone here who listens to it."""

    __slots__ = ("name", "run_id", "callbacks", "ready", "last", "needs_fill")

    def __init__(self, name: bytes, run_id: str | None) -> None:
        self.name = name
        self.run_id = run_id  # None: the signals channel
        self.callbacks: list[Callable[..., None]] = []
        self.ready = asyncio.Event()  # set once the first SUBSCRIBE is confirmed (and `last` is known)
        self.last: int | None = None  # the highest seq handed to the callbacks
        self.needs_fill = False  # the connection dropped: read the log from `last` once subscribed again


class _RedisSub(Subscription):
    def __init__(self, backend: "RedisBackend", ch: _Channel, cb: Callable[..., None]) -> None:
        self._backend, self._ch, self._cb = backend, ch, cb
        self._closed = False

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._backend._remove_callback(self._ch, self._cb)


class RedisBackend(Backend):
    name = "redis"
    # redis-py's ConnectionError (BusyLoadingError included) and TimeoutError are not the builtin ones.
    transient_errors = (RedisConnectionError, RedisTimeoutError, ConnectionError, TimeoutError, OSError)

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
        # A blocking pool: when every connection is busy (hundreds of clients replaying at once), a command waits for
        # one instead of failing with "Too many connections".
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=pool_timeout_s,
            retry=Retry(NoBackoff(), 0), socket_timeout=10.0, socket_connect_timeout=3.0,
            maint_notifications_config=MaintNotificationsConfig(enabled=False),
        )
        self._redis = aioredis.Redis.from_pool(pool)  # owns the pool: aclose() closes it
        self._append_script = self._redis.register_script(APPEND_SCRIPT)
        self._commit_script = self._redis.register_script(COMMIT_SCRIPT)
        self._read_script = self._redis.register_script(READ_SCRIPT)
        self._save_state_script = self._redis.register_script(SAVE_STATE_SCRIPT)
        self._events: OrderedDict[bytes, Event] = OrderedDict()
        self._job_ids: dict[tuple[str, str, int], list[bytes]] = {}
        self._unacked: list[bytes] = []
        self._next_reclaim = 0.0
        self._next_prune = 0.0
        self._chans: dict[bytes, _Channel] = {}
        self._ctl = f"{prefix}:ctl:{id(self):x}:{time.time_ns()}".encode()  # keeps the connection in pub/sub mode
        self._ps: Any = None  # the pub/sub Connection while it is up
        self._reader: asyncio.Task[None] | None = None
        self._closing = False

    # ------------------------------------------------------------------ keys
    def _k(self, run_id: str, what: str) -> str:
        return f"{self.prefix}:run:{{{run_id}}}:{what}"

    def _live(self, run_id: str) -> bytes:
        return f"{self.prefix}:live:{run_id}".encode()

    @property
    def _signals(self) -> bytes:
        return f"{self.prefix}:signals".encode()

    @property
    def _jobs(self) -> str:
        return f"{self.prefix}:jobs"

    @property
    def _timers(self) -> str:
        return f"{self.prefix}:timers"

    @property
    def _runs(self) -> str:
        return f"{self.prefix}:runs"

    @property
    def _retention_ms(self) -> int:
        return int(self.retention_s * 1000) if self.retention_s and self.retention_s > 0 else 0

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        await self._redis.ping()
        await self._ensure_group()
        for script in (self._append_script, self._commit_script, self._read_script, self._save_state_script):
            await self._redis.script_load(script.script)  # (Script reloads by itself after a Redis restart)

    async def close(self) -> None:
        self._closing = True
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
            self._reader = None
        await self._redis.aclose()

    async def ping(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except (RedisError, OSError):
            return False

    async def _ensure_group(self) -> None:
        try:
            await self._redis.xgroup_create(self._jobs, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    # ------------------------------------------------------------------ the log
    @staticmethod
    def _template(run_id: str, type_: str, data: dict[str, Any], ts: str) -> bytes:
        """The packed event with seq 0 in a fixed-width slot (the scripts write the real seq into it)."""
        body = b"".join(msgpack.packb(k) + msgpack.packb(v, use_bin_type=True)
                        for k, v in (("run_id", run_id), ("ts", ts), ("type", type_), ("data", data)))
        return b"\x85" + _SEQ_HEAD + b"\x00\x00\x00\x00" + body

    def _templates(self, run_id: str, events: WireEvents) -> list[bytes]:
        ts = now_iso()
        return [self._template(run_id, t, d, ts) for t, d in events]

    def _logged(self, run_id: str, first: int, templates: list[bytes]) -> list[Event]:
        """The events as the script logged them: seq first, first + 1, ... (the same bytes it wrote)."""
        out = []
        for i, tmpl in enumerate(templates):
            packed = tmpl[:_SEQ_AT] + (first + i).to_bytes(4, "big") + tmpl[_SEQ_AT + 4:]
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
            args=[owner or "", 0, self.max_log or 0, self._live(run_id), self._retention_ms, tx or "", *templates],
        )
        code = int(res[0])
        if code == _NOT_OWNER:
            raise NotOwner(run_id)
        if code == _LANDED:  # an earlier try of this append landed; its answer was lost
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
        if int(res[0]) == _TRIMMED:
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
        rec_json = rec.model_dump_json()
        score = _timer_score(rec)
        jobs = [j.model_dump_json() for j in tr.jobs]
        keys = [self._k(run_id, "rec"), self._k(run_id, "log"), self._k(run_id, "seq"), self._k(run_id, "state"),
                self._timers, self._runs, self._jobs]
        templates = self._templates(run_id, tr.events)
        res = await self._commit_script(
            keys=keys,
            args=[
                mode, expected_version, rec_json, 0, len(templates), self.max_log or 0, self._live(run_id),
                "" if score is None else repr(float(score)), repr(_created_score(rec)),
                "1" if rec.status in TERMINAL else "0", self._retention_ms, run_id, len(jobs),
                *templates, *jobs,
            ],
        )
        if int(res[0]) == _CONFLICT:
            raise Conflict(run_id)
        return self._logged(run_id, int(res[1]), templates)

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
            raws = await self._redis.mget([self._k(i.decode(), "rec") for i in ids])
            gone = [i for i, raw in zip(ids, raws) if raw is None]
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

    # ------------------------------------------------------------------ saved RunStates
    async def save_state(self, run_id: str, segment: int, state: str) -> None:
        await self._save_state_script(
            keys=[self._k(run_id, "state"), self._k(run_id, "rec")], args=[segment, state, self._retention_ms]
        )

    async def load_state(self, run_id: str) -> str | None:
        raw = await self._redis.hget(self._k(run_id, "state"), "state")
        return raw.decode() if raw is not None else None

    # ------------------------------------------------------------------ jobs
    def _take(self, entry_id: bytes, fields: dict[bytes, bytes] | None) -> Job | None:
        if not fields or b"j" not in fields:
            return None
        job = Job.model_validate_json(fields[b"j"])
        self._job_ids.setdefault(_job_key(job), []).append(entry_id)
        return job

    async def _retry_acks(self) -> None:
        if self._unacked:
            ids, self._unacked = self._unacked, []
            await self._ack_ids(ids)

    async def _ack_ids(self, ids: list[bytes]) -> None:
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.xack(self._jobs, GROUP, *ids)
                pipe.xdel(self._jobs, *ids)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            # Not fatal: the entries stay pending and are handed out again after job_idle_s; the claim then fails
            # (the run is no longer queued / resuming) and that worker acks them.
            log.warning("could not ack jobs %s (%s); will retry", ids, exc)
            self._unacked += ids

    async def take_job(self, worker_id: str, timeout: float) -> Job | None:
        await self._retry_acks()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout)
        if loop.time() >= self._next_reclaim:
            # A job delivered to a worker that died before acking it: take it over.
            self._next_reclaim = loop.time() + min(5.0, self.job_idle_s / 2)
            try:
                res = await self._redis.xautoclaim(
                    self._jobs, GROUP, worker_id, min_idle_time=int(self.job_idle_s * 1000), start_id="0-0", count=1
                )
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                await self._ensure_group()
                res = None
            for entry_id, fields in (res[1] if res else []):
                job = self._take(entry_id, fields)
                if job is None:
                    await self._ack_ids([entry_id])
                else:
                    self.stats["reclaimed_jobs"] += 1
                    self._next_reclaim = 0.0  # there may be more
                    log.info("job %s/%s for %s taken over from a silent worker", job.kind, job.segment, job.run_id)
                    return job
        if loop.time() >= self._next_prune:
            self._next_prune = loop.time() + 600.0
            await self._prune_consumers()
        while True:
            left = deadline - loop.time()
            block = int(min(left, 2.0) * 1000) if left > 0 else None  # BLOCK 0 would wait forever
            if block is not None and block <= 0:
                block = 1
            try:
                res = await self._redis.xreadgroup(GROUP, worker_id, {self._jobs: ">"}, count=1, block=block)
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                await self._ensure_group()  # Redis lost the group (restart without persistence)
                continue
            for _stream, entries in (res.items() if isinstance(res, dict) else res or []):
                for entry_id, fields in entries:
                    job = self._take(entry_id, fields)
                    if job is not None:
                        return job
                    await self._ack_ids([entry_id])  # not a job: drop it
            if loop.time() >= deadline:
                return None

    async def _prune_consumers(self) -> None:
        """Forget consumers (worker ids) that hold no job and have not asked for one in an hour: every worker
        process has its own id, so without this the group would remember every worker that ever ran."""
        try:
            for c in await self._redis.xinfo_consumers(self._jobs, GROUP):
                if int(c.get("pending", 1)) == 0 and int(c.get("idle", 0)) > 3_600_000:
                    await self._redis.xgroup_delconsumer(self._jobs, GROUP, c["name"])
        except ResponseError as exc:
            log.debug("could not prune job consumers: %s", exc)

    async def ack_job(self, job: Job) -> None:
        ids = self._job_ids.pop(_job_key(job), None)
        if ids:
            await self._ack_ids(ids)

    # ------------------------------------------------------------------ signals
    async def signal(self, run_id: str, message: dict[str, Any]) -> None:
        await self._redis.publish(self._signals, msgpack.packb({"run_id": run_id, "message": message}, use_bin_type=True))

    async def listen_signals(self, on_signal: OnSignal) -> Subscription:
        return await self._add_callback(self._signals, None, on_signal)

    # ------------------------------------------------------------------ timers
    async def due_runs(self, now: float) -> list[str]:
        return [r.decode() for r in await self._redis.zrangebyscore(self._timers, "-inf", now)]

    # ------------------------------------------------------------------ the live feed
    async def subscribe(self, run_id: str, on_events: OnEvents) -> Subscription:
        return await self._add_callback(self._live(run_id), run_id, on_events)

    async def _add_callback(self, name: bytes, run_id: str | None, cb: Callable[..., None]) -> Subscription:
        if self._closing:
            raise RuntimeError("the Redis backend is closed")
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read_pubsub(), name=f"runcast-redis-pubsub-{self.prefix}")
        ch = self._chans.get(name)
        first = ch is None
        if ch is None:
            ch = self._chans[name] = _Channel(name, run_id)
        ch.callbacks.append(cb)
        sub = _RedisSub(self, ch, cb)
        if first:
            await self._ps_send("SUBSCRIBE", name)  # while disconnected, the reader subscribes on reconnect
        try:
            await asyncio.wait_for(ch.ready.wait(), self.subscribe_timeout)
        except BaseException as exc:
            await sub.close()
            if isinstance(exc, asyncio.TimeoutError):
                raise RedisConnectionError(f"no answer from Redis to SUBSCRIBE {name.decode()}") from None
            raise
        return sub

    async def _remove_callback(self, ch: _Channel, cb: Callable[..., None]) -> None:
        if cb in ch.callbacks:
            ch.callbacks.remove(cb)
        if not ch.callbacks and self._chans.get(ch.name) is ch:
            del self._chans[ch.name]
            await self._ps_send("UNSUBSCRIBE", ch.name)

    async def _ps_send(self, *args: Any) -> None:
        conn = self._ps
        if conn is None or not conn.is_connected:
            return  # the reader (re)subscribes to whatever is in self._chans when it connects
        try:
            await conn.send_command(*args, check_health=False)
        except (RedisError, OSError) as exc:
            log.warning("pub/sub %s failed (%s); reconnecting", args[0], exc)
            await conn.disconnect(nowait=True)  # the reader notices and starts over

    def _new_ps_connection(self) -> Any:
        pool = self._redis.connection_pool
        kwargs = dict(pool.connection_kwargs)
        # Blocking reads are ours to time (ping_after_s / dead_after_s). Under RESP3 the messages are push frames,
        # read with push_request=True; under RESP2 plain arrays: the same lists either way.
        kwargs.update(socket_timeout=None, retry=Retry(NoBackoff(), 0))
        return pool.connection_class(**kwargs)

    async def _read_pubsub(self) -> None:
        """The one reader of this process's pub/sub connection: dispatch, and survive outages."""
        backoff = self.reconnect_min_s
        down_since: float | None = None
        while not self._closing:
            conn = self._new_ps_connection()
            try:
                await asyncio.wait_for(conn.connect(), self.connect_timeout_s)
                self._ps = conn
                await conn.send_command("SUBSCRIBE", self._ctl, *self._chans, check_health=False)
                backoff = self.reconnect_min_s
                if down_since is not None:
                    log.warning("pub/sub connection to Redis back after %.1fs; filling from the logs", time.monotonic() - down_since)
                    down_since = None
                last_rx = asyncio.get_running_loop().time()
                pinged = False
                while True:
                    if not conn.is_connected:
                        raise RedisConnectionError("pub/sub connection closed")
                    msg = await conn.read_response(timeout=1.0, disconnect_on_error=True, push_request=True)
                    now = asyncio.get_running_loop().time()
                    if msg is None:
                        if now - last_rx > self.dead_after_s:
                            raise RedisConnectionError(f"pub/sub connection silent for {now - last_rx:.0f}s")
                        if now - last_rx > self.ping_after_s and not pinged:
                            await conn.send_command("PING", check_health=False)
                            pinged = True
                        continue
                    last_rx, pinged = now, False
                    await self._on_message(msg)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - an outage (or a bug): reconnect, never die
                if self._closing:
                    pass
                elif down_since is None:
                    down_since = time.monotonic()
                    log.warning("pub/sub connection to Redis lost (%s); reconnecting", exc,
                                exc_info=not isinstance(exc, (RedisError, OSError, asyncio.TimeoutError)))
                else:
                    log.debug("pub/sub reconnect failed (%s); next try in %.1fs", exc, backoff)
            finally:
                self._ps = None
                for ch in self._chans.values():
                    if ch.last is not None:
                        ch.needs_fill = True
                await conn.disconnect(nowait=True)
            if self._closing:
                return
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.reconnect_max_s)
            self.stats["reconnects"] += 1

    async def _on_message(self, msg: Any) -> None:
        if not isinstance(msg, list) or not msg:
            return
        kind = msg[0]
        if kind == b"message":
            ch = self._chans.get(msg[1])
            if ch is None:
                return
            try:
                if ch.run_id is None:
                    sig = msgpack.unpackb(msg[2], raw=False)
                    run_id, message = sig["run_id"], sig["message"]
                else:
                    events = [self._intern(b) for b in msgpack.unpackb(msg[2], raw=True)]
            except Exception:  # noqa: BLE001 - not ours (someone else published on our channel)
                log.warning("ignoring a malformed message on %r", msg[1])
                return
            if ch.run_id is None:
                for cb in list(ch.callbacks):
                    try:
                        cb(run_id, message)
                    except Exception:  # noqa: BLE001 - one listener's bug must not stop the others
                        log.exception("signal callback failed")
                return
            self._deliver(ch, events)
        elif kind == b"subscribe":
            ch = self._chans.get(msg[1])
            if ch is None:
                return
            if ch.run_id is None:
                ch.ready.set()
            elif ch.last is None:
                # Subscribed: anything after the head is ours live, anything up to it is in the log.
                ch.last = await self.head(ch.run_id)
                ch.ready.set()
            elif ch.needs_fill:
                await self._fill(ch)

    def _deliver(self, ch: _Channel, events: list[Event]) -> None:
        if ch.last is not None:
            events = [ev for ev in events if ev.seq > ch.last]
        if not events:
            return
        ch.last = events[-1].seq
        assert ch.run_id is not None
        for cb in list(ch.callbacks):
            try:
                cb(events)
            except Exception:  # noqa: BLE001
                log.exception("live feed callback for %s failed", ch.run_id)

    async def _fill(self, ch: _Channel) -> None:
        """After a reconnect: hand the callbacks what was logged while this connection was away."""
        assert ch.run_id is not None and ch.last is not None
        after = ch.last
        while self._chans.get(ch.name) is ch:
            try:
                events = await self.read(ch.run_id, after, limit=READ_PAGE)
            except LogTrimmed as err:
                after = err.detail["first_kept"] - 1  # the hole stays; the hub's Cursor sees it and reports it
                continue
            self.stats["filled_events"] += len(events)
            self._deliver(ch, events)
            if len(events) < READ_PAGE:
                break
            after = events[-1].seq
        ch.needs_fill = False
