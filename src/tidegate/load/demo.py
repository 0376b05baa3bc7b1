"""``tidegate demo incident``: the incident the project was born from, found by the load tool.

Starts the deliberately leaky server (``examples/leaky_gateway.py``: tidegate's gateway with
the seed's UDP broadcast handler, which gives up after a timeout while its worker later blocks
forever handing back its result), runs the same load against it a few times and shows the
task count climbing run after run and the grouped dump naming the blocked line; then the same
runs against ``tidegate serve``, flat. A side-by-side summary and one PNG with both curves.
Bounded (about 30 s with the defaults); every process it starts is stopped before it returns.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import signal
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

from tidegate.addresses import parse_address
from tidegate.durations import parse_duration

from .display import Display, make_display
from .exits import EXIT_USAGE, Exit, UsageError, check_writable, run_command
from .fleet import FleetError
from .gateway_load import GatewayLoad, run_gateway_load
from .options import argparse_type, parse_count, parse_rate, parse_seconds
from .plot import PlotUnavailable, check_plotting, write_comparison_png
from .probe import ProbeError, Unreachable
from .verdict import LEAK, NO_LEAK, Report, Sample, format_growth

__all__ = ["register_demo"]

LEAKY_MODULE: Final = "examples.leaky_gateway"
START_TIMEOUT: Final = 20.0
STOP_TIMEOUT: Final = 10.0
_LISTENING: Final = re.compile(r"(\w+) listening on (\S+):(\d+)$")


class DemoError(Exception):
    """Why the demo could not run: one line."""


def register_demo(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = commands.add_parser(
        "demo",
        help="replay the incident tidegate was built after, with the load tool",
        description="Demonstrations on this machine's loopback.",
    )
    kinds = demo.add_subparsers(dest="demo", required=True, metavar="DEMO")
    incident = kinds.add_parser(
        "incident",
        help="the leaky broadcast handler vs tidegate serve, under the same load",
        description=__doc__.split("\n\n")[1].replace("\n", " ") if __doc__ else None,
    )
    count, rate = argparse_type(parse_count), argparse_type(parse_rate)
    incident.add_argument(
        "--runs", type=count, default=3, metavar="N", help="load runs per server (default 3)"
    )
    incident.add_argument(
        "--duration",
        type=argparse_type(parse_duration),
        default=3.0,
        metavar="S",
        help="how long each run loads (default 3s)",
    )
    incident.add_argument(
        "--clients", type=count, default=50, metavar="N", help="clients per run (default 50)"
    )
    incident.add_argument(
        "--rate", type=rate, default=40.0, metavar="R", help="pushes per second (default 40)"
    )
    incident.add_argument(
        "--drain",
        type=argparse_type(parse_seconds),
        default=1.0,
        metavar="S",
        help="drain window after each run (default 1s)",
    )
    incident.add_argument(
        "--png",
        type=Path,
        default=Path("incident.png"),
        metavar="FILE",
        help="the chart of both task curves (default incident.png)",
    )
    incident.add_argument("--json", type=Path, metavar="FILE", help="both servers' runs as JSON")
    incident.add_argument("--plain", action="store_true", help="plain progress lines")
    incident.set_defaults(run=_run_incident)


def find_examples() -> Path:
    """The checkout holding ``examples/leaky_gateway.py``: the working directory, or the one
    this package was installed from (an editable install)."""
    here = Path(__file__).resolve()
    for root in (Path.cwd(), *here.parents):
        if (root / "examples" / "leaky_gateway.py").is_file():
            return root
    raise DemoError(
        "the demo runs examples/leaky_gateway.py from a tidegate checkout: run it from one"
    )


@dataclass(frozen=True, slots=True)
class Server:
    tcp: tuple[str, int]
    udp: tuple[str, int]
    admin: tuple[str, int]


@contextlib.asynccontextmanager
async def running(command: Sequence[str], *, cwd: Path, name: str) -> AsyncIterator[Server]:
    """Start a server process, read its ``listening on`` lines, and stop it on exit (SIGTERM,
    then SIGKILL after ``STOP_TIMEOUT``), waiting for it either way."""
    proc = await asyncio.create_subprocess_exec(
        *command,
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        addresses: dict[str, tuple[str, int]] = {}
        assert proc.stdout is not None
        try:
            async with asyncio.timeout(START_TIMEOUT):
                while not {"tcp", "udp", "admin"} <= addresses.keys():
                    line = await proc.stdout.readline()
                    if not line:
                        break
                    if match := _LISTENING.search(line.decode().strip()):
                        addresses[match[1]] = parse_address(f"{match[2]}:{match[3]}")
        except TimeoutError:
            raise DemoError(f"{name} did not start within {START_TIMEOUT:g}s") from None
        if not {"tcp", "udp", "admin"} <= addresses.keys():
            error = await proc.stderr.read() if proc.stderr else b""
            last = error.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise DemoError(f"{name} exited before listening: {last[0]}")
        yield Server(addresses["tcp"], addresses["udp"], addresses["admin"])
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.communicate(), STOP_TIMEOUT)
            except TimeoutError:
                proc.kill()
                await proc.communicate()


@dataclass(slots=True)
class Series:
    label: str
    reports: list[Report]
    samples: list[Sample]  # every run's samples, on one clock


async def _runs(
    label: str, server: Server, settings: GatewayLoad, runs: int, display: Display, clock: Any
) -> Series:
    series = Series(label, [], [])
    began = clock()  # each series on its own clock from 0, so the PNG overlays the two
    for number in range(1, runs + 1):
        display.say(f"{label}: run {number} of {runs}")
        offset = clock() - began
        report = await run_gateway_load(
            replace(settings, tcp=server.tcp, udp=server.udp, admin=server.admin), display
        )
        series.reports.append(report)
        series.samples.extend(replace(s, t=s.t + offset) for s in report.samples)
        display.say(
            f"{label}: run {number}: tasks {report.baseline.tasks} -> {report.final.tasks}"
            f"  {report.verdict}"
        )
    return series


async def incident(args: argparse.Namespace, display: Display) -> tuple[Series, Series]:
    root = find_examples()
    loop = asyncio.get_running_loop()
    start = loop.time()

    def clock() -> float:
        return loop.time() - start

    settings = GatewayLoad(
        tcp=("", 0),
        admin=("", 0),
        udp=("", 0),
        clients=args.clients,
        rooms=5,
        rate=args.rate,
        duration=args.duration,
        faults={"reset": 5, "halfclose": 5, "churn": 5},
        drain=args.drain,
        seed=1,
    )
    python = sys.executable
    ports = ("--tcp", "127.0.0.1:0", "--udp", "127.0.0.1:0", "--admin", "127.0.0.1:0")
    leaky_command = (python, "-m", LEAKY_MODULE, *ports, "--heartbeat", "1")
    async with running(leaky_command, cwd=root, name="the leaky example") as server:
        leaky = await _runs("leaky example", server, settings, args.runs, display, clock)
    serve_command = (
        python,
        "-m",
        "tidegate",
        "serve",
        *ports,
        "--http",
        "off",
        "--heartbeat",
        "1",
        "--log-level",
        "WARNING",
    )
    async with running(serve_command, cwd=root, name="tidegate serve") as server:
        fixed = await _runs("tidegate serve", server, settings, args.runs, display, clock)
    return leaky, fixed


def summary(leaky: Series, fixed: Series) -> str:
    width = 34
    lines = [
        f"{'run':<5}{'leaky example (tasks)':<{width}}{'tidegate serve (tasks)':<{width}}",
    ]
    for number, (a, b) in enumerate(zip(leaky.reports, fixed.reports, strict=True), start=1):
        cells = [f"{r.baseline.tasks} -> {r.final.tasks}  {r.verdict}" for r in (a, b)]
        lines.append(f"{number:<5}{cells[0]:<{width}}{cells[1]:<{width}}")
    first, last = leaky.reports[0], leaky.reports[-1]
    lines.append("")
    lines.append(
        f"leaky example: tasks {first.baseline.tasks} -> {last.final.tasks} over"
        f" {len(leaky.reports)} runs; tidegate serve: "
        f"{fixed.reports[0].baseline.tasks} -> {fixed.reports[-1].final.tasks}"
    )
    grew = last.grew[0] if last.grew else None
    if grew is not None:
        lines.append("")
        lines.append(
            "what grew in the leaky example's last run (its grouped dump, before vs after):"
        )
        lines.append(format_growth(grew))
    return "\n".join(lines)


def _series_json(series: Series) -> dict[str, Any]:
    return {
        "label": series.label,
        "runs": [
            {k: r.to_json()[k] for k in ("verdict", "sent", "delivered", "lost", "tasks", "grew")}
            for r in series.reports
        ],
        "samples": [s.to_json() for s in series.samples],
    }


def _run_incident(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    try:
        if args.runs < 1 or args.clients < 1 or args.duration <= 0 or args.rate <= 0:
            raise DemoError("--runs, --clients, --duration and --rate must be positive")
        for flag, path in (("--json", args.json), ("--png", args.png)):
            if path is not None:
                check_writable(path, flag)
        find_examples()
        check_plotting()
    except (DemoError, UsageError, PlotUnavailable) as exc:
        print(f"tidegate demo incident: {exc}", file=sys.stderr)
        return EXIT_USAGE
    display = make_display(False if args.plain else None)
    try:
        leaky, fixed = run_command(
            "tidegate demo incident",
            incident(args, display),
            display,
            known=(DemoError, Unreachable, ProbeError, FleetError),
        )
    except Exit as exit:
        return exit.status
    display.close()
    print(summary(leaky, fixed))
    try:
        write_comparison_png(
            args.png,
            {
                "leaky example (the incident's handler)": leaky.samples,
                "tidegate serve": fixed.samples,
            },
            title=f"the same load, {len(leaky.reports)} runs against each: live asyncio tasks",
        )
        print(f"plot: {args.png}")
        if args.json is not None:
            document = {"leaky": _series_json(leaky), "tidegate": _series_json(fixed)}
            args.json.write_text(json.dumps(document, indent=1) + "\n")
            print(f"report: {args.json}")
    except OSError as exc:
        print(
            f"tidegate demo incident: cannot write {exc.filename}: {exc.strerror}", file=sys.stderr
        )
        return EXIT_USAGE
    shown = all(r.verdict == LEAK for r in leaky.reports) and all(
        r.verdict == NO_LEAK for r in fixed.reports
    )
    return 0 if shown else 1
