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
import signal
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
    """One client process: its events (read as they come), its last words on stderr.

    Its output may end only after ``released`` (its last event), after ``error`` (it gave
    up), or once we stop it; ending otherwise (killed, crashed) is a ``FleetError`` raised
    by ``read_events`` at once, which stops the run through the task group that reads.
    """

    def __init__(
        self, index: int, proc: asyncio.subprocess.Process, progressed: asyncio.Event
    ) -> None:
        self.index = index
        self.proc = proc
        self._progressed = progressed
        self.events: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.progress = Progress(0, 0, 0)
        self.stderr: deque[str] = deque(maxlen=20)
        self._stderr_read = asyncio.Event()
        self.stopping = False  # we are stopping it: its output may end
        self._done = False  # it said its last event (released or error)

    async def read_events(self) -> None:
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                event = None
            if not isinstance(event, dict):
                text = line.decode(errors="replace").strip()[:80]
                raise FleetError(f"client process {self.index} wrote {text!r}, not an event")
            op = event.get("op")
            if op == "progress":
                self.progress = Progress(event["up"], event["received"], event["delivered"])
                self._progressed.set()
                continue
            self._done = self._done or op in ("released", "error")
            self.events.put_nowait(event)
        if not (self._done or self.stopping):
            raise FleetError(await self._ended())
        self.events.put_nowait(None)  # the process is gone

    async def read_stderr(self) -> None:
        assert self.proc.stderr is not None
        try:
            async for line in self.proc.stderr:
                self.stderr.append(line.decode(errors="replace").rstrip())
        finally:
            self._stderr_read.set()

    async def _ended(self) -> str:
        """Why the process ended, once it has (bounded): its last line on stderr, or how
        it exited."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(EXIT_TIMEOUT):
                await self.proc.wait()
                await self._stderr_read.wait()
        return self._why()

    def _why(self) -> str:
        status = self.proc.returncode
        if self.stderr:
            why = self.stderr[-1]
        elif status is None:
            why = "its output ended"
        elif status < 0:
            why = f"killed by {signal.Signals(-status).name}"
        else:
            why = f"exit status {status}"
        return f"client process {self.index} ended: {why}"

    def send(self, line: bytes) -> None:
        """Write one command line (JSON and a newline); a process that has ended is a
        ``FleetError`` naming it."""
        stdin = self.proc.stdin
        assert stdin is not None
        if self.proc.returncode is not None or stdin.is_closing():
            raise FleetError(self._why())
        stdin.write(line)

    async def drain(self) -> None:
        assert self.proc.stdin is not None
        try:
            await self.proc.stdin.drain()
        except (ConnectionError, RuntimeError):
            raise FleetError(await self._ended()) from None

    async def expect(self, op: str) -> dict[str, Any]:
        await self.drain()
        event = await self.events.get()
        if event is None:
            raise FleetError(await self._ended())
        if event.get("op") == "error":
            raise FleetError(str(event.get("message")))
        if event.get("op") != op:
            raise FleetError(f"client process {self.index} said {event.get('op')!r}, not {op!r}")
        return event


def _line(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode() + b"\n"


class Fleet:
    def __init__(self, processes: list[_Process], progressed: asyncio.Event) -> None:
        self._processes = processes
        self._progressed = progressed
        self.heartbeat: float | None = None

    @property
    def size(self) -> int:
        return len(self._processes)

    @property
    def pids(self) -> list[int]:
        return [process.proc.pid for process in self._processes]

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
                _line(
                    {
                        "op": "start",
                        "tcp": list(tcp),
                        "jwt_secret": jwt_secret,
                        "clients": [spec.to_json() for spec in share],
                    }
                )
            )
        ups = await self._all("up")
        beats = [u["heartbeat"] for u in ups if u.get("heartbeat") is not None]
        self.heartbeat = min(beats) if beats else None

    async def load(self) -> None:
        for process in self._processes:
            process.send(_line({"op": "load"}))
            await process.drain()

    async def finish(self, pushes: Sequence[tuple[int, str]]) -> None:
        """The load is over: the processes count what their healthy clients got against
        ``pushes`` and close every connection but the vanished ones."""
        line = _line({"op": "finish", "pushes": [list(push) for push in pushes]})
        for process in self._processes:
            process.send(line)  # the same bytes to each: the log is encoded once
        await self._all("finished")

    async def release(self) -> Tally:
        """Read the vanished connections once more (did the gateway end them?), close
        them; every process's tally, added up."""
        for process in self._processes:
            process.send(_line({"op": "release"}))
        return _merged(await self._all("released"))


def _merged(events: list[dict[str, Any]]) -> Tally:
    total = Tally()
    for event in events:
        total.merge(Tally.from_json(event["tally"]))
    return total


@contextlib.asynccontextmanager
async def open_fleet(processes: int) -> AsyncIterator[Fleet]:
    """Start ``processes`` client processes (``python -m tidegate.load.worker``). One that
    ends before its time (killed, crashed) stops the body at once with a ``FleetError``."""
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
        # One error (what the body raised, or the reader of a process that ended): as is.
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise


async def _stop(processes: list[_Process]) -> None:
    """Close each process's stdin (it exits on EOF), then terminate any that lingers."""
    for process in processes:
        process.stopping = True
    for process in processes:
        if process.proc.stdin is not None and not process.proc.stdin.is_closing():
            process.proc.stdin.close()
    for process in processes:
        try:
            await asyncio.wait_for(process.proc.wait(), EXIT_TIMEOUT)
        except TimeoutError:
            process.proc.kill()
            await process.proc.wait()
