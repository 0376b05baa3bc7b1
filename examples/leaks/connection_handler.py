"""Pattern 6: connection handlers send each received message into a channel nobody drains.

Go, the network-I/O leak::

    inbox := make(chan []byte)                     // unbuffered; a dispatcher should read it
    for {
        conn, _ := ln.Accept()
        go func(c net.Conn) {
            defer c.Close()
            s := bufio.NewScanner(c)
            for s.Scan() {
                inbox <- s.Bytes()                 // blocks while nobody reads inbox
            }
        }(conn)
    }

If the dispatcher is slow, stopped or crashed, every handler blocks on its next send, and stays
blocked after its client hangs up: one goroutine and one open socket per connection, growing
with traffic.

The port uses a real asyncio server. Go's accept loop with `go handle(conn)` becomes the server's
accept callback `accept_connection` starting one task per connection (a plain callback, so the
task is created, and named, by our code). `inbox` is the `Unbuffered` channel from `chan`.
The remedies are in `connection_remedies`.
"""

from __future__ import annotations

import asyncio
import contextlib

from examples.leaks.chan import Unbuffered, fire_and_forget


async def handle_connection(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, inbox: Unbuffered[bytes]
) -> None:
    try:
        while line := await reader.readline():
            await inbox.send(line)  # LEAK: blocks forever when nobody drains inbox
    finally:
        await close_quietly(writer)


async def start_message_server_leaky(
    inbox: Unbuffered[bytes], *, host: str = "127.0.0.1", port: int = 0
) -> asyncio.Server:
    """Listen on `host:port` (port 0: any free port); one unowned handler task per connection.

    `Server.close()` only stops listening: it neither closes accepted connections nor stops
    their handlers, so closing this server does not end a blocked handler either.
    """

    def accept_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        fire_and_forget(
            asyncio.create_task(handle_connection(reader, writer, inbox), name=f"conn {peer}")
        )

    return await asyncio.start_server(accept_connection, host, port)


async def close_quietly(writer: asyncio.StreamWriter) -> None:
    """Close a connection whose peer may already be gone."""
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()
