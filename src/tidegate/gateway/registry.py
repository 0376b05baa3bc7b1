"""Who is connected: users -> connections, rooms -> connections, and everyone.

Only connections past the handshake are registered. Room membership belongs to a connection:
the registry never infers a user's rooms from another of their connections.

Before any change of a connection's membership the registry calls `before_change(sink)`: the
fan-out settles what was pushed to its old membership (batching.py), so that a room's frames
reach exactly the connections that were its members when it was pushed.

The registry is where a user's or a room's first connection on this node arrives and its last
one leaves: it tells its `interest` (the broker, in cluster mode), which subscribes to that
user's or room's subject then and unsubscribes then. Without a broker, `interest` is None.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Hashable
from typing import Protocol

from tidegate.protocol import Target
from tidegate.protocol.ingress import TargetKind

__all__ = ["Interest", "Registry", "Sink", "Writer"]


class Writer(Protocol):
    """Where a connection's bytes go (its transport)."""

    def write(self, data: bytes) -> None: ...


class Sink(Hashable, Protocol):
    """What the registry and the fan-out need from a connection (batching.py explains the
    shared frames and `settled`)."""

    settled: int  # sequence number of the last shared frame already in its own output

    @property
    def transport(self) -> Writer | None:
        """Its transport: a clear connection's shared bytes are written to it directly."""

    def send_frame(self, frame: bytes) -> bool:
        """Queue `frame` without blocking; False if the policy dropped it or closed the sink."""

    def take_shared(self, data: bytes) -> None:
        """Write its own queue, then `data` (shared frames), in one write; always fits."""

    def take_settled(self, frames: list[bytes], size: int) -> None:
        """Append shared frames to its own queue (they fit: they were accepted already)."""

    def flush(self) -> None:
        """Hand its own queue to the transport in one write."""


def _unchanged(sink: Sink) -> None:
    """No fan-out to tell (a registry on its own)."""


class Interest(Protocol):
    """Told when this node starts and stops holding connections for a user or a room."""

    def gained(self, kind: TargetKind, name: str) -> None:
        """The first connection of user or room `name` arrived on this node."""

    def lost(self, kind: TargetKind, name: str) -> None:
        """The last connection of user or room `name` left this node."""


_EMPTY: frozenset[Sink] = frozenset()


class Registry:
    __slots__ = ("_before_change", "_rooms", "_users", "everyone", "interest")

    def __init__(
        self,
        *,
        before_change: Callable[[Sink], None] = _unchanged,
        interest: Interest | None = None,
    ) -> None:
        self._before_change = before_change
        self.interest = interest
        self.everyone: set[Sink] = set()
        # Most users have one connection: store it bare and switch to a set at the second,
        # which saves a set (~200 bytes) per idle connection.
        self._users: dict[str, Sink | set[Sink]] = {}
        self._rooms: dict[str, set[Sink]] = {}

    def add(self, sink: Sink, user: str) -> None:
        self._before_change(sink)
        self.everyone.add(sink)
        users = self._users
        current = users.get(user)
        if current is None:
            users[user] = sink
            if self.interest is not None:
                self.interest.gained("user", user)
        elif isinstance(current, set):
            current.add(sink)
        elif current is not sink:
            users[user] = {current, sink}

    def remove(self, sink: Sink, user: str, rooms: Collection[str]) -> None:
        """Forget `sink` everywhere. Idempotent, so every close path may call it."""
        self._before_change(sink)
        self.everyone.discard(sink)
        users = self._users
        current = users.get(user)
        if current is sink:
            del users[user]
            if self.interest is not None:
                self.interest.lost("user", user)
        elif isinstance(current, set):
            current.discard(sink)
            if len(current) == 1:
                users[user] = next(iter(current))
        for room in rooms:
            self._leave(sink, room)

    def join(self, sink: Sink, room: str) -> None:
        self._before_change(sink)
        members = self._rooms.get(room)
        if members is None:
            self._rooms[room] = {sink}
            if self.interest is not None:
                self.interest.gained("room", room)
        else:
            members.add(sink)

    def leave(self, sink: Sink, room: str) -> None:
        self._before_change(sink)
        self._leave(sink, room)

    def _leave(self, sink: Sink, room: str) -> None:
        members = self._rooms.get(room)
        if members is not None:
            members.discard(sink)
            if not members:
                del self._rooms[room]
                if self.interest is not None:
                    self.interest.lost("room", room)

    def targets(self, target: Target) -> Collection[Sink]:
        """The live set for `target` (do not mutate; copy before sending if sends can close)."""
        if target.kind == "all":
            return self.everyone
        if target.kind == "room":
            return self._rooms.get(target.name, _EMPTY)
        found = self._users.get(target.name)
        if found is None:
            return _EMPTY
        return found if isinstance(found, set) else (found,)

    def user_count(self) -> int:
        return len(self._users)

    def room_count(self) -> int:
        return len(self._rooms)
