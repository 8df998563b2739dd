"""The filters of the run list, `GET /api/runs?agent=&status=&started_by=&q=&needs_me=`, as plain code.

`runcast runs` (and any client) asks the hub for the runs it wants rather than reading every run and sorting them out
itself: a filtered list is still at most `limit` runs, newest first. "Needs me" uses the inbox's own rules
(feed.why_not: the policy's roles or admin, self-approval, not voted yet), so a run is listed there exactly when one of
its approvals is in this person's inbox. `agent`, `started_by` and `q` (words) are `subscribe_runs`'s own filters
(feed.run_matches), so the HTTP list and the live run list select alike; `status` here also takes a list.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, get_args

from . import feed
from .protocol import ErrorCode, ProtocolError
from .runs import RunRecord, Status

STATUSES: tuple[str, ...] = get_args(Status)
LIVE = ("queued", "running", "paused", "resuming")  # `status=live`: every run that has not ended
MAX_VALUE_CHARS = 200  # an agent name or a user id in a query: longer is a client's mistake
# With a filter, how many of the newest runs are looked through (the list's own maximum page): a filter narrows the
# newest runs, it is not a search of the whole history. "Needs me" reads the index of open runs instead: all of them.
SCAN_LIMIT = 1000
NEEDS_ME = ("", "0", "1", "true", "false")  # `needs_me=` values; 1 and true ask for it


@dataclass(frozen=True)
class RunFilter:
    agent: str | None = None
    statuses: frozenset[str] = frozenset()
    started_by: str | None = None  # a user id (`sub`)
    q: str | None = None  # words, each found in the input, agent, run id or the starter's name or sub
    needs_me: bool = False

    @property
    def active(self) -> bool:
        return bool(self.agent or self.statuses or self.started_by or self.q or self.needs_me)

    @property
    def feed_filters(self) -> dict[str, str]:
        return {k: v for k, v in (("agent", self.agent), ("started_by", self.started_by), ("q", self.q)) if v}

    @classmethod
    def from_query(cls, q: Mapping[str, str]) -> RunFilter:
        """From query parameters; a bad value is a `bad_request` naming the parameter."""

        # As strict as the OpenAPI document says (specs.py), so what a client may send is exactly what is taken.
        def text(name: str) -> str | None:
            raw = q.get(name) or ""
            if len(raw) > MAX_VALUE_CHARS:
                raise ProtocolError(
                    ErrorCode.BAD_REQUEST, f"query parameter '{name}' is over {MAX_VALUE_CHARS} characters", field=name
                )
            return raw.strip() or None

        statuses: set[str] = set()
        raw_status = q.get("status") or ""
        for s in raw_status.split(",") if raw_status else []:
            if s == "live":
                statuses.update(LIVE)
            elif s in STATUSES:
                statuses.add(s)
            else:
                raise ProtocolError(
                    ErrorCode.BAD_REQUEST,
                    f"query parameter 'status' must be a comma-separated list of "
                    f"{', '.join(STATUSES)} or live; got {s[:40]!r}",
                    field="status",
                )
        needs = q.get("needs_me") or ""
        if needs not in NEEDS_ME:
            raise ProtocolError(ErrorCode.BAD_REQUEST, "query parameter 'needs_me' must be 1 or 0", field="needs_me")
        return cls(
            agent=text("agent"),
            statuses=frozenset(statuses),
            started_by=text("started_by"),
            q=text("q"),
            needs_me=needs in ("1", "true"),
        )

    def matches(self, rec: RunRecord, who: feed.Viewer) -> bool:
        if self.statuses and rec.status not in self.statuses:
            return False
        if not feed.run_matches(rec.summary(), self.feed_filters):
            return False
        return not self.needs_me or needs(who, rec)


def needs(who: feed.Viewer, rec: RunRecord) -> bool:
    """One of the run's open approvals is in `who`'s inbox."""
    return bool(feed.inbox_of(who, [feed.entry(rec)]))


def newest_first(recs: list[RunRecord]) -> list[RunRecord]:
    """The run list's order (the backends' `list_runs`)."""
    return sorted(recs, key=lambda r: (r.created_at, r.run_id), reverse=True)


def select(recs: list[RunRecord], who: Any, flt: RunFilter, limit: int) -> list[RunRecord]:
    """The first `limit` of `recs` (newest first) that match."""
    out: list[RunRecord] = []
    for rec in recs:
        if flt.matches(rec, who):
            out.append(rec)
            if len(out) >= limit:
                break
    return out
