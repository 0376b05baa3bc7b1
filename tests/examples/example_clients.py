"""A TCP client for the connection examples' tests (a plain module: see leak_report)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


def port_of(server: asyncio.Server) -> int:
    port: int = server.sockets[0].getsockname()[1]
    return port


@contextlib.asynccontextmanager
async def open_client(
    port: int, *lines: bytes
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """Connect to 127.0.0.1:`port`, send `lines`; hang up when the block ends."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.writelines(lines)
        await writer.drain()
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def finish_sending(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    """Half-close (our EOF) and read the server's reply until it closes the connection.

    This is the tests' sequence point: it returns once the server's handler has closed its end,
    i.e. once the handler has ended its loop, without sleeping.
    """
    writer.write_eof()
    return await reader.read()
