"""The one name of a tool call, as the wire shows it and as approval policies are keyed.

A tool call is named by `wire_name(item)`: the SDK's display name (`namespace.name` for a tool in a namespace,
`tool_namespace()`), and for an MCP tool `server.name` (hosted MCP: the server label; a local MCP server: its name).
`tool.called`, `approval.requested` and the policy lookup all use it.

`tool_names(agent)` lists the names an agent graph can call (its tools, its handoffs, the agents it uses as tools and
theirs, recursively), for checking policy keys when a module loads. MCP tools are only known at run time, so each MCP
server contributes a prefix (`label.`) instead of names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agents.tool import ToolOriginType


def _get(obj: Any, key: str) -> Any:
    if isinstance(obj, dict):
        return obj.get(key)
    return getattr(obj, key, None)


def qualified(name: str | None, namespace: str | None) -> str | None:
    """The SDK's display rule: `namespace.name`, except the synthetic namespace that equals the name."""
    if not name:
        return None
    if namespace and namespace != name:
        return f"{namespace}.{name}"
    return name


def wire_name(item: Any) -> str | None:
    """The name of the tool a ToolCallItem / ToolApprovalItem / ToolCallOutputItem calls."""
    raw = getattr(item, "raw_item", None)
    name = getattr(item, "tool_name", None) or _get(raw, "name")
    label = _get(raw, "server_label")
    if label and name:  # hosted MCP: mcp_call, mcp_approval_request
        return f"{label}.{name}"
    origin = getattr(item, "tool_origin", None)
    if origin is not None and getattr(origin, "type", None) == ToolOriginType.MCP and origin.mcp_server_name and name:
        return f"{origin.mcp_server_name}.{name}"
    namespace = getattr(item, "tool_namespace", None) or _get(raw, "namespace")
    return qualified(name, namespace if isinstance(namespace, str) else None)


@dataclass
class ToolNames:
    names: set[str] = field(default_factory=set)  # full wire names
    prefixes: set[str] = field(default_factory=set)  # "label." of MCP servers (their tools are known at run time)

    def sorted(self) -> list[str]:
        return sorted(self.names) + sorted(f"{p}*" for p in self.prefixes)


def tool_names(agent: Any) -> ToolNames:
    """Every tool name an agent graph can call: tools, handoffs, agents used as tools (recursively)."""
    from agents import Agent, Handoff
    from agents._tool_identity import get_explicit_function_tool_namespace
    from agents.tool import FunctionTool, HostedMCPTool

    out = ToolNames()
    seen: set[int] = set()

    def walk(a: Any) -> None:
        if a is None or id(a) in seen:
            return
        seen.add(id(a))
        for tool in getattr(a, "tools", None) or []:
            if isinstance(tool, HostedMCPTool):
                label = dict(tool.tool_config).get("server_label")
                if label:
                    out.prefixes.add(f"{label}.")
                continue
            if isinstance(tool, FunctionTool):
                name = qualified(tool.name, get_explicit_function_tool_namespace(tool))
                if name:
                    out.names.add(name)
                if getattr(tool, "_is_agent_tool", False):
                    walk(getattr(tool, "_agent_instance", None))
                continue
            name = getattr(tool, "name", None)
            if isinstance(name, str) and name:
                out.names.add(name)
        for server in getattr(a, "mcp_servers", None) or []:
            try:
                out.prefixes.add(f"{server.name}.")
            except Exception:
                pass
        for h in getattr(a, "handoffs", None) or []:
            if isinstance(h, Agent):
                out.names.add(Handoff.default_tool_name(h))
                walk(h)
            else:
                out.names.add(h.tool_name)
                ref = getattr(h, "_agent_ref", None)
                walk(ref() if ref is not None else None)

    walk(agent)
    return out
