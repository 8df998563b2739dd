"""Machine-readable descriptions of Runcast's two APIs, built from the code that implements them.

- `asyncapi()`: an AsyncAPI 3.0 document for `/ws`. Every client command's payload schema is generated from its
  pydantic model in protocol.py, and so are the control frames the hub answers with; run events get an envelope
  schema and one `data` schema per event type (EVENT_DATA below); error codes and close codes come from `ErrorCode`
  and `CloseCode`. Nothing is written twice, so the document and the hub cannot drift apart.
- `openapi()`: an OpenAPI 3.1 document for the HTTP API, served at `GET /api/openapi.json`. Request bodies are the
  same command models as the frames they stand for (api.py); responses are the schemas below, which Schemathesis
  checks every answer of a real hub against (tests/test_specs.py).

`python -m runcast.specs asyncapi|openapi` prints either document as JSON. Both are validated in CI by the
ecosystem's own validators (`@asyncapi/parser`, `openapi-spec-validator`).
"""

from __future__ import annotations

import copy
import json
import sys
from typing import Any

from pydantic import BaseModel, TypeAdapter

from . import __version__, protocol
from .api import _MAX_DIGITS, MAX_SEQ
from .protocol import COMMAND_TYPES, CloseCode, ErrorCode

SCHEMAS = "#/components/schemas/{model}"

# ------------------------------------------------------------------------------------------------- shared pieces

_STR = {"type": "string"}
_INT = {"type": "integer"}
_BOOL = {"type": "boolean"}
_ANY: dict[str, Any] = {}
_OBJ = {"type": "object"}
_NULLABLE_STR = {"type": ["string", "null"]}
_PERSON = {"type": "object", "required": ["sub", "name"], "properties": {"sub": _STR, "name": _STR}}
_POLICY = {
    "type": "object",
    "required": ["roles", "quorum", "allow_self"],
    "properties": {
        "roles": {"type": "array", "items": _STR},
        "quorum": _INT,
        "allow_self": _BOOL,
        "count_starter": _BOOL,
    },
}
_TALLY = {"type": "object", "properties": {"approve": _INT, "reject": _INT, "needed": _INT}}


def _obj(required: list[str], **props: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": props}


# The `data` of each run event type, by type: the keys PROTOCOL.md and the README's protocol section promise.
# Events may carry more keys than listed (a newer hub adds; a client ignores what it does not know).
EVENT_DATA: dict[str, dict[str, Any]] = {
    "run.started": _obj(
        ["agent", "input", "started_by"],
        agent=_STR,
        input=_STR,
        started_by=_PERSON,
        reviewers={"type": "array", "items": _STR},
    ),
    "agent.updated": _obj(["agent"], agent=_STR),
    "message.delta": _obj(["item_id", "delta"], item_id=_STR, delta=_STR),
    "message.completed": _obj(["item_id", "text"], item_id=_STR, text=_STR, agent=_STR),
    "reasoning.delta": _obj(["item_id", "delta"], item_id=_STR, delta=_STR),
    "reasoning.completed": _obj(["item_id"], item_id=_STR, summary=_ANY),
    "tool.args.delta": _obj(["call_id", "delta"], call_id=_STR, delta=_STR),
    "tool.called": _obj(["call_id", "tool", "arguments"], call_id=_STR, tool=_STR, arguments=_STR, agent=_STR),
    "tool.output": _obj(["call_id", "output"], call_id=_STR, output=_ANY, truncated=_BOOL),
    "tool.search.called": _obj([], call_id=_ANY),
    "tool.search.output": _obj([], call_id=_ANY),
    "handoff.requested": _obj([], **{"from": _ANY, "to": _ANY}),
    "handoff.completed": _obj([], **{"from": _ANY, "to": _ANY}),
    "mcp.tools_listed": _obj(["server", "tools"], server=_STR, tools=_ANY),
    "mcp.approval.requested": _obj(["request_id"], request_id=_STR, server=_STR, tool=_STR, arguments=_ANY),
    "mcp.approval.responded": _obj(["request_id", "approved"], request_id=_STR, approved=_BOOL, reason=_ANY),
    "item.unknown": _obj(["name"], name=_STR),
    "approval.requested": _obj(
        ["approval_id", "call_id", "tool", "arguments", "agent", "policy", "expires_at"],
        approval_id=_STR,
        call_id=_STR,
        tool=_STR,
        arguments=_ANY,
        agent=_STR,
        policy=_POLICY,
        expires_at=_NULLABLE_STR,
        description=_NULLABLE_STR,
        reviewers={"type": "array", "items": _STR},
    ),
    "approval.review_requested": _obj(
        ["approval_id", "reviewers"], approval_id=_STR, tool=_STR, reviewers={"type": "array", "items": _STR}, by=_ANY
    ),
    "approval.voted": _obj(
        ["approval_id", "by", "decision", "tally"],
        approval_id=_STR,
        by=_PERSON,
        decision={"enum": ["approve", "reject"]},
        reason=_ANY,
        tally=_TALLY,
    ),
    "approval.decided": _obj(
        ["approval_id", "call_id", "decision", "by", "decided_at"],
        approval_id=_STR,
        call_id=_STR,
        decision={"enum": ["approve", "reject"]},
        by=_OBJ,
        reason=_ANY,
        always=_BOOL,
        decided_at=_STR,
        tool=_STR,
        arguments=_ANY,
        tally=_TALLY,
        original_arguments=_STR,
        changes={"type": "array", "items": _OBJ},  # approve with changes (edits.py)
    ),
    "approval.expired": _obj(["approval_id"], approval_id=_STR),
    "approval.cancelled": _obj(["approval_id"], approval_id=_STR),
    "run.paused": _obj(["pending"], pending={"type": "array", "items": _STR}),
    "run.resumed": _obj(["decisions"], decisions=_ANY, turn=_INT, messages={"type": "array", "items": _STR}),
    "run.completed": _obj(["output", "usage"], output=_ANY, usage=_OBJ, turn=_INT),
    # conversations (conversation.py)
    "message.said": _obj(
        ["message_id", "by", "text", "queued"], message_id=_STR, by=_PERSON, text=_STR, at=_STR, queued=_BOOL
    ),
    "message.withdrawn": _obj(["message_id", "by"], message_id=_STR, by=_PERSON),
    "turn.interrupted": _obj(["by", "turn"], by=_ANY, segment=_INT, turn=_INT),
    "run.failed": _obj(["code", "message"], code=_STR, message=_STR, usage=_OBJ, guardrail=_OBJ),
    "run.cancelled": _obj(["by", "mode"], by=_ANY, mode=_STR),
    # the discussion (comments.py): never given to the agent
    "comment.added": _obj(
        ["comment_id", "thread_id", "approval_id", "by", "text", "mentions"],
        comment_id=_STR,
        thread_id=_STR,
        approval_id=_NULLABLE_STR,
        reply_to=_NULLABLE_STR,
        by=_PERSON,
        text=_STR,
        mentions={"type": "array", "items": _PERSON},
    ),
    "comment.edited": _obj(
        ["comment_id", "thread_id", "by", "text", "edits"],
        comment_id=_STR,
        thread_id=_STR,
        approval_id=_NULLABLE_STR,
        by=_PERSON,
        text=_STR,
        edits=_INT,
        mentions={"type": "array", "items": _PERSON},
    ),
    "comment.deleted": _obj(
        ["comment_id", "thread_id", "by"], comment_id=_STR, thread_id=_STR, approval_id=_NULLABLE_STR, by=_PERSON
    ),
    "comment.mention": _obj(
        ["comment_id", "thread_id", "by", "mentioned", "text"],
        comment_id=_STR,
        thread_id=_STR,
        approval_id=_NULLABLE_STR,
        by=_PERSON,
        mentioned=_PERSON,
        text=_STR,
    ),
    "thread.resolved": _obj(["thread_id", "by"], thread_id=_STR, approval_id=_NULLABLE_STR, by=_PERSON),
    "thread.reopened": _obj(["thread_id", "by"], thread_id=_STR, approval_id=_NULLABLE_STR, by=_PERSON),
}

EVENT_ENVELOPE = _obj(
    ["run_id", "seq", "ts", "type", "data"],
    run_id=_STR,
    seq={"type": "integer", "minimum": 1},
    ts={"type": "string", "format": "date-time"},
    type={"enum": sorted(EVENT_DATA)},
    data=_OBJ,
)

# Feed and presence control frames (no seq, never replayed), as the hub builds them in feed.py and presence.py.
FEED_FRAMES: dict[str, dict[str, Any]] = {
    "inbox": _obj(
        ["type", "approvals"],
        type={"const": "inbox"},
        id=_STR,
        approvals={"type": "array", "items": _OBJ},
        mentions={"type": "array", "items": _OBJ},
    ),
    "inbox.mention": _obj(["type", "mention"], type={"const": "inbox.mention"}, mention=_OBJ),
    "inbox.added": _obj(["type", "approval"], type={"const": "inbox.added"}, approval=_OBJ),
    "inbox.removed": _obj(
        ["type", "run_id", "approval_id", "reason"],
        type={"const": "inbox.removed"},
        run_id=_STR,
        approval_id=_STR,
        reason=_STR,
    ),
    "runs": _obj(["type", "runs"], type={"const": "runs"}, id=_STR, runs={"type": "array", "items": _OBJ}),
    "run.status": _obj(
        ["type", "runs", "outside"],
        type={"const": "run.status"},
        runs={"type": "array", "items": _OBJ},
        left={"type": "array", "items": _STR},
        outside=_INT,
    ),
    "presence": _obj(
        ["type", "run_id", "full", "joined", "left", "count", "people"],
        type={"const": "presence"},
        run_id=_STR,
        full=_BOOL,
        listed={"enum": ["all", "deciders"]},
        joined={
            "type": "array",
            "items": _obj(
                ["connection_id", "sub", "name", "roles"],
                connection_id=_STR,
                sub=_STR,
                name=_STR,
                roles={"type": "array", "items": _STR},
                typing={"const": True},  # only while the person types (the `typing` command); absent otherwise
            ),
        },
        left={"type": "array", "items": _STR},
        count=_INT,
        people=_INT,
    ),
}

CLOSE_CODES = {
    CloseCode.NORMAL: "normal",
    CloseCode.POLICY: "policy: the connection broke a limit repeatedly (rate limit, bad frames)",
    CloseCode.TOO_BIG: "a message over the transport size limit",
    CloseCode.RESTARTING: "the hub is restarting or draining: reconnect and resubscribe with `since`",
    CloseCode.UNAUTHENTICATED: "no valid `hello` in time, or the token expired",
    CloseCode.SLOW_CONSUMER: "slow consumer: reconnect and resubscribe with `since`",
}


def error_codes() -> list[str]:
    return sorted(v for k, v in vars(ErrorCode).items() if k.isupper() and isinstance(v, str))


def command_models() -> dict[str, TypeAdapter[Any]]:
    """Every client command type -> the adapter the hub parses it with (protocol.parse_command's own table)."""
    return {t: protocol._COMMANDS[t] for t in COMMAND_TYPES}


SERVER_MODELS: dict[str, type[BaseModel]] = {
    "welcome": protocol.Welcome,
    "ack": protocol.Ack,
    "error": protocol.ErrorFrame,
    "sync": protocol.Sync,
    "pong": protocol.Pong,
}


def _schema_of(model: Any, defs: dict[str, Any]) -> dict[str, Any]:
    """The JSON Schema of a model, its nested definitions hoisted into `defs` (components/schemas)."""
    adapter = model if isinstance(model, TypeAdapter) else TypeAdapter(model)
    schema = adapter.json_schema(ref_template=SCHEMAS, mode="validation")
    for name, sub in schema.pop("$defs", {}).items():
        defs[name] = sub
    return schema


def _name(kind: str) -> str:
    return "".join(p.capitalize() for p in kind.replace(".", "_").split("_"))


# --------------------------------------------------------------------------------------------------- AsyncAPI


def asyncapi() -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    sent: list[str] = []
    received: list[str] = []

    for kind, model in command_models().items():
        name = f"{_name(kind)}Command"
        schemas[name] = _schema_of(model, schemas)
        messages[name] = {"name": kind, "title": f"`{kind}` command", "payload": {"$ref": SCHEMAS.format(model=name)}}
        sent.append(name)
    for kind, frame_model in SERVER_MODELS.items():
        name = f"{_name(kind)}Frame"
        schema = _schema_of(frame_model, schemas)
        if kind == "error":
            schema["properties"]["code"] = {"type": "string", "enum": error_codes()}
        schemas[name] = schema
        messages[name] = {
            "name": kind,
            "title": f"`{kind}` control frame",
            "payload": {"$ref": SCHEMAS.format(model=name)},
        }
        received.append(name)
    for kind, schema in FEED_FRAMES.items():
        name = f"{_name(kind)}Frame"
        schemas[name] = copy.deepcopy(schema)
        messages[name] = {
            "name": kind,
            "title": f"`{kind}` feed frame",
            "payload": {"$ref": SCHEMAS.format(model=name)},
        }
        received.append(name)
    for kind, data in EVENT_DATA.items():
        name = f"{_name(kind)}Event"
        env = copy.deepcopy(EVENT_ENVELOPE)
        env["properties"]["type"] = {"const": kind}
        env["properties"]["data"] = copy.deepcopy(data)
        schemas[name] = env
        messages[name] = {"name": kind, "title": f"`{kind}` run event", "payload": {"$ref": SCHEMAS.format(model=name)}}
        received.append(name)

    channel_ref = {"$ref": "#/channels/ws"}
    return {
        "asyncapi": "3.1.0",
        "info": {
            "title": "Runcast WebSocket protocol",
            "version": f"{protocol.PROTOCOL_VERSION}.0.0",
            "description": (
                f"Runcast {__version__}: one WebSocket per client at `/ws`. The subprotocol chooses the encoding: "
                f"`{protocol.SUBPROTOCOL_JSON}` (default; one JSON object per text frame) or "
                f"`{protocol.SUBPROTOCOL_MSGPACK}` (one msgpack map per binary frame, same keys and values). "
                "The first frame is `hello`. Run events carry `seq` (1, 2, 3... per run); "
                "control frames do not and are never replayed. Close codes: "
                + "; ".join(f"{int(c)} {d}" for c, d in CLOSE_CODES.items())
                + ". Error codes: "
                + ", ".join(error_codes())
                + "."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "hub": {
                "host": "localhost:8765",
                "protocol": "ws",
                "pathname": "/ws",
                "description": "a Runcast hub (`runcast serve`)",
            }
        },
        "channels": {
            "ws": {
                "address": "/ws",
                "title": "The hub's WebSocket",
                "messages": {n: {"$ref": f"#/components/messages/{n}"} for n in sent + received},
                "bindings": {"ws": {"bindingVersion": "0.1.0"}},
            }
        },
        "operations": {
            "sendCommand": {
                "action": "send",
                "channel": channel_ref,
                "title": "Commands a client sends",
                "messages": [{"$ref": f"#/channels/ws/messages/{n}"} for n in sent],
            },
            "receiveFrame": {
                "action": "receive",
                "channel": channel_ref,
                "title": "Frames the hub sends",
                "messages": [{"$ref": f"#/channels/ws/messages/{n}"} for n in received],
            },
        },
        "components": {
            "schemas": schemas,
            "messages": messages,
            "x-close-codes": {str(int(c)): d for c, d in CLOSE_CODES.items()},
            "x-encodings": {
                "application/json": protocol.SUBPROTOCOL_JSON,
                "application/msgpack": protocol.SUBPROTOCOL_MSGPACK,
            },
        },
    }


# ---------------------------------------------------------------------------------------------------- OpenAPI

_RUN_SUMMARY = _obj(
    ["run_id", "agent", "status", "input", "started_by", "created_at"],
    run_id=_STR,
    agent=_STR,
    status=_STR,
    input=_STR,
    started_by=_PERSON,
    created_at=_STR,
    segment=_INT,
    turn=_INT,
)
_ERROR = _obj(["error"], error=_obj(["code", "message"], code={"type": "string", "enum": error_codes()}, message=_STR))


def _body(kind: str, drop: tuple[str, ...], schemas: dict[str, Any]) -> dict[str, Any]:
    """A request body: the `kind` command's schema without the fields the path or the hub fill in."""
    schema = _schema_of(command_models()[kind], schemas)
    for f in ("type", "id", *drop):
        schema.get("properties", {}).pop(f, None)
        if f in schema.get("required", []):
            schema["required"].remove(f)
    if not schema.get("required"):
        schema.pop("required", None)
    return {"required": False, "content": {"application/json": {"schema": schema}}}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    words = {
        400: "bad input",
        401: "no valid token",
        403: "forbidden",
        404: "no such run (or not yours)",
        409: "already decided or not pending",
        410: "expired, or the log was trimmed or reset",
        413: "body too large",
        429: "rate limited (Retry-After)",
        503: "the backend is unreachable (Retry-After)",
    }
    return {str(s): _json(_ERROR, words[s]) for s in statuses}


def _param(name: str, where: str, schema: dict[str, Any], required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": where, "required": required or where == "path", "schema": schema}


_ID = {"type": "string", "minLength": 1, "maxLength": 128}
_STATUS = "(?:queued|running|paused|resuming|completed|failed|cancelled|live)"  # runfilter.STATUSES and live
_STATUSES = f"^(?:{_STATUS}(?:,{_STATUS})*)?$"


def openapi() -> dict[str, Any]:
    from .audit import CURSOR_PATTERN

    schemas: dict[str, Any] = {}
    run_id = _param("run_id", "path", {"type": "string", "minLength": 1, "maxLength": 128})
    approval_id = _param("approval_id", "path", _ID)
    auth_errors = (400, 401, 403, 404, 429, 503)
    # `limit` is any whole number (of at most _MAX_DIGITS digits), clamped to the endpoint's range
    limit = _param(
        "limit",
        "query",
        {"type": "integer", "minimum": 0, "maximum": 10**_MAX_DIGITS - 1, "description": "clamped to 1..1000"},
    )
    text = {"text/plain": {"schema": _STR}}
    paths: dict[str, Any] = {
        "/api/runs": {
            "post": {
                "operationId": "startRun",
                "summary": "Start a run (the `start` command)",
                "requestBody": _body("start", (), schemas) | {"required": True},
                "responses": {"201": _json(_obj(["run_id"], run_id=_STR), "the run was created")}
                | _errors(400, 401, 403, 404, 413, 429, 503),
            },
            "get": {
                "operationId": "listRuns",
                "summary": "The newest runs this token may see (filtered: runfilter.py)",
                "parameters": [
                    limit,
                    *(
                        _param(n, "query", {"type": "string", "maxLength": 200, "description": d})
                        for n, d in (
                            ("agent", "only this agent's runs"),
                            ("started_by", "only runs this user id (sub) started"),
                            ("q", "words, each in the input, agent, run id or the starter's name or sub"),
                        )
                    ),
                    _param(
                        "status",
                        "query",
                        {
                            "type": "string",
                            "maxLength": 200,
                            "pattern": _STATUSES,
                            "description": "comma-separated run statuses, or live (every run not ended)",
                        },
                    ),
                    _param(
                        "needs_me",
                        "query",
                        {
                            "enum": ["", "0", "1", "true", "false"],
                            "description": "only runs with an approval in this token's inbox",
                        },
                    ),
                ],
                "responses": {"200": _json(_obj(["runs"], runs={"type": "array", "items": _RUN_SUMMARY}))}
                | _errors(*auth_errors),
            },
        },
        "/api/runs/{run_id}": {
            "get": {
                "operationId": "getRun",
                "summary": "A run's status, pending approvals and who watched",
                "parameters": [run_id],
                "responses": {"200": _json(_RUN_SUMMARY | {"required": [*_RUN_SUMMARY["required"], "head_seq"]})}
                | _errors(*auth_errors),
            },
        },
        "/api/runs/{run_id}/events": {
            "get": {
                "operationId": "runEvents",
                "summary": "A run's log, paged",
                "parameters": [
                    run_id,
                    _param("since", "query", {"type": "integer", "minimum": 0, "maximum": MAX_SEQ}),
                    limit,
                ],
                "responses": {
                    "200": _json(
                        _obj(
                            ["events", "head_seq", "next_since", "more"],
                            events={"type": "array", "items": EVENT_ENVELOPE},
                            head_seq=_INT,
                            next_since=_INT,
                            more=_BOOL,
                        )
                    )
                }
                | _errors(*auth_errors, 410),
            },
        },
        "/api/runs/{run_id}/approvals/{approval_id}": {
            "post": {
                "operationId": "decide",
                "summary": "Vote on an approval (the `decide` command)",
                "parameters": [run_id, approval_id],
                "requestBody": _body("decide", ("run_id", "approval_id"), schemas) | {"required": True},
                "responses": {"200": _json(_OBJ)} | _errors(*auth_errors, 409, 410, 413),
            },
        },
        "/api/runs/{run_id}/cancel": {
            "post": {
                "operationId": "cancel",
                "summary": "Cancel a run (the `cancel` command)",
                "parameters": [run_id],
                "requestBody": _body("cancel", ("run_id",), schemas),
                "responses": {"200": _json(_OBJ)} | _errors(*auth_errors, 409, 413),
            },
        },
        "/api/runs/{run_id}/messages": {
            "post": {
                "operationId": "say",
                "summary": "Say something to the run's agent (the `say` command)",
                "parameters": [run_id],
                "requestBody": _body("say", ("run_id",), schemas) | {"required": True},
                "responses": {
                    "201": _json(
                        _obj(["run_id", "message_id", "queued"], run_id=_STR, message_id=_STR, queued=_BOOL),
                        "the message was logged",
                    )
                }
                | _errors(*auth_errors, 409, 413, 429),
            },
        },
        "/api/runs/{run_id}/messages/{message_id}": {
            "delete": {
                "operationId": "withdraw",
                "summary": "Take back a queued message (the `withdraw` command)",
                "parameters": [run_id, _param("message_id", "path", _STR, required=True)],
                "responses": {"200": _json(_obj(["run_id", "message_id"], run_id=_STR, message_id=_STR))}
                | _errors(*auth_errors, 409),
            },
        },
        "/api/runs/{run_id}/rerun": {
            "post": {
                "operationId": "rerun",
                "summary": "A new run with a finished run's agent and input (`rerun`)",
                "parameters": [run_id],
                "requestBody": _body("rerun", ("run_id",), schemas),
                "responses": {"201": _json(_obj(["run_id"], run_id=_STR, rerun_of=_STR), "the run was created")}
                | _errors(*auth_errors, 409, 413, 429),
            },
        },
        "/api/runs/{run_id}/audit": {
            "get": {
                "operationId": "runAudit",
                "summary": "A run's audit record (JSON, or CSV with format=csv)",
                "parameters": [run_id, _param("format", "query", {"enum": ["json", "csv"]})],
                "responses": {
                    "200": {
                        "description": "OK",
                        "content": {"application/json": {"schema": _OBJ}, "text/csv": {"schema": _STR}},
                    }
                }
                | _errors(*auth_errors),
            },
        },
        "/api/audit": {
            "get": {
                "operationId": "auditAcrossRuns",
                "summary": "Settled approvals across runs, newest first (JSON, or CSV with format=csv; audit.py)",
                "parameters": [
                    _param("since", "query", {"type": "string", "format": "date-time", "maxLength": 40}),
                    _param("until", "query", {"type": "string", "format": "date-time", "maxLength": 40}),
                    *(_param(n, "query", {"type": "string", "maxLength": 200}) for n in ("person", "agent", "tool")),
                    _param("outcome", "query", {"enum": ["approved", "rejected", "expired", "cancelled"]}),
                    _param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 1000}),
                    _param(
                        "cursor",
                        "query",
                        {"type": "string", "pattern": CURSOR_PATTERN, "description": "the `next` of the previous page"},
                    ),
                    _param("format", "query", {"enum": ["json", "csv"]}),
                ],
                "responses": {
                    "200": {
                        "description": "OK",
                        "content": {
                            "application/json": {
                                "schema": _obj(
                                    ["entries", "next"],
                                    entries={"type": "array", "items": _OBJ},
                                    next={"type": ["string", "null"]},
                                )
                            },
                            "text/csv": {"schema": _STR},
                        },
                    }
                }
                | _errors(*auth_errors),
            },
        },
        "/api/runs/{run_id}/comments": {
            "post": {
                "operationId": "comment",
                "summary": "Comment on a run or an approval (the `comment` command)",
                "parameters": [run_id],
                "requestBody": _body("comment", ("run_id",), schemas) | {"required": True},
                "responses": {
                    "201": _json(
                        _obj(["run_id", "comment_id", "thread_id"], run_id=_STR, comment_id=_STR, thread_id=_STR)
                    )
                }
                | _errors(*auth_errors, 413),
            },
        },
        "/api/runs/{run_id}/comments/{comment_id}": {
            "patch": {
                "operationId": "editComment",
                "summary": "Edit your comment (the `edit_comment` command)",
                "parameters": [run_id, _param("comment_id", "path", _ID, True)],
                "requestBody": _body("edit_comment", ("run_id", "comment_id"), schemas) | {"required": True},
                "responses": {"200": _json(_OBJ)} | _errors(*auth_errors, 413),
            },
            "delete": {
                "operationId": "deleteComment",
                "summary": "Delete your comment (the `delete_comment` command)",
                "parameters": [run_id, _param("comment_id", "path", _ID, True)],
                "responses": {"200": _json(_OBJ)} | _errors(*auth_errors, 413),
            },
        },
        "/api/runs/{run_id}/threads/{thread_id}": {
            "post": {
                "operationId": "resolveThread",
                "summary": "Resolve or reopen a thread (`resolve_thread`)",
                "parameters": [run_id, _param("thread_id", "path", _ID, True)],
                "requestBody": _body("resolve_thread", ("run_id", "thread_id"), schemas),
                "responses": {"200": _json(_OBJ)} | _errors(*auth_errors, 413),
            },
        },
        "/api/runs/{run_id}/people": {
            "get": {
                "operationId": "runPeople",
                "summary": "Who `@` completes to in the run's comments",
                "parameters": [run_id],
                "responses": {
                    "200": _json(
                        _obj(
                            ["people"],
                            people={
                                "type": "array",
                                "items": _obj(["sub", "name", "handle"], sub=_STR, name=_STR, handle=_STR),
                            },
                        )
                    )
                }
                | _errors(*auth_errors),
            },
        },
        "/api/approvals": {
            "get": {
                "operationId": "openApprovals",
                "summary": "The token's inbox: open approvals it may decide",
                "parameters": [_param("open", "query", {"enum": ["1", "true"]})],
                "responses": {"200": _json(_obj(["approvals"], approvals={"type": "array", "items": _OBJ}))}
                | _errors(*auth_errors),
            },
        },
        "/api/slack/interactivity": {
            "post": {
                "operationId": "slackInteractivity",
                "summary": "Slack button presses (signed by Slack; slack.py)",
                "security": [],
                "requestBody": {"content": {"application/x-www-form-urlencoded": {"schema": _OBJ}}},
                "responses": {"200": _json(_OBJ, "the answer shown to the presser")} | _errors(400, 401, 404, 413),
            },
        },
        "/api/mentions": {
            "get": {
                "operationId": "mentions",
                "summary": "Who mentioned this token's person in a comment (newest last)",
                "responses": {"200": _json(_obj(["mentions"], mentions={"type": "array", "items": _OBJ}))}
                | _errors(*auth_errors),
            },
        },
        "/api/webhooks/deliveries": {
            "get": {
                "operationId": "webhookDeliveries",
                "summary": "Recent webhook deliveries (admins)",
                "parameters": [limit],
                "responses": {
                    "200": _json(
                        _obj(
                            ["deliveries", "receivers"],
                            deliveries={"type": "array", "items": _OBJ},
                            receivers={"type": "array", "items": _OBJ},
                        )
                    )
                }
                | _errors(*auth_errors),
            },
        },
        "/api/agents": {
            "get": {
                "operationId": "listAgents",
                "summary": "The registered agents and their approval policies",
                "responses": {
                    "200": _json(
                        _obj(
                            ["agents"],
                            agents={
                                "type": "array",
                                "items": _obj(
                                    ["name", "policies"],
                                    name=_STR,
                                    agent=_STR,
                                    description=_NULLABLE_STR,
                                    policies=_OBJ,
                                ),
                            },
                        )
                    )
                }
                | _errors(*auth_errors),
            },
        },
        "/api/me": {
            "get": {
                "operationId": "whoami",
                "summary": "Who the token is",
                "responses": {
                    "200": _json(
                        _obj(["sub", "name", "roles"], sub=_STR, name=_STR, roles={"type": "array", "items": _STR})
                    )
                }
                | _errors(*auth_errors),
            },
        },
        "/api/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document",
                "security": [],
                "responses": {"200": _json(_OBJ)},
            },
        },
        "/healthz": {
            "get": {
                "operationId": "healthz",
                "summary": "Liveness",
                "security": [],
                "responses": {"200": {"description": "alive", "content": text}},
            }
        },
        "/readyz": {
            "get": {
                "operationId": "readyz",
                "summary": "Readiness (503 while draining or without backend)",
                "security": [],
                "responses": {
                    "200": {"description": "ready", "content": text},
                    "503": {"description": "not ready", "content": text},
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus text (metrics or admin role)",
                "responses": {"200": {"description": "OK", "content": text}} | _errors(*auth_errors),
            }
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Runcast HTTP API",
            "version": __version__,
            "description": 'Errors answer `{"error": {"code", "message"}}` with the code\'s status. '
            "A body is checked by the same rules as the WebSocket command it stands for.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "responses": {"Error": _json(_ERROR, "an error with a stable code")},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
    }


def main(argv: list[str] | None = None) -> None:
    which = (argv if argv is not None else sys.argv[1:]) or ["openapi"]
    doc = {"asyncapi": asyncapi, "openapi": openapi}.get(which[0])
    if doc is None:
        raise SystemExit("usage: python -m runcast.specs asyncapi|openapi")
    json.dump(doc(), sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
