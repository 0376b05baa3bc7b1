"""Reading an HTTP push body: bounded in bytes and ratio, decoded a slice at a time.

aiohttp decodes `Content-Encoding` in its payload parser, in one go, before anyone asked: a
1 MB gzip that unpacks to 1000 MiB held the loop for seconds, authenticated or not. The
gateway's listeners turn that off (`auto_decompress=False`, web_listener.py) and the push
handler calls `read_body` here once the key is accepted:

- the raw body may be at most `max_body` bytes, however it is framed (length or chunked);
- `gzip` and `deflate` (zlib) bodies are inflated `SLICE` bytes at a time, with the loop served
  between slices; the decoded body may be at most `max_body` bytes, and at most `MAX_RATIO`
  times what was received so far (a bomb is refused after its first slices, not at the end);
- any other coding (`br`, `zstd`, `compress`, two codings) is refused before a byte is read.

Every refusal is a `BodyRefused` carrying the HTTP status, the error code and a reason.
"""

from __future__ import annotations

import asyncio
import zlib
from typing import Final

from aiohttp import StreamReader, web

__all__ = ["MAX_RATIO", "SLICE", "BodyRefused", "check_encoding", "read_body"]

SLICE: Final = 64 * 1024  # decoded bytes per step: ~0.1 ms of inflate
MAX_RATIO: Final = 1024  # decoded bytes per received byte; JSON compresses ~5-50x

_WBITS: Final = {
    "gzip": 16 + zlib.MAX_WBITS,
    "x-gzip": 16 + zlib.MAX_WBITS,
    "deflate": zlib.MAX_WBITS,
}


class BodyRefused(Exception):
    """The body cannot be taken: `status` to answer, `error` to count, `reason` in words."""

    def __init__(self, status: int, error: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.error = error
        self.reason = reason


def check_encoding(header: str) -> str | None:
    """The one coding to undo ("gzip", "deflate", ...) or None; `BodyRefused` (415) for a
    coding this gateway does not decode."""
    codings = [c.strip().lower() for c in header.split(",")]
    codings = [c for c in codings if c and c != "identity"]
    if not codings:
        return None
    if len(codings) == 1 and codings[0] in _WBITS:
        return codings[0]
    raise BodyRefused(
        415,
        "unsupported_encoding",
        f"Content-Encoding {header.strip()!r} is not supported: send gzip, deflate or none",
    )


async def read_body(content: StreamReader, *, coding: str | None, max_body: int) -> bytes:
    """The whole body, decoded; `BodyRefused` as soon as a bound is passed."""
    decoder = None if coding is None else zlib.decompressobj(_WBITS[coding])
    body = bytearray()
    received = 0
    while True:
        try:
            chunk = await content.readany()
        except web.RequestPayloadError:
            raise BodyRefused(
                400, "bad_encoding", "body could not be read: broken transfer encoding"
            ) from None
        if not chunk:
            break
        received += len(chunk)
        if received > max_body:
            raise BodyRefused(413, "too_large", f"body over {max_body} bytes")
        if decoder is None:
            body += chunk
        else:
            await _inflate(decoder, chunk, body, coding, received=received, max_body=max_body)
    if decoder is not None:
        if not decoder.eof:
            raise BodyRefused(
                400, "bad_encoding", f"body is not valid {coding} data: it ends early"
            )
        if decoder.unused_data:
            raise BodyRefused(
                400, "bad_encoding", f"body has data after the end of its {coding} stream"
            )
    return bytes(body)


async def _inflate(
    decoder: zlib._Decompress,
    data: bytes,
    body: bytearray,
    coding: str | None,
    *,
    received: int,
    max_body: int,
) -> None:
    while data:
        try:
            body += decoder.decompress(data, SLICE)
        except zlib.error:
            raise BodyRefused(
                400,
                "bad_encoding",
                f"body is not valid {coding} data, as its Content-Encoding says",
            ) from None
        if len(body) > max_body:
            raise BodyRefused(413, "too_large", f"decoded body over {max_body} bytes")
        if len(body) > MAX_RATIO * received:
            raise BodyRefused(
                413, "too_large", f"body decodes to more than {MAX_RATIO} times its size"
            )
        data = decoder.unconsumed_tail
        if data:
            await asyncio.sleep(0)  # more to inflate: let the loop serve the others first
