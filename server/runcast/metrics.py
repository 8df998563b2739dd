"""Metrics of one Runcast process on prometheus-client, served by a hub at `/metrics`.

Two kinds, both in one registry per hub (`Metrics.registry`):

- Module-level metrics that any module updates directly, the prometheus-client way:

      from runcast import metrics
      metrics.webhook_deliveries.labels(status="delivered").inc()
      metrics.segment_duration.labels(outcome="paused").observe(12.5)

- The counters of the hot path (frames in and out, one increment per frame) are plain ints on the hub's `Metrics`
  (`hub.metrics.frames_out += 1` costs tens of nanoseconds; a prometheus-client `Counter.inc()` takes a lock), read
  at scrape time by a collector, together with what is read off the hub's state when scraped: connections, runs
  watched, running segments and every connection's send-queue depth.

Labels stay bounded: an error code, an encoding, an outcome, a status, a source. Never a run id, a user, a tool
or an agent name (`tests/test_metrics.py` checks the label names).

The delivery delay (an event's `ts`, set when it was logged, to the moment a client's socket write returned) is
sampled: a connection times one live batch in `DELIVERY_SAMPLE`, so the per-event cost of the fan-out stays one
integer increment per batch. It is measured on the hub's clock against the logging process's clock (the worker's):
on several machines it includes their clock skew, so keep them on NTP.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sized
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeHistogramMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from .protocol import ErrorCode

if TYPE_CHECKING:
    from .protocol import Event

disable_created_metrics()  # no `_created` series beside every counter and histogram: half the lines, no use here

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DELIVERY_SAMPLE = 8  # a connection times one live batch in this many (a power of two: the test is a bit mask)

# ---------------------------------------------------------------------------------------------- module-level metrics
# Created without a registry: each `Metrics` (hub) or `worker_registry()` registers them in a registry of its own, so
# several hubs in one process (tests) never collide, and a process exposes the same objects whatever its role.

delivery_delay = Histogram(
    "runcast_delivery_delay_seconds",
    "Delay from an event being logged to a client's socket write of it returning (live events, sampled)",
    ["encoding"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=None,
)
approval_decision = Histogram(
    "runcast_approval_decision_seconds",
    "Time from approval.requested to its settlement, by outcome (approved, rejected, expired, cancelled)",
    ["outcome"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 86400),
    registry=None,
)
segment_duration = Histogram(
    "runcast_segment_duration_seconds",
    "How long a worker streamed one run segment, by how it ended (paused, completed, failed, cancelled, lost)",
    ["outcome"],
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
    registry=None,
)
runs_finished = Counter(
    "runcast_runs_finished",
    "Runs that reached a terminal status, by status (committed by this process)",
    ["status"],
    registry=None,
)
redis_errors = Counter(
    "runcast_redis_errors",
    "Redis commands or connections that failed, by source (command, pubsub, cluster)",
    ["source"],
    registry=None,
)
redis_reconnects = Counter(
    "runcast_redis_reconnects",
    "Times this process's pub/sub connection to Redis (or to one cluster shard) was re-established after it was lost",
    registry=None,
)
webhook_deliveries = Counter(
    "runcast_webhook_deliveries",
    "Webhook delivery attempts, by status (delivered, failed, gave_up)",
    ["status"],
    registry=None,
)
webhook_delivery_seconds = Histogram(
    "runcast_webhook_delivery_seconds",
    "Duration of one webhook delivery attempt",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=None,
)
webhook_receivers = Gauge(
    "runcast_webhook_receivers",
    "Webhook receivers this process delivers to, by circuit state (closed, open: backed "
    "off after failing, half_open: one probe)",
    ["circuit"],
    registry=None,
)
draining = Gauge(
    "runcast_draining", "1 while this hub node drains (SIGTERM: no new clients, closing with 1012)", registry=None
)

# Every label value is known in advance: each series exists from the start (at 0), so rate() and alerts see it.
for _enc in ("json", "msgpack"):
    delivery_delay.labels(encoding=_enc)
for _o in ("approved", "rejected", "expired", "cancelled"):
    approval_decision.labels(outcome=_o)
for _o in ("paused", "completed", "failed", "cancelled", "lost"):
    segment_duration.labels(outcome=_o)
for _o in ("completed", "failed", "cancelled"):
    runs_finished.labels(status=_o)
for _o in ("command", "pubsub", "cluster"):
    redis_errors.labels(source=_o)
for _o in ("delivered", "failed", "gave_up"):
    webhook_deliveries.labels(status=_o)
for _o in ("closed", "open", "half_open"):
    webhook_receivers.labels(circuit=_o)

loop_lag = Histogram(
    "runcast_loop_lag_seconds",
    "How late the process's event loop ran a 50 ms timer (looplag.py): a busy hub, not a slow backend",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
    registry=None,
)
SHARED: tuple[Collector, ...] = (
    loop_lag,
    delivery_delay,
    approval_decision,
    segment_duration,
    runs_finished,
    redis_errors,
    redis_reconnects,
    webhook_deliveries,
    webhook_delivery_seconds,
    webhook_receivers,
    draining,
)

_ERROR_CODES = sorted(v for k, v in vars(ErrorCode).items() if k.isupper() and isinstance(v, str))
# bytes sent to one client and not yet taken by it (over the default --max-send-bytes of 1 MiB for 1 s: close 4408)
QUEUE_BUCKETS = (0, 1024, 16384, 65536, 262144, 1048576, 4194304, 16777216)


def _parse_ts(ts: str) -> float:
    return datetime.fromisoformat(ts).timestamp()  # "...Z" parses on Python 3.11+


def observe_delivery(ev: Event, encoding: str, now: float | None = None) -> None:
    """One sample of the delivery delay: `ev` was just written to a client."""
    try:
        delay = (time.time() if now is None else now) - _parse_ts(ev.frame["ts"])
    except (KeyError, TypeError, ValueError):
        return
    delivery_delay.labels(encoding=encoding).observe(max(0.0, delay))


def observe_events(events: Iterable[Event], record: Any) -> None:
    """What a committed transition says about approvals and runs (called once per commit, by the process that
    committed it, so a decision is counted once whichever node took it)."""
    for ev in events:
        t = ev.type
        if t == "approval.decided" or t == "approval.cancelled":
            ap = record.approvals.get(ev.data.get("approval_id")) if record is not None else None
            if ap is None:
                continue
            if t == "approval.cancelled":
                outcome = "cancelled"
            elif (ev.data.get("by") or {}).get("policy") == "expired":
                outcome = "expired"
            else:
                outcome = "approved" if ev.data.get("decision") == "approve" else "rejected"
            try:
                waited = _parse_ts(ev.frame["ts"]) - _parse_ts(ap.requested_at)
            except (KeyError, TypeError, ValueError):
                continue
            approval_decision.labels(outcome=outcome).observe(max(0.0, waited))
        elif t in ("run.completed", "run.failed", "run.cancelled"):
            runs_finished.labels(status=t[4:]).inc()


# -------------------------------------------------------------------------------------- what is read when scraped
class NodeGauges(Protocol):
    """What a hub node shows at scrape time, read off its state (hub.Hub registers itself with `Metrics.register`).

    A protocol, not the Hub: the metrics sit below the hub in the layers (docs/architecture.md), so the hub hands
    itself in rather than being imported."""

    def runs_watched(self) -> int:
        """Runs this node holds a live feed for."""
        ...

    def active_segments(self) -> int:
        """Run segments this process's worker is streaming (0 without a worker)."""
        ...

    def send_queue_depths(self) -> list[int]:
        """Bytes unread by its client, one entry per open connection."""
        ...

    def delivery_cpu(self) -> tuple[float, float, int]:
        """(the event loop thread's CPU seconds writing live run events to their watchers, the same for the inbox
        and run-list feeds (each tick's fold and writes), feed frames written): what a frame of each costs."""
        ...


class Segments(Protocol):
    """What a worker shows at scrape time (worker.Worker): the segments it is streaming now."""

    @property
    def active(self) -> Sized: ...


# ---------------------------------------------------------------------------------------------- a hub node's registry
class Metrics:
    """A hub node's counters (plain ints, bumped on the hot path) and its registry."""

    def __init__(self) -> None:
        self.connections = 0
        self.connections_total = 0
        self.frames_in = 0
        self.frames_out = 0
        self.errors: dict[str, int] = {}  # by error code (a closed set: protocol.ErrorCode)
        self.slow_consumers = 0
        self._node: NodeGauges | None = None
        self.registry = CollectorRegistry(auto_describe=False)
        for c in SHARED:
            self.registry.register(c)
        self.registry.register(_HubCollector(self))
        ProcessCollector(registry=self.registry)

    def register(self, node: NodeGauges) -> None:
        """The node whose state the scrape reads (its connections, feeds and worker)."""
        self._node = node

    def render(self) -> str:
        return generate_latest(self.registry).decode()


class _HubCollector(Collector):
    def __init__(self, m: Metrics) -> None:
        self.m = m

    def collect(self) -> Iterator[Any]:
        m, node = self.m, self.m._node
        yield GaugeMetricFamily("runcast_connections", "WebSocket connections open on this node", value=m.connections)
        yield CounterMetricFamily(
            "runcast_connections_accepted", "WebSocket connections accepted", value=m.connections_total
        )
        yield CounterMetricFamily("runcast_frames_in", "Frames received from clients", value=m.frames_in)
        yield CounterMetricFamily("runcast_frames_out", "Frames written to clients", value=m.frames_out)
        yield CounterMetricFamily(
            "runcast_slow_consumers_closed", "Clients closed with 4408 (slow consumer)", value=m.slow_consumers
        )
        errors = CounterMetricFamily("runcast_errors", "Error frames and HTTP errors sent, by code", labels=["code"])
        counts = {c: 0 for c in _ERROR_CODES} | {str(c): n for c, n in m.errors.items()}
        for code, n in sorted(counts.items()):
            errors.add_metric([code], n)
        yield errors
        if node is None:
            return
        yield GaugeMetricFamily(
            "runcast_runs_watched", "Runs this node holds a live feed for", value=node.runs_watched()
        )
        yield GaugeMetricFamily(
            "runcast_active_segments", "Run segments this process's worker is streaming", value=node.active_segments()
        )
        depths = node.send_queue_depths()
        yield GaugeMetricFamily(
            "runcast_send_queue_max",
            "The deepest send queue of any connection on this node (bytes unread by its client), at scrape time",
            value=max(depths, default=0),
        )
        yield _depth_histogram(depths)
        fanout_cpu, feed_cpu, feed_frames = node.delivery_cpu()
        yield CounterMetricFamily(
            "runcast_fanout_cpu_seconds",
            "CPU of the event loop's thread spent writing live run events to their watchers (thread CPU time)",
            value=fanout_cpu,
        )
        yield CounterMetricFamily(
            "runcast_feed_cpu_seconds",
            "CPU of the event loop's thread spent folding and writing the inbox and run-list feeds, once per tick "
            "(thread CPU time)",
            value=feed_cpu,
        )
        yield CounterMetricFamily(
            "runcast_feed_frames_out",
            "Inbox and run-list frames written (each frame to each watcher)",
            value=feed_frames,
        )


def _depth_histogram(depths: list[int]) -> GaugeHistogramMetricFamily:
    buckets = []
    for le in QUEUE_BUCKETS:
        buckets.append((str(le), sum(1 for d in depths if d <= le)))
    buckets.append(("+Inf", len(depths)))
    return GaugeHistogramMetricFamily(
        "runcast_send_queue_depth",
        "Bytes unread per connection, at scrape time",
        buckets=buckets,
        gsum_value=sum(depths),
    )


# ---------------------------------------------------------------------------------------------- a worker's registry
class _WorkerCollector(Collector):
    def __init__(self, worker: Segments) -> None:
        self.worker = worker

    def collect(self) -> Iterator[Any]:
        yield GaugeMetricFamily(
            "runcast_active_segments", "Run segments this process's worker is streaming", value=len(self.worker.active)
        )


def worker_registry(worker: Segments) -> CollectorRegistry:
    """The registry `runcast worker --metrics-port` serves: the shared metrics and the worker's running segments."""
    reg = CollectorRegistry(auto_describe=False)
    for c in SHARED:
        reg.register(c)
    reg.register(_WorkerCollector(worker))
    ProcessCollector(registry=reg)
    return reg
