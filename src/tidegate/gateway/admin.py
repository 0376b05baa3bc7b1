"""The gateway's admin app: the operator routes of `tidegate.ops`, fed with this gateway's
figures. See docs/operating.md for every route and metric."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from tidegate.ops import OpsMetrics, Watchdog, add_ops_routes, stats_from_snapshot

if TYPE_CHECKING:
    from tidegate.gateway.server import Gateway

__all__ = ["build_admin_app", "gateway_metrics"]


def gateway_metrics(gateway: Gateway) -> OpsMetrics:
    """A metrics registry that reads `gateway.statistics()` at each scrape."""
    return OpsMetrics(lambda: stats_from_snapshot(gateway.statistics()))


def build_admin_app(
    gateway: Gateway,
    metrics: OpsMetrics,
    *,
    watchdog: Watchdog | None,
    admin_token: str | None,
) -> web.Application:
    app = web.Application()
    add_ops_routes(
        app,
        stats=metrics.stats,
        registry=metrics.registry,
        watchdog=watchdog,
        admin_token=admin_token,
        ready=gateway.ready,
    )
    return app
