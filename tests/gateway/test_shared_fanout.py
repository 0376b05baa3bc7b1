"""Shared frames (batching.py): room and `all` pushes joined once per loop turn, each connection
handed its share in one write, against in-memory transports (fakes.py).

What must hold, whatever the mix: each connection sees its pushes in the order the gateway
accepted them, unicast, room and `all` interleaved; exactly once; ours + the transport's bytes
never exceed `buffer_bytes`; `delivered` counts the connections that took the push; a flush
that outgrows `fanout_budget` yields and finishes on later turns, order kept.
"""

from __future__ import annotations

import random
from typing import Any

import msgspec
import pytest

from tidegate.gateway.tcp import ClientProtocol
from tidegate.protocol import ErrorCode

from .fakes import BUFFER, FakeTransport, Harness, harness


def messages(transport: FakeTransport) -> list[Any]:
    """The `data` of every msg frame the transport carried, in order."""
    lines = transport.sent().splitlines()
    return [msgspec.json.decode(line)["data"] for line in lines if line.startswith(b'{"op":"msg"')]


def join(client: ClientProtocol, transport: FakeTransport, room: str) -> None:
    client.data_received(b'{"op":"join","room":"%s"}\n' % room.encode())


def leave(client: ClientProtocol, transport: FakeTransport, room: str) -> None:
    client.data_received(b'{"op":"leave","room":"%s"}\n' % room.encode())


def end_turns(h: Harness) -> None:
    """Run loop turns until no work is left (a sliced flush takes several)."""
    for _ in range(1000):
        if not h.turn.callbacks:
            return
        h.turn.end()
    raise AssertionError("the flush never finished")


def test_a_burst_to_everyone_is_one_write_of_the_joined_frames_per_connection() -> None:
    h = harness()
    clients = [h.connect(user) for user in ("alice", "bob", "carol")]
    for n in range(5):
        assert h.push("all", n) == 3
    assert all(transport.writes == [] for _, transport in clients)  # nothing before the end
    h.turn.end()
    for _, transport in clients:
        assert len(transport.writes) == 1
        assert messages(transport) == [0, 1, 2, 3, 4]
    assert h.counters.deliveries == 15


def test_mixed_targets_in_one_turn_keep_each_connection_s_order() -> None:
    h = harness()
    alice, alice_t = h.connect("alice")
    _, bob_t = h.connect("bob")
    carol, carol_t = h.connect("carol")
    for client, transport in ((alice, alice_t), (carol, carol_t)):
        join(client, transport, "r")
    h.turn.end()
    for transport in (alice_t, bob_t, carol_t):
        transport.writes.clear()
    pushes = [("all", 1), ("user:alice", 2), ("room:r", 3), ("all", 4), ("user:bob", 5)]
    pushes += [("room:r", 6), ("user:alice", 7), ("all", 8)]
    for to, n in pushes:
        h.push(to, n)
    h.turn.end()
    assert messages(alice_t) == [1, 2, 3, 4, 6, 7, 8]
    assert messages(bob_t) == [1, 4, 5, 8]
    assert messages(carol_t) == [1, 3, 4, 6, 8]
    # However the frames came, each connection got one write this turn, or two where an
    # own frame settled the shared ones before it and more were shared after it.
    assert len(carol_t.writes) == 1
    assert len(alice_t.writes) <= 2 and len(bob_t.writes) <= 2


def test_a_connection_gets_a_room_s_pushes_from_its_join_to_its_leave() -> None:
    h = harness()
    alice, alice_t = h.connect("alice")
    bob, bob_t = h.connect("bob")
    join(bob, bob_t, "r")
    h.turn.end()
    assert h.push("room:r", "before alice joined") == 1
    join(alice, alice_t, "r")  # same turn: the push above is not hers
    assert h.push("room:r", "both") == 2
    leave(bob, bob_t, "r")  # same turn: what he was sent is still his
    assert h.push("room:r", "after bob left") == 1
    h.turn.end()
    assert messages(alice_t) == ["both", "after bob left"]
    assert messages(bob_t) == ["before alice joined", "both"]
    # bob's "left" reply follows the frames pushed to him while he was a member.
    assert bob_t.sent().endswith(b'{"op":"left","room":"r"}\n')


def fill_to_the_bound(h: Harness, user: str) -> tuple[ClientProtocol, FakeTransport]:
    """A connection holding exactly `buffer_bytes` of its own frames, its transport paused
    (100 bytes in it, 1000 more in the kernel, 3900 queued)."""
    client, transport = h.connect(user)
    frame = b"f" * 99 + b"\n"
    for _ in range(11):
        assert client.send_frame(frame)
    h.turn.end()
    assert transport.paused
    for _ in range(39):
        assert client.send_frame(frame)
    h.turn.end()
    assert client.buffered() == BUFFER
    return client, transport


@pytest.mark.parametrize("policy", ["disconnect", "drop-oldest", "drop-newest"])
def test_a_congested_member_takes_a_shared_push_under_its_policy(policy: str) -> None:
    h = harness(overflow=policy)
    _, clear_t = h.connect("clear")
    stuck, stuck_t = fill_to_the_bound(h, "stuck")
    delivered = h.push("all", "x")
    h.turn.end()
    assert messages(clear_t) == ["x"]  # the clear connection is not held back
    if policy == "disconnect":
        assert delivered == 1
        assert stuck_t.ended and h.counters.disconnects == {"slow_consumer": 1}
        assert b'"code":"slow_consumer"' in stuck_t.writes[-1]
    elif policy == "drop-newest":
        assert delivered == 1 and h.counters.drops == {"drop-newest": 1}
        assert stuck.buffered() == BUFFER
        stuck_t.drain()
        assert messages(stuck_t) == []
    else:
        assert delivered == 2 and h.counters.drops == {"drop-oldest": 1}
        assert stuck.buffered() <= BUFFER
        stuck_t.drain()
        assert messages(stuck_t) == ["x"]  # the newest is kept
    assert h.counters.deliveries == delivered


def test_a_connection_paused_by_its_share_takes_later_frames_one_by_one() -> None:
    h = harness(overflow="drop-newest")
    client, transport = h.connect()
    payload = "p" * 150  # ~200-byte frames: 8 of them pass the high-water mark of 1000
    for n in range(8):
        assert h.push("all", [n, payload]) == 1
    h.turn.end()
    assert transport.paused and len(transport.writes) == 1
    for n in range(8, 30):  # per frame now, against the bound: some are refused
        h.push("all", [n, payload])
        assert client.buffered() <= BUFFER
        h.turn.end()
    refused = h.counters.drops["drop-newest"]
    assert refused > 0
    transport.drain()
    end_turns(h)
    got = [n for n, _ in messages(transport)]
    assert got == list(range(30 - refused))  # in order, the newest refused
    assert h.counters.deliveries == 30 - refused


def test_a_closing_connection_writes_its_pending_shared_frames_before_the_error() -> None:
    h = harness()
    client, transport = h.connect()
    h.push("all", "last words")
    client.close(ErrorCode.SERVER_SHUTDOWN, "bye")
    assert messages(transport) == ["last words"]
    assert transport.sent().endswith(b'"code":"server_shutdown","reason":"bye"}\n')
    h.turn.end()
    assert messages(transport) == ["last words"]  # once


def test_a_frame_over_the_shared_bound_goes_to_each_connection_on_its_own() -> None:
    h = harness()
    client, transport = h.connect()
    big = "b" * (BUFFER * 3 // 4 + 100)  # more than all shared frames may hold together
    assert h.push("all", big) == 1
    assert messages(transport) == [big]  # written through at once, as an own frame
    assert transport.paused and client.buffered() <= BUFFER


def test_shared_frames_past_the_shared_bound_are_flushed_before_more_are_taken() -> None:
    h = harness()
    client, transport = h.connect()
    payload = "p" * 250  # ~300-byte frames: the shared bound (3000 bytes) holds ten
    for n in range(11):
        h.push("all", [n, payload])
    assert [n for n, _ in messages(transport)] == list(range(10))  # drained for the 11th
    assert transport.paused and client.buffered() <= BUFFER  # the 11th waits in its queue
    transport.drain()
    assert [n for n, _ in messages(transport)] == list(range(11))


def test_a_flush_past_its_budget_yields_and_finishes_later_in_order() -> None:
    # Each look at the clock costs 0.6 s of a 1 s budget: a turn hands out two slices.
    h = harness(fanout_budget=1.0)
    clients = [h.connect(f"u{n}") for n in range(300)]
    h.work_clock.step = 0.6
    h.push("all", "A")
    h.turn.end()
    assert h.counters.fanout_yields == 1
    reached = [client for client, transport in clients if transport.writes]
    waiting = [client for client, transport in clients if not transport.writes]
    assert len(reached) == 256 and len(waiting) == 44
    # Before the flush resumes: unicasts to a connection still waiting and to one already
    # reached, and a new push.
    unicast = {waiting[0], reached[0]}
    for client in unicast:
        h.push(f"user:{client.core.user}", "B")  # type: ignore[union-attr]
    h.push("all", "C")
    end_turns(h)
    assert h.counters.fanout_yields >= 2
    for client, transport in clients:
        expected = ["A", "B", "C"] if client in unicast else ["A", "C"]
        assert messages(transport) == expected


def test_a_flush_of_big_frames_looks_at_the_clock_every_256_kib() -> None:
    # 128 writes of a turn's big frames between two looks at the clock (a 1000-item batch
    # joined, ~90 KB per member) ran a 20 ms budget over by its own length again.
    h = harness(fanout_budget=1.0, buffer_bytes=4 * 1024 * 1024)
    clients = [h.connect(f"u{n}") for n in range(10)]
    h.work_clock.step = 0.6
    big = "x" * 100_000  # two members' worth per 256 KiB
    h.push("all", big)
    h.turn.end()
    assert h.counters.fanout_yields == 1
    assert sum(bool(transport.writes) for _, transport in clients) == 4  # 2 per look
    end_turns(h)
    assert all(messages(transport) == [big] for _, transport in clients)


def test_pushes_behind_a_flush_under_way_leave_together_in_one_write() -> None:
    # 1300 connections, two slices (256 connections) a turn: the first push takes six turns
    # to reach everyone. What is pushed meanwhile, over four turns, waits in one epoch.
    h = harness(fanout_budget=1.0)
    clients = [h.connect(f"u{n}") for n in range(1300)]
    for client, transport in clients[::2]:
        join(client, transport, "even")
    h.turn.end()
    for _, transport in clients:
        transport.writes.clear()
    h.work_clock.step = 0.6
    h.push("all", "A")
    h.turn.end()
    reached = next(client for client, transport in clients if transport.writes)
    h.push("all", "B")
    h.push(f"user:{reached.core.user}", "U")  # type: ignore[union-attr]
    h.turn.end()
    h.push("room:even", "C")
    h.turn.end()
    h.push("all", "D")
    end_turns(h)
    for n, (client, transport) in enumerate(clients):
        later = ["C", "D"] if n % 2 == 0 else ["D"]
        if client is reached:
            assert messages(transport) == ["A", "B", "U", *later]
        else:
            assert messages(transport) == ["A", "B", *later]
            assert len(transport.writes) == 2


def test_a_sliced_flush_of_mixed_targets_keeps_every_connection_s_order() -> None:
    h = harness(fanout_budget=1.0)
    clients = [h.connect(f"u{n}") for n in range(300)]
    for client, transport in clients[::2]:
        join(client, transport, "even")
    h.turn.end()
    h.work_clock.step = 0.6
    # 270 connections with two own frames each (the second is queued: the flush of own
    # queues is sliced too), and three shared groups interleaved in one turn.
    for client, _ in clients[:270]:
        h.push(f"user:{client.core.user}", "own-1")  # type: ignore[union-attr]
        h.push(f"user:{client.core.user}", "own-2")  # type: ignore[union-attr]
    h.push("all", "A")
    h.push("room:even", "B")
    h.push("all", "C")
    h.turn.end()
    assert h.counters.fanout_yields == 1
    h.push("room:even", "D")
    end_turns(h)
    assert h.counters.fanout_yields >= 2
    for n, (_, transport) in enumerate(clients):
        expected = ["own-1", "own-2"] if n < 270 else []
        expected += ["A", "B", "C", "D"] if n % 2 == 0 else ["A", "C"]
        assert messages(transport) == expected, n


def test_push_latency_of_a_sliced_flush_ends_when_its_last_slice_is_written() -> None:
    h = harness(fanout_budget=1.0)
    for n in range(300):
        h.connect(f"u{n}")
    h.latencies.clear()
    h.work_clock.step = 0.6
    h.push("all", "A")
    h.turn.end()
    assert h.latencies == []  # not all written yet
    end_turns(h)
    assert len(h.latencies) == 1


@pytest.mark.parametrize(("connections", "steps"), [(12, 3000), (400, 300)])
@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("policy", ["drop-oldest", "drop-newest"])
def test_random_mixes_deliver_exactly_once_in_order_within_the_bound(
    policy: str, seed: int, connections: int, steps: int
) -> None:
    """Random pushes to users, rooms and everyone, joins and leaves, slow and fast readers,
    turns that end, a slow machine now and then (with 400 connections, flushes that yield
    halfway): every connection receives a subsequence of what was pushed to it, in push
    order, without duplicates, and a fast reader all of it; every frame a push counted as
    delivered is received or counted as dropped; the bound holds at every step."""
    rng = random.Random(seed)
    h = harness(overflow=policy, fanout_budget=1.0)
    users = [f"u{n}" for n in range(connections)]
    rooms = ["r0", "r1", "r2"]
    conns = {user: h.connect(user) for user in users}
    member: dict[str, set[str]] = {user: set() for user in users}
    expected: dict[str, list[int]] = {user: [] for user in users}
    slow = set(rng.sample(users, 3))
    delivered = 0
    for n in range(steps):
        action = rng.random()
        if action < 0.55:
            kind = rng.choice(["all", "room", "user"])
            if kind == "all":
                to, targets = "all", users
            elif kind == "room":
                room = rng.choice(rooms)
                to, targets = f"room:{room}", [u for u in users if room in member[u]]
            else:
                user = rng.choice(users)
                to, targets = f"user:{user}", [user]
            delivered += h.push(to, [n, "x" * rng.randrange(10, 400)])
            for user in targets:
                expected[user].append(n)
        elif action < 0.65:
            user, room = rng.choice(users), rng.choice(rooms)
            client, transport = conns[user]
            if room in member[user]:
                leave(client, transport, room)
                member[user].discard(room)
            else:
                join(client, transport, room)
                member[user].add(room)
        elif action < 0.9:
            h.work_clock.step = 0.6 if rng.random() < 0.2 else 0.0
            h.turn.end()
        elif rng.random() < 0.2:
            for user in slow:
                conns[user][1].drain()
        for user, (client, transport) in conns.items():
            assert client.buffered() <= BUFFER
            if user not in slow:
                transport.drain()  # a fast reader takes what it is sent at once
    for _, transport in conns.values():
        transport.drain()
    h.work_clock.step = 0.0
    end_turns(h)
    received = 0
    for user, (_, transport) in conns.items():
        got = [data[0] for data in messages(transport)]
        assert len(got) == len(set(got)), user
        positions = {n: i for i, n in enumerate(expected[user])}
        indexes = [positions[n] for n in got]  # KeyError: a frame it should not have had
        assert indexes == sorted(indexes), user
        received += len(got)
        if user not in slow:
            assert got == expected[user], user
    dropped = h.counters.drops.get(policy, 0)
    if connections == 12:
        assert dropped > 0  # the slow readers did overflow (with 400, not always)
    if policy == "drop-oldest":
        # Frames evicted after they were taken; `drops` also counts evicted join/leave
        # replies and new frames that did not fit even then.
        assert received <= delivered <= received + dropped
    else:
        assert delivered == received  # a refused frame is never counted as delivered
    assert h.counters.deliveries == delivered


# -- producers that can wait (an HTTP batch): `behind` and `when_caught_up` ----------------


def test_a_producer_waits_while_shared_frames_pass_half_their_bound() -> None:
    h = harness()
    h.connect()
    woken: list[str] = []
    pushed = 0
    while not h.turns.behind():
        h.push("all", "p" * 100)  # ~150-byte frames; half the shared bound is 1500 bytes
        pushed += 1
    assert pushed == 11
    h.turns.when_caught_up(lambda: woken.append("caught up"))
    assert woken == []
    h.turn.end()  # the flush writes them all
    assert woken == ["caught up"] and not h.turns.behind()


def test_a_producer_waits_once_this_turn_s_pushes_had_their_budget() -> None:
    h = harness(fanout_budget=1.0)
    h.connect()
    woken: list[str] = []
    h.push("all", "a")
    assert not h.turns.behind()
    h.work_clock.now += 1.0  # pushing took the whole budget
    assert h.turns.behind()
    h.turns.when_caught_up(lambda: woken.append("next turn"))
    h.turn.end()
    assert woken == ["next turn"] and not h.turns.behind()


def test_a_producer_behind_a_sliced_flush_waits_for_its_last_slice() -> None:
    h = harness(fanout_budget=1.0)
    clients = [h.connect(f"u{n}") for n in range(300)]
    woken: list[int] = []
    for n in range(11):
        h.push("all", [n, "p" * 100])
    assert h.turns.behind()
    start = h.turns.turn
    h.turns.when_caught_up(lambda: woken.append(h.turns.turn - start))
    h.work_clock.step = 0.6  # two slices a turn
    h.turn.end()
    assert h.counters.fanout_yields == 1 and woken == []
    end_turns(h)
    assert woken == [2]  # woken by the turn that wrote the last slice
    for _, transport in clients:
        assert [n for n, _ in messages(transport)] == list(range(11))


def test_closing_the_batcher_releases_a_producer_waiting_for_it() -> None:
    h = harness()
    h.connect()
    woken: list[str] = []
    while not h.turns.behind():
        h.push("all", "p" * 100)
    h.turns.when_caught_up(lambda: woken.append("released"))
    h.turns.close()  # the gateway shuts down: its flush will never run
    assert woken == ["released"] and h.turn.callbacks == []
    h.turns.when_caught_up(lambda: woken.append("at once"))
    assert woken == ["released", "at once"]
