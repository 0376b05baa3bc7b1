"""Shared pieces of the cluster benchmarks: `tidegate serve` processes as a user runs them
(one node, a node on a broker, `--workers N`), their addresses, their pids and the CPU time
every process of a run used (from /proc, so the clients' cost can be stated beside the
servers')."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Iterable
from typing import Any

import aiohttp

Address = tuple[str, int]

_TICKS = os.sysconf("SC_CLK_TCK")


async def get_json(url: str) -> Any:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return await response.json()


def cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU time of `pids` so far (processes that ended count 0)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / _TICKS


class Node:
    """A running `tidegate serve`, its printed addresses and the pids that serve."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.addresses: dict[str, Address] = {}
        self.pids: list[int] = [process.pid]

    async def read_addresses(self, last: str) -> None:
        assert self.process.stdout is not None
        while True:
            line = await asyncio.wait_for(self.process.stdout.readline(), 60)
            if not line:
                raise RuntimeError("tidegate serve exited before it listened")
            text = line.decode().rstrip()
            if text.startswith("tidegate: ") and " listening on " in text:
                host, _, port = text.rsplit(" ", 1)[1].rpartition(":")
                self.addresses[text.split()[1]] = (host, int(port))
            if last in text:
                return

    def url(self, name: str) -> str:
        host, port = self.addresses[name]
        return f"http://{host}:{port}"


@contextlib.asynccontextmanager
async def serve(*flags: str, conns: int, workers: int = 1) -> AsyncIterator[Node]:
    """`tidegate serve` on free loopback ports for `conns` client connections; stopped
    (SIGTERM, then SIGKILL) by its pids.

    `--max-conns` is sized to the run: serve checks it against the open-file limit at startup
    and refuses one that the limit cannot hold."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tidegate",
        "serve",
        *("--tcp", "127.0.0.1:0", "--udp", "127.0.0.1:0", "--http", "127.0.0.1:0"),
        *("--admin", "127.0.0.1:0", "--max-conns", str(conns + 64), "--heartbeat", "600"),
        *("--handshake-timeout", "120", "--workers", str(workers), "--log-level", "WARNING"),
        *flags,
        stdout=asyncio.subprocess.PIPE,
    )
    node = Node(process)
    try:
        await node.read_addresses("workers (pids" if workers > 1 else "admin listening")
        if workers > 1:
            group = await get_json(node.url("admin") + "/workers")
            node.pids += [w["pid"] for w in group["workers"]]
            if group["nats_server_pid"]:
                node.pids.append(group["nats_server_pid"])
        yield node
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), 30)
        except TimeoutError:
            for pid in node.pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            await process.wait()
