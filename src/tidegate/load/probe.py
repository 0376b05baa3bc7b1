"""Reading the server under test: its gauges (a gateway's ``/debug/vars``, or any bare-integer
count URL) and its stack dump, over HTTP.

Each request uses a connection of its own (no keep-alive), so the server's count includes
exactly one request being served every time it is read, never an idle keep-alive handler
left over from the previous look.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from .dumps import Dump, DumpError, Proven, parse_dump, parse_proven
from .verdict import Sample

__all__ = ["Probe", "ProbeError", "Unreachable", "leaked_url_beside", "open_probe"]

TIMEOUT: Final = 10.0


class Unreachable(Exception):
    """An address did not answer; ``str()`` is one line naming it."""


class ProbeError(Exception):
    """An address answered, but not with what was expected; ``str()`` says what."""


def _where(url: str) -> str:
    parts = urlsplit(url)
    return parts.netloc or url


@dataclass(frozen=True, slots=True)
class Probe:
    session: aiohttp.ClientSession
    vars_url: str | None  # a gateway's /debug/vars: every gauge
    count_url: str | None  # a bare integer: tasks (goroutines) alone
    stack_url: str | None
    headers: Mapping[str, str]
    leaked_url: str | None = None  # /debug/tasks/leaked: what a proof finds blocked forever

    async def _get(self, url: str, what: str, *, missing_ok: bool = False) -> str | None:
        try:
            async with self.session.get(url, headers=self.headers) as response:
                text = await response.text(errors="replace")
        except (aiohttp.ClientConnectionError, TimeoutError) as exc:
            why = "timed out" if isinstance(exc, TimeoutError) else reason(exc)
            raise Unreachable(f"no answer from {what} at {_where(url)} ({why})") from None
        except aiohttp.ClientError as exc:  # it answered, not in HTTP (a wrong port)
            text = str(getattr(exc, "message", "") or exc).strip()
            why = text.partition("\n")[0].rstrip(":") or type(exc).__name__
            raise ProbeError(f"{what} at {_where(url)} is not an HTTP server ({why})") from None
        if response.status == 404 and missing_ok:
            return None
        if response.status != 200:
            first = text.strip().partition("\n")[0][:100]
            raise ProbeError(f"{what} at {url} answered {response.status}: {first}")
        return text

    async def _text(self, url: str, what: str) -> str:
        text = await self._get(url, what)
        assert text is not None  # only a missing_ok look answers None
        return text

    async def vars_document(self) -> dict[str, Any]:
        """The gateway's ``/debug/vars``."""
        assert self.vars_url is not None
        text = await self._text(self.vars_url, "the admin port")
        try:
            document = json.loads(text)
        except ValueError:
            raise ProbeError(f"{self.vars_url} did not answer JSON") from None
        if not isinstance(document, dict):
            raise ProbeError(f"{self.vars_url} did not answer a JSON object")
        return document

    async def counters(self, name: str) -> dict[str, float]:
        """One labelled counter of ``/debug/vars`` (e.g. ``pushes`` by ingress)."""
        counters = (await self.vars_document()).get("counters") or {}
        value = counters.get(name) if isinstance(counters, dict) else None
        if not isinstance(value, dict):
            return {}
        return {str(k): v for k, v in value.items() if isinstance(v, int | float)}

    async def settings(self) -> dict[str, float]:
        """The numeric ``settings`` of ``/debug/vars`` (a gateway's timeouts); empty for a
        server that publishes none."""
        if self.vars_url is None:
            return {}
        settings = (await self.vars_document()).get("settings") or {}
        if not isinstance(settings, dict):
            return {}
        return {
            str(k): float(v)
            for k, v in settings.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }

    async def sample(self, t: float, phase: str) -> Sample:
        if self.vars_url is not None:
            return Sample.from_vars(t, phase, await self.vars_document())
        assert self.count_url is not None
        text = (await self._text(self.count_url, "the count URL")).strip()
        if not text.isdigit():
            raise ProbeError(f"{self.count_url} answered {text[:40]!r}, not a bare integer")
        return Sample(t, phase, tasks=int(text))

    async def dump(self) -> Dump | None:
        if self.stack_url is None:
            return None
        text = await self._text(self.stack_url, "the stack URL")
        try:
            return parse_dump(text)
        except DumpError as exc:
            raise ProbeError(f"{self.stack_url}: {exc}") from None

    async def proven(self) -> Proven | None:
        """What ``/debug/tasks/leaked`` lists now; None where the server has no such route
        (404) or none was given."""
        if self.leaked_url is None:
            return None
        text = await self._get(self.leaked_url, "the leaked-tasks URL", missing_ok=True)
        if text is None:
            return None
        try:
            return parse_proven(text)
        except DumpError as exc:
            raise ProbeError(f"{self.leaked_url}: {exc}") from None


def leaked_url_beside(stack_url: str | None) -> str | None:
    """Where a server whose dump is tidegate's ``/debug/tasks`` or ``/_stack`` at
    ``stack_url`` lists its proven leaks: ``/debug/tasks/leaked`` beside it, under the same
    mount. None for other dumps (Go's pprof has no such route)."""
    if stack_url is None:
        return None
    parts = urlsplit(stack_url)
    for tail in ("/debug/tasks", "/_stack"):
        if parts.path.endswith(tail):
            path = parts.path[: -len(tail)] + "/debug/tasks/leaked"
            return urlunsplit((parts.scheme, parts.netloc, path, "", ""))
    return None


def reason(exc: BaseException) -> str:
    """A socket error in a few words: "connection refused", not the loop's phrasing."""
    cause = getattr(exc, "os_error", None) or exc
    errno = getattr(cause, "errno", None)
    if isinstance(errno, int) and errno > 0:
        return os.strerror(errno).lower()
    return str(cause) or type(cause).__name__


@contextlib.asynccontextmanager
async def open_probe(
    *,
    vars_url: str | None = None,
    count_url: str | None = None,
    stack_url: str | None = None,
    leaked_url: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> AsyncIterator[Probe]:
    connector = aiohttp.TCPConnector(force_close=True)
    timeout = aiohttp.ClientTimeout(total=TIMEOUT)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        yield Probe(session, vars_url, count_url, stack_url, dict(headers or {}), leaked_url)
