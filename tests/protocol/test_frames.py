from __future__ import annotations

import pytest

from tidegate.protocol import BadFrame, ErrorCode, encode_error, encode_msg
from tidegate.protocol.frames import (
    CLOSING_CODES,
    Hello,
    Join,
    Leave,
    Ping,
    encode_joined,
    encode_left,
    encode_pong,
    encode_welcome,
    parse_frame,
)


@pytest.mark.parametrize(
    ("line", "frame"),
    [
        (b'{"op":"hello","user":"alice"}', Hello(user="alice")),
        (b'{"op":"hello","token":"t.k.n"}', Hello(token="t.k.n")),
        (b'{"op":"ping"}', Ping()),
        (b' {"op": "ping", "extra": [1, 2]}\r', Ping()),
        (b'{"op":"join","room":"lobby"}', Join(room="lobby")),
        (b'{"op":"leave","room":"lobby"}', Leave(room="lobby")),
        ('{"op":"join","room":"café"}'.encode(), Join(room="café")),
    ],
)
def test_parse(line: bytes, frame: object) -> None:
    assert parse_frame(line) == frame


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"not json",
        b"[]",
        b'"hello"',
        b"{}",
        b'{"op":"pong"}',
        b'{"op":"msg"}',
        b'{"op":"join"}',
        b'{"op":"join","room":""}',
        b'{"op":"join","room":5}',
        b'{"op":"hello","user":""}',
        b'{"op":"hello","user":null,"token":7}',
        b'{"op":"ping"} {"op":"ping"}',
        b"\xff\xfe",
        b"[" * 10_000,
        b'{"op":"hello","user":' + b"[" * 20_000 + b"]" * 20_000 + b"}",  # nested too deeply
    ],
)
def test_parse_rejects(line: bytes) -> None:
    with pytest.raises(BadFrame):
        parse_frame(line)


def test_encode_exact_bytes() -> None:
    assert encode_welcome(user="alice", session="s1", heartbeat=25.0) == (
        b'{"op":"welcome","user":"alice","session":"s1","heartbeat":25}\n'
    )
    assert encode_welcome(user="a", session="s", heartbeat=0.5) == (
        b'{"op":"welcome","user":"a","session":"s","heartbeat":0.5}\n'
    )
    assert encode_pong() == b'{"op":"pong"}\n'
    assert encode_joined("lobby") == b'{"op":"joined","room":"lobby"}\n'
    assert encode_left('a"b') == b'{"op":"left","room":"a\\"b"}\n'
    assert encode_error(ErrorCode.BAD_FRAME, "no") == (
        b'{"op":"error","code":"bad_frame","reason":"no"}\n'
    )
    assert encode_msg(to="user:alice", id="m1", data_json=b'{"x":[1,"y"]}') == (
        b'{"op":"msg","to":"user:alice","id":"m1","data":{"x":[1,"y"]}}\n'
    )


def test_msg_with_pretty_printed_data_stays_on_one_line() -> None:
    frame = encode_msg(to="all", id="1", data_json=b'{\n  "a": "b\\nc"\n}')
    assert frame == b'{"op":"msg","to":"all","id":"1","data":{"a":"b\\nc"}}\n'
    assert frame.count(b"\n") == 1


def test_error_codes_match_the_contract() -> None:
    assert {code.value for code in ErrorCode} == {
        "bad_frame",
        "frame_too_large",
        "handshake_timeout",
        "auth_failed",
        "idle_timeout",
        "slow_consumer",
        "server_shutdown",
        "too_many_connections",
        "rate_limited",
        "too_many_rooms",
        "forbidden_room",
    }
    assert {ErrorCode.TOO_MANY_ROOMS, ErrorCode.FORBIDDEN_ROOM}.isdisjoint(CLOSING_CODES)
