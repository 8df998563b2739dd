"""Approve with changes: an approver edits a tool call's arguments and approves the edited call.

Two halves:

- `check_edit` (plain code, on the hub): the edited arguments must be a JSON object that the tool's own JSON schema
  (the SDK tool's `params_json_schema`) accepts; else `invalid_arguments`, and the vote does not count. Edits need a
  policy with quorum 1 (with a quorum, the other approvers approved the call as the model wrote it).
- `edit_state` (the worker, before the resume): the SDK's saved RunState holds the call in several places (the model
  response, the generated items, the pause's interruption, the processed response the resume executes) and, in
  `context.tool_invocations`, a fingerprint of the call's arguments that the SDK checks when the call is approved
  ("Model reused a tool call ID for a different invocation"). Every copy of the call's `arguments` is replaced, and the
  fingerprint is recomputed with the SDK's own function (`agents._tool_invocation`, a private module: if the stored
  fingerprint of the original is not what that function gives, the layout changed and `EditUnsupported` is raised,
  so the run fails rather than run anything but what was approved). The tool then runs with the edited arguments,
  and the model's next turn sees the call with them (verified on openai-agents 0.24).
"""

from __future__ import annotations

import json
from typing import Any

from .protocol import ErrorCode, ProtocolError

INVALID_ARGUMENTS = ErrorCode.INVALID_ARGUMENTS


class EditUnsupported(Exception):
    """The saved RunState does not look as edit_state expects (another SDK version): nothing was changed."""


# changes(original, edited), the key-by-key difference an approval records, is approvals.changes: the decision record
# is built there, and approvals.py sits below this module (which reaches the Agents SDK through toolnames.py).


def check_edit(original: str, edited: str, schema: dict[str, Any] | None) -> str:
    """The edited arguments as compact JSON text, or ProtocolError(invalid_arguments) naming what is wrong."""
    import jsonschema

    try:
        value = json.loads(edited)
    except ValueError as exc:
        raise ProtocolError(INVALID_ARGUMENTS, f"the edited arguments are not JSON: {exc}", field="arguments") from None
    if not isinstance(value, dict):
        raise ProtocolError(INVALID_ARGUMENTS, "the edited arguments must be a JSON object", field="arguments")
    if schema is None:
        raise ProtocolError(
            INVALID_ARGUMENTS,
            "the hub does not know this tool's schema, so it cannot check an edit: "
            "approve the call as it is, or reject it with instructions",
            field="arguments",
        )
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        where = "/".join(str(p) for p in e.absolute_path) or "(the object)"
        raise ProtocolError(
            INVALID_ARGUMENTS,
            f"the edited arguments do not fit the tool's schema at {where}: {e.message}",
            field="arguments",
            path=[*e.absolute_path],
        )
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def tool_schema(agent: Any, wire_tool: str) -> dict[str, Any] | None:
    """The JSON schema of the function tool the wire calls `wire_tool`, anywhere in the agent graph (None if
    unknown)."""
    from agents import Agent
    from agents._tool_identity import get_explicit_function_tool_namespace
    from agents.tool import FunctionTool

    from .toolnames import qualified

    seen: set[int] = set()
    stack = [agent]
    while stack:
        a = stack.pop()
        if a is None or id(a) in seen:
            continue
        seen.add(id(a))
        for tool in getattr(a, "tools", None) or []:
            if isinstance(tool, FunctionTool):
                if qualified(tool.name, get_explicit_function_tool_namespace(tool)) == wire_tool:
                    return dict(tool.params_json_schema)
                if getattr(tool, "_is_agent_tool", False):
                    stack.append(getattr(tool, "_agent_instance", None))
        for h in getattr(a, "handoffs", None) or []:
            if isinstance(h, Agent):
                stack.append(h)
            else:
                ref = getattr(h, "_agent_ref", None)
                stack.append(ref() if ref is not None else None)
    return None


def _replace(value: Any, call_id: str, arguments: str) -> int:
    n = 0
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            if v.get("call_id") == call_id and "arguments" in v:
                v["arguments"] = arguments
                n += 1
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return n


def edit_state(state: dict[str, Any], call_id: str, arguments: str) -> None:
    """Make the saved RunState (its JSON, edited in place) hold `arguments` for the call `call_id`."""
    from agents._tool_invocation import tool_invocation_identity_and_scope

    record = ((state.get("context") or {}).get("tool_invocations") or {}).get(call_id)
    step = (state.get("current_step") or {}).get("data") or {}
    raw = next(
        (
            i.get("raw_item")
            for i in step.get("interruptions") or []
            if (i.get("raw_item") or {}).get("call_id") == call_id
        ),
        None,
    )
    if not isinstance(record, dict) or not isinstance(raw, dict):
        raise EditUnsupported(f"the saved state has no invocation record or interruption for {call_id}")
    before = tool_invocation_identity_and_scope(raw)
    if before is None or (before[2], before[3]) != (record.get("approval_scope"), record.get("fingerprint")):
        raise EditUnsupported("the SDK's invocation fingerprint is not computed as expected (another SDK version?)")
    after = tool_invocation_identity_and_scope({**raw, "arguments": arguments})
    assert after is not None
    if _replace(state, call_id, arguments) == 0:
        raise EditUnsupported(f"no copy of the call {call_id} in the saved state")
    record["fingerprint"] = after[3]
