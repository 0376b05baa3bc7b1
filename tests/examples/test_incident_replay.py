"""The incident replay the operating guide quotes: the count climbs by one per slow broadcast
with the leaky handler, and stays at its baseline with the fixed one."""

from __future__ import annotations

import re

import pytest
from examples.incident_replay import main


def counts(output: str) -> list[int]:
    lines = output.splitlines()
    return [int(lines[i + 1]) for i, line in enumerate(lines) if line.endswith("/_count")]


async def test_leaky_replay_shows_the_climb_the_group_and_the_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    await main(6, fixed=False)
    out = capsys.readouterr().out
    before, after = counts(out)
    assert after == before + 6
    # The dump runs no proof: a suspended task is at most suspected there.
    assert re.search(r"^6 tasks \[asyncio\.Queue\.join \(1 unfinished\), suspected\]:$", out, re.M)
    assert "task broadcast-worker [asyncio.Queue.join" in out
    assert "incident.py:60 in broadcast_worker" in out
    assert "created by handle_broadcast_leaky at " in out


async def test_fixed_replay_returns_to_the_baseline(capsys: pytest.CaptureFixture[str]) -> None:
    await main(6, fixed=True)
    out = capsys.readouterr().out
    before, after = counts(out)
    assert after == before
    assert "broadcast_worker" not in out
