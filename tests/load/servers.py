"""Servers under load, as their users start them: `tidegate serve`, the leaky example and a
gateway with tasks seeded blocked forever, each a process of its own on free loopback ports,
stopped (and waited for) on exit."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LISTENING = re.compile(r"(\w+) listening on (\S+):(\d+)$")


@contextlib.contextmanager
def running(*command: str, last: str = "admin") -> Iterator[dict[str, str]]:
    """Start `command`, read its `NAME listening on HOST:PORT` lines until the `last` one, and
    yield {name: "host:port"}; SIGTERM and wait on exit."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONASYNCIODEBUG"}
    proc = subprocess.Popen(
        [sys.executable, *command],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        addresses: dict[str, str] = {}
        assert proc.stdout is not None
        while last not in addresses:
            line = proc.stdout.readline()
            if not line:
                raise AssertionError(
                    f"{command} exited: {proc.stderr.read() if proc.stderr else ''}"
                )
            if match := LISTENING.search(line.strip()):
                addresses[match[1]] = f"{match[2]}:{match[3]}"
        yield addresses
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


FREE_PORTS = ("--tcp", "127.0.0.1:0", "--udp", "127.0.0.1:0", "--admin", "127.0.0.1:0")


def serve(*options: str) -> contextlib.AbstractContextManager[dict[str, str]]:
    http = ("--http", "127.0.0.1:0", "--log-level", "WARNING")
    return running("-m", "tidegate", "serve", *FREE_PORTS, *http, *options)


def leaky_gateway(*options: str) -> contextlib.AbstractContextManager[dict[str, str]]:
    return running("-m", "examples.leaky_gateway", *FREE_PORTS, *options)


def leaky_http_service(*options: str) -> contextlib.AbstractContextManager[dict[str, str]]:
    return running("-m", "examples.leaky_http_service", "--port", "0", *options, last="http")


def seeded_gateway(*options: str) -> contextlib.AbstractContextManager[dict[str, str]]:
    return running("-m", "tests.load.seeded_gateway", *options)
