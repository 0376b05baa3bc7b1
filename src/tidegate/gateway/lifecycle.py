"""The gateway's lifecycle as one transition table (the rule: every change goes through it).

    NEW --start--> STARTING --started--> RUNNING --close--> CLOSING --closed--> CLOSED
    NEW, STARTING (a start that failed) --close--> CLOSING

A pair that is not in the table is a misuse of the gateway (`UsageError`): start() twice, or
start() after close().
"""

from __future__ import annotations

import enum
from typing import Final

from tidegate.protocol import UsageError

__all__ = ["Lifecycle", "Phase", "Step"]


class Phase(enum.Enum):
    NEW = "new"
    STARTING = "starting"
    RUNNING = "running"
    CLOSING = "closing"
    CLOSED = "closed"


class Step(enum.Enum):
    START = "start"
    STARTED = "started"
    CLOSE = "close"
    CLOSED = "closed"


_TRANSITIONS: Final[dict[tuple[Phase, Step], Phase]] = {
    (Phase.NEW, Step.START): Phase.STARTING,
    (Phase.STARTING, Step.STARTED): Phase.RUNNING,
    (Phase.NEW, Step.CLOSE): Phase.CLOSING,
    (Phase.STARTING, Step.CLOSE): Phase.CLOSING,
    (Phase.RUNNING, Step.CLOSE): Phase.CLOSING,
    (Phase.CLOSING, Step.CLOSED): Phase.CLOSED,
}


class Lifecycle:
    __slots__ = ("phase",)

    def __init__(self) -> None:
        self.phase = Phase.NEW

    def go(self, step: Step) -> None:
        try:
            self.phase = _TRANSITIONS[self.phase, step]
        except KeyError:
            raise UsageError(f"{step.value}() on a gateway that is {self.phase.value}") from None

    @property
    def shutting_down(self) -> bool:
        return self.phase is Phase.CLOSING or self.phase is Phase.CLOSED
