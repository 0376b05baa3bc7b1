"""Bearer credentials from HTTP headers, compared in constant time."""

from __future__ import annotations

import pytest

from tidegate.bearer import bearer_token, secret_matches


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer abc ", "abc"),
        ("BEARER  abc", "abc"),
        ("Bearer", None),
        ("Bearer ", None),
        ("Basic abc", None),
        ("", None),
    ],
)
def test_bearer_token(header: str, token: str | None) -> None:
    assert bearer_token(header) == token


def test_secret_matches_any_header_bytes() -> None:
    assert secret_matches("key", "key")
    assert not secret_matches("kex", "key")
    assert not secret_matches("", "key")
    # aiohttp hands header bytes over as latin-1 text; a lone surrogate must not raise.
    assert not secret_matches("\udcff", "key")
    assert not secret_matches("ké", "key")
