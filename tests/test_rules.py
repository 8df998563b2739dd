"""Approval rules and the run state machine as plain code: roles, quorum, self-approval, expiry, first decision
wins, cancel beats approve."""

import pytest

from runcast import runs
from runcast.approvals import Approval, ApprovalPolicy, Person
from runcast.protocol import ErrorCode, ProtocolError
from runcast.runs import Job

T0 = 1_000_000.0
ADA = Person(sub="ada", name="Ada", roles=["operator"])
BOB = Person(sub="bob", name="Bob", roles=["approver"])
CAROL = Person(sub="carol", name="Carol", roles=["approver"])
VIC = Person(sub="vic", name="Vic", roles=["viewer"])
ROOT = Person(sub="root", name="Root", roles=["admin"])


def paused_run(*policies: ApprovalPolicy, starter: Person = ADA):
    rec = runs.new_run("run_1", "demo", "hi", starter, T0).record
    rec = runs.claim(rec, Job(kind="start", run_id="run_1", segment=1), "w1", T0).record
    aps = [
        Approval(
            approval_id=f"ap_{i}",
            call_id=f"call_{i}",
            tool="delete_files",
            arguments="{}",
            agent="Janitor",
            policy=p,
            requested_at="t",
            expires_at=T0 + p.expires_s if p.expires_s else None,
        )
        for i, p in enumerate(policies)
    ]
    tr = runs.pause(rec, "w1", aps, T0)
    assert [t for t, _ in tr.events] == ["approval.requested"] * len(aps) + ["run.paused"]
    return tr.record


def refused(fn, *args):
    with pytest.raises(ProtocolError) as info:
        fn(*args)
    return info.value


def test_viewer_cannot_decide_and_nothing_changes():
    rec = paused_run(ApprovalPolicy())
    err = refused(runs.decide, rec, "ap_0", VIC, "approve", None, False, T0)
    assert err.code == ErrorCode.FORBIDDEN
    assert rec.approvals["ap_0"].status == "pending" and rec.approvals["ap_0"].votes == []


def test_first_decision_wins_and_loser_learns_the_winner():
    rec = paused_run(ApprovalPolicy())
    tr = runs.decide(rec, "ap_0", BOB, "approve", "fine", False, T0 + 1)
    assert tr.result["outcome"] == "decided" and [t for t, _ in tr.events] == ["approval.decided"]
    assert tr.record.status == "resuming" and tr.jobs == [Job(kind="resume", run_id="run_1", segment=2)]
    decided = tr.events[0][1]
    assert (
        decided["by"] == {"sub": "bob", "name": "Bob"} and decided["reason"] == "fine" and decided["arguments"] == "{}"
    )
    err = refused(runs.decide, tr.record, "ap_0", CAROL, "reject", None, False, T0 + 2)
    assert err.code == ErrorCode.ALREADY_DECIDED
    assert err.detail["winner"]["by"]["name"] == "Bob" and "Bob" in err.message


def test_quorum_needs_distinct_people_and_a_reject_vetoes():
    rec = paused_run(ApprovalPolicy(quorum=2))
    tr = runs.decide(rec, "ap_0", BOB, "approve", None, False, T0)
    assert tr.result["outcome"] == "voted" and tr.events[0][0] == "approval.voted"
    assert tr.events[0][1]["tally"] == {"approve": 1, "reject": 0, "needed": 2}
    assert refused(runs.decide, tr.record, "ap_0", BOB, "approve", None, False, T0).code == ErrorCode.FORBIDDEN
    tr2 = runs.decide(tr.record, "ap_0", CAROL, "approve", None, False, T0)
    assert tr2.result["outcome"] == "decided" and tr2.record.status == "resuming"
    assert [v["sub"] for v in tr2.events[0][1]["voters"]] == ["bob", "carol"]
    veto = runs.decide(tr.record, "ap_0", CAROL, "reject", "no", False, T0)
    assert veto.record.approvals["ap_0"].status == "rejected" and veto.record.status == "resuming"


def test_self_approval_refused_when_policy_says_so_but_admin_role_still_needs_to_be_someone_else():
    rec = paused_run(ApprovalPolicy(allow_self=False), starter=ROOT)
    assert refused(runs.decide, rec, "ap_0", ROOT, "approve", None, False, T0).code == ErrorCode.FORBIDDEN
    assert runs.decide(rec, "ap_0", BOB, "approve", None, False, T0).result["outcome"] == "decided"


def test_admin_may_decide_any_role():
    rec = paused_run(ApprovalPolicy(roles=["finance"]))
    assert refused(runs.decide, rec, "ap_0", BOB, "approve", None, False, T0).code == ErrorCode.FORBIDDEN
    assert runs.decide(rec, "ap_0", ROOT, "approve", None, False, T0).result["outcome"] == "decided"


def test_resume_waits_for_every_approval_of_the_pause():
    rec = paused_run(ApprovalPolicy(), ApprovalPolicy())
    tr = runs.decide(rec, "ap_0", BOB, "approve", None, False, T0)
    assert tr.record.status == "paused" and tr.jobs == []
    tr = runs.decide(tr.record, "ap_1", BOB, "reject", "no", True, T0)
    assert tr.record.status == "resuming" and len(tr.jobs) == 1
    claim = runs.claim(tr.record, tr.jobs[0], "w2", T0)
    ((kind, data),) = claim.events
    assert kind == "run.resumed" and [d["decision"] for d in data["decisions"]] == ["approve", "reject"]
    assert data["decisions"][1]["always"] is True
    assert refused(runs.claim, claim.record, tr.jobs[0], "w3", T0).code == ErrorCode.NOT_PENDING  # exactly one resume


def test_expiry_auto_rejects_and_a_late_vote_is_told_so():
    rec = paused_run(ApprovalPolicy(expires_s=30))
    assert runs.expire_due(rec, T0 + 10) is None
    assert rec.deadline() == T0 + 30
    late = runs.decide(rec, "ap_0", BOB, "approve", None, False, T0 + 31)
    assert late.error is not None and late.error.code == ErrorCode.EXPIRED
    assert [t for t, _ in late.events] == ["approval.expired", "approval.decided"]
    assert late.events[1][1]["by"] == {"policy": "expired"} and late.events[1][1]["decision"] == "reject"
    assert late.record.status == "resuming"
    swept = runs.expire_due(rec, T0 + 31)
    assert swept is not None and swept.record.approvals["ap_0"].status == "rejected"


def test_cancel_beats_approve():
    rec = paused_run(ApprovalPolicy())
    tr = runs.cancel(rec, ADA, "immediate", T0)
    assert [t for t, _ in tr.events] == ["approval.cancelled", "run.cancelled"] and tr.record.status == "cancelled"
    assert refused(runs.decide, tr.record, "ap_0", BOB, "approve", None, False, T0).code == ErrorCode.NOT_PENDING
    # decided but not yet resumed: a cancel still wins, and the resume job finds nothing to claim
    decided = runs.decide(rec, "ap_0", BOB, "approve", None, False, T0)
    cancelled = runs.cancel(decided.record, ADA, "immediate", T0)
    assert cancelled.record.status == "cancelled" and [t for t, _ in cancelled.events] == ["run.cancelled"]
    assert refused(runs.claim, cancelled.record, decided.jobs[0], "w", T0).code == ErrorCode.NOT_PENDING


def test_cancel_while_running_is_a_request_the_pause_honours():
    rec = runs.new_run("run_1", "demo", "hi", ADA, T0).record
    rec = runs.claim(rec, Job(kind="start", run_id="run_1", segment=1), "w1", T0).record
    tr = runs.cancel(rec, ADA, "after_turn", T0)
    assert tr.events == [] and tr.result == {"signal": True, "mode": "after_turn"} and tr.record.status == "running"
    ap = Approval(
        approval_id="ap", call_id="c", tool="t", arguments="{}", agent="A", policy=ApprovalPolicy(), requested_at="t"
    )
    ended = runs.pause(tr.record, "w1", [ap], T0)
    assert ended.record.status == "cancelled" and [t for t, _ in ended.events] == ["run.cancelled"]
    assert ended.events[0][1] == {"by": {"sub": "ada", "name": "Ada"}, "mode": "after_turn"}


def test_worker_lost_only_after_the_lease():
    rec = runs.new_run("run_1", "demo", "hi", ADA, T0).record
    rec = runs.claim(rec, Job(kind="start", run_id="run_1", segment=1), "w1", T0, lease_s=5).record
    assert runs.worker_lost(rec, T0 + 4) is None
    tr = runs.worker_lost(rec, T0 + 6)
    assert tr.record.status == "failed" and tr.events == [("run.failed", tr.record.error)]
    assert tr.record.error["code"] == "worker_lost"
    assert refused(runs.finish, tr.record, "w1", "completed", {}, T0).code == ErrorCode.NOT_PENDING


def test_a_policy_may_leave_the_starter_out_of_the_quorum():
    # count_starter=True (the default): the starter's approval is one of the two
    counted = paused_run(ApprovalPolicy(quorum=2), starter=BOB)
    tr = runs.decide(counted, "ap_0", BOB, "approve", None, False, T0)
    assert tr.events[0][1]["tally"]["approve"] == 1
    assert runs.decide(tr.record, "ap_0", CAROL, "approve", None, False, T0).result["outcome"] == "decided"
    # count_starter=False: the starter may vote (it is recorded), but two people besides them must approve
    rec = paused_run(ApprovalPolicy(quorum=2, count_starter=False), starter=BOB)
    assert rec.approvals["ap_0"].policy.wire()["count_starter"] is False
    tr = runs.decide(rec, "ap_0", BOB, "approve", None, False, T0)
    assert tr.result["outcome"] == "voted"
    assert tr.events[0][1]["tally"] == {"approve": 0, "reject": 0, "needed": 2} and tr.events[0][1]["counted"] is False
    tr = runs.decide(tr.record, "ap_0", CAROL, "approve", None, False, T0)
    assert tr.result["outcome"] == "voted" and tr.events[0][1]["tally"]["approve"] == 1
    tr = runs.decide(tr.record, "ap_0", ROOT, "approve", None, False, T0)
    assert tr.result["outcome"] == "decided" and [v["sub"] for v in tr.events[0][1]["voters"]] == [
        "bob",
        "carol",
        "root",
    ]
    # the starter's reject still vetoes (it is a vote, only not counted towards approving)
    veto = runs.decide(rec, "ap_0", BOB, "reject", "no", False, T0)
    assert veto.record.approvals["ap_0"].status == "rejected"
