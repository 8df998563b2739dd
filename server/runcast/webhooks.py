"""Outgoing webhooks: approvals and run endings reach people outside the page (a receiver of yours, or Slack).

How an event gets out:

1. The backend writes an outbox entry **in the same atomic step** as the event itself (the commit of a transition:
   the memory backend's dict update, the Redis commit script's XADD), for every event whose type is in `EVENTS`.
   So an event that is logged is delivered, and nothing is delivered that was not logged.
2. A `Deliverer` task in each process that has webhooks configured takes entries from the outbox (on Redis: a
   Stream read through one consumer group, so each entry goes to exactly one process; an entry whose process died
   is taken over with XAUTOCLAIM after `claim_s`), works out the endpoints that want it (`--webhook` flags, and the
   agent's and the tool's `notify`), and POSTs to each with its own HTTP client and timeouts, never in the way of a
   run or the fan-out.
3. At least once: a failure or a non-2xx answer is retried with exponential backoff and full jitter until
   `retry_for_s` after the first attempt, then given up (logged, counted). Every attempt of one event carries the
   same `webhook-id` (`msg_<run_id>_<seq>`), so receivers de-duplicate. Each delivery's status and attempts are kept
   in the backend (shared by every node on Redis) for `GET /api/webhooks/deliveries`; a process that takes over an
   entry continues its attempt count and skips the endpoints that already have it.

Signing follows Standard Webhooks (https://www.standardwebhooks.com): headers `webhook-id`, `webhook-timestamp`
(Unix seconds of this attempt) and `webhook-signature: v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">` under
the secret `whsec_<base64 key>`; signed with the spec's reference package (`standardwebhooks`). The pure parts
(endpoint config, payloads, Slack blocks, backoff) are plain functions below; `Deliverer` is the I/O.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import logging
import os
import random
import secrets
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from . import __version__, metrics
from .protocol import WEBHOOK_EVENTS, now_iso
from .slack import slack_escape  # Slack's escaping rule lives with the Slack app (slack.py), below this module

if TYPE_CHECKING:
    from .backends.base import Backend
    from .registry import Registry
    from .runs import RunRecord

log = logging.getLogger("runcast.webhooks")

EVENTS = WEBHOOK_EVENTS  # defined in the core (protocol.py), where the backends read it too
APPROVAL_EVENTS = frozenset(e for e in EVENTS if e.startswith("approval."))
Format = Literal["standard", "slack"]


# ------------------------------------------------------------------------------------------------ configuration


@dataclass(frozen=True)
class Endpoint:
    url: str
    events: frozenset[str] | None = None  # None: every event in EVENTS
    format: Format = "standard"

    @property
    def id(self) -> str:
        """A stable name for this endpoint in delivery records (the URL itself may hold a secret, as Slack's do)."""
        return "ep_" + hashlib.sha256(f"{self.format} {self.url}".encode()).hexdigest()[:12]

    def wants(self, type_: str) -> bool:
        return self.events is None or type_ in self.events

    def redacted(self) -> str:
        """The URL without its path's secrets: scheme, host and the first path segment."""
        from urllib.parse import urlsplit

        p = urlsplit(self.url)
        first = p.path.strip("/").split("/")[0] if p.path.strip("/") else ""
        more = "/…" if p.path.strip("/").count("/") or p.query else ""
        return f"{p.scheme}://{p.netloc}/{first}{more}"


def parse_events(text: str | Iterable[str] | None) -> frozenset[str] | None:
    if text is None:
        return None
    items = [e.strip() for e in (text.split(",") if isinstance(text, str) else text) if e.strip()]
    if not items or items == ["*"]:
        return None
    bad = [e for e in items if e not in EVENTS]
    if bad:
        raise ValueError(f"unknown webhook event(s) {', '.join(bad)}; known: {', '.join(EVENTS)}")
    return frozenset(items)


def endpoint(spec: str | dict[str, Any] | Endpoint) -> Endpoint:
    """An endpoint from a URL, a dict {url, events, format} (as `notify=[...]` takes them) or an Endpoint."""
    if isinstance(spec, Endpoint):
        return spec
    if isinstance(spec, str):
        spec = {"url": spec}
    url = str(spec.get("url") or "")
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"a webhook URL must start with http:// or https://, not {url!r}")
    fmt = spec.get("format", "standard")
    if fmt not in ("standard", "slack"):
        raise ValueError(f"webhook format must be standard or slack, not {fmt!r}")
    return Endpoint(url=url, events=parse_events(spec.get("events")), format=fmt)


def parse_cli(urls: list[str], events: list[str] | None, formats: list[str] | None) -> list[Endpoint]:
    """`--webhook URL [--webhook-events a,b] [--webhook-format slack]`, repeatable: the i-th --webhook-events and
    --webhook-format go with the i-th --webhook; given once, they apply to every --webhook."""
    events, formats = events or [], formats or []
    for name, vals in (("--webhook-events", events), ("--webhook-format", formats)):
        if len(vals) > 1 and len(vals) != len(urls):
            raise ValueError(
                f"{name} given {len(vals)} times for {len(urls)} --webhook: give it once, or once per --webhook"
            )
    out = []
    for i, url in enumerate(urls):
        ev = events[i] if len(events) > 1 else (events[0] if events else None)
        fmt = formats[i] if len(formats) > 1 else (formats[0] if formats else "standard")
        out.append(endpoint({"url": url, "events": ev, "format": fmt}))
    return out


def parse_file(text: str, where: str = "the webhook file") -> list[Endpoint]:
    """`--webhook-file FILE` (or `RUNCAST_WEBHOOKS`): one receiver a line, `URL [events=a,b] [format=slack]`; blank
    lines and lines starting with # are skipped. A URL (Slack's are secrets) kept in a file or the environment does
    not show in `ps` or /proc/PID/cmdline the way a `--webhook URL` argument does."""
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        parts = line.strip().split()
        if not parts or parts[0].startswith("#"):
            continue
        spec: dict[str, Any] = {"url": parts[0]}
        for opt in parts[1:]:
            key, eq, val = opt.partition("=")
            if not eq or key not in ("events", "format"):
                raise ValueError(f"{where}, line {n}: expected URL [events=a,b] [format=standard|slack], not {opt!r}")
            spec[key] = val
        try:
            out.append(endpoint(spec))
        except ValueError as exc:  # (the message never repeats the URL: it may be a secret)
            raise ValueError(f"{where}, line {n}: {str(exc).split(', not ')[0]}") from None
    return out


def parse_secret(secret: str) -> bytes:
    """The key of a `whsec_<base64>` secret (Standard Webhooks' form); at least 16 bytes."""
    if not secret.startswith("whsec_"):
        raise ValueError("the webhook secret must be whsec_ followed by base64 (e.g. from `runcast webhook-secret`)")
    try:
        key = base64.b64decode(secret[6:], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the webhook secret is not valid base64 after whsec_") from None
    if len(key) < 16:
        raise ValueError("the webhook secret's key must be at least 16 bytes (24 is the spec's recommendation)")
    return key


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


@dataclass
class WebhookConfig:
    endpoints: list[Endpoint] = field(default_factory=list)  # --webhook
    secret: str | None = None
    public_url: str | None = None  # where people open the page; links in payloads
    timeout_s: float = 10.0  # one attempt, all of it (connect, write, answer): a total, not per read
    backoff_s: float = 1.0  # first retry after about this long, doubling each time, with jitter
    backoff_max_s: float = 300.0
    retry_for_s: float = 24 * 3600.0  # give up this long after the first attempt
    claim_s: float = 30.0  # an entry its process has not touched this long is taken over (Redis)
    concurrency: int = 1  # HTTP attempts in flight at once, per receiver (1: in log order)

    @classmethod
    def from_env(cls, **kw: Any) -> WebhookConfig:
        env = os.environ.get
        cfg = cls(**kw)
        cfg.timeout_s = float(env("RUNCAST_WEBHOOK_TIMEOUT_S", cfg.timeout_s))
        cfg.backoff_s = float(env("RUNCAST_WEBHOOK_BACKOFF_S", cfg.backoff_s))
        cfg.backoff_max_s = float(env("RUNCAST_WEBHOOK_BACKOFF_MAX_S", cfg.backoff_max_s))
        cfg.retry_for_s = float(env("RUNCAST_WEBHOOK_RETRY_FOR_S", cfg.retry_for_s))
        cfg.claim_s = float(env("RUNCAST_WEBHOOK_CLAIM_S", cfg.claim_s))
        cfg.concurrency = max(1, int(env("RUNCAST_WEBHOOK_CONCURRENCY", cfg.concurrency)))
        return cfg


def agent_endpoints(registry: Registry, agent: str | None, tool: str | None, type_: str) -> list[Endpoint]:
    """The agent's `notify` (every event of its runs) and, for approval events, the tool's policy's `notify`."""
    spec = registry.get(agent or "") if agent else None
    if spec is None:
        return []
    out = [endpoint(n) for n in getattr(spec, "notify", None) or []]
    if type_ in APPROVAL_EVENTS and tool:
        out += [endpoint(n) for n in spec.policy_for(tool).notify]
    return out


def any_configured(cfg: WebhookConfig, registry: Registry) -> bool:
    if cfg.endpoints:
        return True
    for name in registry.names():
        spec = registry.get(name)
        if getattr(spec, "notify", None) or any(p.notify for p in [*spec.policies.values(), spec.default_policy]):  # type: ignore[union-attr]
            return True
    return False


# ------------------------------------------------------------------------------------------------ payloads


def message_id(run_id: str, seq: int) -> str:
    return f"msg_{run_id}_{seq}"


def backoff(attempt: int, base: float, cap: float, rnd: random.Random | None = None) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based): exponential with full jitter in [d/2, d]."""
    d = min(cap, base * (2 ** max(0, attempt - 1)))
    return d * (0.5 + 0.5 * (rnd or random).random())


def links(public_url: str | None, run_id: str, approval_id: str | None) -> dict[str, str]:
    base = (public_url or "").rstrip("/")
    out = {"run": f"{base}/#run={run_id}"}
    if approval_id:
        out["approval"] = f"{base}/#run={run_id}&approval={approval_id}"
    return out


def _approval_info(rec: RunRecord | None, approval_id: str | None) -> dict[str, Any] | None:
    if rec is None or not approval_id or approval_id not in rec.approvals:
        return None
    ap = rec.approvals[approval_id]
    return ap.requested_data() | {"policy": ap.policy.model_dump(exclude={"notify"}), "requested_at": ap.requested_at}


def payload(entry: dict[str, Any], rec: RunRecord | None, public_url: str | None) -> dict[str, Any]:
    """The Standard Webhooks body: {type, timestamp, data}; data holds the event, its run and its approval."""
    data = entry.get("data") or {}
    run_id = entry["run_id"]
    aid = data.get("approval_id")
    run: dict[str, Any] = {"run_id": run_id}
    if rec is not None:
        run |= {
            "agent": rec.agent,
            "status": rec.status,
            "started_by": rec.started_by,
            "input": rec.input,
            "created_at": rec.created_at,
        }
    run["url"] = links(public_url, run_id, None)["run"]
    body: dict[str, Any] = {"run_id": run_id, "seq": entry["seq"], "event": data, "run": run}
    info = _approval_info(rec, aid)
    if aid:
        body["approval"] = (info or {"approval_id": aid}) | {"url": links(public_url, run_id, aid)["approval"]}
    return {"type": entry["type"], "timestamp": entry.get("ts") or now_iso(), "data": body}


_esc = slack_escape


def _cut(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _args_brief(arguments: Any, n: int = 400) -> str:
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError:
            return _cut(arguments, n)
    if isinstance(arguments, dict):
        parts = [f"{k}: {json.dumps(v, ensure_ascii=False)}" for k, v in arguments.items()]
        return _cut(", ".join(parts), n)
    return _cut(json.dumps(arguments, ensure_ascii=False), n)


_TITLES = {
    "approval.requested": "Approval needed",
    "approval.decided": "Approval decided",
    "approval.expired": "Approval expired",
    "approval.cancelled": "Approval cancelled",
    "run.paused": "Run waiting for approval",
    "run.completed": "Run completed",
    "run.failed": "Run failed",
    "run.cancelled": "Run cancelled",
    "comment.mention": "You were mentioned",
    "approval.review_requested": "Review requested",
}


def slack(body: dict[str, Any]) -> dict[str, Any]:
    """What a Slack incoming webhook accepts: `text` (the notification's fallback) and `blocks` (header, fields,
    arguments, link). No interactive buttons: the link opens the approval on the page."""
    d = body["data"]
    t, ev, run, ap = body["type"], d.get("event") or {}, d.get("run") or {}, d.get("approval")
    who = (run.get("started_by") or {}).get("name") or (run.get("started_by") or {}).get("sub") or "someone"
    agent = run.get("agent") or "?"
    title = _TITLES.get(t, t)
    if ap:
        title += f": {ap.get('tool') or 'a tool call'}"
        url = ap["url"]
        link_text = "Open the approval"
    else:
        url = run["url"]
        link_text = "Open the run"
    fields = [f"*Agent*\n{_esc(agent)}", f"*Started by*\n{_esc(who)}", f"*Run*\n`{_esc(d['run_id'])}`"]
    extra: list[dict[str, Any]] = []
    if ap:
        pol = ap.get("policy") or {}
        roles = ", ".join(pol.get("roles") or []) or "?"
        q = pol.get("quorum", 1)
        fields.append(
            f"*Policy*\n{q} approver{'s' if q != 1 else ''} ({_esc(roles)})"
            + ("" if pol.get("allow_self", True) else ", not the starter")
        )
        fields.append(f"*Deadline*\n{_esc(ap.get('expires_at') or 'none')}")
        extra.append(
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": _cut(f"*Arguments*\n```{_esc(_args_brief(ap.get('arguments', '')))}```", 3000),
                },
            }
        )
    if t == "approval.decided":
        by = ev.get("by") or {}
        verb = "approved" if ev.get("decision") == "approve" else "rejected"
        who_d = "expiry" if by.get("policy") == "expired" else (by.get("name") or by.get("sub") or "someone")
        fields.append(
            f"*Decision*\n{verb} by {_esc(who_d)}"
            + (f": {_esc(_cut(str(ev['reason']), 300))}" if ev.get("reason") else "")
        )
    elif t == "run.failed":
        err = f"{ev.get('code')}: {ev.get('message')}"
        fields.append(f"*Error*\n{_esc(_cut(err, 500))}")
    elif t == "run.cancelled":
        by = ev.get("by") or {}
        fields.append(f"*Cancelled by*\n{_esc(by.get('name') or by.get('sub') or 'someone')}")
    elif t == "comment.mention":
        m, by = ev.get("mentioned") or {}, ev.get("by") or {}
        title = f"{m.get('name') or m.get('sub')} was mentioned by {by.get('name') or by.get('sub')}"
        fields.append(f"*Mentioned*\n{slack_escape(m.get('name') or '')} ({slack_escape(m.get('sub') or '')})")
        extra.append(
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": _cut(f"*Comment*\n{slack_escape(_cut(str(ev.get('text') or ''), 1000))}", 3000),
                },
            }
        )
    elif t == "run.completed" and ev.get("output") is not None:
        extra.append(
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": _cut(f"*Output*\n{_esc(_cut(str(ev.get('output')), 600))}", 3000)},
            }
        )
    # the fallback `text` is what notifications and some clients show: escaped like every other field
    text = f"{_esc(title)} (agent {_esc(agent)}, started by {_esc(who)}): {_esc(url)}"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _cut(_esc(title), 150), "emoji": True}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": _cut(f, 2000)} for f in fields[:10]]},
        *extra,
        {"type": "section", "text": {"type": "mrkdwn", "text": f"<{_esc(url)}|{link_text}>"}},
        {
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": _esc(f"Runcast · {t} · {body.get('timestamp', '')}")}],
        },
    ]
    return {"text": _cut(text, 3000), "blocks": blocks}


def encode(endpoint_: Endpoint, body: dict[str, Any]) -> str:
    doc = slack(body) if endpoint_.format == "slack" else body
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False)


def sign_headers(secret: str, msg_id: str, body: str, now: float | None = None) -> dict[str, str]:
    """Standard Webhooks headers for one attempt, signed with the reference package."""
    from standardwebhooks.webhooks import Webhook

    ts = int(time.time() if now is None else now)
    sig = Webhook(secret).sign(msg_id, datetime.fromtimestamp(ts, tz=UTC), body)
    return {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": sig}


# ------------------------------------------------------------------------------------------------ delivery (I/O)


def _record_key(msg_id: str, ep: Endpoint) -> str:
    return f"{msg_id} {ep.id}"


RESPONSE_KEEP = 256  # bytes of a receiver's answer kept for the delivery record; the rest is never read
CIRCUIT_FAILURES = 5  # consecutive failed attempts that open a receiver's circuit
CIRCUIT_OPEN_S = (
    5.0  # the first time a circuit opens, for this long; doubling each time a probe fails, to backoff_max_s
)
LANE_SCAN_S = 0.5  # how often a process looks for lanes nobody delivers (new receivers, or a holder that died)
LANE_IDLE_S = 30.0  # a lane empty this long is let go (its task and its HTTP connections)
INTAKE = "@intake"  # the lease of the one process that moves outbox entries to lanes (so each lane is in log order)


def _silence_http_loggers() -> None:
    """httpx logs every request's full URL at INFO ("HTTP Request: POST https://hooks.slack.com/services/T/B/secret"),
    and httpcore logs connection details at DEBUG: a webhook URL is a secret (Slack's are), so neither logs below
    WARNING, whatever level the server's log is at."""
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)


def scrub(text: str, ep: Endpoint) -> str:
    """An error message with the endpoint's URL (and its path and query, where secrets live) replaced by the redacted
    form, for logs and delivery records."""
    from urllib.parse import urlsplit

    p = urlsplit(ep.url)
    secret_parts = [ep.url, ep.url.rstrip("/")]
    tail = p.path + (f"?{p.query}" if p.query else "")
    if tail.strip("/"):
        secret_parts += [tail, p.path]
    if p.query:
        secret_parts.append(p.query)
    for part in sorted({x for x in secret_parts if x}, key=len, reverse=True):
        text = text.replace(part, ep.redacted())
    return text


def _epoch(ts: str | None) -> float | None:
    if not ts:
        return None
    try:
        return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


@dataclass
class Circuit:
    """A receiver's circuit breaker (plain code): closed while attempts succeed; after `CIRCUIT_FAILURES` failed
    attempts in a row it opens, and no attempt reaches the receiver until `open_until`; then one attempt probes it
    (half open): success closes it, failure opens it again for twice as long (up to the backoff cap)."""

    endpoint: str
    url: str  # redacted
    format: str = "standard"
    state: Literal["closed", "open", "half_open"] = "closed"
    failures: int = 0  # failed attempts in a row
    open_until: float = 0.0
    open_s: float = 0.0  # how long it opened for, last time
    holder: str | None = None

    def wait(self, now: float) -> float:
        """Seconds before the next attempt may go (0: now). An open circuit whose time is up becomes half open."""
        if self.state == "open":
            if now < self.open_until:
                return self.open_until - now
            self.state = "half_open"
        return 0.0

    def record(self, ok: bool, now: float, cap_s: float) -> bool:
        """An attempt's outcome; True when the state changed."""
        before = self.state
        if ok:
            self.state, self.failures, self.open_s, self.open_until = "closed", 0, 0.0, 0.0
        else:
            self.failures += 1
            if self.state == "half_open" or self.failures >= CIRCUIT_FAILURES:
                self.open_s = min(cap_s, self.open_s * 2 if self.open_s else CIRCUIT_OPEN_S)
                self.state, self.open_until = "open", now + self.open_s
        return self.state != before

    def public(self) -> dict[str, Any]:
        return {
            "endpoint": self.endpoint,
            "url": self.url,
            "format": self.format,
            "circuit": self.state,
            "failures": self.failures,
            "open_until": now_iso(self.open_until) if self.state == "open" else None,
            "holder": self.holder,
            "updated_at": now_iso(),
        }


class Deliverer:
    """Delivers webhooks; one per process that has webhooks configured.

    Each receiver (endpoint) has its own lane: a queue in the backend, its own HTTP client (connection pool), its own
    concurrency (`cfg.concurrency` attempts at once; 1, the default, delivers in log order) and its own circuit. A
    slow or dead receiver fills its own lane and holds up nobody else. One process at a time moves outbox entries to
    the lanes (the `@intake` lease, so each lane is filled in log order); one process at a time delivers a lane (the
    lane's lease); a process that dies loses its leases after `claim_s` and another takes over where it stopped."""

    def __init__(self, backend: Backend, registry: Registry, cfg: WebhookConfig, consumer: str | None = None) -> None:
        self.backend, self.registry, self.cfg = backend, registry, cfg
        self.slack_app: Any = None  # slack.SlackApp, when RUNCAST_SLACK_BOT_TOKEN and RUNCAST_SLACK_CHANNEL are set
        self.consumer = consumer or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self._task: asyncio.Task[None] | None = None
        self._scan_task: asyncio.Task[None] | None = None
        self._lanes: dict[str, asyncio.Task[None]] = {}
        self._wake: dict[str, asyncio.Event] = {}
        self.circuits: dict[str, Circuit] = {}
        self._stopping = False

    async def start(self) -> None:
        _silence_http_loggers()
        if self.cfg.endpoints or not self.slack_app:  # (Slack alone signs nothing of ours: its token authenticates)
            if not self.cfg.secret:
                raise ValueError("webhooks need a secret: --webhook-secret or RUNCAST_WEBHOOK_SECRET")
            parse_secret(self.cfg.secret)
        if hasattr(self.backend, "webhook_claim_s"):
            self.backend.webhook_claim_s = self.cfg.claim_s
        await self.backend.outbox_join()
        self._task = asyncio.create_task(self._intake(), name="runcast-webhooks")
        self._scan_task = asyncio.create_task(self._scan(), name="runcast-webhook-lanes")

    async def stop(self) -> None:
        self._stopping = True
        tasks = [t for t in [self._task, self._scan_task, *self._lanes.values()] if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # ---- intake: outbox entries -> the lanes of the endpoints that want them

    async def _intake(self) -> None:
        pause = 0.1
        while not self._stopping:
            try:
                if not await self.backend.lane_lease(INTAKE, self.consumer, self.cfg.claim_s):
                    await asyncio.sleep(LANE_SCAN_S)
                    continue
                entries = await self.backend.outbox_take(self.consumer, 32, timeout=min(2.0, self.cfg.claim_s / 3))
                for entry in entries:
                    await self._to_lanes(entry)
                pause = 0.1
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("webhook outbox unreachable (%s); retrying in %.1fs", exc, pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 5.0)
        await self._let_go(INTAKE)

    async def _to_lanes(self, entry: dict[str, Any]) -> None:
        rec = None
        try:
            rec = await self.backend.get(entry["run_id"])
        except Exception as exc:
            log.warning("webhook: could not read run %s (%s)", entry["run_id"], exc)
        data = entry.get("data") or {}
        tool = None
        if rec is not None and data.get("approval_id") in rec.approvals:
            tool = rec.approvals[data["approval_id"]].tool
        eps = [e for e in self.cfg.endpoints if e.wants(entry["type"])]
        for e in agent_endpoints(self.registry, rec.agent if rec else None, tool, entry["type"]):
            if e.wants(entry["type"]) and e not in eps:
                eps.append(e)
        body = payload(entry, rec, self.cfg.public_url)
        if self.slack_app is not None:  # the approval's Slack message: posted, then updated in place (slack.py)
            try:
                await self.slack_app.on_entry(entry, rec, self.backend, self.cfg.public_url)
            except Exception as exc:
                log.warning(
                    "slack: %s for %s of %s failed: %s", entry["type"], data.get("approval_id"), entry["run_id"], exc
                )
        plain = {k: v for k, v in entry.items() if k != "id"}
        items = [
            (
                ep.id,
                {
                    "endpoint": {
                        "url": ep.url,
                        "events": sorted(ep.events) if ep.events is not None else None,
                        "format": ep.format,
                    },
                    "entry": plain,
                    "body": body,
                },
            )
            for ep in eps
        ]
        await self.backend.lane_push(entry["id"], items)
        for ep in eps:
            if ep.id in self._wake:
                self._wake[ep.id].set()

    # ---- lanes: one task per receiver this process delivers

    async def _scan(self) -> None:
        while not self._stopping:
            try:
                for lane in await self.backend.lane_ids():
                    if lane not in self._lanes and await self.backend.lane_lease(lane, self.consumer, self.cfg.claim_s):
                        self._wake[lane] = asyncio.Event()
                        self._lanes[lane] = asyncio.create_task(self._lane(lane), name=f"runcast-webhook-lane-{lane}")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("webhook lanes unreachable (%s)", exc)
            await asyncio.sleep(LANE_SCAN_S)

    async def _keep_lease(self, lane: str, task: asyncio.Task[None]) -> None:
        """Renew the lane's lease; if another process has it (this one was too slow to renew), stop delivering it."""
        while True:
            await asyncio.sleep(max(0.05, self.cfg.claim_s / 3))
            try:
                if not await self.backend.lane_lease(lane, self.consumer, self.cfg.claim_s):
                    log.warning("webhook lane %s was taken over; stopping here", lane)
                    task.cancel()
                    return
            except Exception as exc:
                log.warning("could not renew webhook lane %s: %s", lane, exc)

    async def _let_go(self, lane: str) -> None:
        try:
            await self.backend.lane_release(lane, self.consumer)
        except Exception:
            pass

    async def _lane(self, lane: str) -> None:
        import httpx

        me = asyncio.current_task()
        assert me is not None
        keeper = asyncio.create_task(self._keep_lease(lane, me))
        t = self.cfg.timeout_s
        # a client (connection pool) per receiver: a receiver that holds its connections holds only its own
        client = httpx.AsyncClient(
            timeout=httpx.Timeout(t, connect=min(t, 5.0)),
            follow_redirects=False,
            trust_env=False,
            limits=httpx.Limits(
                max_connections=max(1, self.cfg.concurrency), max_keepalive_connections=max(1, self.cfg.concurrency)
            ),
            headers={"user-agent": f"runcast/{__version__} webhooks", "content-type": "application/json"},
        )
        circuit: Circuit | None = self.circuits.get(lane)
        try:
            idle = 0.0
            while not self._stopping:
                items = await self.backend.lane_read(lane, max(1, self.cfg.concurrency))
                if not items:
                    if idle >= LANE_IDLE_S:
                        return
                    wake = self._wake[lane]
                    wake.clear()
                    t0 = time.monotonic()
                    try:
                        await asyncio.wait_for(wake.wait(), LANE_SCAN_S)
                    except TimeoutError:
                        pass
                    idle += time.monotonic() - t0
                    continue
                idle = 0.0
                if circuit is None:
                    ep = endpoint(items[0][1]["endpoint"])
                    circuit = self.circuits[lane] = await self._load_circuit(ep)
                    await self._circuit_changed(circuit)
                if circuit.state != "closed":
                    items = items[:1]  # one probe at a time while the receiver is failing
                await asyncio.gather(*(self._deliver(lane, item_id, item, circuit, client) for item_id, item in items))
        finally:
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)
            await client.aclose()
            self._lanes.pop(lane, None)
            self._wake.pop(lane, None)
            self.circuits.pop(lane, None)
            _count_circuits(self)
            await self._let_go(lane)

    async def _load_circuit(self, ep: Endpoint) -> Circuit:
        c = Circuit(endpoint=ep.id, url=ep.redacted(), format=ep.format, holder=self.consumer)
        try:
            for saved in await self.backend.circuits():
                if saved.get("endpoint") == ep.id and saved.get("circuit") in ("open", "half_open"):
                    # taken over from a process that died: the receiver is still failing as far as anyone knows
                    c.state, c.failures = "open", int(saved.get("failures") or 0)
                    c.open_until = _epoch(saved.get("open_until")) or time.time()
                    c.open_s = CIRCUIT_OPEN_S
        except Exception as exc:
            log.warning("could not read webhook circuits: %s", exc)
        return c

    async def _circuit_changed(self, c: Circuit) -> None:
        _count_circuits(self)
        try:
            await self.backend.circuit_put(c.endpoint, c.public())
        except Exception as exc:
            log.warning("could not record webhook circuit %s: %s", c.endpoint, exc)

    async def _deliver(self, lane: str, item_id: str, item: dict[str, Any], circuit: Circuit, client: Any) -> None:
        ep, entry, body = endpoint(item["endpoint"]), item["entry"], item["body"]
        msg_id = message_id(entry["run_id"], entry["seq"])
        key = _record_key(msg_id, ep)
        state = await self.backend.delivery_get(key) or {
            "key": key,
            "webhook_id": msg_id,
            "type": entry["type"],
            "run_id": entry["run_id"],
            "seq": entry["seq"],
            "approval_id": (entry.get("data") or {}).get("approval_id"),
            "endpoint": ep.id,
            "url": ep.redacted(),
            "format": ep.format,
            "status": "pending",
            "attempts": 0,
            "first_attempt_at": None,
            "last_attempt_at": None,
            "last_status": None,
            "last_error": None,
            "last_response": None,
            "next_attempt_at": None,
            "delivered_at": None,
            "holder": None,
            "logged_at": entry.get("ts"),
        }
        if state["status"] not in ("delivered", "gave_up"):  # else: an earlier holder finished it before it died
            await self._attempts(ep, entry, body, msg_id, state, circuit, client)
        await self.backend.lane_done(lane, item_id)

    async def _attempts(
        self,
        ep: Endpoint,
        entry: dict[str, Any],
        body: dict[str, Any],
        msg_id: str,
        state: dict[str, Any],
        circuit: Circuit,
        client: Any,
    ) -> None:
        text = encode(ep, body)
        # given up `retry_for_s` after the event was logged: a backlog behind a receiver that was down for longer
        # is given up without an attempt each, not retried for another day per event
        first = state.get("first_attempt_at_s") or time.time()
        state["first_attempt_at_s"] = first
        give_up_at = (_epoch(entry.get("ts")) or first) + self.cfg.retry_for_s
        while True:
            wait = circuit.wait(time.time())
            if wait > 0:
                if time.time() + wait > give_up_at:
                    return await self._give_up(ep, entry, msg_id, state, first, "the receiver's circuit is open")
                state |= {"status": "retrying", "next_attempt_at": now_iso(time.time() + wait)}
                await self._save(state)
                await asyncio.sleep(wait)
                continue
            now = time.time()
            state["attempts"] += 1
            state["holder"] = self.consumer
            state["last_attempt_at"] = now_iso(now)
            state["first_attempt_at"] = state["first_attempt_at"] or state["last_attempt_at"]
            await self._save(state)  # counted before it goes: a process killed mid-attempt leaves it counted
            t0 = time.perf_counter()
            ok, state["last_status"], state["last_error"], state["last_response"] = await self._attempt(
                ep, msg_id, text, client
            )
            metrics.webhook_delivery_seconds.observe(time.perf_counter() - t0)
            if circuit.record(ok, time.time(), self.cfg.backoff_max_s):
                log.warning(
                    "webhook receiver %s (%s): circuit %s after %d failed attempts in a row",
                    ep.redacted(),
                    ep.id,
                    circuit.state,
                    circuit.failures,
                ) if circuit.state == "open" else log.info(
                    "webhook receiver %s (%s): circuit %s", ep.redacted(), ep.id, circuit.state
                )
                await self._circuit_changed(circuit)
            if ok:
                metrics.webhook_deliveries.labels(status="delivered").inc()
                state |= {"status": "delivered", "delivered_at": now_iso(), "next_attempt_at": None}
                await self._save(state)
                return
            metrics.webhook_deliveries.labels(status="failed").inc()
            wait = backoff(state["attempts"], self.cfg.backoff_s, self.cfg.backoff_max_s)
            if time.time() + wait > give_up_at:
                return await self._give_up(ep, entry, msg_id, state, first, state["last_error"])
            state |= {"status": "retrying", "next_attempt_at": now_iso(time.time() + wait)}
            await self._save(state)
            await asyncio.sleep(wait)

    async def _attempt(
        self, ep: Endpoint, msg_id: str, text: str, client: Any
    ) -> tuple[bool, int | None, str | None, str | None]:
        """One POST under one deadline for all of it (connect, send, status, headers and the little of the body that
        is read): a receiver that trickles its answer is cut off at `timeout_s`, however steadily it trickles. At most
        `RESPONSE_KEEP` bytes of the body are read; the connection is then closed, not drained."""
        import httpx

        # signed now: the timestamp is this attempt's, however long it waited
        headers = sign_headers(self.cfg.secret or "", msg_id, text) if self.cfg.secret else {}
        try:
            async with asyncio.timeout(self.cfg.timeout_s):
                async with client.stream("POST", ep.url, content=text.encode("utf-8"), headers=headers) as r:
                    head = b""
                    async for chunk in r.aiter_raw():
                        head += chunk
                        if len(head) >= RESPONSE_KEEP:
                            break
            answer = head[:RESPONSE_KEEP].decode("utf-8", "replace")
            ok = 200 <= r.status_code < 300
            return ok, r.status_code, None if ok else f"HTTP {r.status_code}", answer
        except TimeoutError:
            return False, None, f"no complete answer within {self.cfg.timeout_s:g}s", None
        except httpx.HTTPError as exc:
            return False, None, scrub(f"{type(exc).__name__}: {exc}", ep)[:300], None

    async def _give_up(
        self, ep: Endpoint, entry: dict[str, Any], msg_id: str, state: dict[str, Any], first: float, why: str | None
    ) -> None:
        metrics.webhook_deliveries.labels(status="gave_up").inc()
        state |= {"status": "gave_up", "next_attempt_at": None}
        log.warning(
            "webhook %s (%s) to %s given up after %d attempts over %.0fs: %s",
            msg_id,
            entry["type"],
            ep.redacted(),
            state["attempts"],
            time.time() - first,
            why,
        )
        await self._save(state)

    async def _save(self, state: dict[str, Any]) -> None:
        for delay in (0.1, 0.5, 1.0, 2.0):
            try:
                await self.backend.delivery_put(state["key"], state)
                return
            except Exception as exc:
                log.warning("could not record webhook delivery %s: %s", state["key"], exc)
                await asyncio.sleep(delay)


def _count_circuits(d: Deliverer) -> None:
    """`runcast_webhook_receivers{circuit}`: the receivers this process delivers, by circuit state."""
    for st in ("closed", "open", "half_open"):
        metrics.webhook_receivers.labels(circuit=st).set(sum(1 for c in d.circuits.values() if c.state == st))


async def maybe_start(backend: Backend, registry: Registry, cfg: WebhookConfig | None) -> Deliverer | None:
    """Start delivering in this process if it, or one of its agents, names a webhook."""
    from .slack import SlackApp

    app = SlackApp.from_env()
    if app is not None and cfg is None:
        cfg = WebhookConfig.from_env(public_url=os.environ.get("RUNCAST_PUBLIC_URL"))
    if cfg is None or (not any_configured(cfg, registry) and app is None):
        return None
    d = Deliverer(backend, registry, cfg)
    d.slack_app = app
    await d.start()
    return d
