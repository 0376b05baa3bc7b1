"""The verdict and the report, from samples and dumps given by hand."""

from __future__ import annotations

import itertools
from pathlib import Path

from tidegate.load.dumps import grown, parse_dump, parse_proven
from tidegate.load.stats import Tally
from tidegate.load.verdict import Report, Sample, above_baseline, backoff_delays, format_summary

DATA = Path(__file__).parent / "data"
BASE = Sample(0.0, "baseline", tasks=5, threads=2, fds=20, connections=0, rss=50 << 20)


def test_above_baseline_names_each_gauge_still_up() -> None:
    later = Sample(9.0, "drain", tasks=8, threads=2, fds=19, connections=1, rss=90 << 20)
    assert above_baseline(BASE, later) == {"tasks": (5, 8), "connections": (0, 1)}
    # RSS is never judged; gauges a server does not expose are skipped.
    assert above_baseline(BASE, Sample(1.0, "drain", tasks=5, rss=1 << 30)) == {}


def test_backoff_doubles_to_its_cap() -> None:
    delays = list(itertools.islice(backoff_delays(0.05, 1.0), 7))
    assert delays == [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0]


def report(final: Sample, settled: float | None, **fields: object) -> Report:
    samples = [
        BASE,
        Sample(2.0, "load", tasks=9, threads=3, fds=80, connections=50, rss=60 << 20),
        final,
    ]
    return Report(
        target={"stack_url": "http://127.0.0.1:1/debug/tasks?debug=1"},
        settings={},
        baseline=BASE,
        final=final,
        samples=samples,
        phases=[("baseline", 0.0), ("load", 1.0), ("drain", 3.0)],
        drain_seconds=10.0,
        settled_after=settled,
        **fields,  # type: ignore[arg-type]
    )


def test_no_leak_report() -> None:
    tally = Tally(healthy=40, expected=1000, delivered=1000)
    tally.latency.add(800)
    final = Sample(4.0, "drain", tasks=5, threads=2, fds=20, connections=0, rss=55 << 20)
    done = report(final, 0.25, sent=300, delivered=1000, tally=tally, latency=tally.latency)
    document = done.to_json()
    assert document["verdict"] == "NO LEAK"
    assert document["tasks"] == {"before": 5, "peak": 9, "after": 5}
    assert document["connections"] == {"before": 0, "peak": 50, "after": 0}
    assert document["latency_ms"]["p50"] == document["latency_ms"]["max"] == 0.8
    assert document["grew"] == [] and document["drain"]["settled_after_seconds"] == 0.25
    for key in ("sent", "delivered", "lost", "duplicates", "threads", "fds", "rss_bytes"):
        assert key in document
    text = format_summary(done)
    assert "NO LEAK: back at the baseline 0.25s into the drain" in text
    assert "delivered 1000 of 1000 expected to 40 healthy clients: lost 0" in text


def test_leak_report_shows_what_grew_with_its_line() -> None:
    before = parse_dump((DATA / "tidegate-debug1-before.txt").read_text())
    after = parse_dump((DATA / "tidegate-debug1-after.txt").read_text())
    final = Sample(14.0, "drain", tasks=8, threads=3, fds=20, connections=0, rss=55 << 20)
    leaked = report(final, None, grew=grown(before, after))
    document = leaked.to_json()
    assert document["verdict"] == "LEAK"
    first = document["grew"][0]
    assert (first["kind"], first["before"], first["after"]) == ("task", 0, 3)
    assert first["blocking"].endswith("examples/leaks/chan.py:55 in Unbuffered.send")
    assert first["created_by"].startswith("handle_broadcast_leaky at ")
    assert first["stack"][0].endswith("incident.py:60 in broadcast_worker")
    text = format_summary(leaked)
    assert (
        "LEAK: still above the baseline after the 10.0s drain: tasks 5 -> 8, threads 2 -> 3" in text
    )
    assert "+3 tasks (0 -> 3) [asyncio.Queue.join (1 unfinished)]" in text
    assert "await done.send(outcome)  # LEAK" in text


def test_proven_leaks_are_reported_beside_the_verdict() -> None:
    proven = parse_proven((DATA / "tidegate-leaked.txt").read_text())
    none = parse_proven(
        "total: 0 tasks proven blocked forever\nnone: no task waits on something that only"
        " blocked tasks can reach\nproof 1: 0.9 ms, 0.0s ago, over 4 tasks (2 suspended, 60"
        " objects); shared for 1.0s\n"
    )
    assert (none.count, none.groups) == (0, ())
    final = Sample(4.0, "drain", tasks=5, threads=2, fds=20, connections=0, rss=55 << 20)
    done = report(final, 0.25, proven_before=none, proven=proven)
    document = done.to_json()
    assert document["verdict"] == "NO LEAK"  # reported beside the verdict, never instead
    assert (document["proven"]["before"], document["proven"]["after"]) == (0, 40)
    assert document["proven"]["proof"].startswith("proof 1: 3.8 ms")
    (group,) = document["proven"]["groups"]
    assert (group["count"], group["state"]) == (40, "asyncio.Queue.join (1 unfinished), proven")
    assert group["blocking"].endswith("examples/leaks/chan.py:55 in Unbuffered.send")
    assert group["created_by"].startswith("handle_broadcast_leaky at ")
    text = format_summary(done)
    assert (
        "proven blocked forever (/debug/tasks/leaked, no baseline needed): 40 tasks"
        " (0 before the load)" in text
    )
    assert "40 tasks [asyncio.Queue.join (1 unfinished), proven]" in text
    assert "await done.send(outcome)" in text
    # A server without the route: the report says nothing of proofs.
    plain = report(final, 0.25)
    assert "proven" not in plain.to_json() and "proven" not in format_summary(plain)
