"""TcpListener: its own accept loop, water marks, accept errors, and stop() at any point."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import struct
from collections import Counter
from typing import cast

import pytest

from tidegate.gateway import open_gateway
from tidegate.gateway.listener import RETRY_AFTER, TcpListener, listening_socket, system_backlog

from .helpers import TIMEOUT, config, wait_until


class Counted(asyncio.Protocol):
    """Counts the connections made and lost; the test plays the owner's part."""

    def __init__(self, owner: Owner) -> None:
        self.owner = owner

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.owner.made.append(transport)
        self.owner.report()

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner.lost += 1
        self.owner.report()


class Owner:
    def __init__(self) -> None:
        self.made: list[asyncio.BaseTransport] = []
        self.lost = 0
        self.listener: TcpListener | None = None

    def report(self) -> None:
        assert self.listener is not None
        self.listener.update(len(self.made) - self.lost)

    def open(self, **options: object) -> TcpListener:
        self.listener = TcpListener.open(
            ("127.0.0.1", 0),
            lambda: Counted(self),
            backlog=16,
            high_water=2,
            low_water=1,
            accept_errors=Counter(),
            **options,  # type: ignore[arg-type]
        )
        return self.listener


async def connect(listener: TcpListener) -> asyncio.StreamWriter:
    _, writer = await asyncio.wait_for(asyncio.open_connection(*listener.address), TIMEOUT)
    return writer


async def test_pauses_at_high_water_at_once_and_resumes_at_low_water() -> None:
    owner = Owner()
    listener = owner.open()
    writers = []
    try:
        writers.append(await connect(listener))
        writers.append(await connect(listener))
        await wait_until(lambda: len(owner.made) == 2, what="two connections")
        assert not listener.accepting  # at high water: the owner's count paused it
        writers.append(await connect(listener))  # waits in the backlog
        await asyncio.sleep(0.05)
        assert len(owner.made) == 2
        owner.made[0].close()  # down to one: low water, resumes at once
        await wait_until(lambda: len(owner.made) == 3, what="the queued client")
    finally:
        listener.stop()
        await listener.wait_closed()
        for transport in owner.made:
            transport.close()
        for writer in writers:
            writer.close()
        await wait_until(lambda: owner.lost == len(owner.made), what="transports closed")


async def test_stop_then_wait_closed_hands_over_what_was_accepted() -> None:
    owner = Owner()
    listener = owner.open()
    address = listener.address
    writer = await connect(listener)
    listener.stop()  # the client may be accepted, not yet handed over
    await listener.wait_closed()
    assert not listener.accepting
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection(*address)
    for transport in owner.made:
        transport.close()
    writer.close()
    await wait_until(lambda: owner.lost == len(owner.made), what="transports closed")


class FailingSocket:
    """A real listening socket whose accept() fails with `errors` first."""

    def __init__(self, errors: list[int]) -> None:
        self.sock = listening_socket(("127.0.0.1", 0), backlog=16)
        self.errors = errors

    def accept(self) -> tuple[socket.socket, object]:
        if self.errors:
            code = self.errors.pop(0)
            raise OSError(code, "simulated")
        return self.sock.accept()

    def __getattr__(self, name: str) -> object:
        return getattr(self.sock, name)


@pytest.mark.parametrize(
    ("code", "name", "pauses"),
    [(errno.EMFILE, "EMFILE", True), (errno.ECONNABORTED, "ECONNABORTED", False)],
)
async def test_accept_errors_are_counted_logged_once_and_survived(
    code: int, name: str, pauses: bool, caplog: pytest.LogCaptureFixture
) -> None:
    owner = Owner()
    errors: Counter[str] = Counter()
    failing = FailingSocket([code] * 3)
    owner.listener = listener = TcpListener(
        cast(socket.socket, failing),
        lambda: Counted(owner),
        high_water=10,
        low_water=5,
        accept_errors=errors,
    )
    listener.resume()
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        writer = await connect(listener)
        await wait_until(lambda: len(owner.made) == 1, what="the client, once accept works")
        assert errors == {name: 3}
        if pauses:
            # Out of descriptors: each failure pauses accepting for RETRY_AFTER, no spinning.
            assert loop.time() - started >= 3 * RETRY_AFTER * 0.9
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "accept failed" in warnings[0].getMessage()
    finally:
        listener.stop()
        await listener.wait_closed()
        for transport in owner.made:
            transport.close()
        writer.close()
        await wait_until(lambda: owner.lost == len(owner.made), what="transports closed")


def test_the_system_backlog_is_read_from_the_kernel() -> None:
    backlog = system_backlog()
    try:
        with open("/proc/sys/net/core/somaxconn") as somaxconn:
            assert backlog == int(somaxconn.read())
    except OSError:
        assert backlog == socket.SOMAXCONN


def listen_backlog(address: tuple[str, int] | None) -> int:
    """The backlog the kernel gave this process's listening socket at `address`: Linux
    reports it in TCP_INFO's `tcpi_sacked` for a socket in LISTEN (the accept queue's
    length in `tcpi_unacked`)."""
    assert address is not None
    for fd in os.listdir("/proc/self/fd"):
        try:
            if not os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                continue
            sock = socket.fromfd(int(fd), socket.AF_INET, socket.SOCK_STREAM)  # a dup
        except OSError:  # gone meanwhile, or not an inet socket
            continue
        with sock:
            try:
                if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                    continue
                if sock.getsockname()[:2] != address:
                    continue
            except OSError:
                continue
            info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 32)
            return int(struct.unpack_from("=8x6I", info)[5])
    raise AssertionError(f"no listening socket of ours at {address}")


@pytest.mark.parametrize("backlog", [None, 7])
async def test_every_listener_listens_with_the_backlog_asked_for_or_the_systems(
    backlog: int | None,
) -> None:
    # The backlog was fixed at 1024 (the system allowed more): a 10k reconnect storm had
    # 65 % of its connects retried by TCP. Default: the system's maximum (somaxconn).
    cfg = config(listen_backlog=backlog, http=("127.0.0.1", 0), admin=("127.0.0.1", 0))
    async with open_gateway(cfg) as gw:
        expected = system_backlog() if backlog is None else backlog
        for address in (gw.tcp_address, gw.http_address, gw.admin_address):
            assert listen_backlog(address) == expected


async def test_a_burst_is_counted_once_while_it_is_handed_over() -> None:
    # Three clients accepted in one go: each counts once, from accept to its transport and on
    # through the owner's count, so the listener still accepts below its high-water mark.
    owner = Owner()
    owner.listener = listener = TcpListener.open(
        ("127.0.0.1", 0),
        lambda: Counted(owner),
        backlog=16,
        high_water=4,
        low_water=1,
        accept_errors=Counter(),
    )
    writers = []
    try:
        listener.pause()  # the three wait in the backlog and are taken in one go
        writers = [await connect(listener) for _ in range(3)]
        listener.resume()
        await wait_until(lambda: len(owner.made) == 3, what="three connections")
        await asyncio.sleep(0)  # the hand-overs' done callbacks
        assert listener.accepting
        writers.append(await connect(listener))
        await wait_until(lambda: len(owner.made) == 4, what="the fourth")
        assert not listener.accepting
    finally:
        listener.stop()
        await listener.wait_closed()
        for transport in owner.made:
            transport.close()
        for writer in writers:
            writer.close()
        await wait_until(lambda: owner.lost == len(owner.made), what="transports closed")
