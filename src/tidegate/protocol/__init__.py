"""The sans-I/O core of the tidegate wire contract: bytes in, events out, bytes out.

Nothing in this package imports asyncio or socket, or reads a clock; adapters in
`tidegate.gateway` drive it and pass the time in.
"""

from tidegate.protocol.connection import (
    AuthFailed,
    Closing,
    Connection,
    Event,
    Identity,
    Joined,
    Left,
    Limits,
    Opened,
    State,
)
from tidegate.protocol.errors import PeerError, UsageError
from tidegate.protocol.frames import (
    BadFrame,
    ErrorCode,
    FrameError,
    Hello,
    encode_error,
    encode_msg,
)
from tidegate.protocol.ingress import (
    BadPush,
    DatagramVerifier,
    Push,
    Rejected,
    RejectReason,
    Target,
    parse_push,
    parse_target,
    sign,
    split_batch,
)
from tidegate.protocol.lines import LineSplitter, LineTooLong

__all__ = [
    "AuthFailed",
    "BadFrame",
    "BadPush",
    "Closing",
    "Connection",
    "DatagramVerifier",
    "ErrorCode",
    "Event",
    "FrameError",
    "Hello",
    "Identity",
    "Joined",
    "Left",
    "Limits",
    "LineSplitter",
    "LineTooLong",
    "Opened",
    "PeerError",
    "Push",
    "RejectReason",
    "Rejected",
    "State",
    "Target",
    "UsageError",
    "encode_error",
    "encode_msg",
    "parse_push",
    "parse_target",
    "sign",
    "split_batch",
]
