"""Who is watching a run: live state, never in the run's log. Plain code; `presence_feed.py` does the I/O.

Each hub node keeps, per run its clients watch, a `RunPresence`: the run's whole presence set as the backend last
showed it (every node's watchers), and what changed since the node last told its clients. The node's clock asks it
for a frame at most every `interval_s`; the same frame goes to every local watcher of the run, so a crowd joining
costs each watcher one frame per interval, whatever the crowd's size.

The `presence` control frame (no `seq`, never replayed; README, "Presence"):

    {"type": "presence", "run_id": R, "full": bool, "listed": "all" | "deciders",
     "joined": [{"connection_id", "sub", "name", "roles", "typing"?}, ...], "left": [connection_id, ...],
     "count": <connections watching>, "people": <distinct subs watching>}

`full: true` replaces what the client holds with `joined`; `full: false` applies `joined` and `left` to it. Up to
`list_max` connections every entry is listed; past it only the entries that may decide (any role but `viewer` and
`auditor`) are, and `count` / `people` still give the totals. A change of `listed` is sent as a full frame.

Who is typing is presence too (never logged): a connection that may `say` on the run sends `typing` true / false, and
its entry gets `"typing": true` (the key is absent otherwise), so the change reaches every watcher on every node as a
`joined` entry. `Typing` holds the rules: the flag lapses `ttl_s` after the last `typing: true`, and it clears when
the person says something on the run, or when the connection leaves it.
"""

from __future__ import annotations

from typing import Any

Entry = dict[str, Any]  # {"connection_id", "sub", "name", "roles"}, and "typing": true while the person types

INTERVAL_S = 0.25  # at most one presence frame per connection per run this often
LIST_MAX = 50  # past this many connections, only the people who may decide are listed
TYPING_TTL_S = 6.0  # a `typing: true` lasts this long unless renewed (a composer renews it every couple of seconds)


READ_ONLY_ROLES = ("viewer", "auditor")


def may_decide(entry: Entry) -> bool:
    """Anyone with a role besides `viewer` and `auditor` may act on a run (approve, operate, or a policy's own
    role)."""
    return any(r not in READ_ONLY_ROLES for r in entry.get("roles") or ())


def entry_of(connection_id: str, sub: str, name: str, roles: list[str] | tuple[str, ...]) -> Entry:
    return {"connection_id": connection_id, "sub": sub, "name": name, "roles": list(roles)}


def with_typing(entry: Entry, on: bool) -> Entry:
    """The entry with `"typing": true`, or without the key (a new dict: entries are compared, never changed)."""
    out = {k: v for k, v in entry.items() if k != "typing"}
    if on:
        out["typing"] = True
    return out


class Typing:
    """Which of one node's connections are typing on one run, and until when. Every method answers whether the
    connection's flag changed (only a change is written to the backend and sent to watchers): a renewed `typing: true`
    only moves its deadline."""

    def __init__(self, ttl_s: float = TYPING_TTL_S) -> None:
        self.ttl_s = ttl_s
        self._until: dict[str, float] = {}  # connection id -> when its flag lapses

    def __contains__(self, connection_id: str) -> bool:
        return connection_id in self._until

    def set(self, connection_id: str, on: bool, now: float) -> bool:
        if not on:
            return self.clear(connection_id)
        was = connection_id in self._until
        self._until[connection_id] = now + self.ttl_s
        return not was

    def clear(self, connection_id: str) -> bool:
        """The person said something, sent `typing: false`, or left the run."""
        return self._until.pop(connection_id, None) is not None

    def expired(self, now: float) -> list[str]:
        """The connections whose flag lapsed by `now` (cleared here: each is answered once)."""
        gone = [cid for cid, until in self._until.items() if until <= now]
        for cid in gone:
            del self._until[cid]
        return gone


class RunPresence:
    """One run's presence set on one node, and the changes its clients have not been told yet."""

    def __init__(self, run_id: str, *, interval_s: float = INTERVAL_S, list_max: int = LIST_MAX) -> None:
        self.run_id = run_id
        self.interval_s = interval_s
        self.list_max = list_max
        self.entries: dict[str, Entry] = {}
        self.version: int | None = None  # the backend's presence version this set reflects
        self._joined: dict[str, Entry] = {}  # changes since the last frame
        self._left: set[str] = set()
        self._listed = "all"
        self._last_frame = float("-inf")

    # ---- changes
    def join(self, entry: Entry) -> None:
        cid = entry["connection_id"]
        if self.entries.get(cid) == entry:
            return
        self.entries[cid] = entry
        self._left.discard(cid)
        self._joined[cid] = entry

    def leave(self, connection_id: str) -> None:
        if self.entries.pop(connection_id, None) is None:
            return
        if self._joined.pop(connection_id, None) is None:
            self._left.add(connection_id)  # (a join and a leave within one interval cancel out)

    def replace(self, entries: dict[str, Entry], version: int | None = None) -> None:
        """The backend's whole set: diff it against what we hold."""
        for cid in [c for c in self.entries if c not in entries]:
            self.leave(cid)
        for e in entries.values():
            self.join(e)
        self.version = version

    # ---- frames
    @property
    def listed(self) -> str:
        return "all" if len(self.entries) <= self.list_max else "deciders"

    def _shown(self, entry: Entry, listed: str) -> bool:
        return listed == "all" or may_decide(entry)

    def _totals(self) -> dict[str, int]:
        return {"count": len(self.entries), "people": len({e["sub"] for e in self.entries.values()})}

    def snapshot(self) -> dict[str, Any]:
        """The full frame, for a client that just subscribed."""
        listed = self.listed
        return {
            "type": "presence",
            "run_id": self.run_id,
            "full": True,
            "listed": listed,
            "joined": [e for e in self.entries.values() if self._shown(e, listed)],
            "left": [],
            **self._totals(),
        }

    @property
    def changed(self) -> bool:
        return bool(self._joined or self._left)

    def due(self, now: float) -> bool:
        return self.changed and now - self._last_frame >= self.interval_s

    def frame(self, now: float) -> dict[str, Any] | None:
        """What changed since the last frame, as one frame; None if nothing did or the interval has not passed."""
        if not self.due(now):
            return None
        self._last_frame = now
        listed = self.listed
        joined, left = self._joined, self._left
        self._joined, self._left = {}, set()
        if listed != self._listed:
            self._listed = listed
            return self.snapshot()
        shown = [e for e in joined.values() if self._shown(e, listed)]
        # In `deciders` mode a client never held a viewer's entry, but a leave costs only its id: send them all.
        return {
            "type": "presence",
            "run_id": self.run_id,
            "full": False,
            "listed": listed,
            "joined": shown,
            "left": sorted(left),
            **self._totals(),
        }


def apply_frame(held: dict[str, Entry], frame: dict[str, Any]) -> dict[str, Entry]:
    """A client's fold of presence frames (the Python twin of client_js's): connection id -> entry."""
    out = {} if frame.get("full") else dict(held)
    for cid in frame.get("left") or ():
        out.pop(cid, None)
    for e in frame.get("joined") or ():
        out[e["connection_id"]] = e
    return out


class Onlookers:
    """A client's side of the `presence` frames, told person by person (the terminal's `runcast watch`): who came to
    watch, who left, who started typing. Connections are folded into people (one person on two tabs is one person),
    and the watching client's own person (`me`) is left out."""

    def __init__(self, me: str | None = None) -> None:
        self.me = me
        self.entries: dict[str, Entry] = {}
        self.told = False  # the first frame was summed up

    def _people(self) -> tuple[dict[str, str], set[str]]:
        people: dict[str, str] = {}
        typing: set[str] = set()
        for e in self.entries.values():
            sub = str(e.get("sub") or "")
            if not sub or sub == self.me:
                continue
            people.setdefault(sub, str(e.get("name") or sub))
            if e.get("typing") is True:
                typing.add(sub)
        return people, typing

    def apply(self, frame: dict[str, Any]) -> list[tuple[str, str]]:
        """Fold one `presence` frame; answer what changed as (what, name) pairs, what being `watching` (the first
        frame: everyone already there), `joined`, `left` or `typing` (started to)."""
        before, typing_before = self._people()
        self.entries = apply_frame(self.entries, frame)
        after, typing_after = self._people()
        if not self.told:
            self.told = True
            changes = [("watching", after[s]) for s in sorted(after, key=lambda s: after[s])]
        else:
            changes = [("joined", after[s]) for s in after if s not in before]
            changes += [("left", before[s]) for s in before if s not in after]
        changes += [("typing", after[s]) for s in typing_after - typing_before]
        return changes
