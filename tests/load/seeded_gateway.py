"""The gateway with tasks seeded blocked forever: a target whose `/debug/tasks/leaked` lists
something, for `tidegate load`'s report of proven leaks.

    .venv/bin/python -m tests.load.seeded_gateway [--tcp H:P] [--udp H:P] [--admin H:P]
                                                  [--heartbeat S] [--orphans N]

`--orphans N` tasks (`orphan-<i>`), started before the gateway serves, each await a future only
it references. Like every proven leak in a process without `check()` scopes they are garbage
the collector has not reached yet; `gc.freeze()` moves them out of its reach, as a long-lived
process's old generation, collected rarely, keeps its own for a long time, so that the first
proof finds them whatever the timing (from then on the proof keeps them). Prints `seeded
gateway: <name> listening on HOST:PORT` lines like `tidegate serve`; SIGTERM or SIGINT stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import signal

from tidegate import leaks
from tidegate.addresses import format_address, parse_address
from tidegate.gateway import Config, open_gateway


async def await_a_private_future() -> None:
    await asyncio.get_running_loop().create_future()  # only this task ever references it


async def serve(args: argparse.Namespace) -> None:
    leaks.track()  # "created by" in the dumps, as `tidegate serve` does
    for i in range(args.orphans):
        # Unowned on purpose: that is the leak.
        asyncio.create_task(await_a_private_future(), name=f"orphan-{i}")  # noqa: RUF006
    await asyncio.sleep(0)  # each parks at its await
    gc.freeze()
    config = Config(
        tcp=args.tcp, udp=args.udp, admin=args.admin, http=None, heartbeat=args.heartbeat
    )
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with open_gateway(config) as gateway:
        for name, address in (
            ("tcp", gateway.tcp_address),
            ("udp", gateway.udp_address),
            ("admin", gateway.admin_address),
        ):
            assert address is not None
            print(f"seeded gateway: {name} listening on {format_address(address)}", flush=True)
        await stop.wait()
    # The orphans are still waiting; asyncio.run cancels them on exit.


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tcp", type=parse_address, default=("127.0.0.1", 0))
    parser.add_argument("--udp", type=parse_address, default=("127.0.0.1", 0))
    parser.add_argument("--admin", type=parse_address, default=("127.0.0.1", 0))
    parser.add_argument("--heartbeat", type=float, default=25.0)
    parser.add_argument("--orphans", type=int, default=3)
    asyncio.run(serve(parser.parse_args()))
