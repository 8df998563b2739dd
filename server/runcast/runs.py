"""The run record and its state machine, as plain code.

Every change to a run is a pure function here: it takes a copy of the record and returns a `Transition` with the
new record, the events to log and the jobs to queue. A backend commits a transition atomically (compare-and-set
on `version`, append the events, queue the jobs), so two nodes racing on one run can never both win.

    queued --claim--> running --paused--> paused --(all decided)--> resuming --claim--> running ... --> completed
                         |                   |                           |                          failed
                         +------cancel-------+-----------cancel----------+----------------------->  cancelled

A completed run is also a conversation waiting for its next message (conversation.py): `say` moves it to resuming
with a `turn` job, and messages that came while it was busy are taken as the next turn when a turn completes.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, Field

from . import approvals as rules
from . import comments as talk
from .approvals import Approval, Person
from .comments import CommentMeta, ThreadMeta
from .protocol import ErrorCode, ProtocolError, now_iso

Status = Literal["queued", "running", "paused", "resuming", "completed", "failed", "cancelled"]
TERMINAL = ("completed", "failed", "cancelled")
WireEvents = list[tuple[str, dict[str, Any]]]


class Job(BaseModel):
    kind: Literal["start", "resume", "turn"]  # turn: the next turn of a conversation (conversation.py)
    run_id: str
    segment: int


class RunRecord(BaseModel):
    run_id: str
    agent: str
    input: str
    started_by: dict[str, str]
    created_at: str
    status: Status = "queued"
    version: int = 0
    segment: int = 0  # 1 for the first stream, +1 for each resume
    owner: str | None = None  # the worker streaming the current segment
    lease_until: float | None = None
    cancel: dict[str, Any] | None = None  # a cancel asked for while running: {by, mode}
    approvals: dict[str, Approval] = Field(default_factory=dict)
    pending: list[str] = Field(default_factory=list)  # approval ids of the current pause
    output: Any = None
    error: dict[str, Any] | None = None
    updated_at: float = 0.0
    tx: str | None = None  # id of the transition that wrote this version (lets a retry see that it already landed)
    epoch: str = ""  # random, made with the run's log: a client's `since` counts in this log and no other
    comments: dict[str, CommentMeta] = Field(default_factory=dict)  # metadata only: the text is in the log
    threads: dict[str, ThreadMeta] = Field(default_factory=dict)
    mentions: list[dict[str, Any]] = Field(default_factory=list)  # the newest (comments.MENTIONS_KEPT), for the feed
    reviewers: list[str] = Field(default_factory=list)  # subs the starter asked to review every approval of the run
    # the conversation (conversation.py): turn 1 answers `input`; each later turn answers the messages it took
    turn: int = 1
    queue: list[dict[str, Any]] = Field(default_factory=list)  # messages said while busy: {message_id, by, text, at}
    turn_input: list[dict[str, Any]] = Field(default_factory=list)  # the messages the current turn answers
    interrupt: dict[str, Any] | None = None  # a message asked the running segment to stop after its model turn
    talk_times: dict[str, list[float]] = Field(default_factory=dict)  # per person: when they spoke (rate limit)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def deadline(self) -> float | None:
        """The earliest expiry among this pause's open approvals (for the backend's timer index)."""
        times = [
            a.expires_at
            for a in (self.approvals[i] for i in self.pending)
            if not a.settled and a.expires_at is not None
        ]
        return min(times) if self.status == "paused" and times else None

    def summary(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "agent": self.agent,
            "status": self.status,
            "input": self.input,
            "started_by": self.started_by,
            "created_at": self.created_at,
            "segment": self.segment,
            "turn": self.turn,
        }

    def detail(self) -> dict[str, Any]:
        d = self.summary()
        d["pending_approvals"] = [
            {
                **self.approvals[i].requested_data(),
                "status": self.approvals[i].status,
                "tally": self.approvals[i].tally(),
            }
            for i in self.pending
            if self.status == "paused"
        ]
        d["approvals"] = [a.decided for a in self.approvals.values() if a.decided]
        d["output"] = self.output
        d["error"] = self.error
        d["worker"] = self.owner
        d["epoch"] = self.epoch or None
        d["queue"] = list(self.queue)
        return d


@dataclass
class Transition:
    record: RunRecord
    events: WireEvents = field(default_factory=list)
    jobs: list[Job] = field(default_factory=list)
    result: dict[str, Any] = field(default_factory=dict)
    error: ProtocolError | None = None  # committed anyway, then raised to the caller (e.g. an expiry found by a vote)
    feed: bool = True  # publish the run's feed entry (status or approvals changed); a lease renewal does not


def _copy(rec: RunRecord, now: float) -> RunRecord:
    new = rec.model_copy(deep=True)
    new.updated_at = now
    return new


MAX_REVIEWERS = 10


def new_run(
    run_id: str, agent: str, input_: str, person: Person, now: float, reviewers: list[str] | None = None
) -> Transition:
    asked = list(dict.fromkeys(reviewers or []))
    if len(asked) > MAX_REVIEWERS:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"at most {MAX_REVIEWERS} reviewers", field="reviewers")
    rec = RunRecord(
        run_id=run_id,
        agent=agent,
        input=input_,
        started_by=person.ref(),
        created_at=now_iso(now),
        updated_at=now,
        epoch=secrets.token_hex(8),
        reviewers=asked,
    )
    started: dict[str, Any] = {"agent": agent, "input": input_, "started_by": person.ref()}
    if asked:
        started["reviewers"] = asked
    ev = [("run.started", started)]
    return Transition(rec, ev, [Job(kind="start", run_id=run_id, segment=1)], {"run_id": run_id})


def claim(rec: RunRecord, job: Job, owner: str, now: float, lease_s: float | None = None) -> Transition:
    """A worker takes a job: queued -> running (start) or resuming -> running (resume, logs `run.resumed`)."""
    want = "queued" if job.kind == "start" else "resuming"
    if rec.status != want or (job.kind != "start" and rec.segment + 1 != job.segment):
        raise ProtocolError(ErrorCode.NOT_PENDING, f"run {rec.run_id} is {rec.status}; nothing to {job.kind}")
    new = _copy(rec, now)
    new.status, new.owner, new.segment = "running", owner, job.segment
    new.lease_until = now + lease_s if lease_s else None
    events: WireEvents = []
    if job.kind == "turn":
        new.pending = []
        events.append(
            (
                "run.resumed",
                {
                    "decisions": [],
                    "segment": job.segment,
                    "turn": new.turn,
                    "messages": [m["message_id"] for m in new.turn_input],
                },
            )
        )
    elif job.kind == "resume":
        decisions = [
            {
                k: new.approvals[i].decided.get(k)
                for k in ("approval_id", "call_id", "decision", "by", "reason", "always")
            }  # type: ignore[union-attr]
            for i in new.pending
        ]
        events.append(("run.resumed", {"decisions": decisions, "segment": job.segment}))
    return Transition(new, events)


def _check_owner(rec: RunRecord, owner: str) -> None:
    if rec.status != "running" or rec.owner != owner:
        raise ProtocolError(ErrorCode.NOT_PENDING, f"run {rec.run_id} is {rec.status} and not owned by {owner}")


def renew(rec: RunRecord, owner: str, now: float, lease_s: float) -> Transition:
    _check_owner(rec, owner)
    new = _copy(rec, now)
    new.lease_until = now + lease_s
    return Transition(new)


def pause(rec: RunRecord, owner: str, new_approvals: list[Approval], now: float) -> Transition:
    """The stream ended with interruptions and the state is saved: open the approvals. A cancel asked for meanwhile
    wins."""
    _check_owner(rec, owner)
    if rec.cancel:
        return finish(rec, owner, "cancelled", {}, now)
    new = _copy(rec, now)
    new.status, new.owner, new.lease_until = "paused", None, None
    new.pending = [a.approval_id for a in new_approvals]
    events: WireEvents = []
    for ap in new_approvals:
        ap.reviewers = list(dict.fromkeys([*rec.reviewers, *ap.policy.reviewers]))
        new.approvals[ap.approval_id] = ap
        events.append(("approval.requested", ap.requested_data()))
        if ap.reviewers:  # its own event type, so a webhook can route the request to each reviewer
            events.append(
                (
                    "approval.review_requested",
                    {
                        "approval_id": ap.approval_id,
                        "tool": ap.tool,
                        "reviewers": list(ap.reviewers),
                        "by": rec.started_by,
                    },
                )
            )
    events.append(("run.paused", {"pending": list(new.pending), "segment": new.segment}))
    return Transition(new, events)


def _settle_if_done(new: RunRecord, tr: Transition) -> None:
    if new.status == "paused" and all(new.approvals[i].settled for i in new.pending):
        new.status = "resuming"
        tr.jobs.append(Job(kind="resume", run_id=new.run_id, segment=new.segment + 1))


def decide(
    rec: RunRecord,
    approval_id: str,
    person: Person,
    decision: Literal["approve", "reject"],
    reason: str | None,
    always: bool,
    now: float,
    arguments: str | None = None,
    schema_of: Callable[[str], dict[str, Any] | None] | None = None,
) -> Transition:
    """A vote. With `arguments` (approve with changes, edits.py): the edited call, checked against the tool's schema
    (`schema_of(tool)`) before the vote counts."""
    ap0 = rec.approvals.get(approval_id)
    if ap0 is None:
        raise ProtocolError(ErrorCode.NOT_FOUND, f"run {rec.run_id} has no approval {approval_id}")
    rules.check_role(ap0, person)
    if decision != "approve":
        arguments = None  # (read only with approve: a reject sends the call back with its reason)
    if arguments is not None:
        if ap0.policy.quorum > 1:
            raise ProtocolError(
                ErrorCode.BAD_REQUEST,
                f"{ap0.tool} needs {ap0.policy.quorum} approvers, who approve the "
                "call as the model wrote it: edits need a policy with quorum 1",
                field="arguments",
            )
        if not ap0.settled:
            from .edits import check_edit

            arguments = check_edit(ap0.arguments, arguments, schema_of(ap0.tool) if schema_of else None)
    new = _copy(rec, now)
    ap = new.approvals[approval_id]
    if not ap.settled and (rec.status != "paused" or approval_id not in rec.pending):
        raise ProtocolError(ErrorCode.NOT_PENDING, f"approval {approval_id} is not open (run is {rec.status})")
    tr = Transition(new)
    try:
        outcome, events = rules.vote(ap, person, decision, reason, always, now, rec.started_by.get("sub"), arguments)
    except ProtocolError as err:
        if err.code != ErrorCode.EXPIRED:
            raise
        tr.events = rules.expire(ap, now)
        _settle_if_done(new, tr)
        tr.error = err
        return tr
    tr.events = events
    tr.result = {"outcome": outcome, "approval_id": approval_id}
    _settle_if_done(new, tr)
    return tr


def expire_due(rec: RunRecord, now: float) -> Transition | None:
    if rec.status != "paused":
        return None
    new = _copy(rec, now)
    tr = Transition(new)
    for i in new.pending:
        tr.events += rules.expire(new.approvals[i], now)
    if not tr.events:
        return None
    _settle_if_done(new, tr)
    return tr


def cancel(rec: RunRecord, person: Person, mode: str, now: float) -> Transition:
    """Cancel beats approve: a paused or resuming run ends here, so its approved tools never run."""
    if rec.terminal:
        raise ProtocolError(ErrorCode.NOT_PENDING, f"run {rec.run_id} already {rec.status}")
    new = _copy(rec, now)
    by = person.ref()
    if rec.status == "running":
        if new.cancel is None:
            new.cancel = {"by": by, "mode": mode}
        return Transition(new, [], [], {"signal": True, "mode": new.cancel["mode"]})
    events: WireEvents = []
    for i in new.pending:
        events += rules.cancel(new.approvals[i])
    new.status, new.owner, new.lease_until, new.cancel = "cancelled", None, None, {"by": by, "mode": mode}
    events.append(("run.cancelled", {"by": by, "mode": mode}))
    return Transition(new, events, [], {"signal": False})


def finish(
    rec: RunRecord, owner: str, kind: Literal["completed", "failed", "cancelled"], data: dict[str, Any], now: float
) -> Transition:
    _check_owner(rec, owner)
    new = _copy(rec, now)
    new.status, new.owner, new.lease_until = kind, None, None
    if kind == "completed":
        new.output = data.get("output")
        new.turn_input, new.interrupt = [], None
        events: WireEvents = [("run.completed", {**data, "turn": new.turn})]
        tr = Transition(new, events)
        next_turn(new, tr)
        return tr
    elif kind == "failed":
        new.error = data
        events = [("run.failed", data)]
    else:
        c = new.cancel or {"by": None, "mode": "immediate"}
        events = [("run.cancelled", {"by": c["by"], "mode": c["mode"]})]
    return Transition(new, events)


def next_turn(new: RunRecord, tr: Transition) -> None:
    """A turn ended and messages wait: the queue becomes the next turn's input (resuming, a `turn` job)."""
    if not new.queue or new.status not in ("completed", "running"):
        return
    new.turn_input, new.queue, new.interrupt = list(new.queue), [], None
    new.turn += 1
    new.status, new.owner, new.lease_until = "resuming", None, None
    tr.jobs.append(Job(kind="turn", run_id=new.run_id, segment=new.segment + 1))


def interrupted(rec: RunRecord, owner: str, now: float) -> Transition:
    """The running segment stopped after its model turn because a message asked it to: the next turn takes the queue."""
    _check_owner(rec, owner)
    new = _copy(rec, now)
    by = (rec.interrupt or {}).get("by")
    tr = Transition(new, [("turn.interrupted", {"by": by, "segment": rec.segment, "turn": rec.turn})])
    new.turn_input, new.interrupt = [], None
    if new.queue:
        next_turn(new, tr)
    else:  # (withdrawn meanwhile) the conversation waits, as after a completed turn
        new.status, new.owner, new.lease_until = "completed", None, None
    return tr


def worker_lost(rec: RunRecord, now: float) -> Transition | None:
    """A running segment whose lease ran out: fail it rather than replay tools that may have run."""
    if rec.status != "running" or rec.lease_until is None or now < rec.lease_until:
        return None
    new = _copy(rec, now)
    new.status, new.owner, new.lease_until = "failed", None, None
    new.error = {
        "code": "worker_lost",
        "message": f"the worker running segment {rec.segment} stopped renewing its lease",
    }
    return Transition(new, [("run.failed", dict(new.error))])


def _discussion(
    rec: RunRecord, now: float, change: Callable[[RunRecord], tuple[dict[str, Any], WireEvents]]
) -> Transition | None:
    """A comment, an edit, a delete or a resolve: the record's discussion metadata moves, its status never does.
    None (nothing to commit) when the change logs nothing."""
    new = _copy(rec, now)
    result, events = change(new)
    if not events:
        return None
    return Transition(new, events, [], result)


def comment(
    rec: RunRecord,
    person: Person,
    text: str,
    approval_id: str | None,
    reply_to: str | None,
    people: list[dict[str, Any]],
    now: float,
) -> Transition:
    tr = _discussion(
        rec,
        now,
        lambda r: talk.add(
            r.comments, r.threads, r.approvals, r.mentions, person, text, approval_id, reply_to, people, now, r.run_id
        ),
    )
    assert tr is not None
    return tr


def edit_comment(
    rec: RunRecord, person: Person, comment_id: str, text: str, people: list[dict[str, Any]], now: float
) -> Transition:
    tr = _discussion(
        rec, now, lambda r: talk.edit(r.comments, r.mentions, person, comment_id, text, people, now, r.run_id)
    )
    assert tr is not None
    return tr


def delete_comment(rec: RunRecord, person: Person, comment_id: str, now: float) -> Transition:
    tr = _discussion(rec, now, lambda r: talk.delete(r.comments, person, comment_id, r.run_id))
    assert tr is not None
    return tr


def resolve_thread(rec: RunRecord, person: Person, thread_id: str, resolved: bool, now: float) -> Transition | None:
    return _discussion(rec, now, lambda r: talk.resolve(r.threads, person, thread_id, resolved, r.run_id))
