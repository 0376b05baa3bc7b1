"""The live dashboard page served at the admin root ``/``.

``dashboard.html`` is one self-contained file (inline CSS and JS, no fonts, no CDN): it polls
``debug/vars`` and ``_count`` every second, charts tasks, threads, connections and RSS over the
last five minutes on ``<canvas>``, and shows the counters, the worst loop blocks and the grouped
task dump (``debug/tasks?debug=1``, every 5 s). URLs are relative, so the admin app may be
mounted under a prefix. With an admin token, open ``/?token=T``; the page sends it as a bearer
header on every request.

For tests, the page keeps ``data-updates`` on ``<body>`` (polls completed) and ``data-value`` on
each figure, so a browser test can wait on the DOM instead of sleeping.
"""

from __future__ import annotations

import functools
from importlib import resources

__all__ = ["dashboard_html"]


@functools.cache
def dashboard_html() -> str:
    """The page's HTML, read once from the package."""
    return (
        resources.files(__package__ or "tidegate.ops")
        .joinpath("dashboard.html")
        .read_text(encoding="utf-8")
    )
