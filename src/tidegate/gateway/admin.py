"""The admin HTTP app: `/_count` and `/_stack` (more routes are added by later modules).

`build_admin_app(gateway)` returns a plain `aiohttp.web.Application`; another module can add
routes to it before it is started, or mount it as a sub-app.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import traceback
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from tidegate.gateway.server import Gateway

__all__ = ["GATEWAY_KEY", "build_admin_app", "count_tasks", "dump_stacks"]

GATEWAY_KEY: web.AppKey[Gateway] = web.AppKey("gateway")


def count_tasks() -> int:
    """Live asyncio tasks of the running loop (the gateway runs one loop per process)."""
    return len(asyncio.all_tasks())


def dump_stacks() -> str:
    """Every task and thread, Go debug=2 style, via `tidegate.leaks` when available."""
    try:
        from tidegate import leaks
    except ImportError:
        return _fallback_dump()
    return str(leaks.format_dump(leaks.snapshot()))


def _fallback_dump() -> str:
    # Used only while `tidegate.leaks` is absent: plain stacks, no blocking analysis.
    parts: list[str] = []
    for task in asyncio.all_tasks():
        frames = (
            traceback.format_list(traceback.extract_stack(task.get_stack()[-1]))
            if (task.get_stack())
            else []
        )
        parts.append(f"task {task.get_name()} [{task._state.lower()}]:\n" + "".join(frames))
    frames_by_thread = sys._current_frames()
    for thread in threading.enumerate():
        frame = frames_by_thread.get(thread.ident or -1)
        stack = "".join(traceback.format_stack(frame)) if frame is not None else ""
        parts.append(f"thread {thread.name} [running]:\n{stack}")
    return "\n".join(parts)


async def _count(request: web.Request) -> web.Response:
    return web.Response(text=str(count_tasks()), content_type="text/plain")


async def _stack(request: web.Request) -> web.Response:
    return web.Response(text=dump_stacks(), content_type="text/plain")


def build_admin_app(gateway: Gateway) -> web.Application:
    app = web.Application()
    app[GATEWAY_KEY] = gateway
    app.router.add_get("/_count", _count)
    app.router.add_get("/_stack", _stack)
    return app
