"""A client process of ``tidegate load``: connects its share of the planned clients, acts out
their faults on real sockets, and counts what they receive.

Run by the main process as ``python -m tidegate.load.worker``; they speak JSON lines, commands
on stdin and events on stdout:

=====================================================  ========================================
main -> worker                                         worker -> main
=====================================================  ========================================
``{"op":"start","tcp":[h,p],"clients":[...],...}``     ``{"op":"up","clients":n,"heartbeat":s}``
                                                       (or ``{"op":"error","message":...}``)
``{"op":"load"}``: the load phase starts now           ``{"op":"progress","up":n,...}`` 4 a sec
``{"op":"finish","pushes":[[seq,target],...]}``        ``{"op":"finished"}``
``{"op":"release"}``                                   ``{"op":"released"}``, then it exits
=====================================================  ========================================

Faults (``options.FAULTS``), at each client's planned moment: ``reset`` sets SO_LINGER 0 and
closes (an RST); ``halfclose`` shuts down its sending side and reads on (the server must close
its side); ``vanish`` stops sending and reading but keeps the socket (no FIN: only the server's
idle timeout can end it); ``stall`` keeps pinging but never reads again (a slow consumer);
``churn`` closes and reconnects, over and over. On ``release`` vanished and stalled sockets
read again to learn whether the server ended them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import struct
import sys
import time
from collections.abc import Callable
from typing import Any, Final, cast

import msgspec

from .plan import ClientSpec, PushLog
from .stats import Tally

__all__ = ["main"]

CONNECT_TIMEOUT: Final = 10.0  # connect + welcome + joined, per client
CONNECT_CONCURRENCY: Final = 200  # handshakes in flight: stays inside a default backlog
RELEASE_WAIT: Final = 1.0  # how long a resumed socket gets to show the server ended it
CHURN_UP: Final = 0.5  # how long a churning client stays connected before the next reconnect
PROGRESS_INTERVAL: Final = 0.25

_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode


class Connection(asyncio.Protocol):
    """One TCP connection of a client: splits lines, hands frames to its client."""

    def __init__(self, client: LoadClient) -> None:
        loop = asyncio.get_running_loop()
        self.client = client
        self.transport: asyncio.Transport | None = None
        # The welcome, once every room of the client is joined too.
        self.ready: asyncio.Future[dict[str, Any]] = loop.create_future()
        self.closed: asyncio.Future[str] = loop.create_future()
        self._welcome: dict[str, Any] | None = None
        self.joined = 0
        self.error_code: str | None = None
        self.closing = False  # we closed it: its end is not the server's doing
        self._buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if b"\n" not in data:
            return
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            try:
                frame = _decode(line)
            except msgspec.DecodeError:
                self.client.bad_frames += 1
                continue
            if isinstance(frame, dict):
                self._frame(frame)

    def _frame(self, frame: dict[str, Any]) -> None:
        op = frame.get("op")
        if op == "msg":
            self.client.on_msg(frame)
        elif op == "welcome":
            self._welcome = frame
            self._check_ready()
        elif op == "joined":
            self.joined += 1
            self._check_ready()
        elif op == "error":
            self.error_code = str(frame.get("code"))
            if not self.ready.done():
                reason = frame.get("reason", "")
                self.ready.set_exception(ConnectionError(f"{self.error_code} ({reason})"))

    def _check_ready(self) -> None:
        welcome = self._welcome
        if welcome and self.joined >= len(self.client.spec.rooms) and not self.ready.done():
            self.ready.set_result(welcome)

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        why = self.error_code or ("reset" if exc is not None else "eof")
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"the server ended the connection ({why})"))
        if not self.closed.done():
            self.closed.set_result(why)

    @property
    def is_open(self) -> bool:
        return not self.closed.done()

    def send(self, frame: dict[str, Any]) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(_encode(frame) + b"\n")


class LoadClient:
    """One planned client: its connection (a new one after each churn) and its counts."""

    def __init__(self, spec: ClientSpec, tally: Tally) -> None:
        self.spec = spec
        self.tally = tally
        self.healthy = spec.fault is None
        self.connection: Connection | None = None
        self.pinging = True
        self.struck = False  # the fault has happened
        self.bad_frames = 0
        self._seen = bytearray()  # a bit per push sequence number: duplicates, distinct

    def on_msg(self, frame: dict[str, Any]) -> None:
        tally = self.tally
        tally.received += 1
        data = frame.get("data")
        if not self.spec.wants(str(frame.get("to"))):
            tally.wrong_target += 1
            return
        if not self.healthy or not isinstance(data, dict):
            return
        seq = data.get("s")
        sent_ns = data.get("t")
        if not isinstance(seq, int) or seq < 0 or not isinstance(sent_ns, int):
            return
        byte, bit = divmod(seq, 8)
        if byte >= len(self._seen):
            self._seen.extend(bytes(byte - len(self._seen) + 256))
        if self._seen[byte] & (1 << bit):
            tally.duplicates += 1
            return
        self._seen[byte] |= 1 << bit
        tally.delivered += 1
        # time.monotonic_ns is one system-wide clock (CLOCK_MONOTONIC on Linux, the
        # equivalents elsewhere), so the main process's send time compares with ours.
        tally.latency.add((time.monotonic_ns() - sent_ns) / 1000)


class Worker:
    def __init__(self, config: dict[str, Any], emit: Callable[[dict[str, Any]], None]) -> None:
        self.host, self.port = config["tcp"]
        self.jwt_secret: str | None = config.get("jwt_secret")
        self.token_ttl: float = config.get("token_ttl", 3600.0)
        self.emit = emit
        self.tally = Tally()
        self.clients = [LoadClient(ClientSpec.from_json(c), self.tally) for c in config["clients"]]
        self.heartbeat: float | None = None
        self.loading = False
        self._stopped = asyncio.Event()
        self._timers: list[asyncio.TimerHandle] = []
        self._churners: list[asyncio.Task[None]] = []
        self._handshakes = asyncio.Semaphore(CONNECT_CONCURRENCY)

    def stop(self) -> None:
        self.loading = False
        self._stopped.set()

    # -- connecting ------------------------------------------------------------------------

    def _hello(self, spec: ClientSpec) -> dict[str, Any]:
        if self.jwt_secret is None:
            return {"op": "hello", "user": spec.user}
        from tidegate.tokens import make_token

        return {"op": "hello", "token": make_token(spec.user, self.jwt_secret, self.token_ttl)}

    async def connect(self, client: LoadClient) -> None:
        """Connect, hello, join its rooms; raises ConnectionError (or OSError) saying why."""
        loop = asyncio.get_running_loop()
        async with self._handshakes:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                _, connection = await loop.create_connection(
                    lambda: Connection(client), self.host, self.port
                )
                client.connection = connection
                connection.send(self._hello(client.spec))
                for room in client.spec.rooms:
                    connection.send({"op": "join", "room": room})
                welcome = await connection.ready
        if self.heartbeat is None:
            self.heartbeat = float(welcome.get("heartbeat", 25))

    async def connect_all(self) -> ConnectionError | None:
        """Connect every client; None, or the first failure (the others are then given up:
        one refused client is enough to stop the run)."""

        async def connect_one(client: LoadClient) -> None:
            try:
                await self.connect(client)
            except TimeoutError:
                why = f"no welcome within {CONNECT_TIMEOUT:g}s"
                raise ConnectionError(f"client {client.spec.user}: {why}") from None
            except OSError as exc:  # ConnectionError included
                why = exc.strerror or str(exc)
                raise ConnectionError(f"client {client.spec.user}: {why}") from None

        failure: ConnectionError | None = None
        try:
            async with asyncio.TaskGroup() as group:
                for client in self.clients:
                    group.create_task(connect_one(client))
        except* ConnectionError as failed:
            failure = cast(ConnectionError, failed.exceptions[0])
        return failure

    def up(self) -> int:
        return sum(1 for c in self.clients if c.connection is not None and c.connection.is_open)

    async def ping_forever(self) -> None:
        """Every connection that is meant to look alive pings at half the heartbeat, from the
        first connection to the end of the load (any frame resets the server's idle timer)."""
        while not self._stopped.is_set():
            # Until a welcome tells the heartbeat, ping often enough for any sane one.
            interval = max(0.05, (self.heartbeat or 1.0) / 2)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), interval)
            for client in self.clients:
                connection = client.connection
                if client.pinging and connection is not None and connection.is_open:
                    connection.send({"op": "ping"})

    async def report_progress(self) -> None:
        while not self._stopped.is_set():
            self.emit(
                {
                    "op": "progress",
                    "up": self.up(),
                    "received": self.tally.received,
                    "delivered": self.tally.delivered,
                }
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), PROGRESS_INTERVAL)

    # -- the load phase ----------------------------------------------------------------------

    def load(self, group: asyncio.TaskGroup) -> None:
        """Schedule every fault, relative to now."""
        self.loading = True
        loop = asyncio.get_running_loop()
        for client in self.clients:
            if client.spec.fault is not None:
                self.tally.count_fault(client.spec.fault, "clients")
                self._timers.append(
                    loop.call_later(client.spec.fault_at, self._strike, client, group)
                )

    def _strike(self, client: LoadClient, group: asyncio.TaskGroup) -> None:
        connection = client.connection
        if not self.loading or connection is None or not connection.is_open:
            return
        transport = connection.transport
        assert transport is not None
        client.struck = True
        fault = client.spec.fault
        if fault == "reset":
            connection.closing = True
            sock = transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        elif fault == "halfclose":
            client.pinging = False
            transport.write_eof()  # shutdown(SHUT_WR): the server reads EOF and must close
        elif fault == "vanish":
            client.pinging = False
            transport.pause_reading()
        elif fault == "stall":
            transport.pause_reading()  # the kernel buffers fill, then the server's do
        elif fault == "churn":
            name = f"load-churn-{client.spec.index}"
            self._churners.append(group.create_task(self._churn(client), name=name))

    async def _churn(self, client: LoadClient) -> None:
        period = CHURN_UP
        while self.loading:
            connection = client.connection
            if connection is not None and connection.is_open:
                connection.closing = True
                assert connection.transport is not None
                connection.transport.close()
                await connection.closed
            if not self.loading:
                break
            try:
                await self.connect(client)
            except (OSError, ConnectionError, TimeoutError):
                self.tally.count_fault("churn", "failed_reconnects")
            else:
                self.tally.count_fault("churn", "reconnects")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), period)

    # -- the end -----------------------------------------------------------------------------

    async def finish(self, pushes: list[tuple[int, str]]) -> None:
        """Stop the load and count; close every connection but the vanished ones (kept,
        unread, until ``release``: the server must end them by its idle timeout)."""
        self.loading = False
        self._stopped.set()
        for timer in self._timers:
            timer.cancel()
        if self._churners:
            await asyncio.wait(self._churners)  # each ends after its reconnect in progress
        log = PushLog(pushes)
        for client in self.clients:
            connection = client.connection
            if client.healthy:
                self.tally.healthy += 1
                self.tally.expected += log.expected(client.spec)
                if connection is not None and not connection.is_open:
                    self.tally.cut[connection.closed.result()] += 1
            elif (
                client.spec.fault == "halfclose"
                and client.struck
                and connection is not None
                and not connection.is_open
            ):
                self.tally.count_fault("halfclose", "closed_by_server")
        stalled = [c for c in self.clients if c.spec.fault == "stall" and c.struck]
        await self._resume(stalled)
        closing = []
        for client in self.clients:
            connection = client.connection
            if client.spec.fault == "vanish" and client.struck:
                continue
            if connection is not None and connection.is_open:
                connection.closing = True
                assert connection.transport is not None
                connection.transport.close()
                closing.append(connection.closed)
        if closing:
            await asyncio.wait(closing, timeout=CONNECT_TIMEOUT)

    async def _resume(self, clients: list[LoadClient]) -> None:
        """Read kept sockets again, and count whether the server had ended each (and why)."""
        connections = [c.connection for c in clients if c.connection is not None]
        for connection in connections:
            if connection.is_open and connection.transport is not None:
                connection.transport.resume_reading()
        pending = [c.closed for c in connections if c.is_open]
        if pending:
            # What the server sent before it closed is already in our socket buffer.
            await asyncio.wait(pending, timeout=RELEASE_WAIT)
        for client in clients:
            kept = client.connection
            assert kept is not None
            fault = str(client.spec.fault)
            if kept.is_open:
                self.tally.count_fault(fault, "open_until_we_closed")
            else:
                self.tally.count_fault(fault, f"ended_by_server:{kept.closed.result()}")

    async def release(self) -> None:
        """Read the vanished sockets again: did the server end them (and why)? Then close."""
        vanished = [c for c in self.clients if c.spec.fault == "vanish" and c.struck]
        await self._resume(vanished)
        for client in vanished:
            connection = client.connection
            if connection is not None and connection.transport is not None:
                connection.transport.abort()


async def _serve(commands: asyncio.StreamReader, emit: Callable[[dict[str, Any]], None]) -> None:
    async def command(op: str) -> dict[str, Any]:
        line = await commands.readline()
        if not line:
            raise SystemExit(0)  # the main process is gone: stop
        message: dict[str, Any] = json.loads(line)
        if message.get("op") != op:
            raise SystemExit(f"expected {op!r} from the main process, got {message.get('op')!r}")
        return message

    worker = Worker(await command("start"), emit)
    async with asyncio.TaskGroup() as group:
        group.create_task(worker.ping_forever(), name="load-pings")
        group.create_task(worker.report_progress(), name="load-progress")
        failure = await worker.connect_all()
        if failure is not None:
            worker.stop()
            emit({"op": "error", "message": str(failure) or type(failure).__name__})
            return
        emit({"op": "up", "clients": worker.up(), "heartbeat": worker.heartbeat})
        await command("load")
        worker.load(group)
        pushes = (await command("finish"))["pushes"]
        await worker.finish([(seq, target) for seq, target in pushes])
    emit({"op": "finished"})
    await command("release")
    await worker.release()
    emit({"op": "released", "tally": worker.tally.to_json()})


async def _main() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 30)  # the push log comes in one line
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    def emit(event: dict[str, Any]) -> None:
        sys.stdout.buffer.write(json.dumps(event).encode() + b"\n")
        sys.stdout.buffer.flush()

    await _serve(reader, emit)


def main() -> None:
    from .limits import raise_open_files, run

    raise_open_files()
    with contextlib.suppress(KeyboardInterrupt):
        run(_main())
    sys.stdout.flush()
    # Nothing is left to flush; skip the interpreter's teardown of thousands of sockets.
    os._exit(0)


if __name__ == "__main__":
    main()
