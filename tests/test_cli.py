"""`tidegate token`: a token the gateway accepts, and clear errors for bad arguments."""

from __future__ import annotations

import time

import pytest

from tidegate.cli import main
from tidegate.tokens import verify_token

SECRET = "cli-tests-jwt-secret-0123456789abcdef"


def test_token_prints_a_token_the_gateway_accepts(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["token", "alice", "--ttl", "30m", "--rooms", "lobby,kitchen", "--jwt-secret", SECRET])
        == 0
    )
    token = capsys.readouterr().out.strip()
    claims = verify_token(token, SECRET)
    assert claims.user == "alice"
    assert claims.rooms == frozenset({"lobby", "kitchen"})


def test_token_secret_from_the_environment(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIDEGATE_JWT_SECRET", SECRET)
    assert main(["token", "bob"]) == 0
    claims = verify_token(capsys.readouterr().out.strip(), SECRET)
    assert claims.user == "bob" and claims.rooms is None


@pytest.mark.parametrize(("ttl", "seconds"), [("90", 90), ("1m30s", 90), ("2h", 7200)])
def test_token_lifetime_in_any_duration_form(
    ttl: str, seconds: float, capsys: pytest.CaptureFixture[str]
) -> None:
    before = time.time()
    assert main(["token", "alice", "--ttl", ttl, "--jwt-secret", SECRET]) == 0
    claims = verify_token(capsys.readouterr().out.strip(), SECRET)
    assert before + seconds - 1 <= claims.expires_at <= time.time() + seconds + 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["token", "alice"], "set --jwt-secret or TIDEGATE_JWT_SECRET"),
        (["token", "alice", "--jwt-secret", SECRET, "--ttl", "soon"], "invalid duration 'soon'"),
        (["token", "", "--jwt-secret", SECRET], "user must be a non-empty string"),
    ],
)
def test_token_errors(
    argv: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TIDEGATE_JWT_SECRET", raising=False)
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert message in captured.err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--max-batch", "0"], "--max-batch: max_batch: expected a positive integer, got 0"),
        (["--max-batch", "lots"], "--max-batch: expected an integer, got 'lots'"),
    ],
)
def test_serve_refuses_a_bad_max_batch(
    argv: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TIDEGATE_MAX_BATCH", raising=False)
    monkeypatch.delenv("TIDEGATE_CONFIG", raising=False)
    assert main(["serve", *argv]) == 2  # refused before anything binds
    assert message in capsys.readouterr().err
