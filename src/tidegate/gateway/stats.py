"""Counters the gateway keeps, and the immutable snapshot `Gateway.statistics()` returns."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

__all__ = ["BrokerStatistics", "Counters", "GatewayStatistics"]


@dataclass(frozen=True, slots=True, kw_only=True)
class BrokerStatistics:
    """A point-in-time copy of a cluster broker's figures (see docs/scaling.md). Totals are
    since start.

    - up: 1 while connected to a broker server, else 0. ready: 1 while `/readyz` would pass.
    - subscriptions: subjects this node is subscribed to for its users and rooms (and `all`);
      subscriptions_pending: of those, sent but not yet confirmed by a round trip;
      subscriptions_deaf: refused by the server or found silent by a probe, being retried.
    - published: pushes handed to the broker for the other nodes; received: pushes from other
      nodes delivered here; echoes: this node's own pushes seen back and skipped.
    - canaries: round trips sent to the node's own canary subject; canary_failures: health
      ticks that found one overdue; canary_rtt_seconds: the last round trip. probes /
      probe_failures: the rolling audit of subscriptions, sent and lost (a lost probe makes
      its subscription deaf).
    - subscription_failures: subscriptions found deaf (refused or silent), ever;
      resubscribes: deaf subscriptions subscribed again.
    - disconnects / reconnects: of the broker connection.
    - dropped: pushes this node delivered locally but could not hand to the broker (the
      connection went down first), and messages from the broker that were not a valid push,
      by reason.
    """

    up: int
    ready: int
    subscriptions: int
    subscriptions_pending: int
    subscriptions_deaf: int
    published: int
    received: int
    echoes: int
    canaries: int
    canary_failures: int
    canary_rtt_seconds: float
    probes: int
    probe_failures: int
    subscription_failures: int
    resubscribes: int
    disconnects: int
    reconnects: int
    dropped: Mapping[str, int]


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewayStatistics:
    """A point-in-time copy of the gateway's counters. Totals are since start.

    - connections: live TCP connections, handshake included (what `max_conns` limits).
    - handshaking: of those, how many have not sent hello yet.
    - closing: connections flushing their last error frame (not counted in `connections`).
    - accepted: TCP connections ever accepted.
    - pushes: accepted pushes by ingress ("udp", "http", "local", ...).
    - pushes_by_target: accepted pushes by target kind ("user", "room", "all").
    - deliveries: msg frames queued to a connection (one per connection reached).
    - drops: msg frames discarded by the overflow policy, by policy ("drop-oldest", ...).
    - disconnects: connections ended, by error code or "peer_eof" / "peer_reset".
    - rejections: pushes refused at ingress, by reason (see `RejectReason`; HTTP adds
      "unauthorized", "too_large", "unsupported_media_type").
    - auth_failures: hello tokens refused, by `TokenRefused.code` (or "missing_token").
    - fanout_yields: end-of-turn flushes that ran out of `fanout_budget` and let the loop
      serve other work before finishing (a big room, a big batch, a slow machine).
    - fanout_drains: pushes that found the pending shared frames at their bound
      (`buffer_bytes` * 3/4) and had the flush finish at once, in one long loop turn
      (producers outrunning the fan-out, e.g. a UDP flood to a big room; HTTP batches wait
      for the flush instead).
    - buffered_bytes: outbound bytes held for all connections right now (ours + transports',
      the turn's shared frames counted once).
    - broker: the cluster broker's figures (`BrokerStatistics`); None without a broker.
    - accept_errors: failed `accept()`s of the listeners, by errno name ("EMFILE", ...).
    - http_refusals: HTTP connections (push API and admin) turned away or cut, by reason
      ("too_many_connections", "header_timeout", "malformed").
    - kernel_send_queue_bytes: bytes in the kernel send queues of the client sockets: written,
      not yet acknowledged by the clients (Linux; 0 elsewhere).
    - udp_receive_drops: datagrams the kernel dropped for the UDP socket (its receive buffer
      was full), None where unknown; udp_receive_buffer_bytes: that buffer's size.
    - replay_cache_bytes, replay_cache_ids: what the signed-UDP replay cache holds.
    """

    connections: int
    handshaking: int
    closing: int
    accepted: int
    users: int
    rooms: int
    pushes: Mapping[str, int]
    pushes_by_target: Mapping[str, int]
    deliveries: int
    fanout_yields: int
    fanout_drains: int
    drops: Mapping[str, int]
    disconnects: Mapping[str, int]
    rejections: Mapping[str, int]
    auth_failures: Mapping[str, int]
    accept_errors: Mapping[str, int]
    http_refusals: Mapping[str, int]
    buffered_bytes: int
    max_buffered_bytes: int
    kernel_send_queue_bytes: int
    udp_receive_drops: int | None
    udp_receive_buffer_bytes: int | None
    replay_cache_bytes: int
    replay_cache_ids: int
    broker: BrokerStatistics | None = None


def _frozen(counter: Counter[str]) -> Mapping[str, int]:
    return MappingProxyType(dict(counter))


class Counters:
    """Mutable counters, touched on the hot path; plain attributes and Counters only."""

    __slots__ = (
        "accept_errors",
        "accepted",
        "auth_failures",
        "deliveries",
        "disconnects",
        "drops",
        "fanout_drains",
        "fanout_yields",
        "http_refusals",
        "pushes",
        "pushes_by_target",
        "rejections",
    )

    def __init__(self) -> None:
        self.accepted = 0
        self.deliveries = 0
        self.fanout_yields = 0
        self.fanout_drains = 0
        self.pushes: Counter[str] = Counter()
        self.pushes_by_target: Counter[str] = Counter()
        self.drops: Counter[str] = Counter()
        self.disconnects: Counter[str] = Counter()
        self.rejections: Counter[str] = Counter()
        self.auth_failures: Counter[str] = Counter()
        self.accept_errors: Counter[str] = Counter()
        self.http_refusals: Counter[str] = Counter()

    def snapshot(
        self,
        *,
        connections: int,
        handshaking: int,
        closing: int,
        users: int,
        rooms: int,
        buffered_bytes: int,
        max_buffered_bytes: int,
        kernel_send_queue_bytes: int,
        udp_receive_drops: int | None,
        udp_receive_buffer_bytes: int | None,
        replay_cache_bytes: int,
        replay_cache_ids: int,
        broker: BrokerStatistics | None = None,
    ) -> GatewayStatistics:
        return GatewayStatistics(
            connections=connections,
            handshaking=handshaking,
            closing=closing,
            accepted=self.accepted,
            users=users,
            rooms=rooms,
            pushes=_frozen(self.pushes),
            pushes_by_target=_frozen(self.pushes_by_target),
            deliveries=self.deliveries,
            fanout_yields=self.fanout_yields,
            fanout_drains=self.fanout_drains,
            drops=_frozen(self.drops),
            disconnects=_frozen(self.disconnects),
            rejections=_frozen(self.rejections),
            auth_failures=_frozen(self.auth_failures),
            accept_errors=_frozen(self.accept_errors),
            http_refusals=_frozen(self.http_refusals),
            buffered_bytes=buffered_bytes,
            max_buffered_bytes=max_buffered_bytes,
            kernel_send_queue_bytes=kernel_send_queue_bytes,
            udp_receive_drops=udp_receive_drops,
            udp_receive_buffer_bytes=udp_receive_buffer_bytes,
            replay_cache_bytes=replay_cache_bytes,
            replay_cache_ids=replay_cache_ids,
            broker=broker,
        )
