"""The per-connection state machine of the TCP line protocol, with no I/O and no clock.

The rule: every state change goes through `_TRANSITIONS` below and nowhere else. A pair that
is not in the table is a bug in our code (`UsageError`), never something a peer can trigger.

    HANDSHAKE --hello accepted--> OPEN
    HANDSHAKE / OPEN --error frame that closes--> CLOSING --transport gone--> CLOSED
    any state --peer EOF or reset--> CLOSED

The adapter feeds bytes with `receive_data(data, now)`, acts on the returned events (register a
user, join a room, close the transport), sends what `data_to_send()` returns, and calls
`check_timeouts(now)` from its sweeper. Time is always passed in.

Fairness is the core's too, in two parts. `receive_data(..., max_frames=n)` handles at most
`n` frames and keeps the rest of the input (`input_pending`), so an adapter can serve other
connections before it goes on with `receive_data(b"", now, max_frames=n)`. And every frame
spends one token of the connection's frame budget, a token bucket of `Limits.frame_burst`
tokens refilled at `Limits.frame_rate` per second: a frame with no token left closes the
connection with `rate_limited`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Final

from tidegate.protocol.errors import UsageError
from tidegate.protocol.frames import (
    CLOSING_CODES,
    BadFrame,
    ErrorCode,
    FrameError,
    Hello,
    Join,
    Leave,
    Ping,
    encode_error,
    encode_joined,
    encode_left,
    encode_pong,
    encode_welcome,
    parse_frame,
)
from tidegate.protocol.lines import LineSplitter, LineTooLong

__all__ = [
    "AuthFailed",
    "Closing",
    "Connection",
    "Event",
    "Identity",
    "Joined",
    "Left",
    "Limits",
    "Opened",
    "State",
]


_NO_ROOMS: Final[frozenset[str]] = frozenset()


class State(enum.Enum):
    HANDSHAKE = "handshake"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class Input(enum.Enum):
    HELLO_ACCEPTED = "hello_accepted"
    FRAME = "frame"
    ERROR_CLOSE = "error_close"
    PEER_GONE = "peer_gone"
    TRANSPORT_CLOSED = "transport_closed"


_H, _O, _C, _X = State.HANDSHAKE, State.OPEN, State.CLOSING, State.CLOSED

_TRANSITIONS: Final[dict[tuple[State, Input], State]] = {
    (_H, Input.HELLO_ACCEPTED): _O,
    (_H, Input.ERROR_CLOSE): _C,
    (_H, Input.PEER_GONE): _X,
    (_H, Input.TRANSPORT_CLOSED): _X,
    (_O, Input.FRAME): _O,
    (_O, Input.ERROR_CLOSE): _C,
    (_O, Input.PEER_GONE): _X,
    (_O, Input.TRANSPORT_CLOSED): _X,
    (_C, Input.PEER_GONE): _X,
    (_C, Input.TRANSPORT_CLOSED): _X,
    (_X, Input.PEER_GONE): _X,
    (_X, Input.TRANSPORT_CLOSED): _X,
}


class AuthFailed(FrameError):
    """Raised by an authenticate callback: the hello's credentials are not acceptable."""

    code = ErrorCode.AUTH_FAILED


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a hello authenticated as. `allowed_rooms=None` means any room may be joined;
    `valid_for` is how many seconds the credential stays valid from the hello (a token's
    `exp`), `None` for no limit."""

    user: str
    allowed_rooms: frozenset[str] | None = None
    valid_for: float | None = None


Authenticate = Callable[[Hello], Identity]


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """What one connection may do and how long it may take; the adapter derives them from its
    configuration (the gateway: `Config.limits()`), so they have no defaults of their own."""

    max_line: int
    max_rooms: int
    handshake_timeout: float
    heartbeat: float
    idle_timeout: float
    frame_rate: float  # frame budget: tokens added per second ...
    frame_burst: int  # ... up to this many (a new connection starts full)


@dataclass(frozen=True, slots=True)
class Opened:
    user: str


@dataclass(frozen=True, slots=True)
class Joined:
    room: str


@dataclass(frozen=True, slots=True)
class Left:
    room: str


@dataclass(frozen=True, slots=True)
class Closing:
    """The core queued an error frame; the adapter must flush it and close the transport."""

    code: ErrorCode
    reason: str


Event = Opened | Joined | Left | Closing


class Connection:
    """One client connection's protocol state. Not thread-safe; one owner drives it."""

    __slots__ = (
        "_authenticate",
        "_lines",
        "_outgoing",
        "_rooms",
        "_tokens",
        "_tokens_at",
        "allowed_rooms",
        "expires_at",
        "last_seen",
        "limits",
        "opened_at",
        "session",
        "state",
        "user",
    )

    def __init__(
        self, *, session: str, limits: Limits, authenticate: Authenticate, now: float
    ) -> None:
        self.session = session
        self.limits = limits
        self._authenticate = authenticate
        # Dropped whenever a read ends on a frame boundary (see `receive_data`), so that an
        # idle connection carries no splitter.
        self._lines: LineSplitter | None = LineSplitter(max_line=limits.max_line)
        # Replies of one read are collected and joined once: `bytes +=` would copy the whole
        # output again for every frame, quadratic in the frames of a read. None while empty,
        # so an idle connection carries no list.
        self._outgoing: list[bytes] | None = None
        self._tokens = float(limits.frame_burst)
        self._tokens_at = now
        self.state = State.HANDSHAKE
        self.opened_at = now
        self.last_seen = now
        self.user: str | None = None
        self.allowed_rooms: frozenset[str] | None = None
        self.expires_at: float | None = None  # when the hello's credential runs out
        self._rooms: set[str] | None = None  # allocated at the first join

    def _go(self, event: Input) -> None:
        try:
            self.state = _TRANSITIONS[self.state, event]
        except KeyError:
            raise UsageError(f"no transition from {self.state.name} on {event.name}") from None

    @property
    def buffered(self) -> int:
        """Bytes of an unfinished incoming line held by the core."""
        return 0 if self._lines is None else self._lines.buffered

    @property
    def input_pending(self) -> bool:
        """Input was received that `receive_data` has not handled yet (it stopped at
        `max_frames`); more calls with no new data handle it. False once the connection is
        closing: what it sent after that is never read."""
        lines = self._lines
        return (
            lines is not None
            and lines.unread > 0
            and (self.state is State.OPEN or self.state is State.HANDSHAKE)
        )

    @property
    def rooms(self) -> Collection[str]:
        """The rooms this connection joined (read-only view)."""
        return _NO_ROOMS if self._rooms is None else self._rooms

    def data_to_send(self) -> bytes:
        """Everything the core wants written since the last call, as one chunk."""
        out = self._outgoing
        if out is None:
            return b""
        self._outgoing = None
        return out[0] if len(out) == 1 else b"".join(out)

    def receive_data(self, data: bytes, now: float, *, max_frames: int = -1) -> list[Event]:
        """Consume bytes from the peer; return what the adapter must act on.

        With `max_frames` >= 0, at most that many frames are handled; the rest of the input
        is kept (`input_pending`) for the next call, which may pass no new data.
        """
        if self.state is not State.HANDSHAKE and self.state is not State.OPEN:
            # Bytes racing our own close are not worth reading.
            return []
        events: list[Event] = []
        lines = self._lines
        if lines is None:
            lines = self._lines = LineSplitter(max_line=self.limits.max_line)
        try:
            lines.feed(data)
            while max_frames != 0:
                line = lines.next_line()
                if line is None:
                    break
                max_frames -= 1
                # Only a whole frame is a sign of life: a byte now and then without a newline
                # must not hold a connection slot forever (slowloris).
                self.last_seen = now
                if not self._spend_token(now):
                    limits = self.limits
                    events.append(
                        self._error_close(
                            ErrorCode.RATE_LIMITED,
                            f"more than {limits.frame_burst} frames at once or "
                            f"{limits.frame_rate:g} frames/s",
                        )
                    )
                    break
                self._receive_line(line, events, now)
                if self.state is not State.HANDSHAKE and self.state is not State.OPEN:
                    break
        except LineTooLong as exc:
            events.append(self._error_close(exc.code, exc.detail))
            return events
        if lines.idle:
            self._lines = None
        return events

    def _spend_token(self, now: float) -> bool:
        """Take one token from the frame budget; False when none is left."""
        tokens = self._tokens
        limits = self.limits
        if now > self._tokens_at:
            tokens = min(tokens + (now - self._tokens_at) * limits.frame_rate, limits.frame_burst)
            self._tokens_at = now
        if tokens < 1.0:
            self._tokens = tokens
            return False
        self._tokens = tokens - 1.0
        return True

    def _receive_line(self, line: bytes, events: list[Event], now: float) -> None:
        try:
            frame = parse_frame(line)
        except BadFrame as exc:
            events.append(self._error_close(exc.code, exc.detail))
            return
        if self.state is State.HANDSHAKE:
            if not isinstance(frame, Hello):
                events.append(
                    self._error_close(ErrorCode.BAD_FRAME, "the first frame must be hello")
                )
                return
            try:
                identity = self._authenticate(frame)
            except AuthFailed as exc:
                events.append(self._error_close(exc.code, exc.detail))
                return
            self._go(Input.HELLO_ACCEPTED)
            self.user = identity.user
            self.allowed_rooms = identity.allowed_rooms
            if identity.valid_for is not None:
                self.expires_at = now + identity.valid_for
            self._send(
                encode_welcome(
                    user=identity.user, session=self.session, heartbeat=self.limits.heartbeat
                )
            )
            self.session = ""  # announced once, in welcome; an idle connection keeps no copy
            events.append(Opened(identity.user))
            return
        self._go(Input.FRAME)
        if isinstance(frame, Ping):
            self._send(encode_pong())
        elif isinstance(frame, Join):
            self._join(frame.room, events)
        elif isinstance(frame, Leave):
            if self._rooms is not None and frame.room in self._rooms:
                self._rooms.discard(frame.room)
                events.append(Left(frame.room))
            self._send(encode_left(frame.room))
        else:
            events.append(self._error_close(ErrorCode.BAD_FRAME, "hello was already received"))

    def _send(self, data: bytes) -> None:
        if self._outgoing is None:
            self._outgoing = [data]
        else:
            self._outgoing.append(data)

    def _join(self, room: str, events: list[Event]) -> None:
        rooms = self._rooms
        if rooms is not None and room in rooms:
            self._send(encode_joined(room))
            return
        if self.allowed_rooms is not None and room not in self.allowed_rooms:
            self._send(
                encode_error(ErrorCode.FORBIDDEN_ROOM, f"the token does not allow room {room!r}")
            )
            return
        if rooms is not None and len(rooms) >= self.limits.max_rooms:
            self._send(
                encode_error(
                    ErrorCode.TOO_MANY_ROOMS,
                    f"at most {self.limits.max_rooms} rooms per connection",
                )
            )
            return
        if rooms is None:
            rooms = self._rooms = set()
        rooms.add(room)
        self._send(encode_joined(room))
        events.append(Joined(room))

    def _error_close(self, code: ErrorCode, reason: str) -> Closing:
        self._go(Input.ERROR_CLOSE)
        self._send(encode_error(code, reason))
        return Closing(code, reason)

    def close(self, code: ErrorCode, reason: str) -> Closing | None:
        """Server-initiated close (shutdown, slow consumer, limits).

        Queues the error frame and returns the `Closing` event, or None when the connection is
        already closing or closed (so two reasons to close never produce two error frames).
        """
        if code not in CLOSING_CODES:
            raise UsageError(f"{code} does not close a connection")
        if self.state is State.CLOSING or self.state is State.CLOSED:
            return None
        return self._error_close(code, reason)

    def check_timeouts(self, now: float) -> Closing | None:
        """Called by the adapter's sweeper; returns `Closing` when a timeout expired."""
        if self.state is State.HANDSHAKE:
            if now - self.opened_at >= self.limits.handshake_timeout:
                return self._error_close(
                    ErrorCode.HANDSHAKE_TIMEOUT,
                    f"no hello within {self.limits.handshake_timeout:g} s",
                )
        elif self.state is State.OPEN:
            if now - self.last_seen >= self.limits.idle_timeout:
                return self._error_close(
                    ErrorCode.IDLE_TIMEOUT, f"no frame for {self.limits.idle_timeout:g} s"
                )
            # A token is checked at hello, but its `exp` holds for the whole connection:
            # the client reconnects with a fresh one.
            if self.expires_at is not None and now >= self.expires_at:
                return self._error_close(ErrorCode.AUTH_FAILED, "token expired")
        return None

    def peer_gone(self) -> None:
        """The peer sent EOF or reset: nothing more will be read or delivered."""
        self._go(Input.PEER_GONE)
        self._outgoing = None

    def transport_closed(self) -> None:
        """Our own close finished (flushed, lingered out or aborted)."""
        self._go(Input.TRANSPORT_CLOSED)
        self._outgoing = None
