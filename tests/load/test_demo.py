"""`tidegate demo incident`, reduced: two short runs against each server, bounded in time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tidegate.cli import main


@pytest.mark.timeout(90)
def test_demo_shows_the_climb_and_the_flat_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png, report = tmp_path / "incident.png", tmp_path / "incident.json"
    options = "--runs 2 --duration 1 --clients 12 --rate 30 --drain 0.5 --plain"
    status = main(["demo", "incident", *options.split(), "--png", str(png), "--json", str(report)])
    out = capsys.readouterr().out
    assert status == 0, out
    document = json.loads(report.read_text())
    leaky = [run["tasks"] for run in document["leaky"]["runs"]]
    fixed = [run["tasks"] for run in document["tidegate"]["runs"]]
    assert [run["verdict"] for run in document["leaky"]["runs"]] == ["LEAK", "LEAK"]
    assert [run["verdict"] for run in document["tidegate"]["runs"]] == ["NO LEAK", "NO LEAK"]
    # Climbing run after run: the second run starts where the first ended, and ends higher.
    assert leaky[0]["before"] < leaky[0]["after"] <= leaky[1]["before"] < leaky[1]["after"]
    assert all(run["after"] <= run["before"] for run in fixed)
    assert "in broadcast_worker" in out and "await done.send(outcome)" in out
    assert "created by handle_broadcast_leaky at " in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_output_file_that_cannot_be_written_is_refused_before_the_demo(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "no-such-folder" / "incident.json"
    assert main(["demo", "incident", "--json", str(missing), "--plain"]) == 2
    err = capsys.readouterr().err
    assert err == f"tidegate demo incident: --json {missing}: no such directory: {missing.parent}\n"
