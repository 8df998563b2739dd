"""Agents a hub can run, and the approval policy of each of their tools.

A user's module (``runcast serve --agents myapp.agents``) defines ``AGENTS``: a dict from a name to an ``Agent`` or
an ``AgentSpec``. Optionally ``POLICIES``: a dict from tool name to ``ApprovalPolicy`` (or its fields as a dict),
used for agents given as a bare ``Agent``.

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


@dataclass
class AgentSpec:
    agent: Any  # agents.Agent
    policies: dict[str, ApprovalPolicy] = field(default_factory=dict)
    default_policy: ApprovalPolicy = field(default_factory=ApprovalPolicy)
    description: str = ""

    def policy_for(self, tool: str | None) -> ApprovalPolicy:
        return self.policies.get(tool or "", self.default_policy)


class Registry:
    def __init__(self, specs: dict[str, AgentSpec] | None = None) -> None:
        self.specs: dict[str, AgentSpec] = dict(specs or {})

    def get(self, name: str) -> AgentSpec | None:
        return self.specs.get(name)

    def names(self) -> list[str]:
        return list(self.specs)

    def describe(self) -> list[dict[str, Any]]:
        return [
            {"name": n, "agent": s.agent.name, "description": s.description,
             "policies": {t: p.wire() | {"expires_s": p.expires_s} for t, p in s.policies.items()}}
            for n, s in self.specs.items()
        ]

    def update(self, other: "Registry") -> None:
        self.specs.update(other.specs)

    @classmethod
    def from_module(cls, module_name: str) -> "Registry":
        mod = importlib.import_module(module_name)
        agents = getattr(mod, "AGENTS", None)
        if not isinstance(agents, dict) or not agents:
            raise SystemExit(f"runcast: module {module_name!r} must define AGENTS, a dict of name -> Agent or AgentSpec")
        raw = getattr(mod, "POLICIES", {}) or {}
        policies = {t: p if isinstance(p, ApprovalPolicy) else ApprovalPolicy(**p) for t, p in raw.items()}
        specs: dict[str, AgentSpec] = {}
        for name, value in agents.items():
            specs[name] = value if isinstance(value, AgentSpec) else AgentSpec(agent=value, policies=dict(policies))
        return cls(specs)
