"""Per-user quotas on starting runs, as plain rules (the backends keep the counts; README, "Quotas").

Two limits, both per token `sub`, both across every hub node of a cluster:

- `starts_per_minute`: runs started in any sliding 60 s window. Over it, the refusal says how long until the oldest
  start in the window leaves it.
- `max_open`: runs started by the user that have not finished (queued, running, paused, resuming). Over it, the
  refusal suggests `OPEN_RETRY_S`: a run ends when it ends, so there is no exact time to give.

0 turns a limit off. A refusal is `rate_limited` (HTTP 429 with Retry-After), with `quota` naming the limit and
`retry_after_s`.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from .protocol import ErrorCode, ProtocolError

WINDOW_S = 60.0
OPEN_RETRY_S = 10.0
DEFAULT_STARTS_PER_MINUTE = 60  # a person clicks start a few times a minute; a script that needs more asks for it
DEFAULT_MAX_OPEN = 50  # runs waiting for approval count too: fifty undecided runs of one user is already a backlog


@dataclass(frozen=True)
class StartQuota:
    starts_per_minute: int = DEFAULT_STARTS_PER_MINUTE
    max_open: int = DEFAULT_MAX_OPEN

    @property
    def off(self) -> bool:
        return self.starts_per_minute <= 0 and self.max_open <= 0


@dataclass(frozen=True)
class Refusal:
    quota: str  # "starts_per_minute" | "open_runs"
    retry_after_s: float

    def error(self, q: StartQuota) -> ProtocolError:
        wait = max(1, math.ceil(self.retry_after_s))
        if self.quota == "open_runs":
            msg = (
                f"you have {q.max_open} runs that have not finished, the most one person may have; "
                "try again when one ends"
            )
        else:
            msg = (
                f"you started {q.starts_per_minute} runs in the last minute, the most one person may; "
                f"try again in {wait} s"
            )
        return ProtocolError(ErrorCode.RATE_LIMITED, msg, quota=self.quota, retry_after_s=wait)


def check(starts: deque[float], open_runs: int, now: float, q: StartQuota) -> Refusal | None:
    """Drop starts older than the window from `starts` (oldest first); a Refusal, or None when one more may start
    (the caller then appends `now` and counts the new run as open)."""
    while starts and starts[0] <= now - WINDOW_S:
        starts.popleft()
    if q.max_open > 0 and open_runs >= q.max_open:
        return Refusal("open_runs", OPEN_RETRY_S)
    if q.starts_per_minute > 0 and len(starts) >= q.starts_per_minute:
        return Refusal("starts_per_minute", starts[len(starts) - q.starts_per_minute] + WINDOW_S - now)
    return None
