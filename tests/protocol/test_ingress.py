from __future__ import annotations

import hashlib
import hmac
import tracemalloc

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidegate.protocol import (
    BadPush,
    DatagramVerifier,
    Rejected,
    RejectReason,
    Target,
    parse_push,
    parse_target,
    sign,
    split_batch,
)
from tidegate.protocol.ingress import ReplayCache

SECRET = b"s3cret"
NOW = 1_700_000_000.0


def body(**fields: object) -> bytes:
    return msgspec.json.encode({"to": "user:alice", "data": {"n": 1}, **fields})


@pytest.mark.parametrize(
    ("to", "target"),
    [
        ("all", Target("all", "", "all")),
        ("user:alice", Target("user", "alice", "user:alice")),
        ("room:a:b", Target("room", "a:b", "room:a:b")),
    ],
)
def test_targets(to: str, target: Target) -> None:
    assert parse_target(to) == target


@pytest.mark.parametrize("to", ["", "ALL", "user:", "group:x", "alice", "room"])
def test_unknown_targets(to: str) -> None:
    with pytest.raises(BadPush) as info:
        parse_target(to)
    assert info.value.code is RejectReason.BAD_TARGET


def test_push_keeps_raw_data() -> None:
    push, target = parse_push(b'{"to":"all","data":[1, {"a": null}],"id":"x","ts":5}')
    assert bytes(push.data) == b'[1, {"a": null}]'
    assert (push.id, push.ts, target.kind) == ("x", 5.0, "all")


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{", RejectReason.BAD_JSON),
        (b"[]", RejectReason.BAD_BODY),
        (b'{"to":"all"}', RejectReason.BAD_BODY),
        (b'{"to":"all","data":1,"id":""}', RejectReason.BAD_BODY),
        (b'{"to":"all","data":1,"ts":"now"}', RejectReason.BAD_BODY),
        (b'{"to":"nobody","data":1}', RejectReason.BAD_TARGET),
        (b'{"to":"all","data":' + b"[" * 20_000 + b"]" * 20_000 + b"}", RejectReason.BAD_JSON),
    ],
)
def test_bad_bodies(raw: bytes, reason: RejectReason) -> None:
    with pytest.raises(BadPush) as info:
        parse_push(raw)
    assert info.value.code is reason


# Bytes that are not UTF-8 inside what msgspec skips over (`data`, unknown fields): a stray
# byte, an overlong "/", a UTF-16 surrogate, a truncated sequence, a code point past U+10FFFF.
NOT_UTF8 = (b"\xff\xfe", b"\xc0\xaf", b"\xed\xa0\x80", b"\xe2\x82", b"\xf4\x90\x80\x80")


@pytest.mark.parametrize("bad", NOT_UTF8)
@pytest.mark.parametrize(
    "template",
    [
        b'{"to":"all","data":"%s"}',
        b'{"to":"all","data":{"k%s":1}}',
        b'{"to":"all","data":1,"extra":"%s"}',
        b'{"to":"all","data":"ok"} %s',
    ],
)
def test_bodies_that_are_not_utf8_are_bad_json(template: bytes, bad: bytes) -> None:
    raw = template % bad
    with pytest.raises(BadPush) as info:
        parse_push(raw)
    assert info.value.code is RejectReason.BAD_JSON
    with pytest.raises(BadPush) as info:
        parse_push(memoryview(b"x" + raw)[1:])  # a datagram's body is a view
    assert info.value.code is RejectReason.BAD_JSON


def test_utf8_beyond_ascii_is_kept_byte_for_byte() -> None:
    data = '"caf\u00e9 \u2603 \U0001f30a"'.encode()
    push, _ = parse_push(b'{"to":"all","data":' + data + b"}")
    assert bytes(push.data) == data


def test_signed_datagram_that_is_not_utf8_is_bad_json() -> None:
    v = DatagramVerifier(secret=SECRET)
    raw = b'{"to":"all","data":"\xff","id":"u","ts":%d}' % NOW
    assert verify(v, sign(SECRET, raw)) is RejectReason.BAD_JSON
    assert verify(DatagramVerifier(secret=None), raw) is RejectReason.BAD_JSON


def test_split_batch_keeps_each_item_encoded() -> None:
    items = split_batch(b' \n[{"to":"all","data":1}, 7, {"to":"room:x","data":[ 2 ]}]')
    assert items is not None
    assert [bytes(item) for item in items] == [
        b'{"to":"all","data":1}',
        b"7",
        b'{"to":"room:x","data":[ 2 ]}',
    ]


@pytest.mark.parametrize("raw", [b'{"to":"all","data":1}', b"nonsense", b"", b'"["'])
def test_split_batch_leaves_non_arrays_to_parse_push(raw: bytes) -> None:
    assert split_batch(raw) is None


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"[", RejectReason.BAD_JSON),
        (b"[1,]", RejectReason.BAD_JSON),
        (b" [ ]", RejectReason.BAD_BODY),
        (b"[" + b"[" * 20_000 + b"]" * 20_000 + b"]", RejectReason.BAD_JSON),
    ],
)
def test_split_batch_rejects_broken_or_empty_arrays(raw: bytes, reason: RejectReason) -> None:
    with pytest.raises(BadPush) as info:
        split_batch(raw)
    assert info.value.code is reason


def test_sign_is_hex_hmac_space_body() -> None:
    payload = body(id="1", ts=NOW)
    digest = hmac.new(SECRET, payload, hashlib.sha256).hexdigest()
    assert sign(SECRET, payload) == digest.encode() + b" " + payload


def verify(verifier: DatagramVerifier, datagram: bytes, now: float = NOW) -> RejectReason | None:
    try:
        verifier.verify(datagram, now)
    except Rejected as exc:
        return exc.code
    return None


def test_signed_datagrams() -> None:
    v = DatagramVerifier(secret=SECRET)
    good = sign(SECRET, body(id="1", ts=NOW))
    assert verify(v, good) is None
    assert verify(v, good) is RejectReason.REPLAY
    upper = sign(SECRET, body(id="2", ts=NOW))
    assert verify(v, upper[:64].upper() + upper[64:]) is None
    assert verify(v, body(id="3", ts=NOW)) is RejectReason.MISSING_SIGNATURE
    assert verify(v, b"ab " + body(id="3", ts=NOW)) is RejectReason.MISSING_SIGNATURE
    assert verify(v, sign(b"other", body(id="3", ts=NOW))) is RejectReason.BAD_SIGNATURE
    tampered = sign(SECRET, body(id="3", ts=NOW)).replace(b'"n":1', b'"n":2')
    assert verify(v, tampered) is RejectReason.BAD_SIGNATURE
    assert verify(v, sign(SECRET, body(ts=NOW))) is RejectReason.BAD_BODY
    assert verify(v, sign(SECRET, body(id="4"))) is RejectReason.BAD_BODY
    assert verify(v, sign(SECRET, b"{nope")) is RejectReason.BAD_JSON
    assert verify(v, sign(SECRET, body(id="5", ts=NOW, to="x"))) is RejectReason.BAD_TARGET


def test_window_is_plus_minus_30_seconds() -> None:
    v = DatagramVerifier(secret=SECRET)
    assert verify(v, sign(SECRET, body(id="a", ts=NOW - 30))) is None
    assert verify(v, sign(SECRET, body(id="b", ts=NOW + 30))) is None
    assert verify(v, sign(SECRET, body(id="c", ts=NOW - 30.5))) is RejectReason.STALE
    assert verify(v, sign(SECRET, body(id="d", ts=NOW + 31))) is RejectReason.STALE


def test_replay_memory_is_pruned_by_time() -> None:
    v = DatagramVerifier(secret=SECRET, replay_bytes=2 * ReplayCache.cost("a"))
    first = sign(SECRET, body(id="a", ts=NOW))
    assert verify(v, first) is None
    assert verify(v, sign(SECRET, body(id="b", ts=NOW))) is None
    # Full of ids that could still be replayed: refuse rather than forget one.
    assert verify(v, sign(SECRET, body(id="c", ts=NOW))) is RejectReason.REPLAY_CACHE_FULL
    later = NOW + 31
    assert verify(v, first, now=later) is RejectReason.STALE
    assert verify(v, sign(SECRET, body(id="a", ts=later)), now=later) is None


def test_an_id_is_refused_for_a_window_after_it_was_accepted_whatever_its_ts() -> None:
    v = DatagramVerifier(secret=SECRET)
    assert verify(v, sign(SECRET, body(id="reuse", ts=NOW - 29.5))) is None
    # The first datagram goes stale in half a second, but the id was seen only 1 s ago.
    again = sign(SECRET, body(id="reuse", ts=NOW + 1))
    assert verify(v, again, now=NOW + 1) is RejectReason.REPLAY
    assert verify(v, again, now=NOW + 29) is RejectReason.REPLAY
    assert verify(v, again, now=NOW + 30.5) is None  # a window after it was accepted


def test_a_push_delivered_nowhere_may_be_sent_again() -> None:
    datagram = sign(SECRET, body(id="refused", ts=NOW))
    v = DatagramVerifier(secret=SECRET, replay_bytes=2 * ReplayCache.cost("refused"))
    push, _ = v.verify(datagram, NOW)
    assert verify(v, datagram) is RejectReason.REPLAY
    v.forget(push)  # the broker was away: nothing was delivered
    assert verify(v, datagram) is None  # taken again, once
    assert verify(v, datagram) is RejectReason.REPLAY
    v.forget(push)
    # Forgotten ids still count until they expire: forgetting cannot outgrow the cache.
    assert verify(v, datagram) is RejectReason.REPLAY_CACHE_FULL
    later = NOW + 31
    fresh = sign(SECRET, body(id="refused", ts=later))
    assert verify(v, fresh, now=later) is None
    assert v.replays.size == ReplayCache.cost("refused")


def test_unsigned_verifier_takes_plain_bodies() -> None:
    v = DatagramVerifier(secret=None)
    assert verify(v, body()) is None
    assert verify(v, body()) is None  # no id, no replay check
    assert verify(v, b"{") is RejectReason.BAD_JSON


@given(st.lists(st.tuples(st.text(max_size=3), st.floats(0, 100)), max_size=60))
def test_replay_cache_stays_bounded(entries: list[tuple[str, float]]) -> None:
    cache = ReplayCache(max_bytes=10 * ReplayCache.cost("abc"))
    now = 0.0
    for id, ttl in entries:
        now += 1
        cache.add(id, now + ttl, now)
        assert cache.size <= cache.max_bytes
        assert cache.size == sum(ReplayCache.cost(id) for id in cache._expiry)


@given(st.binary(max_size=200))
def test_fuzz_verifier_only_rejects(datagram: bytes) -> None:
    for secret in (SECRET, None):
        v = DatagramVerifier(secret=secret)
        verify(v, datagram)
        verify(v, sign(SECRET, datagram))


@pytest.mark.parametrize(
    ("id", "accepted"),
    [
        ("x" * 128, True),
        ("x" * 129, False),
        ("€" * 42, True),  # 126 bytes
        ("€" * 43, False),  # 129 bytes in 43 characters
        ("😀" * 32, True),  # 128 bytes
        ("😀" * 32 + "x", False),
    ],
)
def test_ids_over_128_bytes_are_bad_id(id: str, accepted: bool) -> None:
    raw = msgspec.json.encode({"to": "all", "data": 1, "id": id})
    if accepted:
        assert parse_push(raw)[0].id == id
    else:
        with pytest.raises(BadPush) as info:
            parse_push(raw)
        assert info.value.code is RejectReason.BAD_ID
        assert info.value.detail == "`id` longer than 128 bytes"


def test_replay_cache_is_bounded_in_bytes() -> None:
    one = ReplayCache.cost("a")
    cache = ReplayCache(max_bytes=3 * one)
    assert cache.add("a", 10.0, 0.0) and cache.add("b", 10.0, 0.0) and cache.add("c", 10.0, 0.0)
    assert cache.size == 3 * one
    assert not cache.add("d", 10.0, 0.0)  # full of ids that can still be replayed
    assert not cache.add("a" * 100, 20.0, 0.0)
    assert cache.add("d", 20.0, 11.0)  # the first three expired
    assert (len(cache), cache.size) == (1, one)


@pytest.mark.parametrize("id_length", [1, 36, 128])
def test_replay_cache_size_is_an_upper_bound_of_its_memory(id_length: int) -> None:
    # The ids are made inside the measurement, as the decoder makes them for the cache.
    cache = ReplayCache(max_bytes=1 << 40)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(1, 30_001):
            cache.add(f"{n:0{id_length}d}", float(n), 0.0)
            if n % 5000 == 0:
                held = tracemalloc.get_traced_memory()[0] - before
                assert held <= cache.size, (n, held, cache.size)
    finally:
        tracemalloc.stop()
    # And not wildly above it either: the count is meant as the real cost.
    assert cache.size < 2 * held
