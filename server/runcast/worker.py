"""The worker: takes start and resume jobs, owns the one task that iterates a run's `stream_events()`.

For each job: claim the run (compare-and-set, so exactly one worker runs a segment), stream the SDK events through
the mapper and the delta coalescer into the log, then end the segment as completed, failed, cancelled, or paused
with one approval per interruption. A resume loads the saved RunState, applies the decisions recorded in the run's
approvals (never anything from a client), and streams again under the same run id and seq sequence.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

from agents import RunConfig, Runner, RunState

from . import conversation, metrics, runs
from .approvals import Approval
from .backends.base import Backend, NotOwner, Subscription
from .edits import EditUnsupported, edit_state
from .mapping import DeltaCoalescer, EventMapper, failure_data, failure_message, to_text, usage_data
from .protocol import ErrorCode, ProtocolError, now_iso
from .registry import AgentSpec, Registry
from .runs import Job, RunRecord
from .settings import resolve_tracing
from .store import apply as _apply
from .toolnames import wire_name

# every commit is counted by the process that made it (the store sits below the metrics: it is handed the observer)
apply = functools.partial(_apply, observe=metrics.observe_events)

log = logging.getLogger("runcast.worker")
_END = object()
HISTORY_KEY = "runcast_history"  # a saved conversation (to_input_list), in the same place as a pause's RunState
AGENT_KEY = "runcast_agent"  # with it: the name of the agent that ended the turn (the run's current agent)
TRACE_FLUSH_S = 5.0  # how long a stopping worker waits for its last traces to be exported (--tracing openai)
RENEW_RETRY_S = 0.5  # a lease renewal the backend did not take is tried again this soon (not a lease/3 later)


def _json_output(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    try:
        json.dumps(value)
        return value
    except TypeError:
        return to_text(value)


def rejection_message(ap: Approval) -> str:
    d = ap.decided or {}
    if d.get("reason"):
        return str(d["reason"])
    who = (d.get("by") or {}).get("name") or "A reviewer"
    return f"{who} rejected this tool call."


def tool_description(item: Any) -> str | None:
    """The description of the tool an interruption asks to run, as the agent's code declares it (None if unknown)."""
    name = getattr(item, "name", None) or getattr(item, "tool_name", None)
    for tool in getattr(getattr(item, "agent", None), "tools", None) or []:
        if getattr(tool, "name", None) == name:
            desc = getattr(tool, "description", None)
            return str(desc)[:2000] if desc else None
    return None


class Worker:
    def __init__(
        self,
        backend: Backend,
        registry: Registry,
        *,
        worker_id: str | None = None,
        concurrency: int = 32,
        lease_s: float | None = None,
        coalesce_s: float | None = None,
        tracing: str | None = None,
    ) -> None:
        self.backend = backend
        self.registry = registry
        self.id = worker_id or f"w-{os.getpid()}-{secrets.token_hex(3)}"
        self.concurrency = concurrency
        self.lease_s = lease_s
        # deltas of one item that arrive within this window become one event (RUNCAST_COALESCE_S; 0: one per delta)
        self.coalesce_s = float(os.environ.get("RUNCAST_COALESCE_S", "0.025")) if coalesce_s is None else coalesce_s
        # "openai": the SDK exports the runs' traces; "off": not (settings.resolve_tracing decides when not given)
        self.tracing = tracing or resolve_tracing(None, os.environ)[0]
        self.active: dict[str, Any] = {}  # run_id -> RunResultStreaming
        self._cancel_asked: dict[str, str] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._acks: set[asyncio.Task[Any]] = set()  # job acks under way (kept: a task nobody holds may be collected)
        self._loop_task: asyncio.Task[Any] | None = None
        self._signals: Subscription | None = None
        self._slots = asyncio.Semaphore(concurrency)
        self._stopping = False

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self._signals = await self.backend.listen_signals(self._on_signal)
        self._loop_task = asyncio.create_task(self._take_jobs(), name=f"runcast-worker-{self.id}")

    async def stop(self) -> None:
        self._stopping = True
        if self._loop_task:
            self._loop_task.cancel()
        for t in [*self._tasks, *self._acks]:
            t.cancel()
        await asyncio.gather(
            *self._tasks, *self._acks, *([self._loop_task] if self._loop_task else []), return_exceptions=True
        )
        if self._signals:
            await self._signals.close()
        if self.tracing == "openai":
            await self._flush_traces()

    async def _flush_traces(self) -> None:
        """Export the traces of the last few seconds' runs now: the SDK sends them every 5 s, and at exit it gives up
        on what is still queued. In a thread, and bounded: an unreachable trace endpoint must not hold a shutdown."""
        import threading

        from agents.tracing import get_trace_provider

        done = asyncio.get_running_loop().create_future()

        def flush() -> None:
            try:
                get_trace_provider().force_flush()
            finally:
                done.get_loop().call_soon_threadsafe(lambda: None if done.done() else done.set_result(None))

        # a daemon thread: one still retrying an unreachable endpoint when the time is up does not hold the exit
        threading.Thread(target=flush, name="runcast-trace-flush", daemon=True).start()
        try:
            await asyncio.wait_for(done, TRACE_FLUSH_S)
        except TimeoutError:
            log.warning("traces not flushed within %.0fs at shutdown; the rest are dropped", TRACE_FLUSH_S)

    async def drain(self, grace_s: float) -> None:
        """Take no more jobs; give the segments being streamed up to `grace_s` to end (complete or pause), then stop.
        A segment still running then is cancelled, and its run fails as worker_lost once its lease runs out."""
        self._stopping = True
        if self._loop_task:
            self._loop_task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=grace_s)
        await self.stop()

    def _on_signal(self, run_id: str, message: dict[str, Any]) -> None:
        if message.get("type") == "interrupt":  # a message asked the turn to stop at its next safe point
            mode = "after_turn"
            result = self.active.get(run_id)
            if result is not None:
                result.cancel(mode=mode)
            return
        if message.get("type") != "cancel":
            return
        mode = message.get("mode", "immediate")
        result = self.active.get(run_id)
        if result is not None:
            result.cancel(mode=mode)
        else:
            self._cancel_asked[run_id] = mode

    async def _take_jobs(self) -> None:
        backoff = 0.1
        while not self._stopping:
            await self._slots.acquire()
            try:
                job = await self.backend.take_job(self.id, timeout=1.0)
                backoff = 0.1
            except asyncio.CancelledError:
                self._slots.release()
                raise
            except Exception as exc:
                self._slots.release()
                log.warning("worker %s: cannot take jobs (%s); retrying in %.1fs", self.id, exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if job is None:
                self._slots.release()
                continue
            task = asyncio.create_task(self._run_job(job), name=f"runcast-run-{job.run_id}")
            self._tasks.add(task)
            task.add_done_callback(self._job_done)

    def _job_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        self._slots.release()
        if not task.cancelled() and task.exception() is not None:
            log.error("run task failed", exc_info=task.exception())

    # ------------------------------------------------------------------ one segment
    async def _run_job(self, job: Job) -> None:
        try:
            tr, _ = await apply(
                self.backend, job.run_id, lambda r: runs.claim(r, job, self.id, time.time(), self.lease_s), persist=True
            )
        except ProtocolError as err:
            log.info("job %s/%s for %s skipped: %s", job.kind, job.segment, job.run_id, err.message)
            await self.backend.ack_job(job)
            return
        # The claim is what makes the job ours; the ack (a round trip to Redis) only tidies the queue, so it runs
        # beside the segment rather than before its first event. (One never acked is handed out again after
        # job_idle_s, its claim then fails, and that worker acks it.)
        ack = asyncio.create_task(self.backend.ack_job(job), name=f"runcast-ack-{job.run_id}")
        self._acks.add(ack)
        ack.add_done_callback(self._acks.discard)
        assert tr is not None
        rec = tr.record
        renewer = asyncio.create_task(self._renew(rec.run_id)) if self.lease_s else None
        began, outcome = time.monotonic(), None
        try:
            await self._segment(rec, job)
        except NotOwner:
            outcome = "lost"
            log.warning("run %s: lost ownership mid-segment; stopping without writing", rec.run_id)
            result = self.active.get(rec.run_id)
            if result is not None:
                result.cancel()
        except Exception as exc:
            log.exception("run %s failed inside the worker", rec.run_id)
            data: dict[str, Any] = {
                "code": ErrorCode.INTERNAL,
                "message": f"{type(exc).__name__}: {failure_message(exc)}",
            }
            result = self.active.get(rec.run_id)
            if result is not None:
                data["usage"] = usage_data(result.context_wrapper.usage)
            await self._finish(rec.run_id, "failed", data)
        finally:
            self.active.pop(rec.run_id, None)
            self._cancel_asked.pop(rec.run_id, None)
            if renewer:
                renewer.cancel()
            await self._observe_segment(rec.run_id, began, outcome)

    async def _observe_segment(self, run_id: str, began: float, outcome: str | None) -> None:
        took = time.monotonic() - began
        if outcome is None:  # how it ended is in the record (one read per segment)
            try:
                now = await self.backend.get(run_id)
            except Exception:
                now = None
            outcome = (
                now.status
                if now is not None and now.status in ("paused", "completed", "failed", "cancelled")
                else "lost"
            )
        metrics.segment_duration.labels(outcome=outcome).observe(took)

    async def _renew(self, run_id: str) -> None:
        """Renew the segment's lease every third of it. A renewal the backend did not take (unreachable, a pool with
        no free connection under load) is tried again soon: giving up on it lets the lease run out and the run fail
        as worker_lost while it streams. Only a run that is no longer ours to renew ends this."""
        assert self.lease_s
        every = self.lease_s / 3
        wait = every
        while True:
            await asyncio.sleep(wait)
            try:
                await apply(self.backend, run_id, lambda r: runs.renew(r, self.id, time.time(), self.lease_s))  # type: ignore[arg-type]
                wait = every
            except Exception as exc:
                if isinstance(exc, ProtocolError) and exc.code in (ErrorCode.NOT_PENDING, ErrorCode.NOT_FOUND):
                    return  # the segment ended (or was taken from us): nothing to renew
                log.warning("run %s: lease renewal failed (%s); trying again", run_id, exc)
                wait = min(every, RENEW_RETRY_S)

    async def _finish(self, run_id: str, kind: Any, data: dict[str, Any]) -> None:
        await apply(self.backend, run_id, lambda r: runs.finish(r, self.id, kind, data, time.time()), persist=True)

    async def _retry(self, what: str, call: Any) -> Any:
        """Run `call()` until the backend answers (outages are waited out; a worker must not drop an outcome)."""
        delay = 0.05
        while True:
            try:
                return await call()
            except self.backend.transient_errors as exc:
                log.warning("%s: backend unreachable (%s); retrying in %.2fs", what, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _append(self, run_id: str, events: list[Any]) -> None:
        """Append, waiting out backend outages: events not yet appended stay here, in order, until it is back."""
        tx = secrets.token_hex(8)  # the same for every try: a try whose answer was lost is not logged twice
        await self._retry(
            f"run {run_id}: append {len(events)} events",
            lambda: self.backend.append(run_id, events, owner=self.id, tx=tx),
        )

    async def _segment(self, rec: RunRecord, job: Job) -> None:
        spec = self.registry.get(rec.agent)
        if spec is None:
            await self._finish(
                rec.run_id, "failed", {"code": "unknown_agent", "message": f"this worker has no agent {rec.agent!r}"}
            )
            return
        run_input: Any = rec.input
        current_agent: str | None = None  # the agent the run's watchers already know (not announced again)
        if job.kind == "resume":
            run_input = await self._load_and_decide(rec, spec)
            if run_input is None:
                return
        elif job.kind == "turn":
            loaded = await self._load_history(rec)
            if loaded is None:
                return
            history, current_agent = loaded
            run_input = conversation.turn_input(history, rec)
        context = {"run_id": rec.run_id, "started_by": rec.started_by} if job.kind != "resume" else None
        result = Runner.run_streamed(
            spec.agent, run_input, context=context, run_config=RunConfig(tracing_disabled=self.tracing == "off")
        )
        self.active[rec.run_id] = result
        if rec.run_id in self._cancel_asked:
            result.cancel(mode=self._cancel_asked.pop(rec.run_id))  # type: ignore[arg-type]
        if job.kind == "resume":
            current_agent = result.current_agent.name
        mapper = EventMapper(current_agent=current_agent)
        error = await self._pump(rec.run_id, result, mapper)
        await self._end_segment(rec.run_id, spec, result, mapper, error)

    async def _load_history(self, rec: RunRecord) -> tuple[list[Any], str | None] | None:
        """The conversation as the last turn left it (saved by `_end_segment` before that turn completed), and the
        agent that ended it: a turn that starts with that same agent does not log `agent.updated` again (one event,
        and one write to every watcher, fewer before the turn's first delta)."""
        saved = await self._retry(f"run {rec.run_id}", lambda: self.backend.load_state(rec.run_id))
        doc = json.loads(saved) if saved else {}
        history = doc.get(HISTORY_KEY)
        if not isinstance(history, list):
            await self._finish(
                rec.run_id, "failed", {"code": "state_missing", "message": "the saved conversation of this run is gone"}
            )
            return None
        agent = doc.get(AGENT_KEY)
        return history, agent if isinstance(agent, str) else None

    async def _save_history(self, run_id: str, segment: int, result: Any) -> None:
        """Keep the whole conversation for the next turn, in the backend (any worker continues it)."""
        last = getattr(getattr(result, "last_agent", None), "name", None)
        saved = json.dumps(
            {HISTORY_KEY: result.to_input_list(), AGENT_KEY: last}, separators=(",", ":"), default=_json_output
        )
        await self._retry(f"run {run_id}", lambda: self.backend.save_state(run_id, segment, saved))

    async def _load_and_decide(self, rec: RunRecord, spec: AgentSpec) -> Any:
        saved = await self._retry(f"run {rec.run_id}", lambda: self.backend.load_state(rec.run_id))
        if saved is None:
            await self._finish(
                rec.run_id, "failed", {"code": "state_missing", "message": "the saved RunState of this pause is gone"}
            )
            return None
        edited = {
            ap.call_id: ap.approved_arguments
            for a in rec.pending
            if (ap := rec.approvals[a]).status == "approved" and ap.approved_arguments is not None
        }
        if edited:  # approved with changes: the call in the saved state becomes the approved one (edits.py)
            doc = json.loads(saved)
            try:
                for call_id, arguments in edited.items():
                    edit_state(doc, call_id, arguments)
            except EditUnsupported as exc:
                await self._finish(rec.run_id, "failed", {"code": "edit_unsupported", "message": str(exc)})
                return None
            saved = json.dumps(doc, separators=(",", ":"))
        state = await RunState.from_string(spec.agent, saved)
        items = {i.call_id: i for i in state.get_interruptions()}
        for aid in rec.pending:
            ap = rec.approvals[aid]
            item = items.get(ap.call_id)
            if item is None:
                await self._finish(
                    rec.run_id,
                    "failed",
                    {"code": "state_mismatch", "message": f"no interruption {ap.call_id} in the saved state"},
                )
                return None
            always = bool((ap.decided or {}).get("always"))
            if ap.status == "approved":
                state.approve(item, always_approve=always)
            else:
                state.reject(item, always_reject=always, rejection_message=rejection_message(ap))
        return state

    async def _pump(self, run_id: str, result: Any, mapper: EventMapper) -> BaseException | None:
        """Iterate the stream in a task we own; merge fast deltas; append in order. Returns the stream's exception."""
        queue: asyncio.Queue[Any] = asyncio.Queue()
        failure: list[BaseException] = []

        async def reader() -> None:
            try:
                async for ev in result.stream_events():
                    queue.put_nowait(ev)
            except Exception as exc:
                failure.append(exc)
            finally:
                queue.put_nowait(_END)

        reader_task = asyncio.create_task(reader(), name=f"runcast-stream-{run_id}")
        coalescer = DeltaCoalescer(self.coalesce_s)
        loop = asyncio.get_running_loop()
        try:
            while True:
                deadline = coalescer.deadline()
                try:
                    if deadline is None:
                        ev = await queue.get()
                    else:
                        ev = await asyncio.wait_for(queue.get(), max(0.0, deadline - loop.time()))
                except TimeoutError:
                    out = coalescer.due(loop.time())
                else:
                    if ev is _END:
                        break
                    out = coalescer.push(mapper.map(ev), loop.time())
                if out:
                    await self._append(run_id, out)
            rest = coalescer.flush()
            if rest:
                await self._append(run_id, rest)
        finally:
            if not reader_task.done():
                result.cancel()
                reader_task.cancel()
            await asyncio.gather(reader_task, return_exceptions=True)
        return failure[0] if failure else result.run_loop_exception

    async def _end_segment(
        self, run_id: str, spec: AgentSpec, result: Any, mapper: EventMapper, error: BaseException | None
    ) -> None:
        rec = await self._retry(f"run {run_id}", lambda: self.backend.get(run_id))
        if rec is None:
            return
        if rec.cancel is not None:
            await self._finish(run_id, "cancelled", {})
        elif error is None and not result.interruptions and rec.interrupt is not None and result.final_output is None:
            await self._save_history(run_id, rec.segment, result)  # the conversation so far, then the next turn
            await apply(self.backend, run_id, lambda r: runs.interrupted(r, self.id, time.time()), persist=True)
        elif error is not None:
            # what the run spent before it failed: the SDK's total, earlier segments included (the RunState carries it)
            await self._finish(
                run_id, "failed", failure_data(error) | {"usage": usage_data(result.context_wrapper.usage)}
            )
        elif result.interruptions:
            state = result.to_state()
            saved = json.dumps(state.to_json(), separators=(",", ":"))
            await self._retry(f"run {run_id}", lambda: self.backend.save_state(run_id, rec.segment, saved))
            now = time.time()
            new = []
            for item in result.interruptions:
                tool = wire_name(item) or "tool"
                policy = spec.policy_for(tool)  # keyed by the name the wire shows, never by a bare alias
                new.append(
                    Approval(
                        approval_id=f"ap_{secrets.token_hex(6)}",
                        call_id=item.call_id or "",
                        tool=tool,
                        arguments=item.arguments or "",
                        agent=getattr(item.agent, "name", None),
                        description=tool_description(item),
                        policy=policy,
                        requested_at=now_iso(now),
                        expires_at=now + policy.expires_s if policy.expires_s else None,
                    )
                )
            await apply(self.backend, run_id, lambda r: runs.pause(r, self.id, new, time.time()), persist=True)
        else:
            await self._save_history(run_id, rec.segment, result)  # before the commit: a next turn may start at once
            last = getattr(result, "last_agent", None)
            await self._finish(
                run_id,
                "completed",
                {
                    "output": _json_output(result.final_output),
                    "usage": usage_data(
                        result.context_wrapper.usage
                    ),  # the SDK's own total, all segments and nested runs
                    "agent": getattr(last, "name", None),
                },
            )


class ThreadedWorker:
    """A hub's own worker on Redis, on a thread of its own: its own event loop and its own Redis connections.

    In the hub's event loop, 500 streaming agents made every turn of the loop long, and the hub reads its pub/sub and
    writes its frames once per turn: on that hub the inbox heard of approvals seconds late (bench/dashboards.py, the
    `redis` row: `inbox.added` p50 2.6 s there, 93 ms on the other hub). On a thread the worker shares only the
    interpreter, and the hub's loop waits at most the switch interval (5 ms) for its turn. The runs go through Redis
    either way, as they do with `runcast worker` processes; on the memory backend the worker stays in the hub's loop.
    """

    def __init__(self, make_backend: Callable[[], Backend], registry: Registry, **kw: Any) -> None:
        self._make_backend = make_backend
        self._registry = registry
        self._kw = kw
        self.worker: Worker | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def active(self) -> dict[str, Any]:
        return self.worker.active if self.worker is not None else {}

    async def start(self) -> None:
        started: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._main, args=(started,), name="runcast-worker", daemon=True)
        self._thread.start()
        await asyncio.wrap_future(started)

    def _main(self, started: concurrent.futures.Future[None]) -> None:
        try:
            import uvloop

            loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        except ImportError:  # pragma: no cover - uvloop is a dependency; asyncio's loop does the same, slower
            loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)

        async def boot() -> None:
            backend = self._make_backend()
            await backend.start()
            try:
                worker = Worker(backend, self._registry, **self._kw)
                await worker.start()
            except BaseException:
                await backend.close()  # (its connections belong to this loop, which closes next)
                raise
            self.worker = worker

        try:
            loop.run_until_complete(boot())
        except BaseException as exc:
            loop.close()
            started.set_exception(exc)
            return
        self._loop = loop
        started.set_result(None)
        try:
            loop.run_forever()
        finally:
            loop.close()

    async def stop(self) -> None:
        loop, worker, thread = self._loop, self.worker, self._thread
        if loop is None or worker is None or thread is None:
            return

        async def shutdown() -> None:
            await worker.stop()
            await worker.backend.close()

        try:
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(shutdown(), loop))
        finally:
            loop.call_soon_threadsafe(loop.stop)
            await asyncio.to_thread(thread.join, 10.0)


class Sweeper:
    """Settles what time decides: expired approvals (auto-reject) and runs whose worker stopped renewing its lease.

    Every process may run one; the compare-and-set makes doing it twice harmless. After an outage of the backend
    (when no worker could renew a lease either), it judges leases only once it has been connected for `grace_s`,
    so workers that are alive get one lease's time to renew before their runs are declared lost.
    """

    def __init__(self, backend: Backend, interval: float = 0.25, grace_s: float = 10.0) -> None:
        self.backend = backend
        self.interval = interval
        self.grace_s = grace_s
        self._task: asyncio.Task[Any] | None = None
        self._connected_since: float | None = None  # monotonic time of the first sweep after the last outage

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="runcast-sweeper")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def sweep(self) -> None:
        now = time.time()
        due = await self.backend.due_runs(now)
        if self._connected_since is None:
            self._connected_since = time.monotonic()
        judge_leases = time.monotonic() - self._connected_since >= self.grace_s
        for run_id in due:
            try:
                await apply(self.backend, run_id, lambda r: runs.expire_due(r, time.time()))
                if judge_leases:
                    await apply(self.backend, run_id, lambda r: runs.worker_lost(r, time.time()))
            except ProtocolError:
                pass

    async def _loop(self) -> None:
        while True:
            try:
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._connected_since is not None or not isinstance(exc, self.backend.transient_errors):
                    log.warning("sweeper: %s", exc)
                self._connected_since = None
            await asyncio.sleep(self.interval)
