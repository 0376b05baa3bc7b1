"""/debug/profile: a sampling profile of the loop thread, in speedscope's "sampled" format."""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from collections import Counter
from typing import Any

import pytest

from tidegate.ops.profiler import SCHEMA, SamplingProfiler, profile_thread

SECONDS = 0.3


def hot_function() -> int:
    total = 0
    for i in range(200_000):  # ~10 ms a call: samples land inside it, not at its edges
        total += i * i
    return total


async def spin(stop: asyncio.Event) -> None:
    # CPU-bound, yet yields between chunks so the loop (and the profile's timer) keeps running.
    while not stop.is_set():
        hot_function()
        await asyncio.sleep(0)


def check_speedscope(document: dict[str, Any]) -> dict[str, Any]:
    """The keys the format requires (file-format-schema.json), with consistent indices."""
    json.dumps(document)  # JSON-serialisable as is
    assert document["$schema"] == SCHEMA
    frames = document["shared"]["frames"]
    assert all(isinstance(f["name"], str) for f in frames)
    profile: dict[str, Any]
    (profile,) = document["profiles"]
    assert profile["type"] == "sampled"
    assert profile["unit"] in {"none", "nanoseconds", "microseconds", "milliseconds", "seconds"}
    for key in ("name", "startValue", "endValue", "samples", "weights"):
        assert key in profile, key
    assert len(profile["samples"]) == len(profile["weights"])
    assert all(0 <= i < len(frames) for stack in profile["samples"] for i in stack)
    assert profile["endValue"] == pytest.approx(sum(profile["weights"]), abs=0.01)
    assert document["activeProfileIndex"] == 0
    return profile


async def test_profile_of_a_busy_coroutine_shows_the_hot_function() -> None:
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as group:
        group.create_task(spin(stop), name="spinner")
        document = await profile_thread(SECONDS, interval=0.005)
        stop.set()

    profile = check_speedscope(document)
    frames = document["shared"]["frames"]
    names = [frame["name"] for frame in frames]
    assert "hot_function" in names
    hot = names.index("hot_function")
    assert frames[hot]["file"] == __file__
    # The hot function is where the loop thread spends its time, so it is the commonest leaf
    # (this needs the profiler's switch-interval trick, see the profiler's docstring).
    leaves = Counter(stack[-1] for stack in profile["samples"] if stack)
    assert len(profile["samples"]) >= 10
    assert leaves.most_common(1)[0][0] == hot, [(names[i], n) for i, n in leaves.most_common(3)]
    # Root first: each stack starts at the outermost frame of the loop thread.
    assert all(stack.index(hot) == len(stack) - 1 for stack in profile["samples"] if hot in stack)
    assert profile["endValue"] == pytest.approx(SECONDS * 1000, rel=0.5)


def test_profiler_thread_is_joined_by_stop() -> None:
    profiler = SamplingProfiler(threading.get_ident(), interval=0.001)
    profiler.start()
    document = profiler.stop()
    check_speedscope(document)
    assert profiler._thread is not None and not profiler._thread.is_alive()
    with pytest.raises(RuntimeError):
        profiler.start()


async def test_cancelling_the_caller_stops_the_sampler() -> None:
    before = sys.getswitchinterval()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await profile_thread(30)
    assert not any(t.name == "tidegate-profiler" for t in threading.enumerate())
    assert sys.getswitchinterval() == before  # restored
