"""tidegate.leaks on real projects' test suites: plain pytest vs ``pytest --leaks``, side by side.

For each project below: its source at a pinned version (checked against a pinned sha256), a
venv of its own with the project, the test tools its suite needs (pinned) and this checkout's
``tidegate-leaks`` (editable, so a change to the detector needs no reinstall), then chosen test
files run twice, plain and with ``--leaks``. The table shows failures and wall time of each run
and the ratio; tests that fail only with ``--leaks`` are listed, and each run's whole output is
kept in the cache for reading the leak reports. Goal (issue 9): no more failures than plain,
at most 1.1x the plain time.

Sources: the PyPI sdist where it carries the suite. websockets' sdists ship only its sans-I/O
tests, so its source is Debian's source package, which is upstream's release tarball with the
asyncio and threading suites (fetched with ``apt-get source``, hash checked the same way).

Everything lives under ``.cache/realworld`` (not committed; delete it to start over). Runs are
bounded: chosen files, a per-test timeout, and a timeout per run. Time comparisons mean
something only on a quiet machine: run it under the exclusive lock.

Run: ``make realworld`` or ``python -m bench.realworld [--only NAME ...] [--mode plain|leaks]``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "realworld"


@dataclass(frozen=True)
class Project:
    name: str  # the distribution, as pip and the table call it
    version: str
    sha256: str  # of the source archive
    python: str  # the minor version its suite runs on here
    requires: tuple[str, ...]  # test tools, pinned; the project itself is added
    files: tuple[str, ...]  # test files (or node ids) to run, relative to the source root
    args: tuple[str, ...] = ()
    source: str = "pypi"  # or "debian:<source package>=<debian version>"
    timeout: float = 900.0  # seconds for one run
    # Without a pytest config of its own, pytest would take this repository's (an ancestor of
    # the cache): such a project gets an empty one.
    has_pytest_config: bool = True
    env: dict[str, str] = field(default_factory=dict)
    # A test in the suite's own style that leaks on purpose (a task or thread named
    # "tidegate-canary"): run with --leaks after the comparison, it proves the check was on in
    # this suite's runner and catches what it should.
    canary: str = ""

    @property
    def key(self) -> str:
        return f"{self.name}-{self.version}"


PROJECTS = (
    Project(
        name="aiohttp",
        version="3.14.5",
        sha256="5558a7f5a05af9ecf744af91e5baefc436f93c9333e656c27ec253f9a6bbe178",
        python="3.11",
        # As upstream's requirements/test.txt pins them, less coverage, mypy and docker.
        requires=(
            "pytest==9.0.3",
            "pytest-mock==3.15.1",
            "pytest-timeout==2.4.0",
            "pytest-xdist==3.8.0",
            "freezegun==1.5.5",
            "trustme==1.2.1",
            "blockbuster==1.5.26",
            "coverage==7.14.1",  # named by a filterwarnings entry of its pytest.ini
            "proxy.py==2.4.10",
            "isal==1.8.0",
            "zlib-ng==1.0.0",
            "uvloop==0.22.1",
        ),
        # The aiohttp_client / aiohttp_server fixture pattern, and the client's connector.
        files=(
            "tests/test_web_functional.py",
            "tests/test_client_functional.py",
            "tests/test_client_ws_functional.py",
            "tests/test_web_server.py",
            "tests/test_connector.py",
        ),
        args=("-m", "not dev_mode and not autobahn and not internal"),
        canary="""
import asyncio
from aiohttp import web

async def test_canary(aiohttp_client):
    await aiohttp_client(web.Application())
    asyncio.create_task(asyncio.Event().wait(), name="tidegate-canary")
""",
    ),
    Project(
        name="anyio",
        version="4.16.0",
        sha256="59bb03251907983d1603d27c3087ddb1e93299ea2163adcdba37899a4fb12ffb",
        # 3.12 for the eager task factory (anyio's "asyncio+eager" backend).
        python="3.12",
        requires=(
            "pytest==9.0.3",
            "pytest-mock==3.15.1",
            "pytest-timeout==2.4.0",
            "trio==0.32.0",
            "hypothesis==6.170.27",
            "psutil==7.2.2",
            "trustme==1.2.1",
            "truststore==0.10.5",
            "uvloop==0.22.1",
            "blockbuster==1.5.29",
        ),
        # asyncio, asyncio+uvloop, asyncio+eager and trio backends, threads and task groups.
        files=(
            "tests/test_taskgroups.py",
            "tests/test_to_thread.py",
            "tests/test_from_thread.py",
            "tests/test_synchronization.py",
            "tests/test_lowlevel.py",
            "tests/test_debugging.py",
        ),
        # A thread, so that every backend (trio too) has something to catch.
        canary="""
import threading
import pytest

never = threading.Event()

@pytest.mark.anyio
async def test_canary(anyio_backend_name):
    threading.Thread(target=never.wait, name="tidegate-canary", daemon=True).start()
    if anyio_backend_name == "asyncio":  # asyncio, +uvloop, +eager: a task too
        import asyncio
        asyncio.create_task(asyncio.Event().wait(), name="tidegate-canary-task")
""",
    ),
    Project(
        name="websockets",
        version="15.0.1",
        sha256="8451495265af3e368f794c4dc15c99ce90c771d95560f542bff8c64b5455af3b",
        python="3.11",
        source="debian:python-websockets=15.0.1-1",
        has_pytest_config=False,
        requires=("pytest==9.0.3", "pytest-timeout==2.4.0", "werkzeug==3.1.9"),
        # unittest suites: IsolatedAsyncioTestCase (asyncio) and threads (sync).
        files=(
            "tests/asyncio/test_connection.py",
            "tests/asyncio/test_client.py",
            "tests/asyncio/test_server.py",
            "tests/sync/test_connection.py",
            "tests/sync/test_client.py",
            "tests/sync/test_server.py",
        ),
        canary="""
import asyncio
import unittest

class Canary(unittest.IsolatedAsyncioTestCase):
    async def test_canary(self):
        asyncio.create_task(asyncio.Event().wait(), name="tidegate-canary")
""",
    ),
    Project(
        name="async-lru",
        version="2.4.0",
        sha256="b0b0077d9b7596615b3c12d0aad4f6aeccaaa0ac75ceae472608ede89e764c08",
        python="3.11",
        requires=("pytest==9.0.3", "pytest-asyncio==1.3.0", "pytest-timeout==2.4.0"),
        files=("tests",),
        args=("-o", "asyncio_mode=auto"),
        canary="""
import asyncio

async def test_canary():
    asyncio.create_task(asyncio.Event().wait(), name="tidegate-canary")
""",
    ),
)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- fetching and installing ---------------------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _run_quiet(args: list[str], **options: object) -> None:
    done = subprocess.run(args, capture_output=True, text=True, **options)  # type: ignore[call-overload]
    if done.returncode != 0:
        raise SystemExit(f"failed: {' '.join(args)}\n{done.stdout}\n{done.stderr}")


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def fetch_pypi(project: Project, into: Path) -> Path:
    """The sdist, through pip: ``--no-binary`` and a hash-pinned requirement."""
    pins = into / f"{project.key}.txt"
    pins.write_text(f"{project.name}=={project.version} --hash=sha256:{project.sha256}\n")
    download = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"]
    _run_quiet(
        [*download, "--no-binary", ":all:", "--require-hashes", "-r", str(pins), "-d", str(into)]
    )
    wanted = f"{_normalized(project.name)}-{project.version}.tar.gz"
    for path in into.glob("*.tar.gz"):
        name, _, rest = path.name.rpartition(f"-{project.version}")
        if f"{_normalized(name)}-{project.version}{rest}" == wanted:
            return path
    raise SystemExit(f"pip downloaded no sdist of {project.key}")


def _debian_sources_list(apt_dir: Path) -> Path:
    """A deb-src list for the newer Debian suite, on the mirror this machine's apt uses."""
    uri = signed_by = None
    for path in [Path("/etc/apt/sources.list.d/debian.sources")]:
        if path.exists():
            for line in path.read_text().splitlines():
                key, _, value = line.partition(":")
                if key.strip() == "URIs" and uri is None:
                    uri = value.split()[0]
                if key.strip() == "Signed-By" and signed_by is None:
                    signed_by = value.strip()
    if uri is None and Path("/etc/apt/sources.list").exists():
        for line in Path("/etc/apt/sources.list").read_text().splitlines():
            parts = line.split()
            if parts[:1] == ["deb"]:
                uri = next(part for part in parts[1:] if "://" in part)
                break
    if uri is None:
        raise SystemExit("no Debian mirror found in /etc/apt: websockets' suite is skipped")
    options = f" [signed-by={signed_by}]" if signed_by else ""
    listing = apt_dir / "sources.list"
    # trixie: the suite whose source package carries the version pinned here.
    listing.write_text(f"deb-src{options} {uri} trixie main\n")
    return listing


def fetch_debian(project: Project, into: Path) -> Path:
    package, _, debian_version = project.source.removeprefix("debian:").partition("=")
    upstream = debian_version.rsplit("-", 1)[0]
    target = into / f"{package}_{upstream}.orig.tar.gz"
    if target.exists():
        return target
    if shutil.which("apt-get") is None:
        raise SystemExit(f"{project.key}: its suite comes from Debian's sources; no apt-get here")
    apt_dir = into / "apt"
    for sub in ("lists/partial", "cache/archives/partial"):
        (apt_dir / sub).mkdir(parents=True, exist_ok=True)
    # apt with a state of its own: the machine's sources and lists stay as they are.
    options = [
        f"-oDir::Etc::SourceList={_debian_sources_list(apt_dir)}",
        "-oDir::Etc::SourceParts=/dev/null",
        f"-oDir::State::Lists={apt_dir / 'lists'}",
        f"-oDir::Cache={apt_dir / 'cache'}",
        "-oDebug::NoLocking=1",
        "-qq",
    ]
    _run_quiet(["apt-get", *options, "update"])
    _run_quiet(
        ["apt-get", *options, "source", "--download-only", "--tar-only", project.source[7:]],
        cwd=into,
    )
    return target


def source_tree(project: Project) -> Path:
    tree = CACHE / "src" / project.key
    if (tree / ".unpacked").exists():
        return tree
    downloads = CACHE / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    log(f"{project.key}: fetching the source")
    if project.source == "pypi":
        archive = fetch_pypi(project, downloads)
    else:
        archive = fetch_debian(project, downloads)
    if _sha256(archive) != project.sha256:
        archive.unlink()
        raise SystemExit(f"{archive.name}: sha256 differs from the pinned one")
    shutil.rmtree(tree, ignore_errors=True)
    tree.mkdir(parents=True)
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
        top = members[0].name.split("/")[0]
        for member in members:
            member.name = member.name.removeprefix(top).lstrip("/")
        tar.extractall(tree, [m for m in members if m.name], filter="data")
    (tree / ".unpacked").touch()
    return tree


def find_python(minor: str) -> str | None:
    """An interpreter of this minor version: pyenv's, or one on PATH."""
    pyenv = Path.home() / ".pyenv" / "versions"
    candidates = sorted(pyenv.glob(f"{minor}.*/bin/python"), reverse=True) if pyenv.is_dir() else []
    on_path = shutil.which(f"python{minor}")
    for python in [*map(str, candidates), *([on_path] if on_path else [])]:
        done = subprocess.run(
            [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
        )
        if done.returncode == 0 and done.stdout.strip() == minor:
            return python
    return None


def venv_for(project: Project) -> Path | None:
    env = CACHE / "venv" / f"{project.key}-py{project.python}"
    wanted = "\n".join([f"{project.name}=={project.version}", *project.requires]) + "\n"
    stamp = env / ".requirements"
    if stamp.exists() and stamp.read_text() == wanted:
        return env
    python = find_python(project.python)
    if python is None:
        log(f"{project.key}: needs Python {project.python}, none found: skipped")
        return None
    log(f"{project.key}: installing its test requirements (Python {project.python})")
    shutil.rmtree(env, ignore_errors=True)
    _run_quiet([python, "-m", "venv", str(env)])
    pip = [str(env / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    _run_quiet([*pip, "--upgrade", "pip"])
    _run_quiet([*pip, f"{project.name}=={project.version}", *project.requires])
    _run_quiet([*pip, "--no-deps", "-e", str(ROOT / "leaks")])
    stamp.write_text(wanted)
    return env


# --- running -------------------------------------------------------------------------------


@dataclass
class Outcome:
    mode: str
    seconds: float
    tests: int
    failed: set[str]
    skipped: int
    timed_out: bool
    returncode: int
    output: Path


def _junit_results(path: Path) -> tuple[int, set[str], int]:
    if not path.exists():
        return 0, set(), 0
    tests, failed, skipped = 0, set(), 0
    for case in ET.parse(path).getroot().iter("testcase"):
        tests += 1
        name = f"{case.get('classname')}::{case.get('name')}"
        if case.find("failure") is not None or case.find("error") is not None:
            failed.add(name)
        elif case.find("skipped") is not None:
            skipped += 1
    return tests, failed, skipped


def _empty_config() -> Path:
    path = CACHE / "empty-pytest.ini"
    path.write_text("[pytest]\n")
    return path


def run_suite(
    project: Project, env: Path, tree: Path, mode: str, extra: list[str], label: str = ""
) -> Outcome:
    out_dir = CACHE / "runs" / project.key
    out_dir.mkdir(parents=True, exist_ok=True)
    junit = out_dir / f"{label or mode}.xml"
    output = out_dir / f"{label or mode}.log"
    junit.unlink(missing_ok=True)
    # The pytest script, not `python -m pytest`: the source root must not shadow the
    # installed project on sys.path.
    args = [
        str(env / "bin" / "pytest"),
        *project.files,
        # The project's own addopts bring coverage, xdist and doctests: not what is compared.
        "-o",
        "addopts=",
        "-p",
        "no:cacheprovider",
        "-q",
        "--timeout=60",
        f"--junitxml={junit}",
        *project.args,
        *([] if project.has_pytest_config else ["-c", str(_empty_config()), f"--rootdir={tree}"]),
        *(["--leaks"] if mode == "leaks" else []),
        *extra,
    ]
    environment = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
    environment.update(project.env)
    start = time.monotonic()
    timed_out = False
    with output.open("w") as log_file:
        log_file.write(" ".join(args) + "\n\n")
        log_file.flush()
        process = subprocess.Popen(
            args,
            cwd=tree,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=environment,
            start_new_session=True,
        )
        try:
            returncode = process.wait(timeout=project.timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(process.pid, signal.SIGKILL)
            returncode = process.wait()
    seconds = time.monotonic() - start
    tests, failed, skipped = _junit_results(junit)
    return Outcome(mode, seconds, tests, failed, skipped, timed_out, returncode, output)


def canary_caught(project: Project, env: Path, tree: Path) -> bool | None:
    """Whether --leaks reports the project's canary leak, run the suite's own way."""
    if not project.canary:
        return None
    path = tree / "tests" / "test_tidegate_canary.py"
    path.write_text(project.canary.lstrip())
    try:
        canary = replace(project, files=(str(path.relative_to(tree)),), args=(), timeout=120)
        done = run_suite(canary, env, tree, "leaks", ["-o", "leaks_timeout=0.1"], "canary")
    finally:
        path.unlink()
    return done.returncode != 0 and "tidegate-canary" in done.output.read_text()


# --- the table -----------------------------------------------------------------------------


def _cell(outcome: Outcome | None) -> str:
    if outcome is None:
        return f"{'-':>6} {'-':>8}"
    time_text = f"{outcome.seconds:7.1f}s" + ("!" if outcome.timed_out else "")
    return f"{len(outcome.failed):6d} {time_text:>8}"


Row = tuple[Project, int, "Outcome | None", "Outcome | None", "bool | None"]


def report(rows: list[Row]) -> bool:
    print()
    head = f"{'project':22s} {'tests':>6} | {'plain':>6} {'':>8} | {'--leaks':>6} {'':>8} |"
    print(f"{head} ratio  | canary")
    print(f"{'':22s} {'':>6} | {'failed':>6} {'time':>8} | {'failed':>6} {'time':>8} |")
    ok = True
    for project, tests, plain, leaks, caught in rows:
        ratio = leaks.seconds / plain.seconds if plain and leaks and plain.seconds else None
        ratio_text = f"{ratio:5.2f}x" if ratio is not None else "    - "
        canary = {None: "-", True: "caught", False: "MISSED"}[caught]
        line = f"{project.key:22s} {tests:6d} | {_cell(plain)} | {_cell(leaks)} | {ratio_text}"
        print(f"{line} | {canary}")
        if plain and leaks:
            ok &= len(leaks.failed) <= len(plain.failed) and not leaks.timed_out
            ok &= ratio is not None and ratio <= 1.1
        ok &= caught is not False
    print("(times: the best of the repeats; ! = a run hit its time limit)")
    for project, _, plain, leaks, _ in rows:
        if leaks is None:
            continue
        only = sorted(leaks.failed - (plain.failed if plain else set()))
        if only:
            print(f"\n{project.key}: {len(only)} failing only with --leaks (log: {leaks.output})")
            for name in only[:15]:
                print(f"  {name}")
            if len(only) > 15:
                print(f"  ... and {len(only) - 15} more")
        fixed = sorted((plain.failed if plain else set()) - leaks.failed)
        if plain and fixed:
            print(f"{project.key}: {len(fixed)} failing only without --leaks (flaky?)")
    return ok


def _best(runs: list[Outcome]) -> Outcome:
    """The fastest of repeated runs, carrying every test that failed in any of them."""
    best = min(runs, key=lambda outcome: outcome.seconds)
    failed = set().union(*(outcome.failed for outcome in runs))
    return replace(best, failed=failed, timed_out=any(o.timed_out for o in runs))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", help="run only these projects (by name)")
    parser.add_argument("--mode", choices=["plain", "leaks"], help="run only one of the two")
    parser.add_argument(
        "--repeat", type=int, default=1, help="run each mode N times, alternating; keep the best"
    )
    parser.add_argument("--no-canary", action="store_true", help="skip the canary runs")
    parser.add_argument("pytest_args", nargs="*", help="passed to both runs, e.g. -k NAME")
    args = parser.parse_args(argv)
    chosen = [p for p in PROJECTS if not args.only or p.name in args.only]
    if args.only and len(chosen) != len(args.only):
        raise SystemExit(f"unknown project in {args.only}; known: {[p.name for p in PROJECTS]}")
    rows: list[Row] = []
    for project in chosen:
        env = venv_for(project)
        if env is None:
            continue
        tree = source_tree(project)
        runs: dict[str, list[Outcome]] = {}
        for attempt in range(args.repeat):
            for mode in ("plain", "leaks"):
                if args.mode not in (None, mode):
                    continue
                log(f"{project.key}: {len(project.files)} test files, {mode}, run {attempt + 1}")
                done = run_suite(project, env, tree, mode, args.pytest_args)
                runs.setdefault(mode, []).append(done)
                log(
                    f"  {done.tests} tests, {len(done.failed)} failed, {done.skipped} skipped, "
                    f"{done.seconds:.1f}s" + (" (time limit hit)" if done.timed_out else "")
                )
        outcomes = {mode: _best(found) for mode, found in runs.items()}
        caught = None if args.no_canary else canary_caught(project, env, tree)
        tests = max((o.tests for o in outcomes.values()), default=0)
        rows.append((project, tests, outcomes.get("plain"), outcomes.get("leaks"), caught))
    ok = report(rows)
    print(
        "\ngoal met"
        if ok
        else "\ngoal NOT met: more failures, a time limit hit, > 1.1x, or a canary missed"
    )


if __name__ == "__main__":
    main()
