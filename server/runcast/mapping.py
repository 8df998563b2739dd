"""Agents SDK stream events -> wire events (PROTOCOL.md), and the merging of fast text deltas.

Plain code: `EventMapper.map(sdk_event)` returns `(type, data)` pairs; `DeltaCoalescer` decides, given the clock,
when buffered deltas leave. The worker feeds both and appends what comes out.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterable
from typing import Any

from .toolnames import wire_name

# Tool outputs and arguments are cut to this many characters on the wire, with `truncated: true`.
MAX_OUTPUT_CHARS = 16_384
# agents.models.fake_id.FAKE_RESPONSES_ID: the id the SDK gives every item of a Chat Completions response (that API has
# no item ids). Every message of a run would have the same `item_id`, and a client would fold them into one.
FAKE_ID = "__fake_id__"
_ID_PREFIX = {"message": "msg", "reasoning": "rs"}
Wire = tuple[str, dict[str, Any]]


def _get(obj: Any, key: str, default: Any = None) -> Any:
    if isinstance(obj, dict):
        return obj.get(key, default)
    return getattr(obj, key, default)


def _agent_name(agent: Any) -> str | None:
    return getattr(agent, "name", None) if agent is not None else None


def _safe_item_agent(item: Any) -> str | None:
    try:
        return _agent_name(item.agent)
    except Exception:
        return None


def cut(text: str, limit: int = MAX_OUTPUT_CHARS) -> tuple[str, bool]:
    return (text, False) if len(text) <= limit else (text[:limit], True)


def to_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if hasattr(value, "model_dump_json"):
        dumped: str = value.model_dump_json()
        return dumped
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except Exception:
        return str(value)


def _handoff_target(agent: Any, tool_name: str | None) -> str | None:
    """The agent a `transfer_to_*` call goes to, read from the calling agent's handoffs."""
    for h in getattr(agent, "handoffs", None) or []:
        name = getattr(h, "tool_name", None)
        target = getattr(h, "agent_name", None)
        if name is None and hasattr(h, "name"):  # a plain Agent in `handoffs`
            from agents import Handoff

            name, target = Handoff.default_tool_name(h), h.name
        if name == tool_name:
            return target
    if tool_name and tool_name.startswith("transfer_to_"):
        return tool_name[len("transfer_to_") :]
    return None


class EventMapper:
    """Maps one run's SDK events. Keeps what the mapping needs across events (current agent, item -> call ids)."""

    def __init__(self, current_agent: str | None = None) -> None:
        self.current_agent = current_agent
        self._call_ids: dict[str, str] = {}  # function_call item id -> call_id (argument deltas name the item)
        self._own_ids: dict[
            str, str
        ] = {}  # "message" / "reasoning" -> the id standing for FAKE_ID in the item now streamed

    def _item_id(self, kind: str, item_id: Any, new: bool = False) -> Any:
        """`item_id`, or for the SDK's placeholder id one of our own, the same for every event of one item: a fresh one
        when an item starts (`new`), and kept until its completed event."""
        if item_id != FAKE_ID:
            return item_id
        if new or kind not in self._own_ids:
            self._own_ids[kind] = f"{_ID_PREFIX[kind]}_{secrets.token_hex(6)}"
        return self._own_ids[kind]

    def _done_id(self, kind: str, item_id: Any) -> Any:
        own = self._item_id(kind, item_id)
        self._own_ids.pop(kind, None)  # the next item of this kind gets an id of its own
        return own

    def map(self, ev: Any) -> list[Wire]:
        kind = getattr(ev, "type", None)
        if kind == "raw_response_event":
            return self._raw(ev.data)
        if kind == "agent_updated_stream_event":
            name = _agent_name(ev.new_agent)
            if name == self.current_agent:
                return []  # the SDK re-announces the agent at every start and resume
            self.current_agent = name
            return [("agent.updated", {"agent": name})]
        if kind == "run_item_stream_event":
            return self._item(ev.name, ev.item)
        return []

    def _raw(self, d: Any) -> list[Wire]:
        t = _get(d, "type")
        if t == "response.output_text.delta":
            return [
                (
                    "message.delta",
                    {"item_id": self._item_id("message", _get(d, "item_id")), "delta": _get(d, "delta") or ""},
                )
            ]
        if t in ("response.reasoning_summary_text.delta", "response.reasoning_text.delta"):
            return [
                (
                    "reasoning.delta",
                    {"item_id": self._item_id("reasoning", _get(d, "item_id")), "delta": _get(d, "delta") or ""},
                )
            ]
        if t == "response.output_item.added":
            item = _get(d, "item")
            if _get(item, "type") in _ID_PREFIX:
                self._item_id(_get(item, "type"), _get(item, "id"), new=True)
            if _get(item, "type") == "function_call" and _get(item, "id"):
                self._call_ids[_get(item, "id")] = _get(item, "call_id")
            return []
        if t == "response.function_call_arguments.delta":
            item_id = _get(d, "item_id")
            return [
                ("tool.args.delta", {"call_id": self._call_ids.get(item_id, item_id), "delta": _get(d, "delta") or ""})
            ]
        return []  # response.created, *.done, content parts: folded into the events above (usage: usage_data)

    @staticmethod
    def _mcp_output(call_id: str | None, raw: Any) -> list[Wire]:
        output, error = _get(raw, "output"), _get(raw, "error")
        if output is None and error is None:
            return []
        text, truncated = cut(to_text(output if output is not None else ""))
        data: dict[str, Any] = {
            "call_id": call_id,
            "output": text,
            "server": _get(raw, "server_label"),
            "tool": _get(raw, "name"),
        }
        if error is not None:
            data["error"] = cut(to_text(error))[0]
        if truncated:
            data["truncated"] = True
        return [("tool.output", data)]

    def _item(self, name: str, item: Any) -> list[Wire]:
        raw = getattr(item, "raw_item", None)
        agent = _safe_item_agent(item)
        if name == "message_output_created":
            from agents import ItemHelpers

            return [
                (
                    "message.completed",
                    {
                        "item_id": self._done_id("message", _get(raw, "id")),
                        "text": ItemHelpers.text_message_output(item),
                        "agent": agent,
                    },
                )
            ]
        if name == "tool_called":
            args, truncated = cut(to_text(_get(raw, "arguments", "") or ""))
            data = {
                "call_id": item.call_id,
                "tool": wire_name(item) or _get(raw, "type"),
                "arguments": args,
                "agent": agent,
            }
            if truncated:
                data["truncated"] = True
            out: list[Wire] = [("tool.called", data)]
            if _get(raw, "type") == "mcp_call":
                # A hosted MCP call ran on the model's side: its item carries the server's answer, and no
                # tool_output follows it. Send the answer as the call's tool.output.
                out += self._mcp_output(item.call_id, raw)
            return out
        if name == "tool_output":
            output, truncated = cut(to_text(getattr(item, "output", "")))
            data = {"call_id": item.call_id, "output": output}
            if truncated:
                data["truncated"] = True
            return [("tool.output", data)]
        if name == "handoff_requested":
            return [
                (
                    "handoff.requested",
                    {
                        "from": agent,
                        "to": _handoff_target(item.agent, _get(raw, "name")),
                        "call_id": _get(raw, "call_id"),
                    },
                )
            ]
        if name == "handoff_occured":  # sic: the SDK's spelling
            return [
                ("handoff.completed", {"from": _agent_name(item.source_agent), "to": _agent_name(item.target_agent)})
            ]
        if name == "reasoning_item_created":
            summary = "\n".join(_get(s, "text", "") for s in (_get(raw, "summary") or []))
            return [
                ("reasoning.completed", {"item_id": self._done_id("reasoning", _get(raw, "id")), "summary": summary})
            ]
        if name == "mcp_list_tools":
            tools = [_get(t, "name") for t in (_get(raw, "tools") or [])]
            return [("mcp.tools_listed", {"server": _get(raw, "server_label"), "tools": tools})]
        if name == "mcp_approval_requested":
            return [
                (
                    "mcp.approval.requested",
                    {
                        "request_id": _get(raw, "id"),
                        "server": _get(raw, "server_label"),
                        "tool": _get(raw, "name"),
                        "arguments": _get(raw, "arguments"),
                    },
                )
            ]
        if name == "mcp_approval_response":
            return [
                (
                    "mcp.approval.responded",
                    {
                        "request_id": _get(raw, "approval_request_id"),
                        "approved": bool(_get(raw, "approve")),
                        "reason": _get(raw, "reason"),
                    },
                )
            ]
        if name == "tool_search_called":
            return [("tool.search.called", {"item_id": _get(raw, "id"), "agent": agent})]
        if name == "tool_search_output_created":
            return [("tool.search.output", {"item_id": _get(raw, "id"), "agent": agent})]
        return [("item.unknown", {"name": name, "agent": agent})]  # a newer SDK name: forwarded, never dropped silently


def json_safe(value: Any, limit: int = MAX_OUTPUT_CHARS) -> tuple[Any, bool]:
    """A value as JSON data (pydantic models dumped, dataclasses as dicts, anything else as its text), and whether it
    was cut: a value whose JSON text is over `limit` characters becomes that text, cut (like tool output)."""
    import dataclasses

    if hasattr(value, "model_dump"):
        value = value.model_dump(mode="json")
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    try:
        text = json.dumps(value, ensure_ascii=False, default=str)
        data = json.loads(text)
    except Exception:
        data = text = str(value)
    if len(text) > limit:
        return text[:limit], True
    return data, False


def usage_data(usage: Any) -> dict[str, int]:
    """The SDK's own aggregate (`result.context_wrapper.usage`): every model call of the run, across pauses and
    resumes (the RunState carries it) and in agents used as tools."""
    out = {k: int(getattr(usage, k, 0) or 0) for k in ("requests", "input_tokens", "output_tokens", "total_tokens")}
    cached = getattr(getattr(usage, "input_tokens_details", None), "cached_tokens", None)
    reasoning = getattr(getattr(usage, "output_tokens_details", None), "reasoning_tokens", None)
    if cached:
        out["cached_tokens"] = int(cached)
    if reasoning:
        out["reasoning_tokens"] = int(reasoning)
    return out


MAX_MESSAGE_CHARS = 2000
MAX_CAUSES = 8  # links of an exception's cause chain read into one message

# Secrets a model client's error can carry: API keys (OpenAI's sk-..., and the like), bearer tokens, credentials in
# URLs, query strings (signed URLs, `?key=` / `?api-key=` of Azure and others), and `key=value` pairs named like a key.
_SECRETS = [
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+"), r"\1 [redacted]"),
    (re.compile(r"\b(sk|rk|pk)-[A-Za-z0-9_*-]{6,}"), "[redacted key]"),
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s:@]+:[^/\s@]*@"), r"\1[redacted]@"),
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s?#'\"]+)\?[^\s#'\"]*"), r"\1?[redacted]"),
    (
        re.compile(
            r"(?i)\b((?:api[-_]?key|access[-_]?token|token|secret|password)[\"']?\s*[:=]\s*[\"']?)"
            r"[^\s\"',;}]+"
        ),
        r"\1[redacted]",
    ),
]


def redact(text: str) -> str:
    """`text` without the secrets an error message can carry (see _SECRETS)."""
    for pattern, repl in _SECRETS:
        text = pattern.sub(repl, text)
    return text


def cause_chain(error: BaseException) -> list[BaseException]:
    """The exception and what caused it: `__cause__` (raise ... from), else the `__context__` it was raised in."""
    chain: list[BaseException] = []
    e: BaseException | None = error
    while e is not None and e not in chain and len(chain) < MAX_CAUSES:
        chain.append(e)
        e = e.__cause__ if e.__cause__ is not None else (None if e.__suppress_context__ else e.__context__)
    return chain


def failure_message(error: BaseException, limit: int = MAX_MESSAGE_CHARS) -> str:
    """The exception's cause chain in one line, secrets redacted: "Connection error: peer closed connection without
    sending complete message body (incomplete chunked read)". A link whose text the line already holds is skipped (the
    openai client wraps the HTTP library's error, which wraps its own), and one with no text is named by its class."""
    parts: list[str] = []
    for e in cause_chain(error):
        text = " ".join(str(e).split()) or type(e).__name__
        if any(text.rstrip(".") in p for p in parts):
            continue
        parts.append(text)
    line = ": ".join(p.rstrip(".") if i < len(parts) - 1 else p for i, p in enumerate(parts))
    return redact(line)[:limit]


def failure_data(error: BaseException) -> dict[str, Any]:
    """`run.failed` data for an exception from the stream: its class as `code`, its cause chain in one line as the
    `message` (failure_message), and for a guardrail's tripwire the guardrail: `name`, `side` (input, output,
    tool_input, tool_output) and its JSON-safe `output_info`."""
    data: dict[str, Any] = {"code": type(error).__name__, "message": failure_message(error)}
    guardrail, output, side = None, None, ""  # side is set wherever guardrail is
    result = getattr(error, "guardrail_result", None)
    if result is not None:  # Input/OutputGuardrailTripwireTriggered
        guardrail, output = result.guardrail, result.output
        side = "output" if "Output" in type(error).__name__ else "input"
    elif getattr(error, "guardrail", None) is not None:  # ToolInput/ToolOutputGuardrailTripwireTriggered
        guardrail, output = error.guardrail, getattr(error, "output", None)  # type: ignore[attr-defined]
        side = "tool_output" if "Output" in type(error).__name__ else "tool_input"
    if guardrail is not None:
        name = guardrail.get_name() if hasattr(guardrail, "get_name") else getattr(guardrail, "name", None)
        info, truncated = json_safe(getattr(output, "output_info", None))
        g: dict[str, Any] = {"name": name, "side": side, "output_info": info}
        if truncated:
            g["truncated"] = True
        data["guardrail"] = g
        data["message"] = f"{side.replace('_', ' ').capitalize()} guardrail {name!r} tripped"
    return data


_MERGE_KEY = {"message.delta": "item_id", "reasoning.delta": "item_id", "tool.args.delta": "call_id"}


class DeltaCoalescer:
    """Merges consecutive deltas of one item that arrive within `window_s`, so a run is not one frame per token.

    A throttle with a leading edge: the first delta of an item (and a delta after a quiet window) goes out at once,
    since a person waits for the first words of an answer; the deltas that follow within `window_s` of the last
    one sent are merged into one, sent when the window ends. So at most one delta per item per window, and no delta
    waits for a window that nothing else shares.

    push() returns the events ready to append now; due(now) returns a buffered delta whose window has passed;
    flush() returns whatever is buffered (call it before any non-delta event and at the end of a stream).
    """

    def __init__(self, window_s: float = 0.025, max_chars: int = 4096) -> None:
        self.window_s = window_s
        self.max_chars = max_chars
        self._buf: Wire | None = None
        self._key: tuple[str, Any] | None = None  # the item whose window is open
        self._since = 0.0  # when that window opened (the last delta of the item sent)

    @property
    def pending(self) -> bool:
        return self._buf is not None

    def deadline(self) -> float | None:
        return self._since + self.window_s if self._buf is not None else None

    def push(self, events: Iterable[Wire], now: float) -> list[Wire]:
        out: list[Wire] = []
        for kind, data in events:
            key = _MERGE_KEY.get(kind)
            if key is None:
                out += self.flush()
                out.append((kind, data))
                continue
            item = (kind, data[key])
            if item != self._key:  # the first delta of an item: the one before leaves first, this one at once
                out += self.flush()
                out.append((kind, dict(data)))
                self._key, self._since = item, now
                continue
            if self._buf is None:
                self._buf = (kind, dict(data))
            else:
                self._buf[1]["delta"] += data["delta"]
            if now - self._since >= self.window_s or len(self._buf[1]["delta"]) >= self.max_chars:
                out += self._send(now)
        return out

    def due(self, now: float) -> list[Wire]:
        if self._buf is not None and now - self._since >= self.window_s:
            return self._send(now)
        return []

    def _send(self, now: float) -> list[Wire]:
        """The buffered delta goes out; the item's next window opens now."""
        buf, self._buf, self._since = self._buf, None, now
        return [buf] if buf is not None else []

    def flush(self) -> list[Wire]:
        self._key = None  # whatever comes next starts a window of its own
        if self._buf is None:
            return []
        buf, self._buf = self._buf, None
        return [buf]
