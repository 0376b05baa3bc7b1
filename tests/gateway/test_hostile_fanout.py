"""Big fan-outs: a legitimate batch to a big room, a push to everyone in it.

Issue 13, attack 4: a 1000-item batch to a 5k-member room (5M deliveries) held the loop for
2.8 s and other clients' pings for 1.8 s; a push to a 15k room blocked 0.23 s. Scaled down
here (200 items x 300 members), with a `fanout_budget` so small that every flush runs out
of it after its first group of connections: whatever the machine's speed, a flush that is
not sliced shows as no `fanout_yields`, and a slice that loses or reorders frames shows in
what the members read. The fairness benchmark measures the real figures.
"""

from __future__ import annotations

import asyncio
from typing import Any

from tidegate.gateway import open_gateway

from .helpers import UNIT, Client, config, http_session, loop_lag_over, url, wait_until

MEMBERS = 300
ITEMS = 200
LAG_BOUND = 0.25 * UNIT  # seconds; loose on purpose, as in test_hostile_tcp


async def received(client: Client, count: int) -> list[Any]:
    return [(await client.recv())["data"] for _ in range(count)]


async def test_a_big_batch_to_a_big_room_is_sliced_in_order_and_the_others_are_served() -> None:
    cfg = config(http=("127.0.0.1", 0), fanout_budget=1e-6)
    async with open_gateway(cfg) as gw:
        members = [await Client.hello(gw.tcp_address, f"m{n}") for n in range(MEMBERS)]
        try:
            for member in members:
                await member.join("big")
            bystander = await Client.hello(gw.tcp_address, "bystander")
            members.append(bystander)  # closed with the others
            batch = [{"to": "room:big", "data": n} for n in range(ITEMS)]
            async with http_session() as session:

                async def post() -> Any:
                    async with session.post(url(gw.http_address, "/v1/push"), json=batch) as r:
                        assert r.status == 200
                        return await r.json()

                posting = asyncio.create_task(post())
                await wait_until(lambda: gw.statistics().deliveries > 0, what="the fan-out")
                await bystander.roundtrip()
                served_during_the_batch = not posting.done()
                replies = await posting
            assert served_during_the_batch, "the bystander waited for the whole batch"
            assert [reply["delivered"] for reply in replies] == [MEMBERS] * ITEMS
            for member in members[:MEMBERS]:
                assert await received(member, ITEMS) == list(range(ITEMS))
            stats = gw.statistics()
            assert stats.fanout_yields > 0
            assert stats.deliveries == MEMBERS * ITEMS
            assert not stats.drops and not stats.disconnects
            # One push to the whole room is sliced too.
            yields = stats.fanout_yields
            assert gw.push("room:big", "one").delivered == MEMBERS
            for member in members[:MEMBERS]:
                assert await received(member, 1) == ["one"]
            assert gw.statistics().fanout_yields > yields
            assert loop_lag_over(gw, LAG_BOUND) == 0
            await bystander.roundtrip()
        finally:
            for member in members:
                await member.close()
