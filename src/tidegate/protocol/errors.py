"""Errors of the sans-I/O core, split by whose fault they are.

`PeerError` and its subclasses are caused by the bytes a remote party sent; the adapters turn
them into an error frame or a rejection counter, never a traceback. `UsageError` means our own
code called the core in a state where the call makes no sense: that is a bug and must propagate.
"""

from __future__ import annotations

__all__ = ["PeerError", "UsageError"]


class PeerError(Exception):
    """The remote party broke the contract. `reason` is short text safe to send back."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UsageError(RuntimeError):
    """The core was driven wrongly by local code (a bug on our side, not the peer's)."""
