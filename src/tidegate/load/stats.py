"""What the clients measured: deliveries and latencies, mergeable across processes. Pure."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = ["LatencyHistogram", "Tally"]

_RATIO: Final = 1.01  # bucket width: a quantile is within 1% of the true one
_LOG_RATIO: Final = math.log(_RATIO)


class LatencyHistogram:
    """Latencies in log-spaced buckets (1% wide, from 1 µs), so client processes can each
    keep one in constant memory and the main process adds them up."""

    __slots__ = ("buckets", "count", "max_us")

    def __init__(self) -> None:
        self.buckets: Counter[int] = Counter()
        self.count = 0
        self.max_us = 0.0

    def add(self, micros: float) -> None:
        micros = max(micros, 1.0)  # clocks of two processes: never below a microsecond
        self.buckets[int(math.log(micros) / _LOG_RATIO)] += 1
        self.count += 1
        if micros > self.max_us:
            self.max_us = micros

    def merge(self, other: LatencyHistogram) -> None:
        self.buckets.update(other.buckets)
        self.count += other.count
        self.max_us = max(self.max_us, other.max_us)

    def quantile_ms(self, q: float) -> float | None:
        """The ``q`` quantile (0..1) in milliseconds: the upper edge of its bucket, at most
        the maximum seen. None when empty."""
        if not self.count:
            return None
        rank = max(1, math.ceil(q * self.count))
        seen = 0
        for index in sorted(self.buckets):
            seen += self.buckets[index]
            if seen >= rank:
                return min(_RATIO ** (index + 1), self.max_us) / 1000
        return self.max_us / 1000  # pragma: no cover - rank <= count

    def summary_ms(self) -> dict[str, float | None]:
        def rounded(value: float | None) -> float | None:
            return None if value is None else round(value, 3)

        return {
            "p50": rounded(self.quantile_ms(0.50)),
            "p90": rounded(self.quantile_ms(0.90)),
            "p99": rounded(self.quantile_ms(0.99)),
            "max": rounded(self.max_us / 1000) if self.count else None,
        }

    def to_json(self) -> dict[str, Any]:
        return {"buckets": {str(k): v for k, v in self.buckets.items()}, "max_us": self.max_us}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> LatencyHistogram:
        histogram = cls()
        for key, value in obj["buckets"].items():
            histogram.buckets[int(key)] = int(value)
        histogram.count = sum(histogram.buckets.values())
        histogram.max_us = float(obj["max_us"])
        return histogram


@dataclass(slots=True)
class Tally:
    """One client process's account, added up by the main process.

    ``expected`` and ``delivered`` cover healthy clients only (no fault planned): what the
    plan says they should have got, and how many of those distinct pushes they got.
    ``cut`` counts healthy clients the server disconnected, by the error code it sent (or
    ``eof`` / ``reset``). ``faults`` counts, per fault kind, the clients and what became
    of them (e.g. ``{"vanish": {"clients": 5, "reaped": 5}}``).
    """

    healthy: int = 0
    expected: int = 0
    delivered: int = 0
    duplicates: int = 0
    wrong_target: int = 0
    received: int = 0  # msg frames received by every client, faulty ones included
    cut: Counter[str] = field(default_factory=Counter)
    faults: dict[str, Counter[str]] = field(default_factory=dict)
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)

    @property
    def lost(self) -> int:
        return self.expected - self.delivered

    def count_fault(self, fault: str, outcome: str, n: int = 1) -> None:
        self.faults.setdefault(fault, Counter())[outcome] += n

    def merge(self, other: Tally) -> None:
        self.healthy += other.healthy
        self.expected += other.expected
        self.delivered += other.delivered
        self.duplicates += other.duplicates
        self.wrong_target += other.wrong_target
        self.received += other.received
        self.cut.update(other.cut)
        for fault, outcomes in other.faults.items():
            self.faults.setdefault(fault, Counter()).update(outcomes)
        self.latency.merge(other.latency)

    def to_json(self) -> dict[str, Any]:
        return {
            "healthy": self.healthy,
            "expected": self.expected,
            "delivered": self.delivered,
            "duplicates": self.duplicates,
            "wrong_target": self.wrong_target,
            "received": self.received,
            "cut": dict(self.cut),
            "faults": {fault: dict(outcomes) for fault, outcomes in self.faults.items()},
            "latency": self.latency.to_json(),
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Tally:
        return cls(
            healthy=obj["healthy"],
            expected=obj["expected"],
            delivered=obj["delivered"],
            duplicates=obj["duplicates"],
            wrong_target=obj["wrong_target"],
            received=obj["received"],
            cut=Counter(obj["cut"]),
            faults={fault: Counter(outcomes) for fault, outcomes in obj["faults"].items()},
            latency=LatencyHistogram.from_json(obj["latency"]),
        )
