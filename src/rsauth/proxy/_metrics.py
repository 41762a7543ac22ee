"""The proxy's counters, and their Prometheus text exposition (format 0.0.4,
https://prometheus.io/docs/instrumenting/exposition_formats/)."""

from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass, field

__all__ = ["LATENCY_BUCKETS", "Metrics", "render"]

# Seconds from a client's startup message to its ReadyForQuery.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass
class _Values:
    sessions_open: int = 0
    sessions_total: int = 0
    sessions_refused: int = 0
    bytes_client_to_server: int = 0
    bytes_server_to_client: int = 0
    logins_fetched: int = 0
    logins_failed: int = 0
    logins_refused: int = 0
    latency_counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    latency_sum: float = 0.0


class Metrics:
    """Counters of one proxy (one workgroup), safe to read from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values = _Values()

    def add(self, name: str, delta: int = 1) -> None:
        with self._lock:
            setattr(self._values, name, getattr(self._values, name) + delta)

    def observe_latency(self, seconds: float) -> None:
        with self._lock:
            self._values.latency_counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
            self._values.latency_sum += seconds

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            values = self._values
            snapshot: dict[str, float] = {
                name: getattr(values, name)
                for name in _Values.__dataclass_fields__
                if name not in ("latency_counts", "latency_sum")
            }
            snapshot["connect_seconds_count"] = sum(values.latency_counts)
            snapshot["connect_seconds_sum"] = values.latency_sum
            cumulative = 0
            for bound, count in zip(LATENCY_BUCKETS, values.latency_counts, strict=False):
                cumulative += count
                snapshot[f"connect_seconds_le_{bound}"] = cumulative
        return snapshot


_HELP = {
    "sessions_open": ("gauge", "client sessions relayed now"),
    "sessions_total": ("counter", "client sessions that reached the database"),
    "sessions_refused": ("counter", "client connections answered with an ErrorResponse"),
    "bytes_client_to_server": ("counter", "bytes relayed from clients to the database"),
    "bytes_server_to_client": ("counter", "bytes relayed from the database to clients"),
    "logins_fetched": ("counter", "logins handed out by the broker (mostly from its cache)"),
    "logins_failed": ("counter", "logins the broker could not get (AWS refused or unreachable)"),
    "logins_refused": ("counter", "logins the database refused"),
}


def _label(workgroup: str) -> str:
    escaped = workgroup.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'workgroup="{escaped}"'


def render(snapshots: dict[str, dict[str, float]]) -> str:
    """Prometheus text for ``{workgroup: snapshot}``."""
    lines: list[str] = []
    for name, (kind, text) in _HELP.items():
        suffix = "_total" if kind == "counter" and not name.endswith("_total") else ""
        metric = f"rsauth_proxy_{name}{suffix}"
        lines.append(f"# HELP {metric} {text}")
        lines.append(f"# TYPE {metric} {kind}")
        for workgroup, snapshot in snapshots.items():
            lines.append(f"{metric}{{{_label(workgroup)}}} {int(snapshot[name])}")
    metric = "rsauth_proxy_connect_seconds"
    lines.append(f"# HELP {metric} time from a client's startup message to ReadyForQuery")
    lines.append(f"# TYPE {metric} histogram")
    for workgroup, snapshot in snapshots.items():
        label = _label(workgroup)
        for bound in LATENCY_BUCKETS:
            count = int(snapshot[f"connect_seconds_le_{bound}"])
            lines.append(f'{metric}_bucket{{{label},le="{bound}"}} {count}')
        total = int(snapshot["connect_seconds_count"])
        lines.append(f'{metric}_bucket{{{label},le="+Inf"}} {total}')
        lines.append(f"{metric}_sum{{{label}}} {snapshot['connect_seconds_sum']:.6f}")
        lines.append(f"{metric}_count{{{label}}} {total}")
    return "\n".join(lines) + "\n"
