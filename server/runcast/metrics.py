"""Counters and gauges of one hub node, rendered for Prometheus at `/metrics`."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .hub import Hub


class Metrics:
    def __init__(self) -> None:
        self.connections = 0
        self.connections_total = 0
        self.frames_in = 0
        self.frames_out = 0
        self.errors: dict[str, int] = {}
        self.slow_consumers = 0

    def render(self, hub: "Hub") -> str:
        lines = [
            "# TYPE runcast_connections gauge", f"runcast_connections {self.connections}",
            "# TYPE runcast_connections_total counter", f"runcast_connections_total {self.connections_total}",
            "# TYPE runcast_frames_in_total counter", f"runcast_frames_in_total {self.frames_in}",
            "# TYPE runcast_frames_out_total counter", f"runcast_frames_out_total {self.frames_out}",
            "# TYPE runcast_slow_consumers_closed_total counter", f"runcast_slow_consumers_closed_total {self.slow_consumers}",
            "# TYPE runcast_runs_watched gauge", f"runcast_runs_watched {hub.fanout.runs_watched}",
            "# TYPE runcast_active_segments gauge", f"runcast_active_segments {len(hub.worker.active) if hub.worker else 0}",
            "# TYPE runcast_errors_total counter",
        ]
        lines += [f'runcast_errors_total{{code="{c}"}} {n}' for c, n in sorted(self.errors.items())]
        return "\n".join(lines) + "\n"
