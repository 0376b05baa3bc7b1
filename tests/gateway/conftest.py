"""Every gateway test runs on both the default asyncio loop and uvloop (what `serve` uses)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

import pytest

new_uvloop: Callable[[], asyncio.AbstractEventLoop] | None
try:
    from uvloop import new_event_loop as new_uvloop
except ImportError:  # pragma: no cover - uvloop is not available on Windows
    new_uvloop = None


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    factories: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
        "asyncio": asyncio.new_event_loop
    }
    if new_uvloop is not None:
        factories["uvloop"] = new_uvloop
    return factories
