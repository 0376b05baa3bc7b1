"""`parse_address` and the bracket helpers: one address syntax for every command."""

from __future__ import annotations

import pytest

from tidegate.addresses import format_address, http_url, parse_address


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("127.0.0.1:7400", ("127.0.0.1", 7400)),
        ("localhost:0", ("localhost", 0)),
        ("[::1]:80", ("::1", 80)),
        ("[fe80::1%eth0]:80", ("fe80::1%eth0", 80)),
        (":8080", ("127.0.0.1", 8080)),
        (" h:65535 ", ("h", 65535)),
    ],
)
def test_addresses(text: str, address: tuple[str, int]) -> None:
    assert parse_address(text) == address


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("7400", "expected HOST:PORT"),
        ("h:", "expected HOST:PORT"),
        ("h:x", "expected HOST:PORT"),
        ("h:\u00b2", "expected HOST:PORT"),  # a digit to str.isdigit, not to int()
        ("", "expected HOST:PORT"),
        ("::1:80", "IPv6 host in brackets"),
        ("[::1:80", r"expected \[IPV6\]:PORT"),
        ("[nope]:80", r"expected \[IPV6\]:PORT"),
        ("[]:80", r"expected \[IPV6\]:PORT"),
        ("h:65536", "port out of range"),
    ],
)
def test_bad_addresses(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_address(text)


def test_formatted_addresses_read_back() -> None:
    for address in (("127.0.0.1", 7400), ("::1", 80), ("example.com", 1)):
        assert parse_address(format_address(address)) == address
    assert http_url(("::1", 8080), "/debug/vars") == "http://[::1]:8080/debug/vars"
