"""Presence on Redis: per run, a ZSET of connection ids scored by their expiry (ms, Redis's own clock), a HASH of their
entries, a version counter, and the who-watched HASH. Every key carries the `{run_id}` hash tag, so one run's presence
lives in one cluster slot with its log.

    P:run:{R}:presence       ZSET connection id -> expiry (ms)
    P:run:{R}:presence:data  HASH connection id -> entry JSON {connection_id, sub, name, roles, typing?}
    P:run:{R}:presence:v     the version: +1 for every entry added, changed or removed (refreshes do not count)
    P:run:{R}:watched        HASH first:<sub>, last:<sub> (ms), name:<sub>

Each node adds and refreshes only its own watchers' entries, in a few variadic commands per run (presence_put.lua), so
a crowd's refreshes cost the same as one watcher's. An entry whose node stopped
refreshing it expires, and the next reader drops it (presence_read.lua): a killed node's watchers leave everyone's
list within a ttl, with no one left to log a `left` for them.
"""

from __future__ import annotations

import json
from typing import Any

from . import scripts


class Presence:
    """Mixed into RedisBackend: uses its `_redis`, `_k()` and `retention_s`."""

    _redis: Any
    retention_s: float
    _k: Any  # RedisBackend's key maker

    def _presence_scripts(self) -> tuple[Any, Any, Any]:
        ps = getattr(self, "_ps_scripts", None)
        if ps is None:
            ps = self._ps_scripts = (
                self._redis.register_script(scripts.PRESENCE_PUT),
                self._redis.register_script(scripts.PRESENCE_LEAVE),
                self._redis.register_script(scripts.PRESENCE_READ),
            )
        return ps

    def _presence_keys(self, run_id: str) -> list[str]:
        return [
            self._k(run_id, "presence"),
            self._k(run_id, "presence:data"),
            self._k(run_id, "presence:v"),
            self._k(run_id, "watched"),
        ]

    @property
    def _watched_ms(self) -> int:
        return int(self.retention_s * 1000) if self.retention_s and self.retention_s > 0 else 0

    async def presence_join(self, run_id: str, entries: list[dict[str, Any]], ttl_s: float) -> None:
        await self._presence_put(run_id, entries, ttl_s, "join")

    async def presence_refresh(self, run_id: str, entries: list[dict[str, Any]], ttl_s: float) -> None:
        """One script of a few variadic commands per run, whatever the number of entries (see presence_put.lua)."""
        await self._presence_put(run_id, entries, ttl_s, "refresh")

    async def _presence_put(self, run_id: str, entries: list[dict[str, Any]], ttl_s: float, mode: str) -> None:
        if not entries:
            return
        args: list[Any] = [max(1, int(ttl_s * 1000)), self._watched_ms, mode]
        for e in entries:
            args += [e["connection_id"], json.dumps(e, separators=(",", ":")), e["sub"], e.get("name") or e["sub"]]
        await self._presence_scripts()[0](keys=self._presence_keys(run_id), args=args)

    async def presence_leave(self, run_id: str, entries: list[dict[str, Any]]) -> None:
        if not entries:
            return
        args: list[Any] = [self._watched_ms]
        for e in entries:
            args += [e["connection_id"], e["sub"]]
        await self._presence_scripts()[1](keys=self._presence_keys(run_id), args=args)

    async def presence_read(
        self, run_id: str, known_version: int | None = None
    ) -> tuple[int, dict[str, dict[str, Any]] | None]:
        res = await self._presence_scripts()[2](
            keys=self._presence_keys(run_id)[:3], args=["" if known_version is None else str(known_version)]
        )
        version = int(res[0])
        if len(res) == 1 and known_version == version:
            return version, None
        entries = [json.loads(raw) for raw in res[1:]]
        return version, {e["connection_id"]: e for e in entries}

    async def watched(self, run_id: str) -> list[dict[str, Any]]:
        raw = await self._redis.hgetall(self._k(run_id, "watched"))
        people: dict[str, dict[str, Any]] = {}
        for k, v in raw.items():
            field, _, sub = k.decode().partition(":")
            rec = people.setdefault(sub, {"sub": sub, "name": sub})
            if field == "name":
                rec["name"] = v.decode()
            elif field in ("first", "last"):
                rec[f"{field}_seen"] = int(v) / 1000
        out = [r for r in people.values() if "first_seen" in r]
        for r in out:
            r.setdefault("last_seen", r["first_seen"])
        return sorted(out, key=lambda r: (r["first_seen"], r["sub"]))
