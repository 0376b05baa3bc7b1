"""Watching the server through a run: the baseline, samples in the background, the phases,
and the drain that decides the verdict (looks with capped backoff until every gauge is back
at its baseline or the window closes)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Final

from .display import Display
from .probe import Probe
from .verdict import Sample, above_baseline, backoff_delays

__all__ = ["Watch"]

SAMPLE_EVERY: Final = 0.5
BASELINE_LOOKS: Final = 10  # at most this many looks for two equal ones in a row


class Watch:
    def __init__(self, probe: Probe, display: Display) -> None:
        self.probe = probe
        self.display = display
        self._loop = asyncio.get_running_loop()
        self._start = self._loop.time()
        self.samples: list[Sample] = []
        self.phases: list[tuple[str, float]] = []
        self.phase = "baseline"
        self._sampling = asyncio.Event()

    def now(self) -> float:
        return self._loop.time() - self._start

    def enter(self, phase: str, note: str = "") -> None:
        self.phase = phase
        self.phases.append((phase, self.now()))
        self.display.update(phase=phase, note=note, elapsed=self.now())

    async def look(self) -> Sample:
        sample = await self.probe.sample(self.now(), self.phase)
        self.samples.append(sample)
        self.display.update(
            elapsed=sample.t, tasks=sample.tasks, connections=sample.connections, rss=sample.rss
        )
        return sample

    async def baseline(self) -> Sample:
        """The server at rest: two looks in a row that agree on every gauge (a connection
        of a previous check may still be closing at the first)."""
        self.enter("baseline")
        previous = await self.look()
        for _ in range(BASELINE_LOOKS):
            await asyncio.sleep(0.05)
            current = await self.look()
            if not above_baseline(previous, current) and not above_baseline(current, previous):
                return current
            previous = current
        return previous

    async def sample_while(self, stop: asyncio.Event) -> None:
        """Look every ``SAMPLE_EVERY`` seconds until ``stop`` is set."""
        while not stop.is_set():
            await self.look()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), SAMPLE_EVERY)

    async def drain(self, baseline: Sample, window: float) -> tuple[float | None, Sample]:
        """Look with capped backoff until the gauges are back at ``baseline`` (returns how
        long that took) or ``window`` seconds have passed (returns None); and the last look."""
        start = self.now()
        delays = backoff_delays()
        while True:
            sample = await self.look()
            if not above_baseline(baseline, sample):
                return sample.t - start, sample
            left = start + window - self.now()
            if left <= 0:
                return None, sample
            await asyncio.sleep(min(next(delays), left))
