"""/metrics: the exposition parses with the official parser and follows the stats provider."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from tidegate.gateway.stats import GatewayStatistics
from tidegate.ops.metrics import OpsMetrics, Stats, process_stats, stats_from_snapshot


class FakeStats:
    """A stats provider whose figures a test changes between scrapes; counts its calls."""

    def __init__(self) -> None:
        self.calls = 0
        self.values: dict[str, float | Mapping[str, float]] = {
            "connections": 3,
            "handshaking": 1,
            "buffered_bytes": 2048,
            "max_buffered_bytes": 1024,
            "accepted": 10,
            "deliveries": 5,
            "pushes": {"udp": 4, "http": 1},
            "pushes_by_target": {"user": 2, "room": 3},
            "drops": {},
            "disconnects": {"idle_timeout": 2},
            "rejections": {"bad_signature": 7},
        }

    def __call__(self) -> Stats:
        self.calls += 1
        return dict(self.values)


def scrape(metrics: OpsMetrics) -> dict[str, list[Sample]]:
    text = generate_latest(metrics.registry).decode()
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def value(samples: dict[str, list[Sample]], name: str, **labels: str) -> float:
    for family in samples.values():
        for sample in family:
            if sample.name == name and sample.labels == labels:
                return sample.value
    raise AssertionError(f"no sample {name}{labels}")


def test_values_follow_the_stats_provider() -> None:
    stats = FakeStats()
    metrics = OpsMetrics(stats)
    assert stats.calls == 0  # registering does not call the provider; scrapes do

    first = scrape(metrics)
    assert stats.calls == 1
    assert value(first, "tidegate_connections") == 3
    assert value(first, "tidegate_connections_handshaking") == 1
    assert value(first, "tidegate_buffered_bytes") == 2048
    assert value(first, "tidegate_connections_accepted_total") == 10
    assert value(first, "tidegate_deliveries_total") == 5
    assert value(first, "tidegate_pushes_total", ingress="udp") == 4
    assert value(first, "tidegate_pushes_total", ingress="http") == 1
    assert value(first, "tidegate_pushes_by_target_total", target="room") == 3
    assert value(first, "tidegate_disconnects_total", reason="idle_timeout") == 2
    assert value(first, "tidegate_ingress_rejections_total", reason="bad_signature") == 7
    assert first["tidegate_drops"] == []  # declared, no label values yet

    stats.values["connections"] = 4
    stats.values["deliveries"] = 9
    stats.values["pushes"] = {"udp": 6, "http": 1}
    stats.values["drops"] = {"drop-oldest": 1}
    second = scrape(metrics)
    assert value(second, "tidegate_connections") == 4
    assert value(second, "tidegate_deliveries_total") == 9
    assert value(second, "tidegate_pushes_total", ingress="udp") == 6
    assert value(second, "tidegate_drops_total", reason="drop-oldest") == 1


UNITS = ("bytes", "seconds")
SAMPLE_SUFFIXES = ("_total", "_bucket", "_sum", "_count", "_created")


def unit_misplaced(name: str) -> str | None:
    """The unit word in `name` that is not its suffix (Prometheus: the unit comes last, only
    a sample suffix may follow it), else None."""
    for suffix in SAMPLE_SUFFIXES:
        if name.endswith(suffix):
            name = name.removesuffix(suffix)
            break
    words = name.split("_")
    for unit in UNITS:
        if unit in words and words[-1] != unit:
            return unit
    return None


def test_the_unit_check_catches_a_unit_before_the_end() -> None:
    assert unit_misplaced("tidegate_connection_buffered_bytes_max") == "bytes"
    assert unit_misplaced("tidegate_lag_seconds_p99_count") == "seconds"
    assert unit_misplaced("tidegate_connection_max_buffered_bytes") is None
    assert unit_misplaced("tidegate_event_loop_lag_seconds_bucket") is None
    assert unit_misplaced("tidegate_sent_bytes_total") is None


def test_types_and_names_follow_prometheus_conventions() -> None:
    metrics = OpsMetrics(FakeStats())
    metrics.loop_lag.observe(0.01)
    text = generate_latest(metrics.registry).decode()
    families = list(text_string_to_metric_families(text))
    types = {family.name: family.type for family in families}
    for name, kind in types.items():
        assert name.startswith("tidegate_"), name
        if kind == "counter":
            assert f"{name}_total" in text, name
    # Every name: those scraped (families and their samples) and those the collector
    # declares, so a metric the fake provider leaves out is checked too.
    names = set(types) | {sample.name for family in families for sample in family.samples}
    names |= {family.name for family in metrics.collector.describe()}
    misplaced = {name: unit for name in names if (unit := unit_misplaced(name))}
    assert not misplaced, f"the unit must be the last word of the name: {misplaced}"
    assert "tidegate_connection_max_buffered_bytes" in names
    assert types["tidegate_connections"] == "gauge"
    assert types["tidegate_pushes"] == "counter"
    assert types["tidegate_push_write_latency_seconds"] == "histogram"
    assert types["tidegate_event_loop_lag_seconds"] == "histogram"
    assert types["tidegate_resident_memory_bytes"] == "gauge"


def test_histograms_count_observations() -> None:
    metrics = OpsMetrics(FakeStats())
    metrics.push_latency.observe(0.0003)
    metrics.push_latency.observe(0.2)
    metrics.loop_lag.observe(0.002)
    samples = scrape(metrics)
    assert value(samples, "tidegate_push_write_latency_seconds_count") == 2
    assert value(samples, "tidegate_push_write_latency_seconds_bucket", le="0.0005") == 1
    assert value(samples, "tidegate_push_write_latency_seconds_bucket", le="+Inf") == 2
    assert value(samples, "tidegate_event_loop_lag_seconds_count") == 1


async def test_process_figures_are_measured_at_scrape_time() -> None:
    stats = FakeStats()
    metrics = OpsMetrics(stats)
    samples = scrape(metrics)
    assert value(samples, "tidegate_tasks") >= 1  # this test's own task at least
    assert value(samples, "tidegate_threads") >= 1
    assert value(samples, "tidegate_open_fds") > 0
    assert value(samples, "tidegate_resident_memory_bytes") > 1024 * 1024
    stats.values["tasks"] = 12345  # a provider may supply them itself
    assert value(scrape(metrics), "tidegate_tasks") == 12345


def test_process_stats_outside_a_loop() -> None:
    figures = process_stats()
    assert figures.tasks is None
    assert figures.threads >= 1
    assert figures.rss_bytes is not None and figures.rss_bytes > 0


def test_registries_are_independent() -> None:
    one, two = OpsMetrics(FakeStats()), OpsMetrics(FakeStats())
    one.push_latency.observe(1.0)
    assert value(scrape(two), "tidegate_push_write_latency_seconds_count") == 0


def test_adapts_the_gateway_statistics_snapshot() -> None:
    snapshot = GatewayStatistics(
        connections=2,
        handshaking=0,
        closing=1,
        accepted=8,
        users=2,
        rooms=1,
        pushes=MappingProxyType({"udp": 3}),
        pushes_by_target=MappingProxyType({"all": 3}),
        deliveries=6,
        fanout_yields=0,
        fanout_drains=0,
        drops=MappingProxyType({}),
        disconnects=MappingProxyType({"peer_eof": 6}),
        rejections=MappingProxyType({"replay": 1}),
        auth_failures=MappingProxyType({"expired": 2}),
        accept_errors=MappingProxyType({"EMFILE": 4}),
        http_refusals=MappingProxyType({"header_timeout": 5}),
        buffered_bytes=0,
        max_buffered_bytes=0,
        kernel_send_queue_bytes=4096,
        udp_receive_drops=None,
        udp_receive_buffer_bytes=212992,
        replay_cache_bytes=300,
        replay_cache_ids=1,
    )
    samples = scrape(OpsMetrics(lambda: stats_from_snapshot(snapshot)))
    assert value(samples, "tidegate_connections") == 2
    assert value(samples, "tidegate_connections_closing") == 1
    assert value(samples, "tidegate_users") == 2
    assert value(samples, "tidegate_pushes_by_target_total", target="all") == 3
    assert value(samples, "tidegate_disconnects_total", reason="peer_eof") == 6
    assert value(samples, "tidegate_ingress_rejections_total", reason="replay") == 1
    assert value(samples, "tidegate_auth_failures_total", reason="expired") == 2
    assert value(samples, "tidegate_accept_errors_total", error="EMFILE") == 4
    assert value(samples, "tidegate_http_refusals_total", reason="header_timeout") == 5
    assert value(samples, "tidegate_kernel_send_queue_bytes") == 4096
    assert value(samples, "tidegate_replay_cache_bytes") == 300
    assert "tidegate_udp_receive_drops" not in samples  # unknown: left out


def documented_names(metrics: OpsMetrics) -> set[str]:
    """What the exposition calls each metric the registry declares: counters with
    ``_total``, as the docs name them."""
    families = [
        *metrics.collector.describe(),
        *metrics.push_latency.describe(),
        *metrics.loop_lag.describe(),
    ]
    return {f"{f.name}_total" if f.type == "counter" else f.name for f in families}


def test_every_metric_is_in_the_docs() -> None:
    """docs/operating.md's metrics table names every metric declared here; the broker's,
    there as ``tidegate_broker_*``, are each named in docs/scaling.md."""
    root = Path(__file__).parents[2]
    operating = (root / "docs/operating.md").read_text()
    scaling = (root / "docs/scaling.md").read_text()
    names = documented_names(OpsMetrics(FakeStats()))
    assert "tidegate_leaked_tasks" in names
    missing = {
        name
        for name in names
        if f"`{name}`" not in (scaling if name.startswith("tidegate_broker_") else operating)
    }
    assert not missing, f"metrics missing from the docs' tables: {sorted(missing)}"


async def test_proven_leaks_are_counted_on_the_loop_that_scrapes() -> None:
    metrics = OpsMetrics(FakeStats())
    samples = scrape(metrics)
    assert value(samples, "tidegate_leaked_tasks") == 0
    assert value(samples, "tidegate_leak_proof_duration_seconds") >= 0
    # The supervisor's registry has no gateway loop to prove: no proof, no such metrics.
    quiet = OpsMetrics(FakeStats(), prove_leaks=False)
    assert "tidegate_leaked_tasks" not in documented_names(quiet)
    assert "tidegate_leaked_tasks" not in scrape(quiet)


def test_no_proof_outside_a_loop() -> None:
    assert "tidegate_leaked_tasks" not in scrape(OpsMetrics(FakeStats()))
