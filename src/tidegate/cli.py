"""`tidegate` command line: `serve` runs the gateway, `token` prints a client JWT."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any

from tidegate.gateway.config import OVERFLOW_POLICIES, Config, ConfigError, load_config

__all__ = ["build_parser", "main"]

log = logging.getLogger("tidegate")

EXIT_USAGE = 2

# (flag, config field, metavar, help)
_SERVE_OPTIONS: tuple[tuple[str, str, str, str], ...] = (
    ("--tcp", "tcp", "HOST:PORT", "client TCP listener (default 127.0.0.1:7400; off disables)"),
    ("--udp", "udp", "HOST:PORT", "UDP push ingress (default 127.0.0.1:7401; off disables)"),
    ("--admin", "admin", "HOST:PORT", "admin HTTP (default 127.0.0.1:7402; off disables)"),
    ("--http", "http", "HOST:PORT", "HTTP push API (default 127.0.0.1:7403; off disables)"),
    ("--secret", "secret", "S", "HMAC-SHA256 key for UDP pushes (env TIDEGATE_SECRET)"),
    (
        "--jwt-secret",
        "jwt_secret",
        "S",
        "HS256 key; hello must carry a JWT (env TIDEGATE_JWT_SECRET)",
    ),
    ("--api-key", "api_key", "K", "bearer key of POST /v1/push (env TIDEGATE_API_KEY)"),
    (
        "--admin-token",
        "admin_token",
        "T",
        "bearer token of the admin routes (env TIDEGATE_ADMIN_TOKEN)",
    ),
    ("--max-body", "max_body", "BYTES", "largest HTTP push body (default 1048576)"),
    ("--max-batch", "max_batch", "N", "most pushes in one HTTP batch (default 1000)"),
    ("--max-conns", "max_conns", "N", "maximum TCP connections (default 10000)"),
    ("--handshake-timeout", "handshake_timeout", "S", "seconds to send hello (default 5)"),
    ("--heartbeat", "heartbeat", "S", "heartbeat advertised in welcome (default 25)"),
    ("--idle-timeout", "idle_timeout", "S", "seconds without a frame (default 2 x heartbeat)"),
    ("--max-line", "max_line", "BYTES", "maximum frame size incl. newline (default 65536)"),
    ("--max-rooms", "max_rooms", "N", "rooms per connection (default 128)"),
    ("--buffer-bytes", "buffer_bytes", "N", "outbound bytes per connection (default 1048576)"),
    ("--overflow", "overflow", "POLICY", "slow client policy: " + "|".join(OVERFLOW_POLICIES)),
    ("--write-timeout", "write_timeout", "S", "cut a client that drains nothing (default 5)"),
    ("--shutdown-timeout", "shutdown_timeout", "S", "flush deadline at shutdown (default 5)"),
    ("--block-threshold", "block_threshold", "S", "report a loop blocked this long (default 0.25)"),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tidegate", description="A leak-proof push gateway.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser("serve", help="run the gateway", description="Run the gateway.")
    serve.add_argument("--config", metavar="FILE.toml", help="TOML file (env TIDEGATE_CONFIG)")
    for flag, field, metavar, help_text in _SERVE_OPTIONS:
        kwargs: dict[str, Any] = {"dest": field, "metavar": metavar, "help": help_text}
        if field == "overflow":
            kwargs["choices"] = OVERFLOW_POLICIES
            kwargs.pop("metavar")
        serve.add_argument(flag, **kwargs)
    serve.add_argument(
        "--log-level",
        default="INFO",
        type=str.upper,
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="logging level (default INFO)",
    )
    serve.set_defaults(run=_serve)

    token = commands.add_parser(
        "token",
        help="print a client token (JWT) for trying the gateway by hand",
        description="Print an HS256 JWT for USER, signed with the gateway's JWT secret.",
    )
    token.add_argument("user", metavar="USER", help="the token's subject (`sub`)")
    token.add_argument(
        "--ttl", default="1h", help="lifetime: 45s, 30m, 1h, 2d or a sum like 1h30m (default 1h)"
    )
    token.add_argument(
        "--rooms", metavar="R1,R2", help="limit the rooms the connection may join (`rooms` claim)"
    )
    token.add_argument(
        "--jwt-secret", metavar="S", help="the gateway's JWT secret (env TIDEGATE_JWT_SECRET)"
    )
    token.set_defaults(run=_token)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    run: Callable[[argparse.Namespace, Mapping[str, str]], int] = args.run
    return run(args, os.environ)


def _serve(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    logging.basicConfig(
        level=str(args.log_level).upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    flags = {field: getattr(args, field) for _, field, _, _ in _SERVE_OPTIONS}
    try:
        config = load_config(flags=flags, env=env, file=args.config)
        config.check_startable()
    except ConfigError as exc:
        print(f"tidegate: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        _run(_serve_async(config))
    except OSError as exc:
        print(f"tidegate: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


def _token(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from tidegate.auth import make_token, parse_duration

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


def _run(main: Coroutine[Any, Any, None]) -> None:
    """Run on uvloop where it exists (Linux, macOS), else the default asyncio loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)


async def _serve_async(config: Config) -> None:
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
    try:
        async with open_gateway(config) as gateway:
            for name, address in (
                ("tcp", gateway.tcp_address),
                ("udp", gateway.udp_address),
                ("http", gateway.http_address),
                ("admin", gateway.admin_address),
            ):
                if address is not None:
                    print(f"tidegate: {name} listening on {address[0]}:{address[1]}", flush=True)
            await stop.wait()
            # A second signal during the graceful shutdown gets the default, abrupt handling.
            for signum in signals:
                loop.remove_signal_handler(signum)
            log.info("shutting down")
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)
        uninstall_dump()
    await _report_leftovers()


async def _report_leftovers() -> None:
    """After shutdown nothing of ours should be alive but this task and the main thread."""
    from tidegate import leaks

    leftovers = await leaks.find_async(timeout=1.0)
    if leftovers:
        log.error("leftovers after shutdown:\n%s", leaks.format_dump(leftovers))
    else:
        log.info("shutdown clean: no leftover task or thread")
    print(f"tidegate: stopped ({len(leftovers)} leftovers)", flush=True)


def _entry() -> None:  # pragma: no cover - console script shim
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    _entry()
