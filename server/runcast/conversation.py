"""A run as a conversation, as plain code: who may talk, where a message goes, when the next turn starts.

After a run's first turn people keep talking to the agent with `say` (run_id, text). Every accepted message is logged
as `message.said` {message_id, by, text, queued} with its author from the token, so every watcher (and a late
joiner, from the log) sees the whole conversation. What happens next depends on the run:

- completed (the agent answered and waits): the message starts the next turn now: resuming, a `turn` job, the same
  run id, `seq` going on. The worker gives the model the conversation so far (the SDK's `to_input_list()` of the last
  turn, kept by the backend) and the new messages, each marked with who said it (`model_message`).
- busy (queued, running, paused, resuming): the agent's `TalkPolicy.busy` decides.
  `enqueue` (default): the message waits in `rec.queue` (`queued: true`; its author may `withdraw` it, logged as
  `message.withdrawn`); when the current turn completes, the whole queue becomes the next turn's input.
  `interrupt`: queued, and a running segment is asked (a worker signal) to stop after its current model turn
  (`cancel("after_turn")`, the SDK's safe point); it ends with `turn.interrupted` and the next turn takes the queue.
  A paused run waits for its decision first (the pause is the safe point), then takes the queue.
  `reject`: refused with `busy`; nothing is logged.
- failed or cancelled: refused with `not_pending` (its conversation is over).

Every check runs inside the run's compare-and-set, so two people on two nodes who speak at once are both kept, in
the one order of the log, and exactly one turn runs at a time (only the transition that finds the run idle queues a
`turn` job). Refusals change nothing.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from .approvals import ADMIN, Person
from .protocol import ErrorCode, ProtocolError, now_iso
from .runs import Job, RunRecord, Transition, _copy

BUSY_POLICIES = ("enqueue", "interrupt", "reject")
RATE_WINDOW_S = 60.0
DEFAULT_MAX_CHARS = 4000  # a message to an agent, not a document: a paste of a log this long is still fine
DEFAULT_PER_MINUTE = 20  # per person per run: a person types a few a minute; more is a script flooding the run


class TalkPolicy(BaseModel):
    """Who may talk to an agent's runs, and what a message does while the agent is busy (per agent, AgentSpec.talk)."""

    roles: list[str] = Field(default_factory=lambda: ["operator"])  # admin may always talk
    starter: bool = True  # the person who started the run may talk to it, whatever their roles
    busy: Literal["enqueue", "interrupt", "reject"] = "enqueue"
    max_chars: int = Field(default=DEFAULT_MAX_CHARS, ge=1)
    per_minute: int = Field(default=DEFAULT_PER_MINUTE, ge=0)  # 0: no limit

    def wire(self) -> dict[str, Any]:
        return {
            "roles": self.roles,
            "starter": self.starter,
            "busy": self.busy,
            "max_chars": self.max_chars,
            "per_minute": self.per_minute,
        }


def may_talk(rec: RunRecord, person: Person, policy: TalkPolicy) -> bool:
    if ADMIN in person.roles or any(r in person.roles for r in policy.roles):
        return True
    return policy.starter and rec.started_by.get("sub") == person.sub


def need_talk(rec: RunRecord, person: Person, policy: TalkPolicy) -> None:
    """ProtocolError(forbidden) unless the person may talk to the run's agent (say, and show that they type)."""
    if not may_talk(rec, person, policy):
        who = " or the person who started the run" if policy.starter else ""
        raise ProtocolError(
            ErrorCode.FORBIDDEN,
            f"talking to this agent needs the role {', '.join(policy.roles)} (or admin)"
            f"{who}; you have {', '.join(person.roles) or 'none'}",
            run_id=rec.run_id,
        )


def say(rec: RunRecord, person: Person, text: str, message_id: str, policy: TalkPolicy, now: float) -> Transition:
    """One message to the run's agent. Raises ProtocolError (forbidden, bad_request, too_large, not_pending, busy,
    rate_limited) and then nothing of the run changes."""
    need_talk(rec, person, policy)
    if not text.strip():
        raise ProtocolError(ErrorCode.BAD_REQUEST, "the message is empty", field="text", run_id=rec.run_id)
    if len(text) > policy.max_chars:
        raise ProtocolError(
            ErrorCode.TOO_LARGE,
            f"the message has {len(text)} characters; this agent takes at most {policy.max_chars}",
            field="text",
            max_chars=policy.max_chars,
            run_id=rec.run_id,
        )
    if rec.status in ("failed", "cancelled"):
        raise ProtocolError(
            ErrorCode.NOT_PENDING,
            f"run {rec.run_id} is {rec.status}: its conversation is over (start a new run, or run it again with rerun)",
            run_id=rec.run_id,
        )
    busy = rec.status != "completed"
    if busy and policy.busy == "reject":
        raise ProtocolError(
            ErrorCode.BUSY,
            f"the agent is busy (run {rec.run_id} is {rec.status}) and this agent takes "
            "no message meanwhile; send it once the turn has completed",
            run_id=rec.run_id,
        )
    recent = [t for t in rec.talk_times.get(person.sub, []) if t > now - RATE_WINDOW_S]
    if policy.per_minute and len(recent) >= policy.per_minute:
        wait = max(1, int(recent[0] + RATE_WINDOW_S - now + 0.999))
        raise ProtocolError(
            ErrorCode.RATE_LIMITED,
            f"you sent {len(recent)} messages to this run in the last minute, its limit; try again in {wait} s",
            quota="messages_per_minute",
            retry_after_s=wait,
            run_id=rec.run_id,
        )
    new = _copy(rec, now)
    new.talk_times = {s: [t for t in ts if t > now - RATE_WINDOW_S] for s, ts in new.talk_times.items()}
    new.talk_times = {s: ts for s, ts in new.talk_times.items() if ts}
    new.talk_times[person.sub] = [*recent, now]
    msg = {"message_id": message_id, "by": person.ref(), "text": text, "at": now_iso(now)}
    tr = Transition(new, [("message.said", {**msg, "queued": busy})], [], {"message_id": message_id, "queued": busy})
    if not busy:
        new.turn_input, new.turn = [msg], new.turn + 1
        new.status, new.owner, new.lease_until = "resuming", None, None
        tr.jobs.append(Job(kind="turn", run_id=new.run_id, segment=new.segment + 1))
        return tr
    new.queue.append(msg)
    if policy.busy == "interrupt" and rec.status == "running" and new.interrupt is None:
        new.interrupt = {"by": person.ref(), "message_id": message_id}
        tr.result["signal"] = True  # the service tells the worker: stop after this model turn
    return tr


def withdraw(rec: RunRecord, person: Person, message_id: str, now: float) -> Transition:
    """A queued message taken back by its author, before a turn took it."""
    msg = next((m for m in rec.queue if m["message_id"] == message_id), None)
    if msg is None:
        raise ProtocolError(
            ErrorCode.NOT_PENDING,
            f"message {message_id} is not waiting in run {rec.run_id}'s queue (a turn took it, or it was withdrawn)",
            run_id=rec.run_id,
        )
    if msg["by"].get("sub") != person.sub:
        raise ProtocolError(
            ErrorCode.FORBIDDEN, "only the person who sent a message may withdraw it", run_id=rec.run_id
        )
    new = _copy(rec, now)
    new.queue = [m for m in new.queue if m["message_id"] != message_id]
    if new.interrupt and new.interrupt.get("message_id") == message_id and not new.queue:
        new.interrupt = None  # (the worker may already stop: the turn then ends as turn.interrupted, and waits)
    return Transition(
        new, [("message.withdrawn", {"message_id": message_id, "by": person.ref()})], [], {"message_id": message_id}
    )


def model_message(msg: dict[str, Any]) -> dict[str, Any]:
    """A person's message as the model reads it: a user message that starts with who said it ("Alice (@alice): ..."),
    since the Responses API's input messages carry no author of their own."""
    by = msg.get("by") or {}
    return {"role": "user", "content": f"{by.get('name') or by.get('sub')} (@{by.get('sub')}): {msg['text']}"}


def turn_input(history: list[Any], rec: RunRecord) -> list[Any]:
    """The model's input for the run's next turn: the conversation so far and the messages this turn answers."""
    return list(history) + [model_message(m) for m in rec.turn_input]
