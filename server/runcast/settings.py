"""What a hub node is configured with (the CLI fills it in from flags and the environment)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

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
    # of those, from one client address (None: a tenth of max_unauthenticated), so one address cannot hold them all
    max_unauthenticated_per_address: int | None = None
    metrics_bind: str | None = None  # HOST:PORT: /metrics without a token there (on the main port it needs one)
    debug_endpoints: bool = False  # GET /debug/connections (admin token): live Connection objects after gc (tests)
    tracing: str | None = None  # "off" / "openai" (resolve_tracing); None: decided from the environment
    presence_refresh_s: float = 2.0  # how often a node refreshes its watchers' presence entries (they live 1.6x that)
    typing_ttl_s: float = 6.0  # a `typing: true` shows this long unless renewed (RUNCAST_TYPING_TTL_S)
    jwt: Any = None  # auth.JwtConfig: tokens signed with a team's own keys (--jwks-url)
    session_secret: str | None = None  # signs the hub's sign-in sessions (the same on every node)
    signin: Any = None  # signin.SigninConfig: OIDC or the demo's dev sign-in page


# ---------------------------------------------------------------------------------------------- the model and traces

MODEL_APIS = (
    "responses",
    "chat",
)  # --model-api: OpenAI's Responses API, or Chat Completions (vLLM, Ollama, LiteLLM...)
TRACING_MODES = ("off", "openai")  # --tracing: the Agents SDK's trace export to OpenAI, or none
OPENAI_API_HOST = "api.openai.com"


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def custom_base_url(env: Mapping[str, str]) -> bool:
    """OPENAI_BASE_URL points somewhere other than OpenAI's own API (a team's server, a proxy, vLLM, Ollama...)."""
    url = (env.get("OPENAI_BASE_URL") or "").strip()
    if not url:
        return False
    return (urlsplit(url).hostname or "").lower() != OPENAI_API_HOST


def resolve_tracing(asked: str | None, env: Mapping[str, str]) -> tuple[str, str]:
    """Whether the SDK exports traces to OpenAI, and why (for the startup line).

    The SDK's own OPENAI_AGENTS_DISABLE_TRACING always wins. Then `--tracing` / RUNCAST_TRACING when given. Otherwise
    off without OPENAI_API_KEY (nothing to export with), and off when OPENAI_BASE_URL points at a server of the
    team's own: its agents' traces must not go to a third party the user never chose (and a log full of "Tracing
    request failed" when that party is unreachable). Else the SDK's default: on.
    """
    if asked and asked not in TRACING_MODES:
        raise ValueError(f"--tracing must be one of {', '.join(TRACING_MODES)}, not {asked!r}")
    if _truthy(env.get("OPENAI_AGENTS_DISABLE_TRACING")):
        return "off", "OPENAI_AGENTS_DISABLE_TRACING is set"
    if asked:
        return asked, "asked for"
    if not env.get("OPENAI_API_KEY"):
        return "off", "no OPENAI_API_KEY"
    if custom_base_url(env):
        return "off", "OPENAI_BASE_URL is not OpenAI's (--tracing openai to export anyway)"
    return "openai", "the SDK's default with OPENAI_API_KEY"


@dataclass
class ModelConfig:
    """How the built-in demo agents reach a model (`--model`, `--model-api`) and whether traces are exported
    (`--tracing`). Agents from the user's own modules keep their own model settings; tracing is process-wide."""

    model: str | None = None  # None: the offline scripted model
    api: str = "responses"
    tracing: str = "off"

    def __post_init__(self) -> None:
        if self.api not in MODEL_APIS:
            raise ValueError(f"--model-api must be one of {', '.join(MODEL_APIS)}, not {self.api!r}")
        if self.tracing not in TRACING_MODES:
            raise ValueError(f"--tracing must be one of {', '.join(TRACING_MODES)}, not {self.tracing!r}")
