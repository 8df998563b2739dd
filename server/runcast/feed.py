"""The approvals inbox and the live run list, as plain code (no sockets, no backend).

Every commit that changes a run's status or its approvals publishes the run's *feed entry* (`entry(record)`): its
summary with the record's version, and the approvals of its current pause. Each hub node folds the entries it
receives into `Feeds`, which knows what every inbox and run-list watcher of the node has been told, and sends each
of them only its own differences:

- an inbox watcher gets `inbox.added` / `inbox.removed` for the open approvals that *this person* may decide (the
  policy's roles or admin, self-approval, not yet voted, and a run their token lets them see);
- a run-list watcher gets `run.status` for every run their token lets them see.

An entry is the whole truth about its run at that version, so a node that missed one (a Redis outage) rebuilds the
set from the index of open runs, and entries older than what a node holds are dropped.
"""

from __future__ import annotations

from collections import OrderedDict
from functools import lru_cache
from typing import Any, Callable, Iterable, Protocol

from .approvals import Approval, ApprovalPolicy, Person, may_decide
from .protocol import now_iso
from .runs import RunRecord

# Versions of runs this node has seen lately, to drop an entry older than one already applied.
_VERSIONS_KEPT = 20_000
MENTIONS_PER_PERSON = 50  # the newest mentions of each person a node keeps for their inbox snapshot


def approval_status(ap: Approval) -> str:
    """pending | approved | rejected | expired | cancelled (an expiry is a rejection by policy)."""
    if ap.status == "rejected" and ((ap.decided or {}).get("by") or {}).get("policy") == "expired":
        return "expired"
    return ap.status


def run_summary(rec: RunRecord) -> dict[str, Any]:
    """What the run list shows of a run (the HTTP list's summary, with the version it was read at)."""
    open_ = sum(1 for i in rec.pending if rec.status == "paused" and not rec.approvals[i].settled)
    # rejected or expired tool calls: a run that completed without them is not plainly "completed"
    rejected = sum(1 for ap in rec.approvals.values() if ap.status == "rejected")
    return rec.summary() | {"version": rec.version, "updated_at": rec.updated_at, "open_approvals": open_,
                            "rejected_approvals": rejected}


def entry(rec: RunRecord) -> dict[str, Any]:
    """The feed entry of a committed record (its `version` is the committed one)."""
    aps = []
    for i in rec.pending:
        ap = rec.approvals[i]
        aps.append(ap.requested_data() | {
            "requested_at": ap.requested_at,
            "status": approval_status(ap),
            "tally": ap.tally(),
            "votes": [{"sub": v.sub, "name": v.name, "decision": v.decision, "at": v.at} for v in ap.votes],
        })
    e: dict[str, Any] = {"run": run_summary(rec), "approvals": aps}
    if rec.mentions:  # the newest mentions in its comments (comments.py), for the mentioned people's inboxes
        e["mentions"] = [m | {"run_id": rec.run_id} for m in rec.mentions]
    return e


def is_open(e: dict[str, Any]) -> bool:
    return e["run"]["status"] == "paused" and any(a["status"] == "pending" for a in e["approvals"])


# `status=live` in a run-list filter: every run that has not ended (as runfilter.LIVE, for GET /api/runs)
_LIVE = ("queued", "running", "paused", "resuming")


def run_matches(run: dict[str, Any], filters: dict[str, str] | None) -> bool:
    """Whether a run-list summary matches a `subscribe_runs` filter: every field given must hold. `agent` and
    `started_by` (a sub) are exact; `status` is one or more, comma-separated, or `live` (as GET /api/runs reads it);
    `q` is words (case-insensitive), each found in the input, agent, run id or the starter's name or sub."""
    if not filters:
        return True
    starter = run.get("started_by") or {}
    if "agent" in filters and run.get("agent") != filters["agent"]:
        return False
    if "status" in filters:
        wanted = {s.strip() for s in filters["status"].split(",")}
        if run.get("status") not in wanted and not ("live" in wanted and run.get("status") in _LIVE):
            return False
    if "started_by" in filters and starter.get("sub") != filters["started_by"]:
        return False
    if "q" in filters:
        text = " ".join(str(x or "") for x in (run.get("input"), run.get("agent"), run.get("run_id"),
                                                starter.get("name"), starter.get("sub"))).casefold()
        return all(word in text for word in filters["q"].casefold().split())
    return True


class Viewer(Protocol):
    """Who looks: an auth.Identity (sub, name, roles, runs)."""

    sub: str
    name: str
    roles: tuple[str, ...]

    def can_see(self, run_id: str) -> bool: ...


# Every change is checked against every inbox watcher of a node: the rule objects are made once, not per check.
@lru_cache(maxsize=1024)
def _policy(roles: tuple[str, ...], quorum: int, allow_self: bool) -> ApprovalPolicy:
    return ApprovalPolicy(roles=list(roles), quorum=quorum, allow_self=allow_self)


@lru_cache(maxsize=4096)
def _person(sub: str, name: str, roles: tuple[str, ...]) -> Person:
    return Person(sub=sub, name=name, roles=list(roles))


def why_not(who: Viewer, run: dict[str, Any], ap: dict[str, Any]) -> str | None:
    """None if `who` may decide this approval now, else the reason they may not (the hub's own rules)."""
    if not who.can_see(run["run_id"]):
        return "not_visible"
    if run["status"] != "paused" or ap["status"] != "pending":
        return ap["status"] if ap["status"] != "pending" else f"run_{run['status']}"
    p = ap["policy"]
    policy = _policy(tuple(p["roles"]), p["quorum"], p["allow_self"])
    if not may_decide(_person(who.sub, who.name, tuple(who.roles)), policy):
        return "role"
    if not policy.allow_self and (run.get("started_by") or {}).get("sub") == who.sub:
        return "self"
    if any(v["sub"] == who.sub for v in ap.get("votes", [])):
        return "voted"
    return None


def inbox_item(run: dict[str, Any], ap: dict[str, Any], who: Viewer | None = None) -> dict[str, Any]:
    """One approval of the inbox: the approval as logged in `approval.requested`, its tally and votes, and its run;
    `review_requested` when `who` was asked to review it (it is in the inbox for their role, like anyone's)."""
    item = {k: v for k, v in ap.items() if k != "status"}
    if who is not None and who.sub in (ap.get("reviewers") or ()):
        item["review_requested"] = True
    item["run_id"] = run["run_id"]
    item["run"] = {k: run.get(k) for k in ("agent", "input", "started_by", "created_at", "status")}
    return item


def inbox_of(who: Viewer, entries: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every open approval `who` may decide, oldest request first."""
    out = [inbox_item(e["run"], ap, who) for e in entries for ap in e["approvals"] if why_not(who, e["run"], ap) is None]
    return sorted(out, key=lambda i: (i.get("requested_at") or "", i["approval_id"]))


class Watcher(Protocol):
    identity: Any

    def send_control(self, frame: Any) -> None: ...


class _RunsWatch:
    __slots__ = ("buffer", "limit", "filters", "told")

    def __init__(self, limit: int, filters: dict[str, str] | None = None) -> None:
        self.buffer: list[dict[str, Any]] | None = []  # run.status held back while the snapshot is being read
        self.limit = limit
        self.filters = filters or None
        self.told: set[str] = set()  # with filters: the runs this watcher holds (a run that stops matching leaves)

    def frame(self, run: dict[str, Any]) -> dict[str, Any] | None:
        """The `run.status` for this watcher: the run if it matches; `match: false` once for a run it holds that no
        longer does (the client drops it); else nothing."""
        if self.filters is None:
            return {"type": "run.status", "run": run}
        if run_matches(run, self.filters):
            self.told.add(run["run_id"])
            return {"type": "run.status", "run": run}
        if run["run_id"] in self.told:
            self.told.discard(run["run_id"])
            return {"type": "run.status", "run": run, "match": False}
        return None


class Feeds:
    """One node's view of every run with an open approval, and what each of its feed watchers has been told."""

    def __init__(self, may_watch: Callable[[Any, dict[str, Any]], bool] | None = None) -> None:
        # who may see a run in the run list (the hub's: the token's runs and a role to watch; service.py)
        self._may_watch = may_watch or (lambda who, run: who.can_see(run["run_id"]))
        self.open: dict[str, dict[str, Any]] = {}  # run_id -> entry, for runs with an open approval
        self._versions: OrderedDict[str, int] = OrderedDict()
        self._inbox: dict[Watcher, dict[str, str]] = {}  # watcher -> {approval_id: run_id} it was told about
        self._runs: dict[Watcher, _RunsWatch] = {}
        # Mentions (comments.py): not part of the approvals set, but notices beside it. Each node keeps the newest
        # MENTIONS_PER_PERSON per person it has seen in entries (since it started), for `inbox`'s `mentions`.
        self._mentions: dict[str, list[dict[str, Any]]] = {}
        self._mention_ids: OrderedDict[str, None] = OrderedDict()

    @property
    def watchers(self) -> int:
        return len(self._inbox) + len(self._runs)

    # ------------------------------------------------------------------ entries in
    def _newer(self, e: dict[str, Any]) -> bool:
        rid, version = e["run"]["run_id"], e["run"]["version"]
        seen = self._versions.get(rid)
        if seen is not None and seen >= version:
            return False
        self._versions[rid] = version
        self._versions.move_to_end(rid)
        while len(self._versions) > _VERSIONS_KEPT:
            self._versions.popitem(last=False)
        return True

    def on_entry(self, e: dict[str, Any]) -> None:
        """A run changed (from the backend's feed). Entries older than what this node holds are dropped."""
        if not self._newer(e):
            return
        if e.get("mentions"):
            self._on_mentions(e, live=True)
        rid = e["run"]["run_id"]
        old = self.open.get(rid)
        if is_open(e):
            self.open[rid] = e
        else:
            self.open.pop(rid, None)
        if old is not None or is_open(e):
            for w in list(self._inbox):
                self._refresh(w, rid, e)
        for w, watch in list(self._runs.items()):
            if self._may_watch(w.identity, e["run"]):
                if watch.buffer is not None:
                    watch.buffer.append(e["run"])
                elif (frame := watch.frame(e["run"])) is not None:
                    w.send_control(frame)

    def load(self, entries: list[dict[str, Any]]) -> None:
        """The index of open runs as read from the backend (at start, and after the feed was interrupted): runs not in
        it are closed unless a newer entry says otherwise; every inbox watcher gets the difference."""
        fresh = {}
        for e in entries:
            rid = e["run"]["run_id"]
            seen = self._versions.get(rid)
            if seen is not None and seen > e["run"]["version"]:
                if rid in self.open:
                    fresh[rid] = self.open[rid]
                continue
            self._versions[rid] = e["run"]["version"]
            if e.get("mentions"):
                self._on_mentions(e, live=False)
            if is_open(e):
                fresh[rid] = e
        self.open = fresh
        for w in list(self._inbox):
            self._resend(w)

    # ------------------------------------------------------------------ inbox watchers
    def add_inbox(self, w: Watcher, request_id: str | None = None) -> None:
        """Subscribe (or subscribe again): the current set as an `inbox` snapshot, then differences."""
        items = inbox_of(w.identity, self.open.values())
        self._inbox[w] = {i["approval_id"]: i["run_id"] for i in items}
        frame: dict[str, Any] = {"type": "inbox", "approvals": items}
        mentions = self.mentions_of(w.identity)
        if mentions:  # (absent when there are none: the approvals set is what it always was)
            frame["mentions"] = mentions
        if request_id is not None:
            frame["id"] = request_id
        w.send_control(frame)

    def remove(self, w: Watcher) -> None:
        self._inbox.pop(w, None)
        self._runs.pop(w, None)

    def remove_inbox(self, w: Watcher) -> bool:
        return self._inbox.pop(w, None) is not None

    def _refresh(self, w: Watcher, rid: str, e: dict[str, Any]) -> None:
        told = self._inbox.get(w)
        if told is None:
            return
        run, who = e["run"], w.identity
        now = {ap["approval_id"]: ap for ap in e["approvals"] if why_not(who, run, ap) is None}
        for aid in [a for a, r in told.items() if r == rid and a not in now]:
            del told[aid]
            ap = next((x for x in e["approvals"] if x["approval_id"] == aid), None)
            reason = (why_not(who, run, ap) if ap is not None else None) or "closed"
            w.send_control({"type": "inbox.removed", "run_id": rid, "approval_id": aid, "reason": reason})
        for aid, ap in now.items():
            if aid not in told:
                told[aid] = rid
                w.send_control({"type": "inbox.added", "approval": inbox_item(run, ap, who)})

    def _resend(self, w: Watcher) -> None:
        told = self._inbox.get(w)
        if told is None:
            return
        items = {i["approval_id"]: i for i in inbox_of(w.identity, self.open.values())}
        for aid in [a for a in told if a not in items]:
            rid = told.pop(aid)
            w.send_control({"type": "inbox.removed", "run_id": rid, "approval_id": aid, "reason": "closed"})
        for aid, item in items.items():
            if aid not in told:
                told[aid] = item["run_id"]
                w.send_control({"type": "inbox.added", "approval": item})

    # ------------------------------------------------------------------ mentions
    def _on_mentions(self, e: dict[str, Any], live: bool) -> None:
        """Keep the mentions this node has not seen; push the ones this very commit made (their time is the
        record's) to the mentioned person's inbox watchers as `inbox.mention`. (Older ones a node only now learns
        of, after it started or missed an entry, go to the snapshot, not out as news.)"""
        made_now = now_iso(e["run"].get("updated_at") or 0)
        for m in e["mentions"]:
            if m["mention_id"] in self._mention_ids:
                continue
            self._mention_ids[m["mention_id"]] = None
            while len(self._mention_ids) > _VERSIONS_KEPT:
                self._mention_ids.popitem(last=False)
            kept = self._mentions.setdefault(m["sub"], [])
            kept.append(m)
            del kept[:-MENTIONS_PER_PERSON]
            if live and m["at"] == made_now:
                for w in list(self._inbox):
                    if w.identity.sub == m["sub"] and w.identity.can_see(m["run_id"]):
                        w.send_control({"type": "inbox.mention", "mention": m})

    def mentions_of(self, who: Viewer) -> list[dict[str, Any]]:
        """`who`'s mentions this node knows of, in runs their token lets them see, newest last."""
        return [m for m in self._mentions.get(who.sub, []) if who.can_see(m["run_id"])]

    # ------------------------------------------------------------------ run-list watchers
    def add_runs(self, w: Watcher, limit: int, filters: dict[str, str] | None = None) -> None:
        """Start holding `run.status` for `w` until `runs_snapshot` has sent what the backend listed."""
        self._runs[w] = _RunsWatch(limit, filters)

    def runs_snapshot(self, w: Watcher, runs: list[dict[str, Any]], request_id: str | None = None) -> None:
        watch = self._runs.get(w)
        if watch is None:
            return
        visible = [r for r in runs if self._may_watch(w.identity, r) and run_matches(r, watch.filters)][:watch.limit]
        watch.told = {r["run_id"] for r in visible}
        frame: dict[str, Any] = {"type": "runs", "runs": visible}
        if request_id is not None:
            frame["id"] = request_id
        w.send_control(frame)
        versions = {r["run_id"]: r["version"] for r in visible}
        held, watch.buffer = watch.buffer or [], None
        for run in held:
            if run["version"] > versions.get(run["run_id"], -1) and (frame := watch.frame(run)) is not None:
                w.send_control(frame)

    def runs_watchers(self) -> list[tuple[Watcher, int, dict[str, str] | None]]:
        return [(w, watch.limit, watch.filters) for w, watch in self._runs.items()]

    def remove_runs(self, w: Watcher) -> bool:
        return self._runs.pop(w, None) is not None


OnEntry = Callable[[dict[str, Any]], None]
