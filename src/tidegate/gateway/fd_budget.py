"""The file-descriptor budget: what a configuration may hold open at once, checked at startup.

Every client connection is a descriptor, and so is every HTTP connection, listener, log file
and broker connection. Running out is silent and ugly (refused clients get a bare reset, the
admin port stops answering), so the gateway checks before it binds anything:

1. the soft `RLIMIT_NOFILE` is raised to the hard limit (like Go's runtime does at start);
2. the budget is counted: client sockets up to the TCP listener's high-water mark (accepting
   pauses there, so no more can exist; between `max_conns` and it, clients are told
   `too_many_connections`), HTTP and admin connections up to theirs, a fixed reserve for the
   process's own (`RESERVED`), and what is already open;
3. if the limit is below the budget, startup fails with a `ConfigError` that says by how much
   and what to change. Nothing is lowered behind the operator's back.

The reserve is what keeps `/healthz`, `/metrics` and the `too_many_connections` replies
working when every client slot is taken.
"""

from __future__ import annotations

import logging
import os
import resource
from dataclasses import dataclass
from typing import Final

from tidegate.gateway.config import Config, ConfigError

__all__ = ["RESERVED", "FdBudget", "ensure_fd_budget", "water_marks"]

log = logging.getLogger("tidegate.gateway")

# The process's own descriptors beyond the listeners' connections: stdio, the loop's poller
# and self-pipe, the listening sockets, the UDP socket, the watchdog, log files, the broker's
# connections, and the /proc reads of a metrics scrape.
RESERVED: Final = 64


def water_marks(limit: int) -> tuple[int, int]:
    """(high, low) accept water marks for a listener allowing `limit` connections: accepting
    pauses at high (limit + 10 %, at least one more) and resumes at low (limit - 10 %)."""
    margin = max(1, limit // 10)
    return limit + margin, max(limit - margin, 0)


@dataclass(frozen=True, slots=True)
class FdBudget:
    """Descriptors the configuration may hold at once, by what holds them."""

    client_sockets: int
    http_sockets: int
    admin_sockets: int
    reserved: int
    in_use: int  # open when the gateway started (another gateway in the process, tests...)

    @property
    def total(self) -> int:
        return (
            self.client_sockets
            + self.http_sockets
            + self.admin_sockets
            + self.reserved
            + self.in_use
        )

    @classmethod
    def of(cls, config: Config, *, admin_max_conns: int, in_use: int) -> FdBudget:
        return cls(
            client_sockets=water_marks(config.max_conns)[0] if config.tcp is not None else 0,
            http_sockets=water_marks(config.http_max_conns)[0] if config.http is not None else 0,
            admin_sockets=water_marks(admin_max_conns)[0] if config.admin is not None else 0,
            reserved=RESERVED,
            in_use=in_use,
        )


def _open_descriptors() -> int:
    for directory in ("/proc/self/fd", "/dev/fd"):
        try:
            return max(len(os.listdir(directory)) - 1, 0)  # less the directory's own
        except OSError:
            continue
    return 0


def raise_soft_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit; returns (soft, hard) after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        # Not settable as such on every system; a large finite value is.
        target = max(soft, 1 << 20) if soft != resource.RLIM_INFINITY else soft
    else:
        target = hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, target, exc)
        else:
            log.info("raised the open-file limit (RLIMIT_NOFILE) from %d to %d", soft, target)
            soft = target
    return soft, hard


def ensure_fd_budget(config: Config, *, admin_max_conns: int) -> FdBudget:
    """Raise the soft limit, then check the budget against it; `ConfigError` if it does not
    fit, naming the figures and the two ways out."""
    soft, hard = raise_soft_limit()
    budget = FdBudget.of(config, admin_max_conns=admin_max_conns, in_use=_open_descriptors())
    if soft == resource.RLIM_INFINITY or budget.total <= soft:
        return budget
    others = budget.total - budget.client_sockets
    fitting = max(0, (soft - others) * 10 // 11)
    hard_text = "unlimited" if hard == resource.RLIM_INFINITY else str(hard)
    raise ConfigError(
        f"max_conns: {config.max_conns} clients need up to {budget.total} open files "
        f"({budget.client_sockets} client sockets up to the accept high-water mark, "
        f"{budget.http_sockets} HTTP, {budget.admin_sockets} admin, {budget.reserved} "
        f"reserved, {budget.in_use} already open), but RLIMIT_NOFILE allows {soft} (hard "
        f"limit {hard_text}). Raise the limit (ulimit -n, LimitNOFILE= in a systemd unit) "
        f"or lower --max-conns to {fitting} or less.",
        option="max_conns",
    )
