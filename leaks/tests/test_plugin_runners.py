"""The plugin under each way of running a test: unittest cases, aiohttp's loop fixture, anyio
on asyncio and on trio, a coroutine runner that is not asyncio at all. In each, a leak is
reported and what the test's own teardown cleans up is not."""

from __future__ import annotations

import sys
from collections.abc import Callable

import pytest

# The `run` and `run_releasing` fixtures of conftest.py.
Run = Callable[..., pytest.RunResult]


UNITTEST_CASES = """
import asyncio, threading, unittest
import leak_release

async def hang(event):
    await event.wait()

class Keepalive(unittest.IsolatedAsyncioTestCase):
    # Like websockets' tests: a keepalive task started by the test, stopped in asyncTearDown.
    async def asyncSetUp(self):
        self.stop = asyncio.Event()

    async def test_keepalive_stopped_in_teardown(self):
        self.task = asyncio.create_task(hang(self.stop), name="keepalive")

    async def asyncTearDown(self):
        self.stop.set()
        await self.task

class Leaky(unittest.IsolatedAsyncioTestCase):
    async def test_forgets_a_task(self):
        asyncio.create_task(hang(asyncio.Event()), name="unittest-leak")

    def test_sync_method_leaks_nothing(self):
        pass

class Threads(unittest.TestCase):
    def setUp(self):
        self.stop = threading.Event()

    def test_pinger_stopped_in_teardown(self):
        self.thread = threading.Thread(target=self.stop.wait, name="pinger")
        self.thread.start()

    def tearDown(self):
        self.stop.set()
        self.thread.join()

class LeakyThreads(unittest.TestCase):
    def test_thread_left_running(self):
        threading.Thread(target=leak_release.event.wait, name="unittest-thread").start()
"""


def test_unittest_cases_are_checked_after_their_teardown(
    pytester: pytest.Pytester, run_releasing: Run
) -> None:
    pytester.makepyfile(UNITTEST_CASES)
    result = run_releasing()
    result.assert_outcomes(passed=5, errors=2)
    result.stdout.fnmatch_lines_random(
        [
            "*ERROR at teardown of Leaky.test_forgets_a_task*",
            "*task unittest-leak [[]asyncio.Event.wait, *[]]:*",
            "*started by the test body: task unittest-leak",
            "*ERROR at teardown of LeakyThreads.test_thread_left_running*",
            "*thread unittest-thread [[]threading.Event.wait, *[]]:*",
        ]
    )
    for name in ("keepalive", "pinger"):
        assert f"{name} [" not in result.stdout.str()


AIOHTTP_LOOP_FIXTURE = """
import asyncio
import pytest
from aiohttp import web

pytest_plugins = ["aiohttp.pytest_plugin"]

async def hang(event):
    await event.wait()

async def keep_alive(request):
    return web.Response(text="ok")

async def test_client_fixture_closes_the_keepalive_handler(aiohttp_client):
    app = web.Application()
    app.router.add_get("/", keep_alive)
    client = await aiohttp_client(app)
    response = await client.get("/")
    assert await response.text() == "ok"

async def test_forgotten_task(aiohttp_client):
    task = asyncio.create_task(hang(asyncio.Event()), name="aiohttp-test-leak")
    # aiohttp closes its loop without cancelling what is left: spare the outer run asyncio's
    # "Task was destroyed but it is pending!" when this one is collected.
    task._log_destroy_pending = False
"""


def test_aiohttp_fixtures_close_their_handlers_before_the_check(
    pytester: pytest.Pytester, run_releasing: Run
) -> None:
    pytest.importorskip("aiohttp")
    pytester.makepyfile(AIOHTTP_LOOP_FIXTURE)
    # aiohttp's own plugin runs these on its `loop` fixture, not pytest-asyncio.
    result = run_releasing("-p", "no:asyncio")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*test_forgotten_task[[]*[]] leaked: task aiohttp-test-leak*"])
    assert "RequestHandler" not in result.stdout.str()


ANYIO_TESTS = """
import threading
import pytest
import anyio
import leak_release

pytestmark = pytest.mark.anyio

@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request):
    return request.param

async def test_to_thread_leaves_an_idle_worker(anyio_backend):
    assert await anyio.to_thread.run_sync(sum, [1, 2]) == 3

async def test_task_group(anyio_backend):
    async with anyio.create_task_group() as group:
        group.start_soon(anyio.sleep, 0)

async def test_thread_left_running(anyio_backend):
    threading.Thread(target=leak_release.event.wait, name=f"left-on-{anyio_backend}").start()
"""


def test_anyio_on_asyncio_and_trio(pytester: pytest.Pytester, run_releasing: Run) -> None:
    pytest.importorskip("anyio")
    pytest.importorskip("trio")
    pytester.makepyfile(ANYIO_TESTS)
    result = run_releasing("-p", "no:asyncio")
    # Idle pool workers of both backends are not leaks; a trio test is not crashed and its
    # threads are checked.
    result.assert_outcomes(passed=6, errors=2)
    result.stdout.fnmatch_lines_random(
        [
            "*test_thread_left_running[[]asyncio[]] leaked: thread left-on-asyncio*",
            "*test_thread_left_running[[]trio[]] leaked: thread left-on-trio*",
        ]
    )
    assert "unrecognized yield message" not in result.stdout.str()
    assert "worker thread" not in result.stdout.str()


PYTEST_TRIO_TESTS = """
import threading
import pytest, trio
import leak_release

@pytest.mark.trio
async def test_to_thread_leaves_an_idle_worker():
    assert await trio.to_thread.run_sync(sum, [1, 2]) == 3

@pytest.fixture
async def background():
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.sleep_forever)
        yield
        nursery.cancel_scope.cancel()

@pytest.mark.trio
async def test_with_a_nursery_fixture(background):
    await trio.sleep(0)

@pytest.mark.trio
async def test_thread_left_running():
    threading.Thread(target=leak_release.event.wait, name="left-by-trio").start()
"""


def test_pytest_trio_tests_get_their_threads_checked(
    pytester: pytest.Pytester, run_releasing: Run
) -> None:
    pytest.importorskip("pytest_trio")
    pytester.makepyfile(PYTEST_TRIO_TESTS)
    result = run_releasing("-p", "no:asyncio")
    result.assert_outcomes(passed=3, errors=1)
    result.stdout.fnmatch_lines(["*test_thread_left_running leaked: thread left-by-trio*"])
    assert "unrecognized yield message" not in result.stdout.str()


FOREIGN_RUNNER_CONFTEST = """
import inspect, pytest

@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    # A coroutine runner that is not asyncio: it accepts nothing but its own yields, as trio
    # rejects asyncio's ("received unrecognized yield message").
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    args = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    coro = pyfuncitem.obj(**args)
    try:
        while True:
            message = coro.send(None)
            assert message == "foreign", f"unrecognized yield message {message!r}"
    except StopIteration:
        return True
"""

FOREIGN_TESTS = """
import threading, types
import leak_release

@types.coroutine
def checkpoint():
    yield "foreign"

async def test_clean():
    await checkpoint()

async def test_leaks_a_thread():
    await checkpoint()
    threading.Thread(target=leak_release.event.wait, name="foreign-thread").start()
"""


def test_a_runner_other_than_asyncio_gets_threads_checked_and_is_never_awaited_into(
    pytester: pytest.Pytester, run_releasing: Run
) -> None:
    pytester.makeconftest(FOREIGN_RUNNER_CONFTEST)
    pytester.makepyfile(FOREIGN_TESTS)
    result = run_releasing("-p", "no:asyncio")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*test_leaks_a_thread leaked: thread foreign-thread*"])


EAGER = """
import asyncio, pytest

def eager_loop():
    loop = asyncio.SelectorEventLoop()
    loop.set_task_factory(asyncio.eager_task_factory)
    return loop

@pytest.fixture
def event_loop_policy():
    class Policy(asyncio.DefaultEventLoopPolicy):
        def new_event_loop(self):
            return eager_loop()
    return Policy()

async def hang(event):
    await event.wait()

async def test_factory_is_still_eager():
    factory = asyncio.get_running_loop().get_task_factory()
    # How anyio recognises an eager factory.
    assert factory.__code__ is asyncio.eager_task_factory.__code__
    ran = []
    async def first_step():
        ran.append(True)
    task = asyncio.create_task(first_step())
    assert ran and task.done()  # eager: it ran to completion inside create_task

async def test_eager_leak_is_reported():
    asyncio.create_task(hang(asyncio.Event()), name="eager-leak")
"""


@pytest.mark.skipif(sys.version_info < (3, 12), reason="eager task factories are 3.12+")
def test_an_eager_task_factory_stays_eager_and_its_tasks_are_tracked(
    pytester: pytest.Pytester, run_releasing: Run
) -> None:
    pytester.makepyfile(EAGER)
    result = run_releasing("-W", "ignore::DeprecationWarning")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*test_eager_leak_is_reported leaked: task eager-leak*"])
