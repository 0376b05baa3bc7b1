"""The HTTP push ingress: `POST /v1/push` with one push, or a JSON array of them.

Replies (all JSON):

- 200 `{"id": ..., "delivered": n}` for one push (`n`: connections reached on this node);
  for a batch, 200 and an array with one entry per item, in order: `{"id", "delivered"}` or
  `{"error": <reason>, "reason": <text>}`. With a broker (cluster mode) each accepted push
  also says `"published": true` once the broker acknowledged it for the other nodes
  (`false`: delivered here, not confirmed elsewhere; rare: the broker went away meanwhile).
- 400 `{"error": <reason>, "reason": <text>}`: invalid JSON (bytes that are not UTF-8
  included), a body of the wrong shape or types, an unknown `to` form, an `id` over 128
  bytes, an empty batch; nothing is delivered. `bad_encoding`: the body does not decode as
  its `Content-Encoding` says (a plain body sent as gzip); the connection is closed after it.
- 401 bad or missing `Authorization: Bearer <api key>` (when a key is configured); checked
  before anything of the body is read, so nobody decompresses anything without the key.
- 408 `timeout`: the body did not arrive within `http_body_timeout`.
- 413 body over `max_body`, before or after decoding, or decoding to more than 1024 times its
  size, or a batch of more than `max_batch` items (`too_large`; nothing of the batch is
  delivered), or a push over the broker's message limit; 415 a content type other than JSON,
  or a `Content-Encoding` other than gzip or deflate (`unsupported_encoding`). The body is
  read and decoded by http_body.py.
- 503 `broker_unavailable` (cluster mode): the broker is unreachable, so the push (or the
  whole batch) was delivered nowhere and may be retried (`Retry-After: 1`).

Every refusal is counted in `statistics().rejections` by its reason. Bad input never reaches a
500: the only code that can raise is ours, and it raises only `Rejected` and `NotPublished`.
Delivery is synchronous, like a UDP datagram: parse, fan out, reply; the handler never waits
on a client (in cluster mode it waits for one broker round trip, for `published`). A batch
waits between items while the fan-out is behind (`fanout_catch_up`), so that a big batch to a
big room is written a slice per loop turn, with everyone else served in between; each item's
`delivered` counts the connections that took it when it was pushed.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, Final

import msgspec
from aiohttp import web

from tidegate.bearer import bearer_token, secret_matches
from tidegate.gateway.http_body import BodyRefused, check_encoding, read_body
from tidegate.gateway.push_api import Confirmation, NotPublished, PushFunction
from tidegate.protocol import Rejected, parse_push, split_batch

__all__ = ["build_push_app"]

_JSON_TYPES: Final = frozenset({"application/json"})
_encode = msgspec.json.Encoder().encode


def _json(status: int, document: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, body=_encode(document), content_type="application/json", headers=headers
    )


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
    body_timeout: float,
    fanout_catch_up: Callable[[], Awaitable[None] | None],
) -> web.Application:
    """The app serving `POST /v1/push`: pushes go to `push`, refusals are counted by reason
    in `rejections`; with `confirmation` (cluster mode) replies say whether the broker
    acknowledged the pushes. Before each item of a batch, `fanout_catch_up()` returns None,
    or what to wait for first: the fan-out is behind, or this turn's pushes have had their
    budget."""

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
        try:
            coding = check_encoding(request.headers.get("Content-Encoding", ""))
            if request.content_length is not None and request.content_length > max_body:
                raise BodyRefused(413, "too_large", f"body over {max_body} bytes")
            async with asyncio.timeout(body_timeout):
                body = await read_body(request.content, coding=coding, max_body=max_body)
        except BodyRefused as exc:
            response = refuse(exc.status, exc.error, exc.reason)
            response.force_close()  # what is left of the body is not read
            return response
        except TimeoutError:
            response = refuse(408, "timeout", f"body not received within {body_timeout:g} s")
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
        documents = []
        for item in items:
            waiting = fanout_catch_up()
            if waiting is not None:
                await waiting
            documents.append(push_one(bytes(item)))
        if documents and all(d.get("error") == "broker_unavailable" for d in documents):
            # The broker was away for the whole batch: nothing of it was delivered anywhere.
            return refused(documents[0])
        await confirm(documents, mark)
        return _json(200, documents)

    app = web.Application(client_max_size=max_body)
    app.router.add_post("/v1/push", handle_push)
    return app
