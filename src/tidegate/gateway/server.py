"""`Gateway`: the composition root. It builds every part, wires them with the callables and
narrow objects each needs, runs the lifecycle, and keeps the push API and the statistics.

The parts, each in its own module: the connection set (admission, sweeper, shutdown of the
clients: connections.py), the per-turn write batching (batching.py), local delivery
(fanout.py) behind the broker seam (broker.py), the TCP transport (tcp.py, listener.py)
behind the transport seam (client.py), the UDP and HTTP ingresses (udp.py, http.py) and the
admin app (admin.py). No other module of the package imports this one.

Ownership: the gateway has no long-lived task of its own. Its TCP listener accepts from a
reader callback and owns a short task per accepted socket until the transport is made;
`close()` stops it and awaits those. Timers are one `call_later` chain (the sweeper), one
`call_soon` per loop turn (the flush) and one per connection with input left to handle; all
are cancelled in `close()`. No long-lived task per connection, per push or per recipient.
The aiohttp apps (HTTP ingress, admin) are owned through their `WebListener`s, and the loop
watchdog (a ticker task and a monitor thread) through its `close()`; all are closed in
`close()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
from collections.abc import AsyncIterator, Callable

import msgspec
from aiohttp import web

from tidegate.gateway.admin import build_admin_app, connection_settings, gateway_metrics
from tidegate.gateway.batching import TurnBatcher
from tidegate.gateway.broker import Broker, InProcessBroker
from tidegate.gateway.client import ClientHost, ClientSettings
from tidegate.gateway.config import Address, Config
from tidegate.gateway.connections import ConnectionSet
from tidegate.gateway.fanout import LocalDelivery
from tidegate.gateway.fd_budget import ensure_fd_budget
from tidegate.gateway.hello_authenticator import make_hello_authenticator
from tidegate.gateway.http import build_push_app
from tidegate.gateway.lifecycle import Lifecycle, Phase, Step
from tidegate.gateway.listener import TcpListener, system_backlog
from tidegate.gateway.push_api import PushResult
from tidegate.gateway.registry import Registry
from tidegate.gateway.socket_stats import (
    SocketLike,
    receive_buffer,
    set_receive_buffer,
    udp_drops,
)
from tidegate.gateway.stats import Counters, GatewayStatistics
from tidegate.gateway.tcp import ClientProtocol
from tidegate.gateway.udp import PushDatagramProtocol
from tidegate.gateway.web_listener import ADMIN_MAX_CONNS, WebLimits, WebListener
from tidegate.ops import Watchdog
from tidegate.protocol import DatagramVerifier, ErrorCode, Target, parse_target
from tidegate.protocol.ingress import ReplayCache

__all__ = ["Gateway", "open_gateway"]

log = logging.getLogger("tidegate.gateway")

_encode = msgspec.json.Encoder().encode


# The parts are built before the loop runs; these find it when they are called (on it).
def _loop_time() -> float:
    return asyncio.get_running_loop().time()


def _call_soon(callback: Callable[[], None]) -> asyncio.Handle:
    return asyncio.get_running_loop().call_soon(callback)


class Gateway:
    """The push gateway. Use `open_gateway(config)`, or `await start()` then `await close()`.

    `push(to, data)` is the one way in for a push (safe to call from any callback on the loop
    thread); the ingresses are handed it.
    """

    def __init__(self, config: Config, *, reuse_port: bool = False) -> None:
        self.config = config
        # One of `--workers` processes: the TCP, UDP and HTTP ports are shared (SO_REUSEPORT).
        self._reuse_port = reuse_port
        self.counters = Counters()
        self.metrics = gateway_metrics(self.statistics)
        self.watchdog: Watchdog | None = None
        self.turns = TurnBatcher(
            call_soon=_call_soon,
            observe_latency=self.metrics.push_latency.observe,
            buffer_bytes=config.buffer_bytes,
            budget=config.fanout_budget,
            on_yield=self._count_yield,
            on_drain=self._count_drain,
        )
        self.registry = Registry(before_change=self.turns.membership_changing)
        delivery = LocalDelivery(registry=self.registry, counters=self.counters, turns=self.turns)
        self.broker: Broker
        if config.broker is None:
            self.broker = InProcessBroker(delivery.deliver)
        else:
            # Imported here: a gateway without a broker never loads nats-py.
            from tidegate.gateway.nats_broker import NatsBroker
            from tidegate.gateway.subjects import Subjects

            nats_broker = NatsBroker(
                servers=config.broker.split(","),
                subjects=Subjects(config.broker_prefix),
                deliver_frame=delivery.deliver_frame,
                clock=_loop_time,
                canary_interval=config.canary_interval,
                canary_timeout=config.canary_timeout,
            )
            self.registry.interest = nats_broker
            self.broker = nats_broker
        self._publish = self.broker.publish
        self.connection_set = ConnectionSet(
            max_conns=config.max_conns,
            shortest_timeout=config.shortest_connection_timeout,
            counters=self.counters,
            clock=_loop_time,
        )
        prefix = secrets.token_hex(4)
        sessions = (f"{prefix}-s{n:x}" for n in itertools.count(1))
        self._ids = (f"{prefix}-{n:x}" for n in itertools.count(1))
        self._client_host = ClientHost(
            settings=ClientSettings.from_config(config),
            authenticate=make_hello_authenticator(
                config.jwt_secret, refusals=self.counters.auth_failures
            ),
            admission=self.connection_set,
            registry=self.registry,
            turns=self.turns,
            counters=self.counters,
            clock=_loop_time,
            new_session=sessions.__next__,
            call_soon=_call_soon,
        )
        self._listener: TcpListener | None = None
        self._udp_transport: asyncio.DatagramTransport | None = None
        self._udp_socket: SocketLike | None = None
        self._replays: ReplayCache | None = None
        self._web_listeners: list[WebListener] = []
        self._lifecycle = Lifecycle()
        # start() and the shutdown never interleave: a close() that arrives while start() is
        # binding waits for it, then undoes everything it opened.
        self._lifecycle_lock = asyncio.Lock()
        self._shutdown: asyncio.Task[None] | None = None
        self.tcp_address: Address | None = None
        self.udp_address: Address | None = None
        self.admin_address: Address | None = None
        self.http_address: Address | None = None

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        async with self._lifecycle_lock:
            await self._start()

    async def _start(self) -> None:
        self._lifecycle.go(Step.START)
        self.config.check_startable()
        ensure_fd_budget(self.config, admin_max_conns=ADMIN_MAX_CONNS)
        loop = asyncio.get_running_loop()
        config = self.config
        try:
            await self.broker.start()
            self.connection_set.admitting = True
            if config.tcp is not None:
                host = self._client_host
                self._listener = TcpListener.open(
                    config.tcp,
                    lambda: ClientProtocol(host),
                    backlog=self.listen_backlog,
                    high_water=self.connection_set.high_water,
                    low_water=self.connection_set.low_water,
                    reuse_port=self._reuse_port,
                    accept_errors=self.counters.accept_errors,
                )
                self.connection_set.report_sockets_to(self._listener.update)
                self.tcp_address = self._listener.address
            if config.udp is not None:
                verifier = DatagramVerifier(
                    secret=config.secret.encode() if config.secret else None,
                    window=config.replay_window,
                    replay_bytes=config.replay_memory,
                )
                self._replays = verifier.replays
                transport, _ = await loop.create_datagram_endpoint(
                    lambda: PushDatagramProtocol(
                        verifier=verifier, push=self.push, rejections=self.counters.rejections
                    ),
                    local_addr=config.udp,
                    reuse_port=self._reuse_port or None,
                )
                self._udp_transport = transport
                self.udp_address = _bound(transport.get_extra_info("sockname"))
                self._udp_socket = transport.get_extra_info("socket")
                if config.udp_receive_buffer is not None:
                    granted = set_receive_buffer(self._udp_socket, config.udp_receive_buffer)
                    # Linux reports twice the payload it will hold (the rest is bookkeeping).
                    if granted is not None and granted < config.udp_receive_buffer:
                        log.warning(
                            "udp: asked for a %d-byte receive buffer, the kernel granted %d "
                            "(raise net.core.rmem_max, or run with CAP_NET_ADMIN)",
                            config.udp_receive_buffer,
                            granted,
                        )
            if config.http is not None:
                app = build_push_app(
                    push=self.push,
                    confirmation=self.broker.confirmation(),
                    rejections=self.counters.rejections,
                    api_key=config.api_key,
                    max_body=config.max_body,
                    max_batch=config.max_batch,
                    body_timeout=config.http_body_timeout,
                    fanout_catch_up=self._fanout_catch_up,
                )
                self.http_address = await self._serve_web(
                    app,
                    config.http,
                    name="http",
                    max_conns=config.http_max_conns,
                    reuse_port=self._reuse_port,
                )
            # The watchdog runs with or without the admin port: its blocked-loop reports go
            # to the log as well.
            self.watchdog = Watchdog(
                threshold=config.block_threshold, lag_histogram=self.metrics.loop_lag
            )
            self.watchdog.start()
            if config.admin is not None:
                app = build_admin_app(
                    metrics=self.metrics,
                    watchdog=self.watchdog,
                    admin_token=config.admin_token,
                    ready=self.ready,
                    settings=connection_settings(config),
                )
                self.admin_address = await self._serve_web(
                    app, config.admin, name="admin", max_conns=ADMIN_MAX_CONNS
                )
        except BaseException:
            await self._shut_down()
            raise
        self.connection_set.start_sweeping(loop.call_later)
        self._lifecycle.go(Step.STARTED)

    @property
    def listen_backlog(self) -> int:
        return self.config.listen_backlog or system_backlog()

    async def _serve_web(
        self,
        app: web.Application,
        address: Address,
        *,
        name: str,
        max_conns: int,
        reuse_port: bool = False,
    ) -> Address:
        config = self.config
        served = await WebListener.open(
            app,
            address,
            name=name,
            limits=WebLimits(
                max_conns=max_conns,
                header_timeout=config.http_header_timeout,
                idle_timeout=config.http_idle_timeout,
            ),
            backlog=self.listen_backlog,
            refusals=self.counters.http_refusals,
            accept_errors=self.counters.accept_errors,
            shutdown_timeout=config.shutdown_timeout,
            reuse_port=reuse_port,
        )
        self._web_listeners.append(served)
        return served.address

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
        async with self._lifecycle_lock:
            await self._shut_down()

    async def _shut_down(self) -> None:
        if self._lifecycle.shutting_down:
            return
        self._lifecycle.go(Step.CLOSE)
        async with contextlib.AsyncExitStack() as later:
            # Unwound last pushed first, each step whatever happened to those before it (a
            # cancelled or failed close_all still closes the web servers and the broker).
            later.callback(self._lifecycle.go, Step.CLOSED)
            later.push_async_callback(self.broker.close)
            if self.watchdog is not None:
                later.push_async_callback(self.watchdog.close)
            for served in reversed(self._web_listeners):
                later.push_async_callback(served.close)
            later.callback(self.turns.close)
            later.callback(self.connection_set.stop_sweeping)
            if self._listener is not None:
                self._listener.stop()
                # Connections it already accepted are made first, so close_all sees them.
                await self._listener.wait_closed()
            if self._udp_transport is not None:
                self._udp_transport.close()
                self._udp_socket = None
            # The sweeper runs on meanwhile: it ends each closing connection's linger.
            await self.connection_set.close_all(
                ErrorCode.SERVER_SHUTDOWN,
                "the gateway is shutting down",
                timeout=self.config.shutdown_timeout,
            )

    @property
    def running(self) -> bool:
        return self._lifecycle.phase is Phase.RUNNING

    def ready(self) -> bool:
        """Running, with the TCP listener accepting and the broker reaching every node
        (`/readyz`)."""
        return (
            self.running
            and (self._listener is None or self._listener.accepting)
            and self.broker.ready()
        )

    @property
    def accepting(self) -> bool:
        """False while accepting is paused at the high-water mark."""
        return self._listener is not None and self._listener.accepting

    # -- pushes ----------------------------------------------------------------------------

    def push(
        self, to: str | Target, data: object, *, id: str | None = None, ingress: str = "local"
    ) -> PushResult:
        """Deliver `data` (any JSON-encodable value, or `msgspec.Raw` already encoded: one
        trusted JSON value) to `to`, counted under `ingress`.

        Raises `BadPush` for an unknown `to` form, `NotPublished` when the broker cannot take
        the push now (cluster mode: it was delivered nowhere). Returns (id, connections
        reached on this node). Never waits for a client.
        """
        target = parse_target(to) if isinstance(to, str) else to
        data_json = bytes(data) if isinstance(data, msgspec.Raw) else _encode(data)
        if id is None:
            id = next(self._ids)
        delivered = self._publish(target, id, data_json)
        counters = self.counters
        counters.pushes[ingress] += 1
        counters.pushes_by_target[target.kind] += 1
        return PushResult(id, delivered)

    # -- observation -------------------------------------------------------------------------

    def connections(self) -> int:
        return len(self.connection_set)

    def _fanout_catch_up(self) -> asyncio.Future[None] | None:
        """For an HTTP batch, before each item: None to push it now; else a future done once
        the fan-out has caught up (`TurnBatcher.behind`)."""
        if not self.turns.behind():
            return None
        caught_up = asyncio.get_running_loop().create_future()

        def done() -> None:
            if not caught_up.done():
                caught_up.set_result(None)

        self.turns.when_caught_up(done)
        return caught_up

    def _count_yield(self) -> None:
        self.counters.fanout_yields += 1

    def _count_drain(self) -> None:
        self.counters.fanout_drains += 1

    def statistics(self) -> GatewayStatistics:
        census = self.connection_set.census()
        udp = self._udp_socket
        replays = self._replays
        return self.counters.snapshot(
            connections=census.live,
            handshaking=census.handshaking,
            closing=census.closing,
            users=self.registry.user_count(),
            rooms=self.registry.room_count(),
            buffered_bytes=census.buffered_bytes + self.turns.shared_bytes,
            max_buffered_bytes=census.max_buffered_bytes,
            broker=self.broker.statistics(),
            kernel_send_queue_bytes=census.kernel_queued_bytes,
            udp_receive_drops=None if udp is None else udp_drops(udp),
            udp_receive_buffer_bytes=None if udp is None else receive_buffer(udp),
            replay_cache_bytes=0 if replays is None else replays.size,
            replay_cache_ids=0 if replays is None else len(replays),
        )


def _bound(sockname: object) -> Address:
    assert isinstance(sockname, tuple)
    host, port = sockname[0], sockname[1]
    assert isinstance(host, str) and isinstance(port, int)
    return host, port


@contextlib.asynccontextmanager
async def open_gateway(config: Config, *, reuse_port: bool = False) -> AsyncIterator[Gateway]:
    """Start a gateway for the duration of the block; graceful shutdown on exit. With
    `reuse_port`, its TCP, UDP and HTTP listeners share their ports (`--workers`)."""
    gateway = Gateway(config, reuse_port=reuse_port)
    await gateway.start()
    try:
        yield gateway
    finally:
        await gateway.close()
