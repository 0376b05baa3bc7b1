"""The broker's subscription table: reference-counted changes become exact protocol lines,
and every state a subscription can be in is reached the way the server says."""

from __future__ import annotations

from tidegate.gateway.subscriptions import SubscriptionTable, SubState
from tidegate.protocol import Target

ALICE = Target("user", "alice", "user:alice")
LOBBY = Target("room", "lobby", "room:lobby")


def test_changes_become_sub_and_unsub_lines() -> None:
    table = SubscriptionTable(first_sid=100)
    table.want("t.u.alice", ALICE)
    table.want("t.r.lobby", LOBBY)
    assert table.take_changes(0.0) == b"SUB t.u.alice 100\r\nSUB t.r.lobby 101\r\n"
    assert table.take_changes(0.0) == b""
    table.unwant("t.u.alice")
    assert table.take_changes(1.0) == b"UNSUB 100\r\n"
    assert [sub.subject for sub in table] == ["t.r.lobby"]
    assert table.by_sid(100) is None and table.by_sid(101) is not None


def test_the_last_word_within_a_turn_wins() -> None:
    table = SubscriptionTable(first_sid=1)
    table.want("t.r.x", LOBBY)
    table.unwant("t.r.x")
    assert table.take_changes(0.0) == b""  # joined and left before the writer ran
    table.want("t.r.x", LOBBY)
    table.take_changes(0.0)
    table.unwant("t.r.x")
    table.want("t.r.x", LOBBY)
    assert table.take_changes(0.0) == b""  # left and joined again: still subscribed, once
    assert len(table) == 1


def test_pending_until_a_round_trip_confirms_it() -> None:
    table = SubscriptionTable(first_sid=1)
    table.want("t.u.alice", ALICE)
    table.take_changes(5.0)
    assert table.count(SubState.PENDING) == 1 and table.oldest(SubState.PENDING) == 5.0
    sids = table.take_unconfirmed()
    assert sids == [1] and not table.has_unconfirmed()
    table.unconfirm(sids)  # the round trip failed: the next one confirms them
    assert table.has_unconfirmed()
    assert table.confirmed(table.take_unconfirmed(), 6.0) == []
    assert table.count(SubState.LIVE) == 1 and table.oldest(SubState.PENDING) is None


def test_refused_by_sid_then_retried_under_a_new_sid() -> None:
    table = SubscriptionTable(first_sid=7)
    table.want("t.u.alice", ALICE)
    table.take_changes(0.0)
    table.confirmed(table.take_unconfirmed(), 0.0)
    sub = table.refused(7, 1.0)
    assert sub is not None and sub.state is SubState.DEAF and sub.failures == 1
    assert table.refused(99, 1.0) is None  # not ours
    assert table.deaf_events == 1 and table.count(SubState.DEAF) == 1
    assert table.retry_deaf(2.0) == b"UNSUB 7\r\nSUB t.u.alice 8\r\n"
    assert table.by_sid(7) is None and table.by_sid(8) is sub
    assert table.resubscribes == 1
    assert table.confirmed(table.take_unconfirmed(), 3.0) == [(sub, 1)]
    assert sub.failures == 0 and table.count(SubState.LIVE) == 1


def test_a_refusal_naming_only_a_lowercased_subject() -> None:
    table = SubscriptionTable(first_sid=1)
    table.want("t.u.Bob", Target("user", "Bob", "user:Bob"))
    table.want("t.u.bob", Target("user", "bob", "user:bob"))
    table.want("t.u.carol", Target("user", "carol", "user:carol"))
    table.take_changes(0.0)
    refused = table.refused_subject("t.u.bob", 1.0)
    assert sorted(sub.subject for sub in refused) == ["t.u.Bob", "t.u.bob"]
    assert table.count(SubState.DEAF) == 2
    # Only PENDING ones can be the subject of a SUB refusal.
    table.confirmed([3], 1.0)
    assert table.refused_subject("t.u.carol", 2.0) == []


def test_a_silent_probe_deafens_only_the_subscription_it_probed() -> None:
    table = SubscriptionTable(first_sid=1)
    table.want("t.u.alice", ALICE)
    table.take_changes(0.0)
    table.confirmed(table.take_unconfirmed(), 0.0)
    assert table.silent("t.u.alice", 99, 1.0) is None  # probed under an older sid
    sub = table.silent("t.u.alice", 1, 1.0)
    assert sub is not None and sub.state is SubState.DEAF


def test_a_reconnect_resubscribes_everything_with_the_same_sids() -> None:
    table = SubscriptionTable(first_sid=1)
    table.want("t.u.alice", ALICE)
    table.want("t.r.lobby", LOBBY)
    table.take_changes(0.0)
    table.confirmed(table.take_unconfirmed(), 0.0)
    assert table.resubscribe_all(1.0) == b"SUB t.u.alice 1\r\nSUB t.r.lobby 2\r\n"
    assert table.count(SubState.PENDING) == 2
    assert sorted(table.take_unconfirmed()) == [1, 2]


def test_probes_go_round_the_whole_table() -> None:
    table = SubscriptionTable(first_sid=1)
    for n in range(5):
        table.want(f"t.r.{n}", Target("room", str(n), f"room:{n}"))
    table.take_changes(0.0)
    table.confirmed(table.take_unconfirmed(), 0.0)
    table.refused(3, 0.0)  # deaf ones are retried, not probed
    probed = [sub.subject for sub in table.next_to_probe(2)]
    probed += [sub.subject for sub in table.next_to_probe(2)]
    probed += [sub.subject for sub in table.next_to_probe(2)]
    assert probed == ["t.r.0", "t.r.1", "t.r.3", "t.r.4", "t.r.0", "t.r.1"]
    assert SubscriptionTable().next_to_probe(3) == []
