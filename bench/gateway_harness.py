"""Shared pieces of the gateway benchmarks: client load in worker processes.

Workers are separate processes (spawned, each on its own uvloop) that open many TCP
connections, say hello, and count the lines they receive; the benchmark process drives them
over pipes. Timestamps are `time.monotonic()`, which is one system-wide clock on Linux, so a
worker's "done at" and the server's "started at" can be compared directly.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.connection
import os
import time
from collections.abc import Sequence
from typing import Any

import msgspec

from tidegate.gateway import Config

CONNECT_CONCURRENCY = 200


def gateway_config(conns: int, *, udp: bool = False) -> Config:
    """A gateway for `conns` benchmark clients: TCP (and UDP) on free loopback ports, no HTTP
    or admin listener, timeouts long enough that no client is reaped mid-run."""
    return Config(
        tcp=("127.0.0.1", 0),
        udp=("127.0.0.1", 0) if udp else None,
        admin=None,
        http=None,
        max_conns=conns + 16,
        handshake_timeout=120,
        heartbeat=600,
    )


def new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def rss_bytes(pid: int | None = None) -> int:
    with open(f"/proc/{pid or os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# -- worker side ---------------------------------------------------------------------------


class _Counter:
    def __init__(self) -> None:
        self.lines = 0
        self.target = -1
        self.reached: asyncio.Future[float] | None = None
        self.latency = False
        self.latencies: list[float] = []
        # Progress reports (a closed loop on the benchmark side): every `every` lines.
        self.report: multiprocessing.connection.Connection | None = None
        self.every = 0
        self.next_report = 0
        self.base = 0

    def add(self, n: int) -> None:
        self.lines += n
        if self.report is not None and self.lines >= self.next_report:
            done = self.lines - self.base
            self.report.send(("progress", done))
            self.next_report = self.base + (done // self.every + 1) * self.every
        if self.reached is not None and self.lines >= self.target and not self.reached.done():
            self.reached.set_result(time.monotonic())


class _ClientProtocol(asyncio.Protocol):
    def __init__(self, counter: _Counter) -> None:
        self.counter = counter
        self.partial = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        counter = self.counter
        if counter.latency:
            now = time.monotonic()
            lines = (self.partial + data).split(b"\n")
            self.partial = lines.pop()
            for line in lines:
                frame = msgspec.json.decode(line)
                if frame.get("op") == "msg":
                    counter.latencies.append(now - frame["data"][0])
            counter.add(len(lines))
        else:
            counter.add(data.count(b"\n"))


async def _connect(
    semaphore: asyncio.Semaphore,
    counter: _Counter,
    clients: list[_ClientProtocol],
    address: tuple[str, int],
    user: int,
    rooms: int,
) -> None:
    loop = asyncio.get_running_loop()
    async with semaphore:
        _, proto = await loop.create_connection(lambda: _ClientProtocol(counter), *address)
        assert proto.transport is not None
        hello = b'{"op":"hello","user":"u%d"}\n' % user
        if rooms:
            hello += b'{"op":"join","room":"r%d"}\n' % (user % rooms)
        proto.transport.write(hello)
        clients.append(proto)


async def _worker_main(pipe: multiprocessing.connection.Connection) -> None:
    loop = asyncio.get_running_loop()
    commands: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
    loop.add_reader(pipe.fileno(), lambda: commands.put_nowait(pipe.recv()))
    counter = _Counter()
    clients: list[_ClientProtocol] = []
    try:
        while True:
            command = await commands.get()
            op = command[0]
            if op == "connect":
                _, host, port, first_user, count, rooms, replies = command
                before = counter.lines
                semaphore = asyncio.Semaphore(CONNECT_CONCURRENCY)
                await asyncio.gather(
                    *(
                        _connect(semaphore, counter, clients, (host, port), first_user + i, rooms)
                        for i in range(count)
                    )
                )
                counter.target = before + count * replies  # welcome (and joined) each
                counter.reached = loop.create_future()
                if counter.lines < counter.target:
                    await counter.reached
                pipe.send(("ok",))
            elif op == "expect":
                _, lines, latency, every = command
                counter.target = counter.lines + lines
                counter.latency = bool(latency)
                counter.latencies = []
                counter.report = pipe if every else None
                counter.every = every
                counter.base = counter.lines
                counter.next_report = counter.lines + every
                counter.reached = loop.create_future()
                pipe.send(("armed",))
                done_at = await counter.reached
                counter.report = None
                pipe.send(("done", done_at, counter.latencies))
            elif op == "close":
                for client in clients:
                    if client.transport is not None:
                        client.transport.close()
                clients.clear()
                await asyncio.sleep(0.05)
                pipe.send(("ok",))
            elif op == "exit":
                return
    finally:
        loop.remove_reader(pipe.fileno())


def pin_to_core(which: str) -> None:
    """On a machine with two or more cores, the server gets core 0 and the client workers
    share the rest, so the load does not steal the server's core at random and runs compare
    under the same conditions. Elsewhere this does nothing."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(cores) < 2:
        return
    os.sched_setaffinity(0, {cores[0]} if which == "server" else set(cores[1:]))


def _worker_process(pipe: multiprocessing.connection.Connection, pin: bool = True) -> None:
    if pin:
        pin_to_core("clients")
    with asyncio.Runner(loop_factory=new_loop) as runner:
        runner.run(_worker_main(pipe))


# -- benchmark side -------------------------------------------------------------------------


class Worker:
    def __init__(self, ctx: Any, *, pin: bool = True) -> None:
        self.pipe, child = ctx.Pipe()
        self.process = ctx.Process(target=_worker_process, args=(child, pin), daemon=True)
        self.process.start()
        child.close()

    async def recv(self) -> tuple[Any, ...]:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        fd = self.pipe.fileno()

        def readable() -> None:
            if not ready.done():
                ready.set_result(None)

        loop.add_reader(fd, readable)
        try:
            await ready
        finally:
            loop.remove_reader(fd)
        reply: tuple[Any, ...] = self.pipe.recv()
        return reply

    async def call(self, *command: Any) -> tuple[Any, ...]:
        self.pipe.send(command)
        return await self.recv()

    def stop(self) -> None:
        self.pipe.send(("exit",))
        self.process.join(10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


class Pool:
    """Client load: `size` worker processes sharing the connections evenly. With `pin`, the
    benchmark process (the server) gets core 0 and the clients the others; without, the
    scheduler places everyone (servers in other processes need every core)."""

    def __init__(self, size: int, *, pin: bool = True) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.workers = [Worker(ctx, pin=pin) for _ in range(size)]
        if pin:
            pin_to_core("server")  # after spawning, so the workers do not inherit core 0
        self.shares: list[int] = [0] * size

    async def connect(
        self, address: tuple[str, int], total: int, *, rooms: int = 0, replies: int = 1
    ) -> None:
        """Open `total` connections, each saying hello as user u<i> (and joining room
        r<i % rooms> when `rooms`); wait for `replies` lines from each (0 for a server that
        does not answer)."""
        base, extra = divmod(total, len(self.workers))
        self.shares = [base + (i < extra) for i in range(len(self.workers))]
        first = 0
        calls = []
        for worker, share in zip(self.workers, self.shares, strict=True):
            command = ("connect", address[0], address[1], first, share, rooms, replies)
            calls.append(worker.call(*command))
            first += share
        await asyncio.gather(*calls)

    async def arm(self, lines_per_conn: int, *, latency: bool = False, every: int = 0) -> None:
        """Each worker expects `lines_per_conn` lines per connection it holds; with `every`,
        it also reports ("progress", lines so far) each time `every` x its share more
        arrived (read them with `Worker.recv`)."""
        await asyncio.gather(
            *(
                w.call("expect", lines_per_conn * share, latency, every * share)
                for w, share in zip(self.workers, self.shares, strict=True)
            )
        )

    async def arm_total(self, per_worker: Sequence[int], *, latency: bool = False) -> None:
        await asyncio.gather(
            *(
                w.call("expect", n, latency, 0)
                for w, n in zip(self.workers, per_worker, strict=True)
            )
        )

    async def wait_done(self) -> tuple[float, list[float]]:
        replies = await asyncio.gather(*(w.recv() for w in self.workers))
        latencies = [x for reply in replies for x in reply[2]]
        return max(reply[1] for reply in replies), latencies

    async def close_all(self) -> None:
        await asyncio.gather(*(w.call("close") for w in self.workers))

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()


def percentile(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]
