"""Errors of the sans-I/O core, split by whose fault they are.

`PeerError` and its subclasses are caused by the bytes a remote party sent; the adapters turn
them into an error frame or a rejection counter, never a traceback. Every one carries `code`,
short and stable (an `ErrorCode`, a `RejectReason`, ...: what is counted, and what an error
frame or reply names), and `detail`, a sentence safe to send back. `UsageError` means our own
code called the core in a state where the call makes no sense: that is a bug and must propagate.
"""

from __future__ import annotations

__all__ = ["PeerError", "UsageError"]


class PeerError(Exception):
    """The remote party broke the contract: `code` says how (stable), `detail` in words."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


class UsageError(RuntimeError):
    """The core was driven wrongly by local code (a bug on our side, not the peer's)."""
