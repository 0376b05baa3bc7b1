"""Business-side push bodies: parsing, `to` targets, and UDP datagram verification.

No I/O and no clock: `DatagramVerifier.verify` takes `now`. A datagram is rejected with
`Rejected(reason)`, where `reason` is one of `RejectReason` so adapters can count by reason.
"""

from __future__ import annotations

import enum
import hashlib
import heapq
import hmac
import sys
from dataclasses import dataclass
from typing import Final, Literal

import msgspec

from tidegate.protocol.errors import PeerError, UsageError

__all__ = [
    "MAX_ID_BYTES",
    "BadPush",
    "DatagramVerifier",
    "Push",
    "RejectReason",
    "Rejected",
    "ReplayCache",
    "Target",
    "parse_push",
    "parse_target",
    "sign",
    "split_batch",
]

SIGNATURE_HEX_LEN: Final = 64
MAX_ID_BYTES: Final = 128  # the contract's limit on a push `id`, in UTF-8 bytes


class RejectReason(enum.StrEnum):
    MISSING_SIGNATURE = "missing_signature"
    BAD_SIGNATURE = "bad_signature"
    BAD_JSON = "bad_json"
    BAD_BODY = "bad_body"
    BAD_TARGET = "bad_target"
    BAD_ID = "bad_id"
    STALE = "stale"
    REPLAY = "replay"
    REPLAY_CACHE_FULL = "replay_cache_full"


class Rejected(PeerError):
    """A push was refused; nothing of it is delivered."""

    code: RejectReason

    def __init__(self, code: RejectReason, detail: str) -> None:
        super().__init__(code, detail)


class BadPush(Rejected):
    """The push body itself is malformed (as opposed to failing verification)."""


TargetKind = Literal["user", "room", "all"]


@dataclass(frozen=True, slots=True)
class Target:
    """Where a push goes. `wire` is the exact `to` string echoed in the msg frame."""

    kind: TargetKind
    name: str
    wire: str


ALL: Final = Target("all", "", "all")


def parse_target(to: str) -> Target:
    if to == "all":
        return ALL
    kind, sep, name = to.partition(":")
    if sep and name:
        if kind == "user":
            return Target("user", name, to)
        if kind == "room":
            return Target("room", name, to)
    raise BadPush(RejectReason.BAD_TARGET, f"unknown `to` form {to!r}")


class Push(msgspec.Struct, frozen=True):
    """A decoded push body. `data` stays as the raw JSON bytes it arrived as."""

    to: str
    data: msgspec.Raw
    id: str | None = None
    ts: float | None = None


_decode_push = msgspec.json.Decoder(Push).decode


def parse_push(body: bytes | memoryview) -> tuple[Push, Target]:
    """Decode and check one push body. Raises `BadPush`; the body must be UTF-8 JSON.

    msgspec validates the UTF-8 of the strings it decodes (`to`, `id`) but not of what it
    skips or keeps raw (`data`, unknown fields), so the whole body is checked here, once per
    push: a decode that runs at memory speed on ASCII. Without it, bytes that are not UTF-8
    would be forwarded inside `msg` frames.
    """
    try:
        str(body, "utf-8")
    except UnicodeDecodeError as exc:
        raise BadPush(
            RejectReason.BAD_JSON, f"body is not valid UTF-8 (byte {exc.start})"
        ) from None
    try:
        push = _decode_push(body)
    except msgspec.ValidationError as exc:
        raise BadPush(RejectReason.BAD_BODY, str(exc)) from None
    except msgspec.DecodeError:
        raise BadPush(RejectReason.BAD_JSON, "invalid JSON") from None
    except RecursionError:  # msgspec's answer to a few thousand nested brackets
        raise BadPush(RejectReason.BAD_JSON, "JSON nested too deeply") from None
    if push.id is not None:
        if not push.id:
            raise BadPush(RejectReason.BAD_BODY, "`id` must be a non-empty string")
        # A character is at most 4 bytes: up to 32 characters need no encoding to be sure.
        if len(push.id) > MAX_ID_BYTES // 4 and len(push.id.encode()) > MAX_ID_BYTES:
            raise BadPush(RejectReason.BAD_ID, f"`id` longer than {MAX_ID_BYTES} bytes")
    return push, parse_target(push.to)


_decode_batch = msgspec.json.Decoder(list[msgspec.Raw]).decode
_JSON_WHITESPACE: Final = b" \t\r\n"


def split_batch(body: bytes) -> list[msgspec.Raw] | None:
    """The items of a batch body (a JSON array of pushes), still encoded; None when `body`
    is not an array (a single push, or not JSON at all: `parse_push` says which).

    Raises `BadPush` for an array that is not valid JSON or is empty.
    """
    if not body.lstrip(_JSON_WHITESPACE).startswith(b"["):
        return None
    try:
        items = _decode_batch(body)
    except msgspec.DecodeError:
        raise BadPush(RejectReason.BAD_JSON, "invalid JSON") from None
    except RecursionError:
        raise BadPush(RejectReason.BAD_JSON, "JSON nested too deeply") from None
    if not items:
        raise BadPush(RejectReason.BAD_BODY, "a batch needs at least one push")
    return items


def sign(secret: bytes, body: bytes) -> bytes:
    """The datagram a signed sender transmits: lowercase hex HMAC-SHA256, a space, the body."""
    return hmac.new(secret, body, hashlib.sha256).hexdigest().encode() + b" " + body


class ReplayCache:
    """Ids seen recently, each remembered until its expiry time; bounded in bytes.

    `size` is the memory the cache holds for its ids, counted per entry as the id string's
    own size plus `ENTRY_OVERHEAD` (its share of the dict, the heap entry, the expiry time:
    measured at about 125 bytes, tests check the count is an upper bound). When the next id
    would take it past `max_bytes` while every id held can still be replayed, `add` refuses
    (fail closed) instead of forgetting one.
    """

    ENTRY_OVERHEAD: Final = 192

    __slots__ = ("_expiry", "_heap", "max_bytes", "size")

    def __init__(self, *, max_bytes: int) -> None:
        if max_bytes < 1:
            raise UsageError("max_bytes must be positive")
        self.max_bytes = max_bytes
        self.size = 0
        self._expiry: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []

    def __len__(self) -> int:
        return len(self._expiry)

    def __contains__(self, id: str) -> bool:
        return id in self._expiry

    @classmethod
    def cost(cls, id: str) -> int:
        """What holding `id` counts for in `size`."""
        return sys.getsizeof(id) + cls.ENTRY_OVERHEAD

    def prune(self, now: float) -> None:
        heap = self._heap
        while heap and heap[0][0] < now:
            expiry, id = heapq.heappop(heap)
            self.size -= self.cost(id)  # every heap entry is counted until it leaves
            if self._expiry.get(id) == expiry:
                del self._expiry[id]

    def add(self, id: str, expires_at: float, now: float) -> bool:
        """Remember `id`; False if it is already known or the cache is full."""
        self.prune(now)
        cost = self.cost(id)
        if id in self._expiry or self.size + cost > self.max_bytes:
            return False
        self._expiry[id] = expires_at
        self.size += cost
        heapq.heappush(self._heap, (expires_at, id))
        return True

    def discard(self, id: str) -> None:
        """Forget `id`: it may be added again. Its heap entry stays, and counts in `size`,
        until its expiry, so forgetting cannot grow the cache past `max_bytes`."""
        self._expiry.pop(id, None)


class DatagramVerifier:
    """Turns one UDP datagram into a verified push, per the contract.

    With a secret: signature, then body, then the +-window on `ts`, then replay by `id`.
    Without a secret the body is taken as is (the adapter only allows that on loopback).
    """

    __slots__ = ("_secret", "replays", "window")

    def __init__(
        self, *, secret: bytes | None, window: float = 30.0, replay_bytes: int = 32 << 20
    ) -> None:
        self._secret = secret
        self.window = window
        self.replays = ReplayCache(max_bytes=replay_bytes)

    def forget(self, push: Push) -> None:
        """`push` was verified but delivered nowhere (cluster mode, the broker away): its id
        no longer counts as seen, so the sender may retry the same datagram."""
        if push.id is not None:
            self.replays.discard(push.id)

    def verify(self, datagram: bytes, now: float) -> tuple[Push, Target]:
        if self._secret is None:
            return parse_push(datagram)
        if len(datagram) <= SIGNATURE_HEX_LEN or datagram[SIGNATURE_HEX_LEN] != 0x20:
            raise Rejected(RejectReason.MISSING_SIGNATURE, "expected '<64 hex> <body>'")
        view = memoryview(datagram)
        body = view[SIGNATURE_HEX_LEN + 1 :]
        expected = hmac.new(self._secret, body, hashlib.sha256).hexdigest().encode()
        if not hmac.compare_digest(datagram[:SIGNATURE_HEX_LEN].lower(), expected):
            raise Rejected(RejectReason.BAD_SIGNATURE, "signature does not match")
        push, target = parse_push(body)
        if push.id is None or push.ts is None:
            raise BadPush(RejectReason.BAD_BODY, "a signed push needs `id` and `ts`")
        if not abs(now - push.ts) <= self.window:
            raise Rejected(RejectReason.STALE, f"ts outside +-{self.window:g} s")
        # An id is refused for a whole window after it was accepted, whatever `ts` a later
        # push with it carries; and a replay of this very datagram carries the same signed ts,
        # so once now > ts + window the window check rejects it. Past both, it can be forgotten.
        replays = self.replays
        replays.prune(now)
        if push.id in replays:
            raise Rejected(RejectReason.REPLAY, f"id {push.id!r} already seen")
        if not replays.add(push.id, max(push.ts, now) + self.window, now):
            raise Rejected(
                RejectReason.REPLAY_CACHE_FULL,
                f"the ids of the last {self.window:g} s fill the replay cache "
                f"({replays.max_bytes} bytes)",
            )
        return push, target
