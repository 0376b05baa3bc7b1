"""Who is connected: users -> connections, rooms -> connections, and everyone.

Only connections past the handshake are registered. Room membership belongs to a connection:
the registry never infers a user's rooms from another of their connections.
"""

from __future__ import annotations

from collections.abc import Collection, Hashable
from typing import Protocol

from tidegate.protocol import Target

__all__ = ["Registry", "Sink"]


class Sink(Hashable, Protocol):
    """What the registry and fan-out need from a connection."""

    def send_frame(self, frame: bytes) -> bool:
        """Queue `frame` without blocking; False if the policy dropped it or closed the sink."""


_EMPTY: frozenset[Sink] = frozenset()


class Registry:
    __slots__ = ("_rooms", "_users", "everyone")

    def __init__(self) -> None:
        self.everyone: set[Sink] = set()
        # Most users have one connection: store it bare and switch to a set at the second,
        # which saves a set (~200 bytes) per idle connection.
        self._users: dict[str, Sink | set[Sink]] = {}
        self._rooms: dict[str, set[Sink]] = {}

    def add(self, sink: Sink, user: str) -> None:
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
        self._rooms.setdefault(room, set()).add(sink)

    def leave(self, sink: Sink, room: str) -> None:
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
