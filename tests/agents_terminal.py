"""An agent for the terminal tests (`--agents agents_terminal`): it says back whatever it was asked, in its text, in a
tool call that needs approval (expiring in ten minutes) and in that tool's output, so hostile run data reaches every
place a terminal command prints."""

from typing import Any

from agents import Agent, RunContextWrapper, function_tool

from runcast import AgentSpec, ApprovalPolicy
from runcast.demo import DemoModel, Step, _get, tool_results


def _asked(input_: Any) -> str:
    if isinstance(input_, str):
        return input_
    for item in input_ if isinstance(input_, list) else []:
        if _get(item, "role") == "user":
            content = _get(item, "content")
            return content if isinstance(content, str) else str(content)
    return ""


@function_tool(needs_approval=True)
def echo(ctx: RunContextWrapper[Any], text: str) -> str:
    """Says the text back (needs approval)."""
    return f"echoed: {text}"


def _echo_script(input_: Any) -> Step:
    done = tool_results(input_)
    if "echo" in done:
        return Step(f"The tool said {done['echo']} and that is all.")
    said = _asked(input_)
    return Step(f"You said {said} so I will echo it.", ("echo", {"text": said}))


AGENTS = {
    "echo": AgentSpec(
        Agent(name="Echo", model=DemoModel(_echo_script), tools=[echo]),
        {"echo": ApprovalPolicy(roles=["approver"], expires_s=600)},
    ),
}
