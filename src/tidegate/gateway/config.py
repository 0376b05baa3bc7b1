"""Gateway configuration: one frozen `Config`, loaded from flags, env, a TOML file, defaults.

Every option is declared once, below, as a field of `Config` (see options.py for what each
declaration gives). Precedence is flags > `TIDEGATE_*` environment variables >
`--config FILE.toml` > defaults. Field `max_conns` is flag `--max-conns`, env var
`TIDEGATE_MAX_CONNS` and TOML key `max_conns` (or `max-conns`).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from tidegate.gateway.options import (
    ADDRESS,
    BROKER_URLS,
    BYTES,
    COUNT,
    RATE,
    SECONDS,
    SECRET,
    Address,
    ConfigError,
    Kind,
    Option,
    choice,
    declared_options,
    is_loopback,
    option,
)
from tidegate.gateway.subjects import check_prefix
from tidegate.protocol import Limits

__all__ = [
    "MIN_SECRET_BYTES",
    "OPTIONS",
    "OVERFLOW_POLICIES",
    "Address",
    "Config",
    "ConfigError",
    "is_loopback",
    "load_config",
]

Overflow = Literal["disconnect", "drop-oldest", "drop-newest"]
OVERFLOW_POLICIES: Final[tuple[Overflow, ...]] = ("disconnect", "drop-oldest", "drop-newest")
# Least length of a credential guarding a listener beyond loopback: 256 bits, what RFC 7518
# (3.2) asks of an HS256 key, and what `secrets.token_urlsafe(32)` gives.
MIN_SECRET_BYTES: Final = 32


SUBJECT_PREFIX: Final = Kind("WORDS", str, check_prefix)


def _at_least_two_bytes(value: int) -> None:
    if value < 2:
        raise ValueError(f"must be at least 2 bytes, got {value}")


def _positive(value: float) -> None:
    if not value > 0:
        raise ValueError(f"must be more than 0, got {value:g}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """Every gateway option with its default. Listeners set to None are not started."""

    tcp: Address | None = option(("127.0.0.1", 7400), ADDRESS, "client listener; `off` disables it")
    udp: Address | None = option(
        ("127.0.0.1", 7401), ADDRESS, "UDP push ingress; `off` disables it"
    )
    http: Address | None = option(
        ("127.0.0.1", 7403), ADDRESS, "HTTP push API (`POST /v1/push`); `off` disables it"
    )
    admin: Address | None = option(
        ("127.0.0.1", 7402),
        ADDRESS,
        "admin HTTP (dashboard, `/_count`, `/_stack`, `/metrics`, ...); `off` disables it",
    )
    secret: str | None = option(
        None,
        SECRET,
        "HMAC-SHA256 key for UDP pushes; required to bind UDP beyond loopback, then at least "
        "32 bytes",
    )
    jwt_secret: str | None = option(
        None,
        SECRET,
        "HS256 key; when set, `hello` must carry a JWT; required to bind TCP beyond loopback, "
        "then at least 32 bytes (RFC 7518)",
    )
    api_key: str | None = option(
        None,
        SECRET,
        "bearer key of `POST /v1/push`; required to bind HTTP beyond loopback, then at least "
        "32 bytes",
        metavar="K",
    )
    admin_token: str | None = option(
        None,
        SECRET,
        "bearer token of the admin routes (`/healthz`, `/readyz` stay open); required to "
        "bind admin beyond loopback, then at least 32 bytes",
        metavar="T",
    )
    max_body: int = option(
        1024 * 1024, BYTES, "largest HTTP push body, a batch included (`413` above)"
    )
    max_batch: int = option(1000, COUNT, "most pushes in one HTTP batch (`413` above)")
    http_max_conns: int = option(
        512, COUNT, "connections to the HTTP push API (a `503` and a close above)"
    )
    http_header_timeout: float = option(
        5.0,
        SECONDS,
        "HTTP (push API and admin): seconds for a request's headers to arrive, from its "
        "first byte or the connection's opening",
    )
    http_body_timeout: float = option(
        10.0, SECONDS, "HTTP push API: seconds for a request's body to arrive (`408` after)"
    )
    http_idle_timeout: float = option(
        15.0,
        SECONDS,
        "HTTP (push API and admin): seconds a keep-alive connection may wait for its next request",
    )
    block_threshold: float = option(
        0.25, SECONDS, "the loop watchdog reports a loop blocked this long"
    )
    max_conns: int = option(10_000, COUNT, "TCP connections, handshakes included")
    listen_backlog: int | None = option(
        None,
        COUNT,
        "connections the kernel queues for each listener (TCP, HTTP, admin) before they are "
        "accepted",
        default_text="the system's maximum, `net.core.somaxconn`",
    )
    handshake_timeout: float = option(5.0, SECONDS, "seconds a new connection has to send `hello`")
    heartbeat: float = option(25.0, SECONDS, "heartbeat announced in `welcome`")
    idle_timeout: float | None = option(
        None,
        SECONDS,
        "seconds without any client frame before `idle_timeout`",
        default_text="2 x heartbeat",
    )
    max_line: int = option(
        64 * 1024, BYTES, "longest frame, newline included", check=_at_least_two_bytes
    )
    max_rooms: int = option(128, COUNT, "rooms per connection")
    frame_rate: float = option(
        100.0,
        RATE,
        "frame budget of a client connection: frames per second it may send, sustained "
        "(`rate_limited` past it and `frame-burst`)",
    )
    frame_burst: int = option(
        1000, COUNT, "frame budget of a client connection: frames it may send at once"
    )
    buffer_bytes: int = option(1024 * 1024, BYTES, "outbound bytes held per connection")
    overflow: Overflow = option(
        "disconnect",
        choice(OVERFLOW_POLICIES),
        "what happens past `buffer-bytes`: `disconnect`, `drop-oldest`, `drop-newest`",
    )
    write_timeout: float = option(
        5.0,
        SECONDS,
        "a client with pending data that drains nothing this long is cut (`slow_consumer`)",
    )
    fanout_budget: float = option(
        0.02,
        SECONDS,
        "longest a fan-out holds the event loop: past it, the rest of the flush waits for "
        "the next loop turn, behind everything else",
        check=_positive,
    )
    shutdown_timeout: float = option(
        5.0, SECONDS, "how long shutdown waits for the last frames to flush"
    )
    close_linger: float = option(
        2.0,
        SECONDS,
        "how long a connection being closed may take to flush its error frame before it is aborted",
    )
    udp_receive_buffer: int | None = option(
        None,
        BYTES,
        "receive buffer of the UDP socket; datagrams arriving while it is full are dropped by "
        "the kernel (`tidegate_udp_receive_drops_total`)",
        default_text="the system's, `net.core.rmem_default`",
    )
    replay_window: float = option(
        30.0, SECONDS, "signed UDP pushes: accepted `ts` skew, and how long an `id` is kept"
    )
    replay_memory: int = option(
        32 * 1024 * 1024,
        BYTES,
        "signed UDP pushes: memory for the `id`s kept for replay detection "
        "(`replay_cache_full` past it)",
    )
    broker: str | None = option(
        None,
        BROKER_URLS,
        "NATS server(s) joining this node to the others, `nats://HOST:PORT[,...]` (see "
        "docs/scaling.md); none: one process alone",
    )
    broker_prefix: str = option(
        "tidegate", SUBJECT_PREFIX, "first words of every NATS subject of this cluster"
    )
    canary_interval: float = option(
        1.0, SECONDS, "with a broker: how often a node checks it (canary and subscription probes)"
    )
    canary_timeout: float = option(
        2.0, SECONDS, "with a broker: a canary or probe not back this long fails `/readyz`"
    )
    workers: int = option(
        1,
        COUNT,
        "gateway processes sharing the TCP, UDP and HTTP ports (SO_REUSEPORT), joined through "
        "`--broker`, or through a local nats-server started for them without it; a supervisor "
        "restarts them and serves the admin port for the group (docs/scaling.md)",
    )

    def __post_init__(self) -> None:
        for opt in OPTIONS:
            opt.validate(getattr(self, opt.name))

    @property
    def effective_idle_timeout(self) -> float:
        return self.idle_timeout if self.idle_timeout is not None else 2 * self.heartbeat

    @property
    def shortest_connection_timeout(self) -> float:
        """The shortest timeout the connection sweeper enforces (it sweeps four times as often)."""
        return min(
            self.handshake_timeout,
            self.effective_idle_timeout,
            self.write_timeout,
            self.close_linger,
        )

    def limits(self) -> Limits:
        """The protocol core's limits, from these options."""
        return Limits(
            max_line=self.max_line,
            max_rooms=self.max_rooms,
            handshake_timeout=self.handshake_timeout,
            heartbeat=self.heartbeat,
            idle_timeout=self.effective_idle_timeout,
            frame_rate=self.frame_rate,
            frame_burst=self.frame_burst,
        )

    def check_startable(self) -> None:
        """Refuse configurations the contract forbids at startup: every listener that lets
        someone in without a credential may only bind loopback, and beyond loopback the
        credential must be at least `MIN_SECRET_BYTES` long."""
        for listener, credential, missing, what in (
            ("udp", "secret", "a secret", "unsigned pushes"),
            ("tcp", "jwt_secret", "a JWT secret", "clients without a token"),
            ("http", "api_key", "an API key", "pushes without a key"),
            ("admin", "admin_token", "an admin token", "admin requests without a token"),
        ):
            address: Address | None = getattr(self, listener)
            if (
                address is not None
                and not getattr(self, credential)
                and not is_loopback(address[0])
            ):
                how = BY_NAME[credential]
                raise ConfigError(
                    f"{listener}: refusing to bind {address[0]}:{address[1]} without "
                    f"{missing}; {what} are only accepted on loopback. Set {how.flag} / "
                    f"{how.env} or bind 127.0.0.1.",
                    option=listener,
                )
            given: str | None = getattr(self, credential)
            if (
                address is not None
                and given
                and not is_loopback(address[0])
                and len(given.encode()) < MIN_SECRET_BYTES
            ):
                how = BY_NAME[credential]
                raise ConfigError(
                    f"{credential}: {len(given.encode())} bytes is too short to guard "
                    f"{listener} on {address[0]}:{address[1]}; beyond loopback every "
                    f"credential needs at least {MIN_SECRET_BYTES} bytes (for the JWT secret "
                    f"RFC 7518 asks as much of an HS256 key). Generate one with: python -c "
                    f"'import secrets; print(secrets.token_urlsafe(32))' ({how.flag} / "
                    f"{how.env}).",
                    option=credential,
                )


OPTIONS: Final[tuple[Option, ...]] = declared_options(Config)
BY_NAME: Final[dict[str, Option]] = {opt.name: opt for opt in OPTIONS}


def load_config(
    *,
    flags: Mapping[str, str | None] | None = None,
    env: Mapping[str, str] | None = None,
    file: Path | str | None = None,
) -> Config:
    """Build a `Config`; `flags` maps option names (field names) to text, None = not given.

    Raises `ConfigError` naming the option and where the bad value came from.
    """
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    env = env or {}
    if file is None and env.get("TIDEGATE_CONFIG"):
        file = env["TIDEGATE_CONFIG"]
    if file is not None:
        path = Path(file)
        try:
            with path.open("rb") as fp:
                table = tomllib.load(fp)
        except OSError as exc:
            raise ConfigError(f"--config {path}: cannot read: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"--config {path}: invalid TOML: {exc}") from None
        for key, value in table.items():
            opt = BY_NAME.get(key.replace("-", "_"))
            if opt is None:
                raise ConfigError(f"{path}: unknown option {key!r}")
            values[opt.name] = opt.from_toml(value, f"{path}: {key}")
            sources[opt.name] = str(path)  # Config's own errors name the option already
    for opt in OPTIONS:
        if opt.env in env:
            sources[opt.name] = opt.env
            values[opt.name] = opt.parse(env[opt.env], opt.env)
    for name, text in (flags or {}).items():
        if text is not None:
            opt = BY_NAME[name]
            sources[name] = opt.flag
            values[name] = opt.parse(text, opt.flag)
    try:
        return Config(**values)
    except ConfigError as exc:
        source = sources.get(exc.option or "", "invalid configuration")
        raise ConfigError(f"{source}: {exc}", option=exc.option) from None
