"""Every error code of the contract, over real sockets (slow_consumer: test_slow_consumers)."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import jwt
import pytest

from tidegate.gateway import open_gateway
from tidegate.tokens import TokenRefusal

from .helpers import Client, config, wait_until

JWT_SECRET = "jwt-test-secret-jwt-test-secret-0123456789"
WRONG_KEY = "wrong-key-wrong-key-wrong-key-wrong-key"


def token(**claims: object) -> str:
    base: dict[str, object] = {"sub": "alice", "exp": int(time.time()) + 60}
    base.update(claims)
    return jwt.encode({k: v for k, v in base.items() if v is not None}, JWT_SECRET, "HS256")


@pytest.mark.parametrize(
    "first",
    [
        b"not json\n",
        b"[1,2]\n",
        b'{"op":"fly"}\n',
        b'{"op":"ping"}\n',
        b'{"op":"join","room":"lobby"}\n',
        b"\n",
        b'{"op":"hello","user":' + b"[" * 20_000 + b"]" * 20_000 + b"}\n",  # nested too deeply
    ],
)
async def test_bad_first_frame(first: bytes) -> None:
    async with open_gateway(config()) as gw:
        client = await Client.connect(gw.tcp_address)
        await client.send(first)
        await client.expect_error_and_close("bad_frame")
        assert gw.statistics().disconnects["bad_frame"] == 1


async def test_bad_frame_after_hello() -> None:
    async with open_gateway(config()) as gw:
        client = await Client.hello(gw.tcp_address, "alice")
        await client.send(b'{"op":"join"}\n')
        frame = await client.expect_error_and_close("bad_frame")
        assert "room" in frame["reason"]


async def test_frame_too_large() -> None:
    async with open_gateway(config(max_line=1024)) as gw:
        client = await Client.hello(gw.tcp_address, "alice")
        await client.send(b'{"op":"join","room":"' + b"x" * 1100 + b'"}\n')
        await client.expect_error_and_close("frame_too_large")
        # Without a newline at all: cut off as soon as the limit is passed.
        client = await Client.connect(gw.tcp_address)
        await client.send(b"y" * 4096)
        await client.expect_error_and_close("frame_too_large")
        assert gw.statistics().disconnects["frame_too_large"] == 2


async def test_line_of_exactly_max_line_is_accepted() -> None:
    async with open_gateway(config(max_line=64)) as gw:
        client = await Client.connect(gw.tcp_address)
        hello = b'{"op":"hello","user":"alice"}'
        await client.send(hello + b" " * (63 - len(hello)) + b"\n")
        assert (await client.recv())["op"] == "welcome"
        await client.close()


async def test_handshake_timeout() -> None:
    # Timeline: connect at 0, send nothing; the sweeper fires the timeout at 0.1 s (+25 %).
    async with open_gateway(config(handshake_timeout=0.1)) as gw:
        client = await Client.connect(gw.tcp_address)
        frame = await client.expect_error_and_close("handshake_timeout")
        assert frame["reason"] == "no hello within 0.1 s"
        assert gw.statistics().connections == 0


async def test_idle_timeout_and_pings_keep_alive() -> None:
    # heartbeat 0.1 s -> idle timeout 0.2 s. Pings every ~0.05 s for 0.4 s keep the
    # connection open (each pong proves it), then silence closes it.
    async with open_gateway(config(heartbeat=0.1)) as gw:
        client = await Client.hello(gw.tcp_address, "alice")
        for _ in range(8):
            await client.roundtrip()
            # Not synchronisation: wall time must pass to show that pings count as liveness.
            await asyncio.sleep(0.05)
        frame = await client.expect_error_and_close("idle_timeout")
        assert frame["reason"] == "no frame for 0.2 s"


async def test_welcome_advertises_heartbeat() -> None:
    async with open_gateway(config(heartbeat=12.5)) as gw:
        client = await Client.connect(gw.tcp_address)
        await client.send({"op": "hello", "user": "a"})
        welcome = await client.recv()
        assert welcome["heartbeat"] == 12.5 and welcome["session"]
        await client.close()


@pytest.mark.parametrize(
    ("hello", "refusal"),
    [
        ({"op": "hello", "user": "alice"}, "missing_token"),
        ({"op": "hello", "token": "garbage"}, "malformed"),
        ({"op": "hello", "token": token(exp=int(time.time()) - 10)}, "expired"),
        ({"op": "hello", "token": token(sub=None)}, "missing_claim"),
        ({"op": "hello", "token": token(exp=None)}, "missing_claim"),
        ({"op": "hello", "token": token(nbf=int(time.time()) + 60)}, "not_yet_valid"),
        (
            {"op": "hello", "token": jwt.encode({"sub": "a", "exp": 2**40}, WRONG_KEY, "HS256")},
            "bad_signature",
        ),
        ({"op": "hello", "token": token(rooms="lobby")}, "bad_claim"),
        (
            {"op": "hello", "token": jwt.encode({"sub": "a", "exp": 2**40}, None, "none")},
            "bad_algorithm",
        ),
    ],
)
async def test_auth_failed(hello: dict[str, object], refusal: str) -> None:
    # The reason starts with the refusal's code, the label it is counted under
    # (docs/operating.md, "Client tokens").
    async with open_gateway(config(jwt_secret=JWT_SECRET)) as gw:
        client = await Client.connect(gw.tcp_address)
        await client.send(hello)
        frame = await client.expect_error_and_close("auth_failed")
        assert frame["reason"].startswith(f"{refusal}: "), frame
        assert gw.statistics().auth_failures == {refusal: 1}


OPERATING_MD = Path(__file__).parents[2] / "docs" / "operating.md"


async def test_the_auth_refusals_sent_are_the_ones_docs_operating_md_shows() -> None:
    # Issue 13: the refusal detail sent to clients and the operator's guide disagreed. The
    # guide's "Client tokens" names every counter label and quotes two reasons as sent.
    section = OPERATING_MD.read_text().split("### Client tokens", 1)[1].split("\n## ", 1)[0]
    section = " ".join(section.split())
    labels = re.search(r"`tidegate_auth_failures_total` \((.*?)\)", section)
    assert labels is not None, section
    documented = set(re.findall(r"`(\w+)`", labels.group(1)))
    assert documented == {refusal.value for refusal in TokenRefusal} | {"missing_token"}
    async with open_gateway(config(jwt_secret=JWT_SECRET)) as gw:
        for hello in (
            {"op": "hello", "token": token(exp=int(time.time()) - 10)},
            {"op": "hello", "user": "alice"},
        ):
            client = await Client.connect(gw.tcp_address)
            await client.send(hello)
            reason = (await client.expect_error_and_close("auth_failed"))["reason"]
            assert f"`{reason}`" in section or f"`` {reason} ``" in section, reason
        assert gw.statistics().auth_failures == {"expired": 1, "missing_token": 1}


async def test_a_connection_ends_when_its_token_expires() -> None:
    async with open_gateway(config(jwt_secret=JWT_SECRET)) as gw:
        client = await Client.connect(gw.tcp_address)
        await client.send({"op": "hello", "token": token(exp=time.time() + 0.3)})
        assert (await client.recv())["op"] == "welcome"
        await client.roundtrip()  # a live connection, until the token runs out
        frame = await client.expect_error_and_close("auth_failed")
        assert frame["reason"] == "token expired"


async def test_token_rooms_claim_forbids_other_rooms() -> None:
    async with open_gateway(config(jwt_secret=JWT_SECRET)) as gw:
        client = await Client.connect(gw.tcp_address)
        await client.send({"op": "hello", "token": token(rooms=["lobby"])})
        assert (await client.recv())["user"] == "alice"
        await client.send({"op": "join", "room": "kitchen"})
        frame = await client.recv()
        assert (frame["op"], frame["code"]) == ("error", "forbidden_room")
        await client.join("lobby")  # the connection stayed open
        assert gw.push("room:lobby", 1).delivered == 1
        assert gw.push("room:kitchen", 1).delivered == 0
        await client.close()


async def test_too_many_rooms_keeps_the_connection() -> None:
    async with open_gateway(config(max_rooms=2)) as gw:
        client = await Client.hello(gw.tcp_address, "alice")
        await client.join("a")
        await client.join("b")
        await client.send({"op": "join", "room": "c"})
        frame = await client.recv()
        assert (frame["op"], frame["code"]) == ("error", "too_many_rooms")
        await client.roundtrip()
        await client.send({"op": "leave", "room": "a"})
        assert await client.recv() == {"op": "left", "room": "a"}
        await client.join("c")
        await client.close()


async def test_too_many_connections_counts_handshakes() -> None:
    async with open_gateway(config(max_conns=2)) as gw:
        first = await Client.hello(gw.tcp_address, "alice")
        second = await Client.connect(gw.tcp_address)  # still in the handshake
        third = await Client.connect(gw.tcp_address)
        await third.expect_error_and_close("too_many_connections")
        await first.roundtrip()
        await first.close()
        await second.send({"op": "hello", "user": "bob"})
        assert (await second.recv())["op"] == "welcome"
        # first's slot is free once the server has seen its FIN.
        await wait_until(lambda: gw.connections() == 1, what="first to be released")
        fourth = await Client.hello(gw.tcp_address, "carol")
        stats = gw.statistics()
        assert stats.connections == 2 and stats.disconnects["too_many_connections"] == 1
        await second.close()
        await fourth.close()


async def test_server_shutdown_is_sent_to_everyone() -> None:
    async with open_gateway(config()) as gw:
        open_client = await Client.hello(gw.tcp_address, "alice")
        handshaking = await Client.connect(gw.tcp_address)
        await handshaking.send(b'{"op":"hel')  # a partial frame does not delay shutdown
        await open_client.roundtrip()
        await gw.close()
        await open_client.expect_error_and_close("server_shutdown")
        await handshaking.expect_error_and_close("server_shutdown")
        assert gw.statistics().connections == 0


async def test_accepting_pauses_above_high_water_and_resumes_below_low_water() -> None:
    # max_conns=2: high-water 3 sockets (2 live + 1 being refused), low-water 1.
    async with open_gateway(config(max_conns=2)) as gw:
        assert (gw.connection_set.high_water, gw.connection_set.low_water) == (3, 1)
        a = await Client.hello(gw.tcp_address, "a")
        b = await Client.hello(gw.tcp_address, "b")
        refused = await Client.connect(gw.tcp_address)
        await refused.expect_error_and_close("too_many_connections")
        assert not gw.accepting
        waiting = await Client.connect(gw.tcp_address)  # completes in the kernel backlog
        await waiting.send({"op": "hello", "user": "w"})
        await wait_until(lambda: gw.statistics().closing == 0, what="refused socket to close")
        assert not gw.accepting and gw.statistics().accepted == 3  # 2 sockets > low-water
        await a.close()
        # 1 socket left = low-water: accepting resumes and the queued hello is answered.
        assert (await waiting.recv())["op"] == "welcome"
        assert gw.accepting and gw.statistics().accepted == 4
        await b.close()
        await waiting.close()
