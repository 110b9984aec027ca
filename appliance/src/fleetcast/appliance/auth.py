"""API key guards: ``X-API-Key`` on writes (when a key is configured) and optionally reads.

The key is compared in constant time (``hmac.compare_digest``) on its UTF-8 bytes. A
missing or wrong key is a 401 with the JSON error body. The key itself is never logged.

On a WebSocket a guard could only close the handshake, which the server answers with a
bare HTTP 403; :func:`websocket_key_middleware` checks the key first and refuses the
handshake with a real HTTP 401 and the same JSON body (the ASGI WebSocket Denial Response
extension, which uvicorn supports; without it, a close with code 4401).
"""

from __future__ import annotations

import hmac
import logging
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import msgspec
from litestar.connection import ASGIConnection

from fleetcast.appliance.http_errors import ApiError
from fleetcast.appliance.schemas import ErrorBody

if TYPE_CHECKING:
    from litestar.handlers.base import BaseRouteHandler
    from litestar.types import ASGIApp, Receive, Scope, Send

__all__ = [
    "API_KEY_HEADER",
    "DENIAL_LOG_FILTER",
    "deny_websocket",
    "key_matches",
    "read_guard",
    "websocket_key_middleware",
    "write_guard",
]

API_KEY_HEADER = "X-API-Key"
_SEE = "docs/OPERATIONS.md#api-key"
_DENIED: ContextVar[bool] = ContextVar("fleetcast_websocket_denied", default=False)
"""Set in the task of a WebSocket handshake this app refused with an HTTP response."""
_INCOMPLETE_HANDSHAKE = "ASGI callable returned without completing handshake"


class _DenialLogFilter(logging.Filter):
    """Drops uvicorn's "ASGI callable returned without completing handshake." ERROR after a
    handshake this app refused on purpose with an HTTP 401: uvicorn's websockets-sansio
    protocol does not count a denial response as a finished handshake (uvicorn pull request
    #3138). Only records logged in the task of such a refusal are dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (_DENIED.get() and str(record.msg).startswith(_INCOMPLETE_HANDSHAKE))


DENIAL_LOG_FILTER = _DenialLogFilter()
"""Add to the ``uvicorn.error`` logger (the app factory does)."""


def key_matches(expected: str, given: str | None) -> bool:
    """Constant-time comparison of the configured key with the one a client sent."""
    if given is None:
        return False
    return hmac.compare_digest(expected.encode("utf-8"), given.encode("utf-8"))


def _check(connection: ASGIConnection[Any, Any, Any, Any], what: str) -> None:
    settings = connection.app.state.runtime.settings
    if settings.api_key is None:
        return
    given = connection.headers.get(API_KEY_HEADER)
    if key_matches(settings.api_key, given):
        return
    raise ApiError(
        401,
        "missing API key" if given is None else "wrong API key",
        f"{what} requires the {API_KEY_HEADER} header with the appliance's API key"
        + ("" if given is None else "; the key sent does not match"),
        f"send `{API_KEY_HEADER}: <key>` (the appliance's key: its --api-key-file, or FLEETCAST_API_KEY)",
        _SEE,
    )


def write_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Guard of every write endpoint: the key is required whenever one is configured."""
    _check(connection, "this write endpoint")


def read_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Guard of read endpoints: the key is required only with ``--read-key-required``."""
    if connection.app.state.runtime.settings.read_key_required:
        _check(connection, "reading (the appliance runs with --read-key-required)")


def websocket_key_middleware(app: ASGIApp) -> ASGIApp:
    """Middleware of the WebSocket route: without the key (``--read-key-required``) the
    handshake is refused with HTTP 401 and the four-part JSON body, as for a GET."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await app(scope, receive, send)
            return
        try:
            read_guard(ASGIConnection(scope, receive, send), None)  # type: ignore[arg-type]
        except ApiError as exc:
            await deny_websocket(scope, receive, send, exc)
            return
        await app(scope, receive, send)

    return middleware


async def deny_websocket(scope: Scope, receive: Receive, send: Send, exc: ApiError) -> None:
    """Refuse a WebSocket handshake with ``exc`` as a real HTTP answer (its status and the
    four-part JSON body) where the server supports denial responses, else a close with
    code 4000 + status."""
    message = await receive()  # websocket.connect: the handshake the answer refers to
    if message["type"] != "websocket.connect":
        return
    if "websocket.http.response" in (scope.get("extensions") or {}):
        body = msgspec.json.encode(
            ErrorBody(error=exc.error, detail=exc.detail, fix=exc.fix, see=exc.see)
        )
        await send(
            {
                "type": "websocket.http.response.start",
                "status": exc.status_code,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "websocket.http.response.body", "body": body, "more_body": False})
        _DENIED.set(True)  # same task as uvicorn's run_asgi: see _DenialLogFilter
        return
    # No denial responses (e.g. the test client): close with 4000 + status; a close reason
    # holds at most 123 bytes.
    reason = exc.detail.encode("utf-8")[:123].decode("utf-8", "ignore")
    await send({"type": "websocket.close", "code": 4000 + exc.status_code, "reason": reason})
