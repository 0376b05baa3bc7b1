"""`ClientProtocol` against an in-memory transport: the outbound path, byte for byte.

No socket and no event loop: the transport records writes and applies flow control like
asyncio's (pause above the high-water mark after a write, resume at the low-water mark after a
drain), the loop turn ends when the test says so, and time is a number the test moves. The
real-socket tests (test_slow_consumers.py, ...) keep the end-to-end behaviour.
"""

from __future__ import annotations

import pytest

from tidegate.gateway import Config
from tidegate.gateway.tcp import INPUT_SLICE, ClientProtocol
from tidegate.protocol import ErrorCode, Target

from .fakes import BUFFER, FakeTransport, Harness, harness

FRAME = b"f" * 99 + b"\n"  # 100 bytes
ALICE = Target("user", "alice", "user:alice")


def test_the_first_frame_of_a_turn_is_written_through_the_rest_leave_together() -> None:
    h = harness()
    client, transport = h.connect()
    assert client.send_frame(b"a\n") and transport.writes == [b"a\n"]  # at once
    assert client.send_frame(b"b\n") and client.send_frame(b"c\n")
    assert transport.writes == [b"a\n"]  # queued behind the first
    assert client.buffered() == 4  # the first is in the kernel already
    h.turn.end()
    assert transport.writes == [b"a\n", b"b\nc\n"]  # one more write for the rest
    assert client.send_frame(b"d\n") and transport.writes[-1] == b"d\n"  # a new turn


def test_a_write_through_alone_still_ends_the_turn() -> None:
    h = harness()
    client, transport = h.connect()
    turn = h.turns.turn
    client.send_frame(b"a\n")
    assert h.turns.flush_pending and len(h.turn.callbacks) == 1
    h.turn.end()
    assert h.turns.turn == turn + 1
    client.send_frame(b"b\n")
    assert transport.writes == [b"a\n", b"b\n"]


def test_flow_control_pauses_the_writes_and_resume_flushes_the_queue_in_one_write() -> None:
    h = harness(overflow="drop-newest")
    client, transport = h.connect()
    for _ in range(11):  # 1100 bytes: the kernel takes 1000, the transport keeps 100
        client.send_frame(FRAME)
    h.turn.end()
    assert transport.paused and transport.buffered == 100
    client.send_frame(b"late-1\n")
    client.send_frame(b"late-2\n")
    h.turn.end()
    assert len(transport.writes) == 2  # nothing written while paused
    assert client.buffered() == 100 + 14
    transport.drain()  # resume_writing: the queue leaves at once, in one write
    assert not transport.paused and transport.writes[-1] == b"late-1\nlate-2\n"
    client.send_frame(b"next\n")  # queue empty again: back to writing through
    assert transport.writes[-1] == b"next\n"


def fill_to_the_bound(h: Harness) -> tuple[ClientProtocol, FakeTransport]:
    """A connection holding exactly `buffer_bytes`: 100 in the paused transport (the kernel
    holds 1000 more) and 3900 queued (a 4000-byte bound and 100-byte frames)."""
    client, transport = h.connect()
    for _ in range(11):
        assert client.send_frame(FRAME)
    h.turn.end()
    assert transport.paused
    for _ in range(39):
        assert client.send_frame(FRAME)
    h.turn.end()
    assert client.buffered() == BUFFER
    return client, transport


def test_overflow_disconnect_sends_slow_consumer_and_closes() -> None:
    h = harness(overflow="disconnect")
    client, transport = fill_to_the_bound(h)
    assert not client.send_frame(FRAME)
    assert transport.ended and not transport.aborted
    # The queued frames leave ahead of the error frame, in the same write.
    assert transport.writes[-1] == FRAME * 39 + (
        b'{"op":"error","code":"slow_consumer","reason":"more than 4000 bytes pending"}\n'
    )
    assert h.counters.disconnects == {"slow_consumer": 1}
    assert h.registry.targets(ALICE) == frozenset()
    assert not client.send_frame(FRAME)  # closing: nothing more is taken
    assert h.counters.drops == {}


def test_overflow_drop_oldest_keeps_the_newest() -> None:
    h = harness(overflow="drop-oldest")
    client, transport = fill_to_the_bound(h)
    newest = b"n" * 249 + b"\n"  # 250 bytes: three queued frames must go
    assert client.send_frame(newest)
    assert h.counters.drops == {"drop-oldest": 3}
    assert client.buffered() == BUFFER - 300 + 250
    transport.drain()
    assert transport.writes[-1] == FRAME * 36 + newest


def test_overflow_drop_newest_refuses_the_new_frame() -> None:
    h = harness(overflow="drop-newest")
    client, transport = fill_to_the_bound(h)
    assert not client.send_frame(b"new\n")
    assert h.counters.drops == {"drop-newest": 1}
    assert client.buffered() == BUFFER
    transport.drain()
    assert transport.writes[-1] == FRAME * 39 and not transport.ended


def test_a_connection_at_its_bound_takes_frames_again_once_the_peer_reads() -> None:
    h = harness(overflow="drop-newest")
    client, transport = fill_to_the_bound(h)
    assert not client.send_frame(FRAME)
    transport.drain(100)  # the transport drains, resumes, and our queue follows into it
    assert client.buffered() == BUFFER - 100
    assert client.send_frame(FRAME)
    assert h.counters.drops == {"drop-newest": 1}


def test_write_deadline_cuts_a_client_that_drains_nothing() -> None:
    h = harness(overflow="drop-newest", write_timeout=5.0)
    client, transport = fill_to_the_bound(h)
    client.sweep(h.clock.now)  # the stall starts being timed
    h.clock.now += 4.9
    client.sweep(h.clock.now)
    assert not transport.ended
    transport.drain(50)  # some progress (the transport's buffer shrank): the timer starts over
    client.sweep(h.clock.now)
    h.clock.now += 4.9
    client.sweep(h.clock.now)
    assert not transport.ended
    transport.drain(50)  # drained: resumed, and the queue written behind it; it starts over
    assert transport.buffered > 100
    client.sweep(h.clock.now)
    h.clock.now += 4.9
    client.sweep(h.clock.now)
    assert not transport.ended
    h.clock.now += 0.1
    client.sweep(h.clock.now)
    assert transport.ended
    assert transport.writes[-1].endswith(b'"nothing drained for 5 s"}\n')
    assert h.counters.disconnects == {"slow_consumer": 1}


def test_a_client_with_nothing_pending_is_never_cut_for_writing() -> None:
    h = harness(write_timeout=1.0)
    client, transport = h.connect()
    for _ in range(5):
        h.clock.now += 0.9
        client.data_received(b'{"op":"ping"}\n')  # keeps the idle timeout away
        h.turn.end()
        transport.drain()
        client.sweep(h.clock.now)
    assert not transport.ended


def test_closing_lingers_then_closes_and_is_forgotten_when_the_transport_is_gone() -> None:
    h = harness(close_linger=2.0)
    client, transport = h.connect()
    client.close(ErrorCode.SERVER_SHUTDOWN, "bye")
    assert transport.ended and not transport.aborted
    assert h.connections.closing == {client} and not h.connections.live
    h.clock.now += 1.9
    client.sweep(h.clock.now)
    assert not transport.closed  # still lingering: the peer may still close first
    h.clock.now += 0.1
    client.sweep(h.clock.now)
    # The linger ran out with everything handed to the kernel (this fake one has no
    # send-queue figure): a plain close, no reset.
    assert transport.closed and not transport.aborted
    client.connection_lost(None)
    assert not h.connections.closing
    assert h.counters.disconnects == {"server_shutdown": 1}


def test_a_linger_that_runs_out_with_bytes_unsent_aborts() -> None:
    h = harness(close_linger=2.0, overflow="drop-newest")
    client, transport = fill_to_the_bound(h)
    client.close(ErrorCode.SERVER_SHUTDOWN, "bye")
    h.clock.now += 2.0
    client.sweep(h.clock.now)
    assert transport.aborted  # the peer never took them: a reset frees them at once


def test_end_of_stream_with_output_pending_aborts_and_drops_the_queue() -> None:
    h = harness(overflow="drop-newest")
    client, transport = fill_to_the_bound(h)
    assert client.eof_received() is False
    assert transport.aborted and client.buffered() == 100  # only what the transport held
    assert h.counters.disconnects == {"peer_eof": 1}
    assert not client.send_frame(FRAME)
    client.connection_lost(None)
    assert h.counters.disconnects == {"peer_eof": 1}  # counted once
    assert not h.connections.live and not h.connections.closing


def test_connections_over_the_limit_get_too_many_connections() -> None:
    h = Harness(Config(max_conns=1))
    h.connect()
    _, transport = h.connect(user=None)
    assert transport.ended
    assert transport.sent().startswith(b'{"op":"error","code":"too_many_connections"')


@pytest.mark.parametrize("frames", [1, 3])
def test_a_push_is_observed_once_at_the_end_of_its_turn(frames: int) -> None:
    h = harness()
    client, _ = h.connect()
    for _ in range(frames):
        h.turns.pushed(0.0)
        client.send_frame(b"x\n")
    assert h.latencies == []
    h.turn.end()
    assert len(h.latencies) == frames


PING, PONG = b'{"op":"ping"}\n', b'{"op":"pong"}\n'


def test_a_burst_is_handled_one_slice_per_loop_turn_with_reading_paused() -> None:
    h = Harness(Config(buffer_bytes=1 << 20), kernel=1 << 20)
    client, transport = h.connect()
    client.data_received(PING * (2 * INPUT_SLICE + 5))
    assert transport.sent() == PONG * INPUT_SLICE  # one slice now...
    assert not transport.reading  # ...and no more input until the rest is handled
    h.turn.end()
    assert transport.sent() == PONG * 2 * INPUT_SLICE and not transport.reading
    h.turn.end()
    assert transport.sent() == PONG * (2 * INPUT_SLICE + 5)
    assert transport.reading  # all handled: reading again
    h.turn.end()
    assert transport.sent() == PONG * (2 * INPUT_SLICE + 5) and not h.turn.callbacks


def test_a_connection_lost_with_input_pending_cancels_its_next_slice() -> None:
    h = harness()
    client, transport = h.connect()
    client.data_received(PING * (INPUT_SLICE + 1))
    assert len(h.turn.callbacks) == 2  # the next slice, and the flush of this turn
    client.connection_lost(None)
    h.turn.end()
    assert transport.sent() == PONG * INPUT_SLICE
    assert h.counters.disconnects == {"peer_eof": 1}


def test_a_client_that_does_not_take_its_replies_is_still_read_and_its_eof_ends_it() -> None:
    h = harness(overflow="drop-newest")  # the transport pauses above 1000 bytes
    client, transport = h.connect()
    client.data_received(PING * 80)  # 1120 bytes of pongs, nobody reads them
    assert transport.paused and transport.reading
    assert client.eof_received() is False
    assert transport.aborted  # the backlog is not flushed to a reader that left
    assert h.counters.disconnects == {"peer_eof": 1}


def test_a_client_over_its_frame_budget_is_rate_limited_and_closed() -> None:
    h = harness(frame_burst=10, frame_rate=1.0)
    client, transport = h.connect()  # the hello took one token
    client.data_received(PING * 10)
    assert transport.ended
    assert transport.sent() == PONG * 9 + (
        b'{"op":"error","code":"rate_limited","reason":"more than 10 frames at once or '
        b'1 frames/s"}\n'
    )
    assert h.counters.disconnects == {"rate_limited": 1}
    assert h.registry.targets(ALICE) == frozenset()
