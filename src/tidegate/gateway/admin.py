"""The gateway's admin app: the operator routes of `tidegate.ops`, fed with this gateway's
figures through the callables it is handed. See docs/operating.md for every route and metric."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from tidegate.gateway.stats import GatewayStatistics
from tidegate.ops import OpsMetrics, Watchdog, add_ops_routes, stats_from_snapshot

__all__ = ["build_admin_app", "gateway_metrics"]


def gateway_metrics(statistics: Callable[[], GatewayStatistics]) -> OpsMetrics:
    """A metrics registry that reads `statistics()` at each scrape."""
    return OpsMetrics(lambda: stats_from_snapshot(statistics()))


def build_admin_app(
    *,
    metrics: OpsMetrics,
    watchdog: Watchdog | None,
    admin_token: str | None,
    ready: Callable[[], bool],
) -> web.Application:
    app = web.Application()
    add_ops_routes(
        app,
        stats=metrics.stats,
        registry=metrics.registry,
        watchdog=watchdog,
        admin_token=admin_token,
        ready=ready,
    )
    return app
