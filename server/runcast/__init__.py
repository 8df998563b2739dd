"""Runcast: a WebSocket hub that fans OpenAI Agents SDK runs out to every watcher, and lets a team approve tool
calls."""

from typing import Any

__version__ = "0.1.0"

__all__ = ["AgentSpec", "ApprovalPolicy", "Registry", "__version__"]


def __getattr__(name: str) -> Any:
    """`from runcast import AgentSpec` as before, imported when first asked for: the terminal commands (`runcast
    runs`, `watch`...) import this package too, and must not wait for the Agents SDK to load (seconds of CPU)."""
    if name == "ApprovalPolicy":
        from .approvals import ApprovalPolicy

        return ApprovalPolicy
    if name in ("AgentSpec", "Registry"):
        from . import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'runcast' has no attribute {name!r}")
