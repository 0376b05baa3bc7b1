"""The dashboard in a real headless browser: it loads, its charts update, its numbers match.

Needs Debian's chromium and the playwright pip package (its bundled driver only; we never run
`playwright install`)::

    apt-get update && apt-get install -y chromium
    .venv/bin/pip install playwright

Skipped, with that reason, when /usr/bin/chromium is missing. The test serves the ops routes
with fake stats on 127.0.0.1, waits on the DOM counters the page maintains (`data-updates`,
`data-value`, `data-points`), never on timers, and takes a screenshot (docs/dashboard.png
when TIDEGATE_UPDATE_SCREENSHOT=1).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tidegate.ops.admin_routes import add_ops_routes
from tidegate.ops.metrics import OpsMetrics, Stats
from tidegate.ops.watchdog import open_watchdog

CHROMIUM = Path(os.environ.get("TIDEGATE_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# The docs' screenshot is rewritten only on request, so a test run leaves the tree unchanged:
#   TIDEGATE_UPDATE_SCREENSHOT=1 .venv/bin/pytest tests/ops/test_dashboard_browser.py
DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "dashboard.png"

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason=f"{CHROMIUM} missing: apt-get update && apt-get install -y chromium",
)


class FakeGateway:
    """Stats the test moves by hand; `/_count` reports the same task figure."""

    def __init__(self) -> None:
        self.values: dict[str, float | Mapping[str, float]] = {
            "tasks": 17,
            "threads": 3,
            "connections": 12,
            "rss_bytes": 48 * 1024 * 1024,
            "open_fds": 31,
            "accepted": 40,
            "deliveries": 1234,
            "buffered_bytes": 4096,
            "pushes": {"udp": 800, "http": 34},
            "pushes_by_target": {"user": 500, "room": 320, "all": 14},
            "drops": {"drop-oldest": 2},
            "disconnects": {"peer_eof": 25, "idle_timeout": 3},
            "rejections": {"bad_signature": 4, "replay": 1},
        }

    def stats(self) -> Stats:
        return dict(self.values)

    async def count(self, request: web.Request) -> web.Response:
        return web.Response(text=f"{self.values['tasks']:g}", content_type="text/plain")


async def incident_worker(replies: asyncio.Queue[str]) -> None:
    # The incident's leak: a send on a queue nobody reads any more blocks forever.
    await replies.put("late reply")


async def test_dashboard_charts_and_matches_count(tmp_path: Path) -> None:
    playwright_api = pytest.importorskip("playwright.async_api")
    fake = FakeGateway()
    app = web.Application()
    app.router.add_get("/_count", fake.count)
    replies: asyncio.Queue[str] = asyncio.Queue(maxsize=1)
    replies.put_nowait("the one reply anybody read")
    stuck: list[asyncio.Task[None]] = []
    async with (
        open_watchdog(interval=0.05, threshold=0.5) as watchdog,
        asyncio.TaskGroup() as workers,
    ):
        add_ops_routes(
            app, stats=fake.stats, registry=OpsMetrics(fake.stats).registry, watchdog=watchdog
        )
        runner = web.AppRunner(app)
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = runner.addresses[0][1]
            async with playwright_api.async_playwright() as pw:
                browser = await pw.chromium.launch(
                    executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
                )
                try:
                    page = await browser.new_page(viewport={"width": 1280, "height": 900})
                    screenshot = (
                        DOCS_SCREENSHOT
                        if os.environ.get("TIDEGATE_UPDATE_SCREENSHOT") == "1"
                        else tmp_path / "dashboard.png"
                    )
                    await check_page(
                        page,
                        f"http://127.0.0.1:{port}/?poll=100",
                        fake,
                        replies,
                        workers,
                        stuck,
                        screenshot,
                    )
                finally:
                    await browser.close()
        finally:
            await runner.cleanup()
            for task in stuck:  # end the replayed leak, or the TaskGroup waits forever
                task.cancel()


async def check_page(
    page: Any,
    url: str,
    fake: FakeGateway,
    replies: asyncio.Queue[str],
    workers: asyncio.TaskGroup,
    stuck: list[asyncio.Task[None]],
    screenshot: Path,
) -> None:
    await page.goto(url)
    # Two polls: the chart has two points, the figures match /_count.
    await page.wait_for_function("document.body.dataset.updates >= 2")
    tasks = await page.get_attribute("#tasks-value", "data-value")
    count = await page.get_attribute("#count-value", "data-value")
    assert tasks == count == "17"
    points = await page.get_attribute("#chart-tasks", "data-points")
    assert points is not None and int(points) >= 2

    # The incident, replayed: each step starts workers that never finish; the task count
    # climbs and the page follows (one DOM change per step; no timers).
    started = 0
    for step in range(1, 13):
        for _ in range(4):
            started += 1
            stuck.append(
                workers.create_task(incident_worker(replies), name=f"incident-worker-{started}")
            )
        fake.values["tasks"] = 17 + started
        fake.values["connections"] = 12 + (step * 7) % 5
        fake.values["rss_bytes"] = (48 + step) * 1024 * 1024
        want = str(17 + started)
        await page.wait_for_function(
            f"document.getElementById('tasks-value').dataset.value === '{want}'"
        )
        assert await page.get_attribute("#count-value", "data-value") == want

    assert await page.text_content("#rss_bytes-value") == "60.0 MiB"
    counters = await page.text_content("#counters")
    assert counters is not None and "pushes{udp}800" in counters
    # The grouped dump shows the stuck workers as one group with their count.
    await page.wait_for_function(
        f"document.getElementById('dump').textContent.includes('{started} tasks [')"
    )
    dump = await page.text_content("#dump")
    assert dump is not None and "incident_worker" in dump
    image = await page.screenshot(path=str(screenshot), full_page=True)
    assert image.startswith(b"\x89PNG") and len(image) > 10_000
