"""Stack dumps as records, and what grew between two of them. Pure: text in, records out.

Four formats, told apart by their first line:

=================  ===========================================  ==============================
format             first line                                   from
=================  ===========================================  ==============================
``tidegate-1``     ``total: 45 tasks, 3 threads``               ``/debug/tasks?debug=1``
``tidegate-2``     ``task NAME [state, 1.2s]:``                 ``/_stack``, ``?debug=2``
``go-1``           ``goroutine profile: total 8``               ``/debug/pprof/goroutine?debug=1``
``go-2``           ``goroutine 11 [chan send, 2 minutes]:``     ``/debug/pprof/goroutine?debug=2``
=================  ===========================================  ==============================

A full dump (``-2``) is folded into groups the way the grouped one is, so the diff is the same
for all four: groups keyed by kind, stack and creation site (not the state, whose text
carries counts like ``(1 unfinished)``), and the groups whose count grew, biggest growth
first. Each group names its blocking line: for Go the innermost frame outside the runtime
and the standard library (``debug=1`` hides the runtime's own frames already); for tidegate
the innermost frame outside the standard library and installed packages (as the loop
watchdog names a blocking site).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Final, Literal

__all__ = [
    "Dump",
    "DumpError",
    "Frame",
    "Group",
    "Growth",
    "Proven",
    "grown",
    "parse_dump",
    "parse_proven",
]

Format = Literal["tidegate-1", "tidegate-2", "go-1", "go-2"]


class DumpError(ValueError):
    """The text is none of the four dump formats (the message says what was expected)."""


@dataclass(frozen=True, slots=True)
class Frame:
    function: str
    location: str  # "path:line"
    source: str | None = None  # the line's text, where the dump shows it (tidegate's do)

    def __str__(self) -> str:
        return f"{self.location} in {self.function}"


@dataclass(frozen=True, slots=True)
class Group:
    """``count`` tasks, threads or goroutines with one stack, in the dump's own order
    (tidegate: outermost first; Go: innermost first)."""

    kind: str  # "task", "thread", "goroutine"
    count: int
    state: str  # what they wait on; "" where the format does not say (Go's debug=1)
    frames: tuple[Frame, ...]
    created_by: str | None
    blocking: Frame | None  # the line they block on (see the module docstring)

    @property
    def key(self) -> tuple[object, ...]:
        return (self.kind, tuple((f.function, f.location) for f in self.frames), self.created_by)


@dataclass(frozen=True, slots=True)
class Dump:
    format: Format
    groups: tuple[Group, ...]

    def total(self, kind: str | None = None) -> int:
        return sum(g.count for g in self.groups if kind is None or g.kind == kind)


@dataclass(frozen=True, slots=True)
class Growth:
    group: Group  # as in the later dump
    before: int
    after: int

    @property
    def delta(self) -> int:
        return self.after - self.before


def parse_dump(text: str) -> Dump:
    """Parse any of the four formats; ``DumpError`` if it is none of them."""
    first = text.lstrip("\n").partition("\n")[0]
    if first.startswith("goroutine profile: total "):
        return Dump("go-1", tuple(_go_grouped(text)))
    if _GO_HEADER.match(first):
        return Dump("go-2", _fold(_go_full(text)))
    if _OUR_TOTAL.match(first):
        return Dump("tidegate-1", tuple(_ours_grouped(text)))
    if _OUR_ENTRY.match(first):
        return Dump("tidegate-2", _fold(_ours_full(text)))
    shown = first if len(first) <= 60 else first[:57] + "..."
    raise DumpError(
        f"not a stack dump (expected tidegate's /debug/tasks?debug=1|2 or /_stack, or Go's "
        f"/debug/pprof/goroutine?debug=1|2); it starts with {shown!r}"
    )


@dataclass(frozen=True, slots=True)
class Proven:
    """An answer of ``/debug/tasks/leaked``: the tasks a proof found blocked forever."""

    count: int
    groups: tuple[Group, ...]
    proof: str | None  # the line naming the proof and what it cost, as the server wrote it


_PROVEN_TOTAL: Final = re.compile(r"^total: (\d+) tasks? proven blocked forever$")


def parse_proven(text: str) -> Proven:
    """Parse an answer of ``/debug/tasks/leaked``; ``DumpError`` if it is not one."""
    lines = text.lstrip("\n").splitlines()
    match = _PROVEN_TOTAL.match(lines[0]) if lines else None
    if match is None:
        shown = lines[0][:60] if lines else ""
        raise DumpError(
            f"not an answer of /debug/tasks/leaked (expected 'total: N tasks proven blocked"
            f" forever'); it starts with {shown!r}"
        )
    proof = next((line for line in lines if line.startswith("proof ")), None)
    return Proven(int(match[1]), tuple(_ours_grouped(text)), proof)


def grown(before: Dump, after: Dump) -> list[Growth]:
    """The groups with more members in ``after`` than in ``before``, biggest growth first."""
    counts: dict[tuple[object, ...], int] = {}
    for group in before.groups:
        counts[group.key] = counts.get(group.key, 0) + group.count
    later: dict[tuple[object, ...], Group] = {}
    for group in after.groups:
        known = later.get(group.key)
        later[group.key] = (
            group if known is None else replace(known, count=known.count + group.count)
        )
    growth = [
        Growth(group, counts.get(key, 0), group.count)
        for key, group in later.items()
        # A task or goroutine "running" at the instant of a dump is the one writing it: the
        # request for the dump, whose stack differs between any two requests.
        if group.count > counts.get(key, 0)
        and not (group.state == "running" and group.kind in ("task", "goroutine"))
    ]
    return sorted(growth, key=lambda g: (-g.delta, -g.after))


def _entries(text: str) -> Iterator[list[str]]:
    """Blank-line separated blocks of lines."""
    block: list[str] = []
    for line in text.splitlines():
        if line.strip():
            block.append(line)
        elif block:
            yield block
            block = []
    if block:
        yield block


def _fold(groups: Iterable[Group]) -> tuple[Group, ...]:
    """One group per key, counts added, most common first (as the grouped formats are)."""
    folded: dict[tuple[object, ...], Group] = {}
    for group in groups:
        known = folded.get(group.key)
        folded[group.key] = (
            group if known is None else replace(known, count=known.count + group.count)
        )
    return tuple(sorted(folded.values(), key=lambda g: -g.count))


# -- tidegate --------------------------------------------------------------------------------

# "total: 45 tasks, 3 threads", "total: 45 tasks (40 proven blocked forever), 3 threads" (a
# proof has run), or "total: 40 tasks proven blocked forever" (``/debug/tasks/leaked``).
_OUR_TOTAL: Final = re.compile(
    r"^total: \d+ tasks?(?: \(\d+ proven blocked forever\))?"
    r"(?:, \d+ threads?| proven blocked forever)$"
)
_OUR_GROUP: Final = re.compile(r"^(\d+) (task|thread)s? \[(.*)\]:$")
_OUR_ENTRY: Final = re.compile(r"^(task|thread) (.*) \[(.*)\]:$")
_OUR_FRAME: Final = re.compile(r"^  (\S.*?:\d+) in (.+)$")
_OUR_SOURCE_INDENT: Final = "      "
_OUR_CREATED: Final = "created by "
_OUR_WAITED: Final = re.compile(r", (?:\d+(?:\.\d+)?s|\d+ minutes?)$")  # "…, 1.2s" / "…, 3 minutes"


def _ours_stack(lines: list[str]) -> tuple[tuple[Frame, ...], str | None]:
    frames: list[Frame] = []
    created: str | None = None
    for line in lines:
        if line.startswith(_OUR_CREATED):
            created = line[len(_OUR_CREATED) :]
        elif line.startswith(_OUR_SOURCE_INDENT) and frames:
            frames[-1] = replace(frames[-1], source=line.strip())
        elif match := _OUR_FRAME.match(line):
            frames.append(Frame(function=match[2], location=match[1]))
        else:
            raise DumpError(f"unexpected line in a tidegate dump: {line!r}")
    return tuple(frames), created


def _ours_group(kind: str, count: int, state: str, lines: list[str]) -> Group:
    frames, created = _ours_stack(lines)
    return Group(kind, count, state, frames, created, _our_blocking(frames))


def _ours_grouped(text: str) -> Iterator[Group]:
    for block in _entries(text):
        if _OUR_TOTAL.match(block[0]):
            continue
        match = _OUR_GROUP.match(block[0])
        if match is None:
            raise DumpError(f"expected a group header like '3 tasks [state]:', got {block[0]!r}")
        yield _ours_group(match[2], int(match[1]), match[3], block[1:])


def _ours_full(text: str) -> Iterator[Group]:
    for block in _entries(text):
        match = _OUR_ENTRY.match(block[0])
        if match is None:
            raise DumpError(f"expected an entry like 'task NAME [state]:', got {block[0]!r}")
        yield _ours_group(match[1], 1, _OUR_WAITED.sub("", match[3]), block[1:])


def _is_python_library(location: str) -> bool:
    path = location.replace("\\", "/")
    if "/site-packages/" in path or "/dist-packages/" in path:
        return True
    return path.startswith("<frozen ") or bool(re.search(r"/lib/python3\.\d+/", path))


def _is_python_stdlib(location: str) -> bool:
    path = location.replace("\\", "/")
    return _is_python_library(path) and "-packages/" not in path


def _our_blocking(frames: tuple[Frame, ...]) -> Frame | None:
    for outside in (_is_python_library, _is_python_stdlib):
        for frame in reversed(frames):  # innermost last
            if not outside(frame.location):
                return frame
    return frames[-1] if frames else None


# -- Go --------------------------------------------------------------------------------------

_GO_GROUP: Final = re.compile(r"^(\d+) @(?: 0x[0-9a-f]+)*$")
_GO_PC_FRAME: Final = re.compile(r"^#\t0x[0-9a-f]+\t(\S+?)(?:\+0x[0-9a-f]+)?\t+(.+?)\s*$")
_GO_HEADER: Final = re.compile(r"^goroutine (\d+) \[(.*)\]:$")
_GO_WAITED: Final = re.compile(r", \d+ minutes?")
_GO_LOCATION: Final = re.compile(r"^\t(.+?)(?: \+0x[0-9a-f]+)?$")
_GO_CREATED: Final = re.compile(r"^created by (\S+)(?: in goroutine \d+)?$")


def _go_package(function: str) -> str:
    # "net/http.(*conn).serve" -> "net/http"; "github.com/x/y.F" -> "github.com/x/y"
    head, _, tail = function.rpartition("/")
    return head + "/" + tail.partition(".")[0] if head else tail.partition(".")[0]


def _is_go_library(function: str) -> bool:
    """The runtime and the standard library: a package path without a dot in its first
    element, except ``main`` (third-party code lives under a domain, e.g. github.com)."""
    package = _go_package(function)
    return package != "main" and "." not in package.partition("/")[0]


def _go_blocking(frames: tuple[Frame, ...]) -> Frame | None:
    for frame in frames:  # innermost first
        if not _is_go_library(frame.function):
            return frame
    return frames[0] if frames else None


def _go_grouped(text: str) -> Iterator[Group]:
    for block in _entries(text):
        if block[0].startswith("goroutine profile: "):
            block = block[1:]
            if not block:
                continue
        match = _GO_GROUP.match(block[0])
        if match is None:
            raise DumpError(f"expected a group header like '5 @ 0x43b256 ...', got {block[0]!r}")
        frames: list[Frame] = []
        for line in block[1:]:
            if line.startswith("# labels:"):
                continue
            frame = _GO_PC_FRAME.match(line)
            if frame is None:
                raise DumpError(f"unexpected line in a Go debug=1 dump: {line!r}")
            frames.append(Frame(function=frame[1], location=frame[2]))
        stack = tuple(frames)
        yield Group("goroutine", int(match[1]), "", stack, None, _go_blocking(stack))


def _go_function(line: str) -> str:
    # "main.broadcastWorker({0x0?, 0x0?}, 0x0?)" -> "main.broadcastWorker"
    return line[: line.rindex("(")] if line.endswith(")") and "(" in line else line


def _go_full(text: str) -> Iterator[Group]:
    for block in _entries(text):
        match = _GO_HEADER.match(block[0])
        if match is None:
            raise DumpError(f"expected 'goroutine N [state]:', got {block[0]!r}")
        frames: list[Frame] = []
        created: str | None = None
        lines = iter(block[1:])
        for line in lines:
            if line.startswith("...") and line.endswith("elided..."):
                continue
            location = _GO_LOCATION.match(next(lines, ""))
            if location is None:
                raise DumpError(f"expected a '\\tfile:line' line after {line!r}")
            if creator := _GO_CREATED.match(line):
                created = f"{creator[1]} at {location[1]}"
            else:
                frames.append(Frame(function=_go_function(line), location=location[1]))
        stack = tuple(frames)
        state = _GO_WAITED.sub("", match[2])
        yield Group("goroutine", 1, state, stack, created, _go_blocking(stack))
