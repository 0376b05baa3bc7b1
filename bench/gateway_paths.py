"""Room fan-out and unicast throughput, against raw uvloop write loops in the same run.

    .venv/bin/python -m bench.gateway_paths [--conns 10000] [--rooms 100] [--repeat 5]

The other fan-out paths, so that none regresses while `all` gets faster. Over the very same
sockets, interleaved, median of `--repeat` runs, each about `--deliveries` deliveries:

- **rooms** (10,000 connections in 100 rooms of 100): each loop turn pushes `--per-room`
  messages to every room (1: nothing to coalesce; 10: a burst). Baselines: **raw**, one
  `transport.write(frame)` per member per message; **raw joined**, the turn's frames of each
  socket appended to its own list, joined and written once at the end of the turn.
- **unicast**: each loop turn pushes to `--unicast-batch` different users (one connection
  each). Baseline **raw**: `transport.write(frame)` to that user's socket.

The rate is deliveries (lines read by the clients) per second, from the first push until the
last client has read its last line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable

import msgspec

from bench.gateway_harness import Pool, gateway_config, new_loop
from tidegate.gateway import Gateway, open_gateway
from tidegate.protocol import encode_msg, parse_target

PAYLOAD = {"text": "x" * 64}


def raw_id(i: int) -> str:
    return f"{0xC0FFEE00 + i:08x}-{i:x}"  # as long as the gateway's own ids


async def timed(pool: Pool, n: int, per_conn: int, send: Callable[[], Awaitable[None]]) -> float:
    await pool.arm(per_conn)
    started = time.monotonic()
    await send()
    finished, _ = await pool.wait_done()
    return n * per_conn / (finished - started)


def transports_of(gw: Gateway, to: str) -> list[asyncio.WriteTransport]:
    return [sink.transport for sink in gw.registry.targets(parse_target(to))]  # type: ignore[attr-defined]


async def rooms_run(
    gw: Gateway, pool: Pool, n: int, rooms: int, per_room: int, deliveries: int, repeat: int
) -> dict[str, float]:
    names = [f"room:r{r}" for r in range(rooms)]
    members = {name: transports_of(gw, name) for name in names}
    turns = max(1, deliveries // (n * per_room))
    data_json = msgspec.json.encode(PAYLOAD)

    async def gateway() -> None:
        for _ in range(turns):
            for _ in range(per_room):
                for name in names:
                    gw.push(name, PAYLOAD)
            await asyncio.sleep(0)

    async def raw() -> None:
        i = 0
        for _ in range(turns):
            for _ in range(per_room):
                for name in names:
                    frame = encode_msg(to=name, id=raw_id(i), data_json=data_json)
                    i += 1
                    for transport in members[name]:
                        transport.write(frame)
            await asyncio.sleep(0)

    async def raw_joined() -> None:
        i = 0
        for _ in range(turns):
            pending: dict[asyncio.WriteTransport, list[bytes]] = {}
            for _ in range(per_room):
                for name in names:
                    frame = encode_msg(to=name, id=raw_id(i), data_json=data_json)
                    i += 1
                    for transport in members[name]:
                        frames = pending.get(transport)
                        if frames is None:
                            pending[transport] = [frame]
                        else:
                            frames.append(frame)
            for transport, frames in pending.items():
                transport.write(b"".join(frames))
            await asyncio.sleep(0)

    rates: dict[str, list[float]] = {"raw": [], "raw_joined": [], "gateway": []}
    for _ in range(repeat):
        for mode, send in (("raw", raw), ("raw_joined", raw_joined), ("gateway", gateway)):
            rates[mode].append(await timed(pool, n, turns * per_room, send))
    print(f"rooms x{per_room}, runs:", {k: [round(v) for v in vs] for k, vs in rates.items()})
    return summary(f"rooms, {per_room}/room/turn", rates, ("raw", "raw_joined"))


async def unicast_run(
    gw: Gateway, pool: Pool, n: int, batch: int, deliveries: int, repeat: int
) -> dict[str, float]:
    users = [f"u{i}" for i in range(n)]
    targets = [parse_target(f"user:{user}") for user in users]
    transports = [transports_of(gw, f"user:{user}")[0] for user in users]
    per_conn = max(1, deliveries // n)
    data_json = msgspec.json.encode(PAYLOAD)

    async def gateway() -> None:
        for _ in range(per_conn):
            for start in range(0, n, batch):
                for target in targets[start : start + batch]:
                    gw.push(target, PAYLOAD)
                await asyncio.sleep(0)

    async def raw() -> None:
        i = 0
        for _ in range(per_conn):
            for start in range(0, n, batch):
                for user, transport in zip(
                    users[start : start + batch], transports[start : start + batch], strict=True
                ):
                    transport.write(encode_msg(to=user, id=raw_id(i), data_json=data_json))
                    i += 1
                await asyncio.sleep(0)

    rates: dict[str, list[float]] = {"raw": [], "gateway": []}
    for _ in range(repeat):
        for mode, send in (("raw", raw), ("gateway", gateway)):
            rates[mode].append(await timed(pool, n, per_conn, send))
    print("unicast, runs:", {k: [round(v) for v in vs] for k, vs in rates.items()})
    return summary(f"unicast, {batch}/turn", rates, ("raw",))


def summary(
    name: str, rates: dict[str, list[float]], baselines: tuple[str, ...]
) -> dict[str, float | str]:
    result: dict[str, float | str] = {"path": name}
    result.update({mode: statistics.median(values) for mode, values in rates.items()})
    for base in baselines:
        pairs = zip(rates["gateway"], rates[base], strict=True)
        result[f"vs_{base}"] = statistics.median(g / b for g, b in pairs)
    return result


async def main_async(args: argparse.Namespace) -> list[dict[str, float | str]]:
    pool = Pool(args.workers)
    try:
        async with open_gateway(gateway_config(args.conns)) as gw:
            assert gw.tcp_address is not None
            await pool.connect(gw.tcp_address, args.conns, rooms=args.rooms, replies=2)
            results = [
                await rooms_run(
                    gw, pool, args.conns, args.rooms, per_room, args.deliveries, args.repeat
                )
                for per_room in (1, 10)
            ]
            results.append(
                await unicast_run(
                    gw, pool, args.conns, args.unicast_batch, args.deliveries // 4, args.repeat
                )
            )
            await pool.close_all()
        return results
    finally:
        pool.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conns", type=int, default=10_000)
    parser.add_argument("--rooms", type=int, default=100)
    parser.add_argument("--unicast-batch", type=int, default=1000, help="pushes per loop turn")
    parser.add_argument("--deliveries", type=int, default=400_000, help="per run, about")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5, help="median of this many runs")
    args = parser.parse_args(argv)
    with asyncio.Runner(loop_factory=new_loop) as runner:
        results = runner.run(main_async(args))
    print(
        f"{'path':<26} {'raw/s':>11} {'joined/s':>11} {'gateway/s':>11} {'vs raw':>7}"
        f" {'vs joined':>9}"
    )
    for r in results:
        joined = r.get("raw_joined")
        print(
            f"{r['path']:<26} {r['raw']:>11,.0f} "
            + (f"{joined:>11,.0f}" if isinstance(joined, float) else f"{'':>11}")
            + f" {r['gateway']:>11,.0f} {r['vs_raw']:>7.2f}"
            + (f" {r['vs_raw_joined']:>9.2f}" if "vs_raw_joined" in r else "")
        )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
