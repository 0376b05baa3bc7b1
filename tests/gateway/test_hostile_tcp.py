"""Hostile clients on the TCP listener: floods, join storms, bursts nobody reads.

Each attack is bounded (a few MiB, a few dozen connections, loopback) and judged by what the
gateway exposes: its counters, its loop-lag histogram (the `/metrics` one), and whether an
ordinary client is still served while the attack runs. Lag bounds are loose on purpose
(`LAG_BOUND`, scaled by TIDEGATE_TEST_UNIT): the attacks used to stall the loop for a second
or more, the fixed gateway for well under a millisecond per slice, and a busy test machine
must not make the test fail.
"""

from __future__ import annotations

import asyncio

from tidegate.gateway import open_gateway

from .helpers import (
    TIMEOUT,
    UNIT,
    Client,
    config,
    http_get,
    loop_lag_over,
    metric,
    parse_samples,
    wait_until,
)

MIB = 1024 * 1024
PING, PONG = b'{"op":"ping"}\n', b'{"op":"pong"}\n'
LAG_BOUND = 0.25 * UNIT  # seconds; the fairness benchmark measures the real figures
UNBUDGETED = {"frame_rate": 1e9, "frame_burst": 1 << 40}


class Pongs:
    def __init__(self) -> None:
        self.received = 0

    async def read(self, client: Client, count: int) -> None:
        while self.received < count:
            data = await asyncio.wait_for(client.reader.read(1 << 20), TIMEOUT)
            assert data, "closed early"
            self.received += data.count(b"\n")


async def test_a_ping_flood_does_not_stall_the_others() -> None:
    # 5 MiB of pings in one write (374k frames) by a logged-in client with no frame budget:
    # it used to be handled one read at a time with `bytes +=` replies, a ~1 s stall.
    burst = PING * (5 * MIB // len(PING))
    async with open_gateway(config(**UNBUDGETED, buffer_bytes=8 * MIB)) as gw:
        flooder = await Client.hello(gw.tcp_address, "flooder")
        other = await Client.hello(gw.tcp_address, "other")
        flooder.writer.write(burst)
        pongs = Pongs()
        reading = asyncio.create_task(pongs.read(flooder, len(burst) // len(PING)))
        # Served while the flood is being handled: the round trip completes before the
        # flooder has all of its replies.
        await wait_until(lambda: pongs.received > 0, what="the flood to start")
        await other.roundtrip()
        flood_done_first = reading.done()
        await reading
        assert not flood_done_first, "the other client waited for the whole flood"
        assert loop_lag_over(gw, LAG_BOUND) == 0
        await other.roundtrip()
        await flooder.close()
        await other.close()


async def test_a_flooder_over_its_frame_budget_is_rate_limited() -> None:
    # A rate so low that no token comes back while the test runs: exactly the burst counts.
    async with open_gateway(config(frame_burst=200, frame_rate=1e-6)) as gw:
        burst = gw.config.frame_burst
        flooder = await Client.hello(gw.tcp_address, "flooder")  # the hello took a token
        flooder.writer.write(PING * (10 * burst))
        data = await asyncio.wait_for(flooder.reader.read(), TIMEOUT)  # to the server's FIN
        lines = data.splitlines(keepends=True)
        assert lines[:-1] == [PONG] * (burst - 1)
        assert lines[-1].startswith(b'{"op":"error","code":"rate_limited"')
        assert gw.statistics().disconnects == {"rate_limited": 1}
        await flooder.close()


async def test_a_join_storm_is_cut_by_the_budget_and_the_others_are_served() -> None:
    # 40 connections x 10k joins each, all sent at once: 400k frames. The room limit answers
    # most with too_many_rooms; the frame budget closes each connection after its burst.
    joins = b"".join(b'{"op":"join","room":"r%d"}\n' % n for n in range(10_000))
    async with open_gateway(config()) as gw:
        other = await Client.hello(gw.tcp_address, "other")
        stormers = [await Client.hello(gw.tcp_address, f"storm{n}") for n in range(40)]
        for stormer in stormers:
            stormer.writer.write(joins)
        await other.roundtrip()
        for stormer in stormers:
            data = await asyncio.wait_for(stormer.reader.read(), TIMEOUT)
            assert data.splitlines()[-1].startswith(b'{"op":"error","code":"rate_limited"')
            await stormer.close()
        assert gw.statistics().disconnects == {"rate_limited": 40}
        assert gw.statistics().rooms == 0
        assert loop_lag_over(gw, LAG_BOUND) == 0
        await other.roundtrip()
        await other.close()


async def test_a_burst_from_a_client_that_never_reads_stays_bounded() -> None:
    # The client writes 20 MiB of pings and never reads a pong. The gateway keeps reading it
    # (so that its end of stream would be seen at once), but its replies go to its bounded
    # buffer like any frame: it holds no more than buffer_bytes for it, and cuts it when
    # nothing drains for write_timeout.
    async with open_gateway(config(**UNBUDGETED, write_timeout=0.5 * UNIT)) as gw:
        assert gw.tcp_address is not None
        # A 64 KiB stream limit: asyncio stops reading the socket at 128 KiB unread.
        reader, writer = await asyncio.open_connection(*gw.tcp_address, limit=64 * 1024)
        silent = Client(reader, writer)
        await silent.send({"op": "hello", "user": "silent"})
        assert (await silent.recv())["op"] == "welcome"
        silent.writer.write(PING * (20 * MIB // len(PING)))
        peak = 0

        def cut() -> bool:
            nonlocal peak
            peak = max(peak, gw.statistics().max_buffered_bytes)
            return gw.statistics().disconnects.get("slow_consumer", 0) == 1

        await wait_until(cut, what="the silent client to be cut")
        assert peak <= gw.config.buffer_bytes
        silent.reset()
        await silent.close()


def kernel_send_queues(port: int) -> int:
    """Bytes in the kernel send queues of this process's sockets on local `port`, from
    /proc/net/tcp (tx_queue), whatever their state: cut connections included."""
    total = 0
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        with open(table) as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port:
                    total += int(fields[4].split(":")[0], 16)
    return total


async def test_a_stuck_clients_kernel_buffer_is_counted_and_freed_when_it_is_cut() -> None:
    # A client that stops reading holds megabytes in the kernel's send queue: they were in
    # no metric, and stayed there for 40 s and more after the client was cut.
    async with open_gateway(config(write_timeout=0.5 * UNIT, admin=("127.0.0.1", 0))) as gw:
        assert gw.tcp_address is not None
        reader, writer = await asyncio.open_connection(*gw.tcp_address, limit=64 * 1024)
        stuck = Client(reader, writer)
        await stuck.send({"op": "hello", "user": "stuck"})
        assert (await stuck.recv())["op"] == "welcome"
        while gw.statistics().kernel_send_queue_bytes < MIB:
            gw.push("user:stuck", "x" * 16384)
            await asyncio.sleep(0)
        _, text = await http_get(gw.admin_address, "/metrics")
        assert metric(parse_samples(text), "tidegate_kernel_send_queue_bytes") >= MIB
        while not gw.statistics().disconnects:  # more, until it is cut as a slow consumer
            gw.push("user:stuck", "x" * 16384)
            await asyncio.sleep(0.01)
        assert gw.statistics().disconnects == {"slow_consumer": 1}
        # Cut with a reset: the kernel drops what it held at once.
        await wait_until(lambda: kernel_send_queues(gw.tcp_address[1]) == 0, what="freed")
        assert gw.statistics().kernel_send_queue_bytes == 0
        stuck.reset()
        await stuck.close()
