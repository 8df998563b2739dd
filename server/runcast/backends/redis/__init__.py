"""The Redis backend: many hub nodes and workers on one Redis (see `backend.py` for the key layout)."""

from .backend import RedisBackend

__all__ = ["RedisBackend"]
