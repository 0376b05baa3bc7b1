"""The plan: faults dealt by share, rooms, push targets, and the expected deliveries."""

from __future__ import annotations

from collections import Counter

import pytest

from tidegate.load.fleet import FD_RESERVE, processes_for
from tidegate.load.plan import ClientSpec, PushLog, PushPicker, plan_clients, split

FAULTS = {"reset": 5, "halfclose": 5, "vanish": 5, "stall": 2, "churn": 10}


def test_faults_strike_their_share_inside_the_load() -> None:
    specs = plan_clients(200, rooms=10, faults=FAULTS, duration=10, run="r", seed=1)
    counts = Counter(spec.fault for spec in specs)
    assert counts == {
        None: 146,
        "reset": 10,
        "halfclose": 10,
        "vanish": 10,
        "stall": 4,
        "churn": 20,
    }
    assert all(2.0 <= s.fault_at <= 8.0 for s in specs if s.fault)
    assert all(s.fault_at == 0.0 for s in specs if s.fault is None)
    assert len({s.user for s in specs}) == 200


def test_same_seed_same_plan() -> None:
    one = plan_clients(50, rooms=4, faults=FAULTS, duration=5, run="r", seed=7)
    assert one == plan_clients(50, rooms=4, faults=FAULTS, duration=5, run="r", seed=7)
    assert one != plan_clients(50, rooms=4, faults=FAULTS, duration=5, run="r", seed=8)


def test_rooms_one_or_two_per_client() -> None:
    specs = plan_clients(30, rooms=3, faults={}, duration=1, run="r", seed=0)
    assert all(1 <= len(s.rooms) <= 2 for s in specs)
    assert {room for s in specs for room in s.rooms} == {"r-room-0", "r-room-1", "r-room-2"}
    assert all(
        s.rooms == () for s in plan_clients(3, rooms=0, faults={}, duration=1, run="r", seed=0)
    )


def test_split_deals_round_robin() -> None:
    specs = plan_clients(10, rooms=2, faults={}, duration=1, run="r", seed=0)
    parts = split(specs, 3)
    assert [[s.index for s in part] for part in parts] == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    assert len(split(specs[:2], 3)) == 2  # no empty process


def test_spec_json_round_trip_and_wants() -> None:
    spec = ClientSpec(3, "r-u3", ("r-room-1",), "stall", 1.5)
    assert ClientSpec.from_json(spec.to_json()) == spec
    assert spec.wants("user:r-u3") and spec.wants("room:r-room-1") and spec.wants("all")
    assert not spec.wants("user:r-u30") and not spec.wants("room:r-room-10")


def test_push_log_counts_what_each_client_expects() -> None:
    a = ClientSpec(0, "a", ("x", "y"), None, 0)
    b = ClientSpec(1, "b", ("y",), None, 0)
    log = PushLog([(0, "user:a"), (1, "room:x"), (2, "room:y"), (3, "all"), (4, "user:c")])
    assert (log.expected(a), log.expected(b)) == (4, 2)


def test_picker_follows_the_mix() -> None:
    specs = plan_clients(20, rooms=4, faults={}, duration=1, run="r", seed=0)
    picker = PushPicker(specs, 4, {"user": 60, "room": 30, "all": 10}, run="r", seed=0)
    kinds = Counter(next(picker).partition(":")[0] for _ in range(10_000))
    assert 5700 < kinds["user"] < 6300 and 2700 < kinds["room"] < 3300 and 800 < kinds["all"] < 1200
    with pytest.raises(ValueError, match="nothing to push to"):
        PushPicker(specs, 0, {"room": 1}, run="r", seed=0)


def test_client_processes_by_the_open_file_limit() -> None:
    per_process = 20_000 - FD_RESERVE
    assert processes_for(1, 20_000) == 1
    assert processes_for(per_process, 20_000) == 1
    assert processes_for(per_process + 1, 20_000) == 2
    assert processes_for(50_000, 20_000) == 3
    assert processes_for(10, 100) == 10  # a tiny limit: one client each, never zero processes
