"""Config sources and precedence: flags > env > file > defaults; clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from tidegate.cli import build_parser, main
from tidegate.gateway import Config, ConfigError, load_config
from tidegate.gateway.config import BY_NAME, OPTIONS, SUBJECT_PREFIX
from tidegate.gateway.options import (
    ADDRESS,
    BROKER_URLS,
    BYTES,
    COUNT,
    RATE,
    SECONDS,
    SECRET,
    markdown_table,
)


def test_defaults_bind_loopback() -> None:
    config = load_config()
    assert config == Config()
    assert config.tcp == ("127.0.0.1", 7400)
    assert config.udp == ("127.0.0.1", 7401)
    assert config.admin == ("127.0.0.1", 7402)
    assert config.http == ("127.0.0.1", 7403)
    assert (config.max_conns, config.max_line, config.max_rooms) == (10_000, 65_536, 128)
    assert (config.buffer_bytes, config.overflow, config.write_timeout) == (
        1 << 20,
        "disconnect",
        5.0,
    )
    assert (config.handshake_timeout, config.heartbeat) == (5.0, 25.0)
    assert config.effective_idle_timeout == 50.0
    assert (config.max_body, config.max_batch) == (1 << 20, 1000)


def test_max_batch_from_every_source(tmp_path: Path) -> None:
    file = tmp_path / "gw.toml"
    file.write_text("max-batch = 10\n")
    assert load_config(file=file).max_batch == 10
    assert load_config(env={"TIDEGATE_MAX_BATCH": "20"}, file=file).max_batch == 20
    flags = {"max_batch": "30"}
    assert load_config(flags=flags, env={"TIDEGATE_MAX_BATCH": "20"}).max_batch == 30


def test_precedence(tmp_path: Path) -> None:
    file = tmp_path / "gw.toml"
    file.write_text(
        'tcp = "0.0.0.0:9000"\nmax-conns = 5\nheartbeat = 3\noverflow = "drop-oldest"\n'
        'secret = "from-file"\n'
    )
    env = {"TIDEGATE_MAX_CONNS": "6", "TIDEGATE_HEARTBEAT": "4", "TIDEGATE_SECRET": "from-env"}
    config = load_config(flags={"max_conns": "7", "tcp": None}, env=env, file=file)
    assert config.tcp == ("0.0.0.0", 9000)  # file only
    assert config.heartbeat == 4.0  # env beats file
    assert config.max_conns == 7  # flag beats env
    assert config.overflow == "drop-oldest"
    assert config.secret == "from-env"


def test_config_file_from_env(tmp_path: Path) -> None:
    file = tmp_path / "gw.toml"
    file.write_text('max_line = 1024\nudp = "off"\n')
    config = load_config(env={"TIDEGATE_CONFIG": str(file)})
    assert config.max_line == 1024 and config.udp is None


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"max_conns": "lots"}, "--max-conns: expected an integer, got 'lots'"),
        ({"max_conns": "0"}, "max_conns: expected a positive integer"),
        ({"heartbeat": "0"}, "--heartbeat: invalid duration '0': must be longer than zero"),
        ({"write_timeout": "soon"}, "--write-timeout: invalid duration 'soon'"),
        ({"tcp": "localhost"}, "--tcp: expected HOST:PORT"),
        ({"udp": "1.2.3.4:99999"}, "--udp: port out of range"),
        ({"overflow": "queue"}, "overflow: expected one of disconnect, drop-oldest, drop-newest"),
        ({"max_batch": "0"}, "--max-batch: max_batch: expected a positive integer, got 0"),
        ({"max_batch": "many"}, "--max-batch: expected an integer, got 'many'"),
    ],
)
def test_bad_values_name_the_option(flags: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_config(flags=flags)


def test_durations_take_units_like_every_duration_option() -> None:
    config = load_config(flags={"heartbeat": "1.5s", "close_linger": "500ms"})
    assert (config.heartbeat, config.close_linger) == (1.5, 0.5)
    assert load_config(env={"TIDEGATE_REPLAY_WINDOW": "1m30s"}).replay_window == 90


def test_bad_env_and_file_name_their_source(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="TIDEGATE_MAX_LINE"):
        load_config(env={"TIDEGATE_MAX_LINE": "big"})
    file = tmp_path / "bad.toml"
    file.write_text("nonsense = 1\n")
    with pytest.raises(ConfigError, match="unknown option 'nonsense'"):
        load_config(file=file)
    file.write_text("tcp = [1]\n")
    with pytest.raises(ConfigError, match="HOST:PORT"):
        load_config(file=file)
    file.write_text("secret = 123\n")
    with pytest.raises(ConfigError, match="secret: expected a non-empty string, got 123"):
        load_config(file=file)
    file.write_text("this is not toml")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(file=file)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(file=tmp_path / "missing.toml")


def test_addresses() -> None:
    config = load_config(flags={"tcp": "[::1]:0", "admin": ":8080", "udp": "off"})
    assert config.tcp == ("::1", 0)
    assert config.admin == ("127.0.0.1", 8080)
    assert config.udp is None


def test_cli_flags_map_to_config_fields() -> None:
    args = build_parser().parse_args(
        [
            "serve",
            "--tcp", "127.0.0.1:1",
            "--udp", "127.0.0.1:2",
            "--admin", "127.0.0.1:3",
            "--secret", "s",
            "--max-conns", "4",
            "--handshake-timeout", "5",
            "--heartbeat", "6",
            "--max-line", "700",
            "--buffer-bytes", "800",
            "--overflow", "drop-newest",
            "--write-timeout", "9",
            "--max-batch", "10",
            "--config", "x.toml",
        ]
    )  # fmt: skip
    assert (args.tcp, args.udp, args.admin, args.secret) == (
        "127.0.0.1:1",
        "127.0.0.1:2",
        "127.0.0.1:3",
        "s",
    )
    assert (args.max_conns, args.handshake_timeout, args.heartbeat) == ("4", "5", "6")
    assert (args.max_line, args.buffer_bytes, args.overflow, args.write_timeout) == (
        "700",
        "800",
        "drop-newest",
        "9",
    )
    assert args.max_batch == "10"
    assert args.config == "x.toml"


def test_every_option_has_a_flag_an_env_var_and_a_toml_key(tmp_path: Path) -> None:
    # One value other than the default per option, through each source in turn.
    sample = {
        ADDRESS: "127.0.0.1:9",
        COUNT: "7",
        BYTES: "7",
        SECONDS: "7",
        SECRET: "s",
        RATE: "7",
        BROKER_URLS: "nats://127.0.0.1:4333",
        SUBJECT_PREFIX: "acme.push",
    }
    text = {
        opt.name: opt.kind.choices[-1] if opt.kind.choices else sample[opt.kind] for opt in OPTIONS
    }
    args = build_parser().parse_args(
        ["serve", *(f"{BY_NAME[name].flag}={value}" for name, value in text.items())]
    )
    expected = load_config(flags={opt.name: getattr(args, opt.name) for opt in OPTIONS})
    assert all(getattr(expected, name) != opt.default for name, opt in BY_NAME.items())
    assert load_config(flags=text) == expected
    assert load_config(env={BY_NAME[name].env: value for name, value in text.items()}) == expected
    file = tmp_path / "all.toml"
    file.write_text("".join(f'{name} = "{value}"\n' for name, value in text.items()))
    assert load_config(file=file) == expected


def test_serve_help_shows_every_option_with_its_default(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--help"])
    out = "".join(capsys.readouterr().out.split())  # argparse wraps lines its own way
    for opt in OPTIONS:
        assert "".join(opt.help_line().split()) in out, opt.name
    assert "(default10000)" in out and "(default2xheartbeat)" in out


def test_the_docs_options_table_is_the_declared_one() -> None:
    docs = (Path(__file__).parents[2] / "docs" / "gateway.md").read_text()
    start = docs.index("\n", docs.index("<!-- options: generated")) + 1
    end = docs.index("<!-- options: end -->")
    expected = markdown_table(OPTIONS)
    assert docs[start:end] == expected, (
        "docs/gateway.md's options table is out of date; replace it with:\n" + expected
    )


CREDENTIALS = [
    ("udp", "secret", "--secret"),
    ("tcp", "jwt_secret", "--jwt-secret"),
    ("http", "api_key", "--api-key"),
    ("admin", "admin_token", "--admin-token"),
]


@pytest.mark.parametrize(("listener", "credential", "flag"), CREDENTIALS)
def test_a_credential_beyond_loopback_needs_32_bytes(
    listener: str, credential: str, flag: str
) -> None:
    public = {listener: ("0.0.0.0", 7000)}
    short = Config(**{**public, credential: "x" * 31})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=f"{credential}: 31 bytes is too short") as info:
        short.check_startable()
    assert flag in str(info.value) and "secrets.token_urlsafe(32)" in str(info.value)
    # Bytes of UTF-8, not characters: ten three-byte characters fall short.
    with pytest.raises(ConfigError, match="30 bytes is too short"):
        Config(**{**public, credential: "€" * 10}).check_startable()  # type: ignore[arg-type]
    Config(**{**public, credential: "€" * 11}).check_startable()  # type: ignore[arg-type]  # 33
    Config(**{**public, credential: "x" * 32}).check_startable()  # type: ignore[arg-type]
    # On loopback a short one is the operator's business (a development setup).
    loopback = {listener: ("127.0.0.1", 7000), credential: "dev"}
    Config(**loopback).check_startable()  # type: ignore[arg-type]


@pytest.mark.parametrize(("listener", "credential", "flag"), CREDENTIALS)
@pytest.mark.parametrize("value", [" ", "\t\n", " " + "k" * 40, "k" * 40 + " "])
def test_a_credential_of_or_edged_with_whitespace_is_refused_everywhere(
    listener: str, credential: str, flag: str, value: str
) -> None:
    with pytest.raises(ConfigError, match=f"{credential}: must not begin or end with whitespace"):
        Config(**{credential: value})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=f"{flag}: {credential}: must not begin"):
        load_config(flags={credential: value})


def test_serve_refuses_a_blank_admin_token_on_a_public_bind(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The review's case: `--admin-token " "` used to start on 0.0.0.0 (and `?token=%20`
    # opened /_stack).
    assert main(["serve", "--admin", "0.0.0.0:0", "--admin-token", " "]) == 2
    assert "must not begin or end with whitespace" in capsys.readouterr().err
