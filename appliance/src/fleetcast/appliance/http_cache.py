"""Conditional GETs and HEAD (RFC 9110): what pollers and probes expect of an HTTP API.

``GET /predictions/current`` is about 1.3 MB at 1,000 servers and changes once per 5-minute
step, while dashboards and scripts poll it far more often. It carries an ``ETag`` (a hash
of the body, so the same set has the same tag across restarts) and ``Cache-Control:
no-cache`` (a cache must ask again each time); a request with ``If-None-Match`` holding that
tag gets ``304 Not Modified`` with no body. docs/API.md#conditional-requests.

``HEAD`` on any ``GET`` route answers what ``GET`` would, headers only (status,
``Content-Length``, ``ETag``), as RFC 9110 §9.3.2 asks and as uptime checkers and ``curl
-I`` use it; :func:`head_as_get` does it for every route at once, before the router (which
knows only the GET).
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from litestar.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["etag", "head_as_get", "matches"]


def etag(body: bytes) -> str:
    """A strong entity tag of ``body`` (quoted, 24 hex digits of BLAKE2b)."""
    return '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'


def matches(if_none_match: str | None, tag: str) -> bool:
    """Whether an ``If-None-Match`` header value names ``tag``: ``*``, or a list of tags
    compared weakly (``W/"x"`` matches ``"x"``), RFC 9110 §13.1.2."""
    if not if_none_match:
        return False
    listed = [t.strip() for t in if_none_match.split(",")]
    return "*" in listed or any(t.removeprefix("W/") == tag for t in listed)


def _allow_head(message: Message) -> Message:
    """A response's ``Allow`` header (a 405's, an ``OPTIONS`` answer's) with ``HEAD`` added
    where it lists ``GET``: the router knows only the GET."""
    headers = list(message.get("headers", ()))
    for i, (name, value) in enumerate(headers):
        if name.lower() == b"allow":
            methods = [m.strip() for m in value.split(b",")]
            if b"GET" in methods and b"HEAD" not in methods:
                headers[i] = (name, b", ".join([*methods, b"HEAD"]))
                return {**message, "headers": headers}  # type: ignore[typeddict-item]
    return message


def head_as_get(app: ASGIApp) -> ASGIApp:
    """Run a ``HEAD`` request as ``GET`` and send its status and headers without the body;
    list ``HEAD`` in ``Allow`` beside ``GET``. Every other request passes unchanged."""

    async def handler(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        if scope["method"] != "HEAD":

            async def allowing(message: Message) -> None:
                if message["type"] == "http.response.start" and (
                    message["status"] == 405 or scope["method"] == "OPTIONS"
                ):
                    message = _allow_head(message)
                await send(message)

            await app(scope, receive, allowing)
            return

        async def headers_only(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 405:
                message = _allow_head(message)
            elif message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        # The same scope, not a copy: the router writes the route template into it, which
        # the request metrics outside read; they and the access log see HEAD again after.
        scope["method"] = "GET"
        try:
            await app(scope, receive, headers_only)
        finally:
            scope["method"] = "HEAD"

    return handler
