"""`runcast serve`, `runcast worker`, `runcast token`; the terminal commands are in terminal.py."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import secrets
import signal
import socket
import sys
from pathlib import Path

from . import __version__, auth
from .quotas import DEFAULT_MAX_OPEN, DEFAULT_STARTS_PER_MINUTE
from .settings import MODEL_APIS, TRACING_MODES

log = logging.getLogger("runcast")
TRANSPORT_MAX_FRAME = 1024 * 1024  # a frame over this closes the socket with 1009


def _registry(args: argparse.Namespace):
    from .demo import demo_registry
    from .registry import Registry

    reg = Registry()
    for name in args.agents or ["demo"]:
        if name == "demo":  # only the demo agents take --model / --model-api: a user's agents keep their own
            cfg = args.model_config  # checked by _setup
            reg.update(demo_registry(model=cfg.model, api=cfg.api))
        else:
            sys.path.insert(0, os.getcwd())
            reg.update(Registry.from_module(name))
    return reg


def _backend(args: argparse.Namespace):
    if args.redis:
        try:
            from .backends.redis import RedisBackend
        except ImportError as exc:  # pragma: no cover
            raise SystemExit(f"runcast: the Redis backend is not available: {exc}") from None
        # A process that runs agents gets a connection per run on top of the hub's 64: a streaming run then never
        # waits in the pool behind the others, and neither does its lease renewal (a renewal that waited out the
        # pool's 10 s would let the 10 s lease lapse: the run failed as worker_lost with 500 runs in one worker).
        runs_agents = args.cmd == "worker" or not getattr(args, "no_worker", True)
        extra = args.concurrency if runs_agents else 0
        return RedisBackend(
            args.redis, max_log=args.max_log or None, retention_s=args.retention, max_connections=64 + extra
        )
    from .backends.memory import MemoryBackend

    return MemoryBackend(max_log=args.max_log or None, retention_s=args.retention if args.retention > 0 else None)


def _webhooks(args: argparse.Namespace, registry, default_public_url: str | None = None):
    """The webhook configuration from the flags (see webhooks.py); exits with a message when it cannot work."""
    from . import webhooks

    argv = sys.argv[1:]
    if args.webhook:
        log.warning(
            "--webhook puts the URL, a secret for Slack and most receivers, in this process's command line, "
            "which every local user can read (ps, /proc/PID/cmdline): use --webhook-file FILE or RUNCAST_WEBHOOKS"
        )
    if any(a == "--webhook-secret" or a.startswith("--webhook-secret=") for a in argv):
        log.warning(
            "--webhook-secret on the command line can be read by every local user (ps, /proc/PID/cmdline): "
            "set RUNCAST_WEBHOOK_SECRET instead"
        )
    try:
        endpoints = webhooks.parse_cli(args.webhook or [], args.webhook_events, args.webhook_format)
        if args.webhook_file:
            try:
                text = open(args.webhook_file, encoding="utf-8").read()
            except OSError as exc:
                raise ValueError(f"--webhook-file {args.webhook_file}: {exc.strerror}") from None
            endpoints += webhooks.parse_file(text, f"--webhook-file {args.webhook_file}")
        if os.environ.get("RUNCAST_WEBHOOKS"):
            endpoints += webhooks.parse_file(os.environ["RUNCAST_WEBHOOKS"], "RUNCAST_WEBHOOKS")
        cfg = webhooks.WebhookConfig.from_env(
            endpoints=endpoints,
            secret=args.webhook_secret or None,
            public_url=args.public_url or default_public_url,
        )
        if not webhooks.any_configured(cfg, registry):
            return None
        for name in registry.names():  # the agents' notify lists, checked now rather than at the first event
            spec = registry.get(name)
            for n in [*spec.notify, *(x for p in [*spec.policies.values(), spec.default_policy] for x in p.notify)]:
                webhooks.endpoint(n)
        if not cfg.secret:
            raise ValueError(
                "webhooks are configured but no secret is set: pass --webhook-secret or set "
                "RUNCAST_WEBHOOK_SECRET (make one with `runcast webhook-secret`)"
            )
        webhooks.parse_secret(cfg.secret)
    except ValueError as exc:
        raise SystemExit(f"runcast: {exc}") from None
    if not cfg.public_url:
        log.warning("webhooks: no --public-url; the links in payloads are relative (/#run=...)")
    return cfg


def _setup(args: argparse.Namespace) -> None:
    logging.basicConfig(
        level=os.environ.get("RUNCAST_LOG_LEVEL", "INFO"), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.model and not os.environ.get("OPENAI_API_KEY"):
        raise SystemExit(
            "runcast: --model needs OPENAI_API_KEY; without it the demo agents use the offline scripted model"
        )
    from agents import set_tracing_disabled

    from .settings import ModelConfig, resolve_tracing

    try:
        tracing, why = resolve_tracing(args.tracing, os.environ)
        args.model_config = ModelConfig(model=args.model, api=args.model_api, tracing=tracing)
    except ValueError as exc:
        raise SystemExit(f"runcast: {exc}") from None
    # Process-wide, and it wins over the SDK's own environment variable: traces leave only when settings.py says so.
    set_tracing_disabled(tracing == "off")
    if args.tracing == "openai" and tracing == "off":
        log.warning("runcast: --tracing openai, but OPENAI_AGENTS_DISABLE_TRACING is set: traces stay off")
    log.info("tracing %s (%s)", tracing, why)


def _bind(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    """Take the address now, so that a busy port is an error before the demo prints links to it. With `reuse_port`
    (a child of `--processes N`), other processes may bind it too and the kernel spreads connections over them."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise SystemExit(
            f"runcast: cannot listen on {host}:{port}: {exc.strerror or exc}. Pick another port: "
            f"runcast serve --port 9000 (or make demo PORT=9000)"
        ) from None
    sock.set_inheritable(True)
    return sock


def _jwt_config(args: argparse.Namespace):
    """--jwks-url and its companions, checked now (a hub that cannot verify anyone should not start)."""
    from urllib.parse import urlsplit

    from .auth import JWKS_MIN_REFETCH_S, JwtConfig

    if not args.jwks_url:
        if args.jwt_issuer or args.jwt_audience:
            raise SystemExit(
                "runcast serve: --jwt-issuer and --jwt-audience go with --jwks-url URL (the issuer's keys)"
            )
        return None
    if urlsplit(args.jwks_url).scheme not in ("http", "https"):
        raise SystemExit(f"runcast serve: --jwks-url must be an http(s) URL, got {args.jwks_url!r}")
    if not args.jwt_issuer or not args.jwt_audience:
        raise SystemExit(
            "runcast serve: --jwks-url needs --jwt-issuer ISS and --jwt-audience AUD too: a token from "
            "another issuer or for another app signed with the same keys must not get in"
        )
    return JwtConfig(
        args.jwks_url,
        args.jwt_issuer,
        args.jwt_audience,
        args.roles_claim,
        args.name_claim,
        float(os.environ.get("RUNCAST_JWKS_MIN_REFETCH_S", JWKS_MIN_REFETCH_S)),
    )


def _print_links(secret: str, args: argparse.Namespace) -> None:
    """The demo's one link: its sign-in page, which lists Dana, Alex and Vic (no token in any link)."""
    shown = "127.0.0.1" if args.host in ("0.0.0.0", "::", "") else args.host
    base = f"http://{shown}:{args.port}"
    print(
        f"\nDev mode (no RUNCAST_SECRET, --oidc-issuer or --jwks-url): sign in as Dana (admin), Alex (approver) or "
        f"Vic (viewer) at\n  {base}/login",
        flush=True,
    )
    # the terminal has no cookie: a token for Dana, signed with the dev secret (so it too survives a restart)
    dana = auth.issue(secret, "dana", "Dana", ["admin"], ttl_s=7 * 86400)
    print("  From a terminal, as Dana (runcast runs, start, watch, approvals...):", flush=True)
    print(f"    export RUNCAST_URL={base} RUNCAST_TOKEN={dana}\n", flush=True)


def state_dir() -> Path:
    """Where Runcast keeps its own state for this user ($XDG_STATE_HOME/runcast, else ~/.local/state/runcast)."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "runcast"


def _dev_secret() -> str:
    """The demo's secret, kept in the user's state dir (0600), so its sessions survive a restart of `make demo`."""
    path = state_dir() / "dev-secret"
    try:
        value = path.read_text().strip()
        if len(value) >= 32:
            return value
    except OSError:
        pass
    value = secrets.token_urlsafe(32)
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(value + "\n")
    except OSError as exc:
        print(
            f"runcast serve: cannot keep the dev secret in {path} ({exc.strerror}); sessions end with this process",
            flush=True,
        )
    return value


def _oidc_config(args: argparse.Namespace):
    """--oidc-issuer and its companions, checked now: a hub whose sign-in cannot work should say so at start."""
    from urllib.parse import urlsplit

    from .signin import OidcConfig, parse_role_map

    if not args.oidc_issuer:
        if args.oidc_client_id or args.oidc_client_secret_file:
            raise SystemExit("runcast serve: --oidc-client-id and --oidc-client-secret-file go with --oidc-issuer URL")
        return None
    if urlsplit(args.oidc_issuer).scheme not in ("http", "https"):
        raise SystemExit(f"runcast serve: --oidc-issuer must be an http(s) URL, got {args.oidc_issuer!r}")
    if not args.oidc_client_id:
        raise SystemExit("runcast serve: --oidc-issuer needs --oidc-client-id ID (the client registered for this hub)")
    client_secret = None
    if args.oidc_client_secret_file:
        try:
            client_secret = Path(args.oidc_client_secret_file).read_text().strip()
        except OSError as exc:
            raise SystemExit(
                f"runcast serve: cannot read --oidc-client-secret-file {args.oidc_client_secret_file}: {exc.strerror}"
            ) from None
        if not client_secret:
            raise SystemExit(f"runcast serve: --oidc-client-secret-file {args.oidc_client_secret_file} is empty")
    try:
        role_map = parse_role_map(args.oidc_role_map or "")
    except ValueError as exc:
        raise SystemExit(f"runcast serve: {exc}") from None
    if not role_map:
        print(
            "runcast serve: no --oidc-role-map: people can sign in but get no role until their groups are mapped "
            "(e.g. --oidc-role-map runcast-admins=admin,runcast-approvers=approver)",
            flush=True,
        )
    return OidcConfig(
        args.oidc_issuer,
        args.oidc_client_id,
        client_secret,
        args.oidc_roles_claim,
        role_map,
        scopes=args.oidc_scopes,
        cli_client_id=args.oidc_cli_client_id or None,
    )


def _server(config, hub, drain_s: float):
    """uvicorn's Server, draining on the first SIGTERM / SIGINT: the hub reports not ready for `drain_s` (a load
    balancer or Kubernetes stops sending it clients), then uvicorn stops accepting, closes every WebSocket with 1012
    and waits up to its graceful-shutdown timeout for the connections to end. A second signal exits at once."""
    import time

    import uvicorn

    class DrainingServer(uvicorn.Server):
        _drain_at: float | None = None

        def handle_exit(self, sig, frame) -> None:
            first = not hub.draining
            hub.drain()
            if first and drain_s > 0:
                self._captured_signals.append(sig)  # re-raised by uvicorn once it has shut down, as it does itself
                self._drain_at = time.monotonic() + drain_s
                return
            super().handle_exit(sig, frame)

        async def on_tick(self, counter: int) -> bool:
            if self._drain_at is not None and time.monotonic() >= self._drain_at:
                self.should_exit = True
            return await super().on_tick(counter)

    return DrainingServer(config)


def serve(args: argparse.Namespace) -> None:
    import uvicorn

    from . import transport
    from .hosts import default_allowed_hosts
    from .hub import Hub, Settings, create_app
    from .looplag import freeze_startup_heap

    if args.processes > 1 or args.worker_process:
        from .processes import supervise

        supervise(args, args.argv, _print_links, _dev_secret)
        return
    _setup(args)
    secret = os.environ.get("RUNCAST_SECRET")
    jwt_config = _jwt_config(args)
    oidc = _oidc_config(args)
    # No secret and no other sign-in: the demo, whose people sign in on a dev page, with a secret kept in the user's
    # state dir (sessions survive a restart). With --jwks-url or --oidc-issuer, people come from the team's issuer,
    # HS256 is off unless RUNCAST_SECRET is set, and nothing of the dev sign-in exists.
    demo = not secret and jwt_config is None and oidc is None
    dev = args.dev or demo
    if demo:
        secret = _dev_secret()
    session_secret = os.environ.get("RUNCAST_SESSION_SECRET") or secret
    if oidc is not None and not session_secret:
        session_secret = secrets.token_urlsafe(32)
        print(
            "runcast serve: no RUNCAST_SESSION_SECRET (or RUNCAST_SECRET): sign-in sessions are signed with a key "
            "made for this process; they end when it stops and work on this node only",
            flush=True,
        )
    from .signin import DEV_PEOPLE, SigninConfig

    settings = Settings(
        secret=secret or "",
        jwt=jwt_config,
        session_secret=session_secret,
        signin=SigninConfig(oidc=oidc, dev_people=DEV_PEOPLE if demo else None, public_url=args.public_url)
        if (oidc is not None or demo)
        else None,
        dev=dev,
        allowed_origins=args.allow_origin or [],
        heartbeat_s=args.heartbeat,
        run_worker=not args.no_worker,
        worker_concurrency=args.concurrency,
        lease_s=args.lease if args.redis else None,
        tracing=args.model_config.tracing,
    )
    settings.hello_timeout_s = float(os.environ.get("RUNCAST_HELLO_TIMEOUT_S", settings.hello_timeout_s))
    settings.rate_per_s = float(os.environ.get("RUNCAST_RATE_PER_S", settings.rate_per_s))
    settings.rate_burst = float(os.environ.get("RUNCAST_RATE_BURST", settings.rate_burst))
    settings.max_strikes = int(os.environ.get("RUNCAST_MAX_STRIKES", settings.max_strikes))
    settings.sweep_s = float(os.environ.get("RUNCAST_SWEEP_S", settings.sweep_s))
    settings.debug_endpoints = os.environ.get("RUNCAST_DEBUG_ENDPOINTS", "") == "1"
    settings.metrics_bind = args.metrics_bind or None
    if args.allowed_hosts:
        settings.allowed_hosts = [h.strip() for v in args.allowed_hosts for h in v.split(",") if h.strip()]
    else:
        settings.allowed_hosts = default_allowed_hosts(args.host)
        if settings.allowed_hosts is None:
            print(
                f"runcast: bound to {args.host or 'every address'}, so any Host header is answered; name this "
                "hub's public names with --allowed-hosts to refuse the others (DNS rebinding)",
                flush=True,
            )
    settings.starts_per_minute = args.max_starts_per_minute
    settings.max_connections = args.max_connections
    settings.max_unauthenticated = args.max_unauthenticated
    settings.max_unauthenticated_per_address = args.max_unauthenticated_per_address
    import ipaddress

    trusted = [c.strip() for spec in args.trusted_proxy or [] for c in spec.split(",") if c.strip()]
    for c in trusted:
        try:
            ipaddress.ip_network(c, strict=False)
        except ValueError:
            raise SystemExit(f"runcast serve: --trusted-proxy {c!r} is not an address or a network (CIDR)") from None
    args.trusted_proxy = trusted
    settings.max_open_runs = args.max_open_runs
    if settings.metrics_bind:
        from .scrape import parse_bind

        try:
            parse_bind(settings.metrics_bind)
        except ValueError as exc:
            raise SystemExit(f"runcast serve: {exc}") from None
    settings.presence_refresh_s = float(os.environ.get("RUNCAST_PRESENCE_REFRESH_S", settings.presence_refresh_s))
    settings.typing_ttl_s = float(os.environ.get("RUNCAST_TYPING_TTL_S", settings.typing_ttl_s))
    if args.max_queue:
        settings.max_queue = args.max_queue
    settings.max_send_bytes = args.max_send_bytes
    sock = _bind(
        args.host, args.port, args.reuse_port
    )  # before any link is printed: a busy port says so, and nothing else
    registry = _registry(args)
    shown = "127.0.0.1" if args.host in ("0.0.0.0", "::", "") else args.host
    base = f"http://{shown}:{args.port}"
    settings.webhooks = _webhooks(args, registry, base)
    hub = Hub(_backend(args), registry, settings)
    app = create_app(hub)
    print(
        f"runcast {__version__}: {hub.backend.name} backend, {'hub + worker' if settings.run_worker else 'hub only'}, "
        f"agents: {', '.join(hub.registry.names())}",
        flush=True,
    )
    if demo and not args.reuse_port:  # (a child of --processes: the supervisor printed it)
        assert secret is not None  # the demo made one above
        _print_links(secret, args)
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        http=transport.http_protocol(args.header_timeout),  # a header-read timeout (transport.py)
        ws=transport.WebSocketProtocol,  # websockets-sansio with the pre-auth limit, and 1009 / 1007 that arrive
        ws_max_size=TRANSPORT_MAX_FRAME,
        # Off: with it, every frame is compressed once per client (zlib, per connection) instead of framed once for
        # all of them (wire.py); Runcast's frames are small and many.
        ws_per_message_deflate=False,
        # X-Forwarded-For / -Proto are believed from --trusted-proxy peers only (uvicorn's default trusts 127.0.0.1:
        # any local process could then pick its address for the per-address share)
        proxy_headers=bool(args.trusted_proxy),
        forwarded_allow_ips=",".join(args.trusted_proxy) or None,
        ws_ping_interval=settings.heartbeat_s,
        ws_ping_timeout=settings.heartbeat_s,
        log_level=os.environ.get("RUNCAST_UVICORN_LOG", "warning"),
        loop=os.environ.get("RUNCAST_LOOP", "auto"),  # auto: uvloop where installed; asyncio or uvloop to choose
        lifespan="on",
        timeout_graceful_shutdown=args.grace,
        backlog=args.backlog,
    )
    frozen = freeze_startup_heap()  # startup is done: full collections skip it from here on (looplag.py)
    log.info("%d objects from startup left out of garbage collection", frozen)
    _server(config, hub, args.drain_delay).run(sockets=[sock])


def _worker_http(args: argparse.Namespace, w, backend, draining: asyncio.Event):
    """A worker's own small HTTP server: /metrics, /healthz (the event loop answers) and /readyz (Redis answers and
    the worker is not draining), for Prometheus and Kubernetes probes."""
    import uvicorn
    from prometheus_client import generate_latest
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse, Response
    from starlette.routing import Route

    from .metrics import CONTENT_TYPE, worker_registry

    registry = worker_registry(w)

    async def metrics(request):
        return Response(generate_latest(registry), media_type=CONTENT_TYPE)

    async def healthz(request):
        return PlainTextResponse("ok")

    async def readyz(request):
        if draining.is_set():
            return PlainTextResponse("draining", status_code=503)
        ok = await backend.ping()
        return PlainTextResponse("ready" if ok else "backend unavailable", status_code=200 if ok else 503)

    app = Starlette(routes=[Route("/metrics", metrics), Route("/healthz", healthz), Route("/readyz", readyz)])
    config = uvicorn.Config(
        app,
        host=args.metrics_host,
        port=args.metrics_port,
        lifespan="off",
        log_level=os.environ.get("RUNCAST_UVICORN_LOG", "warning"),
    )

    class QuietServer(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self):
            yield

    return QuietServer(config)


def worker(args: argparse.Namespace) -> None:
    from .looplag import freeze_startup_heap
    from .worker import Sweeper, Worker

    _setup(args)
    if not args.redis:
        raise SystemExit("runcast worker: needs --redis URL (a worker without a shared backend would see no runs)")

    from . import webhooks

    registry = _registry(args)
    hooks = _webhooks(args, registry)

    async def main() -> None:
        backend = _backend(args)
        await backend.start()
        w = Worker(
            backend, registry, concurrency=args.concurrency, lease_s=args.lease, tracing=args.model_config.tracing
        )
        sweeper = Sweeper(backend, grace_s=args.lease)
        await w.start()
        await sweeper.start()
        deliverer = await webhooks.maybe_start(backend, registry, hooks)
        draining = asyncio.Event()
        http = _worker_http(args, w, backend, draining) if args.metrics_port else None
        http_task = asyncio.create_task(http.serve()) if http else None
        frozen = freeze_startup_heap()  # as `serve` does (looplag.py)
        log.info("%d objects from startup left out of garbage collection", frozen)
        print(
            f"runcast worker {w.id}: concurrency {args.concurrency}, agents: {', '.join(w.registry.names())}",
            flush=True,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        draining.set()
        print(
            f"runcast worker {w.id}: draining ({len(w.active)} segment(s) streaming, up to {args.grace:g}s)", flush=True
        )
        await w.drain(args.grace)
        if deliverer:
            await deliverer.stop()
        await sweeper.stop()
        if http is not None and http_task is not None:
            http.should_exit = True
            await http_task
        await backend.close()

    asyncio.run(main())


def token(args: argparse.Namespace) -> None:
    secret = os.environ.get("RUNCAST_SECRET")
    if not secret:
        raise SystemExit(
            "runcast token: set RUNCAST_SECRET to the hub's secret first (under `make demo` the hub made "
            "its own: copy the `export RUNCAST_URL=... RUNCAST_TOKEN=...` line it printed)"
        )
    roles = [r.strip() for r in (args.roles or "viewer").split(",") if r.strip()]
    runs = [r.strip() for r in (args.runs or "*").split(",") if r.strip()]
    print(auth.issue(secret, args.sub, args.name, roles, runs, ttl_s=args.ttl))


def webhook_secret(args: argparse.Namespace) -> None:
    from .webhooks import new_secret

    print(new_secret())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="runcast", description="Watch OpenAI Agents SDK runs live, together, and approve their tool calls."
    )
    p.add_argument("--version", action="version", version=f"runcast {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--agents",
            action="append",
            metavar="MODULE",
            help="module defining AGENTS (repeatable); 'demo' is the built-in demo agents (the default)",
        )
        sp.add_argument(
            "--model",
            help="a real model name for the demo agents (needs OPENAI_API_KEY; OPENAI_BASE_URL "
            "for a server of your own)",
        )
        sp.add_argument(
            "--model-api",
            choices=MODEL_APIS,
            default=os.environ.get("RUNCAST_MODEL_API", "responses"),
            help="how the demo agents talk to --model: OpenAI's Responses API (the default) or chat, Chat "
            "Completions (vLLM, Ollama, LiteLLM...); agents from --agents modules keep their own",
        )
        sp.add_argument(
            "--tracing",
            choices=TRACING_MODES,
            default=os.environ.get("RUNCAST_TRACING") or None,
            help="the Agents SDK's trace export to OpenAI: off, or openai. Default: openai with "
            "OPENAI_API_KEY, off when OPENAI_BASE_URL points elsewhere or without a key; "
            "OPENAI_AGENTS_DISABLE_TRACING always turns it off",
        )
        sp.add_argument(
            "--redis",
            metavar="URL",
            default=os.environ.get("RUNCAST_REDIS_URL"),
            help="join a cluster on this Redis (default: one process, in memory)",
        )
        sp.add_argument("--concurrency", type=int, default=32, help="segments one worker streams at once")
        sp.add_argument(
            "--max-log",
            type=int,
            default=int(os.environ.get("RUNCAST_MAX_LOG", "100000")),
            help="events kept per run; older ones are trimmed and asking for them is an error (0: keep all)",
        )
        sp.add_argument(
            "--retention",
            type=float,
            default=float(os.environ.get("RUNCAST_RETENTION_S", str(7 * 86400))),
            help="seconds a finished run's log and record are kept",
        )
        sp.add_argument(
            "--webhook",
            action="append",
            metavar="URL",
            help="POST approval and run events here, signed (Standard Webhooks); repeatable. Shows in "
            "ps: prefer --webhook-file or RUNCAST_WEBHOOKS",
        )
        sp.add_argument(
            "--webhook-file",
            metavar="FILE",
            default=os.environ.get("RUNCAST_WEBHOOK_FILE"),
            help="receivers, one a line: URL [events=a,b] [format=standard|slack] (default: "
            "$RUNCAST_WEBHOOK_FILE; RUNCAST_WEBHOOKS may hold the same lines)",
        )
        sp.add_argument(
            "--webhook-events",
            action="append",
            metavar="A,B",
            help="the events a --webhook gets (once for all, or once per --webhook); default: all of "
            "approval.requested/decided/expired/cancelled, run.paused/completed/failed/cancelled",
        )
        sp.add_argument(
            "--webhook-format",
            action="append",
            choices=["standard", "slack"],
            help="standard (the default) or slack (a Slack incoming webhook's body); once, or once per --webhook",
        )
        sp.add_argument(
            "--webhook-secret",
            default=os.environ.get("RUNCAST_WEBHOOK_SECRET"),
            metavar="whsec_...",
            help="signing secret, whsec_ + base64 (default: $RUNCAST_WEBHOOK_SECRET)",
        )
        sp.add_argument(
            "--public-url",
            default=os.environ.get("RUNCAST_PUBLIC_URL"),
            metavar="URL",
            help="where people open the page, for the links in webhooks (default: $RUNCAST_PUBLIC_URL, "
            "else this hub's address)",
        )
        sp.add_argument(
            "--lease",
            type=float,
            default=float(os.environ.get("RUNCAST_LEASE_S", "10")),
            help="seconds a worker's claim on a running run lasts without renewal (Redis only)",
        )

    s = sub.add_parser("serve", help="the hub (and, by default, a worker)")
    common(s)
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8765)
    s.add_argument("--no-worker", action="store_true", help="hub only: runs are streamed by `runcast worker` processes")
    s.add_argument(
        "--allow-origin", action="append", metavar="ORIGIN", help="browser origins allowed besides the hub's own"
    )
    s.add_argument(
        "--allowed-hosts",
        action="append",
        metavar="HOSTS",
        default=[h for h in os.environ.get("RUNCAST_ALLOWED_HOSTS", "").split(",") if h.strip()] or None,
        help="comma-separated Host names this hub answers ('*' any, '*.example.com' subdomains); default: "
        "--host and localhost, or any when bound to every address",
    )
    s.add_argument("--heartbeat", type=float, default=20.0, help="seconds between WebSocket pings")
    s.add_argument(
        "--max-queue",
        type=int,
        default=0,
        help="live events held back per client while its replay is read, before it is closed with 4408",
    )
    s.add_argument(
        "--max-send-bytes",
        type=int,
        default=int(os.environ.get("RUNCAST_MAX_SEND_BYTES", str(1024 * 1024))),
        help="bytes sent to a client and not yet taken by it before it is closed with 4408 (default 1 MiB)",
    )
    s.add_argument("--dev", action="store_true", help="accept tokens without exp")
    s.add_argument(
        "--jwks-url",
        metavar="URL",
        default=os.environ.get("RUNCAST_JWKS_URL"),
        help="also accept RS256, ES256 and EdDSA tokens signed with the keys published here (a JWKS); "
        "needs --jwt-issuer and --jwt-audience",
    )
    s.add_argument(
        "--jwt-issuer",
        metavar="ISS",
        default=os.environ.get("RUNCAST_JWT_ISSUER"),
        help="the `iss` those tokens must carry",
    )
    s.add_argument(
        "--jwt-audience",
        metavar="AUD",
        default=os.environ.get("RUNCAST_JWT_AUDIENCE"),
        help="the `aud` those tokens must carry (this hub)",
    )
    s.add_argument(
        "--oidc-issuer",
        metavar="URL",
        default=os.environ.get("RUNCAST_OIDC_ISSUER"),
        help="sign people in on the page with this OpenID Connect provider (its discovery document is at "
        "URL/.well-known/openid-configuration)",
    )
    s.add_argument(
        "--oidc-client-id",
        metavar="ID",
        default=os.environ.get("RUNCAST_OIDC_CLIENT_ID"),
        help="the client registered at the provider for this hub (redirect URI: <hub>/auth/callback)",
    )
    s.add_argument(
        "--oidc-client-secret-file",
        metavar="FILE",
        default=os.environ.get("RUNCAST_OIDC_CLIENT_SECRET_FILE"),
        help="a file holding that client's secret (none: a public client, PKCE only)",
    )
    s.add_argument(
        "--oidc-roles-claim",
        metavar="NAME",
        default=os.environ.get("RUNCAST_OIDC_ROLES_CLAIM", "groups"),
        help="the ID token claim listing the person's groups (default groups)",
    )
    s.add_argument(
        "--oidc-role-map",
        metavar="GROUP=ROLE,...",
        default=os.environ.get("RUNCAST_OIDC_ROLE_MAP"),
        help="the provider's groups to Runcast's roles, e.g. ops=admin,oncall=approver,eng=viewer",
    )
    s.add_argument(
        "--oidc-scopes",
        metavar="SCOPES",
        default=os.environ.get("RUNCAST_OIDC_SCOPES", "openid profile email"),
        help="the scopes asked for (default 'openid profile email'; Okta: add groups)",
    )
    s.add_argument(
        "--oidc-cli-client-id",
        metavar="ID",
        default=os.environ.get("RUNCAST_OIDC_CLI_CLIENT_ID"),
        help="a public client (no secret) at the provider for `runcast login`: the device flow where the "
        "provider offers it, else a loopback redirect to http://127.0.0.1/callback",
    )
    s.add_argument(
        "--roles-claim",
        metavar="NAME",
        default=os.environ.get("RUNCAST_ROLES_CLAIM", "roles"),
        help="the claim holding their roles (a dotted path for a nested one: realm_access.roles)",
    )
    s.add_argument(
        "--name-claim",
        metavar="NAME",
        default=os.environ.get("RUNCAST_NAME_CLAIM", "name"),
        help="the claim holding their display name (default name; else preferred_username, email, sub)",
    )
    s.add_argument(
        "--processes",
        type=int,
        default=int(os.environ.get("RUNCAST_PROCESSES", "1")),
        help="hub processes on this host and port (SO_REUSEPORT), plus a worker process; needs --redis",
    )
    s.add_argument(
        "--worker-process",
        action="store_true",
        help="run the worker in a process of its own, not in the hub's event loop (needs --redis)",
    )
    s.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)  # a child of --processes
    s.add_argument(
        "--max-starts-per-minute",
        type=int,
        metavar="N",
        default=int(os.environ.get("RUNCAST_MAX_STARTS_PER_MINUTE", str(DEFAULT_STARTS_PER_MINUTE))),
        help="runs one user may start in any 60 s, over every node (0: no limit)",
    )
    s.add_argument(
        "--max-open-runs",
        type=int,
        metavar="N",
        default=int(os.environ.get("RUNCAST_MAX_OPEN_RUNS", str(DEFAULT_MAX_OPEN))),
        help="runs of one user that have not finished, over every node (0: no limit)",
    )
    s.add_argument(
        "--max-connections",
        type=int,
        metavar="N",
        default=int(os.environ.get("RUNCAST_MAX_CONNECTIONS", "10000")),
        help="open WebSocket connections on this node; over it an upgrade gets HTTP 503 (0: no cap)",
    )
    s.add_argument(
        "--max-unauthenticated",
        type=int,
        metavar="N",
        default=int(os.environ.get("RUNCAST_MAX_UNAUTHENTICATED", "1000")),
        help="of them, connections that have not sent a valid hello yet (0: no cap)",
    )
    s.add_argument(
        "--max-unauthenticated-per-address",
        type=int,
        metavar="N",
        default=int(os.environ["RUNCAST_MAX_UNAUTHENTICATED_PER_ADDRESS"])
        if os.environ.get("RUNCAST_MAX_UNAUTHENTICATED_PER_ADDRESS")
        else None,
        help="of those, from one client address (default: a tenth of --max-unauthenticated)",
    )
    s.add_argument(
        "--trusted-proxy",
        action="append",
        metavar="CIDR",
        default=[os.environ.get("RUNCAST_TRUSTED_PROXY") or os.environ["FORWARDED_ALLOW_IPS"]]
        if os.environ.get("RUNCAST_TRUSTED_PROXY") or os.environ.get("FORWARDED_ALLOW_IPS")
        else None,
        help="a load balancer's address or network (repeatable, or comma-separated): a connection from it is "
        "counted by the right-most X-Forwarded-For address that is not a trusted proxy; no other peer's "
        "X-Forwarded-For is believed",
    )
    s.add_argument(
        "--metrics-bind",
        metavar="HOST:PORT",
        default=os.environ.get("RUNCAST_METRICS_BIND"),
        help="also serve /metrics here, without a token (e.g. 127.0.0.1:9100); on the main port it needs "
        "a token with the metrics or admin role",
    )
    # 10 s: an upgrade request is one small packet from any real client (nginx's client_header_timeout is 60 s), and
    # this is also how long a half-open upgrade may hold a socket.
    s.add_argument(
        "--header-timeout",
        type=float,
        default=float(os.environ.get("RUNCAST_HEADER_TIMEOUT_S", "10")),
        help="seconds a connection may take to send a request's headers (an upgrade included)",
    )
    s.add_argument(
        "--backlog",
        type=int,
        default=int(os.environ.get("RUNCAST_BACKLOG", "4096")),
        help="connections the kernel queues before they are accepted (capped by net.core.somaxconn): "
        "room for every client of a restarted node reconnecting at once",
    )
    s.add_argument(
        "--drain-delay",
        type=float,
        default=float(os.environ.get("RUNCAST_DRAIN_DELAY_S", "0")),
        help="on SIGTERM, seconds to keep serving while /readyz answers 503, before closing clients with 1012",
    )
    s.add_argument(
        "--grace",
        type=float,
        default=float(os.environ.get("RUNCAST_GRACE_S", "5")),
        help="on shutdown, seconds to wait for connections and requests to end before cancelling them",
    )
    s.set_defaults(func=serve)

    w = sub.add_parser("worker", help="a worker only (needs --redis)")
    common(w)
    w.add_argument(
        "--metrics-port",
        type=int,
        default=int(os.environ.get("RUNCAST_METRICS_PORT", "0")),
        help="serve /metrics, /healthz and /readyz on this port (0: none)",
    )
    w.add_argument("--metrics-host", default="0.0.0.0", help="address for --metrics-port")
    w.add_argument(
        "--grace",
        type=float,
        default=float(os.environ.get("RUNCAST_WORKER_GRACE_S", "25")),
        help="on SIGTERM, seconds the segments being streamed get to end before they are cancelled",
    )
    w.set_defaults(func=worker)

    t = sub.add_parser("token", help="print a token signed with RUNCAST_SECRET")
    t.add_argument("--sub", required=True, help="user id")
    t.add_argument("--name", help="display name")
    t.add_argument("--roles", help="comma-separated: viewer, approver, operator, admin, or your own")
    t.add_argument("--runs", help="comma-separated run ids this token may see (default: all)")
    t.add_argument("--ttl", type=float, default=3600, help="seconds until it expires (default 3600)")
    t.set_defaults(func=token)

    ws = sub.add_parser(
        "webhook-secret", help="print a new webhook signing secret (whsec_ + base64 of 32 random bytes)"
    )
    ws.set_defaults(func=webhook_secret)

    from .terminal import add_commands  # runs, start, approvals, approve, reject, watch, audit: clients of a hub
    from .terminal_talk import add_talk_commands  # say, withdraw, rerun (issue 20)

    add_commands(sub, add_talk_commands)
    from .login import add_commands as add_login  # login, whoami, logout: the terminal's sign-in

    add_login(sub)

    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    args.func(args)


if __name__ == "__main__":
    main()
