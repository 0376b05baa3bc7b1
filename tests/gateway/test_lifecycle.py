"""The gateway's lifecycle table: the one path through it, and every misuse refused."""

from __future__ import annotations

import pytest

from tidegate.gateway import Gateway
from tidegate.gateway.lifecycle import Lifecycle, Phase, Step
from tidegate.protocol import UsageError

from .helpers import config


def test_the_path_of_a_gateway() -> None:
    lifecycle = Lifecycle()
    for step, phase in [
        (Step.START, Phase.STARTING),
        (Step.STARTED, Phase.RUNNING),
        (Step.CLOSE, Phase.CLOSING),
        (Step.CLOSED, Phase.CLOSED),
    ]:
        lifecycle.go(step)
        assert lifecycle.phase is phase
        assert lifecycle.shutting_down == (phase in (Phase.CLOSING, Phase.CLOSED))


@pytest.mark.parametrize(
    ("steps", "refused", "message"),
    [
        ([Step.START], Step.START, "start() on a gateway that is starting"),
        ([Step.START, Step.STARTED], Step.START, "start() on a gateway that is running"),
        ([Step.CLOSE, Step.CLOSED], Step.START, "start() on a gateway that is closed"),
        ([], Step.STARTED, "started() on a gateway that is new"),
        ([Step.START, Step.STARTED, Step.CLOSE], Step.CLOSE, "on a gateway that is closing"),
    ],
)
def test_misuse_is_a_usage_error(steps: list[Step], refused: Step, message: str) -> None:
    lifecycle = Lifecycle()
    for step in steps:
        lifecycle.go(step)
    phase = lifecycle.phase
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        lifecycle.go(refused)
    assert lifecycle.phase is phase  # a refused step changes nothing


async def test_a_gateway_closed_before_it_started_stays_closed() -> None:
    gw = Gateway(config())
    await gw.close()
    await gw.close()  # idempotent
    assert not gw.running and not gw.ready()
    with pytest.raises(UsageError, match="closed"):
        await gw.start()
