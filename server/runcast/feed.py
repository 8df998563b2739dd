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

import logging
import weakref
from bisect import bisect_left, insort
from collections import OrderedDict
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import Any, Protocol

from .approvals import Approval, ApprovalPolicy, Person, may_decide
from .framing import frame as wire_frame
from .protocol import encode, now_iso
from .runs import RunRecord

log = logging.getLogger("runcast.feed")

# A run list's count of changes outside it goes with its next frame, or on its own at most once per this many flushes
# (a second, at the hub's 0.1 s tick): a busy team's page gets about one frame a second, not one per tick.
OUTSIDE_TICKS = 10
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
    return rec.summary() | {
        "version": rec.version,
        "updated_at": rec.updated_at,
        "open_approvals": open_,
        "rejected_approvals": rejected,
    }


def entry(rec: RunRecord) -> dict[str, Any]:
    """The feed entry of a committed record (its `version` is the committed one)."""
    aps = []
    for i in rec.pending:
        ap = rec.approvals[i]
        aps.append(
            ap.requested_data()
            | {
                "requested_at": ap.requested_at,
                "status": approval_status(ap),
                "tally": ap.tally(),
                "votes": [{"sub": v.sub, "name": v.name, "decision": v.decision, "at": v.at} for v in ap.votes],
            }
        )
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
        text = " ".join(
            str(x or "")
            for x in (run.get("input"), run.get("agent"), run.get("run_id"), starter.get("name"), starter.get("sub"))
        ).casefold()
        return all(word in text for word in filters["q"].casefold().split())
    return True


class Viewer(Protocol):
    """Who looks: an auth.Identity (sub, name, roles, runs). Read-only properties: an Identity is frozen."""

    @property
    def sub(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def roles(self) -> tuple[str, ...]: ...

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
    out = [
        inbox_item(e["run"], ap, who) for e in entries for ap in e["approvals"] if why_not(who, e["run"], ap) is None
    ]
    return sorted(out, key=lambda i: (i.get("requested_at") or "", i["approval_id"]))


class Shared:
    """One frame for many watchers: encoded once per encoding and framed once (the run events' fast path), so a
    change costs one `transport.write` of ready bytes per person, however many people get it."""

    __slots__ = ("_done", "frame")

    def __init__(self, frame: dict[str, Any]) -> None:
        self.frame = frame
        self._done: dict[str, tuple[bytes, bytes]] = {}

    def get(self, encoding: str) -> tuple[bytes, bytes]:
        """(the payload, the payload as one WebSocket frame)."""
        got = self._done.get(encoding)
        if got is None:
            payload = encode(self.frame, encoding)  # type: ignore[arg-type]
            payload = payload.encode() if isinstance(payload, str) else payload
            got = self._done[encoding] = (payload, wire_frame(payload, encoding == "msgpack"))
        return got


class Watcher(Protocol):
    """A connection watching the inbox or the run list (connection.Connection). Read-only properties, so that a
    connection's narrower types (its `Encoding` literal) fit."""

    @property
    def identity(self) -> Any: ...
    @property
    def encoding(self) -> str: ...

    def send_control(self, frame: Any) -> None: ...

    def send_shared(self, frames: list[Shared]) -> None: ...


def _class_of(who: Any) -> tuple[Any, ...]:
    """What visibility depends on, for everyone alike: the roles and the token's runs (not the person)."""
    return (tuple(who.roles), tuple(getattr(who, "runs", ("*",))))


def scope(who: Any) -> tuple[Any, ...]:
    """What a person may see in the feeds, as far as their token says: its roles and its runs. A renewing hello whose
    token changes it moves the connection's feeds (`Feeds.detach`, then subscribe again)."""
    return _class_of(who)


def _run_key(run: dict[str, Any]) -> tuple[str, str]:
    """The run list's order (newest first = highest key), as the backends list it."""
    return (str(run.get("created_at") or ""), run["run_id"])


class _View:
    """What a run list shows: the keys of its runs. Shared, and never changed once shared: every list of one class,
    limit and filters that shows the same runs holds the same view (`Feeds._intern`), so a tick folds each change
    once per view, not once per list (a team's pages mostly show the same newest runs)."""

    __slots__ = ("__weakref__", "keys", "shown")

    def __init__(self, shown: dict[str, tuple[str, str]], keys: list[tuple[str, str]]) -> None:
        self.shown = shown  # run_id -> key, of the runs this list shows
        self.keys = keys  # the same keys, ascending (keys[0]: the oldest shown)

    def copy(self) -> _View:
        return _View(dict(self.shown), list(self.keys))

    def fold(
        self,
        run: dict[str, Any],
        match: Callable[[dict[str, Any]], bool] | None,
        limit: int,
        shown: list[dict[str, Any]],
        left: list[str],
    ) -> bool:
        """One changed run, into a view not yet shared (a copy): into `shown` if the list shows it (or it enters the
        list, pushing the oldest out into `left`); False if it is outside the list."""
        rid = run["run_id"]
        key = self.shown.get(rid)
        matches = match is None or match(run)
        if key is not None:
            if matches:
                shown.append(run)
            else:  # no longer what the list's filters ask for
                del self.shown[rid]
                self.keys.remove(key)
                left.append(rid)
            return True
        key = _run_key(run)
        if not matches or (len(self.keys) >= limit and (not self.keys or key < self.keys[0])):
            return False
        insort(self.keys, key)
        self.shown[rid] = key
        shown.append(run)
        if len(self.keys) > limit:
            gone = self.keys.pop(0)[1]
            del self.shown[gone]
            left.append(gone)
        return True


class _RunsWatch:
    __slots__ = ("buffer", "filters", "fkey", "limit", "match", "outside", "sent_at", "view")

    def __init__(self, limit: int, filters: dict[str, str] | None = None) -> None:
        # The latest change of each run, held back while the snapshot is being read.
        self.buffer: dict[str, dict[str, Any]] | None = {}
        self.limit = limit
        self.filters = filters or None
        self.fkey = tuple(sorted(filters.items())) if filters else None  # the filters, hashable (a view's key)
        # the list's filters (None: every run the token may see)
        self.match: Callable[[dict[str, Any]], bool] | None = (
            (lambda run: run_matches(run, filters)) if filters else None
        )
        self.view = _View({}, [])
        self.outside = 0  # changes outside the list not sent yet
        self.sent_at = -OUTSIDE_TICKS  # the flush that last sent this list a frame


def runs_frame(shown: list[dict[str, Any]], left: list[str], outside: int) -> dict[str, Any]:
    """A run list's changes of one tick: the runs it shows that changed (or entered it), those that left it, and
    how many runs outside it changed."""
    frame: dict[str, Any] = {"type": "run.status", "runs": shown, "outside": outside}
    if left:
        frame["left"] = left
    return frame


class Feeds:
    """One node's view of every run with an open approval, and what each of its feed watchers has been told.

    Entries come in from the backend at any time (`on_entry` only keeps the newest per run: nothing else happens on
    the commit path); `flush`, once per node tick, folds them and writes each watcher all its frames of the tick at
    once. Visibility is decided once per change and class of viewer (roles and token runs); each frame is encoded once
    for everyone who gets it (`Shared`)."""

    def __init__(
        self,
        may_watch: Callable[[Any, dict[str, Any]], bool] | None = None,
        on_pending: Callable[[], None] | None = None,
    ) -> None:
        # who may see a run in the run list (the hub's: the token's runs and a role to watch; service.py)
        self._may_watch = may_watch or (lambda who, run: who.can_see(run["run_id"]))
        self._on_pending = on_pending  # entries wait: the hub schedules a flush (None: the caller flushes)
        self.open: dict[str, dict[str, Any]] = {}  # run_id -> entry, for runs with an open approval
        self._versions: OrderedDict[str, int] = OrderedDict()
        self._pending: dict[str, dict[str, Any]] = {}  # run_id -> its newest entry not yet flushed
        # While the index is read again (begin_load .. load): the runs whose entries arrived meanwhile. Their live
        # entry is at least as new as the read, which may have missed them (the index is written after the entry
        # is published on one Redis, and in a separate script on a cluster).
        self._arrived: set[str] | None = None
        self._inbox: dict[Watcher, dict[str, str]] = {}  # watcher -> {approval_id: run_id} it was told about
        self._inbox_classes: dict[tuple[Any, ...], set[Watcher]] = {}
        # run_id -> approval_id -> the watchers told about it: an update looks at its own run only
        self._told: dict[str, dict[str, set[Watcher]]] = {}
        self._runs: dict[Watcher, _RunsWatch] = {}
        self._runs_classes: dict[tuple[Any, ...], set[Watcher]] = {}
        # (class, limit, filters, keys) -> the one view of every list that shows those runs
        self._views: weakref.WeakValueDictionary[tuple[Any, ...], _View] = weakref.WeakValueDictionary()
        self._owed = False  # some run list holds a count of changes outside it not sent yet
        self.frames_out = 0  # feed frames written (each frame to each watcher)
        self.flushes = 0
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
        """A run changed (from the backend's feed): kept until the next flush. Entries older than what this node
        holds are dropped; of several changes of one run in a tick only the newest counts (it is the whole truth)."""
        if not self._newer(e):
            return
        if e.get("mentions"):
            self._on_mentions(e, live=True)
        if self._arrived is not None:
            self._arrived.add(e["run"]["run_id"])
        first = not self._pending
        self._pending[e["run"]["run_id"]] = e
        if first and self._on_pending is not None:
            self._on_pending()

    def flush(self) -> None:
        """Fold what arrived since the last flush and write every watcher its frames (one write per watcher)."""
        if not self._pending and not self._owed:
            return
        pending, self._pending = self._pending, {}
        self.flushes += 1
        self._owed = False
        out: dict[Watcher, list[Shared]] = {}
        for rid, e in pending.items():
            old = self.open.get(rid)
            if is_open(e):
                self.open[rid] = e
            else:
                self.open.pop(rid, None)
            if old is not None or is_open(e) or rid in self._told:
                self._inbox_update(rid, e, out)
        if self._runs:
            self._runs_update([e["run"] for e in pending.values()], out)
        self._write(out)
        if self._owed and self._on_pending is not None:
            self._on_pending()  # counts outside the lists are still to be sent: tick again

    def _write(self, out: dict[Watcher, list[Shared]]) -> None:
        for w, items in out.items():
            self.frames_out += len(items)
            try:
                w.send_shared(items)
            except Exception:
                log.exception("writing the feed to a watcher failed")

    def begin_load(self) -> None:
        """The index is about to be read (then `load`): note the runs whose entries arrive meanwhile."""
        self.flush()
        self._arrived = set()

    def load(self, entries: list[dict[str, Any]]) -> None:
        """The index of open runs as read from the backend (at start, and after the feed was interrupted): runs not in
        it are closed unless a newer entry says otherwise, or one arrived since `begin_load`; every inbox watcher gets
        the difference."""
        self.flush()
        arrived, self._arrived = self._arrived or set(), None
        fresh = {rid: e for rid, e in self.open.items() if rid in arrived}
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
        out: dict[Watcher, list[Shared]] = {}
        for w in list(self._inbox):
            self._resend(w, out)
        self._write(out)

    # ------------------------------------------------------------------ inbox watchers
    def _tell(self, w: Watcher, aid: str, rid: str) -> None:
        self._inbox[w][aid] = rid
        self._told.setdefault(rid, {}).setdefault(aid, set()).add(w)

    def _untell(self, w: Watcher, aid: str) -> str | None:
        rid = self._inbox[w].pop(aid, None)
        if rid is not None:
            by_run = self._told.get(rid, {})
            ws = by_run.get(aid)
            if ws is not None:
                ws.discard(w)
                if not ws:
                    del by_run[aid]
                    if not by_run:
                        self._told.pop(rid, None)
        return rid

    def add_inbox(self, w: Watcher, request_id: str | None = None) -> None:
        """Subscribe (or subscribe again): the current set as an `inbox` snapshot, then differences. What arrived
        before it is folded first (an early tick), so the snapshot is all this node knows."""
        self.flush()
        self.remove_inbox(w)
        items = inbox_of(w.identity, self.open.values())
        self._inbox[w] = {}
        self._inbox_classes.setdefault(_class_of(w.identity), set()).add(w)
        for i in items:
            self._tell(w, i["approval_id"], i["run_id"])
        frame: dict[str, Any] = {"type": "inbox", "approvals": items}
        mentions = self.mentions_of(w.identity)
        if mentions:  # (absent when there are none: the approvals set is what it always was)
            frame["mentions"] = mentions
        if request_id is not None:
            frame["id"] = request_id
        w.send_control(frame)

    def remove(self, w: Watcher) -> None:
        self.remove_inbox(w)
        self.remove_runs(w)

    def detach(self, w: Watcher) -> tuple[bool, tuple[int, dict[str, str] | None] | None]:
        """Take `w` out of both feeds, before its identity changes (their classes are keyed by it), and say what it
        watched: whether the inbox, and the run list's limit and filters (None: no run list)."""
        watch = self._runs.get(w)
        runs = (watch.limit, watch.filters) if watch is not None else None
        inbox = self.remove_inbox(w)
        self.remove_runs(w)
        return inbox, runs

    def remove_inbox(self, w: Watcher) -> bool:
        told = self._inbox.get(w)
        if told is None:
            return False
        for aid in list(told):
            self._untell(w, aid)
        del self._inbox[w]
        key = _class_of(w.identity)
        ws = self._inbox_classes.get(key)
        if ws is not None:
            ws.discard(w)
            if not ws:
                del self._inbox_classes[key]
        return True

    def _inbox_update(self, rid: str, e: dict[str, Any], out: dict[Watcher, list[Shared]]) -> None:
        """Who may decide each approval of this run now, against who was told (the run's own index, not each
        person's whole inbox): visibility, status and roles once per class of viewer, then only the person's own rules
        (self-approval, a vote of theirs) per person."""
        run = e["run"]
        aps = {ap["approval_id"]: ap for ap in e["approvals"]}
        starter = (run.get("started_by") or {}).get("sub")
        by_class: dict[tuple[str, tuple[Any, ...]], str | None] = {}

        def reason_of(w: Watcher, ap: dict[str, Any] | None) -> str | None:
            if ap is None:
                return "closed"
            who = w.identity
            key = (ap["approval_id"], _class_of(who))
            if key not in by_class:
                by_class[key] = why_not(_ClassRep(who), run, ap)
            reason = by_class[key]
            if reason is not None:
                return reason
            if not ap["policy"]["allow_self"] and who.sub == starter:
                return "self"
            if any(v["sub"] == who.sub for v in ap.get("votes", ())):
                return "voted"
            return None

        # Those told who may no longer decide: removed (with the reason), once.
        removed: dict[tuple[str, str], Shared] = {}
        for aid, ws in list(self._told.get(rid, {}).items()):
            ap = aps.get(aid)
            for w in list(ws):
                reason = reason_of(w, ap)
                if reason is None:
                    continue  # still theirs to decide
                frame = removed.get((aid, reason))
                if frame is None:
                    frame = removed[(aid, reason)] = Shared(
                        {"type": "inbox.removed", "run_id": rid, "approval_id": aid, "reason": reason}
                    )
                self._untell(w, aid)
                out.setdefault(w, []).append(frame)
        if run["status"] != "paused":
            return
        # Those who may decide and were not told: added, once. (The loop over every watcher of a class is the feed's
        # hottest: `_tell` is inlined, and the run's index of who was told is made only once someone is.)
        by_aid = self._told.get(rid)
        inboxes = self._inbox
        for aid, ap in aps.items():
            if ap["status"] != "pending":
                continue
            told = by_aid.get(aid) if by_aid is not None else None
            voters = {v["sub"] for v in ap.get("votes", ())}
            no_self = not ap["policy"]["allow_self"]
            reviewers = set(ap.get("reviewers") or ())
            added: dict[bool, Shared] = {}  # one frame for everyone, one for the requested reviewers (issue 21)
            for ws in self._inbox_classes.values():
                if why_not(_ClassRep(next(iter(ws)).identity), run, ap) is not None:
                    continue  # nobody of this class may decide it (not visible, not their role)
                personal = bool(voters or reviewers)  # (else one frame for everyone of the class, the starter aside)
                for w in ws:
                    if told is not None and w in told:
                        continue
                    asked = False
                    if personal or no_self:
                        sub = w.identity.sub
                        if sub in voters or (no_self and sub == starter):
                            continue
                        asked = sub in reviewers
                    frame = added.get(asked)
                    if frame is None:
                        frame = added[asked] = Shared(
                            {"type": "inbox.added", "approval": inbox_item(run, ap, w.identity if asked else None)}
                        )
                    if told is None:
                        if by_aid is None:
                            by_aid = self._told[rid] = {}
                        told = by_aid[aid] = set()
                    told.add(w)  # (as _tell)
                    inboxes[w][aid] = rid
                    frames = out.get(w)
                    if frames is None:
                        out[w] = [frame]
                    else:
                        frames.append(frame)

    def _resend(self, w: Watcher, out: dict[Watcher, list[Shared]]) -> None:
        told = self._inbox.get(w)
        if told is None:
            return
        items = {i["approval_id"]: i for i in inbox_of(w.identity, self.open.values())}
        for aid in [a for a in told if a not in items]:
            rid = self._untell(w, aid)
            out.setdefault(w, []).append(
                Shared({"type": "inbox.removed", "run_id": rid, "approval_id": aid, "reason": "closed"})
            )
        for aid, item in items.items():
            if aid not in told:
                self._tell(w, aid, item["run_id"])
                out.setdefault(w, []).append(Shared({"type": "inbox.added", "approval": item}))

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
        """Start holding changes for `w` until `runs_snapshot` has sent what the backend listed (`filters`: the
        `subscribe_runs` filters, `run_matches`)."""
        self.remove_runs(w)
        self._runs[w] = _RunsWatch(limit, filters)
        self._runs_classes.setdefault(_class_of(w.identity), set()).add(w)

    def _intern(self, cls: tuple[Any, ...], watch: _RunsWatch, view: _View) -> _View:
        """The one view with these runs among this class's lists of this limit and filters (`view` if it is new)."""
        key = (cls, watch.limit, watch.fkey, tuple(view.keys))
        got = self._views.get(key)
        if got is None:
            self._views[key] = got = view
        return got

    def runs_snapshot(self, w: Watcher, runs: list[dict[str, Any]], request_id: str | None = None) -> None:
        watch = self._runs.get(w)
        if watch is None:
            return
        visible = [r for r in runs if self._may_watch(w.identity, r) and (watch.match is None or watch.match(r))]
        visible = visible[: watch.limit]
        frame: dict[str, Any] = {"type": "runs", "runs": visible}
        if request_id is not None:
            frame["id"] = request_id
        w.send_control(frame)
        view = _View({}, [])
        view.shown = {r["run_id"]: _run_key(r) for r in visible}
        view.keys = sorted(view.shown.values())
        while len(view.keys) > watch.limit:
            del view.shown[view.keys.pop(0)[1]]
        versions = {r["run_id"]: r["version"] for r in visible}
        held, watch.buffer = watch.buffer or {}, None
        shown: list[dict[str, Any]] = []
        left: list[str] = []
        outside = 0
        for run in held.values():
            if run["version"] > versions.get(run["run_id"], -1) and not view.fold(
                run, watch.match, watch.limit, shown, left
            ):
                outside += 1
        watch.view = self._intern(_class_of(w.identity), watch, view)
        if shown or left or outside:
            self.frames_out += 1
            w.send_shared([Shared(runs_frame(shown, left, outside))])

    def _runs_update(self, changed: list[dict[str, Any]], out: dict[Watcher, list[Shared]]) -> None:
        """Each run list: the changed runs it shows (or that enter it) in one frame, and a count of the others it may
        see, sent with the next such frame or on its own every OUTSIDE_TICKS flushes. Visibility is decided once per
        class, and the changes folded once per view (the lists that show the same runs); a list looks only at the
        changed runs at least as new as the oldest it shows (the rest are counted)."""
        made: dict[tuple[int, int, int], tuple[Shared, list[Any], list[Any]]] = {}
        tick = self.flushes
        no_runs: list[Any] = []
        for cls, ws in self._runs_classes.items():
            rep = next(iter(ws)).identity
            visible = sorted((run for run in changed if self._may_watch(rep, run)), key=_run_key) if changed else []
            keys = [_run_key(run) for run in visible]
            # (view, limit, filters) -> (that view, the view after this tick, shown, left, changes outside)
            steps: dict[tuple[int, int, Any], tuple[_View, _View, list[dict[str, Any]], list[str], int]] = {}
            for w in ws:
                watch = self._runs[w]
                if watch.buffer is not None:
                    for run in visible:
                        watch.buffer[run["run_id"]] = run
                    continue
                shown: list[dict[str, Any]] = no_runs
                left: list[str] = no_runs
                if visible:
                    step_key = (id(watch.view), watch.limit, watch.fkey)
                    step = steps.get(step_key)
                    if step is None:
                        view = watch.view
                        lo = bisect_left(keys, view.keys[0]) if len(view.keys) >= watch.limit and view.keys else 0
                        after = view.copy()
                        shown, left, outside = [], [], lo
                        for run in reversed(visible[lo:]):  # newest first: a new run takes its place before older
                            if not after.fold(run, watch.match, watch.limit, shown, left):
                                outside += 1
                        # (the view before is kept in the step: its id stays unique while the tick lasts)
                        step = steps[step_key] = (view, self._intern(cls, watch, after), shown, left, outside)
                    _, watch.view, shown, left, outside = step
                    watch.outside += outside
                if not shown and not left and not (watch.outside and tick - watch.sent_at >= OUTSIDE_TICKS):
                    if watch.outside:
                        self._owed = True
                    continue
                key = (id(shown), id(left), watch.outside)  # (a step's lists: the same for every list of its view)
                got = made.get(key)
                if got is None:  # (the lists are kept with the frame: their ids stay unique while the flush lasts)
                    got = made[key] = (Shared(runs_frame(shown, left, watch.outside)), shown, left)
                frame = got[0]
                watch.outside, watch.sent_at = 0, tick
                out.setdefault(w, []).append(frame)

    def runs_watchers(self) -> list[tuple[Watcher, int, dict[str, str] | None]]:
        return [(w, watch.limit, watch.filters) for w, watch in self._runs.items()]

    def remove_runs(self, w: Watcher) -> bool:
        if self._runs.pop(w, None) is None:
            return False
        key = _class_of(w.identity)
        ws = self._runs_classes.get(key)
        if ws is not None:
            ws.discard(w)
            if not ws:
                del self._runs_classes[key]
        return True


class _ClassRep:
    """A class of viewers for the rules that do not depend on the person (visibility, status, roles)."""

    __slots__ = ("_who",)

    def __init__(self, who: Any) -> None:
        self._who = who

    sub = ""  # nobody: the self-approval and vote rules are the person's, checked per person

    @property
    def name(self) -> str:
        return ""

    @property
    def roles(self) -> tuple[str, ...]:
        return tuple(self._who.roles)

    def can_see(self, run_id: str) -> bool:
        return bool(self._who.can_see(run_id))


OnEntry = Callable[[dict[str, Any]], None]
