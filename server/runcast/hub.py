"""The hub: a Starlette app with `/ws` (PROTOCOL.md), the HTTP API, and the page at `/`."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket

from . import __version__, auth, connection, feed, slack, specs, transport, webhooks
from . import api as api_rules
from . import metrics as prom
from .backends.base import Backend, Subscription
from .connection import Connection
from .fanout import Fanout
from .headers import SecurityHeaders
from .hosts import AllowedHosts, from_own_page, origin_matches
from .looplag import LAG
from .metrics import Metrics
from .presence_feed import PresenceFeed
from .protocol import (
    SUBPROTOCOL_JSON,
    SUBPROTOCOL_MSGPACK,
    Cancel,
    CloseCode,
    Comment,
    Decide,
    DeleteComment,
    EditComment,
    ErrorCode,
    Event,
    ProtocolError,
    Rerun,
    ResolveThread,
    Say,
    Start,
    Withdraw,
    now_iso,
)
from .quotas import StartQuota
from .registry import Registry
from .runfilter import RunFilter
from .scrape import MetricsListener
from .service import Service
from .settings import Settings
from .wire import CaptureSend
from .worker import Sweeper, ThreadedWorker, Worker

log = logging.getLogger("runcast.hub")
try:  # glibc's malloc_trim, for the debug endpoint
    _libc: Any = ctypes.CDLL("libc.so.6")
    _libc.malloc_trim  # noqa: B018 - the lookup is the check: AttributeError where this libc has no malloc_trim
except (OSError, AttributeError):
    _libc = None
STATIC = Path(__file__).parent / "static"
# Feed changes (inbox, run list) are merged and written at most this often: many changes of many runs make one write
# per person per tick, and the commit that made them never waits for the dashboards. A change after a quiet tick goes
# out at the loop's next turn (the leading edge); the ones that follow it within the tick wait for its end.
FEED_TICK_S = 0.1


# A filtered run list looks among this many of the newest runs (the backends keep no index per agent or person).
FILTER_SCAN = 1000


class Hub:
    def __init__(self, backend: Backend, registry: Registry, settings: Settings) -> None:
        self.backend = backend
        self.registry = registry
        self.settings = settings
        self.auth = auth.Authenticator(settings.secret, settings.dev, settings.jwt, settings.session_secret)
        self.service = Service(backend, registry, StartQuota(settings.starts_per_minute, settings.max_open_runs))
        self.service.directory = slack.Directory.from_env()  # RUNCAST_PEOPLE: Slack users, and deciders to @mention
        secret = os.environ.get("RUNCAST_SLACK_SIGNING_SECRET")
        self.slack = slack.Interactivity(secret, self.service.directory) if secret else None
        self.fanout = Fanout(backend, self._on_run_events)
        self.presence = PresenceFeed(backend, refresh_s=settings.presence_refresh_s, typing_ttl_s=settings.typing_ttl_s)
        self.metrics = Metrics()
        self.metrics.register(self)  # read at scrape time through metrics.NodeGauges (the methods below)
        self.worker: Worker | ThreadedWorker | None = None
        self.sweeper = Sweeper(backend, interval=settings.sweep_s, grace_s=settings.lease_s or 10.0)
        self.connections: set[Connection] = set()
        # the inbox and run-list watchers of this node: changes are folded and written once per FEED_TICK_S
        self.feeds = feed.Feeds(self.service.may_watch_summary, on_pending=self._feeds_pending)
        self._feed_timer: asyncio.TimerHandle | None = None
        self._feed_flushed = float("-inf")  # when the feeds were last flushed (the loop's clock)
        self.feed_cpu_s = 0.0  # the loop thread's CPU in those flushes (/metrics: runcast_feed_cpu_seconds)
        self._feed_sub: Subscription | None = None
        self._reload: asyncio.Task[None] | None = None
        self.deliverer: webhooks.Deliverer | None = None
        self.metrics_listener: MetricsListener | None = None
        self.unauthenticated = 0  # accepted WebSockets that have not said hello yet
        self.unauthenticated_by_address: dict[str, int] = {}  # of them, by client address (client_address)
        self.signin: Any = None  # signin.Signin, when people sign in on the page
        self.draining = False  # SIGTERM: /readyz answers 503 until the server closes every client with 1012

    def drain(self) -> None:
        if not self.draining:
            self.draining = True
            prom.draining.set(1)
            log.warning("draining: /readyz answers 503; %d client(s) will be closed with 1012", len(self.connections))

    async def start(self) -> None:
        if hasattr(self.backend, "on_data_lost"):
            self.backend.on_data_lost = self._on_data_lost
        LAG.start()
        await self.backend.start()
        self._feed_sub = await self.backend.subscribe_feed(self.feeds.on_entry, self._feed_interrupted)
        await self._load_feeds()
        await self.presence.start()
        if self.settings.run_worker:
            kw: dict[str, Any] = dict(
                concurrency=self.settings.worker_concurrency,
                lease_s=self.settings.lease_s,
                tracing=self.settings.tracing,
            )
            twin = getattr(self.backend, "twin", None)  # Redis: the agents on a thread of their own (ThreadedWorker)
            if twin is not None:
                self.worker = ThreadedWorker(twin, self.registry, **kw)
            else:
                self.worker = Worker(self.backend, self.registry, **kw)
            await self.worker.start()
        await self.sweeper.start()
        self.deliverer = await webhooks.maybe_start(self.backend, self.registry, self.settings.webhooks)
        if self.settings.metrics_bind:
            self.metrics_listener = MetricsListener(self.settings.metrics_bind, self.metrics.render)
            await self.metrics_listener.start()

    async def stop(self) -> None:
        if self._reload is not None:
            self._reload.cancel()
        if self._feed_timer is not None:
            self._feed_timer.cancel()
        if self._feed_sub is not None:
            await self._feed_sub.close()
        if self.deliverer:
            await self.deliverer.stop()
        if self.metrics_listener is not None:
            await self.metrics_listener.stop()
        await self.sweeper.stop()
        if self.worker:
            await self.worker.stop()
        await self.presence.stop()
        await self.backend.close()
        await LAG.stop()

    def _on_run_events(self, run_id: str, events: list[Event]) -> None:
        """A batch of a run watched on this node (once per batch, not per watcher): whoever said something to its
        agent stopped typing, on every node, wherever and however they said it (WebSocket or HTTP, on another node)."""
        for ev in events:
            f = ev.frame
            if f.get("type") == "message.said":
                sub = ((f.get("data") or {}).get("by") or {}).get("sub")
                if sub:
                    self.presence.said(run_id, sub)

    # ------------------------------------------------------------------ the inbox and run-list feeds
    def _feeds_pending(self) -> None:
        """A change arrived (on the commit path, or the pub/sub reader): fold it at the next tick, not now."""
        if self._feed_timer is None:
            loop = asyncio.get_running_loop()
            wait = max(0.0, self._feed_flushed + FEED_TICK_S - loop.time())
            self._feed_timer = loop.call_later(wait, self._flush_feeds)

    def _flush_feeds(self) -> None:
        self._feed_timer = None
        self._feed_flushed = asyncio.get_running_loop().time()
        t0 = time.thread_time()
        try:
            self.feeds.flush()
        except Exception:
            log.exception("flushing the feeds failed")
        self.feed_cpu_s += time.thread_time() - t0

    async def _load_feeds(self) -> None:
        self.feeds.begin_load()  # (a failed read is followed by another begin_load: _resync retries)
        recs = await self.backend.open_runs()
        listed = {r.run_id for r in recs}
        # Runs this node holds open that the index lacks: closed while the feed was cut, or opened by an entry whose
        # index place is not written yet (one Redis publishes the entry with the commit, the index a script later).
        # Their records say which.
        for rid in [rid for rid in self.feeds.open if rid not in listed]:
            rec = await self.backend.get(rid)
            if rec is not None:
                recs.append(rec)
        self.feeds.load([feed.entry(r) for r in recs])

    def _feed_interrupted(self) -> None:
        """The backend's feed was cut (Redis outage) and is back: read the index again, resend the run lists."""
        if self._reload is None or self._reload.done():
            self._reload = asyncio.create_task(self._resync())

    async def _resync(self) -> None:
        delay = 0.1
        while True:
            try:
                await self._load_feeds()
                for w, limit, filters in self.feeds.runs_watchers():
                    await self.subscribe_runs(w, limit, None, filters)  # type: ignore[arg-type]
                return
            except Exception as exc:
                log.warning("reloading the inbox after a feed interruption failed (%s); retrying", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def subscribe_runs(
        self, conn: Connection, limit: int, request_id: str | None, filters: dict[str, str] | None = None
    ) -> None:
        """The run list: live `run.status` frames are held from now until the snapshot read below has been sent.
        With filters, the newest FILTER_SCAN runs are read and those that match listed (feed.run_matches)."""
        self.feeds.add_runs(conn, limit, filters)
        try:
            recs = await self.backend.list_runs(max(limit, FILTER_SCAN) if filters else limit)
        except BaseException:
            self.feeds.remove_runs(conn)
            raise
        self.feeds.runs_snapshot(conn, [feed.run_summary(r) for r in recs], request_id)

    # ---- metrics.NodeGauges: what /metrics reads off this node when scraped
    def runs_watched(self) -> int:
        return self.fanout.runs_watched

    def active_segments(self) -> int:
        return len(self.worker.active) if self.worker else 0

    def delivery_cpu(self) -> tuple[float, float, int]:
        return self.fanout.cpu_s, self.feed_cpu_s, self.feeds.frames_out

    def send_queue_depths(self) -> list[int]:
        return [c.queued() for c in list(self.connections)]

    def _on_data_lost(self) -> None:
        """The backend lost its data: every client's history may be gone. Drop them with 1012; they come back with
        `since` and `epoch`, and a run whose log is not the one they hold answers `log_reset`."""
        for conn in list(self.connections):
            conn.close(CloseCode.RESTARTING, "the hub's store lost its data: subscribe again with since and epoch")

    def unexpected(self, exc: BaseException, what: str) -> ProtocolError:
        """An error that is not the client's: a backend outage says so (and what to do); anything else is logged."""
        if isinstance(exc, self.backend.transient_errors):
            prom.redis_errors.labels(source="command").inc()
            log.warning("%s: backend unreachable: %s", what, exc)
            return ProtocolError(
                ErrorCode.INTERNAL,
                "the hub cannot reach its backend right now; nothing was changed "
                "by this request unless its events say so: try again in a moment",
            )
        log.error("%s failed", what, exc_info=exc)
        return ProtocolError(ErrorCode.INTERNAL, f"internal error: {type(exc).__name__}")

    # ------------------------------------------------------------------ WebSocket
    def origin_allowed(self, ws: WebSocket) -> bool:
        origin = ws.headers.get("origin")
        if origin is None:
            return True  # not a browser
        if origin in self.settings.allowed_origins or "*" in self.settings.allowed_origins:
            return True
        return origin_matches(origin, ws.scope.get("scheme", "ws"), ws.headers.get("host", ""))

    async def websocket(self, ws: WebSocket) -> None:
        if not self.origin_allowed(ws):
            await ws.close(code=1008)  # before accept: the client sees HTTP 403
            return
        offered = ws.scope.get("subprotocols") or []
        sub = (
            SUBPROTOCOL_MSGPACK
            if SUBPROTOCOL_MSGPACK in offered
            and (
                SUBPROTOCOL_JSON not in offered or offered.index(SUBPROTOCOL_MSGPACK) < offered.index(SUBPROTOCOL_JSON)
            )
            else (SUBPROTOCOL_JSON if SUBPROTOCOL_JSON in offered else None)
        )
        addr = client_address(ws.scope)
        full = self._full(addr)
        if full:  # before accept: the client sees HTTP 503, and its reconnect backs off
            await ws.send_denial_response(PlainTextResponse(full, status_code=503, headers={"Retry-After": "5"}))
            return
        await ws.accept(subprotocol=sub)
        conn = Connection(self, ws, "msgpack" if sub == SUBPROTOCOL_MSGPACK else "json")
        conn.address = addr
        self.connections.add(conn)
        self.unauthenticated += 1
        self.unauthenticated_by_address[addr] = self.unauthenticated_by_address.get(addr, 0) + 1
        self.metrics.connections += 1
        self.metrics.connections_total += 1
        try:
            await conn.run()
        finally:
            self.connections.discard(conn)
            if conn.identity is None:
                self._authenticated_or_gone(addr)
            self.metrics.connections -= 1

    def _full(self, addr: str) -> str | None:
        """Why this node takes no new WebSocket now, if it does not (README, "Connection caps")."""
        s = self.settings
        if s.max_connections and len(self.connections) >= s.max_connections:
            return f"this hub node has {s.max_connections} connections, its limit; try another node or again shortly\n"
        if s.max_unauthenticated:
            share = s.max_unauthenticated_per_address or max(1, s.max_unauthenticated // 10)
            if self.unauthenticated_by_address.get(addr, 0) >= share:
                return (
                    f"{share} connections from your address are waiting for hello; "
                    "say hello on one, or try again shortly\n"
                )
            if self.unauthenticated >= s.max_unauthenticated:
                return f"this hub node has {s.max_unauthenticated} connections waiting for hello; try again shortly\n"
        return None

    def authenticated(self, conn: Connection) -> None:
        """A connection's hello succeeded: it no longer counts against max_unauthenticated."""
        self._authenticated_or_gone(conn.address)

    def _authenticated_or_gone(self, addr: str) -> None:
        self.unauthenticated -= 1
        n = self.unauthenticated_by_address.get(addr, 0) - 1
        if n > 0:
            self.unauthenticated_by_address[addr] = n
        else:
            self.unauthenticated_by_address.pop(addr, None)

    # ------------------------------------------------------------------ HTTP
    async def authenticate_hello(self, conn: Connection, token: str | None) -> auth.Identity:
        """Who a hello says it is: its token, or (no token) the session cookie its WebSocket was opened with."""
        if token:
            return await self.auth.verify(token)
        ws = conn.ws
        origin = ws.headers.get("origin")
        if origin is not None and origin not in self.settings.allowed_origins and not self.same_origin(ws):
            # a page of another origin (let in by --allow-origin '*') never speaks as the browser's signed-in person
            raise ProtocolError(
                ErrorCode.UNAUTHENTICATED,
                "a session cookie is only honoured from this hub's own page; send a token in hello",
            )
        return self.auth.session(self._session_cookie(ws))

    def _session_cookie(self, conn: Any) -> str:
        from .signin import COOKIE

        value = conn.cookies.get(COOKIE) if self.auth.session_key is not None else None
        if not value:
            raise ProtocolError(ErrorCode.UNAUTHENTICATED, "send hello with a token, or sign in on the page first")
        return value

    async def identity(self, request: Request) -> auth.Identity:
        """The bearer token, or the session cookie of a signed-in page. A cookie on a request that changes something
        must come with this hub's own Origin: SameSite=Lax already keeps it off other sites' POSTs, this is the
        second lock (CSRF)."""
        header = request.headers.get("authorization", "")
        if header.lower().startswith("bearer "):
            return await self.auth.verify(header[7:].strip())
        if self.auth.session_key is not None and request.cookies.get(_cookie_name()):
            if request.method not in ("GET", "HEAD") and not self.same_origin(request):
                raise ProtocolError(
                    ErrorCode.FORBIDDEN,
                    "a signed-in request that changes something must come from this hub's page (Origin)",
                )
            return self.auth.session(self._session_cookie(request))
        raise ProtocolError(ErrorCode.UNAUTHENTICATED, "send Authorization: Bearer <token>, or sign in at /login")

    def same_origin(self, request: Any) -> bool:
        return from_own_page(
            request.headers, request.scope.get("scheme", "http"), [o for o in self.settings.allowed_origins if o != "*"]
        )


def _cookie_name() -> str:
    from .signin import COOKIE

    return COOKIE


def client_address(scope: Any) -> str:
    """The client's address: the socket's peer, or, from a --trusted-proxy peer, the right-most X-Forwarded-For entry
    that is not itself a trusted proxy (uvicorn's proxy-headers middleware puts it in the scope; it is on only with
    --trusted-proxy, so no other client can choose its address by sending the header)."""
    return str((scope.get("client") or ("?", 0))[0])


def _error(err: ProtocolError) -> JSONResponse:
    return api_rules.error_response(err)


def create_app(hub: Hub) -> Starlette:
    svc = hub.service

    def api(handler: Any) -> Any:
        async def endpoint(request: Request) -> Response:
            try:
                return await handler(request, await hub.identity(request))
            except ProtocolError as err:
                hub.metrics.errors[err.code] = hub.metrics.errors.get(err.code, 0) + 1
                resp = _error(err)
                if "retry_after_s" in err.detail:  # a quota: when to try again
                    resp.headers["Retry-After"] = str(err.detail["retry_after_s"])
                return resp
            except Exception as exc:
                failure = hub.unexpected(exc, f"{request.method} {request.url.path}")
                hub.metrics.errors[failure.code] = hub.metrics.errors.get(failure.code, 0) + 1
                resp = _error(failure)
                if isinstance(exc, hub.backend.transient_errors):
                    resp.status_code = 503
                    resp.headers["Retry-After"] = "1"
                return resp

        return endpoint

    async def start_run(request: Request, who: auth.Identity) -> Response:
        cmd = await api_rules.command(request, Start, defaults={"input": ""})
        return JSONResponse(await svc.start(who, cmd.agent, cmd.input, cmd.reviewers), status_code=201)

    async def list_runs(request: Request, who: auth.Identity) -> Response:
        limit = api_rules.query_int(request, "limit", *api_rules.LIST_LIMIT, clamp=True)
        flt = RunFilter.from_query(request.query_params)
        return JSONResponse({"runs": await svc.list_runs(who, limit, flt)})

    async def runs(request: Request, who: auth.Identity) -> Response:  # one route, so 405 lists both methods
        return await (start_run if request.method == "POST" else list_runs)(request, who)

    async def get_run(request: Request, who: auth.Identity) -> Response:
        rec = await svc.record(who, request.path_params["run_id"])
        watched = [
            w | {"first_seen": now_iso(w["first_seen"]), "last_seen": now_iso(w["last_seen"])}
            for w in await hub.backend.watched(rec.run_id)
        ]
        return JSONResponse(rec.detail() | {"head_seq": await hub.backend.head(rec.run_id), "watched": watched})

    async def run_events(request: Request, who: auth.Identity) -> Response:
        since = api_rules.query_int(request, "since", 0, api_rules.MAX_SEQ, 0)
        limit = api_rules.query_int(request, "limit", *api_rules.EVENTS_LIMIT, clamp=True)
        events, head = await svc.events(who, request.path_params["run_id"], since, limit)
        nxt = events[-1].seq if events else since
        return JSONResponse(
            {"events": [e.frame for e in events], "head_seq": head, "next_since": nxt, "more": nxt < head}
        )

    async def decide(request: Request, who: auth.Identity) -> Response:
        cmd = await api_rules.command(
            request, Decide, run_id=request.path_params["run_id"], approval_id=request.path_params["approval_id"]
        )
        return JSONResponse(
            await svc.decide(who, cmd.run_id, cmd.approval_id, cmd.decision, cmd.reason, cmd.always, cmd.arguments)
        )

    async def add_comment(request: Request, who: auth.Identity) -> Response:
        cmd = await api_rules.command(request, Comment, run_id=request.path_params["run_id"])
        return JSONResponse(
            await svc.comment(who, cmd.run_id, cmd.text, cmd.approval_id, cmd.reply_to), status_code=201
        )

    async def change_comment(request: Request, who: auth.Identity) -> Response:
        path = {"run_id": request.path_params["run_id"], "comment_id": request.path_params["comment_id"]}
        if request.method == "DELETE":
            cmd = await api_rules.command(request, DeleteComment, **path)
            return JSONResponse(await svc.delete_comment(who, cmd.run_id, cmd.comment_id))
        edit = await api_rules.command(request, EditComment, **path)
        return JSONResponse(await svc.edit_comment(who, edit.run_id, edit.comment_id, edit.text))

    async def resolve_thread(request: Request, who: auth.Identity) -> Response:
        cmd = await api_rules.command(
            request, ResolveThread, run_id=request.path_params["run_id"], thread_id=request.path_params["thread_id"]
        )
        return JSONResponse(await svc.resolve_thread(who, cmd.run_id, cmd.thread_id, cmd.resolved))

    async def run_people(request: Request, who: auth.Identity) -> Response:
        return JSONResponse({"people": await svc.people(who, request.path_params["run_id"])})

    async def slack_interactivity(request: Request) -> Response:
        """A Slack button press (slack.py): verified, mapped to a person, decided with that person's roles. A
        refusal is answered to the presser only, with the reason; a bad signature or an old one is a 401."""
        if hub.slack is None:
            return _error(ProtocolError(ErrorCode.NOT_FOUND, "Slack interactivity is not configured on this hub"))
        try:
            body = await api_rules.read_body(request, slack.MAX_BODY)
            hub.slack.verify(body, {k.lower(): v for k, v in request.headers.items()})
            payload, run_id, approval_id, decision = hub.slack.press(body)
        except ProtocolError as err:
            hub.metrics.errors[err.code] = hub.metrics.errors.get(err.code, 0) + 1
            return _error(err)
        try:
            who = hub.slack.identity(payload, run_id)
            await svc.decide(who, run_id, approval_id, decision, None, False)  # type: ignore[arg-type]
            answer = slack.decided_text(decision, who.name, None)
        except ProtocolError as err:
            answer = slack.refusal(err)
        except Exception as exc:
            answer = slack.refusal(hub.unexpected(exc, "slack interactivity"))
        url = payload.get("response_url")
        if isinstance(url, str) and url.startswith(("http://", "https://")):
            await slack.respond(url, answer)
        return JSONResponse(answer)

    async def cancel(request: Request, who: auth.Identity) -> Response:
        cmd = await api_rules.command(request, Cancel, run_id=request.path_params["run_id"])
        return JSONResponse(await svc.cancel(who, cmd.run_id, cmd.mode))

    async def say(request: Request, who: auth.Identity) -> Response:
        cmd = await api_rules.command(request, Say, run_id=request.path_params["run_id"])
        said = await svc.say(who, cmd.run_id, cmd.text)
        hub.presence.said(cmd.run_id, who.sub)  # (at once here; every node clears it on the logged message too)
        return JSONResponse(said, status_code=201)

    async def withdraw(request: Request, who: auth.Identity) -> Response:
        cmd = await api_rules.command(
            request, Withdraw, run_id=request.path_params["run_id"], message_id=request.path_params["message_id"]
        )
        return JSONResponse(await svc.withdraw(who, cmd.run_id, cmd.message_id))

    async def rerun(request: Request, who: auth.Identity) -> Response:
        cmd = await api_rules.command(request, Rerun, run_id=request.path_params["run_id"])
        return JSONResponse(await svc.rerun(who, cmd.run_id), status_code=201)

    async def run_audit(request: Request, who: auth.Identity) -> Response:
        doc = await svc.audit(who, request.path_params["run_id"])
        fmt = request.query_params.get("format") or (
            "csv" if "text/csv" in request.headers.get("accept", "") else "json"
        )
        if fmt == "csv":
            from .audit import to_csv

            name = f"{doc['run']['run_id']}-audit.csv"
            return Response(
                to_csv(doc),
                media_type="text/csv; charset=utf-8",
                headers={"Content-Disposition": f'attachment; filename="{name}"'},
            )
        if fmt != "json":
            raise ProtocolError(ErrorCode.BAD_REQUEST, "format must be json or csv", field="format")
        return JSONResponse(doc)

    async def audit_across(request: Request, who: auth.Identity) -> Response:
        """GET /api/audit: settled approvals across runs, newest first, filtered and paged (audit.py)."""
        from . import audit

        fmt = request.query_params.get("format")
        if fmt is None:
            fmt = "csv" if "text/csv" in request.headers.get("accept", "") else "json"
        if fmt not in ("json", "csv"):
            raise ProtocolError(ErrorCode.BAD_REQUEST, "format must be json or csv", field="format")
        q = audit.parse_query(request.query_params, api_rules.query_int(request, "limit", *audit.QUERY_LIMIT))
        found, nxt = await svc.audit_search(who, q)
        if fmt == "csv":
            headers = {"Content-Disposition": 'attachment; filename="audit.csv"'}
            if nxt:
                headers["Runcast-Next"] = nxt
                headers["Link"] = f'<{request.url.include_query_params(cursor=nxt)}>; rel="next"'
            return Response(audit.entries_csv(found), media_type="text/csv; charset=utf-8", headers=headers)
        return JSONResponse({"entries": found, "next": nxt})

    async def open_approvals(request: Request, who: auth.Identity) -> Response:
        if request.query_params.get("open", "1") not in ("1", "true"):
            raise ProtocolError(
                ErrorCode.BAD_REQUEST,
                "only open approvals are listed here: use ?open=1 (decided ones are in each run's log)",
            )
        return JSONResponse({"approvals": await svc.open_approvals(who)})

    async def my_mentions(request: Request, who: auth.Identity) -> Response:
        """Who mentioned this person in a comment (the newest this node has seen; the inbox's `mentions`)."""
        return JSONResponse({"mentions": hub.feeds.mentions_of(who)})

    async def webhook_deliveries(request: Request, who: auth.Identity) -> Response:
        if not who.has("admin"):
            raise ProtocolError(ErrorCode.FORBIDDEN, "webhook deliveries are shown to admins only")
        limit = api_rules.query_int(request, "limit", 1, 1000, 100, clamp=True)
        return JSONResponse(
            {"deliveries": await hub.backend.deliveries(limit), "receivers": await hub.backend.circuits()}
        )

    async def agents_list(request: Request, who: auth.Identity) -> Response:
        # the agents and their policies (who approves what): for those who may start runs or decide approvals only
        deciders = {r for name in hub.registry.names() for r in hub.service.agent_watch_roles(name)} - {"viewer"}
        if not (who.has("operator") or any(r in deciders for r in who.roles)):
            raise ProtocolError(
                ErrorCode.FORBIDDEN,
                "the agents are shown to roles that may start runs (operator, "
                "admin) or decide approvals (approver, or a role an approval policy names)",
            )
        return JSONResponse({"agents": hub.registry.describe()})

    async def whoami(request: Request, who: auth.Identity) -> Response:
        return JSONResponse(who.public() | {"runs": list(who.runs)})

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def readyz(request: Request) -> Response:
        if hub.draining:
            return PlainTextResponse("draining", status_code=503)
        try:
            ok = await hub.backend.ping()
        except Exception:
            ok = False
        lost = None
        if ok and hasattr(hub.backend, "check_data"):
            try:
                await hub.backend.check_data()
            except Exception:
                pass
            lost = hub.backend.data_lost_message()  # type: ignore[attr-defined]
        if lost:  # still ready (the hub works on what the store holds now), but it says what was lost
            return PlainTextResponse(f"ready\nwarning: {lost}")
        return PlainTextResponse("ready" if ok else "backend unavailable", status_code=200 if ok else 503)

    async def metrics(request: Request, who: auth.Identity) -> Response:
        if not who.has("metrics"):  # (admin too)
            raise ProtocolError(
                ErrorCode.FORBIDDEN,
                "/metrics needs a token with the metrics or admin role "
                "(or serve it on a private address with --metrics-bind)",
            )
        return Response(hub.metrics.render(), media_type=prom.CONTENT_TYPE)

    async def debug_connections(request: Request, who: auth.Identity) -> Response:
        """Only with RUNCAST_DEBUG_ENDPOINTS=1, for an admin: how many Connection objects survive a full gc."""
        if not who.has("admin"):
            raise ProtocolError(ErrorCode.FORBIDDEN, "the debug endpoints need the admin role")
        gc.collect()
        if _libc is not None:
            _libc.malloc_trim(0)  # hand freed heap pages back, so RSS measures what is still held
        return JSONResponse(
            {
                "open": len(hub.connections),
                "live_objects": len(connection.LIVE),
                "http_protocols": len(transport.HTTP_LIVE),
                "tasks": len(asyncio.all_tasks()),
            }
        )

    spec = specs.openapi()

    async def openapi(request: Request) -> Response:
        return JSONResponse(spec)

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await hub.start()
        try:
            yield
        finally:
            await hub.stop()

    routes: list[Any] = [
        Route("/", index),
        WebSocketRoute("/ws", hub.websocket),
        Route("/api/runs", api(runs), methods=["GET", "POST"]),
        Route("/api/runs/{run_id}", api(get_run), methods=["GET"]),
        Route("/api/runs/{run_id}/events", api(run_events), methods=["GET"]),
        Route("/api/runs/{run_id}/approvals/{approval_id}", api(decide), methods=["POST"]),
        Route("/api/runs/{run_id}/cancel", api(cancel), methods=["POST"]),
        Route("/api/runs/{run_id}/comments", api(add_comment), methods=["POST"]),
        Route("/api/runs/{run_id}/comments/{comment_id}", api(change_comment), methods=["PATCH", "DELETE"]),
        Route("/api/runs/{run_id}/threads/{thread_id}", api(resolve_thread), methods=["POST"]),
        Route("/api/runs/{run_id}/people", api(run_people), methods=["GET"]),
        Route("/api/runs/{run_id}/messages", api(say), methods=["POST"]),
        Route("/api/runs/{run_id}/rerun", api(rerun), methods=["POST"]),
        Route("/api/runs/{run_id}/messages/{message_id}", api(withdraw), methods=["DELETE"]),
        Route("/api/runs/{run_id}/audit", api(run_audit), methods=["GET"]),
        Route("/api/audit", api(audit_across), methods=["GET"]),
        Route("/api/approvals", api(open_approvals), methods=["GET"]),
        Route("/api/mentions", api(my_mentions), methods=["GET"]),
        Route("/api/slack/interactivity", slack_interactivity, methods=["POST"]),
        Route("/api/webhooks/deliveries", api(webhook_deliveries), methods=["GET"]),
        Route("/api/agents", api(agents_list), methods=["GET"]),
        Route("/api/me", api(whoami), methods=["GET"]),
        Route("/api/openapi.json", openapi, methods=["GET"]),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", api(metrics)),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    if hub.auth.session_key is not None and hub.settings.signin is not None:
        from .signin import Signin

        signin = Signin(hub.settings.signin, hub.auth, hub.settings.session_secret or "", hub.settings.allowed_origins)
        hub.signin = signin
        routes += [
            Route("/login", signin.login, methods=["GET"]),
            Route("/auth/callback", signin.callback, methods=["GET"]),
            Route("/auth/dev", signin.dev, methods=["POST"]),
            Route("/auth/refresh", signin.refresh, methods=["POST"]),
            Route("/auth/logout", signin.logout, methods=["POST"]),
            Route("/auth/session", signin.status, methods=["GET"]),
            Route("/auth/cli", signin.cli, methods=["GET"]),
            Route("/auth/token", signin.cli_token, methods=["POST"]),
        ]
    if hub.settings.debug_endpoints:
        routes.append(Route("/debug/connections", api(debug_connections), methods=["GET"]))
    # The browser client (client_js/src, linked into the package as static/client): only its sources are served.
    routes.append(Mount("/client/src", StaticFiles(directory=(STATIC / "client").resolve()), name="client"))
    # (SecurityHeaders and AllowedHosts pass a WebSocket's `send` on untouched, so CaptureSend still sees the server's)
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[
            Middleware(SecurityHeaders),
            Middleware(AllowedHosts, allowed=hub.settings.allowed_hosts),
            Middleware(CaptureSend),
        ],
    )
    app.state.hub = hub
    return app


__all__ = ["Hub", "Settings", "__version__", "create_app"]
