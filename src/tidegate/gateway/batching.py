"""Per-loop-turn write batching: the one object that knows about loop turns.

Fan-out costs one `transport.write` per connection per loop turn, whatever the number of
pushes in that turn. Two kinds of frames get there:

- **Shared frames**: a push to a room or to everyone is appended once to the open *epoch* (the
  frames of this turn), in a group per target set, and never touches a connection. At the end
  of the turn each group's frames are joined once, and each member is handed the joined bytes
  in one write (`take_shared`). A connection in several groups of an epoch gets its frames
  merged in the order they were accepted.
- **Own frames** (unicast, replies, and shared frames moved over by `settle`): per connection,
  in `send_frame` (tcp.py): the first of a turn is written through at once, later ones are
  queued and written at the end of the turn (`flush_at_end_of_turn`).

Every shared frame gets a sequence number; each connection's `settled` is the last sequence
number already accounted for in its own output. Before anything could reorder or misdirect its
frames (an own frame, a change of its rooms, a paused transport), a connection is *settled*:
the shared frames still pending for it are moved into its own queue, in order. So each client
sees pushes in the order the gateway accepted them, unicast and broadcast interleaved, exactly
once, and a connection that joins a room after a push does not get it.

Bounded memory and exact `delivered` counts come from a split of `buffer_bytes` (`split`). A
*clear* connection's transport holds nothing (tcp.py: it pauses at the first write the kernel
does not take whole), its own queue holds at most a quarter, and all pending shared frames
together stay under the other three quarters: such a connection can take every shared frame
without a check. A connection whose transport is paused, or whose queue is past its quarter,
is *congested*: it is settled and takes each frame through `send_frame`, with the byte bound
and overflow policy applied per frame, as the fan-out calls it for every congested member
before appending a shared frame.

A turn's work holds the loop for at most `budget` seconds (checked every `_SLICE` connections,
or sooner when their bytes pass `_SLICE_BYTES`): past it, the rest continues at the next turn
(one `call_soon`), after the loop has served everything else. Pushes accepted meanwhile join
one epoch that waits behind, so a fan-out that cannot keep up writes more frames per write
rather than more writes. A flush that yields is counted (`fanout_yields`). Past the shared
bound, the pending work is finished at once (`drain`, counted: `fanout_drains`) before a new
frame is taken: memory stays bounded when producers outrun the flush, at the cost of one long
turn. A producer that can wait (an HTTP batch) does not get there: between its pushes it asks
`behind()` and, while it is, waits for `when_caught_up` (the end of a turn that leaves less
than half the bound pending), so that a batch too spends at most `budget` per turn pushing. The
wait is bounded by the flush of the epoch that holds the frames pending when it began: what is
still pending after that came later, while those were pending, and the bound is shared.

Nothing here awaits; the only timer is the `call_soon` handle, cancelled by `close()`.
"""

from __future__ import annotations

import math
import time
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Collection
from operator import itemgetter
from typing import NamedTuple, Protocol, cast

from tidegate.gateway.registry import Sink, Writer

__all__ = [
    "BufferSplit",
    "CallSoon",
    "Cancellable",
    "TurnBatcher",
    "split",
]

# Connections handed their bytes between two looks at the clock, and at most about this many
# bytes: 128 writes of a big turn's frames (a 1000-item batch joined, ~90 KB each) took
# 30-50 ms and ran a 20 ms fanout_budget over by twice its length (bench.gateway_fairness).
_SLICE = 128
_SLICE_BYTES = 256 * 1024


def _step(size: int) -> int:
    """Connections to hand `size` bytes each before the next look at the clock."""
    return max(1, min(_SLICE, _SLICE_BYTES // max(size, 1)))


class Cancellable(Protocol):
    def cancel(self) -> None: ...


# loop.call_soon, or a test's stand-in that runs the end of the turn when told to.
CallSoon = Callable[[Callable[[], None]], Cancellable]


class BufferSplit(NamedTuple):
    """How `buffer_bytes` is shared out so that a clear connection never needs a check."""

    own: int  # own queue of a clear connection; above it, it is congested
    shared: int  # all pending shared frames together


def split(buffer_bytes: int) -> BufferSplit:
    own = buffer_bytes // 4
    return BufferSplit(own, buffer_bytes - own)


class _Group:
    """The shared frames of one epoch for one target set (a room's members, or everyone)."""

    __slots__ = ("data", "frames", "members", "seqs")

    def __init__(self, members: Collection[Sink]) -> None:
        self.members = members  # the registry's live set: membership changes settle first
        self.seqs: list[int] = []
        self.frames: list[bytes] = []
        self.data = b""  # the frames joined, once the epoch is flushed

    def after(self, seq: int) -> int:
        """Index of the first frame later than `seq`."""
        return 0 if seq < self.seqs[0] else bisect_right(self.seqs, seq)

    def tail(self, seq: int) -> bytes:
        """The joined frames later than `seq`."""
        if seq < self.seqs[0]:
            return self.data
        return b"".join(self.frames[bisect_right(self.seqs, seq) :])


class _Epoch:
    """The shared frames accepted in one loop turn, and how far their flush has got."""

    __slots__ = (
        "by_members",
        "done",
        "first",
        "groups",
        "last",
        "marks",
        "members",
        "opened",
        "position",
        "size",
        "where",
        "writers",
    )

    def __init__(self, opened: float) -> None:
        self.opened = opened  # the batcher's clock at its first push: how long this turn pushes
        self.groups: list[_Group] = []
        self.by_members: dict[int, _Group] = {}  # id() of the live set; the group holds it
        self.first = 0
        self.last = 0
        self.size = 0
        # perf_counter() of each push of the turn; their latency ends with this flush.
        self.marks: list[float] = []
        # Who is handed what, fixed when the flush begins (the live sets may change before a
        # later slice runs): one group's members, or each member with its groups.
        self.members: tuple[Sink, ...] | None = None
        self.writers: list[Writer] = []  # the members' transports, in the same order
        self.where: tuple[tuple[Sink, list[_Group]], ...] | None = None
        self.position = 0  # how many of them have had their turn
        # Once a flush yields: the members handed their bytes so far, which `settle` must
        # not hand them again (the fast path does not mark them one by one).
        self.done: set[Sink] | None = None


def _later(groups: list[_Group], seq: int) -> list[bytes]:
    """The frames of `groups` later than `seq`, in the order they were accepted."""
    if len(groups) == 1:
        group = groups[0]
        return group.frames[group.after(seq) :]
    pairs: list[tuple[int, bytes]] = []
    for group in groups:
        start = group.after(seq)
        pairs.extend(zip(group.seqs[start:], group.frames[start:], strict=True))
    pairs.sort(key=itemgetter(0))
    return [frame for _, frame in pairs]


def _merge(groups: list[_Group], seq: int) -> bytes:
    return b"".join(_later(groups, seq))


class TurnBatcher:
    """Owns the shared frames, the connections to flush, and the end-of-turn flush.

    `turn` counts end-of-turn runs: a connection that wrote through in turn `t` queues its
    next frame until `turn` moves past `t`. `flush_pending`, `unflushed` (the sequence number
    of the newest pending shared frame, 0 when none is pending) and `own_limit` are plain
    attributes because the per-frame path reads them on every frame.
    """

    __slots__ = (
        "_budget",
        "_call_soon",
        "_clock",
        "_closed",
        "_deferred",
        "_dirty",
        "_flushing",
        "_handle",
        "_observe_latency",
        "_on_drain",
        "_on_yield",
        "_open",
        "_rosters",
        "_sealed",
        "_touched",
        "_waiters",
        "congested",
        "flush_pending",
        "own_limit",
        "seq",
        "shared_bytes",
        "shared_limit",
        "turn",
        "unflushed",
    )

    def __init__(
        self,
        *,
        call_soon: CallSoon,
        observe_latency: Callable[[float], None],
        buffer_bytes: int,
        budget: float = 0.02,
        clock: Callable[[], float] = time.perf_counter,
        on_yield: Callable[[], None] | None = None,
        on_drain: Callable[[], None] | None = None,
    ) -> None:
        self._call_soon = call_soon
        self._observe_latency = observe_latency
        self._budget = budget
        self._clock = clock
        self._on_yield = on_yield
        self._on_drain = on_drain
        parts = split(buffer_bytes)
        self.own_limit = parts.own
        self.shared_limit = parts.shared
        self._dirty: list[Sink] = []
        self._open: _Epoch | None = None
        self._sealed: deque[_Epoch] = deque()
        self._handle: Cancellable | None = None
        # Connections settled (or handed a frame on their own) while shared frames were
        # pending: the flush checks them one by one; when there are none, it writes straight
        # to the transports.
        self._touched: set[Sink] = set()
        # Per live set flushed: (the set, its members, their transports), until membership
        # changes anywhere.
        self._rosters: dict[int, tuple[Collection[Sink], tuple[Sink, ...], list[Writer]]] = {}
        self._flushing = False  # in `_run`: settles wait for the end of the epoch's slice
        self._deferred: list[Sink] = []
        self._waiters: list[Callable[[], None]] = []  # `when_caught_up`
        self._closed = False
        self.congested: set[Sink] = set()
        self.seq = 0
        self.unflushed = 0
        self.shared_bytes = 0
        self.turn = 0
        self.flush_pending = False

    # -- what the fan-out calls ------------------------------------------------------------

    def share(self, members: Collection[Sink], frame: bytes) -> int:
        """Deliver `frame` to every connection in `members` (a live set of the registry);
        returns how many took it. Never blocks, never writes for clear connections."""
        size = len(frame)
        if self.shared_bytes + size > self.shared_limit:
            if self.shared_bytes:
                self.drain()
                if self._on_drain is not None:
                    self._on_drain()
            if size > self.shared_limit:  # too big to share: each member's own bound decides
                return [sink.send_frame(frame) for sink in tuple(members)].count(True)
        delivered = len(members)
        seq = self.seq + 1
        congested = self.congested
        if congested:
            if len(congested) <= delivered:
                hits = [sink for sink in congested if sink in members]
            else:
                hits = [sink for sink in members if sink in congested]
            for sink in hits:
                if not sink.send_frame(frame):
                    delivered -= 1
                sink.settled = seq  # took it (or not) on its own: not in the shared flush
                self._touched.add(sink)
        self.seq = self.unflushed = seq
        epoch = self._open
        if epoch is None:
            epoch = self._open = _Epoch(self._clock())
        if not epoch.first:
            epoch.first = seq
        epoch.last = seq
        epoch.size += size
        self.shared_bytes += size
        group = epoch.by_members.get(id(members))
        if group is None:
            group = epoch.by_members[id(members)] = _Group(members)
            epoch.groups.append(group)
        group.seqs.append(seq)
        group.frames.append(frame)
        if not self.flush_pending:
            self._schedule()
        return delivered

    def pushed(self, mark: float) -> None:
        """A push reached someone; its latency, from `mark` (perf_counter), ends with the
        flush of this turn's frames, even when every target is paused and nothing writes."""
        epoch = self._open
        if epoch is None:
            epoch = self._open = _Epoch(self._clock())
        epoch.marks.append(mark)
        if not self.flush_pending:
            self._schedule()

    # -- what a connection calls -----------------------------------------------------------

    def membership_changing(self, client: Sink) -> None:
        """The registry is about to add, remove, or move `client` between rooms (its
        `before_change`): settle it, and forget the rosters built from the live sets."""
        self._rosters.clear()
        self.settle(client)

    def settle(self, client: Sink) -> None:
        """Move the shared frames pending for `client` into its own queue, in order: before
        its membership changes, before an own frame, when it congests."""
        after = client.settled
        if after >= self.unflushed:
            return
        if self._flushing:  # a write paused it: once the slice is over, `done` is known
            self._deferred.append(client)
            return
        client.settled = self.seq  # first: take_settled may call back (a congestion)
        self._touched.add(client)
        found: list[_Group] = []
        epochs = list(self._sealed)
        if self._open is not None:
            epochs.append(self._open)
        for epoch in epochs:
            if epoch.last <= after or (epoch.done is not None and client in epoch.done):
                continue
            for group in epoch.groups:
                if group.seqs[-1] > after and client in group.members:
                    found.append(group)
        if found:
            frames = _later(found, after)
            client.take_settled(frames, sum(map(len, frames)))

    def flush_at_end_of_turn(self, client: Sink) -> None:
        """Flush `client`'s own queue when this loop turn ends (each asks at most once)."""
        self._dirty.append(client)
        if not self.flush_pending:
            self._schedule()

    def end_turn(self) -> None:
        """Make this turn end with a flush, so that `turn` moves on (after a write-through)."""
        if not self.flush_pending:
            self._schedule()

    # -- the end of the turn ---------------------------------------------------------------

    def behind(self) -> bool:
        """A producer that can wait (an HTTP batch) should let the loop turn before its next
        push: the pushes of this turn have run for longer than the budget (a batch to
        congested members costs a `send_frame` per member and push), or pending shared frames
        use more than half their bound (the flush makes room one slice per turn; past the
        bound a push would have to `drain` it all at once)."""
        if self.shared_bytes * 2 > self.shared_limit:
            return True
        epoch = self._open
        return epoch is not None and self._clock() - epoch.opened >= self._budget

    def when_caught_up(self, callback: Callable[[], None]) -> None:
        """Call `callback` once `behind()` is over: at the end of a turn whose flush left
        less than half the shared bound pending, or when the batcher is closed."""
        if self._closed:
            callback()
        else:
            self._waiters.append(callback)
            if not self.flush_pending:  # nothing pending: the next turn says so
                self._schedule()

    def _wake_waiters(self) -> None:
        waiters, self._waiters = self._waiters, []
        for callback in waiters:
            callback()

    def drain(self) -> None:
        """Finish all pending work now, whatever it costs."""
        if self._handle is not None:
            self._handle.cancel()
        self._run(math.inf)

    def _schedule(self) -> None:
        self.flush_pending = True
        self._handle = self._call_soon(self._end_of_turn)

    def _end_of_turn(self) -> None:
        self._run(self._budget)

    def _run(self, budget: float) -> None:
        self._handle = None
        self.flush_pending = False
        self.turn += 1
        deadline = self._clock() + budget
        if self._open is not None:
            self._seal(self._open)
            self._open = None
        self._flushing = True
        try:
            done = self._flush_own(deadline)
            self._settle_deferred()
            sealed = self._sealed
            while done and sealed:
                epoch = sealed[0]
                done = self._flush_epoch(epoch, deadline)
                if done:
                    sealed.popleft()
                    self.shared_bytes -= epoch.size
                    if epoch.marks:
                        now = time.perf_counter()
                        observe = self._observe_latency
                        for mark in epoch.marks:
                            observe(now - mark)
                self._settle_deferred()
        finally:
            self._flushing = False
        if not sealed and self._open is None:
            self.unflushed = 0
            self._touched.clear()
        if self._waiters and not self.behind():
            self._wake_waiters()
        if not done and self._on_yield is not None:
            self._on_yield()
        if (not done or self._waiters) and not self.flush_pending:
            self._schedule()

    def _settle_deferred(self) -> None:
        while self._deferred:
            clients, self._deferred = self._deferred, []
            self._flushing = False
            try:
                for client in clients:
                    self.settle(client)
            finally:
                self._flushing = True

    def _seal(self, epoch: _Epoch) -> None:
        """Queue `epoch` for its flush. Behind an epoch whose flush has not begun (a flush under
        way, or one that ran out of budget), its frames join that epoch, so that members get
        them all in one write."""
        sealed = self._sealed
        if not sealed or sealed[-1].members is not None or sealed[-1].where is not None:
            sealed.append(epoch)
            return
        waiting = sealed[-1]
        for group in epoch.groups:
            mine = waiting.by_members.get(id(group.members))
            if mine is None:
                waiting.by_members[id(group.members)] = group
                waiting.groups.append(group)
            else:
                mine.seqs += group.seqs
                mine.frames += group.frames
        if epoch.groups:
            if not waiting.first:
                waiting.first = epoch.first
            waiting.last = epoch.last
            waiting.size += epoch.size
        waiting.marks += epoch.marks

    def _flush_own(self, deadline: float) -> bool:
        dirty, self._dirty = self._dirty, []
        clock = self._clock
        for start in range(0, len(dirty), _SLICE):
            if start and clock() >= deadline:
                self._dirty[:0] = dirty[start:]  # they keep their place in the queue
                return False
            for client in dirty[start : start + _SLICE]:
                client.flush()
        return True

    def _flush_epoch(self, epoch: _Epoch, deadline: float) -> bool:
        """Hand every member its frames of `epoch` in one write; False if the budget ran
        out first (the rest is kept in `epoch.todo`)."""
        groups = epoch.groups
        if not groups:
            return True
        if epoch.members is None and epoch.where is None:
            for group in groups:
                group.data = b"".join(group.frames)
            if len(groups) == 1:
                live = groups[0].members
                roster = self._rosters.get(id(live))
                if roster is None:
                    members = tuple(live)
                    writers = [cast(Writer, client.transport) for client in members]
                    roster = self._rosters[id(live)] = (live, members, writers)
                epoch.members, epoch.writers = roster[1], roster[2]
            else:
                where: dict[Sink, list[_Group]] = {}
                for group in groups:
                    for client in group.members:
                        mine = where.get(client)
                        if mine is None:
                            where[client] = [group]
                        else:
                            mine.append(group)
                epoch.where = tuple(where.items())
        if epoch.members is not None:
            return self._flush_group(epoch, epoch.members, epoch.writers, deadline)
        assert epoch.where is not None
        return self._flush_groups(epoch, epoch.where, deadline)

    def _flush_group(
        self,
        epoch: _Epoch,
        members: tuple[Sink, ...],
        writers: list[Writer],
        deadline: float,
    ) -> bool:
        """One group: every member not yet settled past it gets the same joined bytes.

        The fan-out's hot loop. While no connection was touched (settled, or handed a frame
        on its own) since these frames were pending, every member is clear, has an empty own
        queue (the own queues were flushed first) and is owed all of them: the bytes go
        straight to the transports, nothing per connection in Python but the write.
        """
        first, last = epoch.first, epoch.last
        group = epoch.groups[0]
        data = group.data
        clock = self._clock
        start = position = epoch.position
        end = len(members)
        step = _step(len(data))
        fast = not self._touched  # nothing touches a connection while this runs
        while position < end:
            if position != start and clock() >= deadline:
                epoch.position = position
                if epoch.done is None:
                    epoch.done = set()
                epoch.done.update(members[start:position])
                return False
            if fast:
                for writer in writers[position : position + step]:
                    writer.write(data)
            else:
                for client in members[position : position + step]:
                    seen = client.settled
                    if seen < first:
                        client.settled = last
                        client.take_shared(data)
                    elif seen < last:  # settled in the middle of the epoch (an own frame)
                        client.settled = last
                        client.take_shared(group.tail(seen))
            position += step
        return True

    def _flush_groups(
        self,
        epoch: _Epoch,
        where: tuple[tuple[Sink, list[_Group]], ...],
        deadline: float,
    ) -> bool:
        """Several groups: a member of one gets its bytes as they are; a member of several
        gets their frames merged by sequence number (the same merge for the same groups)."""
        first, last = epoch.first, epoch.last
        merged: dict[tuple[int, ...], bytes] = {}
        clock = self._clock
        position = epoch.position
        end = len(where)
        step = _step(epoch.size)  # what a member of every group would get
        while position < end:
            if position != epoch.position and clock() >= deadline:
                epoch.position = position
                return False
            for client, mine in where[position : position + step]:
                seen = client.settled
                if seen >= last:
                    continue
                client.settled = last
                if len(mine) == 1:
                    client.take_shared(mine[0].tail(seen))
                elif seen < first:
                    key = tuple(map(id, mine))
                    data = merged.get(key)
                    if data is None:
                        data = merged[key] = _merge(mine, seen)
                    client.take_shared(data)
                else:
                    client.take_shared(_merge(mine, seen))
            position += step
        return True

    def close(self) -> None:
        """Cancel a flush still scheduled (the gateway is shut down, its clients are gone),
        and release whoever waits for it to catch up."""
        self._closed = True
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._wake_waiters()
