"""Go's channel vocabulary in asyncio terms, as used by the leak examples.

asyncio has no rendezvous channel. `asyncio.Queue(maxsize=n)` is Go's buffered `make(chan T, n)`
(but `maxsize=0` means *unbounded*, not unbuffered), so an unbuffered `make(chan T)` is built here
as `Unbuffered`: a one-slot queue plus the `join()` handshake.

Why this is faithful: in Go, `ch <- v` on an unbuffered channel returns only once a receiver has
taken `v`. `Unbuffered.send` puts `v` in the single slot (waiting, like a second Go sender, while
another value is in flight) and then waits in `Queue.join()` until `recv` has taken it and called
`task_done()`. With no receiver the sender therefore blocks forever in `send`, exactly where the
goroutine blocked in `chansend`. A send abandoned by a timeout takes its value back, as a Go
`select` with `time.After` abandons a send that never happened.
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

T = TypeVar("T")


class Closed(enum.Enum):
    """The type of `CLOSED`, the sentinel that stands for Go's `close(ch)` on Python < 3.13.

    Python 3.13 adds `asyncio.Queue.shutdown()`, which wakes blocked getters with
    `QueueShutDown`; on 3.11 and 3.12 the sender puts one `CLOSED` per receiver.
    """

    CLOSED = "closed"


CLOSED: Final = Closed.CLOSED


@dataclass
class _Envelope(Generic[T]):
    value: T
    taken: bool = False


class Unbuffered(Generic[T]):
    """Go's `make(chan T)`: `send` returns only once a receiver has taken the value."""

    def __init__(self) -> None:
        self._slot: asyncio.Queue[_Envelope[T]] = asyncio.Queue(maxsize=1)

    async def send(self, value: T) -> None:
        """`ch <- value`: wait for a receiver to take `value`."""
        envelope = _Envelope(value)
        await self._slot.put(envelope)  # another send is in flight: wait for the slot
        try:
            await self._slot.join()  # the rendezvous: wait until a receiver has taken it
        except asyncio.CancelledError:
            if not envelope.taken:  # the send never happened: take the value back
                self._slot.get_nowait()
                self._slot.task_done()
            raise

    async def recv(self) -> T:
        """`<-ch`: wait for a sender and take its value."""
        envelope = await self._slot.get()
        envelope.taken = True
        self._slot.task_done()  # releases the sender
        return envelope.value


# Go's `go f()` has no owner and nobody waits for it. The nearest asyncio idiom is the one the
# asyncio docs recommend for fire-and-forget tasks: keep a strong reference until the task ends
# (the loop itself only keeps a weak one). The leaky examples use it, and so do the fixes that keep
# Go's shape and make the task end on its own (a buffer, a send timeout); the others give every
# task an owner that waits for it.
_detached: set[asyncio.Task[Any]] = set()


def fire_and_forget(task: asyncio.Task[T]) -> asyncio.Task[T]:
    """Keep `task` alive until it ends, with nobody waiting for it: Go's `go f()`."""
    _detached.add(task)
    task.add_done_callback(_detached.discard)
    return task
