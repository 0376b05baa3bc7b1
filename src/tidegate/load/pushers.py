"""The business side of the load: pushes at a steady rate over UDP (signed when a secret is
given) or HTTP ``POST /v1/push``, each with a sequence number and its send time.

Every push carries ``data = {"s": seq, "t": monotonic_ns}``: clients tell duplicates and
latency from it. ``log`` keeps (seq, target) of each push the gateway may have delivered: all
UDP datagrams sent (UDP has no reply; a datagram the kernel dropped shows up as lost), and the
HTTP pushes answered 200.

Bounded: at most ``HTTP_IN_FLIGHT`` HTTP pushes are in flight, each for at most
``HTTP_TIMEOUT`` seconds; the pacer waits for a free slot, never past the end of the load
phase, so an ingress that does not keep up (or never answers) slows the pushes down (the
report shows the rate achieved) and cannot pile up tasks or hold the run.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Final

import aiohttp
import msgspec

from tidegate.addresses import http_url
from tidegate.protocol.ingress import sign

__all__ = ["HttpPusher", "UdpPusher", "push_at_rate"]

TICK: Final = 0.005  # pacing granularity
HTTP_IN_FLIGHT: Final = 64
HTTP_TIMEOUT: Final = 5.0  # a push not answered by then is a push error ("http_timeout")

_encode = msgspec.json.Encoder().encode


def _body(seq: int, target: str, run: str, signed: bool) -> bytes:
    push: dict[str, object] = {
        "to": target,
        "id": f"{run}-{seq}",
        "data": {"s": seq, "t": time.monotonic_ns()},
    }
    if signed:
        push["ts"] = time.time()
    return _encode(push)


class UdpPusher:
    def __init__(self, address: tuple[str, int], *, secret: str | None, run: str) -> None:
        self.address = address
        self._secret = secret.encode() if secret else None
        self._run = run
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_DGRAM)
        self._sock.setblocking(False)
        self.errors: Counter[str] = Counter()

    async def push(
        self, seq: int, target: str, log: list[tuple[int, str]], deadline: float
    ) -> bool:
        """Send it now (a datagram never waits); always True."""
        body = _body(seq, target, self._run, self._secret is not None)
        datagram = sign(self._secret, body) if self._secret else body
        try:
            self._sock.sendto(datagram, self.address)
        except BlockingIOError:
            self.errors["udp_send_buffer_full"] += 1
            return True
        except OSError as exc:
            self.errors[f"udp_{type(exc).__name__}"] += 1
            return True
        log.append((seq, target))
        return True

    async def aclose(self) -> None:
        self._sock.close()


class HttpPusher:
    """POSTs in tasks of the caller's group, at most ``HTTP_IN_FLIGHT`` at a time: ``push``
    waits for a free slot (the pacing then falls behind, and the report shows the rate
    achieved), never past its deadline. The session's timeout bounds each POST."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        address: tuple[str, int],
        *,
        api_key: str | None,
        run: str,
        group: asyncio.TaskGroup,
    ) -> None:
        self._session = session
        self._url = http_url(address, "/v1/push")
        self._headers = {"Content-Type": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._run = run
        self._group = group
        self._in_flight = asyncio.Semaphore(HTTP_IN_FLIGHT)
        self.errors: Counter[str] = Counter()

    async def push(
        self, seq: int, target: str, log: list[tuple[int, str]], deadline: float
    ) -> bool:
        """Start the POST once a slot is free; False (not sent) if none is by ``deadline``
        (loop time)."""
        try:
            async with asyncio.timeout_at(deadline):
                await self._in_flight.acquire()
        except TimeoutError:
            return False
        body = _body(seq, target, self._run, False)
        self._group.create_task(self._post(seq, target, body, log))
        return True

    async def _post(self, seq: int, target: str, body: bytes, log: list[tuple[int, str]]) -> None:
        try:
            async with self._session.post(self._url, data=body, headers=self._headers) as r:
                await r.read()
                if r.status == 200:
                    log.append((seq, target))
                else:
                    self.errors[f"http_{r.status}"] += 1
        except TimeoutError:  # aiohttp's timeouts are TimeoutErrors too
            self.errors["http_timeout"] += 1
        except aiohttp.ClientConnectionError:
            self.errors["http_connection_failed"] += 1
        except aiohttp.ClientError as exc:
            self.errors[f"http_{type(exc).__name__}"] += 1
        finally:
            self._in_flight.release()

    async def aclose(self) -> None:
        pass  # the session and the group belong to the caller


async def push_at_rate(
    pushers: list[UdpPusher | HttpPusher],
    targets: Iterator[str],
    *,
    rate: float,
    duration: float,
    log: list[tuple[int, str]],
    first_seq: int = 0,
    progress: Callable[[int], object] | None = None,
) -> int:
    """Push ``rate`` per second for ``duration`` seconds, alternating over ``pushers``;
    returns how many were sent. Paced on the loop clock: a late tick sends what is due. A
    pusher with no room (HTTP, all slots in flight) is waited for until the end of the
    duration; then the rest is not sent."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    end = start + duration
    sent = 0
    total = round(rate * duration)
    while sent < total:
        due = min(total, int((loop.time() - start) * rate) + 1)
        while sent < due:
            seq = first_seq + sent
            if not await pushers[seq % len(pushers)].push(seq, next(targets), log, end):
                return sent
            sent += 1
        if progress is not None:
            progress(sent)
        await asyncio.sleep(TICK)
    return sent
