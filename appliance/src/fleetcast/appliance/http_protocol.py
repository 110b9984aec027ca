"""uvicorn's HTTP/1.1 protocol with a deadline for reading each request (slow clients).

uvicorn (0.54) closes a keep-alive connection that stays idle after a response, but not one
that is in the middle of a request: a client that opens a connection and sends nothing, or
half a request line, half the headers or half a body, holds the connection and its file
descriptor for as long as it likes ("slowloris"). A few hundred of them reach
``--max-connections``, and every real client then gets 503.

:func:`timed_h11_protocol` returns a subclass of uvicorn's ``H11Protocol`` in which a request
must arrive whole — request line, headers and body — within ``request_timeout_s`` of its
first byte (of the connection's opening, for a connection's first request). Past the
deadline the appliance answers ``408 Request Timeout`` with ``Connection: close`` when no
response has started, closes the connection, counts it (``/status`` →
``service.request_timeouts``) and logs a warning at most once a minute. A handler still
waiting for the body sees the client disconnect. Connections that are idle between
requests keep uvicorn's keep-alive timeout (``keep_alive_s``), re-armed here where uvicorn
misses it (a response sent before its request's body arrived); a WebSocket leaves the
deadline behind when it is upgraded. docs/OPERATIONS.md#limits.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio

__all__ = ["ReadTimeouts", "timed_h11_protocol"]

_log = logging.getLogger("fleetcast.appliance.http")

_LOG_INTERVAL_S = 60.0

_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"connection: close\r\n"
    b"content-length: 48\r\n"
    b"\r\n"
    b"request not received whole within the time limit"
)


class ReadTimeouts:
    """Requests closed by the deadline since the start (``count``); logs a warning at most
    once a minute. One per service (the runtime owns it)."""

    def __init__(self, request_timeout_s: float) -> None:
        self.request_timeout_s = float(request_timeout_s)
        self.count = 0
        self._log_after = 0.0

    def record(self, client: Any, stage: str) -> None:
        """Count one timeout; ``stage``: how far the request got (for the log line)."""
        self.count += 1
        now = time.monotonic()
        if now >= self._log_after:
            self._log_after = now + _LOG_INTERVAL_S
            _log.warning(
                "connection from %s closed: %s within --request-timeout-s (%g s); %d since "
                "start (a slow or stalled client; docs/OPERATIONS.md#limits)",
                client[0] if client else "?",
                stage,
                self.request_timeout_s,
                self.count,
            )


def timed_h11_protocol(timeouts: ReadTimeouts) -> type[asyncio.Protocol]:
    """uvicorn's ``H11Protocol`` with the request deadline of ``timeouts`` (module docstring);
    pass it as ``uvicorn.Config(http=...)``."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    limit = timeouts.request_timeout_s

    class TimedH11Protocol(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None
        _upgraded = False
        """The transport went to a WebSocket protocol: this one no longer owns it."""

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()  # the first request: from the connection's opening

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            self._follow()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._follow()

        def handle_websocket_upgrade(self, event: Any) -> None:
            self._upgraded = True  # a WebSocket session has its own limits
            self._disarm()
            super().handle_websocket_upgrade(event)

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _follow(self) -> None:
            """Armed while a request is on its way in, disarmed once it is read whole (or the
            connection is idle between requests: uvicorn's keep-alive timer has that)."""
            state = self.conn.their_state
            if (
                self._upgraded
                or self.transport.is_closing()
                or state not in (h11.IDLE, h11.SEND_BODY)
            ):
                self._disarm()
            elif state is h11.SEND_BODY or self.conn.trailing_data[0]:
                self._arm()  # keeps the deadline of the request's first byte
            else:
                self._disarm()
                if self.timeout_keep_alive_task is None and self.conn.our_state is h11.IDLE:
                    # Idle between requests, yet no keep-alive timer: uvicorn arms it when a
                    # response completes and cancels it when data arrives, so a response sent
                    # before its body was read (413, 401, 405) and the body arriving after
                    # it left the connection open for good.
                    self.timeout_keep_alive_task = self.loop.call_later(
                        self.timeout_keep_alive, self.timeout_keep_alive_handler
                    )

        def _arm(self) -> None:
            if self._deadline is None:
                self._deadline = self.loop.call_later(limit, self._expired)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expired(self) -> None:
            self._deadline = None
            if self._upgraded or self.transport.is_closing():
                return
            body = self.conn.their_state is h11.SEND_BODY
            timeouts.record(self.client, "the body was not received" if body else
                            "no complete request line and headers")  # fmt: skip
            if self.cycle is None or not body or not self.cycle.response_started:
                self.transport.write(_TIMEOUT_RESPONSE)
            if self.cycle is not None and body:
                self.cycle.keep_alive = False
            self.transport.close()

    return TimedH11Protocol
