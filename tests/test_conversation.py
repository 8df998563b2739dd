"""The conversation rules (conversation.py, runs.py) as plain code: no sockets, no backend."""

from __future__ import annotations

import pytest

from runcast import conversation, runs
from runcast.approvals import Approval, ApprovalPolicy, Person
from runcast.conversation import TalkPolicy
from runcast.demo import follow_up
from runcast.protocol import ErrorCode, ProtocolError
from runcast.runs import Job, RunRecord

ALICE = Person(sub="alice", name="Alice", roles=["operator"])
BOB = Person(sub="bob", name="Bob", roles=["operator"])
VIEWER = Person(sub="val", name="Val", roles=["viewer"])
ADMIN = Person(sub="root", name="Root", roles=["admin"])
T0 = 1_000_000.0


def started(person: Person = ALICE) -> RunRecord:
    return runs.new_run("run_1", "demo", "tidy up", person, T0).record


def running(rec: RunRecord | None = None) -> RunRecord:
    rec = rec or started()
    return runs.claim(rec, Job(kind="start", run_id=rec.run_id, segment=1), "w1", T0).record


def completed() -> RunRecord:
    tr = runs.finish(running(), "w1", "completed", {"output": "done"}, T0)
    assert tr.record.status == "completed" and tr.jobs == []
    return tr.record


def paused() -> RunRecord:
    ap = Approval(
        approval_id="ap_1",
        call_id="c1",
        tool="delete_files",
        arguments="{}",
        agent="Janitor",
        policy=ApprovalPolicy(),
        requested_at="t",
    )
    return runs.pause(running(), "w1", [ap], T0).record


def say(
    rec: RunRecord,
    person: Person,
    text: str = "hello",
    mid: str = "m1",
    policy: TalkPolicy | None = None,
    now: float = T0,
) -> runs.Transition:
    return conversation.say(rec, person, text, mid, policy or TalkPolicy(), now)


def refused(code: str, fn, *args, **kw) -> ProtocolError:  # type: ignore[no-untyped-def]
    with pytest.raises(ProtocolError) as exc:
        fn(*args, **kw)
    assert exc.value.code == code, exc.value.message
    return exc.value


def test_a_message_to_a_completed_run_starts_the_next_turn_with_its_author() -> None:
    rec = completed()
    tr = say(rec, BOB, "and the logs?")
    assert tr.events == [
        (
            "message.said",
            {
                "message_id": "m1",
                "by": {"sub": "bob", "name": "Bob"},
                "text": "and the logs?",
                "at": tr.events[0][1]["at"],
                "queued": False,
            },
        )
    ]
    assert tr.record.status == "resuming" and tr.record.turn == 2
    assert tr.jobs == [Job(kind="turn", run_id="run_1", segment=2)]
    claimed = runs.claim(tr.record, tr.jobs[0], "w2", T0)
    assert claimed.record.status == "running" and claimed.record.owner == "w2"
    assert claimed.events == [("run.resumed", {"decisions": [], "segment": 2, "turn": 2, "messages": ["m1"]})]
    assert conversation.turn_input([{"role": "user", "content": "tidy up"}], claimed.record) == [
        {"role": "user", "content": "tidy up"},
        {"role": "user", "content": "Bob (@bob): and the logs?"},
    ]
    # the same job again (a second worker): refused, so one turn runs once
    refused(ErrorCode.NOT_PENDING, runs.claim, claimed.record, tr.jobs[0], "w3", T0)


def test_two_messages_at_once_one_turn_the_other_queued_then_taken() -> None:
    first = say(completed(), ALICE, "one", "m1")
    second = say(first.record, BOB, "two", "m2")  # the second commit reads the first's record (compare-and-set)
    assert second.jobs == [] and second.result == {"message_id": "m2", "queued": True}
    assert [m["message_id"] for m in second.record.queue] == ["m2"]
    run2 = runs.claim(second.record, first.jobs[0], "w1", T0).record
    done = runs.finish(run2, "w1", "completed", {"output": "x"}, T0)
    assert [t for t, _ in done.events] == ["run.completed"]
    assert done.record.status == "resuming" and done.record.turn == 3 and done.record.queue == []
    assert [m["message_id"] for m in done.record.turn_input] == ["m2"]
    assert done.jobs == [Job(kind="turn", run_id="run_1", segment=3)]


def test_a_message_while_paused_waits_for_the_decision_and_the_turn_to_complete() -> None:
    rec = say(paused(), BOB, "keep the logs").record
    assert rec.status == "paused" and [m["by"]["sub"] for m in rec.queue] == ["bob"]
    decided = runs.decide(rec, "ap_1", Person(sub="ann", name="Ann", roles=["approver"]), "approve", None, False, T0)
    assert decided.jobs == [Job(kind="resume", run_id="run_1", segment=2)]  # the pause's own resume first
    resumed = runs.claim(decided.record, decided.jobs[0], "w1", T0).record
    assert resumed.queue and resumed.turn == 1
    done = runs.finish(resumed, "w1", "completed", {"output": "deleted"}, T0)
    assert done.jobs == [Job(kind="turn", run_id="run_1", segment=3)] and done.record.turn == 2


def test_reject_policy_refuses_a_busy_run_and_changes_nothing() -> None:
    rec = running()
    before = rec.model_dump()
    refused(ErrorCode.BUSY, say, rec, ALICE, policy=TalkPolicy(busy="reject"))
    assert rec.model_dump() == before
    assert say(completed(), ALICE, policy=TalkPolicy(busy="reject")).record.status == "resuming"


def test_interrupt_asks_the_running_segment_to_stop_then_the_next_turn_takes_the_queue() -> None:
    tr = say(running(), BOB, "stop, do X", policy=TalkPolicy(busy="interrupt"))
    assert tr.result["signal"] is True and tr.record.interrupt == {
        "by": {"sub": "bob", "name": "Bob"},
        "message_id": "m1",
    }
    again = say(tr.record, ALICE, "me too", "m2", policy=TalkPolicy(busy="interrupt"))
    assert "signal" not in again.result  # one signal per segment
    out = runs.interrupted(again.record, "w1", T0)
    assert out.events == [("turn.interrupted", {"by": {"sub": "bob", "name": "Bob"}, "segment": 1, "turn": 1})]
    assert out.record.status == "resuming" and out.record.interrupt is None and out.record.turn == 2
    assert [m["message_id"] for m in out.record.turn_input] == ["m1", "m2"]
    # paused: the pause is the safe point; the message is queued, no signal
    p = say(paused(), BOB, policy=TalkPolicy(busy="interrupt"))
    assert "signal" not in p.result and p.record.interrupt is None and p.record.status == "paused"


def test_who_may_talk() -> None:
    rec = completed()
    err = refused(ErrorCode.FORBIDDEN, say, rec, VIEWER)
    assert "operator" in err.message
    assert say(rec, ADMIN).record.status == "resuming"
    starter_viewer = runs.finish(running(started(VIEWER)), "w1", "completed", {}, T0).record
    assert say(starter_viewer, VIEWER).record.status == "resuming"  # the starter may talk to their run
    refused(ErrorCode.FORBIDDEN, say, starter_viewer, VIEWER, policy=TalkPolicy(starter=False))
    wide = TalkPolicy(roles=["viewer"])
    assert say(rec, VIEWER, policy=wide).record.status == "resuming"
    narrow = TalkPolicy(roles=["lead"], starter=False)
    refused(ErrorCode.FORBIDDEN, say, rec, BOB, policy=narrow)


def test_bad_messages_get_stable_codes_and_change_nothing() -> None:
    rec = completed()
    before = rec.model_dump()
    refused(ErrorCode.BAD_REQUEST, say, rec, ALICE, " \n\t")
    err = refused(ErrorCode.TOO_LARGE, say, rec, ALICE, "x" * 4001)
    assert err.detail["max_chars"] == 4000
    assert say(rec, ALICE, "x" * 4000).record.status == "resuming"
    for end in ("failed", "cancelled"):
        ended = runs.finish(running(), "w1", end, {}, T0).record  # type: ignore[arg-type]
        refused(ErrorCode.NOT_PENDING, say, ended, ALICE)
    assert rec.model_dump() == before


def test_a_flood_from_one_person_is_rate_limited_per_run_others_still_talk() -> None:
    policy = TalkPolicy(per_minute=3)
    rec = running()
    for i in range(3):
        rec = say(rec, ALICE, f"m{i}", f"m{i}", policy, now=T0 + i).record
    err = refused(ErrorCode.RATE_LIMITED, say, rec, ALICE, "again", "m9", policy, now=T0 + 10)
    assert err.detail["retry_after_s"] == 50 and err.detail["quota"] == "messages_per_minute"
    rec = say(rec, BOB, "bob", "mb", policy, now=T0 + 10).record  # another person is not limited by Alice
    assert say(rec, ALICE, "later", "ml", policy, now=T0 + 61).record.queue[-1]["message_id"] == "ml"


def test_withdraw_only_by_its_author_only_while_queued() -> None:
    rec = say(paused(), BOB, "oops", "m1").record
    refused(ErrorCode.FORBIDDEN, conversation.withdraw, rec, ALICE, "m1", T0)
    tr = conversation.withdraw(rec, BOB, "m1", T0)
    assert tr.events == [("message.withdrawn", {"message_id": "m1", "by": {"sub": "bob", "name": "Bob"}})]
    assert tr.record.queue == []
    refused(ErrorCode.NOT_PENDING, conversation.withdraw, tr.record, BOB, "m1", T0)
    taken = say(completed(), BOB, "now", "m2").record  # a message that started a turn is not in any queue
    refused(ErrorCode.NOT_PENDING, conversation.withdraw, taken, BOB, "m2", T0)


def test_the_demo_model_answers_a_follow_up_naming_who_said_what() -> None:
    history = [
        {"role": "user", "content": "tidy up"},
        {"role": "assistant", "content": [{"type": "output_text", "text": "Done."}]},
    ]
    first = conversation.model_message({"by": {"sub": "alice", "name": "Alice"}, "text": "thanks"})
    second = conversation.model_message({"by": {"sub": "bob", "name": "Bob"}, "text": "what about logs?"})
    step = follow_up(history + [first, second], [])
    assert step is not None and step.call is None
    assert (
        step.text
        == 'Alice, you said: "thanks". Bob, you said: "what about logs?". So far I have heard from: Alice, Bob.'
    )
    step = follow_up(
        history
        + [conversation.model_message({"by": {"sub": "bob", "name": "Bob"}, "text": "delete scratch/a.txt please"})],
        ["delete_files"],
    )
    assert step is not None and step.call == ("delete_files", {"paths": ["scratch/a.txt"]})
    assert follow_up([{"role": "user", "content": "tidy up"}], ["delete_files"]) is None  # the first turn: the script


# ------------------------------------------------------------------------------------------------ approve with changes

SCHEMA = {
    "type": "object",
    "properties": {"paths": {"type": "array", "items": {"type": "string"}}},
    "required": ["paths"],
    "additionalProperties": False,
}
ANN = Person(sub="ann", name="Ann", roles=["approver"])


def _decide(rec: RunRecord, person: Person, arguments: str | None, decision: str = "approve") -> runs.Transition:
    return runs.decide(
        rec,
        "ap_1",
        person,
        decision,
        None,
        False,
        T0,
        arguments,  # type: ignore[arg-type]
        lambda tool: SCHEMA if tool == "delete_files" else None,
    )


def test_approve_with_changes_keeps_original_approved_and_their_difference() -> None:
    rec = paused()
    rec.approvals["ap_1"].arguments = '{"paths": ["a", "b"]}'
    tr = _decide(rec, ANN, '{"paths": ["a"]}')
    d = tr.events[0][1]
    assert (d["arguments"], d["original_arguments"]) == ('{"paths":["a"]}', '{"paths": ["a", "b"]}')
    assert d["changes"] == [{"key": "paths", "from": ["a", "b"], "to": ["a"]}]
    assert tr.record.approvals["ap_1"].approved_arguments == '{"paths":["a"]}'
    assert tr.record.approvals["ap_1"].votes[0].arguments == '{"paths":["a"]}'
    assert tr.record.status == "resuming"


def test_bad_edits_are_refused_and_change_nothing() -> None:
    rec = paused()
    before = rec.model_dump()
    for bad, code in [
        ('{"paths": "a"}', ErrorCode.INVALID_ARGUMENTS),
        ('{"paths": ["a"], "x": 1}', ErrorCode.INVALID_ARGUMENTS),
        ("not json", ErrorCode.INVALID_ARGUMENTS),
        ("[1]", ErrorCode.INVALID_ARGUMENTS),
    ]:
        refused(code, _decide, rec, ANN, bad)
    refused(ErrorCode.FORBIDDEN, _decide, rec, VIEWER, '{"paths": ["a"]}')  # may not decide: forbidden before anything
    assert _decide(rec, ANN, '{"paths": 1}', "reject").record.approvals["ap_1"].approved_arguments is None  # ignored
    rec.approvals["ap_1"].tool = "mystery"  # no schema known: no edit
    refused(ErrorCode.INVALID_ARGUMENTS, _decide, rec, ANN, '{"paths": ["a"]}')
    rec.approvals["ap_1"].tool = "delete_files"
    assert rec.model_dump() == before
    rec.approvals["ap_1"].policy = ApprovalPolicy(quorum=2)
    refused(ErrorCode.BAD_REQUEST, _decide, rec, ANN, '{"paths": ["a"]}')
