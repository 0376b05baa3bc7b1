"""The probe's look at /debug/tasks/leaked on real loopback servers: a server without the
route is left out (404), one that answers something else is a clear error."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tidegate.load.probe import ProbeError, leaked_url_beside, open_probe


@asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[TestServer]:
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        yield server
    finally:
        await server.close()


async def test_a_server_without_the_route_is_left_out() -> None:
    async with serving(web.Application()) as server:
        url = str(server.make_url("/debug/tasks/leaked"))
        async with open_probe(leaked_url=url) as probe:
            assert await probe.proven() is None
    async with open_probe() as probe:  # and none given: nothing asked
        assert await probe.proven() is None


async def test_an_answer_that_is_not_a_proof_is_a_clear_error() -> None:
    async def other(request: web.Request) -> web.Response:
        return web.Response(text="total: 3 tasks, 1 threads\n")

    app = web.Application()
    app.router.add_get("/debug/tasks/leaked", other)
    async with serving(app) as server:
        url = str(server.make_url("/debug/tasks/leaked"))
        async with open_probe(leaked_url=url) as probe:
            with pytest.raises(ProbeError, match="not an answer of /debug/tasks/leaked"):
                await probe.proven()


def test_the_leaked_url_beside_a_tidegate_dump() -> None:
    base = "http://127.0.0.1:8080/debug/leaks"
    assert leaked_url_beside(f"{base}/debug/tasks?debug=1") == f"{base}/debug/tasks/leaked"
    assert leaked_url_beside(f"{base}/_stack") == f"{base}/debug/tasks/leaked"
    assert leaked_url_beside("http://h:1/debug/pprof/goroutine?debug=1") is None  # Go's
    assert leaked_url_beside(None) is None
