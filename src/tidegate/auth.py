"""Client authentication: HS256 JSON Web Tokens, checked with PyJWT.

Rules (wire contract, "Client connections"):

- the signature must be HS256 with the gateway's JWT secret; ``alg=none`` and every other
  algorithm are refused before any key is used;
- ``sub`` (the user, a non-empty string) and ``exp`` are required;
- ``nbf`` and ``iat`` are honoured when present (a token from the future is refused);
- an optional ``rooms`` claim (a list of room names) limits what the connection may join.

Time is injected: ``verify_token(..., now=...)`` checks the time claims against ``now`` (Unix
seconds) instead of the wall clock, so tests need no sleeps and no clock patching.

Every failure raises ``AuthError`` whose ``reason`` is a short, stable code (see
``AuthError.REASONS``); the message is safe to send to the peer, it never includes the token.
"""

from __future__ import annotations

import hmac
import math
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

import jwt

__all__ = [
    "ALGORITHM",
    "AuthError",
    "Claims",
    "bearer_token",
    "make_token",
    "parse_duration",
    "secret_matches",
    "verify_token",
]

ALGORITHM: Final = "HS256"


class AuthError(Exception):
    """A token was refused. Caused by the peer: map it to error ``auth_failed``, never a 500.

    ``reason`` is one of ``REASONS``; ``str(error)`` is a human explanation.
    """

    REASONS: Final = frozenset(
        {
            "malformed",  # not a JWT at all, or a header/payload that is not JSON
            "bad_algorithm",  # alg is not HS256 (none, RS256, HS512, ...)
            "bad_signature",  # signed with another key, or tampered with
            "missing_claim",  # no sub or no exp
            "bad_claim",  # a claim of the wrong type (sub not a string, rooms not a list...)
            "expired",  # exp <= now - leeway
            "not_yet_valid",  # nbf or iat later than now + leeway
        }
    )

    def __init__(self, reason: str, message: str) -> None:
        assert reason in self.REASONS, reason
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Claims:
    """What a valid token grants. ``rooms`` is None when the token does not limit rooms."""

    user: str
    rooms: frozenset[str] | None
    expires_at: float

    def may_join(self, room: str) -> bool:
        return self.rooms is None or room in self.rooms


def _number(claims: dict[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise AuthError("bad_claim", f"`{name}` must be a number of seconds since the epoch")
    return float(value)


def verify_token(
    token: str, secret: str, *, now: float | None = None, leeway: float = 0.0
) -> Claims:
    """Check ``token`` and return its claims, or raise ``AuthError``.

    ``now`` defaults to ``time.time()``; ``leeway`` (seconds) tolerates clock skew on
    ``exp``, ``nbf`` and ``iat``.
    """
    if not secret:
        raise ValueError("verify_token: the JWT secret must not be empty")
    when = time.time() if now is None else now
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise AuthError("malformed", "token is not a JWT") from None
    alg = header.get("alg")
    if alg != ALGORITHM:
        # Checked before decoding so that no other algorithm, `none` included, ever runs.
        raise AuthError("bad_algorithm", f"token algorithm must be {ALGORITHM}, got {alg!r}")
    try:
        # PyJWT checks the signature; the time claims are checked below against `now`.
        claims: dict[str, Any] = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            options={
                "verify_signature": True,
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
                "verify_aud": False,
                "verify_iss": False,
                "verify_sub": False,  # checked below, with our own reason
                "verify_jti": False,
            },
        )
    except jwt.InvalidSignatureError:
        raise AuthError("bad_signature", "token signature does not match") from None
    except jwt.InvalidAlgorithmError:
        raise AuthError("bad_algorithm", f"token algorithm must be {ALGORITHM}") from None
    except jwt.PyJWTError:
        raise AuthError("malformed", "token payload is not valid") from None
    return _check_claims(claims, when, leeway)


def _check_claims(claims: dict[str, Any], now: float, leeway: float) -> Claims:
    for name in ("sub", "exp"):
        if name not in claims:
            raise AuthError("missing_claim", f"token has no `{name}` claim")
    user = claims["sub"]
    if not isinstance(user, str) or not user:
        raise AuthError("bad_claim", "`sub` must be a non-empty string")
    exp = _number(claims, "exp")
    assert exp is not None
    if exp <= now - leeway:
        raise AuthError("expired", "token expired")
    nbf = _number(claims, "nbf")
    if nbf is not None and nbf > now + leeway:
        raise AuthError("not_yet_valid", "token not valid yet (nbf)")
    iat = _number(claims, "iat")
    if iat is not None and iat > now + leeway:
        raise AuthError("not_yet_valid", "token issued in the future (iat)")
    rooms = claims.get("rooms")
    if rooms is None:
        return Claims(user, None, exp)
    if not isinstance(rooms, list) or not all(isinstance(r, str) and r for r in rooms):
        raise AuthError("bad_claim", "`rooms` must be a list of room names")
    return Claims(user, frozenset(rooms), exp)


def make_token(
    user: str,
    secret: str,
    ttl: float,
    rooms: Iterable[str] | None = None,
    *,
    now: float | None = None,
) -> str:
    """An HS256 token for ``user`` valid for ``ttl`` seconds from ``now`` (default: the clock).

    This is our own use, so bad arguments raise ``ValueError``, not ``AuthError``.
    """
    if not isinstance(user, str) or not user:
        raise ValueError("make_token: user must be a non-empty string")
    if not secret:
        raise ValueError("make_token: the JWT secret must not be empty")
    if isinstance(ttl, bool) or not math.isfinite(ttl) or ttl <= 0:
        raise ValueError(f"make_token: ttl must be a positive number of seconds, got {ttl!r}")
    issued = int(time.time() if now is None else now)
    payload: dict[str, Any] = {"sub": user, "iat": issued, "exp": issued + math.ceil(ttl)}
    if rooms is not None:
        names = sorted(set(rooms))
        if not all(isinstance(r, str) and r for r in names):
            raise ValueError("make_token: rooms must be non-empty strings")
        payload["rooms"] = names
    return jwt.encode(payload, secret, algorithm=ALGORITHM)


_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd])")


def parse_duration(text: str) -> float:
    """Seconds in ``text``: ``45s``, ``30m``, ``1h``, ``2d`` or a sum such as ``1h30m``.

    Raises ``ValueError`` with a message fit for a command-line error.
    """
    spec = text.strip().lower()
    pos = 0
    total = 0.0
    while pos < len(spec):
        match = _PART.match(spec, pos)
        if match is None:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if not spec or pos != len(spec):
        raise ValueError(
            f"invalid duration {text!r}: expected a number with a unit s, m, h or d "
            "(e.g. 45s, 30m, 1h, 2d, 1h30m)"
        )
    if total <= 0:
        raise ValueError(f"invalid duration {text!r}: must be longer than zero")
    return total


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
