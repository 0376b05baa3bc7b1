"""The state machine, driven with bytes and an explicit clock; replies compared exactly."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidegate.protocol import (
    AuthFailed,
    Closing,
    Connection,
    ErrorCode,
    Hello,
    Identity,
    Joined,
    Left,
    Limits,
    Opened,
    State,
    UsageError,
)
from tidegate.protocol.connection import _TRANSITIONS

LIMITS = Limits(
    max_line=128,
    max_rooms=2,
    handshake_timeout=5,
    heartbeat=10,
    idle_timeout=20,
    frame_rate=1000,
    frame_burst=1_000_000,
)


def trust(hello: Hello) -> Identity:
    if hello.user is None:
        raise AuthFailed("no user")
    if hello.user == "vip":
        return Identity("vip", frozenset({"lobby"}))
    if hello.user == "guest":
        return Identity("guest", valid_for=15.0)
    return Identity(hello.user)


def new(now: float = 0.0) -> Connection:
    return Connection(session="s1", limits=LIMITS, authenticate=trust, now=now)


def opened(user: str = "alice") -> Connection:
    conn = new()
    assert conn.receive_data(b'{"op":"hello","user":"%s"}\n' % user.encode(), 0.0) == [Opened(user)]
    conn.data_to_send()
    return conn


def test_handshake_and_welcome_bytes() -> None:
    conn = new()
    assert conn.state is State.HANDSHAKE
    assert conn.receive_data(b'{"op":"hel', 1.0) == []
    assert conn.receive_data(b'lo","user":"alice"}\n', 1.5) == [Opened("alice")]
    # mypy keeps the narrowing to HANDSHAKE across receive_data(), which changed the state.
    assert conn.state is State.OPEN  # type: ignore[comparison-overlap]
    assert conn.data_to_send() == (
        b'{"op":"welcome","user":"alice","session":"s1","heartbeat":10}\n'
    )
    assert conn.data_to_send() == b""


@pytest.mark.parametrize(
    ("data", "events", "sent"),
    [
        (b'{"op":"ping"}\n', [], b'{"op":"pong"}\n'),
        (
            b'{"op":"join","room":"lobby"}\n{"op":"join","room":"lobby"}\n',
            [Joined("lobby")],
            b'{"op":"joined","room":"lobby"}\n' * 2,
        ),
        (b'{"op":"leave","room":"x"}\n', [], b'{"op":"left","room":"x"}\n'),
        (
            b'{"op":"join","room":"a"}\n{"op":"join","room":"b"}\n{"op":"join","room":"c"}\n',
            [Joined("a"), Joined("b")],
            b'{"op":"joined","room":"a"}\n{"op":"joined","room":"b"}\n'
            b'{"op":"error","code":"too_many_rooms","reason":"at most 2 rooms per connection"}\n',
        ),
    ],
)
def test_open_frames(data: bytes, events: list[object], sent: bytes) -> None:
    conn = opened()
    assert conn.receive_data(data, 1.0) == events
    assert conn.data_to_send() == sent
    assert conn.state is State.OPEN


def test_join_then_leave_reports_membership() -> None:
    conn = opened()
    conn.receive_data(b'{"op":"join","room":"r"}\n{"op":"leave","room":"r"}\n', 1.0)
    assert conn.rooms == set()
    conn.receive_data(b'{"op":"join","room":"r"}\n', 1.0)
    assert conn.receive_data(b'{"op":"leave","room":"r"}\n', 1.0) == [Left("r")]


def test_forbidden_room_keeps_the_connection() -> None:
    conn = opened("vip")
    assert conn.receive_data(b'{"op":"join","room":"kitchen"}\n', 1.0) == []
    assert conn.data_to_send() == (
        b'{"op":"error","code":"forbidden_room",'
        b'"reason":"the token does not allow room \'kitchen\'"}\n'
    )
    assert conn.receive_data(b'{"op":"join","room":"lobby"}\n', 1.0) == [Joined("lobby")]
    assert conn.state is State.OPEN


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b'{"op":"ping"}\n', ErrorCode.BAD_FRAME),
        (b"garbage\n", ErrorCode.BAD_FRAME),
        (b'{"op":"hello"}\n', ErrorCode.AUTH_FAILED),
        (b"x" * 200, ErrorCode.FRAME_TOO_LARGE),
    ],
)
def test_handshake_failures_close(data: bytes, code: ErrorCode) -> None:
    conn = new()
    [event] = conn.receive_data(data, 0.0)
    assert isinstance(event, Closing) and event.code is code
    assert conn.state is State.CLOSING
    assert conn.data_to_send().startswith(b'{"op":"error","code":"%s",' % code.value.encode())
    # Whatever the peer sends next is ignored.
    assert conn.receive_data(b'{"op":"hello","user":"a"}\n', 0.1) == []
    assert conn.data_to_send() == b""


def test_frames_after_a_fatal_one_in_the_same_chunk_are_ignored() -> None:
    conn = opened()
    events = conn.receive_data(b'{"op":"ping"}\nnope\n{"op":"join","room":"r"}\n', 1.0)
    assert events == [Closing(ErrorCode.BAD_FRAME, "invalid JSON")]
    assert conn.data_to_send() == (
        b'{"op":"pong"}\n{"op":"error","code":"bad_frame","reason":"invalid JSON"}\n'
    )


def test_second_hello_is_a_bad_frame() -> None:
    conn = opened()
    [event] = conn.receive_data(b'{"op":"hello","user":"bob"}\n', 1.0)
    assert event == Closing(ErrorCode.BAD_FRAME, "hello was already received")


def test_handshake_timeout_uses_injected_time() -> None:
    conn = new(now=100.0)
    assert conn.check_timeouts(104.9) is None
    closing = conn.check_timeouts(105.0)
    assert closing is not None and closing.code is ErrorCode.HANDSHAKE_TIMEOUT
    assert conn.data_to_send() == (
        b'{"op":"error","code":"handshake_timeout","reason":"no hello within 5 s"}\n'
    )
    assert conn.check_timeouts(1000.0) is None  # already closing: one error frame only


def test_idle_timeout_counts_any_frame_as_liveness() -> None:
    conn = opened()
    assert conn.check_timeouts(19.0) is None
    conn.receive_data(b'{"op":"ping"}\n', 19.0)
    assert conn.check_timeouts(38.0) is None
    closing = conn.check_timeouts(39.0)
    assert closing == Closing(ErrorCode.IDLE_TIMEOUT, "no frame for 20 s")


def test_idle_timeout_ignores_bytes_that_make_no_frame() -> None:
    conn = opened()
    conn.receive_data(b'{"op":', 10.0)
    conn.receive_data(b" ", 19.0)
    closing = conn.check_timeouts(20.0)
    assert closing == Closing(ErrorCode.IDLE_TIMEOUT, "no frame for 20 s")


def test_credential_expiry_closes_an_open_connection() -> None:
    conn = opened("guest")  # hello at 0, valid for 15 s
    conn.receive_data(b'{"op":"ping"}\n', 14.0)
    assert conn.check_timeouts(14.9) is None
    assert conn.check_timeouts(15.0) == Closing(ErrorCode.AUTH_FAILED, "token expired")
    assert opened().check_timeouts(19.9) is None  # no expiry without a limit


def test_server_close_once() -> None:
    conn = opened()
    assert conn.close(ErrorCode.SERVER_SHUTDOWN, "bye") == Closing(ErrorCode.SERVER_SHUTDOWN, "bye")
    assert conn.close(ErrorCode.SLOW_CONSUMER, "slow") is None
    assert conn.data_to_send() == b'{"op":"error","code":"server_shutdown","reason":"bye"}\n'
    conn.transport_closed()
    assert conn.state is State.CLOSED


def test_close_with_a_non_closing_code_is_our_bug() -> None:
    with pytest.raises(UsageError):
        opened().close(ErrorCode.TOO_MANY_ROOMS, "x")


def test_peer_gone_from_every_state() -> None:
    for conn in (new(), opened()):
        conn.peer_gone()
        assert conn.state is State.CLOSED
        assert conn.receive_data(b'{"op":"ping"}\n', 1.0) == []


def test_table_has_no_exit_from_closed() -> None:
    assert {to for (frm, _), to in _TRANSITIONS.items() if frm is State.CLOSED} == {State.CLOSED}


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=12), st.booleans())
def test_fuzz_receive_data_never_crashes_or_overbuffers(chunks: list[bytes], hello: bool) -> None:
    conn = new()
    if hello:
        conn.receive_data(b'{"op":"hello","user":"a"}\n', 0.0)
    for chunk in chunks:
        conn.receive_data(chunk, 1.0)
        assert conn.buffered < LIMITS.max_line
        conn.data_to_send()
    assert conn.state in (State.HANDSHAKE, State.OPEN, State.CLOSING)


frames = st.sampled_from(
    [
        b'{"op":"ping"}\n',
        b'{"op":"join","room":"a"}\n',
        b'{"op":"join","room":"b"}\n',
        b'{"op":"join","room":"c"}\n',
        b'{"op":"leave","room":"a"}\n',
    ]
)


@settings(max_examples=200, deadline=None)
@given(st.lists(frames, max_size=30), st.integers(min_value=1, max_value=40))
def test_fuzz_valid_streams_in_any_chunking(parts: list[bytes], cut: int) -> None:
    conn = opened()
    stream = b"".join(parts)
    for i in range(0, len(stream), cut):
        conn.receive_data(stream[i : i + cut], 1.0)
    assert conn.state is State.OPEN
    assert len(conn.rooms) <= LIMITS.max_rooms
    assert conn.data_to_send().count(b"\n") == len(parts)


PING, PONG = b'{"op":"ping"}\n', b'{"op":"pong"}\n'


def test_a_large_read_gets_every_reply_in_one_chunk() -> None:
    # 200k frames in one read: the replies are collected and joined once (they used to be
    # appended with `bytes +=`, a copy of the whole output per frame).
    conn = opened()
    assert conn.receive_data(PING * 200_000, 1.0) == []
    assert conn.data_to_send() == PONG * 200_000
    assert conn.data_to_send() == b""


def test_max_frames_handles_a_read_in_slices_and_keeps_the_rest() -> None:
    conn = opened()
    data = b'{"op":"join","room":"a"}\n' + PING * 5 + b'{"op":"ping"'
    assert conn.receive_data(data, 1.0, max_frames=2) == [Joined("a")]
    assert conn.data_to_send() == b'{"op":"joined","room":"a"}\n' + PONG
    assert conn.input_pending
    assert conn.receive_data(b"", 2.0, max_frames=3) == []
    assert conn.data_to_send() == PONG * 3 and conn.input_pending
    assert conn.last_seen == 2.0  # the frames handled now were read now
    # New input while some is pending is queued behind it, in order.
    assert conn.receive_data(b"}\n" + PING, 3.0, max_frames=1) == []
    assert conn.data_to_send() == PONG and conn.input_pending
    assert conn.receive_data(b"", 3.0, max_frames=100) == []
    assert conn.data_to_send() == PONG * 2
    assert not conn.input_pending


def test_max_frames_zero_handles_nothing() -> None:
    conn = opened()
    assert conn.receive_data(PING, 1.0, max_frames=0) == []
    assert conn.data_to_send() == b"" and conn.input_pending


def test_no_input_is_pending_once_the_connection_closes() -> None:
    conn = opened()
    conn.receive_data(b"nonsense\n" + PING * 10, 1.0, max_frames=5)
    assert conn.state is State.CLOSING and not conn.input_pending
    assert conn.data_to_send().startswith(b'{"op":"error","code":"bad_frame"')


def budgeted(rate: float, burst: int) -> Connection:
    limits = Limits(
        max_line=128,
        max_rooms=200,
        handshake_timeout=5,
        heartbeat=10,
        idle_timeout=20,
        frame_rate=rate,
        frame_burst=burst,
    )
    return Connection(session="s1", limits=limits, authenticate=trust, now=0.0)


RATE_LIMITED = (
    b'{"op":"error","code":"rate_limited","reason":"more than 4 frames at once or 2 frames/s"}\n'
)


def test_the_frame_budget_allows_a_burst_then_its_rate() -> None:
    conn = budgeted(rate=2, burst=4)
    assert conn.receive_data(b'{"op":"hello","user":"a"}\n' + PING * 3, 0.0) == [Opened("a")]
    conn.data_to_send()  # the burst of 4 is spent
    assert conn.receive_data(PING, 0.5, max_frames=1) == []  # half a second: one token back
    assert conn.data_to_send() == PONG
    assert conn.receive_data(PING, 1.0) == []
    assert conn.data_to_send() == PONG
    # Idle for a long time: the bucket fills up to the burst, not beyond.
    assert conn.receive_data(PING * 4, 100.0) == []
    assert conn.data_to_send() == PONG * 4
    assert conn.receive_data(PING * 2, 100.0) == [
        Closing(ErrorCode.RATE_LIMITED, "more than 4 frames at once or 2 frames/s")
    ]
    assert conn.data_to_send() == RATE_LIMITED  # the second ping got nothing
    assert conn.state is State.CLOSING


def test_the_frame_budget_counts_the_hello() -> None:
    conn = budgeted(rate=2, burst=1)
    events = conn.receive_data(b'{"op":"hello","user":"a"}\n' + PING, 0.0)
    assert events == [
        Opened("a"),
        Closing(ErrorCode.RATE_LIMITED, "more than 1 frames at once or 2 frames/s"),
    ]


def test_the_default_budget_lets_a_client_join_its_128_rooms_at_once() -> None:
    from tidegate.gateway import Config

    config = Config()
    conn = Connection(session="s1", limits=config.limits(), authenticate=trust, now=0.0)
    joins = b"".join(b'{"op":"join","room":"r%d"}\n' % n for n in range(config.max_rooms))
    hello = b'{"op":"hello","user":"a"}\n'
    # Twice over, within the same instant: a reconnecting client repeating its joins.
    events = conn.receive_data(hello + joins + joins + PING, 0.0)
    assert len(events) == 1 + config.max_rooms
    assert conn.state is State.OPEN


@settings(max_examples=200, deadline=None)
@given(st.lists(frames, max_size=30), st.integers(min_value=1, max_value=40), st.integers(1, 7))
def test_fuzz_slices_change_nothing_but_when(parts: list[bytes], cut: int, slice: int) -> None:
    whole, sliced = opened(), opened()
    stream = b"".join(parts)
    whole_events = whole.receive_data(stream, 1.0)
    sliced_events = []
    for i in range(0, len(stream), cut):
        sliced_events += sliced.receive_data(stream[i : i + cut], 1.0, max_frames=slice)
        while sliced.input_pending:
            sliced_events += sliced.receive_data(b"", 1.0, max_frames=slice)
    assert sliced_events == whole_events
    assert sliced.data_to_send() == whole.data_to_send()
