"""A TCP listener that accepts connections itself: between water marks, counting what fails.

The gateway does its own `accept()` instead of leaving it to `loop.create_server`, for three
things the loops do not give: accept errors are seen (on uvloop, libuv swallows `EMFILE` by
accepting and closing the pending clients; the default loop logs a traceback a second), so
they are counted, logged once in a while and answered with a short pause instead of a spin;
accepting pauses and resumes synchronously (`remove_reader` / `add_reader`), with no task and
no duplicated socket; and the backlog is ours to choose. Each accepted socket is handed to the
loop with `connect_accepted_socket`, which makes its transport and protocol as a server would.
That costs a short task per connection (~20 us on uvloop, measured against its native accept),
owned here until the transport is made.

The owner reports its socket count with `update(sockets)` whenever it changes. At the
high-water mark accepting pauses at once, counting the sockets accepted but not yet handed over;
at the low-water mark it resumes. While paused, clients wait in the kernel's backlog.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Final

from tidegate.gateway.config import Address

__all__ = ["TcpListener", "listening_socket", "system_backlog"]

log = logging.getLogger("tidegate.gateway.listener")

# Accepts per readiness event: a reconnect storm is taken in slices with the loop's other work
# in between; the rest waits in the backlog for the next turn.
ACCEPTS_PER_TURN: Final = 128
# Out of descriptors or buffers: accepting again at once would fail again (and spin on a
# level-triggered poll); what is being closed needs a moment to free them.
RETRY_AFTER: Final = 0.1
RESOURCE_ERRORS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
LOG_EVERY: Final = 10.0  # seconds between two log lines about accept errors


def system_backlog() -> int:
    """The largest listen backlog the system takes (Linux: net.core.somaxconn)."""
    try:
        return int(Path("/proc/sys/net/core/somaxconn").read_text())
    except (OSError, ValueError):
        return socket.SOMAXCONN


def listening_socket(address: Address, *, backlog: int, reuse_port: bool = False) -> socket.socket:
    """A non-blocking listening socket bound to `address` (v4 or v6, address reuse on; port
    sharing with `reuse_port`)."""
    host, port = address
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=backlog, reuse_port=reuse_port)
    sock.setblocking(False)
    return sock


class TcpListener:
    def __init__(
        self,
        sock: socket.socket,
        factory: Callable[[], asyncio.Protocol],
        *,
        high_water: int,
        low_water: int,
        accept_errors: Counter[str],
        name: str = "tcp",
    ) -> None:
        self._sock = sock
        self._factory = factory
        self.high_water = high_water
        self.low_water = low_water
        self.name = name
        self._accept_errors = accept_errors
        self._loop = asyncio.get_running_loop()
        self._sockets = 0  # the owner's count
        self._handing_over: set[asyncio.Task[object]] = set()
        self._unmade = 0  # accepted sockets whose protocol is not made yet (not in the count)
        self._reading = False
        self._closed = False
        self._retry: asyncio.TimerHandle | None = None
        self._unlogged = 0
        self._next_log = 0.0

    @classmethod
    def open(
        cls,
        address: Address,
        factory: Callable[[], asyncio.Protocol],
        *,
        backlog: int,
        high_water: int,
        low_water: int,
        accept_errors: Counter[str],
        name: str = "tcp",
        reuse_port: bool = False,
    ) -> TcpListener:
        """Bind `address` and start accepting; `factory` makes each connection's protocol.
        With `reuse_port`, other processes may bind the same port (`--workers`)."""
        sock = listening_socket(address, backlog=backlog, reuse_port=reuse_port)
        try:
            listener = cls(
                sock,
                factory,
                high_water=high_water,
                low_water=low_water,
                accept_errors=accept_errors,
                name=name,
            )
        except BaseException:
            sock.close()
            raise
        listener.resume()
        return listener

    @property
    def address(self) -> Address:
        name = self._sock.getsockname()
        return name[0], name[1]

    @property
    def accepting(self) -> bool:
        return self._reading

    def update(self, sockets: int) -> None:
        """The owner's socket count changed: pause at high water, resume at low water."""
        self._sockets = sockets
        if self._sockets + self._unmade >= self.high_water:
            self.pause()
        elif sockets <= self.low_water and self._retry is None:
            self.resume()

    def pause(self) -> None:
        """Stop accepting now; clients wait in the kernel backlog."""
        if self._reading:
            self._loop.remove_reader(self._sock.fileno())
            self._reading = False

    def resume(self) -> None:
        if self._reading or self._closed:
            return
        self._reading = True
        self._loop.add_reader(self._sock.fileno(), self._accept_some)

    def stop(self) -> None:
        """Stop accepting for good and close the listening socket. Connections already
        accepted are still handed over: `wait_closed()` waits for them (one loop turn)."""
        self._closed = True
        self.pause()
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        self._sock.close()

    async def wait_closed(self) -> None:
        """After `stop()`: every accepted connection has its transport and protocol."""
        while self._handing_over:
            await asyncio.wait(set(self._handing_over))

    # -- accepting ---------------------------------------------------------------------------

    def _accept_some(self) -> None:
        for _ in range(ACCEPTS_PER_TURN):
            if not self._reading:
                return  # paused by the count of what this loop accepted
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._failed(exc)
                if exc.errno in RESOURCE_ERRORS:
                    self.pause()
                    self._retry = self._loop.call_later(RETRY_AFTER, self._retry_accepting)
                    return
                continue  # one client's trouble (ECONNABORTED, EPERM from a firewall ...)
            conn.setblocking(False)
            self._hand_over(conn)

    def _hand_over(self, conn: socket.socket) -> None:
        made = False

        def make_protocol() -> asyncio.Protocol:
            # From here on the owner counts the connection (from its connection_made).
            nonlocal made
            made = True
            self._unmade -= 1
            return self._factory()

        def handed_over(task: asyncio.Task[object]) -> None:
            if not made:
                self._unmade -= 1
            self._handed_over(task)

        self._unmade += 1
        task: asyncio.Task[object] = self._loop.create_task(
            self._loop.connect_accepted_socket(make_protocol, conn),
            name=f"tidegate-{self.name}-accept",
        )
        self._handing_over.add(task)
        task.add_done_callback(handed_over)
        if self._sockets + self._unmade >= self.high_water:
            self.pause()

    def _handed_over(self, task: asyncio.Task[object]) -> None:
        self._handing_over.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            return
        if isinstance(exc, OSError):
            self._failed(exc)  # the client went away before its transport was made
        else:
            log.error("%s: a connection could not be set up", self.name, exc_info=exc)

    def _retry_accepting(self) -> None:
        self._retry = None
        if self._sockets + self._unmade < self.high_water:
            self.resume()

    def _failed(self, exc: OSError) -> None:
        """Count an accept error by errno name; log at most one line every `LOG_EVERY` s."""
        name = errno.errorcode.get(exc.errno or 0, "OSError")
        self._accept_errors[name] += 1
        self._unlogged += 1
        now = self._loop.time()
        if now < self._next_log:
            return
        self._next_log = now + LOG_EVERY
        more = (
            f" ({self._unlogged} accept errors since the last report)" if self._unlogged > 1 else ""
        )
        self._unlogged = 0
        hint = (
            "; out of file descriptors: see RLIMIT_NOFILE and --max-conns"
            if exc.errno in (errno.EMFILE, errno.ENFILE)
            else ""
        )
        log.warning("%s: accept failed: %s%s%s", self.name, os.strerror(exc.errno or 0), hint, more)
