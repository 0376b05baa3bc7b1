"""``--png``: the server's gauges over a run with its phases marked (matplotlib, Agg backend,
imported only when a PNG is asked for; ``pip install 'tidegate[plot]'``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from .verdict import Sample

__all__ = ["PlotUnavailable", "check_plotting", "write_comparison_png", "write_run_png"]

PANELS: Final = (
    ("tasks", "tasks", 1.0),
    ("connections", "connections", 1.0),
    ("rss", "RSS (MiB)", 1 / 2**20),
    ("fds", "open fds", 1.0),
)
PHASE_COLOURS: Final = {
    "connect": "#dbe9f6",
    "load": "#fde0c5",
    "settle": "#e8e8e8",
    "drain": "#d9f0d3",
}


class PlotUnavailable(Exception):
    """matplotlib is not installed (the message says how to get it)."""


def check_plotting() -> None:
    """Raise ``PlotUnavailable`` now, before a long run, if a PNG could not be written."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise PlotUnavailable("--png needs matplotlib: pip install 'tidegate[plot]'") from None


def _pyplot() -> Any:
    check_plotting()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _mark_phases(axis: Any, phases: Sequence[tuple[str, float]], end: float, label: bool) -> None:
    for i, (name, start) in enumerate(phases):
        stop = phases[i + 1][1] if i + 1 < len(phases) else end
        colour = PHASE_COLOURS.get(name)
        if colour is None or stop <= start:
            continue
        axis.axvspan(start, stop, color=colour, alpha=0.8, lw=0)
        if label:
            axis.text(
                (start + stop) / 2,
                1.0,
                name,
                transform=axis.get_xaxis_transform(),
                ha="center",
                va="bottom",
                fontsize=8,
            )


def write_run_png(
    path: Path, samples: Sequence[Sample], phases: Sequence[tuple[str, float]], *, title: str
) -> None:
    """One panel per gauge the server exposed (tasks, connections, RSS, fds) over time."""
    plt = _pyplot()
    panels = [p for p in PANELS if any(getattr(s, p[0]) is not None for s in samples)]
    figure, axes = plt.subplots(
        len(panels), 1, figsize=(9, 1.9 * len(panels) + 0.8), sharex=True, squeeze=False
    )
    end = samples[-1].t if samples else 0.0
    for row, (key, label, scale) in enumerate(panels):
        axis = axes[row][0]
        _mark_phases(axis, phases, end, label=row == 0)
        points = [(s.t, getattr(s, key) * scale) for s in samples if getattr(s, key) is not None]
        axis.plot([t for t, _ in points], [v for _, v in points], color="#1f4e79", lw=1.4)
        axis.set_ylabel(label, fontsize=9)
        axis.grid(alpha=0.3)
    axes[-1][0].set_xlabel("seconds")
    figure.suptitle(title, fontsize=11)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_comparison_png(
    path: Path, runs: Mapping[str, Sequence[Sample]], *, title: str, key: str = "tasks"
) -> None:
    """One ``key`` curve per run, on one chart (the incident demo: leaky vs tidegate)."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(9, 4.2))
    for (label, samples), colour in zip(
        runs.items(), ("#c0392b", "#1f7a3a", "#1f4e79"), strict=False
    ):
        points = [(s.t, getattr(s, key)) for s in samples if getattr(s, key) is not None]
        axis.plot([t for t, _ in points], [v for _, v in points], label=label, color=colour, lw=1.6)
    axis.set_xlabel("seconds")
    axis.set_ylabel(key)
    axis.grid(alpha=0.3)
    axis.legend(loc="upper left")
    axis.set_title(title, fontsize=11)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
