"""Split a byte stream into "\\n"-terminated lines, with a mandatory size limit.

The limit counts the terminating "\\n", so with ``max_line=8`` the longest accepted line is
seven bytes of content. The splitter never holds more than ``max_line - 1`` bytes of an
unfinished line: the moment the pending part of a line can no longer fit, it raises
`LineTooLong` instead of buffering more.
"""

from __future__ import annotations

from collections.abc import Iterator

from tidegate.protocol.errors import UsageError
from tidegate.protocol.frames import ErrorCode, FrameError

__all__ = ["LineSplitter", "LineTooLong"]


class LineTooLong(FrameError):
    """A line (including its "\\n") is longer than the limit."""

    code = ErrorCode.FRAME_TOO_LARGE


class LineSplitter:
    """Incremental line splitter; feed it chunks, iterate complete lines.

    After `LineTooLong` the splitter is spent: the stream has no reliable line boundary any
    more, so the only sane reaction is to close the connection.
    """

    __slots__ = ("_broken", "_partial", "max_line")

    def __init__(self, *, max_line: int) -> None:
        if max_line < 2:
            raise UsageError(
                f"max_line must be at least 2 (one byte and the newline), got {max_line}"
            )
        self.max_line = max_line
        # Allocated only while a line is split across reads: most reads end on a newline,
        # and an idle connection should not carry a buffer.
        self._partial: bytearray | None = None
        self._broken = False

    @property
    def buffered(self) -> int:
        """Bytes of an unfinished line held right now (always < max_line)."""
        return 0 if self._partial is None else len(self._partial)

    def feed(self, data: bytes) -> Iterator[bytes]:
        """Yield every line that `data` completes, without its "\\n".

        Raises `LineTooLong` once a line exceeds the limit; lines completed before the
        offending one have been yielded first. The generator must be run to the end (or
        the connection dropped): lines not yet yielded are not kept elsewhere.
        """
        if self._broken:
            raise UsageError("feed() after LineTooLong: the connection must be closed")
        limit = self.max_line
        start = 0
        while True:
            newline = data.find(b"\n", start)
            if newline < 0:
                break
            partial = self._partial
            if partial is not None:
                if len(partial) + newline - start + 1 > limit:
                    self._fail()
                partial += data[start:newline]
                line = bytes(partial)
                self._partial = None
            else:
                if newline - start + 1 > limit:
                    self._fail()
                line = data[start:newline]
            start = newline + 1
            yield line
        if start < len(data):
            partial = self._partial
            if self.buffered + len(data) - start > limit - 1:
                self._fail()
            if partial is None:
                self._partial = bytearray(data[start:])
            else:
                partial += data[start:]

    def _fail(self) -> None:
        self._broken = True
        self._partial = None
        raise LineTooLong(f"line longer than {self.max_line} bytes")
