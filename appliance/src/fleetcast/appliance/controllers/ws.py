"""WS /ws/predictions: pushes /predictions/current's body on every new forecast set.

On connect the client gets the current set (if any), then each new one. A slow client
skips to the newest set instead of building a backlog. With ``--read-key-required`` a
handshake without the key is refused with HTTP 401 and the JSON error body.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from litestar import WebSocket, websocket
from litestar.exceptions import WebSocketDisconnect

from fleetcast.appliance.auth import read_guard, websocket_key_middleware

if TYPE_CHECKING:
    from litestar.datastructures import State

__all__ = ["predictions_socket"]


@websocket("/ws/predictions", guards=[read_guard], middleware=[websocket_key_middleware])
async def predictions_socket(socket: WebSocket, state: State) -> None:
    """Send forecast sets as JSON text frames until the client disconnects."""
    runtime = state.runtime
    await socket.accept()
    queue = runtime.subscribe()
    receiver = asyncio.create_task(_drain(socket))
    try:
        if runtime.current_body is not None:
            await socket.send_text(runtime.current_body.decode("utf-8"))
        while not receiver.done():
            getter = asyncio.create_task(queue.get())
            done, _ = await asyncio.wait({getter, receiver}, return_when=asyncio.FIRST_COMPLETED)
            if getter not in done:
                getter.cancel()
                break
            await socket.send_text(getter.result().decode("utf-8"))
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        runtime.unsubscribe(queue)
        receiver.cancel()
        with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, RuntimeError):
            await receiver


async def _drain(socket: WebSocket) -> None:
    """Read (and ignore) client messages; returns when the client disconnects."""
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        while True:
            message = await socket.receive()
            if message.get("type") == "websocket.disconnect":
                return
