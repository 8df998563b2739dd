"""Agents the integration tests load next to the demo ones (`--agents agents_fixture`)."""

import asyncio
from typing import Any

from agents import Agent, RunContextWrapper, function_tool

from runcast import AgentSpec, ApprovalPolicy
from runcast.demo import SCRATCH, DemoModel, Step, _get, _log_execution, delete_files, demo_registry

_demo = demo_registry(expires_s=None).get("demo")
assert _demo is not None


def _broken(input_: Any) -> Step:
    raise RuntimeError("the model fell over")


def _outputs(input_: Any) -> list[str]:
    items = input_ if isinstance(input_, list) else []
    return [str(_get(i, "output")) for i in items if _get(i, "type") == "function_call_output"]


def _two_deletes(input_: Any) -> Step:
    """Two calls of delete_files in one response: one pause with two approvals."""
    outs = _outputs(input_)
    if outs:
        return Step(f"Both answers are in: {' | '.join(outs)}")
    return Step("Two separate deletions, each needs its own approval.", ("delete_files", {"paths": SCRATCH[:1]}),
                more_calls=(("delete_files", {"paths": SCRATCH[1:]}),))


@function_tool(needs_approval=True)
async def slow_delete(ctx: RunContextWrapper[Any], paths: list[str]) -> str:
    """Deletes slowly: logs its execution when it starts, then takes a few seconds (so a test can kill its worker)."""
    _log_execution(ctx, "slow_delete", paths=paths)
    await asyncio.sleep(4)
    return f"deleted {len(paths)} files slowly"


def _slow_script(input_: Any) -> Step:
    outs = _outputs(input_)
    if outs:
        return Step(f"Finished: {outs[-1]}")
    return Step("I will delete the scratch files, slowly.", ("slow_delete", {"paths": list(SCRATCH)}))


def _long_turn(input_: Any) -> Step:
    """One long streamed turn (two seconds at the tests' pace) that ends asking for an approval."""
    if _outputs(input_):
        return Step("Done.")
    return Step(" ".join(["Streaming a long explanation before asking to delete anything."] * 25),
                ("delete_files", {"paths": list(SCRATCH)}))


AGENTS = {
    # delete_files expires one second after it is requested
    "demo-expiring": AgentSpec(_demo.agent, {"delete_files": ApprovalPolicy(roles=["approver"], expires_s=1.0)}),
    # the person who started the run may not approve its calls
    "demo-strict": AgentSpec(_demo.agent, {"delete_files": ApprovalPolicy(roles=["approver"], allow_self=False)}),
    "broken": Agent(name="Broken", model=DemoModel(_broken)),
    # one pause, two approvals
    "two-deletes": AgentSpec(Agent(name="Twin", model=DemoModel(_two_deletes), tools=[delete_files]),
                             {"delete_files": ApprovalPolicy(roles=["approver"])}),
    # a long turn that ends with a call needing approval
    "long-turn": AgentSpec(Agent(name="Talker", model=DemoModel(_long_turn), tools=[delete_files]),
                           {"delete_files": ApprovalPolicy(roles=["approver"])}),
    # an approved tool that runs for seconds
    "slow-delete": AgentSpec(Agent(name="Slow", model=DemoModel(_slow_script), tools=[slow_delete]),
                             {"slow_delete": ApprovalPolicy(roles=["approver"])}),
}
