"""Running out of file descriptors: the budget checked at startup, the soft limit raised, the
reserve that keeps the admin port and `too_many_connections` working at the limit, and
accept errors (EMFILE) counted and survived instead of silent resets.

Each test runs `tidegate serve` as a process of its own with the limits set on it
(`resource.prlimit`), so the test process's own limit is never touched.
"""

from __future__ import annotations

import asyncio
import os
import resource
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

from tidegate.gateway.fd_budget import RESERVED, water_marks
from tidegate.gateway.web_listener import ADMIN_MAX_CONNS

from .helpers import TIMEOUT, Client, http_get, metric, parse_samples

FREE = ("--tcp", "127.0.0.1:0", "--udp", "off", "--admin", "127.0.0.1:0", "--http", "off")


@dataclass
class Served:
    proc: asyncio.subprocess.Process
    tcp: tuple[str, int]
    admin: tuple[str, int]
    stderr: list[bytes]


def limited(soft: int, hard: int) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@asynccontextmanager
async def serve(*options: str, soft: int, hard: int) -> AsyncIterator[Served]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIDEGATE_", "PYTHONASYNC"))}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tidegate",
        "serve",
        *FREE,
        *options,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        preexec_fn=lambda: limited(soft, hard),
    )
    assert proc.stdout is not None and proc.stderr is not None
    stderr: list[bytes] = []
    reading = asyncio.create_task(_collect(proc.stderr, stderr))
    try:
        found: dict[str, tuple[str, int]] = {}
        while len(found) < 2:
            line = (await asyncio.wait_for(proc.stdout.readline(), TIMEOUT)).decode()
            assert line, f"tidegate exited: {b''.join(stderr).decode()}"
            if " listening on " in line:
                host, _, port = line.rsplit(" ", 1)[1].rpartition(":")
                found[line.split()[1]] = (host, int(port))
        yield Served(proc, found["tcp"], found["admin"], stderr)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), TIMEOUT)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        await reading


async def _collect(stream: asyncio.StreamReader, into: list[bytes]) -> None:
    while line := await stream.readline():
        into.append(line)


async def run(*options: str, soft: int, hard: int) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tidegate",
        "serve",
        *FREE,
        *options,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        preexec_fn=lambda: limited(soft, hard),
    )
    out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
    assert proc.returncode is not None
    return proc.returncode, (out + err).decode()


def needed(max_conns: int) -> int:
    """What `tidegate serve` with FREE and `--max-conns` budgets, less what is open at start."""
    return water_marks(max_conns)[0] + water_marks(ADMIN_MAX_CONNS)[0] + RESERVED


async def test_a_max_conns_the_limit_cannot_hold_is_refused_with_the_figures() -> None:
    # The hard limit is the ceiling: raising the soft one cannot help.
    code, output = await run("--max-conns", "5000", soft=512, hard=1024)
    assert code == 2, output
    assert "max_conns: 5000 clients need up to" in output
    assert "RLIMIT_NOFILE allows 1024 (hard limit 1024)" in output
    assert "lower --max-conns to" in output and "ulimit -n" in output


async def test_the_soft_limit_is_raised_to_the_hard_one_at_startup() -> None:
    hard = needed(2000) + 200
    async with serve("--max-conns", "2000", soft=256, hard=hard) as served:
        assert served.proc.pid is not None
        soft_now, _ = resource.prlimit(served.proc.pid, resource.RLIMIT_NOFILE)
        assert soft_now == hard
    assert any(
        b"raised the open-file limit (RLIMIT_NOFILE) from 256 to" in line for line in served.stderr
    )


async def test_at_the_connection_limit_clients_are_told_and_the_admin_port_answers() -> None:
    # A limit that holds exactly the budget (plus what a fresh process has open): every
    # client slot taken, the ones over max_conns get too_many_connections (not a bare reset),
    # the rest wait in the backlog, and /healthz and /metrics still answer.
    max_conns = 40
    limit = needed(max_conns) + 32
    held: list[Client] = []
    over: list[Client] = []
    async with serve("--max-conns", str(max_conns), soft=limit, hard=limit) as served:
        try:
            held = [await Client.hello(served.tcp, f"u{n}") for n in range(max_conns)]
            for _ in range(water_marks(max_conns)[0] - max_conns):
                over.append(await Client.connect(served.tcp))
            for client in over:
                await client.expect_error_and_close("too_many_connections")
            assert (await http_get(served.admin, "/healthz"))[0] == 200
            status, text = await http_get(served.admin, "/metrics")
            assert status == 200
            samples = parse_samples(text)
            assert metric(samples, "tidegate_connections") == max_conns
            refused = metric(samples, "tidegate_disconnects_total", reason="too_many_connections")
            assert refused == len(over)
        finally:
            for client in [*held, *over]:
                await client.close()


async def test_accept_errors_are_counted_and_the_waiting_clients_served_afterwards() -> None:
    # Out of descriptors for a moment (the soft limit lowered on the running process below
    # what it has open): clients wait in the backlog instead of being accepted and reset,
    # each failed accept is counted, one line is logged; once descriptors are back, all are
    # served.
    hard = needed(100) + 200
    async with serve("--max-conns", "100", soft=hard, hard=hard) as served:
        pid = served.proc.pid
        open_now = len(os.listdir(f"/proc/{pid}/fd"))
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (open_now // 2, hard))
        connecting = [asyncio.create_task(Client.hello(served.tcp, f"u{n}")) for n in range(5)]
        await asyncio.sleep(0.3)  # the gateway fails to accept, pausing 0.1 s between tries
        assert not any(task.done() for task in connecting)
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (hard, hard))
        clients: Sequence[Client] = await asyncio.gather(*connecting)
        _, text = await http_get(served.admin, "/metrics")
        assert metric(parse_samples(text), "tidegate_accept_errors_total", error="EMFILE") >= 2
        for client in clients:
            await client.roundtrip()
            await client.close()
    warnings = [line for line in served.stderr if b"accept failed" in line]
    assert len(warnings) == 1 and b"Too many open files" in warnings[0], served.stderr
