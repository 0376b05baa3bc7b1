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

__all__ = ["GatewayLoad", "Reaping", "run_gateway_load"]

SETTLE_TIMEOUT: Final = 5.0  # for the last pushes to reach healthy clients
# A gateway that does not publish its settings: tidegate's defaults for what it does not say.
DEFAULT_CLOSE_LINGER: Final = 2.0
LONGEST_SWEEP: Final = 0.5  # the sweeper runs at least this often (docs/operating.md)


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


@dataclass(frozen=True, slots=True)
class Reaping:
    """How long the gateway takes to cut a client that went silent without a FIN: its idle
    timeout runs out (seen at the next sweep), it sends the error frame and FIN, then its
    close linger waits for the peer's FIN that never comes (ended at the next sweep)."""

    idle_timeout: float
    close_linger: float
    sweep_interval: float
    published: bool  # read from the gateway's /debug/vars, not assumed

    @classmethod
    def of(
        cls, settings: Mapping[str, float], *, heartbeat: float, idle_timeout: float | None
    ) -> Reaping:
        """From the gateway's published ``settings``; ``idle_timeout`` (the user's) wins,
        else the published one, else 2 x the ``heartbeat`` its welcome advertised."""
        published = "idle_timeout" in settings and "close_linger" in settings
        return cls(
            idle_timeout=idle_timeout or settings.get("idle_timeout") or 2 * heartbeat,
            close_linger=settings.get("close_linger", DEFAULT_CLOSE_LINGER),
            sweep_interval=settings.get("sweep_interval", LONGEST_SWEEP),
            published=published,
        )

    @property
    def seconds(self) -> float:
        return self.idle_timeout + self.close_linger + 2 * self.sweep_interval

    def describe(self) -> str:
        source = "published by the gateway" if self.published else "assumed: not published"
        return (
            f"idle timeout {self.idle_timeout:g}s + close linger {self.close_linger:g}s"
            f" + 2 sweeps of {self.sweep_interval:g}s, {source}"
        )


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
        leaked_url=http_url(s.admin, "/debug/tasks/leaked"),
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
    published = await probe.settings()
    before = await probe.dump()
    proven_before = await probe.proven()
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
            reaping = Reaping.of(published, heartbeat=heartbeat, idle_timeout=s.idle_timeout)
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
                wait = max(0.0, load_start + last + reaping.seconds - watch.now())
                window = s.drain + wait
                notes.append(
                    f"{len(vanished)} vanished clients (silent, no FIN): the gateway must cut"
                    f" them {reaping.seconds:g}s after the last went silent (at"
                    f" {load_start + last:.1f}s): {reaping.describe()}; drain window"
                    f" {s.drain:g}s" + (f" + {wait:.1f}s for that" if wait else "")
                )
            watch.enter("drain", f"up to {window:.1f}s")
            settled_after, final = await watch.drain(baseline, window)
            after = await probe.dump()
            proven_after = await probe.proven()
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
            "leaked_url": probe.leaked_url if proven_after is not None else None,
        },
        settings={
            **s.describe(),
            "seed": seed,
            "processes": processes,
            "heartbeat": heartbeat,
            "idle_timeout": reaping.idle_timeout,
            "close_linger": reaping.close_linger,
        },
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
        proven_before=proven_before,
        proven=proven_after,
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
