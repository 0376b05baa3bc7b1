"""The NATS broker (`--broker nats://...`): a push entering any node reaches every connection
it targets in the cluster, exactly once, and a broker that stops carrying pushes cannot look
healthy.

Publishing, `publish()`, synchronous on the loop thread:

1. refuse (`NotPublished`) when the broker cannot take the push now (not connected, the
   canary overdue, or the outbound backlog full): nothing is delivered anywhere, so an HTTP
   503 can be retried without duplicates and a UDP push is counted as refused;
2. encode the `msg` frame once and deliver it on this node (`LocalDelivery.deliver_frame`);
3. queue `PUB <subject> "m<node>\\n<frame>"` for the writer task, which hands everything
   queued in a loop turn to the connection in one write.

Other nodes subscribed to the subject hand the frame to their `LocalDelivery`. This node gets
its own message back only if it is subscribed, that is if it has local members, which it has
already served: it recognises its origin and skips it. Each connection is reached once.

Subjects (`subjects.py`) are reference counted by the registry: a user's or room's first
local connection subscribes the node, the last one leaving unsubscribes it; `all` is always
subscribed. The table of subscriptions and their states lives in `subscriptions.py`.

Health (docs/scaling.md): every `canary_interval` the node publishes a canary on its own
subject and a few probes on subjects it is subscribed to (a rolling audit); each must come
back within `canary_timeout`. `ready()` is false while the connection is down, the last canary
is overdue, a subscription was refused (`-ERR ... Permissions Violation for Subscription ...
(sid N)`) or found silent, or a subscription stays unconfirmed past the timeout. A deaf
subscription is subscribed again on every tick; a reconnect resubscribes everything the node
still needs.

About nats-py (the client): it connects, authenticates, reconnects through the server pool,
pings, flushes and parses. Its public `subscribe` gives every subscription a task, a queue and
a future (~3.9 KB each, measured) and hands each subscription's messages to its own task, which
reorders messages of different subjects: a client that is both `user:alice` and in
`room:lobby` could see two pushes from one node in the opposite order. So this module speaks
`SUB`/`UNSUB`/`PUB` itself through the client's outbound buffer (`_send_command`,
`_flush_pending`) and takes each `MSG` in wire order from the client's parser
(`_process_msg`, overridden): three private hooks, checked by a test, with nats-py pinned
below 3.

Tasks, each owned here and cancelled and awaited by `close()`: the writer (hands queued
commands to the connection), the confirmer (round trips that confirm subscriptions and HTTP
pushes) and the keeper (the health tick; replaces a client that closed for good). nats-py's
own tasks end with its `close()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import re
import secrets
from collections import Counter, deque
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Final

from nats import errors as nats_errors
from nats.aio.client import Client as NatsClient

from tidegate.gateway.fanout import DeliverFrame
from tidegate.gateway.options import redact_urls
from tidegate.gateway.push_api import NotPublished
from tidegate.gateway.stats import BrokerStatistics
from tidegate.gateway.subjects import Subjects
from tidegate.gateway.subscriptions import SubscriptionTable, SubState, sub_line
from tidegate.protocol import Target, encode_msg
from tidegate.protocol.ingress import ALL, TargetKind

__all__ = ["BrokerUnreachable", "NatsBroker"]

log = logging.getLogger("tidegate.broker")

# Every message this broker publishes starts with a kind byte and the node's id (16 hex
# digits) and a newline: "m" a push (the rest is the msg frame), "p" a probe or a canary (the
# rest is its sequence number).
_PUSH: Final = b"m"
_PROBE: Final = b"p"
HEADER_SIZE: Final = 18
_FRAME_START: Final = b'{"op":"msg",'
# Our sids start far above nats-py's own (which count from 1), so the two never meet.
FIRST_SID: Final = 1 << 32
# Bytes waiting for the broker connection (ours and nats-py's) past which pushes are refused.
MAX_BACKLOG: Final = 8 * 1024 * 1024
# Probes of the rolling audit per tick: a full round in ~3 ticks up to 300 subjects, then
# at most this many per tick (a node with 100k subjects audits each one every ~3 min).
MAX_PROBES_PER_TICK: Final = 500
# A tick's probes go out in this many slices spread over the interval, so their round trips
# (~20 us of the loop each) never hold it for more than a millisecond or so at once.
SLICES: Final = 10
# nats-py lowercases the server's error. A permissions reload names the sid of each
# subscription it removes; a refused SUB names only the subject.
_REFUSED: Final = re.compile(
    r'permissions violation for subscription to "([^"]*)"(?: \(sid "(\d+)"\))?'
)


class BrokerUnreachable(OSError):
    """The broker could not be reached at start."""


class _Client(NatsClient):
    """nats-py's client, with every `MSG` handed to `route` on the reader task, in wire order.

    `route(sid, payload)` returns False for a sid that is not the broker's, which then goes
    the usual way (nats-py's own subscriptions, if any were ever made)."""

    def __init__(self, route: Callable[[int, bytes], bool]) -> None:
        super().__init__()
        self._tidegate_route = route

    async def _process_msg(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes
    ) -> None:
        if not self._tidegate_route(sid, data):
            await super()._process_msg(sid, subject, reply, data, headers)

    async def send_lines(self, lines: bytes) -> None:
        """Protocol lines (`SUB`, `UNSUB`, `PUB`) into the outbound buffer, then a flush."""
        await self._send_command(lines)
        await self._flush_pending()


@dataclass(slots=True)
class _Probe:
    subject: str
    sid: int
    sent: float


@dataclass(slots=True)
class _Waiter:
    seq: int  # pushes accepted when it began waiting: all of them must be handed
    mark: int  # drops when it began
    future: asyncio.Future[bool]


class NatsBroker:
    """A `broker.Broker` over NATS. Built by the gateway; `start()`, then `close()`."""

    def __init__(
        self,
        *,
        servers: Sequence[str],
        subjects: Subjects,
        deliver_frame: DeliverFrame,
        clock: Callable[[], float],
        canary_interval: float = 1.0,
        canary_timeout: float = 2.0,
        connect_timeout: float = 5.0,
        name: str = "tidegate",
    ) -> None:
        self.node = secrets.token_hex(8)
        self.servers = list(servers)
        self._urls = ", ".join(self.servers)
        self.subjects = subjects
        self._deliver_frame = deliver_frame
        self._clock = clock
        self._interval = canary_interval
        self._timeout = canary_timeout
        self._connect_timeout = connect_timeout
        self._name = f"{name} {self.node}"
        self._push_header = _PUSH + self.node.encode() + b"\n"
        self._probe_header = _PROBE + self.node.encode() + b"\n"
        self._table = SubscriptionTable(first_sid=FIRST_SID)
        self._canary_subject = subjects.canary(self.node)
        self._canary_sid = self._table.new_sid()
        self._nc: _Client | None = None
        self._connected = False
        self._connected_since = 0.0
        self._closing = False
        # Outbound: PUB lines queued by publish() and the probes, handed by the writer.
        self._outbox: list[bytes] = []
        self._outbox_bytes = 0
        self._accepted = 0  # pushes queued, ever
        self._handed = 0  # of those, handed to the connection or dropped
        self._resubscribe = False  # the writer sends every SUB again (after a reconnect)
        self._retry_deaf = False
        self._wake = asyncio.Event()
        self._confirm = asyncio.Event()
        self._waiters: list[_Waiter] = []
        # Health.
        self._probe_seq = 0
        self._probes: dict[int, _Probe] = {}  # the audit's, by sequence number
        # Canaries in flight, oldest first: (seq, sent). They come back in order.
        self._canaries_out: deque[tuple[int, float]] = deque()
        self._last_canary_back: float | None = None
        self._canary_answered = 0  # the highest canary seq answered
        self._canary_rtt = 0.0
        self._canary_failing = False
        self._probe_quota = 0  # probes per tick, sent a slice at a time
        self._health_changed = asyncio.Event()  # a canary came back, subscriptions confirmed
        self._tasks: list[asyncio.Task[None]] = []
        # Figures.
        self._published = 0
        self._received = 0
        self._echoes = 0
        self._canaries = 0
        self._canary_failures = 0
        self._probes_sent = 0
        self._probe_failures = 0
        self._disconnects = 0
        self._reconnects = 0
        self._dropped: Counter[str] = Counter()
        self._errors_logged = 0

    # -- interest (registry.Interest) ---------------------------------------------------

    def gained(self, kind: TargetKind, name: str) -> None:
        target = Target(kind, name, f"{kind}:{name}")
        self._table.want(self.subjects.of(target), target)
        self._wake.set()

    def lost(self, kind: TargetKind, name: str) -> None:
        self._table.unwant(self.subjects.of(Target(kind, name, f"{kind}:{name}")))
        self._wake.set()

    # -- publishing ---------------------------------------------------------------------

    def publish(self, target: Target, id: str, data_json: bytes) -> int:
        now = self._clock()
        if not self._available(now):
            raise NotPublished(
                "broker_unavailable",
                "the broker is unreachable: the push was not delivered anywhere; retry later",
            )
        frame = encode_msg(to=target.wire, id=id, data_json=data_json)
        payload_size = HEADER_SIZE + len(frame)
        nc = self._nc
        assert nc is not None  # available
        if payload_size > nc.max_payload:
            raise NotPublished(
                "too_large",
                f"the push's message is {payload_size} bytes, over the broker's limit of "
                f"{nc.max_payload} (max_payload in the NATS server's configuration)",
            )
        if self._outbox_bytes + nc.pending_data_size + payload_size > MAX_BACKLOG:
            raise NotPublished(
                "broker_unavailable",
                "the broker connection is not keeping up (outbound backlog full): the push "
                "was not delivered anywhere; retry later",
            )
        delivered = self._deliver_frame(target, frame)
        subject = self.subjects.of(target).encode()
        self._queue(b"PUB %s %d\r\n%s%s\r\n" % (subject, payload_size, self._push_header, frame))
        self._accepted += 1
        return delivered

    def _queue(self, line: bytes) -> None:
        self._outbox.append(line)
        self._outbox_bytes += len(line)
        self._wake.set()

    def _available(self, now: float) -> bool:
        """Whether a push may be accepted now: connected, and no canary overdue."""
        if not self._connected or self._closing:
            return False
        canaries = self._canaries_out
        return not canaries or now - canaries[0][1] <= self._timeout

    # -- confirmation (push_api.Confirmation) -------------------------------------------

    def confirmation(self) -> NatsBroker:
        return self

    def mark(self) -> int:
        return self._dropped["broker_down"]

    async def published(self, mark: int) -> bool:
        """True once every push accepted so far was handed to the broker and a round trip
        after it came back, with no push dropped since `mark`."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiters.append(_Waiter(self._accepted, mark, future))
        self._wake.set()
        try:
            # Bounded: a connection too slow to hand over and confirm within two timeouts
            # cannot be said to have published (the canary will say so too).
            return await asyncio.wait_for(future, 2 * self._timeout)
        except TimeoutError:
            return False

    # -- receiving (on nats-py's reader task, in wire order) ------------------------------

    def _route(self, sid: int, payload: bytes) -> bool:
        sub = self._table.by_sid(sid)
        if sub is None:
            if sid == self._canary_sid:
                self._probe_back(payload)
            return sid >= FIRST_SID  # a sid of ours no longer subscribed: nothing to do
        try:
            if payload[:HEADER_SIZE] == self._push_header:
                self._echoes += 1
            elif payload[:1] == _PUSH and payload[HEADER_SIZE - 1 : HEADER_SIZE] == b"\n":
                frame = payload[HEADER_SIZE:]
                if frame.startswith(_FRAME_START) and frame.find(b"\n") == len(frame) - 1:
                    self._received += 1
                    self._deliver_frame(sub.target, frame)
                else:
                    self._dropped["bad_message"] += 1
            elif payload[:1] == _PROBE:
                if payload[:HEADER_SIZE] == self._probe_header:
                    self._probe_back(payload)
                # another node's probe: not ours to answer
            else:
                self._dropped["bad_message"] += 1
        except Exception:
            # Never let a delivery bug end nats-py's reader (which would leave the connection
            # open and deaf; the canary would say so, but a log says why).
            log.exception("broker: delivering a message from %s failed", sub.subject)
            self._dropped["delivery_error"] += 1
        return True

    def _probe_back(self, payload: bytes) -> None:
        if payload[:HEADER_SIZE] != self._probe_header:
            return
        try:
            seq = int(payload[HEADER_SIZE:])
        except ValueError:
            return
        now = self._clock()
        canaries = self._canaries_out
        if canaries and canaries[0][0] <= seq:
            while canaries and canaries[0][0] <= seq:
                canary, sent = canaries.popleft()
            if canary == seq:
                if self._canary_failing:
                    self._canary_failing = False
                    log.warning("broker: canary %d came back: the broker carries messages", seq)
                self._last_canary_back = now
                self._canary_answered = seq
                self._canary_rtt = now - sent
                self._health_changed.set()
            return
        self._probes.pop(seq, None)  # an audit probe (or one already given up on)

    # -- health -------------------------------------------------------------------------

    def ready(self) -> bool:
        now = self._clock()
        table = self._table
        if not (
            self._available(now)
            and self._last_canary_back is not None
            and self._last_canary_back >= self._connected_since
            and table.count(SubState.DEAF) == 0
            and all(not task.done() for task in self._tasks)
        ):
            return False
        pending_since = table.oldest(SubState.PENDING)
        return pending_since is None or now - pending_since <= self._timeout

    def _tick(self) -> None:
        """Every `canary_interval`: give up on overdue probes, send the canary, size the
        audit's share for the slices to come, retry deaf subscriptions."""
        if self._closing:
            return
        now = self._clock()
        canaries = self._canaries_out
        if canaries and now - canaries[0][1] > self._timeout:
            # Overdue. It stays first in line, refusing pushes and failing /readyz, until a
            # later canary comes back; every tick meanwhile counts a failure.
            self._canary_failures += 1
            if not self._canary_failing:
                self._canary_failing = True
                log.error(
                    "broker: canary %d not back after %g s: pushes are refused and /readyz "
                    "fails until one comes back",
                    canaries[0][0],
                    self._timeout,
                )
            if len(canaries) > 64:
                del canaries[1]  # the oldest is the one that matters
        for seq, probe in list(self._probes.items()):
            if now - probe.sent <= self._timeout:
                continue
            del self._probes[seq]
            if self._canary_answered > seq:
                # A canary sent after the probe came back: the connection carried messages,
                # this subscription did not.
                self._probe_failures += 1
                sub = self._table.silent(probe.subject, probe.sid, now)
                if sub is not None and sub.failures % 600 == 1:
                    log.error(
                        "broker: subscription %s went deaf (a probe did not come back): "
                        "subscribing again; /readyz fails until it is confirmed",
                        sub.subject,
                    )
        if not self._connected:
            return
        if self._table.count(SubState.DEAF):
            self._retry_deaf = True
        self._canaries_out.append((self._send_probe(self._canary_subject), now))
        self._canaries += 1
        self._probe_quota = min(MAX_PROBES_PER_TICK, -(-len(self._table) // 3))
        if self._table.has_unconfirmed():
            self._confirm.set()

    def _probe_slice(self) -> None:
        """A slice of this tick's audit: the next few subscriptions, each probed once."""
        if self._closing or not self._connected or not self._probe_quota:
            return
        now = self._clock()
        for sub in self._table.next_to_probe(-(-self._probe_quota // SLICES)):
            self._probes[self._send_probe(sub.subject)] = _Probe(sub.subject, sub.sid, now)
            self._probes_sent += 1

    def _send_probe(self, subject: str) -> int:
        self._probe_seq += 1
        body = self._probe_header + str(self._probe_seq).encode()
        self._queue(b"PUB %s %d\r\n%s\r\n" % (subject.encode(), len(body), body))
        return self._probe_seq

    # -- nats-py callbacks --------------------------------------------------------------

    async def _on_error(self, exc: Exception) -> None:
        refused = _REFUSED.search(str(exc))
        if refused is not None:
            subject, sid = refused.groups()
            now = self._clock()
            if sid is not None:
                sub = self._table.refused(int(sid), now)
                subs = [] if sub is None else [sub]
            else:
                subs = self._table.refused_subject(subject, now)
            for sub in subs:
                if sub.failures % 600 == 1:  # the first time, then every 600th
                    log.error(
                        "broker: the server refused or removed subscription %s (%s, %d times): "
                        "/readyz fails; retrying every %g s",
                        sub.subject,
                        exc,
                        sub.failures,
                        self._interval,
                    )
            return
        if self._connected:
            log.warning("broker: %s", exc)
        else:
            log.debug("broker: %s", exc)  # one per reconnect attempt while the broker is down

    async def _on_disconnected(self) -> None:
        if not self._connected:
            return
        self._connected = False
        self._disconnects += 1
        # Lost with the connection: no evidence against a subscription, and no canary is
        # overdue while there is no connection to blame (pushes are refused anyway).
        self._probes.clear()
        self._canaries_out.clear()
        if not self._closing:
            log.error(
                "broker: disconnected from %s; reconnecting (pushes are refused meanwhile)",
                redact_urls(self._urls),
            )

    async def _on_reconnected(self) -> None:
        nc = self._nc
        url = nc.connected_url.geturl() if nc is not None and nc.connected_url else "?"
        log.warning("broker: reconnected to %s; subscribing again", redact_urls(url))
        self._up(self._clock())
        self._reconnects += 1

    async def _on_closed(self) -> None:
        if not self._closing:
            self._connected = False
            log.error("broker: the connection was closed for good; opening a new one")
            self._wake.set()  # so that the outbox is dropped now, not at the next tick

    def _up(self, now: float) -> None:
        self._connected = True
        self._connected_since = now
        self._resubscribe = True
        self._wake.set()
        self._tick_soon()

    def _tick_soon(self) -> None:
        # The first canary right away, so /readyz is green again within one round trip.
        asyncio.get_running_loop().call_soon(self._tick)

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Connect, subscribe (`all` and the canary), check one canary round trip, start the
        tasks. Raises `BrokerUnreachable` after `connect_timeout`."""
        self._table.want(self.subjects.all, ALL)
        self._nc = await self._connect()
        self._up(self._clock())
        self._spawn(self._write_loop(), "tidegate-broker-writer")
        self._spawn(self._confirm_loop(), "tidegate-broker-confirmer")
        self._spawn(self._keep_loop(), "tidegate-broker-keeper")
        try:
            async with asyncio.timeout(self._connect_timeout):
                while not self.ready():
                    self._health_changed.clear()
                    await self._health_changed.wait()
        except TimeoutError:
            raise BrokerUnreachable(
                f"the broker at {redact_urls(self._urls)} accepted the "
                f"connection but did not deliver this node's canary on "
                f"{self._canary_subject!r} within {self._connect_timeout:g} s: check "
                f"its publish and subscribe permissions on {self.subjects.prefix}.>"
            ) from None

    def _spawn(self, coroutine: Coroutine[Any, Any, None], name: str) -> None:
        self._tasks.append(asyncio.get_running_loop().create_task(coroutine, name=name))

    async def _connect(self) -> _Client:
        nc = _Client(self._route)
        try:
            await asyncio.wait_for(
                nc.connect(
                    servers=self.servers,
                    name=self._name,
                    error_cb=self._on_error,
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected,
                    closed_cb=self._on_closed,
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=1,
                    connect_timeout=2,
                    # nats-py's own pings end a connection that went silent without a FIN
                    # (the canary has said so long before).
                    ping_interval=5,
                    max_outstanding_pings=3,
                    pending_size=MAX_BACKLOG,
                    skip_subject_validation=True,  # subjects.py builds every subject
                ),
                self._connect_timeout,
            )
        except (OSError, TimeoutError, nats_errors.Error) as exc:
            await nc.close()
            raise BrokerUnreachable(
                f"cannot reach the broker at {redact_urls(self._urls)} within "
                f"{self._connect_timeout:g} s: {exc or type(exc).__name__}"
            ) from None
        return nc

    async def close(self) -> None:
        self._closing = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        nc = self._nc
        if nc is not None:
            if nc.is_connected and self._outbox:
                # The last pushes accepted before the shutdown still go out.
                await nc.send_lines(self._take_outbox())
            await nc.close()
        self._resolve_waiters(False, self._accepted)

    # -- tasks --------------------------------------------------------------------------

    async def _write_loop(self) -> None:
        """Hands queued subscriptions and messages to the connection, all of a loop turn in one
        write; drops messages when it is down (they were delivered locally, so a retry would
        duplicate them there)."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            nc = self._nc
            if nc is None or not nc.is_connected:
                if self._outbox:
                    self._drop_outbox("broker_down")
                self._resolve_waiters(False, self._accepted)
                continue
            now = self._clock()
            lines = []
            if self._resubscribe:
                self._resubscribe = False
                lines.append(sub_line(self._canary_subject, self._canary_sid))
                lines.append(self._table.resubscribe_all(now))
            if self._retry_deaf:
                self._retry_deaf = False
                lines.append(self._table.retry_deaf(now))
            if self._table.changed:
                lines.append(self._table.take_changes(now))
            accepted = self._accepted
            lines.append(self._take_outbox())
            data = b"".join(lines)
            if data:
                try:
                    await nc.send_lines(data)
                    self._published += accepted - self._handed
                except nats_errors.Error as exc:
                    log.error("broker: handing pushes to the connection failed: %s", exc)
                    self._dropped["broker_down"] += accepted - self._handed
            self._handed = accepted
            if self._waiters or self._table.has_unconfirmed():
                self._confirm.set()

    def _take_outbox(self) -> bytes:
        data = b"".join(self._outbox)
        self._outbox.clear()
        self._outbox_bytes = 0
        return data

    def _drop_outbox(self, reason: str) -> None:
        pushes = self._accepted - self._handed
        self._outbox.clear()
        self._outbox_bytes = 0
        self._handed = self._accepted
        if pushes:
            self._dropped[reason] += pushes
            log.error(
                "broker: %d pushes were delivered on this node only (%s): the connection "
                "went down before they could be handed to it",
                pushes,
                reason,
            )

    async def _confirm_loop(self) -> None:
        """Round trips (PING/PONG) that confirm subscriptions and pushes handed before them."""
        while True:
            await self._confirm.wait()
            self._confirm.clear()
            nc = self._nc
            sids = self._table.take_unconfirmed()
            handed = self._handed
            ok = False
            if nc is not None and nc.is_connected:
                try:
                    await asyncio.wait_for(nc.flush(), self._timeout)
                    ok = True
                except (TimeoutError, nats_errors.Error):
                    pass
            if ok:
                for sub, failures in self._table.confirmed(sids, self._clock()):
                    log.warning(
                        "broker: subscription %s confirmed again after %d failures",
                        sub.subject,
                        failures,
                    )
                self._health_changed.set()
            else:
                self._table.unconfirm(sids)
            self._resolve_waiters(ok, handed)

    def _resolve_waiters(self, ok: bool, handed: int) -> None:
        waiting = []
        for waiter in self._waiters:
            if waiter.future.done():
                continue
            if not ok:
                waiter.future.set_result(False)
            elif waiter.seq <= handed:
                waiter.future.set_result(waiter.mark == self._dropped["broker_down"])
            else:
                waiting.append(waiter)
        self._waiters = waiting

    async def _keep_loop(self) -> None:
        """The health tick (its probes in slices between ticks), and a new client when
        nats-py closed its own for good."""
        for n in itertools.count(1):
            await asyncio.sleep(self._interval / SLICES)
            if n % SLICES == 0:
                nc = self._nc
                if nc is not None and nc.is_closed and not self._closing:
                    try:
                        self._nc = await self._connect()
                    except BrokerUnreachable as exc:
                        log.error("broker: %s", exc)
                        continue
                    self._up(self._clock())
                    self._reconnects += 1
                self._tick()
            self._probe_slice()

    # -- observation --------------------------------------------------------------------

    def statistics(self) -> BrokerStatistics:
        table = self._table
        return BrokerStatistics(
            up=int(self._connected),
            ready=int(self.ready()),
            subscriptions=len(table),
            subscriptions_pending=table.count(SubState.PENDING),
            subscriptions_deaf=table.count(SubState.DEAF),
            published=self._published,
            received=self._received,
            echoes=self._echoes,
            canaries=self._canaries,
            canary_failures=self._canary_failures,
            canary_rtt_seconds=self._canary_rtt,
            probes=self._probes_sent,
            probe_failures=self._probe_failures,
            subscription_failures=table.deaf_events,
            resubscribes=table.resubscribes,
            disconnects=self._disconnects,
            reconnects=self._reconnects,
            dropped=dict(self._dropped),
        )
