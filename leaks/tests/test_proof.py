"""The proof of leak: what ``find(prove=True)`` and ``check()`` prove, and what they must
never prove, each case on asyncio and on uvloop.

Every case starts named tasks on a fresh loop inside a ``check()`` scope (which keeps them
alive, as the detector does for real), lets them park, asks for the verdicts, then releases
or cancels everything so the scope ends clean. Tasks park on events, locks and futures;
nothing sleeps for time.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import socket
import sys
import threading
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tidegate import leaks
from tidegate.leaks import _proof

Release = Callable[[], Awaitable[None]]
Verdicts = dict[str, leaks.Verdict | None]
Scenario = Callable[[], Awaitable[Release | None]]

LOOPS = [pytest.param(asyncio.new_event_loop, id="asyncio")]
try:
    import uvloop

    LOOPS.append(pytest.param(uvloop.new_event_loop, id="uvloop"))
except ImportError:  # pragma: no cover - the detector's distribution alone has no uvloop
    pass

SHORT = 0.5


async def settle() -> None:
    """Let every other task run until it parks (or a bound of rounds, for the ones that
    never park): each round gives every runnable task one step."""
    me = asyncio.current_task()
    for _ in range(50):
        await asyncio.sleep(0)
        if all(_parked(task) for task in asyncio.all_tasks() if task is not me):
            return


def _parked(task: asyncio.Task[Any]) -> bool:
    return task.done() or getattr(task, "_fut_waiter", None) is not None


def verdicts_on(new_loop: Callable[[], asyncio.AbstractEventLoop], scenario: Scenario) -> Any:
    """Run ``scenario`` on a fresh loop; the verdict of each task it started, by name."""

    async def main() -> Verdicts:
        async with leaks.check(timeout=SHORT):
            release = await scenario()
            await settle()
            found = leaks.find(prove=True, threads=False)
            verdicts = {leak.name: leak.verdict for leak in found}
            if release is not None:
                await release()
            await leaks.cancel_tasks(found)
        return verdicts

    with asyncio.Runner(loop_factory=new_loop) as runner:
        return runner.run(main())


async def wait_for_event(event: asyncio.Event) -> None:
    await event.wait()


# --- must never be proven: something that can run can still wake them ------------------

HELD: Any = None


async def event_in_a_module_global() -> Release:
    global HELD
    HELD = asyncio.Event()
    asyncio.create_task(wait_for_event(HELD), name="waiter")

    async def release() -> None:
        global HELD
        HELD = None

    return release


async def spin(queue: asyncio.Queue[int]) -> None:
    while True:  # noqa: ASYNC110 - runnable at every instant, and it holds the queue
        await asyncio.sleep(0)


async def take(queue: asyncio.Queue[int]) -> None:
    await queue.get()


async def queue_held_by_a_runnable_producer() -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()
    asyncio.create_task(take(queue), name="waiter")
    asyncio.create_task(spin(queue), name="producer")


async def event_held_by_a_thread() -> Release:
    event = asyncio.Event()
    loop = asyncio.get_running_loop()
    gate = threading.Event()

    def setter() -> None:  # its running frame holds the event, through the closure
        gate.wait()
        loop.call_soon_threadsafe(event.set)

    thread = threading.Thread(target=setter, name="setter")
    thread.start()
    asyncio.create_task(wait_for_event(event), name="waiter")

    async def release() -> None:
        gate.set()
        await asyncio.to_thread(thread.join)

    return release


async def event_set_by_a_call_later() -> Release:
    event = asyncio.Event()
    timer = asyncio.get_running_loop().call_later(3600, event.set)
    asyncio.create_task(wait_for_event(event), name="waiter")

    async def release() -> None:
        timer.cancel()

    return release


async def event_in_a_closure_on_a_timer() -> Release:
    event = asyncio.Event()
    timer = asyncio.get_running_loop().call_later(3600, lambda: event.set())
    asyncio.create_task(wait_for_event(event), name="waiter")

    async def release() -> None:
        timer.cancel()

    return release


async def event_in_a_closure_of_a_pending_reader() -> Release:
    event = asyncio.Event()
    loop = asyncio.get_running_loop()
    quiet, other = socket.socketpair()  # nothing is ever written: the callback stays pending
    loop.add_reader(quiet.fileno(), lambda: event.set())
    asyncio.create_task(wait_for_event(event), name="waiter")

    async def release() -> None:
        loop.remove_reader(quiet.fileno())
        quiet.close()
        other.close()

    return release


class Doorbell(asyncio.Protocol):
    """A server-side protocol whose connection sets ``rung`` when the client writes."""

    def __init__(self) -> None:
        self.rung = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        asyncio.create_task(wait_for_event(self.rung), name="waiter")

    def data_received(self, data: bytes) -> None:
        self.rung.set()


async def event_held_by_a_live_connection() -> Release:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Doorbell, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    _, writer = await asyncio.open_connection("127.0.0.1", port)

    async def release() -> None:
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()

    return release


async def read_until_hang_up(
    finished: asyncio.Future[None], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    asyncio.current_task().set_name("reader")  # type: ignore[union-attr]
    await reader.read()
    writer.close()
    await writer.wait_closed()
    finished.set_result(None)


async def stream_reader_of_an_open_connection() -> Release:
    finished = asyncio.get_running_loop().create_future()
    server = await asyncio.start_server(
        functools.partial(read_until_hang_up, finished), "127.0.0.1", 0
    )
    port = server.sockets[0].getsockname()[1]
    _, writer = await asyncio.open_connection("127.0.0.1", port)

    async def release() -> None:
        writer.close()
        await writer.wait_closed()
        await finished  # the reader sees the hang-up and ends on its own
        server.close()
        await server.wait_closed()

    return release


ROOMS: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
BY_NAME: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()


async def event_keying_a_weak_registry() -> Release:
    event = asyncio.Event()
    ROOMS[event] = "lobby"
    asyncio.create_task(wait_for_event(event), name="waiter")

    async def release() -> None:
        ROOMS.clear()

    return release


async def event_in_a_weak_value_registry() -> Release:
    event = asyncio.Event()
    BY_NAME["lobby"] = event  # BY_NAME["lobby"].set() can still wake it
    asyncio.create_task(wait_for_event(event), name="waiter")

    async def release() -> None:
        BY_NAME.clear()

    return release


BACKGROUND: set[asyncio.Task[Any]] = set()
TASK_REF: Any = None


async def task_in_a_module_global_set() -> Release:
    task = asyncio.create_task(wait_for_event(asyncio.Event()), name="waiter")
    BACKGROUND.add(task)  # asyncio's fire-and-forget idiom: anyone can cancel it through here
    task.add_done_callback(BACKGROUND.discard)

    async def release() -> None:
        BACKGROUND.clear()

    return release


async def task_weakly_referenced_from_a_global() -> Release:
    global TASK_REF
    TASK_REF = weakref.ref(asyncio.create_task(wait_for_event(asyncio.Event()), name="waiter"))

    async def release() -> None:
        global TASK_REF
        TASK_REF = None

    return release


async def wait_under_timeout(event: asyncio.Event) -> None:
    async with asyncio.timeout(3600):
        await event.wait()


async def wait_under_a_timeout() -> None:
    asyncio.create_task(wait_under_timeout(asyncio.Event()), name="waiter")


async def wait_in_executor(gate: threading.Event) -> None:
    await asyncio.get_running_loop().run_in_executor(None, gate.wait)


async def job_in_an_executor() -> Release:
    gate = threading.Event()
    asyncio.create_task(wait_in_executor(gate), name="waiter")

    async def release() -> None:
        gate.set()

    return release


NEVER_PROVEN = {
    "event in a module global": (event_in_a_module_global, {"waiter": "suspected"}),
    "queue held by a runnable producer": (
        queue_held_by_a_runnable_producer,
        {"waiter": "suspected", "producer": "running"},
    ),
    "event held by a thread": (event_held_by_a_thread, {"waiter": "suspected"}),
    "event set by a call_later": (event_set_by_a_call_later, {"waiter": "running"}),
    "event in a closure on a timer": (event_in_a_closure_on_a_timer, {"waiter": "suspected"}),
    "event in a closure of a pending reader callback": (
        event_in_a_closure_of_a_pending_reader,
        {"waiter": "suspected"},
    ),
    "event held by a live connection's protocol": (
        event_held_by_a_live_connection,
        {"waiter": "suspected"},
    ),
    "stream reader of an open connection": (
        stream_reader_of_an_open_connection,
        {"reader": "suspected"},
    ),
    "event keying a live WeakKeyDictionary": (
        event_keying_a_weak_registry,
        {"waiter": "suspected"},
    ),
    "event in a live WeakValueDictionary": (
        event_in_a_weak_value_registry,
        {"waiter": "suspected"},
    ),
    "task in a module-global set": (task_in_a_module_global_set, {"waiter": "suspected"}),
    "task weakly referenced from a global": (
        task_weakly_referenced_from_a_global,
        {"waiter": "suspected"},
    ),
    "wait under asyncio.timeout": (wait_under_a_timeout, {"waiter": "running"}),
    "job in an executor": (job_in_an_executor, {"waiter": "suspected"}),
}


@pytest.mark.parametrize("new_loop", LOOPS)
@pytest.mark.parametrize("case", list(NEVER_PROVEN))
def test_never_proven_while_something_can_wake_it(new_loop: Any, case: str) -> None:
    scenario, expected = NEVER_PROVEN[case]
    found = verdicts_on(new_loop, scenario)
    assert {name: found.get(name) for name in expected} == expected


# --- must be proven: nothing that can run reaches them -----------------------------------


async def await_own_future() -> None:
    await asyncio.get_running_loop().create_future()  # nobody else ever sees it


async def future_only_it_references() -> None:
    asyncio.create_task(await_own_future(), name="lonely")


async def take_both(first: asyncio.Lock, second: asyncio.Lock, mine: asyncio.Event) -> None:
    async with first:
        mine.set()
        await asyncio.sleep(0)  # the other task takes its first lock meanwhile
        async with second:
            pass


async def deadlock_on_two_locks() -> None:
    a, b = asyncio.Lock(), asyncio.Lock()
    asyncio.create_task(take_both(a, b, asyncio.Event()), name="holds-a")
    asyncio.create_task(take_both(b, a, asyncio.Event()), name="holds-b")


async def await_the_other(tasks: dict[str, asyncio.Task[None]], other: str) -> None:
    await asyncio.sleep(0)  # until both exist
    # asyncio.wait, not `await tasks[other]`: asyncio cannot cancel a cycle of tasks that
    # await each other directly (each cancel() cancels the other: RecursionError), so that
    # form could not be cleaned up after the test. It is proven just the same.
    await asyncio.wait([tasks[other]])


async def tasks_awaiting_each_other() -> None:
    tasks: dict[str, asyncio.Task[None]] = {}
    tasks["first"] = asyncio.create_task(await_the_other(tasks, "second"), name="first")
    tasks["second"] = asyncio.create_task(await_the_other(tasks, "first"), name="second")


async def pool_worker(jobs: asyncio.Queue[str]) -> None:
    while True:
        await jobs.get()


async def workers_on_a_queue_nobody_else_has() -> None:
    jobs: asyncio.Queue[str] = asyncio.Queue()
    for n in range(3):
        asyncio.create_task(pool_worker(jobs), name=f"worker-{n}")


async def group_of_stuck_children() -> None:
    stuck = asyncio.Event()
    async with asyncio.TaskGroup() as group:
        for n in range(2):
            group.create_task(wait_for_event(stuck), name=f"child-{n}")


async def task_group_whose_children_never_end() -> None:
    asyncio.create_task(group_of_stuck_children(), name="parent")


async def ticks(event: asyncio.Event) -> Any:
    while True:
        await event.wait()
        yield None


async def consume_ticks() -> None:
    async for _ in ticks(asyncio.Event()):
        pass


async def async_generator_on_a_private_event() -> None:
    asyncio.create_task(consume_ticks(), name="consumer")


async def hang_up_then_wait(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    asyncio.current_task().set_name("handler")  # type: ignore[union-attr]
    await reader.read()  # until the client hangs up
    writer.close()
    await writer.wait_closed()
    await asyncio.Event().wait()  # then forever, on something only it has


async def handler_of_a_closed_connection() -> Release:
    server = await asyncio.start_server(hang_up_then_wait, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.close()
    await writer.wait_closed()
    server.close()
    # On 3.12.1+ wait_closed() waits for the handlers too: leave it to the release.
    for _ in range(20):  # the server side sees the hang-up and closes its transport
        await asyncio.sleep(0)

    async def release() -> None:
        await server.wait_closed()

    return release


async def wait_holding_a_weak_handle() -> None:
    event = asyncio.Event()
    handle = weakref.ref(event)  # a weak reference, held by this frame alone
    await event.wait()
    assert handle() is event


async def event_weakly_referenced_only_by_its_waiter() -> None:
    asyncio.create_task(wait_holding_a_weak_handle(), name="waiter")


ALWAYS_PROVEN = {
    "future only it references": (future_only_it_references, {"lonely": "proven"}),
    "deadlock on two locks": (
        deadlock_on_two_locks,
        {"holds-a": "proven", "holds-b": "proven"},
    ),
    "tasks awaiting each other": (
        tasks_awaiting_each_other,
        {"first": "proven", "second": "proven"},
    ),
    "workers on a queue nobody else has": (
        workers_on_a_queue_nobody_else_has,
        {"worker-0": "proven", "worker-1": "proven", "worker-2": "proven"},
    ),
    "TaskGroup whose children never end": (
        task_group_whose_children_never_end,
        {"parent": "proven", "child-0": "proven", "child-1": "proven"},
    ),
    "async generator on a private event": (
        async_generator_on_a_private_event,
        {"consumer": "proven"},
    ),
    "handler of a closed connection": (handler_of_a_closed_connection, {"handler": "proven"}),
    "event weakly referenced only by its waiter": (
        event_weakly_referenced_only_by_its_waiter,
        {"waiter": "proven"},
    ),
}


@pytest.mark.parametrize("new_loop", LOOPS)
@pytest.mark.parametrize("case", list(ALWAYS_PROVEN))
def test_proven_when_nothing_that_runs_reaches_it(new_loop: Any, case: str) -> None:
    scenario, expected = ALWAYS_PROVEN[case]
    found = verdicts_on(new_loop, scenario)
    assert {name: found.get(name) for name in expected} == expected


# --- no flicker: proven once, proven for as long as it exists ----------------------------


async def take_both_logging(
    first: asyncio.Lock, second: asyncio.Lock, log: list[str], name: str
) -> None:
    async with first:
        await asyncio.sleep(0)  # the other task takes its first lock meanwhile
        try:
            async with second:
                log.append(f"{name} got both")
        finally:
            log.append(f"{name} ran its finally")


async def collect_after_deadlock(prove: bool) -> list[str]:
    """Deadlock two tasks nothing holds (no scope: a production process), maybe prove
    them, run a full collection, and say what ran."""
    log: list[str] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda loop, context: log.append(context["message"]))
    a, b = asyncio.Lock(), asyncio.Lock()
    asyncio.create_task(take_both_logging(a, b, log, "A"), name="A")
    asyncio.create_task(take_both_logging(b, a, log, "B"), name="B")
    del a, b
    await settle()
    if prove:
        verdicts = {leak.name: leak.verdict for leak in leaks.find(prove=True, threads=False)}
        assert verdicts == {"A": "proven", "B": "proven"}
    gc.collect()
    await settle()
    me = asyncio.current_task()
    pending = sorted(t.get_name() for t in asyncio.all_tasks() if t is not me)
    log.append(f"pending: {pending}")
    if prove:
        verdicts = {leak.name: leak.verdict for leak in leaks.find(threads=False)}
        log.append(f"still {verdicts['A']} and {verdicts['B']}")
        await leaks.cancel_tasks(leaks.find(threads=False))
    return log


# The unproven run leaves its deadlock to the collector on purpose: the plugin would report
# the two tasks it destroys as this test's leak (tests/test_destroyed.py).
@pytest.mark.leaks(ignore=[leaks.ignore_name("^[AB]$")])
@pytest.mark.parametrize("new_loop", LOOPS)
def test_a_proven_task_runs_no_code_until_cancelled(new_loop: Any) -> None:
    # Without the proof, the collector destroys the garbage deadlock and runs the tasks'
    # finally blocks in the middle of whatever allocated: code of "blocked forever" tasks
    # runs after all (Go's profile had such revived goroutines).
    with asyncio.Runner(loop_factory=new_loop) as runner:
        unproven = runner.run(collect_after_deadlock(prove=False))
    assert "A ran its finally" in unproven and "Task was destroyed but it is pending!" in unproven
    # Proven, they are kept: no collection destroys them and nothing of theirs runs.
    with asyncio.Runner(loop_factory=new_loop) as runner:
        proven = runner.run(collect_after_deadlock(prove=True))
    assert proven[:2] == ["pending: ['A', 'B']", "still proven and proven"]


async def prove_again_and_again() -> list[Verdicts]:
    seen: list[Verdicts] = []
    async with leaks.check(timeout=SHORT):
        await deadlock_on_two_locks()
        await settle()
        seen.append({leak.name: leak.verdict for leak in leaks.find(prove=True, threads=False)})
        gc.collect()  # a test may; the proof itself never does
        for _ in range(3):  # other work comes and goes
            await asyncio.gather(*(asyncio.create_task(asyncio.sleep(0)) for _ in range(20)))
            seen.append({r.name: r.verdict for r in leaks.find(prove=True, threads=False)})
        # A proof that gives up at once (the heap grew past its limit, say) still knows.
        tasks = [t for t in asyncio.all_tasks() if t.get_name().startswith("holds-")]
        seen.append(
            {t.get_name(): v for t, v in zip(tasks, _verdicts(tasks, limit=1), strict=True)}
        )
        del tasks
        seen.append({leak.name: leak.verdict for leak in leaks.find(threads=False)})  # no proof
        await leaks.cancel_tasks(leaks.find(threads=False))
    return seen


def _verdicts(tasks: list[asyncio.Task[Any]], *, limit: int) -> list[leaks.Verdict]:
    proof = _proof.prove(tasks, limit=limit)
    return [proof.verdict(task) for task in tasks]


@pytest.mark.parametrize("new_loop", LOOPS)
def test_proven_once_stays_proven(new_loop: Any) -> None:
    with asyncio.Runner(loop_factory=new_loop) as runner:
        seen = runner.run(prove_again_and_again())
    assert len(seen) == 6
    for verdicts in seen:
        assert verdicts == {"holds-a": "proven", "holds-b": "proven"}


async def prove_cancel_and_look_again() -> tuple[str | None, bool]:
    async with leaks.check(timeout=SHORT):
        await future_only_it_references()
        await settle()
        [record] = [r for r in leaks.find(prove=True, threads=False) if r.name == "lonely"]
        await leaks.cancel_tasks([record])
        leaks.find(threads=False)  # the next look lets the ended task go
    gc.collect()
    return record.verdict, record.target() is None


@pytest.mark.parametrize("new_loop", LOOPS)
def test_a_proven_task_is_let_go_once_it_ends(new_loop: Any) -> None:
    with asyncio.Runner(loop_factory=new_loop) as runner:
        verdict, gone = runner.run(prove_cancel_and_look_again())
    assert verdict == "proven" and gone


# --- the analysis changes nothing ----------------------------------------------------------


def _state(task: asyncio.Task[Any]) -> tuple[Any, ...]:
    callbacks = getattr(task, "_callbacks", None) or []
    return (task.done(), id(getattr(task, "_fut_waiter", None)), len(callbacks))


async def prove_and_compare() -> list[str]:
    differences = []
    async with leaks.check(timeout=SHORT):
        await deadlock_on_two_locks()  # proven: kept alive, one reference more
        release = await event_held_by_a_thread()  # suspected
        await settle()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        before = [(_state(t), sys.getrefcount(t)) for t in tasks]
        switch, collecting = sys.getswitchinterval(), gc.isenabled()
        proof = _proof.prove(tasks)
        after = [(_state(t), sys.getrefcount(t)) for t in tasks]
        for task, (state, count), (state_after, count_after) in zip(
            tasks, before, after, strict=True
        ):
            kept = 1 if proof.verdict(task) == "proven" else 0
            if state != state_after or count + kept != count_after:
                differences.append(task.get_name())
        if (switch, collecting) != (sys.getswitchinterval(), gc.isenabled()):
            differences.append("interpreter settings")
        del tasks, task
        await release()
        await leaks.cancel_tasks(leaks.find(threads=False))
    return differences


@pytest.mark.parametrize("new_loop", LOOPS)
def test_proving_wakes_cancels_and_changes_nothing(new_loop: Any) -> None:
    with asyncio.Runner(loop_factory=new_loop) as runner:
        assert runner.run(prove_and_compare()) == []


# --- where the counts cannot be trusted, nothing is proven ------------------------------------


def test_nothing_is_proven_where_reference_counts_are_not_exact(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_proof, "_refcounts_exact", lambda: False)  # free-threaded, PyPy
    found = verdicts_on(asyncio.new_event_loop, deadlock_on_two_locks)
    assert (found["holds-a"], found["holds-b"]) == ("suspected", "suspected")


@pytest.mark.parametrize("lie", ["hides a reference", "reports one twice"])
def test_a_traversal_that_lies_is_caught_before_anything_is_proven(
    monkeypatch: pytest.MonkeyPatch, lie: str
) -> None:
    honest = gc.get_referents

    def lying(*objects: Any) -> list[Any]:
        found = honest(*objects)
        return found[:-1] if lie == "hides a reference" else found + found[-1:]

    monkeypatch.setattr(_proof, "_checked", None)  # run the self-check again
    monkeypatch.setattr(gc, "get_referents", lying)
    try:
        trusted = _proof._accounting_checks_out()
    finally:
        monkeypatch.setattr(gc, "get_referents", honest)
    assert not trusted
    monkeypatch.setattr(_proof, "_checked", False)
    found = verdicts_on(asyncio.new_event_loop, future_only_it_references)
    assert found["lonely"] == "suspected"


# --- the size bound ------------------------------------------------------------------------


async def prove_with_a_tiny_limit() -> tuple[list[leaks.Verdict], bool]:
    async with leaks.check(timeout=SHORT):
        await workers_on_a_queue_nobody_else_has()
        await settle()
        tasks = [t for t in asyncio.all_tasks() if t.get_name().startswith("worker-")]
        proof = _proof.prove(tasks, limit=3)
        verdicts = [proof.verdict(task) for task in tasks]
        del tasks
        await leaks.cancel_tasks(leaks.find(threads=False))
    return verdicts, proof.complete


def test_past_the_size_limit_undecided_tasks_stay_suspected() -> None:
    with asyncio.Runner() as runner:
        verdicts, complete = runner.run(prove_with_a_tiny_limit())
    assert verdicts == ["suspected"] * 3 and not complete


# --- reports --------------------------------------------------------------------------------


async def leak_a_deadlock_and_a_waiter() -> leaks.LeakError:
    global HELD
    HELD = asyncio.Event()
    with pytest.raises(leaks.LeakError) as caught:
        async with leaks.check(timeout=SHORT):
            await deadlock_on_two_locks()
            asyncio.create_task(wait_for_event(HELD), name="waiter")
    await leaks.cancel_tasks(caught.value.leaks)
    HELD = None
    return caught.value


def test_check_reports_and_dumps_show_the_verdict() -> None:
    with asyncio.Runner() as runner:
        error = runner.run(leak_a_deadlock_and_a_waiter())
    verdicts = {leak.name: leak.verdict for leak in error.leaks}
    assert verdicts == {"holds-a": "proven", "holds-b": "proven", "waiter": "suspected"}
    report = str(error)
    assert "found 3 leaked task(s) (2 proven blocked forever)" in report
    assert "task holds-a [asyncio.Lock, " in report and ", proven]:" in report
    assert "task waiter [asyncio.Event.wait, " in report and ", suspected]:" in report
    grouped = leaks.format_grouped(error.leaks)
    assert grouped.startswith("total: 3 tasks (2 proven blocked forever), 0 threads\n")
    assert "\n1 task [asyncio.Event.wait, suspected]:\n" in grouped


async def explain_both() -> tuple[str, str]:
    global HELD
    async with leaks.check(timeout=SHORT):
        await future_only_it_references()
        HELD = asyncio.Event()
        asyncio.create_task(wait_for_event(HELD), name="waiter")
        await settle()
        records = {leak.name: leak for leak in leaks.find(threads=False)}
        why = _proof.explain(records["lonely"]), _proof.explain(records["waiter"])
        HELD = None
        await leaks.cancel_tasks(records.values())
    return why


def test_explain_names_what_keeps_a_suspected_task_reachable() -> None:
    with asyncio.Runner() as runner:
        lonely, waiter = runner.run(explain_both())
    assert lonely.startswith("proven")
    assert waiter.startswith("suspected: reachable from asyncio.locks.Event")
    assert f"module global {__name__}.HELD" in waiter
    assert waiter.endswith("-> task 'waiter'")
