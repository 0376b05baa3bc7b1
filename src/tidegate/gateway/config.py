"""Gateway configuration: one frozen `Config`, loaded from flags, env, a TOML file, defaults.

Precedence is flags > `TIDEGATE_*` environment variables > `--config FILE.toml` > defaults.
Every option has one name used everywhere: field `max_conns` is flag `--max-conns`, env var
`TIDEGATE_MAX_CONNS` and TOML key `max_conns` (or `max-conns`).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

__all__ = ["OVERFLOW_POLICIES", "Address", "Config", "ConfigError", "is_loopback", "load_config"]

Address = tuple[str, int]
LISTENERS: Final = ("tcp", "udp", "admin", "http")
Overflow = Literal["disconnect", "drop-oldest", "drop-newest"]
OVERFLOW_POLICIES: Final[tuple[Overflow, ...]] = ("disconnect", "drop-oldest", "drop-newest")


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the option and its source."""

    def __init__(self, message: str, *, option: str | None = None) -> None:
        super().__init__(message)
        self.option = option


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """Every gateway option with its default. Listeners set to None are not started."""

    tcp: Address | None = ("127.0.0.1", 7400)
    udp: Address | None = ("127.0.0.1", 7401)
    admin: Address | None = ("127.0.0.1", 7402)
    http: Address | None = ("127.0.0.1", 7403)  # POST /v1/push
    secret: str | None = None  # UDP HMAC-SHA256 key; required to bind UDP beyond loopback
    jwt_secret: str | None = None  # HS256 key; when set, hello must carry a token
    api_key: str | None = None  # bearer key of POST /v1/push; required beyond loopback
    admin_token: str | None = None  # bearer token of the admin routes; required beyond loopback
    max_body: int = 1024 * 1024  # largest HTTP push body (a batch included)
    max_batch: int = 1000  # most pushes in one HTTP batch
    block_threshold: float = 0.25  # the loop watchdog reports a loop blocked this long
    max_conns: int = 10_000
    handshake_timeout: float = 5.0
    heartbeat: float = 25.0
    idle_timeout: float | None = None  # None: 2 x heartbeat
    max_line: int = 64 * 1024
    max_rooms: int = 128
    buffer_bytes: int = 1024 * 1024
    overflow: Overflow = "disconnect"
    write_timeout: float = 5.0
    shutdown_timeout: float = 5.0  # how long shutdown waits for error frames to flush
    close_linger: float = 2.0  # how long a closing connection may take to flush before abort
    replay_window: float = 30.0
    replay_capacity: int = 100_000

    def __post_init__(self) -> None:
        for name in (
            "max_conns",
            "max_line",
            "max_rooms",
            "buffer_bytes",
            "replay_capacity",
            "max_body",
            "max_batch",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(
                    f"{name}: expected a positive integer, got {value!r}", option=name
                )
        if self.max_line < 2:
            raise ConfigError(
                f"max_line: must be at least 2 bytes, got {self.max_line}", option="max_line"
            )
        for name in (
            "handshake_timeout",
            "heartbeat",
            "write_timeout",
            "shutdown_timeout",
            "close_linger",
            "replay_window",
            "block_threshold",
        ):
            _check_seconds(name, getattr(self, name))
        if self.idle_timeout is not None:
            _check_seconds("idle_timeout", self.idle_timeout)
        for name in ("secret", "jwt_secret", "api_key", "admin_token"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise ConfigError(
                    f"{name}: expected a non-empty string, got {value!r}", option=name
                )
        if self.overflow not in OVERFLOW_POLICIES:
            raise ConfigError(
                f"overflow: expected one of {', '.join(OVERFLOW_POLICIES)}, got {self.overflow!r}",
                option="overflow",
            )
        for name in LISTENERS:
            address = getattr(self, name)
            if address is not None and not (
                isinstance(address, tuple)
                and len(address) == 2
                and isinstance(address[0], str)
                and isinstance(address[1], int)
                and 0 <= address[1] <= 65535
            ):
                raise ConfigError(f"{name}: expected (host, port), got {address!r}", option=name)

    @property
    def effective_idle_timeout(self) -> float:
        return self.idle_timeout if self.idle_timeout is not None else 2 * self.heartbeat

    def check_startable(self) -> None:
        """Refuse configurations the contract forbids at startup: every listener that lets
        someone in without a credential may only bind loopback."""
        for name, credential, missing, what, how in (
            ("udp", self.secret, "a secret", "unsigned pushes", "--secret / TIDEGATE_SECRET"),
            (
                "tcp",
                self.jwt_secret,
                "a JWT secret",
                "clients without a token",
                "--jwt-secret / TIDEGATE_JWT_SECRET",
            ),
            (
                "http",
                self.api_key,
                "an API key",
                "pushes without a key",
                "--api-key / TIDEGATE_API_KEY",
            ),
            (
                "admin",
                self.admin_token,
                "an admin token",
                "admin requests without a token",
                "--admin-token / TIDEGATE_ADMIN_TOKEN",
            ),
        ):
            address: Address | None = getattr(self, name)
            if address is not None and not credential and not is_loopback(address[0]):
                raise ConfigError(
                    f"{name}: refusing to bind {address[0]}:{address[1]} without {missing}; "
                    f"{what} are only accepted on loopback. Set {how} or bind 127.0.0.1.",
                    option=name,
                )


def _check_seconds(name: str, value: object) -> None:
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ConfigError(
            f"{name}: expected a positive number of seconds, got {value!r}", option=name
        )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_DISABLED: Final = frozenset({"", "off", "none", "no", "false"})


def parse_address(text: str) -> Address | None:
    """`HOST:PORT`, `[v6]:PORT`, `:PORT` (loopback) or `off`."""
    if text.strip().lower() in _DISABLED:
        return None
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"port out of range in {text!r}")
    host = host.strip("[]") or "127.0.0.1"
    return host, port


def _positive_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"expected an integer, got {text!r}") from None


def _seconds(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"expected seconds, got {text!r}") from None


def _optional_text(text: str) -> str | None:
    return text or None


# How each option is parsed from text (flags and env). TOML values may also be typed.
_PARSERS: Final[dict[str, Callable[[str], object]]] = {
    "tcp": parse_address,
    "udp": parse_address,
    "admin": parse_address,
    "http": parse_address,
    "secret": _optional_text,
    "jwt_secret": _optional_text,
    "api_key": _optional_text,
    "admin_token": _optional_text,
    "max_body": _positive_int,
    "max_batch": _positive_int,
    "block_threshold": _seconds,
    "max_conns": _positive_int,
    "handshake_timeout": _seconds,
    "heartbeat": _seconds,
    "idle_timeout": _seconds,
    "max_line": _positive_int,
    "max_rooms": _positive_int,
    "buffer_bytes": _positive_int,
    "overflow": str,
    "write_timeout": _seconds,
    "shutdown_timeout": _seconds,
    "close_linger": _seconds,
    "replay_window": _seconds,
    "replay_capacity": _positive_int,
}
OPTION_NAMES: Final = tuple(_PARSERS)
assert set(OPTION_NAMES) == {f.name for f in dataclasses.fields(Config)}


def _from_text(name: str, text: str, source: str) -> object:
    try:
        return _PARSERS[name](text)
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def _from_toml(name: str, value: object, source: str) -> object:
    if isinstance(value, str):
        return _from_text(name, value, source)
    if name in LISTENERS:
        raise ConfigError(f'{source}: expected a "HOST:PORT" string, got {value!r}')
    if isinstance(value, bool):
        raise ConfigError(f"{source}: expected a number, got {value!r}")
    return value


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
            name = key.replace("-", "_")
            if name not in _PARSERS:
                raise ConfigError(f"{path}: unknown option {key!r}")
            values[name] = _from_toml(name, value, f"{path}: {key}")
            sources[name] = str(path)  # Config's own errors name the option already
    for name in OPTION_NAMES:
        var = "TIDEGATE_" + name.upper()
        if var in env:
            sources[name] = var
            values[name] = _from_text(name, env[var], var)
    for name, text in (flags or {}).items():
        if text is not None:
            sources[name] = "--" + name.replace("_", "-")
            values[name] = _from_text(name, text, sources[name])
    try:
        return Config(**values)
    except ConfigError as exc:
        source = sources.get(exc.option or "", "invalid configuration")
        raise ConfigError(f"{source}: {exc}", option=exc.option) from None
