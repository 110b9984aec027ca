"""One structured log line per request: method, path, status, duration, client, bytes.

A plain ASGI middleware, the outermost, wrapped around Litestar's router rather than each
route (``app._edge``), so every answer is logged: the router's 404/405, a refused host's
400, the rate limiter's 429 (it answers inside the stack, see ``app._rate_limiter``) and
401/413/415 alike. The line is a JSON object on the ``fleetcast.appliance.access`` logger, e.g.
``{"method":"POST","path":"/metrics","status":200,"ms":3.1,"client":"127.0.0.1","bytes_in":5120,"bytes_out":41}``.
Query strings and headers are not logged (they could carry a key).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import msgspec

if TYPE_CHECKING:
    from litestar.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["ACCESS_LOGGER", "AccessLine", "access_log_middleware"]

ACCESS_LOGGER = "fleetcast.appliance.access"


class AccessLine(msgspec.Struct, frozen=True):
    """The fields of one access log line."""

    method: str
    path: str
    status: int
    ms: float
    client: str | None
    bytes_in: int
    bytes_out: int


def access_log_middleware(app: ASGIApp) -> ASGIApp:
    """Wrap ``app`` so every HTTP request and WebSocket session logs one line when done."""
    logger = logging.getLogger(ACCESS_LOGGER)
    encoder = msgspec.json.Encoder()

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or not logger.isEnabledFor(logging.INFO):
            await app(scope, receive, send)
            return
        start = time.perf_counter()
        counts = {"status": 0, "in": 0, "out": 0}

        async def counting_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                counts["in"] += len(message.get("body", b""))
            return message

        async def counting_send(message: Message) -> None:
            kind = message["type"]
            if kind == "http.response.start":
                counts["status"] = int(message["status"])
            elif kind == "http.response.body":
                counts["out"] += len(message.get("body", b""))
            elif kind == "websocket.accept":
                counts["status"] = 101
            elif kind == "websocket.send":
                counts["out"] += len(message.get("bytes") or b"") + len(message.get("text") or "")
            elif kind == "websocket.http.response.start":  # a refused handshake (e.g. 401)
                counts["status"] = int(message["status"])
            elif kind == "websocket.http.response.body":
                counts["out"] += len(message.get("body", b""))
            elif kind == "websocket.close" and not counts["status"]:
                counts["status"] = 403  # closed before accept: the server answers 403
            await send(message)

        try:
            await app(scope, counting_receive, counting_send)
        finally:
            client = scope.get("client")
            line = AccessLine(
                method=scope.get("method", "WS"),
                path=scope.get("path", ""),
                status=counts["status"] or 500,
                ms=round((time.perf_counter() - start) * 1000.0, 3),
                client=client[0] if client else None,
                bytes_in=counts["in"],
                bytes_out=counts["out"],
            )
            logger.info(encoder.encode(line).decode("utf-8"))

    return middleware
