"""A TCP listener whose accepting can be paused and resumed without closing its socket.

asyncio has no public "stop accepting for a while": `Server.close()` closes the socket it was
given. So the listening socket stays ours, and each `asyncio.Server` gets a `dup()` of it:
pausing closes the server and its duplicate, the original keeps listening (the kernel queues
new clients in the backlog), and resuming starts a new server on a fresh duplicate. This uses
only public API, so it works the same on uvloop.
"""

from __future__ import annotations

import asyncio
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
    ) -> None:
        self._sock = sock
        self._factory = factory
        self._backlog = backlog
        self._server: asyncio.Server | None = None
        self._servers: list[asyncio.Server] = []  # every server made, for wait_closed()
        self._closed = False

    @classmethod
    async def open(
        cls, address: Address, factory: Callable[[], asyncio.Protocol], *, backlog: int = 1024
    ) -> TcpListener:
        host, port = address
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.create_server((host, port), family=family, backlog=backlog)
        sock.setblocking(False)
        listener = cls(sock, factory, backlog=backlog)
        try:
            await listener.resume()
        except BaseException:
            sock.close()
            raise
        return listener

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
        server = await loop.create_server(
            self._factory, sock=self._sock.dup(), backlog=self._backlog
        )
        self._servers.append(server)
        if self._closed:  # closed while we were starting
            server.close()
        else:
            self._server = server

    def stop(self) -> None:
        """Stop accepting for good and close the listening socket."""
        self._closed = True
        self.pause()
        self._sock.close()

    async def wait_closed(self) -> None:
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
