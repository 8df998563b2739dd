"""SDK stream events -> wire events, for every event kind, and the merging of fast deltas. No sockets."""

import json

from agents import Agent, AgentUpdatedStreamEvent, RawResponsesStreamEvent, RunItemStreamEvent
from agents.items import (
    HandoffCallItem,
    HandoffOutputItem,
    MCPApprovalRequestItem,
    MCPApprovalResponseItem,
    MCPListToolsItem,
    MessageOutputItem,
    ReasoningItem,
    ToolCallItem,
    ToolCallOutputItem,
)
from openai.types.responses import (
    ResponseFunctionCallArgumentsDeltaEvent,
    ResponseFunctionToolCall,
    ResponseOutputItemAddedEvent,
    ResponseOutputMessage,
    ResponseOutputText,
    ResponseReasoningItem,
    ResponseTextDeltaEvent,
)
from openai.types.responses.response_output_item import McpApprovalRequest, McpListTools, McpListToolsTool
from openai.types.responses.response_reasoning_item import Summary

from runcast.mapping import MAX_OUTPUT_CHARS, DeltaCoalescer, EventMapper, failure_data, failure_message

OPS = Agent(name="Ops")
TRIAGE = Agent(name="Triage", handoffs=[OPS])
CALL = ResponseFunctionToolCall(
    type="function_call", id="fc_1", call_id="call_1", name="delete_files", arguments='{"p": 1}'
)


def item(name, it):
    return RunItemStreamEvent(name=name, item=it)


def test_agent_updated_only_when_the_agent_changes():
    m = EventMapper()
    assert m.map(AgentUpdatedStreamEvent(new_agent=TRIAGE)) == [("agent.updated", {"agent": "Triage"})]
    assert m.map(AgentUpdatedStreamEvent(new_agent=TRIAGE)) == []
    assert m.map(AgentUpdatedStreamEvent(new_agent=OPS)) == [("agent.updated", {"agent": "Ops"})]


def test_raw_deltas_and_argument_deltas_named_by_call_id():
    m = EventMapper()
    text = ResponseTextDeltaEvent(
        type="response.output_text.delta",
        item_id="msg_1",
        output_index=0,
        content_index=0,
        delta="Hel",
        logprobs=[],
        sequence_number=1,
    )
    assert m.map(RawResponsesStreamEvent(data=text)) == [("message.delta", {"item_id": "msg_1", "delta": "Hel"})]
    added = ResponseOutputItemAddedEvent(
        type="response.output_item.added", output_index=1, item=CALL, sequence_number=2
    )
    assert m.map(RawResponsesStreamEvent(data=added)) == []
    args = ResponseFunctionCallArgumentsDeltaEvent(
        type="response.function_call_arguments.delta", item_id="fc_1", output_index=1, delta='{"p"', sequence_number=3
    )
    assert m.map(RawResponsesStreamEvent(data=args)) == [("tool.args.delta", {"call_id": "call_1", "delta": '{"p"'})]


def test_chat_completions_placeholder_ids_become_one_id_per_message():
    """The SDK gives every item of a Chat Completions response the id "__fake_id__": without ids of our own, a client
    would fold every message of the run into one."""
    m = EventMapper()

    def one_message(text: str, with_added: bool = True) -> tuple[list[str], str]:
        fake = ResponseOutputMessage(
            type="message",
            id="__fake_id__",
            role="assistant",
            status="completed",
            content=[ResponseOutputText(type="output_text", text=text, annotations=[])],
        )
        if with_added:
            added = ResponseOutputItemAddedEvent(
                type="response.output_item.added",
                output_index=0,
                sequence_number=0,
                item=fake.model_copy(update={"content": []}),
            )
            assert m.map(RawResponsesStreamEvent(data=added)) == []
        ids = []
        for i, w in enumerate(text.split()):
            delta = ResponseTextDeltaEvent(
                type="response.output_text.delta",
                item_id="__fake_id__",
                output_index=0,
                content_index=0,
                delta=w,
                logprobs=[],
                sequence_number=i + 1,
            )
            [(kind, data)] = m.map(RawResponsesStreamEvent(data=delta))
            ids.append(data["item_id"])
        [(kind, done)] = m.map(item("message_output_created", MessageOutputItem(agent=OPS, raw_item=fake)))
        assert kind == "message.completed" and done["text"] == text
        return ids, done["item_id"]

    first, first_done = one_message("one two three")
    second, second_done = one_message("four five", with_added=False)  # no output_item.added: still a new id
    third, third_done = one_message("six")
    assert len(set(first)) == 1 and first[0] == first_done and first_done.startswith("msg_")
    assert len(set(second)) == 1 and second[0] == second_done
    assert third == [third_done]
    assert len({first_done, second_done, third_done}) == 3 and "__fake_id__" not in {
        first_done,
        second_done,
        third_done,
    }


def test_every_run_item_name():
    m = EventMapper()
    msg = ResponseOutputMessage(
        type="message",
        id="msg_1",
        role="assistant",
        status="completed",
        content=[ResponseOutputText(type="output_text", text="Hi there", annotations=[])],
    )
    assert m.map(item("message_output_created", MessageOutputItem(agent=OPS, raw_item=msg))) == [
        ("message.completed", {"item_id": "msg_1", "text": "Hi there", "agent": "Ops"})
    ]
    assert m.map(item("tool_called", ToolCallItem(agent=OPS, raw_item=CALL))) == [
        ("tool.called", {"call_id": "call_1", "tool": "delete_files", "arguments": '{"p": 1}', "agent": "Ops"})
    ]
    out = ToolCallOutputItem(
        agent=OPS, raw_item={"type": "function_call_output", "call_id": "call_1", "output": "ok"}, output="ok"
    )
    assert m.map(item("tool_output", out)) == [("tool.output", {"call_id": "call_1", "output": "ok"})]
    big = ToolCallOutputItem(
        agent=OPS,
        raw_item={"type": "function_call_output", "call_id": "c2", "output": "x"},
        output="x" * (MAX_OUTPUT_CHARS + 5),
    )
    ((_, data),) = m.map(item("tool_output", big))
    assert data["truncated"] is True and len(data["output"]) == MAX_OUTPUT_CHARS
    handoff_call = ResponseFunctionToolCall(
        type="function_call", id="fc_2", call_id="call_2", name="transfer_to_ops", arguments="{}"
    )
    assert m.map(item("handoff_requested", HandoffCallItem(agent=TRIAGE, raw_item=handoff_call))) == [
        ("handoff.requested", {"from": "Triage", "to": "Ops", "call_id": "call_2"})
    ]
    occurred = HandoffOutputItem(
        agent=TRIAGE,
        raw_item={"type": "function_call_output", "call_id": "call_2", "output": "{}"},
        source_agent=TRIAGE,
        target_agent=OPS,
    )
    assert m.map(item("handoff_occured", occurred)) == [("handoff.completed", {"from": "Triage", "to": "Ops"})]
    reasoning = ResponseReasoningItem(id="rs_1", type="reasoning", summary=[Summary(text="think", type="summary_text")])
    assert m.map(item("reasoning_item_created", ReasoningItem(agent=OPS, raw_item=reasoning))) == [
        ("reasoning.completed", {"item_id": "rs_1", "summary": "think"})
    ]
    listed = McpListTools(
        id="l1", server_label="gh", type="mcp_list_tools", tools=[McpListToolsTool(name="search", input_schema={})]
    )
    assert m.map(item("mcp_list_tools", MCPListToolsItem(agent=OPS, raw_item=listed))) == [
        ("mcp.tools_listed", {"server": "gh", "tools": ["search"]})
    ]
    req = McpApprovalRequest(
        id="mr_1", arguments='{"b": 2}', name="push", server_label="gh", type="mcp_approval_request"
    )
    assert m.map(item("mcp_approval_requested", MCPApprovalRequestItem(agent=OPS, raw_item=req))) == [
        ("mcp.approval.requested", {"request_id": "mr_1", "server": "gh", "tool": "push", "arguments": '{"b": 2}'})
    ]
    resp = {"type": "mcp_approval_response", "approval_request_id": "mr_1", "approve": False, "reason": "no"}
    assert m.map(item("mcp_approval_response", MCPApprovalResponseItem(agent=OPS, raw_item=resp))) == [
        ("mcp.approval.responded", {"request_id": "mr_1", "approved": False, "reason": "no"})
    ]


def test_coalescer_merges_fast_deltas_of_one_item_and_keeps_order():
    c = DeltaCoalescer(window_s=0.05)
    d = lambda s, i="m1": ("message.delta", {"item_id": i, "delta": s})  # noqa: E731
    assert c.push([d("a")], 0.00) == [d("a")]  # an item's first delta waits for nothing
    assert c.push([d("b")], 0.01) == []
    assert c.push([d("c")], 0.02) == []
    assert c.due(0.03) == []
    assert c.due(0.06) == [d("bc")]  # the rest of the window, as one delta
    assert c.push([d("e")], 0.10) == []  # within the window that opened when "bc" went out
    assert c.push([d("x", "m2")], 0.11) == [d("e"), d("x", "m2")]  # another item: the buffer leaves first
    out = c.push([d("y", "m2"), ("tool.called", {"call_id": "k"})], 0.12)
    assert out == [d("y", "m2"), ("tool.called", {"call_id": "k"})]  # a non-delta event flushes, order kept
    assert c.flush() == []


def test_coalescer_sends_a_delta_after_a_quiet_window_at_once():
    c = DeltaCoalescer(window_s=0.05)
    d = lambda s: ("message.delta", {"item_id": "m1", "delta": s})  # noqa: E731
    assert c.push([d("a")], 0.00) == [d("a")]
    assert c.deadline() is None  # nothing buffered: no wake-up needed
    assert c.push([d("b")], 0.20) == [d("b")]  # the item's window had closed: no reason to hold it
    assert c.push([d("c")], 0.21) == []
    assert c.deadline() == 0.25


def test_coalescer_never_changes_the_text():
    c = DeltaCoalescer(window_s=0.02)
    words = [f"w{i} " for i in range(200)]
    out = []
    for i, w in enumerate(words):
        out += c.push([("message.delta", {"item_id": "m", "delta": w})], i * 0.005)
        out += c.due(i * 0.005)
    out += c.flush()
    assert "".join(d["delta"] for _, d in out) == "".join(words)
    assert 30 <= len(out) <= 60  # 4-5 deltas per 20 ms window: a run does not cost one frame per token
    assert json.dumps(out)  # plain data


# ---------------------------------------------------------------------------------------------- run.failed's message


def _raised(outer: BaseException, *causes: BaseException) -> BaseException:
    """`outer`, raised from the last of `causes`, raised from the one before, as the openai client and httpx do."""
    chain = [*causes[::-1], outer]
    err: BaseException | None = None
    for e in chain:
        try:
            if err is None:
                raise e
            raise e from err
        except BaseException as caught:  # noqa: BLE001
            err = caught
    assert err is not None
    return err


def test_failure_message_is_the_cause_chain_in_one_line():
    import httpx2
    import openai

    req = httpx2.Request("POST", "http://127.0.0.1:1/v1/responses")
    low = httpx2.RemoteProtocolError(
        "peer closed connection without sending complete message body (incomplete chunked read)"
    )
    err = _raised(openai.APIConnectionError(request=req), low, low.__class__(str(low)))
    data = failure_data(err)
    assert data == {
        "code": "APIConnectionError",
        "message": "Connection error: peer closed connection without sending complete message body "
        "(incomplete chunked read)",
    }
    # a link with no text is named by its class; an implicit context (raised while handling) counts too
    try:
        try:
            raise TimeoutError()
        except TimeoutError:
            raise RuntimeError("the model stopped answering.\nfor good") from None
    except RuntimeError as e:
        assert failure_message(e) == "the model stopped answering. for good"  # `from None`: no context, one line
    try:
        try:
            raise TimeoutError()
        except TimeoutError:
            raise RuntimeError("the model stopped answering.")
    except RuntimeError as e:
        assert failure_message(e) == "the model stopped answering: TimeoutError"


def test_failure_message_redacts_secrets():
    err = _raised(
        RuntimeError("Connection error."),
        ValueError(
            "Incorrect API key provided: sk-proj-abc123XYZ789. See https://user:hunter2@llm.internal:8000/v1/chat"
            "?api-key=AZURESECRET&x=1 with Authorization: Bearer eyJhbGciOi.payload.sig, api_key='k-42'"
        ),
    )
    msg = failure_message(err)
    for secret in ("sk-proj-abc123XYZ789", "hunter2", "AZURESECRET", "eyJhbGciOi", "k-42", "user:"):
        assert secret not in msg, msg
    assert msg == (
        "Connection error: Incorrect API key provided: [redacted key]. See https://[redacted]@llm.internal:8000/v1/"
        "chat?[redacted] with Authorization: Bearer [redacted], api_key='[redacted]'"
    )


def test_failure_message_is_bounded_and_ends_on_a_cycle():
    a, b = ValueError("a" * 3000), ValueError("b")
    a.__cause__, b.__cause__ = b, a
    assert len(failure_message(a)) == 2000 and failure_message(b).startswith("b: aaa")
