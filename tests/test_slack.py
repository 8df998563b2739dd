"""Deciding from Slack (slack.py): the Block Kit message, and signed interactivity payloads in Slack's documented
format (`payload=<block_actions JSON>`, form-encoded, `X-Slack-Signature: v0=HMAC-SHA256("v0:ts:body")`) posted to a
real hub. A forged, stale or replayed request is refused (401) and decides nothing; a press by someone who may not
decide is answered to them, through the press's response_url (a real HTTP server here), with the reason."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import parse_qsl, urlencode

import httpx
import pytest

from hubtest import BOB, OPERATOR, Cluster, free_port
from runcast import slack
from runcast.protocol import ErrorCode, ProtocolError

SIGNING = "8f742231b10e8888abcd99yyyzzz85a5"  # Slack's documentation's example secret shape
PEOPLE = [
    {"sub": "alice", "name": "Alice", "roles": ["approver"], "slack_user_id": "U0ALICE"},
    {"sub": "vic", "name": "Vic", "roles": ["viewer"], "email": "vic@example.com"},
]


def signed(body: str, ts: int | None = None, secret: str = SIGNING) -> dict[str, str]:
    ts = int(time.time()) if ts is None else ts
    sig = "v0=" + hmac.new(secret.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
    return {
        "X-Slack-Request-Timestamp": str(ts),
        "X-Slack-Signature": sig,
        "Content-Type": "application/x-www-form-urlencoded",
    }


def press_body(run_id: str, approval_id: str, action: str, user: dict[str, Any], response_url: str) -> str:
    value = json.dumps({"run_id": run_id, "approval_id": approval_id}, separators=(",", ":"))
    payload = {
        "type": "block_actions",
        "user": user,
        "api_app_id": "A0TEST",
        "token": "legacy",
        "container": {"type": "message", "message_ts": "1.2", "channel_id": "C0TEST"},
        "trigger_id": "t",
        "team": {"id": "T0TEST"},
        "response_url": response_url,
        "actions": [
            {
                "type": "button",
                "action_id": action,
                "block_id": "runcast_decide",
                "value": value,
                "action_ts": str(time.time()),
            }
        ],
    }
    return urlencode({"payload": json.dumps(payload)})


class Recorder:
    """A stand-in for Slack's response_url: a real HTTP server that records what it got."""

    def __init__(self) -> None:
        self.got: list[dict[str, Any]] = []
        rec = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                raw = self.rfile.read(int(self.headers["content-length"]))
                body = json.loads(raw) if raw.startswith(b"{") else dict(parse_qsl(raw.decode()))
                rec.got.append({"path": self.path, "body": body, "auth": self.headers.get("authorization")})
                answer = {"ok": True, "channel": body.get("channel"), "ts": f"1700000000.{len(rec.got):06d}"}
                data = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), H)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture(scope="module")
def web_api() -> Iterator[Recorder]:
    """A local stand-in for Slack's Web API (chat.postMessage, chat.update): a real HTTP server that records."""
    r = Recorder()
    yield r
    r.server.shutdown()


@pytest.fixture(scope="module")
def slack_hub(tmp_path_factory: pytest.TempPathFactory, web_api: Recorder) -> Iterator[Cluster]:
    tmp: Path = tmp_path_factory.mktemp("slack")
    (tmp / "people.json").write_text(json.dumps(PEOPLE))
    c = Cluster(
        tmp,
        "memory",
        env={
            "RUNCAST_SLACK_SIGNING_SECRET": SIGNING,
            "RUNCAST_PEOPLE": str(tmp / "people.json"),
            "RUNCAST_SLACK_BOT_TOKEN": "xoxb-test",
            "RUNCAST_SLACK_CHANNEL": "C0APPROVALS",
            "RUNCAST_SLACK_API_URL": web_api.url + "/api/",
            "NO_PROXY": "127.0.0.1",
        },
    )
    c.nodes[0].start(wait=False)
    c.nodes[0].wait_ready(timeout=120)
    yield c
    c.stop()


def test_the_message_carries_the_buttons_and_the_deadline_in_words() -> None:
    run = {
        "run_id": "run_1",
        "input": "free some disk space",
        "agent": "demo",
        "started_by": {"sub": "ada", "name": "Ada"},
    }
    ap = {
        "approval_id": "ap_1",
        "tool": "delete_files",
        "description": "Delete files for good",
        "agent": "Janitor",
        "arguments": '{"paths": ["<a>"]}',
        "expires_at": "2026-12-07T12:05:00.000Z",
    }
    now = datetime(2026, 12, 7, 12, 1, tzinfo=timezone.utc).timestamp()  # four minutes before the deadline
    msg = slack.approval_message(run, ap, "https://hub/#run=run_1&approval=ap_1", now)
    actions = next(b for b in msg["blocks"] if b["type"] == "actions")
    assert [e["action_id"] for e in actions["elements"]] == ["runcast_approve", "runcast_reject"]
    assert json.loads(actions["elements"][0]["value"]) == {"run_id": "run_1", "approval_id": "ap_1"}
    text = json.dumps(msg)
    assert "Delete files for good" in text and "free some disk space" in text and "Ada" in text
    assert "in 4 minutes (12:05 UTC, 7 Dec)" in text and "&lt;a&gt;" in text
    assert (
        slack.deadline_words(None) == "no deadline" and slack.deadline_words(ap["expires_at"], now + 600) == "expired"
    )


def test_verification_refuses_forged_stale_replayed_and_unsigned_requests() -> None:
    it = slack.Interactivity(SIGNING, slack.Directory())
    body = "payload=%7B%7D"
    good = {k.lower(): v for k, v in signed(body).items()}
    it.verify(body.encode(), good)
    for headers in (
        good,  # the same request again: a replay
        {k.lower(): v for k, v in signed(body, secret="forged-secret").items()},
        {k.lower(): v for k, v in signed(body, ts=int(time.time()) - 600).items()},
        {"x-slack-request-timestamp": "soon", "x-slack-signature": "v0=00"},
        {},
    ):
        with pytest.raises(ProtocolError) as info:
            it.verify(body.encode(), headers)
        assert info.value.code == ErrorCode.UNAUTHENTICATED


def test_a_press_decides_with_the_persons_roles_and_a_refusal_says_why(slack_hub: Cluster) -> None:
    c = slack_hub
    rec = Recorder()
    run_id = c.start_run("demo", "free some disk space", tok=OPERATOR)
    ap = c.wait_status(run_id, "paused")["pending_approvals"][0]["approval_id"]

    def post(body: str, headers: dict[str, str]) -> Any:
        return httpx.post(c.url + "/api/slack/interactivity", content=body, headers=headers, timeout=20)

    # forged, stale, unsigned, and not a press: 401 / 400, and nothing is decided
    vic_press = press_body(run_id, ap, "runcast_approve", {"id": "U0VIC", "email": "vic@example.com"}, rec.url + "/vic")
    assert post(vic_press, signed(vic_press, secret="not-the-secret")).status_code == 401
    assert post(vic_press, signed(vic_press, ts=int(time.time()) - 3600)).status_code == 401
    assert post(vic_press, {"Content-Type": "application/x-www-form-urlencoded"}).status_code == 401
    junk = "payload=not-json"
    r = post(junk, signed(junk))
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request"
    # a viewer (found by e-mail) may not decide: told why, through response_url; nothing changes
    r = post(vic_press, signed(vic_press))
    assert r.status_code == 200 and r.json()["text"].startswith(
        "Not decided: delete_files may be approved only by roles approver"
    )
    assert rec.got[-1] == {"path": "/vic", "body": r.json(), "auth": None}
    # someone not in the directory
    eve_press = press_body(run_id, ap, "runcast_approve", {"id": "U0EVE"}, rec.url + "/eve")
    assert "nobody in Runcast's directory" in post(eve_press, signed(eve_press)).json()["text"]
    assert c.http("GET", f"/api/runs/{run_id}").json()["status"] == "paused"
    # Alice (by Slack user id) approves: the run goes on, decided by her
    alice_press = press_body(run_id, ap, "runcast_approve", {"id": "U0ALICE"}, rec.url + "/alice")
    r = post(alice_press, signed(alice_press))
    assert r.json()["text"] == "Approved by Alice", r.text
    decided = [e for e in c.log_events(run_id) if e["type"] == "approval.decided"]
    assert [(e["data"]["decision"], e["data"]["by"]) for e in decided] == [
        ("approve", {"sub": "alice", "name": "Alice"})
    ]
    # a second press is answered "already decided"; the same signed request again is a replay, refused
    headers = signed(alice_press, ts=int(time.time()) - 200)  # (a timestamp no earlier request used)
    again = post(alice_press, headers)
    assert again.status_code == 200 and "already decided" in again.json()["text"]
    assert post(alice_press, headers).status_code == 401
    assert [e["type"] for e in c.log_events(run_id)].count("approval.decided") == 1
    rec.server.shutdown()


def test_the_message_is_posted_with_buttons_and_updated_in_place_when_decided_elsewhere(
    slack_hub: Cluster, web_api: Recorder
) -> None:
    c = slack_hub
    run_id = c.start_run("demo", "free some disk space", tok=OPERATOR)
    ap = c.wait_status(run_id, "paused")["pending_approvals"][0]["approval_id"]

    def calls(method: str) -> list[dict[str, Any]]:
        return [g for g in web_api.got if g["path"] == f"/api/{method}" and run_id in json.dumps(g["body"])]

    deadline = time.monotonic() + 30
    while not calls("chat.postMessage") and time.monotonic() < deadline:
        time.sleep(0.05)
    [post] = calls("chat.postMessage")
    assert post["auth"] == "Bearer xoxb-test" and post["body"]["channel"] == "C0APPROVALS"
    blocks = post["body"]["blocks"]
    blocks = json.loads(blocks) if isinstance(blocks, str) else blocks
    actions = next(b for b in blocks if b["type"] == "actions")
    assert json.loads(actions["elements"][0]["value"]) == {"run_id": run_id, "approval_id": ap}
    assert "free some disk space" in json.dumps(blocks) and "Ada" in json.dumps(blocks)
    # decided on the page's API by Bob: the Slack message changes in place to say who, when and why
    r = c.http(
        "POST", f"/api/runs/{run_id}/approvals/{ap}", BOB, json={"decision": "reject", "reason": "keep the cache"}
    )
    assert r.status_code == 200, r.text
    ts = f"1700000000.{web_api.got.index(post) + 1:06d}"  # what the stand-in answered to that post

    def updates() -> list[dict[str, Any]]:
        return [g for g in web_api.got if g["path"] == "/api/chat.update" and g["body"].get("ts") == ts]

    deadline = time.monotonic() + 30
    while not updates() and time.monotonic() < deadline:
        time.sleep(0.05)
    [upd] = updates()
    assert upd["body"]["channel"] == "C0APPROVALS" and upd["auth"] == "Bearer xoxb-test"
    ublocks = upd["body"]["blocks"]
    ublocks = json.loads(ublocks) if isinstance(ublocks, str) else ublocks
    assert all(b["type"] != "actions" for b in ublocks)
    decided = next(b for b in ublocks if b.get("block_id") == "runcast_decided")["text"]["text"]
    assert decided.startswith("*Rejected by Bob* at ") and decided.endswith(": keep the cache")
