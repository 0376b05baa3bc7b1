"""The operator surface: Prometheus metrics, loop watchdog, profiler, dashboard, admin routes.

Nothing here touches the fan-out hot path: the gateway bumps plain integers, and this package
reads them through a stats callable when someone looks (a scrape, a dashboard poll).

Wiring, from the gateway's side::

    metrics = OpsMetrics(lambda: stats_from_snapshot(gateway.statistics()))
    watchdog = Watchdog(lag_histogram=metrics.loop_lag)
    watchdog.start()                                  # in the gateway's loop
    app = build_admin_app(gateway)
    add_ops_routes(app, stats=metrics.stats, registry=metrics.registry, watchdog=watchdog)
    ...
    await watchdog.close()
"""

from .admin_routes import add_ops_routes, debug_vars
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
    "dashboard_html",
    "debug_vars",
    "open_watchdog",
    "process_stats",
    "profile_thread",
    "stats_from_snapshot",
    "to_speedscope",
]
