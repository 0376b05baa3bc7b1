"""Saturated broadcast: a closed loop keeping W broadcasts in flight, against the joined-write
ceiling of one uvloop thread in the same run.

    .venv/bin/python -m bench.gateway_saturation [--conns 2000,5000,10000]
                                                 [--windows 8,32,128] [--seconds 1.5]
                                                 [--repeat 3]

The clients (two worker processes, on the other core) count the lines they receive and report
their progress; the benchmark process keeps W broadcasts in flight: it sends the next one as
soon as the clients report that the oldest has reached everyone, from inside the loop
callback that reads the report, so the loop is never idle while broadcasts are missing. Over
the very same sockets, interleaved, for each connection count and window:

- **joined**: the ceiling: each broadcast's frame (~150 bytes, ids as long as the gateway's)
  appended to one list; at the end of the loop turn the list is joined once and written to
  every socket (`transport.write`), with no bound, policy, ordering or bookkeeping;
- **gateway**: `gateway.push("all", ...)`, the full path.

The rate is deliveries counted by the clients per second, from the first broadcast to the
last line read. Goal (issue 14): gateway/joined >= 0.85 at 2k, 5k and 10k connections.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import statistics
import time
from collections.abc import Callable

import msgspec

from bench.gateway_harness import Pool, gateway_config, new_loop
from tidegate.gateway import Gateway, open_gateway
from tidegate.protocol import encode_msg

PAYLOAD = {"text": "x" * 64}
REPEAT = 3


class JoinedWriter:
    """The ceiling: frames of one loop turn joined once, the same bytes written to every
    socket at the end of the turn."""

    def __init__(self, transports: list[asyncio.WriteTransport]) -> None:
        self.transports = transports
        self.pending: list[bytes] = []
        self.data_json = msgspec.json.encode(PAYLOAD)
        self.ids = (f"{0xC0FFEE00 + i:08x}-{i:x}" for i in itertools.count())
        self.loop = asyncio.get_running_loop()

    def push(self) -> None:
        self.pending.append(encode_msg(to="all", id=next(self.ids), data_json=self.data_json))
        if len(self.pending) == 1:
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        data = b"".join(self.pending)
        self.pending.clear()
        for transport in self.transports:
            transport.write(data)


async def saturate(
    pool: Pool, n: int, window: int, messages: int, push: Callable[[], None]
) -> float:
    """Keep `window` broadcasts in flight until `messages` were sent and read; deliveries/s."""
    loop = asyncio.get_running_loop()
    workers = pool.workers
    shares = pool.shares
    every = max(1, window // 8)
    await pool.arm(messages, every=every)
    read = [0] * len(workers)  # lines each worker has read
    finished: list[float] = []
    all_done = loop.create_future()
    sent = 0

    def refill() -> None:
        nonlocal sent
        completed = min(lines // share for lines, share in zip(read, shares, strict=True))
        while sent < messages and sent - completed < window:
            push()
            sent += 1

    def readable(index: int) -> None:
        reply = workers[index].pipe.recv()
        if reply[0] == "progress":
            read[index] = reply[1]
            refill()
        else:
            finished.append(reply[1])
            read[index] = messages * shares[index]
            if len(finished) == len(workers) and not all_done.done():
                all_done.set_result(None)

    for index, worker in enumerate(workers):
        loop.add_reader(worker.pipe.fileno(), readable, index)
    try:
        started = time.monotonic()
        refill()
        await all_done
    finally:
        for worker in workers:
            loop.remove_reader(worker.pipe.fileno())
    return n * messages / (max(finished) - started)


async def run(
    n: int, windows: list[int], seconds: float, repeat: int, pool: Pool
) -> list[dict[str, float]]:
    results = []
    async with open_gateway(gateway_config(n)) as gw:
        assert gw.tcp_address is not None
        await pool.connect(gw.tcp_address, n)
        transports = [sink.transport for sink in gw.registry.everyone]  # type: ignore[attr-defined]
        joined = JoinedWriter(transports)

        def push_gateway(gw: Gateway = gw) -> None:
            gw.push("all", PAYLOAD)

        # About `seconds` per run at the ceiling's pace, measured once with a short run.
        probe = await saturate(pool, n, 32, 20, joined.push)
        messages = max(50, int(seconds * probe / n))
        for window in windows:
            rates: dict[str, list[float]] = {"joined": [], "gateway": []}
            for _ in range(repeat):
                rates["joined"].append(await saturate(pool, n, window, messages, joined.push))
                rates["gateway"].append(await saturate(pool, n, window, messages, push_gateway))
            ratios = [g / j for g, j in zip(rates["gateway"], rates["joined"], strict=True)]
            print(
                f"{n} conns, W={window}, {messages} broadcasts, runs:",
                {k: [round(v) for v in vs] for k, vs in rates.items()},
                flush=True,
            )
            results.append(
                {
                    "conns": n,
                    "window": window,
                    "messages": messages,
                    "joined": statistics.median(rates["joined"]),
                    "gateway": statistics.median(rates["gateway"]),
                    "ratio": statistics.median(ratios),
                    "ratio_min": min(ratios),
                    "ratio_max": max(ratios),
                }
            )
        await pool.close_all()
    return results


async def main_async(
    conns: list[int], windows: list[int], seconds: float, repeat: int, workers: int
) -> list[dict[str, float]]:
    pool = Pool(workers)
    try:
        results = []
        for n in conns:
            results += await run(n, windows, seconds, repeat, pool)
        return results
    finally:
        pool.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conns", default="2000,5000,10000")
    parser.add_argument("--windows", default="8,32,128", help="broadcasts in flight")
    parser.add_argument("--seconds", type=float, default=1.5, help="per run, about")
    parser.add_argument("--repeat", type=int, default=REPEAT, help="median of this many runs")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    conns = [int(c) for c in args.conns.split(",")]
    windows = [int(w) for w in args.windows.split(",")]
    with asyncio.Runner(loop_factory=new_loop) as runner:
        results = runner.run(main_async(conns, windows, args.seconds, args.repeat, args.workers))
    print(f"{'conns':>6} {'W':>4} {'joined/s':>11} {'gateway/s':>11} {'ratio':>6} {'range':>11}")
    for r in results:
        print(
            f"{r['conns']:>6.0f} {r['window']:>4.0f} {r['joined']:>11,.0f} {r['gateway']:>11,.0f}"
            f" {r['ratio']:>6.2f} {r['ratio_min']:>5.2f}-{r['ratio_max']:.2f}"
        )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
