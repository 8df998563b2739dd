"""The Lua scripts of the Redis backend, kept as `.lua` files beside this module and loaded once at import."""

from __future__ import annotations

from importlib import resources

_DIR = resources.files(__package__) / "lua"


def _load(name: str) -> str:
    return (_DIR / f"{name}.lua").read_text(encoding="utf-8")


_APPEND_EVENTS = _load("append_events")
APPEND = _APPEND_EVENTS + _load("append")
COMMIT = _APPEND_EVENTS + _load("commit")
FLUSH = _load("flush")
READ = _load("read")
SAVE_STATE = _load("save_state")
QUOTA = _load("quota")
QUOTA_OK, QUOTA_OPEN, QUOTA_RATE = 0, 1, 2  # quota.lua's answers

# Script answers: {OK, first_seq} | {TRIMMED, first_kept} | {CONFLICT} | {NOT_OWNER} | {LANDED, first_seq}
OK, TRIMMED, CONFLICT, NOT_OWNER, LANDED = 0, 1, 2, 3, 4
PRESENCE_PUT = _load("presence_put")
PRESENCE_LEAVE = _load("presence_leave")
PRESENCE_READ = _load("presence_read")
