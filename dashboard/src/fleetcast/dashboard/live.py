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
    from collections.abc import Awaitable, Callable

    from .settings import DashboardSettings

__all__ = ["MAX_MESSAGE_BYTES", "listen"]

log = logging.getLogger(__name__)

_MAX_BACKOFF_S = 30.0

_TRY_AGAIN_LATER = 1013
"""Close code of a client past the appliance's ``--max-websocket-clients``."""

_POLICY_VIOLATION = 1008
"""Close code of a client while the appliance's WebSocket is off (limit 0)."""

MAX_MESSAGE_BYTES = 128 * 2**20
"""Largest forecast set accepted from the WebSocket: about 1.3 KB per server, so some 95,000
servers (tornado's default, 10 MiB, closed the socket from about 8,000 servers on and the
dashboard fell back to polling)."""


async def listen(
    settings: DashboardSettings,
    on_forecast: Callable[[CurrentPredictions], None],
    on_link: Callable[[bool], None],
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
) -> None:
    """Run until cancelled: connect, deliver every push, reconnect after a failure.

    ``on_link(True)`` once pushes flow (the first message: the appliance sends its current
    set on connect), ``on_link(False)`` when the socket is lost (the session then polls). A
    message that is not a forecast set is logged and skipped. ``sleep`` waits out the backoff
    (tests pass their own).

    Backoff (1 s doubling to 30 s) follows every failed attempt, and also a socket that
    closed before sending anything: that is the appliance refusing the client (1013 past
    ``--max-websocket-clients``, 1008 with the WebSocket off), and reconnecting at once
    turned into thousands of handshakes a second. A socket that delivered forecasts and
    then dropped (the appliance restarted) is retried at once.
    """
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    headers = {"X-API-Key": settings.api_key} if settings.api_key else {}
    backoff = 1.0
    warned = False
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
            await sleep(backoff)
            backoff = min(_MAX_BACKOFF_S, backoff * 2)
            continue
        received = 0
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
                received += 1
                if received == 1:
                    on_link(True)
                on_forecast(current)
        finally:
            conn.close()
            on_link(False)
        if received:
            backoff = 1.0
            continue
        why = f"closed before any forecast (code {conn.close_code}: {conn.close_reason or 'no reason'})"
        if not warned and conn.close_code in (_TRY_AGAIN_LATER, _POLICY_VIOLATION):
            warned = True
            log.warning("WebSocket %s %s; polling meanwhile", settings.websocket_url, why)
        else:
            log.debug("WebSocket %s %s", settings.websocket_url, why)
        await sleep(backoff)
        backoff = min(_MAX_BACKOFF_S, backoff * 2)
