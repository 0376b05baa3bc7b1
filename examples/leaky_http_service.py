"""An aiohttp service with the incident's leak, and its fixed twin: `tidegate load http`'s target.

    .venv/bin/python -m examples.leaky_http_service [--port 0] [--fixed]

`GET /broadcast` starts a worker to do a slow push and waits up to 50 ms for its result; the
push takes 100 ms. Leaky: the worker then blocks forever handing back its result (the seed's
unbuffered channel, `examples.leaks.chan.Unbuffered`): one task per request. `--fixed`: the
handler owns the worker (a TaskGroup) and its timeout cancels it. The same program in Go is
`tests/load/data/leaky_go_service.go`.

The detector's endpoints are mounted as a sub-app: `GET /debug/leaks/_count` and
`/debug/leaks/debug/tasks?debug=1` (loopback only). Prints `http listening on HOST:PORT`.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from aiohttp import web

from examples.leaks.incident import TIMED_OUT, handle_broadcast_leaky, handle_broadcast_owned
from tidegate import leaks
from tidegate.leaks.endpoints import aiohttp_app

TIMEOUT = 0.05
PUSH_TIME = 0.1


async def push_to_all(message: bytes) -> str:
    await asyncio.sleep(PUSH_TIME)  # a few slow subscribers
    return f"pushed {len(message)} bytes"


def build_app(*, fixed: bool) -> web.Application:
    handler = handle_broadcast_owned if fixed else handle_broadcast_leaky

    async def broadcast(request: web.Request) -> web.Response:
        outcome = await handler(request.query_string.encode(), push_to_all, timeout=TIMEOUT)
        return web.Response(text=outcome + "\n", status=504 if outcome == TIMED_OUT else 200)

    app = web.Application()
    app.router.add_get("/broadcast", broadcast)
    app.add_subapp("/debug/leaks", aiohttp_app())
    return app


async def serve(port: int, fixed: bool) -> None:
    leaks.track()  # "created by" in the dumps
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    runner = web.AppRunner(build_app(fixed=fixed), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        host, bound = runner.addresses[0][:2]
        print(
            f"{'fixed' if fixed else 'leaky'} http service: http listening on {host}:{bound}",
            flush=True,
        )
        await stop.wait()
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--fixed", action="store_true", help="the structural fix")
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.fixed))
