"""NATS subjects for pushes: one per user, one per room, one for everyone, one canary per node.

    <prefix>.u.<token>        pushes to user:<name>
    <prefix>.r.<token>        pushes to room:<name>
    <prefix>.all              pushes to all
    <prefix>.canary.<node>    a node's own health probe

A user or room name may hold anything (dots, `*`, `>`, spaces, any unicode, `~`), and must
never reach another subject: `alice.>` must not become a wildcard, `a.b` must not be user `a`
in room `b`. `token()` maps every name to one NATS token made only of `[A-Za-z0-9_-~]`:

- `A-Z a-z 0-9 _ -` stand for themselves; every other byte of the name's UTF-8 is `~XX`
  (two upper-case hex digits), `~` itself included; so the mapping is injective and readable
  (`room:chat.fr` is `tidegate.r.chat~2Efr`).
- The empty name is `~` alone (no escape is a lone `~`).
- A name whose escaped form would pass `MAX_LITERAL` characters is `~h` + the SHA-256 of its
  UTF-8 in hex. `h` is not an upper-case hex digit, so no literal token starts `~h`; two names
  share a hashed token only through a SHA-256 collision. This bounds every subject well below
  the server's control-line limit (4 KiB by default), past which the server would close the
  connection.

Receivers never derive the target from the subject: a node maps the subscription a message
arrived on to the target it subscribed for, so even a hash collision could not send a push to
the wrong connection, only to a node that discards it.
"""

from __future__ import annotations

import hashlib
import re
from typing import Final

from tidegate.protocol import Target

__all__ = ["MAX_LITERAL", "Subjects", "check_prefix", "token"]

MAX_LITERAL: Final = 128

_SAFE: Final = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_ESCAPES: Final = tuple(chr(byte) if byte in _SAFE else f"~{byte:02X}" for byte in range(256))
_PREFIX_TOKEN: Final = re.compile(r"[A-Za-z0-9_-]+")


def token(name: str) -> str:
    """The NATS token standing for `name` (see the module docstring)."""
    if len(name) <= MAX_LITERAL and _PREFIX_TOKEN.fullmatch(name):
        return name  # the common case: nothing to escape
    if not name:
        return "~"
    raw = name.encode("utf-8", "surrogatepass")
    if len(raw) <= MAX_LITERAL:  # each byte escapes to at most 3 characters: check the result
        escaped = "".join([_ESCAPES[byte] for byte in raw])
        if len(escaped) <= MAX_LITERAL:
            return escaped
    return "~h" + hashlib.sha256(raw).hexdigest()


def check_prefix(prefix: object) -> None:
    """Raise `ValueError` unless `prefix` is dot-separated tokens of `[A-Za-z0-9_-]`."""
    if not isinstance(prefix, str) or not all(
        _PREFIX_TOKEN.fullmatch(part) for part in prefix.split(".")
    ):
        raise ValueError(
            f"expected dot-separated words of letters, digits, '_' or '-', got {prefix!r}"
        )


class Subjects:
    """The subjects of one tidegate cluster, under `prefix` (`--broker-prefix`)."""

    __slots__ = ("_room", "_user", "all", "prefix")

    def __init__(self, prefix: str = "tidegate") -> None:
        check_prefix(prefix)
        self.prefix = prefix
        self.all = f"{prefix}.all"
        self._user = f"{prefix}.u."
        self._room = f"{prefix}.r."

    def of(self, target: Target) -> str:
        if target.kind == "user":
            return self._user + token(target.name)
        if target.kind == "room":
            return self._room + token(target.name)
        return self.all

    def canary(self, node: str) -> str:
        """The canary subject of node `node` (a node id: hex digits)."""
        return f"{self.prefix}.canary.{token(node)}"
