"""The admin app's operator routes, served on 127.0.0.1 with fake stats."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from tidegate.ops.admin_routes import add_ops_routes
from tidegate.ops.metrics import OpsMetrics, Stats
from tidegate.ops.profiler import SamplingProfiler
from tidegate.ops.watchdog import open_watchdog

TOKEN = "admin-secret"


class FakeStats:
    def __init__(self) -> None:
        self.values: dict[str, float | Mapping[str, float]] = {
            "connections": 2,
            "deliveries": 11,
            "pushes": {"udp": 5},
            "buffered_bytes": 512,
        }

    def __call__(self) -> Stats:
        return dict(self.values)


@asynccontextmanager
async def serve(**options: Any) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    """The ops routes on a bare app, fed with fake stats."""
    stats = options.pop("stats", FakeStats())
    metrics = OpsMetrics(stats)
    app = web.Application()
    add_ops_routes(app, stats=stats, registry=metrics.registry, **options)
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as client:
        yield client


async def test_dashboard_is_self_contained() -> None:
    async with serve() as client:
        response = await client.get("/")
        assert response.status == 200
        assert response.content_type == "text/html"
        page = await response.text()
    assert "<canvas" in page
    for external in ("<script src", "<link", "@import", "http://", "https://", "url("):
        assert external not in page, external


async def test_debug_tasks_grouped_and_full() -> None:
    full: asyncio.Queue[int] = asyncio.Queue(maxsize=1)
    full.put_nowait(0)

    async def stuck_sender() -> None:
        await full.put(1)  # nobody reads: blocks forever

    async with serve() as client, asyncio.TaskGroup() as group:
        senders = [group.create_task(stuck_sender(), name=f"sender-{i}") for i in range(3)]
        await asyncio.sleep(0)  # let them reach Queue.put
        grouped = await (await client.get("/debug/tasks?debug=1")).text()
        default = await client.get("/debug/tasks")
        dump = await (await client.get("/debug/tasks?debug=2")).text()
        bad = await client.get("/debug/tasks?debug=3")
        for sender in senders:
            sender.cancel()

    assert grouped.startswith("total: ")
    assert "3 tasks [" in grouped and "stuck_sender" in grouped
    assert default.status == 200 and default.content_type == "text/plain"
    assert all(f"task sender-{i} [" in dump for i in range(3))
    assert bad.status == 400


def block_the_loop() -> None:
    time.sleep(0.15)  # blocking call in the loop thread, for the watchdog to report


async def test_debug_vars() -> None:
    async with (
        open_watchdog(interval=0.01, threshold=0.05) as dog,
        serve(watchdog=dog) as client,
    ):
        await dog.wait_ticking()
        before = dog.statistics()["blocks_total"]
        block_the_loop()
        await dog.wait_blocks(before + 1)
        response = await client.get("/debug/vars")
        document = await response.json()
    assert response.status == 200
    assert document["connections"] == 2
    assert document["tasks"] >= 1 and document["threads"] >= 2  # the watchdog's thread too
    assert document["rss_bytes"] > 0 and document["open_fds"] > 0
    assert document["counters"] == {"deliveries": 11, "pushes": {"udp": 5}, "buffered_bytes": 512}
    (block,) = [b for b in document["loop"]["worst_blocks"] if b["function"] == "block_the_loop"]
    assert block["duration"] >= 0.05 and block["site"].startswith(__file__)


async def test_metrics_exposition() -> None:
    stats = FakeStats()
    async with serve(stats=stats) as client:
        first = await client.get("/metrics")
        first_text = await first.text()
        stats.values["connections"] = 7
        second = await (await client.get("/metrics")).text()
    assert first.status == 200
    assert first.headers["Content-Type"].startswith("text/plain; version=")
    families = {f.name: f for f in text_string_to_metric_families(first_text)}
    assert families["tidegate_connections"].samples[0].value == 2
    assert "tidegate_connections 7.0" in second


async def test_healthz_and_readyz() -> None:
    ready = False

    def is_ready() -> bool:
        return ready

    async def is_ready_async() -> bool:
        return True

    async with serve(ready=is_ready) as client:
        assert (await client.get("/healthz")).status == 200
        assert (await client.get("/readyz")).status == 503
        ready = True
        assert (await client.get("/readyz")).status == 200
    async with serve(ready=is_ready_async) as client:
        assert (await client.get("/readyz")).status == 200
    async with serve() as client:
        assert (await client.get("/readyz")).status == 200


@pytest.mark.parametrize("seconds", ["", "abc", "0", "0.01", "61", "nan", "inf", "-1"])
async def test_profile_rejects_bad_seconds(seconds: str) -> None:
    async with serve() as client:
        response = await client.get(f"/debug/profile?seconds={seconds}")
        assert response.status == 400
        assert "seconds must be" in await response.text()


async def test_profile_returns_speedscope_json_one_at_a_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    started = asyncio.Event()
    original_start = SamplingProfiler.start

    def start_and_tell(self: SamplingProfiler) -> None:
        original_start(self)
        started.set()  # called in the loop thread by the handler

    monkeypatch.setattr(SamplingProfiler, "start", start_and_tell)
    async with serve() as client:
        async with asyncio.TaskGroup() as group:
            first = group.create_task(client.get("/debug/profile?seconds=0.3"))
            await started.wait()
            second = await client.get("/debug/profile?seconds=0.3")
        response = first.result()
        document = json.loads(await response.text())
    assert second.status == 409
    assert response.status == 200
    assert "speedscope.json" in response.headers["Content-Disposition"]
    assert document["profiles"][0]["type"] == "sampled"
    assert document["shared"]["frames"]


async def test_admin_token_guards_everything_but_probes() -> None:
    async with serve(admin_token=TOKEN) as client:
        for path in ("/", "/_count", "/_stack", "/metrics", "/debug/vars", "/debug/tasks"):
            denied = await client.get(path)
            assert denied.status == 401, path
            assert denied.headers["WWW-Authenticate"].startswith("Bearer")
            wrong = await client.get(path, headers={"Authorization": "Bearer nope"})
            assert wrong.status == 401, path
            allowed = await client.get(path, headers={"Authorization": f"Bearer {TOKEN}"})
            assert allowed.status == 200, path
        assert (await client.get(f"/_count?token={TOKEN}")).status == 200  # for browsers
        assert (await client.get("/healthz")).status == 200
        assert (await client.get("/readyz")).status == 200


async def test_empty_admin_token_is_refused() -> None:
    with pytest.raises(ValueError):
        add_ops_routes(
            web.Application(), stats=dict, registry=OpsMetrics(dict).registry, admin_token=""
        )
