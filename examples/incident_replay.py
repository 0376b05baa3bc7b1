"""The incident, replayed against a running gateway and found with its admin endpoints.

    .venv/bin/python -m examples.incident_replay [--broadcasts 40] [--fixed]

Starts a gateway (admin on a free loopback port, creation tracking on, as `tidegate serve`
does), then handles `--broadcasts` slow broadcasts with the incident's leaky handler
(`examples.leaks.incident.handle_broadcast_leaky`, its 5 s timeout shortened to 50 ms and the
push made slower than that). It prints what an operator would see: `/_count` before and
after, the grouped dump `/debug/tasks?debug=1`, and the leaked worker's entry in `/_stack`.
With `--fixed` the handler is the structural fix and the count returns to its baseline.
docs/operating.md quotes a run of this script.
"""

from __future__ import annotations

import argparse
import asyncio
import urllib.request

from examples.leaks.incident import handle_broadcast_leaky, handle_broadcast_owned
from tidegate import leaks
from tidegate.gateway import Config, open_gateway

TIMEOUT = 0.05  # the incident's 5 s, scaled down
PUSH_TIME = 0.1  # a push to all, slowed by a few slow subscribers: longer than TIMEOUT


class SlowPush:
    """`push_to_all`, slowed down by a few slow subscribers; `all_done` is set when `expected`
    pushes have finished (a cancelled push, in the fixed handler, counts as finished)."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.finished = 0
        self.all_done = asyncio.Event()

    async def __call__(self, message: bytes) -> str:
        try:
            await asyncio.sleep(PUSH_TIME)
            return f"pushed {len(message)} bytes"
        finally:
            self.finished += 1
            if self.finished == self.expected:
                self.all_done.set()


async def fetch(address: tuple[str, int], path: str) -> str:
    def get() -> str:
        with urllib.request.urlopen(f"http://{address[0]}:{address[1]}{path}") as response:
            body: bytes = response.read()
            return body.decode()

    return await asyncio.to_thread(get)


def first_entry(dump: str, header: str) -> str:
    """The first entry of a debug=2 dump whose header starts with `header`."""
    for entry in dump.split("\n\n"):
        if entry.startswith(header):
            return entry
    return f"(no {header!r} in the dump)"


async def main(broadcasts: int, fixed: bool) -> None:
    """Print what an operator sees; see the module docstring."""
    leaks.track()
    config = Config(tcp=("127.0.0.1", 0), udp=None, http=None, admin=("127.0.0.1", 0))
    handler = handle_broadcast_owned if fixed else handle_broadcast_leaky
    async with open_gateway(config) as gw:
        assert gw.admin_address is not None
        admin = gw.admin_address
        print(f"$ curl -s {admin[0]}:{admin[1]}/_count")
        print((await fetch(admin, "/_count")).strip())
        push = SlowPush(broadcasts)
        outcomes = [
            await handler(b"maintenance at 02:00", push, timeout=TIMEOUT) for _ in range(broadcasts)
        ]
        print(f"# {broadcasts} broadcasts handled: {outcomes.count('timeout')} timed out")
        await push.all_done.wait()  # every worker is past its push: leaked in send, or gone
        print(f"$ curl -s {admin[0]}:{admin[1]}/_count")
        print((await fetch(admin, "/_count")).strip())
        grouped = await fetch(admin, "/debug/tasks?debug=1")
        print(f"$ curl -s '{admin[0]}:{admin[1]}/debug/tasks?debug=1' | head -12")
        print("\n".join(grouped.splitlines()[:12]))
        if not fixed:
            dump = await fetch(admin, "/_stack")
            print(f"$ curl -s {admin[0]}:{admin[1]}/_stack  # the first broadcast-worker")
            print(first_entry(dump, "task broadcast-worker"))
        # End the replayed leak so the gateway shuts down clean.
        for task in asyncio.all_tasks():
            if task.get_name() == "broadcast-worker":
                task.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broadcasts", type=int, default=40)
    parser.add_argument("--fixed", action="store_true", help="use the structural fix")
    args = parser.parse_args()
    asyncio.run(main(args.broadcasts, args.fixed))
