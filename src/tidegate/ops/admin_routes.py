"""Operator routes for the admin aiohttp app, and its optional bearer-token guard.

``add_ops_routes(app, stats=..., registry=...)`` adds to any aiohttp app:

=========================  =================================================================
``GET /``                  the live dashboard (``dashboard.html``)
``GET /_count``            live asyncio tasks of the loop, a bare integer (text/plain)
``GET /_stack``            every task and thread, Go debug=2 style (text/plain)
``GET /debug/tasks``       ``?debug=1`` (default): tasks and threads grouped by stack, with
                           counts; ``?debug=2``: every one in full (text/plain)
``GET /debug/tasks/``      the tasks a proof of leak finds blocked forever now, grouped like
``leaked``                 ``debug=1`` (text/plain); one proof shared for at least a second
``GET /debug/vars``        JSON of the live figures: tasks, threads, connections, rss_bytes,
                           open_fds, counters (the stats provider's), loop (watchdog), and
                           ``settings`` (what the app was configured with, for tools)
``GET /metrics``           Prometheus text exposition of ``registry``
``GET /healthz``           200 ``ok`` while the process serves HTTP
``GET /readyz``            200 ``ready`` / 503 ``not ready`` from the ``ready`` callable
``GET /debug/profile``     ``?seconds=N`` (0.1..``max_profile_seconds``, default 30): a CPU
                           profile of the loop thread, speedscope JSON; one at a time (409)
=========================  =================================================================

With ``admin_token`` set, every route of the app (``/_count`` and ``/_stack`` included) needs
``Authorization: Bearer <token>`` (or ``?token=<token>``, for opening the dashboard in a
browser), else 401. ``/healthz`` and ``/readyz`` stay open for probes; they reveal nothing.
Call this before the app starts: middlewares cannot be added to a running app.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry
from prometheus_client.exposition import generate_latest

from tidegate.bearer import bearer_token, secret_matches
from tidegate.leaks.endpoints import add_aiohttp_routes

from .dashboard import dashboard_html
from .metrics import ProcessStats, Stats, StatsProvider, process_stats
from .profiler import profile_thread
from .watchdog import Watchdog

__all__ = ["OPEN_PATHS", "add_ops_routes", "bearer_guard", "debug_vars"]

Ready = Callable[[], bool | Awaitable[bool]]

OPEN_PATHS: Final = frozenset({"/healthz", "/readyz"})
MIN_PROFILE_SECONDS: Final = 0.1
DEFAULT_PROFILE_SECONDS: Final = 30.0  # like Go's /debug/pprof/profile


@dataclass(slots=True)
class _Ops:
    stats: StatsProvider
    registry: CollectorRegistry
    watchdog: Watchdog | None
    ready: Ready | None
    max_profile_seconds: float
    profile_interval: float
    profiling: asyncio.Lock
    settings: Mapping[str, float | str]


_OPS: Final = web.AppKey("tidegate_ops", _Ops)

_PROCESS_KEYS: Final = ("tasks", "threads", "open_fds", "rss_bytes")


def _plain(value: float | Mapping[str, float]) -> float | dict[str, float]:
    return dict(value) if isinstance(value, Mapping) else value


def debug_vars(
    stats: Stats,
    process: ProcessStats,
    watchdog: Watchdog | None = None,
    settings: Mapping[str, float | str] | None = None,
) -> dict[str, Any]:
    """The ``/debug/vars`` document. Process figures the stats provide win over measured ones
    (so a test, or a gateway running its loop elsewhere, can supply them)."""
    out: dict[str, Any] = {"time": time.time()}
    for key in _PROCESS_KEYS:
        given = stats.get(key)
        out[key] = given if isinstance(given, int | float) else getattr(process, key)
    connections = stats.get("connections")
    out["connections"] = connections if isinstance(connections, int | float) else None
    out["counters"] = {
        key: _plain(value)
        for key, value in sorted(stats.items())
        if key not in _PROCESS_KEYS and key != "connections"
    }
    out["loop"] = None if watchdog is None else watchdog.statistics()
    out["settings"] = dict(settings or {})
    return out


def _ops(request: web.Request) -> _Ops:
    return request.config_dict[_OPS]


async def _dashboard(request: web.Request) -> web.Response:
    return web.Response(
        text=dashboard_html(),
        content_type="text/html",
        headers={"Cache-Control": "no-store"},
    )


async def _vars(request: web.Request) -> web.Response:
    ops = _ops(request)
    document = debug_vars(ops.stats(), process_stats(), ops.watchdog, ops.settings)
    return web.json_response(document, dumps=lambda obj: json.dumps(obj, indent=1))


async def _metrics(request: web.Request) -> web.Response:
    body = generate_latest(_ops(request).registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n", content_type="text/plain")


async def _readyz(request: web.Request) -> web.Response:
    ready = _ops(request).ready
    if ready is None:
        ok = True
    else:
        result = ready()
        ok = bool(await result) if inspect.isawaitable(result) else bool(result)
    if ok:
        return web.Response(text="ready\n", content_type="text/plain")
    return web.Response(status=503, text="not ready\n", content_type="text/plain")


def _profile_seconds(raw: str | None, limit: float) -> float:
    try:
        seconds = float(raw) if raw is not None else DEFAULT_PROFILE_SECONDS
    except ValueError:
        seconds = math.nan
    if not (MIN_PROFILE_SECONDS <= seconds <= limit):  # NaN fails too
        raise web.HTTPBadRequest(
            text=f"seconds must be a number from {MIN_PROFILE_SECONDS:g} to {limit:g}\n"
        )
    return seconds


async def _profile(request: web.Request) -> web.Response:
    ops = _ops(request)
    seconds = _profile_seconds(request.query.get("seconds"), ops.max_profile_seconds)
    if ops.profiling.locked():
        raise web.HTTPConflict(text="a profile is already being taken; try again later\n")
    async with ops.profiling:
        document = await profile_thread(seconds, interval=ops.profile_interval)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    return web.json_response(
        document,
        headers={"Content-Disposition": f'attachment; filename="tidegate-{stamp}.speedscope.json"'},
    )


def bearer_guard(token: str) -> Middleware:
    """A middleware refusing every route but ``OPEN_PATHS`` without the admin token."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in OPEN_PATHS:
            return await handler(request)
        given = bearer_token(request.headers.get("Authorization", ""))
        if given is None:
            given = request.query.get("token", "")
        if not secret_matches(given, token):
            raise web.HTTPUnauthorized(
                text="admin token required: Authorization: Bearer <token>\n",
                headers={"WWW-Authenticate": 'Bearer realm="tidegate-admin"'},
            )
        return await handler(request)

    return guard


def add_ops_routes(
    app: web.Application,
    *,
    stats: StatsProvider,
    registry: CollectorRegistry,
    watchdog: Watchdog | None = None,
    admin_token: str | None = None,
    ready: Ready | None = None,
    max_profile_seconds: float = 60.0,
    profile_interval: float = 0.005,
    settings: Mapping[str, float | str] | None = None,
) -> None:
    """Add the operator routes (see the module docstring) and, with ``admin_token``, the guard.
    ``settings`` go as they are into ``/debug/vars`` (a load test reads the gateway's
    timeouts there)."""
    if admin_token is not None and not admin_token:
        raise ValueError("admin_token must not be empty (use None for no token)")
    app[_OPS] = _Ops(
        stats=stats,
        registry=registry,
        watchdog=watchdog,
        ready=ready,
        max_profile_seconds=max_profile_seconds,
        profile_interval=profile_interval,
        profiling=asyncio.Lock(),
        settings=dict(settings or {}),
    )
    app.router.add_get("/", _dashboard)
    # /_count, /_stack, /debug/tasks, /debug/tasks/leaked: the same code any asyncio app
    # mounts from the detector.
    add_aiohttp_routes(app)
    app.router.add_get("/debug/vars", _vars)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/debug/profile", _profile)
    if admin_token is not None:
        app.middlewares.append(bearer_guard(admin_token))
