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
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "tests" / "webhook_receiver.py"), str(self.port), str(self.log), *flags],
            stdout=subprocess.PIPE,
        )
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == b"ready"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def requests(self, path: str | None = None) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        lines = [json.loads(x) for x in self.log.read_text().splitlines() if x.strip()]
        return [x for x in lines if "status" in x and (path is None or x["path"] == path)]

    def hangups(self) -> list[dict[str, Any]]:
        """--trickle / --huge: one line per answer the client stopped taking (how long, how many bytes sent)."""
        if not self.log.exists():
            return []
        return [
            x for x in (json.loads(y) for y in self.log.read_text().splitlines() if y.strip()) if "closed_after" in x
        ]

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
    link = webhooks.slack_escape(link)  # Slack's rules: & (as in ...&approval=) is &amp; in every text field
    assert f"<{link}|" in everything and link in body["text"]


@contextmanager
def running(
    tmp: Path,
    backend: str,
    rx_flags: tuple[str, ...],
    extra_env: dict[str, str] | None = None,
    hooks: list[str] | None = None,
) -> Iterator[tuple[Cluster, Receiver]]:
    """A receiver, and hubs (and workers) delivering to it; everything stopped afterwards, even after a failed start."""
    rx = Receiver(tmp, *rx_flags)
    env = {
        "RUNCAST_WEBHOOK_SECRET": SECRET,
        "RUNCAST_WEBHOOK_BACKOFF_S": "0.05",
        "RUNCAST_WEBHOOK_CLAIM_S": "2",
        "RUNCAST_TEST_NOTIFY_URL": rx.url,
        "RUNCAST_WEBHOOK_TIMEOUT_S": "5",
        **(extra_env or {}),
    }
    args = [
        "--agents",
        "agents_webhooks",
        "--public-url",
        PUBLIC,
        *(
            hooks
            if hooks is not None
            else [
                "--webhook",
                f"{rx.url}/all",
                "--webhook",
                f"{rx.url}/slack",
                "--webhook-events",
                "*",
                "--webhook-events",
                "approval.requested",
                "--webhook-format",
                "standard",
                "--webhook-format",
                "slack",
            ]
        ),
    ]
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
    entry = {
        "run_id": "run_1",
        "seq": 7,
        "ts": "2026-01-01T00:00:00.000Z",
        "type": "approval.requested",
        "data": {"approval_id": "ap_1", "tool": "refund", "arguments": '{"order": "A<7>", "cents": 1200}'},
    }
    body = webhooks.payload(entry, None, PUBLIC)
    assert (
        body["type"] == "approval.requested" and body["data"]["approval"]["url"] == f"{PUBLIC}/#run=run_1&approval=ap_1"
    )
    check_slack(
        json.loads(webhooks.encode(webhooks.Endpoint("http://x", format="slack"), body)),
        f"{PUBLIC}/#run=run_1&approval=ap_1",
    )
    # the same id and body sign to the same signature; the timestamp is part of what is signed
    h1 = webhooks.sign_headers(SECRET, "msg_a", "{}", now=1_800_000_000)
    assert h1 == webhooks.sign_headers(SECRET, "msg_a", "{}", now=1_800_000_000)
    assert (
        h1["webhook-signature"] != webhooks.sign_headers(SECRET, "msg_a", "{}", now=1_800_000_001)["webhook-signature"]
    )
    assert verify(
        SECRET,
        {"id": "msg_a", "timestamp": h1["webhook-timestamp"], "signature": h1["webhook-signature"], "body": "{}"},
    )
    waits = [webhooks.backoff(n, 1.0, 60.0) for n in range(1, 10)]
    assert all(min(60.0, 2 ** (n - 1)) / 2 <= w <= min(60.0, 2 ** (n - 1)) for n, w in zip(range(1, 10), waits))
    with pytest.raises(ValueError):
        webhooks.parse_secret("whsec_c2hvcnQ=")  # 5 bytes
    with pytest.raises(ValueError):
        webhooks.parse_events("run.started")
    eps = webhooks.parse_cli(["http://a/", "http://b/"], ["run.completed"], ["standard", "slack"])
    assert [(e.events, e.format) for e in eps] == [({"run.completed"}, "standard"), ({"run.completed"}, "slack")]


def slack_texts(doc: Any) -> list[str]:
    """Every text a Slack message shows: the fallback and each block's text, field and element."""
    if isinstance(doc, dict):
        return [v for k, v in doc.items() if k == "text" and isinstance(v, str)] + [
            t for k, v in doc.items() for t in slack_texts(v) if not (k == "text" and isinstance(v, str))
        ]
    if isinstance(doc, list):
        return [t for v in doc for t in slack_texts(v)]
    return []


def test_slack_escapes_every_text_field_the_fallback_included() -> None:
    """A display name (or tool, agent, input, reason) with Slack's control syntax neither pings nor links: &, < and >
    become entities in the `text` fallback and in every block; the only link is the one to the approval."""
    evil = "<!channel> Mallory <http://evil.invalid|Approve here> & <@U123>"
    link = f"{PUBLIC}/#run=run_1&approval=ap_1"
    for type_, event in (
        ("approval.requested", {"approval_id": "ap_1", "tool": evil, "arguments": {"note": evil}}),
        (
            "approval.decided",
            {"approval_id": "ap_1", "decision": "reject", "reason": evil, "by": {"sub": "m", "name": evil}},
        ),
        ("run.failed", {"code": "x", "message": evil}),
        ("run.cancelled", {"by": {"name": evil}}),
        ("run.completed", {"output": evil}),
    ):
        body = webhooks.payload(
            {"run_id": "run_1", "seq": 3, "ts": "2026-01-01T00:00:00.000Z", "type": type_, "data": event}, None, PUBLIC
        )
        body["data"]["run"] |= {"agent": evil, "started_by": {"sub": "m", "name": evil}}
        if "approval" in body["data"]:
            body["data"]["approval"] |= {"tool": evil, "arguments": {"note": evil}, "expires_at": evil}
        doc = json.loads(webhooks.encode(webhooks.Endpoint("http://x", format="slack"), body))
        texts = slack_texts(doc)
        assert doc["text"] in texts and len(texts) >= 5
        ours = f"<{webhooks.slack_escape(body['data'].get('approval', body['data']['run'])['url'])}|"
        for t in texts:
            rest = t.split(ours)[0] + "".join(p.split(">", 1)[1] for p in t.split(ours)[1:])
            assert "<" not in rest and ">" not in rest, (type_, t)  # no ping, mention or link but ours
            assert "& " not in rest and "&approval" not in rest, (type_, t)
        assert "&lt;!channel&gt; Mallory &lt;http://evil.invalid|Approve here&gt;" in doc["text"]
    assert webhooks.slack_escape("a<b>&c") == "a&lt;b&gt;&amp;c"
    assert link != webhooks.slack_escape(link)


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_every_event_arrives_exactly_once_signed_after_two_failures(backend: str, tmp_path: Path) -> None:
    with running(tmp_path, backend, ("--fail-first", "2")) as (c, rx):
        # (with a requested reviewer and a comment that mentions the starter: their own event types)
        approved = c.http(
            "POST", "/api/runs", OPERATOR, json={"agent": "demo", "input": "tidy up", "reviewers": ["alice"]}
        ).json()["run_id"]
        expiring = c.start_run("demo-expiring", "tidy up")
        cancelled = c.start_run("demo", "tidy up")
        failed = c.start_run("broken", "hi")
        notified = c.start_run("notify-demo", "tidy up")
        for r in (approved, cancelled, notified):
            ap = c.wait_status(r, "paused")["pending_approvals"][0]["approval_id"]
            if r == approved:
                assert (
                    c.http(
                        "POST", f"/api/runs/{r}/comments", ALICE, json={"text": "@ada fine by me", "approval_id": ap}
                    ).status_code
                    == 201
                )
            if r == cancelled:
                assert c.http("POST", f"/api/runs/{r}/cancel", OPERATOR, json={}).status_code == 200
            else:
                assert (
                    c.http("POST", f"/api/runs/{r}/approvals/{ap}", ALICE, json={"decision": "approve"}).status_code
                    == 200
                )
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
            assert (body["type"], body["timestamp"], body["data"]["seq"], body["data"]["event"]) == (
                ev["type"],
                ev["ts"],
                ev["seq"],
                ev["data"],
            )
            assert body["data"]["run"]["url"] == f"{PUBLIC}/#run={ev['run_id']}" and body["data"]["run"]["agent"]
            assert body["data"]["run"]["started_by"] == {"sub": "ada", "name": "Ada"}
            if ev["type"].startswith("approval."):
                ap = body["data"]["approval"]
                assert ap["url"] == f"{PUBLIC}/#run={ev['run_id']}&approval={ev['data']['approval_id']}"
                assert (
                    ap["tool"] == "delete_files"
                    and ap["policy"]["roles"] == ["approver"]
                    and "notify" not in ap["policy"]
                )
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
        text = "".join(
            httpx.get(n.url + "/metrics", headers={"Authorization": f"Bearer {ADMIN}"}).text for n in c.nodes
        )
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
    with running(
        tmp_path,
        "redis",
        ("--fail-first", "2"),
        {"RUNCAST_WEBHOOK_BACKOFF_S": "3", "RUNCAST_WEBHOOK_BACKOFF_MAX_S": "3"},
        hooks=["--webhook", "{rx}/all"],
    ) as (c, rx):
        run_id = c.start_run("demo", "tidy up")
        ap = c.wait_status(run_id, "paused", node=0)["pending_approvals"][0]["approval_id"]
        req = next(e for e in c.log_events(run_id) if e["type"] == "approval.requested")
        wid = webhooks.message_id(run_id, req["seq"])
        wait_until(lambda: any(x["id"] == wid for x in rx.requests()), what="a first attempt")
        rec = wait_until(
            lambda: next(
                (
                    d
                    for d in c.http("GET", "/api/webhooks/deliveries", ADMIN, node=0).json()["deliveries"]
                    if d["webhook_id"] == wid and d["holder"]
                ),
                None,
            ),
            what="its delivery record",
        )
        pid = int(rec["holder"].split(":")[1])
        victim = next(p for p in c.nodes + c.workers if p.proc and p.proc.pid == pid)
        assert rec["status"] == "retrying" and rec["attempts"] == 1
        victim.kill()
        live = next(i for i, p in enumerate(c.nodes) if p is not victim)
        wait_until(lambda: wid in rx.delivered("/all"), timeout=40, what="the held delivery, by another process")
        assert (
            c.http(
                "POST", f"/api/runs/{run_id}/approvals/{ap}", ALICE, node=live, json={"decision": "approve"}
            ).status_code
            == 200
        )
        c.wait_status(run_id, "completed", node=live)
        want = {webhooks.message_id(run_id, e["seq"]) for e in _log(c, run_id, live) if e["type"] in EVENTS}
        wait_until(lambda: rx.delivered("/all") >= want, timeout=60, what="every event delivered")
        assert rx.delivered("/all") == want  # nothing lost, nothing else
        tries = sorted((x for x in rx.requests() if x["id"] == wid), key=lambda x: x["attempt"])
        assert [t["status"] for t in tries][-1] == 200 and len(tries) >= 3
        final = next(
            d
            for d in c.http("GET", "/api/webhooks/deliveries", ADMIN, node=live).json()["deliveries"]
            if d["webhook_id"] == wid
        )
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
        # each receiver has its own lane, delivered in order: approval.requested hangs at /all and at /more
        wait_until(lambda: {x["path"] for x in rx.requests()} == {"/all", "/more"}, what="the deliveries to hang")
        ack = c.http(
            "POST", f"/api/runs/{run_id}/approvals/{req['data']['approval_id']}", ALICE, json={"decision": "approve"}
        )
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

    with running(
        tmp_path,
        backend,
        ("--hang",),
        {"RUNCAST_WEBHOOK_TIMEOUT_S": "60"},
        hooks=["--webhook", "{rx}/all", "--webhook", "{rx}/more"],
    ) as (c, rx):
        delay = asyncio.run(go(c, rx))
        # run.completed reached its watcher in well under a second after it was logged (the hanging deliveries
        # wait up to 60 s for an answer); printed for the record
        print(f"run.completed delay to a watcher with a hanging webhook receiver ({backend}): {delay * 1000:.0f} ms")
        assert delay < 2.0


def test_the_readme_verification_snippet_verifies_and_refuses() -> None:
    readme = (ROOT / "docs" / "integrations.md").read_text()  # the webhooks page (the README links it)
    start = readme.index("```python\nimport base64, hashlib, hmac, time")
    code = readme[start + len("```python\n") : readme.index("```", start + 10)]
    ns: dict[str, Any] = {}
    exec(code, ns)  # noqa: S102 - the snippet a receiver copies
    body = json.dumps({"type": "run.completed", "data": {"run_id": "run_1"}}).encode()
    headers = webhooks.sign_headers(SECRET, "msg_run_1_9", body.decode())
    assert ns["verify"](SECRET, headers, body)
    assert not ns["verify"](SECRET, headers, body.replace(b"run_1", b"run_2"))
    assert not ns["verify"](SECRET, headers | {"webhook-id": "msg_run_1_10"}, body)
    old = webhooks.sign_headers(SECRET, "msg_run_1_9", body.decode(), now=time.time() - 3600)
    assert not ns["verify"](SECRET, old, body)


def in_order(reqs: list[dict[str, Any]]) -> bool:
    """Each run's events arrived in seq order (ids are msg_<run_id>_<seq>)."""
    seen: dict[str, int] = {}
    for x in reqs:
        run, seq = x["id"].rsplit("_", 1)
        if int(seq) <= seen.get(run, -1):
            return False
        seen[run] = int(seq)
    return True


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_hostile_receivers_delay_only_themselves(backend: str, tmp_path: Path) -> None:
    """A receiver that trickles its answer (1 byte / 2 s), one that answers 200 MB and one that is dead, beside a
    healthy one: the healthy one gets all 24 events of 12 runs, once each and in order, while the others are still
    failing; the trickle is cut off by the attempt's total deadline, the 200 MB answer is not read, and the dead
    receiver's circuit opens (deliveries API; /metrics)."""
    trickle, huge = Receiver(tmp_path, "--trickle"), Receiver(tmp_path, "--huge")
    dead = f"http://127.0.0.1:{free_port()}/d"
    timeout_s = 3.0
    hooks = [
        "--webhook",
        f"{trickle.url}/t",
        "--webhook",
        f"{huge.url}/h",
        "--webhook",
        dead,
        "--webhook",
        "{rx}/ok",
        "--webhook-events",
        "approval.requested,run.paused",
    ]
    try:
        with running(tmp_path, backend, (), {"RUNCAST_WEBHOOK_TIMEOUT_S": str(timeout_s)}, hooks=hooks) as (c, rx):
            runs = [c.start_run("demo", f"tidy up {i}") for i in range(12)]
            for r in runs:
                c.wait_status(r, "paused")
            want = expected_ids(c, runs, {"approval.requested", "run.paused"})
            assert len(want) == 24
            wait_until(
                lambda: rx.delivered("/ok") >= set(want), timeout=20, what="all 24 events at the healthy receiver"
            )
            ok = [x for x in rx.requests("/ok")]
            assert sorted(x["id"] for x in ok) == sorted(want) and {x["status"] for x in ok} == {200}  # once each
            assert in_order(ok)
            # the trickling answer is cut off at the attempt's deadline (not renewed by each byte); the 200 MB answer
            # is dropped after a little of it (what the receiver managed to send is what the kernel's buffers took)
            wait_until(lambda: trickle.hangups() and huge.hangups(), timeout=20, what="the hostile answers cut off")
            assert all(h["closed_after"] < timeout_s + 4.5 and h["sent"] < 10 for h in trickle.hangups()), (
                trickle.hangups()
            )
            assert all(h["sent"] < 64 * 1024 * 1024 for h in huge.hangups()), huge.hangups()
            dead_id, huge_id = webhooks.endpoint(dead).id, webhooks.endpoint(f"{huge.url}/h").id

            def receivers() -> dict[str, dict[str, Any]]:
                return {r["endpoint"]: r for r in c.http("GET", "/api/webhooks/deliveries", ADMIN).json()["receivers"]}

            st = wait_until(
                lambda: (r := receivers()).get(dead_id, {}).get("circuit") == "open" and r, what="dead open"
            )
            assert (
                st[dead_id]["failures"] >= webhooks.CIRCUIT_FAILURES
                and st[dead_id]["url"] == "http://127.0.0.1:%s/d" % dead.split(":")[2].split("/")[0]
            )
            assert (
                st[webhooks.endpoint(f"{rx.url}/ok").id]["circuit"] == "closed"
                and st[webhooks.endpoint(f"{rx.url}/ok").id]["queued"] == 0
            )
            recs = c.http("GET", "/api/webhooks/deliveries?limit=1000", ADMIN).json()["deliveries"]
            assert all(
                len(d["last_response"] or "") <= webhooks.RESPONSE_KEEP for d in recs if d["endpoint"] == huge_id
            )
            if backend == "memory":
                wait_until(
                    lambda: (
                        'runcast_webhook_receivers{circuit="open"} 1.0' in c.http("GET", "/metrics").text
                        or 'runcast_webhook_receivers{circuit="open"} 2.0' in c.http("GET", "/metrics").text
                    ),
                    what="the open circuit in /metrics",
                )
    finally:
        trickle.stop()
        huge.stop()


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_no_secret_of_a_webhook_reaches_the_log(backend: str, tmp_path: Path) -> None:
    """A Slack-style URL (its path is the secret), a URL with a token in its query and the signing secret never show in
    any process's log at DEBUG, while deliveries fail, retry, succeed and give up; nor in the deliveries API."""
    path_secret, query_secret = "XoXoPathSecret9f8e7d", "QuerySecret4c3b2a"
    dead = f"http://127.0.0.1:{free_port()}/hooks/{path_secret}x?token={query_secret}"
    hooks = [
        "--webhook",
        "{rx}/services/T0000/B0000/" + path_secret,
        "--webhook",
        dead,
        "--webhook-format",
        "slack",
        "--webhook-events",
        "approval.requested",
    ]
    env = {"RUNCAST_LOG_LEVEL": "DEBUG", "RUNCAST_WEBHOOK_RETRY_FOR_S": "3"}
    with running(tmp_path, backend, ("--fail-first", "2"), env, hooks=hooks) as (c, rx):
        run = c.start_run("demo", "tidy up")
        c.wait_status(run, "paused")
        want = expected_ids(c, [run], {"approval.requested"})
        wait_until(lambda: rx.delivered(f"/services/T0000/B0000/{path_secret}") >= set(want), what="delivered")
        recs = wait_until(
            lambda: [
                d
                for d in c.http("GET", "/api/webhooks/deliveries", ADMIN).json()["deliveries"]
                if d["status"] == "gave_up"
            ],
            what="the dead one given up",
        )
        api = c.http("GET", "/api/webhooks/deliveries", ADMIN).text
        logs = "".join(p.log_path.read_text(errors="replace") for p in [*c.nodes, *c.workers])
        assert recs and "given up" in logs and "/hooks/…" in logs  # the given-up delivery is logged, redacted
        key = SECRET.removeprefix("whsec_")
        for secret in (path_secret, query_secret, key, "T0000/B0000"):
            assert secret not in logs, secret
            assert secret not in api, secret


def test_webhook_urls_from_a_file_or_the_environment_stay_out_of_the_command_line(tmp_path: Path) -> None:
    """--webhook-file and RUNCAST_WEBHOOKS deliver like --webhook, and the URL is not in /proc/PID/cmdline; a
    --webhook URL on the command line works but warns (without repeating the URL)."""
    assert [
        (e.url, e.events, e.format)
        for e in webhooks.parse_file("# receivers\n\nhttp://a/x events=run.completed format=slack\nhttp://b/\n")
    ] == [("http://a/x", frozenset({"run.completed"}), "slack"), ("http://b/", None, "standard")]
    for bad in ("ftp://x/secret", "http://x/ colour=red"):
        with pytest.raises(ValueError) as exc:
            webhooks.parse_file(bad)
        assert "secret" not in str(exc.value) and "line 1" in str(exc.value)
    hooks_file = tmp_path / "webhooks.txt"
    placeholder = "{rx}/from-file/sekrit events=approval.requested format=slack\n"
    rx = Receiver(tmp_path)
    try:
        hooks_file.write_text(placeholder.replace("{rx}", rx.url))
        env = {
            "RUNCAST_WEBHOOKS": f"{rx.url}/from-env/sekrit2 events=approval.requested",
            "RUNCAST_TEST_NOTIFY_URL": rx.url,
        }
        c = Cluster(
            tmp_path,
            "memory",
            env={"RUNCAST_WEBHOOK_SECRET": SECRET, **env},
            serve_args=[
                "--agents",
                "agents_webhooks",
                "--public-url",
                PUBLIC,
                "--webhook-file",
                str(hooks_file),
                "--webhook",
                f"{rx.url}/from-flag/sekrit3",
                "--webhook-events",
                "approval.requested",
            ],
        )
        c.start()
        try:
            run = c.start_run("demo", "tidy up")
            c.wait_status(run, "paused")
            want = expected_ids(c, [run], {"approval.requested"})
            for path in ("/from-file/sekrit", "/from-env/sekrit2", "/from-flag/sekrit3"):
                wait_until(lambda: rx.delivered(path) >= set(want), what=f"delivered to {path}")
            check_slack(
                json.loads(rx.requests("/from-file/sekrit")[0]["body"]),
                f"{PUBLIC}/#run={run}&approval={c.wait_status(run, 'paused')['pending_approvals'][0]['approval_id']}",
            )
            cmdline = Path(f"/proc/{c.nodes[0].proc.pid}/cmdline").read_bytes().decode()
            assert "sekrit3" in cmdline and "sekrit2" not in cmdline and "/from-file/" not in cmdline
            log = c.nodes[0].log_path.read_text()
            assert "--webhook puts the URL" in log and "sekrit" not in log
        finally:
            c.stop()
    finally:
        rx.stop()


def test_the_circuit_opens_after_failures_backs_off_and_closes_on_a_probe() -> None:
    c = webhooks.Circuit(endpoint="ep_x", url="http://x/")
    t = 1000.0
    for _ in range(webhooks.CIRCUIT_FAILURES - 1):
        assert not c.record(False, t, 300) and c.state == "closed" and c.wait(t) == 0
    assert c.record(False, t, 300) and c.state == "open" and c.wait(t) == webhooks.CIRCUIT_OPEN_S
    assert c.public()["circuit"] == "open" and c.public()["failures"] == webhooks.CIRCUIT_FAILURES
    t += webhooks.CIRCUIT_OPEN_S
    assert c.wait(t) == 0 and c.state == "half_open"  # one probe may go
    assert c.record(False, t, 300) and c.state == "open" and c.wait(t) == 2 * webhooks.CIRCUIT_OPEN_S  # doubled
    t += 2 * webhooks.CIRCUIT_OPEN_S
    assert c.wait(t) == 0 and c.record(True, t, 300) and (c.state, c.failures) == ("closed", 0)
    # the URL of an endpoint never reaches an error message
    ep = webhooks.endpoint("https://hooks.slack.com/services/T1/B2/s3cr3t?token=q")
    assert "s3cr3t" not in webhooks.scrub(
        "ConnectError: https://hooks.slack.com/services/T1/B2/s3cr3t?token=q failed", ep
    )
    assert "q" not in webhooks.scrub("at /services/T1/B2/s3cr3t?token=q", ep).split("/…")[-1]
