"""The HTTP API's input rules and error answers, shared by every route in hub.py.

A body is checked by the same command models as a WebSocket frame (protocol.py): `POST /api/runs` is a `start`,
`POST .../approvals/{id}` a `decide`, `POST .../cancel` a `cancel`, with the path's ids filled in. So a body obeys
the frame's limits (bytes, nesting depth) and gets the frame's error codes. Query parameters are integers in a
range or a `bad_request`. Every refusal answers `{"error": {"code", "message", ...}}` with the status of HTTP_STATUS.
"""

from __future__ import annotations

from typing import Any, TypeVar, get_args

from starlette.requests import Request
from starlette.responses import JSONResponse

from .protocol import (
    HTTP_STATUS,
    MAX_DEPTH,
    MAX_FRAME_BYTES,
    Cancel,
    Comment,
    Decide,
    DeleteComment,
    EditComment,
    ErrorCode,
    ProtocolError,
    Rerun,
    ResolveThread,
    Say,
    Start,
    Withdraw,
    decode_value,
    parse_command,
)

C = TypeVar(
    "C", Start, Decide, Cancel, Say, Withdraw, Rerun, Comment, EditComment, DeleteComment, ResolveThread
)  # the commands the HTTP API takes as a body

MAX_BODY_BYTES = MAX_FRAME_BYTES  # a body is a command: the frame's limit
LIST_LIMIT = (1, 1000, 50)  # GET /api/runs?limit=: min, max, default
EVENTS_LIMIT = (1, 1000, 500)  # GET /api/runs/{id}/events?limit=
MAX_SEQ = 2**53 - 1  # the largest seq a client may name (JSON-safe; real seqs are far below)
_MAX_DIGITS = 20

__all__ = ["MAX_BODY_BYTES", "MAX_DEPTH", "command", "error_response", "query_int", "read_body"]


def error_response(err: ProtocolError, status: int | None = None) -> JSONResponse:
    body: dict[str, Any] = {"code": err.code, "message": err.message}
    body.update({k: v for k, v in err.detail.items() if k != "id"})
    return JSONResponse({"error": body}, status_code=status or HTTP_STATUS.get(err.code, 400))


async def read_body(request: Request, max_bytes: int = MAX_BODY_BYTES) -> bytes:
    """The body, refused with too_large as soon as it passes max_bytes (it is never read whole into memory)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise ProtocolError(ErrorCode.TOO_LARGE, f"body of {declared} bytes is over the {max_bytes} byte limit")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise ProtocolError(ErrorCode.TOO_LARGE, f"body is over the {max_bytes} byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


async def command(request: Request, model: type[C], defaults: dict[str, Any] | None = None, **path: str) -> C:
    """The JSON body as the WebSocket command `model` (Start, Decide, Cancel, Say...), with the path's fields (which win
    over the body's). Checked by parse_command, as a frame is, so a body gets a frame's error codes and messages."""
    raw = await read_body(request)
    body = decode_value(raw or b"{}", "json", "body", MAX_BODY_BYTES)
    if not isinstance(body, dict):
        raise ProtocolError(ErrorCode.BAD_FRAME, f"body must be a JSON object, got {type(body).__name__}")
    (type_,) = get_args(model.model_fields["type"].annotation)  # Literal["start"] -> "start"
    cmd = parse_command({**(defaults or {}), **body, **path, "type": type_})
    assert isinstance(cmd, model)  # parse_command picks the model by "type", which is model's own
    return cmd


def query_int(request: Request, name: str, lo: int, hi: int, default: int, clamp: bool = False) -> int:
    """An integer query parameter in [lo, hi]: out of range it is clamped (clamp=True) or refused."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    if not (raw.isascii() and raw.isdigit() and len(raw) <= _MAX_DIGITS):
        raise ProtocolError(
            ErrorCode.BAD_REQUEST, f"query parameter '{name}' must be a whole number from {lo} to {hi}", field=name
        )
    value = int(raw)
    if lo <= value <= hi:
        return value
    if clamp:
        return max(lo, min(hi, value))
    raise ProtocolError(ErrorCode.BAD_REQUEST, f"query parameter '{name}' must be from {lo} to {hi}", field=name)
