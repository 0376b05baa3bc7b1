"""Pattern 1, the incident: a broadcast handler times out, its worker blocks forever on the send.

The Go push server handled a UDP "broadcast to all" datagram roughly like this::

    func (s *Server) onBroadcast(msg []byte) error {
        done := make(chan error)                  // unbuffered
        go func() { done <- s.pushToAll(msg) }()  // the worker
        select {
        case err := <-done:
            return err
        case <-time.After(5 * time.Second):
            return errTimeout                     // nobody will ever read `done` again
        }
    }

When pushing took longer than 5 s the handler returned, and the worker, finishing later, blocked
forever on `done <- ...`: one goroutine (and everything it referenced) leaked per slow broadcast.

Here the datagram listener would call `handle_broadcast_*` once per datagram; `push_to_all` is
injected so tests can make it slow. `timeout` is the incident's 5 s.

- `handle_broadcast_leaky`: the port, with the unbuffered channel modelled by `chan.Unbuffered`.
- `handle_broadcast_buffered`: fix (a), the original fix: a one-slot buffer
  (`make(chan error, 1)`, here `asyncio.Queue(maxsize=1)`), so the late send completes into the
  slot and the worker ends. The result is still computed and then thrown away.
- `handle_broadcast_owned`: fix (b), the structural fix: no handshake at all. The handler owns the
  worker (a `TaskGroup`), the timeout cancels it, and the fan-out (`fan_out_nowait`) never waits
  on a slow subscriber, so a push cannot hang on a consumer in the first place.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from examples.leaks.chan import Unbuffered, fire_and_forget

PushToAll = Callable[[bytes], Coroutine[Any, Any, str]]
TIMED_OUT = "timeout"


async def handle_broadcast_leaky(
    message: bytes, push_to_all: PushToAll, *, timeout: float = 5.0
) -> str:
    """Start a worker, wait for its result up to `timeout`, give up on timeout. Leaks the worker."""
    done: Unbuffered[str] = Unbuffered()
    fire_and_forget(
        asyncio.create_task(broadcast_worker(message, push_to_all, done), name="broadcast-worker")
    )
    try:
        async with asyncio.timeout(timeout):
            return await done.recv()
    except TimeoutError:
        return TIMED_OUT  # the worker is still running, and `done` has lost its only receiver


async def broadcast_worker(message: bytes, push_to_all: PushToAll, done: Unbuffered[str]) -> None:
    outcome = await push_to_all(message)
    await done.send(outcome)  # LEAK: blocks forever once the handler has timed out


async def handle_broadcast_buffered(
    message: bytes, push_to_all: PushToAll, *, timeout: float = 5.0
) -> str:
    """Fix (a): the worker reports into a one-slot buffer, so its late send never blocks."""
    done: asyncio.Queue[str] = asyncio.Queue(maxsize=1)
    fire_and_forget(
        asyncio.create_task(
            buffered_broadcast_worker(message, push_to_all, done), name="broadcast-worker"
        )
    )
    try:
        async with asyncio.timeout(timeout):
            return await done.get()
    except TimeoutError:
        # The worker still runs until the push finishes; then its put completes into the free
        # slot and it ends. Trade-off: the work is not stopped, only its ending is guaranteed.
        return TIMED_OUT


async def buffered_broadcast_worker(
    message: bytes, push_to_all: PushToAll, done: asyncio.Queue[str]
) -> None:
    outcome = await push_to_all(message)
    await done.put(outcome)  # one sender, one slot: never waits


async def handle_broadcast_owned(
    message: bytes, push_to_all: PushToAll, *, timeout: float = 5.0
) -> str:
    """Fix (b): the handler owns the worker; the timeout cancels it and waits until it has ended.

    A plain `await push_to_all(message)` under the timeout is the same with one task fewer; the
    TaskGroup keeps the worker a task of its own, as in the Go code, and shows the ownership.
    """
    try:
        async with asyncio.timeout(timeout), asyncio.TaskGroup() as workers:
            push = workers.create_task(push_to_all(message), name="broadcast-push")
    except TimeoutError:
        return TIMED_OUT  # the TaskGroup has cancelled the push and waited for it
    return push.result()


def fan_out_nowait(message: bytes, mailboxes: Sequence[asyncio.Queue[bytes]]) -> str:
    """Deliver `message` to every subscriber's bounded mailbox without ever waiting on one.

    A full mailbox (a subscriber not keeping up) misses this message instead of stalling the
    broadcast. Trade-off: slow subscribers lose messages; the alternative (waiting) lets one slow
    subscriber stall everybody, which is how the incident's pushes got slow.
    """
    delivered = 0
    for mailbox in mailboxes:
        if not mailbox.full():
            mailbox.put_nowait(message)
            delivered += 1
    return f"delivered to {delivered} of {len(mailboxes)}"
