"""The gateway's admin app: the operator routes of `tidegate.ops`, fed with this gateway's
figures through the callables it is handed. See docs/operating.md for every route and metric."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from aiohttp import web

from tidegate.gateway.config import Config
from tidegate.gateway.connections import sweep_interval
from tidegate.gateway.stats import GatewayStatistics
from tidegate.ops import OpsMetrics, Watchdog, add_ops_routes, stats_from_snapshot

__all__ = ["build_admin_app", "connection_settings", "gateway_metrics"]


def gateway_metrics(statistics: Callable[[], GatewayStatistics]) -> OpsMetrics:
    """A metrics registry that reads `statistics()` at each scrape."""
    return OpsMetrics(lambda: stats_from_snapshot(statistics()))


def connection_settings(config: Config) -> dict[str, float | str]:
    """What a client connection's fate depends on, for the ``settings`` of `/debug/vars`.
    `tidegate load` reads there how long a silent client takes to be cut: its idle timeout
    runs out (seen at the next sweep), then the close linger waits for a FIN that never comes
    (ended at the next sweep)."""
    return {
        "heartbeat": config.heartbeat,
        "idle_timeout": config.effective_idle_timeout,
        "close_linger": config.close_linger,
        "sweep_interval": sweep_interval(config.shortest_connection_timeout),
        "write_timeout": config.write_timeout,
        "buffer_bytes": config.buffer_bytes,
        "overflow": config.overflow,
    }


def build_admin_app(
    *,
    metrics: OpsMetrics,
    watchdog: Watchdog | None,
    admin_token: str | None,
    ready: Callable[[], bool],
    settings: Mapping[str, float | str],
) -> web.Application:
    app = web.Application()
    add_ops_routes(
        app,
        stats=metrics.stats,
        registry=metrics.registry,
        watchdog=watchdog,
        admin_token=admin_token,
        ready=ready,
        settings=settings,
    )
    return app
