"""`tidegate load` end to end, at small scale: against `tidegate serve` with every fault kind
and every credential (NO LEAK, nothing lost, vanished clients reaped), against the leaky
example (LEAK, the report names the blocked worker), and its errors (exit 2, one line).

The gateway runs with a 1 s heartbeat, so its idle timeout (2 s) reaps vanished clients
inside a short run, while healthy clients (pinging every 0.5 s) have room for a slow loop.
"""

from __future__ import annotations

import json
import os
import signal
import socket
from pathlib import Path

import pytest

from tidegate.cli import main
from tidegate.load import gateway_load
from tidegate.load.display import Display
from tidegate.load.fleet import Fleet
from tidegate.load.gateway_load import GatewayLoad, Reaping
from tidegate.load.pushers import HTTP_IN_FLIGHT
from tidegate.load.verdict import Report

from .servers import leaky_gateway, seeded_gateway, serve

SECRET, API_KEY, JWT_SECRET, ADMIN_TOKEN = "udp-secret", "push-key", "j" * 32, "admin-token"


def load(gw: dict[str, str], options: str, *paths: Path) -> int:
    """`tidegate load` at `gw`'s client, UDP and admin ports, with `options` (split on
    spaces) and then `paths` (--json, --png values), plain progress."""
    ports = ["--tcp", gw["tcp"], "--udp", gw["udp"], "--admin", gw["admin"]]
    return main(["load", *ports, *options.split(), *map(str, paths), "--plain"])


@pytest.mark.timeout(120)
def test_no_leak_against_tidegate_serve_with_every_fault(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "r.json"
    credentials = (
        f"--secret {SECRET} --api-key {API_KEY} --jwt-secret {JWT_SECRET}"
        f" --admin-token {ADMIN_TOKEN}"
    )
    # A vanished client is cut 2 + 4 + 2 x 0.5 = 7 s after it went silent: a drain window
    # that left out the 4 s close linger would close before that, with a LEAK.
    with serve("--heartbeat", "1", "--close-linger", "4", *credentials.split()) as gw:
        status = load(
            gw,
            f"--http {gw['http']} {credentials} --clients 40 --rooms 4 --rate 150 --duration 2"
            " --faults reset=10,halfclose=10,vanish=10,stall=10,churn=10 --processes 2"
            " --drain 2 --json",
            report,
        )
    out = capsys.readouterr().out
    assert status == 0, out
    document = json.loads(report.read_text())
    assert document["verdict"] == "NO LEAK"
    assert document["sent"] == 300
    assert document["lost"] == 0 and document["duplicates"] == 0 and document["wrong_target"] == 0
    assert document["delivered"] > 0 and document["clients"]["healthy"] == 20
    assert document["clients"]["cut"] == {}
    faults = document["clients"]["faults"]
    assert faults["vanish"] == {"clients": 4, "ended_by_server:idle_timeout": 4}
    assert faults["halfclose"] == {"clients": 4, "closed_by_server": 4}
    assert faults["reset"] == {"clients": 4}
    assert faults["stall"]["clients"] == 4
    assert faults["churn"]["reconnects"] > 0 and "failed_reconnects" not in faults["churn"]
    for gauge in ("tasks", "threads", "fds", "connections"):
        assert document[gauge]["after"] <= document[gauge]["before"], gauge
    assert document["connections"]["peak"] >= 40
    # Pushes alternate over the two ingresses; the gateway's own counters agree.
    assert document["gateway"]["accepted"] == {"udp": 150, "http": 150}
    assert document["gateway"]["refused"] == {}
    assert document["latency_ms"]["p50"] > 0
    # `tidegate serve` (on uvloop) answers /debug/tasks/leaked: after every fault, nothing
    # it holds is proven blocked forever.
    assert (document["proven"]["before"], document["proven"]["after"]) == (0, 0)
    assert "4 vanished clients (silent, no FIN): the gateway must cut them 7s after" in out
    assert "idle timeout 2s + close linger 4s + 2 sweeps of 0.5s, published by the gateway" in out
    assert document["settings"]["close_linger"] == 4
    assert "NO LEAK: back at the baseline" in out


@pytest.mark.timeout(120)
def test_leak_against_the_leaky_example(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report, plot = tmp_path / "r.json", tmp_path / "r.png"
    with leaky_gateway("--heartbeat", "1") as gw:
        options = "--clients 10 --rate 20 --duration 1.5 --mix user=1,all=1 --drain 1"
        status = load(gw, f"{options} --png {plot} --json", report)
    out = capsys.readouterr().out
    assert status == 1, out
    document = json.loads(report.read_text())
    assert document["verdict"] == "LEAK"
    assert document["lost"] == 0
    leaked = document["grew"][0]
    broadcasts = document["tasks"]["after"] - document["tasks"]["before"]
    assert broadcasts > 0 and leaked["after"] - leaked["before"] == broadcasts
    assert leaked["stack"][0].endswith("examples/leaks/incident.py:60 in broadcast_worker")
    assert leaked["created_by"].startswith("handle_broadcast_leaky at ")
    assert "LEAK: still above the baseline" in out
    assert "in broadcast_worker" in out and "await done.send(outcome)" in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The leaked workers are held by the example's registry of detached tasks (a module
    # global that could still cancel them): the count diff sees them, the proof cannot.
    assert document["proven"]["after"] == 0 and document["proven"]["groups"] == []
    assert "proven blocked forever (/debug/tasks/leaked, no baseline needed): 0 tasks" in out


@pytest.mark.timeout(120)
def test_proven_leaks_are_reported_beside_the_count_diff(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Tasks blocked forever since before the baseline: invisible to the count diff (NO
    LEAK), listed by the proof with their stack, before and after the load."""
    report = tmp_path / "r.json"
    with seeded_gateway("--heartbeat", "1", "--orphans", "3") as gw:
        options = "--clients 10 --rate 20 --duration 1 --mix user=1,all=1 --drain 1"
        status = load(gw, f"{options} --json", report)
    out = capsys.readouterr().out
    assert status == 0, out
    document = json.loads(report.read_text())
    assert document["verdict"] == "NO LEAK" and document["grew"] == []
    proven = document["proven"]
    assert (proven["before"], proven["after"]) == (3, 3)
    assert proven["proof"].startswith("proof ")
    (group,) = proven["groups"]
    assert (group["kind"], group["count"], group["state"]) == ("task", 3, "Future, proven")
    assert group["stack"][0].endswith("in await_a_private_future")
    assert "tests/load/seeded_gateway.py:" in group["stack"][0]
    assert group["created_by"].startswith("serve at ")
    assert document["target"]["leaked_url"].endswith("/debug/tasks/leaked")
    assert (
        "proven blocked forever (/debug/tasks/leaked, no baseline needed): 3 tasks"
        " (3 before the load)" in out
    )
    assert "3 tasks [Future, proven]" in out and "in await_a_private_future" in out


@pytest.mark.timeout(60)
def test_pushes_the_gateway_refused_are_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "r.json"
    with serve("--secret", SECRET) as gw:
        options = "--secret not-the-secret --clients 5 --rate 40 --duration 0.5 --drain 2"
        status = load(gw, f"{options} --json", report)
    out = capsys.readouterr().out
    document = json.loads(report.read_text())
    assert status == 0  # nothing leaked; everything was lost, and the report says why
    assert document["delivered"] == 0 and document["lost"] > 0
    assert document["gateway"] == {
        "accepted": {},
        "refused": {"bad_signature": 20},
        "push_errors": {},
    }
    assert "the gateway refused pushes at ingress: bad_signature 20" in out


def test_reaping_time_from_the_published_settings_or_assumed() -> None:
    published = {"idle_timeout": 6.0, "close_linger": 1.5, "sweep_interval": 0.25}
    reaping = Reaping.of(published, heartbeat=3.0, idle_timeout=None)
    assert (reaping.seconds, reaping.published) == (8.0, True)
    # The user's --idle-timeout wins over the published one.
    assert Reaping.of(published, heartbeat=3.0, idle_timeout=10.0).seconds == 12.0
    # A gateway that publishes nothing: 2 x its heartbeat, tidegate's default linger, the
    # slowest sweep; and the note says so.
    assumed = Reaping.of({}, heartbeat=3.0, idle_timeout=None)
    assert (assumed.idle_timeout, assumed.close_linger, assumed.sweep_interval) == (6, 2, 0.5)
    assert assumed.describe().endswith("assumed: not published")


def test_clients_the_gateway_turns_away_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with serve("--max-conns", "3") as gw:
        status = load(gw, "--clients 8")
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1, err
    assert err.startswith("tidegate load: client ") and "too_many_connections" in err


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_admin_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    address = f"127.0.0.1:{port}"
    status = main(["load", "--tcp", address, "--udp", address, "--admin", address, "--plain"])
    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1
    assert err.startswith(f"tidegate load: no answer from the admin port at {address} (")


def test_unreachable_client_port_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    closed = f"127.0.0.1:{free_port()}"
    with serve() as gw:
        status = main(
            ["load", "--tcp", closed, "--udp", gw["udp"], "--admin", gw["admin"], "--plain"]
        )
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1
    assert err.startswith(f"tidegate load: no answer from the client port at {closed} (")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tcp", "h:1", "--admin", "h:2"], "give --udp or --http: where the pushes go"),
        (["--udp", "h:1"], "give --tcp (the client port) and --admin"),
        (
            ["--tcp", "h:1", "--admin", "h:2", "--udp", "h:3", "--faults", "boom=1"],
            "--faults: 'boom=1'",
        ),
        (["--tcp", "h:1", "--admin", "h:2", "--udp", "h:3", "--clients", "0"], "--clients must be"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["load", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"tidegate load: {message}")


def test_bad_option_value_exits_2_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["load", "--tcp", "nowhere", "--admin", "h:2", "--udp", "h:3"])
    assert exited.value.code == 2
    assert "argument --tcp: expected HOST:PORT, got 'nowhere'" in capsys.readouterr().err


def test_admin_at_a_port_that_is_not_http_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with serve() as gw:
        ports = ["--tcp", gw["tcp"], "--udp", gw["udp"], "--admin", gw["tcp"]]
        status = main(["load", *ports, "--plain"])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1, err
    assert err.startswith(f"tidegate load: the admin port at {gw['tcp']} is not an HTTP server (")


@pytest.mark.parametrize("flag", ["--json", "--png"])
def test_an_output_file_that_cannot_be_written_is_refused_before_the_run(
    flag: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Nothing listens at these addresses: the refusal comes before the first connection.
    address = f"127.0.0.1:{free_port()}"
    ports = ["--tcp", address, "--udp", address, "--admin", address]
    missing = tmp_path / "no-such-folder" / "r.out"
    assert main(["load", *ports, flag, str(missing)]) == 2
    err = capsys.readouterr().err
    assert err == f"tidegate load: {flag} {missing}: no such directory: {missing.parent}\n"
    assert main(["load", *ports, flag, str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"tidegate load: {flag} {tmp_path}: is a directory\n"


@pytest.mark.timeout(60)
def test_a_client_process_that_dies_stops_the_run_at_once(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    start_load = Fleet.load

    async def load_then_kill_one(fleet: Fleet) -> None:
        await start_load(fleet)
        os.kill(fleet.pids[1], signal.SIGKILL)

    monkeypatch.setattr(Fleet, "load", load_then_kill_one)
    with serve() as gw:
        # A load of 10 minutes: only the dead process can end this run inside the timeout.
        status = load(gw, "--clients 10 --processes 2 --rate 10 --duration 600 --drain 1")
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1, err
    assert err == "tidegate load: client process 1 ended: killed by SIGKILL\n"


def test_an_unexpected_error_exits_3_with_its_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async def broken(settings: GatewayLoad, display: Display) -> Report:
        raise ValueError("a bug in the tool")

    monkeypatch.setattr(gateway_load, "run_gateway_load", broken)
    address = f"127.0.0.1:{free_port()}"
    status = main(["load", "--tcp", address, "--udp", address, "--admin", address, "--plain"])
    err = capsys.readouterr().err
    assert status == 3
    assert "Traceback (most recent call last)" in err and "ValueError: a bug in the tool" in err
    assert err.endswith("tidegate load: unexpected error, a bug: its traceback is above\n")


@pytest.mark.timeout(60)
def test_an_http_ingress_that_never_answers_bounds_the_pushes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "r.json"
    # Listening, never accepting: the kernel completes the handshakes and keeps the requests.
    with socket.create_server(("127.0.0.1", 0), backlog=256) as silent, serve() as gw:
        http = f"127.0.0.1:{silent.getsockname()[1]}"
        ports = ["--tcp", gw["tcp"], "--http", http, "--admin", gw["admin"]]
        options = "--clients 5 --rate 400 --duration 1 --drain 1 --plain --json"
        status = main(["load", *ports, *options.split(), str(report)])
    out = capsys.readouterr().out
    assert status == 0, out
    document = json.loads(report.read_text())
    # Every slot taken by a push that is never answered: the pacer waited, then gave up.
    assert (document["sent"], document["planned"]) == (HTTP_IN_FLIGHT, 400)
    assert document["gateway"]["push_errors"] == {"http_timeout": HTTP_IN_FLIGHT}
    assert f"pushes: {HTTP_IN_FLIGHT} of the 400 planned left in the 1s load" in out
