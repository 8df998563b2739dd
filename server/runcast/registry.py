"""Agents a hub can run, and the approval policy of each of their tools.

A user's module (``runcast serve --agents myapp.agents``) defines ``AGENTS``: a dict from a name to an ``Agent`` or
an ``AgentSpec``. Optionally ``POLICIES``: a dict from tool name to ``ApprovalPolicy`` (or its fields as a dict),
used for agents given as a bare ``Agent``.

Policy keys are the tool names the wire shows (`toolnames.wire_name`): `files.delete_file` for a tool in the `files`
namespace, `label.tool` (or `label.*`) for an MCP server's tools. A bare key (`delete_file`) is accepted only when it
names exactly one tool of the agent graph; it is then stored under that tool's full name, so it can never stand for a
different, or a looser, policy than the full one. A key that names no tool of the agent graph (its tools, handoffs,
agents used as tools) is an error when the spec is built: a typo must not leave a tool under the default policy.

    from agents import Agent, function_tool
    from runcast import AgentSpec, ApprovalPolicy

    @function_tool(needs_approval=True)
    def refund(order_id: str, cents: int) -> str: ...

    AGENTS = {
        "support": AgentSpec(
            Agent(name="Support", instructions="...", tools=[refund]),
            policies={"refund": ApprovalPolicy(roles=["finance"], quorum=2, allow_self=False, expires_s=900)},
            description="Answers tickets; refunds need two people from finance.",
        ),
    }
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from .approvals import ApprovalPolicy
from .conversation import TalkPolicy
from .toolnames import ToolNames, tool_names


class PolicyError(ValueError):
    """An approval policy keyed by a name that is not (or not only) one tool of the agent."""


def resolve_policy_keys(
    agent_name: str, policies: dict[str, ApprovalPolicy], known: ToolNames
) -> dict[str, ApprovalPolicy]:
    """Policy keys -> the full wire names they stand for. Raises PolicyError for a key that names no tool, a bare key
    shared by tools of several namespaces, or a bare key and a full key given for the same tool."""
    out: dict[str, ApprovalPolicy] = {}
    exists = ", ".join(known.sorted()) or "(none)"
    for key, policy in policies.items():
        if key in known.names or any(key.startswith(p) and len(key) > len(p) for p in known.prefixes):
            full = key
        else:
            matches = sorted(n for n in known.names if n.rsplit(".", 1)[-1] == key and "." in n)
            if len(matches) > 1:
                raise PolicyError(
                    f"agent {agent_name!r}: policy key {key!r} is ambiguous: it is the bare name of "
                    f"{', '.join(matches)}; key the policy by the full name"
                )
            if not matches:
                raise PolicyError(
                    f"agent {agent_name!r}: policy key {key!r} matches no tool of the agent; its tools are: {exists}"
                )
            full = matches[0]
        if full in out:
            raise PolicyError(f"agent {agent_name!r}: policy keys {key!r} and {full!r} name the same tool; keep one")
        out[full] = policy
    return out


@dataclass
class AgentSpec:
    agent: Any  # agents.Agent
    policies: dict[str, ApprovalPolicy] = field(default_factory=dict)
    default_policy: ApprovalPolicy = field(default_factory=ApprovalPolicy)
    description: str = ""
    notify: list[Any] = field(default_factory=list)  # webhooks for every event of this agent's runs (webhooks.py)
    talk: TalkPolicy = field(
        default_factory=TalkPolicy
    )  # who may talk to its runs, and while it is busy (conversation.py)

    def __post_init__(self) -> None:
        self.policies = resolve_policy_keys(getattr(self.agent, "name", "?"), self.policies, tool_names(self.agent))

    def policy_for(self, tool: str | None) -> ApprovalPolicy:
        """The policy of a tool, by its wire name (`toolnames.wire_name`)."""
        tool = tool or ""
        if tool in self.policies:
            return self.policies[tool]
        if "." in tool:  # an MCP server's wildcard: "label.*"
            star = tool.split(".", 1)[0] + ".*"
            if star in self.policies:
                return self.policies[star]
        return self.default_policy


class Registry:
    def __init__(self, specs: dict[str, AgentSpec] | None = None) -> None:
        self.specs: dict[str, AgentSpec] = dict(specs or {})

    def get(self, name: str) -> AgentSpec | None:
        return self.specs.get(name)

    def names(self) -> list[str]:
        return list(self.specs)

    def describe(self) -> list[dict[str, Any]]:
        return [
            {
                "name": n,
                "agent": s.agent.name,
                "description": s.description,
                "policies": {t: p.wire() | {"expires_s": p.expires_s} for t, p in s.policies.items()},
                "talk": s.talk.wire(),
            }
            for n, s in self.specs.items()
        ]

    def update(self, other: Registry) -> None:
        self.specs.update(other.specs)

    @classmethod
    def from_module(cls, module_name: str) -> Registry:
        try:
            return cls._from_module(module_name)
        except PolicyError as err:
            raise SystemExit(f"runcast: module {module_name!r}: {err}") from None

    @classmethod
    def _from_module(cls, module_name: str) -> Registry:
        mod = importlib.import_module(module_name)
        agents = getattr(mod, "AGENTS", None)
        if not isinstance(agents, dict) or not agents:
            raise SystemExit(
                f"runcast: module {module_name!r} must define AGENTS, a dict of name -> Agent or AgentSpec"
            )
        raw = getattr(mod, "POLICIES", {}) or {}
        policies = {t: p if isinstance(p, ApprovalPolicy) else ApprovalPolicy(**p) for t, p in raw.items()}
        specs: dict[str, AgentSpec] = {}
        used: set[str] = set()
        for name, value in agents.items():
            if isinstance(value, AgentSpec):
                specs[name] = value
                continue
            # POLICIES is shared by the bare agents: each takes the keys that name its tools; a key that names a tool
            # of none of them is an error.
            known = tool_names(value)
            mine = {}
            for key, pol in policies.items():
                try:
                    resolve_policy_keys(value.name, {key: pol}, known)
                except PolicyError as err:
                    if "ambiguous" in str(err):
                        raise
                    continue
                mine[key] = pol
                used.add(key)
            specs[name] = AgentSpec(agent=value, policies=mine)
        unused = [k for k in policies if k not in used]
        if unused:
            bare = [v for v in agents.values() if not isinstance(v, AgentSpec)]
            names = sorted({n for v in bare for n in tool_names(v).sorted()})
            raise PolicyError(
                f"POLICIES key {unused[0]!r} matches no tool of the agents given as a bare Agent; "
                f"their tools are: {', '.join(names) or '(none)'}"
            )
        return cls(specs)
