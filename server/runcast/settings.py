"""What a hub node is configured with (the CLI fills it in from flags and the environment)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .quotas import DEFAULT_MAX_OPEN, DEFAULT_STARTS_PER_MINUTE


@dataclass
class Settings:
    secret: str  # HS256 tokens ("" : none are accepted)
    dev: bool = False  # tokens without `exp` are accepted
    allowed_origins: list[str] = field(default_factory=list)
    allowed_hosts: list[str] | None = None  # Host headers answered (hosts.py); None: any
    heartbeat_s: float = 20.0
    hello_timeout_s: float = 10.0
    max_queue: int = 4096  # live events held back for one client while its replay is read, before close 4408
    max_send_bytes: int = 1024 * 1024  # bytes written to one client and not yet taken by it, before close 4408
    rate_per_s: float = 50.0
    rate_burst: float = 100.0
    max_strikes: int = 50  # refusals within 10 s before close 1008
    run_worker: bool = True
    worker_concurrency: int = 32
    lease_s: float | None = None
    sweep_s: float = 0.25  # how often expired approvals and lost workers are looked for
    webhooks: Any = None  # webhooks.WebhookConfig: this process delivers webhooks when it or the agents name any
    starts_per_minute: int = DEFAULT_STARTS_PER_MINUTE  # runs one user may start in any 60 s (0: no limit)
    max_open_runs: int = DEFAULT_MAX_OPEN  # runs of one user not yet finished (0: no limit)
    max_connections: int = 10_000  # open WebSockets on this node; over it, an upgrade gets HTTP 503 (0: no cap)
    max_unauthenticated: int = 1_000  # of them, not past hello yet (a hello has 10 s: 100 new clients a second)
    metrics_bind: str | None = None  # HOST:PORT: /metrics without a token there (on the main port it needs one)
    debug_endpoints: bool = False  # GET /debug/connections (admin token): live Connection objects after gc (tests)
    presence_refresh_s: float = 2.0  # how often a node refreshes its watchers' presence entries (they live 1.6x that)
    jwt: Any = None  # auth.JwtConfig: tokens signed with a team's own keys (--jwks-url)
    session_secret: str | None = None  # signs the hub's sign-in sessions (the same on every node)
    signin: Any = None  # signin.SigninConfig: OIDC or the demo's dev sign-in page
