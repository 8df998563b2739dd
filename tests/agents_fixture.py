"""Agents the integration tests load next to the demo ones (`--agents agents_fixture`)."""

from typing import Any

from agents import Agent

from runcast import AgentSpec, ApprovalPolicy
from runcast.demo import DemoModel, Step, demo_registry

_demo = demo_registry(expires_s=None).get("demo")
assert _demo is not None


def _broken(input_: Any) -> Step:
    raise RuntimeError("the model fell over")


AGENTS = {
    # delete_files expires one second after it is requested
    "demo-expiring": AgentSpec(_demo.agent, {"delete_files": ApprovalPolicy(roles=["approver"], expires_s=1.0)}),
    # the person who started the run may not approve its calls
    "demo-strict": AgentSpec(_demo.agent, {"delete_files": ApprovalPolicy(roles=["approver"], allow_self=False)}),
    "broken": Agent(name="Broken", model=DemoModel(_broken)),
}
