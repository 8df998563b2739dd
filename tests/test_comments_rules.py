"""Comments as plain code (comments.py, runs.comment...): threads, mentions, edit and delete with their trace,
resolve and reopen, and every refusal leaving the record as it was."""

from __future__ import annotations

import pytest

from runcast import comments, runs
from runcast.approvals import ApprovalPolicy, Person
from runcast.protocol import ErrorCode, ProtocolError, parse_command
from test_rules import ADA, BOB, ROOT, T0, VIC, paused_run

MARIA = Person(sub="maria", name="Maria Lopez", roles=["approver"])
PEOPLE = [ADA.ref(), BOB.ref(), MARIA.ref(), VIC.ref()]


def refused(fn, *args) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        fn(*args)
    return info.value


def say(rec, person, text, approval_id=None, reply_to=None, now=T0):
    return runs.comment(rec, person, text, approval_id, reply_to, PEOPLE, now)


def test_a_comment_on_an_approval_joins_its_thread_and_replies_stay_in_it():
    rec = paused_run(ApprovalPolicy())
    tr = say(rec, VIC, "wait, is build-cache.tar still used?", "ap_0")
    assert [t for t, _ in tr.events] == ["comment.added"]
    data = tr.events[0][1]
    assert data["by"] == {"sub": "vic", "name": "Vic"} and data["approval_id"] == "ap_0" and data["thread_id"] == "ap_0"
    assert data["text"] == "wait, is build-cache.tar still used?" and data["mentions"] == []
    assert tr.record.status == rec.status == "paused" and tr.jobs == []
    cid = tr.result["comment_id"]
    reply = say(tr.record, BOB, "no, it can go", reply_to=cid)
    assert reply.events[0][1]["thread_id"] == "ap_0" and reply.events[0][1]["approval_id"] == "ap_0"
    assert reply.record.threads["ap_0"].comments == 2
    # a comment on the run starts its own thread; a reply to it joins that one
    top = say(reply.record, ADA, "looks fine")
    assert top.result["thread_id"] == top.result["comment_id"]
    r2 = say(top.record, BOB, "agreed", reply_to=top.result["comment_id"])
    assert r2.result["thread_id"] == top.result["comment_id"]
    # the record keeps no text: only the metadata
    assert "text" not in r2.record.comments[cid].model_dump()
    # a comment after the run ended is still taken (the discussion outlives the decision)
    assert say(r2.record.model_copy(update={"status": "completed"}), VIC, "post-mortem").events


def test_mentions_are_resolved_by_sub_or_name_and_each_person_gets_one_event():
    rec = paused_run(ApprovalPolicy())
    tr = say(rec, BOB, "@MariaLopez this one is yours (cc @ada, @maria again); mail bob@example.com", "ap_0")
    kinds = [t for t, _ in tr.events]
    assert kinds == ["comment.added", "comment.mention", "comment.mention"]
    assert tr.events[0][1]["mentions"] == [{"sub": "maria", "name": "Maria Lopez"}, {"sub": "ada", "name": "Ada"}]
    assert [d["mentioned"]["sub"] for _, d in tr.events[1:]] == ["maria", "ada"]
    assert [m["sub"] for m in tr.record.mentions] == ["maria", "ada"]
    assert tr.record.mentions[0]["approval_id"] == "ap_0" and tr.record.mentions[0]["by"] == {
        "sub": "bob",
        "name": "Bob",
    }
    # mentioning yourself logs no mention
    assert [t for t, _ in say(rec, BOB, "note to @bob").events] == ["comment.added"]


def test_a_mention_of_nobody_is_refused_and_nothing_changes():
    rec = paused_run(ApprovalPolicy())
    before = rec.model_dump()
    err = refused(say, rec, BOB, "@nobody and @maria look", "ap_0")
    assert err.code == ErrorCode.BAD_REQUEST and err.detail["unknown_mentions"] == ["@nobody"]
    assert err.detail["field"] == "text"
    assert rec.model_dump() == before


def test_bad_comments_get_stable_codes():
    rec = paused_run(ApprovalPolicy())
    before = rec.model_dump()
    assert refused(say, rec, BOB, "hi", "ap_nope").code == ErrorCode.NOT_FOUND
    assert refused(say, rec, BOB, "hi", None, "c_nope").code == ErrorCode.NOT_FOUND
    assert refused(say, rec, BOB, "   ").code == ErrorCode.BAD_REQUEST
    big = refused(say, rec, BOB, "x" * (comments.MAX_COMMENT + 1))
    assert big.code == ErrorCode.TOO_LARGE and big.detail["limit"] == comments.MAX_COMMENT
    assert rec.model_dump() == before


def test_a_comment_flood_is_refused_until_the_window_passes():
    rec = paused_run(ApprovalPolicy())
    for i in range(comments.FLOOD_MAX):
        rec = say(rec, BOB, f"#{i}", now=T0 + i).record
    before = rec.model_dump()
    err = refused(say, rec, BOB, "one more", None, None, T0 + 20)
    assert err.code == ErrorCode.RATE_LIMITED and err.detail["retry_after_s"] > 0
    assert rec.model_dump() == before
    assert say(rec, ADA, "someone else may", now=T0 + 20).events  # per person
    assert say(rec, BOB, "later", now=T0 + comments.FLOOD_WINDOW_S + 1).events


def test_edit_and_delete_by_the_author_only_and_the_log_keeps_both():
    rec = paused_run(ApprovalPolicy())
    tr = say(rec, BOB, "first take", "ap_0")
    cid = tr.result["comment_id"]
    assert refused(runs.edit_comment, tr.record, ADA, cid, "hijack", PEOPLE, T0).code == ErrorCode.FORBIDDEN
    assert refused(runs.delete_comment, tr.record, ADA, cid, T0).code == ErrorCode.FORBIDDEN
    ed = runs.edit_comment(tr.record, BOB, cid, "second take, @maria?", PEOPLE, T0 + 1)
    assert [t for t, _ in ed.events] == ["comment.edited", "comment.mention"]
    assert ed.events[0][1]["text"] == "second take, @maria?" and ed.events[0][1]["edits"] == 1
    # an edit that keeps the same mention does not notify again
    ed2 = runs.edit_comment(ed.record, BOB, cid, "third take, @maria?", PEOPLE, T0 + 2)
    assert [t for t, _ in ed2.events] == ["comment.edited"]
    de = runs.delete_comment(ed2.record, BOB, cid, T0 + 3)
    assert de.events == [
        (
            "comment.deleted",
            {"comment_id": cid, "thread_id": "ap_0", "approval_id": "ap_0", "by": {"sub": "bob", "name": "Bob"}},
        )
    ]
    assert de.record.comments[cid].deleted
    assert refused(runs.edit_comment, de.record, BOB, cid, "zombie", PEOPLE, T0).code == ErrorCode.NOT_FOUND
    assert refused(runs.delete_comment, de.record, BOB, cid, T0).code == ErrorCode.NOT_FOUND
    # an admin may delete someone else's comment (moderation), not edit it
    other = say(de.record, VIC, "spam")
    vid = other.result["comment_id"]
    assert refused(runs.edit_comment, other.record, ROOT, vid, "x", PEOPLE, T0).code == ErrorCode.FORBIDDEN
    assert runs.delete_comment(other.record, ROOT, vid, T0).events[0][1]["by"]["sub"] == "root"


def test_resolve_and_reopen_a_thread():
    rec = paused_run(ApprovalPolicy())
    rec = say(rec, VIC, "question", "ap_0").record
    assert refused(runs.resolve_thread, rec, BOB, "t_nope", True, T0).code == ErrorCode.NOT_FOUND
    res = runs.resolve_thread(rec, BOB, "ap_0", True, T0)
    assert res.events == [("thread.resolved", {"thread_id": "ap_0", "approval_id": "ap_0", "by": BOB.ref()})]
    assert runs.resolve_thread(res.record, BOB, "ap_0", True, T0) is None  # already resolved: nothing to log
    again = runs.resolve_thread(res.record, VIC, "ap_0", False, T0)
    assert [t for t, _ in again.events] == ["thread.reopened"] and not again.record.threads["ap_0"].resolved


def test_the_comment_commands_parse_and_bound_their_fields():
    cmd = parse_command({"type": "comment", "run_id": "r", "text": "hi", "approval_id": "ap_0"})
    assert cmd.approval_id == "ap_0" and cmd.reply_to is None
    assert parse_command({"type": "resolve_thread", "run_id": "r", "thread_id": "t"}).resolved is True
    for bad in (
        {"type": "comment", "run_id": "r"},
        {"type": "comment", "run_id": "r", "text": 5},
        {"type": "edit_comment", "run_id": "r", "text": "x"},
        {"type": "delete_comment", "run_id": "r"},
    ):
        with pytest.raises(ProtocolError) as info:
            parse_command(bad)
        assert info.value.code == ErrorCode.BAD_REQUEST


def test_a_mention_goes_out_through_webhooks_as_its_own_event_type():
    from runcast import webhooks

    assert "comment.mention" in webhooks.EVENTS and webhooks.endpoint(
        {"url": "http://x", "events": ["comment.mention"]}
    )
    rec = paused_run(ApprovalPolicy())
    tr = say(rec, BOB, "@maria <b>look</b>", "ap_0")
    t, data = tr.events[1]
    body = webhooks.payload(
        {"run_id": "run_1", "seq": 9, "ts": "2026-01-01T00:00:00Z", "type": t, "data": data},
        tr.record,
        "https://hub.example",
    )
    assert body["type"] == "comment.mention" and body["data"]["event"]["mentioned"] == {
        "sub": "maria",
        "name": "Maria Lopez",
    }
    assert body["data"]["approval"]["url"] == "https://hub.example/#run=run_1&approval=ap_0"
    msg = webhooks.slack(body)
    assert msg["blocks"][0]["text"]["text"] == "Maria Lopez was mentioned by Bob"
    assert any("&lt;b&gt;look&lt;/b&gt;" in (b.get("text") or {}).get("text", "") for b in msg["blocks"])


def test_requested_reviewers_are_marked_on_each_approval_and_others_may_still_decide():
    from runcast import feed
    from runcast.approvals import Approval
    from runcast.runs import Job

    rec = runs.new_run("run_1", "demo", "hi", ADA, T0, reviewers=["maria", "maria", "bob"]).record
    assert rec.reviewers == ["maria", "bob"]
    rec = runs.claim(rec, Job(kind="start", run_id="run_1", segment=1), "w1", T0).record
    aps = [
        Approval(
            approval_id="ap_0",
            call_id="c0",
            tool="delete_files",
            arguments="{}",
            agent="Janitor",
            policy=ApprovalPolicy(reviewers=["carol"]),
            requested_at="t",
        )
    ]
    tr = runs.pause(rec, "w1", aps, T0)
    assert [t for t, _ in tr.events] == ["approval.requested", "approval.review_requested", "run.paused"]
    assert tr.events[0][1]["reviewers"] == ["maria", "bob", "carol"]
    assert tr.events[1][1] == {
        "approval_id": "ap_0",
        "tool": "delete_files",
        "reviewers": ["maria", "bob", "carol"],
        "by": ADA.ref(),
    }

    class Who:
        def __init__(self, p: Person) -> None:
            self.sub, self.name, self.roles = p.sub, p.name, tuple(p.roles)

        def can_see(self, run_id: str) -> bool:
            return True

    e = feed.entry(tr.record)
    assert [i.get("review_requested") for i in feed.inbox_of(Who(MARIA), [e])] == [True]
    carol = Person(sub="carol", name="Carol", roles=["approver"])
    dave = Person(sub="dave", name="Dave", roles=["approver"])
    assert [i.get("review_requested") for i in feed.inbox_of(Who(carol), [e])] == [True]
    assert [i.get("review_requested") for i in feed.inbox_of(Who(dave), [e])] == [None]  # still there, still decides
    assert runs.decide(tr.record, "ap_0", dave, "approve", None, False, T0).result["outcome"] == "decided"
    # too many reviewers is refused before anything is made
    assert (
        refused(runs.new_run, "run_2", "demo", "hi", ADA, T0, [f"p{i}" for i in range(11)]).code
        == ErrorCode.BAD_REQUEST
    )
