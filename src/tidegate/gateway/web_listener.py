"""Serving an aiohttp app (HTTP ingress, admin) on our own listener, with the limits aiohttp
lacks: a connection limit, header and keep-alive timeouts, a bounded close, quiet logs.

aiohttp has no connection limit and no header timeout, lingers up to 10 s reading (and
decompressing) a body nobody asked for, and logs a traceback per malformed request. Here:

- the listener is a `TcpListener` (listener.py): accept errors counted, the backlog ours, and
  water marks: above `max_conns` a client gets a one-line `503` and a close; 10 % above that,
  accepting pauses;
- each connection is wrapped in a `_Guard` protocol that forwards to aiohttp's
  `RequestHandler` and times what aiohttp does not: a request's headers must be complete
  `header_timeout` after its first byte (or after the connection opened), and a connection
  with no request in progress is closed after `idle_timeout` (keep-alive). A middleware tells
  the guard when a request is being handled (the body is the handler's business: the push
  handler reads it under its own timeout). Slowloris connections are cut within seconds;
- aiohttp never decodes a body (`auto_decompress=False`): a handler that wants the body
  decodes it itself, within its limits (http.py);
- when aiohttp closes a connection, the guard takes over: it half-closes (the reply, then
  FIN), tells aiohttp the connection is gone at once, and discards whatever the client still
  sends until it closes or `CLOSE_LINGER` runs out. So a reply sent before the body was read
  (401, 413) reaches a client that is still uploading, instead of a reset, and aiohttp's
  handler task does not linger reading the body;
- a malformed request (bad request line, huge headers, Content-Length with chunked...) is
  logged as one line, at most once per `LOG_EVERY` seconds, and counted; an exception from a
  handler still logs its traceback (that is a bug of ours);
- `close()` stops accepting, lets requests in progress finish for `shutdown_timeout`, then
  aborts whatever is left: no aiohttp handler outlives it.

Counters (`refusals`): `too_many_connections`, `header_timeout`, `malformed`.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Handler

from tidegate.gateway.config import Address
from tidegate.gateway.fd_budget import water_marks
from tidegate.gateway.listener import TcpListener

__all__ = ["ADMIN_MAX_CONNS", "CLOSE_LINGER", "WebLimits", "WebListener"]

log = logging.getLogger("tidegate.http")

ADMIN_MAX_CONNS: Final = 32  # the admin port's connection limit: operators, probes, scrapers
CLOSE_LINGER: Final = 1.0  # seconds a closed connection's late input is read and discarded
LOG_EVERY: Final = 10.0  # seconds between two log lines about malformed requests


@dataclass(frozen=True, slots=True, kw_only=True)
class WebLimits:
    max_conns: int
    header_timeout: float
    idle_timeout: float


class _Phase(enum.Enum):
    HEADERS = "headers"  # waiting for a request's headers (deadline: header timeout)
    HANDLING = "handling"  # a request is being handled (no deadline here)
    IDLE = "idle"  # keep-alive between requests (deadline: idle timeout)
    LINGERING = "lingering"  # aiohttp closed it; discarding input (deadline: CLOSE_LINGER)


class _GuardTransport(asyncio.Transport):
    """The transport aiohttp is given: the real one, except that `close()` hands the
    connection back to the guard."""

    def __init__(self, real: asyncio.Transport, guard: _Guard) -> None:
        super().__init__()
        self._real = real
        self._guard = guard

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._real.write(data)

    def writelines(self, list_of_data: Any) -> None:
        self._real.writelines(list_of_data)

    def is_closing(self) -> bool:
        return self._guard.phase is _Phase.LINGERING or self._real.is_closing()

    def close(self) -> None:
        self._guard.linger()

    def abort(self) -> None:
        self._real.abort()

    def pause_reading(self) -> None:
        self._real.pause_reading()

    def resume_reading(self) -> None:
        self._real.resume_reading()

    def is_reading(self) -> bool:
        return self._real.is_reading()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._real.get_extra_info(name, default)

    def get_write_buffer_size(self) -> int:
        return self._real.get_write_buffer_size()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._real.set_write_buffer_limits(high, low)

    def can_write_eof(self) -> bool:
        return self._real.can_write_eof()

    def write_eof(self) -> None:
        self._real.write_eof()


class _Guard(asyncio.Protocol):
    """One HTTP connection: aiohttp's protocol inside, our deadlines around it."""

    def __init__(self, owner: WebListener, handler: asyncio.Protocol) -> None:
        self._owner = owner
        self.key = handler  # what the middleware finds it by (`request.protocol`)
        self._handler: asyncio.Protocol | None = handler
        self.transport: asyncio.Transport | None = None
        self.phase = _Phase.HEADERS
        self.deadline = owner.now() + owner.limits.header_timeout

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._owner.opened(self)
        assert self._handler is not None and self.transport is not None
        self._handler.connection_made(_GuardTransport(self.transport, self))

    def data_received(self, data: bytes) -> None:
        if self.phase is _Phase.LINGERING or self._handler is None:
            return
        if self.phase is _Phase.IDLE:
            self.phase = _Phase.HEADERS
            self.deadline = self._owner.now() + self._owner.limits.header_timeout
        self._handler.data_received(data)

    def eof_received(self) -> bool | None:
        if self.phase is _Phase.LINGERING or self._handler is None:
            return False  # the client is done too: close now
        return self._handler.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._owner.lost(self)
        self._hand_off(exc)

    def pause_writing(self) -> None:
        if self._handler is not None:
            self._handler.pause_writing()

    def resume_writing(self) -> None:
        if self._handler is not None:
            self._handler.resume_writing()

    # -- what the middleware, aiohttp and the sweeper call -----------------------------------

    def handling(self) -> None:
        if self.phase is not _Phase.LINGERING:
            self.phase = _Phase.HANDLING

    def handled(self) -> None:
        if self.phase is _Phase.HANDLING:
            self.phase = _Phase.IDLE
            self.deadline = self._owner.now() + self._owner.limits.idle_timeout

    def linger(self) -> None:
        """aiohttp is done with the connection: reply, FIN, discard the rest; aiohttp is told
        the connection is lost now, so none of its tasks waits on it."""
        if self.phase is _Phase.LINGERING:
            return
        self.phase = _Phase.LINGERING
        self.deadline = self._owner.now() + CLOSE_LINGER
        transport = self.transport
        if transport is not None and not transport.is_closing():
            if transport.can_write_eof():
                transport.write_eof()
                if not transport.is_reading():
                    transport.resume_reading()  # aiohttp may have paused it
            else:
                transport.close()
        self._hand_off(None)

    def sweep(self, now: float) -> None:
        if self.phase is _Phase.HANDLING or now < self.deadline or self.transport is None:
            return
        if self.phase is _Phase.HEADERS:
            self._owner.refusals["header_timeout"] += 1
            self.transport.abort()
        elif self.phase is _Phase.IDLE:
            self.linger()
        else:
            self.transport.abort()  # lingered long enough

    def _hand_off(self, exc: Exception | None) -> None:
        handler, self._handler = self._handler, None
        if handler is not None:
            handler.connection_lost(exc)


class _Refused(asyncio.Protocol):
    """A connection over the limit: a 503, FIN, and the rest of its input discarded for
    `CLOSE_LINGER` at most."""

    BODY: Final = b'{"error":"too_many_connections","reason":"too many HTTP connections open"}\n'
    RESPONSE: Final = (
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\nRetry-After: 1\r\nConnection: close\r\n\r\n%s" % (len(BODY), BODY)
    )

    def __init__(self, owner: WebListener) -> None:
        self._owner = owner
        self.transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        assert self.transport is not None
        self._owner.opened(self)
        self._owner.refusals["too_many_connections"] += 1
        self.transport.write(self.RESPONSE)
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self._timer = asyncio.get_running_loop().call_later(CLOSE_LINGER, self.transport.abort)
        else:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        pass  # discarded

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._owner.lost(self)


class _RequestLog:
    """The logger aiohttp's request handlers get: a malformed request (aiohttp raises an
    `HttpProcessingError` from its parser) becomes one counted line, at most one per
    `LOG_EVERY` seconds; everything else goes to the real logger as is."""

    def __init__(self, owner: WebListener) -> None:
        self._owner = owner
        self._next = 0.0
        self._unlogged = 0

    def exception(self, msg: str, *args: Any, exc_info: Any = True, **kwargs: Any) -> None:
        if isinstance(exc_info, HttpProcessingError):
            self._malformed(exc_info, args)
        else:
            log.error(msg, *args, exc_info=exc_info, **kwargs)

    def _malformed(self, exc: HttpProcessingError, args: tuple[Any, ...]) -> None:
        owner = self._owner
        owner.refusals["malformed"] += 1
        self._unlogged += 1
        now = owner.now()
        if now < self._next:
            return
        self._next = now + LOG_EVERY
        peer = args[0] if args else "?"
        more = f" ({self._unlogged} malformed since the last report)" if self._unlogged > 1 else ""
        self._unlogged = 0
        detail = (exc.message or type(exc).__name__).splitlines()[0][:200]
        log.warning("%s: malformed request from %s: %s%s", owner.name, peer, detail, more)

    def debug(self, *args: Any, **kwargs: Any) -> None:
        log.debug(*args, **kwargs)

    def info(self, *args: Any, **kwargs: Any) -> None:
        log.info(*args, **kwargs)

    def warning(self, *args: Any, **kwargs: Any) -> None:
        log.warning(*args, **kwargs)

    def error(self, *args: Any, **kwargs: Any) -> None:
        log.error(*args, **kwargs)


class WebListener:
    """An aiohttp app served on `address` under `limits`. `await WebListener.open(...)`,
    then `await close()`."""

    def __init__(
        self,
        app: web.Application,
        *,
        name: str,
        limits: WebLimits,
        refusals: Counter[str],
        shutdown_timeout: float,
    ) -> None:
        self.name = name
        self.limits = limits
        self.refusals = refusals
        self._loop = asyncio.get_running_loop()
        self.now: Callable[[], float] = self._loop.time
        self._guards: dict[asyncio.Protocol, _Guard] = {}  # aiohttp's handler -> its guard
        self._refused: set[_Refused] = set()
        self._listener: TcpListener | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._all_gone: asyncio.Future[None] | None = None
        app.middlewares.insert(0, self._middleware())
        self._runner = web.AppRunner(
            app,
            handle_signals=False,
            access_log=None,
            shutdown_timeout=shutdown_timeout,
            keepalive_timeout=limits.idle_timeout,  # ours closes first; theirs is a backstop
            lingering_time=0,  # the guard discards an unread body, see linger()
            auto_decompress=False,
            logger=_RequestLog(self),
        )
        shortest = min(limits.header_timeout, limits.idle_timeout, CLOSE_LINGER)
        self._sweep_interval = min(max(shortest / 4, 0.01), 0.5)

    @classmethod
    async def open(
        cls,
        app: web.Application,
        address: Address,
        *,
        name: str,
        limits: WebLimits,
        backlog: int,
        refusals: Counter[str],
        accept_errors: Counter[str],
        shutdown_timeout: float,
        reuse_port: bool = False,
    ) -> WebListener:
        served = cls(
            app, name=name, limits=limits, refusals=refusals, shutdown_timeout=shutdown_timeout
        )
        await served._runner.setup()
        try:
            high, low = water_marks(limits.max_conns)
            served._listener = TcpListener.open(
                address,
                served._accepted,
                backlog=backlog,
                high_water=high,
                low_water=low,
                accept_errors=accept_errors,
                name=name,
                reuse_port=reuse_port,
            )
        except BaseException:
            await served._runner.cleanup()
            raise
        served._sweeper = served._loop.call_later(served._sweep_interval, served._sweep)
        return served

    @property
    def address(self) -> Address:
        assert self._listener is not None
        return self._listener.address

    def connections(self) -> int:
        return len(self._guards)

    # -- connections -----------------------------------------------------------------------

    def _accepted(self) -> asyncio.Protocol:
        if len(self._guards) >= self.limits.max_conns:
            return _Refused(self)
        server = self._runner.server
        assert server is not None
        return _Guard(self, server())

    # Both kinds count from connection_made to connection_lost (a socket whose transport was
    # never made has neither).
    def opened(self, protocol: _Guard | _Refused) -> None:
        if isinstance(protocol, _Refused):
            self._refused.add(protocol)
        else:
            self._guards[protocol.key] = protocol
        self._report()

    def lost(self, protocol: _Guard | _Refused) -> None:
        if isinstance(protocol, _Refused):
            self._refused.discard(protocol)
        else:
            self._guards.pop(protocol.key, None)
        self._report()
        all_gone = self._all_gone
        if not self._guards and not self._refused and all_gone is not None and not all_gone.done():
            all_gone.set_result(None)

    def _report(self) -> None:
        if self._listener is not None:
            self._listener.update(len(self._guards) + len(self._refused))

    def _middleware(self) -> Any:
        guards = self._guards

        @web.middleware
        async def track_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
            guard = guards.get(request.protocol)
            if guard is not None:
                guard.handling()
            try:
                return await handler(request)
            finally:
                if guard is not None:
                    guard.handled()

        return track_requests

    def _sweep(self) -> None:
        now = self.now()
        for guard in list(self._guards.values()):
            guard.sweep(now)
        self._sweeper = self._loop.call_later(self._sweep_interval, self._sweep)

    # -- closing ---------------------------------------------------------------------------

    async def close(self) -> None:
        """Stop accepting; requests in progress get `shutdown_timeout` to finish (aiohttp's
        runner), then every connection still open is aborted and waited for."""
        if self._listener is not None:
            self._listener.stop()
            await self._listener.wait_closed()
        await self._runner.cleanup()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for guard in list(self._guards.values()):
            if guard.transport is not None:
                guard.transport.abort()
        for refused in list(self._refused):
            if refused.transport is not None:
                refused.transport.abort()
        if self._guards or self._refused:
            # abort() reports connection_lost on a later loop turn.
            self._all_gone = self._loop.create_future()
            await asyncio.wait([self._all_gone], timeout=1.0)
