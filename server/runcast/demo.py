"""Built-in demo agents with an offline, scripted model: Runcast works with no key and no network.

The model is stateless: it reads the conversation it is given and decides the next step from it, so a run resumed
by another worker (in another process) continues correctly. Text streams word by word at a pace a person can
watch (``RUNCAST_DEMO_DELAY`` seconds per delta, default 0.04).

The tools pretend: nothing is deleted, restarted or deployed. When ``RUNCAST_DEMO_TOOL_LOG`` names a file, every
tool execution appends a JSON line to it, so tests can count executions in the tool itself.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from agents import Agent, ModelSettings, RunContextWrapper, function_tool
from agents.items import ModelResponse
from agents.models.interface import Model
from agents.usage import Usage
from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseContentPartAddedEvent,
    ResponseCreatedEvent,
    ResponseFunctionCallArgumentsDeltaEvent,
    ResponseFunctionToolCall,
    ResponseOutputItemAddedEvent,
    ResponseOutputItemDoneEvent,
    ResponseOutputMessage,
    ResponseOutputText,
    ResponseReasoningItem,
    ResponseReasoningSummaryTextDeltaEvent,
    ResponseTextDeltaEvent,
    ResponseUsage,
)
from openai.types.responses.response_reasoning_item import Summary
from openai.types.responses.response_usage import InputTokensDetails, OutputTokensDetails

from .approvals import ApprovalPolicy
from .registry import AgentSpec, Registry


def _delay() -> float:
    return float(os.environ.get("RUNCAST_DEMO_DELAY", "0.04"))


def _log_execution(ctx: RunContextWrapper[Any], tool: str, **args: Any) -> None:
    path = os.environ.get("RUNCAST_DEMO_TOOL_LOG")
    if path:
        run_id = ctx.context.get("run_id") if isinstance(ctx.context, dict) else None
        line = {"tool": tool, "run_id": run_id, "args": args, "pid": os.getpid(), "ts": time.time()}
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")


# ------------------------------------------------------------------------------------------------ tools

SCRATCH = ["scratch/build-cache.tar", "scratch/old-logs.zip", "scratch/tmp-export.csv"]


@function_tool
def list_files(ctx: RunContextWrapper[Any], path: str) -> str:
    """List the files in a folder (harmless: needs no approval)."""
    _log_execution(ctx, "list_files", path=path)
    return "\n".join(f"{p} ({s})" for p, s in zip(SCRATCH, ("2.1 GB", "340 MB", "12 MB"), strict=True))


@function_tool(needs_approval=True)
def delete_files(ctx: RunContextWrapper[Any], paths: list[str]) -> str:
    """Delete files for good (needs a teammate's approval). The demo deletes nothing."""
    _log_execution(ctx, "delete_files", paths=paths)
    return f"deleted {len(paths)} files: {', '.join(paths)}"


@function_tool(needs_approval=True)
def restart_service(ctx: RunContextWrapper[Any], service: str) -> str:
    """Restart a production service (needs approval)."""
    _log_execution(ctx, "restart_service", service=service)
    return f"restarted {service}; health checks green after 4s"


@function_tool(needs_approval=True)
def deploy(ctx: RunContextWrapper[Any], version: str, environment: str) -> str:
    """Deploy a release (needs two approvals)."""
    _log_execution(ctx, "deploy", version=version, environment=environment)
    return f"deployed {version} to {environment}"


# ------------------------------------------------------------------------------------------------ the scripted model


@dataclass
class Step:
    text: str
    call: tuple[str, dict[str, Any]] | None = None
    reasoning: str | None = None
    more_calls: tuple[tuple[str, dict[str, Any]], ...] = ()  # further tool calls in the same response (parallel calls)

    @property
    def calls(self) -> list[tuple[str, dict[str, Any]]]:
        return ([self.call] if self.call else []) + list(self.more_calls)


def _get(item: Any, key: str) -> Any:
    return item.get(key) if isinstance(item, dict) else getattr(item, key, None)


def tool_results(input_: Any) -> dict[str, str]:
    """tool name -> output text of the calls already answered in this conversation."""
    items = input_ if isinstance(input_, list) else []
    names = {_get(i, "call_id"): _get(i, "name") for i in items if _get(i, "type") == "function_call"}
    return {
        names.get(_get(i, "call_id"), "?"): str(_get(i, "output"))
        for i in items
        if _get(i, "type") == "function_call_output"
    }


def janitor_script(input_: Any) -> Step:
    done = tool_results(input_)
    if "delete_files" in done:
        out = done["delete_files"]
        if out.startswith("deleted"):
            return Step(f"Done. I {out}. That frees about 2.4 GB, and nothing else in the folder was touched.")
        return Step(
            f'Understood, I left every file where it was. The reviewer\'s answer was: "{out}" '
            "If you want, I can delete only some of them."
        )
    if "list_files" in done:
        return Step(
            "I found three temporary files, about 2.4 GB in all. Deleting files cannot be undone, "
            "so I will ask a teammate to approve it before I go ahead.",
            ("delete_files", {"paths": list(SCRATCH)}),
        )
    return Step(
        "Hello! I am the janitor agent. I will look at the scratch folder first, "
        "then suggest what can be removed safely.",
        ("list_files", {"path": "scratch/"}),
        reasoning="The user wants disk space back. List first, delete only with approval.",
    )


def triage_script(input_: Any) -> Step:
    return Step(
        "This sounds like an operations request. I am handing you over to the Ops agent, who can restart services.",
        ("transfer_to_ops", {}),
    )


def ops_script(input_: Any) -> Step:
    done = tool_results(input_)
    if "restart_service" in done:
        out = done["restart_service"]
        if out.startswith("restarted"):
            return Step(f"Ops here: {out}. Error rates are back to normal.")
        return Step(f'Ops here: I did not restart anything. The reviewer said: "{out}"')
    return Step(
        "Ops here. The web service is returning errors; a restart usually clears it. "
        "Restarting production needs an approval.",
        ("restart_service", {"service": "web"}),
    )


def release_script(input_: Any) -> Step:
    done = tool_results(input_)
    if "deploy" in done:
        out = done["deploy"]
        if out.startswith("deployed"):
            return Step(f"Release finished: {out}. I will watch the dashboards for the next hour.")
        return Step(f'The release is on hold. The reviewers said: "{out}"')
    return Step(
        "Release 2.4.1 passed every check in staging. Deploying to production needs two approvers.",
        ("deploy", {"version": "2.4.1", "environment": "production"}),
    )


SPEAKER = re.compile(r"^(?P<name>.*?) \(@(?P<sub>[^)]*)\): (?P<text>.*)$", re.S)  # conversation.model_message
PATHS = re.compile(r"\bscratch/[\w.\-/]+")


def _text(item: Any) -> str:
    content = _get(item, "content")
    if isinstance(content, str):
        return content
    return "".join(str(_get(p, "text") or "") for p in content or [])


def follow_up(input_: Any, tools: list[str]) -> Step | None:
    """A later turn of a conversation (conversation.py): answer the messages said since the agent's last answer.

    None on the run's first turn (the agent's own script answers it). The answer names each speaker and everyone
    heard so far, so a test can see that the model knows who said what. A message that names scratch/ files and asks
    to delete them makes the janitor call delete_files with those paths (an approval again); once that call has an
    output, the turn says what came of it.
    """
    items = input_ if isinstance(input_, list) else []
    users = [k for k, i in enumerate(items) if _get(i, "role") == "user"]
    if len(users) < 2:
        return None
    last_answer = max((k for k, i in enumerate(items) if _get(i, "role") == "assistant" and k < users[-1]), default=-1)
    said = [m for k in users if k > last_answer if (m := SPEAKER.match(_text(items[k])))]
    if not said:
        return None
    heard: list[str] = []
    for k in users:
        m = SPEAKER.match(_text(items[k]))
        if m and m["name"] not in heard:
            heard.append(m["name"])
    after = items[max(users) + 1 :]
    outputs = [str(_get(i, "output")) for i in after if _get(i, "type") == "function_call_output"]
    if outputs:
        return Step(f"{said[-1]['name']}, here is what happened: {outputs[-1]}")
    lines = [f'{m["name"]}, you said: "{m["text"].strip()}".' for m in said]
    paths = PATHS.findall(" ".join(m["text"] for m in said))
    if paths and "delete" in " ".join(m["text"].lower() for m in said) and "delete_files" in tools:
        return Step(" ".join(lines) + f" I will ask to delete {', '.join(paths)}.", ("delete_files", {"paths": paths}))
    return Step(" ".join(lines) + f" So far I have heard from: {', '.join(heard)}.")


def _chunks(text: str) -> list[str]:
    return re.findall(r"\S+\s*", text) or [text]


class DemoModel(Model):
    """An Agents SDK `Model` that follows a script; it streams like the Responses API does."""

    def __init__(self, script: Callable[[Any], Step], delay: float | None = None) -> None:
        self.script = script
        self.delay = delay

    async def get_response(
        self,
        system_instructions,
        input,
        model_settings,
        tools,
        output_schema,
        handoffs,
        tracing,
        *,
        previous_response_id=None,
        conversation_id=None,
        prompt=None,
    ) -> ModelResponse:
        resp = self._response(self.step(input, tools), input)
        usage = resp.usage
        assert usage is not None  # _response always sets it
        return ModelResponse(
            output=resp.output,
            usage=Usage(
                requests=1,
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                total_tokens=usage.total_tokens,
            ),
            response_id=resp.id,
        )

    def step(self, input_: Any, tools: Any) -> Step:
        names = [getattr(t, "name", "") for t in tools or []]
        return follow_up(input_, names) or self.script(input_)

    def _response(self, step: Step, input_: Any) -> Response:
        n = len(input_) if isinstance(input_, list) else 1
        tag = f"{n}_{abs(hash(step.text)) % 10**8}"
        output: list[Any] = []
        if step.reasoning:
            output.append(
                ResponseReasoningItem(
                    id=f"rs_{tag}", type="reasoning", summary=[Summary(text=step.reasoning, type="summary_text")]
                )
            )
        output.append(
            ResponseOutputMessage(
                type="message",
                id=f"msg_{tag}",
                role="assistant",
                status="completed",
                content=[ResponseOutputText(type="output_text", text=step.text, annotations=[], logprobs=[])],
            )
        )
        for k, (name, args) in enumerate(step.calls):
            suffix = f"_{k}" if k else ""
            output.append(
                ResponseFunctionToolCall(
                    type="function_call",
                    id=f"fc_{tag}{suffix}",
                    call_id=f"call_{tag}{suffix}",
                    name=name,
                    arguments=json.dumps(args),
                    status="completed",
                )
            )
        words = len(step.text.split())
        usage = ResponseUsage(
            input_tokens=40 * n,
            output_tokens=words,
            total_tokens=40 * n + words,
            input_tokens_details=InputTokensDetails(cached_tokens=0, cache_write_tokens=0),
            output_tokens_details=OutputTokensDetails(reasoning_tokens=0),
        )
        return Response(
            id=f"resp_{tag}",
            created_at=time.time(),
            model="runcast-demo",
            object="response",
            output=output,
            tool_choice="auto",
            tools=[],
            parallel_tool_calls=False,
            status="completed",
            usage=usage,
        )

    async def stream_response(
        self,
        system_instructions,
        input,
        model_settings,
        tools,
        output_schema,
        handoffs,
        tracing,
        *,
        previous_response_id=None,
        conversation_id=None,
        prompt=None,
    ) -> AsyncIterator[Any]:
        step = self.step(input, tools)
        resp = self._response(step, input)
        delay = _delay() if self.delay is None else self.delay
        seq = iter(range(100_000))
        yield ResponseCreatedEvent(
            type="response.created",
            sequence_number=next(seq),
            response=resp.model_copy(update={"output": [], "status": "in_progress"}),
        )
        for idx, item in enumerate(resp.output):
            if item.type == "reasoning":
                yield ResponseOutputItemAddedEvent(
                    type="response.output_item.added",
                    output_index=idx,
                    sequence_number=next(seq),
                    item=item.model_copy(update={"summary": []}),
                )
                for w in _chunks(item.summary[0].text):
                    if delay:
                        await asyncio.sleep(delay / 2)
                    yield ResponseReasoningSummaryTextDeltaEvent(
                        type="response.reasoning_summary_text.delta",
                        item_id=item.id,
                        output_index=idx,
                        summary_index=0,
                        delta=w,
                        sequence_number=next(seq),
                    )
            elif item.type == "message":
                yield ResponseOutputItemAddedEvent(
                    type="response.output_item.added",
                    output_index=idx,
                    sequence_number=next(seq),
                    item=item.model_copy(update={"content": [], "status": "in_progress"}),
                )
                yield ResponseContentPartAddedEvent(
                    type="response.content_part.added",
                    item_id=item.id,
                    output_index=idx,
                    content_index=0,
                    sequence_number=next(seq),
                    part=ResponseOutputText(type="output_text", text="", annotations=[], logprobs=[]),
                )
                text = item.content[0]
                assert isinstance(text, ResponseOutputText)  # _response writes one text part, never a refusal
                for w in _chunks(text.text):
                    if delay:
                        await asyncio.sleep(delay)
                    yield ResponseTextDeltaEvent(
                        type="response.output_text.delta",
                        item_id=item.id,
                        output_index=idx,
                        content_index=0,
                        delta=w,
                        logprobs=[],
                        sequence_number=next(seq),
                    )
            else:
                assert isinstance(item, ResponseFunctionToolCall) and item.id is not None  # the script's one other item
                yield ResponseOutputItemAddedEvent(
                    type="response.output_item.added", output_index=idx, item=item, sequence_number=next(seq)
                )
                for part in _chunks(item.arguments):
                    yield ResponseFunctionCallArgumentsDeltaEvent(
                        type="response.function_call_arguments.delta",
                        item_id=item.id,
                        output_index=idx,
                        delta=part,
                        sequence_number=next(seq),
                    )
            yield ResponseOutputItemDoneEvent(
                type="response.output_item.done", output_index=idx, item=item, sequence_number=next(seq)
            )
        yield ResponseCompletedEvent(type="response.completed", response=resp, sequence_number=next(seq))


# ------------------------------------------------------------------------------------------------ the demo agents


def real_model(model: str, api: str = "responses") -> tuple[Any, ModelSettings]:
    """A demo agent's model and settings for a real model name (OPENAI_API_KEY, OPENAI_BASE_URL as the SDK reads them).

    `responses`: the name itself, resolved by the SDK's default provider (the Responses API). `chat`: the SDK's
    OpenAIChatCompletionsModel on the same client settings, for servers that speak only Chat Completions (vLLM, Ollama,
    LiteLLM, Azure deployments). It asks for usage in the stream (`stream_options.include_usage`), which the SDK asks
    only of OpenAI's own host: without it, such a server reports no tokens.
    """
    if api == "chat":
        from agents.models.openai_provider import OpenAIProvider

        return OpenAIProvider(use_responses=False).get_model(model), ModelSettings(include_usage=True)
    return model, ModelSettings()


def demo_registry(
    model: str | None = None, delay: float | None = None, expires_s: float | None = 600, api: str = "responses"
) -> Registry:
    """The built-in agents. With `model` (a real model name, needs OPENAI_API_KEY) they talk to that model, over the
    Responses API or, with `api="chat"`, Chat Completions (real_model); without it, to the offline scripted one."""

    def m(script: Callable[[Any], Step]) -> dict[str, Any]:
        if not model:
            return {"model": DemoModel(script, delay)}
        real, settings = real_model(model, api)
        return {"model": real, "model_settings": settings}

    janitor = Agent(
        name="Janitor",
        **m(janitor_script),
        tools=[list_files, delete_files],
        instructions="You tidy the scratch folder. List files with list_files first, then delete the temporary "
        "ones with delete_files, which a teammate must approve. Say briefly what you do.",
    )
    ops = Agent(
        name="Ops",
        **m(ops_script),
        tools=[restart_service],
        instructions="You are the on-call ops agent. Restart the web service with restart_service.",
    )
    triage = Agent(
        name="Triage",
        **m(triage_script),
        handoffs=[ops],
        instructions="Route operations requests to the Ops agent with a handoff.",
    )
    release = Agent(
        name="Release",
        **m(release_script),
        tools=[deploy],
        instructions="You ship releases. Deploy version 2.4.1 to production with the deploy tool.",
    )
    return Registry(
        {
            "demo": AgentSpec(
                janitor,
                {"delete_files": ApprovalPolicy(roles=["approver"], expires_s=expires_s)},
                description="Lists the scratch folder, then asks to delete three files (one approver).",
            ),
            "demo-handoff": AgentSpec(
                triage,
                {"restart_service": ApprovalPolicy(roles=["approver", "operator"], expires_s=expires_s)},
                description="Triage hands off to Ops, who asks to restart a service.",
            ),
            "demo-quorum": AgentSpec(
                release,
                {"deploy": ApprovalPolicy(roles=["approver"], quorum=2, expires_s=expires_s)},
                description="Asks to deploy to production; two different approvers must agree.",
            ),
        }
    )
