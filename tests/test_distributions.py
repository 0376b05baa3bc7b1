"""The two distributions, built and installed the way a user gets them.

`tidegate-leaks` is the detector alone: no dependencies, and its own tests pass with only it,
pytest and pytest-asyncio installed. `tidegate` is the gateway: it depends on `tidegate-leaks`
and ships no part of it. Both share the `tidegate` namespace package (PEP 420).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import venv
import zipfile
from email.parser import HeaderParser
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str | Path, cwd: Path | None = None) -> str:
    done = subprocess.run(
        [str(arg) for arg in args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=240,
        # A clean environment: no PYTHONPATH or asyncio debug flag from this suite.
        env={"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp")},
    )
    assert done.returncode == 0, f"{args}\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("wheels")
    for project in (ROOT / "leaks", ROOT):
        _run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", out, project)
    found = {path.name.split("-")[0]: path for path in out.glob("*.whl")}
    assert set(found) == {"tidegate", "tidegate_leaks"}, found
    return found


def _wheel_metadata(wheel: Path) -> tuple[list[str], list[str], str]:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        meta = next(name for name in names if name.endswith(".dist-info/METADATA"))
        headers = HeaderParser().parsestr(archive.read(meta).decode())
        points = next((n for n in names if n.endswith(".dist-info/entry_points.txt")), None)
        entry_points = archive.read(points).decode() if points else ""
    return names, headers.get_all("Requires-Dist") or [], entry_points


@pytest.mark.timeout(300)
def test_detector_wheel_is_the_detector_alone(wheels: dict[str, Path]) -> None:
    names, requires, entry_points = _wheel_metadata(wheels["tidegate_leaks"])
    modules = [name for name in names if not name.startswith("tidegate_leaks-")]
    assert modules and all(name.startswith("tidegate/leaks/") for name in modules), modules
    assert "tidegate/leaks/py.typed" in modules
    assert "tidegate/__init__.py" not in names  # a namespace package: nobody owns it
    assert requires == []
    assert "tidegate_leaks = tidegate.leaks.pytest_plugin" in entry_points


@pytest.mark.timeout(300)
def test_gateway_wheel_depends_on_the_detector_and_ships_none_of_it(
    wheels: dict[str, Path],
) -> None:
    names, requires, entry_points = _wheel_metadata(wheels["tidegate"])
    assert not [name for name in names if name.startswith("tidegate/leaks/")]
    assert "tidegate/__init__.py" not in names
    assert "tidegate/ops/dashboard.html" in names
    assert "tidegate-leaks==0.1.0" in requires
    assert "pytest11" not in entry_points  # the plugin is the detector's
    runtime = [req for req in requires if "extra ==" not in req]
    declared = {re.split(r"[\s;<>=!~\[]", req, maxsplit=1)[0].lower() for req in runtime}
    # What the gateway imports, and nothing it does not. rich draws `tidegate load`'s live
    # display; matplotlib (its PNGs) is the `plot` extra. nats-py is the client of
    # `--broker nats://...` (cluster mode); the nats-server binary that `--workers` starts
    # without a broker URL is the `workers` extra.
    assert declared == {
        "tidegate-leaks",
        "uvloop",
        "aiohttp",
        "prometheus-client",
        "pyjwt",
        "msgspec",
        "rich",
        "nats-py",
    }


@pytest.mark.timeout(300)
def test_detector_alone_installs_nothing_else_and_passes_its_tests(
    wheels: dict[str, Path], tmp_path: Path
) -> None:
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    before = set(_run(python, "-m", "pip", "list", "--format=freeze").split())
    # --no-index: a dependency would have nowhere to come from, so this fails if it has one.
    _run(python, "-m", "pip", "install", "--quiet", "--no-index", wheels["tidegate_leaks"])
    after = set(_run(python, "-m", "pip", "list", "--format=freeze").split())
    assert after - before == {"tidegate-leaks==0.1.0"}
    probe = (
        "import importlib.util as u; from tidegate import leaks; "
        "print(u.find_spec('tidegate.gateway'))"
    )
    assert _run(python, "-c", probe).strip() == "None"

    # Its own tests, with the test tools this suite runs on.
    tools = [
        f"{name}=={metadata.version(name)}"
        for name in ("pytest", "pytest-asyncio", "pytest-timeout")
    ]
    _run(python, "-m", "pip", "install", "--quiet", *tools)
    out = _run(python, "-m", "pytest", "-q", "-p", "no:cacheprovider", cwd=ROOT / "leaks")
    assert " passed" in out and "failed" not in out and "error" not in out, out
