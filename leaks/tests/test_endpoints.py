"""The count and stack endpoints: the ASGI app driven by hand (no dependency), then mounted in
a real Starlette app under uvicorn and in a real aiohttp app, over loopback sockets."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tidegate.leaks.endpoints import ROUTES, aiohttp_app, asgi_app, refusal

TOKEN = "s3cret-token"
TIMEOUT = 5.0


async def call_asgi(
    app: Any,
    path: str,
    *,
    query: bytes = b"",
    method: str = "GET",
    client: tuple[str, int] | None = ("127.0.0.1", 50000),
    headers: list[tuple[bytes, bytes]] | None = None,
    root_path: str = "",
) -> tuple[int, dict[bytes, bytes], bytes]:
    scope = {
        "type": "http",
        "method": method,
        "path": root_path + path,
        "root_path": root_path,
        "query_string": query,
        "headers": headers or [],
        "client": client,
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start, body = sent
    return start["status"], dict(start["headers"]), body["body"]


async def stuck_getter(queue: asyncio.Queue[int]) -> None:
    await queue.get()  # nobody puts: parked until cancelled


@contextlib.asynccontextmanager
async def parked_tasks(n: int) -> AsyncIterator[None]:
    queue: asyncio.Queue[int] = asyncio.Queue()
    tasks = [asyncio.create_task(stuck_getter(queue), name=f"getter-{i}") for i in range(n)]
    await asyncio.sleep(0)  # one turn: each reaches queue.get()
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_asgi_count_is_a_bare_integer() -> None:
    app = asgi_app()
    async with parked_tasks(3):
        status, headers, body = await call_asgi(app, "/_count")
        expected = len(asyncio.all_tasks())
    assert status == 200
    assert headers[b"content-type"] == b"text/plain; charset=utf-8"
    assert body == str(expected).encode() and body.isdigit()


async def test_asgi_stack_and_grouped_tasks() -> None:
    app = asgi_app()
    async with parked_tasks(3):
        _, _, grouped = await call_asgi(app, "/debug/tasks", query=b"debug=1")
        _, _, default = await call_asgi(app, "/debug/tasks")
        _, _, full = await call_asgi(app, "/debug/tasks", query=b"debug=2")
        _, _, stack = await call_asgi(app, "/_stack")
        bad, _, message = await call_asgi(app, "/debug/tasks", query=b"debug=3")
    assert grouped.startswith(b"total: ") and b"\n3 tasks [" in grouped
    assert b"in stuck_getter" in grouped
    assert default.startswith(b"total: ")
    for dump in (full, stack):
        assert all(f"task getter-{i} [".encode() in dump for i in range(3))
    assert bad == 400 and b"debug must be 1" in message


async def test_asgi_mounted_path_method_and_head() -> None:
    app = asgi_app()
    assert (await call_asgi(app, "/_count", root_path="/ops"))[0] == 200
    assert (await call_asgi(app, "/nope"))[0] == 404
    status, headers, _ = await call_asgi(app, "/_count", method="POST")
    assert status == 405 and headers[b"allow"] == b"GET, HEAD"
    status, headers, body = await call_asgi(app, "/_count", method="HEAD")
    assert status == 200 and body == b"" and int(headers[b"content-length"]) > 0


@pytest.mark.parametrize(
    "host", ["10.1.2.3", "192.168.0.7", "2001:db8::1", "testclient", None, "::ffff:10.0.0.1"]
)
async def test_asgi_refuses_non_loopback_clients_without_a_token(host: str | None) -> None:
    client = None if host is None else (host, 1234)
    status, _, body = await call_asgi(asgi_app(), "/_count", client=client)
    assert status == 403 and b"loopback" in body


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"])
def test_loopback_clients_need_no_token(host: str) -> None:
    assert refusal(client_host=host, authorization=None, token=None) is None


async def test_asgi_token_admits_any_host_with_it_and_nobody_without() -> None:
    app = asgi_app(token=TOKEN)
    good = [(b"authorization", f"Bearer {TOKEN}".encode())]
    assert (await call_asgi(app, "/_count", client=("10.1.2.3", 1), headers=good))[0] == 200
    for headers in ([], [(b"authorization", b"Bearer nope")], [(b"authorization", b"\xff\xfe")]):
        status, sent_headers, _ = await call_asgi(app, "/_count", headers=headers)
        assert status == 401  # loopback too: with a token, the token decides
        assert sent_headers[b"www-authenticate"].startswith(b"Bearer")


def test_empty_token_is_a_usage_error() -> None:
    with pytest.raises(ValueError):
        asgi_app(token="")
    with pytest.raises(ValueError):
        aiohttp_app(token="")


def test_route_table_is_the_documented_one() -> None:
    assert set(ROUTES) == {"/_count", "/_stack", "/debug/tasks"}


async def http_get(port: int, path: str, **headers: str) -> tuple[int, str]:
    """One GET with `Connection: close` over a loopback socket."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), TIMEOUT)
    try:
        extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        request = f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{extra}\r\n"
        writer.write(request.encode())
        raw = await asyncio.wait_for(reader.read(), TIMEOUT)
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode()


async def test_mounted_in_a_real_starlette_app_under_uvicorn() -> None:
    starlette_applications = pytest.importorskip("starlette.applications")
    starlette_responses = pytest.importorskip("starlette.responses")
    starlette_routing = pytest.importorskip("starlette.routing")
    uvicorn = pytest.importorskip("uvicorn")

    async def home(request: Any) -> Any:
        return starlette_responses.PlainTextResponse("home")

    app = starlette_applications.Starlette(
        routes=[
            starlette_routing.Route("/", home),
            starlette_routing.Mount("/ops", app=asgi_app()),
        ]
    )
    # Bound here, so the port is known before uvicorn starts; early connections wait in
    # the backlog instead of the test polling for "started".
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
    )
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with parked_tasks(4):
            assert await http_get(port, "/") == (200, "home")
            status, count = await http_get(port, "/ops/_count")
            assert status == 200 and count.isdigit() and int(count) >= 5
            status, grouped = await http_get(port, "/ops/debug/tasks?debug=1")
            assert status == 200 and "\n4 tasks [" in grouped and "in stuck_getter" in grouped
            status, stack = await http_get(port, "/ops/_stack")
            assert status == 200 and "task getter-3 [" in stack
    finally:
        server.should_exit = True
        await serving
        sock.close()


async def test_aiohttp_sub_app_with_a_token() -> None:
    web = pytest.importorskip("aiohttp.web")

    async def home(request: Any) -> Any:
        return web.Response(text="home")

    app = web.Application()
    app.router.add_get("/", home)
    app.add_subapp("/ops", aiohttp_app(token=TOKEN))
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        async with parked_tasks(2):
            assert await http_get(port, "/") == (200, "home")  # the host app is untouched
            assert (await http_get(port, "/ops/_count"))[0] == 401
            auth = {"Authorization": f"Bearer {TOKEN}"}
            status, count = await http_get(port, "/ops/_count", **auth)
            assert status == 200 and count.isdigit()
            status, grouped = await http_get(port, "/ops/debug/tasks", **auth)
            assert status == 200 and "\n2 tasks [" in grouped
            assert (await http_get(port, "/ops/debug/tasks?debug=9", **auth))[0] == 400
    finally:
        await runner.cleanup()


async def test_aiohttp_app_alone_answers_loopback() -> None:
    web = pytest.importorskip("aiohttp.web")
    runner = web.AppRunner(aiohttp_app(), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        port = runner.addresses[0][1]
        status, stack = await http_get(port, "/_stack")
        assert status == 200 and "thread MainThread [" in stack
    finally:
        await runner.cleanup()
