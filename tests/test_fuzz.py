"""A fuzz suite against a real `runcast serve`: Hypothesis makes frames for every command type (wrong types, extreme
sizes, deep nesting, odd Unicode, msgpack ext types) and HTTP bodies and queries.

For every example: the hub answers (an error frame with a stable code, or the command's own answer), the
connection still answers `ping`, no HTTP answer is a 5xx, and at the end nothing changed (the paused run, its log
but for presence, the list of runs) and the server's log holds no traceback. The examples are bounded (see
MAX_EXAMPLES) and derandomized, so the suite is reproducible and takes well under two minutes.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.sync.client import ClientConnection, connect

from hubtest import ADMIN, OPERATOR, VIEWER, Cluster, without_presence
from runcast.protocol import COMMAND_TYPES, ErrorCode

MAX_EXAMPLES = 150
FUZZ = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
CODES = {v for k, v in vars(ErrorCode).items() if k.isupper()}
ANSWERS = {"ack", "pong", "sync", "inbox", "inbox.added", "inbox.removed", "runs", "run.status"}


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    # No rate limit or strikes here: every frame should get its own answer, not a 1008.
    cluster = Cluster(
        tmp_path_factory.mktemp("fuzz"),
        "memory",
        env={
            "RUNCAST_RATE_PER_S": "1000000",
            "RUNCAST_RATE_BURST": "1000000",
            "RUNCAST_MAX_STRIKES": "100000000",
            "RUNCAST_LOG_LEVEL": "INFO",
        },
    ).start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def paused(hub: Cluster) -> dict[str, Any]:
    """A run paused on an approval, and what it looks like: no refused frame may change it."""
    run_id = hub.start_run("demo", tok=OPERATOR)
    for _ in range(400):
        detail = hub.http("GET", f"/api/runs/{run_id}").json()
        if detail["status"] == "paused":
            break
        time.sleep(0.05)
    assert detail["status"] == "paused"
    detail.pop("head_seq")  # (moves with presence events)
    return {
        "run_id": run_id,
        "approval_id": detail["pending_approvals"][0]["approval_id"],
        "detail": detail,
        "events": without_presence(hub.log_events(run_id)),
        "runs": hub.http("GET", "/api/runs?limit=1000").json()["runs"],
    }


# ------------------------------------------------------------------------------------------------ strategies

odd_text = st.one_of(
    st.text(max_size=40),
    st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=3),  # lone surrogates
    st.sampled_from(
        [
            "",
            "\x00",
            "\ud83d",
            "a\udfff",
            "\u202e\u2066rtl",
            "\ufeff",
            "\u200b" * 50,
            "🙂" * 30,
            "e\u0301" * 20,
            "\U0010ffff",
            "run_\x00",
            "*",
            "../../etc/passwd",
            "<script>alert(1)</script>",
            "A" * 300,
        ]
    ),
    st.text(min_size=1000, max_size=30_000).map(lambda s: s[:30_000]),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    odd_text,
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.integers().map(lambda i: i * 10**30),  # bigger than any fixed width
    st.floats(allow_nan=True, allow_infinity=True),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=10), inner, max_size=5)),
    max_leaves=20,
)


def deep(n: int) -> Any:
    value: Any = []
    for _ in range(n):
        value = [value]
    return value


@st.composite
def command_frames(draw: st.DrawFn, ids: dict[str, str]) -> dict[str, Any]:
    """A frame shaped like one command type, each field right, wrong, missing, huge or deeply nested."""
    kind = draw(st.sampled_from([*COMMAND_TYPES, "fly", ""]))
    right = {
        "run_id": st.sampled_from([ids["run_id"], "run_nope"]),
        "approval_id": st.just(ids["approval_id"]),
        "decision": st.sampled_from(["approve", "reject"]),
        "mode": st.sampled_from(["immediate", "after_turn"]),
        "since": st.integers(min_value=0, max_value=3),
        "agent": st.sampled_from(["demo", "quick", "nope"]),
        "input": st.text(max_size=20),
        "token": st.just("not-a-token"),
        "reason": st.text(max_size=20),
        "always": st.booleans(),
        "id": st.text(max_size=20),
    }
    frame: dict[str, Any] = {
        "type": draw(st.one_of(st.just(kind), json_values)) if draw(st.integers(0, 9)) == 0 else kind
    }
    for name, good in right.items():
        choice = draw(st.integers(0, 6))
        if choice <= 2:
            frame[name] = draw(good)
        elif choice == 3:
            frame[name] = draw(json_values)
        elif choice == 4:
            frame[name] = deep(draw(st.sampled_from([2, 31, 33, 200])))
        elif choice == 5 and name in ("input", "reason", "id", "token", "run_id"):
            frame[name] = "€" * draw(st.sampled_from([129, 2_001, 20_001, 30_000]))
    if draw(st.booleans()):
        frame.update(draw(st.dictionaries(st.text(max_size=8), json_values, max_size=3)))
    return frame


def as_json_text(frame: Any, ascii_only: bool) -> str:
    return json.dumps(frame, ensure_ascii=ascii_only, allow_nan=True)


# ------------------------------------------------------------------------------------------------ driving one client

_sentinels = itertools.count()


def answers_then_pong(ws: ClientConnection, decode: Any) -> list[dict[str, Any]]:
    """After a fuzzed frame: send a ping with a fresh id and collect every frame up to its pong."""
    sid = f"sentinel-{next(_sentinels)}"
    ws.send(decode.ping(sid))
    got = []
    while True:
        frame = decode(ws.recv(timeout=15))
        assert isinstance(frame, dict) and "type" in frame, frame
        if frame == {"type": "pong", "id": sid}:
            return got
        got.append(frame)


def check_answers(frames: list[dict[str, Any]]) -> None:
    for f in frames:
        if f["type"] == "error":
            assert f["code"] in CODES and f["code"] != "internal" and f["message"], f
        else:  # a command's own answer, a replayed or live event, or a feed frame (inbox, runs)
            assert f["type"] in ANSWERS or "seq" in f, f


class JsonCodec:
    def __call__(self, data: str | bytes) -> Any:
        assert isinstance(data, str), "a JSON hub answers in text frames"
        return json.loads(data)

    @staticmethod
    def ping(sid: str) -> str:
        return json.dumps({"type": "ping", "id": sid})


class MsgpackCodec:
    def __call__(self, data: str | bytes) -> Any:
        assert isinstance(data, bytes), "a msgpack hub answers in binary frames"
        return msgpack.unpackb(data, raw=False)

    @staticmethod
    def ping(sid: str) -> bytes:
        return msgpack.packb({"type": "ping", "id": sid})


def client(hub: Cluster, encoding: str) -> ClientConnection:
    ws = connect(hub.ws_url(), subprotocols=[f"runcast.v1.{encoding}"], max_size=None, open_timeout=15)
    hello = {"type": "hello", "token": VIEWER}  # a viewer: every command that changes something is refused
    ws.send(json.dumps(hello) if encoding == "json" else msgpack.packb(hello))
    welcome = ws.recv(timeout=15)
    assert (json.loads(welcome) if encoding == "json" else msgpack.unpackb(welcome))["type"] == "welcome"
    return ws


@pytest.fixture(scope="module")
def json_ws(hub: Cluster) -> Iterator[ClientConnection]:
    ws = client(hub, "json")
    yield ws
    ws.close()


@pytest.fixture(scope="module")
def msgpack_ws(hub: Cluster) -> Iterator[ClientConnection]:
    ws = client(hub, "msgpack")
    yield ws
    ws.close()


# ------------------------------------------------------------------------------------------------ the fuzz tests


def test_json_frames(hub: Cluster, paused: dict[str, Any], json_ws: ClientConnection) -> None:
    @FUZZ
    @given(frame=command_frames(paused), ascii_only=st.booleans(), wrap=st.integers(0, 9))
    def run(frame: dict[str, Any], ascii_only: bool, wrap: int) -> None:
        text = as_json_text(frame, ascii_only)
        if not text.isascii() and not ascii_only:
            try:
                text.encode()
            except UnicodeEncodeError:  # a text frame cannot carry a lone surrogate raw: send it escaped
                text = as_json_text(frame, True)
        if wrap == 0:
            text = text[: len(text) // 2]  # cut short: not JSON
        elif wrap == 1:
            text = "[" * 5000 + text + "]" * 5000
        json_ws.send(text)
        check_answers(answers_then_pong(json_ws, JsonCodec()))

    run()


ext_values = st.one_of(
    st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=20)),
    st.builds(msgpack.Timestamp, st.integers(0, 2**34 - 1), st.integers(0, 999_999_999)),
)
# Reserved ext types packed by hand: type -1 (timestamp) with a wrong length, and -128
bad_ext = st.sampled_from([b"\xd4\xff\x00", b"\xd5\xff\x00\x00", b"\xc7\x03\x80abc", b"\xd6\xff\xff\xff\xff\xff"])
msgpack_values = st.recursive(
    st.one_of(scalars, st.binary(max_size=50), ext_values),
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=10), inner, max_size=5)),
    max_leaves=20,
)


def fit_msgpack(value: Any) -> Any:
    """Integers msgpack cannot carry (beyond 64 bits) become an ext value; everything else is kept."""
    if isinstance(value, bool) or not isinstance(value, (int, dict, list)):
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**64 else msgpack.ExtType(1, str(value).encode()[:20])
    if isinstance(value, dict):
        return {fit_msgpack(k): fit_msgpack(v) for k, v in value.items()}
    return [fit_msgpack(v) for v in value]


def test_msgpack_frames(hub: Cluster, paused: dict[str, Any], msgpack_ws: ClientConnection) -> None:
    @FUZZ
    @given(
        frame=command_frames(paused),
        extra=st.dictionaries(st.text(max_size=8), msgpack_values, max_size=3),
        mangle=st.integers(0, 9),
        garbage=st.binary(max_size=64),
        ext=bad_ext,
    )
    def run(frame: dict[str, Any], extra: dict[str, Any], mangle: int, garbage: bytes, ext: bytes) -> None:
        frame = fit_msgpack({**frame, **extra})
        # a lone surrogate goes out as the bytes that are not UTF-8 (a str the hub must refuse, not crash on)
        data = msgpack.packb(frame, use_bin_type=True, unicode_errors="surrogatepass")
        if mangle == 0:
            data = data[: len(data) // 2]
        elif mangle == 1:
            data = garbage
        elif mangle == 2:
            data = b"\x91" * 3000 + data  # arrays 3,000 deep
        elif mangle == 4:
            data = b"\x82\xa4type\xa4ping\xa1x" + ext  # a ping carrying a malformed reserved ext type
        elif mangle == 3:
            msgpack_ws.send(json.dumps(frame, default=str))  # a text frame on the msgpack subprotocol
            check_answers(answers_then_pong(msgpack_ws, MsgpackCodec()))
            return
        msgpack_ws.send(data)
        check_answers(answers_then_pong(msgpack_ws, MsgpackCodec()))

    run()


def test_http_bodies_and_queries(hub: Cluster, paused: dict[str, Any]) -> None:
    rid, aid = paused["run_id"], paused["approval_id"]
    paths = ["/api/runs", f"/api/runs/{rid}/approvals/{aid}", f"/api/runs/{rid}/cancel", "/api/runs/run_nope/cancel"]
    http = httpx.Client(base_url=hub.url, timeout=15)
    toks = [VIEWER, OPERATOR]

    @FUZZ
    @given(
        path=st.sampled_from(paths),
        frame=command_frames(paused),
        tok=st.sampled_from(toks),
        ascii_only=st.booleans(),
        query=st.dictionaries(st.sampled_from(["limit", "since"]), odd_text, max_size=2),
    )
    def run(path: str, frame: dict[str, Any], tok: str, ascii_only: bool, query: dict[str, str]) -> None:
        if tok == OPERATOR and path == "/api/runs":
            frame["agent"] = "nope-" + str(frame.get("agent"))[:50]  # the operator may start runs: never a real agent
        if tok == OPERATOR and path.endswith("/cancel"):
            tok = VIEWER  # nor cancel the paused run
        if tok == OPERATOR and "/approvals/" in path:
            tok = VIEWER
        headers = {"Authorization": f"Bearer {tok}", "Content-Type": "application/json"}
        r = http.post(path, content=as_json_text(frame, ascii_only).encode("utf-8", "surrogatepass"), headers=headers)
        assert r.status_code < 500, (path, r.status_code, r.text[:300])
        assert 400 <= r.status_code and r.json()["error"]["code"] in CODES, r.text[:300]
        for get in ("/api/runs", f"/api/runs/{rid}/events"):
            # percent-encoded by hand: a lone surrogate becomes bytes that are not UTF-8, as a hostile client sends
            qs = "&".join(f"{k}={quote(v.encode('utf-8', 'surrogatepass'), safe='')}" for k, v in query.items())
            r = http.get(f"{get}?{qs}", headers={"Authorization": f"Bearer {ADMIN}"})
            assert r.status_code in (200, 400), (get, qs, r.status_code, r.text[:300])

    run()
    http.close()


def test_nothing_changed_and_nothing_crashed(
    hub: Cluster, paused: dict[str, Any], json_ws: ClientConnection, msgpack_ws: ClientConnection
) -> None:
    """Runs last in this module: after every example above, the state is as it was and the log holds no crash."""
    rid = paused["run_id"]
    detail = hub.http("GET", f"/api/runs/{rid}").json()
    detail.pop("head_seq")
    assert detail == paused["detail"]
    assert without_presence(hub.log_events(rid)) == paused["events"]
    assert hub.http("GET", "/api/runs?limit=1000").json()["runs"] == paused["runs"]
    for ws, codec in ((json_ws, JsonCodec()), (msgpack_ws, MsgpackCodec())):
        check_answers(answers_then_pong(ws, codec))
    log = hub.nodes[0].log_path.read_text()
    assert "Traceback" not in log and "ERROR" not in log, log[-3000:]
