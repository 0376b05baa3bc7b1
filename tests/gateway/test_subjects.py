"""NATS subjects: no user or room name can reach another subject."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidegate.gateway.subjects import MAX_LITERAL, Subjects, check_prefix, token
from tidegate.protocol import Target

TOKEN = re.compile(r"[A-Za-z0-9_~-]+")


def unescape(text: str) -> str:
    """The inverse of `token` for names that were not hashed."""
    if text == "~":
        return ""
    raw = bytearray()
    i = 0
    while i < len(text):
        if text[i] == "~":
            raw.append(int(text[i + 1 : i + 3], 16))
            i += 3
        else:
            raw.append(ord(text[i]))
            i += 1
    return raw.decode("utf-8", "surrogatepass")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("alice", "alice"),
        ("Alice_2-b", "Alice_2-b"),
        ("a.b", "a~2Eb"),
        ("a.*", "a~2E~2A"),
        ("a.>", "a~2E~3E"),
        (">", "~3E"),
        ("a b", "a~20b"),
        ("~", "~7E"),
        ("~2E", "~7E2E"),
        ("", "~"),
        ("é", "~C3~A9"),
        ("$SYS", "~24SYS"),
    ],
)
def test_tokens_byte_for_byte(name: str, expected: str) -> None:
    assert token(name) == expected


def test_long_names_are_hashed_into_a_short_token() -> None:
    assert token("a" * MAX_LITERAL) == "a" * MAX_LITERAL
    long = token("a" * (MAX_LITERAL + 1))
    assert long.startswith("~h") and len(long) == 66
    assert token("." * 43) != token("." * 44)  # 129 and 132 escaped characters: both hashed
    assert token("." * 42) == "~2E" * 42  # 126: literal


@given(st.text(max_size=200))
def test_every_token_is_one_literal_nats_token_and_names_stay_apart(name: str) -> None:
    out = token(name)
    assert TOKEN.fullmatch(out), out
    assert len(out) <= max(MAX_LITERAL, 66)
    if not out.startswith("~h"):
        assert unescape(out) == name


@given(st.text(max_size=60), st.text(max_size=60))
def test_two_names_never_share_a_token(first: str, second: str) -> None:
    if first != second:
        assert token(first) != token(second)


def test_subjects_of_each_target() -> None:
    subjects = Subjects("acme.push")
    assert subjects.of(Target("user", "a.b", "user:a.b")) == "acme.push.u.a~2Eb"
    assert subjects.of(Target("room", "lobby", "room:lobby")) == "acme.push.r.lobby"
    assert subjects.of(Target("all", "", "all")) == "acme.push.all"
    assert subjects.canary("0f1e") == "acme.push.canary.0f1e"


@pytest.mark.parametrize("prefix", ["", "a.", ".a", "a..b", "a.*", "a b", ">", "ü", 7])
def test_a_prefix_is_literal_words(prefix: object) -> None:
    with pytest.raises(ValueError, match="dot-separated words"):
        check_prefix(prefix)
    check_prefix("tidegate")
    check_prefix("acme.push-1_x")
