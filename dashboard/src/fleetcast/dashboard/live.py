"""The WebSocket side of live updates: listen on /ws/predictions, reconnect with backoff.

Each message is ``GET /predictions/current``'s body. The listener hands parsed forecast sets
to a callback and reports whether pushes are flowing; the session polls while they are not.
Uses tornado's client (already there under Panel), so the dashboard needs no extra package.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING

from .api import ApiFormatError, CurrentPredictions, parse

if TYPE_CHECKING:
    from collections.abc import Callable

    from .settings import DashboardSettings

__all__ = ["MAX_MESSAGE_BYTES", "listen"]

log = logging.getLogger(__name__)

_MAX_BACKOFF_S = 30.0

MAX_MESSAGE_BYTES = 128 * 2**20
"""Largest forecast set accepted from the WebSocket: about 1.3 KB per server, so some 95,000
servers (tornado's default, 10 MiB, closed the socket from about 8,000 servers on and the
dashboard fell back to polling)."""


async def listen(
    settings: DashboardSettings,
    on_forecast: Callable[[CurrentPredictions], None],
    on_link: Callable[[bool], None],
) -> None:
    """Run until cancelled: connect, deliver every push, reconnect after a failure.

    ``on_link(True)`` when connected, ``on_link(False)`` when the socket is lost (the session
    then polls). A message that is not a forecast set is logged and skipped.
    """
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    headers = {"X-API-Key": settings.api_key} if settings.api_key else {}
    backoff = 1.0
    while True:
        try:
            request = HTTPRequest(
                settings.websocket_url,
                headers=headers,
                connect_timeout=settings.request_timeout_s,
            )
            conn = await websocket_connect(
                request, ping_interval=20, ping_timeout=20, max_message_size=MAX_MESSAGE_BYTES
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.debug("WebSocket %s unavailable: %s", settings.websocket_url, exc)
            on_link(False)
            await asyncio.sleep(backoff)
            backoff = min(_MAX_BACKOFF_S, backoff * 2)
            continue
        backoff = 1.0
        on_link(True)
        try:
            while True:
                message = await conn.read_message()
                if message is None:
                    break
                try:
                    current = parse(json.loads(message), CurrentPredictions, "WS /ws/predictions")
                except (ValueError, ApiFormatError) as exc:
                    log.warning("Skipped a /ws/predictions message: %s", exc)
                    continue
                on_forecast(current)
        finally:
            conn.close()
            on_link(False)
