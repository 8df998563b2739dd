"""`/metrics` on prometheus-client: it parses with prometheus_client's own parser, the histograms move when runs
are watched and decided, and no label can carry a run id or a person."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from hubtest import ALICE, OPERATOR, VIEWER, Client, Cluster
from runcast import metrics
from runcast.approvals import Approval, ApprovalPolicy
from runcast.protocol import make_event

# What a label may be: closed sets only. A run id, a user, a tool or an agent name must never become a label.
ALLOWED_LABELS = {"code", "encoding", "outcome", "status", "source", "circuit", "le"}


def parse(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def value(fams: dict[str, Any], sample: str, **labels: str) -> float:
    for fam in fams.values():
        for s in fam.samples:
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    raise KeyError(f"{sample} {labels}")


def test_a_fresh_registry_parses_and_every_label_is_from_a_closed_set() -> None:
    fams = parse(metrics.Metrics().render())
    for name in (
        "runcast_connections",
        "runcast_frames_out",
        "runcast_delivery_delay_seconds",
        "runcast_approval_decision_seconds",
        "runcast_segment_duration_seconds",
        "runcast_redis_errors",
        "runcast_redis_reconnects",
        "runcast_webhook_deliveries",
        "runcast_runs_finished",
        "runcast_draining",
    ):
        assert name in fams, name
    for fam in fams.values():
        for s in fam.samples:
            assert set(s.labels) <= ALLOWED_LABELS, (s.name, s.labels)
    # each known label value is there from the start, at 0, so rate() and alerts see the series
    assert value(fams, "runcast_approval_decision_seconds_count", outcome="expired") >= 0
    assert value(fams, "runcast_webhook_deliveries_total", status="gave_up") >= 0


def test_two_hubs_in_one_process_have_their_own_registries() -> None:
    a, b = metrics.Metrics(), metrics.Metrics()
    a.frames_out = 7
    assert value(parse(a.render()), "runcast_frames_out_total") == 7
    assert value(parse(b.render()), "runcast_frames_out_total") == 0


def test_a_decision_is_timed_from_its_request_by_outcome() -> None:
    ap = Approval(
        approval_id="ap_1",
        call_id="c",
        tool="t",
        arguments="{}",
        agent=None,
        policy=ApprovalPolicy(),
        requested_at="2026-01-01T00:00:00.000Z",
    )

    class Rec:
        approvals = {"ap_1": ap}

    before = metrics.approval_decision.labels(outcome="expired")._sum.get()
    decided = make_event(
        "run_x", 9, "approval.decided", {"approval_id": "ap_1", "decision": "reject", "by": {"policy": "expired"}}
    )
    decided.frame["ts"] = "2026-01-01T00:01:30.000Z"
    metrics.observe_events([decided], Rec())
    assert metrics.approval_decision.labels(outcome="expired")._sum.get() - before == pytest.approx(90.0)


def test_the_delivery_sample_reads_the_logged_time() -> None:
    ev = make_event("run_x", 1, "message.delta", {}, ts=1000.0)
    child = metrics.delivery_delay.labels(encoding="msgpack")
    before = child._sum.get()
    metrics.observe_delivery(ev, "msgpack", now=1000.25)
    assert child._sum.get() - before == pytest.approx(0.25)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path_factory.mktemp("metrics"), "memory").start()
    yield cluster
    cluster.stop()


async def test_histograms_move_when_runs_are_watched_and_decided(hub: Cluster) -> None:
    start = parse(hub.http("GET", "/metrics").text)
    # ALICE keeps the inbox open: the feed's frames and CPU are counted apart from the run events'
    inbox = await Client.connect(hub.ws_url(), ALICE)
    await inbox.send({"type": "subscribe_inbox", "id": "i"})
    await inbox.wait_for(lambda f: f.get("id") == "i")
    run_id = hub.start_run(tok=OPERATOR)
    watchers = [await Client.connect(hub.ws_url(), VIEWER, encoding=enc) for enc in ("json", "msgpack")]
    for w in watchers:
        await w.subscribe(run_id)
    req = await watchers[0].wait_event(run_id, "approval.requested")
    await watchers[0].wait_event(run_id, "run.paused")
    await inbox.wait_for(lambda f: f["type"] == "inbox.added" and f["approval"]["run_id"] == run_id)
    alice = await Client.connect(hub.ws_url(), ALICE)
    ack = await alice.request(
        {"type": "decide", "run_id": run_id, "approval_id": req["data"]["approval_id"], "decision": "approve"}
    )
    assert ack["type"] == "ack"
    for w in watchers:
        await w.wait_event(run_id, "run.completed")
    await inbox.wait_for(lambda f: f["type"] == "inbox.removed" and f["run_id"] == run_id)
    resp = hub.http("GET", "/metrics")
    assert resp.headers["content-type"].startswith("text/plain; version=0.0.4")
    end = parse(resp.text)

    def moved(sample: str, **labels: str) -> float:
        return value(end, sample, **labels) - value(start, sample, **labels)

    assert moved("runcast_delivery_delay_seconds_count", encoding="json") >= 1
    assert moved("runcast_delivery_delay_seconds_count", encoding="msgpack") >= 1
    assert moved("runcast_approval_decision_seconds_count", outcome="approved") == 1
    assert moved("runcast_segment_duration_seconds_count", outcome="paused") == 1
    assert moved("runcast_segment_duration_seconds_count", outcome="completed") == 1
    assert moved("runcast_runs_finished_total", status="completed") == 1
    assert value(end, "runcast_connections") == 4
    assert value(end, "runcast_runs_watched") == 1
    assert value(end, "runcast_send_queue_depth_gcount") == 4
    assert moved("runcast_frames_out_total") > 20
    # what a frame costs, by path (bench/dashboards.py divides these): the inbox got its added and removed frames
    assert moved("runcast_feed_frames_out_total") == 2
    assert moved("runcast_feed_cpu_seconds_total") > 0
    assert moved("runcast_fanout_cpu_seconds_total") > 0
    for fam in end.values():
        for s in fam.samples:
            assert set(s.labels) <= ALLOWED_LABELS, (s.name, s.labels)
    for c in (*watchers, alice, inbox):
        await c.close()


def test_the_grafana_dashboard_uses_only_metrics_that_exist() -> None:
    import json
    import re
    from pathlib import Path

    dash = json.loads((Path(__file__).resolve().parents[1] / "deploy/grafana/runcast-dashboard.json").read_text())
    exposed = {s.name for fam in parse(metrics.Metrics().render()).values() for s in fam.samples}
    exposed |= {"runcast_runs_watched", "runcast_active_segments", "runcast_send_queue_max"}  # need a hub to show
    exposed |= {"runcast_fanout_cpu_seconds_total", "runcast_feed_cpu_seconds_total", "runcast_feed_frames_out_total"}
    used = set()
    for panel in dash["panels"]:
        assert panel["targets"], panel["title"]
        for t in panel["targets"]:
            used |= set(re.findall(r"\b((?:runcast|process)_[a-z_]+)\b", t["expr"]))
    assert used and used <= exposed, used - exposed


async def test_a_worker_serves_its_metrics_on_its_own_port(tmp_path) -> None:
    import httpx

    from hubtest import Process, base_env, free_port
    from redis_server import RedisServer

    redis = RedisServer()
    redis.start()
    port = free_port()
    worker = Process(
        ["worker", "--redis", redis.url, "--metrics-port", str(port), "--metrics-host", "127.0.0.1"],
        base_env(tmp_path),
        tmp_path / "worker.log",
    )
    try:
        worker.start()
        import asyncio

        for _ in range(200):
            try:
                text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=1).text
                break
            except httpx.HTTPError:
                await asyncio.sleep(0.05)
        else:
            raise AssertionError(worker.log_path.read_text())
        fams = parse(text)
        assert value(fams, "runcast_active_segments") == 0
        assert "runcast_segment_duration_seconds" in fams
    finally:
        worker.stop()
        redis.cleanup()


async def test_a_worker_drains_on_sigterm_and_its_probes_say_so(tmp_path) -> None:
    import asyncio
    import signal

    import httpx

    from hubtest import Cluster, free_port
    from redis_server import RedisServer

    redis = RedisServer()
    redis.start()
    port = free_port()
    c = Cluster(
        tmp_path,
        "redis",
        redis.url,
        nodes=1,
        workers=1,
        env={"RUNCAST_DEMO_DELAY": "0.02"},
        worker_args=["--metrics-port", str(port), "--metrics-host", "127.0.0.1", "--grace", "20"],
    ).start()
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                if httpx.get(base + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.05)
        assert httpx.get(base + "/healthz").text == "ok"
        run_id = c.start_run("long-turn", tok=OPERATOR)
        w = await Client.connect(c.ws_url(), VIEWER)
        await w.subscribe(run_id)
        await w.wait_event(run_id, "message.delta")
        worker = c.workers[0].proc
        assert worker is not None
        worker.send_signal(signal.SIGTERM)  # mid-segment: the segment may finish (it pauses), then the worker exits
        await asyncio.sleep(0.3)
        assert httpx.get(base + "/readyz").status_code == 503
        assert (await w.wait_event(run_id, ("run.paused", "run.failed"), timeout=30))["type"] == "run.paused"
        await asyncio.to_thread(worker.wait, 20)
        await w.close()
    finally:
        c.stop()
        redis.cleanup()
