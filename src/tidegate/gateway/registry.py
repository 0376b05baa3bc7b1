"""Who is connected: users -> connections, rooms -> connections, and everyone.

Only connections past the handshake are registered. Room membership belongs to a connection:
the registry never infers a user's rooms from another of their connections.

Before any change of a connection's membership the registry calls `before_change(sink)`: the
fan-out settles what was pushed to its old membership (batching.py), so that a room's frames
reach exactly the connections that were its members when it was pushed.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Hashable
from typing import Protocol

from tidegate.protocol import Target

__all__ = ["Registry", "Sink"]


class Sink(Hashable, Protocol):
    """What the registry and the fan-out need from a connection (batching.py explains the
    shared frames and `settled`)."""

    settled: int  # sequence number of the last shared frame already in its own output

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


_EMPTY: frozenset[Sink] = frozenset()


class Registry:
    __slots__ = ("_before_change", "_rooms", "_users", "everyone")

    def __init__(self, *, before_change: Callable[[Sink], None] = _unchanged) -> None:
        self._before_change = before_change
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
        elif isinstance(current, set):
            current.discard(sink)
            if len(current) == 1:
                users[user] = next(iter(current))
        for room in rooms:
            _discard(self._rooms, room, sink)

    def join(self, sink: Sink, room: str) -> None:
        self._before_change(sink)
        self._rooms.setdefault(room, set()).add(sink)

    def leave(self, sink: Sink, room: str) -> None:
        self._before_change(sink)
        _discard(self._rooms, room, sink)

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


def _discard(table: dict[str, set[Sink]], key: str, sink: Sink) -> None:
    members = table.get(key)
    if members is not None:
        members.discard(sink)
        if not members:
            del table[key]
