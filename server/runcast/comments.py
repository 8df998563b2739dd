"""Comments on a run and on its approvals, as plain code: threads, mentions, edit, delete, resolve and reopen.

A comment is a run event (`comment.added`), logged with its author (from the token) and shown to everyone who
watches the run. The agent never sees it: the worker feeds the model only the run's input and saved state, never
the log. The run record keeps each comment's metadata only (author, thread, time, whether it was edited or
deleted): enough to check who may edit it and how fast someone comments, and small, since the text lives in the
log. An edit or a delete is logged too (`comment.edited`, `comment.deleted`), so the log keeps that it happened.

Threads: a comment on an approval joins that approval's thread (its id is the approval id), so the thread sits
beside the decision and stays in the run's history. A comment on the run starts a thread of its own (its id is
the comment's); `reply_to` joins the thread of the comment it answers. Anyone who may watch the run may resolve a
thread or reopen it (`thread.resolved`, `thread.reopened`).

Mentions: `@handle` in a comment names a person who watches the run, has watched it, started it, voted on it, was
asked to review it, or may decide it (the caller passes these as `people`). A handle is a person's `sub`, or their
name without spaces, case-insensitively. Each mentioned person gets a `comment.mention` event (the webhooks'
own event type) and the record's `mentions` (the newest MENTIONS_KEPT), which the feed carries to their inbox on
every node. A mention of nobody is refused, and nothing is logged.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, Field

from .approvals import ADMIN, Person
from .protocol import ErrorCode, ProtocolError, now_iso

MAX_COMMENT = 4_000  # characters of one comment
MAX_COMMENTS_PER_RUN = 500  # the record keeps each one's metadata (about 200 bytes)
FLOOD_WINDOW_S = 60.0
FLOOD_MAX = 10  # comments by one person on one run within FLOOD_WINDOW_S
MAX_MENTIONS = 10  # distinct people one comment may mention
MENTIONS_KEPT = 20  # the newest mentions of a run, carried by its feed entry to every node's inbox watchers
EXCERPT = 200  # characters of a comment an inbox's mention shows

_HANDLE = re.compile(r"(?<![\w@])@([A-Za-z0-9_][\w.\-]*)")


class CommentMeta(BaseModel):
    comment_id: str
    thread_id: str
    approval_id: str | None = None
    by: dict[str, str]
    at: float  # epoch seconds, server clock (the flood check)
    edits: int = 0
    deleted: bool = False
    mentions: list[str] = Field(default_factory=list)  # subs


class ThreadMeta(BaseModel):
    thread_id: str
    approval_id: str | None = None
    resolved: bool = False
    comments: int = 0


def handle_of(person: dict[str, Any]) -> str:
    """What the page completes `@` to: the name without spaces (or the sub when the name has no usable letters)."""
    compact = re.sub(r"[^\w.\-]", "", person.get("name") or "")
    return compact or person["sub"]


def mentionable(people: Iterable[dict[str, Any]]) -> list[dict[str, str]]:
    """Distinct people by sub ({sub, name, handle}), in the order given (the first name seen wins)."""
    out: dict[str, dict[str, str]] = {}
    for p in people:
        sub = p.get("sub")
        if sub and sub not in out:
            name = p.get("name") or sub
            out[sub] = {"sub": sub, "name": name, "handle": handle_of({"sub": sub, "name": name})}
    return list(out.values())


def parse_mentions(text: str, people: Iterable[dict[str, Any]]) -> list[dict[str, str]]:
    """The people `text` mentions ({sub, name}, first mention first). ProtocolError(bad_request) names any
    `@handle` that is nobody here, and refuses more than MAX_MENTIONS people."""
    index: dict[str, dict[str, str]] = {}
    for p in mentionable(people):
        ref = {"sub": p["sub"], "name": p["name"]}
        index.setdefault(p["handle"].lower(), ref)
        index.setdefault(p["sub"].lower(), ref)
    found: dict[str, dict[str, str]] = {}
    unknown: list[str] = []
    for m in _HANDLE.finditer(text):
        h = m.group(1).rstrip(".-")
        found_ref = index.get(h.lower())
        if found_ref is None:
            if "@" + h not in unknown:
                unknown.append("@" + h)
        else:
            found.setdefault(found_ref["sub"], found_ref)
    if unknown:
        raise ProtocolError(
            ErrorCode.BAD_REQUEST,
            f"{', '.join(unknown)}: nobody who watches, watched or may decide this run has that name",
            field="text",
            unknown_mentions=unknown,
        )
    if len(found) > MAX_MENTIONS:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"a comment may mention at most {MAX_MENTIONS} people", field="text")
    return list(found.values())


def check_text(text: str) -> str:
    text = text.strip()
    if not text:
        raise ProtocolError(ErrorCode.BAD_REQUEST, "a comment needs some text", field="text")
    if len(text) > MAX_COMMENT:
        raise ProtocolError(
            ErrorCode.TOO_LARGE,
            f"a comment of {len(text)} characters is over the {MAX_COMMENT} character limit",
            field="text",
            limit=MAX_COMMENT,
        )
    return text


def _flood(comments: dict[str, CommentMeta], sub: str, now: float) -> None:
    recent = [c.at for c in comments.values() if c.by.get("sub") == sub and now - c.at < FLOOD_WINDOW_S]
    if len(recent) >= FLOOD_MAX:
        wait = max(1, int(FLOOD_WINDOW_S - (now - min(recent))) + 1)
        raise ProtocolError(
            ErrorCode.RATE_LIMITED, f"over {FLOOD_MAX} comments a minute on one run; wait {wait} s", retry_after_s=wait
        )
    if len(comments) >= MAX_COMMENTS_PER_RUN:
        raise ProtocolError(ErrorCode.RATE_LIMITED, f"this run has {MAX_COMMENTS_PER_RUN} comments, its limit")


def _mention_events(
    meta: CommentMeta,
    person: Person,
    text: str,
    mentioned: list[dict[str, str]],
    already: set[str],
    now: float,
    kept: list[dict[str, Any]],
) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for ref in mentioned:
        if ref["sub"] in already or ref["sub"] == person.sub:
            continue
        data = {
            "comment_id": meta.comment_id,
            "thread_id": meta.thread_id,
            "approval_id": meta.approval_id,
            "by": person.ref(),
            "mentioned": ref,
            "text": text,
        }
        events.append(("comment.mention", data))
        kept.append(
            {
                "mention_id": f"{meta.comment_id}:{ref['sub']}:{meta.edits}",
                "sub": ref["sub"],
                "comment_id": meta.comment_id,
                "thread_id": meta.thread_id,
                "approval_id": meta.approval_id,
                "by": person.ref(),
                "excerpt": text[:EXCERPT],
                "at": now_iso(now),
            }
        )
    del kept[:-MENTIONS_KEPT]
    return events


def add(
    comments: dict[str, CommentMeta],
    threads: dict[str, ThreadMeta],
    approvals: Iterable[str],
    mentions_kept: list[dict[str, Any]],
    person: Person,
    text: str,
    approval_id: str | None,
    reply_to: str | None,
    people: Iterable[dict[str, Any]],
    now: float,
    run_id: str = "",
    comment_id: str | None = None,
) -> tuple[dict[str, Any], list[tuple[str, dict[str, Any]]]]:
    """A new comment, in place. Returns (result, events)."""
    text = check_text(text)
    if approval_id is not None and approval_id not in set(approvals):
        raise ProtocolError(ErrorCode.NOT_FOUND, f"run {run_id} has no approval {approval_id}", field="approval_id")
    thread_id = approval_id
    if reply_to is not None:
        parent = comments.get(reply_to)
        if parent is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"run {run_id} has no comment {reply_to}", field="reply_to")
        if approval_id is not None and parent.approval_id != approval_id:
            raise ProtocolError(
                ErrorCode.BAD_REQUEST, f"comment {reply_to} is not on approval {approval_id}", field="reply_to"
            )
        thread_id, approval_id = parent.thread_id, parent.approval_id
    mentioned = parse_mentions(text, people)
    _flood(comments, person.sub, now)
    cid = comment_id or f"c_{secrets.token_hex(6)}"
    thread_id = thread_id or cid
    meta = CommentMeta(
        comment_id=cid,
        thread_id=thread_id,
        approval_id=approval_id,
        by=person.ref(),
        at=now,
        mentions=[m["sub"] for m in mentioned],
    )
    comments[cid] = meta
    thread = threads.setdefault(thread_id, ThreadMeta(thread_id=thread_id, approval_id=approval_id))
    thread.comments += 1
    events: list[tuple[str, dict[str, Any]]] = [
        (
            "comment.added",
            {
                "comment_id": cid,
                "thread_id": thread_id,
                "approval_id": approval_id,
                "reply_to": reply_to,
                "by": person.ref(),
                "text": text,
                "mentions": mentioned,
            },
        )
    ]
    events += _mention_events(meta, person, text, mentioned, set(), now, mentions_kept)
    return {"comment_id": cid, "thread_id": thread_id}, events


def _own(
    comments: dict[str, CommentMeta], comment_id: str, person: Person, run_id: str, what: str, admin_may: bool = False
) -> CommentMeta:
    meta = comments.get(comment_id)
    if meta is None:
        raise ProtocolError(ErrorCode.NOT_FOUND, f"run {run_id} has no comment {comment_id}", field="comment_id")
    if meta.deleted:
        raise ProtocolError(ErrorCode.NOT_FOUND, f"comment {comment_id} was deleted", field="comment_id")
    if meta.by.get("sub") != person.sub and not (admin_may and ADMIN in person.roles):
        raise ProtocolError(
            ErrorCode.FORBIDDEN, f"only its author ({meta.by.get('name')}) may {what} comment {comment_id}"
        )
    return meta


def edit(
    comments: dict[str, CommentMeta],
    mentions_kept: list[dict[str, Any]],
    person: Person,
    comment_id: str,
    text: str,
    people: Iterable[dict[str, Any]],
    now: float,
    run_id: str = "",
) -> tuple[dict[str, Any], list[tuple[str, dict[str, Any]]]]:
    """The author replaces their comment's text; newly mentioned people are notified (the others were already)."""
    text = check_text(text)
    meta = _own(comments, comment_id, person, run_id, "edit")
    mentioned = parse_mentions(text, people)
    before = set(meta.mentions)
    meta.edits += 1
    meta.mentions = [m["sub"] for m in mentioned]
    events: list[tuple[str, dict[str, Any]]] = [
        (
            "comment.edited",
            {
                "comment_id": comment_id,
                "thread_id": meta.thread_id,
                "approval_id": meta.approval_id,
                "by": person.ref(),
                "text": text,
                "mentions": mentioned,
                "edits": meta.edits,
            },
        )
    ]
    events += _mention_events(meta, person, text, mentioned, before, now, mentions_kept)
    return {"comment_id": comment_id, "edits": meta.edits}, events


def delete(
    comments: dict[str, CommentMeta], person: Person, comment_id: str, run_id: str = ""
) -> tuple[dict[str, Any], list[tuple[str, dict[str, Any]]]]:
    """The author (or an admin, moderating) deletes a comment: the page stops showing its text; the log keeps the
    `comment.added` it had and this `comment.deleted`."""
    meta = _own(comments, comment_id, person, run_id, "delete", admin_may=True)
    meta.deleted = True
    return {"comment_id": comment_id}, [
        (
            "comment.deleted",
            {
                "comment_id": comment_id,
                "thread_id": meta.thread_id,
                "approval_id": meta.approval_id,
                "by": person.ref(),
            },
        )
    ]


def resolve(
    threads: dict[str, ThreadMeta], person: Person, thread_id: str, resolved: bool, run_id: str = ""
) -> tuple[dict[str, Any], list[tuple[str, dict[str, Any]]]]:
    """Resolve or reopen a thread. Asking for the state it already has changes nothing and logs nothing."""
    thread = threads.get(thread_id)
    if thread is None:
        raise ProtocolError(ErrorCode.NOT_FOUND, f"run {run_id} has no thread {thread_id}", field="thread_id")
    if thread.resolved == resolved:
        return {"thread_id": thread_id, "resolved": resolved, "changed": False}, []
    thread.resolved = resolved
    kind = "thread.resolved" if resolved else "thread.reopened"
    return (
        {"thread_id": thread_id, "resolved": resolved, "changed": True},
        [(kind, {"thread_id": thread_id, "approval_id": thread.approval_id, "by": person.ref()})],
    )
