"""Runcast: a WebSocket hub that fans OpenAI Agents SDK runs out to every watcher, and lets a team approve tool calls."""

__version__ = "0.1.0"

from .approvals import ApprovalPolicy  # noqa: E402
from .registry import AgentSpec, Registry  # noqa: E402

__all__ = ["AgentSpec", "ApprovalPolicy", "Registry", "__version__"]
