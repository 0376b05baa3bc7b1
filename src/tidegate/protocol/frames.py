"""Client frames in, server frames out: the JSON-lines vocabulary of the contract.

Parsing turns one line into a typed frame or raises `BadFrame`. Encoding produces the exact
bytes of a server frame, newline included; `encode_msg` is the fan-out hot path, so it splices
the already-encoded ``data`` JSON instead of decoding and re-encoding it.
"""

from __future__ import annotations

import enum
from typing import Final

import msgspec

from tidegate.protocol.errors import PeerError

__all__ = [
    "CLOSING_CODES",
    "BadFrame",
    "ClientFrame",
    "ErrorCode",
    "FrameError",
    "Hello",
    "Join",
    "Leave",
    "Ping",
    "encode_error",
    "encode_joined",
    "encode_left",
    "encode_msg",
    "encode_pong",
    "encode_welcome",
    "parse_frame",
]


class ErrorCode(enum.StrEnum):
    """The `code` of an error frame, exactly as the contract spells it."""

    BAD_FRAME = "bad_frame"
    FRAME_TOO_LARGE = "frame_too_large"
    HANDSHAKE_TIMEOUT = "handshake_timeout"
    AUTH_FAILED = "auth_failed"
    IDLE_TIMEOUT = "idle_timeout"
    SLOW_CONSUMER = "slow_consumer"
    SERVER_SHUTDOWN = "server_shutdown"
    TOO_MANY_CONNECTIONS = "too_many_connections"
    RATE_LIMITED = "rate_limited"
    TOO_MANY_ROOMS = "too_many_rooms"
    FORBIDDEN_ROOM = "forbidden_room"


# The server closes the connection right after sending one of these; the others leave it open.
CLOSING_CODES: Final = frozenset(ErrorCode) - {ErrorCode.TOO_MANY_ROOMS, ErrorCode.FORBIDDEN_ROOM}


class FrameError(PeerError):
    """A peer error that the connection answers with an error frame of code `code`."""

    code: ErrorCode

    def __init__(self, detail: str) -> None:
        super().__init__(self.code, detail)


class BadFrame(FrameError):
    """The line is not a frame the contract allows (invalid JSON, unknown op, bad field)."""

    code = ErrorCode.BAD_FRAME


def _non_empty(value: str, field: str) -> None:
    if not value:
        raise ValueError(f"`{field}` must be a non-empty string")


class Hello(msgspec.Struct, tag_field="op", tag="hello", frozen=True):
    user: str | None = None
    token: str | None = None

    def __post_init__(self) -> None:
        if self.user is not None:
            _non_empty(self.user, "user")
        if self.token is not None:
            _non_empty(self.token, "token")


class Ping(msgspec.Struct, tag_field="op", tag="ping", frozen=True):
    pass


class Join(msgspec.Struct, tag_field="op", tag="join", frozen=True):
    room: str

    def __post_init__(self) -> None:
        _non_empty(self.room, "room")


class Leave(msgspec.Struct, tag_field="op", tag="leave", frozen=True):
    room: str

    def __post_init__(self) -> None:
        _non_empty(self.room, "room")


ClientFrame = Hello | Ping | Join | Leave

_decode_frame = msgspec.json.Decoder(ClientFrame).decode
_encode = msgspec.json.Encoder().encode


def parse_frame(line: bytes) -> ClientFrame:
    """Parse one line (without its newline). Unknown extra fields are ignored."""
    try:
        frame: ClientFrame = _decode_frame(line)
    except msgspec.ValidationError as exc:
        raise BadFrame(str(exc)) from None
    except msgspec.DecodeError:
        raise BadFrame("invalid JSON") from None
    except RecursionError:  # msgspec's answer to a few thousand nested brackets
        raise BadFrame("JSON nested too deeply") from None
    return frame


def encode_welcome(*, user: str, session: str, heartbeat: float) -> bytes:
    beat: float | int = int(heartbeat) if float(heartbeat).is_integer() else heartbeat
    return _encode({"op": "welcome", "user": user, "session": session, "heartbeat": beat}) + b"\n"


_PONG: Final = b'{"op":"pong"}\n'


def encode_pong() -> bytes:
    return _PONG


def encode_joined(room: str) -> bytes:
    return b'{"op":"joined","room":' + _encode(room) + b"}\n"


def encode_left(room: str) -> bytes:
    return b'{"op":"left","room":' + _encode(room) + b"}\n"


def encode_error(code: ErrorCode, reason: str) -> bytes:
    return (
        b'{"op":"error","code":"' + code.value.encode() + b'","reason":' + _encode(reason) + b"}\n"
    )


def encode_msg(*, to: str, id: str, data_json: bytes) -> bytes:
    """A `msg` frame. `data_json` must be one valid JSON value; it is spliced in as is.

    JSON may only contain a raw newline as insignificant whitespace (never inside a string),
    so a pretty-printed value is re-encoded compactly to keep the frame on one line.
    """
    if b"\n" in data_json or b"\r" in data_json:
        data_json = _encode(msgspec.json.decode(data_json))
    return (
        b'{"op":"msg","to":'
        + _encode(to)
        + b',"id":'
        + _encode(id)
        + b',"data":'
        + data_json
        + b"}\n"
    )
