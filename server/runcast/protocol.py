"""The wire protocol of PROTOCOL.md, version 1, as plain code: frames, encodings, error and close codes.

Nothing here touches a socket. The hub decodes a frame with `decode_frame`, turns it into a typed command with
`parse_command`, and encodes what it sends with `encode_control` or `Event.encode`.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgpack
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, TypeAdapter, ValidationError

PROTOCOL_VERSION = 1
SUBPROTOCOL_JSON = "runcast.v1.json"
SUBPROTOCOL_MSGPACK = "runcast.v1.msgpack"
Encoding = Literal["json", "msgpack"]

# Largest client frame the application accepts; a larger one gets a `too_large` error and is dropped.
# (A frame over the transport limit, `ws_max_size`, closes the socket with 1009 before it reaches us.)
MAX_FRAME_BYTES = 64 * 1024
# Deepest nesting of arrays and maps a client frame (or an HTTP body) may have. No command nests deeper than 2;
# a limit far below the interpreter's recursion limit keeps every later walk of the value (validation, logging) safe.
MAX_DEPTH = 32
MAX_TEXT = 20_000  # start input
# The event types a webhook can be sent for (webhooks.EVENTS). Here, in the core, because the backends put each
# such event in the webhook outbox in the same commit that logs it, and the backends sit below webhooks.py.
WEBHOOK_EVENTS = (
    "approval.requested",
    "approval.decided",
    "approval.expired",
    "approval.cancelled",
    "run.paused",
    "run.completed",
    "run.failed",
    "run.cancelled",
    "approval.review_requested",  # the run's or the policy's reviewers were asked (runs.pause)
    "comment.mention",  # one per mentioned person (comments.py): route it to them (a Slack DM, an e-mail gateway)
)
MAX_REASON = 2_000
# Text that is more than white space: one character that is neither Unicode white space nor \x1c-\x1f (which
# Python's str.strip() also removes), so the schema and the core's own emptiness check agree.
NOT_BLANK = r"[^\s\x1c-\x1f]"


class ErrorCode:
    BAD_FRAME = "bad_frame"
    BAD_REQUEST = "bad_request"
    UNKNOWN_TYPE = "unknown_type"
    UNAUTHENTICATED = "unauthenticated"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    ALREADY_DECIDED = "already_decided"
    NOT_PENDING = "not_pending"
    EXPIRED = "expired"
    RATE_LIMITED = "rate_limited"
    TOO_LARGE = "too_large"
    LOG_TRIMMED = "log_trimmed"
    LOG_RESET = "log_reset"  # the run's log is not the one the client's `epoch` names (the store lost or rebuilt it)
    INVALID_ARGUMENTS = (
        "invalid_arguments"  # approve with changes: edited arguments the tool's schema refuses (edits.py)
    )
    BUSY = "busy"  # a message while the agent is busy, to an agent whose policy is `reject` (conversation.py)
    INTERNAL = "internal"


HTTP_STATUS = {
    ErrorCode.BAD_FRAME: 400,
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.UNKNOWN_TYPE: 400,
    ErrorCode.UNAUTHENTICATED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.ALREADY_DECIDED: 409,
    ErrorCode.NOT_PENDING: 409,
    ErrorCode.EXPIRED: 410,
    ErrorCode.LOG_TRIMMED: 410,
    ErrorCode.LOG_RESET: 410,
    ErrorCode.BUSY: 409,
    ErrorCode.INVALID_ARGUMENTS: 409,  # a well-formed edit the tool's schema refuses: it conflicts with the tool
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.TOO_LARGE: 413,
    ErrorCode.INTERNAL: 500,
}


class CloseCode:
    NORMAL = 1000
    POLICY = 1008
    TOO_BIG = 1009
    RESTARTING = 1012
    UNAUTHENTICATED = 4401
    SLOW_CONSUMER = 4408


class ProtocolError(Exception):
    """A refusal with a stable code. `detail` is merged into the error frame."""

    def __init__(self, code: str, message: str, **detail: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.detail = detail


# --------------------------------------------------------------------------------------------- client commands

_strict = ConfigDict(strict=True, extra="ignore")
RunId = Annotated[StrictStr, Field(min_length=1, max_length=128)]
CommandId = Annotated[StrictStr, Field(max_length=128)]


class _Command(BaseModel):
    model_config = _strict
    id: CommandId | None = None


class Hello(_Command):
    type: Literal["hello"]
    # Without it, the hub welcomes the person of the session cookie the WebSocket was opened with (a sign-in).
    token: Annotated[StrictStr, Field(min_length=1, max_length=8192)] | None = None
    client: Annotated[StrictStr, Field(max_length=200)] | None = None
    batch: StrictBool = False  # several events may come in one frame (see BATCH_MAX_BYTES)


class Subscribe(_Command):
    type: Literal["subscribe"]
    run_id: RunId
    since: Annotated[StrictInt, Field(ge=0)] | None = None
    epoch: Annotated[StrictStr, Field(max_length=64)] | None = None  # the epoch of the log `since` counts in


class Unsubscribe(_Command):
    type: Literal["unsubscribe"]
    run_id: RunId


class Decide(_Command):
    type: Literal["decide"]
    run_id: RunId
    approval_id: Annotated[StrictStr, Field(min_length=1, max_length=128)]
    decision: Literal["approve", "reject"]
    reason: Annotated[StrictStr, Field(max_length=MAX_REASON)] | None = None
    always: StrictBool = False
    arguments: Annotated[StrictStr, Field(max_length=MAX_TEXT)] | None = None  # approve with changes: edited JSON


class Cancel(_Command):
    type: Literal["cancel"]
    run_id: RunId
    mode: Literal["immediate", "after_turn"] = "immediate"


class Start(_Command):
    type: Literal["start"]
    agent: Annotated[StrictStr, Field(min_length=1, max_length=200)]
    input: Annotated[StrictStr, Field(max_length=MAX_TEXT)]
    # people (subs) asked to review the run's approvals: their inbox says "review requested"
    reviewers: Annotated[list[Annotated[StrictStr, Field(min_length=1, max_length=200)]], Field(max_length=10)] = []


class Say(_Command):
    """A message to the run's agent (conversation.py). Its length is the agent's rule (`too_large`), not the frame's."""

    type: Literal["say"]
    run_id: RunId
    text: Annotated[StrictStr, Field(max_length=MAX_TEXT, pattern=NOT_BLANK)]  # the agent may take less


class Typing(_Command):
    """I am typing a message to the run's agent (`true`, renewed every few seconds while I type), or stopped (`false`).
    Live state, never logged: it marks this connection's presence entry (presence.py)."""

    type: Literal["typing"]
    run_id: RunId
    typing: StrictBool


class Withdraw(_Command):
    """Take back a message of mine still waiting in the run's queue."""

    type: Literal["withdraw"]
    run_id: RunId
    message_id: Annotated[StrictStr, Field(min_length=1, max_length=128)]


class Rerun(_Command):
    """Start a new run with a finished run's agent and input (the new run's starter is whoever asks)."""

    type: Literal["rerun"]
    run_id: RunId


class Ping(_Command):
    type: Literal["ping"]


class SubscribeInbox(_Command):
    """The approvals inbox: every open approval this person may decide (`inbox`, then `inbox.added/removed`)."""

    type: Literal["subscribe_inbox"]


class SubscribeRuns(_Command):
    """The live run list: the newest `limit` runs this token may see (`runs`), then `run.status` for every change."""

    type: Literal["subscribe_runs"]
    limit: Annotated[StrictInt, Field(ge=1, le=500)] = 50
    # optional filters (feed.run_matches): only runs that match all of those given are listed and sent
    agent: Annotated[StrictStr, Field(min_length=1, max_length=200)] | None = None
    status: Annotated[StrictStr, Field(min_length=1, max_length=200)] | None = None  # one, a,b, or live
    started_by: Annotated[StrictStr, Field(min_length=1, max_length=200)] | None = None  # a sub
    q: Annotated[StrictStr, Field(min_length=1, max_length=200)] | None = None  # words in the input, agent, id, starter

    def filters(self) -> dict[str, str]:
        return {
            k: v
            for k, v in (("agent", self.agent), ("status", self.status), ("started_by", self.started_by), ("q", self.q))
            if v is not None
        }


CommentId = Annotated[StrictStr, Field(min_length=1, max_length=128)]
# A comment's text is bounded by the frame; comments.MAX_COMMENT (characters) is checked by the core: too_large.
CommentText = Annotated[StrictStr, Field(max_length=MAX_TEXT, pattern=NOT_BLANK)]  # not only spaces


class Comment(_Command):
    """A comment on a run, on one of its approvals (`approval_id`: that approval's thread), or a reply (`reply_to`:
    the thread of that comment). Never seen by the agent (comments.py)."""

    type: Literal["comment"]
    run_id: RunId
    text: CommentText
    approval_id: CommentId | None = None
    reply_to: CommentId | None = None


class EditComment(_Command):
    type: Literal["edit_comment"]
    run_id: RunId
    comment_id: CommentId
    text: CommentText


class DeleteComment(_Command):
    type: Literal["delete_comment"]
    run_id: RunId
    comment_id: CommentId


class ResolveThread(_Command):
    """Resolve a thread (`resolved: true`, the default) or reopen it (`false`)."""

    type: Literal["resolve_thread"]
    run_id: RunId
    thread_id: CommentId
    resolved: StrictBool = True


class People(_Command):
    """Who `@` completes to in this run's comments: the people who watch, watched, or may decide it."""

    type: Literal["people"]
    run_id: RunId


class UnsubscribeFeed(_Command):
    type: Literal["unsubscribe_inbox", "unsubscribe_runs"]


Command = (
    Hello
    | Subscribe
    | Unsubscribe
    | Decide
    | Cancel
    | Start
    | Say
    | Typing
    | Withdraw
    | Rerun
    | Ping
    | SubscribeInbox
    | SubscribeRuns
    | UnsubscribeFeed
    | Comment
    | EditComment
    | DeleteComment
    | ResolveThread
    | People
)
_COMMANDS: dict[str, TypeAdapter[Any]] = {
    m.model_fields["type"].annotation.__args__[0]: TypeAdapter(m)  # type: ignore[union-attr]
    for m in (
        Hello,
        Subscribe,
        Unsubscribe,
        Decide,
        Cancel,
        Start,
        Say,
        Typing,
        Withdraw,
        Rerun,
        Ping,
        SubscribeInbox,
        SubscribeRuns,
        Comment,
        EditComment,
        DeleteComment,
        ResolveThread,
        People,
    )
}
_COMMANDS["unsubscribe_inbox"] = _COMMANDS["unsubscribe_runs"] = TypeAdapter(UnsubscribeFeed)
COMMAND_TYPES = tuple(_COMMANDS)


def byte_size(payload: str | bytes) -> int:
    """The size on the wire: a text frame's limit counts its UTF-8 bytes, not its characters."""
    if isinstance(payload, bytes):
        return len(payload)
    return len(payload) if payload.isascii() else len(payload.encode("utf-8", "surrogatepass"))


def _unicode(text: str) -> bool:
    """False for a string with a lone surrogate (JSON lets a client write "\\ud800"; no UTF-8 frame can carry it
    back)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def depth(value: Any) -> int:
    """How deeply arrays and maps nest in a decoded value (a scalar is 0), without recursion. A string that is not
    valid Unicode (a lone surrogate), as a key or a value, raises ValueError."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            if not all(_unicode(k) for k in v if isinstance(k, str)):
                raise ValueError("a key is not valid Unicode (a lone surrogate)")
            items: Any = v.values()
        elif isinstance(v, (list, tuple)):
            items = v
        elif isinstance(v, str) and not _unicode(v):
            raise ValueError("a string is not valid Unicode (a lone surrogate)")
        else:
            continue
        deepest = max(deepest, d)
        stack.extend((x, d + 1) for x in items if isinstance(x, (dict, list, tuple, str)))
    return deepest


def decode_value(
    payload: str | bytes, encoding: Encoding, what: str = "frame", max_bytes: int = MAX_FRAME_BYTES
) -> Any:
    """Bytes or text -> a value no bigger than max_bytes and no deeper than MAX_DEPTH, or ProtocolError."""
    size = byte_size(payload)
    if size > max_bytes:
        raise ProtocolError(ErrorCode.TOO_LARGE, f"{what} of {size} bytes is over the {max_bytes} byte limit")
    kind = "msgpack" if encoding == "msgpack" else "JSON"
    try:
        if encoding == "msgpack":
            obj = msgpack.unpackb(payload, raw=False, strict_map_key=True)
        else:
            obj = json.loads(payload)
    except (RecursionError, msgpack.StackError):
        raise ProtocolError(ErrorCode.BAD_FRAME, f"{what} nests deeper than {MAX_DEPTH} levels") from None
    except Exception as exc:
        raise ProtocolError(ErrorCode.BAD_FRAME, f"{what} is not valid {kind}: {str(exc)[:200]}") from None
    try:
        nesting = depth(obj)
    except ValueError as exc:
        raise ProtocolError(ErrorCode.BAD_FRAME, f"{what} is not valid {kind}: {exc}") from None
    if nesting > MAX_DEPTH:
        raise ProtocolError(ErrorCode.BAD_FRAME, f"{what} nests deeper than {MAX_DEPTH} levels")
    return obj


def decode_frame(payload: str | bytes, encoding: Encoding) -> dict[str, Any]:
    """Bytes or text off the socket -> a dict, or ProtocolError(bad_frame / too_large)."""
    if encoding == "msgpack" and isinstance(payload, str):
        if byte_size(payload) > MAX_FRAME_BYTES:
            raise ProtocolError(
                ErrorCode.TOO_LARGE, f"frame of {byte_size(payload)} bytes is over the {MAX_FRAME_BYTES} byte limit"
            )
        raise ProtocolError(
            ErrorCode.BAD_FRAME, "the runcast.v1.msgpack subprotocol takes binary frames (one msgpack map each)"
        )
    obj = decode_value(payload, encoding)
    if not isinstance(obj, dict):
        raise ProtocolError(ErrorCode.BAD_FRAME, f"frame must be an object, got {type(obj).__name__}")
    return obj


def parse_command(obj: dict[str, Any]) -> Command:
    """A decoded frame -> a typed command, or ProtocolError(bad_request / unknown_type)."""
    cid = obj.get("id") if isinstance(obj.get("id"), str) else None
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "field 'type' is missing or not a string", id=cid)
    adapter = _COMMANDS.get(kind)
    if adapter is None:
        raise ProtocolError(
            ErrorCode.UNKNOWN_TYPE, f"unknown command type {kind!r}; expected one of {', '.join(COMMAND_TYPES)}", id=cid
        )
    try:
        cmd: Command = adapter.validate_python(obj)  # the adapter of `kind`'s model: one of Command
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "frame"
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"field '{field}': {err['msg']}", id=cid, field=field) from None
    return cmd


# --------------------------------------------------------------------------------------------- server frames


def now_iso(ts: float | None = None) -> str:
    dt = datetime.fromtimestamp(ts, UTC) if ts is not None else datetime.now(UTC)
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class User(BaseModel):
    sub: str
    name: str
    roles: list[str]


class Welcome(BaseModel):
    type: Literal["welcome"] = "welcome"
    connection_id: str
    user: User
    server: str
    heartbeat_s: float
    protocol: int = PROTOCOL_VERSION
    batch: bool | None = None  # true: this connection gets batched frames (the hello asked, and the hub can)
    # when the token or session ends (seconds since the epoch): before then, a hello with a new token for the same
    # person renews the connection in place, its subscriptions kept; at it, the hub closes with 4401
    expires_at: float | None = None
    id: str | None = None  # a renewal answers with the hello's id
    now: str = Field(default_factory=lambda: now_iso())  # the hub's clock: a client times deadlines by it


class Ack(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["ack"] = "ack"
    id: str | None = None


class ErrorFrame(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["error"] = "error"
    id: str | None = None
    code: str
    message: str
    run_id: str | None = None


class Sync(BaseModel):
    type: Literal["sync"] = "sync"
    run_id: str
    head_seq: int
    status: str
    epoch: str | None = None  # the run log's epoch: send it back with `since` when subscribing again
    now: str = Field(default_factory=lambda: now_iso())  # the hub's clock (a replay holds only old `ts`)


class Pong(BaseModel):
    type: Literal["pong"] = "pong"
    id: str | None = None


def error_frame(err: ProtocolError, run_id: str | None = None) -> dict[str, Any]:
    detail = dict(err.detail)
    cid = detail.pop("id", None)
    frame = ErrorFrame(
        id=cid, code=err.code, message=err.message, run_id=run_id or detail.pop("run_id", None), **detail
    )
    return frame.model_dump(exclude_none=True)


def encode(frame: dict[str, Any], encoding: Encoding) -> str | bytes:
    if encoding == "msgpack":
        packed: bytes = msgpack.packb(frame, use_bin_type=True)  # msgpack ships no types
        return packed
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False)


def control(model: BaseModel, encoding: Encoding) -> str | bytes:
    return encode(model.model_dump(exclude_none=True), encoding)


class Event:
    """One logged run event, with its encodings cached: a node encodes each event once per encoding."""

    __slots__ = ("_json", "_msgpack", "frame")

    def __init__(self, frame: dict[str, Any], packed: bytes | None = None) -> None:
        self.frame = frame
        self._json: bytes | None = None  # UTF-8: what a socket writes, so no client pays for encoding it
        self._msgpack: bytes | None = packed

    @classmethod
    def unpack(cls, packed: bytes) -> Event:
        return cls(msgpack.unpackb(packed, raw=False), packed)

    @property
    def seq(self) -> int:
        seq: int = self.frame["seq"]
        return seq

    @property
    def type(self) -> str:
        type: str = self.frame["type"]
        return type

    @property
    def run_id(self) -> str:
        run_id: str = self.frame["run_id"]
        return run_id

    @property
    def data(self) -> dict[str, Any]:
        data: dict[str, Any] = self.frame["data"]
        return data

    def packed(self) -> bytes:
        if self._msgpack is None:
            self._msgpack = msgpack.packb(self.frame, use_bin_type=True)
        return self._msgpack

    def json_bytes(self) -> bytes:
        if self._json is None:
            self._json = json.dumps(self.frame, separators=(",", ":"), ensure_ascii=False).encode()
        return self._json

    def json(self) -> str:
        return self.json_bytes().decode()

    def payload(self, encoding: Encoding) -> bytes:
        """The bytes of this event's frame: UTF-8 JSON (a text frame) or msgpack (a binary frame)."""
        return self.packed() if encoding == "msgpack" else self.json_bytes()

    def encode(self, encoding: Encoding) -> str | bytes:
        return self.packed() if encoding == "msgpack" else self.json()

    def __repr__(self) -> str:
        return f"Event({self.run_id}#{self.seq} {self.type})"


# Batched frames (a client that sent `hello` with `batch: true`): when several events wait for a client, one frame
# carries them. JSON: the events' objects joined by "\n" (compact JSON never contains a raw newline). msgpack: the
# events' maps one after the other (a msgpack sequence). A frame with one event is the same as without batching.
# A batch frame holds whole events and at most BATCH_MAX_BYTES of them, unless its only event is bigger.
BATCH_MAX_BYTES = 64 * 1024
BATCH_SEPARATOR = {"json": b"\n", "msgpack": b""}


def batch_payloads(events: list[Event], encoding: Encoding, limit: int = BATCH_MAX_BYTES) -> list[bytes]:
    """The payloads of the batch frames that carry `events`, in order."""
    sep = BATCH_SEPARATOR[encoding]
    out: list[bytes] = []
    parts: list[bytes] = []
    size = 0
    for ev in events:
        p = ev.payload(encoding)
        if parts and size + len(p) + len(sep) > limit:
            out.append(sep.join(parts))
            parts, size = [], 0
        parts.append(p)
        size += len(p) + len(sep)
    if parts:
        out.append(sep.join(parts))
    return out


def make_event(run_id: str, seq: int, type_: str, data: dict[str, Any], ts: float | None = None) -> Event:
    return Event({"run_id": run_id, "seq": seq, "ts": now_iso(ts), "type": type_, "data": data})
