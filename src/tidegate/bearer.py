"""HTTP bearer credentials, checked with the standard library only (the admin app and the
HTTP ingress share it; neither needs a JWT library to read a header)."""

from __future__ import annotations

import hmac

__all__ = ["bearer_token", "secret_matches"]


def bearer_token(authorization: str) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value, or None."""
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def secret_matches(given: str, expected: str) -> bool:
    """Constant-time comparison of a credential from the network with ours.

    HTTP header values arrive as latin-1 text (aiohttp), possibly with bytes no UTF-8 string
    has; ``surrogateescape`` keeps those comparable instead of raising.
    """
    return hmac.compare_digest(
        given.encode("utf-8", "surrogateescape"), expected.encode("utf-8", "surrogateescape")
    )
