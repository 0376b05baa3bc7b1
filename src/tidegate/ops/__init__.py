"""The operator surface: Prometheus metrics, loop watchdog, profiler, dashboard, admin routes.

The fan-out path only bumps plain integers, which this package reads through a stats callable
when someone looks (a scrape, a dashboard poll), and records one push latency per push in a
lock-free `LoopHistogram` (a bisect and two additions).

The gateway wires it in `tidegate.gateway.admin` and `Gateway.start()`: an `OpsMetrics` over
`gateway.statistics()`, a `Watchdog` observing `metrics.loop_lag`, and `add_ops_routes` on the
admin app; `Gateway.close()` closes the watchdog.
"""

from .admin_routes import add_ops_routes, bearer_guard, debug_vars
from .dashboard import dashboard_html
from .metrics import (
    GatewayCollector,
    OpsMetrics,
    ProcessStats,
    Stats,
    StatsProvider,
    process_stats,
    stats_from_snapshot,
)
from .profiler import SamplingProfiler, profile_thread, to_speedscope
from .watchdog import LoopBlock, Watchdog, open_watchdog

__all__ = [
    "GatewayCollector",
    "LoopBlock",
    "OpsMetrics",
    "ProcessStats",
    "SamplingProfiler",
    "Stats",
    "StatsProvider",
    "Watchdog",
    "add_ops_routes",
    "bearer_guard",
    "dashboard_html",
    "debug_vars",
    "open_watchdog",
    "process_stats",
    "profile_thread",
    "stats_from_snapshot",
    "to_speedscope",
]
