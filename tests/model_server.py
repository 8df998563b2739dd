"""A local model server for the tests: OpenAI's Responses API and Chat Completions, streamed as Server-Sent Events
over real HTTP, for `runcast serve --model NAME` to reach through the real `openai` client (OPENAI_BASE_URL).

It plays the demo agents (runcast.demo's scripts, chosen by the tools a request offers), so a run goes list_files,
delete_files (an approval), then the final answer, deciding each step from the conversation it is sent: stateless,
like a real model. Every request is recorded with the usage the server reported for it, so a test can check the
run's usage to the token.

Faults are queued per test with `fail(...)`, one per model request, in order (`Ok()` lets one request through):
- `RateLimited(retry_after)`: HTTP 429 with `retry-after` (the openai client waits that long and retries);
- `ServerError()`: HTTP 500;
- `Unauthorized()`: HTTP 401 quoting the API key (and a URL with credentials), for the redaction;
- `Cut()`: a 200 whose body stops mid-way (the socket is closed before the last chunk of the chunked body);
- `EarlyEnd()`: a 200 whose body ends cleanly (the last chunk is sent) before `response.completed`.

It is also an HTTP proxy that refuses everything and records what it was asked to reach (`proxied`): with
HTTPS_PROXY pointing at it, a trace export to api.openai.com shows up there as a CONNECT, and never leaves.

Event shapes are the `openai` package's own types (`openai.types.responses.*`, `ChatCompletionChunk`), dumped the
way the API sends them (`model_dump_json(exclude_none=True)`), so the client parses what it parses in production.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from openai.types.chat import ChatCompletionChunk
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
    ResponseTextDeltaEvent,
    ResponseUsage,
)
from openai.types.responses.response_usage import InputTokensDetails, OutputTokensDetails

from runcast.demo import Step, janitor_script, ops_script, release_script, triage_script

SCRIPTS = {
    "delete_files": janitor_script,
    "restart_service": ops_script,
    "transfer_to_ops": triage_script,
    "deploy": release_script,
}


@dataclass
class Ok:
    """No fault: a normal reply (to let the first requests of a run through before a fault)."""


@dataclass
class RateLimited:
    retry_after: str = "0.2"


@dataclass
class ServerError:
    pass


@dataclass
class Unauthorized:
    """HTTP 401 whose message quotes the key it was sent, and a URL with credentials and a query, as a careless
    gateway might: what watchers see must hold none of them."""


@dataclass
class Cut:
    pass


@dataclass
class EarlyEnd:
    pass


Fault = Ok | RateLimited | ServerError | Unauthorized | Cut | EarlyEnd


@dataclass
class Request:
    """One model request as the server saw it."""

    api: str  # "responses" or "chat"
    model: str
    body: dict[str, Any]
    headers: dict[str, str]
    reply: str  # "ok", "429", "500", "cut", "early_end"
    usage: dict[str, int] = field(default_factory=dict)  # what the server reported (an "ok" reply only)
    deltas: list[str] = field(default_factory=list)  # the text deltas it streamed, in order
    tools_called: list[str] = field(default_factory=list)


def _words(text: str) -> list[str]:
    import re

    return re.findall(r"\S+\s*", text) or [text]


def _tool_names(api: str, body: dict[str, Any]) -> list[str]:
    out = []
    for t in body.get("tools") or []:
        out.append(t.get("name") or (t.get("function") or {}).get("name"))
    return [n for n in out if n]


def _conversation(api: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The request's input as Responses input items (Chat messages turned into function_call / _output items), so the
    demo scripts read both APIs the same way."""
    if api == "responses":
        items = body.get("input")
        return items if isinstance(items, list) else [{"role": "user", "content": items}]
    out: list[dict[str, Any]] = []
    for m in body.get("messages") or []:
        for tc in m.get("tool_calls") or []:
            out.append({"type": "function_call", "call_id": tc["id"], "name": tc["function"]["name"]})
        if m.get("role") == "tool":
            out.append({"type": "function_call_output", "call_id": m.get("tool_call_id"), "output": m.get("content")})
        else:
            out.append(m)
    return out


class ModelServer:
    """Start with `start()`; `url` is the base URL for OPENAI_BASE_URL; `stop()` at the end."""

    def __init__(self, delta_pause_s: float = 0.0) -> None:
        self.requests: list[Request] = []
        self.proxied: list[str] = []  # CONNECT targets / absolute URLs it was asked to reach as a proxy
        self.delta_pause_s = delta_pause_s
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None

    # ---- the test's side
    def fail(self, *faults: Fault) -> None:
        with self._lock:
            self._faults.extend(faults)

    @property
    def url(self) -> str:
        assert self._httpd is not None
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    @property
    def proxy_url(self) -> str:
        assert self._httpd is not None
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def ok(self) -> list[Request]:
        return [r for r in self.requests if r.reply == "ok"]

    def start(self) -> "ModelServer":
        server = self

        class Handler(_Handler):
            model_server = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, daemon=True, name="model-server").start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

    def _next_fault(self) -> Fault | None:
        with self._lock:
            return self._faults.pop(0) if self._faults else None

    # ---- a turn
    def step(self, api: str, body: dict[str, Any]) -> Step:
        if body.get("model") == "user-own-model":  # the user's own agent (tests/agents_real.py)
            return Step("This is the user's own agent answering on its own model.")
        names = _tool_names(api, body)
        script = next((s for tool, s in SCRIPTS.items() if tool in names), None)
        if script is None:
            return Step("I have no tools here, so I only answer: hello.")
        return script(_conversation(api, body))

    @staticmethod
    def usage_for(n_items: int, step: Step) -> dict[str, int]:
        inp = 100 + 7 * n_items
        out = len(step.text.split()) + 3 * len(step.calls)
        return {"input_tokens": inp, "output_tokens": out, "total_tokens": inp + out}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    model_server: ModelServer

    def log_message(self, *args: Any) -> None:
        pass

    # ---- a proxy that refuses everything (HTTPS_PROXY=<proxy_url>): what would have left the machine is recorded
    def do_CONNECT(self) -> None:  # noqa: N802
        self.model_server.proxied.append(self.path)
        self._plain(403, b"this test proxy refuses every destination")

    def _plain(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def do_POST(self) -> None:  # noqa: N802
        if self.path.startswith("http"):  # a plain-HTTP request through the proxy
            self.model_server.proxied.append(self.path)
            self._plain(403, b"refused")
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        if self.path.endswith("/responses"):
            api = "responses"
        elif self.path.endswith("/chat/completions"):
            api = "chat"
        else:
            self._plain(
                404,
                json.dumps({"error": {"message": f"no route {self.path}", "type": "not_found"}}).encode(),
                {"Content-Type": "application/json"},
            )
            return
        srv = self.model_server
        headers = {
            k.lower(): v for k, v in self.headers.items() if k.lower() in ("authorization", "x-stainless-retry-count")
        }
        rec = Request(api=api, model=str(body.get("model")), body=body, headers=headers, reply="ok")
        srv.requests.append(rec)
        fault = srv._next_fault()
        if isinstance(fault, RateLimited):
            rec.reply = "429"
            err = {
                "error": {
                    "message": "Rate limit reached for requests",
                    "type": "requests",
                    "code": "rate_limit_exceeded",
                }
            }
            self._plain(
                429, json.dumps(err).encode(), {"Content-Type": "application/json", "retry-after": fault.retry_after}
            )
            return
        if isinstance(fault, ServerError):
            rec.reply = "500"
            err = {
                "error": {"message": "The server had an error while processing your request.", "type": "server_error"}
            }
            self._plain(500, json.dumps(err).encode(), {"Content-Type": "application/json"})
            return
        if isinstance(fault, Unauthorized):
            rec.reply = "401"
            key = self.headers.get("Authorization", "").removeprefix("Bearer ")
            err = {
                "error": {
                    "message": f"Incorrect API key provided: {key}. Upstream https://svc:pw@llm.internal/v1?sig=abc "
                    f"answered 401 to Authorization: Bearer {key}",
                    "type": "invalid_request_error",
                }
            }
            self._plain(401, json.dumps(err).encode(), {"Content-Type": "application/json"})
            return
        step = srv.step(api, body)
        conv = _conversation(api, body)
        usage = srv.usage_for(len(conv), step)
        frames = self._responses(step, usage, len(conv)) if api == "responses" else self._chat(step, usage, body)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        if isinstance(fault, (Cut, EarlyEnd)):
            rec.reply = "cut" if isinstance(fault, Cut) else "early_end"
            frames = frames[: max(2, len(frames) // 2)]  # a few deltas, never the end
        else:
            rec.usage = usage
            rec.tools_called = [name for name, _ in step.calls]
        for kind, data, *delta in frames:
            if kind == "pause":
                time.sleep(srv.delta_pause_s)
                continue
            self._chunk(data)
            if delta:  # recorded once sent: a cut stream records what it sent, no more
                rec.deltas.append(delta[0])
        if isinstance(fault, Cut):
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)  # no terminating chunk: an incomplete chunked body
            return
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    # ---- Responses API: `event: <type>` + `data: <json>` per event
    def _responses(self, step: Step, usage: dict[str, int], n: int) -> list[tuple[Any, ...]]:
        tag = f"{n}_{abs(hash(step.text)) % 10**8}"
        msg = ResponseOutputMessage(
            type="message",
            id=f"msg_{tag}",
            role="assistant",
            status="completed",
            content=[ResponseOutputText(type="output_text", text=step.text, annotations=[], logprobs=[])],
        )
        output: list[Any] = [msg]
        for k, (name, args) in enumerate(step.calls):
            output.append(
                ResponseFunctionToolCall(
                    type="function_call",
                    id=f"fc_{tag}_{k}",
                    call_id=f"call_{tag}_{k}",
                    name=name,
                    arguments=json.dumps(args),
                    status="completed",
                )
            )
        resp = Response(
            id=f"resp_{tag}",
            created_at=time.time(),
            model="local",
            object="response",
            output=output,
            tool_choice="auto",
            tools=[],
            parallel_tool_calls=False,
            status="completed",
            usage=ResponseUsage(
                input_tokens=usage["input_tokens"],
                output_tokens=usage["output_tokens"],
                total_tokens=usage["total_tokens"],
                input_tokens_details=InputTokensDetails(cached_tokens=0, cache_write_tokens=0),
                output_tokens_details=OutputTokensDetails(reasoning_tokens=0),
            ),
        )
        seq = iter(range(100_000))
        out: list[tuple[Any, ...]] = []

        def ev(e: Any) -> None:
            out.append(("sse", f"event: {e.type}\ndata: {e.model_dump_json(exclude_none=True)}\n\n".encode()))

        ev(
            ResponseCreatedEvent(
                type="response.created",
                sequence_number=next(seq),
                response=resp.model_copy(update={"output": [], "status": "in_progress", "usage": None}),
            )
        )
        ev(
            ResponseOutputItemAddedEvent(
                type="response.output_item.added",
                output_index=0,
                sequence_number=next(seq),
                item=msg.model_copy(update={"content": [], "status": "in_progress"}),
            )
        )
        ev(
            ResponseContentPartAddedEvent(
                type="response.content_part.added",
                item_id=msg.id,
                output_index=0,
                content_index=0,
                sequence_number=next(seq),
                part=ResponseOutputText(type="output_text", text="", annotations=[], logprobs=[]),
            )
        )
        for w in _words(step.text):
            ev(
                ResponseTextDeltaEvent(
                    type="response.output_text.delta",
                    item_id=msg.id,
                    output_index=0,
                    content_index=0,
                    delta=w,
                    logprobs=[],
                    sequence_number=next(seq),
                )
            )
            out[-1] += (w,)
            out.append(("pause", None))
        ev(
            ResponseOutputItemDoneEvent(
                type="response.output_item.done", output_index=0, item=msg, sequence_number=next(seq)
            )
        )
        for idx, fc in enumerate(output[1:], start=1):
            ev(
                ResponseOutputItemAddedEvent(
                    type="response.output_item.added",
                    output_index=idx,
                    sequence_number=next(seq),
                    item=fc.model_copy(update={"arguments": "", "status": "in_progress"}),
                )
            )
            ev(
                ResponseFunctionCallArgumentsDeltaEvent(
                    type="response.function_call_arguments.delta",
                    item_id=fc.id,
                    output_index=idx,
                    delta=fc.arguments,
                    sequence_number=next(seq),
                )
            )
            ev(
                ResponseOutputItemDoneEvent(
                    type="response.output_item.done", output_index=idx, item=fc, sequence_number=next(seq)
                )
            )
        ev(ResponseCompletedEvent(type="response.completed", response=resp, sequence_number=next(seq)))
        return out

    # ---- Chat Completions: `data: <chat.completion.chunk>` lines, then `data: [DONE]`
    def _chat(self, step: Step, usage: dict[str, int], body: dict[str, Any]) -> list[tuple[Any, ...]]:
        cid, created = f"chatcmpl-{abs(hash(step.text)) % 10**8}", int(time.time())
        out: list[tuple[Any, ...]] = []

        def chunk(delta: dict[str, Any] | None, finish: str | None = None, use: dict[str, int] | None = None) -> None:
            raw: dict[str, Any] = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": "local",
                "choices": [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            if use is not None:
                raw["usage"] = {
                    "prompt_tokens": use["input_tokens"],
                    "completion_tokens": use["output_tokens"],
                    "total_tokens": use["total_tokens"],
                }
            c = ChatCompletionChunk.model_validate(raw)
            out.append(("sse", f"data: {c.model_dump_json(exclude_none=True)}\n\n".encode()))

        chunk({"role": "assistant", "content": ""})
        for w in _words(step.text):
            chunk({"content": w})
            out[-1] += (w,)
            out.append(("pause", None))
        for k, (name, args) in enumerate(step.calls):
            call_id = f"call_{cid}_{k}"
            chunk(
                {
                    "tool_calls": [
                        {"index": k, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}
                    ]
                }
            )
            chunk({"tool_calls": [{"index": k, "function": {"arguments": json.dumps(args)}}]})
        chunk({}, "tool_calls" if step.calls else "stop")
        if (body.get("stream_options") or {}).get("include_usage"):
            chunk(None, use=usage)
        out.append(("sse", b"data: [DONE]\n\n"))
        return out
