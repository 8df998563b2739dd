"""The real-model path, for real: `runcast serve --model NAME` (a real subprocess) runs the demo agents through the real
`openai` client, over HTTP, to a local server that streams the Responses API (or Chat Completions) as Server-Sent
Events (tests/model_server.py). No mocked client, and nothing leaves the machine.

What watchers see is checked event by event: the text deltas in the order the server sent them, the tool calls, the
approval, the resume, and usage to the token. Then the faults a real provider has: a 429 with `retry-after` (the
openai client waits and retries), a 500, a stream cut mid-way, a clean end before `response.completed`; each ends the
run with `run.failed` naming its cause, and the usage spent before it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hubtest import ALICE, OPERATOR, TERMINAL, VIEWER, Client, Cluster, on_redis
from model_server import Cut, EarlyEnd, ModelServer, Ok, RateLimited, Request, ServerError, Unauthorized
from runcast.settings import custom_base_url, resolve_tracing

API_KEY = "sk-test-0123456789abcdefghij"
MODEL = "test-model"
SDK_EXPORT_EVERY_S = 5.0  # agents.tracing.processors.BatchTraceProcessor's schedule_delay


def model_env(srv: ModelServer, **extra: str) -> dict[str, str]:
    # RUNCAST_COALESCE_S=0: one message.delta per delta the server sent, so their order is checked one by one
    return {"OPENAI_BASE_URL": srv.url, "OPENAI_API_KEY": API_KEY, "RUNCAST_COALESCE_S": "0", **extra}


@pytest.fixture(scope="module")
def srv() -> Iterator[ModelServer]:
    s = ModelServer().start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def mem(srv: ModelServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(
        tmp_path_factory.mktemp("real-memory"), "memory", env=model_env(srv), serve_args=["--model", MODEL]
    ).start()
    yield c
    c.stop()


@pytest.fixture(scope="module", params=["memory", "redis"])
def real(
    request: pytest.FixtureRequest, srv: ModelServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """The main path on both backends: on Redis, one hub node and two worker processes, so a resumed segment may
    run in another process, with its own openai client."""
    if request.param == "memory":
        yield request.getfixturevalue("mem")
        return
    with on_redis(
        tmp_path_factory.mktemp("real-redis"),
        nodes=1,
        workers=2,
        env=model_env(srv),
        serve_args=["--model", MODEL],
        worker_args=["--model", MODEL],
    ) as c:
        yield c


def total(reqs: list[Request]) -> dict[str, int]:
    out = {"requests": len(reqs), "input_tokens": 0, "output_tokens": 0, "total_tokens": 0}
    for r in reqs:
        for k, v in r.usage.items():
            out[k] += v
    return out


def turns(w: Client, run_id: str, key: str = "delta") -> list[list[str]]:
    """The text deltas (or another field of them) of each message, in log order: a message.completed closes one (the
    last list is a message still open). By position, so that the item ids themselves can be checked."""
    out: list[list[str]] = [[]]
    for e in w.events(run_id, ("message.delta", "message.completed")):
        if e["type"] == "message.delta":
            out[-1].append(e["data"][key])
        else:
            out.append([])
    return out


async def watch(c: Cluster, agent: str = "demo") -> tuple[str, Client]:
    run_id = c.start_run(agent, tok=OPERATOR)
    w = await Client.connect(c.ws_url(), VIEWER)
    await w.subscribe(run_id)
    return run_id, w


async def approve(c: Cluster, run_id: str, approval_id: str) -> None:
    a = await Client.connect(c.ws_url(), ALICE)
    ack = await a.request({"type": "decide", "run_id": run_id, "approval_id": approval_id, "decision": "approve"})
    assert ack["type"] == "ack", ack
    await a.close()


async def check_main_path(c: Cluster, srv: ModelServer, api: str) -> None:
    n0 = len(srv.requests)
    run_id, w = await watch(c)
    requested = await w.wait_event(run_id, "approval.requested", timeout=60)
    await w.wait_event(run_id, "run.paused")
    first, second = srv.requests[n0 : n0 + 2]
    assert [r.api for r in (first, second)] == [api, api] and {first.model, second.model} == {MODEL}
    assert first.headers["authorization"] == f"Bearer {API_KEY}"
    # each turn's text, delta by delta, in the order the server streamed it; then the whole message
    texts = [e["data"] for e in w.events(run_id, ("message.completed",))]
    assert [t["text"] for t in texts] == ["".join(first.deltas), "".join(second.deltas)]
    assert turns(w, run_id) == [first.deltas, second.deltas, []]
    # one item id per message, the same on its deltas (Chat Completions has none: the SDK gives them all one placeholder)
    ids = [t["item_id"] for t in texts]
    assert len(set(ids)) == 2 and "__fake_id__" not in ids
    assert turns(w, run_id, key="item_id") == [[ids[0]] * len(first.deltas), [ids[1]] * len(second.deltas), []]
    assert len(first.deltas) > 5
    called = [e["data"] for e in w.events(run_id, ("tool.called",))]
    assert [x["tool"] for x in called] == ["list_files", "delete_files"]
    assert json.loads(called[1]["arguments"]) == {
        "paths": ["scratch/build-cache.tar", "scratch/old-logs.zip", "scratch/tmp-export.csv"]
    }
    assert requested["data"]["tool"] == "delete_files" and requested["data"]["call_id"] == called[1]["call_id"]
    assert c.tool_calls(run_id, "delete_files") == []  # nothing ran before the approval

    await approve(c, run_id, requested["data"]["approval_id"])
    end = await w.wait_event(run_id, TERMINAL, timeout=60)
    third = srv.requests[n0 + 2]
    assert end["type"] == "run.completed", end
    assert end["data"]["output"] == "".join(third.deltas) and end["data"]["output"].startswith(
        "Done. I deleted 3 files"
    )
    # the resumed request carried the tool's output, and the tool ran once
    outputs = [
        i
        for i in third.body.get("input") or third.body.get("messages") or []
        if i.get("type") == "function_call_output" or i.get("role") == "tool"
    ]
    assert any("deleted 3 files" in str(i.get("output", i.get("content"))) for i in outputs)
    assert len(c.tool_calls(run_id, "delete_files")) == 1
    # usage: exactly what the server reported, over both segments
    assert len(srv.requests) == n0 + 3 and [r.reply for r in srv.requests[n0:]] == ["ok"] * 3
    assert end["data"]["usage"] == total(srv.requests[n0 : n0 + 3])
    await w.close()


async def test_a_demo_run_on_a_real_client_streams_pauses_resumes_and_counts_usage(
    real: Cluster, srv: ModelServer
) -> None:
    await check_main_path(real, srv, "responses")


async def test_a_429_with_retry_after_is_retried_by_the_client_and_the_run_goes_on(
    mem: Cluster, srv: ModelServer
) -> None:
    n0 = len(srv.requests)
    srv.fail(RateLimited(retry_after="0.3"))
    run_id, w = await watch(mem)
    await w.wait_event(run_id, "run.paused", timeout=60)
    assert [r.reply for r in srv.requests[n0:]] == ["429", "ok", "ok"]
    assert srv.requests[n0 + 1].headers.get("x-stainless-retry-count") == "1"  # the openai client's own retry
    assert w.events(run_id, ("run.failed",)) == []
    await w.close()


@pytest.mark.parametrize(
    "fault, code, says",
    [
        (RateLimited(retry_after="0.1"), "RateLimitError", "Error code: 429 - Rate limit reached for requests"),
        (
            ServerError(),
            "InternalServerError",
            "Error code: 500 - The server had an error while processing your request.",
        ),
    ],
)
async def test_a_model_that_keeps_refusing_fails_the_run_after_the_clients_retries(
    mem: Cluster, srv: ModelServer, fault: Any, code: str, says: str
) -> None:
    n0 = len(srv.requests)
    srv.fail(Ok(), fault, fault, fault)  # the first turn goes through; the second is refused three times
    run_id, w = await watch(mem)
    end = await w.wait_event(run_id, TERMINAL, timeout=60)
    reply = "429" if code == "RateLimitError" else "500"
    assert [r.reply for r in srv.requests[n0:]] == ["ok", reply, reply, reply]  # the openai client tried 1 + 2 times
    assert end["type"] == "run.failed" and end["data"]["code"] == code
    assert end["data"]["message"] == says, end["data"]
    assert end["data"]["usage"] == total(srv.requests[n0 : n0 + 1])  # the first turn's tokens were spent
    await w.close()


async def test_a_stream_cut_mid_way_fails_the_run_with_its_cause_and_the_usage_so_far(
    mem: Cluster, srv: ModelServer
) -> None:
    n0 = len(srv.requests)
    srv.fail(Ok(), Cut())
    run_id, w = await watch(mem)
    end = await w.wait_event(run_id, TERMINAL, timeout=60)
    first, cut = srv.requests[n0:]  # the SDK does not replay a stream that was cut: one try
    assert (first.reply, cut.reply) == ("ok", "cut")
    assert end["type"] == "run.failed", end
    assert end["data"]["code"] == "APIConnectionError"
    assert end["data"]["message"] == (
        "Connection error: peer closed connection without sending complete message body (incomplete chunked read)"
    )
    assert end["data"]["usage"] == total([first])
    # what was streamed before the cut reached the watchers, in order, then the failure
    done, partial = turns(w, run_id)  # the first turn whole; of the cut one, what the client parsed before the cut
    assert done == first.deltas and partial and partial == cut.deltas[: len(partial)]
    assert w.events(run_id)[-1] == end
    await w.close()


async def test_watchers_never_see_the_api_key_or_credentials_a_failure_quotes(mem: Cluster, srv: ModelServer) -> None:
    n0 = len(srv.requests)
    srv.fail(Unauthorized())
    run_id, w = await watch(mem)
    end = await w.wait_event(run_id, TERMINAL, timeout=60)
    assert [r.reply for r in srv.requests[n0:]] == ["401"]  # not retried
    assert end["type"] == "run.failed" and end["data"]["code"] == "AuthenticationError"
    assert end["data"]["message"] == (
        "Error code: 401 - Incorrect API key provided: [redacted key]. Upstream "
        "https://[redacted]@llm.internal/v1?[redacted] answered 401 to Authorization: "
        "Bearer [redacted]"
    )
    detail = mem.http("GET", f"/api/runs/{run_id}").text + json.dumps(mem.log_events(run_id))
    for secret in (API_KEY, "svc:pw", "sig=abc"):
        assert secret not in detail
    assert API_KEY not in mem.nodes[0].log_path.read_text()  # nor does the hub's log
    await w.close()


async def test_a_clean_end_before_response_completed_fails_the_run(mem: Cluster, srv: ModelServer) -> None:
    n0 = len(srv.requests)
    srv.fail(EarlyEnd())
    run_id, w = await watch(mem)
    end = await w.wait_event(run_id, TERMINAL, timeout=60)
    assert [r.reply for r in srv.requests[n0:]] == ["early_end"]
    assert end["type"] == "run.failed"
    assert end["data"] == {
        "code": "ModelBehaviorError",
        "message": "Model did not produce a final response!",
        "usage": {"requests": 0, "input_tokens": 0, "output_tokens": 0, "total_tokens": 0},
    }
    await w.close()


async def test_a_failure_after_a_resume_reports_the_usage_of_every_segment(real: Cluster, srv: ModelServer) -> None:
    n0 = len(srv.requests)
    run_id, w = await watch(real)
    requested = await w.wait_event(run_id, "approval.requested", timeout=60)
    await w.wait_event(run_id, "run.paused")
    srv.fail(Cut())
    await approve(real, run_id, requested["data"]["approval_id"])
    end = await w.wait_event(run_id, TERMINAL, timeout=60)
    assert [r.reply for r in srv.requests[n0:]] == ["ok", "ok", "cut"]
    assert end["type"] == "run.failed"
    assert end["data"]["usage"] == total(srv.requests[n0 : n0 + 2])  # carried over the pause, in the RunState
    await w.close()


# ---------------------------------------------------------------------------------------------- --model-api chat


@pytest.fixture(scope="module")
def chat(srv: ModelServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(
        tmp_path_factory.mktemp("real-chat"),
        "memory",
        env=model_env(srv),
        serve_args=["--model", MODEL, "--model-api", "chat", "--agents", "agents_real"],
    ).start()
    yield c
    c.stop()


async def test_model_api_chat_runs_the_demo_agents_on_chat_completions(chat: Cluster, srv: ModelServer) -> None:
    await check_main_path(chat, srv, "chat")


async def test_agents_of_the_users_own_module_keep_their_own_model_settings(chat: Cluster, srv: ModelServer) -> None:
    n0 = len(srv.requests)
    run_id, w = await watch(chat, "mine")
    end = await w.wait_event(run_id, TERMINAL, timeout=60)
    assert end["type"] == "run.completed", end
    # its own model name, over the SDK's default (the Responses API), not --model over Chat Completions
    assert [(r.api, r.model) for r in srv.requests[n0:]] == [("responses", "user-own-model")]
    assert end["data"]["usage"] == total(srv.requests[n0:])
    await w.close()


@pytest.mark.parametrize(
    "var, says",
    [
        ("RUNCAST_MODEL_API", "--model-api must be one of responses, chat, not 'nope'"),
        ("RUNCAST_TRACING", "--tracing must be one of off, openai, not 'nope'"),
    ],
)
def test_model_api_and_tracing_are_read_from_the_environment_and_checked(tmp_path: Path, var: str, says: str) -> None:
    import subprocess
    import sys

    from hubtest import ROOT, base_env

    env = base_env(tmp_path, **{var: "nope"})
    out = subprocess.run(
        [sys.executable, "-m", "runcast.cli", "serve", "--port", "0"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0 and f"runcast: {says}" in out.stderr


# ---------------------------------------------------------------------------------------------- --tracing


def test_tracing_default_is_off_with_a_base_url_of_ones_own() -> None:
    key = {"OPENAI_API_KEY": API_KEY}
    assert resolve_tracing(None, key)[0] == "openai"  # the SDK's default, against OpenAI itself
    assert resolve_tracing(None, key | {"OPENAI_BASE_URL": "https://api.openai.com/v1"})[0] == "openai"
    assert resolve_tracing(None, key | {"OPENAI_BASE_URL": "http://vllm.internal:8000/v1"}) == (
        "off",
        "OPENAI_BASE_URL is not OpenAI's (--tracing openai to export anyway)",
    )
    assert resolve_tracing("openai", key | {"OPENAI_BASE_URL": "http://vllm.internal:8000/v1"})[0] == "openai"
    assert resolve_tracing(None, {})[0] == "off"
    for v in ("1", "true", "TRUE"):  # the SDK's own switch wins, even over --tracing openai
        assert resolve_tracing("openai", key | {"OPENAI_AGENTS_DISABLE_TRACING": v})[0] == "off"
    assert resolve_tracing("off", key)[0] == "off"
    with pytest.raises(ValueError, match="--tracing must be one of off, openai"):
        resolve_tracing("datadog", key)
    assert custom_base_url({"OPENAI_BASE_URL": "http://127.0.0.1:8000/v1"}) and not custom_base_url({})


async def traced_run(
    srv: ModelServer, tmp: Path, args: list[str], linger: bool = False, **env: str
) -> tuple[list[str], str]:
    """One demo run, to the end, on a hub whose HTTPS proxy is the model server's refusing proxy; the hub is then
    stopped (a stopping worker flushes its traces). With `linger`, it first lives past the SDK's export interval, so
    that a check that no trace left does not pass only because the hub stopped first. Returns what the proxy was asked
    to reach, and the hub's log."""
    tmp.mkdir(exist_ok=True)
    c = Cluster(
        tmp,
        "memory",
        env=model_env(srv, HTTPS_PROXY=srv.proxy_url, RUNCAST_LOG_LEVEL="INFO", **env),
        serve_args=["--model", MODEL, *args],
    )
    if "OPENAI_AGENTS_DISABLE_TRACING" not in env:
        c.env.pop("OPENAI_AGENTS_DISABLE_TRACING")  # the test harness sets it for every other test
    p0 = len(srv.proxied)
    c.start()
    try:
        run_id, w = await watch(c)
        requested = await w.wait_event(run_id, "approval.requested", timeout=60)
        await approve(c, run_id, requested["data"]["approval_id"])
        assert (await w.wait_event(run_id, TERMINAL, timeout=60))["type"] == "run.completed"
        await w.close()
        if linger:
            await asyncio.sleep(SDK_EXPORT_EVERY_S + 2)  # long enough for the SDK's own export, were tracing on
    finally:
        c.stop()
    return srv.proxied[p0:], c.nodes[0].log_path.read_text()


async def test_with_a_base_url_of_ones_own_no_trace_leaves(srv: ModelServer, tmp_path: Path) -> None:
    proxied, log = await traced_run(srv, tmp_path, [], linger=True)
    assert proxied == [] and "Tracing request failed" not in log
    assert "tracing off (OPENAI_BASE_URL is not OpenAI's" in log


async def test_tracing_openai_exports_and_the_sdks_own_switch_still_wins(srv: ModelServer, tmp_path: Path) -> None:
    proxied, log = await traced_run(srv, tmp_path / "on", ["--tracing", "openai"])
    assert "api.openai.com:443" in proxied and "Tracing request failed" in log, log  # what the default above prevents
    proxied, log = await traced_run(
        srv, tmp_path / "env-off", ["--tracing", "openai"], linger=True, OPENAI_AGENTS_DISABLE_TRACING="1"
    )
    assert proxied == [] and "Tracing request failed" not in log
