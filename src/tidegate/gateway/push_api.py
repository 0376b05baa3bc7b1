"""The gateway's push call as the ingress adapters see it: `PushFunction` and `PushResult`.

An ingress (UDP, HTTP, ...) is handed `Gateway.push` typed as a `PushFunction`; it never
imports the gateway.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

from tidegate.protocol import Target

__all__ = ["PushFunction", "PushResult"]


class PushResult(NamedTuple):
    id: str
    delivered: int  # connections reached on this node


class PushFunction(Protocol):
    """`Gateway.push`: deliver `data` (any JSON value, or `msgspec.Raw` already encoded) to
    `to`; raises `BadPush` for an unknown `to` form."""

    def __call__(
        self, to: str | Target, data: object, *, id: str | None = None, ingress: str = "local"
    ) -> PushResult: ...
