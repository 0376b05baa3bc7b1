"""The incident as a running server: tidegate's gateway with the seed's leaky UDP broadcast path.

    .venv/bin/python -m examples.leaky_gateway [--tcp H:P] [--udp H:P] [--admin H:P]
                                               [--heartbeat S] [--timeout S] [--slow S]

Client TCP, rooms, unicast and room pushes, the admin port (`/_count`, `/debug/tasks`,
`/debug/vars`) are tidegate's. The UDP ingress is the Go server's: each datagram to `all` is
handled by `examples.leaks.incident.handle_broadcast_leaky`, whose `push_to_all` delivers to
every connection and then waits `--slow` seconds for slow subscribers to take it (the Go
server's blocking writes, made steady so every run leaks alike). The handler gives up after
`--timeout`, shorter than that, and the worker, finishing later, blocks forever on its send:
one leaked task per broadcast. `tidegate load` finds it; `tidegate demo incident` runs it.

Prints `<name> listening on HOST:PORT` lines like `tidegate serve`; SIGTERM or SIGINT stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import time
from typing import Any

from examples.leaks.incident import handle_broadcast_leaky
from tidegate import leaks
from tidegate.addresses import format_address, parse_address
from tidegate.gateway import Config, Gateway, open_gateway
from tidegate.protocol import DatagramVerifier, Push, Rejected, Target


class LeakyBroadcastIngress(asyncio.DatagramProtocol):
    """Unicast and room pushes go straight to the gateway; broadcasts through the leaky
    handler, one handler task per datagram (owned here, cancelled at close: the handlers end
    by their timeout; it is the workers they start that leak)."""

    def __init__(self, gateway: Gateway, *, timeout: float, slow: float) -> None:
        self.gateway = gateway
        self.timeout = timeout
        self.slow = slow
        self.verifier = DatagramVerifier(secret=None)
        self.handlers: set[asyncio.Task[str]] = set()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            push, target = self.verifier.verify(data, time.time())
        except Rejected:
            return
        if target.kind != "all":
            self.gateway.push(target, push.data, id=push.id, ingress="udp")
            return
        handler = asyncio.get_running_loop().create_task(
            handle_broadcast_leaky(data, self._push_to_all(push, target), timeout=self.timeout),
            name="broadcast-handler",
        )
        self.handlers.add(handler)
        handler.add_done_callback(self.handlers.discard)

    def _push_to_all(self, push: Push, target: Target) -> Any:
        async def push_to_all(message: bytes) -> str:
            delivered = self.gateway.push(target, push.data, id=push.id, ingress="udp").delivered
            await asyncio.sleep(self.slow)  # slow subscribers taking their copy
            return f"pushed to {delivered}"

        return push_to_all

    def close(self) -> None:
        for handler in self.handlers:
            handler.cancel()


async def serve(args: argparse.Namespace) -> None:
    leaks.track()  # "created by" in the dumps, as `tidegate serve` does
    config = Config(tcp=args.tcp, udp=None, admin=args.admin, http=None, heartbeat=args.heartbeat)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with open_gateway(config) as gateway:
        ingress = LeakyBroadcastIngress(gateway, timeout=args.timeout, slow=args.slow)
        transport, _ = await loop.create_datagram_endpoint(lambda: ingress, local_addr=args.udp)
        try:
            udp = transport.get_extra_info("sockname")
            for name, address in (
                ("tcp", gateway.tcp_address),
                ("udp", udp),
                ("admin", gateway.admin_address),
            ):
                assert address is not None
                print(f"leaky gateway: {name} listening on {format_address(address)}", flush=True)
            await stop.wait()
        finally:
            transport.close()
            ingress.close()
    # The leaked workers are still blocked in their sends; asyncio.run cancels them on exit.


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tcp", type=parse_address, default=("127.0.0.1", 7400))
    parser.add_argument("--udp", type=parse_address, default=("127.0.0.1", 7401))
    parser.add_argument("--admin", type=parse_address, default=("127.0.0.1", 7402))
    parser.add_argument("--heartbeat", type=float, default=25.0)
    parser.add_argument("--timeout", type=float, default=0.05, help="the handler's (Go: 5 s)")
    parser.add_argument("--slow", type=float, default=0.1, help="push_to_all's wait")
    asyncio.run(serve(parser.parse_args()))
