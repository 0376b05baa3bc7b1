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

from typing import TYPE_CHECKING, Any, Final

import msgspec
from aiohttp import web

from tidegate.auth import bearer_token, secret_matches
from tidegate.protocol import Rejected, split_batch

if TYPE_CHECKING:
    from tidegate.gateway.server import Gateway

__all__ = ["build_push_app"]

_JSON_TYPES: Final = frozenset({"application/json"})
_encode = msgspec.json.Encoder().encode


def _json(status: int, document: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, body=_encode(document), content_type="application/json", headers=headers
    )


def _refuse(gateway: Gateway, status: int, error: str, reason: str, **headers: str) -> web.Response:
    gateway.counters.rejections[error] += 1
    return _json(status, {"error": error, "reason": reason}, headers or None)


def _rejected(exc: Rejected) -> dict[str, str]:
    return {"error": exc.code.value, "reason": exc.reason}


def _undecodable(request: web.Request) -> str:
    """Why aiohttp could not read the body (`RequestPayloadError`): it did not decode as its
    `Content-Encoding` says (a plain body sent as gzip), or its chunked framing broke."""
    encoding = request.headers.get("Content-Encoding", "").strip()
    if encoding:
        return f"body is not valid {encoding} data, as its Content-Encoding says"
    return "body could not be read: broken transfer encoding"


def build_push_app(
    gateway: Gateway, *, api_key: str | None, max_body: int, max_batch: int
) -> web.Application:
    async def push(request: web.Request) -> web.Response:
        if api_key is not None:
            given = bearer_token(request.headers.get("Authorization", ""))
            if given is None or not secret_matches(given, api_key):
                return _refuse(
                    gateway,
                    401,
                    "unauthorized",
                    "send Authorization: Bearer <api key>",
                    **{"WWW-Authenticate": 'Bearer realm="tidegate-push"'},
                )
        if request.content_type not in _JSON_TYPES:
            return _refuse(
                gateway,
                415,
                "unsupported_media_type",
                f"Content-Type must be application/json, got {request.content_type!r}",
            )
        too_large = f"body over {max_body} bytes"
        if request.content_length is not None and request.content_length > max_body:
            return _refuse(gateway, 413, "too_large", too_large)
        try:
            body = await request.read()  # bounded by client_max_size, also when chunked
        except web.HTTPRequestEntityTooLarge:
            return _refuse(gateway, 413, "too_large", too_large)
        except web.RequestPayloadError:
            # The body stream now holds that error: mark it ended, or aiohttp's drain of an
            # unread body re-raises it after the reply and logs a traceback. The rest of the
            # body is unparsed, so the connection cannot carry another request: close it.
            request.content.feed_eof()
            response = _refuse(gateway, 400, "bad_encoding", _undecodable(request))
            response.force_close()
            return response
        try:
            items = split_batch(body)
        except Rejected as exc:
            gateway.counters.rejections[exc.code.value] += 1
            return _json(400, _rejected(exc))
        if items is None:
            try:
                one = gateway.push_body(body, ingress="http")  # counts its own rejections
            except Rejected as exc:
                return _json(400, _rejected(exc))
            return _json(200, {"id": one.id, "delivered": one.delivered})
        if len(items) > max_batch:
            return _refuse(
                gateway,
                413,
                "too_large",
                f"batch of {len(items)} items over the limit of {max_batch} (max_batch)",
            )
        results: list[dict[str, Any]] = []
        for item in items:
            try:
                result = gateway.push_body(bytes(item), ingress="http")
            except Rejected as exc:
                results.append(_rejected(exc))
            else:
                results.append({"id": result.id, "delivered": result.delivered})
        return _json(200, results)

    app = web.Application(client_max_size=max_body)
    app.router.add_post("/v1/push", push)
    return app
