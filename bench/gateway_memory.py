"""Gateway memory per idle connection, against a bare uvloop Protocol in the same run.

    .venv/bin/python -m bench.gateway_memory [--conns 10000] [--repeat 3] [--cluster]

Each measurement runs its server in a fresh process (uvloop, pinned to the first core like
the other gateway benchmarks): RSS with N idle connections (hello done) minus RSS empty,
after a warm-up of 200 connections, both after `gc.collect()`. The clients run in worker
processes, so their memory is not counted; kernel socket buffers are not RSS either. Servers,
alternated over the same client processes:

- **bare**: an `asyncio.Protocol` that only keeps its transport (what any uvloop server
  holds per connection at least: the transport, its libuv handle, the socket);
- **gateway**: `tidegate`'s gateway (with `--cluster`, a node on a local nats-server:
  each connection's user is then also one broker subscription of the node).

Goal (issue 14): gateway/bare <= 1.15.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import json
import multiprocessing
import multiprocessing.connection
import statistics
from collections.abc import Iterator
from typing import Any

from bench.gateway_harness import Pool, gateway_config, new_loop, rss_bytes
from tidegate.gateway import Gateway, open_gateway
from tidegate.gateway.natsd import NatsServer

WARM_UP = 200


@contextlib.contextmanager
def broker(cluster: bool) -> Iterator[str | None]:
    if not cluster:
        yield None
        return
    server = NatsServer().start()
    try:
        yield server.url
    finally:
        server.stop()


# -- server processes ----------------------------------------------------------------------


class BareProtocol(asyncio.Protocol):
    """The floor: a protocol that only holds its transport."""

    live = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        BareProtocol.live += 1

    def data_received(self, data: bytes) -> None:
        pass

    def connection_lost(self, exc: Exception | None) -> None:
        BareProtocol.live -= 1


async def _wait_for(count: Any, wanted: int) -> None:
    for _ in range(1200):  # the server sees connects and FINs within a few loop turns
        if count() == wanted:
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"{count()} connections, expected {wanted}")


async def _measure(
    pipe: multiprocessing.connection.Connection, kind: str, conns: int, url: str | None
) -> None:
    loop = asyncio.get_running_loop()
    commands: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
    loop.add_reader(pipe.fileno(), lambda: commands.put_nowait(pipe.recv()))
    async with contextlib.AsyncExitStack() as stack:
        if kind == "bare":
            server = await loop.create_server(BareProtocol, "127.0.0.1", 0)
            stack.push_async_callback(server.wait_closed)
            stack.callback(server.close)
            address = server.sockets[0].getsockname()[:2]

            def count() -> int:
                return BareProtocol.live
        else:
            config = dataclasses.replace(gateway_config(conns), broker=url)
            gw: Gateway = await stack.enter_async_context(open_gateway(config))
            assert gw.tcp_address is not None
            address = gw.tcp_address

            def count() -> int:
                stats = gw.broker.statistics()
                if stats is not None and stats.subscriptions_pending:
                    return -1  # with a broker: every user's subscription confirmed first
                return gw.statistics().users

        pipe.send(("address", address))
        while True:
            op, *args = await commands.get()
            if op == "exit":
                break
            await _wait_for(count, args[0])
            gc.collect()
            pipe.send(("rss", rss_bytes()))
    loop.remove_reader(pipe.fileno())


def _server_process(
    pipe: multiprocessing.connection.Connection, kind: str, conns: int, url: str | None
) -> None:
    with asyncio.Runner(loop_factory=new_loop) as runner:
        runner.run(_measure(pipe, kind, conns, url))


# -- benchmark side -------------------------------------------------------------------------


async def measure(kind: str, conns: int, pool: Pool, url: str | None) -> float:
    """Bytes of RSS per idle connection of a fresh `kind` server."""
    ctx = multiprocessing.get_context("spawn")
    pipe, child = ctx.Pipe()
    process = ctx.Process(target=_server_process, args=(child, kind, conns, url), daemon=True)
    process.start()  # inherits the benchmark process's core
    child.close()
    loop = asyncio.get_running_loop()

    async def call(*command: Any) -> Any:
        if command:
            pipe.send(command)
        reply = await loop.run_in_executor(None, pipe.recv)
        return reply[1]

    try:
        address = tuple(await call())
        replies = 1 if kind == "gateway" else 0
        await pool.connect(address, WARM_UP, replies=replies)  # warms allocator pools
        await pool.close_all()
        empty = await call("rss", 0)
        await pool.connect(address, conns, replies=replies)
        full = await call("rss", conns)
        await pool.close_all()
        pipe.send(("exit",))
    finally:
        process.join(30)
        if process.is_alive():
            process.kill()
            process.join()
    return (full - empty) / conns


async def run(conns: int, workers: int, repeat: int, cluster: bool) -> dict[str, Any]:
    pool = Pool(workers)
    try:
        with broker(cluster) as url:
            sizes: dict[str, list[float]] = {"bare": [], "gateway": []}
            for _ in range(repeat):
                for kind in sizes:
                    sizes[kind].append(await measure(kind, conns, pool, url))
    finally:
        pool.stop()
    ratios = [g / b for g, b in zip(sizes["gateway"], sizes["bare"], strict=True)]
    print("runs, bytes per connection:", {k: [round(v) for v in vs] for k, vs in sizes.items()})
    return {
        "conns": conns,
        "cluster": cluster,
        "bare": statistics.median(sizes["bare"]),
        "gateway": statistics.median(sizes["gateway"]),
        "ratio": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conns", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3, help="median of this many runs")
    parser.add_argument("--cluster", action="store_true", help="a node on a local nats-server")
    args = parser.parse_args(argv)
    with asyncio.Runner(loop_factory=new_loop) as runner:
        result = runner.run(run(args.conns, args.workers, args.repeat, args.cluster))
    mode = "cluster node" if result["cluster"] else "one process"
    print(
        f"{mode}, {result['conns']:.0f} idle connections: gateway {result['gateway']:.0f} "
        f"bytes each, bare protocol {result['bare']:.0f}: {result['ratio']:.2f}x "
        f"({result['ratio_min']:.2f}-{result['ratio_max']:.2f})"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
