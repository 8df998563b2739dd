"""Deciding from Slack: the Block Kit approval message with Approve and Reject buttons, and the hub's Slack
interactivity endpoint (`POST /api/slack/interactivity`).

A press comes back as Slack's `block_actions` payload (form field `payload`, JSON), signed with the app's signing
secret: `X-Slack-Signature: v0=<hex HMAC-SHA256 of "v0:<timestamp>:<body>">` and `X-Slack-Request-Timestamp`.
`slack_sdk.signature.SignatureVerifier` checks it and refuses a timestamp more than five minutes from now; this node
also refuses a signature it already took within those five minutes (a replay). The Slack user is mapped to a
Runcast person through the directory (`RUNCAST_PEOPLE`, a JSON list of {sub, name, roles, email?, slack_user_id?}),
and the press is a `decide` with that person's roles: the same policy as the page. A refusal (no such person, a role
that may not decide, already decided) is answered to the presser only, with the reason (`response_type:
ephemeral`); nothing changes.

Configuration (environment): RUNCAST_SLACK_SIGNING_SECRET (the endpoint answers 404 without it), RUNCAST_PEOPLE.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from slack_sdk.signature import SignatureVerifier

from .approvals import ApprovalPolicy, may_decide
from .auth import Identity
from .protocol import ErrorCode, ProtocolError

MAX_AGE_S = 300  # Slack's own rule (SignatureVerifier): a request older (or newer) than this is refused
MAX_BODY = 64 * 1024
ACTIONS = {"runcast_approve": "approve", "runcast_reject": "reject"}


# ------------------------------------------------------------------------------------------------ the directory


@dataclass(frozen=True)
class Person:
    sub: str
    name: str
    roles: tuple[str, ...]
    email: str | None = None
    slack_user_id: str | None = None


@dataclass
class Directory:
    """The people this hub knows by more than a token: who a Slack user is, and who may be @mentioned as a decider."""

    people: list[Person] = field(default_factory=list)

    @classmethod
    def load(cls, path: str | Path) -> Directory:
        raw = json.loads(Path(path).read_text())
        if not isinstance(raw, list):
            raise ValueError(f"{path}: a JSON list of people ({{sub, name, roles, email, slack_user_id}})")
        out = []
        for p in raw:
            if not isinstance(p, dict) or not isinstance(p.get("sub"), str):
                raise ValueError(f"{path}: every person needs a sub: {p!r}")
            out.append(
                Person(
                    sub=p["sub"],
                    name=str(p.get("name") or p["sub"]),
                    roles=tuple(p.get("roles") or ()),
                    email=p.get("email"),
                    slack_user_id=p.get("slack_user_id"),
                )
            )
        return cls(out)

    @classmethod
    def from_env(cls) -> Directory | None:
        path = os.environ.get("RUNCAST_PEOPLE")
        return cls.load(path) if path else None

    def by_slack(self, user_id: str | None, email: str | None = None) -> Person | None:
        for p in self.people:
            if user_id and p.slack_user_id == user_id:
                return p
        if email:
            for p in self.people:
                if p.email and p.email.lower() == email.lower():
                    return p
        return None

    def deciders(self, policies: Iterable[ApprovalPolicy]) -> list[dict[str, str]]:
        """People who may decide at least one of these policies (for @mention completion)."""
        from .approvals import Person as Voter

        pols = list(policies)
        return [
            {"sub": p.sub, "name": p.name}
            for p in self.people
            if any(may_decide(Voter(sub=p.sub, name=p.name, roles=list(p.roles)), pol) for pol in pols)
        ]


# ------------------------------------------------------------------------------------------------ the message


def deadline_words(expires_at: str | None, now: float | None = None) -> str:
    """ "in 4 minutes (12:05 UTC, 7 Dec)", "expired", or "no deadline"."""
    if not expires_at:
        return "no deadline"
    at = datetime.fromisoformat(expires_at.replace("Z", "+00:00"))
    left = at.timestamp() - (time.time() if now is None else now)
    if left <= 0:
        return "expired"
    mins = int(left // 60)
    span = (
        f"{int(left)} seconds"
        if left < 60
        else f"{mins} minute{'s' if mins != 1 else ''}"
        if mins < 120
        else f"{mins // 60} hours"
    )
    return f"in {span} ({at.astimezone(UTC):%H:%M} UTC, {at.day} {at:%b})"


def slack_escape(text: Any) -> str:
    """Text for any Slack text field (mrkdwn, plain_text, the `text` fallback, a link's URL): Slack's formatting rules
    make &, < and > control characters (`<!channel>` pings, `<http://x|label>` links, `<@U123>` mentions), so each is
    replaced by its HTML entity, which Slack shows as the character itself. Call it on everything from run data or
    people (names, inputs, tool names, reasons) before it goes into a Slack message."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


_esc = slack_escape


def _cut(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def approval_message(
    run: dict[str, Any], ap: dict[str, Any], url: str | None = None, now: float | None = None
) -> dict[str, Any]:
    """The Block Kit message for an open approval: the tool, its description, the arguments, the request, who
    started the run, the deadline in words, and Approve / Reject buttons (their value names run and approval)."""
    starter = (run.get("started_by") or {}).get("name") or (run.get("started_by") or {}).get("sub") or "someone"
    value = json.dumps({"run_id": run["run_id"], "approval_id": ap["approval_id"]}, separators=(",", ":"))
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _cut(f"Approval needed: {ap.get('tool')}", 150)}},
    ]
    if ap.get("description"):
        blocks.append(
            {"type": "section", "text": {"type": "mrkdwn", "text": _cut(f"_{_esc(ap['description'])}_", 3000)}}
        )
    blocks += [
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": f"*Request*\n{_esc(_cut(str(run.get('input') or ''), 500))}"},
                {"type": "mrkdwn", "text": f"*Started by*\n{_esc(starter)}"},
                {"type": "mrkdwn", "text": f"*Agent*\n{_esc(ap.get('agent') or run.get('agent') or '?')}"},
                {"type": "mrkdwn", "text": f"*Deadline*\n{deadline_words(ap.get('expires_at'), now)}"},
            ],
        },
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": _cut(f"*Arguments*\n```{_esc(ap.get('arguments', ''))}```", 3000)},
        },
        {
            "type": "actions",
            "block_id": "runcast_decide",
            "elements": [
                {
                    "type": "button",
                    "action_id": "runcast_approve",
                    "style": "primary",
                    "value": value,
                    "text": {"type": "plain_text", "text": "Approve"},
                },
                {
                    "type": "button",
                    "action_id": "runcast_reject",
                    "style": "danger",
                    "value": value,
                    "text": {"type": "plain_text", "text": "Reject"},
                },
            ],
        },
    ]
    if url:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": f"<{url}|Open the approval>"}]})
    return {"text": f"Approval needed: {ap.get('tool')} (run started by {starter})", "blocks": blocks}


# ------------------------------------------------------------------------------------------------ the endpoint


class Interactivity:
    """Verifies a Slack request and turns a button press into (person, run_id, approval_id, decision)."""

    def __init__(self, signing_secret: str, directory: Directory | None, clock: Any = None) -> None:
        self.verifier = SignatureVerifier(signing_secret, **({"clock": clock} if clock is not None else {}))
        self.directory = directory or Directory()
        self._seen: dict[str, float] = {}  # signatures taken in the last MAX_AGE_S (a replay is refused)

    def verify(self, body: bytes, headers: dict[str, str], now: float | None = None) -> None:
        ts = headers.get("x-slack-request-timestamp")
        sig = headers.get("x-slack-signature")
        if not ts or not sig or not ts.isdigit():
            raise ProtocolError(
                ErrorCode.UNAUTHENTICATED, "not a signed Slack request (X-Slack-Signature, X-Slack-Request-Timestamp)"
            )
        if not self.verifier.is_valid(body, ts, sig):
            raise ProtocolError(
                ErrorCode.UNAUTHENTICATED,
                f"the Slack signature does not match, or its timestamp is more than {MAX_AGE_S} s from now",
            )
        now = time.time() if now is None else now
        for k in [k for k, t in self._seen.items() if now - t > MAX_AGE_S]:
            del self._seen[k]
        if sig in self._seen:
            raise ProtocolError(ErrorCode.UNAUTHENTICATED, "this Slack request was already taken (a replay)")
        self._seen[sig] = now

    def press(self, body: bytes) -> tuple[dict[str, Any], str, str, str]:
        """(payload, run_id, approval_id, decision) of a verified block_actions body, or bad_request."""
        try:
            form = parse_qs(body.decode("utf-8"), strict_parsing=True)
            payload = json.loads(form["payload"][0])
            action = payload["actions"][0]
            decision = ACTIONS[action["action_id"]]
            target = json.loads(action["value"])
            run_id, approval_id = str(target["run_id"]), str(target["approval_id"])
        except (ValueError, KeyError, IndexError, TypeError, UnicodeDecodeError):
            raise ProtocolError(
                ErrorCode.BAD_REQUEST,
                "not a Runcast button press (block_actions with a runcast_approve or runcast_reject action)",
            ) from None
        if payload.get("type") != "block_actions":
            raise ProtocolError(ErrorCode.BAD_REQUEST, "only block_actions payloads are handled")
        return payload, run_id, approval_id, decision

    def identity(self, payload: dict[str, Any], run_id: str) -> Identity:
        """The Runcast person behind the Slack user (by user id, then e-mail), limited to this run."""
        user = payload.get("user") or {}
        p = self.directory.by_slack(user.get("id"), user.get("email"))
        if p is None:
            raise ProtocolError(
                ErrorCode.FORBIDDEN,
                f"Slack user {user.get('id') or '?'} is nobody in Runcast's "
                "directory (RUNCAST_PEOPLE): ask an admin to add your slack_user_id",
            )
        return Identity(sub=p.sub, name=p.name, roles=p.roles, runs=(run_id,), exp=None)


async def respond(response_url: str, message: dict[str, Any]) -> None:
    """Answer the presser through the press's `response_url` (slack_sdk's WebhookClient, in a thread: it is
    synchronous). A Slack that does not answer delays nothing but this request; a failure is logged, not raised."""
    import asyncio
    import logging

    from slack_sdk.webhook import WebhookClient

    try:
        await asyncio.to_thread(WebhookClient(response_url, timeout=5).send_dict, message)
    except Exception as exc:
        logging.getLogger("runcast.slack").warning("answering Slack's response_url failed: %s", exc)


def refusal(err: ProtocolError) -> dict[str, Any]:
    """What the presser alone sees in Slack when a press is refused."""
    return {"response_type": "ephemeral", "replace_original": False, "text": f"Not decided: {err.message}"}


def decided_text(decision: str, who: str, reason: str | None) -> dict[str, Any]:
    verb = "Approved" if decision == "approve" else "Rejected"
    return {
        "response_type": "ephemeral",
        "replace_original": False,
        "text": f"{verb} by {who}" + (f": {reason}" if reason else ""),
    }


# ------------------------------------------------------------------------------------------------ posting, updating


def decided_message(run: dict[str, Any], ap: dict[str, Any], decided: dict[str, Any]) -> dict[str, Any]:
    """The same message once the approval is settled (anywhere: page, terminal, Slack): who decided, when and why,
    and no buttons."""
    by = decided.get("by") or {}
    who = (
        "expiry (nobody decided in time)"
        if by.get("policy") == "expired"
        else (by.get("name") or by.get("sub") or "someone")
    )
    verb = "Approved" if decided.get("decision") == "approve" else "Rejected"
    at = decided.get("decided_at") or ""
    when = at
    if at:
        d = datetime.fromisoformat(at.replace("Z", "+00:00")).astimezone(UTC)
        when = f"{d:%H:%M} UTC, {d.day} {d:%b}"
    msg = approval_message(run, ap)
    blocks = [b for b in msg["blocks"] if b["type"] != "actions"]
    blocks[0] = {"type": "header", "text": {"type": "plain_text", "text": _cut(f"{verb}: {ap.get('tool')}", 150)}}
    line = f"*{verb} by {_esc(who)}* at {when}" + (
        f": {_esc(_cut(str(decided['reason']), 1000))}" if decided.get("reason") else ""
    )
    blocks.append({"type": "section", "block_id": "runcast_decided", "text": {"type": "mrkdwn", "text": line}})
    return {"text": f"{verb} by {who}: {ap.get('tool')}", "blocks": blocks}


class SlackApp:
    """Posts each approval to a channel with the buttons (chat.postMessage) and, once it is settled anywhere,
    updates that message in place (chat.update). Runs inside the webhook deliverer, so each event is handled by one
    process of the cluster. slack_sdk's WebClient is synchronous (urllib): each call runs in a thread, which spares
    the hub aiohttp, the AsyncWebClient's transport. Where the message is (channel, ts) is kept in the backend's
    delivery records under `slack <run_id> <approval_id>`.

    Configuration: RUNCAST_SLACK_BOT_TOKEN, RUNCAST_SLACK_CHANNEL, RUNCAST_SLACK_API_URL (default Slack's)."""

    def __init__(self, token: str, channel: str, base_url: str | None = None) -> None:
        from slack_sdk import WebClient

        self.channel = channel
        self.client = WebClient(token=token, base_url=base_url or "https://slack.com/api/", timeout=10)

    @classmethod
    def from_env(cls) -> SlackApp | None:
        token, channel = os.environ.get("RUNCAST_SLACK_BOT_TOKEN"), os.environ.get("RUNCAST_SLACK_CHANNEL")
        return cls(token, channel, os.environ.get("RUNCAST_SLACK_API_URL")) if token and channel else None

    async def on_entry(self, entry: dict[str, Any], rec: Any, backend: Any, public_url: str | None) -> None:
        import asyncio

        data = entry.get("data") or {}
        aid = data.get("approval_id")
        if rec is None or entry["type"] not in ("approval.requested", "approval.decided") or aid not in rec.approvals:
            return
        key = f"slack {entry['run_id']} {aid}"
        run = {"run_id": rec.run_id, "input": rec.input, "agent": rec.agent, "started_by": rec.started_by}
        ap = rec.approvals[aid].requested_data()
        if entry["type"] == "approval.requested":
            if await backend.delivery_get(key):
                return  # posted already (a delivery retried after a crash)
            url = f"{(public_url or '').rstrip('/')}/#run={rec.run_id}&approval={aid}"
            msg = approval_message(run, ap, url)
            resp = await asyncio.to_thread(
                self.client.chat_postMessage, channel=self.channel, text=msg["text"], blocks=msg["blocks"]
            )
            await backend.delivery_put(
                key,
                {
                    "key": key,
                    "kind": "slack",
                    "run_id": rec.run_id,
                    "approval_id": aid,
                    "channel": resp["channel"],
                    "ts": resp["ts"],
                },
            )
            return
        where = await backend.delivery_get(key)
        if not where:
            return  # never posted (Slack was configured later)
        msg = decided_message(run, ap, data)
        await asyncio.to_thread(
            self.client.chat_update, channel=where["channel"], ts=where["ts"], text=msg["text"], blocks=msg["blocks"]
        )
