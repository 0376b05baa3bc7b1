"""Pattern 5: a concurrent sum returns after the first result and leaves the other workers blocked.

Go, the leaky web endpoint::

    func sumHandler(w http.ResponseWriter, r *http.Request) {
        nums := parse(r)
        results := make(chan int)                 // unbuffered
        for _, part := range split(nums, 4) {
            go func(part []int) { results <- sum(part) }(part)
        }
        fmt.Fprint(w, <-results)                  // one receive: wrong answer, 3 goroutines leak
    }

Each request leaks `parts - 1` goroutines, so the goroutine count grows with traffic.

- `sum_leaky`: the port. The first worker's send is received; the second waits in the
  `Unbuffered` handshake and the rest wait for its slot, as the remaining Go senders would.
- `sum_fixed`: one receive per worker is the minimal fix; here the workers belong to a
  `TaskGroup` and the handler adds every partial sum (no channel needed at all).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from examples.leaks.chan import Unbuffered, fire_and_forget


def split(numbers: Sequence[int], parts: int) -> list[Sequence[int]]:
    size = max(1, -(-len(numbers) // parts))  # ceiling division; an empty input has no parts
    return [numbers[i : i + size] for i in range(0, len(numbers), size)]


async def partial_sum(part: Sequence[int], results: Unbuffered[int]) -> None:
    await results.send(sum(part))  # LEAK: every sender but the first blocks here forever


async def sum_leaky(numbers: Sequence[int], *, parts: int = 4) -> int:
    results: Unbuffered[int] = Unbuffered()
    for n, part in enumerate(split(numbers, parts)):
        fire_and_forget(asyncio.create_task(partial_sum(part, results), name=f"partial-sum-{n}"))
    return await results.recv()  # the bug: one receive for `parts` senders


async def sum_part(part: Sequence[int]) -> int:
    return sum(part)


async def sum_fixed(numbers: Sequence[int], *, parts: int = 4) -> int:
    async with asyncio.TaskGroup() as workers:
        sums = [
            workers.create_task(sum_part(part), name=f"partial-sum-{n}")
            for n, part in enumerate(split(numbers, parts))
        ]
    return sum(s.result() for s in sums)
