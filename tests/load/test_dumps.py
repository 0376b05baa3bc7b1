"""The dump parsers on real captured text, and the diff that names what grew.

`data/go1.19-*` are what `data/leaky_go_service.go` (the incident in Go: a handler that gives
up after 50 ms on an unbuffered channel) served at /debug/pprof/goroutine under go1.19,
before and after five /broadcast requests. `data/tidegate-*` are a gateway's
/debug/tasks?debug=1 and /_stack before and after three slow broadcasts through the
incident's leaky handler (as `examples.incident_replay` runs it).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tidegate import leaks
from tidegate.load.dumps import DumpError, Frame, grown, parse_dump

DATA = Path(__file__).parent / "data"


def read(name: str) -> str:
    return (DATA / name).read_text()


def test_go_grouped_dump() -> None:
    dump = parse_dump(read("go1.19-debug1-after.txt"))
    assert dump.format == "go-1"
    assert dump.total() == 8  # "goroutine profile: total 8"
    assert [g.count for g in dump.groups] == [5, 1, 1, 1]
    leaked = dump.groups[0]
    assert leaked.kind == "goroutine" and leaked.state == "" and leaked.created_by is None
    assert leaked.frames == (Frame("main.broadcastWorker", "/tmp/issue11-go/main.go:23"),)
    assert leaked.blocking == leaked.frames[0]
    server = dump.groups[2]
    assert server.frames[0] == Frame(
        "internal/poll.runtime_pollWait", "/usr/lib/go-1.19/src/runtime/netpoll.go:305"
    )
    assert server.frames[-1] == Frame("runtime.main", "/usr/lib/go-1.19/src/runtime/proc.go:250")
    # The innermost frame outside the runtime and the standard library.
    assert server.blocking == Frame("main.main", "/tmp/issue11-go/main.go:47")
    assert dump.groups[3].frames == ()  # "1 @ 0x46b181": a goroutine with no frame shown


def test_go_grouped_diff_names_the_leaked_send() -> None:
    before = parse_dump(read("go1.19-debug1-before.txt"))
    after = parse_dump(read("go1.19-debug1-after.txt"))
    assert before.total() == 3
    growth = grown(before, after)
    assert [(g.before, g.after) for g in growth] == [(0, 5), (0, 1)]
    assert growth[0].group.blocking == Frame("main.broadcastWorker", "/tmp/issue11-go/main.go:23")
    assert growth[0].delta == 5


def test_go_full_dump_is_folded_with_state_and_creator() -> None:
    dump = parse_dump(read("go1.19-debug2-after.txt"))
    assert dump.format == "go-2"
    assert dump.total() == 8
    leaked = dump.groups[0]
    assert (leaked.count, leaked.state) == (5, "chan send")
    assert leaked.frames == (Frame("main.broadcastWorker", "/tmp/issue11-go/main.go:23"),)
    assert leaked.created_by == "main.handleBroadcast at /tmp/issue11-go/main.go:28"
    states = {g.state for g in dump.groups}
    assert states == {"chan send", "running", "IO wait"}
    main = next(g for g in dump.groups if g.blocking and g.blocking.function == "main.main")
    assert main.frames[3] == Frame(
        "internal/poll.(*FD).Accept", "/usr/lib/go-1.19/src/internal/poll/fd_unix.go:614"
    )
    assert main.frames[-3] == Frame(
        "net/http.(*Server).Serve", "/usr/lib/go-1.19/src/net/http/server.go:3070"
    )


def test_go_full_dump_newer_creator_line_and_minutes() -> None:
    text = (
        "goroutine 7 [chan send, 12 minutes]:\n"
        "example.com/svc/push.(*Hub).worker(0xc0000a2000)\n"
        "\t/src/push/hub.go:88 +0x3a\n"
        "created by example.com/svc/push.(*Hub).Broadcast in goroutine 6\n"
        "\t/src/push/hub.go:70 +0x110\n"
    )
    (group,) = parse_dump(text).groups
    assert group.state == "chan send"
    assert group.blocking == Frame("example.com/svc/push.(*Hub).worker", "/src/push/hub.go:88")
    assert group.created_by == "example.com/svc/push.(*Hub).Broadcast at /src/push/hub.go:70"


def test_tidegate_grouped_dump_byte_for_byte() -> None:
    dump = parse_dump(read("tidegate-debug1-after.txt"))
    assert dump.format == "tidegate-1"
    assert (dump.total("task"), dump.total("thread")) == (8, 3)  # "total: 8 tasks, 3 threads"
    leaked = dump.groups[0]
    assert (leaked.kind, leaked.count) == ("task", 3)
    assert leaked.state == "asyncio.Queue.join (1 unfinished)"
    assert leaked.frames[0] == Frame(
        "broadcast_worker",
        "/work/wt/issue-11/examples/leaks/incident.py:60",
        "await done.send(outcome)  # LEAK: blocks forever once the handler has timed out",
    )
    assert len(leaked.frames) == 4
    assert leaked.created_by == (
        "handle_broadcast_leaky at /work/wt/issue-11/examples/leaks/incident.py:49"
    )
    # Innermost outside the standard library (the asyncio frames below it are skipped).
    assert leaked.blocking is not None
    assert leaked.blocking.location == "/work/wt/issue-11/examples/leaks/chan.py:55"
    # Installed packages are skipped too when code of the project's own is on the stack...
    watchdog = next(g for g in dump.groups if "asyncio.sleep" in g.state)
    assert watchdog.blocking is not None and watchdog.blocking.function == "Watchdog._tick"
    # ...and named when nothing else is.
    handler = next(g for g in dump.groups if g.state.startswith("asyncio.Task"))
    assert handler.blocking is not None and handler.blocking.function == "RequestHandler.start"


def test_tidegate_diff_shows_the_leaked_workers_only() -> None:
    before = parse_dump(read("tidegate-debug1-before.txt"))
    after = parse_dump(read("tidegate-debug1-after.txt"))
    growth = grown(before, after)
    assert growth[0].group.frames[0].function == "broadcast_worker"
    assert (growth[0].before, growth[0].after) == (0, 3)
    # The capture script's own fetch (a to_thread call) also appeared between the two looks.
    assert all(g.delta == 1 for g in growth[1:])


def test_tidegate_full_dump_folds_like_the_grouped_one() -> None:
    text = read("tidegate-debug2-after.txt")
    full = parse_dump(text)
    grouped = parse_dump(read("tidegate-debug1-after.txt"))
    assert full.format == "tidegate-2"
    entries = [line for line in text.splitlines() if line.startswith(("task ", "thread "))]
    assert full.total() == len(entries) == 12  # one executor thread more than a moment before
    leaked = full.groups[0]
    # The per-entry wait time ("0.0s") is not part of the state, so the three fold.
    assert (leaked.count, leaked.state) == (3, "asyncio.Queue.join (1 unfinished)")
    assert leaked.key == grouped.groups[0].key


def test_grown_merges_groups_that_differ_only_in_state() -> None:
    def dump(*counts: tuple[int, int]) -> str:
        head = f"total: {sum(c for pair in counts for c in pair)} tasks, 0 threads\n"
        blocks = [
            f"{count} tasks [asyncio.Queue.join ({n} unfinished)]:\n  /app/w.py:3 in work\n"
            for n, count in counts
            if count
        ]
        return head + "\n" + "\n".join(blocks)

    before = parse_dump(dump((1, 2), (2, 0)))
    after = parse_dump(dump((1, 1), (2, 3)))
    (growth,) = grown(before, after)
    assert (growth.before, growth.after) == (2, 4)
    assert grown(after, before) == []


def proven_record(n: int) -> leaks.Leak:
    frame = leaks.Frame("/app/worker.py", 60, "broadcast_worker", "app.worker")
    return leaks.Leak(
        kind="task",
        name=f"worker-{n}",
        ident=n,
        state="pending",
        frames=(frame,),
        created_at="handle at /app/handler.py:49",
        blocked_on="asyncio.Event.wait",
        blocked_for=2.0,
        verdict="proven",
    )


def test_dumps_written_after_a_proof_parse() -> None:
    """The detector's own writers: a grouped dump whose totals count proven tasks, and the
    answer of /debug/tasks/leaked, whose first block says what the proof cost."""
    records = [proven_record(n) for n in range(3)]
    grouped = parse_dump(leaks.format_grouped(records))
    assert grouped.format == "tidegate-1" and grouped.total("task") == 3
    (group,) = grouped.groups
    assert group.state == "asyncio.Event.wait, proven" and group.count == 3
    assert group.created_by == "handle at /app/handler.py:49"
    assert leaks.format_grouped(records).startswith(
        "total: 3 tasks (3 proven blocked forever), 0 threads\n"
    )
    for line in ("total: 1 task proven blocked forever", "total: 0 tasks proven blocked forever"):
        assert parse_dump(line + "\nproof 1: 0.4 ms, 0.0s ago\n").groups == ()
    gone = (
        "total: 1 task proven blocked forever\nof which 1 destroyed by the garbage collector"
        " while pending: gone, shown as read just before\nproof 2: 0.5 ms, 0.0s ago\n\n"
        "1 task [Future, destroyed by the garbage collector, proven]:\n  /app/w.py:3 in work\n"
    )
    (destroyed,) = parse_dump(gone).groups
    assert destroyed.state == "Future, destroyed by the garbage collector, proven"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "not a stack dump"),
        ("<html>nope</html>", "not a stack dump"),
        ("42", "not a stack dump"),
        ("total: 1 tasks, 0 threads\n\nbogus header\n", "group header"),
        ("total: 1 tasks, 0 threads\n\n1 task [x]:\n  no location here\n", "unexpected line"),
        ("goroutine profile: total 1\n1 @ 0x1\n#\tgarbage\n", "Go debug=1"),
        ("goroutine 1 [running]:\nmain.main()\n", "file:line"),
    ],
)
def test_not_a_dump_is_a_clear_error(text: str, message: str) -> None:
    with pytest.raises(DumpError, match=message):
        parse_dump(text)
