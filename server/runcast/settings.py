"""What a hub node is configured with (the CLI fills it in from flags and the environment)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Settings:
    secret: str
    dev: bool = False  # tokens without `exp` are accepted
    allowed_origins: list[str] = field(default_factory=list)
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
