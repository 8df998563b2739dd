"""Approval rules as plain code: who may vote, quorum, self-approval, expiry, first decision wins.

An approval is settled by its first `reject` vote (a veto: fail closed), by `quorum` approve votes from distinct
people, by expiry (auto-reject), or by a cancel of the run. Once settled it never changes again.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, Field

from .protocol import ErrorCode, ProtocolError, now_iso

ADMIN = "admin"
DEFAULT_APPROVER_ROLES = ("approver",)
EXPIRED_REASON = "The approval expired before anyone decided; it was rejected automatically."


class ApprovalPolicy(BaseModel):
    """Per-tool approval policy, named in an agents module."""

    roles: list[str] = Field(default_factory=lambda: list(DEFAULT_APPROVER_ROLES))  # admin may always decide
    quorum: int = Field(default=1, ge=1)
    allow_self: bool = True  # may the person who started the run approve its calls?
    # does the starter's approval count towards the quorum? False: `quorum` people besides the starter must approve
    count_starter: bool = True
    expires_s: float | None = Field(default=None, gt=0)
    # people (subs) asked to review this tool's calls: their inbox says "review requested"; others may still decide
    reviewers: list[str] = Field(default_factory=list)
    # webhooks for this tool's approval events: URLs or {url, events, format} (webhooks.py); never stored or shown
    notify: list[str | dict[str, Any]] = Field(default_factory=list, exclude=True)

    def wire(self) -> dict[str, Any]:
        return {
            "roles": self.roles,
            "quorum": self.quorum,
            "allow_self": self.allow_self,
            "count_starter": self.count_starter,
        }


class Person(BaseModel):
    sub: str
    name: str
    roles: list[str] = Field(default_factory=list)

    def ref(self) -> dict[str, str]:
        return {"sub": self.sub, "name": self.name}


class Vote(BaseModel):
    sub: str
    name: str
    roles: list[str] = Field(default_factory=list)  # the roles the voter's token carried (for the audit record)
    decision: Literal["approve", "reject"]
    reason: str | None = None
    always: bool = False
    at: str
    arguments: str | None = None  # approve with changes: the edited arguments this vote approved
    counted: bool = True  # false: the run's starter, under a policy with count_starter=False (not towards the quorum)


class Approval(BaseModel):
    approval_id: str
    call_id: str
    tool: str
    arguments: str
    agent: str | None
    policy: ApprovalPolicy
    description: str | None = None  # the tool's own description, as the agent's code declares it
    requested_at: str
    expires_at: float | None = None  # epoch seconds, server clock
    status: Literal["pending", "approved", "rejected", "cancelled"] = "pending"
    votes: list[Vote] = Field(default_factory=list)
    decided: dict[str, Any] | None = None  # the approval.decided data, once settled
    reviewers: list[str] = Field(default_factory=list)  # subs asked to review it (the run's and the policy's)
    approved_arguments: str | None = None  # approved with changes: what the tool runs with (`arguments` is the model's)
    settled_at: str | None = None  # when it was cancelled (a decision's time is in `decided`): the audit index's time

    @property
    def settled(self) -> bool:
        return self.status != "pending"

    def tally(self) -> dict[str, int]:
        return {
            "approve": sum(v.decision == "approve" and v.counted for v in self.votes),
            "reject": sum(v.decision == "reject" for v in self.votes),
            "needed": self.policy.quorum,
        }

    def requested_data(self) -> dict[str, Any]:
        return {
            "approval_id": self.approval_id,
            "call_id": self.call_id,
            "tool": self.tool,
            "arguments": self.arguments,
            "agent": self.agent,
            "description": self.description,
            "policy": self.policy.wire(),
            "expires_at": now_iso(self.expires_at) if self.expires_at is not None else None,
            "reviewers": list(self.reviewers),
        }


def may_decide(person: Person, policy: ApprovalPolicy) -> bool:
    return ADMIN in person.roles or any(r in person.roles for r in policy.roles)


def check_role(ap: Approval, person: Person) -> None:
    if not may_decide(person, ap.policy):
        raise ProtocolError(
            ErrorCode.FORBIDDEN,
            f"{ap.tool} may be approved only by roles {', '.join(ap.policy.roles)} (or admin); "
            f"you have {', '.join(person.roles) or 'none'}",
        )


def _winner_detail(ap: Approval) -> dict[str, Any]:
    d = ap.decided or {}
    return {
        "approval_id": ap.approval_id,
        "decision": d.get("decision") or ap.status,
        "by": d.get("by"),
        "decided_at": d.get("decided_at"),
    }


def vote(
    ap: Approval,
    person: Person,
    decision: Literal["approve", "reject"],
    reason: str | None,
    always: bool,
    now: float,
    started_by: str | None,
    arguments: str | None = None,
) -> tuple[str, list[tuple[str, dict[str, Any]]]]:
    """Apply one vote in place. Returns the outcome (`decided` or `voted`) and the events to log.

    Raises ProtocolError: forbidden, already_decided (naming the winner), not_pending, expired.
    The caller handles `expired` by settling the approval with `expire()`.
    """
    check_role(ap, person)
    if ap.status == "cancelled":
        raise ProtocolError(
            ErrorCode.NOT_PENDING, f"approval {ap.approval_id} was cancelled with its run", approval_id=ap.approval_id
        )
    if ap.settled:
        d = ap.decided or {}
        who = (d.get("by") or {}).get("name") or (d.get("by") or {}).get("policy") or "someone"
        raise ProtocolError(
            ErrorCode.ALREADY_DECIDED,
            f"approval {ap.approval_id} was already decided: {d.get('decision')} by {who}",
            winner=_winner_detail(ap),
        )
    if not ap.policy.allow_self and started_by == person.sub:
        raise ProtocolError(
            ErrorCode.FORBIDDEN, f"{ap.tool} needs someone other than the person who started the run to approve it"
        )
    if any(v.sub == person.sub for v in ap.votes):
        raise ProtocolError(
            ErrorCode.FORBIDDEN, f"you already voted on {ap.approval_id}; it needs {ap.policy.quorum} different people"
        )
    if ap.expires_at is not None and now >= ap.expires_at:
        raise ProtocolError(ErrorCode.EXPIRED, f"approval {ap.approval_id} expired at {now_iso(ap.expires_at)}")
    at = now_iso(now)
    counted = ap.policy.count_starter or started_by != person.sub
    ap.votes.append(
        Vote(
            sub=person.sub,
            name=person.name,
            roles=list(person.roles),
            decision=decision,
            reason=reason,
            always=always,
            at=at,
            counted=counted,
            arguments=arguments,
        )
    )
    tally = ap.tally()
    if decision == "reject" or tally["approve"] >= ap.policy.quorum:
        ap.status = "approved" if decision == "approve" else "rejected"
        ap.decided = {
            "approval_id": ap.approval_id,
            "call_id": ap.call_id,
            "decision": decision,
            "by": person.ref(),
            "reason": reason,
            "always": always,
            "decided_at": at,
            "tool": ap.tool,
            "arguments": ap.arguments,  # what exactly was approved
            "tally": tally,
        }
        if arguments is not None and decision == "approve":
            ap.approved_arguments = arguments
            ap.decided |= {
                "arguments": arguments,
                "original_arguments": ap.arguments,
                "changes": changes(ap.arguments, arguments),
            }
        if ap.policy.quorum > 1:
            ap.decided["voters"] = [{"sub": v.sub, "name": v.name, "decision": v.decision} for v in ap.votes]
        return "decided", [("approval.decided", dict(ap.decided))]
    data: dict[str, Any] = {
        "approval_id": ap.approval_id,
        "by": person.ref(),
        "decision": decision,
        "reason": reason,
        "tally": tally,
    }
    if not counted:
        data["counted"] = False
    return "voted", [("approval.voted", data)]


def expire(ap: Approval, now: float) -> list[tuple[str, dict[str, Any]]]:
    """Settle an overdue approval as rejected by policy."""
    if ap.settled or ap.expires_at is None or now < ap.expires_at:
        return []
    at = now_iso(now)
    ap.status = "rejected"
    ap.decided = {
        "approval_id": ap.approval_id,
        "call_id": ap.call_id,
        "decision": "reject",
        "by": {"policy": "expired"},
        "reason": EXPIRED_REASON,
        "always": False,
        "decided_at": at,
        "tool": ap.tool,
        "arguments": ap.arguments,
        "tally": ap.tally(),
    }
    return [("approval.expired", {"approval_id": ap.approval_id}), ("approval.decided", dict(ap.decided))]


def cancel(ap: Approval) -> list[tuple[str, dict[str, Any]]]:
    if ap.settled:
        return []
    ap.status = "cancelled"
    ap.settled_at = now_iso()
    return [("approval.cancelled", {"approval_id": ap.approval_id})]


def changes(original: str, edited: str) -> list[dict[str, Any]]:
    """The difference of two argument objects, key by key: [{key, from, to}] (a missing key is null), sorted by key."""
    try:
        a = json.loads(original) if original else {}
    except ValueError:
        a = {}
    b = json.loads(edited)
    a = a if isinstance(a, dict) else {}
    return [{"key": k, "from": a.get(k), "to": b.get(k)} for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
