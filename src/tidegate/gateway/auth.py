"""Hello authentication: plain user names (auth off) or HS256 JWTs (auth on)."""

from __future__ import annotations

import jwt

from tidegate.protocol import AuthFailed, Hello, Identity
from tidegate.protocol.connection import Authenticate

__all__ = ["make_authenticator"]


def _trust_user(hello: Hello) -> Identity:
    if hello.user is None:
        raise AuthFailed("hello needs `user` (authentication is off)")
    return Identity(hello.user)


def make_authenticator(jwt_secret: str | None) -> Authenticate:
    """The callback the protocol core calls on hello. PyJWT reads the wall clock itself."""
    if jwt_secret is None:
        return _trust_user
    key = jwt_secret

    def verify_token(hello: Hello) -> Identity:
        if hello.token is None:
            raise AuthFailed("hello needs `token`")
        try:
            claims = jwt.decode(
                hello.token, key, algorithms=["HS256"], options={"require": ["sub", "exp"]}
            )
        except jwt.ExpiredSignatureError:
            raise AuthFailed("token expired") from None
        except jwt.PyJWTError as exc:
            raise AuthFailed(f"invalid token: {exc}") from None
        user = claims["sub"]
        rooms = claims.get("rooms")
        if not isinstance(user, str) or not user:
            raise AuthFailed("`sub` must be a non-empty string")
        if rooms is None:
            return Identity(user)
        if not isinstance(rooms, list) or not all(isinstance(r, str) for r in rooms):
            raise AuthFailed("`rooms` must be a list of names")
        return Identity(user, frozenset(rooms))

    return verify_token
