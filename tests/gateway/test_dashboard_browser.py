"""The dashboard of a real gateway in a real headless browser: it loads, its charts update
with the gateway's own figures, and its task count matches `/_count`.

Needs Debian's chromium (`make test` installs it when it may) and the playwright pip package,
whose bundled driver is all we use: we never run `playwright install`. Skipped, with that
reason, when /usr/bin/chromium is missing. The test waits on the DOM attributes the page
maintains (`data-updates`, `data-value`, `data-points`), never on timers, and takes a
screenshot (docs/dashboard.png when TIDEGATE_UPDATE_SCREENSHOT=1).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from tidegate.gateway import Gateway, open_gateway

from .helpers import Client, config

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
#   TIDEGATE_UPDATE_SCREENSHOT=1 .venv/bin/pytest tests/gateway/test_dashboard_browser.py
DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "dashboard.png"

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason=f"{CHROMIUM} missing: apt-get update && apt-get install -y chromium",
)


async def incident_worker(replies: asyncio.Queue[str]) -> None:
    # The incident's leak: a send on a queue nobody reads any more blocks forever.
    await replies.put("late reply")


def settled(at_least: int) -> str:
    """JS predicate: the page's task figure and its /_count agree and reached `at_least`.

    Both come from requests the page makes one after the other; they agree once no other
    request of the page (the grouped dump) is in flight between them.
    """
    return (
        "(() => { const t = Number(document.getElementById('tasks-value').dataset.value);"
        " const c = Number(document.getElementById('count-value').dataset.value);"
        f" return t === c && t >= {at_least}; }})()"
    )


async def test_dashboard_charts_and_matches_count(tmp_path: Path) -> None:
    playwright_api = pytest.importorskip("playwright.async_api")
    screenshot = (
        DOCS_SCREENSHOT
        if os.environ.get("TIDEGATE_UPDATE_SCREENSHOT") == "1"
        else tmp_path / "dashboard.png"
    )
    async with open_gateway(config(admin=("127.0.0.1", 0))) as gw:
        assert gw.admin_address is not None
        clients = [await Client.hello(gw.tcp_address, f"user{n}") for n in range(5)]
        try:
            async with playwright_api.async_playwright() as pw:
                browser = await pw.chromium.launch(
                    executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
                )
                try:
                    page = await browser.new_page(viewport={"width": 1280, "height": 900})
                    host, port = gw.admin_address
                    await page.goto(f"http://{host}:{port}/?poll=100")
                    await check_page(page, gw, clients, screenshot)
                finally:
                    await browser.close()
        finally:
            for client in clients:
                await client.close()


async def check_page(page: Any, gw: Gateway, clients: list[Client], screenshot: Path) -> None:
    # Two polls: the chart has two points, the figures are the gateway's.
    await page.wait_for_function("document.body.dataset.updates >= 2")
    baseline = len(asyncio.all_tasks())
    await page.wait_for_function(settled(baseline))
    points = await page.get_attribute("#chart-tasks", "data-points")
    assert points is not None and int(points) >= 2
    await page.wait_for_function(
        "document.getElementById('connections-value').dataset.value === '5'"
    )

    # The incident, replayed: each step starts workers that never finish; the task count
    # climbs and the page follows it. One client leaves per step, too.
    replies: asyncio.Queue[str] = asyncio.Queue(maxsize=1)
    replies.put_nowait("the one reply anybody read")
    stuck: list[asyncio.Task[None]] = []
    async with asyncio.TaskGroup() as workers:
        try:
            for step in range(1, 5):
                for _ in range(4):
                    name = f"incident-worker-{len(stuck) + 1}"
                    stuck.append(workers.create_task(incident_worker(replies), name=name))
                await clients[step].close()
                await page.wait_for_function(settled(baseline + len(stuck)))
                want = str(5 - step)
                await page.wait_for_function(
                    f"document.getElementById('connections-value').dataset.value === '{want}'"
                )
                assert gw.connections() == 5 - step
            counters = await page.text_content("#counters")
            assert counters is not None and "accepted5" in counters.replace(" ", "")
            # The grouped dump shows the stuck workers as one group with their count.
            await page.wait_for_function(
                f"document.getElementById('dump').textContent.includes('{len(stuck)} tasks [')"
            )
            dump = await page.text_content("#dump")
            assert dump is not None and "incident_worker" in dump
            image = await page.screenshot(path=str(screenshot), full_page=True)
            assert image.startswith(b"\x89PNG") and len(image) > 10_000
        finally:
            for task in stuck:  # end the replayed leak, or the TaskGroup waits forever
                task.cancel()
