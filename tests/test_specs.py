"""The AsyncAPI and OpenAPI documents: valid by the ecosystem's own validators, built from the models the hub parses
with, true to what a real hub sends, and fuzzed by Schemathesis against a real `runcast serve` on both backends."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from openapi_spec_validator import validate as validate_openapi
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from hubtest import ADMIN, ALICE, OPERATOR, ROOT, Client, Cluster, on_redis
from runcast import protocol, specs
from runcast.hub import Hub, create_app
from runcast.protocol import COMMAND_TYPES, CloseCode, ErrorCode

SPECS_JS = ROOT / "tests" / "specs"


def _parse_asyncapi(doc: dict[str, Any], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    assert (SPECS_JS / "node_modules").exists(), f"run `npm ci` in {SPECS_JS} first (make test does)"
    path = tmp_path / "asyncapi.json"
    path.write_text(json.dumps(doc))
    return subprocess.run(
        ["node", str(SPECS_JS / "validate.mjs"), str(path)], capture_output=True, text=True, timeout=120
    )


# ------------------------------------------------------------------------------------------------ validators


def test_the_asyncapi_document_passes_the_asyncapi_parser(tmp_path: Path) -> None:
    out = _parse_asyncapi(specs.asyncapi(), tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "valid: AsyncAPI 3." in out.stdout


def test_the_asyncapi_parser_refuses_a_broken_document(tmp_path: Path) -> None:
    doc = specs.asyncapi()
    doc["operations"]["sendCommand"]["messages"].append({"$ref": "#/channels/ws/messages/NoSuchMessage"})
    out = _parse_asyncapi(doc, tmp_path)
    assert out.returncode == 1 and "NoSuchMessage" in out.stdout, out.stdout


def test_the_openapi_document_passes_openapi_spec_validator() -> None:
    validate_openapi(specs.openapi())


def test_openapi_spec_validator_refuses_a_broken_document() -> None:
    doc = specs.openapi()
    doc["paths"]["/api/runs"]["get"]["responses"]["200"]["content"]["application/json"]["schema"] = {"type": "nope"}
    with pytest.raises(Exception, match="nope"):
        validate_openapi(doc)


# ------------------------------------------------------------------------------------ the documents and the code


def test_every_command_model_is_an_asyncapi_message_with_the_models_own_schema() -> None:
    doc = specs.asyncapi()
    by_name = {m["name"]: m for m in doc["components"]["messages"].values()}
    for kind, adapter in specs.command_models().items():
        assert kind in by_name, f"command {kind} missing from the AsyncAPI document"
        ref = by_name[kind]["payload"]["$ref"].rsplit("/", 1)[1]
        expected = adapter.json_schema(ref_template=specs.SCHEMAS)
        expected.pop("$defs", None)
        assert doc["components"]["schemas"][ref] == expected
    sent = {r["$ref"].rsplit("/", 1)[1] for r in doc["operations"]["sendCommand"]["messages"]}
    assert {by_name[k]["payload"]["$ref"].rsplit("/", 1)[1] for k in COMMAND_TYPES} == sent


def test_error_and_close_codes_are_all_in_the_asyncapi_document() -> None:
    doc = specs.asyncapi()
    codes = {v for k, v in vars(ErrorCode).items() if k.isupper()}
    assert set(doc["components"]["schemas"]["ErrorFrame"]["properties"]["code"]["enum"]) == codes
    closes = {str(v) for k, v in vars(CloseCode).items() if k.isupper()}
    assert set(doc["components"]["x-close-codes"]) == closes


def test_every_http_route_is_in_the_openapi_document_and_nothing_else(tmp_path: Path) -> None:
    from runcast.backends.memory import MemoryBackend
    from runcast.demo import demo_registry
    from runcast.settings import Settings

    app = create_app(Hub(MemoryBackend(), demo_registry(), Settings(secret="x")))
    routes = {
        (r.path, m)
        for r in app.routes
        if getattr(r, "methods", None)
        for m in r.methods - {"HEAD"}  # type: ignore[attr-defined]
        if r.path.startswith(("/api/", "/healthz", "/readyz", "/metrics"))
    }  # type: ignore[attr-defined]
    documented = {(p, m.upper()) for p, ops in specs.openapi()["paths"].items() for m in ops}
    assert routes == documented


def _validator(doc: dict[str, Any], name: str) -> jsonschema.Draft202012Validator:
    """A validator for components/schemas/<name> of `doc`, resolving its $refs inside the document."""
    registry = Registry().with_resource("urn:doc", DRAFT202012.create_resource(doc))
    return jsonschema.Draft202012Validator({"$ref": f"urn:doc#/components/schemas/{name}"}, registry=registry)


def _frame_schema_name(doc: dict[str, Any], frame: dict[str, Any]) -> str:
    by_name = {m["name"]: m for n, m in doc["components"]["messages"].items() if not n.endswith("Command")}
    kind = frame["type"]
    assert kind in by_name, f"the hub sent a {kind!r} frame the AsyncAPI document does not describe: {frame}"
    return by_name[kind]["payload"]["$ref"].rsplit("/", 1)[1]


@pytest.fixture(scope="module")
def memory_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("specs-memory"), "memory").start()
    yield c
    c.stop()


async def test_every_frame_a_real_run_sends_matches_the_asyncapi_document(memory_hub: Cluster) -> None:
    """A run through an approval to completion, watched with the inbox and the run list: every frame the hub sends,
    run event or control frame, validates against its message's schema."""
    doc = specs.asyncapi()
    watcher = await Client.connect(memory_hub.ws_url(), ALICE)
    await watcher.send({"type": "subscribe_inbox", "id": "i"})
    await watcher.send({"type": "subscribe_runs", "id": "r"})
    await watcher.wait_for(lambda f: f["type"] == "runs")
    run_id = memory_hub.start_run(tok=OPERATOR)
    await watcher.subscribe(run_id)
    req = await watcher.wait_event(run_id, "approval.requested")
    await watcher.request(
        {
            "type": "decide",
            "run_id": run_id,
            "approval_id": req["data"]["approval_id"],
            "decision": "approve",
            "id": "d",
        }
    )
    await watcher.wait_event(run_id, "run.completed")
    await watcher.request({"type": "ping", "id": "p"})
    await watcher.request({"type": "subscribe", "run_id": "nope", "id": "e"})
    await watcher.close()
    seen = set()
    for frame in watcher.frames:
        name = _frame_schema_name(doc, frame)
        _validator(doc, name).validate(frame)
        seen.add(frame["type"])
    assert {
        "welcome",
        "ack",
        "error",
        "sync",
        "pong",
        "inbox",
        "runs",
        "run.status",
        "presence",
        "run.started",
        "approval.requested",
        "approval.decided",
        "run.paused",
        "run.resumed",
        "run.completed",
    } <= seen


def test_a_frame_the_document_does_not_describe_is_caught() -> None:
    doc = specs.asyncapi()
    with pytest.raises(AssertionError, match="does not describe"):
        _frame_schema_name(doc, {"type": "surprise"})
    with pytest.raises(jsonschema.ValidationError):
        _validator(doc, "RunCompletedEvent").validate(
            {"run_id": "r", "seq": 0, "ts": "x", "type": "run.completed", "data": {"output": "x"}}
        )


# ------------------------------------------------------------------------------------------------ Schemathesis


def _schemathesis(cluster: Cluster, tmp: Path) -> subprocess.CompletedProcess[str]:
    st = shutil.which("st", path=str(Path(sys.executable).parent)) or shutil.which("schemathesis")
    assert st, "schemathesis is not installed (pip install -e '.[test]')"
    url = cluster.url
    return subprocess.run(
        [
            st,
            "run",
            f"{url}/api/openapi.json",
            "--checks",
            "all",
            "-H",
            f"Authorization: Bearer {ADMIN}",
            "--max-examples",
            "25",
            "--seed",
            "1",
            "--workers",
            "1",
            "--request-timeout",
            "20",
            "--phases",
            "examples,coverage,fuzzing",
            "--report-dir",
            str(tmp),
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=540,
        cwd=tmp,
    )


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_schemathesis_finds_no_5xx_and_no_answer_off_its_schema(backend: str, tmp_path: Path) -> None:
    def check(cluster: Cluster) -> None:
        cluster.start_run(tok=OPERATOR)  # something to list
        out = _schemathesis(cluster, tmp_path)
        assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:] + cluster.logs()[-3000:]
        assert "Authentication failed" not in out.stdout, out.stdout[-3000:]

    if backend == "memory":
        c = Cluster(tmp_path, "memory").start()
        try:
            check(c)
        finally:
            c.stop()
    else:
        with on_redis(tmp_path) as c:
            check(c)


def test_the_hub_serves_its_openapi_document(memory_hub: Cluster) -> None:
    r = memory_hub.http("GET", "/api/openapi.json")
    assert r.status_code == 200 and r.json() == json.loads(json.dumps(specs.openapi()))
    assert protocol.PROTOCOL_VERSION == 1
