"""A line-protocol test client, a UDP sender and a tiny HTTP GET, all on real loopback sockets.

Every read has a timeout so no test can hang; `UNIT` scales all of them (TIDEGATE_TEST_UNIT).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import aiohttp
import msgspec
from prometheus_client.parser import text_string_to_metric_families

from tidegate import leaks
from tidegate.gateway import Config, Gateway

UNIT = float(os.environ.get("TIDEGATE_TEST_UNIT", "1.0"))
TIMEOUT = 5.0 * UNIT

BASE = Config(
    tcp=("127.0.0.1", 0),
    udp=("127.0.0.1", 0),
    admin=None,
    http=None,
    shutdown_timeout=2.0,
    close_linger=1.0,
)


def config(**changes: Any) -> Config:
    return replace(BASE, **changes)


class Client:
    """One client connection speaking JSON lines."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, address: tuple[str, int] | None) -> Client:
        assert address is not None
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(address[0], address[1], limit=1 << 24), TIMEOUT
        )
        return cls(reader, writer)

    @classmethod
    async def hello(cls, address: tuple[str, int] | None, user: str) -> Client:
        client = await cls.connect(address)
        await client.send({"op": "hello", "user": user})
        welcome = await client.recv()
        assert welcome["op"] == "welcome" and welcome["user"] == user, welcome
        return client

    async def send(self, frame: dict[str, Any] | bytes) -> None:
        data = frame if isinstance(frame, bytes) else msgspec.json.encode(frame) + b"\n"
        self.writer.write(data)
        await self.writer.drain()

    async def recv_line(self, timeout: float = TIMEOUT) -> bytes:
        line = await asyncio.wait_for(self.reader.readline(), timeout)
        if not line:
            raise EOFError("server closed the connection")
        return line

    async def recv(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        frame = msgspec.json.decode(await self.recv_line(timeout))
        assert isinstance(frame, dict)
        return frame

    async def join(self, room: str) -> None:
        await self.send({"op": "join", "room": room})
        assert await self.recv() == {"op": "joined", "room": room}

    async def expect_error_and_close(self, code: str, timeout: float = TIMEOUT) -> dict[str, Any]:
        frame = await self.recv(timeout)
        assert frame["op"] == "error" and frame["code"] == code, frame
        await self.expect_eof(timeout)
        return frame

    async def expect_eof(self, timeout: float = TIMEOUT) -> None:
        rest = await asyncio.wait_for(self.reader.read(), timeout)
        assert rest == b"", rest
        await self.close()

    async def roundtrip(self) -> None:
        """A ping/pong: everything sent before it has been processed by the server."""
        await self.send({"op": "ping"})
        assert await self.recv() == {"op": "pong"}

    def reset(self) -> None:
        """Close with RST instead of FIN."""
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, TimeoutError):
            await asyncio.wait_for(self.writer.wait_closed(), TIMEOUT)


class UdpSender:
    def __init__(self, address: tuple[str, int] | None) -> None:
        assert address is not None
        self.address = address
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    def send(self, datagram: bytes) -> None:
        self.sock.sendto(datagram, self.address)

    def close(self) -> None:
        self.sock.close()


async def http_get(address: tuple[str, int] | None, path: str) -> tuple[int, str]:
    """GET with `Connection: close`, so no keep-alive handler task outlives the request."""
    assert address is not None
    reader, writer = await asyncio.wait_for(asyncio.open_connection(*address), TIMEOUT)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        raw = await asyncio.wait_for(reader.read(), TIMEOUT)
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode()


async def wait_until(predicate: Any, timeout: float = TIMEOUT, what: str = "condition") -> None:
    """Poll a condition that has no event to wait on (e.g. counters after a peer vanished)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    delay = 0.001
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.05)


@contextlib.asynccontextmanager
async def http_session(**headers: str) -> AsyncIterator[aiohttp.ClientSession]:
    """An aiohttp client that closes each connection after its response, so no server-side
    keep-alive handler outlives the test's leak check."""
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(
        connector=connector, headers=headers, timeout=aiohttp.ClientTimeout(total=TIMEOUT)
    ) as session:
        yield session


def url(address: tuple[str, int] | None, path: str) -> str:
    assert address is not None
    return f"http://{address[0]}:{address[1]}{path}"


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse_samples(exposition: str) -> Samples:
    """Prometheus text, read with the official parser: (name, sorted labels) -> value."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }


def metric(samples: Samples, name: str, **labels: str) -> float:
    """A sample's value; 0 for a labelled counter that has not been seen yet."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def loop_lag_over(gw: Gateway, bound: float) -> int:
    """How many loop-lag observations of `gw` (the `tidegate_event_loop_lag_seconds` histogram
    of `/metrics`) were above `bound`, rounded up to the histogram's next bucket bound."""
    buckets: list[tuple[float, float]] = []
    total = 0.0
    for family in gw.metrics.loop_lag.collect():
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                buckets.append((float(sample.labels["le"]), sample.value))
            elif sample.name.endswith("_count"):
                total = sample.value
    within = next(count for upper, count in sorted(buckets) if upper >= bound)
    return int(total - within)


async def await_a_private_future() -> None:
    await asyncio.get_running_loop().create_future()  # only this task ever references it


@contextlib.asynccontextmanager
async def seeded_leaks(n: int) -> AsyncIterator[None]:
    """``n`` tasks proven blocked forever (``orphan-<i>``, each awaiting a future only it
    references), in a ``check()`` scope that holds their coroutines as the detector does (so
    the collector cannot destroy them meanwhile). No reference to them is kept here, not even
    a weak one (whatever can hand a task back can cancel it: it would not be proven); they
    are found by name through the detector's records and cancelled on the way out."""
    async with leaks.check(timeout=TIMEOUT):
        for i in range(n):
            # Unowned on purpose: that is the leak.
            asyncio.create_task(await_a_private_future(), name=f"orphan-{i}")  # noqa: RUF006
        await asyncio.sleep(0)  # each parks at its await
        try:
            yield
        finally:
            found = leaks.find(threads=False)
            orphans = [leak for leak in found if leak.name.startswith("orphan-")]
            await leaks.cancel_tasks(orphans, timeout=TIMEOUT)
