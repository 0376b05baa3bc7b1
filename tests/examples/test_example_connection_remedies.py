"""Pattern 7: each remedy for pattern 6 passes the leak check (and shows its trade-off)."""

from __future__ import annotations

import asyncio
import functools

import pytest
from example_clients import finish_sending, open_client, port_of
from examples.leaks import connection_remedies as remedies
from examples.leaks.chan import Unbuffered
from leak_report import CHECK, assert_blocks_in, assert_created_by

from tidegate import leaks

SEND_TIMEOUT = CHECK / 4  # remedy 3: a handler gives up on its send after this


async def test_large_buffer_lets_handlers_finish_while_it_has_room() -> None:
    inbox: asyncio.Queue[bytes] = asyncio.Queue(maxsize=16)  # nobody drains it
    async with leaks.check(timeout=CHECK):
        handle = functools.partial(remedies.handle_connection_buffered, inbox=inbox)
        server = await remedies.start_message_server(handle)
        async with open_client(port_of(server), b"a\n", b"b\n", b"c\n") as client:
            assert await finish_sending(*client) == b""  # the handler ended its loop
        server.close()
        await server.wait_closed()
    assert inbox.qsize() == 3


async def test_large_buffer_only_postpones_the_leak() -> None:
    inbox: asyncio.Queue[bytes] = asyncio.Queue(maxsize=2)
    with pytest.raises(leaks.LeakError) as caught:
        async with leaks.check(timeout=CHECK):
            handle = functools.partial(remedies.handle_connection_buffered, inbox=inbox)
            server = await remedies.start_message_server(handle)
            async with open_client(port_of(server), b"a\n", b"b\n", b"c\n"):
                pass  # three lines for two slots: the third send blocks, as in pattern 6
            server.close()
    try:
        (leak,) = caught.value.leaks
        assert leak.blocked_on is not None and "Queue.put" in leak.blocked_on
        report = str(caught.value)
        assert_blocks_in(report, remedies.handle_connection_buffered, "await inbox.put(line)")
        assert_created_by(report, "accept_connection")
    finally:
        await leaks.cancel_tasks(caught.value.leaks)
        await server.wait_closed()


async def test_max_connections_refuses_the_extra_client_and_cancels_on_close() -> None:
    inbox: Unbuffered[bytes] = Unbuffered()  # nobody drains it
    async with (
        leaks.check(timeout=CHECK),
        remedies.open_limited_message_server(inbox, max_connections=1) as server,
        open_client(port_of(server), b"a\n"),  # admitted; its handler blocks on the send
        open_client(port_of(server)) as second,
    ):
        assert await finish_sending(*second) == remedies.BUSY
    # Leaving the server's block cancelled the stuck handler: the check found nothing.


async def test_send_timeout_hangs_up_on_the_client() -> None:
    inbox: Unbuffered[bytes] = Unbuffered()  # nobody drains it
    async with leaks.check(timeout=CHECK):
        handle = functools.partial(
            remedies.handle_connection_send_timeout, inbox=inbox, send_timeout=SEND_TIMEOUT
        )
        server = await remedies.start_message_server(handle)
        # t=0: the handler's send blocks; t=SEND_TIMEOUT: it gives up, replies, hangs up.
        async with open_client(port_of(server), b"a\n", b"b\n") as client:
            assert await finish_sending(*client) == remedies.OVERLOADED
        server.close()
        await server.wait_closed()


async def test_send_timeout_still_delivers_when_drained() -> None:
    inbox: Unbuffered[bytes] = Unbuffered()
    async with leaks.check(timeout=CHECK):
        handle = functools.partial(
            remedies.handle_connection_send_timeout, inbox=inbox, send_timeout=CHECK
        )
        server = await remedies.start_message_server(handle)
        async with open_client(port_of(server), b"a\n") as client:
            assert await inbox.recv() == b"a\n"
            assert await finish_sending(*client) == b""
        server.close()
        await server.wait_closed()


async def test_paused_accept_serves_the_next_client_only_when_there_is_room() -> None:
    inbox: Unbuffered[bytes] = Unbuffered()
    async with (
        leaks.check(timeout=CHECK),
        remedies.open_pausing_message_server(inbox, high_water=1) as server,
        open_client(server.port, b"first\n"),
    ):
        await server.wait_paused()  # the first handler is blocked handing over its line
        async with open_client(server.port, b"second\n"):
            assert server.served == 1  # paused: the second client waits unserved
            assert await inbox.recv() == b"first\n"  # room again: accepting resumes
            assert await inbox.recv() == b"second\n"
            assert server.served == 2
    # Leaving the server's block cancelled the accept loop and both idle handlers.


async def test_own_writer_per_connection_ends_with_the_connection() -> None:
    stored: list[bytes] = []

    async def store(message: bytes) -> None:
        stored.append(message)

    async with leaks.check(timeout=CHECK):
        handle = functools.partial(remedies.handle_connection_own_writer, store=store)
        server = await remedies.start_message_server(handle)
        async with open_client(port_of(server), b"a\n", b"b\n") as client:
            assert await finish_sending(*client) == b""  # the writer finished, then the handler
        server.close()
        await server.wait_closed()
    assert stored == [b"a\n", b"b\n"]
