"""`Gateway`: owns the listeners, the connections, the sweeper, and the fan-out entry points.

Ownership: the gateway's one long-lived task is its TCP listener's (it resumes accepting after
a pause, which needs an await); `close()` stops the listener and awaits it. Timers are
one `call_later` chain (the sweeper) and one `call_soon` per loop turn (the flush); both are
cancelled in `close()`. No task per connection, per push or per recipient. The aiohttp apps
(HTTP ingress, admin) are owned through their `AppRunner`s, and the loop watchdog (a ticker
task and a monitor thread, with the admin app) through its `close()`; all are closed in
`close()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import time
from collections.abc import AsyncIterator
from typing import NamedTuple

import msgspec
from aiohttp import web

from tidegate.gateway.admin import build_admin_app, gateway_metrics
from tidegate.gateway.auth import make_authenticator
from tidegate.gateway.config import Address, Config, Overflow
from tidegate.gateway.fanout import fan_out
from tidegate.gateway.http import build_push_app
from tidegate.gateway.listener import TcpListener
from tidegate.gateway.registry import Registry
from tidegate.gateway.stats import Counters, GatewayStatistics
from tidegate.gateway.tcp import ClientProtocol
from tidegate.gateway.udp import PushDatagramProtocol
from tidegate.ops import Watchdog
from tidegate.protocol import (
    DatagramVerifier,
    ErrorCode,
    Limits,
    Push,
    Rejected,
    Target,
    encode_msg,
    parse_push,
    parse_target,
)
from tidegate.protocol.connection import Authenticate
from tidegate.protocol.errors import UsageError

__all__ = ["Gateway", "PushResult", "open_gateway"]

log = logging.getLogger("tidegate.gateway")

_encode = msgspec.json.Encoder().encode


class PushResult(NamedTuple):
    id: str
    delivered: int  # connections reached on this node


class Gateway:
    """The push gateway. Use `open_gateway(config)`, or `await start()` then `await close()`.

    Fan-out entry points (plain methods, safe to call from any callback on the loop thread):
    `push(to, data)`, `push_json(target, data_json)`, `push_body(body)`.
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        self.registry = Registry()
        self.counters = Counters()
        self.limits = Limits(
            max_line=config.max_line,
            max_rooms=config.max_rooms,
            handshake_timeout=config.handshake_timeout,
            heartbeat=config.heartbeat,
            idle_timeout=config.effective_idle_timeout,
        )
        self.authenticate: Authenticate = make_authenticator(
            config.jwt_secret, refusals=self.counters.auth_failures
        )
        self.metrics = gateway_metrics(self)
        # perf_counter() of each push that reached someone this turn; the flush at the end
        # of the turn has written all of their frames (or queued them behind flow control).
        self._push_marks: list[float] = []
        self._observe_latency = self.metrics.push_latency.observe
        self.watchdog: Watchdog | None = None
        self.buffer_bytes = config.buffer_bytes
        self.overflow: Overflow = config.overflow
        self.write_timeout = config.write_timeout
        self.close_linger = config.close_linger
        self._verifier = DatagramVerifier(
            secret=config.secret.encode() if config.secret else None,
            window=config.replay_window,
            replay_capacity=config.replay_capacity,
        )
        prefix = secrets.token_hex(4)
        self._sessions = (f"{prefix}-s{n:x}" for n in itertools.count(1))
        self._ids = (f"{prefix}-{n:x}" for n in itertools.count(1))
        self._live: set[ClientProtocol] = set()  # handshake + open: what max_conns counts
        self._closing: set[ClientProtocol] = set()
        self._dirty: list[ClientProtocol] = []
        # Counts flushes; a connection writes through at most once per turn (see tcp.py).
        self.turn = 0
        self.flush_pending = False  # a plain attribute: read once per delivery
        self._loop: asyncio.AbstractEventLoop | None = None
        self._flush_handle: asyncio.Handle | None = None
        self._sweep_handle: asyncio.TimerHandle | None = None
        self._listener: TcpListener | None = None
        # Accepting pauses when live + closing sockets reach the high-water mark and resumes
        # at the low-water mark; between max_conns and high-water, clients still get
        # too_many_connections, above it they wait in the kernel backlog.
        margin = max(1, config.max_conns // 10)
        self.accept_high_water = config.max_conns + margin
        self.accept_low_water = max(config.max_conns - margin, 0)
        self._udp_transport: asyncio.DatagramTransport | None = None
        self._web_runners: list[web.AppRunner] = []
        self._all_gone: asyncio.Future[None] | None = None
        self._state = "new"
        # start() and the shutdown never interleave: a close() that arrives while start() is
        # binding waits for it, then undoes everything it opened.
        self._lifecycle = asyncio.Lock()
        self._shutdown: asyncio.Task[None] | None = None
        self.tcp_address: Address | None = None
        self.udp_address: Address | None = None
        self.admin_address: Address | None = None
        self.http_address: Address | None = None

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        async with self._lifecycle:
            await self._start()

    async def _start(self) -> None:
        if self._state != "new":
            raise UsageError(f"start() on a gateway that is {self._state}")
        self._state = "starting"
        self.config.check_startable()
        loop = self._loop = asyncio.get_running_loop()
        config = self.config
        try:
            if config.tcp is not None:
                self._listener = await TcpListener.open(
                    config.tcp,
                    lambda: ClientProtocol(self),
                    high_water=self.accept_high_water,
                    low_water=self.accept_low_water,
                )
                self.tcp_address = self._listener.address
            if config.udp is not None:
                transport, _ = await loop.create_datagram_endpoint(
                    lambda: PushDatagramProtocol(
                        verifier=self._verifier, deliver=self.deliver, counters=self.counters
                    ),
                    local_addr=config.udp,
                )
                self._udp_transport = transport
                self.udp_address = _bound(transport.get_extra_info("sockname"))
            if config.http is not None:
                app = build_push_app(
                    self,
                    api_key=config.api_key,
                    max_body=config.max_body,
                    max_batch=config.max_batch,
                )
                self.http_address = await self._serve_web(app, config.http)
            # The watchdog runs with or without the admin port: its blocked-loop reports go
            # to the log as well.
            self.watchdog = Watchdog(
                threshold=config.block_threshold, lag_histogram=self.metrics.loop_lag
            )
            self.watchdog.start()
            if config.admin is not None:
                app = build_admin_app(
                    self, self.metrics, watchdog=self.watchdog, admin_token=config.admin_token
                )
                self.admin_address = await self._serve_web(app, config.admin)
        except BaseException:
            await self._shut_down()
            raise
        self._schedule_sweep()
        self._state = "running"

    async def _serve_web(self, app: web.Application, address: Address) -> Address:
        runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            shutdown_timeout=self.config.shutdown_timeout,
        )
        await runner.setup()
        self._web_runners.append(runner)
        site = web.TCPSite(runner, address[0], address[1], reuse_address=True)
        await site.start()
        return _bound(runner.addresses[-1])

    async def close(self) -> None:
        """Graceful shutdown: stop accepting, `server_shutdown` to everyone, flush with a
        deadline (`shutdown_timeout`), abort the rest, release everything.

        Idempotent, and safe to cancel: the shutdown runs in a task of the gateway's own,
        bounded by its deadlines, which every caller awaits (shielded), so a cancelled caller
        cannot leave it half done and a later close() waits for the same one.
        """
        if self._shutdown is None:
            self._shutdown = asyncio.get_running_loop().create_task(
                self._shut_down_after_start(), name="tidegate-shutdown"
            )
        await asyncio.shield(self._shutdown)

    async def _shut_down_after_start(self) -> None:
        async with self._lifecycle:
            await self._shut_down()

    async def _shut_down(self) -> None:
        if self._state in ("closing", "closed"):
            return
        self._state = "closing"
        loop = self._loop or asyncio.get_running_loop()
        if self._listener is not None:
            self._listener.stop()
        if self._udp_transport is not None:
            self._udp_transport.close()
        for client in list(self._live):
            client.close(ErrorCode.SERVER_SHUTDOWN, "the gateway is shutting down")
        for client in list(self._live):
            client.abort()  # left over: peers already gone, their transports still closing
        if self._live or self._closing:
            # asyncio.wait neither wraps the future in a task nor cancels it on timeout.
            all_gone = self._all_gone = loop.create_future()
            await asyncio.wait([all_gone], timeout=self.config.shutdown_timeout)
            for client in list(self._closing):
                client.abort()
            if self._closing:
                # abort() reports connection_lost on a later loop turn.
                await asyncio.wait([all_gone], timeout=1.0)
        if self._listener is not None:
            await self._listener.wait_closed()
        if self._sweep_handle is not None:
            self._sweep_handle.cancel()
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        for runner in self._web_runners:
            await runner.cleanup()
        if self.watchdog is not None:
            await self.watchdog.close()
        self._state = "closed"

    @property
    def running(self) -> bool:
        return self._state == "running"

    def ready(self) -> bool:
        """Running, with the TCP listener accepting (`/readyz`). The contract's broker canary
        joins this once the gateway has a broker (NATS, for `--workers`)."""
        return self.running and (self._listener is None or self._listener.accepting)

    # -- Hub: what ClientProtocol calls ----------------------------------------------------

    def now(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    def new_session(self) -> str:
        return next(self._sessions)

    def admit(self, client: ClientProtocol) -> ErrorCode | None:
        """Count a new connection in, or say why it must be turned away."""
        self.counters.accepted += 1
        if self._state != "running" and self._state != "starting":
            return ErrorCode.SERVER_SHUTDOWN
        if len(self._live) >= self.config.max_conns:
            self._closing.add(client)  # counted until closed, so it counts towards high-water
            self._check_accept_pressure()
            return ErrorCode.TOO_MANY_CONNECTIONS
        self._live.add(client)
        self._check_accept_pressure()
        return None

    def _check_accept_pressure(self) -> None:
        if self._listener is not None:
            self._listener.update(len(self._live) + len(self._closing))

    @property
    def accepting(self) -> bool:
        """False while accepting is paused at the high-water mark."""
        return self._listener is not None and self._listener.accepting

    def schedule_flush(self, client: ClientProtocol | None) -> None:
        """Flush `client` at the end of this loop turn (None: only end the turn)."""
        if client is not None:
            self._dirty.append(client)
        if self._flush_handle is None:
            assert self._loop is not None
            self._flush_handle = self._loop.call_soon(self._flush_dirty)
            self.flush_pending = True

    def _flush_dirty(self) -> None:
        self._flush_handle = None
        self.flush_pending = False
        self.turn += 1
        dirty, self._dirty = self._dirty, []
        for client in dirty:
            client.flush()
        if self._push_marks:
            marks, self._push_marks = self._push_marks, []
            now = time.perf_counter()
            observe = self._observe_latency
            for mark in marks:
                observe(now - mark)

    def closing(self, client: ClientProtocol) -> None:
        self._live.discard(client)
        self._closing.add(client)

    def forget(self, client: ClientProtocol) -> None:
        self._live.discard(client)
        self._closing.discard(client)
        self._check_accept_pressure()
        if not self._closing and not self._live:
            all_gone = self._all_gone
            if all_gone is not None and not all_gone.done():
                all_gone.set_result(None)

    # -- sweeper ---------------------------------------------------------------------------

    def _sweep_interval(self) -> float:
        c = self.config
        shortest = min(
            c.handshake_timeout, c.effective_idle_timeout, c.write_timeout, c.close_linger
        )
        # A quarter of the shortest timeout bounds how late a timeout fires (25 %).
        return min(max(shortest / 4, 0.005), 0.5)

    def _schedule_sweep(self) -> None:
        assert self._loop is not None
        self._sweep_handle = self._loop.call_later(self._sweep_interval(), self._sweep)

    def _sweep(self) -> None:
        try:
            now = self.now()
            for client in list(self._live):
                client.sweep(now)
            for client in list(self._closing):
                if now >= client.linger_deadline:
                    client.abort()
        finally:
            if self._state == "running":
                self._schedule_sweep()

    # -- fan-out -----------------------------------------------------------------------------

    def next_id(self) -> str:
        return next(self._ids)

    def push_json(
        self, target: Target, data_json: bytes, *, id: str | None = None, ingress: str = "local"
    ) -> PushResult:
        """Deliver a push whose `data` is already one encoded JSON value (trusted)."""
        if id is None:
            id = next(self._ids)
        counters = self.counters
        counters.pushes[ingress] += 1
        counters.pushes_by_target[target.kind] += 1
        sinks = self.registry.targets(target)
        if not sinks:
            return PushResult(id, 0)
        mark = time.perf_counter()
        frame = encode_msg(to=target.wire, id=id, data_json=data_json)
        delivered = fan_out(sinks, frame)
        if delivered:
            counters.deliveries += delivered
            self._push_marks.append(mark)
            if not self.flush_pending:  # every target paused: no write scheduled the flush
                self.schedule_flush(None)
        return PushResult(id, delivered)

    def push(
        self, to: str | Target, data: object, *, id: str | None = None, ingress: str = "local"
    ) -> PushResult:
        """Deliver `data` (any JSON-encodable value, or `msgspec.Raw`) to `to`.

        Raises `BadPush` for an unknown `to` form. Returns (id, connections reached).
        """
        target = parse_target(to) if isinstance(to, str) else to
        data_json = bytes(data) if isinstance(data, msgspec.Raw) else _encode(data)
        return self.push_json(target, data_json, id=id, ingress=ingress)

    def push_body(self, body: bytes, *, ingress: str = "http") -> PushResult:
        """Deliver one unsigned push body (the contract's JSON object). Raises `BadPush`,
        whose `.code` is the `RejectReason` (also counted in `statistics().rejections`)."""
        try:
            push, target = parse_push(body)
        except Rejected as exc:
            self.counters.rejections[exc.code.value] += 1
            raise
        return self.deliver(push, target, ingress)

    def deliver(self, push: Push, target: Target, ingress: str) -> PushResult:
        """Deliver a push already parsed (and verified) by an ingress."""
        return self.push_json(target, bytes(push.data), id=push.id, ingress=ingress)

    # -- observation -------------------------------------------------------------------------

    def connections(self) -> int:
        return len(self._live)

    def statistics(self) -> GatewayStatistics:
        handshaking = 0
        buffered = 0
        worst = 0
        for client in self._live:
            if not client.is_open:
                handshaking += 1
            size = client.buffered()
            buffered += size
            worst = max(worst, size)
        for client in self._closing:
            buffered += client.buffered()
        return self.counters.snapshot(
            connections=len(self._live),
            handshaking=handshaking,
            closing=len(self._closing),
            users=self.registry.user_count(),
            rooms=self.registry.room_count(),
            buffered_bytes=buffered,
            max_buffered_bytes=worst,
        )


def _bound(sockname: object) -> Address:
    assert isinstance(sockname, tuple)
    host, port = sockname[0], sockname[1]
    assert isinstance(host, str) and isinstance(port, int)
    return host, port


@contextlib.asynccontextmanager
async def open_gateway(config: Config) -> AsyncIterator[Gateway]:
    """Start a gateway for the duration of the block; graceful shutdown on exit."""
    gateway = Gateway(config)
    await gateway.start()
    try:
        yield gateway
    finally:
        await gateway.close()
