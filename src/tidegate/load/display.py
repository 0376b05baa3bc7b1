"""Progress while a load runs: a live rich panel on a terminal, plain lines elsewhere (CI logs,
pipes, tests), so a long run always shows where it is."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Protocol, TextIO

if TYPE_CHECKING:
    from rich.table import Table

__all__ = ["Display", "LiveDisplay", "PlainDisplay", "Status", "make_display"]

PLAIN_EVERY = 2.0  # seconds between plain status lines
LIVE_EVERY = 0.1  # at most this often the live panel is rebuilt (rich redraws it 4 times a second)


@dataclass(frozen=True, slots=True)
class Status:
    phase: str = "starting"
    elapsed: float = 0.0
    clients_up: int | None = None
    clients_planned: int | None = None
    sent: int = 0
    delivered: int = 0
    tasks: int | None = None
    connections: int | None = None
    rss: int | None = None
    note: str = ""


class Display(Protocol):
    def update(self, **changes: object) -> None: ...
    def say(self, line: str) -> None: ...
    def close(self) -> None: ...


def _line(status: Status) -> str:
    parts = [f"[{status.elapsed:6.1f}s] {status.phase:<8}"]
    if status.clients_planned is not None:
        parts.append(f"clients {status.clients_up or 0}/{status.clients_planned}")
    parts.append(f"sent {status.sent}")
    parts.append(f"delivered {status.delivered}")
    if status.tasks is not None:
        parts.append(f"tasks {status.tasks}")
    if status.connections is not None:
        parts.append(f"conns {status.connections}")
    if status.rss is not None:
        parts.append(f"rss {status.rss / 2**20:.1f} MiB")
    if status.note:
        parts.append(f"({status.note})")
    return "  ".join(parts)


class PlainDisplay:
    """A line at each phase change and every ``PLAIN_EVERY`` seconds."""

    def __init__(self, out: TextIO | None = None) -> None:
        self._out = out or sys.stdout
        self._status = Status()
        self._last = 0.0

    def update(self, **changes: object) -> None:
        old = self._status
        self._status = replace(old, **changes)  # type: ignore[arg-type]
        now = time.monotonic()
        if self._status.phase != old.phase or now - self._last >= PLAIN_EVERY:
            self._last = now
            print(_line(self._status), file=self._out, flush=True)

    def say(self, line: str) -> None:
        print(line, file=self._out, flush=True)

    def close(self) -> None:
        pass


class LiveDisplay:
    """A rich panel redrawn in place (rich's own refresh thread, stopped in ``close``)."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.live import Live

        self._console = Console()
        self._status = Status()
        self._built = 0.0
        self._live = Live(
            self._render(), console=self._console, refresh_per_second=4, transient=True
        )
        self._live.start()

    def _render(self) -> Table:
        s = self._status
        from rich.table import Table

        table = Table(show_header=False, box=None, padding=(0, 2))
        table.add_row("phase", f"[bold]{s.phase}[/bold] {s.note}", "elapsed", f"{s.elapsed:.1f}s")
        if s.clients_planned is not None:
            table.add_row("clients up", f"{s.clients_up or 0} / {s.clients_planned}", "", "")
        table.add_row("sent", str(s.sent), "delivered", str(s.delivered))
        table.add_row(
            "tasks",
            "-" if s.tasks is None else str(s.tasks),
            "connections",
            "-" if s.connections is None else str(s.connections),
        )
        table.add_row("rss", "-" if s.rss is None else f"{s.rss / 2**20:.1f} MiB", "", "")
        return table

    def update(self, **changes: object) -> None:
        old = self._status
        self._status = replace(old, **changes)  # type: ignore[arg-type]
        now = time.monotonic()
        if self._status.phase != old.phase or now - self._built >= LIVE_EVERY:
            self._built = now
            self._live.update(self._render())

    def say(self, line: str) -> None:
        self._live.console.print(line, markup=False, highlight=False)

    def close(self) -> None:
        self._live.stop()


def make_display(live: bool | None = None) -> Display:
    """Live on a terminal (or when ``live`` says so), plain otherwise."""
    if live is None:
        live = sys.stdout.isatty()
    return LiveDisplay() if live else PlainDisplay()
