"""WS /ws/predictions: pushes /predictions/current's body on every new forecast set.

On connect the client gets the current set (if any), then each new one. A slow client
skips to the newest set instead of building a backlog. With ``--read-key-required`` a
handshake without the key is refused with HTTP 401 and the JSON error body.

At most ``max_websocket_clients`` clients at once (each can hold up to two forecast
bodies, 1.3 MB each at 1,000 servers): one more is accepted and closed at once with code
1013 "Try Again Later" (1008 when the limit is 0: the WebSocket is off). A client whose
send stays blocked for :data:`SEND_TIMEOUT_S` (it does not read, so the connection's
buffers are full) is dropped. Both are counted in ``/status`` → ``service``. A client
message over :data:`MAX_CLIENT_MESSAGE_BYTES` closes the connection (code 1009).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from litestar import WebSocket, websocket
from litestar.exceptions import WebSocketDisconnect

from fleetcast.appliance.auth import read_guard, websocket_key_middleware

if TYPE_CHECKING:
    from litestar.datastructures import State

    from fleetcast.appliance.runtime import Runtime

__all__ = [
    "MAX_CLIENT_MESSAGE_BYTES",
    "SEND_TIMEOUT_S",
    "predictions_socket",
    "stream_predictions",
]

_log = logging.getLogger(__name__)

SEND_TIMEOUT_S = 10.0
"""Seconds one send may stay blocked before the client is dropped as not reading."""
MAX_CLIENT_MESSAGE_BYTES = 4096
"""Largest message a client may send (uvicorn's ``ws_max_size``; a larger one closes the
connection with code 1009). Clients send nothing the appliance reads: uvicorn's default of
16 MiB let each client make the server buffer and decode 16 MiB messages, 1.2 GB at 32
clients (docs/OPERATIONS.md#limits)."""
CLOSE_TRY_AGAIN_LATER = 1013
"""Close code for a client past ``max_websocket_clients`` (RFC 6455 registry)."""
CLOSE_POLICY_VIOLATION = 1008
"""Close code for any client while ``max_websocket_clients`` is 0 (the WebSocket is off)."""


@websocket("/ws/predictions", guards=[read_guard], middleware=[websocket_key_middleware])
async def predictions_socket(socket: WebSocket, state: State) -> None:
    """Send forecast sets as JSON text frames until the client disconnects."""
    await stream_predictions(socket, state.runtime)


async def stream_predictions(
    socket: WebSocket, runtime: Runtime, send_timeout_s: float = SEND_TIMEOUT_S
) -> None:
    """The session of one client: refused past the limit, dropped when a send to it stays
    blocked for ``send_timeout_s``, else fed every forecast set until it disconnects."""
    queue = runtime.subscribe()  # before any await: concurrent handshakes cannot pass the cap
    if queue is None:
        await _refuse(socket, runtime.settings.max_websocket_clients)
        return
    stuck = False
    receiver: asyncio.Task[None] | None = None
    try:
        await socket.accept()
        receiver = asyncio.create_task(_drain(socket))
        # A set published while the handshake ran is in the queue and is the current one:
        # sent once, as the current set, not a second time from the queue.
        with contextlib.suppress(asyncio.QueueEmpty):
            queue.get_nowait()
        if runtime.current_body is not None:
            await _send(socket, runtime.current_body.decode("utf-8"), send_timeout_s, receiver)
        while not receiver.done():
            getter = asyncio.create_task(queue.get())
            done, _ = await asyncio.wait({getter, receiver}, return_when=asyncio.FIRST_COMPLETED)
            if getter not in done:
                getter.cancel()
                break
            if not await _send(socket, getter.result(), send_timeout_s, receiver):
                break
    except TimeoutError:
        # No close frame: it would wait behind the same full buffers. Returning lets the
        # server close the connection; the kernel aborts it if the peer still does not read
        # (TCP_USER_TIMEOUT, see commands.UNACKED_TIMEOUT_S).
        stuck = True
        client = socket.client.host if socket.client else "?"
        _log.warning(
            "WebSocket client %s dropped: a forecast send stayed blocked for %g s "
            "(the client does not read; docs/OPERATIONS.md#limits)",
            client,
            send_timeout_s,
        )
    except (WebSocketDisconnect, RuntimeError, OSError):
        pass  # the client went away (uvicorn's ClientDisconnected is an OSError)
    finally:
        runtime.unsubscribe(queue, stuck=stuck)
        if receiver is not None:
            receiver.cancel()
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, RuntimeError):
                await receiver


async def _send(
    socket: WebSocket, text: str, timeout_s: float, receiver: asyncio.Task[None]
) -> bool:
    """Send one text frame: True when sent, False when ``receiver`` ended first (the client
    went away, or the server is stopping: uvicorn's shutdown hands every session a
    disconnect, and a send blocked behind a client that does not read would otherwise hold
    the shutdown for ``timeout_s``); TimeoutError when it stays blocked past ``timeout_s``."""
    sender = asyncio.ensure_future(socket.send_text(text))
    done, _ = await asyncio.wait(
        {sender, receiver}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
    )
    if sender in done:
        sender.result()
        return True
    sender.cancel()
    with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, RuntimeError, OSError):
        await sender
    if receiver in done:
        return False
    raise TimeoutError


async def _refuse(socket: WebSocket, limit: int) -> None:
    """Accept and close at once with a code and reason the client can act on (a close
    before the accept would be a bare HTTP 403). A reason holds at most 123 bytes."""
    if limit:
        code = CLOSE_TRY_AGAIN_LATER
        reason = (
            f"too many WebSocket clients (max {limit}); retry later or poll /predictions/current"
        )
    else:
        code = CLOSE_POLICY_VIOLATION
        reason = "WebSocket off (max_websocket_clients 0); poll GET /predictions/current"
    with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
        await socket.accept()
        await socket.close(code=code, reason=reason)


async def _drain(socket: WebSocket) -> None:
    """Read (and ignore) client messages; returns when the client disconnects."""
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        while True:
            message = await socket.receive()
            if message.get("type") == "websocket.disconnect":
                return
