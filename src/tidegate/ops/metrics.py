"""Prometheus metrics, read at scrape time from a stats callable.

The gateway's hot path only bumps plain integers. ``GatewayCollector`` calls the stats provider
once per scrape and turns the figures into metric families; process figures (tasks, threads,
open fds, RSS) are measured at that moment too. The two histograms (push-to-write latency, event
loop lag) are real ``prometheus_client.Histogram``\\ s, observed where the time is measured.

Everything lives in an ``OpsMetrics`` object with its own ``CollectorRegistry``; nothing is put
in prometheus_client's global registry, so two gateways in one process (tests) never collide.

The stats provider returns a ``Stats`` mapping. Known keys (all optional; a missing key leaves
its metric out of the exposition, unknown keys are ignored):

==================  ==========  ==================================================  ===========
key                 value       metric                                              type
==================  ==========  ==================================================  ===========
connections         number      tidegate_connections                                gauge
handshaking         number      tidegate_connections_handshaking                    gauge
closing             number      tidegate_connections_closing                        gauge
users               number      tidegate_users                                      gauge
rooms               number      tidegate_rooms                                      gauge
buffered_bytes      number      tidegate_buffered_bytes                             gauge
max_buffered_bytes  number      tidegate_connection_max_buffered_bytes              gauge
kernel_send_queue_bytes number  tidegate_kernel_send_queue_bytes                    gauge
udp_receive_buffer_bytes number tidegate_udp_receive_buffer_bytes                   gauge
replay_cache_bytes  number      tidegate_replay_cache_bytes                         gauge
replay_cache_ids    number      tidegate_replay_cache_ids                           gauge
udp_receive_drops   number      tidegate_udp_receive_drops_total                    counter
accepted            number      tidegate_connections_accepted_total                 counter
deliveries          number      tidegate_deliveries_total                           counter
fanout_yields       number      tidegate_fanout_yields_total                        counter
fanout_drains       number      tidegate_fanout_drains_total                        counter
pushes              {ingress}   tidegate_pushes_total{ingress="udp|http|..."}       counter
pushes_by_target    {kind}      tidegate_pushes_by_target_total{target="user|.."}   counter
drops               {reason}    tidegate_drops_total{reason="drop-oldest|..."}      counter
disconnects         {reason}    tidegate_disconnects_total{reason="idle_timeout|.."} counter
rejections          {reason}    tidegate_ingress_rejections_total{reason="..."}     counter
auth_failures       {reason}    tidegate_auth_failures_total{reason="expired|.."}   counter
broker_*            number      tidegate_broker_* (cluster mode; docs/scaling.md)   gauge/counter
broker_dropped      {reason}    tidegate_broker_dropped_total{reason="..."}         counter
accept_errors       {error}     tidegate_accept_errors_total{error="EMFILE|..."}    counter
http_refusals       {reason}    tidegate_http_refusals_total{reason="..."}          counter
tasks               number      tidegate_tasks (default: measured, see below)       gauge
threads             number      tidegate_threads (default: measured)                gauge
open_fds            number      tidegate_open_fds (default: measured)               gauge
rss_bytes           number      tidegate_resident_memory_bytes (default: measured)  gauge
==================  ==========  ==================================================  ===========

Two figures come from the proof of leak, not from the provider: ``tidegate_leaked_tasks``
(tasks proven blocked forever) and ``tidegate_leak_proof_duration_seconds`` (how long that
proof held the loop), from ``tidegate.leaks.proven_leaks()``. A scrape takes a new proof only
when the latest is older than its sharing period (at least 1 s, 20x its duration), the one
``/debug/tasks/leaked`` answers from: scrapes cost the loop at most 5% at any rate, and the
metric and the endpoint agree. Only on the loop serving the scrape (``prove_leaks=False``
leaves them out: the ``--workers`` supervisor, which has no gateway loop of its own).

``stats_from_snapshot(gateway.statistics())`` adapts the gateway's frozen statistics dataclass;
a nested one (the broker's figures, in cluster mode) becomes keys with its field's name as a
prefix (``broker_up``), so the ``tidegate_broker_*`` metrics exist only with a broker.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import resource
import sys
import threading
from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Final

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from tidegate import leaks

__all__ = [
    "LAG_BUCKETS",
    "LATENCY_BUCKETS",
    "GatewayCollector",
    "LoopHistogram",
    "OpsMetrics",
    "ProcessStats",
    "Stats",
    "StatsProvider",
    "process_stats",
    "stats_from_snapshot",
]

Stats = Mapping[str, float | Mapping[str, float]]
StatsProvider = Callable[[], Stats]

# key -> (metric name, help)
_GAUGES: Final = {
    "connections": ("tidegate_connections", "Live client connections, handshake included."),
    "handshaking": ("tidegate_connections_handshaking", "Connections that have not sent hello."),
    "closing": ("tidegate_connections_closing", "Connections flushing their last error frame."),
    "users": ("tidegate_users", "Distinct users with at least one connection."),
    "rooms": ("tidegate_rooms", "Rooms with at least one member."),
    "buffered_bytes": (
        "tidegate_buffered_bytes",
        "Outbound bytes held for all connections (gateway buffers and transports).",
    ),
    "max_buffered_bytes": (
        "tidegate_connection_max_buffered_bytes",
        "Outbound bytes held for the single most backlogged connection.",
    ),
    "broker_up": ("tidegate_broker_up", "1 while connected to a broker server."),
    "broker_ready": (
        "tidegate_broker_ready",
        "1 while the broker passes its health checks (canary, subscriptions): /readyz.",
    ),
    "broker_subscriptions": (
        "tidegate_broker_subscriptions",
        "Broker subjects this node is subscribed to (its users, its rooms, all).",
    ),
    "broker_subscriptions_pending": (
        "tidegate_broker_subscriptions_pending",
        "Broker subscriptions sent but not yet confirmed by a round trip.",
    ),
    "broker_subscriptions_deaf": (
        "tidegate_broker_subscriptions_deaf",
        "Broker subscriptions refused by the server or found silent, being retried.",
    ),
    "broker_canary_rtt_seconds": (
        "tidegate_broker_canary_rtt_seconds",
        "Round trip of the last canary through the broker.",
    ),
    "kernel_send_queue_bytes": (
        "tidegate_kernel_send_queue_bytes",
        "Bytes in the kernel send queues of the client sockets: written, not yet "
        "acknowledged by the clients (on top of tidegate_buffered_bytes).",
    ),
    "udp_receive_buffer_bytes": (
        "tidegate_udp_receive_buffer_bytes",
        "Size of the UDP socket's kernel receive buffer, as the kernel reports it.",
    ),
    "replay_cache_bytes": (
        "tidegate_replay_cache_bytes",
        "Memory counted for the ids of the signed-UDP replay cache (bounded by --replay-memory).",
    ),
    "replay_cache_ids": ("tidegate_replay_cache_ids", "Ids held by the signed-UDP replay cache."),
}
_COUNTERS: Final = {
    "accepted": ("tidegate_connections_accepted", "TCP connections accepted."),
    "deliveries": ("tidegate_deliveries", "Message frames queued to a connection."),
    "fanout_yields": (
        "tidegate_fanout_yields",
        "End-of-turn flushes that used up fanout_budget and yielded to the loop.",
    ),
    "fanout_drains": (
        "tidegate_fanout_drains",
        "Pushes that found the shared frames at their bound and finished the flush at once.",
    ),
    "broker_published": ("tidegate_broker_published", "Pushes handed to the broker."),
    "broker_received": (
        "tidegate_broker_received",
        "Pushes from other nodes, through the broker, delivered here.",
    ),
    "broker_echoes": (
        "tidegate_broker_echoes",
        "This node's own pushes seen back from the broker and skipped (served locally).",
    ),
    "broker_canaries": ("tidegate_broker_canaries", "Canaries sent through the broker."),
    "broker_canary_failures": (
        "tidegate_broker_canary_failures",
        "Health ticks that found a canary overdue.",
    ),
    "broker_probes": (
        "tidegate_broker_probes",
        "Probes sent on subscribed subjects (the rolling subscription audit).",
    ),
    "broker_probe_failures": (
        "tidegate_broker_probe_failures",
        "Probes that did not come back while the canary did.",
    ),
    "broker_subscription_failures": (
        "tidegate_broker_subscription_failures",
        "Broker subscriptions found deaf (refused by the server, or silent).",
    ),
    "broker_resubscribes": (
        "tidegate_broker_resubscribes",
        "Deaf broker subscriptions subscribed again.",
    ),
    "broker_disconnects": ("tidegate_broker_disconnects", "Broker connections lost."),
    "broker_reconnects": ("tidegate_broker_reconnects", "Broker connections re-established."),
    "udp_receive_drops": (
        "tidegate_udp_receive_drops",
        "Datagrams the kernel dropped for the UDP ingress (its receive buffer was full).",
    ),
}
# key -> (metric name, label, help)
_LABELLED: Final = {
    "pushes": ("tidegate_pushes", "ingress", "Pushes accepted, by ingress."),
    "pushes_by_target": (
        "tidegate_pushes_by_target",
        "target",
        "Pushes accepted, by target kind (user, room, all).",
    ),
    "drops": ("tidegate_drops", "reason", "Message frames discarded by the overflow policy."),
    "disconnects": (
        "tidegate_disconnects",
        "reason",
        "Connections ended, by error code or peer_eof / peer_reset.",
    ),
    "rejections": (
        "tidegate_ingress_rejections",
        "reason",
        "Pushes refused at ingress, by reason; nothing was delivered.",
    ),
    "auth_failures": (
        "tidegate_auth_failures",
        "reason",
        "Client tokens refused at hello, by reason.",
    ),
    "broker_dropped": (
        "tidegate_broker_dropped",
        "reason",
        "Pushes delivered here but not handed to the broker, and broker messages that were "
        "not a valid push, by reason.",
    ),
    "accept_errors": (
        "tidegate_accept_errors",
        "error",
        "Failed accept() calls of the listeners, by errno name (EMFILE: out of descriptors).",
    ),
    "http_refusals": (
        "tidegate_http_refusals",
        "reason",
        "HTTP connections (push API and admin) turned away or cut: too_many_connections, "
        "header_timeout, malformed.",
    ),
}
# key -> (metric name, help), from the proof of leak (see the module docstring).
_PROOF: Final = {
    "leaked_tasks": (
        "tidegate_leaked_tasks",
        "Tasks proven blocked forever by the latest proof of leak (GET /debug/tasks/leaked "
        "lists them); taken at most every max(1 s, 20x its duration).",
    ),
    "seconds": (
        "tidegate_leak_proof_duration_seconds",
        "How long the latest proof of leak held the event loop.",
    ),
}
_PROCESS: Final = {
    "tasks": ("tidegate_tasks", "Live asyncio tasks in the gateway's event loop."),
    "threads": ("tidegate_threads", "Live Python threads in the process."),
    "open_fds": ("tidegate_open_fds", "Open file descriptors of the process."),
    "rss_bytes": ("tidegate_resident_memory_bytes", "Resident set size of the process."),
}

LATENCY_BUCKETS: Final = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0,
)  # fmt: skip
LAG_BUCKETS: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class ProcessStats:
    """Process figures at one instant. ``tasks`` is None outside the loop (and without one)."""

    tasks: int | None
    threads: int
    open_fds: int | None
    rss_bytes: int | None


def _count_fds() -> int | None:
    for directory in ("/proc/self/fd", "/dev/fd"):
        try:
            # listdir opens the directory itself, which shows up in the listing.
            return max(len(os.listdir(directory)) - 1, 0)
        except OSError:
            continue
    return None


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm", "rb") as statm:
            resident_pages = int(statm.read().split()[1])
        return resident_pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        pass
    # Fallback (macOS, BSD): the peak, not the current size; KiB on Linux, bytes on macOS.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def _count_tasks(loop: asyncio.AbstractEventLoop | None) -> int | None:
    try:
        return len(asyncio.all_tasks())  # called inside the loop, the usual case
    except RuntimeError:
        pass
    if loop is None or loop.is_closed():
        return None
    # From another thread: all_tasks iterates a WeakSet and retries if it changes meanwhile.
    return len(asyncio.all_tasks(loop))


def process_stats(loop: asyncio.AbstractEventLoop | None = None) -> ProcessStats:
    """Tasks of the running loop (or of ``loop``), threads, open fds and RSS, measured now."""
    return ProcessStats(
        tasks=_count_tasks(loop),
        threads=threading.active_count(),
        open_fds=_count_fds(),
        rss_bytes=_rss_bytes(),
    )


def stats_from_snapshot(snapshot: object) -> dict[str, float | Mapping[str, float]]:
    """Adapt a frozen statistics dataclass (``Gateway.statistics()``) to ``Stats``: numeric
    fields stay numbers, mapping fields stay mappings, a nested dataclass gives keys prefixed
    with its field's name, anything else (None included) is dropped."""
    if not dataclasses.is_dataclass(snapshot) or isinstance(snapshot, type):
        raise TypeError(f"expected a dataclass instance, got {type(snapshot).__name__}")
    out: dict[str, float | Mapping[str, float]] = {}
    for field in dataclasses.fields(snapshot):
        value = getattr(snapshot, field.name)
        if isinstance(value, bool):
            continue
        if isinstance(value, int | float):
            out[field.name] = value
        elif isinstance(value, Mapping):
            out[field.name] = {str(k): v for k, v in value.items() if isinstance(v, int | float)}
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            for key, inner in stats_from_snapshot(value).items():
                out[f"{field.name}_{key}"] = inner
    return out


def _scalar(stats: Stats, key: str) -> float | None:
    value = stats.get(key)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


class GatewayCollector(Collector):
    """A custom collector: calls ``stats()`` once per scrape; see the module docstring."""

    def __init__(
        self,
        stats: StatsProvider,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        prove_leaks: bool = True,
    ) -> None:
        self._stats = stats
        self._loop = loop
        self._prove_leaks = prove_leaks

    def describe(self) -> Iterator[Metric]:
        # Lets the registry check names at registration without calling the provider.
        proof = _PROOF.values() if self._prove_leaks else ()
        for name, doc in (*_GAUGES.values(), *_PROCESS.values(), *proof):
            yield GaugeMetricFamily(name, doc)
        for name, doc in _COUNTERS.values():
            yield CounterMetricFamily(name, doc)
        for name, label, doc in _LABELLED.values():
            yield CounterMetricFamily(name, doc, labels=[label])

    def collect(self) -> Iterator[Metric]:
        stats = self._stats()
        for key, (name, doc) in _GAUGES.items():
            value = _scalar(stats, key)
            if value is not None:
                yield GaugeMetricFamily(name, doc, value=value)
        for key, (name, doc) in _COUNTERS.items():
            value = _scalar(stats, key)
            if value is not None:
                yield CounterMetricFamily(name, doc, value=value)
        for key, (name, label, doc) in _LABELLED.items():
            values = stats.get(key)
            if not isinstance(values, Mapping):
                continue
            family = CounterMetricFamily(name, doc, labels=[label])
            for label_value, count in sorted(values.items()):
                family.add_metric([str(label_value)], float(count))
            yield family
        measured = process_stats(self._loop)
        for key, (name, doc) in _PROCESS.items():
            value = _scalar(stats, key)
            if value is None:
                raw = getattr(measured, key)
                value = None if raw is None else float(raw)
            if value is not None:
                yield GaugeMetricFamily(name, doc, value=value)
        if self._prove_leaks:
            yield from _proof_figures()


def _proof_figures() -> Iterator[Metric]:
    """The proof-of-leak gauges, on the loop serving the scrape (none outside one)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    proof = leaks.proven_leaks()
    for key, value in (("leaked_tasks", proof.count), ("seconds", proof.seconds)):
        name, doc = _PROOF[key]
        yield GaugeMetricFamily(name, doc, value=float(value))


class LoopHistogram(Collector):
    """A Prometheus histogram for values observed on one thread, the event loop's.

    ``observe`` is a bisect and two additions, with no lock: measured here ~4x cheaper than
    ``prometheus_client.Histogram.observe``, which matters once per push on the fan-out path.
    Scrapes are served on the same loop, so they never see a half-made observation.
    """

    def __init__(self, name: str, documentation: str, *, buckets: tuple[float, ...]) -> None:
        self.name = name
        self.documentation = documentation
        self._bounds = tuple(float(bound) for bound in buckets)
        self._counts = [0] * (len(self._bounds) + 1)  # the last one is +Inf
        self._sum = 0.0

    def observe(self, value: float) -> None:
        self._counts[bisect_left(self._bounds, value)] += 1  # le: value <= bound
        self._sum += value

    def describe(self) -> Iterator[Metric]:
        yield HistogramMetricFamily(self.name, self.documentation)

    def collect(self) -> Iterator[Metric]:
        buckets: list[tuple[str, float]] = []
        total = 0
        labels = [repr(bound) for bound in self._bounds] + ["+Inf"]  # as the client library
        for label, count in zip(labels, self._counts, strict=True):
            total += count
            buckets.append((label, total))
        yield HistogramMetricFamily(
            self.name, self.documentation, buckets=buckets, sum_value=self._sum
        )


class OpsMetrics:
    """The gateway's registry: the stats collector plus the two histograms.

    ``push_latency.observe(seconds)`` from push accepted to bytes handed to the transport;
    ``loop_lag`` is observed by the ``Watchdog``.
    """

    def __init__(
        self,
        stats: StatsProvider,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        prove_leaks: bool = True,
    ) -> None:
        self.stats = stats
        self.registry = CollectorRegistry(auto_describe=True)
        self.collector = GatewayCollector(stats, loop=loop, prove_leaks=prove_leaks)
        self.registry.register(self.collector)
        self.push_latency = LoopHistogram(
            "tidegate_push_write_latency_seconds",
            "Time from a push being accepted to the end of the loop turn that wrote its "
            "frames to the clients' transports.",
            buckets=LATENCY_BUCKETS,
        )
        self.registry.register(self.push_latency)
        self.loop_lag = Histogram(
            "tidegate_event_loop_lag_seconds",
            "How late the event loop ran a timer: time it could not serve anything else.",
            buckets=LAG_BUCKETS,
            registry=self.registry,
        )
