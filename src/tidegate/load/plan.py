"""Who the clients are and what the pushes target: decided up front from a seed. Pure.

The main process plans every client (user, rooms, fault and when it strikes) and every push
(target, id); the client processes act the plan out and receive; the main process compares
what healthy clients got with what the plan says they should have.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .options import FAULTS, PUSH_KINDS

__all__ = ["ClientSpec", "PushLog", "PushPicker", "plan_clients", "split"]


@dataclass(frozen=True, slots=True)
class ClientSpec:
    index: int
    user: str
    rooms: tuple[str, ...]
    fault: str | None  # one of FAULTS, or None: a healthy client
    fault_at: float  # seconds into the load phase when the fault strikes

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "user": self.user,
            "rooms": list(self.rooms),
            "fault": self.fault,
            "fault_at": self.fault_at,
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> ClientSpec:
        return cls(obj["index"], obj["user"], tuple(obj["rooms"]), obj["fault"], obj["fault_at"])

    def wants(self, target: str) -> bool:
        """Whether a push to ``target`` (the wire form) is for this connection."""
        kind, _, name = target.partition(":")
        if kind == "user":
            return name == self.user
        if kind == "room":
            return name in self.rooms
        return target == "all"


def room_name(run: str, index: int) -> str:
    return f"{run}-room-{index}"


def plan_clients(
    n: int,
    *,
    rooms: int,
    faults: Mapping[str, float],
    duration: float,
    run: str,
    seed: int,
) -> list[ClientSpec]:
    """``n`` clients; ``faults`` maps a fault to the percentage of clients it strikes (rounded
    to whole clients). Each client joins up to two of the ``rooms``; faults strike between
    20% and 80% of the load phase, so each has traffic before and after it."""
    rng = random.Random(seed)
    order = list(range(n))
    rng.shuffle(order)
    fault_of: dict[int, str] = {}
    taken = 0
    for fault in FAULTS:
        count = round(n * faults.get(fault, 0.0) / 100)
        for index in order[taken : taken + count]:
            fault_of[index] = fault
        taken += count
    specs = []
    for index in range(n):
        joined: tuple[str, ...] = ()
        if rooms:
            first, second = index % rooms, (index * 7 + 1) % rooms
            joined = tuple(room_name(run, r) for r in dict.fromkeys((first, second)))
        struck_by = fault_of.get(index)
        at = rng.uniform(0.2, 0.8) * duration if struck_by else 0.0
        specs.append(ClientSpec(index, f"{run}-u{index}", joined, struck_by, round(at, 3)))
    return specs


def split(specs: Sequence[ClientSpec], parts: int) -> list[list[ClientSpec]]:
    """Deal the clients round robin, so each process gets its share of every fault."""
    return [list(specs[i::parts]) for i in range(parts) if specs[i::parts]]


class PushPicker:
    """Targets for pushes, drawn with the ``mix`` weights (user / room / all)."""

    def __init__(
        self,
        specs: Sequence[ClientSpec],
        rooms: int,
        mix: Mapping[str, float],
        *,
        run: str,
        seed: int,
    ) -> None:
        self._rng = random.Random(seed ^ 0x5EED)
        self._users = [spec.user for spec in specs]
        self._rooms = [room_name(run, r) for r in range(rooms)]
        kinds = [k for k in PUSH_KINDS if mix.get(k, 0) > 0]
        if not self._users:
            kinds = [k for k in kinds if k == "all"]
        if not self._rooms:
            kinds = [k for k in kinds if k != "room"]
        if not kinds:
            raise ValueError("--mix: nothing to push to with these clients and rooms")
        self._kinds = kinds
        self._weights = [mix[k] for k in kinds]

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        kind = self._rng.choices(self._kinds, self._weights)[0]
        if kind == "user":
            return f"user:{self._rng.choice(self._users)}"
        if kind == "room":
            return f"room:{self._rng.choice(self._rooms)}"
        return "all"


class PushLog:
    """The pushes sent (sequence number -> target), indexed by target, to tell each client
    how many it should have received, and whether a push it received was for it."""

    def __init__(self, pushes: Sequence[tuple[int, str]]) -> None:
        self.targets = dict(pushes)
        self._per_target: dict[str, int] = {}
        for target in self.targets.values():
            self._per_target[target] = self._per_target.get(target, 0) + 1

    def expected(self, spec: ClientSpec) -> int:
        """How many of the pushes are for ``spec``'s connection."""
        count = self._per_target.get(f"user:{spec.user}", 0) + self._per_target.get("all", 0)
        return count + sum(self._per_target.get(f"room:{room}", 0) for room in spec.rooms)
