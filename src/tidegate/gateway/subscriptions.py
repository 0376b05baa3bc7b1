"""The broker's subscriptions: which subjects this node needs, what it asked the server for,
and what it knows about each; the NATS `SUB`/`UNSUB` lines that bring the server in line.

Pure: no asyncio, no socket; time is passed in. `nats_broker.py` drives it.

A subscription goes through three states:

    PENDING --confirmed--> LIVE --refused / silent--> DEAF --retry--> PENDING
    PENDING --refused--> DEAF

- PENDING: its `SUB` was handed to the connection; no round trip has confirmed it yet.
- LIVE: a `PING` sent after the `SUB` came back without an `-ERR` for its sid (the server
  answers in order, so a refusal would have come first).
- DEAF: the server refused it (`-ERR 'Permissions Violation for Subscription to ...'`, which
  names the sid; a permissions reload removes live subscriptions that way too), or a probe
  published on its subject did not come back. A deaf subscription is retried (`UNSUB` of the
  old sid, `SUB` with a new one) on every health tick until it is confirmed again.

Subscriptions are reference counted by the registry, which calls `want` when a user's or room's
first connection arrives and `unwant` when its last one leaves; changes wait in `_changes`
(last word wins, so a join and a leave within one loop turn cost nothing) until the broker's
writer takes them as protocol lines. A node keeps one sid per subject, so a message is never
delivered twice to it. About 300 bytes per subject, against ~3.9 KB for a nats-py
`Subscription` (measured), which would have made cluster mode triple the memory of an idle
connection.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from tidegate.protocol import Target

__all__ = ["Sub", "SubState", "SubscriptionTable"]


class SubState(enum.Enum):
    PENDING = "pending"
    LIVE = "live"
    DEAF = "deaf"


@dataclass(slots=True, eq=False)
class Sub:
    subject: str
    target: Target
    sid: int
    state: SubState
    since: float  # when it entered its state (loop time)
    failures: int = 0  # times found deaf since it was last confirmed


def sub_line(subject: str, sid: int) -> bytes:
    return f"SUB {subject} {sid}\r\n".encode()


def unsub_line(sid: int) -> bytes:
    return f"UNSUB {sid}\r\n".encode()


class SubscriptionTable:
    """Every subject the node needs, by subject and by sid."""

    def __init__(self, *, first_sid: int = 1) -> None:
        self._next_sid = first_sid
        self._by_subject: dict[str, Sub] = {}
        self._by_sid: dict[int, Sub] = {}
        # subject -> target to subscribe, or None to unsubscribe; in the order they came.
        self._changes: dict[str, Target | None] = {}
        self._audit: list[Sub] = []  # what is left of the current round of probes
        self._counts = dict.fromkeys(SubState, 0)
        self._unconfirmed: list[int] = []  # sids made PENDING since the last take
        self._lowercase: dict[str, list[Sub]] | None = None  # by subject.lower(), built lazily
        self.deaf_events = 0
        self.resubscribes = 0

    def __len__(self) -> int:
        return len(self._by_subject)

    def __iter__(self) -> Iterator[Sub]:
        return iter(self._by_subject.values())

    def new_sid(self) -> int:
        sid = self._next_sid
        self._next_sid += 1
        return sid

    # -- what the node needs (from the registry, through the broker) -------------------------

    def want(self, subject: str, target: Target) -> None:
        self._changes.pop(subject, None)  # keep the order of the last change
        self._changes[subject] = target

    def unwant(self, subject: str) -> None:
        self._changes.pop(subject, None)
        self._changes[subject] = None

    @property
    def changed(self) -> bool:
        return bool(self._changes)

    # -- protocol lines ----------------------------------------------------------------------

    def take_changes(self, now: float) -> bytes:
        """The `SUB` and `UNSUB` lines for every change since the last call; new subscriptions
        are PENDING from now."""
        lines = []
        changes, self._changes = self._changes, {}
        for subject, target in changes.items():
            current = self._by_subject.get(subject)
            if target is not None and current is None:
                sub = Sub(subject, target, self.new_sid(), SubState.PENDING, now)
                self._by_subject[subject] = sub
                self._by_sid[sub.sid] = sub
                self._counts[SubState.PENDING] += 1
                self._unconfirmed.append(sub.sid)
                self._lowercase = None
                lines.append(sub_line(subject, sub.sid))
            elif target is None and current is not None:
                del self._by_subject[subject]
                del self._by_sid[current.sid]
                self._counts[current.state] -= 1
                self._lowercase = None
                lines.append(unsub_line(current.sid))
        return b"".join(lines)

    def resubscribe_all(self, now: float) -> bytes:
        """After a reconnect the server knows none of them: `SUB` for every one, with the sids
        they had (sids belong to a connection), all PENDING."""
        for sub in self._by_subject.values():
            self._set_state(sub, SubState.PENDING, now)
            self._unconfirmed.append(sub.sid)
        return b"".join(sub_line(sub.subject, sub.sid) for sub in self._by_subject.values())

    def retry_deaf(self, now: float) -> bytes:
        """`UNSUB` the old sid of every DEAF subscription and `SUB` it under a new one."""
        lines = []
        for sub in self._by_subject.values():
            if sub.state is SubState.DEAF:
                lines.append(unsub_line(sub.sid))
                del self._by_sid[sub.sid]
                sub.sid = self.new_sid()
                self._by_sid[sub.sid] = sub
                self._set_state(sub, SubState.PENDING, now)
                self._unconfirmed.append(sub.sid)
                lines.append(sub_line(sub.subject, sub.sid))
                self.resubscribes += 1
        return b"".join(lines)

    # -- what the server said ----------------------------------------------------------------

    def take_unconfirmed(self) -> list[int]:
        """The sids made PENDING since the last call: a round trip begun now confirms them."""
        sids, self._unconfirmed = self._unconfirmed, []
        return sids

    def has_unconfirmed(self) -> bool:
        return bool(self._unconfirmed)

    def unconfirm(self, sids: list[int]) -> None:
        """A round trip failed: these sids wait for the next one."""
        self._unconfirmed.extend(sids)

    def confirmed(self, sids: Iterable[int], now: float) -> list[tuple[Sub, int]]:
        """A round trip begun after these sids' `SUB` came back: those still PENDING (not
        refused meanwhile, not replaced) are LIVE. Returns those that had been deaf, with how
        many times."""
        recovered = []
        for sid in sids:
            sub = self._by_sid.get(sid)
            if sub is not None and sub.state is SubState.PENDING:
                self._set_state(sub, SubState.LIVE, now)
                if sub.failures:
                    recovered.append((sub, sub.failures))
                    sub.failures = 0
        return recovered

    def refused(self, sid: int, now: float) -> Sub | None:
        """The server refused or removed subscription `sid`; None if it is not ours (any
        more)."""
        sub = self._by_sid.get(sid)
        if sub is not None:
            self._deafen(sub, now)
        return sub

    def refused_subject(self, lowercase: str, now: float) -> list[Sub]:
        """The server refused a `SUB` for a subject it names, lowercased (nats-py lowercases
        protocol errors) and without a sid: every PENDING subscription whose subject matches.
        A subscription of another case caught with it is retried and confirmed at the next
        tick."""
        if self._lowercase is None:
            self._lowercase = {}
            for sub in self._by_subject.values():
                self._lowercase.setdefault(sub.subject.lower(), []).append(sub)
        refused = [
            sub for sub in self._lowercase.get(lowercase, ()) if sub.state is SubState.PENDING
        ]
        for sub in refused:
            self._deafen(sub, now)
        return refused

    def silent(self, subject: str, sid: int, now: float) -> Sub | None:
        """A probe sent on `subject` while its sid was `sid` never came back."""
        sub = self._by_subject.get(subject)
        if sub is not None and sub.sid == sid and sub.state is SubState.LIVE:
            self._deafen(sub, now)
            return sub
        return None

    def _deafen(self, sub: Sub, now: float) -> None:
        if sub.state is not SubState.DEAF:
            self._set_state(sub, SubState.DEAF, now)
            sub.failures += 1
            self.deaf_events += 1

    def _set_state(self, sub: Sub, state: SubState, now: float) -> None:
        self._counts[sub.state] -= 1
        self._counts[state] += 1
        sub.state = state
        sub.since = now

    # -- lookups -----------------------------------------------------------------------------

    def by_sid(self, sid: int) -> Sub | None:
        return self._by_sid.get(sid)

    def count(self, state: SubState) -> int:
        return self._counts[state]

    def oldest(self, state: SubState) -> float | None:
        """When the longest-standing subscription in `state` entered it, or None (a scan, only
        when there is one)."""
        if not self._counts[state]:
            return None
        return min(sub.since for sub in self._by_subject.values() if sub.state is state)

    def next_to_probe(self, count: int) -> list[Sub]:
        """Up to `count` LIVE subscriptions, round robin over the whole table: each one is
        probed once per round, then a new round starts from the current table."""
        chosen: list[Sub] = []
        refilled = False
        while len(chosen) < count:
            if not self._audit:
                if refilled or not self._by_subject:
                    break
                self._audit = list(self._by_subject.values())
                self._audit.reverse()  # pop() from the end takes them in table order
                refilled = True
            sub = self._audit.pop()
            if sub.state is SubState.LIVE and self._by_subject.get(sub.subject) is sub:
                chosen.append(sub)
        return chosen
