"""Pattern 7: five remedies for pattern 6 (handlers blocked on a channel nobody drains).

Each remedy is a fix of `connection_handler`, with its trade-off in its docstring:

1. `handle_connection_buffered`: a large bounded buffer.
2. `open_limited_message_server`: a maximum number of connections.
3. `handle_connection_send_timeout`: abort a send that blocks too long.
4. `open_pausing_message_server`: pause accepting while overloaded.
5. `handle_connection_own_writer`: one writer per connection.

Remedies 1, 3 and 5 make a handler end on its own, so `start_message_server` below still starts
handlers nobody owns (Go's `go handle(conn)`) to show that the remedy alone is enough. Remedies 2
and 4 bound the number of stuck handlers but cannot unstick one, so those servers own their
handlers and cancel them on close: that ownership is the part that ends them.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

from examples.leaks.chan import CLOSED, Closed, Unbuffered, fire_and_forget
from examples.leaks.connection_handler import close_quietly, handle_connection

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Coroutine[Any, Any, None]]
Store = Callable[[bytes], Awaitable[None]]

OVERLOADED = b"overloaded\n"
BUSY = b"busy\n"


async def start_message_server(
    handle: Handler, *, host: str = "127.0.0.1", port: int = 0
) -> asyncio.Server:
    """Pattern 6's server with a pluggable handler: one unowned task per connection."""

    def accept_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        fire_and_forget(asyncio.create_task(handle(reader, writer), name=f"conn {peer}"))

    return await asyncio.start_server(accept_connection, host, port)


# 1. A large bounded buffer ------------------------------------------------------------------


async def handle_connection_buffered(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, inbox: asyncio.Queue[bytes]
) -> None:
    """Send into `inbox = asyncio.Queue(maxsize=N)` (Go: `make(chan []byte, N)`).

    Trade-off: it only postpones the block. While the dispatcher is stalled, sends complete until
    N messages wait in the buffer; the next one blocks exactly as before, so the leak comes back
    under a longer stall or more traffic. It costs up to N messages of memory, and whatever sits
    in the buffer is lost if the process stops. Keep it bounded: `maxsize=0` means unbounded
    in asyncio, which trades the leak for unbounded memory.
    """
    try:
        while line := await reader.readline():
            await inbox.put(line)  # blocks only when the buffer is full
    finally:
        await close_quietly(writer)


# 2. A maximum number of connections ---------------------------------------------------------


@contextlib.asynccontextmanager
async def open_limited_message_server(
    inbox: Unbuffered[bytes], *, max_connections: int, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[asyncio.Server]:
    """Serve at most `max_connections` clients at once; refuse the others with `busy`.

    Trade-off: it bounds the damage, it does not end it. With the dispatcher stalled, up to
    `max_connections` handlers still sit blocked, and once they do every new client is refused:
    a stuck consumer becomes an outage instead of a slow memory leak, which is at least visible.
    To count handlers the server must track them, so it owns them: leaving the block cancels the
    stuck ones (their pending message is lost) and waits for them.
    """
    handlers: set[asyncio.Task[None]] = set()

    def accept_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(handlers) >= max_connections:
            writer.write(BUSY)
            writer.close()  # refused before a handler exists
            return
        peer = writer.get_extra_info("peername")
        handler = asyncio.create_task(  # pattern 6's handler, unchanged: it can still block
            handle_connection(reader, writer, inbox), name=f"conn {peer}"
        )
        handlers.add(handler)
        handler.add_done_callback(handlers.discard)

    server = await asyncio.start_server(accept_connection, host, port)
    try:
        yield server
    finally:
        server.close()
        await cancel_and_wait(handlers)
        await server.wait_closed()


async def cancel_and_wait(tasks: set[asyncio.Task[Any]]) -> None:
    """The owner's side of "every task has an owner": cancel them all, wait until they ended."""
    pending = list(tasks)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)


# 3. Abort a send that blocks too long -------------------------------------------------------


async def handle_connection_send_timeout(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    inbox: Unbuffered[bytes],
    *,
    send_timeout: float,
) -> None:
    """Give each send `send_timeout` seconds; past that, tell the client and hang up.

    Go: `select { case inbox <- msg: case <-time.After(d): return }`.
    Trade-off: under load, clients are disconnected and the message is dropped (the client must
    retry), and `send_timeout` is a guess: too short drops messages during normal hiccups, too
    long keeps handlers (and sockets) piling up for that long. A handler lives at most
    `send_timeout` after the dispatcher stops.
    """
    try:
        while line := await reader.readline():
            try:
                async with asyncio.timeout(send_timeout):
                    await inbox.send(line)
            except TimeoutError:
                writer.write(OVERLOADED)
                return
    finally:
        await close_quietly(writer)


# 4. Pause accepting while overloaded --------------------------------------------------------


class PausingMessageServer:
    """An accept loop (Go's `for { conn := ln.Accept(); go handle(conn) }`) that stops serving
    new clients while `high_water` handlers are blocked handing a message to the dispatcher.

    While paused, the client just accepted waits unserved and the next ones wait in the kernel's
    listen backlog: nobody new reaches the stuck channel. (Go's loop has the same shape: the
    `Accept` already in progress completes, the loop then waits for room before serving it.)
    Trade-off: back-pressure moves to the backlog. Waiting clients see latency, then timeouts or
    refused connections once the backlog is full; nothing is dropped and the number of handlers
    stays bounded, but a stalled dispatcher stalls the whole service. It bounds the leak; the
    handlers already serving still need an owner to end them on close.
    """

    def __init__(self, inbox: Unbuffered[bytes], *, high_water: int) -> None:
        self._inbox = inbox
        self._high_water = high_water
        self._sending = 0
        self._accepting = asyncio.Event()
        self._accepting.set()
        self._paused = asyncio.Event()
        self.served = 0
        self.port = 0

    @property
    def paused(self) -> bool:
        return self._paused.is_set()

    async def wait_paused(self) -> None:
        await self._paused.wait()

    def _update(self) -> None:
        if self._sending >= self._high_water:
            self._accepting.clear()
            self._paused.set()
        else:
            self._paused.clear()
            self._accepting.set()

    async def accept_loop(self, listener: socket.socket, owner: set[asyncio.Task[Any]]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            conn, peer = await loop.sock_accept(listener)
            try:
                await self._accepting.wait()  # paused: this client waits, the next in the backlog
            except asyncio.CancelledError:
                conn.close()  # closed while paused: the held client was never served
                raise
            self.served += 1
            handler = asyncio.create_task(self.handle_connection(conn), name=f"conn {peer}")
            owner.add(handler)
            handler.add_done_callback(owner.discard)

    async def handle_connection(self, conn: socket.socket) -> None:
        reader, writer = await asyncio.open_connection(sock=conn)
        try:
            while line := await reader.readline():
                self._sending += 1
                self._update()
                try:
                    await self._inbox.send(line)  # still blocks while nobody drains inbox
                finally:
                    self._sending -= 1
                    self._update()
        finally:
            await close_quietly(writer)


@contextlib.asynccontextmanager
async def open_pausing_message_server(
    inbox: Unbuffered[bytes], *, high_water: int, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[PausingMessageServer]:
    """Run a `PausingMessageServer`; leaving the block stops accepting and cancels its handlers."""
    server = PausingMessageServer(inbox, high_water=high_water)
    owned: set[asyncio.Task[Any]] = set()
    with socket.create_server((host, port)) as listener:
        listener.setblocking(False)
        server.port = listener.getsockname()[1]
        accept = asyncio.create_task(server.accept_loop(listener, owned), name="accept-loop")
        owned.add(accept)
        try:
            yield server
        finally:
            await cancel_and_wait(owned)


# 5. One writer per connection ---------------------------------------------------------------


async def handle_connection_own_writer(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, store: Store, *, buffer: int = 16
) -> None:
    """No shared channel: each connection has its own writer task, owned by the connection.

    The handler hands messages to its own writer through a small private buffer; the writer
    stores them. "Nobody drains" cannot happen, because the drain lives and dies with the
    connection. Trade-off: twice the tasks; order is kept per connection only; `store` must
    accept concurrent writers; a slow store slows only this connection (its reads stop, and
    TCP pushes back on that one client), which is the point, but nothing limits the total load.
    """
    mailbox: asyncio.Queue[bytes | Closed] = asyncio.Queue(maxsize=buffer)
    try:
        async with asyncio.TaskGroup() as connection:
            connection.create_task(message_writer(mailbox, store), name="conn-writer")
            while line := await reader.readline():
                await mailbox.put(line)  # waits only for this connection's own writer
            await mailbox.put(CLOSED)
    finally:
        await close_quietly(writer)


async def message_writer(mailbox: asyncio.Queue[bytes | Closed], store: Store) -> None:
    while (message := await mailbox.get()) is not CLOSED:
        await store(message)
