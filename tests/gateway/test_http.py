"""`POST /v1/push` end to end: deliveries, batches, and every bad input getting its status
with nothing delivered. After each refusal a good push follows; the client's next frame
must be that one, which proves the refused push reached nobody."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tidegate.gateway import ConfigError, Gateway, open_gateway

from .helpers import TIMEOUT, Client, config, http_session, url

API_KEY = "push-key-for-tests"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
JSON = {"Content-Type": "application/json"}


@asynccontextmanager
async def gateway_with_client(**changes: Any) -> AsyncIterator[tuple[Gateway, Client]]:
    cfg = config(http=("127.0.0.1", 0), api_key=API_KEY, **changes)
    async with open_gateway(cfg) as gw:
        client = await Client.hello(gw.tcp_address, "alice")
        await client.join("lobby")
        try:
            yield gw, client
        finally:
            await client.close()


async def post(gw: Gateway, body: bytes, **headers: str) -> tuple[int, Any]:
    async with (
        http_session() as session,
        session.post(url(gw.http_address, "/v1/push"), data=body, headers=headers) as response,
    ):
        return response.status, await response.json(content_type=None)


async def assert_nothing_was_delivered(gw: Gateway, client: Client) -> None:
    status, reply = await post(gw, b'{"to":"all","data":"marker","id":"m"}', **AUTH, **JSON)
    assert (status, reply) == (200, {"id": "m", "delivered": 1})
    frame = await client.recv()
    assert frame["id"] == "m", f"a refused push was delivered: {frame}"


async def test_push_to_user_room_and_all() -> None:
    async with gateway_with_client() as (gw, client):
        for to in ("user:alice", "room:lobby", "all"):
            body = b'{"to":"%s","data":{"n":[1,2]},"id":"p-%s"}' % (to.encode(), to.encode())
            status, reply = await post(gw, body, **AUTH, **JSON)
            assert (status, reply) == (200, {"id": f"p-{to}", "delivered": 1})
            assert await client.recv() == {
                "op": "msg",
                "to": to,
                "id": f"p-{to}",
                "data": {"n": [1, 2]},
            }
        status, reply = await post(gw, b'{"to":"user:bob","data":1}', **AUTH, **JSON)
        assert status == 200 and reply["delivered"] == 0 and reply["id"]
        assert gw.statistics().pushes["http"] == 4


async def test_reply_carries_the_id_the_gateway_made() -> None:
    async with gateway_with_client() as (gw, client):
        status, reply = await post(gw, b'{"to":"all","data":null}', **AUTH, **JSON)
        assert status == 200 and reply["delivered"] == 1
        assert (await client.recv())["id"] == reply["id"]


async def test_batch_gives_a_result_per_item_in_order() -> None:
    async with gateway_with_client() as (gw, client):
        body = (
            b'[{"to":"user:alice","data":1,"id":"a"},'
            b' {"to":"planet:mars","data":2},'
            b' {"data":3},'
            b' {"to":"room:lobby","data":4,"id":"b"}]'
        )
        status, reply = await post(gw, body, **AUTH, **JSON)
        assert status == 200
        assert reply[0] == {"id": "a", "delivered": 1}
        assert reply[1]["error"] == "bad_target"
        assert reply[2]["error"] == "bad_body" and "to" in reply[2]["reason"]
        assert reply[3] == {"id": "b", "delivered": 1}
        assert [(await client.recv())["id"] for _ in range(2)] == ["a", "b"]
        await assert_nothing_was_delivered(gw, client)
        rejections = gw.statistics().rejections
        assert (rejections["bad_target"], rejections["bad_body"]) == (1, 1)


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"{not json", "bad_json"),
        (b"", "bad_json"),
        (b"[1,", "bad_json"),
        (b"[]", "bad_body"),
        (b'"just a string"', "bad_body"),
        (b'{"to":"all"}', "bad_body"),
        (b'{"to":7,"data":1}', "bad_body"),
        (b'{"to":"all","data":1,"id":5}', "bad_body"),
        (b'{"to":"all","data":1,"id":""}', "bad_body"),
        (b'{"to":"all","data":1,"id":"' + b"x" * 129 + b'"}', "bad_id"),  # contract v1.1
        (b'{"to":"all","data":1,"ts":"noon"}', "bad_body"),
        (b'{"to":"user:","data":1}', "bad_target"),
        (b'{"to":"everyone","data":1}', "bad_target"),
        (b'{"to":"all","data":"\xff\xfe"}', "bad_json"),
        (b'{"to":"all","data":{"\xed\xa0\x80":1}}', "bad_json"),
        (b'{"to":"all","data":' + b"[" * 20_000 + b"]" * 20_000 + b"}", "bad_json"),
        (b"[" + b'{"to":"all","data":' + b"[" * 20_000 + b"]" * 20_000 + b"}]", "bad_json"),
    ],
)
async def test_bad_bodies_are_400_and_deliver_nothing(body: bytes, error: str) -> None:
    async with gateway_with_client() as (gw, client):
        status, reply = await post(gw, body, **AUTH, **JSON)
        assert status == 400 and reply["error"] == error, reply
        assert reply["reason"]
        assert gw.statistics().rejections[error] == 1
        await assert_nothing_was_delivered(gw, client)


async def test_batch_items_that_are_not_utf8_are_refused_one_by_one() -> None:
    async with gateway_with_client() as (gw, client):
        body = b'[{"to":"all","data":"\xff\xfe","id":"x"}, {"to":"all","data":"ok","id":"g"}]'
        status, reply = await post(gw, body, **AUTH, **JSON)
        assert status == 200
        assert reply[0]["error"] == "bad_json" and "UTF-8" in reply[0]["reason"]
        assert reply[1] == {"id": "g", "delivered": 1}
        frame = await client.recv()
        assert (frame["id"], frame["data"]) == ("g", "ok")
        assert gw.statistics().rejections["bad_json"] == 1
        await assert_nothing_was_delivered(gw, client)


async def test_batch_over_max_batch_is_413_and_delivers_nothing() -> None:
    async with gateway_with_client(max_batch=3) as (gw, client):
        item = b'{"to":"all","data":1}'
        status, reply = await post(gw, b"[" + b",".join([item] * 4) + b"]", **AUTH, **JSON)
        assert (status, reply["error"]) == (413, "too_large")
        assert "4 items" in reply["reason"] and "3" in reply["reason"], reply
        assert gw.statistics().rejections["too_large"] == 1
        assert gw.statistics().pushes.get("http", 0) == 0
        await assert_nothing_was_delivered(gw, client)
        # Exactly at the limit is fine.
        status, reply = await post(gw, b"[" + b",".join([item] * 3) + b"]", **AUTH, **JSON)
        assert status == 200 and [r["delivered"] for r in reply] == [1, 1, 1]


async def test_a_body_full_of_tiny_items_is_refused_by_the_default_batch_limit() -> None:
    # The review's case: 1 MiB of `[0,0,0,...]` is 524k items, each answered with an error.
    async with gateway_with_client() as (gw, client):
        body = b"[" + b",".join([b"0"] * (512 * 1024 - 1)) + b"]"
        assert len(body) <= gw.config.max_body
        status, reply = await post(gw, body, **AUTH, **JSON)
        assert (status, reply["error"]) == (413, "too_large")
        assert "1000" in reply["reason"], reply
        assert gw.statistics().rejections == {"too_large": 1}
        await assert_nothing_was_delivered(gw, client)


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_body_that_does_not_match_its_content_encoding_is_400(
    encoding: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with gateway_with_client() as (gw, client):
        headers = {**AUTH, **JSON, "Content-Encoding": encoding}
        status, reply = await post(gw, b'{"to":"all","data":1}', **headers)
        assert (status, reply["error"]) == (400, "bad_encoding"), reply
        assert encoding in reply["reason"], reply
        assert gw.statistics().rejections["bad_encoding"] == 1
        await assert_nothing_was_delivered(gw, client)
        # On a keep-alive connection, with a request pipelined behind it: the reply closes
        # the connection (the rest of the body was never parsed), the next request is not run.
        assert gw.http_address is not None
        reader, writer = await asyncio.open_connection(*gw.http_address)
        try:
            body = b'{"to":"all","data":2}'
            writer.write(
                b"POST /v1/push HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                b"Authorization: Bearer %s\r\nContent-Encoding: %s\r\n"
                b"Content-Length: %d\r\n\r\n%s"
                % (API_KEY.encode(), encoding.encode(), len(body), body)
                + b"GET /v1/push HTTP/1.1\r\nHost: t\r\n\r\n"
            )
            raw = await asyncio.wait_for(reader.read(), TIMEOUT)  # EOF: the server closed
        finally:
            writer.close()
            await writer.wait_closed()
        assert raw.startswith(b"HTTP/1.1 400 ") and raw.count(b"HTTP/1.1") == 1, raw
        assert b"Connection: close" in raw and b'"bad_encoding"' in raw, raw
        assert gw.statistics().rejections["bad_encoding"] == 2
        # Refused as bad input: nothing logged as a server error (aiohttp logs tracebacks).
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert not errors, [r.getMessage() for r in errors]
        # The same push, really compressed, goes through.
        compressed = gzip.compress if encoding == "gzip" else zlib.compress
        body = compressed(b'{"to":"all","data":"unpacked","id":"z"}')
        status, reply = await post(gw, body, **headers)
        assert (status, reply) == (200, {"id": "z", "delivered": 1})
        assert (await client.recv())["data"] == "unpacked"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-key"},
        {"Authorization": f"Basic {API_KEY}"},
        {"Authorization": "Bearer"},
    ],
)
async def test_missing_or_forged_key_is_401(headers: dict[str, str]) -> None:
    async with gateway_with_client() as (gw, client):
        status, reply = await post(gw, b'{"to":"all","data":1}', **headers, **JSON)
        assert (status, reply["error"]) == (401, "unauthorized")
        assert gw.statistics().rejections["unauthorized"] == 1
        await assert_nothing_was_delivered(gw, client)


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
async def test_wrong_content_type_is_415(content_type: str) -> None:
    async with gateway_with_client() as (gw, client):
        status, reply = await post(
            gw, b'{"to":"all","data":1}', **AUTH, **{"Content-Type": content_type}
        )
        assert (status, reply["error"]) == (415, "unsupported_media_type")
        await assert_nothing_was_delivered(gw, client)


async def test_json_with_charset_is_accepted() -> None:
    async with gateway_with_client() as (gw, client):
        headers = {**AUTH, "Content-Type": "application/json; charset=utf-8"}
        status, _ = await post(gw, b'{"to":"all","data":1,"id":"c"}', **headers)
        assert status == 200
        assert (await client.recv())["id"] == "c"


async def test_body_over_the_limit_is_413_with_or_without_a_length() -> None:
    async with gateway_with_client(max_body=1024) as (gw, client):
        big = b'{"to":"all","data":"' + b"x" * 2048 + b'"}'
        status, reply = await post(gw, big, **AUTH, **JSON)
        assert (status, reply["error"]) == (413, "too_large")

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: chunked encoding
            for start in range(0, len(big), 256):
                yield big[start : start + 256]

        async with (
            http_session() as session,
            session.post(
                url(gw.http_address, "/v1/push"), data=chunks(), headers={**AUTH, **JSON}
            ) as response,
        ):
            assert response.status == 413
        assert gw.statistics().rejections["too_large"] == 2
        # Exactly at the limit is fine.
        head, tail = b'{"to":"all","data":"', b'","id":"e"}'
        exact = head + b"y" * (1024 - len(head) - len(tail)) + tail
        status, _ = await post(gw, exact, **AUTH, **JSON)
        assert status == 200
        assert (await client.recv())["id"] == "e"


async def test_no_key_needed_on_loopback_without_one() -> None:
    async with open_gateway(config(http=("127.0.0.1", 0))) as gw:
        status, reply = await post(gw, b'{"to":"all","data":1}', **JSON)
        assert (status, reply["delivered"]) == (200, 0)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"http": ("0.0.0.0", 0)}, "http: refusing to bind 0.0.0.0:0 without an API key"),
        ({"tcp": ("0.0.0.0", 0)}, "tcp: refusing to bind 0.0.0.0:0 without a JWT secret"),
        ({"admin": ("0.0.0.0", 0)}, "admin: refusing to bind 0.0.0.0:0 without an admin token"),
    ],
)
async def test_credentials_are_mandatory_beyond_loopback(
    changes: dict[str, Any], message: str
) -> None:
    gw = Gateway(config(**changes))
    with pytest.raises(ConfigError, match=message):
        await gw.start()
    assert gw.tcp_address is None  # refused before binding anything


# Random bodies: always a 200 or a 400 with a reason, never a 500 or a dropped connection.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries(
        {
            "to": st.sampled_from(["all", "user:alice", "room:lobby", "user:", "x"]),
            "data": json_values,
        },
        optional={"id": st.text(), "ts": json_values},
    ).map(lambda v: json.dumps(v).encode()),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=bodies)
async def test_fuzz_never_a_server_error(body: bytes) -> None:
    async with open_gateway(config(http=("127.0.0.1", 0))) as gw:
        status, reply = await post(gw, body, **JSON)
        assert status in (200, 400), (status, reply)
        if status == 400:
            assert reply["error"] and reply["reason"]


async def raw_request(address: tuple[str, int] | None, head: bytes, body: bytes = b"") -> int:
    """One request written byte for byte (aiohttp's client will not send a header that is
    not latin-1 text); returns the status."""
    assert address is not None
    reader, writer = await asyncio.open_connection(*address)
    try:
        writer.write(head + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
        status_line = await asyncio.wait_for(reader.readline(), 5)
        await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
        await writer.wait_closed()
    return int(status_line.split()[1])


async def test_a_key_with_bytes_that_are_not_utf8_is_401_not_500() -> None:
    async with gateway_with_client(admin=("127.0.0.1", 0), admin_token="admin-t") as (gw, client):
        head = (
            b"POST /v1/push HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer \xff\xfe\r\n"
        )
        assert await raw_request(gw.http_address, head, b'{"to":"all","data":1}') == 401
        head = b"GET /_count HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer \xff\r\n"
        assert await raw_request(gw.admin_address, head) == 401
        await assert_nothing_was_delivered(gw, client)
