"""Pattern 6: connection handlers blocked on a channel nobody drains outlive their clients."""

from __future__ import annotations

import pytest
from example_clients import open_client, port_of
from examples.leaks import connection_handler
from examples.leaks.chan import Unbuffered
from leak_report import CHECK, assert_blocks_in, assert_created_by

from tidegate import leaks


async def test_leaky_handler_outlives_its_client() -> None:
    inbox: Unbuffered[bytes] = Unbuffered()  # nobody drains it
    with pytest.raises(leaks.LeakError) as caught:
        async with leaks.check(timeout=CHECK):
            server = await connection_handler.start_message_server_leaky(inbox)
            async with open_client(port_of(server), b"hello\n"):
                pass  # sent one line, then hung up
            server.close()  # stops listening; the handler is not stopped by it
            # At scope exit the check waits CHECK seconds: the handler reads the line, blocks in
            # its send, and is still blocked when the report is taken.
    try:
        (leak,) = caught.value.leaks
        assert leak.kind == "task" and leak.name.startswith("conn ")
        report = str(caught.value)
        assert_blocks_in(report, connection_handler.handle_connection, "await inbox.send(line)")
        assert_created_by(report, "accept_connection")
    finally:
        await leaks.cancel_tasks(caught.value.leaks)  # its `finally` closes the connection
        await server.wait_closed()
