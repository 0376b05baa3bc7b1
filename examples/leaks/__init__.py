"""The seed goroutine leaks, ported to Python: one module per pattern, each leaky and fixed.

| module | Go pattern |
|---|---|
| `chan` | `make(chan T)` (unbuffered) and the fire-and-forget `go f()` used by the leaky code |
| `incident` | 1. UDP broadcast handler times out; its worker blocks on an unbuffered send |
| `pump` | 2. a producer sending forever to a receiver that left |
| `idle_consumer` | 3. a consumer on a channel nobody writes or closes (for-range, for-select) |
| `worker_pool` | 4. workers ranging over a task channel the dispatcher never closes |
| `concurrent_sum` | 5. a sum that returns after the first partial result |
| `connection_handler` | 6. connection handlers sending into a channel nobody drains |
| `connection_remedies` | 7. five remedies for 6, each with its trade-off |
| `thread_ports` | 8. a thread on `queue.Queue.get`; an executor job outliving its caller |

The tests in `tests/examples/` run each leaky version under `tidegate.leaks.check()` and read the
report; each fixed version passes the same check.
"""
