"""The count, stack and leaked-task endpoints: the ASGI app driven by hand (no dependency),
then mounted in a real Starlette app under uvicorn and in a real aiohttp app, over loopback
sockets."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import gc
import re
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tidegate import leaks
from tidegate.leaks import _proven
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


HELD: asyncio.Event | None = None


async def await_a_private_future() -> None:
    await asyncio.get_running_loop().create_future()  # only this task ever references it


async def wait_on_the_global_event() -> None:
    assert HELD is not None
    await HELD.wait()


@contextlib.asynccontextmanager
async def seeded_leaks(n: int) -> AsyncIterator[None]:
    """``n`` tasks proven blocked forever (``orphan-<i>``: each awaits a future only it
    references) and one that is not (``held-by-a-global``: its event is a module global's).

    Started in a ``check()`` scope, which holds the orphans' coroutines as the detector does
    (else the collector could destroy them). The test keeps no reference to an orphan, not
    even a weak one: whatever could hand the task back could cancel it, and it would not be
    proven. They are found again by name, through the detector's records, and cancelled on
    the way out, whatever happens.
    """
    global HELD
    HELD = asyncio.Event()
    async with leaks.check(timeout=TIMEOUT):
        for i in range(n):
            asyncio.create_task(await_a_private_future(), name=f"orphan-{i}")
        held = asyncio.create_task(wait_on_the_global_event(), name="held-by-a-global")
        for _ in range(3):  # each parks at its first await within a turn
            await asyncio.sleep(0)
        try:
            yield
        finally:
            HELD.set()
            HELD = None
            orphans = [
                leak for leak in leaks.find(threads=False) if leak.name.startswith("orphan-")
            ]
            await leaks.cancel_tasks(orphans, timeout=TIMEOUT)
            await held


def proof_line(answer: str) -> str:
    """The line naming the proof an answer came from, without its age."""
    line = next(line for line in answer.splitlines() if line.startswith("proof "))
    return re.sub(r", [0-9.]+s ago", "", line)


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
    assert set(ROUTES) == {"/_count", "/_stack", "/debug/tasks", "/debug/tasks/leaked"}


async def test_asgi_leaked_lists_the_proven_tasks_only() -> None:
    app = asgi_app()
    async with seeded_leaks(3):
        status, headers, body = await call_asgi(app, "/debug/tasks/leaked")
        _, _, grouped = await call_asgi(app, "/debug/tasks")
    answer = body.decode()
    assert status == 200 and headers[b"content-type"] == b"text/plain; charset=utf-8"
    assert answer.startswith("total: 3 tasks proven blocked forever\n")
    # One group of three, as debug=1 groups them, with the line they wait on.
    assert "\n3 tasks [Future, proven]:\n" in answer
    assert "in await_a_private_future" in answer
    assert "await asyncio.get_running_loop().create_future()" in answer
    assert "created by seeded_leaks at " in answer
    assert "wait_on_the_global_event" not in answer  # still reachable: only suspected
    # /debug/tasks shows every task, with the verdicts the proof left (proven stays proven).
    assert b"(3 proven blocked forever)" in grouped
    assert b"wait_on_the_global_event" in grouped


def test_leaked_on_uvloop() -> None:
    """The same answer on uvloop, whose loop holds its handles from C: the proof needs no
    knowledge of it, and the per-loop sharing keys on its loop like any other."""
    uvloop = pytest.importorskip("uvloop")

    async def main() -> str:
        async with seeded_leaks(2):
            _, _, body = await call_asgi(asgi_app(), "/debug/tasks/leaked")
        return body.decode()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        answer = runner.run(main())
    assert answer.startswith("total: 2 tasks proven blocked forever\n")
    assert "in await_a_private_future" in answer and "wait_on_the_global_event" not in answer


async def park_on_a_private_future() -> None:
    await asyncio.get_running_loop().create_future()


def test_leaked_lists_the_tasks_the_collector_destroyed() -> None:
    """A process with tracking on (``track()``, as ``tidegate serve``), outside every scope:
    a forgotten task is destroyed by the next collection before any proof saw it; the answer
    lists it anyway (its stack as read just before), as proven, counted in the total."""

    async def main() -> tuple[str, list[str]]:
        messages: list[str] = []  # asyncio's own "destroyed but pending", kept off the log
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda loop, context: messages.append(context["message"]))
        collecting = gc.isenabled()
        gc.disable()  # the garbage stays young, for the young collection below
        try:
            asyncio.create_task(park_on_a_private_future(), name="forgotten")
            await asyncio.sleep(0)  # it parks on its own future
            gc.collect(0)
        finally:
            if collecting:
                gc.enable()
        _, _, body = await call_asgi(asgi_app(), "/debug/tasks/leaked")
        return body.decode(), messages

    async def tracked() -> tuple[str, list[str]]:
        leaks.track()
        try:
            return await main()
        finally:
            leaks.untrack()

    with asyncio.Runner() as runner:
        try:
            answer, messages = runner.run(tracked(), context=contextvars.Context())
        finally:
            leaks.untrack_threads()
    assert answer.startswith("total: 1 task proven blocked forever\nof which 1 destroyed")
    assert "1 task [Future, destroyed by the garbage collector, proven]:" in answer
    assert "in park_on_a_private_future" in answer
    assert "Task was destroyed but it is pending!" in messages


async def test_asgi_leaked_says_when_there_are_none() -> None:
    async with parked_tasks(2):  # parked on a queue this test still holds: not proven
        status, _, body = await call_asgi(asgi_app(), "/debug/tasks/leaked")
    answer = body.decode()
    assert status == 200
    assert answer.startswith("total: 0 tasks proven blocked forever\nnone: ")
    assert "stuck_getter" not in answer
    assert re.search(r"^proof \d+: [0-9.]+ ms, [0-9.]+s ago, over \d+ tasks", answer, re.M)


async def test_leaked_answers_share_one_proof_and_drop_what_ended(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The clock stands still: every answer falls within the first proof's sharing period.
    monkeypatch.setattr(_proven._CACHE, "clock", lambda: 1000.0)
    app = asgi_app()
    async with seeded_leaks(2):
        answers = await asyncio.gather(*(call_asgi(app, "/debug/tasks/leaked") for _ in range(20)))
        bodies = [body.decode() for _, _, body in answers]
        assert len({proof_line(body) for body in bodies}) == 1  # twenty answers, one proof
        assert all(body.startswith("total: 2 tasks proven") for body in bodies)
    # Still within the sharing period: the same proof answers, less the tasks that ended.
    _, _, body = await call_asgi(app, "/debug/tasks/leaked")
    after = body.decode()
    assert proof_line(after) == proof_line(bodies[0])
    assert after.startswith("total: 0 tasks proven blocked forever\nnone: ")


async def test_a_proof_is_shared_for_a_time_that_grows_with_its_cost() -> None:
    assert _proven.reuse_seconds(0.0) == _proven.MIN_REUSE == 1.0
    assert _proven.reuse_seconds(0.2) == pytest.approx(4.0)  # 5% of the loop at most
    now = [100.0]
    cache = _proven.ProofCache(clock=lambda: now[0])
    assert cache.peek() is None
    first = cache.latest()
    assert cache.peek() is first and first.taken == 100.0
    now[0] += first.reused_for - 0.001
    assert cache.latest() is first
    now[0] += 0.001
    second = cache.latest()
    assert second is not first and second.number > first.number and second.taken == now[0]


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
        async with parked_tasks(4), seeded_leaks(2):
            assert await http_get(port, "/") == (200, "home")
            status, count = await http_get(port, "/ops/_count")
            assert status == 200 and count.isdigit() and int(count) >= 5
            status, grouped = await http_get(port, "/ops/debug/tasks?debug=1")
            assert status == 200 and "\n4 tasks [" in grouped and "in stuck_getter" in grouped
            status, stack = await http_get(port, "/ops/_stack")
            assert status == 200 and "task getter-3 [" in stack
            status, leaked = await http_get(port, "/ops/debug/tasks/leaked")
            assert status == 200 and leaked.startswith("total: 2 tasks proven blocked forever")
            assert "\n2 tasks [Future, proven]:" in leaked and "stuck_getter" not in leaked
            assert "wait_on_the_global_event" not in leaked
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
        async with parked_tasks(2), seeded_leaks(1):
            assert await http_get(port, "/") == (200, "home")  # the host app is untouched
            assert (await http_get(port, "/ops/_count"))[0] == 401
            auth = {"Authorization": f"Bearer {TOKEN}"}
            status, count = await http_get(port, "/ops/_count", **auth)
            assert status == 200 and count.isdigit()
            status, grouped = await http_get(port, "/ops/debug/tasks", **auth)
            assert status == 200 and "\n2 tasks [" in grouped
            assert (await http_get(port, "/ops/debug/tasks?debug=9", **auth))[0] == 400
            assert (await http_get(port, "/ops/debug/tasks/leaked"))[0] == 401
            status, leaked = await http_get(port, "/ops/debug/tasks/leaked", **auth)
            assert status == 200 and leaked.startswith("total: 1 task proven blocked forever")
            assert "in await_a_private_future" in leaked and "stuck_getter" not in leaked
            assert "wait_on_the_global_event" not in leaked
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
