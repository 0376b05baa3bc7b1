"""Fairness under hostile input: other clients' ping round trips while one source attacks.

    .venv/bin/python -m bench.gateway_fairness [--seconds 3] [--room 5000] [--batch 1000]
                                               [--only idle,flood,...]

The gateway runs in this process (pinned to the first core, like the other gateway
benchmarks); client processes share the other cores. 16 observer clients each ping every
20 ms and record the round trip (`time.perf_counter()` in the observer's process) while, in
turn:

- idle: nothing else happens (the reference);
- flood: one logged-in client writes pings as fast as the socket takes them, reading and
  discarding the replies, and reconnects whenever the gateway closes it (`rate_limited`);
- flood, budget off: the same with the frame budget out of the way (`--frame-rate` and
  `--frame-burst` huge), so only the input slicing protects the others;
- fan-out: one HTTP batch of `--batch` pushes to a room of `--room` members (1000 x 5000 =
  5M deliveries), posted with the API key;
- gzip bomb: HTTP pushes without the key whose 1 MB gzip bodies unpack to 1000 MiB, one
  after the other on fresh connections, for the whole window.

Printed per scenario: the observers' ping p50/p99/max, how many pings were answered, and the
worst loop lag the gateway's own `tidegate_event_loop_lag_seconds` histogram saw in that
window (as a bucket bound). Goal (issue 13): p99 under 50 ms in flood, fan-out and gzip bomb.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import math
import multiprocessing
import multiprocessing.connection
import os
import time
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

from bench.gateway_harness import new_loop, percentile, pin_to_core
from tidegate.gateway import Config, Gateway, open_gateway

API_KEY = "fairness-bench-api-key-0123456789abcdef"
OBSERVERS = 16
PING_INTERVAL = 0.020
GOAL_MS = 50.0
SCENARIOS = ("idle", "flood", "flood-unbudgeted", "fanout", "gzip-bomb")
BOMB_UNPACKED = 1000 * 1024 * 1024
PING = b'{"op":"ping"}\n'


# -- client processes ----------------------------------------------------------------------


async def _hello(address: tuple[str, int], user: str) -> tuple[asyncio.StreamReader, Any]:
    reader, writer = await asyncio.open_connection(*address, limit=1 << 20)
    writer.write(b'{"op":"hello","user":"%s"}\n' % user.encode())
    welcome = await reader.readline()
    assert welcome.startswith(b'{"op":"welcome"'), welcome
    return reader, writer


class Observers:
    """`count` clients, each pinging every `interval` and timing the pong."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []  # (sent at, round trip), monotonic
        self.tasks: list[asyncio.Task[None]] = []
        self.writers: list[asyncio.StreamWriter] = []
        self.failures = 0

    async def start(self, address: tuple[str, int], count: int, interval: float) -> None:
        for n in range(count):
            reader, writer = await _hello(address, f"observer{n}")
            self.writers.append(writer)
            # Spread the clients over the interval so the pings do not arrive in lockstep.
            offset = interval * n / count
            self.tasks.append(asyncio.create_task(self._ping(reader, writer, interval, offset)))

    async def _ping(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        interval: float,
        offset: float,
    ) -> None:
        await asyncio.sleep(offset)
        while True:
            sent = time.perf_counter()
            writer.write(PING)
            line = await reader.readline()
            if line != b'{"op":"pong"}\n':
                self.failures += 1
                return
            now = time.perf_counter()
            self.samples.append((time.monotonic(), now - sent))
            await asyncio.sleep(max(0.0, interval - (now - sent)))

    def take(self, since: float, until: float) -> list[float]:
        return [rtt for at, rtt in self.samples if since <= at <= until]

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for writer in self.writers:
            writer.close()


class Flooder:
    """A logged-in client writing pings as fast as it can; reconnects when cut."""

    def __init__(self) -> None:
        self.sent = 0
        self.connections = 0
        self.closed_with: dict[str, int] = {}
        self.task: asyncio.Task[None] | None = None

    def start(self, address: tuple[str, int]) -> None:
        self.task = asyncio.create_task(self._run(address))

    async def _run(self, address: tuple[str, int]) -> None:
        chunk = PING * (256 * 1024 // len(PING))
        while True:
            reader, writer = await _hello(address, "flooder")
            self.connections += 1
            reading = asyncio.create_task(self._drain(reader))
            try:
                while not reading.done():
                    writer.write(chunk)
                    await writer.drain()
                    self.sent += len(chunk)
            except ConnectionError:
                pass
            finally:
                writer.close()
                await asyncio.gather(reading, return_exceptions=True)

    async def _drain(self, reader: asyncio.StreamReader) -> None:
        tail = b""
        while True:
            data = await reader.read(1 << 20)
            if not data:
                return
            # Only the last line can be an error frame; keep the tail to find it.
            tail = (tail + data)[-256:]
            if b'"op":"error"' in tail:
                code = tail.rsplit(b'"code":"', 1)[1].split(b'"', 1)[0].decode()
                self.closed_with[code] = self.closed_with.get(code, 0) + 1
                tail = b""

    async def stop(self) -> dict[str, Any]:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        return {"sent_bytes": self.sent, "connections": self.connections, **self.closed_with}


def gzip_bomb(unpacked: int) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = bytes(1 << 20)
    parts = [packer.compress(block) for _ in range(unpacked // len(block))]
    parts.append(packer.flush())
    return b"".join(parts)


async def http_post(
    address: tuple[str, int], body: bytes, headers: dict[str, str]
) -> tuple[int, float]:
    """One request on a fresh connection; (status or 0 if cut, seconds until the reply)."""
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection(*address)
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    writer.write(
        f"POST /v1/push HTTP/1.1\r\nHost: bench\r\nContent-Length: {len(body)}\r\n{head}"
        "Connection: close\r\n\r\n".encode()
    )
    status = 0
    try:
        view = memoryview(body)
        for start in range(0, len(body), 1 << 16):
            writer.write(view[start : start + (1 << 16)])
            await writer.drain()
        status_line = await reader.readline()
        if status_line:
            status = int(status_line.split()[1])
        await reader.read()
    except ConnectionError:
        pass
    finally:
        writer.close()
    return status, time.perf_counter() - started


async def bomb_until(address: tuple[str, int], bomb: bytes, seconds: float) -> dict[str, Any]:
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    deadline = time.monotonic() + seconds
    statuses: dict[str, int] = {}
    while time.monotonic() < deadline:
        status, _ = await http_post(address, bomb, headers)
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    return statuses


class Members:
    def __init__(self) -> None:
        self.transports: list[asyncio.Transport] = []
        self.lines = 0

    async def join(self, address: tuple[str, int], count: int, room: str) -> None:
        loop = asyncio.get_running_loop()
        joined = loop.create_future()
        expected = 2 * count  # welcome + joined each
        members = self

        class Member(asyncio.Protocol):
            def data_received(self, data: bytes) -> None:
                members.lines += data.count(b"\n")
                if members.lines >= expected and not joined.done():
                    joined.set_result(None)

        join = b'{"op":"join","room":"%s"}\n' % room.encode()
        semaphore = asyncio.Semaphore(200)

        async def one(n: int) -> None:
            async with semaphore:
                transport, _ = await loop.create_connection(Member, *address)
                transport.write(b'{"op":"hello","user":"member%d"}\n' % n + join)
                self.transports.append(transport)

        await asyncio.gather(*(one(n) for n in range(count)))
        await joined

    def close(self) -> None:
        for transport in self.transports:
            transport.close()
        self.transports.clear()


async def _worker_main(pipe: multiprocessing.connection.Connection) -> None:
    loop = asyncio.get_running_loop()
    commands: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
    loop.add_reader(pipe.fileno(), lambda: commands.put_nowait(pipe.recv()))
    observers = Observers()
    flooder = Flooder()
    members = Members()
    bomb = b""
    try:
        while True:
            op, *args = await commands.get()
            reply: Any = None
            if op == "observe":
                await observers.start(tuple(args[0]), args[1], args[2])
            elif op == "samples":
                reply = (observers.take(args[0], args[1]), observers.failures)
            elif op == "observe_stop":
                await observers.stop()
                observers = Observers()
            elif op == "flood":
                flooder = Flooder()
                flooder.start(tuple(args[0]))
            elif op == "flood_stop":
                reply = await flooder.stop()
            elif op == "make_bomb":
                bomb = gzip_bomb(args[0])
                reply = len(bomb)
            elif op == "bomb":
                reply = await bomb_until(tuple(args[0]), bomb, args[1])
            elif op == "join":
                await members.join(tuple(args[0]), args[1], args[2])
            elif op == "leave_all":
                members.close()
                members = Members()
            elif op == "post":
                reply = await http_post(tuple(args[0]), args[1], args[2])
            elif op == "exit":
                await observers.stop()
                await flooder.stop()
                members.close()
                return
            # Blocking for the send: add_reader made the socket non-blocking, and a big
            # reply (the samples) would fail halfway with BlockingIOError.
            os.set_blocking(pipe.fileno(), True)
            pipe.send(("ok", reply))
    finally:
        loop.remove_reader(pipe.fileno())


def _worker_process(pipe: multiprocessing.connection.Connection) -> None:
    pin_to_core("clients")
    with asyncio.Runner(loop_factory=new_loop) as runner:
        runner.run(_worker_main(pipe))


class Worker:
    def __init__(self, ctx: Any) -> None:
        self.pipe, child = ctx.Pipe()
        self.process = ctx.Process(target=_worker_process, args=(child,), daemon=True)
        self.process.start()
        child.close()

    async def call(self, *command: Any) -> Any:
        self.pipe.send(command)
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
        # add_reader left the socket non-blocking (uvloop does): a reply bigger than the
        # socket's buffer would end in BlockingIOError halfway through.
        os.set_blocking(fd, True)
        status, reply = self.pipe.recv()
        assert status == "ok"
        return reply

    def stop(self) -> None:
        self.pipe.send(("exit",))
        self.process.join(20)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


# -- the gateway side ------------------------------------------------------------------------


def lag_counts(gw: Gateway) -> dict[float, float]:
    """The loop-lag histogram's per-bucket counts (upper bound -> count), as exposed."""
    counts: dict[float, float] = {}
    for family in gw.metrics.loop_lag.collect():
        previous = 0.0
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                bound = float(sample.labels["le"])
                counts[bound] = sample.value - previous
                previous = sample.value
    return counts


def worst_lag(before: dict[float, float], after: dict[float, float]) -> float:
    """The upper bound of the highest bucket that gained an observation (inf: above all)."""
    grown = [bound for bound, count in after.items() if count > before.get(bound, 0.0)]
    return max(grown, default=0.0)


def gateway_config(room: int, **budget: Any) -> Config:
    known = {field.name for field in dataclasses.fields(Config)}
    return Config(
        tcp=("127.0.0.1", 0),
        udp=None,
        http=("127.0.0.1", 0),
        admin=None,
        api_key=API_KEY,
        max_conns=room + OBSERVERS + 64,
        handshake_timeout=60,
        heartbeat=600,
        **{name: value for name, value in budget.items() if name in known},
    )


async def observe(
    gw: Gateway, observer: Worker, name: str, attack: Callable[[Gateway], Awaitable[Any]]
) -> dict[str, Any]:
    """Run `attack` while the observers ping; what they saw and what the gateway exposed."""
    await observer.call("observe", gw.tcp_address, OBSERVERS, PING_INTERVAL)
    await asyncio.sleep(0.3)  # the observers' first pings are not part of the window
    lag_before = lag_counts(gw)
    since = time.monotonic()
    detail = await attack(gw)
    until = time.monotonic()
    await asyncio.sleep(PING_INTERVAL * 2)  # the pings sent in the window come back
    lag_after = lag_counts(gw)
    rtts, failures = await observer.call("samples", since, until)
    await observer.call("observe_stop")
    stats = gw.statistics()
    ms = [rtt * 1000 for rtt in rtts]
    return {
        "scenario": name,
        "pings": len(ms),
        "observer_failures": failures,
        "p50_ms": percentile(ms, 50),
        "p99_ms": percentile(ms, 99),
        "max_ms": max(ms, default=math.nan),
        "worst_loop_lag_s": worst_lag(lag_before, lag_after),
        "seconds": round(until - since, 3),
        "disconnects": dict(stats.disconnects),
        "rejections": dict(stats.rejections),
        "detail": detail,
    }


async def run(seconds: float, room: int, batch: int, only: list[str]) -> list[dict[str, Any]]:
    ctx = multiprocessing.get_context("spawn")
    observer, attacker, crowd = Worker(ctx), Worker(ctx), Worker(ctx)
    pin_to_core("server")
    try:
        if "gzip-bomb" in only:
            await attacker.call("make_bomb", BOMB_UNPACKED)

        async def idle(gw: Gateway) -> Any:
            await asyncio.sleep(seconds)

        async def flood(gw: Gateway) -> Any:
            await attacker.call("flood", gw.tcp_address)
            await asyncio.sleep(seconds)
            return await attacker.call("flood_stop")

        async def fanout(gw: Gateway) -> Any:
            body = (
                b"["
                + b",".join(
                    b'{"to":"room:big","data":{"n":%d,"text":"fan-out fairness"}}' % n
                    for n in range(batch)
                )
                + b"]"
            )
            headers = {"Content-Type": "application/json", "Authorization": f"Bearer {API_KEY}"}
            status, took = await attacker.call("post", gw.http_address, body, headers)
            await asyncio.sleep(0.5)
            return {"status": status, "post_seconds": round(took, 3), "deliveries": room * batch}

        async def gzip_bombs(gw: Gateway) -> Any:
            return await attacker.call("bomb", gw.http_address, seconds)

        unbudgeted = {"frame_rate": 1e9, "frame_burst": 1_000_000_000}
        plan: dict[str, tuple[Callable[[Gateway], Awaitable[Any]], Config]] = {
            "idle": (idle, gateway_config(0)),
            "flood": (flood, gateway_config(0)),
            "flood-unbudgeted": (flood, gateway_config(0, **unbudgeted)),
            "fanout": (fanout, gateway_config(room)),
            "gzip-bomb": (gzip_bombs, gateway_config(0)),
        }
        results = []
        for name in only:
            attack, config = plan[name]
            async with open_gateway(config) as gw:
                if name == "fanout":
                    await crowd.call("join", gw.tcp_address, room, "big")
                results.append(await observe(gw, observer, name, attack))
                if name == "fanout":
                    await crowd.call("leave_all")
        return results
    finally:
        for worker in (observer, attacker, crowd):
            worker.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--room", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--only", default=",".join(SCENARIOS))
    args = parser.parse_args(argv)
    only = [name for name in args.only.split(",") if name]
    unknown = set(only) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    with asyncio.Runner(loop_factory=new_loop) as runner:
        results = runner.run(run(args.seconds, args.room, args.batch, only))
    print(
        f"{'scenario':<18} {'pings':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
        f"{'worst lag':>10}  goal"
    )
    for r in results:
        goal = (
            ""
            if r["scenario"] == "idle"
            else ("ok" if r["p99_ms"] < GOAL_MS else f"MISSED (p99 < {GOAL_MS:g} ms)")
        )
        lag = r["worst_loop_lag_s"]
        lag_text = "none" if lag == 0 else ("> 10 s" if math.isinf(lag) else f"<= {lag:g} s")
        print(
            f"{r['scenario']:<18} {r['pings']:>6} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} "
            f"{r['max_ms']:>8.2f} {lag_text:>10}  {goal}"
        )
    for r in results:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
