"""The command line of ``tidegate load``, ``tidegate load http`` and ``tidegate demo incident``.

``register(commands)`` adds them to the ``tidegate`` parser. Exit statuses: see ``exits``
(0 NO LEAK, 1 LEAK, 2 a usage or connection error in one line, 3 a bug with its traceback).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

from .display import Display, make_display
from .exits import (
    EXIT_LEAK,
    EXIT_NO_LEAK,
    EXIT_USAGE,
    Exit,
    UsageError,
    check_writable,
    run_command,
)
from .fleet import FleetError
from .options import (
    FAULTS,
    PUSH_KINDS,
    argparse_type,
    parse_address,
    parse_count,
    parse_rate,
    parse_seconds,
    parse_shares,
)
from .plot import PlotUnavailable, check_plotting, write_run_png
from .probe import ProbeError, Unreachable
from .verdict import LEAK, Report, format_summary

if TYPE_CHECKING:
    from .gateway_load import GatewayLoad
    from .http_load import HttpLoad

__all__ = ["ONE_LINE_ERRORS", "register"]

# The errors that are one line for the user (exit 2); anything else is a bug (exit 3).
ONE_LINE_ERRORS: Final = (UsageError, Unreachable, ProbeError, FleetError)

S = TypeVar("S")
_type = argparse_type
_address = _type(parse_address)
_seconds = _type(parse_seconds)
_whole = _type(parse_count)


def _common(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """Options of both loads. On `load http` they default to nothing (SUPPRESS), so values
    given before the word `http` are kept."""

    def default(value: object) -> object:
        return argparse.SUPPRESS if suppress else value

    parser.add_argument(
        "--duration",
        type=_seconds,
        default=default(10.0),
        metavar="S",
        help="how long the load runs (default 10s)",
    )
    parser.add_argument(
        "--drain",
        type=_seconds,
        default=default(10.0),
        metavar="S",
        help="how long the server gets to return to its baseline (default 10s)",
    )
    parser.add_argument(
        "--json", type=Path, default=default(None), metavar="FILE", help="write the report as JSON"
    )
    parser.add_argument(
        "--png",
        type=Path,
        default=default(None),
        metavar="FILE",
        help="plot the server's gauges over the run, phases marked (matplotlib)",
    )
    parser.add_argument(
        "--plain",
        action="store_true",
        default=default(False),
        help="progress as plain lines even on a terminal",
    )


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `load` (with `load http`) and `demo` to the `tidegate` command parser."""
    load = commands.add_parser(
        "load",
        help="load a gateway (or, with `load http`, any HTTP service) and check for leaks",
        description=(
            "Read the task count, run a concurrent load with faults, let it drain, read the "
            "count again, and diff the grouped stack dumps to name what leaked. Exit 0 NO "
            "LEAK, 1 LEAK, 2 a usage or connection error (one line says which), 3 a bug in "
            "the tool (its traceback), 130 interrupted. See docs/load.md."
        ),
        usage="%(prog)s --tcp H:P --admin H:P (--udp H:P | --http H:P) [options]\n"
        "       %(prog)s http --url URL --count-url URL [options]",
    )
    # Every option of the gateway load, with its default: `load http` refuses them.
    gateway_options: dict[str, tuple[str, object]] = {}

    def option(group: argparse._ArgumentGroup, flag: str, **kwargs: Any) -> None:
        action = group.add_argument(flag, **kwargs)
        gateway_options[action.dest] = (flag, action.default)

    target = load.add_argument_group("the gateway")
    option(target, "--tcp", type=_address, metavar="HOST:PORT", help="client TCP port")
    option(target, "--udp", type=_address, metavar="HOST:PORT", help="UDP push ingress")
    option(target, "--http", type=_address, metavar="HOST:PORT", help="HTTP push ingress")
    option(
        target,
        "--admin",
        type=_address,
        metavar="HOST:PORT",
        help="admin port: /debug/vars and /debug/tasks for the verdict",
    )
    option(target, "--secret", metavar="S", help="UDP HMAC key (env TIDEGATE_SECRET)")
    option(target, "--api-key", metavar="K", help="HTTP push key (env TIDEGATE_API_KEY)")
    option(
        target,
        "--jwt-secret",
        metavar="S",
        help="sign each client's hello token (env TIDEGATE_JWT_SECRET)",
    )
    option(
        target,
        "--admin-token",
        metavar="T",
        help="bearer token of the admin port (env TIDEGATE_ADMIN_TOKEN)",
    )
    shape = load.add_argument_group("the load")
    option(
        shape,
        "--clients",
        type=_whole,
        default=100,
        metavar="N",
        help="client connections (default %(default)s)",
    )
    option(
        shape,
        "--rooms",
        type=_whole,
        default=10,
        metavar="N",
        help="rooms; each client joins up to two (default %(default)s)",
    )
    option(
        shape,
        "--rate",
        type=_type(parse_rate),
        default=100.0,
        metavar="R",
        help="pushes per second (default %(default)g)",
    )
    option(
        shape,
        "--mix",
        default="user=60,room=30,all=10",
        metavar="user=W,room=W,all=W",
        help="push target weights (default %(default)s)",
    )
    option(
        shape,
        "--faults",
        default="",
        metavar="KIND=PCT,...",
        help="percent of clients per fault: "
        + ", ".join(FAULTS)
        + " (e.g. reset=5,halfclose=5,vanish=5,stall=2,churn=10)",
    )
    option(
        shape,
        "--idle-timeout",
        type=_seconds,
        metavar="S",
        help="the gateway's idle timeout (default 2 x its advertised heartbeat):"
        " how long vanished clients take to be reaped",
    )
    option(
        shape,
        "--processes",
        type=_whole,
        metavar="N",
        help="client processes (default: as many as the open-file limit needs)",
    )
    option(shape, "--seed", type=_whole, metavar="N", help="repeat a run's plan")
    _common(load, suppress=False)
    load.set_defaults(run=_run_load)

    subs = load.add_subparsers(
        dest="load_target",
        title="any HTTP service",
        metavar="http",
        help="load any HTTP service and check its count endpoint returns to its baseline"
        " (tidegate load http --help)",
        required=False,
    )
    http = subs.add_parser(
        "http",
        prog="tidegate load http",
        description=(
            "Hit --url with --concurrency requests in flight, for --requests requests or "
            "--duration; read --count-url (a bare integer: tidegate's /_count or Go's "
            "runtime.NumGoroutine()) before and after a drain; diff --stack-url's dumps "
            "(tidegate's /debug/tasks?debug=1 or Go's /debug/pprof/goroutine?debug=1)."
        ),
    )
    http.add_argument("--url", required=True, help="what to hit")
    http.add_argument("--method", default="GET", type=str.upper, help="(default GET)")
    http.add_argument("--body", help="request body")
    http.add_argument("--body-file", type=Path, metavar="FILE", help="request body from a file")
    http.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="request header, repeatable",
    )
    http.add_argument(
        "--concurrency",
        type=_whole,
        default=10,
        metavar="N",
        help="requests in flight (default 10)",
    )
    http.add_argument(
        "--requests",
        type=_whole,
        default=0,
        metavar="N",
        help="stop after N requests (default: run for --duration)",
    )
    http.add_argument(
        "--count-url",
        required=True,
        metavar="URL",
        help="a bare integer: the live task or goroutine count",
    )
    http.add_argument("--stack-url", metavar="URL", help="the grouped dump, for what grew")
    http.add_argument(
        "--probe-token", metavar="T", help="bearer token for --count-url and --stack-url"
    )
    _common(http, suppress=True)
    http.set_defaults(run=_run_http, gateway_options=gateway_options)

    from .demo import register_demo

    register_demo(commands)


def _env(value: str | None, env: Mapping[str, str], name: str) -> str | None:
    return value if value else env.get(name) or None


def _gateway_settings(args: argparse.Namespace, env: Mapping[str, str]) -> GatewayLoad:
    from .gateway_load import GatewayLoad

    if args.tcp is None or args.admin is None:
        raise UsageError(
            "give --tcp (the client port) and --admin (the admin port, for the verdict)"
        )
    if args.udp is None and args.http is None:
        raise UsageError("give --udp or --http: where the pushes go")
    if args.clients < 1:
        raise UsageError("--clients must be at least 1")
    if args.processes is not None and args.processes < 1:
        raise UsageError("--processes must be at least 1")
    try:
        mix = parse_shares(args.mix, PUSH_KINDS, what="--mix")
        faults = parse_shares(args.faults, FAULTS, what="--faults", total=100)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.rooms == 0 and mix.get("room"):
        raise UsageError("--mix has room pushes but --rooms is 0")
    return GatewayLoad(
        tcp=args.tcp,
        admin=args.admin,
        udp=args.udp,
        http=args.http,
        secret=_env(args.secret, env, "TIDEGATE_SECRET"),
        api_key=_env(args.api_key, env, "TIDEGATE_API_KEY"),
        jwt_secret=_env(args.jwt_secret, env, "TIDEGATE_JWT_SECRET"),
        admin_token=_env(args.admin_token, env, "TIDEGATE_ADMIN_TOKEN"),
        clients=args.clients,
        rooms=args.rooms,
        rate=args.rate,
        mix=mix,
        duration=args.duration,
        faults=faults,
        drain=args.drain,
        idle_timeout=args.idle_timeout,
        processes=args.processes,
        seed=args.seed,
    )


def _http_settings(args: argparse.Namespace) -> HttpLoad:
    from .http_load import HttpLoad

    gateway_options: Mapping[str, tuple[str, object]] = args.gateway_options
    given = [
        flag
        for dest, (flag, default) in gateway_options.items()
        if getattr(args, dest, default) != default
    ]
    if given:
        verb = "belongs" if len(given) == 1 else "belong"
        raise UsageError(f"{', '.join(given)} {verb} to the gateway load, not `load http`")
    if args.body is not None and args.body_file is not None:
        raise UsageError("give --body or --body-file, not both")
    body = args.body.encode() if args.body is not None else None
    if args.body_file is not None:
        try:
            body = args.body_file.read_bytes()
        except OSError as exc:
            raise UsageError(f"--body-file: {exc.strerror}: {args.body_file}") from None
    headers: dict[str, str] = {}
    for header in args.header:
        name, sep, value = header.partition(":")
        if not sep or not name.strip():
            raise UsageError(f"--header {header!r} is not 'NAME: VALUE'")
        headers[name.strip()] = value.strip()
    if args.concurrency < 1:
        raise UsageError("--concurrency must be at least 1")
    for flag, url in (
        ("--url", args.url),
        ("--count-url", args.count_url),
        ("--stack-url", args.stack_url),
    ):
        if url is not None and not url.startswith(("http://", "https://")):
            raise UsageError(f"{flag} {url!r} is not an http:// or https:// URL")
    return HttpLoad(
        url=args.url,
        method=args.method,
        body=body,
        headers=headers,
        concurrency=args.concurrency,
        requests=args.requests,
        duration=args.duration,
        count_url=args.count_url,
        stack_url=args.stack_url,
        probe_token=args.probe_token,
        drain=args.drain,
    )


def _execute(
    args: argparse.Namespace,
    settings_of: Callable[[], S],
    start: Callable[[S, Display], Coroutine[Any, Any, Report]],
    title: Callable[[S], str],
) -> int:
    try:
        settings = settings_of()
        for flag, path in (("--json", args.json), ("--png", args.png)):
            if path is not None:
                check_writable(path, flag)
        if args.png is not None:
            check_plotting()
    except (UsageError, PlotUnavailable) as exc:
        print(f"tidegate load: {exc}", file=sys.stderr)
        return EXIT_USAGE
    display = make_display(False if args.plain else None)
    try:
        report = run_command(
            "tidegate load", start(settings, display), display, known=ONE_LINE_ERRORS
        )
    except Exit as exit:
        return exit.status
    display.close()
    print(format_summary(report), flush=True)
    try:
        if args.json is not None:
            args.json.write_text(json.dumps(report.to_json(), indent=1) + "\n")
            print(f"report: {args.json}")
        if args.png is not None:
            write_run_png(args.png, report.samples, report.phases, title=title(settings))
            print(f"plot: {args.png}")
    except OSError as exc:
        print(f"tidegate load: cannot write {exc.filename}: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_LEAK if report.verdict == LEAK else EXIT_NO_LEAK


def _run_load(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from .gateway_load import run_gateway_load

    def title(s: GatewayLoad) -> str:
        return f"tidegate load: {s.clients} clients, {s.rate:g} pushes/s, {s.duration:g}s"

    return _execute(args, lambda: _gateway_settings(args, env), run_gateway_load, title)


def _run_http(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from .http_load import run_http_load

    def title(s: HttpLoad) -> str:
        return f"tidegate load http: {s.method} {s.url}"

    return _execute(args, lambda: _http_settings(args), run_http_load, title)
