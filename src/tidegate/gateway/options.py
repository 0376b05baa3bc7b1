"""How an option is declared once and read everywhere: kinds, declarations, and their views.

Each `Config` field is declared with `option(default, KIND, help)` (config.py). From that one
declaration come: the flag `--max-conns`, the environment variable `TIDEGATE_MAX_CONNS`, the
TOML key `max_conns` (or `max-conns`), the parser for text (flags, env, TOML strings), the
check of the value (in `Config.__post_init__`, whatever the source), the `--help` line with
its default, and the row of the options table in docs/gateway.md (`markdown_table`, checked
by a test).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import re
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from tidegate import addresses
from tidegate.durations import parse_duration

__all__ = [
    "ADDRESS",
    "BROKER_URLS",
    "BYTES",
    "COUNT",
    "RATE",
    "SECONDS",
    "SECRET",
    "Address",
    "ConfigError",
    "Kind",
    "Option",
    "choice",
    "declared_options",
    "is_loopback",
    "markdown_table",
    "option",
    "parse_address",
    "redact_urls",
]

Address = tuple[str, int]
T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the option and its source."""

    def __init__(self, message: str, *, option: str | None = None) -> None:
        super().__init__(message)
        self.option = option


@dataclass(frozen=True, slots=True)
class Kind:
    """What options of one type share: how text is parsed, how a value is checked (`check`
    raises `ValueError` with the message after the option's name), how a default is shown."""

    metavar: str
    parse: Callable[[str], object]
    check: Callable[[Any], None]
    show: Callable[[Any], str] = str
    none_allowed: bool = False  # None is a value (a listener off, no secret)
    choices: tuple[str, ...] = ()
    typed_in_toml: bool = True  # a TOML number is taken as is (else only strings)


@dataclass(frozen=True, slots=True)
class Option:
    """One declared option and the names it goes by."""

    name: str
    kind: Kind
    default: object
    help: str
    metavar: str
    default_text: str | None
    check: Callable[[Any], None] | None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return "TIDEGATE_" + self.name.upper()

    def shown_default(self) -> str:
        if self.default_text is not None:
            return self.default_text
        return "none" if self.default is None else self.kind.show(self.default)

    def help_line(self) -> str:
        """The `--help` text: the help without markup, and the default."""
        return f"{self.help.replace('`', '')} (default {self.shown_default()})"

    def parse(self, text: str, source: str) -> object:
        try:
            return self.kind.parse(text)
        except ValueError as exc:
            raise ConfigError(f"{source}: {exc}", option=self.name) from None

    def from_toml(self, value: object, source: str) -> object:
        if isinstance(value, str):
            return self.parse(value, source)
        if not self.kind.typed_in_toml:
            raise ConfigError(f'{source}: expected a "{self.metavar}" string, got {value!r}')
        if isinstance(value, bool):
            raise ConfigError(f"{source}: expected a number, got {value!r}")
        return value

    def validate(self, value: object) -> None:
        """Raise `ConfigError` naming this option when `value` is not acceptable."""
        if value is None and (self.kind.none_allowed or self.default is None):
            return
        try:
            self.kind.check(value)
            if self.check is not None:
                self.check(value)
        except ValueError as exc:
            raise ConfigError(f"{self.name}: {exc}", option=self.name) from None


@dataclass(frozen=True, slots=True)
class _Declaration:
    kind: Kind
    help: str
    metavar: str | None
    default_text: str | None
    check: Callable[[Any], None] | None


_KEY: Final = "tidegate.option"


def option(
    default: T,
    kind: Kind,
    help: str,
    *,
    metavar: str | None = None,
    default_text: str | None = None,
    check: Callable[[T], None] | None = None,
) -> T:
    """Declare a `Config` field as an option: its default, kind and help (`default_text`
    shows a default that is not a plain value; `check` adds a rule to the kind's)."""
    declaration = _Declaration(kind, help, metavar, default_text, check)
    field: T = dataclasses.field(default=default, metadata={_KEY: declaration})
    return field


def declared_options(cls: type) -> tuple[Option, ...]:
    """The options of a dataclass whose fields were declared with `option()`, in order."""
    options = []
    for field in dataclasses.fields(cls):
        declaration = field.metadata.get(_KEY)
        if not isinstance(declaration, _Declaration):
            raise TypeError(f"{cls.__name__}.{field.name} is not declared with option()")
        options.append(
            Option(
                name=field.name,
                kind=declaration.kind,
                default=field.default,
                help=declaration.help,
                metavar=declaration.metavar or declaration.kind.metavar,
                default_text=declaration.default_text,
                check=declaration.check,
            )
        )
    return tuple(options)


def markdown_table(options: Iterable[Option]) -> str:
    """The options table of docs/gateway.md."""
    lines = ["| flag | default | meaning |", "|---|---|---|"]
    for opt in options:
        shown = opt.shown_default()
        if opt.default is not None and opt.default_text is None:
            shown = f"`{shown}`"
        lines.append(f"| `{opt.flag} {opt.metavar}` | {shown} | {opt.help} |")
    return "\n".join(lines) + "\n"


# -- kinds ---------------------------------------------------------------------------------

_DISABLED: Final = frozenset({"", "off", "none", "no", "false"})


def parse_address(text: str) -> Address | None:
    """`HOST:PORT`, `[v6]:PORT`, `:PORT` (loopback) or `off`."""
    if text.strip().lower() in _DISABLED:
        return None
    return addresses.parse_address(text)


def _check_address(value: object) -> None:
    if not (
        isinstance(value, tuple)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int)
        and 0 <= value[1] <= 65535
    ):
        raise ValueError(f"expected (host, port), got {value!r}")


def _parse_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"expected an integer, got {text!r}") from None


def _check_positive_int(value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"expected a positive integer, got {value!r}")


def _check_seconds(value: object) -> None:
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"expected a positive number of seconds, got {value!r}")


def _parse_rate(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"expected a number per second, got {text!r}") from None


def _check_rate(value: object) -> None:
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"expected a positive number per second, got {value!r}")


def _parse_secret(text: str) -> str | None:
    return text or None


def _check_secret(value: object) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected a non-empty string, got {value!r}")
    # Bearer credentials arrive with the header's whitespace stripped: one that begins or
    # ends with whitespace could never match, and one made of it is no secret at all.
    if value != value.strip():
        raise ValueError("must not begin or end with whitespace (nor be only whitespace)")


ADDRESS: Final = Kind(
    "HOST:PORT",
    parse_address,
    _check_address,
    addresses.format_address,
    none_allowed=True,
    typed_in_toml=False,
)
COUNT: Final = Kind("N", _parse_int, _check_positive_int)
BYTES: Final = Kind("BYTES", _parse_int, _check_positive_int)
SECONDS: Final = Kind("S", parse_duration, _check_seconds, lambda value: f"{value:g}")
SECRET: Final = Kind("S", _parse_secret, _check_secret, none_allowed=True)
RATE: Final = Kind("N", _parse_rate, _check_rate, lambda value: f"{value:g}")


_BROKER_SCHEMES: Final = ("nats", "tls", "ws", "wss")


def _broker_urls(text: str) -> list[str]:
    urls = []
    for part in text.split(","):
        url = part.strip()
        if not url:
            continue
        if "://" not in url:
            url = "nats://" + url
        split = urllib.parse.urlsplit(url)
        if split.scheme not in _BROKER_SCHEMES:
            raise ValueError(
                f"expected {'/'.join(_BROKER_SCHEMES)}://HOST:PORT, got scheme {split.scheme!r}"
            )
        try:
            port = split.port
        except ValueError:
            port = -1
        if not split.hostname or port == -1:
            raise ValueError(f"expected nats://HOST:PORT, got {redact_urls(url)!r}")
        urls.append(url)
    if not urls:
        raise ValueError("expected at least one nats://HOST:PORT")
    return urls


def _parse_broker(text: str) -> str | None:
    if text.strip().lower() in _DISABLED:
        return None
    return ",".join(_broker_urls(text))


def _check_broker(value: object) -> None:
    if not isinstance(value, str):
        raise ValueError(f"expected nats://HOST:PORT[,...], got {value!r}")
    _broker_urls(value)


def redact_urls(urls: str) -> str:
    """Broker URLs without passwords or tokens (for --help, errors and logs)."""
    return re.sub(r"//[^@/,]*@", "//***@", urls)


BROKER_URLS: Final = Kind(
    "URLS", _parse_broker, _check_broker, redact_urls, none_allowed=True, typed_in_toml=False
)


def choice(values: tuple[str, ...]) -> Kind:
    """A kind whose values are one of `values` (a policy)."""

    def check(value: object) -> None:
        if value not in values:
            raise ValueError(f"expected one of {', '.join(values)}, got {value!r}")

    return Kind("POLICY", str, check, choices=values)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
