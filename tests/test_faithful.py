"""Runcast reports what the SDK reports. Usage: a run with two pauses and an agent used as a tool that calls the model
three times, through the real Worker (memory backend, in-process), against the same script run with the SDK alone.
Hosted MCP output and guardrail failures: through the Worker, on the SDK's own scripted model (`agents.testing`)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from agents import Agent, GuardrailFunctionOutput, HostedMCPTool, Runner, RunState, function_tool, input_guardrail
from agents.testing import ModelStep, ScriptedModel, assistant_message, function_call
from agents.usage import Usage
from openai.types.responses import Response, ResponseCompletedEvent, ResponseCreatedEvent, ResponseOutputItemDoneEvent
from openai.types.responses.response_output_item import McpCall

from runcast import AgentSpec, ApprovalPolicy, Registry
from runcast.auth import Identity
from runcast.backends.memory import MemoryBackend
from runcast.mapping import MAX_OUTPUT_CHARS, failure_data, json_safe
from runcast.service import Service
from runcast.worker import Worker

OPERATOR = Identity(sub="ada", name="Ada", roles=("operator",))
APPROVER = Identity(sub="alice", name="Alice", roles=("approver",))


def u(i: int, o: int) -> Usage:
    return Usage(requests=1, input_tokens=i, output_tokens=o, total_tokens=i + o)


@function_tool
def lookup(q: str) -> str:
    """Look something up."""
    return f"found {q}"


@function_tool(needs_approval=True)
def delete_file(path: str) -> str:
    """Delete a file (needs approval)."""
    return f"deleted {path}"


def usage_agent() -> Agent:
    """Outer: two calls that each pause for approval, then the researcher (an agent used as a tool, three model
    calls of its own), then the answer. Fresh scripted models each time: a ScriptedModel is a queue."""
    researcher = Agent(
        name="Researcher",
        tools=[lookup],
        model=ScriptedModel(
            [
                ModelStep(output=[function_call("lookup", {"q": "a"}, call_id="i1")], usage=u(100, 1)),
                ModelStep(output=[function_call("lookup", {"q": "b"}, call_id="i2")], usage=u(200, 2)),
                ModelStep(output=[assistant_message("the research is done")], usage=u(300, 3)),
            ]
        ),
    )
    return Agent(
        name="Outer",
        tools=[delete_file, researcher.as_tool("research", "Research a question")],
        model=ScriptedModel(
            [
                ModelStep(
                    output=[assistant_message("first"), function_call("delete_file", {"path": "a"}, call_id="o1")],
                    usage=u(10, 1),
                ),
                ModelStep(output=[function_call("delete_file", {"path": "b"}, call_id="o2")], usage=u(20, 2)),
                ModelStep(output=[function_call("research", {"input": "why"}, call_id="o3")], usage=u(30, 3)),
                ModelStep(output=[assistant_message("all done")], usage=u(40, 4)),
            ]
        ),
    )


async def sdk_alone() -> dict[str, int]:
    agent = usage_agent()
    result = Runner.run_streamed(agent, "go")
    pauses = 0
    while True:
        async for _ in result.stream_events():
            pass
        if not result.interruptions:
            break
        pauses += 1
        state = await RunState.from_json(agent, json.loads(json.dumps(result.to_state().to_json())))
        for item in state.get_interruptions():
            state.approve(item)
        result = Runner.run_streamed(agent, state)
    assert pauses == 2 and result.final_output == "all done"
    usage = result.context_wrapper.usage
    return {k: getattr(usage, k) for k in ("requests", "input_tokens", "output_tokens", "total_tokens")}


async def through_runcast(spec: AgentSpec, approve: bool = True, timeout: float = 20) -> list[dict[str, Any]]:
    """Run `spec` through the real Worker on the memory backend, approving every pause; return the run's log."""
    backend = MemoryBackend()
    registry = Registry({"a": spec})
    worker = Worker(backend, registry, coalesce_s=0)
    await worker.start()
    svc = Service(backend, registry)
    try:
        run_id = (await svc.start(OPERATOR, "a", "go"))["run_id"]
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            rec = await backend.get(run_id)
            assert rec is not None
            if rec.terminal:
                break
            if rec.status == "paused" and approve:
                for aid in rec.pending:
                    await svc.decide(APPROVER, run_id, aid, "approve", None, False)
            assert asyncio.get_running_loop().time() < deadline, rec.status
            await asyncio.sleep(0.01)
        return [e.frame for e in await backend.read(run_id)]
    finally:
        await worker.stop()


async def test_usage_is_the_sdks_own_total_across_pauses_and_nested_runs() -> None:
    expected = await sdk_alone()
    assert expected == {"requests": 7, "input_tokens": 700, "output_tokens": 16, "total_tokens": 716}
    log = await through_runcast(AgentSpec(usage_agent(), {"delete_file": ApprovalPolicy()}))
    kinds = [e["type"] for e in log]
    assert kinds.count("run.paused") == 2 and kinds[-1] == "run.completed"
    assert log[-1]["data"]["usage"] == expected
    # the agent used as a tool shows up by the name the wire uses
    assert [e["data"]["tool"] for e in log if e["type"] == "tool.called"] == ["delete_file", "delete_file", "research"]


def mcp_agent() -> Agent:
    call = McpCall(
        id="mcp_1",
        type="mcp_call",
        server_label="crm",
        name="find_contact",
        arguments='{"email": "a@b.c"}',
        output='{"id": 42, "name": "Ann"}',
        status="completed",
    )
    mcp = HostedMCPTool(
        tool_config={
            "type": "mcp",
            "server_label": "crm",
            "server_url": "http://127.0.0.1:9",
            "require_approval": "never",
        }
    )
    msg = assistant_message("Ann is contact 42.", item_id="msg_1")
    # (the scripted model's automatic streaming does not do McpCall: give it the normalized events, as the API sends them)
    response = Response(
        id="resp_1",
        created_at=0,
        model="scripted",
        object="response",
        output=[call, msg],
        tool_choice="auto",
        tools=[],
        parallel_tool_calls=False,
        status="completed",
    )
    events = [
        ResponseCreatedEvent(
            type="response.created",
            sequence_number=0,
            response=response.model_copy(update={"output": [], "status": "in_progress"}),
        ),
        ResponseOutputItemDoneEvent(type="response.output_item.done", output_index=0, item=call, sequence_number=1),
        ResponseOutputItemDoneEvent(type="response.output_item.done", output_index=1, item=msg, sequence_number=2),
        ResponseCompletedEvent(type="response.completed", response=response, sequence_number=3),
    ]
    return Agent(
        name="Crm", tools=[mcp], model=ScriptedModel([ModelStep.stream(events, output=[call, msg], usage=u(5, 5))])
    )


async def test_a_hosted_mcp_calls_output_reaches_the_log_with_its_server() -> None:
    log = await through_runcast(AgentSpec(mcp_agent()))
    called = [e["data"] for e in log if e["type"] == "tool.called"]
    outputs = [e["data"] for e in log if e["type"] == "tool.output"]
    assert called == [
        {"call_id": "mcp_1", "tool": "crm.find_contact", "arguments": '{"email": "a@b.c"}', "agent": "Crm"}
    ]
    assert outputs == [
        {"call_id": "mcp_1", "output": '{"id": 42, "name": "Ann"}', "server": "crm", "tool": "find_contact"}
    ]
    assert log[-1]["type"] == "run.completed"


async def test_a_failed_run_reports_the_usage_of_every_segment_before_the_failure_and_its_cause() -> None:
    """A pause, a resumed segment with one more model call, then the model fails: run.failed carries what the SDK
    counted (both segments, carried over the pause in the RunState) and the failure's cause chain in one line."""
    try:
        raise ConnectionResetError("peer reset the stream")
    except ConnectionResetError as low:
        try:
            raise RuntimeError("Connection error.") from low
        except RuntimeError as e:
            err = e
    agent = Agent(
        name="Flaky",
        tools=[delete_file, lookup],
        model=ScriptedModel(
            [
                ModelStep(output=[function_call("delete_file", {"path": "a"}, call_id="f1")], usage=u(10, 1)),
                ModelStep(output=[function_call("lookup", {"q": "x"}, call_id="f2")], usage=u(20, 2)),
                ModelStep.raise_error(err),
            ]
        ),
    )
    log = await through_runcast(AgentSpec(agent, {"delete_file": ApprovalPolicy()}))
    kinds = [e["type"] for e in log]
    assert kinds.count("run.paused") == 1 and kinds.count("run.resumed") == 1 and kinds[-1] == "run.failed"
    assert log[-1]["data"] == {
        "code": "RuntimeError",
        "message": "Connection error: peer reset the stream",
        "usage": {"requests": 2, "input_tokens": 30, "output_tokens": 3, "total_tokens": 33},
    }


@input_guardrail(name="no_secrets")
async def no_secrets(ctx: Any, agent: Agent, input: Any) -> GuardrailFunctionOutput:  # noqa: A002
    return GuardrailFunctionOutput(output_info={"found": ["password"], "score": 0.97}, tripwire_triggered=True)


async def test_a_guardrail_failure_names_the_guardrail_its_side_and_its_output_info() -> None:
    agent = Agent(
        name="Guarded",
        input_guardrails=[no_secrets],
        model=ScriptedModel([ModelStep(output=[assistant_message("never said")], usage=u(1, 1))]),
    )
    log = await through_runcast(AgentSpec(agent))
    failed = log[-1]
    assert failed["type"] == "run.failed"
    assert failed["data"]["code"] == "InputGuardrailTripwireTriggered"
    assert failed["data"]["guardrail"] == {
        "name": "no_secrets",
        "side": "input",
        "output_info": {"found": ["password"], "score": 0.97},
    }
    assert "no_secrets" in failed["data"]["message"]


def test_output_info_is_made_json_safe_and_cut_like_tool_output() -> None:
    class Odd:
        def __str__(self) -> str:
            return "odd"

    assert json_safe({"a": Odd(), "b": (1, 2)}) == ({"a": "odd", "b": [1, 2]}, False)
    big, cut_ = json_safe({"text": "x" * (MAX_OUTPUT_CHARS * 2)})
    assert cut_ and isinstance(big, str) and len(big) == MAX_OUTPUT_CHARS

    class Tripped(Exception):
        def __init__(self) -> None:
            super().__init__("Tool output guardrail X triggered tripwire")

            class G:
                def get_name(self) -> str:
                    return "pii_filter"

            class O:
                output_info = {"blob": "y" * (MAX_OUTPUT_CHARS + 10)}

            self.guardrail, self.output = G(), O()

    Tripped.__name__ = "ToolOutputGuardrailTripwireTriggered"
    data = failure_data(Tripped())
    assert data["guardrail"]["name"] == "pii_filter" and data["guardrail"]["side"] == "tool_output"
    assert data["guardrail"]["truncated"] is True and len(data["guardrail"]["output_info"]) == MAX_OUTPUT_CHARS
