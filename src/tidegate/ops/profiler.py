"""A sampling CPU profiler for a running thread (the event loop), in speedscope's format.

``/debug/profile?seconds=N`` is Python's answer to Go's ``/debug/pprof/profile``: a
``SamplingProfiler`` thread reads the loop thread's current stack with
``sys._current_frames()`` every ``interval`` (5 ms) while the loop keeps serving, and the
samples come back as a speedscope "sampled" profile (open it at https://www.speedscope.app or
with the offline ``speedscope`` viewer).

Format (https://www.speedscope.app/file-format-schema.json), what we write::

    {"$schema": "https://www.speedscope.app/file-format-schema.json",
     "shared": {"frames": [{"name": "qualname", "file": "path.py", "line": 12}, ...]},
     "profiles": [{"type": "sampled", "name": ..., "unit": "milliseconds",
                   "startValue": 0, "endValue": <total ms>,
                   "samples": [[root frame index, ..., leaf frame index], ...],
                   "weights": [<ms each sample stands for>, ...]}],
     "name": ..., "activeProfileIndex": 0, "exporter": "tidegate"}

A frame is a function (qualified name, file, first line), so the flame graph merges calls of one
function. Each sample weighs the time since the previous sample, which keeps totals honest when
the sampler itself is delayed. Sampling costs the loop some GIL time (one stack walk per sample);
with 5 ms it is a few percent.

The GIL and sampling bias: a sampler thread can only look when it holds the GIL, and a busy loop
thread hands the GIL over mostly when it blocks (the selector's ``select``, a ``stat``), so
naive samples would all land on those calls and a CPU-bound coroutine would look idle. While a
profile runs we lower ``sys.setswitchinterval`` (to 0.2 ms by default) so the interpreter makes
the loop thread yield within a fraction of a millisecond of the sampler asking, wherever it is;
the previous interval is restored when sampling stops.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import CodeType, FrameType
from typing import Any, Final

__all__ = ["SCHEMA", "SamplingProfiler", "profile_thread", "to_speedscope"]

SCHEMA: Final = "https://www.speedscope.app/file-format-schema.json"

FrameKey = tuple[str, str, int]  # (qualified name, file, first line)


@dataclass(slots=True)
class _Samples:
    frames: dict[FrameKey, int] = field(default_factory=dict)
    stacks: list[list[int]] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)  # seconds

    def add(self, frame: FrameType, weight: float) -> None:
        path: list[int] = []
        current: FrameType | None = frame
        while current is not None:
            code: CodeType = current.f_code
            key = (code.co_qualname, code.co_filename, code.co_firstlineno)
            index = self.frames.get(key)
            if index is None:
                index = self.frames[key] = len(self.frames)
            path.append(index)
            current = current.f_back
        path.reverse()  # speedscope wants the root first
        self.stacks.append(path)
        self.weights.append(weight)


def to_speedscope(
    frames: dict[FrameKey, int],
    stacks: list[list[int]],
    weights_seconds: list[float],
    *,
    name: str = "tidegate event loop",
) -> dict[str, Any]:
    """A speedscope file (as a JSON-ready dict) of one sampled profile."""
    shared = [{"name": "", "file": "", "line": 0}] * len(frames)
    for (qualname, filename, line), index in frames.items():
        shared[index] = {"name": qualname, "file": filename, "line": line}
    weights = [round(w * 1000.0, 3) for w in weights_seconds]
    return {
        "$schema": SCHEMA,
        "shared": {"frames": shared},
        "profiles": [
            {
                "type": "sampled",
                "name": name,
                "unit": "milliseconds",
                "startValue": 0,
                "endValue": round(sum(weights), 3),
                "samples": stacks,
                "weights": weights,
            }
        ],
        "name": name,
        "activeProfileIndex": 0,
        "exporter": "tidegate",
    }


class SamplingProfiler:
    """Owns one sampler thread. ``start()``, then ``stop()`` joins it and returns the profile.

    ``thread_id`` is the ``threading.get_ident()`` of the thread to sample.
    """

    def __init__(
        self,
        thread_id: int,
        *,
        interval: float = 0.005,
        name: str = "tidegate event loop",
        switch_interval: float | None = 0.0002,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.thread_id = thread_id
        self.interval = interval
        self.switch_interval = switch_interval
        self._saved_switch_interval: float | None = None
        self.name = name
        self._clock = clock
        self._stop = threading.Event()
        self._samples = _Samples()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("SamplingProfiler.start() may be called once")
        if self.switch_interval is not None:
            self._saved_switch_interval = sys.getswitchinterval()
            sys.setswitchinterval(min(self.switch_interval, self._saved_switch_interval))
        self._thread = threading.Thread(target=self._run, name="tidegate-profiler", daemon=False)
        self._thread.start()

    def stop(self) -> dict[str, Any]:
        """Stop sampling, join the thread (at once: it waits on an event) and build the file."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._saved_switch_interval is not None:
            sys.setswitchinterval(self._saved_switch_interval)
            self._saved_switch_interval = None
        s = self._samples
        return to_speedscope(s.frames, s.stacks, s.weights, name=self.name)

    @property
    def sample_count(self) -> int:
        return len(self._samples.stacks)

    def _run(self) -> None:
        last = self._clock()
        while not self._stop.wait(self.interval):
            frame = sys._current_frames().get(self.thread_id)
            now = self._clock()
            if frame is None:
                break  # the sampled thread has ended
            self._samples.add(frame, now - last)
            del frame
            last = now


async def profile_thread(
    seconds: float, *, thread_id: int | None = None, interval: float = 0.005
) -> dict[str, Any]:
    """Profile ``thread_id`` (default: the running loop's thread) for ``seconds`` while the loop
    keeps running. Cancelling the caller stops and joins the sampler."""
    profiler = SamplingProfiler(
        threading.get_ident() if thread_id is None else thread_id, interval=interval
    )
    profiler.start()
    try:
        await asyncio.sleep(seconds)
    finally:
        result = profiler.stop()
    return result
