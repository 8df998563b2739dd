"""The hub: a Starlette app with `/ws` (PROTOCOL.md), the HTTP API, and the page at `/`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any, AsyncIterator
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket

from . import __version__, auth, feed, webhooks
from .backends.base import Backend, Subscription
from .connection import Connection
from .fanout import Fanout
from . import metrics as prom
from .metrics import Metrics
from .protocol import HTTP_STATUS, MAX_REASON, MAX_TEXT, SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK, ErrorCode, ProtocolError
from .registry import Registry
from .service import Service
from .settings import Settings
from .wire import CaptureSend
from .worker import Sweeper, Worker

log = logging.getLogger("runcast.hub")
STATIC = Path(__file__).parent / "static"


class Hub:
    def __init__(self, backend: Backend, registry: Registry, settings: Settings) -> None:
        self.backend = backend
        self.registry = registry
        self.settings = settings
        self.service = Service(backend, registry)
        self.fanout = Fanout(backend)
        self.metrics = Metrics()
        self.metrics.bind(self)
        self.worker: Worker | None = None
        self.sweeper = Sweeper(backend, interval=settings.sweep_s, grace_s=settings.lease_s or 10.0)
        self.connections: set[Connection] = set()
        self.feeds = feed.Feeds()  # the inbox and run-list watchers of this node
        self._feed_sub: Subscription | None = None
        self._reload: asyncio.Task[None] | None = None
        self.deliverer: webhooks.Deliverer | None = None

    async def start(self) -> None:
        await self.backend.start()
        self._feed_sub = await self.backend.subscribe_feed(self.feeds.on_entry, self._feed_interrupted)
        await self._load_feeds()
        if self.settings.run_worker:
            self.worker = Worker(self.backend, self.registry, concurrency=self.settings.worker_concurrency, lease_s=self.settings.lease_s)
            await self.worker.start()
        await self.sweeper.start()
        self.deliverer = await webhooks.maybe_start(self.backend, self.registry, self.settings.webhooks)

    async def stop(self) -> None:
        if self._reload is not None:
            self._reload.cancel()
        if self._feed_sub is not None:
            await self._feed_sub.close()
        if self.deliverer:
            await self.deliverer.stop()
        await self.sweeper.stop()
        if self.worker:
            await self.worker.stop()
        await self.backend.close()

    # ------------------------------------------------------------------ the inbox and run-list feeds
    async def _load_feeds(self) -> None:
        self.feeds.load([feed.entry(r) for r in await self.backend.open_runs()])

    def _feed_interrupted(self) -> None:
        """The backend's feed was cut (Redis outage) and is back: read the index again, resend the run lists."""
        if self._reload is None or self._reload.done():
            self._reload = asyncio.create_task(self._resync())

    async def _resync(self) -> None:
        delay = 0.1
        while True:
            try:
                await self._load_feeds()
                for w, limit in self.feeds.runs_watchers():
                    await self.subscribe_runs(w, limit, None)  # type: ignore[arg-type]
                return
            except Exception as exc:  # noqa: BLE001 - still flapping: try again
                log.warning("reloading the inbox after a feed interruption failed (%s); retrying", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def subscribe_runs(self, conn: Connection, limit: int, request_id: str | None) -> None:
        """The run list: live `run.status` frames are held from now until the snapshot read below has been sent."""
        self.feeds.add_runs(conn, limit)
        try:
            recs = await self.backend.list_runs(limit)
        except BaseException:
            self.feeds.remove_runs(conn)
            raise
        self.feeds.runs_snapshot(conn, [feed.run_summary(r) for r in recs], request_id)

    def unexpected(self, exc: BaseException, what: str) -> ProtocolError:
        """An error that is not the client's: a backend outage says so (and what to do); anything else is logged."""
        if isinstance(exc, self.backend.transient_errors):
            prom.redis_errors.labels(source="command").inc()
            log.warning("%s: backend unreachable: %s", what, exc)
            return ProtocolError(ErrorCode.INTERNAL, "the hub cannot reach its backend right now; nothing was changed "
                                 "by this request unless its events say so: try again in a moment")
        log.error("%s failed", what, exc_info=exc)
        return ProtocolError(ErrorCode.INTERNAL, f"internal error: {type(exc).__name__}")

    # ------------------------------------------------------------------ WebSocket
    def origin_allowed(self, ws: WebSocket) -> bool:
        origin = ws.headers.get("origin")
        if origin is None:
            return True  # not a browser
        if origin in self.settings.allowed_origins or "*" in self.settings.allowed_origins:
            return True
        return urlsplit(origin).netloc == ws.headers.get("host")

    async def websocket(self, ws: WebSocket) -> None:
        if not self.origin_allowed(ws):
            await ws.close(code=1008)  # before accept: the client sees HTTP 403
            return
        offered = ws.scope.get("subprotocols") or []
        sub = SUBPROTOCOL_MSGPACK if SUBPROTOCOL_MSGPACK in offered and (SUBPROTOCOL_JSON not in offered or offered.index(SUBPROTOCOL_MSGPACK) < offered.index(SUBPROTOCOL_JSON)) else (SUBPROTOCOL_JSON if SUBPROTOCOL_JSON in offered else None)
        await ws.accept(subprotocol=sub)
        conn = Connection(self, ws, "msgpack" if sub == SUBPROTOCOL_MSGPACK else "json")
        self.connections.add(conn)
        self.metrics.connections += 1
        self.metrics.connections_total += 1
        try:
            await conn.run()
        finally:
            self.connections.discard(conn)
            self.metrics.connections -= 1

    # ------------------------------------------------------------------ HTTP
    def identity(self, request: Request) -> auth.Identity:
        header = request.headers.get("authorization", "")
        if not header.lower().startswith("bearer "):
            raise ProtocolError(ErrorCode.UNAUTHENTICATED, "send Authorization: Bearer <token>")
        return auth.verify(self.settings.secret, header[7:].strip(), require_exp=not self.settings.dev)


def _error(err: ProtocolError) -> JSONResponse:
    body: dict[str, Any] = {"code": err.code, "message": err.message}
    body.update({k: v for k, v in err.detail.items() if k != "id"})
    return JSONResponse({"error": body}, status_code=HTTP_STATUS.get(err.code, 400))


async def _json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if len(raw) > 64 * 1024:
        raise ProtocolError(ErrorCode.TOO_LARGE, "body over 64 KiB")
    try:
        import json

        body = json.loads(raw or b"{}")
    except ValueError as exc:
        raise ProtocolError(ErrorCode.BAD_FRAME, f"body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ProtocolError(ErrorCode.BAD_FRAME, "body must be a JSON object")
    return body


def _field(body: dict[str, Any], name: str, kind: type, default: Any = ..., limit: int | None = None) -> Any:
    value = body.get(name, default)
    if value is ...:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"field '{name}' is required", field=name)
    if value is not None and value is not default and (not isinstance(value, kind) or (kind is int and isinstance(value, bool))):
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"field '{name}' must be {kind.__name__}", field=name)
    if limit is not None and isinstance(value, str) and len(value) > limit:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"field '{name}' is over {limit} characters", field=name)
    return value


def create_app(hub: Hub) -> Starlette:
    svc = hub.service

    def api(handler: Any) -> Any:
        async def endpoint(request: Request) -> Response:
            try:
                return await handler(request, hub.identity(request))
            except ProtocolError as err:
                hub.metrics.errors[err.code] = hub.metrics.errors.get(err.code, 0) + 1
                return _error(err)
            except Exception as exc:  # noqa: BLE001 - every error answers in the API's own shape
                err = hub.unexpected(exc, f"{request.method} {request.url.path}")
                hub.metrics.errors[err.code] = hub.metrics.errors.get(err.code, 0) + 1
                resp = _error(err)
                if isinstance(exc, hub.backend.transient_errors):
                    resp.status_code = 503
                    resp.headers["Retry-After"] = "1"
                return resp
        return endpoint

    async def start_run(request: Request, who: auth.Identity) -> Response:
        body = await _json_body(request)
        agent = _field(body, "agent", str)
        text = _field(body, "input", str, "", limit=MAX_TEXT)
        return JSONResponse(await svc.start(who, agent, text), status_code=201)

    async def list_runs(request: Request, who: auth.Identity) -> Response:
        return JSONResponse({"runs": await svc.list_runs(who, int(request.query_params.get("limit", 50)))})

    async def get_run(request: Request, who: auth.Identity) -> Response:
        rec = await svc.record(who, request.path_params["run_id"])
        return JSONResponse(rec.detail() | {"head_seq": await hub.backend.head(rec.run_id)})

    async def run_events(request: Request, who: auth.Identity) -> Response:
        try:
            since = int(request.query_params.get("since", 0))
            limit = max(1, min(1000, int(request.query_params.get("limit", 500))))
        except ValueError:
            raise ProtocolError(ErrorCode.BAD_REQUEST, "since and limit must be integers") from None
        events, head = await svc.events(who, request.path_params["run_id"], since, limit)
        nxt = events[-1].seq if events else since
        return JSONResponse({"events": [e.frame for e in events], "head_seq": head, "next_since": nxt, "more": nxt < head})

    async def decide(request: Request, who: auth.Identity) -> Response:
        body = await _json_body(request)
        decision = _field(body, "decision", str)
        if decision not in ("approve", "reject"):
            raise ProtocolError(ErrorCode.BAD_REQUEST, "field 'decision' must be approve or reject", field="decision")
        result = await svc.decide(who, request.path_params["run_id"], request.path_params["approval_id"], decision,
                                  _field(body, "reason", str, None, MAX_REASON), bool(_field(body, "always", bool, False)))
        return JSONResponse(result)

    async def cancel(request: Request, who: auth.Identity) -> Response:
        body = await _json_body(request)
        mode = _field(body, "mode", str, "immediate")
        if mode not in ("immediate", "after_turn"):
            raise ProtocolError(ErrorCode.BAD_REQUEST, "field 'mode' must be immediate or after_turn", field="mode")
        return JSONResponse(await svc.cancel(who, request.path_params["run_id"], mode))

    async def run_audit(request: Request, who: auth.Identity) -> Response:
        doc = await svc.audit(who, request.path_params["run_id"])
        fmt = request.query_params.get("format") or ("csv" if "text/csv" in request.headers.get("accept", "") else "json")
        if fmt == "csv":
            from .audit import to_csv

            name = f"{doc['run']['run_id']}-audit.csv"
            return Response(to_csv(doc), media_type="text/csv; charset=utf-8",
                            headers={"Content-Disposition": f'attachment; filename="{name}"'})
        if fmt != "json":
            raise ProtocolError(ErrorCode.BAD_REQUEST, "format must be json or csv", field="format")
        return JSONResponse(doc)
    async def open_approvals(request: Request, who: auth.Identity) -> Response:
        if request.query_params.get("open", "1") not in ("1", "true"):
            raise ProtocolError(ErrorCode.BAD_REQUEST, "only open approvals are listed here: use ?open=1 (decided ones are in each run's log)")
        return JSONResponse({"approvals": await svc.open_approvals(who)})

    async def webhook_deliveries(request: Request, who: auth.Identity) -> Response:
        if not who.has("admin"):
            raise ProtocolError(ErrorCode.FORBIDDEN, "webhook deliveries are shown to admins only")
        try:
            limit = max(1, min(1000, int(request.query_params.get("limit", 100))))
        except ValueError:
            raise ProtocolError(ErrorCode.BAD_REQUEST, "limit must be an integer") from None
        return JSONResponse({"deliveries": await hub.backend.deliveries(limit)})

    async def agents_list(request: Request, who: auth.Identity) -> Response:
        return JSONResponse({"agents": hub.registry.describe()})

    async def whoami(request: Request, who: auth.Identity) -> Response:
        return JSONResponse(who.public() | {"runs": list(who.runs)})

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def readyz(request: Request) -> Response:
        try:
            ok = await hub.backend.ping()
        except Exception:  # noqa: BLE001
            ok = False
        return PlainTextResponse("ready" if ok else "backend unavailable", status_code=200 if ok else 503)

    async def metrics(request: Request) -> Response:
        return Response(hub.metrics.render(), media_type=prom.CONTENT_TYPE)

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
        Route("/api/runs", api(start_run), methods=["POST"]),
        Route("/api/runs", api(list_runs), methods=["GET"]),
        Route("/api/runs/{run_id}", api(get_run), methods=["GET"]),
        Route("/api/runs/{run_id}/events", api(run_events), methods=["GET"]),
        Route("/api/runs/{run_id}/approvals/{approval_id}", api(decide), methods=["POST"]),
        Route("/api/runs/{run_id}/cancel", api(cancel), methods=["POST"]),
        Route("/api/runs/{run_id}/audit", api(run_audit), methods=["GET"]),
        Route("/api/approvals", api(open_approvals), methods=["GET"]),
        Route("/api/webhooks/deliveries", api(webhook_deliveries), methods=["GET"]),
        Route("/api/agents", api(agents_list), methods=["GET"]),
        Route("/api/me", api(whoami), methods=["GET"]),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    # The browser client (client_js/src, linked into the package as static/client): only its sources are served.
    routes.append(Mount("/client/src", StaticFiles(directory=(STATIC / "client").resolve()), name="client"))
    app = Starlette(routes=routes, lifespan=lifespan, middleware=[Middleware(CaptureSend)])
    app.state.hub = hub
    return app


__all__ = ["Hub", "Settings", "create_app", "__version__"]
