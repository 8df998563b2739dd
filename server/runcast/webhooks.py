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
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Iterable, Literal

from . import __version__, metrics
from .protocol import now_iso

if TYPE_CHECKING:
    from .backends.base import Backend
    from .registry import Registry
    from .runs import RunRecord

log = logging.getLogger("runcast.webhooks")

EVENTS = (
    "approval.requested", "approval.decided", "approval.expired", "approval.cancelled",
    "run.paused", "run.completed", "run.failed", "run.cancelled",
    "approval.review_requested",  # the run's or the policy's reviewers were asked (runs.pause)
    "comment.mention",  # one per mentioned person (comments.py): route it to them (a Slack DM, an e-mail gateway)
)
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
            raise ValueError(f"{name} given {len(vals)} times for {len(urls)} --webhook: give it once, or once per --webhook")
    out = []
    for i, url in enumerate(urls):
        ev = events[i] if len(events) > 1 else (events[0] if events else None)
        fmt = formats[i] if len(formats) > 1 else (formats[0] if formats else "standard")
        out.append(endpoint({"url": url, "events": ev, "format": fmt}))
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
    timeout_s: float = 10.0  # one attempt (connect, write, answer)
    backoff_s: float = 1.0  # first retry after about this long, doubling each time, with jitter
    backoff_max_s: float = 300.0
    retry_for_s: float = 24 * 3600.0  # give up this long after the first attempt
    claim_s: float = 30.0  # an entry its process has not touched this long is taken over (Redis)
    concurrency: int = 16  # HTTP attempts in flight at once, per process
    max_held: int = 1000  # entries one process holds at once (delivering, or waiting to retry)

    @classmethod
    def from_env(cls, **kw: Any) -> "WebhookConfig":
        env = os.environ.get
        cfg = cls(**kw)
        cfg.timeout_s = float(env("RUNCAST_WEBHOOK_TIMEOUT_S", cfg.timeout_s))
        cfg.backoff_s = float(env("RUNCAST_WEBHOOK_BACKOFF_S", cfg.backoff_s))
        cfg.backoff_max_s = float(env("RUNCAST_WEBHOOK_BACKOFF_MAX_S", cfg.backoff_max_s))
        cfg.retry_for_s = float(env("RUNCAST_WEBHOOK_RETRY_FOR_S", cfg.retry_for_s))
        cfg.claim_s = float(env("RUNCAST_WEBHOOK_CLAIM_S", cfg.claim_s))
        return cfg


def agent_endpoints(registry: "Registry", agent: str | None, tool: str | None, type_: str) -> list[Endpoint]:
    """The agent's `notify` (every event of its runs) and, for approval events, the tool's policy's `notify`."""
    spec = registry.get(agent or "") if agent else None
    if spec is None:
        return []
    out = [endpoint(n) for n in getattr(spec, "notify", None) or []]
    if type_ in APPROVAL_EVENTS and tool:
        out += [endpoint(n) for n in spec.policy_for(tool).notify]
    return out


def any_configured(cfg: WebhookConfig, registry: "Registry") -> bool:
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


def _approval_info(rec: "RunRecord | None", approval_id: str | None) -> dict[str, Any] | None:
    if rec is None or not approval_id or approval_id not in rec.approvals:
        return None
    ap = rec.approvals[approval_id]
    return ap.requested_data() | {"policy": ap.policy.model_dump(exclude={"notify"}), "requested_at": ap.requested_at}


def payload(entry: dict[str, Any], rec: "RunRecord | None", public_url: str | None) -> dict[str, Any]:
    """The Standard Webhooks body: {type, timestamp, data}; data holds the event, its run and its approval."""
    data = entry.get("data") or {}
    run_id = entry["run_id"]
    aid = data.get("approval_id")
    run: dict[str, Any] = {"run_id": run_id}
    if rec is not None:
        run |= {"agent": rec.agent, "status": rec.status, "started_by": rec.started_by, "input": rec.input,
                "created_at": rec.created_at}
    run["url"] = links(public_url, run_id, None)["run"]
    body: dict[str, Any] = {"run_id": run_id, "seq": entry["seq"], "event": data, "run": run}
    info = _approval_info(rec, aid)
    if aid:
        body["approval"] = (info or {"approval_id": aid}) | {"url": links(public_url, run_id, aid)["approval"]}
    return {"type": entry["type"], "timestamp": entry.get("ts") or now_iso(), "data": body}


def _esc(text: Any) -> str:
    """Slack mrkdwn: &, < and > are control characters."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


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
    "approval.requested": "Approval needed", "approval.decided": "Approval decided", "approval.expired": "Approval expired",
    "approval.cancelled": "Approval cancelled", "run.paused": "Run waiting for approval", "run.completed": "Run completed",
    "run.failed": "Run failed", "run.cancelled": "Run cancelled", "comment.mention": "You were mentioned",
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
        fields.append(f"*Policy*\n{q} approver{'s' if q != 1 else ''} ({_esc(roles)})"
                      + ("" if pol.get("allow_self", True) else ", not the starter"))
        fields.append(f"*Deadline*\n{_esc(ap.get('expires_at') or 'none')}")
        extra.append({"type": "section", "text": {"type": "mrkdwn",
                      "text": _cut(f"*Arguments*\n```{_esc(_args_brief(ap.get('arguments', '')))}```", 3000)}})
    if t == "approval.decided":
        by = ev.get("by") or {}
        verb = "approved" if ev.get("decision") == "approve" else "rejected"
        who_d = "expiry" if by.get("policy") == "expired" else (by.get("name") or by.get("sub") or "someone")
        fields.append(f"*Decision*\n{verb} by {_esc(who_d)}" + (f": {_esc(_cut(str(ev['reason']), 300))}" if ev.get("reason") else ""))
    elif t == "run.failed":
        err = f"{ev.get('code')}: {ev.get('message')}"
        fields.append(f"*Error*\n{_esc(_cut(err, 500))}")
    elif t == "run.cancelled":
        by = ev.get("by") or {}
        fields.append(f"*Cancelled by*\n{_esc(by.get('name') or by.get('sub') or 'someone')}")
    elif t == "comment.mention":
        m, by = ev.get("mentioned") or {}, ev.get("by") or {}
        title = f"{m.get('name') or m.get('sub')} was mentioned by {by.get('name') or by.get('sub')}"
        fields.append(f"*Mentioned*\n{_esc(m.get('name') or '')} ({_esc(m.get('sub') or '')})")
        extra.append({"type": "section", "text": {"type": "mrkdwn",
                      "text": _cut(f"*Comment*\n{_esc(_cut(str(ev.get('text') or ''), 1000))}", 3000)}})
    elif t == "run.completed" and ev.get("output") is not None:
        extra.append({"type": "section", "text": {"type": "mrkdwn",
                      "text": _cut(f"*Output*\n{_esc(_cut(str(ev.get('output')), 600))}", 3000)}})
    text = f"{title} (agent {agent}, started by {who}): {url}"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _cut(title, 150), "emoji": True}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": _cut(f, 2000)} for f in fields[:10]]},
        *extra,
        {"type": "section", "text": {"type": "mrkdwn", "text": f"<{url}|{link_text}>"}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": _esc(f"Runcast · {t} · {body.get('timestamp', '')}")}]},
    ]
    return {"text": _cut(text, 3000), "blocks": blocks}


def encode(endpoint_: Endpoint, body: dict[str, Any]) -> str:
    doc = slack(body) if endpoint_.format == "slack" else body
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False)


def sign_headers(secret: str, msg_id: str, body: str, now: float | None = None) -> dict[str, str]:
    """Standard Webhooks headers for one attempt, signed with the reference package."""
    from standardwebhooks.webhooks import Webhook

    ts = int(time.time() if now is None else now)
    sig = Webhook(secret).sign(msg_id, datetime.fromtimestamp(ts, tz=timezone.utc), body)
    return {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": sig}


# ------------------------------------------------------------------------------------------------ delivery (I/O)


def _record_key(msg_id: str, ep: Endpoint) -> str:
    return f"{msg_id} {ep.id}"


class Deliverer:
    """Takes outbox entries from the backend and delivers them; one per process that has webhooks configured."""

    def __init__(self, backend: "Backend", registry: "Registry", cfg: WebhookConfig, consumer: str | None = None) -> None:
        self.backend, self.registry, self.cfg = backend, registry, cfg
        self.consumer = consumer or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self._task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        # entries held at once (most of them wait between retries), and HTTP attempts in flight at once: a dead
        # receiver's backlog waits in backoff without holding up deliveries to anyone else
        self._slots = asyncio.Semaphore(cfg.max_held)
        self._posts = asyncio.Semaphore(cfg.concurrency)
        self._client: Any = None
        self._stopping = False
        self.slack_app: Any = None  # slack.SlackApp, when RUNCAST_SLACK_BOT_TOKEN and RUNCAST_SLACK_CHANNEL are set

    async def start(self) -> None:
        import httpx

        if self.cfg.endpoints or not self.slack_app:  # (Slack alone signs nothing of ours: its token authenticates)
            if not self.cfg.secret:
                raise ValueError("webhooks need a secret: --webhook-secret or RUNCAST_WEBHOOK_SECRET")
            parse_secret(self.cfg.secret)
        if hasattr(self.backend, "webhook_claim_s"):
            self.backend.webhook_claim_s = self.cfg.claim_s
        t = self.cfg.timeout_s
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(t, connect=min(t, 5.0)), follow_redirects=False, trust_env=False,
            limits=httpx.Limits(max_connections=self.cfg.concurrency * 2, max_keepalive_connections=self.cfg.concurrency),
            headers={"user-agent": f"runcast/{__version__} webhooks", "content-type": "application/json"},
        )
        await self.backend.outbox_join()
        self._task = asyncio.create_task(self._loop(), name="runcast-webhooks")

    async def stop(self) -> None:
        self._stopping = True
        for t in [self._task, *self._tasks]:
            if t is not None:
                t.cancel()
        await asyncio.gather(*(t for t in [self._task, *self._tasks] if t is not None), return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()

    async def _loop(self) -> None:
        pause = 0.1
        while not self._stopping:
            await self._slots.acquire()
            try:
                entries = await self.backend.outbox_take(self.consumer, 1, timeout=2.0)
                pause = 0.1
            except asyncio.CancelledError:
                self._slots.release()
                raise
            except Exception as exc:  # noqa: BLE001 - a backend outage: wait and go on
                self._slots.release()
                log.warning("webhook outbox unreachable (%s); retrying in %.1fs", exc, pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 5.0)
                continue
            if not entries:
                self._slots.release()
                continue
            task = asyncio.create_task(self._deliver_entry(entries[0]))
            self._tasks.add(task)
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slots.release()
        if not task.cancelled() and task.exception() is not None:
            log.error("webhook delivery task failed", exc_info=task.exception())

    async def _keep_claim(self, entry_id: str) -> None:
        """While an entry waits between attempts, keep it ours (reset its idle time) so nobody takes it over."""
        while True:
            await asyncio.sleep(max(0.05, self.cfg.claim_s / 3))
            try:
                await self.backend.outbox_touch(self.consumer, entry_id)
            except Exception as exc:  # noqa: BLE001
                log.warning("could not renew webhook entry %s: %s", entry_id, exc)

    async def _deliver_entry(self, entry: dict[str, Any]) -> None:
        keeper = asyncio.create_task(self._keep_claim(entry["id"]))
        try:
            rec = None
            try:
                rec = await self.backend.get(entry["run_id"])
            except Exception as exc:  # noqa: BLE001 - deliver what the event says
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
            await asyncio.gather(*(self._deliver(entry, ep, body) for ep in eps))
            if self.slack_app is not None:  # the approval's Slack message: posted, then updated in place (slack.py)
                try:
                    await self.slack_app.on_entry(entry, rec, self.backend, self.cfg.public_url)
                except Exception as exc:  # noqa: BLE001 - Slack's outage does not hold the other deliveries
                    log.warning("slack: %s for %s of %s failed: %s", entry["type"], data.get("approval_id"),
                                entry["run_id"], exc)
            await self.backend.outbox_ack(entry["id"])
        finally:
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)

    async def _deliver(self, entry: dict[str, Any], ep: Endpoint, body: dict[str, Any]) -> None:
        import httpx

        msg_id = message_id(entry["run_id"], entry["seq"])
        key = _record_key(msg_id, ep)
        state = await self.backend.delivery_get(key) or {
            "key": key, "webhook_id": msg_id, "type": entry["type"], "run_id": entry["run_id"], "seq": entry["seq"],
            "approval_id": (entry.get("data") or {}).get("approval_id"), "endpoint": ep.id, "url": ep.redacted(),
            "format": ep.format, "status": "pending", "attempts": 0, "first_attempt_at": None, "last_attempt_at": None,
            "last_status": None, "last_error": None, "next_attempt_at": None, "delivered_at": None, "holder": None,
            "logged_at": entry.get("ts"),
        }
        if state["status"] in ("delivered", "gave_up"):
            return  # an earlier holder finished this endpoint before it died
        text = encode(ep, body)
        first = state.get("first_attempt_at_s") or time.time()
        state["first_attempt_at_s"] = first
        while True:
            now = time.time()
            state["attempts"] += 1
            state["holder"] = self.consumer
            state["last_attempt_at"] = now_iso(now)
            state["first_attempt_at"] = state["first_attempt_at"] or state["last_attempt_at"]
            t0 = time.perf_counter()
            try:
                async with self._posts:
                    t0 = time.perf_counter()  # (the attempt itself, not the wait for a free slot)
                    # signed now: the timestamp is this attempt's, however long it waited for a slot
                    headers = sign_headers(self.cfg.secret or "", msg_id, text) if self.cfg.secret else {}
                    r = await self._client.post(ep.url, content=text.encode("utf-8"), headers=headers)
                ok, state["last_status"], state["last_error"] = 200 <= r.status_code < 300, r.status_code, None
                if not ok:
                    state["last_error"] = f"HTTP {r.status_code}"
            except httpx.HTTPError as exc:
                ok, state["last_status"], state["last_error"] = False, None, f"{type(exc).__name__}: {exc}"[:300]
            metrics.webhook_delivery_seconds.observe(time.perf_counter() - t0)
            if ok:
                metrics.webhook_deliveries.labels(status="delivered").inc()
                state |= {"status": "delivered", "delivered_at": now_iso(), "next_attempt_at": None}
                await self._save(state)
                return
            metrics.webhook_deliveries.labels(status="failed").inc()
            wait = backoff(state["attempts"], self.cfg.backoff_s, self.cfg.backoff_max_s)
            if time.time() + wait - first > self.cfg.retry_for_s:
                metrics.webhook_deliveries.labels(status="gave_up").inc()
                state |= {"status": "gave_up", "next_attempt_at": None}
                log.warning("webhook %s (%s) to %s given up after %d attempts over %.0fs: %s", msg_id, entry["type"],
                            ep.redacted(), state["attempts"], time.time() - first, state["last_error"])
                await self._save(state)
                return
            state |= {"status": "retrying", "next_attempt_at": now_iso(time.time() + wait)}
            await self._save(state)
            await asyncio.sleep(wait)

    async def _save(self, state: dict[str, Any]) -> None:
        for delay in (0.1, 0.5, 1.0, 2.0):
            try:
                await self.backend.delivery_put(state["key"], state)
                return
            except Exception as exc:  # noqa: BLE001 - the record is for people; the delivery itself went on
                log.warning("could not record webhook delivery %s: %s", state["key"], exc)
                await asyncio.sleep(delay)


async def maybe_start(backend: "Backend", registry: "Registry", cfg: WebhookConfig | None) -> Deliverer | None:
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
