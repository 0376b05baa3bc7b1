"""A TCP listener whose accepting pauses and resumes between water marks.

asyncio has no public "stop accepting for a while": `Server.close()` closes the socket it was
given. So the listening socket stays ours, and each `asyncio.Server` gets a `dup()` of it:
pausing closes the server and its duplicate, the original keeps listening (the kernel queues
new clients in the backlog), and resuming starts a new server on a fresh duplicate. This uses
only public API, so it works the same on uvloop.

The owner reports its socket count with `update(sockets)` whenever it changes. At the high-water
mark accepting pauses at once, synchronously: on uvloop not one more client is accepted; the
default asyncio loop still hands over the rest of the batch it accepted in one go (up to the
backlog). At the low-water mark it resumes. Resuming needs an await, so the listener owns
one task for it, which `stop()` cancels and `wait_closed()` awaits.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable

from tidegate.gateway.config import Address

__all__ = ["TcpListener"]


class TcpListener:
    def __init__(
        self,
        sock: socket.socket,
        factory: Callable[[], asyncio.Protocol],
        *,
        backlog: int,
        high_water: int,
        low_water: int,
    ) -> None:
        self._sock = sock
        self._factory = factory
        self._backlog = backlog
        self.high_water = high_water
        self.low_water = low_water
        self._sockets = 0
        self._server: asyncio.Server | None = None  # the one accepting now
        self._last: asyncio.Server | None = None  # the latest made, for wait_closed()
        self._closed = False
        self._below_low_water = asyncio.Event()
        self._resumer: asyncio.Task[None] | None = None

    @classmethod
    async def open(
        cls,
        address: Address,
        factory: Callable[[], asyncio.Protocol],
        *,
        high_water: int,
        low_water: int,
        backlog: int = 1024,
        reuse_port: bool = False,
    ) -> TcpListener:
        host, port = address
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.create_server(
            (host, port), family=family, backlog=backlog, reuse_port=reuse_port
        )
        sock.setblocking(False)
        listener = cls(sock, factory, backlog=backlog, high_water=high_water, low_water=low_water)
        try:
            await listener.resume()
            resuming = listener._resume_below_low_water()
            try:
                listener._resumer = asyncio.get_running_loop().create_task(
                    resuming, name="tidegate-accept"
                )
            except BaseException:
                resuming.close()  # a task factory refused it: do not leave it unawaited
                raise
        except BaseException:
            listener.stop()
            await listener.wait_closed()
            raise
        return listener

    def update(self, sockets: int) -> None:
        """The owner's socket count changed: pause at high water, resume at low water."""
        self._sockets = sockets
        if self._server is not None:
            if sockets >= self.high_water:
                self.pause()
        elif sockets <= self.low_water:
            self._below_low_water.set()

    async def _resume_below_low_water(self) -> None:
        while True:
            await self._below_low_water.wait()
            self._below_low_water.clear()
            if self._sockets <= self.low_water:
                await self.resume()

    @property
    def address(self) -> Address:
        name = self._sock.getsockname()
        return name[0], name[1]

    @property
    def accepting(self) -> bool:
        return self._server is not None

    def pause(self) -> None:
        """Stop accepting now (synchronously); clients wait in the kernel backlog."""
        if self._server is not None:
            self._server.close()
            self._server = None

    async def resume(self) -> None:
        if self._server is not None or self._closed:
            return
        loop = asyncio.get_running_loop()
        # Made without serving, recorded, then started: whatever stop() or pause() happens
        # during an await below finds the server and closes it, so none is left accepting.
        server = await loop.create_server(
            self._factory, sock=self._sock.dup(), backlog=self._backlog, start_serving=False
        )
        if self._closed or self._server is not None:  # stopped, or resumed twice, meanwhile
            server.close()
            return
        self._server = self._last = server
        await server.start_serving()

    def stop(self) -> None:
        """Stop accepting for good and close the listening socket."""
        self._closed = True
        self.pause()
        self._sock.close()
        if self._resumer is not None:
            self._resumer.cancel()

    async def wait_closed(self) -> None:
        if self._resumer is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._resumer
            self._resumer = None
        # Servers retired by pause() closed their sockets at once; their clients belong to
        # the owner, which closes them before waiting here.
        if self._last is not None:
            await self._last.wait_closed()
