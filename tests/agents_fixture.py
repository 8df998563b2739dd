"""Agents the integration tests load next to the demo ones (`--agents agents_fixture`)."""

import asyncio
from typing import Any

from agents import Agent, GuardrailFunctionOutput, HostedMCPTool, RunContextWrapper, function_tool, input_guardrail
from openai.types.responses import Response, ResponseCompletedEvent, ResponseCreatedEvent, ResponseOutputItemDoneEvent
from openai.types.responses.response_output_item import McpCall
from agents.testing import ModelStep, ScriptedModel, assistant_message, function_call
from agents.tool import tool_namespace

from runcast import AgentSpec, ApprovalPolicy
from runcast.conversation import TalkPolicy
from runcast.demo import SCRATCH, DemoModel, Step, _get, _log_execution, delete_files, demo_registry, list_files

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
    return Step(
        "Two separate deletions, each needs its own approval.",
        ("delete_files", {"paths": SCRATCH[:1]}),
        more_calls=(("delete_files", {"paths": SCRATCH[1:]}),),
    )


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
    return Step(
        " ".join(["Streaming a long explanation before asking to delete anything."] * 25),
        ("delete_files", {"paths": list(SCRATCH)}),
    )


def _chatty(input_: Any) -> Step:
    """A first turn of two model calls: a long streamed answer that lists files, then a request to delete them (a
    message with the `interrupt` policy stops the turn after the first call)."""
    outs = _outputs(input_)
    if len(outs) >= 2:
        return Step("Done.")
    if outs:
        return Step("Second step: deleting the files now.", ("delete_files", {"paths": list(SCRATCH)}))
    return Step(
        " ".join(["Streaming a long explanation before listing anything."] * 25), ("list_files", {"path": "scratch/"})
    )


class Responding(ScriptedModel):
    """The SDK's ScriptedModel with one responder for every call: stateless, so a run resumed by another worker
    process (with its own model object) gets the right next step."""

    def __init__(self, responder: Any) -> None:
        super().__init__()
        self._responder = responder

    async def _next_resolved_step(self, call: Any) -> ModelStep:
        self._steps = [self._coerce_step(ModelStep.respond(self._responder), 0)]
        return await super()._next_resolved_step(call)


@function_tool(needs_approval=True)
def delete_file(ctx: RunContextWrapper[Any], path: str) -> str:
    """Delete one file (needs approval; pretends)."""
    _log_execution(ctx, "files.delete_file", path=path)
    return f"deleted {path}"


def _files_script(call: Any) -> Any:
    items = call.input if isinstance(call.input, list) else []
    outs = _outputs(items)
    if outs:
        return [assistant_message(f"Finance answered: {outs[-1]}", item_id=f"msg_{len(items)}")]
    return [
        assistant_message("Deleting the ledger export needs finance.", item_id=f"msg_{len(items)}"),
        function_call("delete_file", {"path": "ledger/2026.csv"}, call_id=f"call_{len(items)}", namespace="files"),
    ]


@function_tool
async def take(ctx: RunContextWrapper[Any], text: str) -> str:
    """Takes a long text and says how long it was."""
    return f"took {len(text)} characters"


def _big_args(input_: Any) -> Step:
    """A fast run of big events: one tool call whose arguments stream as 1,500 deltas of 4 KiB (6 MiB; the logged
    call itself is cut to 16 KiB), then a short answer. For the slow-consumer tests."""
    if _outputs(input_):
        return Step("Done.")
    return Step("Taking a long text.", ("take", {"text": " ".join(f"{i:05d}" + "x" * 4090 for i in range(1500))}))


class PacedModel(DemoModel):
    """DemoModel with a pause before every streamed event (tool-call arguments included)."""

    def __init__(self, script: Any, pause: float) -> None:
        super().__init__(script, delay=0)
        self.pause = pause

    async def stream_response(self, *args: Any, **kwargs: Any) -> Any:
        async for ev in super().stream_response(*args, **kwargs):
            await asyncio.sleep(self.pause)
            yield ev


def _hosted_mcp_script(call: Any) -> Any:
    """One response: a hosted MCP call the model's side ran (with the server's answer), then the reply."""
    mcp = McpCall(
        id="mcp_1",
        type="mcp_call",
        server_label="crm",
        name="find_contact",
        arguments='{"email": "ann@example.com"}',
        output='{"id": 42, "name": "Ann"}',
        status="completed",
    )
    msg = assistant_message("Ann is contact 42.", item_id="msg_mcp")
    resp = Response(
        id="resp_mcp",
        created_at=0,
        model="scripted",
        object="response",
        output=[mcp, msg],
        tool_choice="auto",
        tools=[],
        parallel_tool_calls=False,
        status="completed",
    )
    return ModelStep.stream(
        [
            ResponseCreatedEvent(
                type="response.created",
                sequence_number=0,
                response=resp.model_copy(update={"output": [], "status": "in_progress"}),
            ),
            ResponseOutputItemDoneEvent(type="response.output_item.done", output_index=0, item=mcp, sequence_number=1),
            ResponseOutputItemDoneEvent(type="response.output_item.done", output_index=1, item=msg, sequence_number=2),
            ResponseCompletedEvent(type="response.completed", response=resp, sequence_number=3),
        ],
        output=[mcp, msg],
    )


@input_guardrail(name="no_secrets")
async def no_secrets(ctx: Any, agent: Any, input: Any) -> GuardrailFunctionOutput:  # noqa: A002
    return GuardrailFunctionOutput(output_info={"found": ["password"]}, tripwire_triggered="password" in str(input))


AGENTS = {
    # delete_files expires one second after it is requested
    "demo-expiring": AgentSpec(_demo.agent, {"delete_files": ApprovalPolicy(roles=["approver"], expires_s=1.0)}),
    # delete_files expires 40 s after it is requested: long enough for a page to open it late and read the countdown
    "demo-clock": AgentSpec(_demo.agent, {"delete_files": ApprovalPolicy(roles=["approver"], expires_s=40.0)}),
    # two approvals, and the run's starter is not one of them
    "demo-quorum-others": AgentSpec(
        _demo.agent, {"delete_files": ApprovalPolicy(roles=["approver"], quorum=2, count_starter=False)}
    ),
    # the person who started the run may not approve its calls
    "demo-strict": AgentSpec(_demo.agent, {"delete_files": ApprovalPolicy(roles=["approver"], allow_self=False)}),
    # approvals by a role of the agent's own: people with that role may watch its runs (and only its runs)
    "demo-finance": AgentSpec(_demo.agent, {"delete_files": ApprovalPolicy(roles=["finance"])}),
    "broken": Agent(name="Broken", model=DemoModel(_broken)),
    # one short answer and done: as cheap a run as the SDK makes (quota and retention tests start thousands)
    "quick": Agent(name="Quick", model=DemoModel(lambda input_: Step("ok"), delay=0)),
    # one pause, two approvals
    "two-deletes": AgentSpec(
        Agent(name="Twin", model=DemoModel(_two_deletes), tools=[delete_files]),
        {"delete_files": ApprovalPolicy(roles=["approver"])},
    ),
    # a long turn that ends with a call needing approval
    "long-turn": AgentSpec(
        Agent(name="Talker", model=DemoModel(_long_turn), tools=[delete_files]),
        {"delete_files": ApprovalPolicy(roles=["approver"])},
    ),
    # a firehose of big tool-argument deltas (about 400 a second)
    "big-args": Agent(name="Big", model=PacedModel(_big_args, pause=0.002), tools=[take]),
    # the same with no pause at all between events: as fast as the worker makes them
    "big-args-burst": Agent(name="Burst", model=PacedModel(_big_args, pause=0), tools=[take]),
    # an approved tool that runs for seconds
    "slow-delete": AgentSpec(
        Agent(name="Slow", model=DemoModel(_slow_script), tools=[slow_delete]),
        {"slow_delete": ApprovalPolicy(roles=["approver"])},
    ),
    # a tool in the `files` namespace whose policy is keyed by the name the wire shows, finance only
    "files-finance": AgentSpec(
        Agent(
            name="Files",
            model=Responding(_files_script),
            tools=tool_namespace(name="files", description="File operations", tools=[delete_file]),
        ),
        {"files.delete_file": ApprovalPolicy(roles=["finance"])},
    ),
    # a hosted MCP call whose answer must reach the watchers
    "hosted-mcp": Agent(
        name="Crm",
        model=Responding(_hosted_mcp_script),
        tools=[
            HostedMCPTool(
                tool_config={
                    "type": "mcp",
                    "server_label": "crm",
                    "server_url": "http://127.0.0.1:9",
                    "require_approval": "never",
                }
            )
        ],
    ),
    # conversations (conversation.py): a message while busy is refused; one stops the turn; a small rate and size
    "talk-reject": AgentSpec(
        _demo.agent, {"delete_files": ApprovalPolicy(roles=["approver"])}, talk=TalkPolicy(busy="reject")
    ),
    "talk-interrupt": AgentSpec(
        Agent(name="Chatty", model=DemoModel(_chatty), tools=[list_files, delete_files]),
        {"delete_files": ApprovalPolicy(roles=["approver"])},
        talk=TalkPolicy(busy="interrupt"),
    ),
    "talk-strict": AgentSpec(
        Agent(name="Quick", model=DemoModel(lambda input_: Step("ok"), delay=0)),
        talk=TalkPolicy(per_minute=3, max_chars=100),
    ),
    # an input guardrail that trips on "password"
    "guarded": Agent(
        name="Guarded", model=Responding(lambda call: [assistant_message("ok")]), input_guardrails=[no_secrets]
    ),
}
