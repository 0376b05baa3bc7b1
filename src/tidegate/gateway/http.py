"""The HTTP push ingress: `POST /v1/push` with one push, or a JSON array of them.

Replies (all JSON):

- 200 `{"id": ..., "delivered": n}` for one push (`n`: connections reached on this node);
  for a batch, 200 and an array with one entry per item, in order: `{"id", "delivered"}` or
  `{"error": <reason>, "reason": <text>}`. With a broker (cluster mode) each accepted push
  also says `"published": true` once the broker acknowledged it for the other nodes
  (`false`: delivered here, not confirmed elsewhere; rare: the broker went away meanwhile).
- 400 `{"error": <reason>, "reason": <text>}`: invalid JSON (bytes that are not UTF-8
  included), a body of the wrong shape or types, an unknown `to` form, an empty batch;
  nothing is delivered. `bad_encoding`: the body does not decode as its `Content-Encoding`
  says (a plain body sent as gzip); the connection is closed after that reply.
- 401 bad or missing `Authorization: Bearer <api key>` (when a key is configured).
- 413 body over `max_body`, or a batch of more than `max_batch` items (`too_large`; nothing of
  the batch is delivered), or a push over the broker's message limit; 415 a content type
  other than JSON.
- 503 `broker_unavailable` (cluster mode): the broker is unreachable, so the push (or the
  whole batch) was delivered nowhere and may be retried (`Retry-After: 1`).

Every refusal is counted in `statistics().rejections` by its reason. Bad input never reaches a
500: the only code that can raise is ours, and it raises only `Rejected` and `NotPublished`.
Delivery is synchronous, like a UDP datagram: parse, fan out, reply; the handler never waits
on a client (in cluster mode it waits for one broker round trip, for `published`).
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Final

import msgspec
from aiohttp import web

from tidegate.bearer import bearer_token, secret_matches
from tidegate.gateway.push_api import Confirmation, NotPublished, PushFunction
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


# Refusals that are not the body's fault: the broker's (cluster mode).
_STATUS: Final = {"broker_unavailable": 503, "too_large": 413}


def build_push_app(
    *,
    push: PushFunction,
    confirmation: Confirmation | None = None,
    rejections: Counter[str],
    api_key: str | None,
    max_body: int,
    max_batch: int,
) -> web.Application:
    """The app serving `POST /v1/push`: pushes go to `push`, refusals are counted by reason
    in `rejections`; with `confirmation` (cluster mode) replies say whether the broker
    acknowledged the pushes."""

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
        try:
            result = push(target, item.data, id=item.id, ingress="http")
        except NotPublished as exc:
            return reject(exc.code, exc.detail)
        return {"id": result.id, "delivered": result.delivered}

    async def confirm(documents: list[dict[str, Any]], mark: int) -> None:
        if confirmation is None:
            return
        accepted = [document for document in documents if "error" not in document]
        if accepted:
            published = await confirmation.published(mark)
            for document in accepted:
                document["published"] = published

    def refused(document: dict[str, Any]) -> web.Response:
        status = _STATUS.get(document["error"], 400)
        headers = {"Retry-After": "1"} if status == 503 else None
        return _json(status, document, headers)

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
        mark = confirmation.mark() if confirmation is not None else 0
        if items is None:
            document = push_one(body)
            if "error" in document:
                return refused(document)
            await confirm([document], mark)
            return _json(200, document)
        if len(items) > max_batch:
            return refuse(
                413,
                "too_large",
                f"batch of {len(items)} items over the limit of {max_batch} (max_batch)",
            )
        documents = [push_one(bytes(item)) for item in items]
        if documents and all(d.get("error") == "broker_unavailable" for d in documents):
            # One synchronous pass: the broker was away for the whole batch.
            return refused(documents[0])
        await confirm(documents, mark)
        return _json(200, documents)

    app = web.Application(client_max_size=max_body)
    app.router.add_post("/v1/push", handle_push)
    return app
