"""Count and stack endpoints for any asyncio web app, on the standard library alone.

=========================  ===============================================================
``GET /_count``            live asyncio tasks of the serving loop, a bare integer
``GET /_stack``            every task and thread in full, like Go's ``debug=2`` dump
``GET /debug/tasks``       ``?debug=1`` (default): grouped by identical stack, with counts,
                           like pprof's ``debug=1``; ``?debug=2``: the same as ``/_stack``
``GET /debug/tasks/``      the tasks a proof of leak finds blocked forever now, no baseline
``leaked``                 needed, grouped like ``debug=1``; "none" when there are none
=========================  ===============================================================

All answer ``text/plain``. Mount them in Starlette or FastAPI (any ASGI framework)::

    from starlette.routing import Mount
    from tidegate.leaks.endpoints import asgi_app

    app = Starlette(routes=[..., Mount("/ops", app=asgi_app())])   # GET /ops/_count

or in aiohttp (aiohttp is imported only when the factory is called)::

    from tidegate.leaks.endpoints import aiohttp_app

    app.add_subapp("/ops", aiohttp_app())

A stack dump names every line the process is on, so the apps answer loopback clients only,
unless a bearer token is configured (``asgi_app(token=...)``): then they answer whoever sends
``Authorization: Bearer <token>``, from anywhere, and nobody else. Behind a reverse proxy on
the same host every request looks like loopback: configure a token there.

``/debug/tasks/leaked`` costs a proof, which holds the loop for a few milliseconds (up to a
few hundred with 10k idle tasks): one runs at a time, and its answer is shared by every request
for at least a second, longer after a slow proof (``_proven.reuse_seconds``), so no rate of
requests makes it cost more than 5% of the loop's time.

The routes live in one table, ``ROUTES`` (path -> endpoint); an endpoint is a plain function
from the query to a ``Reply``, run on the serving loop, so each framework adapter is a few
lines and a new route is one entry. The gateway's admin serves the same table through
``add_aiohttp_routes`` behind its own token guard.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qsl

from ._detector import snapshot
from ._proven import format_proven, proven_leaks
from ._report import format_dump, format_grouped

if TYPE_CHECKING:
    from aiohttp import web

__all__ = [
    "ROUTES",
    "Endpoint",
    "Reply",
    "add_aiohttp_routes",
    "aiohttp_app",
    "asgi_app",
    "refusal",
]


@dataclass(frozen=True, slots=True)
class Reply:
    """One answer, framework-neutral: status, text body (UTF-8 ``text/plain``), headers."""

    status: int
    text: str
    headers: tuple[tuple[str, str], ...] = ()


Endpoint = Callable[[Mapping[str, str]], Reply]


def count(query: Mapping[str, str]) -> Reply:
    # Digits only, no newline: a bare integer, compared as is by scripts (and Go's
    # runtime.NumGoroutine() behind the same path answers alike).
    return Reply(200, str(len(asyncio.all_tasks())))


def stack(query: Mapping[str, str]) -> Reply:
    return Reply(200, format_dump(snapshot()))


def tasks(query: Mapping[str, str]) -> Reply:
    level = query.get("debug", "1")
    if level not in ("1", "2"):
        return Reply(400, "debug must be 1 (grouped) or 2 (every task in full)\n")
    records = snapshot()
    return Reply(200, format_grouped(records) if level == "1" else format_dump(records))


def leaked(query: Mapping[str, str]) -> Reply:
    return Reply(200, format_proven(proven_leaks()))


ROUTES: Final[Mapping[str, Endpoint]] = {
    "/_count": count,
    "/_stack": stack,
    "/debug/tasks": tasks,
    "/debug/tasks/leaked": leaked,
}


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False  # a Unix socket or an unknown peer: not provably local
    try:
        address = ipaddress.ip_address(host.partition("%")[0])  # fe80::1%eth0
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def _bearer(authorization: str | None) -> str | None:
    scheme, _, credentials = (authorization or "").strip().partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else None


def refusal(
    *, client_host: str | None, authorization: str | None, token: str | None
) -> Reply | None:
    """Why this request may not see the endpoints, or None if it may.

    Without ``token``: loopback clients only (403 for others). With it: the matching bearer
    token only, compared in constant time (401 otherwise, loopback included).
    """
    if token is None:
        if _is_loopback(client_host):
            return None
        return Reply(
            403, "these endpoints answer loopback clients only; configure a bearer token\n"
        )
    given = _bearer(authorization)
    # surrogateescape: a header's undecodable bytes must be compared, never raise.
    if given is not None and hmac.compare_digest(
        given.encode("utf-8", "surrogateescape"), token.encode("utf-8", "surrogateescape")
    ):
        return None
    return Reply(
        401,
        "bearer token required: Authorization: Bearer <token>\n",
        (("WWW-Authenticate", 'Bearer realm="tidegate-leaks"'),),
    )


def _check_token(token: str | None) -> None:
    if token is not None and not token:
        raise ValueError("token must not be empty (use None for loopback-only access)")


def _answer(path: str, method: str, query: Mapping[str, str]) -> Reply:
    endpoint = ROUTES.get(path)
    if endpoint is None:
        return Reply(404, "not found\n")
    if method not in ("GET", "HEAD"):
        return Reply(405, "method not allowed\n", (("Allow", "GET, HEAD"),))
    return endpoint(query)


# -- ASGI ------------------------------------------------------------------------------------

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
    Awaitable[None],
]


def _route_path(scope: Scope) -> str:
    # ASGI: `path` includes `root_path` where the app is mounted; older servers and routers
    # passed the remainder alone, which does not start with the root.
    path: str = scope.get("path", "")
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    return path or "/"


def _asgi_header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("utf-8", "surrogateescape")
    return None


def asgi_app(*, token: str | None = None) -> ASGIApp:
    """The endpoints as an ASGI 3 app. Answers ``lifespan`` too, so it also runs alone
    (``uvicorn 'module:app'`` with ``app = asgi_app()``)."""
    _check_token(token)

    async def app(
        scope: Scope,
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            raise ValueError(f"tidegate.leaks endpoints serve HTTP, not {scope['type']!r}")
        client = scope.get("client")
        reply = refusal(
            client_host=client[0] if client else None,
            authorization=_asgi_header(scope, b"authorization"),
            token=token,
        )
        if reply is None:
            query = dict(parse_qsl(bytes(scope.get("query_string", b"")).decode("latin-1")))
            reply = _answer(_route_path(scope), scope.get("method", "GET"), query)
        body = reply.text.encode()
        headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
            *((name.lower().encode(), value.encode()) for name, value in reply.headers),
        ]
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send(
            {"type": "http.response.body", "body": b"" if scope.get("method") == "HEAD" else body}
        )

    return app


# -- aiohttp ---------------------------------------------------------------------------------


def _aiohttp_response(reply: Reply) -> web.Response:
    from aiohttp import web

    return web.Response(
        status=reply.status, text=reply.text, content_type="text/plain", headers=reply.headers
    )


def _aiohttp_handler(endpoint: Endpoint) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(request: web.Request) -> web.Response:
        return _aiohttp_response(endpoint(request.query))

    return handle


def add_aiohttp_routes(app: web.Application) -> None:
    """Add the ``ROUTES`` to an aiohttp app as they are, unguarded: for an app that guards
    its routes itself (the gateway's admin does). ``aiohttp_app`` is the guarded one."""
    for path, endpoint in ROUTES.items():
        app.router.add_get(path, _aiohttp_handler(endpoint))


def aiohttp_app(*, token: str | None = None) -> web.Application:
    """The endpoints as an aiohttp app, guarded as the module docstring says; mount it with
    ``app.add_subapp(prefix, aiohttp_app())`` or serve it on a port of its own."""
    _check_token(token)
    from aiohttp import web

    @web.middleware
    async def guard(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        denied = refusal(
            client_host=request.remote,
            authorization=request.headers.get("Authorization"),
            token=token,
        )
        if denied is not None:
            return _aiohttp_response(denied)
        return await handler(request)

    app = web.Application(middlewares=[guard])
    add_aiohttp_routes(app)
    return app
