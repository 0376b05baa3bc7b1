"""The TCP adapter: one `asyncio.Protocol` per client, no task per connection.

`ClientProtocol` implements the transport seam's `Client` and is built with a `ClientHost`
(client.py). Inbound bytes go to the sans-I/O protocol core; its events update the registry.

Inbound path: a read is handled `INPUT_SLICE` frames at a time. When a read holds more, the
connection stops reading and goes on in a later loop turn (`call_soon`), one slice per turn,
so one client's burst never holds the loop while others wait; it reads again once the core
has handled everything. It also stops reading while its transport is paused for writing: a
client that does not take its replies cannot make us build more of them.

Outbound path (batching.py has the whole picture): a push to a room or to everyone does not
touch the connection until the end of the loop turn, when `take_shared` writes its share of the
turn's shared frames (joined once for all) behind its own queue, in one write. Its own frames
(unicast, replies) go through `send_frame`: the first of a loop turn is written through at once,
later ones are queued and leave together at the end of the turn (`flush`).

The transport holds nothing while the kernel takes our writes: its high-water mark is 0, so the
first write the kernel does not take whole calls `pause_writing`. The connection is then
*congested*: it takes every frame through `send_frame`, where the byte bound (ours + the
transport's, never more than `buffer_bytes`, a closing error frame aside) and the overflow
policy apply per frame, and frames wait in its queue until the transport has drained
(`resume_writing`). Nothing on this path ever awaits the client. A transport that holds bytes
only while paused also makes the write deadline simple: while paused nothing is written to
it, so a buffer that does not shrink is a client that reads nothing.
"""

from __future__ import annotations

import asyncio
import math
from typing import cast

from tidegate.gateway.batching import Cancellable
from tidegate.gateway.client import ClientHost
from tidegate.gateway.socket_stats import reset_on_close, unsent_bytes
from tidegate.protocol import Closing, Connection, ErrorCode, Joined, Left, Opened, State

__all__ = ["INPUT_SLICE", "ClientProtocol"]

# Frames of one connection handled per loop turn: ~0.1 ms of work for pings (measured by
# bench.gateway_fairness), enough to amortise the turn; a 256 KiB read of pings takes ~150.
INPUT_SLICE = 128

# `_through_turn` while a frame may not be written through: the transport is paused, frames
# are queued (they must leave first), or the connection no longer sends.
_NEVER = 1 << 62


class ClientProtocol(asyncio.Protocol):
    __slots__ = (
        "_dirty",
        "_fd",
        "_host",
        "_input_turn",
        "_linger_deadline",
        "_own_room",
        "_paused",
        "_queue",
        "_queued",
        "_reading_paused",
        "_sendable",
        "_stall_since",
        "_stall_size",
        "_through_turn",
        "_turns",
        "core",
        "settled",
        "transport",
    )

    def __init__(self, host: ClientHost) -> None:
        self._host = host
        self._turns = host.turns  # read on every delivery
        self.transport: asyncio.Transport | None = None
        self.core: Connection | None = None
        # Our own frames waiting for the end of the turn or the transport: a list while there
        # are some (not a deque: dropping from the front only happens on overflow, in one
        # slice deletion), None otherwise, so that an idle connection holds no list.
        self._queue: list[bytes] | None = None
        self._queued = 0
        # How many bytes our queue may hold before the connection is congested; -1 while it
        # is congested or no longer sends. One comparison on the per-frame path stands for
        # "clear, sending, and this frame keeps it clear".
        self._own_room = -1
        self._sendable = False  # True from connection_made until our close or the peer's
        self._paused = False
        self._dirty = False
        self.settled = 0  # the last shared frame already in our own output (batching.py)
        # A frame may be written through while this is below the batcher's turn: it holds the
        # turn of the last write-through, -1 after a flush, or _NEVER. One comparison on the
        # per-frame path stands for "sending, not paused, nothing queued, not yet this turn".
        self._through_turn = _NEVER
        self._stall_since = math.inf
        self._stall_size = 0  # the transport's buffer when the stall began or last shrank
        self._linger_deadline = math.inf
        self._input_turn: Cancellable | None = None  # the next slice of input, scheduled
        self._reading_paused = False
        self._fd = -1  # the socket's, while the transport has it: for its kernel queue

    # -- asyncio.Protocol callbacks ------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        host = self._host
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        self._fd = sock.fileno() if sock is not None else -1
        self.transport.set_write_buffer_limits(high=0, low=0)
        self.core = Connection(
            session=host.new_session(),
            limits=host.settings.limits,
            authenticate=host.authenticate,
            now=host.clock(),
        )
        self._sendable = True
        self._own_room = self._turns.own_limit
        self._through_turn = -1
        refusal = host.admission.admit(self)
        if refusal is ErrorCode.TOO_MANY_CONNECTIONS:
            self.close(refusal, "the gateway is at its connection limit")
        elif refusal is not None:
            self.close(refusal, "the gateway is shutting down")

    def data_received(self, data: bytes) -> None:
        self._receive(data)

    def _receive(self, data: bytes) -> None:
        core = self.core
        assert core is not None
        host = self._host
        events = core.receive_data(data, host.clock(), max_frames=INPUT_SLICE)
        closing: Closing | None = None
        registry = host.registry
        for event in events:
            if type(event) is Opened:
                registry.add(self, event.user)
            elif type(event) is Joined:
                registry.join(self, event.room)
            elif type(event) is Left:
                registry.leave(self, event.room)
            elif type(event) is Closing:
                closing = event
        reply = core.data_to_send()
        if closing is not None:
            self._finish_close(closing.code, reply)
        elif reply:
            self.send_frame(reply)
        if core.input_pending and self._input_turn is None:
            self._input_turn = host.call_soon(self._receive_next_slice)
        self._update_reading()

    def _receive_next_slice(self) -> None:
        self._input_turn = None
        if self.core is not None and self.core.input_pending:
            self._receive(b"")

    def _update_reading(self) -> None:
        """Read while there is no input left to handle; always once closing, to discard what
        the peer still sends.

        A client that does not take its replies is still read: its FIN or reset must end the
        session at once (contract), and what it sends costs only frame budget and replies
        that its bounded buffer takes or its overflow policy refuses."""
        paused = self._sendable and self._input_turn is not None
        transport = self.transport
        if paused is self._reading_paused or transport is None or transport.is_closing():
            return
        self._reading_paused = paused
        if paused:
            transport.pause_reading()
        else:
            transport.resume_reading()

    def eof_received(self) -> bool:
        if self.core is not None and self.core.state is State.CLOSING:
            self.core.peer_gone()
            return False  # our close was under way: the transport closes once it is flushed
        self._peer_gone("peer_eof")
        # End of stream ends the session at once (contract): frames still queued for a client
        # that is leaving are dropped, and if the transport still holds bytes, a graceful close
        # would wait for a reader that may never come, so it is aborted instead.
        self._queue = None
        self._queued = 0
        if self._transport_size():
            self.abort()
        return False  # let the transport close our side now

    def connection_lost(self, exc: Exception | None) -> None:
        self._fd = -1
        if self._input_turn is not None:
            self._input_turn.cancel()
            self._input_turn = None
        self._peer_gone("peer_reset" if exc is not None else "peer_eof")
        if self.core is not None:
            self.core.transport_closed()
        self._queue = None
        self._queued = 0
        self._host.admission.forget(self)

    def pause_writing(self) -> None:
        self._paused = True
        self._through_turn = _NEVER
        self._congest()
        self._update_reading()

    def resume_writing(self) -> None:
        self._paused = False
        self._stall_since = math.inf  # it drained everything: any stall starts over
        self.flush()
        self._update_reading()

    # -- outbound ------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self.core is not None and self.core.state is State.OPEN

    def buffered(self) -> int:
        """Outbound bytes held for this client: our queue plus the transport's buffer."""
        return self._queued + self._transport_size()

    def kernel_queued(self) -> int:
        """Bytes in the socket's kernel send queue: written, not yet acknowledged."""
        return unsent_bytes(self._fd)

    def send_frame(self, frame: bytes) -> bool:
        """Queue one or more whole frames of our own; never blocks. False if dropped or
        disconnected. Shared frames pending for us are settled first, to keep the order.

        The per-frame hot path, hence the shape: while the connection is clear and the frame
        keeps its queue within its share (`_own_room`), it fits without asking the transport
        (batching.py); otherwise the whole bound, ours and the transport's, and the overflow
        policy decide.
        """
        turns = self._turns
        if self.settled < turns.unflushed:
            turns.settle(self)
        size = len(frame)
        if self._queued + size > self._own_room and not self._fits(size):
            return False
        if self._through_turn < turns.turn:
            # Write-through: the first frame of a loop turn leaves at once (one syscall, no
            # second pass); frames that follow in the same turn queue up and leave together.
            self._through_turn = turns.turn
            self.transport.write(frame)  # type: ignore[union-attr]  # set while sending
            if not turns.flush_pending:
                turns.end_turn()
            return True
        queue = self._queue
        if queue is None:
            queue = self._queue = []
        queue.append(frame)
        self._queued += size
        self._through_turn = _NEVER
        if self._queued > self._own_room:
            self._congest()
        if not self._dirty and not self._paused:
            self._dirty = True
            turns.flush_at_end_of_turn(self)
        return True

    def _fits(self, size: int) -> bool:
        """Past the cheap check: ask the transport, then the policy."""
        if not self._sendable:
            return False
        limit = self._host.settings.buffer_bytes
        return self.buffered() + size <= limit or self._make_room(size)

    def take_shared(self, data: bytes) -> None:
        """Our share of a turn's shared frames, behind our own queue, in one write. Only ever
        called while we are clear, so it fits (batching.py)."""
        queue = self._queue
        if queue:
            queue.append(data)
            data = b"".join(queue)
            self._queue = None
            self._queued = 0
        self.transport.write(data)  # type: ignore[union-attr]  # set while sending

    def take_settled(self, frames: list[bytes], size: int) -> None:
        """Shared frames that were pending for us, moved to our own queue (settled)."""
        if self._queue is None:
            self._queue = frames  # ours: the batcher built it for us
        else:
            self._queue.extend(frames)
        self._queued += size
        self._through_turn = _NEVER
        if not self._dirty and not self._paused:
            self._dirty = True
            self._turns.flush_at_end_of_turn(self)
        if self._queued > self._own_room:
            self._congest()

    def _congest(self) -> None:
        """From now on every frame comes through `send_frame`, checked against the bound."""
        if self._own_room < 0:
            return  # congested already, or no longer sending
        self._own_room = -1
        turns = self._turns
        if self.settled < turns.unflushed:
            turns.settle(self)
        turns.congested.add(self)

    def _stop_sending(self) -> None:
        self._sendable = False
        self._own_room = -1
        self._through_turn = _NEVER
        self._turns.congested.discard(self)

    def _transport_size(self) -> int:
        transport = self.transport
        return transport.get_write_buffer_size() if transport is not None else 0

    def _make_room(self, size: int) -> bool:
        settings = self._host.settings
        policy = settings.overflow
        if policy == "disconnect":
            self.close(ErrorCode.SLOW_CONSUMER, f"more than {settings.buffer_bytes} bytes pending")
            return False
        drops = self._host.counters.drops
        if policy == "drop-oldest":
            queue = self._queue or []
            excess = self.buffered() + size - settings.buffer_bytes
            dropped = 0
            while dropped < len(queue) and excess > 0:
                excess -= len(queue[dropped])
                dropped += 1
            if dropped:
                self._queued -= sum(map(len, queue[:dropped]))
                del queue[:dropped]
                drops[policy] += dropped
            if excess <= 0:
                return True
        drops[policy] += 1
        return False

    def flush(self) -> None:
        """Hand everything queued to the transport in one write (called once per loop turn)."""
        self._dirty = False
        transport = self.transport
        if self._paused or not self._sendable or transport is None:
            return
        # Before the write: a write that fills the transport calls pause_writing at once,
        # which must be able to stop the write-through again.
        self._through_turn = -1
        queue = self._queue
        if queue:
            data = queue[0] if len(queue) == 1 else b"".join(queue)
            self._queue = None
            self._queued = 0
            transport.write(data)
        if self._own_room < 0 and not self._paused:
            # Congested no longer: nothing queued and the transport took everything.
            self._own_room = self._turns.own_limit
            self._turns.congested.discard(self)

    # -- closing -------------------------------------------------------------------------

    def close(self, code: ErrorCode, reason: str) -> None:
        """Server-initiated close: error frame, flush, FIN, abort after the linger."""
        core = self.core
        if core is None:
            return
        closing = core.close(code, reason)
        if closing is not None:
            self._finish_close(code, core.data_to_send())

    def _finish_close(self, code: ErrorCode, last: bytes) -> None:
        host = self._host
        core = self.core
        assert core is not None and self.transport is not None
        self._stop_sending()
        host.counters.disconnects[code.value] += 1
        if core.user is not None:
            host.registry.remove(self, core.user, core.rooms)
        transport = self.transport
        if self._queue:
            last = b"".join(self._queue) + last
            self._queue = None
            self._queued = 0
        if last and not transport.is_closing():
            # Past the bound by at most one error frame; the linger below caps how long.
            transport.write(last)
        if transport.is_closing() or not transport.can_write_eof():
            transport.close()
        else:
            # Half-close: the error frame, then FIN, and reading goes on (discarding) until
            # the peer closes too or the linger runs out. Closing at once would make the
            # kernel answer what the client still sends (the rest of a flood, a pipelined
            # frame) with a reset, which destroys the error frame before it is read.
            transport.write_eof()
            self._update_reading()
        self._linger_deadline = host.clock() + host.settings.close_linger
        host.admission.mark_closing(self)

    def abort(self) -> None:
        """Drop the connection now. Anything still unsent (ours or the kernel's) is dropped
        too, with a reset: a client that stopped reading would otherwise keep megabytes of
        kernel buffer for minutes after the cut."""
        transport = self.transport
        if transport is None:
            return
        if self._transport_size() or self.kernel_queued():
            sock = transport.get_extra_info("socket")
            if sock is not None:
                reset_on_close(sock)
        self._fd = -1
        transport.abort()

    def _end_linger(self) -> None:
        """The closing linger ran out: a plain close if everything was delivered, else an
        abort."""
        self._linger_deadline = math.inf
        if self._transport_size() or self.kernel_queued() or self.transport is None:
            self.abort()
        else:
            self.transport.close()

    def _peer_gone(self, why: str) -> None:
        core = self.core
        self._stop_sending()
        if core is None or core.state is State.CLOSED:
            return
        if core.state is not State.CLOSING:
            self._host.counters.disconnects[why] += 1
            if core.user is not None:
                self._host.registry.remove(self, core.user, core.rooms)
        core.peer_gone()

    # -- sweeper -------------------------------------------------------------------------

    def sweep(self, now: float) -> None:
        """Timeouts, checked by the gateway's single sweeper; never waits on the transport."""
        if now >= self._linger_deadline:
            self._end_linger()  # closing, and the peer has not closed in time
            return
        core = self.core
        if core is None:
            return
        closing = core.check_timeouts(now)
        if closing is not None:
            self._finish_close(closing.code, core.data_to_send())
            return
        transport = self.transport
        if transport is None or core.state is not State.OPEN:
            return
        if self._through_turn < self._turns.turn:
            self._through_turn = -1  # the same to send_frame; an idle connection keeps no int
        in_transport = transport.get_write_buffer_size()
        if in_transport == 0 and not self._paused:
            self._stall_since = math.inf
            return
        # The buffer only holds bytes while paused, and nothing is added while paused.
        if in_transport < self._stall_size or self._stall_since == math.inf:
            self._stall_size = in_transport
            self._stall_since = now
        elif now - self._stall_since >= self._host.settings.write_timeout:
            self.close(
                ErrorCode.SLOW_CONSUMER,
                f"nothing drained for {self._host.settings.write_timeout:g} s",
            )
