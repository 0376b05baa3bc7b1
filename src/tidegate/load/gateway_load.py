"""``tidegate load`` against a gateway: the phases of one run, from the baseline to the verdict.

baseline -> connect (every client hello'd and in its rooms) -> load (pushes at the rate,
faults at their moments) -> settle (the last pushes reach the healthy clients) -> drain (our
clients gone; the gateway must return to the baseline) -> verdict, then the vanished sockets
are read again to learn whether the gateway reaped them.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

import aiohttp

from tidegate.addresses import format_address, http_url

from .display import Display
from .dumps import grown
from .fleet import Fleet, open_fleet, processes_for
from .limits import raise_open_files
from .plan import PushLog, PushPicker, plan_clients
from .probe import Probe, Unreachable, open_probe, reason
from .pushers import HTTP_IN_FLIGHT, HTTP_TIMEOUT, HttpPusher, UdpPusher, push_at_rate
from .verdict import Report
from .watch import Watch

__all__ = ["GatewayLoad", "run_gateway_load"]

SETTLE_TIMEOUT: Final = 5.0  # for the last pushes to reach healthy clients
# The gateway's sweeper checks idle timers every quarter of the shortest timeout: a vanished
# client is reaped up to 25% after its idle timeout (docs/operating.md), then lingers a bit.
REAP_SLACK: Final = 0.25


@dataclass(frozen=True, slots=True)
class GatewayLoad:
    tcp: tuple[str, int]
    admin: tuple[str, int]
    udp: tuple[str, int] | None = None
    http: tuple[str, int] | None = None
    secret: str | None = None
    api_key: str | None = None
    jwt_secret: str | None = None
    admin_token: str | None = None
    clients: int = 100
    rooms: int = 10
    rate: float = 100.0
    mix: Mapping[str, float] = field(default_factory=lambda: {"user": 60, "room": 30, "all": 10})
    duration: float = 10.0
    faults: Mapping[str, float] = field(default_factory=dict)
    drain: float = 10.0
    idle_timeout: float | None = None  # None: 2 x the heartbeat the gateway advertises
    processes: int | None = None
    seed: int | None = None

    def describe(self) -> dict[str, object]:
        return {
            "clients": self.clients,
            "rooms": self.rooms,
            "rate": self.rate,
            "mix": dict(self.mix),
            "duration": self.duration,
            "faults": dict(self.faults),
            "drain": self.drain,
            "idle_timeout": self.idle_timeout,
            "seed": self.seed,
        }


async def check_tcp(address: tuple[str, int], what: str) -> None:
    """Connect and close at once, so a wrong address fails here, with its name."""
    try:
        async with asyncio.timeout(5):
            _, writer = await asyncio.open_connection(*address)
    except (OSError, TimeoutError) as exc:
        why = "timed out" if isinstance(exc, TimeoutError) else reason(exc)
        raise Unreachable(f"no answer from {what} at {format_address(address)} ({why})") from None
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


async def run_gateway_load(settings: GatewayLoad, display: Display) -> Report:
    s = settings
    headers = {"Authorization": f"Bearer {s.admin_token}"} if s.admin_token else {}
    async with open_probe(
        vars_url=http_url(s.admin, "/debug/vars"),
        stack_url=http_url(s.admin, "/debug/tasks?debug=1"),
        headers=headers,
    ) as probe:
        await probe.sample(0.0, "check")  # the admin port first: the verdict needs it
        await check_tcp(s.tcp, "the client port")
        if s.http is not None:
            await check_tcp(s.http, "the HTTP push port")
        return await _run(s, probe, display)


async def _run(s: GatewayLoad, probe: Probe, display: Display) -> Report:
    run = f"L{secrets.token_hex(3)}"
    seed = s.seed if s.seed is not None else secrets.randbits(32)
    specs = plan_clients(
        s.clients, rooms=s.rooms, faults=s.faults, duration=s.duration, run=run, seed=seed
    )
    picker = PushPicker(specs, s.rooms, s.mix, run=run, seed=seed)
    processes = s.processes or processes_for(s.clients, raise_open_files())
    watch = Watch(probe, display)
    notes: list[str] = []
    baseline = await watch.baseline()
    before = await probe.dump()
    accepted_before = await probe.counters("pushes")
    refused_before = await probe.counters("rejections")
    log: list[tuple[int, str]] = []
    stop_sampling = asyncio.Event()
    async with asyncio.TaskGroup() as background:
        background.create_task(watch.sample_while(stop_sampling), name="load-sampler")
        async with open_fleet(processes) as fleet:
            display.update(clients_planned=s.clients, clients_up=0)
            watch.enter("connect", f"{s.clients} clients in {processes} process(es)")
            progress = background.create_task(_show_progress(fleet, display, stop_sampling))
            await fleet.connect(specs, tcp=s.tcp, jwt_secret=s.jwt_secret)
            heartbeat = fleet.heartbeat or 25.0
            idle_timeout = s.idle_timeout or 2 * heartbeat
            watch.enter("load", f"{s.rate:g} pushes/s for {s.duration:g}s")
            load_start = watch.now()
            await fleet.load()
            sent, push_errors = await _push(s, picker, log, run, display)
            planned = round(s.rate * s.duration)
            if sent < planned:
                notes.append(
                    f"pushes: {sent} of the {planned} planned left in the {s.duration:g}s load"
                    f" ({sent / s.duration:.1f}/s of {s.rate:g}/s asked): the HTTP ingress did"
                    f" not answer fast enough (at most {HTTP_IN_FLIGHT} pushes in flight)"
                )
            watch.enter("settle")
            healthy = [spec for spec in specs if spec.fault is None]
            expected = sum(PushLog(log).expected(spec) for spec in healthy)
            if not await fleet.wait_delivered(expected, SETTLE_TIMEOUT):
                notes.append(
                    f"healthy clients still missed pushes {SETTLE_TIMEOUT:g}s after the last"
                )
            await fleet.finish(log)
            stop_sampling.set()
            await progress
            window = s.drain
            vanished = [spec for spec in specs if spec.fault == "vanish"]
            if vanished:
                last = max(spec.fault_at for spec in vanished)
                reap_at = load_start + last + idle_timeout * (1 + REAP_SLACK)
                wait = max(0.0, reap_at - watch.now())
                window = s.drain + wait
                notes.append(
                    f"{len(vanished)} vanished clients (silent, no FIN): the gateway must reap"
                    f" them by its idle timeout ({idle_timeout:g}s after the last went silent,"
                    f" at {load_start + last:.1f}s); drain window {s.drain:g}s"
                    + (f" + {wait:.1f}s for that" if wait else "")
                )
            watch.enter("drain", f"up to {window:.1f}s")
            settled_after, final = await watch.drain(baseline, window)
            after = await probe.dump()
            accepted = _grown_counts(accepted_before, await probe.counters("pushes"))
            refused = _grown_counts(refused_before, await probe.counters("rejections"))
            watch.enter("done")
            tally = await fleet.release()
    if push_errors:
        errors = ", ".join(f"{why} {n}" for why, n in sorted(push_errors.items()))
        notes.append(f"pushes that failed to leave: {errors}")
    ingresses = ", ".join(f"{name} {int(n)}" for name, n in sorted(accepted.items())) or "none"
    notes.append(f"the gateway accepted {int(sum(accepted.values()))} pushes ({ingresses})")
    if refused:
        reasons = ", ".join(f"{why} {int(n)}" for why, n in sorted(refused.items()))
        notes.append(f"the gateway refused pushes at ingress: {reasons}")
    report = Report(
        target={
            "tcp": format_address(s.tcp),
            "udp": None if s.udp is None else format_address(s.udp),
            "http": None if s.http is None else format_address(s.http),
            "admin": format_address(s.admin),
            "stack_url": probe.stack_url,
        },
        settings={**s.describe(), "seed": seed, "processes": processes, "heartbeat": heartbeat},
        baseline=baseline,
        final=final,
        samples=watch.samples,
        phases=watch.phases,
        drain_seconds=window,
        settled_after=settled_after,
        notes=notes,
        gateway={"accepted": accepted, "refused": refused, "push_errors": dict(push_errors)},
        sent=sent,
        planned=planned,
        delivered=tally.delivered,
        lost=tally.lost,
        duplicates=tally.duplicates,
        wrong_target=tally.wrong_target,
        tally=tally,
        latency=tally.latency,
    )
    if report.verdict != "NO LEAK" and before is not None and after is not None:
        report.grew = grown(before, after)
    return report


def _grown_counts(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0) > 0}


async def _push(
    s: GatewayLoad, picker: PushPicker, log: list[tuple[int, str]], run: str, display: Display
) -> tuple[int, Counter[str]]:
    """Push for the whole load phase; returns how many were sent, and the errors of those
    that failed to leave (by kind)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + s.duration
    connector = aiohttp.TCPConnector(limit=HTTP_IN_FLIGHT)
    timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT)
    async with (
        aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
        asyncio.TaskGroup() as requests,
    ):
        pushers: list[UdpPusher | HttpPusher] = []
        if s.udp is not None:
            pushers.append(UdpPusher(s.udp, secret=s.secret, run=run))
        if s.http is not None:
            pushers.append(HttpPusher(session, s.http, api_key=s.api_key, run=run, group=requests))
        try:
            sent = await push_at_rate(
                pushers,
                picker,
                rate=s.rate,
                duration=s.duration,
                log=log,
                progress=lambda n: display.update(sent=n),
            )
            await asyncio.sleep(max(0.0, end - loop.time()))
        finally:
            for pusher in pushers:
                await pusher.aclose()
    errors: Counter[str] = Counter()
    for pusher in pushers:
        errors.update(pusher.errors)
    return sent, errors


async def _show_progress(fleet: Fleet, display: Display, stop: asyncio.Event) -> None:
    while not stop.is_set():
        progress = fleet.progress()
        display.update(clients_up=progress.up, delivered=progress.delivered)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.25)
