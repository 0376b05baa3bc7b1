"""Graceful shutdown, the admin endpoints, and the `tidegate serve` process end to end."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import time

import pytest

from tidegate import leaks
from tidegate.gateway import Gateway, open_gateway
from tidegate.protocol import sign
from tidegate.protocol.errors import UsageError

from .helpers import TIMEOUT, Client, UdpSender, config, http_get, wait_until


async def test_shutdown_leaves_no_task_and_no_thread() -> None:
    async with leaks.check(timeout=1.0):
        gw = Gateway(config(admin=("127.0.0.1", 0)))
        await gw.start()
        clients = [await Client.hello(gw.tcp_address, f"u{n}") for n in range(20)]
        status, count = await http_get(gw.admin_address, "/_count")
        assert status == 200 and count.strip().isdigit()
        status, stack = await http_get(gw.admin_address, "/_stack")
        assert status == 200 and "test_shutdown_leaves_no_task_and_no_thread" in stack
        await gw.close()
        await gw.close()  # idempotent
        for client in clients:
            await client.expect_error_and_close("server_shutdown")
        assert gw.statistics().disconnects["server_shutdown"] == 20


async def test_shutdown_does_not_wait_for_a_client_that_never_reads() -> None:
    # The stuck client cannot take its server_shutdown frame; the flush deadline (0.2 s)
    # aborts it instead of letting shutdown hang.
    cfg = config(shutdown_timeout=0.2, overflow="drop-newest")
    async with leaks.check(timeout=1.0):
        stuck: Client | None = None
        try:
            async with open_gateway(cfg) as gw:
                assert gw.tcp_address is not None
                stuck = Client(*await asyncio.open_connection(*gw.tcp_address, limit=1024))
                await stuck.send({"op": "hello", "user": "stuck"})
                assert (await stuck.recv())["op"] == "welcome"
                # Push until the kernel buffers are full and bytes stay queued in user space.
                while gw.statistics().buffered_bytes < 512 * 1024:
                    for _ in range(64):
                        gw.push("all", "z" * 16384)
                    await asyncio.sleep(0.01)  # let the flush reach the socket
                loop = asyncio.get_running_loop()
                started = loop.time()
            elapsed = loop.time() - started
        finally:
            if stuck is not None:
                await stuck.close()
        # uvloop's timers have millisecond resolution: the deadline may fire up to 1 ms early.
        assert 0.2 - 0.002 <= elapsed < 0.2 + 1.0
        assert gw.statistics().disconnects["server_shutdown"] == 1


async def read_listening(proc: asyncio.subprocess.Process) -> dict[str, tuple[str, int]]:
    assert proc.stdout is not None
    found: dict[str, tuple[str, int]] = {}
    while len(found) < 4:
        line = (await asyncio.wait_for(proc.stdout.readline(), TIMEOUT)).decode()
        assert line, "tidegate exited before listening"
        if " listening on " in line:
            name = line.split()[1]
            host, _, port = line.rsplit(" ", 1)[1].rpartition(":")
            found[name] = (host, int(port))
    return found


async def test_tidegate_serve_process_end_to_end() -> None:
    env = {**os.environ, "TIDEGATE_SECRET": "from-env", "TIDEGATE_HEARTBEAT": "7"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tidegate",
        "serve",
        "--tcp",
        "127.0.0.1:0",
        "--udp",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
        "--http",
        "127.0.0.1:0",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    client: Client | None = None
    try:
        where = await read_listening(proc)
        assert all(port > 0 for _, port in where.values())
        client = await Client.connect(where["tcp"])
        await client.send({"op": "hello", "user": "alice"})
        welcome = await client.recv()
        assert welcome["heartbeat"] == 7
        udp = UdpSender(where["udp"])
        udp.send(sign(b"from-env", b'{"to":"all","data":1,"id":"x","ts":%d}' % _now()))
        udp.close()
        assert (await client.recv())["id"] == "x"
        status, count = await http_get(where["admin"], "/_count")
        assert status == 200 and int(count) >= 1
        # SIGUSR1: the whole process dumped to stderr, Go SIGQUIT style, and it keeps serving.
        proc.send_signal(signal.SIGUSR1)
        assert proc.stderr is not None
        dump = b""
        # The dump lists tasks, then threads: the watchdog's monitor thread comes last.
        last = re.compile(rb"thread tidegate-watchdog-monitor .*created by Watchdog.start", re.S)
        while not last.search(dump):
            line = await asyncio.wait_for(proc.stderr.readline(), TIMEOUT)
            assert line, "tidegate exited instead of dumping"
            if line.startswith(b"=== tidegate dump") or dump:
                dump += line
        assert b"tasks" in dump and b"thread MainThread" in dump
        await client.roundtrip()
        proc.send_signal(signal.SIGTERM)
        await client.expect_error_and_close("server_shutdown")
        out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
        assert proc.returncode == 0, err.decode()
        assert b"stopped (0 leftovers)" in out, (out, err)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        if client is not None:
            await client.close()


def _now() -> int:
    return int(time.time())


# `tidegate serve` with a handler that outlives the shutdown, as an aiohttp handler still
# reading a refused upload did (issue 13): the gateway's close() leaves one task behind.
LEAVES_A_TASK = """
import asyncio, sys
from tidegate import cli
from tidegate.gateway import Gateway

strays = []
close = Gateway.close

async def close_and_leave_a_task(self):
    strays.append(asyncio.create_task(asyncio.Event().wait(), name="stray-handler"))
    await close(self)

Gateway.close = close_and_leave_a_task
sys.exit(cli.main(sys.argv[1:]))
"""


async def test_serve_exits_3_when_a_task_outlives_the_shutdown() -> None:
    # It used to print `stopped (1 leftovers)` and exit 0: a supervisor saw a clean stop.
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        LEAVES_A_TASK,
        "serve",
        *("--tcp", "127.0.0.1:0", "--udp", "off", "--admin", "off", "--http", "off"),
        env={k: v for k, v in os.environ.items() if not k.startswith("TIDEGATE_")},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), TIMEOUT)
        assert b"tcp listening on" in line, line
        proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
        assert proc.returncode == 3, (out, err)
        assert b"stopped (1 leftovers)" in out, out
        assert b"leftovers after shutdown" in err and b"stray-handler" in err, err
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_serve_refuses_unsigned_udp_beyond_loopback() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tidegate",
        "serve",
        "--udp",
        "0.0.0.0:0",
        "--tcp",
        "off",
        "--admin",
        "off",
        "--http",
        "off",
        env={k: v for k, v in os.environ.items() if not k.startswith("TIDEGATE_")},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
    assert proc.returncode == 2
    assert b"without a secret" in err


async def test_close_while_starting_waits_then_undoes_everything() -> None:
    gw = Gateway(config(admin=("127.0.0.1", 0), http=("127.0.0.1", 0)))
    async with leaks.check(timeout=1.0), asyncio.TaskGroup() as tg:
        starting = tg.create_task(gw.start())
        await asyncio.sleep(0)  # start() is now binding its listeners
        closing = tg.create_task(gw.close())
    assert starting.done() and closing.done()
    assert not gw.running
    assert gw.tcp_address is not None
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection(*gw.tcp_address)
    with pytest.raises(UsageError):
        await gw.start()  # a closed gateway stays closed


async def test_a_cancelled_close_still_finishes_and_a_second_close_waits_for_it() -> None:
    # A client that never reads makes the shutdown wait out its flush deadline (0.3 s), long
    # enough to cancel the first close() in the middle of it.
    cfg = config(admin=("127.0.0.1", 0), shutdown_timeout=0.3, overflow="drop-newest")
    async with leaks.check(timeout=1.0):
        gw = Gateway(cfg)
        await gw.start()
        assert gw.tcp_address is not None
        stuck = Client(*await asyncio.open_connection(*gw.tcp_address, limit=1024))
        try:
            await stuck.send({"op": "hello", "user": "stuck"})
            assert (await stuck.recv())["op"] == "welcome"
            while gw.statistics().buffered_bytes < 512 * 1024:
                for _ in range(64):
                    gw.push("all", "z" * 16384)
                await asyncio.sleep(0)  # one loop turn: the flush hands the frames over
            first = asyncio.create_task(gw.close())
            # The shutdown stops running at its first step and then waits out the deadline.
            await wait_until(lambda: not gw.running, what="shutdown to begin")
            first.cancel()
            with pytest.raises(asyncio.CancelledError):
                await first
            assert not gw.running
            await gw.close()  # waits for the same shutdown, which went on without its caller
            assert gw.statistics().disconnects["server_shutdown"] == 1
        finally:
            await stuck.close()
