from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidegate.protocol import LineSplitter, LineTooLong, PeerError, UsageError


def lines_of(splitter: LineSplitter, chunk: bytes) -> Iterator[bytes]:
    splitter.feed(chunk)
    while (line := splitter.next_line()) is not None:
        yield line


def feed_all(splitter: LineSplitter, *chunks: bytes) -> list[bytes]:
    return [line for chunk in chunks for line in lines_of(splitter, chunk)]


def test_splits_across_chunks() -> None:
    splitter = LineSplitter(max_line=16)
    assert feed_all(splitter, b"ab", b"c\nde", b"f\n\ng") == [b"abc", b"def", b""]
    assert splitter.buffered == 1


def test_limit_counts_the_newline() -> None:
    splitter = LineSplitter(max_line=4)
    assert feed_all(splitter, b"abc\n") == [b"abc"]
    with pytest.raises(LineTooLong):
        feed_all(splitter, b"abcd\n")


def test_raises_as_soon_as_an_unfinished_line_cannot_fit() -> None:
    splitter = LineSplitter(max_line=4)
    assert feed_all(splitter, b"abc") == []  # 3 bytes + "\n" could still fit
    with pytest.raises(LineTooLong):
        feed_all(splitter, b"d")
    assert splitter.buffered == 0


def test_lines_before_the_long_one_are_yielded_first() -> None:
    splitter = LineSplitter(max_line=4)
    got: list[bytes] = []
    with pytest.raises(LineTooLong):
        for line in lines_of(splitter, b"a\nb\n" + b"x" * 100):
            got.append(line)
    assert got == [b"a", b"b"]


def test_spent_after_overflow_is_our_misuse() -> None:
    splitter = LineSplitter(max_line=4)
    with pytest.raises(LineTooLong):
        feed_all(splitter, b"xxxxxx")
    with pytest.raises(UsageError):
        feed_all(splitter, b"a\n")
    assert issubclass(LineTooLong, PeerError) and not issubclass(UsageError, PeerError)


def test_limit_is_mandatory_and_sane() -> None:
    with pytest.raises(UsageError):
        LineSplitter(max_line=1)


@given(
    max_line=st.integers(min_value=2, max_value=64),
    chunks=st.lists(st.binary(max_size=80), max_size=20),
)
def test_fuzz_never_buffers_past_the_limit(max_line: int, chunks: list[bytes]) -> None:
    splitter = LineSplitter(max_line=max_line)
    stream = b"".join(chunks)
    got: list[bytes] = []
    try:
        for chunk in chunks:
            for line in lines_of(splitter, chunk):
                assert len(line) < max_line
                got.append(line)
            assert splitter.buffered < max_line
    except LineTooLong:
        assert any(len(part) >= max_line for part in stream.split(b"\n"))
        return
    # No error: the splitter returned exactly the complete lines of the stream.
    assert got == stream.split(b"\n")[:-1]


def test_lines_are_taken_one_at_a_time_and_the_rest_waits() -> None:
    splitter = LineSplitter(max_line=16)
    splitter.feed(b"a\nbb\ncc")
    assert splitter.next_line() == b"a" and splitter.unread == 5
    splitter.feed(b"c\n")  # fed before the rest was read: it queues behind it
    assert [splitter.next_line(), splitter.next_line(), splitter.next_line()] == [
        b"bb",
        b"ccc",
        None,
    ]
    assert splitter.unread == 0 and splitter.buffered == 0


def test_the_limit_is_checked_without_scanning_past_it() -> None:
    splitter = LineSplitter(max_line=4)
    splitter.feed(b"ab")
    assert splitter.next_line() is None and splitter.buffered == 2
    splitter.feed(b"c" + b"x" * 1_000_000 + b"\n")
    with pytest.raises(LineTooLong):
        splitter.next_line()
    assert splitter.unread == 0 and splitter.buffered == 0


def test_idle_once_every_byte_fed_was_handed_out() -> None:
    splitter = LineSplitter(max_line=64)
    assert splitter.idle
    splitter.feed(b"one\ntw")
    assert not splitter.idle
    assert splitter.next_line() == b"one"
    assert splitter.next_line() is None
    assert not splitter.idle  # "tw" waits for its newline
    splitter.feed(b"o\n")
    assert splitter.next_line() == b"two"
    assert splitter.idle
