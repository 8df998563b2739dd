"""What a person can do to runs, with the permission checks, shared by the WebSocket and the HTTP API."""

from __future__ import annotations

import functools
import secrets
import time
from typing import Any, Literal

from . import audit, comments, conversation, edits, feed, metrics, runfilter, runs
from .audit import Query as AuditQuery
from .auth import Identity
from .backends.base import Backend, LogTrimmed
from .protocol import ErrorCode, Event, ProtocolError
from .quotas import StartQuota
from .registry import Registry
from .runfilter import RunFilter
from .runs import RunRecord
from .store import apply as _apply

# every commit is counted by the process that made it (the store sits below the metrics: it is handed the observer)
apply = functools.partial(_apply, observe=metrics.observe_events)


# (an auditor reads the audit record of every run, and watches the runs it links to; it decides nothing)
WATCH_ROLES = ("viewer", "auditor", "approver", "operator", "admin")


def new_run_id() -> str:
    return f"run_{secrets.token_hex(6)}"


class Service:
    def __init__(self, backend: Backend, registry: Registry, quota: StartQuota | None = None) -> None:
        self.backend = backend
        self.registry = registry
        self.quota = quota or StartQuota()
        self.directory: Any = None  # people.Directory, when the hub has one (--people): mentions and Slack

    @staticmethod
    def no_such_run(run_id: str) -> ProtocolError:
        """One answer for a run that does not exist and for one the token may not see (by its run list or its roles),
        everywhere (HTTP and WebSocket): a different one would tell anyone which run ids exist."""
        return ProtocolError(ErrorCode.NOT_FOUND, f"no run {run_id} that your token may see", run_id=run_id)

    def _need_view(self, who: Identity, run_id: str) -> None:
        if not who.can_see(run_id):
            raise self.no_such_run(run_id)

    def agent_watch_roles(self, agent: str) -> set[str]:
        """The built-in roles, and any role one of the agent's policies names."""
        roles = set(WATCH_ROLES)
        spec = self.registry.get(agent)
        if spec is not None:
            roles.update(spec.default_policy.roles)
            for policy in spec.policies.values():
                roles.update(policy.roles)
        return roles

    def watch_roles(self, rec: RunRecord) -> set[str]:
        """Who may watch a run: its agent's watch roles, and (for an agent this node does not know) the roles its
        approvals named."""
        roles = self.agent_watch_roles(rec.agent)
        for ap in rec.approvals.values():
            roles.update(ap.policy.roles)
        return roles

    def may_watch_summary(self, who: Identity, run: dict[str, Any]) -> bool:
        """can_watch for a run list's entry (its summary: run_id and agent)."""
        return who.can_see(run["run_id"]) and any(r in who.roles for r in self.agent_watch_roles(run["agent"]))

    def can_watch(self, who: Identity, rec: RunRecord) -> bool:
        return who.can_see(rec.run_id) and any(r in who.roles for r in self.watch_roles(rec))

    async def record(self, who: Identity, run_id: str) -> RunRecord:
        self._need_view(who, run_id)
        rec = await self.backend.get(run_id)
        if rec is None or not self.can_watch(who, rec):
            raise self.no_such_run(run_id)
        return rec

    async def start(self, who: Identity, agent: str, input_: str, reviewers: list[str] | None = None) -> dict[str, Any]:
        if not who.has("operator"):
            raise ProtocolError(ErrorCode.FORBIDDEN, "starting a run needs the operator or admin role")
        if "*" not in who.runs:
            raise ProtocolError(
                ErrorCode.FORBIDDEN, "your token is limited to some runs; starting a new one needs runs ['*']"
            )
        if self.registry.get(agent) is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no agent {agent!r}; known: {', '.join(self.registry.names())}")
        run_id = new_run_id()
        refusal = await self.backend.admit_start(who.sub, run_id, time.time(), self.quota)
        if refusal is not None:
            raise refusal.error(self.quota)
        tr = runs.new_run(run_id, agent, input_, who.person, time.time(), reviewers)
        await self.backend.create(tr)
        return {"run_id": run_id}

    async def decide(
        self,
        who: Identity,
        run_id: str,
        approval_id: str,
        decision: Literal["approve", "reject"],
        reason: str | None,
        always: bool,
        arguments: str | None = None,
    ) -> dict[str, Any]:
        await self.record(who, run_id)  # (not found, or not watchable: the same answer)
        person = who.person

        def fn(r: RunRecord) -> runs.Transition:
            spec = self.registry.get(r.agent)
            schema_of = (lambda tool: edits.tool_schema(spec.agent, tool)) if spec is not None else None
            return runs.decide(
                r, approval_id, person, decision, reason or None, always, time.time(), arguments, schema_of
            )

        tr, _ = await apply(self.backend, run_id, fn)
        assert tr is not None
        return dict(tr.result)

    async def rerun(self, who: Identity, run_id: str) -> dict[str, Any]:
        """Run again: a new run with a finished run's agent and input, started by `who` (start's rules and quota)."""
        rec = await self.record(who, run_id)
        if not rec.terminal:
            raise ProtocolError(
                ErrorCode.NOT_PENDING,
                f"run {run_id} is {rec.status}; only a finished run can be run again",
                run_id=run_id,
            )
        return await self.start(who, rec.agent, rec.input) | {"rerun_of": run_id}

    def talk_policy(self, agent: str) -> conversation.TalkPolicy:
        spec = self.registry.get(agent)
        return spec.talk if spec is not None else conversation.TalkPolicy()

    async def say(self, who: Identity, run_id: str, text: str) -> dict[str, Any]:
        """A message to the run's agent (conversation.py): logged with its author, answered by the next turn."""
        self._need_view(who, run_id)
        person, message_id = who.person, f"msg_{secrets.token_hex(6)}"

        def said(r: RunRecord) -> runs.Transition:
            # (who may see the run is checked on the record the compare-and-set reads: one read, not two, before
            # the turn's job is queued; the answer for a run they may not see is the same as `record`'s)
            if not self.can_watch(who, r):
                raise self.no_such_run(run_id)
            return conversation.say(r, person, text, message_id, self.talk_policy(r.agent), time.time())

        tr, _ = await apply(self.backend, run_id, said)
        assert tr is not None
        if tr.result.pop("signal", False):
            await self.backend.signal(run_id, {"type": "interrupt"})
        return {"run_id": run_id, **tr.result}

    async def need_talk(self, who: Identity, run_id: str) -> None:
        """not_found / forbidden unless `who` may watch the run and talk to its agent (whoever may `say` may show
        that they type)."""
        rec = await self.record(who, run_id)
        conversation.need_talk(rec, who.person, self.talk_policy(rec.agent))

    async def withdraw(self, who: Identity, run_id: str, message_id: str) -> dict[str, Any]:
        await self.record(who, run_id)
        person = who.person
        tr, _ = await apply(self.backend, run_id, lambda r: conversation.withdraw(r, person, message_id, time.time()))
        assert tr is not None
        return {"run_id": run_id, **tr.result}

    async def cancel(self, who: Identity, run_id: str, mode: str) -> dict[str, Any]:
        await self.record(who, run_id)
        if not who.has("operator"):
            raise ProtocolError(ErrorCode.FORBIDDEN, "cancelling a run needs the operator or admin role", run_id=run_id)
        person = who.person
        tr, _ = await apply(self.backend, run_id, lambda r: runs.cancel(r, person, mode, time.time()))
        assert tr is not None
        if tr.result.get("signal"):
            await self.backend.signal(run_id, {"type": "cancel", "mode": tr.result["mode"]})
        return {
            "run_id": run_id,
            "status": tr.record.status if not tr.result.get("signal") else "cancelling",
            "mode": (tr.record.cancel or {}).get("mode", mode),
        }  # the mode in effect (a first cancel's wins)

    async def list_runs(self, who: Identity, limit: int = 50, flt: RunFilter | None = None) -> list[dict[str, Any]]:
        """The newest runs `who` may watch; with a filter (runfilter.py), the newest of those that match."""
        if flt is None or not flt.active:
            return [r.summary() for r in await self.backend.list_runs(limit) if self.can_watch(who, r)]
        if flt.needs_me:  # every run with an open approval, however old
            recs = runfilter.newest_first(await self.backend.open_runs())
        else:
            recs = await self.backend.list_runs(max(limit, runfilter.SCAN_LIMIT))
        return [r.summary() for r in runfilter.select([r for r in recs if self.can_watch(who, r)], who, flt, limit)]

    async def events(self, who: Identity, run_id: str, since: int, limit: int) -> tuple[list[Event], int]:
        await self.record(who, run_id)
        head = await self.backend.head(run_id)
        if since >= head:  # nothing newer: no read (a since far past the head is no error, and no bad stream id)
            return [], head
        evs = await self.backend.read(run_id, since, limit=limit)
        return evs, max(head, evs[-1].seq if evs else head)

    async def audit(self, who: Identity, run_id: str) -> dict[str, Any]:
        """The run's audit record (audit.py): anyone who may see the run may read it."""
        rec = await self.record(who, run_id)
        keep = (
            "run.started",
            "tool.output",
            "approval.decided",
            "approval.expired",
            "approval.cancelled",
            "run.completed",
            "run.failed",
            "run.cancelled",
            *audit.DISCUSSION,
        )
        frames: list[dict[str, Any]] = []
        since, complete = 0, True
        while True:
            try:
                batch = await self.backend.read(run_id, since, limit=1000)
            except LogTrimmed as exc:
                since, complete = int(exc.detail["first_kept"]) - 1, False
                continue
            if not batch:
                break
            frames += [e.frame for e in batch if e.type in keep]
            since = batch[-1].seq
        return audit.build(rec, frames, log_complete=complete)

    AUDIT_ALL_ROLES = ("admin", "auditor")  # read every entry of GET /api/audit

    def audit_reader(self, who: Identity) -> bool:
        """Who may call GET /api/audit: admins and auditors (every entry), operators, approvers and any role an
        agent's policy names as a decider (the entries of runs they may watch). A viewer reads per run only."""
        deciders = {r for name in self.registry.names() for r in self.agent_watch_roles(name)} - {"viewer"}
        return who.has("auditor", "operator", "approver") or any(r in deciders for r in who.roles)

    async def audit_search(self, who: Identity, q: AuditQuery) -> tuple[list[dict[str, Any]], str | None]:
        """A page of the audit index across runs (audit.search), with the entries `who` may read."""
        if not self.audit_reader(who):
            raise ProtocolError(
                ErrorCode.FORBIDDEN,
                "the audit across runs is open to admin, auditor, operator and "
                "approver roles (a viewer reads each run's audit: GET /api/runs/{id}/audit)",
            )
        everything = who.has(*self.AUDIT_ALL_ROLES)

        def visible(e: dict[str, Any]) -> bool:
            if everything:
                return True
            roles = self.agent_watch_roles(e["agent"]) | set(e.get("policy_roles") or ())
            return who.can_see(e["run_id"]) and any(r in who.roles for r in roles)

        found, nxt = await audit.search(self.backend.audit_scan, q, visible)
        return [audit.public(e) for e in found], nxt

    # ------------------------------------------------------------------ comments (comments.py)
    async def people(self, who: Identity, run_id: str) -> list[dict[str, str]]:
        """Who `@` may name in this run's comments: who started it, voted, commented, watches or watched it, and
        the people of the directory (if the hub has one) who may decide one of its approvals."""
        rec = await self.record(who, run_id)
        return await self._people(rec)

    async def _people(self, rec: RunRecord) -> list[dict[str, str]]:
        found: list[dict[str, Any]] = [rec.started_by]
        for ap in rec.approvals.values():
            found += [{"sub": v.sub, "name": v.name} for v in ap.votes]
        found += [c.by for c in rec.comments.values()]
        found += await self.backend.watched(rec.run_id)
        if self.directory is not None:
            policies = [ap.policy for ap in rec.approvals.values()]
            spec = self.registry.get(rec.agent)
            if spec is not None:
                policies += [spec.default_policy, *spec.policies.values()]
            found += self.directory.deciders(policies)
        found += [{"sub": s, "name": s} for s in rec.reviewers]  # (a reviewer's own name, once seen, wins)
        return comments.mentionable(found)

    async def comment(
        self, who: Identity, run_id: str, text: str, approval_id: str | None, reply_to: str | None
    ) -> dict[str, Any]:
        rec = await self.record(who, run_id)
        people, person = await self._people(rec), who.person
        tr, _ = await apply(
            self.backend, run_id, lambda r: runs.comment(r, person, text, approval_id, reply_to, people, time.time())
        )
        assert tr is not None
        return {"run_id": run_id, **tr.result}

    async def edit_comment(self, who: Identity, run_id: str, comment_id: str, text: str) -> dict[str, Any]:
        rec = await self.record(who, run_id)
        people, person = await self._people(rec), who.person
        tr, _ = await apply(
            self.backend, run_id, lambda r: runs.edit_comment(r, person, comment_id, text, people, time.time())
        )
        assert tr is not None
        return {"run_id": run_id, **tr.result}

    async def delete_comment(self, who: Identity, run_id: str, comment_id: str) -> dict[str, Any]:
        await self.record(who, run_id)
        person = who.person
        tr, _ = await apply(self.backend, run_id, lambda r: runs.delete_comment(r, person, comment_id, time.time()))
        assert tr is not None
        return {"run_id": run_id, **tr.result}

    async def resolve_thread(self, who: Identity, run_id: str, thread_id: str, resolved: bool) -> dict[str, Any]:
        await self.record(who, run_id)
        person = who.person
        tr, _ = await apply(
            self.backend, run_id, lambda r: runs.resolve_thread(r, person, thread_id, resolved, time.time())
        )
        if tr is None:
            return {"run_id": run_id, "thread_id": thread_id, "resolved": resolved, "changed": False}
        return {"run_id": run_id, **tr.result}

    async def open_approvals(self, who: Identity) -> list[dict[str, Any]]:
        """The inbox: every open approval `who` may decide, in runs their token lets them see."""
        return feed.inbox_of(who, [feed.entry(r) for r in await self.backend.open_runs()])
