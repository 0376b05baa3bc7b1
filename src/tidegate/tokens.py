"""Client tokens: HS256 JSON Web Tokens, checked and made with PyJWT.

Rules (wire contract, "Client connections"):

- the signature must be HS256 with the gateway's JWT secret; ``alg=none`` and every other
  algorithm are refused before any key is used;
- ``sub`` (the user, a non-empty string) and ``exp`` are required;
- ``nbf`` and ``iat`` are honoured when present (a token from the future is refused);
- an optional ``rooms`` claim (a list of room names) limits what the connection may join.

Time is injected: ``verify_token(..., now=...)`` checks the time claims against ``now`` (Unix
seconds) instead of the wall clock, so tests need no sleeps and no clock patching.

Every refusal raises ``TokenRefused``, a ``PeerError``: ``.code`` is a ``TokenRefusal`` (short
and stable, counted by the gateway), ``.detail`` says why in words safe to send to the peer
(never the token).
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

import jwt

from tidegate.protocol import PeerError

__all__ = ["ALGORITHM", "Claims", "TokenRefusal", "TokenRefused", "make_token", "verify_token"]

ALGORITHM: Final = "HS256"


class TokenRefusal(enum.StrEnum):
    MALFORMED = "malformed"  # not a JWT at all, or a header/payload that is not JSON
    BAD_ALGORITHM = "bad_algorithm"  # alg is not HS256 (none, RS256, HS512, ...)
    BAD_SIGNATURE = "bad_signature"  # signed with another key, or tampered with
    MISSING_CLAIM = "missing_claim"  # no sub or no exp
    BAD_CLAIM = "bad_claim"  # a claim of the wrong type (sub not a string, rooms not a list...)
    EXPIRED = "expired"  # exp <= now - leeway
    NOT_YET_VALID = "not_yet_valid"  # nbf or iat later than now + leeway


class TokenRefused(PeerError):
    """A token was refused. Caused by the peer: the gateway answers `auth_failed`."""

    code: TokenRefusal

    def __init__(self, code: TokenRefusal, detail: str) -> None:
        super().__init__(code, detail)


@dataclass(frozen=True, slots=True)
class Claims:
    """What a valid token grants. ``rooms`` is None when the token does not limit rooms."""

    user: str
    rooms: frozenset[str] | None
    expires_at: float


def _number(claims: dict[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TokenRefused(
            TokenRefusal.BAD_CLAIM, f"`{name}` must be a number of seconds since the epoch"
        )
    return float(value)


def verify_token(
    token: str, secret: str, *, now: float | None = None, leeway: float = 0.0
) -> Claims:
    """Check ``token`` and return its claims, or raise ``TokenRefused``.

    ``now`` defaults to ``time.time()``; ``leeway`` (seconds) tolerates clock skew on
    ``exp``, ``nbf`` and ``iat``.
    """
    if not secret:
        raise ValueError("verify_token: the JWT secret must not be empty")
    when = time.time() if now is None else now
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise TokenRefused(TokenRefusal.MALFORMED, "token is not a JWT") from None
    alg = header.get("alg")
    if alg != ALGORITHM:
        # Checked before decoding so that no other algorithm, `none` included, ever runs.
        raise TokenRefused(
            TokenRefusal.BAD_ALGORITHM, f"token algorithm must be {ALGORITHM}, got {alg!r}"
        )
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
        raise TokenRefused(TokenRefusal.BAD_SIGNATURE, "token signature does not match") from None
    except jwt.InvalidAlgorithmError:
        raise TokenRefused(
            TokenRefusal.BAD_ALGORITHM, f"token algorithm must be {ALGORITHM}"
        ) from None
    except jwt.PyJWTError:
        raise TokenRefused(TokenRefusal.MALFORMED, "token payload is not valid") from None
    return _check_claims(claims, when, leeway)


def _check_claims(claims: dict[str, Any], now: float, leeway: float) -> Claims:
    for name in ("sub", "exp"):
        if name not in claims:
            raise TokenRefused(TokenRefusal.MISSING_CLAIM, f"token has no `{name}` claim")
    user = claims["sub"]
    if not isinstance(user, str) or not user:
        raise TokenRefused(TokenRefusal.BAD_CLAIM, "`sub` must be a non-empty string")
    exp = _number(claims, "exp")
    assert exp is not None
    if exp <= now - leeway:
        raise TokenRefused(TokenRefusal.EXPIRED, "token expired")
    nbf = _number(claims, "nbf")
    if nbf is not None and nbf > now + leeway:
        raise TokenRefused(TokenRefusal.NOT_YET_VALID, "token not valid yet (nbf)")
    iat = _number(claims, "iat")
    if iat is not None and iat > now + leeway:
        raise TokenRefused(TokenRefusal.NOT_YET_VALID, "token issued in the future (iat)")
    rooms = claims.get("rooms")
    if rooms is None:
        return Claims(user, None, exp)
    if not isinstance(rooms, list) or not all(isinstance(r, str) and r for r in rooms):
        raise TokenRefused(TokenRefusal.BAD_CLAIM, "`rooms` must be a list of room names")
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

    This is our own use, so bad arguments raise ``ValueError``, not ``TokenRefused``.
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
