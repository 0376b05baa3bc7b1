"""`tidegate` command line: `serve` runs the gateway, `token` prints a client JWT."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, TypeVar

from tidegate.addresses import format_address
from tidegate.gateway.config import OPTIONS, Config, ConfigError, load_config
from tidegate.load.commands import register as register_load_commands

__all__ = ["build_parser", "main"]

log = logging.getLogger("tidegate")
T = TypeVar("T")

EXIT_USAGE = 2
EXIT_LEFTOVERS = 3  # stopped, but a task or thread was still alive after the shutdown


def _add_serve(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = commands.add_parser(
        "serve",
        help="run the gateway",
        description="Run the gateway.",
        epilog="Every option is also an environment variable (--max-conns: "
        "TIDEGATE_MAX_CONNS) and a key of the --config file (max_conns). Precedence: flags, "
        "environment, file, defaults.",
    )
    serve.add_argument("--config", metavar="FILE.toml", help="TOML file (env TIDEGATE_CONFIG)")
    for opt in OPTIONS:
        if opt.kind.choices:
            serve.add_argument(
                opt.flag, dest=opt.name, choices=opt.kind.choices, help=opt.help_line()
            )
        else:
            serve.add_argument(opt.flag, dest=opt.name, metavar=opt.metavar, help=opt.help_line())
    # A process of `--workers N`, started by the supervisor: the configuration comes on stdin,
    # the listeners share their ports, and the end of stdin (the supervisor gone) stops it.
    serve.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    serve.add_argument(
        "--log-level",
        default="INFO",
        type=str.upper,
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="logging level (default INFO)",
    )
    serve.set_defaults(run=_serve)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tidegate", description="A leak-proof push gateway.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_serve(commands)
    _add_token(commands)
    register_load_commands(commands)  # load, load http, demo: tidegate.load.commands
    return parser


def _add_token(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    token = commands.add_parser(
        "token",
        help="print a client token (JWT) for trying the gateway by hand",
        description="Print an HS256 JWT for USER, signed with the gateway's JWT secret.",
    )
    token.add_argument("user", metavar="USER", help="the token's subject (`sub`)")
    token.add_argument(
        "--ttl",
        default="1h",
        help="lifetime: seconds, or 45s, 30m, 1h, 2d or a sum like 1h30m (default 1h)",
    )
    token.add_argument(
        "--rooms", metavar="R1,R2", help="limit the rooms the connection may join (`rooms` claim)"
    )
    token.add_argument(
        "--jwt-secret", metavar="S", help="the gateway's JWT secret (env TIDEGATE_JWT_SECRET)"
    )
    token.set_defaults(run=_token)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    run: Callable[[argparse.Namespace, Mapping[str, str]], int] = args.run
    return run(args, os.environ)


def _serve(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    logging.basicConfig(
        level=str(args.log_level).upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.worker:
        from tidegate.gateway.supervisor import config_from_json

        config = config_from_json(sys.stdin.buffer.readline())
        try:
            leftovers = _run(_serve_async(config, worker=True))
        except ConfigError as exc:
            print(f"tidegate: {exc}", file=sys.stderr)
            return EXIT_USAGE
        return EXIT_LEFTOVERS if leftovers else 0
    flags = {opt.name: getattr(args, opt.name) for opt in OPTIONS}
    try:
        config = load_config(flags=flags, env=env, file=args.config)
        config.check_startable()
    except ConfigError as exc:
        print(f"tidegate: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        if config.workers > 1:
            _run(_supervise(config, str(args.log_level)))
            leftovers = 0  # each worker reports its own
        else:
            leftovers = _run(_serve_async(config))
    except ConfigError as exc:  # found at startup: the descriptor budget, ...
        print(f"tidegate: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (OSError, RuntimeError) as exc:  # NatsServerMissing is a RuntimeError
        print(f"tidegate: cannot start: {exc}", file=sys.stderr)
        return 1
    return EXIT_LEFTOVERS if leftovers else 0


def _token(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from tidegate.durations import parse_duration
    from tidegate.tokens import make_token

    secret = args.jwt_secret or env.get("TIDEGATE_JWT_SECRET")
    if not secret:
        print("tidegate token: set --jwt-secret or TIDEGATE_JWT_SECRET", file=sys.stderr)
        return EXIT_USAGE
    try:
        ttl = parse_duration(args.ttl)
        rooms = None if args.rooms is None else [r for r in args.rooms.split(",") if r]
        print(make_token(args.user, secret, ttl, rooms))
    except ValueError as exc:
        print(f"tidegate token: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return 0


def _run(main: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop where it exists (Linux, macOS), else the default asyncio loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


async def _supervise(config: Config, log_level: str) -> None:
    from tidegate.gateway.supervisor import Supervisor

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGTERM, signal.SIGINT)
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
    try:
        await Supervisor(config, log_level=log_level).run(stop)
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)
    print("tidegate: stopped (all workers)", flush=True)


def _stop_when_stdin_ends(stop: asyncio.Event) -> Callable[[], None]:
    """A worker's stdin is a pipe its supervisor holds open: its end means the supervisor is
    gone. Returns the undo."""
    loop = asyncio.get_running_loop()
    fd = sys.stdin.fileno()

    def readable() -> None:
        try:
            data = os.read(fd, 4096)
        except OSError:
            data = b""
        if not data:
            loop.remove_reader(fd)
            stop.set()

    def undo() -> None:
        loop.remove_reader(fd)

    loop.add_reader(fd, readable)
    return undo


async def _serve_async(config: Config, *, worker: bool = False) -> int:
    """Serve until SIGTERM or SIGINT (a worker: or until its supervisor goes away); returns
    how many tasks and threads outlived the shutdown."""
    from tidegate import leaks
    from tidegate.gateway import open_gateway

    # kill -USR1 <pid>: every task and thread to stderr, like Go's SIGQUIT dump, and go on.
    uninstall_dump = leaks.install_signal_dump(signal.SIGUSR1)
    # Record who created each task and thread, for "created by" in /_stack and the dumps.
    # The gateway spawns a handful of tasks, so the ~1.2x spawn cost is nothing here.
    leaks.track()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGTERM, signal.SIGINT)
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
    undo_stdin = _stop_when_stdin_ends(stop) if worker else None
    try:
        async with open_gateway(config, reuse_port=worker) as gateway:
            for name, address in (
                ("tcp", gateway.tcp_address),
                ("udp", gateway.udp_address),
                ("http", gateway.http_address),
                ("admin", gateway.admin_address),
            ):
                if address is not None:
                    print(f"tidegate: {name} listening on {format_address(address)}", flush=True)
            await stop.wait()
            # A second signal during the graceful shutdown gets the default, abrupt handling.
            for signum in signals:
                loop.remove_signal_handler(signum)
            log.info("shutting down")
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)
        if undo_stdin is not None:
            undo_stdin()
        uninstall_dump()
    return await _report_leftovers()


async def _report_leftovers() -> int:
    """After shutdown nothing of ours should be alive but this task and the main thread:
    report (and count) what is."""
    from tidegate import leaks

    leftovers = await leaks.find_async(timeout=1.0)
    if leftovers:
        log.error("leftovers after shutdown:\n%s", leaks.format_dump(leftovers))
    else:
        log.info("shutdown clean: no leftover task or thread")
    print(f"tidegate: stopped ({len(leftovers)} leftovers)", flush=True)
    return len(leftovers)


def _entry() -> None:  # pragma: no cover - console script shim
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    _entry()
