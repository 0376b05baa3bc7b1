"""Event-loop watchdog: measures loop lag, and catches the code that blocks the loop.

Two parts, both owned by one ``Watchdog`` and both stopped and joined by ``close()``:

- a *ticker* task in the loop sleeps ``interval`` seconds at a time; how late it wakes up is the
  loop lag, observed into a histogram. Each wake-up is a heartbeat ``(tick number, time)``.
- a *monitor* thread (not a daemon) looks at the heartbeat every ``threshold / 5`` seconds.
  When the loop has not ticked for longer than ``threshold``, the loop thread is stuck in some
  code right now: the monitor takes that thread's stack with ``sys._current_frames()``, logs it
  once per blocking site (file:line), and files it. When the loop ticks again, the ticker turns
  the filed stack into a ``LoopBlock`` with the block's duration.

The site is the innermost frame outside the standard library, so ``time.sleep`` or
``socket.recv`` called from your code points at your line, not at the stdlib's.

``worst_blocks()`` returns the longest recent blocks (kept: ``keep`` of them, from the last
``recent`` seconds), for ``/debug/vars``.

It lives in ``tidegate.leaks`` (standard library only) because two users share it: the
gateway, which watches its loop for as long as it runs, and the pytest plugin's
``--leaks-blocking`` check, which watches one test body at a time.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import sysconfig
import threading
import time
import traceback
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Any, Protocol

__all__ = ["LoopBlock", "LoopBlockedError", "Watchdog", "open_watchdog"]

log = logging.getLogger("tidegate.leaks.watchdog")

_STDLIB = tuple(
    {
        sysconfig.get_paths()[name]
        for name in ("stdlib", "platstdlib")
        if sysconfig.get_paths()[name]
    }
)


class _Observer(Protocol):
    def observe(self, amount: float, /) -> None: ...


@dataclass(frozen=True, slots=True)
class LoopBlock:
    """One stretch of time in which the loop ran nothing else.

    ``duration`` is how late the watchdog's timer fired (a lower bound of the block);
    ``site`` is ``file:line`` of the blocking code, ``function`` its qualified name, ``stack``
    the loop thread's stack when it was caught (outermost first), ``at`` the wall-clock time
    it was caught.
    """

    duration: float
    site: str
    function: str
    stack: tuple[str, ...]
    at: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "duration": round(self.duration, 6),
            "site": self.site,
            "function": self.function,
            "stack": list(self.stack),
            "at": self.at,
        }


@dataclass(frozen=True, slots=True)
class _Capture:
    tick: int
    site: str
    function: str
    stack: tuple[str, ...]
    at: float


def _is_stdlib(filename: str) -> bool:
    if filename.startswith("<frozen "):
        return True
    return filename.startswith(_STDLIB) and not (
        "site-packages" in filename or "dist-packages" in filename
    )


def capture_stack(frame: FrameType) -> tuple[str, str, tuple[str, ...]]:
    """(site, function, stack lines) of a thread's current ``frame``."""
    summary = traceback.extract_stack(frame)
    stack = tuple(f"{fs.filename}:{fs.lineno} in {fs.name}" for fs in summary)
    chosen = next(
        (fs for fs in reversed(summary) if not _is_stdlib(fs.filename)),
        summary[-1] if summary else None,
    )
    if chosen is None:
        return "<unknown>", "<unknown>", stack
    # Qualified name when available (3.11+), so a method shows as Class.method.
    name = chosen.name
    inner: FrameType | None = frame
    while inner is not None:
        if inner.f_code.co_filename == chosen.filename and inner.f_lineno == chosen.lineno:
            name = inner.f_code.co_qualname
            break
        inner = inner.f_back
    return f"{chosen.filename}:{chosen.lineno}", name, stack


class Watchdog:
    """Owns the ticker task and the monitor thread. ``start()`` in the loop, ``await close()``.

    ``interval``: seconds between ticks. ``threshold``: a loop that does not tick for longer
    than this is blocked. ``keep``/``recent``: how many of the worst blocks to keep, and for
    how long. ``lag_histogram``: anything with ``observe(seconds)``.
    """

    def __init__(
        self,
        *,
        interval: float = 0.1,
        threshold: float = 0.25,
        keep: int = 10,
        recent: float = 600.0,
        lag_histogram: _Observer | None = None,
        logger: logging.Logger | None = log,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if interval <= 0 or threshold <= 0 or keep < 1 or recent <= 0:
            raise ValueError("interval, threshold, keep and recent must be positive")
        self.interval = interval
        self.threshold = threshold
        self.keep = keep
        self.recent = recent
        self._histogram = lag_histogram
        self._log = logger
        self._clock = clock
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._beat: tuple[int, float] = (0, clock())  # replaced whole, read by the monitor
        self._captures: dict[int, _Capture] = {}
        self._logged_sites: set[str] = set()
        self._blocks: list[tuple[float, LoopBlock]] = []  # (monotonic time, block)
        self._blocks_total = 0
        self._max_lag = 0.0
        self._task: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None
        self._loop_thread = 0
        self._ticked: asyncio.Event | None = None
        self._recorded: asyncio.Event | None = None
        self._last_block: LoopBlock | None = None
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start ticking in the running loop and start the monitor thread."""
        if self._task is not None or self._closed:
            raise RuntimeError("Watchdog.start() may be called once")
        loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._ticked = asyncio.Event()
        self._recorded = asyncio.Event()
        self._beat = (0, self._clock())
        self._task = loop.create_task(self._tick_forever(), name="tidegate-watchdog-ticker")
        self._thread = threading.Thread(
            target=self._monitor, name="tidegate-watchdog-monitor", daemon=False
        )
        self._thread.start()

    async def close(self) -> None:
        """Cancel the ticker, stop and join the monitor thread. Idempotent."""
        self._closed = True
        self._stop.set()
        task, self._task = self._task, None
        thread, self._thread = self._thread, None
        try:
            if task is not None:
                task.cancel()
                await asyncio.wait([task])
                failure = None if task.cancelled() else task.exception()
                if failure is not None:
                    raise failure  # exceptions propagate: a crashed ticker is a bug
        finally:
            if thread is not None:
                # The monitor waits on `_stop`, so it wakes at once and the join is immediate.
                thread.join()

    async def __aenter__(self) -> Watchdog:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- observation -----------------------------------------------------------------------

    def worst_blocks(self) -> list[LoopBlock]:
        """The longest blocks of the last ``recent`` seconds, longest first."""
        with self._lock:
            self._expire(self._clock())
            return [block for _, block in self._blocks]

    def statistics(self) -> dict[str, Any]:
        """Counters for ``/debug/vars``: blocks seen, worst lag, the worst recent blocks."""
        return {
            "threshold": self.threshold,
            "blocks_total": self._blocks_total,
            "max_lag": round(self._max_lag, 6),
            "worst_blocks": [block.as_dict() for block in self.worst_blocks()],
        }

    async def wait_ticking(self) -> None:
        """Return once the ticker has ticked at least once."""
        if self._ticked is None:
            raise RuntimeError("the watchdog is not started")
        await self._ticked.wait()

    async def wait_tick(self) -> None:
        """Return after the ticker's next tick: a block the monitor caught in the act is
        recorded by then."""
        if self._ticked is None or self._task is None:
            raise RuntimeError("the watchdog is not running")
        # Set by the ticker in this loop: no race between clear and wait.
        self._ticked.clear()
        await self._ticked.wait()

    async def wait_blocks(self, total: int = 1) -> LoopBlock:
        """Wait until ``total`` blocks have been recorded since start; return the latest."""
        if self._recorded is None:
            raise RuntimeError("the watchdog is not started")
        # Blocks are recorded by the ticker, in this loop: no race between clear and wait.
        while self._blocks_total < total:
            self._recorded.clear()
            await self._recorded.wait()
        with self._lock:
            assert self._last_block is not None
            return self._last_block

    # -- the ticker (loop thread) ----------------------------------------------------------

    async def _tick_forever(self) -> None:
        try:
            await self._tick()
        finally:
            # However the ticker ends (close(), or asyncio.run cancelling leftovers at exit),
            # the monitor stops too: a non-daemon thread must never hold up interpreter exit.
            self._stop.set()

    async def _tick(self) -> None:
        assert self._ticked is not None
        tick = 0
        while True:
            # From the last heartbeat, not from now: the first tick then also counts the time
            # between start() and the ticker's first run (code that blocked right away).
            started = self._beat[1]
            await asyncio.sleep(self.interval)
            now = self._clock()
            lag = max(now - started - self.interval, 0.0)
            if self._histogram is not None:
                self._histogram.observe(lag)
            self._max_lag = max(self._max_lag, lag)
            with self._lock:
                capture = self._captures.pop(tick, None)
                self._captures.clear()  # anything older can no longer be completed
            tick += 1
            self._beat = (tick, now)
            if capture is not None:
                self._record(
                    LoopBlock(lag, capture.site, capture.function, capture.stack, capture.at)
                )
            self._ticked.set()

    def _record(self, block: LoopBlock) -> None:
        assert self._recorded is not None
        now = self._clock()
        with self._lock:
            self._blocks_total += 1
            self._last_block = block
            self._blocks.append((now, block))
            self._blocks.sort(key=lambda entry: entry[1].duration, reverse=True)
            del self._blocks[self.keep :]
            self._expire(now)
        self._recorded.set()

    def _expire(self, now: float) -> None:
        self._blocks = [(t, b) for t, b in self._blocks if now - t <= self.recent]

    # -- the monitor (its own thread) ------------------------------------------------------

    def _monitor(self) -> None:
        poll = max(self.threshold / 5, 0.001)
        caught_tick = -1
        while not self._stop.wait(poll):
            tick, beat_at = self._beat
            stalled = self._clock() - beat_at - self.interval
            if stalled <= self.threshold or tick == caught_tick:
                continue
            frame = sys._current_frames().get(self._loop_thread)
            if frame is None:
                continue  # the loop thread is gone
            site, function, stack = capture_stack(frame)
            del frame
            caught_tick = tick
            with self._lock:
                self._captures[tick] = _Capture(tick, site, function, stack, time.time())
                first = site not in self._logged_sites
                self._logged_sites.add(site)
            if first and self._log is not None:
                self._log.warning(
                    "event loop blocked for more than %.3fs at %s in %s; loop thread stack:\n%s",
                    self.threshold,
                    site,
                    function,
                    "\n".join(f"  {line}" for line in stack),
                )


class LoopBlockedError(AssertionError):
    """Code blocked the event loop for longer than allowed. ``blocks`` lists each time."""

    def __init__(self, blocks: list[LoopBlock], threshold: float) -> None:
        super().__init__(blocks)
        self.blocks = blocks
        self.threshold = threshold

    def __str__(self) -> str:
        parts = [
            f"the event loop was blocked {len(self.blocks)} time(s) for longer than "
            f"{self.threshold:g}s:"
        ]
        for block in self.blocks:
            where = f"{block.site} in {block.function}"
            parts.append(f"\nblocked for {block.duration:.3f}s at {where}:")
            parts.extend(f"  {line}" for line in callback_stack(block.stack))
        return "\n".join(parts)


_DISPATCH = f"{os.sep}asyncio{os.sep}events.py:"
_OWN_DIR = os.path.dirname(__file__) + os.sep


def callback_stack(stack: tuple[str, ...]) -> list[str]:
    """The part of a loop thread's stack below the loop's dispatch of the blocking callback
    (what the loop was running, not what started the loop), without the detector's frames."""
    start = 0
    for index, line in enumerate(stack):
        if _DISPATCH in line and line.endswith(" in _run"):
            start = index + 1
    return [line for line in stack[start:] if not line.startswith(_OWN_DIR)]


@asynccontextmanager
async def open_watchdog(**options: Any) -> AsyncIterator[Watchdog]:
    """``async with open_watchdog(threshold=0.5) as watchdog:`` starts and closes one."""
    watchdog = Watchdog(**options)
    watchdog.start()
    try:
        yield watchdog
    finally:
        await watchdog.close()
