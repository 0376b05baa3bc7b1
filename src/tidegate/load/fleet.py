"""The client processes, seen from the main process (see ``worker`` for what each does).

One process holds at most as many clients as its open-file limit allows (less a reserve), so a
large ``--clients`` is spread over several; the main process raises its own soft limit first
and the processes inherit it. ``open_fleet`` owns them: on exit it stops any still running and
waits for it, whatever happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import sys
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

from .plan import ClientSpec, split
from .stats import Tally

__all__ = ["Fleet", "FleetError", "Progress", "open_fleet", "processes_for"]

FD_RESERVE: Final = 256  # pipes, the loop, DNS: what a process needs besides its clients
EXIT_TIMEOUT: Final = 5.0


class FleetError(Exception):
    """A client process failed (the message says which and why)."""


def processes_for(clients: int, open_files: int) -> int:
    """How many processes hold ``clients`` sockets with ``open_files`` descriptors each."""
    per_process = max(open_files - FD_RESERVE, 1)
    return max(1, math.ceil(clients / per_process))


@dataclass(frozen=True, slots=True)
class Progress:
    up: int
    received: int
    delivered: int


class _Process:
    def __init__(
        self, index: int, proc: asyncio.subprocess.Process, progressed: asyncio.Event
    ) -> None:
        self.index = index
        self.proc = proc
        self._progressed = progressed
        self.events: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.progress = Progress(0, 0, 0)
        self.stderr: deque[str] = deque(maxlen=20)

    async def read_events(self) -> None:
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            event = json.loads(line)
            if event.get("op") == "progress":
                self.progress = Progress(event["up"], event["received"], event["delivered"])
                self._progressed.set()
            else:
                self.events.put_nowait(event)
        self.events.put_nowait(None)  # the process is gone

    async def read_stderr(self) -> None:
        assert self.proc.stderr is not None
        async for line in self.proc.stderr:
            self.stderr.append(line.decode(errors="replace").rstrip())

    def send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(message).encode() + b"\n")

    async def expect(self, op: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        await self.proc.stdin.drain()
        event = await self.events.get()
        if event is None:
            await self.proc.wait()
            last = self.stderr[-1] if self.stderr else f"exit status {self.proc.returncode}"
            raise FleetError(f"client process {self.index} ended: {last}")
        if event.get("op") == "error":
            raise FleetError(str(event.get("message")))
        if event.get("op") != op:
            raise FleetError(f"client process {self.index} said {event.get('op')!r}, not {op!r}")
        return event


class Fleet:
    def __init__(self, processes: list[_Process], progressed: asyncio.Event) -> None:
        self._processes = processes
        self._progressed = progressed
        self.heartbeat: float | None = None

    @property
    def size(self) -> int:
        return len(self._processes)

    def progress(self) -> Progress:
        parts = [p.progress for p in self._processes]
        return Progress(
            sum(p.up for p in parts),
            sum(p.received for p in parts),
            sum(p.delivered for p in parts),
        )

    async def wait_delivered(self, count: int, timeout: float) -> bool:
        """Until the processes report ``count`` deliveries to healthy clients (True), or
        ``timeout`` seconds (False)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.progress().delivered < count:
            self._progressed.clear()
            try:
                await asyncio.wait_for(self._progressed.wait(), deadline - loop.time())
            except TimeoutError:
                return self.progress().delivered >= count
        return True

    async def _all(self, op: str) -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(p.expect(op) for p in self._processes)))

    async def connect(
        self, specs: Sequence[ClientSpec], *, tcp: tuple[str, int], jwt_secret: str | None
    ) -> None:
        """Deal the clients to the processes; returns once every one is connected and in
        its rooms. The welcome's heartbeat is kept in ``heartbeat``."""
        for process, share in zip(self._processes, split(specs, self.size), strict=False):
            process.send(
                {
                    "op": "start",
                    "tcp": list(tcp),
                    "jwt_secret": jwt_secret,
                    "clients": [spec.to_json() for spec in share],
                }
            )
        ups = await self._all("up")
        beats = [u["heartbeat"] for u in ups if u.get("heartbeat") is not None]
        self.heartbeat = min(beats) if beats else None

    async def load(self) -> None:
        for process in self._processes:
            process.send({"op": "load"})
            assert process.proc.stdin is not None
            await process.proc.stdin.drain()

    async def finish(self, pushes: Sequence[tuple[int, str]]) -> Tally:
        log = [list(push) for push in pushes]
        for process in self._processes:
            process.send({"op": "finish", "pushes": log})
        return _merged(await self._all("report"))

    async def release(self) -> Tally:
        for process in self._processes:
            process.send({"op": "release"})
        return _merged(await self._all("released"))


def _merged(events: list[dict[str, Any]]) -> Tally:
    total = Tally()
    for event in events:
        total.merge(Tally.from_json(event["tally"]))
    return total


@contextlib.asynccontextmanager
async def open_fleet(processes: int) -> AsyncIterator[Fleet]:
    """Start ``processes`` client processes (``python -m tidegate.load.worker``)."""
    started: list[_Process] = []
    progressed = asyncio.Event()
    try:
        async with asyncio.TaskGroup() as readers:
            try:
                for index in range(processes):
                    proc = await asyncio.create_subprocess_exec(
                        sys.executable,
                        "-m",
                        "tidegate.load.worker",
                        stdin=asyncio.subprocess.PIPE,
                        stdout=asyncio.subprocess.PIPE,
                        stderr=asyncio.subprocess.PIPE,
                        limit=1 << 24,
                    )
                    process = _Process(index, proc, progressed)
                    started.append(process)
                    readers.create_task(process.read_events(), name=f"load-events-{index}")
                    readers.create_task(process.read_stderr(), name=f"load-stderr-{index}")
                yield Fleet(started, progressed)
            finally:
                await _stop(started)
    except BaseExceptionGroup as group:
        # The readers never fail on their own; unwrap what the body raised.
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise


async def _stop(processes: list[_Process]) -> None:
    """Close each process's stdin (it exits on EOF), then terminate any that lingers."""
    for process in processes:
        if process.proc.stdin is not None and not process.proc.stdin.is_closing():
            process.proc.stdin.close()
    for process in processes:
        try:
            await asyncio.wait_for(process.proc.wait(), EXIT_TIMEOUT)
        except TimeoutError:
            process.proc.kill()
            await process.proc.wait()
