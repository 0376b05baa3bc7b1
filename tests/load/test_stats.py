"""Latency histograms (within 1% of the exact quantile, mergeable) and tallies."""

from __future__ import annotations

import math
import random

from tidegate.load.stats import LatencyHistogram, Tally


def exact(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def test_quantiles_within_one_percent() -> None:
    rng = random.Random(3)
    values = [rng.lognormvariate(6, 1.5) for _ in range(20_000)]  # microseconds
    histogram = LatencyHistogram()
    for value in values:
        histogram.add(value)
    for q in (0.5, 0.9, 0.99):
        got = histogram.quantile_ms(q)
        assert got is not None
        want = exact(values, q) / 1000
        assert want <= got <= want * 1.0101, (q, got, want)
    assert histogram.summary_ms()["max"] == round(max(values) / 1000, 3)


def test_empty_histogram_has_no_quantiles() -> None:
    assert LatencyHistogram().summary_ms() == {"p50": None, "p90": None, "p99": None, "max": None}


def test_merged_parts_equal_the_whole() -> None:
    rng = random.Random(5)
    values = [rng.uniform(10, 10_000) for _ in range(3000)]
    whole, left, right = LatencyHistogram(), LatencyHistogram(), LatencyHistogram()
    for i, value in enumerate(values):
        whole.add(value)
        (left if i % 2 else right).add(value)
    merged = LatencyHistogram.from_json(left.to_json())
    merged.merge(LatencyHistogram.from_json(right.to_json()))
    assert merged.summary_ms() == whole.summary_ms()
    assert merged.count == 3000


def test_tally_merge_and_json() -> None:
    one = Tally(healthy=2, expected=10, delivered=9, duplicates=1)
    one.cut["idle_timeout"] += 1
    one.count_fault("vanish", "clients", 2)
    one.count_fault("vanish", "ended_by_server:idle_timeout")
    one.latency.add(1500)
    two = Tally.from_json(one.to_json())
    assert two.to_json() == one.to_json()
    two.merge(one)
    assert (two.healthy, two.expected, two.delivered, two.lost) == (4, 20, 18, 2)
    assert two.faults["vanish"] == {"clients": 4, "ended_by_server:idle_timeout": 2}
    assert two.cut == {"idle_timeout": 2} and two.latency.count == 2
