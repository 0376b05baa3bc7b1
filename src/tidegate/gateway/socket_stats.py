"""What the kernel holds for our sockets that asyncio does not tell: bytes still in a TCP
socket's send queue, a UDP socket's receive drops and buffer size; and a close that drops
what the kernel still holds.

Linux only (ioctl `SIOCOUTQ`, `/proc/net/udp`); elsewhere the figures are 0 or None, never an
error. Each call is one syscall or one small `/proc` read: cheap enough for a metrics scrape.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import sys
from typing import Final, Protocol

try:
    import fcntl
    import termios

    _OUTQ: int | None = termios.TIOCOUTQ  # == SIOCOUTQ for a TCP socket
except ImportError:  # pragma: no cover - not a Unix
    _OUTQ = None

__all__ = [
    "SocketLike",
    "receive_buffer",
    "reset_on_close",
    "set_receive_buffer",
    "udp_drops",
    "unsent_bytes",
]

_FOUR: Final = bytes(4)


class SocketLike(Protocol):
    """A socket, or the stand-in a transport's `get_extra_info("socket")` returns."""

    def fileno(self) -> int: ...

    def setsockopt(self, level: int, option: int, value: int | bytes, /) -> None: ...

    def getsockopt(self, level: int, option: int, /) -> int: ...


def unsent_bytes(fd: int) -> int:
    """Bytes in socket `fd`'s kernel send queue: written by us, not yet acknowledged by the
    peer (a client that stopped reading holds up to a few MiB there). 0 where unknown."""
    if _OUTQ is None or fd < 0:
        return 0
    try:
        return int.from_bytes(fcntl.ioctl(fd, _OUTQ, _FOUR), sys.byteorder)
    except OSError:
        return 0


def reset_on_close(sock: SocketLike) -> None:
    """Make the socket's close send a reset and free its kernel buffers at once, instead of
    the kernel trying to deliver them (to a client that is not reading) for minutes."""
    with contextlib.suppress(OSError):  # already closed by the peer: nothing is held
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def set_receive_buffer(sock: SocketLike, size: int) -> int | None:
    """Ask for a `size`-byte receive buffer (past `net.core.rmem_max` when privileged) and
    return what the kernel granted (Linux reports twice the payload it will hold)."""
    force = getattr(socket, "SO_RCVBUFFORCE", None)
    try:
        if force is None:
            raise PermissionError
        sock.setsockopt(socket.SOL_SOCKET, force, size)
    except PermissionError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    return receive_buffer(sock)


def receive_buffer(sock: SocketLike) -> int | None:
    """The receive buffer's size as the kernel reports it; None once the socket is closed."""
    try:
        return sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    except OSError:
        return None


def udp_drops(sock: SocketLike) -> int | None:
    """Datagrams the kernel dropped for this UDP socket since it was opened (its receive
    buffer was full, ...): the `drops` column of /proc/net/udp. None where unknown."""
    try:
        inode = os.fstat(sock.fileno()).st_ino
    except OSError:
        return None
    for table in ("/proc/self/net/udp", "/proc/self/net/udp6"):
        try:
            with open(table, "rb") as lines:
                next(lines)  # the header
                for line in lines:
                    fields = line.split()
                    if len(fields) >= 13 and int(fields[9]) == inode:
                        return int(fields[12])
        except (OSError, ValueError, StopIteration):
            continue
    return None
