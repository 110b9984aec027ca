"""The WebSocket listener against a real local tornado WebSocket server: a large fleet's
forecast set arrives whole (docs/API.md WS /ws/predictions)."""

from __future__ import annotations

import asyncio
import json
import socket

from fleetcast.dashboard.live import listen
from fleetcast.dashboard.settings import DashboardSettings

from .samples import current_body, forecast_body


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_20000_server_forecast_set_arrives_whole() -> None:
    # About 1.3 KB per server: 20,000 servers (the appliance's default capacity) make a
    # 27 MB message, past tornado's default limit of 10 MiB (the client closed the socket
    # and the dashboard fell back to polling from about 8,000 servers on).
    from tornado.web import Application
    from tornado.websocket import WebSocketHandler

    body = current_body()
    body["servers"] = [forecast_body(f"ppweb{i:05d}", "web_api", 0.1) for i in range(20_000)]
    message = json.dumps(body)
    assert len(message) > 20 * 2**20

    class Push(WebSocketHandler):
        def open(self) -> None:
            self.write_message(message)

    got: list[int] = []
    links: list[bool] = []

    async def main() -> None:
        port = _port()
        server = Application([(r"/ws/predictions", Push)]).listen(port, "127.0.0.1")
        settings = DashboardSettings(appliance_url=f"http://127.0.0.1:{port}")
        task = asyncio.create_task(
            listen(settings, lambda c: got.append(len(c.servers)), links.append)
        )
        try:
            for _ in range(300):
                if got:
                    break
                await asyncio.sleep(0.1)
        finally:
            task.cancel()
            server.stop()

    asyncio.run(main())
    assert got == [20_000]
    assert links[0] is True


class _Stop(Exception):
    """Ends the listener from the test's own ``sleep``."""


def _run_listener(handler: type, sleeps_wanted: int) -> tuple[list[float], list[bool], int]:
    """``listen`` against ``handler`` until it has slept ``sleeps_wanted`` times.

    Returns the backoff delays asked for, the ``on_link`` calls and the connections made.
    The server gives up (and the test fails) after 20 connections: a listener that never
    sleeps would otherwise reconnect forever.
    """
    from tornado.web import Application

    delays: list[float] = []
    links: list[bool] = []
    connections: list[int] = []

    async def main() -> None:
        too_many = asyncio.Event()

        class Counted(handler):  # type: ignore[misc, valid-type]
            def open(self) -> None:
                connections.append(1)
                if len(connections) > 20:
                    too_many.set()
                super().open()

        async def sleep(seconds: float) -> None:
            delays.append(seconds)
            if len(delays) >= sleeps_wanted:
                raise _Stop

        port = _port()
        server = Application([(r"/ws/predictions", Counted)]).listen(port, "127.0.0.1")
        settings = DashboardSettings(appliance_url=f"http://127.0.0.1:{port}")
        task = asyncio.create_task(listen(settings, lambda c: None, links.append, sleep=sleep))
        flood = asyncio.create_task(too_many.wait())
        try:
            await asyncio.wait({task, flood}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            task.cancel()
            flood.cancel()
            server.stop()
        assert not too_many.is_set(), "the listener reconnected without any backoff"
        assert isinstance(task.exception(), _Stop)

    asyncio.run(main())
    return delays, links, len(connections)


def test_a_refused_websocket_is_retried_with_backoff_not_at_once() -> None:
    # The appliance accepts one client too many and closes it at once (1013 "Try Again
    # Later"; 1008 with the WebSocket off). The listener used to reset its backoff on every
    # accepted handshake and reconnect with no pause: thousands of handshakes a second, and
    # the session flipped between live and polling on each.
    from tornado.websocket import WebSocketHandler

    class Refuse(WebSocketHandler):
        def open(self) -> None:
            self.close(1013, "Try Again Later")

    delays, links, connections = _run_listener(Refuse, sleeps_wanted=4)
    assert delays == [1.0, 2.0, 4.0, 8.0]
    assert connections == 4
    assert True not in links  # never reported live: no forecast ever arrived


def test_a_socket_that_delivered_forecasts_is_reopened_at_once() -> None:
    # The appliance restarted: the socket that served forecasts drops and the next one is
    # tried at once (no sleep before the second connection), with the backoff back at 1 s.
    from tornado.websocket import WebSocketHandler

    message = json.dumps(current_body())
    opened: list[int] = []

    class PushOnceThenRefuse(WebSocketHandler):
        def open(self) -> None:
            opened.append(1)
            if len(opened) == 1:
                self.write_message(message)
            self.close(1013, "Try Again Later")

    delays, links, connections = _run_listener(PushOnceThenRefuse, sleeps_wanted=1)
    assert connections == 2
    assert delays == [1.0]
    assert links[0] is True
    assert links[-1] is False
