"""Client tokens: every refusal has its code, and time comes from `now`, not the clock."""

from __future__ import annotations

import base64
import json
from typing import Any

import jwt
import pytest

from tidegate.protocol import PeerError
from tidegate.tokens import Claims, TokenRefused, make_token, verify_token

# PyJWT warns about HMAC keys shorter than the hash (64 bytes for HS512), and warnings are errors.
SECRET = "s" * 64
OTHER = "o" * 64
NOW = 1_800_000_000.0


def sign(payload: dict[str, Any], *, key: str = SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(payload, key, algorithm=algorithm)


def reason_of(token: str, *, now: float = NOW) -> str:
    with pytest.raises(TokenRefused) as caught:
        verify_token(token, SECRET, now=now)
    assert isinstance(caught.value, PeerError) and caught.value.detail == str(caught.value)
    return caught.value.code


def test_round_trip() -> None:
    token = make_token("alice", SECRET, 3600, now=NOW)
    assert verify_token(token, SECRET, now=NOW + 10) == Claims("alice", None, NOW + 3600)


def test_expired() -> None:
    token = make_token("alice", SECRET, 60, now=NOW)
    assert verify_token(token, SECRET, now=NOW + 59).user == "alice"
    assert reason_of(token, now=NOW + 60) == "expired"
    # leeway tolerates a little skew
    assert verify_token(token, SECRET, now=NOW + 61, leeway=5).user == "alice"


def test_forged_signature() -> None:
    assert reason_of(sign({"sub": "alice", "exp": NOW + 60}, key=OTHER)) == "bad_signature"
    # tampered payload: a valid token for bob with alice's claims swapped in
    header, _, signature = make_token("bob", SECRET, 60, now=NOW).split(".")
    body = base64.urlsafe_b64encode(json.dumps({"sub": "alice", "exp": NOW + 60}).encode())
    assert reason_of(f"{header}.{body.decode().rstrip('=')}.{signature}") == "bad_signature"


@pytest.mark.parametrize("algorithm", ["HS384", "HS512"])
def test_other_hmac_algorithms_are_refused(algorithm: str) -> None:
    token = sign({"sub": "alice", "exp": NOW + 60}, algorithm=algorithm)
    assert reason_of(token) == "bad_algorithm"


def test_alg_none_is_refused() -> None:
    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    unsigned = f"{part({'alg': 'none', 'typ': 'JWT'})}.{part({'sub': 'alice', 'exp': NOW + 60})}."
    assert reason_of(unsigned) == "bad_algorithm"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({"exp": NOW + 60}, "missing_claim"),
        ({"sub": "alice"}, "missing_claim"),
        ({"sub": "", "exp": NOW + 60}, "bad_claim"),
        ({"sub": 42, "exp": NOW + 60}, "bad_claim"),
        ({"sub": "alice", "exp": "tomorrow"}, "bad_claim"),
        ({"sub": "alice", "exp": NOW + 60, "rooms": "lobby"}, "bad_claim"),
        ({"sub": "alice", "exp": NOW + 60, "rooms": ["lobby", 3]}, "bad_claim"),
    ],
)
def test_claims_are_checked(payload: dict[str, Any], reason: str) -> None:
    assert reason_of(sign(payload)) == reason


def test_nbf_and_iat_in_the_future() -> None:
    assert reason_of(sign({"sub": "a", "exp": NOW + 60, "nbf": NOW + 10})) == "not_yet_valid"
    assert reason_of(sign({"sub": "a", "exp": NOW + 60, "iat": NOW + 10})) == "not_yet_valid"
    token = sign({"sub": "a", "exp": NOW + 60, "nbf": NOW + 10, "iat": NOW})
    assert verify_token(token, SECRET, now=NOW + 10).user == "a"


def test_rooms_claim_limits_rooms() -> None:
    claims = verify_token(
        make_token("alice", SECRET, 60, ["lobby", "ops"], now=NOW), SECRET, now=NOW
    )
    assert claims.rooms == frozenset({"lobby", "ops"})
    assert "lobby" in claims.rooms
    assert "billing" not in claims.rooms
    unlimited = verify_token(make_token("alice", SECRET, 60, now=NOW), SECRET, now=NOW)
    assert unlimited.rooms is None  # any room


@pytest.mark.parametrize("garbage", ["", "not-a-jwt", "a.b.c", "...."])
def test_garbage_is_malformed(garbage: str) -> None:
    assert reason_of(garbage) == "malformed"


def test_make_token_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="user"):
        make_token("", SECRET, 60)
    with pytest.raises(ValueError, match="ttl"):
        make_token("alice", SECRET, 0)
    with pytest.raises(ValueError, match="secret"):
        make_token("alice", "", 60)


def test_default_clock() -> None:
    assert verify_token(make_token("alice", SECRET, 60), SECRET).user == "alice"
