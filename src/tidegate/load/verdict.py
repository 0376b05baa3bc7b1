"""The verdict and the report: samples of the server in, NO LEAK or LEAK and the words and
JSON that say so out. Pure: no I/O, time passed in.

NO LEAK: every gauge the server exposes (tasks, threads, open fds, connections) is back at
or below its baseline within the drain window. LEAK otherwise, with the stacks that grew.
RSS is reported, never judged: allocators keep freed memory.

Where the server answers ``/debug/tasks/leaked`` (a gateway's admin port does), the tasks a
proof finds blocked forever after the drain are reported beside the verdict, with how many
there were before the load. They do not change it: a proven task may predate the run, and a
leak the count diff sees needs no proof.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from .dumps import Group, Growth, Proven
from .stats import LatencyHistogram, Tally

__all__ = [
    "GAUGES",
    "LEAK",
    "NO_LEAK",
    "Report",
    "Sample",
    "above_baseline",
    "backoff_delays",
    "format_group",
    "format_growth",
    "format_summary",
]

NO_LEAK: Final = "NO LEAK"
LEAK: Final = "LEAK"
GAUGES: Final = ("tasks", "threads", "fds", "connections")
FIRST_DELAY: Final = 0.05
MAX_DELAY: Final = 1.0


@dataclass(frozen=True, slots=True)
class Sample:
    """The server at one moment; None for what it does not expose (Go's /_count alone gives
    tasks)."""

    t: float  # seconds since the run began
    phase: str
    tasks: int | None = None
    threads: int | None = None
    fds: int | None = None
    connections: int | None = None
    rss: int | None = None

    @classmethod
    def from_vars(cls, t: float, phase: str, document: Mapping[str, Any]) -> Sample:
        """From a gateway's ``/debug/vars``."""

        def number(key: str) -> int | None:
            value = document.get(key)
            return int(value) if isinstance(value, int | float) else None

        return cls(
            t,
            phase,
            tasks=number("tasks"),
            threads=number("threads"),
            fds=number("open_fds"),
            connections=number("connections"),
            rss=number("rss_bytes"),
        )

    def gauge(self, name: str) -> int | None:
        value: int | None = getattr(self, name)
        return value

    def to_json(self) -> dict[str, Any]:
        return {
            "t": round(self.t, 3),
            "phase": self.phase,
            "tasks": self.tasks,
            "threads": self.threads,
            "fds": self.fds,
            "connections": self.connections,
            "rss_bytes": self.rss,
        }


def above_baseline(baseline: Sample, now: Sample) -> dict[str, tuple[int, int]]:
    """The gauges still above their baseline: name -> (baseline, now)."""
    out = {}
    for name in GAUGES:
        before, after = baseline.gauge(name), now.gauge(name)
        if before is not None and after is not None and after > before:
            out[name] = (before, after)
    return out


def backoff_delays(first: float = FIRST_DELAY, cap: float = MAX_DELAY) -> Iterator[float]:
    """Delays between looks while draining: short at first (most servers settle in
    milliseconds), doubling up to ``cap`` (a slow drain is looked at once a second)."""
    delay = first
    while True:
        yield delay
        delay = min(delay * 2, cap)


@dataclass(slots=True)
class Report:
    """Everything a run found; ``to_json()`` is the ``--json`` document."""

    target: dict[str, Any]
    settings: dict[str, Any]
    baseline: Sample
    final: Sample
    samples: list[Sample]
    phases: list[tuple[str, float]]  # (name, start time)
    drain_seconds: float
    settled_after: float | None  # seconds into the drain when all gauges were back; None: never
    notes: list[str] = field(default_factory=list)
    sent: int = 0
    planned: int | None = None  # pushes the rate and duration asked for (the gateway load)
    delivered: int = 0
    lost: int = 0
    duplicates: int = 0
    wrong_target: int = 0
    tally: Tally | None = None
    latency: LatencyHistogram | None = None
    requests: dict[str, int] | None = None  # load http: responses by status ("error" too)
    gateway: dict[str, dict[str, float]] | None = None  # the gateway's own push counters
    grew: list[Growth] = field(default_factory=list)
    proven_before: Proven | None = None  # /debug/tasks/leaked before the load
    proven: Proven | None = None  # and after the drain; None: the server has no such route

    @property
    def verdict(self) -> str:
        return NO_LEAK if self.settled_after is not None else LEAK

    def figure(self, name: str) -> dict[str, int | None]:
        values = [v for s in self.samples if (v := s.gauge(name)) is not None]
        return {
            "before": self.baseline.gauge(name),
            "peak": max(values) if values else None,
            "after": self.final.gauge(name),
        }

    def latency_ms(self) -> dict[str, float | None]:
        if self.latency is None:
            return {"p50": None, "p90": None, "p99": None, "max": None}
        return self.latency.summary_ms()

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "verdict": self.verdict,
            "sent": self.sent,
            "planned": self.planned,
            "delivered": self.delivered,
            "lost": self.lost,
            "duplicates": self.duplicates,
            "wrong_target": self.wrong_target,
            "latency_ms": self.latency_ms(),
        }
        for name in GAUGES:
            document[name] = self.figure(name)
        rss = [s.rss for s in self.samples if s.rss is not None]
        document["rss_bytes"] = {
            "before": self.baseline.rss,
            "peak": max(rss) if rss else None,
            "after": self.final.rss,
        }
        document["grew"] = [growth_json(g) for g in self.grew]
        if self.proven is not None:
            document["proven"] = {
                "before": None if self.proven_before is None else self.proven_before.count,
                "after": self.proven.count,
                "proof": self.proven.proof,
                "groups": [group_json(g) for g in self.proven.groups],
            }
        document["drain"] = {
            "window_seconds": round(self.drain_seconds, 3),
            "settled_after_seconds": None
            if self.settled_after is None
            else round(self.settled_after, 3),
        }
        if self.tally is not None:
            tally = self.tally
            document["clients"] = {
                "healthy": tally.healthy,
                "cut": dict(tally.cut),
                "faults": {fault: dict(outcome) for fault, outcome in tally.faults.items()},
            }
        if self.requests is not None:
            document["requests"] = dict(self.requests)
        if self.gateway is not None:
            document["gateway"] = self.gateway
        document["target"] = self.target
        document["settings"] = self.settings
        document["notes"] = list(self.notes)
        document["phases"] = [{"phase": name, "t": round(t, 3)} for name, t in self.phases]
        document["samples"] = [s.to_json() for s in self.samples]
        return document


def growth_json(growth: Growth) -> dict[str, Any]:
    return {"before": growth.before, "after": growth.after, **group_json(growth.group)}


def group_json(group: Group) -> dict[str, Any]:
    return {
        "kind": group.kind,
        "count": group.count,
        "state": group.state,
        "blocking": None if group.blocking is None else str(group.blocking),
        "blocking_source": None if group.blocking is None else group.blocking.source,
        "created_by": group.created_by,
        "stack": [str(frame) for frame in group.frames],
    }


def format_growth(growth: Growth, *, max_frames: int = 12) -> str:
    """One grown stack for a terminal: count change, state, blocking line, creator, stack."""
    group = growth.group
    plural = "s" if growth.after != 1 else ""
    state = f" [{group.state}]" if group.state else ""
    head = f"+{growth.delta} {group.kind}{plural} ({growth.before} -> {growth.after}){state}"
    return _format_group(head, group, max_frames)


def format_group(group: Group, *, max_frames: int = 12) -> str:
    """One group of a dump for a terminal: count, state, blocking line, creator, stack."""
    plural = "s" if group.count != 1 else ""
    state = f" [{group.state}]" if group.state else ""
    return _format_group(f"{group.count} {group.kind}{plural}{state}", group, max_frames)


def _format_group(head: str, group: Group, max_frames: int) -> str:
    lines = [head]
    if group.blocking is not None:
        lines.append(f"  blocks at {group.blocking}")
        if group.blocking.source:
            lines.append(f"      {group.blocking.source}")
    if group.created_by:
        lines.append(f"  created by {group.created_by}")
    if group.frames:
        lines.append("  stack:")
        for frame in group.frames[:max_frames]:
            lines.append(f"    {frame}")
            if frame.source:
                lines.append(f"        {frame.source}")
        if len(group.frames) > max_frames:
            lines.append(f"    ... {len(group.frames) - max_frames} more")
    return "\n".join(lines)


def _gauge_line(report: Report, name: str) -> str | None:
    figure = report.figure(name)
    if figure["before"] is None:
        return None
    mark = ""
    before, after = figure["before"], figure["after"]
    if after is not None and after > before:
        mark = f"   <- {after - before:+d}"
    return f"  {name:<12} {before:>8} {figure['peak']!s:>8} {after!s:>8}{mark}"


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:.1f}"


def format_summary(report: Report, *, max_groups: int = 5) -> str:
    """The text summary printed at the end of a run."""
    out: list[str] = []
    latency = report.latency_ms()
    if report.tally is not None:
        tally = report.tally
        out.append(
            f"pushes   sent {report.sent}, delivered {report.delivered} of {tally.expected}"
            f" expected to {tally.healthy} healthy clients: lost {report.lost},"
            f" duplicates {report.duplicates}, wrong target {report.wrong_target}"
        )
        if tally.cut:
            cut = ", ".join(f"{why} {n}" for why, n in sorted(tally.cut.items()))
            out.append(f"         healthy clients the server cut: {cut}")
        for fault, outcomes in sorted(tally.faults.items()):
            parts = ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items()) if k != "clients")
            extra = f": {parts}" if parts else ""
            out.append(f"faults   {fault:<10} {outcomes.get('clients', 0)} clients{extra}")
    if report.requests is not None:
        statuses = ", ".join(f"{k} {v}" for k, v in sorted(report.requests.items()))
        out.append(f"requests sent {report.sent}: {statuses}")
    if latency["p50"] is not None:
        out.append(
            f"latency  p50 {latency['p50']:.2f} ms, p90 {latency['p90']:.2f} ms,"
            f" p99 {latency['p99']:.2f} ms, max {latency['max']:.2f} ms"
        )
    out.append("")
    out.append(f"  {'':<12} {'before':>8} {'peak':>8} {'after':>8}")
    for name in GAUGES:
        line = _gauge_line(report, name)
        if line is not None:
            out.append(line)
    rss = [s.rss for s in report.samples if s.rss is not None]
    if report.baseline.rss is not None:
        out.append(
            f"  {'rss MiB':<12} {_mib(report.baseline.rss):>8} {_mib(max(rss) if rss else None):>8}"
            f" {_mib(report.final.rss):>8}"
        )
    out.append("")
    out.extend(report.notes)
    if report.settled_after is not None:
        out.append(
            f"NO LEAK: back at the baseline {report.settled_after:.2f}s into the drain"
            f" (window {report.drain_seconds:.1f}s)"
        )
    else:
        still = above_baseline(report.baseline, report.final)
        named = ", ".join(f"{k} {b} -> {a}" for k, (b, a) in still.items())
        out.append(
            f"LEAK: still above the baseline after the {report.drain_seconds:.1f}s drain: {named}"
        )
        if report.grew:
            out.append("")
            out.append("stacks that grew (the dump before the load vs after the drain):")
            for growth in report.grew[:max_groups]:
                out.append("")
                out.append(format_growth(growth))
            if len(report.grew) > max_groups:
                out.append(f"\n... and {len(report.grew) - max_groups} more groups (see --json)")
        elif report.target.get("stack_url") is None:
            out.append("(no stack dump to diff: give --stack-url to see which stacks grew)")
    out.extend(_proven_lines(report, max_groups))
    return "\n".join(out)


def _proven_lines(report: Report, max_groups: int) -> list[str]:
    """What /debug/tasks/leaked listed after the drain, beside the verdict."""
    proven = report.proven
    if proven is None:
        return []
    before = report.proven_before
    since = "" if before is None else f" ({before.count} before the load)"
    plural = "" if proven.count == 1 else "s"
    out = [
        "",
        f"proven blocked forever (/debug/tasks/leaked, no baseline needed):"
        f" {proven.count} task{plural}{since}",
    ]
    if proven.proof:
        out.append(f"  {proven.proof}")
    for group in proven.groups[:max_groups]:
        out.append("")
        out.append(format_group(group))
    if len(proven.groups) > max_groups:
        out.append(f"\n... and {len(proven.groups) - max_groups} more groups (see --json)")
    return out
