"""The gateway's loop watchdog: ``tidegate.leaks``' watchdog, logging as ``tidegate.ops.watchdog``.

The machinery (a ticker task measuring loop lag, a monitor thread catching the code that blocks
the loop) lives in ``tidegate.leaks``, where the pytest plugin's ``--leaks-blocking`` check uses
it too; the gateway keeps its logger name, so operators' logging configuration is unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from tidegate.leaks import LoopBlock
from tidegate.leaks import Watchdog as _LeaksWatchdog

__all__ = ["LoopBlock", "Watchdog", "open_watchdog"]

log = logging.getLogger("tidegate.ops.watchdog")


class Watchdog(_LeaksWatchdog):
    """``tidegate.leaks.Watchdog`` with the gateway's logger as the default."""

    def __init__(self, *, logger: logging.Logger = log, **options: Any) -> None:
        super().__init__(logger=logger, **options)


@asynccontextmanager
async def open_watchdog(**options: Any) -> AsyncIterator[Watchdog]:
    """``async with open_watchdog(threshold=0.5) as watchdog:`` starts and closes one."""
    watchdog = Watchdog(**options)
    watchdog.start()
    try:
        yield watchdog
    finally:
        await watchdog.close()
