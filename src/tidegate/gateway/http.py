"""The HTTP push ingress: `POST /v1/push` with one push, or a JSON array of them.

Replies (all JSON):

- 200 `{"id": ..., "delivered": n}` for one push; for a batch, 200 and an array with one
  entry per item, in order: `{"id", "delivered"}` or `{"error": <reason>, "reason": <text>}`.
- 400 `{"error": <reason>, "reason": <text>}`: invalid JSON (bytes that are not UTF-8
  included), a body of the wrong shape or types, an unknown `to` form, an empty batch;
  nothing is delivered. `bad_encoding`: the body does not decode as its `Content-Encoding`
  says (a plain body sent as gzip); the connection is closed after that reply.
- 401 bad or missing `Authorization: Bearer <api key>` (when a key is configured).
- 413 body over `max_body`, or a batch of more than `max_batch` items (`too_large`; nothing of
  the batch is delivered); 415 a content type other than JSON.

Every refusal is counted in `statistics().rejections` by its reason. Bad input never reaches a
500: the only code that can raise is ours, and it raises only `Rejected`. Delivery is
synchronous, like a UDP datagram: parse, fan out, reply; the handler never waits on a client.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Final

import msgspec
from aiohttp import web

from tidegate.bearer import bearer_token, secret_matches
from tidegate.gateway.push_api import PushFunction
from tidegate.protocol import Rejected, parse_push, split_batch

__all__ = ["build_push_app"]

_JSON_TYPES: Final = frozenset({"application/json"})
_encode = msgspec.json.Encoder().encode


def _json(status: int, document: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, body=_encode(document), content_type="application/json", headers=headers
    )


def _undecodable(request: web.Request) -> str:
    """Why aiohttp could not read the body (`RequestPayloadError`): it did not decode as its
    `Content-Encoding` says (a plain body sent as gzip), or its chunked framing broke."""
    encoding = request.headers.get("Content-Encoding", "").strip()
    if encoding:
        return f"body is not valid {encoding} data, as its Content-Encoding says"
    return "body could not be read: broken transfer encoding"


def build_push_app(
    *,
    push: PushFunction,
    rejections: Counter[str],
    api_key: str | None,
    max_body: int,
    max_batch: int,
) -> web.Application:
    """The app serving `POST /v1/push`: pushes go to `push`, refusals are counted by reason
    in `rejections`."""

    def reject(error: str, reason: str) -> dict[str, str]:
        """The one place a refusal is counted; returns its JSON document."""
        rejections[error] += 1
        return {"error": error, "reason": reason}

    def refuse(status: int, error: str, reason: str, **headers: str) -> web.Response:
        return _json(status, reject(error, reason), headers or None)

    def push_one(body: bytes) -> dict[str, Any]:
        try:
            item, target = parse_push(body)
        except Rejected as exc:
            return reject(exc.code.value, exc.detail)
        result = push(target, item.data, id=item.id, ingress="http")
        return {"id": result.id, "delivered": result.delivered}

    async def handle_push(request: web.Request) -> web.Response:
        if api_key is not None:
            given = bearer_token(request.headers.get("Authorization", ""))
            if given is None or not secret_matches(given, api_key):
                return refuse(
                    401,
                    "unauthorized",
                    "send Authorization: Bearer <api key>",
                    **{"WWW-Authenticate": 'Bearer realm="tidegate-push"'},
                )
        if request.content_type not in _JSON_TYPES:
            return refuse(
                415,
                "unsupported_media_type",
                f"Content-Type must be application/json, got {request.content_type!r}",
            )
        too_large = f"body over {max_body} bytes"
        if request.content_length is not None and request.content_length > max_body:
            return refuse(413, "too_large", too_large)
        try:
            body = await request.read()  # bounded by client_max_size, also when chunked
        except web.HTTPRequestEntityTooLarge:
            return refuse(413, "too_large", too_large)
        except web.RequestPayloadError:
            # The body stream now holds that error: mark it ended, or aiohttp's drain of an
            # unread body re-raises it after the reply and logs a traceback. The rest of the
            # body is unparsed, so the connection cannot carry another request: close it.
            request.content.feed_eof()
            response = refuse(400, "bad_encoding", _undecodable(request))
            response.force_close()
            return response
        try:
            items = split_batch(body)
        except Rejected as exc:
            return refuse(400, exc.code.value, exc.detail)
        if items is None:
            document = push_one(body)
            return _json(400 if "error" in document else 200, document)
        if len(items) > max_batch:
            return refuse(
                413,
                "too_large",
                f"batch of {len(items)} items over the limit of {max_batch} (max_batch)",
            )
        return _json(200, [push_one(bytes(item)) for item in items])

    app = web.Application(client_max_size=max_body)
    app.router.add_post("/v1/push", handle_push)
    return app
