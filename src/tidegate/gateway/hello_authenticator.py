"""The hello authenticator: plain user names (auth off) or HS256 JWTs (auth on).

The token rules live in `tidegate.tokens`; this module adapts them to the protocol core's
`Authenticate` callback, turning a `TokenRefused` into the core's `AuthFailed` (an error frame
`auth_failed` for the peer) and counting refusals by code.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

from tidegate.protocol import AuthFailed, Hello, Identity
from tidegate.protocol.connection import Authenticate
from tidegate.tokens import TokenRefused, verify_token

__all__ = ["make_hello_authenticator"]


def _trust_user(hello: Hello) -> Identity:
    if hello.user is None:
        raise AuthFailed("hello needs `user` (authentication is off)")
    return Identity(hello.user)


def make_hello_authenticator(
    jwt_secret: str | None,
    *,
    refusals: Counter[str] | None = None,
    clock: Callable[[], float] = time.time,
) -> Authenticate:
    """The callback the protocol core calls on hello.

    Without a secret, `user` is trusted (loopback-only dev setups; `Config.check_startable`
    enforces that). With one, `token` must be a valid HS256 JWT; `refusals` counts refused
    tokens by `TokenRefused.code` (and "missing_token"), and the client's `auth_failed` reason
    is that same code, a colon and the detail: `expired: token expired` (docs/operating.md).
    """
    if jwt_secret is None:
        return _trust_user
    secret = jwt_secret
    counts: Counter[str] = Counter() if refusals is None else refusals

    def authenticate_token(hello: Hello) -> Identity:
        if hello.token is None:
            counts["missing_token"] += 1
            raise AuthFailed("missing_token: hello needs `token`")
        now = clock()
        try:
            claims = verify_token(hello.token, secret, now=now)
        except TokenRefused as exc:
            counts[exc.code.value] += 1
            raise AuthFailed(f"{exc.code.value}: {exc.detail}") from None
        # As a duration: the core runs on the loop's clock, not on wall time.
        return Identity(claims.user, claims.rooms, valid_for=claims.expires_at - now)

    return authenticate_token
