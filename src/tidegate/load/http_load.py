"""``tidegate load http``: the seed method for any HTTP service.

baseline (``--count-url``, the dump at ``--stack-url`` and, for tidegate's dumps, the proven
leaks at ``/debug/tasks/leaked`` beside it) -> load (``--concurrency``
requests in flight to ``--url`` for ``--requests`` requests or ``--duration``) -> drain (our
connections closed; the count must return to its baseline) -> verdict. Works unchanged on a Go
service exposing ``runtime.NumGoroutine()`` and ``/debug/pprof/goroutine?debug=1``.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

import aiohttp

from .display import Display
from .dumps import grown
from .probe import Unreachable, leaked_url_beside, open_probe
from .stats import LatencyHistogram
from .verdict import Report
from .watch import Watch

__all__ = ["HttpLoad", "run_http_load"]


@dataclass(frozen=True, slots=True)
class HttpLoad:
    url: str
    count_url: str
    method: str = "GET"
    body: bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    concurrency: int = 10
    requests: int = 0  # 0: run for `duration`
    duration: float = 10.0
    stack_url: str | None = None
    probe_token: str | None = None
    drain: float = 10.0

    def describe(self) -> dict[str, object]:
        return {
            "url": self.url,
            "method": self.method,
            "concurrency": self.concurrency,
            "requests": self.requests,
            "duration": self.duration,
            "drain": self.drain,
        }


class _Hits:
    def __init__(self) -> None:
        self.sent = 0
        self.statuses: Counter[str] = Counter()
        self.latency = LatencyHistogram()


async def run_http_load(settings: HttpLoad, display: Display) -> Report:
    s = settings
    headers = {"Authorization": f"Bearer {s.probe_token}"} if s.probe_token else {}
    leaked_url = leaked_url_beside(s.stack_url)
    async with open_probe(
        count_url=s.count_url, stack_url=s.stack_url, leaked_url=leaked_url, headers=headers
    ) as probe:
        await probe.sample(0.0, "check")
        watch = Watch(probe, display)
        baseline = await watch.baseline()
        before = await probe.dump()
        proven_before = await probe.proven()
        hits = _Hits()
        stop = asyncio.Event()
        async with asyncio.TaskGroup() as background:
            background.create_task(watch.sample_while(stop), name="load-sampler")
            watch.enter("load", f"{s.concurrency} in flight")
            try:
                await _load(s, hits, display)
            finally:
                stop.set()
        if hits.sent and hits.statuses.get("error") == hits.sent:
            raise Unreachable(f"no answer from --url {s.url}: every request failed")
        watch.enter("drain", f"up to {s.drain:g}s")
        settled_after, final = await watch.drain(baseline, s.drain)
        after = await probe.dump()
        proven_after = await probe.proven()
        watch.enter("done")
    ok = sum(n for status, n in hits.statuses.items() if status.isdigit() and status < "400")
    report = Report(
        target={
            "url": s.url,
            "count_url": s.count_url,
            "stack_url": s.stack_url,
            "leaked_url": leaked_url if proven_after is not None else None,
        },
        settings=s.describe(),
        baseline=baseline,
        final=final,
        samples=watch.samples,
        phases=watch.phases,
        drain_seconds=s.drain,
        settled_after=settled_after,
        sent=hits.sent,
        delivered=ok,
        lost=hits.sent - ok,
        latency=hits.latency,
        requests=dict(hits.statuses),
        proven_before=proven_before,
        proven=proven_after,
    )
    if report.verdict != "NO LEAK" and before is not None and after is not None:
        report.grew = grown(before, after)
    return report


async def _load(s: HttpLoad, hits: _Hits, display: Display) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + s.duration
    budget = s.requests or None
    connector = aiohttp.TCPConnector(limit=s.concurrency)
    timeout = aiohttp.ClientTimeout(total=30)

    def more() -> bool:
        if budget is not None:
            return hits.sent < budget
        return loop.time() < end

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one_client() -> None:
            while more():
                hits.sent += 1
                started = time.perf_counter()
                try:
                    async with session.request(
                        s.method, s.url, data=s.body, headers=dict(s.headers)
                    ) as response:
                        await response.read()
                        hits.statuses[str(response.status)] += 1
                except (aiohttp.ClientError, TimeoutError):
                    hits.statuses["error"] += 1
                    continue
                hits.latency.add((time.perf_counter() - started) * 1e6)
                display.update(sent=hits.sent, delivered=hits.latency.count)

        async with asyncio.TaskGroup() as clients:
            for i in range(s.concurrency):
                clients.create_task(one_client(), name=f"load-http-{i}")
