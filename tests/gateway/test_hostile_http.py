"""Hostile HTTP clients on the push API and the admin port: compression bombs, slowloris,
connection floods, malformed requests, uploads nobody reads, a shutdown mid-upload.

Each attack is bounded and on loopback, and judged by what the gateway exposes: statuses,
`rejections` and `http_refusals` counters, the loop-lag histogram, `/_count`, and an
ordinary TCP client still served meanwhile. Timeouts are configured small (scaled by
TIDEGATE_TEST_UNIT); no assertion says how fast something must be.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from tidegate.gateway import Gateway, open_gateway
from tidegate.gateway.web_listener import LOG_EVERY

from .helpers import TIMEOUT, UNIT, Client, config, http_get, loop_lag_over, wait_until

API_KEY = "hostile-http-test-key-0123456789abcdef"
MIB = 1024 * 1024
LAG_BOUND = 0.25 * UNIT
SHORT = 0.3 * UNIT  # the header, body and idle timeouts of these tests


def bomb(unpacked: int, wbits: int = 31) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, wbits)
    block = bytes(MIB)
    return b"".join(packer.compress(block) for _ in range(unpacked // MIB)) + packer.flush()


@asynccontextmanager
async def gateway(**changes: Any) -> AsyncIterator[Gateway]:
    cfg = config(http=("127.0.0.1", 0), admin=("127.0.0.1", 0), api_key=API_KEY, **changes)
    async with open_gateway(cfg) as gw:
        yield gw


class Http:
    """One raw HTTP/1.1 connection, written and read byte for byte."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, address: tuple[str, int] | None) -> Http:
        assert address is not None
        reader, writer = await asyncio.wait_for(asyncio.open_connection(*address), TIMEOUT)
        return cls(reader, writer)

    def post_head(self, length: int | None, **headers: str) -> None:
        lines = [
            "POST /v1/push HTTP/1.1",
            "Host: t",
            "Content-Type: application/json",
            *(f"{name.replace('_', '-')}: {value}" for name, value in headers.items()),
        ]
        lines.append(
            f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
        )
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())

    async def send_body(self, body: bytes) -> None:
        """Writes the body in 64 KiB pieces; stops quietly if the server closes meanwhile."""
        try:
            for start in range(0, len(body), 1 << 16):
                self.writer.write(body[start : start + (1 << 16)])
                await self.writer.drain()
        except ConnectionError:
            pass

    async def response(self) -> tuple[int, bytes]:
        """(status, body) of the next response; the server may close after it."""
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        body = await asyncio.wait_for(self.reader.readexactly(length), TIMEOUT)
        return status, body

    async def closed_by_server(self) -> bool:
        try:
            return await asyncio.wait_for(self.reader.read(), TIMEOUT) == b""
        except ConnectionResetError:
            return True

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, TimeoutError):
            await asyncio.wait_for(self.writer.wait_closed(), TIMEOUT)


async def other_client_served(gw: Gateway) -> Client:
    client = await Client.hello(gw.tcp_address, "bystander")
    await client.roundtrip()
    return client


# -- compression bombs ------------------------------------------------------------------------


async def test_a_gzip_bomb_without_the_key_is_401_and_never_decompressed() -> None:
    # ~1 MB of gzip that unpacks to 1000 MiB. It used to be decompressed on the loop after
    # the 401 (aiohttp's lingering read): 0.5-1.7 s blocks per request.
    payload = bomb(1000 * MIB)
    async with gateway() as gw:
        bystander = await other_client_served(gw)
        for _ in range(3):
            http = await Http.open(gw.http_address)
            http.post_head(len(payload), Content_Encoding="gzip")
            sending = asyncio.create_task(http.send_body(payload))
            status, body = await http.response()
            assert status == 401 and b'"unauthorized"' in body
            await bystander.roundtrip()
            await sending
            assert await http.closed_by_server()
            await http.close()
        assert gw.statistics().rejections == {"unauthorized": 3}
        assert loop_lag_over(gw, LAG_BOUND) == 0
        await bystander.close()


@pytest.mark.parametrize("wbits", [31, 15], ids=["gzip", "deflate"])
async def test_a_bomb_with_the_key_is_refused_after_its_first_slices(wbits: int) -> None:
    payload = bomb(1000 * MIB, wbits)
    encoding = "gzip" if wbits == 31 else "deflate"
    async with gateway() as gw:
        bystander = await other_client_served(gw)
        http = await Http.open(gw.http_address)
        http.post_head(len(payload), Content_Encoding=encoding, Authorization=f"Bearer {API_KEY}")
        sending = asyncio.create_task(http.send_body(payload))
        status, body = await http.response()
        assert status == 413 and b'"too_large"' in body, body
        await sending
        await http.close()
        assert gw.statistics().rejections == {"too_large": 1}
        assert gw.statistics().pushes == {}
        assert loop_lag_over(gw, LAG_BOUND) == 0
        await bystander.roundtrip()
        await bystander.close()


async def test_a_small_body_that_decodes_past_max_body_is_413() -> None:
    payload = zlib.compress(b'{"to":"all","data":"' + b"x" * 4096 + b'"}')
    async with gateway(max_body=1024) as gw:
        http = await Http.open(gw.http_address)
        http.post_head(len(payload), Content_Encoding="deflate", Authorization=f"Bearer {API_KEY}")
        await http.send_body(payload)
        status, body = await http.response()
        assert status == 413 and b"decoded body over 1024 bytes" in body, body
        await http.close()


async def test_a_body_that_decodes_to_over_1024_times_its_size_is_413() -> None:
    # 8 MiB of zeros as ~8 KB of gzip (1026 to 1): under a max_body of 16 MiB, refused by the
    # ratio bound alone. (Deflate cannot pass ~1032 to 1, so this bound stops only the most
    # perfect bombs; max_body is the one that stops the others.)
    payload = bomb(8 * MIB)
    async with gateway(max_body=16 * MIB) as gw:
        http = await Http.open(gw.http_address)
        http.post_head(len(payload), Content_Encoding="gzip", Authorization=f"Bearer {API_KEY}")
        await http.send_body(payload)
        status, body = await http.response()
        assert status == 413 and b"decodes to more than 1024 times its size" in body, body
        await http.close()
        assert gw.statistics().rejections == {"too_large": 1}


@pytest.mark.parametrize("encoding", ["br", "zstd", "compress", "gzip, gzip", "gzip, br"])
async def test_other_content_encodings_are_415_without_a_traceback(
    encoding: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with gateway() as gw:
        http = await Http.open(gw.http_address)
        http.post_head(10, Content_Encoding=encoding, Authorization=f"Bearer {API_KEY}")
        await http.send_body(b"0123456789")
        status, body = await http.response()
        assert status == 415 and b'"unsupported_encoding"' in body, body
        await http.close()
        assert gw.statistics().rejections == {"unsupported_encoding": 1}
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_an_upload_refused_before_its_body_is_read_still_gets_its_reply() -> None:
    # 8 MiB with a wrong key: the 401 goes out at once and the server stops reading the
    # body. It half-closes and discards the rest, so the client reads its 401 instead of a
    # reset caused by the bytes it was still sending.
    async with gateway() as gw:
        for _ in range(3):
            http = await Http.open(gw.http_address)
            http.post_head(8 * MIB, Authorization="Bearer wrong")
            await http.send_body(b"x" * (8 * MIB))
            status, _ = await http.response()
            assert status == 401
            assert await http.closed_by_server()
            await http.close()


# -- slowloris, idle, limits ---------------------------------------------------------------------


async def test_slowloris_connections_are_cut_within_their_timeouts() -> None:
    # 20 connections that never send a byte, 20 that trickle headers, 20 that stop in the
    # middle of a chunked body, 10 admin connections that trickle headers. They all used to
    # stay open indefinitely, each holding a descriptor and a task.
    timeouts = {"http_header_timeout": SHORT, "http_body_timeout": SHORT}
    async with gateway(**timeouts) as gw:
        status, baseline = await http_get(gw.admin_address, "/_count")
        assert status == 200
        silent = [await Http.open(gw.http_address) for _ in range(20)]
        trickling = [await Http.open(gw.http_address) for _ in range(20)]
        unfinished = [await Http.open(gw.http_address) for _ in range(20)]
        admin = [await Http.open(gw.admin_address) for _ in range(10)]
        for http in [*trickling, *admin]:
            http.writer.write(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")
        for http in unfinished:
            http.post_head(None, Authorization=f"Bearer {API_KEY}")
            http.writer.write(b"100\r\n" + b"x" * 100)  # a chunk announced, half sent

        async def keep_trickling() -> None:
            for _ in range(int(3 * SHORT / 0.05)):
                for http in [*trickling, *admin]:
                    if not http.writer.is_closing():
                        http.writer.write(b"X-Slow: 1\r\n")
                await asyncio.sleep(0.05)

        trickle = asyncio.create_task(keep_trickling())
        for http in [*silent, *trickling, *admin]:
            assert await http.closed_by_server()
        for http in unfinished:
            status, body = await http.response()
            assert status == 408 and b'"timeout"' in body
            assert await http.closed_by_server()
        trickle.cancel()
        await asyncio.gather(trickle, return_exceptions=True)
        stats = gw.statistics()
        assert stats.http_refusals == {"header_timeout": 50}
        assert stats.rejections == {"timeout": 20}
        status, after = await http_get(gw.admin_address, "/_count")
        assert after == baseline
        for http in [*silent, *trickling, *unfinished, *admin]:
            await http.close()


async def test_an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() -> None:
    async with gateway(http_idle_timeout=SHORT) as gw:
        http = await Http.open(gw.http_address)
        body = b'{"to":"all","data":1}'
        for _ in range(2):  # keep-alive: two requests on one connection
            http.post_head(len(body), Authorization=f"Bearer {API_KEY}")
            http.writer.write(body)
            assert (await http.response())[0] == 200
        assert await http.closed_by_server()  # then idle: closed, not counted as hostile
        assert gw.statistics().http_refusals == {}
        await http.close()


async def test_connections_over_the_limit_get_503_and_the_admin_port_still_answers() -> None:
    async with gateway(http_max_conns=5) as gw:
        held = [await Http.open(gw.http_address) for _ in range(5)]
        await wait_until(lambda: gw._web_listeners[0].connections() == 5, what="5 held")
        over = await Http.open(gw.http_address)
        status, body = await over.response()
        assert status == 503 and b'"too_many_connections"' in body
        assert await over.closed_by_server()
        assert gw.statistics().http_refusals == {"too_many_connections": 1}
        assert (await http_get(gw.admin_address, "/healthz"))[0] == 200
        for http in [over, *held]:
            await http.close()


# -- malformed requests ---------------------------------------------------------------------------


MALFORMED = [
    b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n",  # a huge header
    b"POST /v1/push HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",  # length and chunked
    b"POST /v1/push HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: t\r\nBad Header\r\n\r\n",
    b"GET /\x00 HTTP/1.1\r\n\r\n",
]


@pytest.mark.parametrize("port", ["http", "admin"])
async def test_malformed_requests_log_one_line_not_a_traceback_each(
    port: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with gateway() as gw:
        address = gw.http_address if port == "http" else gw.admin_address
        for _ in range(4):
            for raw in MALFORMED:
                http = await Http.open(address)
                http.writer.write(raw)
                status, _ = await http.response()
                assert status == 400
                await http.close()
        assert gw.statistics().http_refusals == {"malformed": 4 * len(MALFORMED)}
    records = [r for r in caplog.records if r.name.startswith(("tidegate", "aiohttp"))]
    assert not [r for r in records if r.exc_info or r.levelno >= logging.ERROR]
    lines = [r.getMessage() for r in records if "malformed request" in r.getMessage()]
    # Rate-limited: one line, and one more per LOG_EVERY seconds the test took.
    assert 1 <= len(lines) <= 1 + (loop.time() - started) // LOG_EVERY, lines


# -- shutdown --------------------------------------------------------------------------------------


async def test_shutdown_mid_upload_leaves_no_handler_behind() -> None:
    # A 413'd upload still streaming, a body half sent, an idle keep-alive connection, and an
    # admin request trickling: close() ends all of them (the suite's leak check then finds no
    # aiohttp task left over).
    gw = Gateway(config(http=("127.0.0.1", 0), admin=("127.0.0.1", 0), api_key=API_KEY))
    await gw.start()
    refused = await Http.open(gw.http_address)
    refused.post_head(64 * MIB, Authorization=f"Bearer {API_KEY}")
    uploading = asyncio.create_task(refused.send_body(b"x" * (8 * MIB)))
    assert (await refused.response())[0] == 413
    half = await Http.open(gw.http_address)
    half.post_head(1000, Authorization=f"Bearer {API_KEY}")
    half.writer.write(b"x" * 10)
    idle = await Http.open(gw.http_address)
    admin = await Http.open(gw.admin_address)
    admin.writer.write(b"GET /_count HTTP/1.1\r\n")
    await asyncio.sleep(0.05)
    await gw.close()
    for http in (half, idle, admin):
        assert await http.closed_by_server()
        await http.close()
    await uploading
    await refused.close()
