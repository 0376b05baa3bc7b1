"""How the load commands end: which errors are one line, and the rest."""

from __future__ import annotations

from tidegate.load.exits import one_line_error
from tidegate.load.fleet import FleetError
from tidegate.load.probe import Unreachable

KNOWN = (Unreachable, FleetError)


def test_a_known_error_is_found_however_deeply_groups_wrapped_it() -> None:
    error = FleetError("client process 1 ended: killed by SIGKILL")
    assert one_line_error(error, KNOWN) is error
    assert one_line_error(ExceptionGroup("g", [ExceptionGroup("h", [error])]), KNOWN) is error


def test_several_known_errors_give_the_first() -> None:
    first, second = FleetError("one"), Unreachable("two")
    assert (
        one_line_error(ExceptionGroup("g", [first, ExceptionGroup("h", [second])]), KNOWN) is first
    )


def test_any_other_error_in_the_group_is_a_bug() -> None:
    assert one_line_error(ValueError("stray output"), KNOWN) is None
    group = ExceptionGroup("g", [FleetError("one"), KeyError("bug")])
    assert one_line_error(group, KNOWN) is None
