"""Split a byte stream into "\\n"-terminated lines, with a mandatory size limit.

The limit counts the terminating "\\n", so with ``max_line=8`` the longest accepted line is
seven bytes of content. The splitter never holds more than ``max_line - 1`` bytes of an
unfinished line: the moment the pending part of a line can no longer fit, it raises
`LineTooLong` instead of buffering more.

Input is taken whole (`feed`) and lines are taken one at a time (`next_line`), so the reader
decides how many lines it handles before doing something else: what it has not taken yet
stays in the splitter (`unread`), the chunk as it was fed, not copied.
"""

from __future__ import annotations

from tidegate.protocol.errors import UsageError
from tidegate.protocol.frames import ErrorCode, FrameError

__all__ = ["LineSplitter", "LineTooLong"]


class LineTooLong(FrameError):
    """A line (including its "\\n") is longer than the limit."""

    code = ErrorCode.FRAME_TOO_LARGE


_EMPTY = b""


class LineSplitter:
    """Incremental line splitter: `feed(chunk)`, then `next_line()` until it returns None.

    After `LineTooLong` the splitter is spent: the stream has no reliable line boundary any
    more, so the only sane reaction is to close the connection.
    """

    __slots__ = ("_broken", "_chunk", "_partial", "_start", "max_line")

    def __init__(self, *, max_line: int) -> None:
        if max_line < 2:
            raise UsageError(
                f"max_line must be at least 2 (one byte and the newline), got {max_line}"
            )
        self.max_line = max_line
        self._chunk = _EMPTY  # the last chunk fed; lines are cut from it from `_start` on
        self._start = 0
        # Allocated only while a line is split across reads: most reads end on a newline,
        # and an idle connection should not carry a buffer.
        self._partial: bytearray | None = None
        self._broken = False

    @property
    def buffered(self) -> int:
        """Bytes of an unfinished line held right now (always < max_line)."""
        return 0 if self._partial is None else len(self._partial)

    @property
    def idle(self) -> bool:
        """Holding nothing: every byte fed was handed out as a line, and it is not broken."""
        return self._partial is None and self._start == len(self._chunk) and not self._broken

    @property
    def unread(self) -> int:
        """Bytes fed but not yet looked at by `next_line`."""
        return len(self._chunk) - self._start

    def feed(self, data: bytes) -> None:
        """Take `data`; the lines it completes come from `next_line()`."""
        if self._broken:
            raise UsageError("feed() after LineTooLong: the connection must be closed")
        if not data:
            return
        if self._start < len(self._chunk):
            # Fed again before the last chunk was read out (the adapter normally waits):
            # keep the order, at the cost of one copy.
            data = self._chunk[self._start :] + data
        self._chunk = data
        self._start = 0

    def next_line(self) -> bytes | None:
        """The next complete line without its "\\n", or None when the input fed so far has
        none. Raises `LineTooLong` once a line exceeds the limit (the lines before it have
        been returned first)."""
        if self._broken:
            raise UsageError("next_line() after LineTooLong: the connection must be closed")
        chunk = self._chunk
        start = self._start
        if start >= len(chunk):
            return None
        partial = self._partial
        held = 0 if partial is None else len(partial)
        # Never look further than the limit allows: a newline past it would not help.
        room = self.max_line - held
        newline = chunk.find(b"\n", start, start + room)
        if newline < 0:
            if len(chunk) - start >= room:
                self._fail()
            if partial is None:
                self._partial = bytearray(chunk[start:])
            else:
                partial += chunk[start:]
            self._chunk = _EMPTY
            self._start = 0
            return None
        self._start = newline + 1
        if self._start == len(chunk):
            self._chunk = _EMPTY  # do not keep a read-out chunk alive
            self._start = 0
        if partial is None:
            return chunk[start:newline]
        partial += chunk[start:newline]
        self._partial = None
        return bytes(partial)

    def _fail(self) -> None:
        self._broken = True
        self._partial = None
        self._chunk = _EMPTY
        self._start = 0
        raise LineTooLong(f"line longer than {self.max_line} bytes")
