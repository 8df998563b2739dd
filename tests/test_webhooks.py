"""Outgoing webhooks, against a real local HTTP receiver in its own process (500 twice, then 200), on the memory
backend and on two hub nodes + two workers sharing a real redis-server."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator
from contextlib import contextmanager

import httpx
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from hubtest import ADMIN, ALICE, OPERATOR, ROOT, TERMINAL, VIEWER, Client, Cluster, free_port
from redis_server import RedisServer

from runcast import webhooks

SECRET = "whsec_" + base64.b64encode(b"runcast-webhook-test-key-32bytes").decode()
PUBLIC = "https://runcast.example.test"
EVENTS = set(webhooks.EVENTS)


# ------------------------------------------------------------------------------------------------ helpers


class Receiver:
    def __init__(self, tmp: Path, *flags: str) -> None:
        self.port = free_port()
        self.log = tmp / f"receiver-{self.port}.jsonl"
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "webhook_receiver.py"), str(self.port),
                                      str(self.log), *flags], stdout=subprocess.PIPE)
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == b"ready"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def requests(self, path: str | None = None) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        lines = [json.loads(x) for x in self.log.read_text().splitlines() if x.strip()]
        return [x for x in lines if path is None or x["path"] == path]

    def delivered(self, path: str) -> set[str]:
        return {x["id"] for x in self.requests(path) if x["status"] == 200}

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(5)


def verify(secret: str, req: dict[str, Any], body: str | None = None) -> bool:
    """The spec's algorithm, written out: HMAC-SHA256 over "<id>.<timestamp>.<body>", base64, in a "v1,<sig>" entry."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{req['id']}.{req['timestamp']}.{req['body'] if body is None else body}".encode()
    want = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(part == f"v1,{want}" for part in (req["signature"] or "").split(" "))


def reference_verify(secret: str, req: dict[str, Any], body: str | None = None) -> bool:
    headers = {"webhook-id": req["id"], "webhook-timestamp": req["timestamp"], "webhook-signature": req["signature"]}
    try:
        Webhook(secret).verify(req["body"] if body is None else body, headers)
        return True
    except WebhookVerificationError:
        return False


def expected_ids(c: Cluster, run_ids: list[str], types: set[str] = EVENTS) -> dict[str, dict[str, Any]]:
    return {webhooks.message_id(r, e["seq"]): e for r in run_ids for e in c.log_events(r) if e["type"] in types}


def wait_until(pred: Any, timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"{what} not met within {timeout}s")


def check_slack(body: dict[str, Any], link: str) -> None:
    """The shape of a Slack incoming-webhook payload: `text` plus `blocks` within Block Kit's limits, with the link."""
    assert set(body) == {"text", "blocks"} and isinstance(body["text"], str) and 0 < len(body["text"]) <= 3000
    assert isinstance(body["blocks"], list) and 0 < len(body["blocks"]) <= 50
    for b in body["blocks"]:
        assert b["type"] in ("header", "section", "context", "divider", "actions")
        if b["type"] == "header":
            assert b["text"]["type"] == "plain_text" and len(b["text"]["text"]) <= 150
        if b["type"] == "section":
            assert "text" in b or "fields" in b
            if "text" in b:
                assert b["text"]["type"] in ("mrkdwn", "plain_text") and len(b["text"]["text"]) <= 3000
            for f in b.get("fields", []):
                assert f["type"] in ("mrkdwn", "plain_text") and len(f["text"]) <= 2000
            assert len(b.get("fields", [])) <= 10
        if b["type"] == "context":
            assert 0 < len(b["elements"]) <= 10
    everything = json.dumps(body)
    assert f"<{link}|" in everything and link in body["text"]


@contextmanager
def running(tmp: Path, backend: str, rx_flags: tuple[str, ...], extra_env: dict[str, str] | None = None,
            hooks: list[str] | None = None) -> Iterator[tuple[Cluster, Receiver]]:
    """A receiver, and hubs (and workers) delivering to it; everything stopped afterwards, even after a failed start."""
    rx = Receiver(tmp, *rx_flags)
    env = {"RUNCAST_WEBHOOK_SECRET": SECRET, "RUNCAST_WEBHOOK_BACKOFF_S": "0.05", "RUNCAST_WEBHOOK_CLAIM_S": "2",
           "RUNCAST_TEST_NOTIFY_URL": rx.url, "RUNCAST_WEBHOOK_TIMEOUT_S": "5", **(extra_env or {})}
    args = ["--agents", "agents_webhooks", "--public-url", PUBLIC, *(hooks if hooks is not None else [
        "--webhook", f"{rx.url}/all", "--webhook", f"{rx.url}/slack",
        "--webhook-events", "*", "--webhook-events", "approval.requested",
        "--webhook-format", "standard", "--webhook-format", "slack"])]
    args = [a.replace("{rx}", rx.url) for a in args]
    server: RedisServer | None = None
    try:
        if backend == "memory":
            c = Cluster(tmp, "memory", env=env, serve_args=args)
        else:
            server = RedisServer(persist=True)
            server.start()
            c = Cluster(tmp, "redis", server.url, nodes=2, workers=2, env=env, serve_args=args, worker_args=args)
        try:
            for proc in c.workers:
                proc.start()
            for proc in c.nodes:
                proc.start(wait=False)
            for proc in c.nodes:
                proc.wait_ready(timeout=120)  # four processes importing the SDK at once on two busy cores
            yield c, rx
        finally:
            c.stop()
    finally:
        rx.stop()
        if server is not None:
            server.cleanup()


# ------------------------------------------------------------------------------------------------ tests


def test_payloads_slack_shape_and_backoff_are_plain_functions() -> None:
    entry = {"run_id": "run_1", "seq": 7, "ts": "2026-01-01T00:00:00.000Z", "type": "approval.requested",
             "data": {"approval_id": "ap_1", "tool": "refund", "arguments": '{"order": "A<7>", "cents": 1200}'}}
    body = webhooks.payload(entry, None, PUBLIC)
    assert body["type"] == "approval.requested" and body["data"]["approval"]["url"] == f"{PUBLIC}/#run=run_1&approval=ap_1"
    check_slack(json.loads(webhooks.encode(webhooks.Endpoint("http://x", format="slack"), body)), f"{PUBLIC}/#run=run_1&approval=ap_1")
    # the same id and body sign to the same signature; the timestamp is part of what is signed
    h1 = webhooks.sign_headers(SECRET, "msg_a", "{}", now=1_800_000_000)
    assert h1 == webhooks.sign_headers(SECRET, "msg_a", "{}", now=1_800_000_000)
    assert h1["webhook-signature"] != webhooks.sign_headers(SECRET, "msg_a", "{}", now=1_800_000_001)["webhook-signature"]
    assert verify(SECRET, {"id": "msg_a", "timestamp": h1["webhook-timestamp"], "signature": h1["webhook-signature"], "body": "{}"})
    waits = [webhooks.backoff(n, 1.0, 60.0) for n in range(1, 10)]
    assert all(min(60.0, 2 ** (n - 1)) / 2 <= w <= min(60.0, 2 ** (n - 1)) for n, w in zip(range(1, 10), waits))
    with pytest.raises(ValueError):
        webhooks.parse_secret("whsec_c2hvcnQ=")  # 5 bytes
    with pytest.raises(ValueError):
        webhooks.parse_events("run.started")
    eps = webhooks.parse_cli(["http://a/", "http://b/"], ["run.completed"], ["standard", "slack"])
    assert [(e.events, e.format) for e in eps] == [({"run.completed"}, "standard"), ({"run.completed"}, "slack")]


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_every_event_arrives_exactly_once_signed_after_two_failures(backend: str, tmp_path: Path) -> None:
    with running(tmp_path, backend, ("--fail-first", "2")) as (c, rx):
        # (with a requested reviewer and a comment that mentions the starter: their own event types)
        approved = c.http("POST", "/api/runs", OPERATOR, json={"agent": "demo", "input": "tidy up",
                                                                "reviewers": ["alice"]}).json()["run_id"]
        expiring = c.start_run("demo-expiring", "tidy up")
        cancelled = c.start_run("demo", "tidy up")
        failed = c.start_run("broken", "hi")
        notified = c.start_run("notify-demo", "tidy up")
        for r in (approved, cancelled, notified):
            ap = c.wait_status(r, "paused")["pending_approvals"][0]["approval_id"]
            if r == approved:
                assert c.http("POST", f"/api/runs/{r}/comments", ALICE, json={"text": "@ada fine by me",
                                                                              "approval_id": ap}).status_code == 201
            if r == cancelled:
                assert c.http("POST", f"/api/runs/{r}/cancel", OPERATOR, json={}).status_code == 200
            else:
                assert c.http("POST", f"/api/runs/{r}/approvals/{ap}", ALICE, json={"decision": "approve"}).status_code == 200
        runs = [approved, expiring, cancelled, failed, notified]
        for r in runs:
            c.wait_status(r, "completed", "failed", "cancelled")
        want = expected_ids(c, runs)
        assert {e["type"] for e in want.values()} == EVENTS  # every kind happened
        wait_until(lambda: rx.delivered("/all") >= set(want), what="every event delivered to /all")
        slack_want = {i for i, e in want.items() if e["type"] == "approval.requested"}
        wait_until(lambda: rx.delivered("/slack") >= slack_want, what="approval.requested delivered to /slack")
        agent_want = {i for i, e in expected_ids(c, [notified]).items() if e["type"] == "run.completed"}
        tool_want = {i for i, e in expected_ids(c, [notified]).items() if e["type"] == "approval.requested"}
        wait_until(lambda: rx.delivered("/agent") >= agent_want and rx.delivered("/tool") >= tool_want, what="notify")
        time.sleep(0.3)  # anything further (a duplicate) would show up now

        reqs = rx.requests("/all")
        # exactly once after de-duplication by webhook-id: every event, nothing else; each tried three times
        assert rx.delivered("/all") == set(want)
        assert Counter(x["id"] for x in reqs) == {i: 3 for i in want}
        assert rx.delivered("/slack") == slack_want and rx.delivered("/agent") == agent_want
        assert rx.delivered("/tool") == tool_want
        for wid, tries in _group(reqs).items():
            assert len({t["body"] for t in tries}) == 1  # the same body (and id) on every retry
            assert [t["status"] for t in sorted(tries, key=lambda t: t["attempt"])] == [500, 500, 200]
        for x in rx.requests():
            assert x["content_type"] == "application/json"
            assert verify(SECRET, x) and reference_verify(SECRET, x)  # signed as the spec says
            altered = x["body"].replace("run_", "run-", 1)  # one byte changed in transit
            assert altered != x["body"]
            assert not verify(SECRET, x, altered) and not reference_verify(SECRET, x, altered)
            assert not verify("whsec_" + base64.b64encode(b"another-key-of-thirty-two-bytes!").decode(), x)
        # the standard payload: type, timestamp, and the event with its run and approval, with links to the page
        for x in (r for r in reqs if r["status"] == 200):
            body = json.loads(x["body"])
            ev = want[x["id"]]
            assert (body["type"], body["timestamp"], body["data"]["seq"], body["data"]["event"]) == (ev["type"], ev["ts"], ev["seq"], ev["data"])
            assert body["data"]["run"]["url"] == f"{PUBLIC}/#run={ev['run_id']}" and body["data"]["run"]["agent"]
            assert body["data"]["run"]["started_by"] == {"sub": "ada", "name": "Ada"}
            if ev["type"].startswith("approval."):
                ap = body["data"]["approval"]
                assert ap["url"] == f"{PUBLIC}/#run={ev['run_id']}&approval={ev['data']['approval_id']}"
                assert ap["tool"] == "delete_files" and ap["policy"]["roles"] == ["approver"] and "notify" not in ap["policy"]
        for x in (r for r in rx.requests() if r["path"] in ("/slack", "/tool") and r["status"] == 200):
            ev = want[x["id"]]
            check_slack(json.loads(x["body"]), f"{PUBLIC}/#run={ev['run_id']}&approval={ev['data']['approval_id']}")
            assert "delete_files" in x["body"] and "Ada" in x["body"] and "scratch/build-cache.tar" in x["body"]

        # the deliveries, for admins only; /metrics counts them
        assert c.http("GET", "/api/webhooks/deliveries", VIEWER).json()["error"]["code"] == "forbidden"
        recs = c.http("GET", "/api/webhooks/deliveries?limit=1000", ADMIN).json()["deliveries"]
        by_id = {(d["webhook_id"], d["url"]): d for d in recs}
        for wid in want:
            d = by_id[(wid, f"{rx.url}/all")]
            assert (d["status"], d["attempts"], d["last_status"]) == ("delivered", 3, 200) and d["delivered_at"]
        assert all(SECRET not in json.dumps(d) for d in recs)
        text = "".join(httpx.get(n.url + "/metrics", headers={"Authorization": f"Bearer {ADMIN}"}).text for n in c.nodes)
        assert 'runcast_webhook_deliveries_total{status="delivered"}' in text
        if backend == "memory":
            total = len(want) + len(slack_want) + len(agent_want) + len(tool_want)
            assert f'runcast_webhook_deliveries_total{{status="delivered"}} {float(total)}' in text
            assert f'runcast_webhook_deliveries_total{{status="failed"}} {float(2 * total)}' in text


def _group(reqs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for r in reqs:
        out.setdefault(r["id"], []).append(r)
    return out


def test_killing_the_process_that_holds_a_delivery_loses_nothing(tmp_path: Path) -> None:
    # retries a few seconds apart, so the holder can be killed between them; silent for 2 s: taken over
    with running(tmp_path, "redis", ("--fail-first", "2"), {"RUNCAST_WEBHOOK_BACKOFF_S": "3", "RUNCAST_WEBHOOK_BACKOFF_MAX_S": "3"},
                 hooks=["--webhook", "{rx}/all"]) as (c, rx):
        run_id = c.start_run("demo", "tidy up")
        ap = c.wait_status(run_id, "paused", node=0)["pending_approvals"][0]["approval_id"]
        req = next(e for e in c.log_events(run_id) if e["type"] == "approval.requested")
        wid = webhooks.message_id(run_id, req["seq"])
        wait_until(lambda: any(x["id"] == wid for x in rx.requests()), what="a first attempt")
        rec = wait_until(lambda: next((d for d in c.http("GET", "/api/webhooks/deliveries", ADMIN, node=0).json()["deliveries"]
                                       if d["webhook_id"] == wid and d["holder"]), None), what="its delivery record")
        pid = int(rec["holder"].split(":")[1])
        victim = next(p for p in c.nodes + c.workers if p.proc and p.proc.pid == pid)
        assert rec["status"] == "retrying" and rec["attempts"] == 1
        victim.kill()
        live = next(i for i, p in enumerate(c.nodes) if p is not victim)
        wait_until(lambda: wid in rx.delivered("/all"), timeout=40, what="the held delivery, by another process")
        assert c.http("POST", f"/api/runs/{run_id}/approvals/{ap}", ALICE, node=live, json={"decision": "approve"}).status_code == 200
        c.wait_status(run_id, "completed", node=live)
        want = {webhooks.message_id(run_id, e["seq"]) for e in _log(c, run_id, live) if e["type"] in EVENTS}
        wait_until(lambda: rx.delivered("/all") >= want, timeout=60, what="every event delivered")
        assert rx.delivered("/all") == want  # nothing lost, nothing else
        tries = sorted((x for x in rx.requests() if x["id"] == wid), key=lambda x: x["attempt"])
        assert [t["status"] for t in tries][-1] == 200 and len(tries) >= 3
        final = next(d for d in c.http("GET", "/api/webhooks/deliveries", ADMIN, node=live).json()["deliveries"] if d["webhook_id"] == wid)
        assert final["status"] == "delivered" and final["holder"] != rec["holder"] and final["attempts"] >= 3
        assert all(verify(SECRET, x) for x in rx.requests())


def _log(c: Cluster, run_id: str, node: int) -> list[dict[str, Any]]:
    return c.http("GET", f"/api/runs/{run_id}/events?limit=1000", node=node).json()["events"]


def _parse(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_a_receiver_that_never_answers_does_not_delay_the_run(backend: str, tmp_path: Path) -> None:
    async def go(c: Cluster, rx: Receiver) -> float:
        run_id = c.start_run("demo", "tidy up")
        w = await Client.connect(c.ws_url(), VIEWER)
        await w.subscribe(run_id)
        req = await w.wait_event(run_id, "approval.requested")
        await w.wait_event(run_id, "run.paused")
        wait_until(lambda: len(rx.requests()) >= 4, what="the deliveries to hang")  # requested + paused, twice each
        ack = c.http("POST", f"/api/runs/{run_id}/approvals/{req['data']['approval_id']}", ALICE, json={"decision": "approve"})
        assert ack.status_code == 200
        end = await w.wait_event(run_id, TERMINAL, timeout=20)
        got_at = time.time()
        assert end["type"] == "run.completed"
        await w.close()
        # when the watcher had run.completed, not one delivery had been answered: they all still hang
        assert {x["status"] for x in rx.requests()} == {"hang"}
        recs = c.http("GET", "/api/webhooks/deliveries", ADMIN).json()["deliveries"]
        assert recs == [] or all(d["status"] != "delivered" for d in recs)
        return got_at - _parse(end["ts"])

    with running(tmp_path, backend, ("--hang",), {"RUNCAST_WEBHOOK_TIMEOUT_S": "60"},
                 hooks=["--webhook", "{rx}/all", "--webhook", "{rx}/more"]) as (c, rx):
        delay = asyncio.run(go(c, rx))
        # run.completed reached its watcher in well under a second after it was logged (the hanging deliveries
        # wait up to 60 s for an answer); printed for the record
        print(f"run.completed delay to a watcher with a hanging webhook receiver ({backend}): {delay * 1000:.0f} ms")
        assert delay < 2.0


def test_the_readme_verification_snippet_verifies_and_refuses() -> None:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("```python\nimport base64, hashlib, hmac, time")
    code = readme[start + len("```python\n"): readme.index("```", start + 10)]
    ns: dict[str, Any] = {}
    exec(code, ns)  # noqa: S102 - the snippet a receiver copies
    body = json.dumps({"type": "run.completed", "data": {"run_id": "run_1"}}).encode()
    headers = webhooks.sign_headers(SECRET, "msg_run_1_9", body.decode())
    assert ns["verify"](SECRET, headers, body)
    assert not ns["verify"](SECRET, headers, body.replace(b"run_1", b"run_2"))
    assert not ns["verify"](SECRET, headers | {"webhook-id": "msg_run_1_10"}, body)
    old = webhooks.sign_headers(SECRET, "msg_run_1_9", body.decode(), now=time.time() - 3600)
    assert not ns["verify"](SECRET, old, body)
