"""Reports: the full dump (Go's debug=2) and the grouped one (pprof's debug=1).

Both stay cheap with 10k tasks: source lines come from ``linecache`` and the
grouped form formats each distinct stack once.
"""

from __future__ import annotations

import linecache
from collections import Counter
from collections.abc import Iterable

from ._records import Frame, Leak


def format_duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes = int(seconds // 60)
    return f"{minutes} minute{'s' if minutes != 1 else ''}"


DESTROYED = "destroyed by the garbage collector"


def waits_on(leak: Leak) -> str:
    """What a record waits on (or its state), and whether the collector destroyed it."""
    if leak.state == "destroyed":
        return f"{leak.blocked_on}, {DESTROYED}" if leak.blocked_on else DESTROYED
    return leak.blocked_on or leak.state


def header(leak: Leak) -> str:
    tags = [waits_on(leak)]
    if leak.blocked_for is not None:
        tags.append(format_duration(leak.blocked_for))
    if leak.verdict is not None:
        tags.append(leak.verdict)
    return f"{leak.kind} {leak.name} [{', '.join(tags)}]:"


def _frame_lines(frames: Iterable[Frame]) -> list[str]:
    lines: list[str] = []
    for frame in frames:
        lines.append(f"  {frame}")
        source = linecache.getline(frame.filename, frame.lineno).strip()
        if source:
            lines.append(f"      {source}")
    return lines


def _created_line(leak: Leak) -> str | None:
    return None if leak.created_at is None else f"created by {leak.created_at}"


def format_leak(leak: Leak) -> str:
    lines = [header(leak), *_frame_lines(leak.frames)]
    created = _created_line(leak)
    if created:
        lines.append(created)
    return "\n".join(lines)


def format_dump(leaks: Iterable[Leak]) -> str:
    """Every task and thread in turn, like Go's goroutine dump with debug=2."""
    return "\n\n".join(format_leak(leak) for leak in leaks) + "\n"


def _group_key(leak: Leak) -> tuple[object, ...]:
    return (
        leak.kind,
        waits_on(leak),
        leak.verdict,
        leak.frames,
        leak.created_frames,
    )


def _tags(leak: Leak) -> str:
    what = waits_on(leak)
    return what if leak.verdict is None else f"{what}, {leak.verdict}"


def format_groups(leaks: Iterable[Leak]) -> tuple[Counter[str], list[str]]:
    """Identical stacks folded into one entry with a count, biggest group first, like
    pprof's debug=1: how many of each kind (and proven) there were, and the lines."""
    groups: Counter[tuple[object, ...]] = Counter()
    sample: dict[tuple[object, ...], Leak] = {}
    kinds: Counter[str] = Counter()
    for leak in leaks:
        key = _group_key(leak)
        groups[key] += 1
        sample.setdefault(key, leak)
        kinds[leak.kind] += 1
        if leak.verdict == "proven":
            kinds["proven"] += 1
    out: list[str] = []
    for key, count in groups.most_common():
        leak = sample[key]
        plural = "s" if count != 1 else ""
        out.append("")
        out.append(f"{count} {leak.kind}{plural} [{_tags(leak)}]:")
        out.extend(_frame_lines(leak.frames))
        created = _created_line(leak)
        if created:
            out.append(created)
    return kinds, out


def format_grouped(leaks: Iterable[Leak]) -> str:
    """Every task and thread, grouped (``format_groups``) under a line of totals."""
    kinds, groups = format_groups(leaks)
    proven = f" ({kinds['proven']} proven blocked forever)" if kinds["proven"] else ""
    out = [f"total: {kinds['task']} tasks{proven}, {kinds['thread']} threads", *groups]
    return "\n".join(out) + "\n"
