"""The gateway's push call as the ingress adapters see it: `PushFunction` and `PushResult`,
`NotPublished` (what `push` raises when the broker cannot take a push) and `Confirmation`.

An ingress (UDP, HTTP, ...) is handed `Gateway.push` typed as a `PushFunction`; it never
imports the gateway.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

from tidegate.protocol import Target

__all__ = ["Confirmation", "NotPublished", "PushFunction", "PushResult"]


class PushResult(NamedTuple):
    id: str
    delivered: int  # connections reached on this node


class PushFunction(Protocol):
    """`Gateway.push`: deliver `data` (any JSON value, or `msgspec.Raw` already encoded) to
    `to`; raises `BadPush` for an unknown `to` form, `NotPublished` when the broker cannot
    take it (cluster mode; delivered nowhere)."""

    def __call__(
        self, to: str | Target, data: object, *, id: str | None = None, ingress: str = "local"
    ) -> PushResult: ...


class NotPublished(Exception):
    """The broker cannot carry this push to the other nodes now, so it was delivered nowhere
    (a retry cannot duplicate it). `code` is the reason counted by the ingress:
    `broker_unavailable` (HTTP 503) or `too_large` (over the broker's message limit, 413)."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


class Confirmation(Protocol):
    """How the HTTP ingress learns that the pushes it accepted reached the broker (cluster
    mode): `mark()` before pushing, `await published(mark)` after; True once the broker has
    acknowledged every push handed to it since the mark, False if it could not say so."""

    def mark(self) -> int: ...

    async def published(self, mark: int) -> bool: ...
