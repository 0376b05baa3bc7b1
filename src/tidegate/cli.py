"""`tidegate` command line. Subcommands: `serve` (more come later)."""

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
    ("--secret", "secret", "S", "HMAC-SHA256 key for UDP pushes (env TIDEGATE_SECRET)"),
    ("--jwt-secret", "jwt_secret", "S", "HS256 key; when set, hello must carry a JWT"),
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
    from tidegate.gateway import open_gateway

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
    await _report_leftovers()


async def _report_leftovers() -> None:
    """After shutdown nothing of ours should be alive but this task and the main thread."""
    try:
        from tidegate import leaks
    except ImportError:
        log.warning("tidegate.leaks is not available; leftover check skipped")
        return
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
