"""The pytest plugin, run through pytester in this process."""

from __future__ import annotations

import sys
import threading
import types

import pytest

ASYNC_OPTS = ("-o", "asyncio_mode=auto", "-o", "asyncio_default_fixture_loop_scope=function")


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest("-p", "no:cacheprovider", *ASYNC_OPTS, *args)


LEAKY_AND_CLEAN = """
import asyncio

async def hang(event):
    await event.wait()

async def test_leaky():
    asyncio.create_task(hang(asyncio.Event()), name="forgotten")

async def test_clean():
    await asyncio.create_task(asyncio.sleep(0))

def test_sync_clean():
    pass
"""


def test_leaking_test_fails_with_report_clean_ones_pass(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(LEAKY_AND_CLEAN)
    result = run(pytester, "--leaks", "-o", "leaks_timeout=0.2")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*task forgotten [[]asyncio.Event.wait, *[]]:*",
            "*in hang*",
            "*created by test_leaky at *",
            "*tidegate leaks*",
            "*test_leaky leaked: task forgotten [[]asyncio.Event.wait[]]*",
        ]
    )


def test_leaks_are_not_checked_unless_asked(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(LEAKY_AND_CLEAN)
    run(pytester).assert_outcomes(passed=3)


def test_ini_option_marker_and_opt_out(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nleaks = true\nleaks_timeout = 0.2\n")
    pytester.makepyfile(
        """
        import asyncio, pytest

        async def hang(event):
            await event.wait()

        @pytest.mark.no_leak_check
        async def test_opted_out():
            asyncio.create_task(hang(asyncio.Event()))

        @pytest.mark.leaks(timeout=0.05)
        async def test_marked():
            asyncio.create_task(hang(asyncio.Event()), name="marked-leak")
        """
    )
    result = run(pytester)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*test_marked leaked: task marked-leak*"])


def test_marker_alone_enables_the_check(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import asyncio, pytest

        async def hang(event):
            await event.wait()

        @pytest.mark.leaks(timeout=0.05)
        async def test_marked():
            asyncio.create_task(hang(asyncio.Event()))
        """
    )
    run(pytester).assert_outcomes(failed=1)


def test_leaked_executor_thread_is_reported_and_does_not_hang(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The inner test blocks a default-executor thread on an event only this
    # outer test can set; without the plugin detaching it, the inner runner's
    # teardown (shutdown_default_executor) would wait for it forever.
    release = threading.Event()
    monkeypatch.setitem(sys.modules, "leak_release", types.SimpleNamespace(event=release))
    pytester.makepyfile(
        """
        import asyncio
        import leak_release

        async def test_stuck_job():
            asyncio.get_running_loop().run_in_executor(None, leak_release.event.wait)
        """
    )
    try:
        result = run(
            pytester, "--leaks", "-o", "leaks_timeout=0.2", "-p", "timeout", "--timeout=30"
        )
    finally:
        release.set()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*thread asyncio_* [[]threading.Event.wait*", "*created by test_stuck_job at*"]
    )


def test_session_end_lists_threads_no_test_caught(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()
    monkeypatch.setitem(sys.modules, "leak_release", types.SimpleNamespace(event=release))
    pytester.makepyfile(
        """
        import threading, pytest
        import leak_release

        @pytest.mark.no_leak_check
        def test_starts_a_thread():
            threading.Thread(target=leak_release.event.wait, name="outlives-session").start()
        """
    )
    try:
        result = run(pytester, "--leaks")
    finally:
        release.set()
    result.assert_outcomes(passed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        ["*still running at the end of the session (1)*", "*thread outlives-session*"]
    )


def run_releasing(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, *args: str
) -> pytest.RunResult:
    """Run with leaks checked; threads parked on `leak_release.event` are let go afterwards."""
    release = threading.Event()
    monkeypatch.setitem(sys.modules, "leak_release", types.SimpleNamespace(event=release))
    try:
        return run(pytester, "--leaks", "-o", "leaks_timeout=0.2", *args)
    finally:
        release.set()


FIXTURES = """
import asyncio, threading, pytest
import leak_release

async def hang(event):
    await event.wait()

@pytest.fixture
async def leaky_server():
    asyncio.create_task(hang(asyncio.Event()), name="fixture-task")
    yield

@pytest.fixture
async def owned_server():
    task = asyncio.create_task(hang(asyncio.Event()), name="owned-task")
    yield
    task.cancel()  # not awaited: the check gives it the loop to finish

@pytest.fixture
async def leaky_job():
    asyncio.get_running_loop().run_in_executor(None, leak_release.event.wait)
    yield

@pytest.fixture
def leaky_thread():
    threading.Thread(target=leak_release.event.wait, name="fixture-thread").start()
    yield
    # forgot leak_release.event.set()

async def test_uses_leaky_fixture(leaky_server):
    pass

async def test_uses_owned_fixture(owned_server):
    pass

def test_uses_leaky_thread(leaky_thread):
    pass

async def test_uses_leaky_job(leaky_job):
    pass
"""


def test_fixture_leaks_fail_the_teardown_before_the_loop_cancels_them(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(FIXTURES)
    # A hang in the loop's close would end in pytest-timeout's error instead.
    result = run_releasing(pytester, monkeypatch, "-o", "timeout=5")
    assert "Timeout" not in result.stdout.str()
    # Each body passes; three teardowns fail with the report, and the stuck executor job does
    # not hang the loop's close.
    result.assert_outcomes(passed=4, errors=3)
    result.stdout.fnmatch_lines_random(
        [
            "*ERROR at teardown of test_uses_leaky_fixture*",
            "*task fixture-task [[]asyncio.Event.wait, *[]]:*",
            "*created by leaky_server at *",
            "*started during setup or teardown of *test_uses_leaky_fixture (by a fixture)*",
            "*ERROR at teardown of test_uses_leaky_thread*",
            "*thread fixture-thread [[]threading.Event.wait, *[]]*",
            "*test_uses_leaky_thread leaked: thread fixture-thread*",
            "*ERROR at teardown of test_uses_leaky_job*",
            "*thread asyncio_* [[]threading.Event.wait, *[]]*",
        ]
    )
    assert "owned-task" not in result.stdout.str()


WIDER_FIXTURES = """
import asyncio, threading, pytest
import leak_release

@pytest.fixture(scope="session")
def session_server():
    thread = threading.Thread(target=leak_release.event.wait, name="session-server")
    thread.start()
    yield
    leak_release.event.set()
    thread.join()

async def hang(event):
    await event.wait()

def test_first(session_server):
    pass

def test_second(session_server):
    pass

async def test_failing_body_leaks_too():
    asyncio.create_task(hang(asyncio.Event()), name="left-by-a-failing-body")
    assert False, "the body's own failure"
"""


def test_wider_fixtures_and_failing_bodies_are_not_blamed_on_fixtures(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(WIDER_FIXTURES)
    result = run_releasing(pytester, monkeypatch)
    # The session fixture's thread outlives each test by design; the failing body's task is
    # its own business (its failure says more), not a fixture's.
    result.assert_outcomes(passed=2, failed=1)
    assert "by a fixture" not in result.stdout.str()
